"""The report built from the disk (a ManifestStore, a StrataStore read a few rows at a time, shards) is the report of
the assignment held in memory, file for file."""

from __future__ import annotations

import gc
import io
import os
import pickle
import resource
import shutil

import numpy as np
import pydicom
import pytest
import torch
from pydicom.uid import generate_uid

from monai_cae.data import CohortDataLoader, CohortDataset, ManifestEntry, ManifestStore, scan_archive
from monai_cae.engines import StrataEvaluator, load_trained_model
from monai_cae.inference import StrataAssignment, StrataStore, write_assignments
from monai_cae.reports import ReportOptions, ReportStaging, build_report, generate_report, write_report
from monai_cae.utils.io import write_npy_rows


def report_files(folder: str) -> dict[str, bytes]:
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            content = open(path, "rb").read()
            if name in ("report.json", "report.html"):  # the time it was written is the one difference allowed
                content = b"\n".join(line for line in content.split(b"\n") if b"created" not in line.lower())
            files[os.path.relpath(path, folder)] = content
    return files


@pytest.fixture(scope="module")
def archive(tmp_path_factory, shared_data) -> str:
    """30 real radiographs of the adult archive, three of them copied under new UIDs (pixel-identical films), and
    a file that is not an image."""
    root = str(tmp_path_factory.mktemp("streaming") / "archive")
    source = os.path.join(shared_data, "real_cxr", "archive")
    paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(source) for f in fs)[:30]
    for path in paths:
        target = os.path.join(root, os.path.relpath(path, source))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy(path, target)
    for i, path in enumerate(paths[:3]):  # the copies sort last: their originals are in an earlier part
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        os.makedirs(os.path.join(root, "zz_copies"), exist_ok=True)
        ds.save_as(os.path.join(root, "zz_copies", f"copy_{i}.dcm"))
    with open(os.path.join(root, "notes.dcm"), "w") as f:
        f.write("not a DICOM file")
    return root


