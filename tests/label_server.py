"""Start the real MONAI Label server (``monai-cae-label``) on a studies folder and a bundle, and talk to it over HTTP.

For any test module::

    with start_server(studies, bundle, log_path) as server:
        ids = server.images()                      # the datastore ids, from /datastore/?output=all
        status, answer = server.infer(ids[0])      # POST /infer/cae?image=<id>, the id URL-quoted
        status, answer = server.request("GET", "/info/")

``datastore_id(relative_name)`` gives the id the server lists a file under (``2021/DX/IM0001``, ``caf\\xe9`` for
a Latin-1 ``café.dcm``); a second file with the same id gets `` (2)`` appended, in sorted path order. Import this
module after ``pytest.importorskip("monailabel")``.

The server is started through ``monai-cae-label`` (``python -m monai_cae.apps.monailabel.cli``), without ``--host``,
so it listens where the command puts it by default (127.0.0.1), on a free port, and is stopped (SIGINT, then killed)
when the block ends, with its training processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from conftest import REPO_ROOT

from monai_cae.apps.monailabel.lib.datastore import datastore_id

__all__ = ["LabelServer", "datastore_id", "request", "start_server"]


def request(method: str, url: str, body: dict | None = None, timeout: float = 120) -> tuple[int, object]:
    """One HTTP request with a JSON body; the status and the decoded JSON answer (``None`` when empty).

    Args:
        method: ``GET``, ``POST``, ``DELETE``...
        url: the whole URL.
        body: JSON body, or none.
        timeout: seconds.

    Returns:
        ``(status, answer)``, for error statuses too.
    """
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabelServer:
    """A running server.

    Attributes:
        url: ``http://127.0.0.1:<port>``.
        process: the server process.
        log: path of its log (stdout and stderr).
        studies: the studies folder it serves.
        bundle: the bundle folder it uses.
        start_s: seconds from the process start to its first answer to ``/info/``.
    """

    url: str
    process: subprocess.Popen
    log: str
    studies: str
    bundle: str
    start_s: float

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 120) -> tuple[int, object]:
        """:func:`request` on ``path`` of this server (``/info/``, ``/train/cae``...)."""
        return request(method, self.url + path, body, timeout)

    def infer(self, image_id: str, timeout: float = 120) -> tuple[int, dict]:
        """``POST /infer/cae?image=<image_id>``, the id quoted whatever characters it holds."""
        return self.request("POST", f"/infer/cae?image={urllib.parse.quote(image_id, safe='')}", timeout=timeout)

    def images(self) -> list[str]:
        """The datastore ids, from ``/datastore/?output=all``.

        Raises:
            AssertionError: when the listing is not answered 200.
        """
        status, answer = self.request("GET", "/datastore/?output=all")
        assert status == 200, answer
        return sorted(answer["objects"])

    def log_text(self) -> str:
        """What the server logged so far."""
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return f.read()


@contextmanager
def start_server(
    studies: str,
    bundle: str,
    log_path: str,
    conf: Mapping[str, str] | None = None,
    args: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 180,
) -> Iterator[LabelServer]:
    """The real server on ``studies`` with ``bundle``, from its start to its first answer, and stopped after.

    Args:
        studies: the studies folder (MONAI Label writes ``datastore_v2.json`` and ``labels/`` into it).
        bundle: the bundle folder (``--conf bundle_path``).
        log_path: file for the server's output.
        conf: further ``--conf KEY VALUE`` options.
        args: further command-line arguments (``("--host", "0.0.0.0")``...).
        env: further environment variables (sessions are off unless ``MONAI_LABEL_SESSIONS`` says otherwise).
        timeout: seconds the server may take to answer ``/info/``.

    Yields:
        The running server.

    Raises:
        AssertionError: when the server exits or does not answer in time (with the end of its log).
    """
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # MONAI Label's training processes read PYTHONPATH, and fail without it
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO_ROOT, os.environ.get("PYTHONPATH", "")]),
                   "MONAI_LABEL_SESSIONS": "false", **(env or {})}
    command = [sys.executable, "-m", "monai_cae.apps.monailabel.cli", "start_server", "--studies", studies,
               "--conf", "bundle_path", bundle, "--port", str(port), *args]
    for key, value in (conf or {}).items():
        command += ["--conf", key, str(value)]
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            server = LabelServer(url, process, log_path, studies, bundle, 0.0)
            while True:
                assert process.poll() is None, server.log_text()[-5000:]
                assert time.perf_counter() - start < timeout, f"the server did not answer within {timeout} s"
                try:
                    if request("GET", f"{url}/info/", timeout=5)[0] == 200:
                        break
                except OSError:
                    time.sleep(0.2)
            server.start_s = time.perf_counter() - start
            yield server
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: the training processes go with it
                process.wait()
