"""The generated hostile corpus (tests/hostile_corpus.py) through the real MONAI Label server: every image of the
studies is answered, good ones 200, unusable ones 422 with their reason, anything else 404, and the server keeps
running; the bombs are refused under an address-space limit on the server process."""

from __future__ import annotations

import os
import resource
import shutil

import pytest

pytest.importorskip(
    "monailabel", reason="MONAI Label is not installed: pip install -e '.[label]' && "
    "pip install --no-deps monailabel==0.8.5 pydicom-seg==0.4.1 (setup.sh does both)"
)

from conftest import REPO_ROOT  # noqa: E402
from hostile_corpus import SELECTED, build_corpus  # noqa: E402
from label_server import datastore_id, start_server  # noqa: E402

pytestmark = pytest.mark.slow

HEADROOM = 2**30
"""Address space the server may take above what it holds once started: decoding any bomb of the corpus needs more
(16000 x 16000 pixels alone take 1.3 GB as they decode)."""


def _virtual_size(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))


@pytest.fixture(scope="module")
def answers(tmp_path_factory, shared_data, trained_model) -> dict:
    root = tmp_path_factory.mktemp("hostile_label")
    studies = str(root / "studies")
    files = build_corpus(studies, shared_data)
    bundle = root / "bundle"
    shutil.copytree(os.path.join(REPO_ROOT, "bundles", "cae", "configs"), bundle / "configs")
    shutil.copytree(os.path.dirname(trained_model), bundle / "models")
    with start_server(studies, str(bundle), str(root / "server.log")) as server:
        limit = _virtual_size(server.process.pid) + HEADROOM
        resource.prlimit(server.process.pid, resource.RLIMIT_AS, (limit, limit))
        listed = set(server.images())
        answered = {f.name: server.infer(datastore_id(f.name)) for f in files}
        alive = server.process.poll() is None and server.request("GET", "/info/")[0] == 200
        log = server.log_text()
    return {"files": files, "listed": listed, "answered": answered, "alive": alive, "log": log, "limit": limit}


def test_the_server_lists_what_it_serves_and_nothing_else(answers) -> None:
    served = {datastore_id(f.name) for f in answers["files"] if f.served}
    assert answers["listed"] == served


def test_every_file_is_answered_as_expected_and_the_server_keeps_running(answers) -> None:
    wrong = {}
    for file in answers["files"]:
        status, answer = answers["answered"][file.name]
        if not file.served:
            ok = status == 404
        elif file.outcome_alone == SELECTED:
            ok = status == 200 and "stratum" in answer
        else:
            ok = status == 422 and f"unusable: {file.outcome_alone}:" in answer["detail"]
        if not ok:
            wrong[file.name] = f"{file.kind}: expected {file.outcome_alone}, got {status} {str(answer)[:200]}"
    assert not wrong, "\n".join(wrong.values())
    assert answers["alive"], answers["log"][-3000:]
    assert "Traceback" not in answers["log"], answers["log"][-3000:]
    statuses = [answers["answered"][f.name][0] for f in answers["files"]]
    print(f"\nhostile corpus through the server (address space limited to {answers['limit'] / 2**30:.1f} GiB): "
          f"{statuses.count(200)} answered 200, {statuses.count(422)} 422, {statuses.count(404)} 404")


def test_the_size_guard_is_the_servers_to_set(tmp_path, shared_data, trained_model) -> None:
    studies = tmp_path / "studies"
    build_corpus(str(studies), shared_data)
    bundle = tmp_path / "bundle"
    shutil.copytree(os.path.join(REPO_ROOT, "bundles", "cae", "configs"), bundle / "configs")
    shutil.copytree(os.path.dirname(trained_model), bundle / "models")
    # the corpus's good images have 256 x 256 pixels
    with start_server(str(studies), str(bundle), str(tmp_path / "server.log"), conf={"max_pixels": 200 * 200}) as server:
        status, answer = server.infer(datastore_id("2019/DX/plain.dcm"))
    assert status == 422 and "too_large: the header declares 256 x 256 x 1 = 65,536 pixels, above max_pixels = 40,000" \
        in answer["detail"], answer
