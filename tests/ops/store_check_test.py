"""gistmem-store check | export | drop on a stopped server's store with damaged records (made
by tests/fault's gistmem-store-tool damage): check lists exactly the damaged sessions,
export writes what can still be read, drop removes them, and the server then serves the rest
and can reuse the ids."""

import json
import os
import shutil
import subprocess
import tempfile
import unittest

import ops_support as ops
from ops_support import GistmemClient, GistmemError, ServerProcess, grpc, support


def store(*args: str):
    process = subprocess.run([support.required_path("GISTMEM_STORE"), *args],
                             capture_output=True, text=True, timeout=120, check=False)
    return process


def damage(db: str, family: str, session_id: str, mode: str) -> None:
    process = subprocess.run([support.required_path("GISTMEM_STORE_TOOL"), "damage", "--db", db,
                              "--family", family, "--tenant", "default", "--session",
                              session_id, "--seq", "0", "--mode", mode],
                             capture_output=True, text=True, timeout=120, check=False)
    if process.returncode != 0:
        raise AssertionError(f"damage: {process.stderr}")


class StoreCheckTest(unittest.TestCase):
    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="gistmem-store-check-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.db = os.path.join(self.directory, "db")
        self.server = ServerProcess(self.db)
        self.addCleanup(self.server.kill)

    def test_check_export_and_drop_damaged_sessions(self):
        with GistmemClient(self.server.start(), timeout=60) as client:
            for session_id in ("intact", "bad-transcript", "bad-record"):
                client.create_session("Be brief.", session_id=session_id, policy="full")
                client.generate(session_id, f"Hello from {session_id}.", max_tokens=4).wait()
        self.assertEqual(self.server.stop(), 0)

        clean = store("check", "--db", self.db)
        self.assertEqual(clean.returncode, 0, clean.stdout + clean.stderr)
        self.assertEqual(json.loads(clean.stdout)["sessions_checked"], 3)

        damage(self.db, "transcript", "bad-transcript", "flip")
        damage(self.db, "sessions", "bad-record", "flip")
        checked = store("check", "--db", self.db)
        self.assertEqual(checked.returncode, 1, checked.stdout + checked.stderr)
        report = json.loads(checked.stdout)
        damaged = {(entry["kind"], entry["id"]) for entry in report["damaged"]}
        self.assertEqual(damaged, {("session", "bad-transcript"), ("session", "bad-record")})
        self.assertTrue(all(entry["error"] for entry in report["damaged"]))

        out = os.path.join(self.directory, "remains.jsonl")
        exported = store("export", "--db", self.db, "--damaged", "--out", out)
        self.assertEqual(exported.returncode, 0, exported.stderr)
        with open(out) as lines:
            remains = {line["session_id"]: line for line in map(json.loads, lines)}
        self.assertEqual(set(remains), {"bad-transcript", "bad-record"})
        # The record of bad-transcript is whole; one of its turns is not.
        self.assertEqual(remains["bad-transcript"]["session"]["system_prompt"], "Be brief.")
        self.assertTrue(remains["bad-transcript"]["unreadable"])
        # bad-record's record is damaged, its transcript readable.
        self.assertIsNone(remains["bad-record"]["session"])
        self.assertIn("Hello from bad-record.",
                      [turn.get("text") for turn in remains["bad-record"]["turns"]])

        dropped = store("drop", "--db", self.db, "--damaged")
        self.assertEqual(dropped.returncode, 0, dropped.stdout + dropped.stderr)
        after = store("check", "--db", self.db)
        self.assertEqual(after.returncode, 0, after.stdout)
        self.assertEqual(json.loads(after.stdout)["sessions_checked"], 1)

        with GistmemClient(self.server.start(), timeout=60) as client:
            client.generate("intact", "Still there?", max_tokens=4).wait()
            with self.assertRaises(GistmemError) as raised:
                client.get_session("bad-record")
            self.assertEqual(raised.exception.code, grpc.StatusCode.NOT_FOUND)
            client.create_session(session_id="bad-record")  # the id is free again
        self.assertEqual(self.server.stop(), 0)

    def test_a_running_server_holds_the_store(self):
        self.server.start()
        busy = store("check", "--db", self.db)
        self.assertEqual(busy.returncode, 3, busy.stdout + busy.stderr)
        self.assertIn("stop it first", busy.stderr)
        self.assertEqual(self.server.stop(), 0)


if __name__ == "__main__":
    unittest.main()
