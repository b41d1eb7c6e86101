"""gRPC health while gistmem-server starts and drains: NOT_SERVING is answered while the model
loads (from the "starting on" line on) and while running turns finish within --shutdown_grace
after SIGTERM (new calls are then refused UNAVAILABLE, the running turns end normally)."""

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import ops_support as ops
from ops_support import GistmemClient, GistmemError, ServerProcess, grpc


TINY_MODEL = str(ops.REPO_ROOT / "models" / "gistmem-16k")


class StartupHealthTest(unittest.TestCase):
    def test_not_serving_while_the_model_loads(self):
        directory = tempfile.mkdtemp(prefix="gistmem-health-start-")
        self.addCleanup(shutil.rmtree, directory, True)
        process = subprocess.Popen(
            [ops.support.required_path("GISTMEM_SERVER"), "--model", TINY_MODEL, "--db",
             os.path.join(directory, "db"), "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.addCleanup(process.wait, 60)
        self.addCleanup(process.send_signal, signal.SIGTERM)
        first = process.stdout.readline()
        self.assertTrue(first.startswith("starting on "), first)
        address = first.split()[-1]
        seen = []
        with GistmemClient(address, timeout=5) as probe:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and (not seen or seen[-1] != "SERVING"):
                try:
                    seen.append(probe.health())
                    seen.append(probe.health("gistmem.v1.Gistmem"))
                except GistmemError:
                    seen.append("error")  # the hand-over between the two servers
                    time.sleep(0.005)
        self.assertEqual(seen[0], "NOT_SERVING", seen[:20])
        self.assertEqual(seen[-1], "SERVING", seen[-20:])
        self.assertEqual(process.stdout.readline().strip(), f"listening on {address}")


class DrainHealthTest(unittest.TestCase):
    def test_not_serving_while_draining(self):
        directory = tempfile.mkdtemp(prefix="gistmem-health-")
        self.addCleanup(shutil.rmtree, directory, True)
        # One forward thread and a dozen turns of 1900 tokens at once (this seed reaches the
        # length limit on the fixture): they run for seconds, so SIGTERM finds them running.
        server = ServerProcess(os.path.join(directory, "db"),
                               ["--shutdown_grace", "60s", "--threads", "1"])
        self.addCleanup(server.kill)
        address = server.start()
        client = GistmemClient(address, timeout=120)
        self.assertEqual(client.health(), "SERVING")
        sessions = [client.create_session(policy="full").session_id for _ in range(12)]
        session = sessions[0]

        started = threading.Event()
        outcomes = []

        def long_turn(session_id):
            outcome = {}
            outcomes.append(outcome)
            try:
                reply = client.generate(session_id, "Talk for a long time.", max_tokens=1900,
                                        temperature=0.7, top_k=20, seed=1)
                for _ in reply:
                    started.set()
                outcome["end"] = reply.end
            except GistmemError as error:  # noqa: BLE001
                outcome["error"] = error
            finally:
                started.set()

        turns = [threading.Thread(target=long_turn, args=(s,)) for s in sessions]
        for thread in turns:
            thread.start()
        self.assertTrue(started.wait(60))
        time.sleep(0.2)
        signalled = time.monotonic()
        server._process.send_signal(signal.SIGTERM)  # noqa: SLF001

        seen = []
        refused = None
        with GistmemClient(address, timeout=5) as probe:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and any(t.is_alive() for t in turns):
                try:
                    seen.append(probe.health())
                except GistmemError:
                    break
                if refused is None and "NOT_SERVING" in seen:
                    try:
                        probe.get_session(session)
                        refused = grpc.StatusCode.OK
                    except GistmemError as error:
                        refused = error.code
                time.sleep(0.01)
        for thread in turns:
            thread.join(120)
        drained = time.monotonic() - signalled
        self.assertEqual(server._process.wait(timeout=120), 0)  # noqa: SLF001
        self.assertIn("NOT_SERVING", seen, f"{seen}, turns ended {drained:.2f} s after SIGTERM"
                      f"\n{server.log()[-2000:]}")
        self.assertNotIn("SERVING", seen[seen.index("NOT_SERVING"):])
        self.assertEqual(refused, grpc.StatusCode.UNAVAILABLE)
        # The running turns were not cancelled: they ended normally during the drain.
        self.assertEqual(len(outcomes), len(sessions))
        for outcome in outcomes:
            self.assertNotIn("error", outcome, outcome)
            self.assertIsNotNone(outcome.get("end"))
        client.close()


if __name__ == "__main__":
    unittest.main()
