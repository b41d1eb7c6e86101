"""gRPC health while gistmem-server drains on SIGTERM: NOT_SERVING is answered (not refused)
while a running turn finishes within --shutdown_grace, new calls are refused UNAVAILABLE, and
the running turn ends normally."""

import os
import shutil
import signal
import tempfile
import threading
import time
import unittest

import ops_support as ops
from ops_support import GistmemClient, GistmemError, ServerProcess, grpc


class DrainHealthTest(unittest.TestCase):
    def test_not_serving_while_draining(self):
        directory = tempfile.mkdtemp(prefix="gistmem-health-")
        self.addCleanup(shutil.rmtree, directory, True)
        server = ServerProcess(os.path.join(directory, "db"), ["--shutdown_grace", "60s"])
        self.addCleanup(server.kill)
        address = server.start()
        client = GistmemClient(address, timeout=120)
        self.assertEqual(client.health(), "SERVING")
        session = client.create_session(policy="full").session_id

        started = threading.Event()
        outcome = {}

        def long_turn():
            try:
                reply = client.generate(session, "Talk for a long time.", max_tokens=1500,
                                        temperature=1.0, seed=3)
                for _ in reply:
                    started.set()
                outcome["end"] = reply.end
            except GistmemError as error:  # noqa: BLE001
                outcome["error"] = error
            finally:
                started.set()

        turn = threading.Thread(target=long_turn)
        turn.start()
        self.assertTrue(started.wait(60))
        server._process.send_signal(signal.SIGTERM)  # noqa: SLF001

        seen = []
        refused = None
        with GistmemClient(address, timeout=5) as probe:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and turn.is_alive():
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
        turn.join(120)
        self.assertEqual(server._process.wait(timeout=120), 0)  # noqa: SLF001
        self.assertIn("NOT_SERVING", seen, f"{seen}\n{server.log()[-2000:]}")
        self.assertNotIn("SERVING", seen[seen.index("NOT_SERVING"):])
        self.assertEqual(refused, grpc.StatusCode.UNAVAILABLE)
        self.assertNotIn("error", outcome, outcome)
        self.assertIsNotNone(outcome.get("end"))
        client.close()


if __name__ == "__main__":
    unittest.main()
