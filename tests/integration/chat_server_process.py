"""A real gistmem-server as a subprocess: --listen 127.0.0.1:0 on a given --db, its address
taken from the "listening on HOST:PORT" line it prints, stopped with SIGTERM or SIGKILL."""

import os
import queue
import re
import shlex
import signal
import subprocess
import threading

import chat_test_support as support

_LISTENING = re.compile(r"listening on (\S+:\d+)")


class ServerProcess:
    def __init__(self, db_path: str, extra_args=()):
        self.db_path = db_path
        # GISTMEM_TEST_DEVICE=cuda runs the server on the GPU (tests/gpu/run-service.sh).
        device = os.environ.get("GISTMEM_TEST_DEVICE", "") or "cpu"
        self.extra_args = ["--device", device,
                           *shlex.split(os.environ.get("GISTMEM_SERVER_EXTRA_ARGS", "")),
                           *extra_args]
        self.address = ""
        self._process = None
        self._log = []  # every line the server printed, all runs, for failure messages
        self._lines = queue.Queue()

    def start(self, timeout: float = 120) -> str:
        """Starts the server and returns its address once it listens."""
        command = [support.required_path("GISTMEM_SERVER"), "--model", support.model_dir(),
                   "--db", self.db_path, "--listen", "127.0.0.1:0", *self.extra_args]
        self._log.append(f"$ {' '.join(command)}\n")
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)
        self._lines = queue.Queue()
        # Read its output all along, or it blocks on a full pipe.
        threading.Thread(target=self._read_output, args=(self._process, self._lines),
                         daemon=True).start()
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                self.kill()
                raise RuntimeError(f"no 'listening on' line in {timeout} s:\n{self.log()}")
            if line is None:
                self._process.wait()
                raise RuntimeError(f"server exited with {self._process.returncode} before "
                                   f"listening:\n{self.log()}")
            if match := _LISTENING.search(line):
                self.address = match.group(1)
                return self.address

    def _read_output(self, process, lines):
        with process.stdout:
            for line in process.stdout:
                self._log.append(line)
                lines.put(line)
        lines.put(None)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (a clean shutdown); returns the exit status."""
        self._process.send_signal(signal.SIGTERM)
        try:
            return self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"server ignored SIGTERM for {timeout} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: the crash case, nothing gets to flush."""
        if self._process and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log(self) -> str:
        return "".join(self._log)
