"""Clients that go away or run out of time mid-stream, many times over, against one real
gistmem-server process: everything the cut turns held is given back.

tests/integration/service_cancel_test.cc checks each way a turn can be cut once, in-process
(nothing stored, the next reply as it would have been). This test makes a few hundred such cuts
across several sessions, mixing: a Generate deadline, a Generate cancelled by the client after a
few deltas or after hundreds (past the window, so rollback restores evicted entries), a Chat
stream aborted mid-turn, a Chat stream whose channel is closed under it,
CancelTurn on a Chat stream, and a gistmem-chat process killed with SIGKILL mid-reply (the
kernel drops its connection). Afterwards:

- every session stores exactly what it stored before (turns, stream tokens), is idle
  (Generate with if_idle is not ABORTED) and replies as its twin, a session that never saw a
  cut turn;
- the server's resident memory stops growing: after a warm-up, the second half of the cuts
  adds at most a few MiB (a leak of the cut turns' caches would add megabytes per cut);
- SIGTERM stops the server at once (no turn is left running to wait for).
"""

import os
import random
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import fault_support as fs
from fault_support import GistmemClient, GistmemError, Policy, ServerProcess, grpc, support

from gistmem_client import pb
from gistmem_client._stubs import pb_grpc

CUTS = int(os.environ.get("GISTMEM_FAULT_CUTS", "280"))
# The random-weight fixture model, whose replies can run on to the context limit (the shipped
# model stops after a few words), so that every cut lands mid-reply. It has no gist token.
# Windows are wide enough that a 1900-token reply takes ~0.6 s (with W=32 it takes 0.2 s).
MODEL = fs.REPO_ROOT / "tests" / "fixtures" / "models" / "llama-gqa-bf16"
SESSIONS = ("full", "window", "pool")
POLICIES = {
    "full": Policy("full"),
    "window": Policy("window", window=512, sink_tokens=4),
    "pool": Policy("pool", ratio=4, window=256, sink_tokens=4),
}
LONG_REPLY = 4000  # max_tokens of the cut turns: they would run to the 2048-token context
SYSTEM = "You are a storyteller who never stops."
FIRST = "Tell me a long story about a lighthouse keeper."
NEXT = "Now, in one sentence, what was the story about?"
CANDIDATE_PROMPTS = ["Go on.", "Continue.", "Tell me more.", "And then?", "Keep going.",
                     "More, please.", "What happened next?", "Go on with the story.",
                     "Please continue.", "And after that?", "Next part.", "Carry on."]
# Resident memory the second half of the cuts may add (allocator noise, gRPC buffers).
RSS_SLACK = 24 << 20


