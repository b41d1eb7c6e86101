"""A full disk under a running gistmem-server: its --db on a 16 MiB tmpfs, filled up by a file
until turns can no longer be committed.

What must hold (issues 7 and 15): the turn that does not fit is answered RESOURCE_EXHAUSTED, the
server stays up and keeps serving reads, nothing of the failed turn is stored; once space is
freed the running server writes again (no restart), and the store opens cleanly with every
acknowledged turn in it.

Needs a tmpfs mount: as root (`mount -t tmpfs -o size=16m tmpfs DIR`), else inside an unprivileged
user and mount namespace (`unshare --user --map-root-user --mount`, where the kernel allows
them); skipped when neither works. tests/unit/store_atomicity_test.cc covers the store's side
with a RocksDB file system that fakes "no space" on the write-ahead log only.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import fault_support as fs
from fault_support import GistmemClient, GistmemError, ServerProcess, grpc

TMPFS_SIZE = "16m"
LEFT_FREE = 2 << 20  # bytes the filler leaves: a few turns (a token of K/V is 6 KiB)
INNER = "GISTMEM_DISK_FULL_IN_NAMESPACE"
LONG = "Please keep this note for later: amber falcon quartz meadow."


def try_mount(path: str) -> str:
    """Mounts a tmpfs at `path`; returns "" or why it could not."""
    process = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", path],
                             capture_output=True, text=True, check=False)
    return "" if process.returncode == 0 else (process.stderr.strip() or "mount failed")


def setUpModule():
    # Not root: run this module again inside a user + mount namespace, once.
    if os.geteuid() != 0 and not os.environ.get(INNER) and shutil.which("unshare"):
        probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"],
                               capture_output=True, check=False)
        if probe.returncode == 0:
            env = dict(os.environ, **{INNER: "1"})
            result = subprocess.run(["unshare", "--user", "--map-root-user", "--mount",
                                     sys.executable, "-m", "unittest", "-v", "disk_full_test"],
                                    cwd=fs.HERE, env=env, check=False)
            if result.returncode != 0:
                raise RuntimeError(f"disk_full_test in a user namespace failed "
                                   f"(exit {result.returncode}, output above)")
            raise unittest.SkipTest("ran in a user namespace (output above)")


class DiskFullTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="gistmem-fault-disk-full-")
        self.addCleanup(tmp.cleanup)
        self.mount_point = os.path.join(tmp.name, "fs")
        os.mkdir(self.mount_point)
        why = try_mount(self.mount_point)
        if why:
            self.skipTest(f"cannot mount a tmpfs here ({why}); see this file's docstring")
        self.addCleanup(subprocess.run, ["umount", "-l", self.mount_point], check=False)
        self.db = os.path.join(self.mount_point, "db")
        self.filler = os.path.join(self.mount_point, "filler")
        self.server = ServerProcess(self.db, ("--workers", "2"))
        self.addCleanup(self.server.kill)

    def fill_disk(self) -> None:
        stat = os.statvfs(self.mount_point)
        free = stat.f_bavail * stat.f_frsize
        with open(self.filler, "wb") as filler:
            filler.write(b"\0" * max(0, free - LEFT_FREE))

    def run_until_full(self):
        """Turns on session "a" until one fails. Returns (acknowledged replies, the error or
        None when the server died under the call)."""
        address = self.server.start()
        with GistmemClient(address, timeout=60) as client:
            for session_id in ("a", "b"):
                client.create_session("You are terse.", session_id=session_id, policy="full")
            client.generate("b", "Hello", max_tokens=8, temperature=0).wait()
            self.fill_disk()
            acknowledged = []
            for i in range(200):
                try:
                    reply = client.generate("a", f"Turn {i}. {LONG}", max_tokens=16,
                                            temperature=0).wait()
                except GistmemError as error:
                    try:  # a server that crashed takes a moment to be reaped
                        self.server._process.wait(timeout=2)  # noqa: SLF001
                    except subprocess.TimeoutExpired:
                        return acknowledged, error
                    return acknowledged, None
                acknowledged.append(reply)
        self.fail("200 turns fitted on the full disk")

    def check_store_after(self, acknowledged) -> None:
        """With the filler gone: the store opens, the acknowledged turns are all there, whole,
        and the sessions go on."""
        os.remove(self.filler)
        code, report = fs.store_check(self.db)
        if code == 3 and "No space left" in report.get("open_error", ""):
            # Opening replays the write-ahead log into new table and blob files, which need
            # as much room again as the log holds; an 8 MiB disk whose log took most of it
            # cannot. The failed open must have changed nothing: move the store to a disk
            # with room (a copy outside the tmpfs) and open it there.
            print(f"\nthe store does not open on the freed 8 MiB disk ({report['open_error']}); "
                  f"retrying on a copy with room", file=sys.stderr)
            roomy = os.path.join(os.path.dirname(self.mount_point), "roomy-db")
            shutil.copytree(self.db, roomy)
            self.db = self.server.db_path = roomy
            code, report = fs.store_check(self.db)
        self.assertEqual(code, 0, report)
        [stored] = [s for s in report["sessions"] if s["session_id"] == "a"]
        replies = [r["text"] for r in stored["transcript"] if r["role"] == "assistant"]
        self.assertEqual(replies, [reply.text for reply in acknowledged])
        address = self.server.start()
        with GistmemClient(address, timeout=60) as client:
            self.assertEqual(client.get_session("a").turns, stored["turn_count"])
            client.generate("a", "And now?", max_tokens=4, temperature=0).wait()
            client.generate("b", "And now?", max_tokens=4, temperature=0).wait()
        self.assertEqual(self.server.stop(), 0)

    def test_acknowledged_turns_survive_a_full_disk(self):
        acknowledged, error = self.run_until_full()
        self.assertGreater(len(acknowledged), 0, "no turn fitted at all")
        self.server.kill()  # however it ended, from here on the server is stopped
        self.check_store_after(acknowledged)

    # It used to abort instead: RocksDB's info LOG lived on the same full disk, and RocksDB 7.8
    # (Debian's, assertions on) asserted when it wrote to that log again after a failed write
    # (tests/fault/README.md, "Findings"). The info log now goes through spdlog.
    def test_full_disk_is_resource_exhausted_and_the_server_stays_up(self):
        acknowledged, error = self.run_until_full()
        self.assertIsNotNone(error, f"the server died on the full disk:\n"
                             f"{self.server.log()[-1500:]}")
        self.assertEqual(error.code, grpc.StatusCode.RESOURCE_EXHAUSTED, error)
        address = self.server.address
        with GistmemClient(address, timeout=60) as client:
            self.assertEqual(client.health(), "SERVING")
            session = client.get_session("a")  # reads go on; the failed turn left nothing
            self.assertEqual(session.turns, acknowledged[-1].end.turn_index + 1)
            self.assertEqual(session.stream_tokens, acknowledged[-1].end.usage.stream_tokens)
            with self.assertRaises(GistmemError) as again:
                client.generate("b", "More?", max_tokens=4, temperature=0).wait()
            self.assertEqual(again.exception.code, grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertEqual(self.server.stop(), 0)
        self.check_store_after(acknowledged)

    def test_writes_go_on_once_space_returns_without_a_restart(self):
        acknowledged, error = self.run_until_full()
        self.assertIsNotNone(error, f"the server died on the full disk:\n"
                             f"{self.server.log()[-1500:]}")
        self.assertEqual(error.code, grpc.StatusCode.RESOURCE_EXHAUSTED, error)
        os.remove(self.filler)  # space returns; the same server process goes on
        with GistmemClient(self.server.address, timeout=60) as client:
            before = client.get_session("a")
            self.assertEqual(before.turns, acknowledged[-1].end.turn_index + 1)
            # The first write after space returned goes through: the store resumes RocksDB
            # before writing (store/rocks_options.h), no waiting for a poll.
            try:
                more = [client.generate("a", f"After {i}. {LONG}", max_tokens=8,
                                        temperature=0).wait() for i in range(3)]
            except GistmemError:
                print(self.server.log()[-4000:], file=sys.stderr)  # why it stayed stopped
                raise
            other = client.generate("b", "And now?", max_tokens=4, temperature=0).wait()
            client.create_session("You are terse.", session_id="c", policy="full")
            client.generate("c", "Hello again", max_tokens=4, temperature=0).wait()
            after = client.get_session("a")
            self.assertEqual(after.turns, before.turns + 2 * len(more))
            self.assertEqual(after.stream_tokens, more[-1].end.usage.stream_tokens)
            self.assertEqual(client.get_session("b").turns, other.end.turn_index + 1)
            self.assertEqual(client.health(), "SERVING")
        self.assertEqual(self.server.stop(), 0)
        # Stopped, the store holds every acknowledged turn, those after the full disk too.
        code, report = fs.store_check(self.db)
        self.assertEqual(code, 0, report)
        [stored] = [s for s in report["sessions"] if s["session_id"] == "a"]
        replies = [r["text"] for r in stored["transcript"] if r["role"] == "assistant"]
        self.assertEqual(replies, [reply.text for reply in acknowledged + more])
        self.assertIn("c", [s["session_id"] for s in report["sessions"]])


if __name__ == "__main__":
    unittest.main()
