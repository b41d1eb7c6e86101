"""Shared by the fault tests: the integration tests' ServerProcess and client set-up, the
store tool, and the server's memory.

Environment (CTest sets it, see tests/fault/CMakeLists.txt; set it yourself to run by hand):
  GISTMEM_SERVER      gistmem-server binary
  GISTMEM_STORE_TOOL  gistmem-store-tool binary (tests/fault/store_tool.cc)
  GISTMEM_CHAT        gistmem-chat binary (disconnect_test kills it mid-stream)
  GISTMEM_TEST_MODEL  checkpoint directory (CTest: models/gistmem-16k)
  GISTMEM_FAULT_SEED  seed of the random kill points and scripts (default: time-based, printed)
"""

import json
import os
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "integration"))

import chat_test_support as support  # noqa: E402
from chat_server_process import ServerProcess  # noqa: E402

support.use_python_client()

import grpc  # noqa: E402
from gistmem_client import GistmemClient, GistmemError, Policy  # noqa: E402,F401


def seed() -> int:
    value = int(os.environ.get("GISTMEM_FAULT_SEED", "0")) or int(time.time())
    print(f"GISTMEM_FAULT_SEED={value}", file=sys.stderr, flush=True)
    return value


def store_check(db_path: str, tenant: str = "default"):
    """Runs `gistmem-store-tool check` on a stopped server's store: (exit code, report)."""
    process = subprocess.run([support.required_path("GISTMEM_STORE_TOOL"), "check", "--db",
                              db_path, "--tenant", tenant],
                             capture_output=True, text=True, timeout=120, check=False)
    try:
        report = json.loads(process.stdout)
    except json.JSONDecodeError:
        report = {"tool_output": process.stdout, "tool_stderr": process.stderr}
    return process.returncode, report


def store_damage(db_path: str, family: str, session_id: str, mode: str, seq: int = 0,
                 tenant: str = "default") -> dict:
    process = subprocess.run([support.required_path("GISTMEM_STORE_TOOL"), "damage", "--db",
                              db_path, "--family", family, "--tenant", tenant, "--session",
                              session_id, "--seq", str(seq), "--mode", mode],
                             capture_output=True, text=True, timeout=120, check=False)
    if process.returncode != 0:
        raise RuntimeError(f"store tool damage failed ({process.returncode}): {process.stderr}")
    return json.loads(process.stdout)


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def server_pid(server: ServerProcess) -> int:
    return server._process.pid  # noqa: SLF001 (ServerProcess keeps it private)


# Statuses a call gets when the server it talks to was killed under it.
GONE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED)
