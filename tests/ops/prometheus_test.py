"""A real Prometheus (Debian's `prometheus`) on 127.0.0.1 scrapes a real gistmem-server
(--metrics_listen) while the test sends it traffic; then the test asks Prometheus's HTTP API
for counters, a rate and a histogram quantile and checks them against what it sent."""

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse

import ops_support as ops
from ops_support import GistmemClient, GistmemError, ServerProcess, support

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
SCRAPE_SECONDS = 1
# gistmem_time_to_first_token_seconds's buckets (service/metrics.cc).
LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]


class Prometheus:
    def __init__(self, directory: str, target_port: int):
        self.port = support.free_port()
        config = os.path.join(directory, "prometheus.yml")
        with open(config, "w") as out:
            out.write(f"global:\n  scrape_interval: {SCRAPE_SECONDS}s\n"
                      f"  scrape_timeout: {SCRAPE_SECONDS}s\n"
                      "scrape_configs:\n  - job_name: gistmem\n"
                      f"    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n")
        self.log_path = os.path.join(directory, "prometheus.log")
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}",
             f"--storage.tsdb.path={os.path.join(directory, 'tsdb')}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self._log, stderr=subprocess.STDOUT)
        ops.wait_for(lambda: self._ready(), 60, "Prometheus to be ready")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{self.log()}")
        try:
            return ops.http_get(f"http://127.0.0.1:{self.port}/-/ready")[0] == 200
        except OSError:
            return False

    def log(self) -> str:
        with open(self.log_path) as log:
            return log.read()

    def query(self, expression: str, at: float = None) -> list:
        """The result vector of an instant query: [(labels, value), ...]."""
        parameters = {"query": expression}
        if at is not None:
            parameters["time"] = f"{at:.3f}"
        status, body = ops.http_get(f"http://127.0.0.1:{self.port}/api/v1/query?"
                                    + urllib.parse.urlencode(parameters))
        if status != 200:
            raise AssertionError(f"query {expression!r}: HTTP {status}: {body}")
        answer = json.loads(body)
        return [(sample["metric"], float(sample["value"][1])) for sample in
                answer["data"]["result"]]

    def scalar(self, expression: str, at: float = None):
        result = self.query(expression, at)
        return result[0][1] if len(result) == 1 else None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