class DisconnectTest(unittest.TestCase):
    def setUp(self):
        self.rng = random.Random(fs.seed())
        os.environ["GISTMEM_TEST_MODEL"] = str(MODEL)  # this process only; read by start()
        tmp = tempfile.TemporaryDirectory(prefix="gistmem-fault-disconnect-")
        self.addCleanup(tmp.cleanup)
        self.server = ServerProcess(os.path.join(tmp.name, "db"),
                                    ("--shutdown_grace", "30s", "--workers", "2"))
        self.addCleanup(self.server.kill)
        self.address = self.server.start()
        self.channel = grpc.insecure_channel(self.address)
        self.addCleanup(self.channel.close)
        self.stub = pb_grpc.GistmemStub(self.channel)
        self.client = GistmemClient(self.address, timeout=120)
        self.addCleanup(self.client.close)
        self.counts = {}

    def find_long_prompt(self, session_id):
        """A message whose greedy reply in this session runs to the context limit (tried on a
        fork). Cut turns store nothing, so the session stays where it is and every cut turn
        with this message would run as long: a cut always lands mid-reply."""
        for candidate in CANDIDATE_PROMPTS:
            fork = self.client.fork_session(session_id).session_id
            reply = self.client.generate(fork, candidate, max_tokens=LONG_REPLY,
                                         temperature=0).wait()
            self.client.delete_session(fork)
            if reply.end.finish_reason == "length" and reply.end.usage.completion_tokens > 1000:
                return candidate
        self.fail(f"no greedy reply of {session_id} runs long")

    def request(self, session_id, max_tokens=LONG_REPLY):
        return pb.GenerateRequest(session_id=session_id,
                                  message=pb.Message(role="user",
                                                     content=self.prompts[session_id]),
                                  sampling=pb.SamplingParams(temperature=0,
                                                             max_tokens=max_tokens))

    # The ways of cutting a turn. Each returns once the turn is cut from the client's side.

    def cut_by_deadline(self, session_id):
        try:
            for _ in self.stub.Generate(self.request(session_id),
                                        timeout=self.rng.uniform(0.005, 0.1)):
                pass
        except grpc.RpcError as error:
            self.assertEqual(error.code(), grpc.StatusCode.DEADLINE_EXCEEDED, error)
            return
        self.fail("a long reply ended within its deadline")

    def cut_by_cancel(self, session_id):
        call = self.stub.Generate(self.request(session_id), timeout=120)
        deltas = self.rng.randint(1, 5)
        for event in call:
            if event.WhichOneof("event") == "delta":
                deltas -= 1
                if deltas == 0:
                    break
        call.cancel()

    def cut_by_late_cancel(self, session_id):
        """Past the window: the cut turn has already evicted entries, which rollback restores."""
        call = self.stub.Generate(self.request(session_id), timeout=120)
        tokens = self.rng.randint(600, 1200)
        for event in call:
            if event.WhichOneof("event") == "delta":
                tokens -= len(event.delta.token_ids)
                if tokens <= 0:
                    break
            elif event.WhichOneof("event") == "end":
                self.fail(f"the reply ended before the cut: {event.end}")
        call.cancel()

    def cut_by_chat_abort(self, session_id):
        chat = self.client.chat(session_id, timeout=120)
        reply = chat.send(self.prompts[session_id], max_tokens=LONG_REPLY, temperature=0)
        for _ in zip(range(self.rng.randint(1, 5)), reply):
            pass
        chat.abort()

    def cut_by_closing_the_channel(self, session_id):
        with GistmemClient(self.address) as client:
            reply = client.chat(session_id).send(self.prompts[session_id],
                                                 max_tokens=LONG_REPLY, temperature=0)
            for _ in zip(range(self.rng.randint(1, 3)), reply):
                pass
        # The with block closed the channel under the open stream.

    def cut_by_cancel_turn(self, session_id):
        with self.client.chat(session_id, timeout=120) as chat:
            reply = chat.send(self.prompts[session_id], max_tokens=LONG_REPLY, temperature=0)
            for _ in zip(range(self.rng.randint(1, 5)), reply):
                pass
            chat.cancel()
            reply.wait()
            self.assertEqual(reply.end.finish_reason, "cancelled")

    def cut_by_killing_the_client(self, session_id):
        process = subprocess.Popen([support.required_path("GISTMEM_CHAT"), "--server",
                                    self.address, "--session", session_id, "--message",
                                    self.prompts[session_id], "--max_tokens", str(LONG_REPLY),
                                    "--temperature", "0"],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        process.stdout.read(self.rng.randint(1, 8))  # the reply has begun
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stdout.close()

    CUTTERS = ("cut_by_deadline", "cut_by_cancel", "cut_by_late_cancel", "cut_by_chat_abort",
               "cut_by_closing_the_channel", "cut_by_cancel_turn", "cut_by_killing_the_client")

    def cut_many(self, count):
        """`count` cuts, two sessions at a time (two threads, one session each at a time)."""
        jobs = [(self.rng.choice(self.CUTTERS), self.rng.choice(SESSIONS)) for _ in range(count)]
        errors = []
        lock = threading.Lock()
        busy = set()

        def work():
            while True:
                with lock:
                    job = next((j for j in jobs if j[1] not in busy), None)
                    if job is None:
                        return
                    jobs.remove(job)
                    busy.add(job[1])
                cutter, session_id = job
                try:
                    getattr(self, cutter)(session_id)
                except Exception as error:  # noqa: BLE001 - reported below
                    errors.append(f"{cutter} on {session_id}: {error!r}")
                finally:
                    with lock:
                        busy.discard(session_id)
                        self.counts[cutter] = self.counts.get(cutter, 0) + 1

        threads = [threading.Thread(target=work) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(errors, [], "\n".join(
            line for line in self.server.log().splitlines() if " turn " in line))

    def idle_turn(self, session_id, patience=5.0):
        """NEXT with if_idle: ABORTED means a cut turn still holds the session. The server
        learns of a dropped client a moment after the client goes, so allow it a little."""
        deadline = time.monotonic() + patience
        while True:
            try:
                return self.client.generate(session_id, NEXT, if_idle=True, max_tokens=24,
                                            temperature=0).wait()
            except GistmemError as error:
                if error.code != grpc.StatusCode.ABORTED or time.monotonic() > deadline:
                    self.fail(f"{session_id} is not idle {patience} s after the cuts: {error}")
                time.sleep(0.1)

    def test_cut_turns_give_everything_back(self):
        for session_id in SESSIONS:
            for name in (session_id, f"twin-{session_id}"):
                self.client.create_session(SYSTEM, session_id=name, policy=POLICIES[session_id])
                self.client.generate(name, FIRST, max_tokens=48, temperature=0).wait()
        self.prompts = {session_id: self.find_long_prompt(session_id) for session_id in SESSIONS}
        self.stored = {}
        for session_id in SESSIONS:
            session = self.client.get_session(session_id)
            self.stored[session_id] = (session.turns, session.stream_tokens)
        for twin in SESSIONS:
            self.assertEqual(self.client.get_session(f"twin-{twin}").turns, self.stored[twin][0])

        pid = fs.server_pid(self.server)
        self.cut_many(max(CUTS // 6, 12))  # warm-up: allocator arenas, gRPC buffers, caches
        rss_warm = fs.rss_bytes(pid)
        self.cut_many(CUTS // 2)
        rss_half = fs.rss_bytes(pid)
        self.cut_many(CUTS // 2)
        rss_end = fs.rss_bytes(pid)
        print(f"\ndisconnect: cuts {self.counts}; server RSS {rss_warm / 2**20:.1f} MiB after "
              f"warm-up, {rss_half / 2**20:.1f} MiB after {CUTS // 2} more, "
              f"{rss_end / 2**20:.1f} MiB after {CUTS // 2} more", flush=True)
        self.assertLess(rss_end - rss_half, RSS_SLACK, "resident memory keeps growing")

        # Nothing of a cut turn was stored; every session is idle and replies as its twin.
        for session_id in SESSIONS:
            with self.subTest(session_id):
                session = self.client.get_session(session_id)
                self.assertEqual((session.turns, session.stream_tokens), self.stored[session_id])
                reply = self.idle_turn(session_id)
                twin = self.client.generate(f"twin-{session_id}", NEXT, max_tokens=24,
                                            temperature=0).wait()
                self.assertEqual((reply.text, reply.end.usage), (twin.text, twin.end.usage))

        # No turn is left running: SIGTERM with a 30 s grace returns at once.
        self.client.close()
        self.channel.close()
        started = time.monotonic()
        self.assertEqual(self.server.stop(), 0)
        self.assertLess(time.monotonic() - started, 5.0, self.server.log()[-2000:])


if __name__ == "__main__":
    unittest.main()
