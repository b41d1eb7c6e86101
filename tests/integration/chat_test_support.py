"""Shared by the chat_* tests: where the binaries, model and Python client are, and how to
run gistmem-chat.

Environment (CTest sets it, see chat_tests.cmake; set it yourself to run a test by hand):
  GISTMEM_CHAT    path of the gistmem-chat binary
  GISTMEM_SERVER  path of the gistmem-server binary (tests against the real server)
  GISTMEM_TEST_MODEL   checkpoint directory (default: tests/fixtures/models/llama-gqa-bf16)
  GISTMEM_SERVER_EXTRA_ARGS  more gistmem-server flags, shell-quoted (default: none)
  GISTMEM_TEST_DEVICE  the server's --device (default: cpu)
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
PYTHON_CLIENT_DIR = REPO_ROOT / "clients" / "python"

# grpc's status code numbers; gistmem-chat exits with 10 + the code of a failed call.
EXIT_NOT_SERVING = 1
EXIT_USAGE = 2
EXIT_CODES = {"CANCELLED": 11, "UNKNOWN": 12, "INVALID_ARGUMENT": 13, "DEADLINE_EXCEEDED": 14,
              "NOT_FOUND": 15, "ALREADY_EXISTS": 16, "RESOURCE_EXHAUSTED": 18,
              "FAILED_PRECONDITION": 19, "ABORTED": 20, "INTERNAL": 23, "UNAVAILABLE": 24,
              "UNAUTHENTICATED": 26}


def use_python_client() -> None:
    """Makes `import gistmem_client` work from the checkout, generating its stubs if needed."""
    if not (PYTHON_CLIENT_DIR / "gistmem_client" / "_generated").is_dir():
        subprocess.run([str(PYTHON_CLIENT_DIR / "generate_stubs.sh")], check=True)
    if str(PYTHON_CLIENT_DIR) not in sys.path:
        sys.path.insert(0, str(PYTHON_CLIENT_DIR))


def required_path(variable: str) -> str:
    path = os.environ.get(variable, "")
    if not path or not os.path.exists(path):
        raise RuntimeError(f"set {variable} to the binary's path (CTest does; got {path!r})")
    return path


def model_dir() -> str:
    default = REPO_ROOT / "tests" / "fixtures" / "models" / "llama-gqa-bf16"
    return os.environ.get("GISTMEM_TEST_MODEL", str(default))


def free_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_chat(address: str, *args: str, stdin: str = "", timeout: float = 120
             ) -> subprocess.CompletedProcess:
    """Runs gistmem-chat --server ADDRESS ARGS... and returns the finished process."""
    command = [required_path("GISTMEM_CHAT"), "--server", address, *args]
    return subprocess.run(command, input=stdin, capture_output=True, text=True,
                          timeout=timeout, check=False)


def json_lines(process: subprocess.CompletedProcess) -> list:
    return [json.loads(line) for line in process.stdout.splitlines() if line.strip()]


def describe(process: subprocess.CompletedProcess) -> str:
    """For assertion messages: what the command printed."""
    return (f"{' '.join(process.args)}\nexit {process.returncode}\nstdout: {process.stdout}\n"
            f"stderr: {process.stderr}")
