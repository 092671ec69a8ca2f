"""Strata a clinician can read: make-up and dominance, transitions over time, ties, pixel-identical copies, study
disagreement, empty strata, stratum names, the chest default, the outlier threshold's source, and a page that stays
bounded for a large archive."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter

import numpy as np
import pydicom
import pytest
import torch
from pydicom.uid import generate_uid

from monai_cae.data import CohortDataLoader, CohortDataset, scan_archive, write_manifest
from monai_cae.data.dicom import HEADER_FIELDS, header_fields
from monai_cae.data.manifest import ManifestEntry
from monai_cae.inference import StrataAssignment
from monai_cae.networks.nets import ContrastiveAutoEncoder
from monai_cae.reports import (
    DigestingLoader,
    OutlierThreshold,
    data_uri,
    dominant_values,
    generate_report,
    image_png,
    image_rows,
    makeup_value,
    outlier_threshold,
    patient_rows,
    read_stratum_names,
    render_report_html,
    report_content,
    strata_makeup,
    strata_names_path,
    stratum_transitions,
    write_stratum_names,
)
from monai_cae.reports.cli import main as report_main
from monai_cae.reports.cli import parse_args

NIH = "nih_cxr_covid0000.dcm"
LOW = OutlierThreshold(-1.0, "fixed", None)  # no outliers


def make_rows(specs: list[dict], k: int, digests: dict[int, str] | None = None, threshold=LOW) -> list[dict]:
    """Image rows through the real table functions: each spec gives patient, study, date, stratum and optionally its
    probability, similarity and header fields."""
    entries = [
        ManifestEntry(
            path=f"/archive/{i}.dcm", image_id=f"img{i:05d}", PatientID=s["patient"], StudyInstanceUID=s["study"],
            StudyDate=s.get("date", ""), SOPInstanceUID=f"sop{i}", Modality=s.get("modality", "DX"),
            ViewPosition=s.get("view", ""), PatientSex=s.get("sex", ""), PatientAge=s.get("age", ""),
            PixelSpacing=s.get("spacing", ""), BodyPartExamined="CHEST",
        )
        for i, s in enumerate(specs)
    ]
    n = len(specs)
    strata = np.array([s["stratum"] for s in specs])
    similarities = np.full((n, k), -0.5, np.float32)
    similarities[np.arange(n), strata] = [s.get("similarity", 0.9) for s in specs]
    probabilities = np.full((n, k), 0.0, np.float32)
    for i, s in enumerate(specs):
        p = s.get("prob", 0.7)
        probabilities[i] = (1 - p) / (k - 1)
        probabilities[i, s["stratum"]] = p
    assignment = StrataAssignment(
        embeddings=np.zeros((n, 4), np.float32), probabilities=probabilities, similarities=similarities,
        ids=[e.image_id for e in entries], indices=np.arange(n), labels=np.full(n, -1),
    )
    return image_rows(entries, assignment, threshold, digests)


def random_network(k: int = 3, seed: int = 0) -> ContrastiveAutoEncoder:
    torch.manual_seed(seed)
    network = ContrastiveAutoEncoder()
    network.set_prototypes(torch.nn.functional.normalize(torch.randn(k, network.latent_size), dim=1))
    return network.eval()


def derived_dicom(source: str, path: str, **tags) -> None:
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for name, value in tags.items():
        if value is None:
            if name in ds:
                delattr(ds, name)
        else:
            setattr(ds, name, value)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ds.save_as(path)


# ---------------------------------------------------------------------------------------------------------------
# make-up and dominance


def test_makeup_of_a_known_table_is_hand_computed() -> None:
    # stratum 0: 9 AP + 1 PA; stratum 1: 1 AP + 9 PA, plus one pixel-identical copy of an AP film that must not count
    specs = [{"patient": f"p{i}", "study": f"s{i}", "stratum": 0, "view": "AP" if i < 9 else "PA",
              "date": "20190301" if i < 5 else "20200101", "age": "60-79" if i < 8 else "", "spacing": "0.168\\0.168"}
             for i in range(10)]
    specs += [{"patient": f"q{i}", "study": f"t{i}", "stratum": 1, "view": "AP" if i == 0 else "PA",
               "date": "2021", "spacing": "0.15\\0.139" if i < 5 else ""} for i in range(10)]
    specs.append({**specs[0], "stratum": 1})  # the same film as image 0, assigned again
    digests = {i: f"film{i}" for i in range(20)} | {20: "film0"}
    rows = make_rows(specs, 2, digests)
    assert rows[20]["duplicate_of"] == "img00000"
    strata, archive = strata_makeup(rows, 2)
    assert [s["n_films"] for s in strata] == [10, 10] and archive["n_films"] == 20
    view = {v["value"]: (v["n"], v["share"], v["archive_share"]) for v in strata[0]["makeup"]["view"]}
    assert view == {"AP": (9, 0.9, 0.5), "PA": (1, 0.1, 0.5)}
    years = {v["value"]: v["n"] for v in strata[0]["makeup"]["study_year"]}
    assert years == {"2019": 5, "2020": 5} and strata[1]["makeup"]["study_year"][0]["value"] == "unknown"
    assert {v["value"]: v["n"] for v in strata[0]["makeup"]["age_band"]} == {"60-79": 8, "unknown": 2}
    spacing = {v["value"]: v["n"] for v in strata[1]["makeup"]["pixel_spacing"]}
    assert spacing == {"0.15 x 0.14": 5, "unknown": 5}
    assert strata[0]["makeup"]["pixel_spacing"] == [{"value": "0.17", "n": 10, "share": 1.0, "archive_share": 0.5}]
    flags = {(f["field"], f["value"]): f["text"] for f in strata[0]["dominant"]}
    # AP: 90 % >= 80 % and >= 1.5 x 50 %; DX is 100 % of the stratum but also of the archive: no flag
    assert flags[("view", "AP")] == "ViewPosition: 90 % AP, 50 % of the archive"
    assert ("modality", "DX") not in flags and ("study_year", "2019") not in flags  # 50 % is no majority
    assert ("age_band", "60-79") in flags and ("pixel_spacing", "0.17") in flags  # 80 % of 40 %, 100 % of 50 %
    assert strata[1]["dominant"][0]["text"] == "ViewPosition: 90 % PA, 50 % of the archive"


@pytest.mark.parametrize(
    "in_stratum, stratum_size, in_archive, archive_size, flagged",
    [
        (8, 10, 8, 16, True),  # 80 % of the stratum, 50 % of the archive: 1.6x
        (8, 10, 8, 12, False),  # 80 % but only 1.2x its 67 % share of the archive
        (7, 10, 7, 100, False),  # 70 % is below 80 %
        (4, 4, 4, 100, False),  # too small a stratum to call dominated
        (5, 5, 5, 100, True),
    ],
)
def test_dominance_rule(in_stratum, stratum_size, in_archive, archive_size, flagged) -> None:
    fields = ("view", "modality", "manufacturer", "station", "body_part", "sex", "age_band", "study_year",
              "pixel_spacing")
    counts = {f: Counter() for f in fields}
    archive = {f: Counter() for f in fields}
    counts["view"].update({"AP": in_stratum, "PA": stratum_size - in_stratum})
    archive["view"].update({"AP": in_archive, "PA": archive_size - in_archive})
    flags = [f for f in dominant_values(counts, stratum_size, archive, archive_size) if f["value"] == "AP"]
    assert bool(flags) == flagged


@pytest.mark.parametrize(
    "field, value, shown",
    [("study_year", "20200116", "2020"), ("study_year", "", "unknown"), ("pixel_spacing", "0.139\\0.139", "0.14"),
     ("pixel_spacing", "0.2\\0.1", "0.20 x 0.10"), ("pixel_spacing", "garbage", "unknown"), ("view", " AP ", "AP")],
)
def test_makeup_values(field, value, shown) -> None:
    row = {"study_date": "", "pixel_spacing": "", "view": "", field if field != "study_year" else "study_date": value}
    assert makeup_value(row, field) == shown


def test_makeup_value_names_an_unknown_field() -> None:
    with pytest.raises(ValueError, match="'colour'"):
        makeup_value({}, "colour")


# ---------------------------------------------------------------------------------------------------------------
# patients over time, ties, copies, disagreement


def test_transitions_follow_each_patients_studies_in_date_order() -> None:
    # rows deliberately out of date order
    specs = [
        {"patient": "A", "study": "a3", "date": "20200301", "stratum": 1},
        {"patient": "A", "study": "a1", "date": "20200101", "stratum": 0},
        {"patient": "A", "study": "a2", "date": "20200201", "stratum": 0},
        {"patient": "B", "study": "b2", "date": "20210101", "stratum": 0},
        {"patient": "B", "study": "b1", "date": "20200101", "stratum": 2},
        {"patient": "C", "study": "c1", "date": "20200101", "stratum": 2},
    ]
    patients, timelines = patient_rows(make_rows(specs, 3), 3)
    assert [s["study_uid"] for s in timelines["A"]] == ["a1", "a2", "a3"]
    assert {p["patient_id"]: p["study_strata"] for p in patients} == {
        "A": "20200101:0 20200201:0 20200301:1", "B": "20200101:2 20210101:0", "C": "20200101:2"}
    expected = np.zeros((3, 3), int)
    expected[0, 0] = expected[0, 1] = expected[2, 0] = 1
    np.testing.assert_array_equal(stratum_transitions(timelines, 3), expected)
    report = report_content(make_rows(specs, 3), 3, LOW)
    assert sorted((t["from"], t["to"], t["count"]) for t in report["transitions"]) == [(0, 0, 1), (0, 1, 1), (2, 0, 1)]


@pytest.mark.parametrize("order", ["as given", "reversed"])
@pytest.mark.parametrize("prob_0, prob_1, majority", [(0.6, 0.9, 1), (0.95, 0.5, 0), (0.7, 0.7, 0)])
def test_a_tie_is_reported_and_broken_by_the_higher_mean_probability(order, prob_0, prob_1, majority) -> None:
    specs = [{"patient": "P", "study": f"s{i}", "date": f"2020010{i}", "stratum": s, "prob": p}
             for i, (s, p) in enumerate([(0, prob_0), (1, prob_1), (0, prob_0), (1, prob_1)])]
    specs = specs if order == "as given" else specs[::-1]
    (patient,), _ = patient_rows(make_rows(specs, 3), 3)
    assert patient["majority_tie"] and patient["tied_strata"] == "0 1"
    assert patient["majority_stratum"] == majority  # equal means: the lower index, whatever the order
    assert patient["majority_share"] == 0.5
    (single,), _ = patient_rows(make_rows(specs[:3], 3), 3)
    assert not single["majority_tie"] and single["tied_strata"] == ""


def test_pixel_identical_copies_count_once() -> None:
    # one film filed three times in stratum 0, two distinct films in stratum 1
    specs = [{"patient": "P", "study": "s1", "date": "20200101", "stratum": 0, "prob": 0.9} for _ in range(3)]
    specs += [{"patient": "P", "study": "s2", "date": "20200201", "stratum": 1, "prob": 0.6} for _ in range(2)]
    digests = {0: "x", 1: "x", 2: "x", 3: "y", 4: "z"}
    rows = make_rows(specs, 2, digests)
    assert [r["duplicate_of"] for r in rows] == ["", "img00000", "img00000", "", ""]
    (patient,), timelines = patient_rows(rows, 2)
    assert (patient["n_images"], patient["n_duplicates"]) == (5, 2)
    assert patient["majority_stratum"] == 1 and patient["majority_share"] == pytest.approx(2 / 3)
    assert patient["majority_probability"] == pytest.approx((0.1 + 0.6 + 0.6) / 3)  # over the three films
    assert timelines["P"][0]["n_images"] == 1
    (counted_thrice,), _ = patient_rows(make_rows(specs, 2), 2)  # without digests every file is a film
    assert counted_thrice["majority_stratum"] == 0 and counted_thrice["n_duplicates"] == 0


def test_digesting_loader_finds_a_pixel_identical_copy(shared_data, tmp_path) -> None:
    source = os.path.join(shared_data, "dicom")
    shutil.copy(os.path.join(source, NIH), tmp_path / "a.dcm")
    derived_dicom(os.path.join(source, NIH), str(tmp_path / "copy" / "b.dcm"))  # the same pixels, another UID
    shutil.copy(os.path.join(source, "siim_cr_jpeg_baseline.dcm"), tmp_path / "c.dcm")
    dataset = CohortDataset(scan_archive(str(tmp_path), progress=False), 28)
    loader = DigestingLoader(CohortDataLoader(dataset, batch_size=2, num_workers=0))
    assert sum(len(batch["image"]) for batch in loader) == 3 and len(loader) == 2
    by_name = {os.path.basename(e.path): loader.digests[i] for i, e in enumerate(dataset.entries)}
    assert by_name["a.dcm"] == by_name["b.dcm"] != by_name["c.dcm"]


def test_a_study_whose_images_disagree_is_flagged() -> None:
    specs = [
        {"patient": "P", "study": "s1", "date": "20200101", "stratum": 0},
        {"patient": "P", "study": "s1", "date": "20200101", "stratum": 0},
        {"patient": "P", "study": "s1", "date": "20200101", "stratum": 1},
        {"patient": "P", "study": "s2", "date": "20200301", "stratum": 0},
        {"patient": "Q", "study": "q1", "date": "20200101", "stratum": 1},
        {"patient": "Q", "study": "q1", "date": "20200101", "stratum": 1},
    ]
    patients, timelines = patient_rows(make_rows(specs, 2), 2)
    p, q = patients
    assert [s["disagreement"] for s in timelines["P"]] == [True, False] and timelines["P"][0]["strata"] == [0, 1]
    assert (p["studies_with_disagreement"], p["stratum_changed"]) == (1, False)  # both studies' majority is 0
    assert q["studies_with_disagreement"] == 0
    counts = report_content(make_rows(specs, 2), 2, LOW)["counts"]
    assert (counts["studies_with_disagreement"], counts["patients_with_disagreement"]) == (1, 1)


def test_empty_strata_are_not_counted_as_strata() -> None:
    specs = [{"patient": f"p{i}", "study": f"s{i}", "stratum": s} for i, s in enumerate([0, 0, 2, 2, 2])]
    report = report_content(make_rows(specs, 4), 4, LOW)
    assert (report["counts"]["strata_non_empty"], report["counts"]["strata_empty"]) == (2, 2)
    assert [s["empty"] for s in report["strata"]] == [False, True, False, True]
    html = render_report_html(report, [], None, None)
    assert "<b>2</b>strata with images<small>of the model&#x27;s 4, 2 empty</small>" in html


# ---------------------------------------------------------------------------------------------------------------
# stratum names


@pytest.fixture
def model_file(tmp_path) -> str:
    path = str(tmp_path / "models" / "model.pt")
    os.makedirs(os.path.dirname(path))
    torch.save(random_network(3).state_dict(), path)
    return path


def test_stratum_names_round_trip_and_belong_to_their_model(model_file) -> None:
    assert read_stratum_names(model_file) == {}
    assert write_stratum_names(model_file, {2: "  portable AP films ", 0: "PA", 1: ""}) == {0: "PA", 2: "portable AP films"}
    assert read_stratum_names(model_file) == {0: "PA", 2: "portable AP films"}
    content = json.load(open(strata_names_path(model_file)))
    assert content["names"] == {"0": "PA", "2": "portable AP films"} and content["model"] == "model.pt"
    torch.save(random_network(3, seed=1).state_dict(), model_file)  # retrained in the same folder
    with pytest.warns(UserWarning, match="another model"):
        assert read_stratum_names(model_file) == {}


@pytest.mark.parametrize("names, match", [({3: "x"}, "0..2"), ({-1: "x"}, "0..2"), ({0: "a\nb"}, "one line"),
                                          ({0: "x" * 81}, "80")])
def test_stratum_names_are_checked(model_file, names, match) -> None:
    with pytest.raises(ValueError, match=match):
        write_stratum_names(model_file, names)


def test_cli_names_a_stratum_without_a_report(model_file, capsys) -> None:
    assert report_main(["--model", model_file, "--name-stratum", "2", "portable AP films"]) == 0
    assert report_main(["--model", model_file, "--name-stratum", "0", "PA"]) == 0
    assert read_stratum_names(model_file) == {0: "PA", 2: "portable AP films"}
    assert report_main(["--model", model_file, "--name-stratum", "0", ""]) == 0
    assert read_stratum_names(model_file) == {2: "portable AP films"}
    assert report_main(["--model", model_file, "--name-stratum", "7", "x"]) == 2
    assert "0..2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--model", model_file])  # neither a report nor a name


# ---------------------------------------------------------------------------------------------------------------
# the chest default, privacy of the new header fields


@pytest.fixture
def body_part_archive(shared_data, tmp_path) -> str:
    source = os.path.join(shared_data, "dicom", NIH)
    root = str(tmp_path / "archive")
    derived_dicom(source, os.path.join(root, "p1", "leg.dcm"), BodyPartExamined="LEG", PatientID="p1")
    derived_dicom(source, os.path.join(root, "p2", "empty.dcm"), BodyPartExamined=None, PatientID="p2")
    derived_dicom(source, os.path.join(root, "p3", "chest.dcm"), BodyPartExamined="CHEST", PatientID="p3")
    return root


def test_the_default_selects_chest_radiographs_and_an_empty_tag_passes(body_part_archive) -> None:
    status = {os.path.basename(e.path): (e.status, e.reason) for e in scan_archive(body_part_archive, progress=False)}
    assert status == {"leg.dcm": ("skipped", "body_part"), "empty.dcm": ("selected", ""),
                      "chest.dcm": ("selected", "")}
    everything = scan_archive(body_part_archive, body_parts=None, progress=False)
    assert all(e.status == "selected" for e in everything)
    assert parse_args(["in", "out", "--model", "m"]).body_parts == ["CHEST"]


def test_report_leaves_out_the_leg_radiograph(body_part_archive, tmp_path) -> None:
    report = generate_report(random_network(), body_part_archive, str(tmp_path / "out"), num_workers=0,
                             progress=False)
    assert report["counts"]["processed"] == 2 and report["counts"]["skipped_by_reason"] == {"body_part": 1}


@pytest.mark.parametrize(
    "tags, age, spacing",
    [({"PatientAge": "081Y", "PixelSpacing": [0.139, 0.139]}, "80+", "0.139\\0.139"),
     ({"PatientAge": "006M", "ImagerPixelSpacing": [0.2, 0.1]}, "0-17", "0.2\\0.1"),
     ({"PatientAge": "45"}, "40-59", ""), ({"PatientAge": "017Y"}, "0-17", ""), ({"PatientAge": "018Y"}, "18-39", ""),
     ({"PatientAge": "n/a"}, "", ""), ({}, "", "")],
)
def test_age_is_read_as_a_band_and_spacing_falls_back_on_the_detector(tags, age, spacing) -> None:
    ds = pydicom.Dataset()
    ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "Doe^Jane", "19400101", "F"
    for name, value in tags.items():
        setattr(ds, name, value)
    fields = header_fields(ds)
    assert (fields["PatientAge"], fields["PixelSpacing"], fields["PatientSex"]) == (age, spacing, "F")
    assert "Doe" not in json.dumps(fields) and "19400101" not in json.dumps(fields)


def test_real_archive_placeholders_never_reach_the_manifest(shared_data, tmp_path) -> None:
    assert not {"PatientName", "PatientBirthDate", "PatientAddress", "OtherPatientNames"} & set(HEADER_FIELDS)
    archive = os.path.join(shared_data, "real_cxr", "archive")
    first = pydicom.dcmread(next(os.path.join(d, f) for d, _, fs in os.walk(archive) for f in fs),
                            stop_before_pixels=True)
    name, birth = str(first.PatientName), str(first.PatientBirthDate)
    assert name and birth  # the placeholders are there to be kept out
    entries = scan_archive(archive, progress=False)
    write_manifest(entries, str(tmp_path / "manifest.csv"))
    text = open(tmp_path / "manifest.csv").read()
    assert name not in text and birth not in text and "PatientSex" in text
    assert {e.PatientSex for e in entries} <= {"F", "M", ""} and len(entries) == 110


# ---------------------------------------------------------------------------------------------------------------
# the outlier threshold's source, the page end to end


def test_report_says_where_the_outlier_threshold_came_from(shared_data, tmp_path) -> None:
    archive = os.path.join(shared_data, "dicom")
    network = random_network()
    cohort = generate_report(network, archive, str(tmp_path / "cohort"), num_workers=0, progress=False)
    assert cohort["outlier"]["source"] == "cohort" and "this cohort" in cohort["outlier"]["description"]
    reference = str(tmp_path / "embeddings.npy")
    np.save(reference, np.random.default_rng(0).normal(size=(50, network.latent_size)).astype(np.float32))
    trained = generate_report(network, archive, str(tmp_path / "training"), num_workers=0, progress=False,
                              reference_embeddings=reference)
    assert trained["outlier"]["source"] == "training" and "trained on" in trained["outlier"]["description"]
    html = open(tmp_path / "training" / "report.html", encoding="utf-8").read()
    assert '<b id="outlier-source">from the training images</b>' in html
    assert json.load(open(tmp_path / "training" / "report.json"))["outlier"]["source"] == "training"


def test_named_strata_and_galleries_appear_in_the_report(model_file, shared_data, tmp_path) -> None:
    archive = os.path.join(shared_data, "real_cxr", "archive")
    output = str(tmp_path / "out")
    assert report_main(["--model", model_file, "--name-stratum", "1", "portable AP films"]) == 0
    assert report_main([archive, output, "--model", model_file, "--quiet", "--num-workers", "0"]) == 0
    report = json.load(open(os.path.join(output, "report.json")))
    html = open(os.path.join(output, "report.html"), encoding="utf-8").read()
    assert report["model"]["strata_names"] == {"1": "portable AP films"}
    assert report["strata"][1]["name"] == "portable AP films" and "Stratum 1 (portable AP films)" in html
    filled = [s for s in report["strata"] if not s["empty"]]
    for s in filled:  # exemplars are the most similar members, the least typical the least similar
        assert 1 <= len(s["exemplars"]) <= 6 and 1 <= len(s["least_typical"]) <= 6
        assert f'id="stratum-{s["stratum"]}"' in html
    images = re.findall(r'<img class="pixel" src="data:image/png;base64,[^"]+" alt="[^"]*" title="[^"]*" width="(\d+)"',
                        html)
    shown = sum(len(s["exemplars"]) + len(s["least_typical"]) for s in filled) + len(report["outlier"]["gallery"])
    assert images.count("140") >= shown and report["outlier"]["gallery"]
    patients = {r["patient_id"] for r in report["patients"]}
    assert len(patients) == 64 and report["options"]["duplicates_checked"]


def test_page_stays_bounded_for_a_large_archive() -> None:
    rng = np.random.default_rng(0)
    n, k = 20000, 6
    patient = rng.integers(0, 8000, n)
    specs = [{"patient": f"P{p:05d}", "study": f"P{p:05d}-{s}", "date": f"20{10 + s:02d}0101",
              "stratum": int(rng.integers(0, k)), "similarity": float(rng.uniform(0.2, 1.0)),
              "view": str(rng.choice(["AP", "PA"])), "age": str(rng.choice(["18-39", "60-79", ""]))}
             for p, s in zip(patient, rng.integers(0, 5, n))]
    rows = make_rows(specs, k, threshold=OutlierThreshold(0.25, "cohort", 1.0))
    report = report_content(rows, k, OutlierThreshold(0.25, "cohort", 1.0), model_name="synthetic")
    picture = data_uri(image_png(rng.uniform(size=(28, 28))))
    galleries = {
        "exemplars": [[(i, picture) for i in s["exemplars"]] for s in report["strata"]],
        "least_typical": [[(i, picture) for i in s["least_typical"]] for s in report["strata"]],
        "outliers": [(i, picture) for i in report["outlier"]["gallery"]],
    }
    html = render_report_html(report, [picture] * k, galleries, picture)
    assert report["counts"]["patients"] > 7000 and report["outlier"]["n_outliers"] > 100
    assert len(html.encode()) < 5_000_000
    assert html.count("<img") <= 2 * k + 2 * 6 * k + 24 + 1
    assert html.count("<tr>") < 3 * 200 + 100  # three patient tables of at most 200 rows, and the small tables
    assert "The first 200 of" in html


@pytest.mark.parametrize(
    "given, source", [(0.5, "fixed"), (OutlierThreshold(0.5, "reference", 1.0), "training"), (None, "cohort")]
)
def test_a_threshold_given_with_its_origin_is_reported_as_such(given, source) -> None:
    similarities = np.linspace(0.0, 1.0, 101)
    chosen = outlier_threshold(similarities, given, 1.0)
    report = report_content(make_rows([{"patient": "P", "study": "s", "stratum": 0}], 2, threshold=chosen), 2, chosen)
    assert report["outlier"]["source"] == source and chosen.value == pytest.approx(0.5 if given else 0.01)


@pytest.mark.parametrize("given, match", [(1.5, r"\[-1, 1\]"), (OutlierThreshold(0.5, "training", 1.0), "source")])
def test_an_invalid_threshold_is_named(given, match) -> None:
    with pytest.raises(ValueError, match=match):
        outlier_threshold(np.zeros(3), given)
