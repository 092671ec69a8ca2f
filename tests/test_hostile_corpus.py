"""The generated hostile corpus (tests/hostile_corpus.py) through the report's command line: no run stops, no good
image is lost, every refused file is named with its reason, and the bombs are refused within a memory bound.

The command runs in a child process under an address-space limit (``resource.setrlimit(RLIMIT_AS)``), so that a bomb
that is decoded after all fails the test instead of the machine.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import subprocess
import sys
from collections import Counter

import pytest

from conftest import REPO_ROOT
from hostile_corpus import SELECTED, build_corpus
from monai_cae.data.manifest import display_text

ADDRESS_SPACE_LIMIT = 3 * 2**30
"""The child's address-space limit: the interpreter, torch, the model and the figures fit (about 1.5 GiB of
address space), decoding any bomb of the corpus does not (16000 x 16000 pixels alone take 1.3 GB as they decode)."""

BOMB_RSS_BOUND = 64 * 2**20
"""How far the resident memory may grow above the interpreter's while every bomb is refused."""

pytestmark = pytest.mark.slow


def limited(limit: int = ADDRESS_SPACE_LIMIT) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_data) -> tuple[str, list]:
    root = str(tmp_path_factory.mktemp("hostile") / "archive")
    return root, build_corpus(root, shared_data)


def test_the_corpus_has_at_least_40_kinds_and_every_outcome(corpus) -> None:
    _, files = corpus
    outcomes = Counter(f.outcome for f in files)
    print(f"\nhostile corpus: {len(files)} files; expected outcomes {dict(sorted(outcomes.items()))}")
    assert len(files) >= 40 and len({f.kind for f in files}) == len(files)
    assert {"corrupt", "not_image", "unreadable", "too_large", "non_finite", "duplicate", "volume_3d"} <= set(outcomes)


# the command, then the peak resident memory of its main process and of its largest decoding worker
REPORT_WITH_PEAK_RSS = """
import resource, sys
from monai_cae.reports.cli import main
status = main(sys.argv[1:])
own, workers = (resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
print(f"peak RSS: main process {own / 1024:.0f} MiB, largest worker {workers / 1024:.0f} MiB", file=sys.stderr)
sys.exit(status)
"""


@pytest.fixture(scope="module")
def report(corpus, trained_model, tmp_path_factory) -> dict:
    root, _ = corpus
    out = str(tmp_path_factory.mktemp("hostile") / "report")
    arguments = [root, out, "--model", trained_model, "--quiet", "--device", "cpu", "--num-workers", "2"]
    command = [sys.executable, "-c", REPORT_WITH_PEAK_RSS, *arguments]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, preexec_fn=limited,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    with open(os.path.join(out, "manifest.csv"), newline="", encoding="utf-8") as f:
        manifest = {row["image_id"]: row for row in csv.DictReader(f)}
    return {"result": result, "out": out, "manifest": manifest}


def test_the_report_runs_to_the_end_under_the_memory_limit(report) -> None:
    result = report["result"]
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Traceback" not in result.stderr
    peak = result.stderr.strip().splitlines()[-1]
    print(f"\nreport on the hostile corpus, address space limited to {ADDRESS_SPACE_LIMIT / 2**30:.0f} GiB: {peak}")


def test_every_file_gets_its_expected_outcome(corpus, report) -> None:
    _, files = corpus
    manifest = report["manifest"]
    wrong = {}
    for file in files:
        row = manifest.get(display_text(file.name))
        got = "(not listed)" if row is None else "selected" if row["status"] == "processed" else row["reason"]
        if got != file.outcome:
            wrong[file.name] = f"{file.kind}: expected {file.outcome}, got {got} ({row and row['detail']})"
    assert not wrong, "\n".join(wrong.values())
    counts = Counter("processed" if f.outcome == SELECTED else f.outcome for f in files)
    print(f"\noutcomes through monai-cae-report: {dict(sorted(counts.items()))}")


def test_every_refused_file_is_named_with_a_reason_and_detail(report) -> None:
    with open(os.path.join(report["out"], "skipped.csv"), newline="", encoding="utf-8") as f:
        skipped = list(csv.DictReader(f))
    refused = [row for row in report["manifest"].values() if row["status"] == "skipped"]
    assert len(skipped) == len(refused) > 0
    assert all(row["reason"] and row["detail"] and row["image_id"] for row in skipped)


def test_no_good_image_is_lost(corpus, report) -> None:
    _, files = corpus
    good = {display_text(f.name) for f in files if f.outcome == SELECTED}
    with open(os.path.join(report["out"], "strata_per_image.csv"), newline="", encoding="utf-8") as f:
        assigned = {row["image_id"] for row in csv.DictReader(f)}
    with open(os.path.join(report["out"], "report.json"), encoding="utf-8") as f:
        counts = json.load(f)["counts"]
    assert good <= assigned
    assert counts["processed"] == len(good)


BOMB_PROBE = """
import json, resource, sys
from monai_cae.data import UnusableImageError, cohort_transform, probe_file
transform = cohort_transform(64)
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for path in sys.argv[1:]:
    entry = probe_file(path, modalities=None, body_parts=None)
    try:  # the loader's own guard, for a file replaced after the scan
        transform({"image": path})
        loaded = "loaded"
    except Exception as e:
        while not isinstance(e, UnusableImageError) and (e.__cause__ or e.__context__):
            e = e.__cause__ or e.__context__
        loaded = getattr(e, "reason", type(e).__name__)
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline
    print(json.dumps({"path": path, "probe": entry.reason, "load": loaded, "growth_kib": growth}), flush=True)
"""


def test_bombs_are_refused_before_decoding_within_a_memory_bound(corpus) -> None:
    root, files = corpus
    bombs = [f for f in files if f.bomb]
    command = [sys.executable, "-c", BOMB_PROBE, *(os.path.join(root, f.name) for f in bombs)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, preexec_fn=limited,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == len(bombs)
    print()
    for bomb, line in zip(bombs, lines):
        print(f"  {bomb.kind}: probe {line['probe']}, load {line['load']}, RSS growth {line['growth_kib'] / 1024:.1f} MiB")
        assert line["load"] == "too_large", bomb.kind
        # a lying JPEG / JPEG 2000 stream is only seen when the pixels are read, so the header scan selects it
        assert line["probe"] in ("too_large", ""), bomb.kind
        assert line["growth_kib"] * 1024 < BOMB_RSS_BOUND, bomb.kind
