"""A gistmem cluster on loopback for the cluster tests and scripts/cluster-demo: gistmem-server
nodes on one RADOS pool (--store rados:POOL) behind HAProxy (scripts/haproxy-config).

The Ceph cluster itself is started beforehand (tests/cluster/start-ceph.sh; CTest runs it as a
fixture). Environment:
  GISTMEM_SERVER      gistmem-server binary
  GISTMEM_TEST_MODEL  checkpoint directory (models/gistmem-16k)
  GISTMEM_CEPH_CONF   the cluster's ceph.conf;  GISTMEM_CEPH_POOL  its pool
  GISTMEM_CEPH_DIR    its directory (OSD pid files, for killing one)
"""

import os
import pathlib
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "integration"))

import chat_test_support as support  # noqa: E402

support.use_python_client()

import grpc  # noqa: E402
from gistmem_client import GistmemClient, GistmemError  # noqa: E402,F401
from gistmem_client._stubs import pb, pb_grpc  # noqa: E402,F401

_LISTENING = re.compile(r"listening on (\S+:\d+)")
_METRICS = re.compile(r"metrics on (\d+)")


def ceph_env() -> dict:
    values = {name: os.environ.get(name, "") for name in
              ("GISTMEM_CEPH_CONF", "GISTMEM_CEPH_POOL", "GISTMEM_CEPH_DIR")}
    missing = [name for name, value in values.items() if not value]
    if missing or not os.path.exists(values["GISTMEM_CEPH_CONF"]):
        raise RuntimeError(f"no Ceph cluster: set {', '.join(missing) or 'GISTMEM_CEPH_CONF'} "
                           "(tests/cluster/start-ceph.sh starts one; CTest does)")
    return values


class Node:
    """One gistmem-server on the shared pool, on a fixed port (HAProxy names it)."""

    def __init__(self, name: str, port: int, extra_args=()):
        self.name = name
        self.address = f"127.0.0.1:{port}"
        self.extra_args = list(extra_args)
        self.metrics_port = 0
        self._process = None
        self._log = []

    def start(self, timeout: float = 120) -> None:
        env = ceph_env()
        command = [support.required_path("GISTMEM_SERVER"), "--model", support.model_dir(),
                   "--store", f"rados:{env['GISTMEM_CEPH_POOL']}",
                   "--ceph_conf", env["GISTMEM_CEPH_CONF"], "--listen", self.address,
                   "--threads", "1", "--workers", "4", "--kv_pool_bytes", str(256 << 20),
                   "--metrics_listen", "127.0.0.1:0", *self.extra_args]
        self._log.append(f"$ {' '.join(command)}\n")
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)
        lines = queue.Queue()
        threading.Thread(target=self._read, args=(self._process, lines), daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise RuntimeError(f"{self.name}: not listening in {timeout} s:\n{self.log()}")
            if line is None:
                raise RuntimeError(f"{self.name} exited before listening:\n{self.log()}")
            if match := _METRICS.search(line):
                self.metrics_port = int(match.group(1))
            if _LISTENING.search(line):
                return

    def _read(self, process, lines):
        with process.stdout:
            for line in process.stdout:
                self._log.append(line)
                lines.put(line)
        lines.put(None)

    @property
    def pid(self) -> int:
        return self._process.pid

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def kill(self) -> None:
        """SIGKILL: nothing gets to flush or say goodbye."""
        if self.running():
            self._process.kill()
            self._process.wait()

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.running():
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def metric(self, name: str) -> float:
        """The sum of a Prometheus sample's values over its labels (0 when absent)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=10) as response:
            text = response.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def log(self) -> str:
        return "".join(self._log)


class Router:
    """HAProxy with the configuration of scripts/haproxy-config."""

    def __init__(self, port: int, nodes):
        self.address = f"127.0.0.1:{port}"
        self.nodes = nodes
        self._dir = tempfile.TemporaryDirectory(prefix="gistmem-haproxy-")
        self._process = None
        self._log = None

    def start(self, timeout: float = 30) -> None:
        config = pathlib.Path(self._dir.name) / "haproxy.cfg"
        self._socket = str(pathlib.Path(self._dir.name) / "admin.sock")
        text = subprocess.run([str(REPO_ROOT / "scripts" / "haproxy-config"), self.address,
                               *[node.address for node in self.nodes]],
                              check=True, capture_output=True, text=True,
                              env={**os.environ, "GISTMEM_HAPROXY_SOCKET": self._socket}).stdout
        config.write_text(text)
        self._log = open(pathlib.Path(self._dir.name) / "haproxy.log", "w+")
        self._process = subprocess.Popen([os.environ.get("HAPROXY", "haproxy"), "-db", "-f",
                                          str(config)], stdout=self._log,
                                         stderr=subprocess.STDOUT)
        self.wait_for_nodes(len(self.nodes), timeout)

    def wait_for_nodes(self, count: int, timeout: float = 30) -> None:
        """Until a call through the router works and `count` nodes passed a health check."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"haproxy exited:\n{self.log()}")
            try:
                with GistmemClient(self.address, timeout=5) as client:
                    if client.health() == "SERVING" and self.nodes_up() >= count:
                        return
            except GistmemError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"router not ready with {count} nodes in {timeout} s:\n{self.log()}")

    def nodes_up(self) -> int:
        """Nodes HAProxy counts as up now (its runtime API's "show stat")."""
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(5)
                sock.connect(self._socket)
                sock.sendall(b"show stat\n")
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
        except OSError:
            return 0
        up = 0
        for line in data.decode().splitlines():
            fields = line.split(",")
            if len(fields) > 17 and fields[0] == "gistmem_nodes" and fields[1].startswith("node"):
                up += fields[17] == "UP"
        return up

    def log(self) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        return pathlib.Path(self._log.name).read_text()

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=10)
        if self._log:
            self._log.close()
        self._dir.cleanup()