@pytest.fixture(scope="module")
def whole_archive(tmp_path_factory, shared_data) -> str:
    """The 110 radiographs of the adult archive (enough files for the header scan to go to worker processes), a
    copy of one of them under its own UID, a copy cut short, and a file that is not an image."""
    root = tmp_path_factory.mktemp("whole") / "archive"
    shutil.copytree(os.path.join(shared_data, "real_cxr", "archive"), root)
    first = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)[0]
    whole = open(first, "rb").read()
    (root / "zz_same_uid.dcm").write_bytes(whole)
    (root / "zz_cut.dcm").write_bytes(whole[: len(whole) // 2])
    (root / "notes.dcm").write_text("not a DICOM file")
    return str(root)


def _children_cpu_seconds() -> float:
    # CPU time of the finished child processes of this one: worker processes that were started and joined; loaders
    # of earlier tests left to the garbage collector are joined first, so that they are not counted in between
    gc.collect()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.fixture(scope="module")
def network(trained_model):
    return load_trained_model(trained_model, "cpu")


@pytest.fixture(scope="module")
def in_memory(archive, network, tmp_path_factory) -> dict[str, bytes]:
    """The report of the assignment held in memory (``write_report``)."""
    dataset = CohortDataset(scan_archive(archive, progress=False), network.encoder.img_size)
    loader = CohortDataLoader(dataset, batch_size=8, num_workers=0)
    evaluator = StrataEvaluator("cpu", loader, network, progress=False, digests=True)
    evaluator.run()
    output = str(tmp_path_factory.mktemp("memory") / "report")
    write_report(evaluator.assignment, dataset, network, output, loader.skipped, progress=False)
    return report_files(output)


@pytest.mark.parametrize("chunk_size", [1, 7, 4096])
def test_a_report_read_from_disk_a_few_rows_at_a_time_is_the_report_held_in_memory(
    archive, network, in_memory, chunk_size, tmp_path
) -> None:
    output = str(tmp_path / "report")
    with ReportStaging(output) as staging:
        manifest = scan_archive(archive, progress=False, store=staging.work("manifest.sqlite"))
        dataset = CohortDataset(manifest, network.encoder.img_size)
        loader = CohortDataLoader(dataset, batch_size=8, num_workers=0)
        store = StrataStore(staging.work("strata"), network.latent_size, network.num_prototypes, chunk_size)
        StrataEvaluator("cpu", loader, network, progress=False, store=store, digests=True).run()
        report = build_report(staging, manifest, store, dataset, network, loader.skipped, ReportOptions(progress=False))
        staging.publish()
    assert report["counts"]["duplicates"] == 3 and report["counts"]["skipped_by_reason"] == {"not_image": 1}
    assert not os.path.exists(os.path.join(output, ".work")) and "patients" not in report
    assert report_files(output) == in_memory


def test_the_pipeline_and_its_sharded_run_write_the_report_held_in_memory(archive, network, in_memory,
                                                                           tmp_path) -> None:
    generate_report(network, archive, str(tmp_path / "single"), batch_size=8, num_workers=0, progress=False)
    assert report_files(str(tmp_path / "single")) == in_memory
    shards = str(tmp_path / "shards")
    generate_report(network, archive, str(tmp_path / "sharded"), batch_size=8, num_workers=0, progress=False,
                    shard_dir=shards)
    assert report_files(str(tmp_path / "sharded")) == in_memory and not os.path.exists(shards)
    with pytest.raises(TypeError, match=r"unknown report option\(s\) \['img_size'\]"):
        generate_report(network, archive, str(tmp_path / "other"), img_size=28)


def test_manifest_store_keeps_entries_and_undecodable_names(tmp_path) -> None:
    latin = os.fsdecode(b"caf\xe9.dcm")
    entries = [ManifestEntry(path=f"/a/{latin}", image_id="caf\\xe9.dcm", rows=512, columns=480),
               ManifestEntry(path="/a/b.png", image_id="b.png", status="skipped", reason="corrupt", detail="cut"),
               ManifestEntry(path="/a/c.png", image_id="c.png", PatientID="P1")]
    store = ManifestStore(str(tmp_path / "manifest.sqlite"))
    store.append(iter(entries))
    assert store.index_selected() == 2 and len(store) == 3
    assert list(store) == entries and store[-1] == entries[2] and store[0].path == f"/a/{latin}"
    assert [e.image_id for e in store.where("skipped")] == ["b.png"]
    assert [e.image_id for e in store.selected()] == ["caf\\xe9.dcm", "c.png"]
    copy = pickle.loads(pickle.dumps(store))  # what a loader worker started by spawn gets
    assert copy.selected()[1] == entries[2]
    store.set_selected_status([1], "processed")
    assert ManifestStore(store.path)[2].status == "processed"  # on disk, seen by a new connection
    with pytest.raises(IndexError, match="out of range for 3 entries"):
        store[3]
    with pytest.raises(FileExistsError, match="already holds a manifest of 3 entries"):
        scan_archive(str(tmp_path), progress=False, store=store.path)


def test_strata_store_gives_back_what_was_appended_in_parts(tmp_path) -> None:
    rng = np.random.default_rng(0)
    n, d, k = 11, 5, 3
    whole = StrataAssignment(
        embeddings=rng.normal(size=(n, d)).astype(np.float32), probabilities=rng.random((n, k)).astype(np.float32),
        similarities=rng.random((n, k)).astype(np.float32), ids=[f"id-{i}" for i in range(n)],
        indices=np.arange(n), labels=rng.integers(-1, 2, n), cluster_maps=rng.integers(0, 4, (n, 2, 3)).astype(np.uint8),
        digests=[f"{i:032x}" for i in range(n)],
    )
    store = StrataStore(str(tmp_path / "store"), d, k, chunk_size=4)
    for part in (whole.select(slice(0, 6)), whole.select(slice(6, n))):
        store.append(part)
    assert [len(part) for part in store] == [4, 4, 3]
    reopened = StrataStore(str(tmp_path / "store"), d, k)  # opened again, as a finished shard is
    loaded = StrataAssignment.concatenate(list(reopened), d, k)
    for name in ("embeddings", "probabilities", "similarities", "indices", "labels", "cluster_maps"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(whole, name))
    assert loaded.ids == whole.ids and loaded.digests == whole.digests
    memory, disk = write_assignments(whole, str(tmp_path / "a")), write_assignments(store, str(tmp_path / "b"))
    for name in memory:
        assert open(memory[name], "rb").read() == open(disk[name], "rb").read()
    with pytest.raises(ValueError, match=r"latent size and prototypes \(5, 3\)"):
        StrataStore(str(tmp_path / "store"), d, k + 1)


@pytest.mark.parametrize("shape, dtype", [((0, 128), np.float32), ((624, 128), np.float32), ((7, 28, 28), np.uint8)])
def test_npy_rows_written_in_blocks_are_what_numpy_saves(shape, dtype) -> None:
    array = (np.random.default_rng(0).random(shape) * 200).astype(dtype)
    saved, streamed = io.BytesIO(), io.BytesIO()
    np.save(saved, array)
    assert write_npy_rows(streamed, (array[i : i + 3] for i in range(0, len(array), 3)), shape[1:], dtype) == shape[0]
    assert streamed.getvalue() == saved.getvalue()
    streamed.seek(0)
    np.testing.assert_array_equal(np.load(streamed), torch.as_tensor(array).numpy())


def test_a_scan_into_a_store_finds_the_same_copies_as_a_scan_in_memory(shared_data, tmp_path) -> None:
    archive = tmp_path / "archive"
    source = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(shared_data, "real_cxr", "archive"))
                    for f in fs)
    whole = open(source[0], "rb").read()
    for name in ("c_whole.dcm", "b_copy.dcm"):  # the same SOPInstanceUID twice: the first in path order is kept
        os.makedirs(archive, exist_ok=True)
        (archive / name).write_bytes(whole)
    (archive / "a_cut.dcm").write_bytes(whole[: len(whole) // 2])  # smaller: never the one kept
    shutil.copy(source[1], archive / "d_other.dcm")
    in_memory = scan_archive(str(archive), progress=False)
    stored = scan_archive(str(archive), progress=False, store=str(tmp_path / "manifest.sqlite"))
    assert list(stored) == in_memory
    assert [(e.image_id, e.status) for e in in_memory] == [
        ("a_cut.dcm", "skipped"), ("b_copy.dcm", "selected"), ("c_whole.dcm", "skipped"), ("d_other.dcm", "selected")]
    assert [e.image_id for e in stored.selected()] == ["b_copy.dcm", "d_other.dcm"]


@pytest.mark.parametrize("store", [False, True])
def test_a_scan_in_worker_processes_is_the_scan_in_this_process(whole_archive, tmp_path, store) -> None:
    scans, children = {}, {}
    for workers in (0, 2):
        before = _children_cpu_seconds()
        path = str(tmp_path / f"manifest_{workers}.sqlite") if store else None
        scans[workers] = list(scan_archive(whole_archive, progress=False, store=path, num_workers=workers))
        children[workers] = _children_cpu_seconds() - before
    assert scans[2] == scans[0] and len(scans[0]) == 113
    status = {e.image_id: (e.status, e.reason) for e in scans[0]}
    assert status["zz_cut.dcm"] == ("skipped", "duplicate") and status["notes.dcm"] == ("skipped", "not_image")
    assert sum(s == ("selected", "") for s in status.values()) == 110
    assert children[0] == 0 and children[2] > 0  # the headers were read by the worker processes
    with pytest.raises(ValueError, match="num_workers must be >= 0"):
        scan_archive(whole_archive, progress=False, num_workers=-1)


def test_the_pipeline_in_worker_processes_writes_the_in_process_report(whole_archive, network, tmp_path) -> None:
    # the header scan, the decoding and the thumbnails of the page each in two worker processes
    reports = {}
    for workers in (0, 2):
        before = _children_cpu_seconds()
        output = str(tmp_path / f"report_{workers}")
        report = generate_report(network, whole_archive, output, num_workers=workers, progress=False)
        assert (_children_cpu_seconds() > before) == (workers > 0)
        assert report["counts"]["processed"] == 110 and report["options"]["thumbnails"]
        reports[workers] = report_files(output)
    assert reports[2] == reports[0]
    assert reports[0]["report.html"].count(b"data:image/png") > 30  # the galleries hold thumbnails
