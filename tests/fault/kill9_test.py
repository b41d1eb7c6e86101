"""kill -9 of gistmem-server at random points of a long scripted run, many times over.

Client threads run scripted conversations (Generate turns and Appends, greedy, under every
memory policy, a few sessions more than --max_sessions_in_memory so that sessions also leave
memory and come back from the store mid-run) while the main thread kills the server with
SIGKILL after a random delay, then checks, before and after restarting it:

- the store opens (gistmem-store-tool check, then the server itself) and every record of every
  session decodes and agrees with the others (transcript length = turn_count, segments match
  the memory state, sizes match headers);
- every acknowledged operation is in the transcript, in order, with its exact text and reply;
  the one that was in flight is either wholly there or not at all (nothing half-written);
- the restarted server serves every session (GetSessionStats restores its memory from the
  store) with the stored stream length;
- greedy replies are deterministic, so the reply to step k of a script must be the same in
  every session that runs that script, whether or not kills and restores came in between.

Bounded: GISTMEM_FAULT_KILLS kills (default 60), each after at most 2 s of traffic.
Run: GISTMEM_SERVER=... GISTMEM_STORE_TOOL=... GISTMEM_TEST_MODEL=models/gistmem-16k \
     /usr/bin/python3 -m unittest -v kill9_test   (in tests/fault)
"""

import os
import random
import signal
import tempfile
import threading
import time
import unittest

import fault_support as fs
from fault_support import GistmemClient, GistmemError, Policy, ServerProcess

KILLS = int(os.environ.get("GISTMEM_FAULT_KILLS", "60"))
OPS_PER_SCRIPT = 16
THREADS = 4
SESSIONS_PER_THREAD = 2
# Small windows, so that the window segment is rewritten and entries leave it every few turns.
POLICIES = {
    "full": Policy("full"),
    "window": Policy("window", window=24, sink_tokens=4),
    "pool": Policy("pool", ratio=4, window=16, sink_tokens=4),
    "gist": Policy("gist"),
}
SYSTEM = "You are a terse assistant. Answer with a few words."
WORDS = ("harbor lantern orbit velvet cobalt meadow signal quartz ember willow canyon "
         "falcon juniper tundra marble saffron").split()


def script_op(k: int):
    """Step k of every script: ("generate", message, max_tokens) or ("append", text)."""
    word = WORDS[k % len(WORDS)]
    if k % 4 == 3:
        return ("append", f'{{"tool": "lookup", "step": {k}, "result": "{word} {k * 7}"}}')
    message = f"Step {k}: remember the word {word} and the number {k * 13}. What is it?"
    if k % 5 == 1:  # now and then a long prompt, read in several prefill chunks
        message += " " + " ".join(WORDS[(k + i) % len(WORDS)] for i in range(60))
    return ("generate", message, 4 + (k * 5) % 17)


class TrackedSession:
    def __init__(self, session_id: str, policy: str, via_chat: bool):
        self.session_id = session_id
        self.policy = policy
        self.via_chat = via_chat  # its turns go over Chat streams rather than Generate calls
        self.created = False  # acknowledged CreateSession
        self.done = 0  # script steps known to be stored (acknowledged, or found in the store)
        self.pending = None  # the step in flight when the server died (index), or None
        self.replies = {}  # step -> reply text, for acknowledged generate steps
        self.stream_tokens = None  # after the last step known stored, when known

    def finished(self) -> bool:
        return self.done >= OPS_PER_SCRIPT