class PrometheusScrapeTest(unittest.TestCase):
    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="gistmem-prometheus-")
        self.server = ServerProcess(os.path.join(self.directory, "db"),
                                    ["--metrics_listen", "127.0.0.1:0"])
        self.address = self.server.start()
        self.metrics_port = ops.printed_port(self.server, "metrics")
        self.prometheus = None

    def tearDown(self):
        if self.prometheus:
            self.prometheus.stop()
        if self.server.running():
            self.server.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def test_exposition_names_follow_conventions(self):
        status, text = ops.http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        self.assertEqual(status, 200)
        families = {line.split()[2]: line.split()[3] for line in text.splitlines()
                    if line.startswith("# TYPE ")}
        for name in ["gistmem_sessions", "gistmem_cache_bytes", "gistmem_retained_entries",
                     "gistmem_compression_ratio", "gistmem_tokens_total",
                     "gistmem_time_to_first_token_seconds", "gistmem_inter_token_latency_seconds",
                     "gistmem_forward_step_sequences", "gistmem_forward_step_rows",
                     "gistmem_scheduler_jobs", "gistmem_documents_in_memory",
                     "gistmem_document_attaches_total", "gistmem_store_bytes"]:
            self.assertIn(name, families, text)
        for name, kind in families.items():
            self.assertTrue(name.startswith("gistmem_"), name)
            if kind == "counter":
                self.assertTrue(name.endswith("_total"), name)
        self.assertEqual(families["gistmem_time_to_first_token_seconds"], "histogram")

    def test_prometheus_sees_what_the_test_sent(self):
        self.prometheus = Prometheus(self.directory, self.metrics_port)
        ops.wait_for(lambda: self.prometheus.scalar('up{job="gistmem"}') == 1, 60,
                     f"a first scrape:\n{self.prometheus.log()}")

        client = GistmemClient(self.address, timeout=120)
        chat_session = client.create_session("You are terse.").session_id
        turns = {"ttft": [], "generated": 0, "with_tokens": 0}

        def generate_turns(stop: threading.Event):
            chat = GistmemClient(self.address, timeout=120)
            while not stop.is_set():
                start = time.monotonic()
                first = None
                reply = chat.generate(chat_session, "Tell me something.", max_tokens=6, seed=1)
                for _ in reply:
                    if first is None:
                        first = time.monotonic() - start
                turns["generated"] += reply.end.usage.completion_tokens
                if reply.token_ids:
                    turns["with_tokens"] += 1
                    turns["ttft"].append(first if first is not None else time.monotonic() - start)
                # ~40 turns of ~35 tokens stay inside the fixture's 2048-token context.
                stop.wait(0.25)
            chat.close()

        stop = threading.Event()
        generator = threading.Thread(target=generate_turns, args=(stop,))
        created = missing = 0
        t_start = time.time()
        generator.start()
        # 10 CreateSession (OK) and 10 GetSession on a missing id (NOT_FOUND) per second.
        for tick in range(100):
            client.create_session()
            created += 1
            with self.assertRaises(GistmemError):
                client.get_session(f"missing-{tick}")
            missing += 1
            time.sleep(max(0.0, t_start + (tick + 1) * 0.1 - time.time()))
        t_end = time.time()
        stop.set()
        generator.join()
        self.assertGreater(turns["with_tokens"], 0, "no turn produced a token")

        # Counters are exact once a scrape after the traffic has happened.
        expected = {'gistmem_tokens_total{kind="generated"}': turns["generated"],
                    'gistmem_grpc_requests_total{method="CreateSession",code="OK"}': created + 1,
                    'gistmem_grpc_requests_total{method="GetSession"}': missing}
        ops.wait_for(lambda: all(self.prometheus.scalar(query) == value
                                 for query, value in expected.items()), 30,
                     f"Prometheus to see {expected}: "
                     f"{[(q, self.prometheus.scalar(q)) for q in expected]}")
        self.assertEqual(self.prometheus.scalar(
            'gistmem_grpc_errors_total{method="GetSession",code="NOT_FOUND"}'), missing)
        self.assertIsNone(self.prometheus.scalar(
            'gistmem_grpc_errors_total{method="CreateSession"}'))
        self.assertEqual(self.prometheus.scalar('gistmem_sessions{tier="store"}'), created + 1)
        self.assertEqual(self.prometheus.scalar('gistmem_time_to_first_token_seconds_count'),
                         turns["with_tokens"])

        # The rate in the middle of the traffic is the rate the test sent at.
        sent_rate = created / (t_end - t_start)
        middle = (t_start + t_end) / 2
        rate = self.prometheus.scalar(
            'sum(rate(gistmem_grpc_requests_total{method="GetSession"}[5s]))', at=middle)
        self.assertIsNotNone(rate)
        self.assertGreater(rate, 0.6 * sent_rate, f"sent {sent_rate:.2f}/s")
        self.assertLess(rate, 1.4 * sent_rate, f"sent {sent_rate:.2f}/s")

        # The median time to first token: in the bucket the client's own median falls in
        # (the client measures a little more: its clock starts before the call is sent).
        quantile = self.prometheus.scalar(
            "histogram_quantile(0.5, sum by (le) "
            "(rate(gistmem_time_to_first_token_seconds_bucket[1m])))", at=t_end + 2)
        client_median = statistics.median(turns["ttft"])
        upper = next((b for b in LATENCY_BUCKETS if b >= client_median), float("inf"))
        lower = max([0] + [b for b in LATENCY_BUCKETS if b < client_median])
        lower_of_lower = max([0] + [b for b in LATENCY_BUCKETS if b < lower])
        self.assertIsNotNone(quantile)
        self.assertGreaterEqual(quantile, lower_of_lower,
                                f"client median {client_median:.4f} s, {turns['ttft']}")
        self.assertLessEqual(quantile, upper,
                             f"client median {client_median:.4f} s, {turns['ttft']}")
        client.close()


if __name__ == "__main__":
    unittest.main()