class Cluster:
    """`count` nodes and a router, all on loopback."""

    def __init__(self, count: int = 3, extra_args=()):
        ports = [support.free_port() for _ in range(count + 1)]
        self.nodes = [Node(f"node{i}", ports[i], extra_args) for i in range(count)]
        self.router = Router(ports[-1], self.nodes)

    def start(self) -> "Cluster":
        # Nodes load the model one after another: two cores.
        for node in self.nodes:
            node.start()
        self.router.start()
        return self

    def stop(self) -> None:
        self.router.stop()
        for node in self.nodes:
            node.stop()

    def node_named(self, name: str) -> Node:
        index = int(name.removeprefix("node"))
        return self.nodes[index]

    def logs(self) -> str:
        return "\n".join(f"==== {node.name}\n{node.log()[-6000:]}" for node in self.nodes) + \
            f"\n==== haproxy\n{self.router.log()[-4000:]}"


def osd_pid(osd_id: int) -> int:
    path = pathlib.Path(ceph_env()["GISTMEM_CEPH_DIR"]) / "run" / f"osd.{osd_id}.pid"
    return int(path.read_text().strip())


def ceph(*args: str, timeout: float = 60) -> str:
    conf = ceph_env()["GISTMEM_CEPH_CONF"]
    return subprocess.run(["ceph", "-c", conf, *args], check=True, capture_output=True,
                          text=True, timeout=timeout).stdout


def restart_osd(osd_id: int) -> None:
    conf = ceph_env()["GISTMEM_CEPH_CONF"]
    subprocess.run(["ceph-osd", "-c", conf, "-i", str(osd_id)], check=True,
                   capture_output=True, timeout=60)


def wait_osds_up(count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stat = ceph("osd", "stat")
        if f"{count} osds: {count} up" in stat:
            return
        time.sleep(1)
    raise RuntimeError(f"OSDs not all up in {timeout} s: {ceph('osd', 'stat')}")
