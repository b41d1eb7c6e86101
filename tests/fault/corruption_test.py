"""Damaged stored records, end to end: through a real gistmem-server after a restart.

store/'s unit tests (tests/unit/store_corruption_test.cc) damage values under RocksStore and
check what the store returns; this test checks what a client of the service sees. Sessions
that all ran the same script are damaged behind the stopped server's back (gistmem-store-tool
damage: a flipped byte in a KV segment, a truncated segment, a truncated transcript record, a
flipped session record, a deleted segment), then the server is started again:

- it starts (the store opens);
- the damaged session's next turn (which loads it) is DATA_LOSS naming the key, and only that
  session's: an undamaged twin replies as it would have;
- listing still works and shows the others; the damaged sessions can be deleted, after which
  the store checks out whole.
"""

import os
import tempfile
import unittest

import fault_support as fs
from fault_support import GistmemClient, GistmemError, Policy, ServerProcess, grpc

POLICY = Policy("window", window=16, sink_tokens=4)
SYSTEM = "You are a terse assistant."
MESSAGES = ["Hello, who are you?", "Remember the number 4711.", "What number did I give you?"]
NEXT = "Say it once more."

# session -> (family, mode, which segment or turn, what the error says)
DAMAGES = {
    "flipped-window": ("kv", "flip", "window", "checksum mismatch"),
    "truncated-pinned": ("kv", "truncate", "pinned", "truncated"),
    "truncated-turn": ("transcript", "truncate", 2, "truncated"),
    "flipped-session": ("sessions", "flip", 0, "checksum mismatch"),
}
TWINS = ("twin-a", "twin-b")
MISSING_SEGMENT = "dropped-pinned"


class CorruptionTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="gistmem-fault-corruption-")
        cls.db = os.path.join(cls.tmp.name, "db")
        cls.server = ServerProcess(cls.db)
        try:
            cls.prepare()
        except BaseException:
            cls.server.kill()
            cls.tmp.cleanup()
            raise

    @classmethod
    def prepare(cls):
        address = cls.server.start()
        with GistmemClient(address, timeout=60) as client:
            for session_id in (*DAMAGES, *TWINS, MISSING_SEGMENT):
                client.create_session(SYSTEM, session_id=session_id, policy=POLICY)
                for message in MESSAGES:
                    client.generate(session_id, message, max_tokens=8, temperature=0).wait()
        assert cls.server.stop() == 0
        code, report = fs.store_check(cls.db)
        assert code == 0, report
        segments = {entry["session_id"]: {s["kind"]: s["seq"] for s in entry["kv_segments"]}
                    for entry in report["sessions"]}
        cls.damaged = {}
        for session_id, (family, mode, which, _) in DAMAGES.items():
            seq = segments[session_id][which] if family == "kv" else which
            cls.damaged[session_id] = fs.store_damage(cls.db, family, session_id, mode, seq)
        fs.store_damage(cls.db, "kv", MISSING_SEGMENT, "drop", segments[MISSING_SEGMENT]["pinned"])
        cls.address = cls.server.start()  # the store opens with damaged values in it
        cls.client = GistmemClient(cls.address, timeout=60)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.client.close()
            cls.server.stop()
        finally:
            cls.server.kill()
            cls.tmp.cleanup()

    def next_turn(self, session_id):
        return self.client.generate(session_id, NEXT, max_tokens=8, temperature=0).wait()

    def test_damaged_session_is_data_loss_naming_the_key(self):
        for session_id, (family, _, _, says) in DAMAGES.items():
            with self.subTest(session_id):
                with self.assertRaises(GistmemError) as caught:
                    if family == "sessions":
                        self.client.get_session(session_id)
                    else:
                        self.next_turn(session_id)
                self.assertEqual(caught.exception.code, grpc.StatusCode.DATA_LOSS)
                self.assertIn(self.damaged[session_id]["key"], caught.exception.details)
                self.assertIn(says, caught.exception.details)
                # Asked again, the same answer: nothing was half-loaded.
                with self.assertRaises(GistmemError) as again:
                    self.next_turn(session_id)
                self.assertEqual(again.exception.code, grpc.StatusCode.DATA_LOSS)

    def test_other_sessions_are_served_as_before(self):
        for session_id in DAMAGES:  # touch the damaged ones first
            with self.assertRaises(GistmemError):
                self.next_turn(session_id)
        first, second = (self.next_turn(twin) for twin in TWINS)
        self.assertEqual(first.text, second.text)
        self.assertEqual(first.end.usage, second.end.usage)

    def test_listing_shows_the_readable_sessions(self):
        listed = {session.session_id for session in self.client.list_sessions()}
        readable = {s for s, damage in DAMAGES.items() if damage[0] != "sessions"}
        self.assertLessEqual(readable | set(TWINS), listed)
        self.assertNotIn("flipped-session", listed)

    def test_zz_damaged_sessions_can_be_deleted(self):  # last: it removes them
        for session_id in (*DAMAGES, MISSING_SEGMENT):
            self.client.delete_session(session_id)
            with self.assertRaises(GistmemError) as caught:
                self.client.get_session(session_id)
            self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertEqual({s.session_id for s in self.client.list_sessions()}, set(TWINS))

    # A deleted segment has no checksum to fail: loading has to notice that the entries do not
    # add up to the session's stored memory state (the per-kind counts in its record).
    def test_missing_kv_segment_is_data_loss(self):
        try:
            reply = self.next_turn(MISSING_SEGMENT)
        except GistmemError as error:
            self.assertEqual(error.code, grpc.StatusCode.DATA_LOSS)
            return
        stats = self.client.stats(MISSING_SEGMENT)
        self.fail(f"served without its pinned segment: {reply.text!r} (usage {reply.end.usage}, "
                  f"retained entries {stats.retained_entries})")


if __name__ == "__main__":
    unittest.main()
