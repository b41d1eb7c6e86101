"""Shared by the ops tests (metrics, HTTP endpoint, logs): the integration tests' ServerProcess
and Python client, and the ports the server prints besides "listening on".

Environment (CTest sets it, see tests/ops/CMakeLists.txt):
  GISTMEM_SERVER      gistmem-server binary
  GISTMEM_TEST_MODEL  checkpoint directory
  GISTMEM_STORE_TOOL  gistmem-store-tool binary (store check tests)
"""

import json
import pathlib
import re
import sys
import time
import urllib.error
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "integration"))

import chat_test_support as support  # noqa: E402
from chat_server_process import ServerProcess  # noqa: E402

support.use_python_client()

import grpc  # noqa: E402,F401
from gistmem_client import GistmemClient, GistmemError  # noqa: E402,F401
from gistmem_client._stubs import health_pb2, health_pb2_grpc, pb, pb_grpc  # noqa: E402,F401


def printed_port(server: ServerProcess, what: str) -> int:
    """The port of the last "<what> on PORT" line the server printed (e.g. "metrics",
    "http"): the current run's, when it was restarted."""
    ports = re.findall(rf"^{what} on (\d+)$", server.log(), re.MULTILINE)
    if not ports:
        raise AssertionError(f"no '{what} on PORT' line:\n{server.log()}")
    return int(ports[-1])


def http_get(url: str, headers=None, timeout: float = 10):
    """(status, body) of a GET; HTTP errors are returned, not raised."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def json_log_lines(server: ServerProcess) -> list:
    """The server's log lines that are JSON objects."""
    lines = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return lines