class Kill9Test(unittest.TestCase):
    def setUp(self):
        self.rng = random.Random(fs.seed())
        tmp = tempfile.TemporaryDirectory(prefix="gistmem-fault-kill9-")
        self.addCleanup(tmp.cleanup)
        self.db = os.path.join(tmp.name, "db")
        self.server = ServerProcess(self.db, ("--max_sessions_in_memory", "5", "--threads", "1",
                                              "--workers", "2", "--prefill_chunk", "64"))
        self.addCleanup(self.server.kill)
        self.expected = {}  # (policy, step) -> reply text, from the first session that had it
        self.failures = []
        self.lock = threading.Lock()
        self.next_id = 0
        self.sessions = []  # every session ever made (finished ones stay, and are checked)
        self.active = [[] for _ in range(THREADS)]
        self.acked_ops = 0
        self.committed_unacked = 0
        self.lost_in_flight = 0
        self.compared = 0  # replies checked against another session's reply to the same step

    def new_session(self, thread: int) -> TrackedSession:
        with self.lock:
            policy = list(POLICIES)[self.next_id % len(POLICIES)]
            session = TrackedSession(f"kill9-{self.next_id:04d}-{policy}", policy,
                                     via_chat=self.next_id % 3 == 2)
            self.next_id += 1
            self.sessions.append(session)
        return session

    def fail(self, message: str) -> None:
        with self.lock:
            self.failures.append(message)

    # The traffic: each thread runs its sessions' scripts, one call at a time.

    def run_thread(self, thread: int, address: str, killed: threading.Event) -> None:
        with GistmemClient(address, timeout=60) as client:
            while not killed.is_set():
                slots = self.active[thread]
                while len(slots) < SESSIONS_PER_THREAD:
                    slots.append(self.new_session(thread))
                session = slots[self.rng.randrange(len(slots))] if slots else None
                try:
                    self.step(client, session)
                except GistmemError as error:
                    if killed.is_set():
                        return
                    self.fail(f"{session.session_id}: {error} (server alive)")
                    return
                if session.finished():
                    slots.remove(session)

    def step(self, client, session: TrackedSession) -> None:
        if not session.created:
            session.pending = -1
            client.create_session(SYSTEM, session_id=session.session_id,
                                  policy=POLICIES[session.policy])
            session.created, session.pending = True, None
            return
        k = session.done
        op = script_op(k)
        session.pending = k
        if op[0] == "append":
            usage = client.append(session.session_id, op[1], role="tool")
        else:
            if session.via_chat:
                with client.chat(session.session_id) as chat:
                    reply = chat.turn(op[1], max_tokens=op[2], temperature=0)
            else:
                reply = client.generate(session.session_id, op[1], max_tokens=op[2],
                                        temperature=0).wait()
            usage = reply.end.usage
            self.note_reply(session, k, reply.text)
            session.replies[k] = reply.text
        session.stream_tokens = usage.stream_tokens
        session.done, session.pending = k + 1, None
        with self.lock:
            self.acked_ops += 1

    def note_reply(self, session: TrackedSession, k: int, text: str) -> None:
        key = (session.policy, k)
        with self.lock:
            expected = self.expected.get(key)
            if expected is None:
                self.expected[key] = text
                return
            self.compared += 1
        if text != expected:
            self.fail(f"{session.session_id} step {k}: reply {text!r}, other sessions of "
                      f"policy {session.policy} replied {expected!r}")

    # The checks after each kill.

    def check_store(self, cycle: int) -> dict:
        code, report = fs.store_check(self.db)
        self.assertEqual(code, 0, f"kill {cycle}: store check failed: {report}")
        return {entry["session_id"]: entry for entry in report["sessions"]}

    def reconcile(self, cycle: int, session: TrackedSession, stored: dict) -> None:
        """The stored transcript is exactly the acknowledged steps, plus perhaps the one in
        flight, whole."""
        where = f"kill {cycle}, {session.session_id}"
        entry = stored.get(session.session_id)
        if not session.created:
            if entry is None:  # its CreateSession never got through: start it again
                session.pending = None
                return
            session.created, session.pending = True, None
        self.assertIsNotNone(entry, f"{where}: acknowledged session missing from the store")
        records = [r for r in entry["transcript"]]
        while records and records[0]["role"] == "system":  # the session start
            records.pop(0)
        steps = []  # (step, reply text or None)
        i = 0
        while i < len(records):
            k = len(steps)
            op = script_op(k)
            record = records[i]
            if op[0] == "append":
                self.assertEqual((record["role"], record["text"]), ("tool", op[1]),
                                 f"{where}: record {i} is not step {k}")
                steps.append((k, None))
                i += 1
                continue
            self.assertEqual((record["role"], record["text"]), ("user", op[1]),
                             f"{where}: record {i} is not step {k}'s message")
            self.assertLess(i + 1, len(records),
                            f"{where}: step {k}'s message is stored without its reply")
            answer = records[i + 1]
            self.assertEqual(answer["role"], "assistant", f"{where}: record {i + 1}")
            self.assertTrue(answer["generated"], f"{where}: record {i + 1}")
            steps.append((k, answer["text"]))
            i += 2
        n = len(steps)
        allowed = {session.done}
        if session.pending is not None and session.pending >= 0:
            allowed.add(session.done + 1)
        self.assertIn(n, allowed, f"{where}: {n} steps stored, {session.done} acknowledged, "
                      f"pending {session.pending}")
        for k, text in steps:
            if k in session.replies:
                self.assertEqual(text, session.replies[k],
                                 f"{where}: stored reply of step {k} differs from the one sent")
        adopted = n == session.done + 1
        if adopted:  # committed, not acknowledged: adopt it
            k, text = steps[-1]
            if text is not None:
                self.note_reply(session, k, text)
                session.replies[k] = text
            session.done = n
            with self.lock:
                self.committed_unacked += 1
        elif session.pending is not None and session.pending >= 0:
            with self.lock:
                self.lost_in_flight += 1
        if session.stream_tokens is not None and not adopted:
            self.assertEqual(entry["stream_tokens"], session.stream_tokens,
                             f"{where}: stream tokens")
        session.stream_tokens = entry["stream_tokens"]
        session.pending = None

    def check_served(self, cycle: int, address: str, stored: dict) -> None:
        """Every stored session comes back: its memory restores from the store."""
        with GistmemClient(address, timeout=60) as client:
            for session_id, entry in stored.items():
                stats = client.stats(session_id)
                self.assertEqual(stats.stream_tokens, entry["stream_tokens"],
                                 f"kill {cycle}, {session_id}: served stream tokens")
                self.assertEqual(client.get_session(session_id).turns, entry["turn_count"],
                                 f"kill {cycle}, {session_id}: served turns")

    def test_acknowledged_turns_survive_kill9(self):
        started = time.monotonic()
        address = self.server.start()
        kill_delays = []
        for cycle in range(1, KILLS + 1):
            killed = threading.Event()
            threads = [threading.Thread(target=self.run_thread, args=(t, address, killed))
                       for t in range(THREADS)]
            for thread in threads:
                thread.start()
            # Mostly mid-traffic; now and then right after start-up (sessions loading).
            delay = self.rng.uniform(0, 0.05) if cycle % 8 == 0 else self.rng.uniform(0.1, 2.0)
            kill_delays.append(delay)
            time.sleep(delay)
            killed.set()
            os.kill(fs.server_pid(self.server), signal.SIGKILL)
            self.server.kill()  # reaps it
            for thread in threads:
                thread.join(timeout=120)
                self.assertFalse(thread.is_alive(), "a client thread hangs after the kill")
            self.assertEqual(self.failures, [], f"kill {cycle}")

            stored = self.check_store(cycle)
            for session in self.sessions:
                self.reconcile(cycle, session, stored)
            self.assertEqual(self.failures, [], f"kill {cycle}")
            address = self.server.start()
            self.check_served(cycle, address, stored)

        # A last clean stop: the store is whole and every session still checks out.
        self.assertEqual(self.server.stop(), 0)
        stored = self.check_store(KILLS + 1)
        for session in self.sessions:
            self.reconcile(KILLS + 1, session, stored)
        self.assertEqual(self.failures, [])
        steps = sum(session.done for session in self.sessions)
        print(f"\nkill9: {KILLS} kills in {time.monotonic() - started:.0f} s, "
              f"{len(self.sessions)} sessions, {steps} script steps stored "
              f"({self.acked_ops} acknowledged calls, {self.committed_unacked} committed but "
              f"unacknowledged, {self.lost_in_flight} in flight and not stored), "
              f"{self.compared} replies checked against another session's reply to the same "
              f"step", flush=True)
        self.assertGreaterEqual(steps, KILLS)


if __name__ == "__main__":
    unittest.main()
