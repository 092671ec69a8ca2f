"""Write a realistic multi-patient chest X-ray DICOM archive, with a NIfTI copy and ground truth, from labelled images.

    python data_prep/make_dicom_cohort.py --output data/cohort --size 256

reads the PneumoniaMNIST test split (624 images, 234 normal / 390 pneumonia) from ``../shared/data/medmnist`` and
writes

    <output>/dicom/<PatientID>/<StudyDate>_<accession>/<series>/IM0001[.dcm]   the archive
    <output>/nifti/<PatientID>/<StudyDate>/<n>.nii.gz                        the same pixels as 2D NIfTI
    <output>/ground_truth_images.csv     one row per image: path, UIDs, date, label, transfer syntax, photometric
    <output>/ground_truth_patients.csv   one row per patient: PatientID, label, images, studies

Every patient's images share one label (images are grouped by label, 1 to 4 per patient, about 250 patients), spread
over 1 to 3 studies on different dates. Files are CR or DX, PA or AP, CHEST, 12 bits stored in 16 (8 for JPEG
Baseline), with proper UIDs, in several transfer syntaxes: explicit and implicit VR little endian, deflated, RLE
(pydicom's encoder), JPEG 2000 lossless (pylibjpeg-openjpeg), JPEG Lossless SV1 and JPEG-LS lossless (GDCM, when
installed) and JPEG Baseline (Pillow). About 8 % are MONOCHROME1 (inverted stored values), some carry a window, a few
have no preamble or file meta (old ACR-NEMA style), half have no ``.dcm`` extension, and a README and a ``.DS_Store``
lie among them, as in real exports. Patient names and birth dates are synthetic; a report must never show them.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import os
import tempfile
from collections.abc import Sequence

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    PYDICOM_IMPLEMENTATION_UID,
    RLELossless,
    generate_uid,
)
from tqdm.auto import tqdm

from monai_cae.data import MedMNISTDataset

__all__ = ["TRANSFER_SYNTAXES", "make_cohort"]

TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGBaseline8Bit,
)
_GDCM_SYNTAXES = {JPEGLosslessSV1: "JPEGLosslessProcess14_1", JPEGLSLossless: "JPEGLSLossless"}
_FIRST_NAMES = ("Alex", "Sam", "Jo", "Robin", "Kim", "Charlie", "Dana", "Lee")


def _gdcm():
    try:
        import gdcm

        return gdcm
    except ImportError:
        return None


def _available_syntaxes() -> list:
    # every syntax here has a writer: pydicom for the uncompressed, deflated and RLE, pylibjpeg-openjpeg for
    # JPEG 2000, GDCM for JPEG Lossless and JPEG-LS, Pillow for JPEG Baseline
    from pydicom.pixels import get_encoder

    found = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, RLELossless]
    if get_encoder(JPEG2000Lossless).is_available:
        found.append(JPEG2000Lossless)
    if _gdcm() is not None:
        found += [JPEGLosslessSV1, JPEGLSLossless]
    found.append(JPEGBaseline8Bit)
    return found


def _group_patients(labels: np.ndarray, rng: np.random.Generator) -> list[list[int]]:
    patients = []
    for label in np.unique(labels):
        indices = rng.permutation(np.flatnonzero(labels == label)).tolist()
        while indices:
            size = int(rng.integers(1, 5))
            patients.append(indices[:size])
            indices = indices[size:]
    order = rng.permutation(len(patients))
    return [patients[i] for i in order]


def _split_studies(n: int, rng: np.random.Generator) -> list[int]:
    studies = int(rng.integers(1, min(3, n) + 1))
    cuts = np.sort(rng.choice(np.arange(1, n), studies - 1, replace=False)) if studies > 1 else np.array([], int)
    return np.diff(np.concatenate([[0], cuts, [n]])).tolist()


def _pixels(image: np.ndarray, size: int, bits: int, monochrome1: bool) -> np.ndarray:
    # a bicubic upscale of the 28-pixel image stands in for a detector image; stored values span the bit depth
    grey = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC), dtype=np.float64) / 255.0
    top = 2**bits - 1
    stored = np.round(np.clip(grey, 0, 1) * top)
    if monochrome1:
        stored = top - stored
    return stored.astype(np.uint8 if bits == 8 else np.uint16)


def _dataset(pixels: np.ndarray, bits: int, monochrome1: bool, tags: dict, syntax) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = tags["SOPClassUID"]
    meta.MediaStorageSOPInstanceUID = tags["SOPInstanceUID"]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    for name, value in tags.items():
        setattr(ds, name, value)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 8 if bits == 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OB" if bits == 8 else "OW"
    return ds


def _write(ds: pydicom.Dataset, path: str, syntax, pixels: np.ndarray, raw: bool) -> None:
    if syntax == JPEGBaseline8Bit:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression, ds.LossyImageCompressionMethod = "01", "ISO_10918_1"
        ds.file_meta.TransferSyntaxUID = syntax
    elif syntax in (RLELossless, JPEG2000Lossless):
        ds.compress(syntax, generate_instance_uid=False)
    elif syntax in _GDCM_SYNTAXES:
        gdcm = _gdcm()
        with tempfile.TemporaryDirectory() as folder:
            source = os.path.join(folder, "source.dcm")
            ds.save_as(source, enforce_file_format=True)
            reader = gdcm.ImageReader()
            reader.SetFileName(source)
            if not reader.Read():
                raise RuntimeError(f"GDCM could not read back {source}.")
            change = gdcm.ImageChangeTransferSyntax()
            change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, _GDCM_SYNTAXES[syntax])))
            change.SetInput(reader.GetImage())
            if not change.Change():
                raise RuntimeError(f"GDCM could not encode {syntax.name}.")
            writer = gdcm.ImageWriter()
            writer.SetFileName(path)
            writer.SetFile(reader.GetFile())
            writer.SetImage(change.GetOutput())
            if not writer.Write():
                raise RuntimeError(f"GDCM could not write {path}.")
        return
    else:
        ds.file_meta.TransferSyntaxUID = syntax
    if raw:
        # old ACR-NEMA style: no preamble, no file meta, implicit VR little endian
        del ds.file_meta
        ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
    else:
        ds.save_as(path, enforce_file_format=True)


def make_cohort(
    output: str,
    images: np.ndarray,
    labels: np.ndarray,
    size: int = 256,
    seed: int = 0,
    syntaxes: Sequence | None = None,
    monochrome1_fraction: float = 0.08,
    raw_fraction: float = 0.02,
    nifti: bool = True,
    junk: bool = True,
    progress: bool = True,
) -> dict:
    """Write the archive, its NIfTI copy and the ground truth (see the module docstring).

    Args:
        output: destination folder (created; must not hold a previous cohort).
        images: ``(N, H, W)`` uint8 grey images.
        labels: ``(N,)`` integer labels.
        size: side of the written images, in pixels.
        seed: random seed: the same seed gives the same archive, UIDs included.
        syntaxes: transfer syntaxes to cycle through; every available one when omitted.
        monochrome1_fraction: share of images written as MONOCHROME1.
        raw_fraction: share of uncompressed images written without preamble and file meta.
        nifti: also write the NIfTI copy.
        junk: add the non-image files real exports contain.
        progress: show a progress bar.

    Returns:
        ``{"archive", "nifti", "images", "patients", "studies", "syntaxes"}``: the archive and NIfTI folders, the
        number of images, patients and studies, and the count per transfer syntax name.

    Raises:
        FileExistsError: when ``output`` already holds an archive.
        ValueError: for images that are not ``(N, H, W)`` uint8, or labels of another length.
    """
    images, labels = np.asarray(images), np.asarray(labels).reshape(-1)
    if images.ndim != 3 or images.dtype != np.uint8 or len(labels) != len(images):
        raise ValueError(f"need (N, H, W) uint8 images and N labels, got {images.shape} {images.dtype}, {len(labels)}.")
    archive, nifti_root = os.path.join(output, "dicom"), os.path.join(output, "nifti")
    if os.path.exists(archive):
        raise FileExistsError(f"{archive} exists: choose a new output folder.")
    rng = np.random.default_rng(seed)
    syntaxes = list(syntaxes or _available_syntaxes())
    uid = lambda *parts: generate_uid(entropy_srcs=[str(seed), *map(str, parts)])  # noqa: E731 - reproducible UIDs
    image_rows, patient_rows, per_syntax = [], [], {}
    patients = _group_patients(labels, rng)
    bar = tqdm(total=len(images), desc="Writing DICOM", disable=not progress)
    for p, members in enumerate(patients):
        patient_id = f"PAT{p:05d}"
        sex = str(rng.choice(["F", "M"]))
        demographics = {
            "PatientName": f"Synthetic^{_FIRST_NAMES[p % len(_FIRST_NAMES)]}{p:05d}",
            "PatientID": patient_id,
            "PatientBirthDate": f"{rng.integers(1940, 2015)}{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}",
            "PatientSex": sex,
        }
        date = datetime.date(2015, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 2500)))
        position = 0
        study_sizes = _split_studies(len(members), rng)
        for s, study_size in enumerate(study_sizes):
            study_uid, accession = uid(patient_id, s), f"ACC{p:05d}{s}"
            study_date = date.strftime("%Y%m%d")
            modality = str(rng.choice(["CR", "DX"]))
            for i in range(study_size):
                source = members[position]
                position += 1
                syntax = syntaxes[int(rng.integers(len(syntaxes)))]
                monochrome1 = bool(rng.random() < monochrome1_fraction)
                bits = 8 if syntax == JPEGBaseline8Bit else 12
                pixels = _pixels(images[source], size, bits, monochrome1)
                sop_uid, series_uid = uid(patient_id, s, i, "sop"), uid(patient_id, s, i, "series")
                tags = {
                    **demographics,
                    "SOPClassUID": ComputedRadiographyImageStorage if modality == "CR"
                    else DigitalXRayImageStorageForPresentation,
                    "SOPInstanceUID": sop_uid, "StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid,
                    "StudyDate": study_date, "SeriesDate": study_date, "ContentDate": study_date,
                    "StudyTime": "093000", "AccessionNumber": accession, "StudyID": str(s + 1),
                    "SeriesNumber": i + 1, "InstanceNumber": 1, "Modality": modality,
                    "ViewPosition": str(rng.choice(["PA", "PA", "AP"])), "BodyPartExamined": "CHEST",
                    "PatientOrientation": ["L", "F"], "InstitutionName": "Synthetic General Hospital",
                    "ReferringPhysicianName": "Synthetic^Referrer", "ImageType": ["ORIGINAL", "PRIMARY"],
                }
                if modality == "DX":
                    tags["PresentationIntentType"] = "FOR PRESENTATION"
                    tags["PresentationLUTShape"] = "INVERSE" if monochrome1 else "IDENTITY"
                if bits == 12 and rng.random() < 0.3:
                    tags["WindowCenter"], tags["WindowWidth"] = 2048, 4096  # the full range: no visible change
                ds = _dataset(pixels, bits, monochrome1, tags, syntax)
                folder = os.path.join(archive, patient_id, f"{study_date}_{accession}", f"{i + 1:03d}")
                os.makedirs(folder, exist_ok=True)
                name = f"IM{i + 1:04d}" + (".dcm" if rng.random() < 0.5 else "")
                path = os.path.join(folder, name)
                raw = syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) and rng.random() < raw_fraction
                _write(ds, path, syntax, pixels, raw)
                per_syntax[syntax.name] = per_syntax.get(syntax.name, 0) + 1
                nifti_path = ""
                if nifti:
                    import nibabel

                    display = (2**bits - 1 - pixels) if monochrome1 else pixels
                    nifti_path = os.path.join(nifti_root, patient_id, study_date, f"{sop_uid}.nii.gz")
                    os.makedirs(os.path.dirname(nifti_path), exist_ok=True)
                    # NIfTI stores x (columns) first
                    nibabel.save(nibabel.Nifti1Image(np.ascontiguousarray(display.T), np.eye(4)), nifti_path)
                image_rows.append(
                    {
                        "path": os.path.relpath(path, archive), "nifti_path": os.path.relpath(nifti_path, nifti_root)
                        if nifti_path else "", "PatientID": patient_id, "StudyInstanceUID": study_uid,
                        "SeriesInstanceUID": series_uid, "SOPInstanceUID": sop_uid, "StudyDate": study_date,
                        "label": int(labels[source]), "source_index": int(source), "transfer_syntax": syntax.name,
                        "photometric": "MONOCHROME1" if monochrome1 else "MONOCHROME2", "no_file_meta": raw,
                    }
                )
                bar.update()
            date += datetime.timedelta(days=int(rng.integers(30, 700)))
        patient_rows.append(
            {"PatientID": patient_id, "label": int(labels[members[0]]), "n_images": len(members),
             "n_studies": len(study_sizes)}
        )
    bar.close()
    if junk:
        with open(os.path.join(archive, "README.txt"), "w") as f:
            f.write("Export of the synthetic chest X-ray archive. Not DICOM.\n")
        with open(os.path.join(archive, image_rows[0]["path"].split(os.sep)[0], ".DS_Store"), "wb") as f:
            f.write(b"\x00\x00\x00\x01Bud1" + bytes(rng.integers(0, 256, 2000, dtype=np.uint8)))
    for name, rows in (("ground_truth_images.csv", image_rows), ("ground_truth_patients.csv", patient_rows)):
        with open(os.path.join(output, name), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return {
        "archive": archive, "nifti": nifti_root if nifti else "", "images": len(image_rows),
        "patients": len(patient_rows), "studies": sum(r["n_studies"] for r in patient_rows), "syntaxes": per_syntax,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="destination folder")
    parser.add_argument("--root", default="../shared/data/medmnist", help="folder holding pneumoniamnist.npz")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--size", type=int, default=256, help="side of the written images (default 256)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-nifti", action="store_true", help="skip the NIfTI copy")
    args = parser.parse_args()
    data = MedMNISTDataset("pneumoniamnist", args.split, args.root)
    images = (data.images[:, 0].numpy() * 255).round().astype(np.uint8)
    labels = data.labels.numpy()
    if args.limit:
        images, labels = images[: args.limit], labels[: args.limit]
    summary = make_cohort(args.output, images, labels, size=args.size, seed=args.seed, nifti=not args.no_nifti)
    print(
        f"wrote {summary['images']} images of {summary['patients']} patients ({summary['studies']} studies) to "
        f"{summary['archive']}; transfer syntaxes: {summary['syntaxes']}"
    )


if __name__ == "__main__":
    main()
