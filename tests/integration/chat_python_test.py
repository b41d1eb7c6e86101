"""The Python client (clients/python, gistmem_client) against a real gistmem-server
(subprocess, temp RocksDB, fixture model), shared documents included, and the example
clients/examples/shared_document.py run end to end against that server.

Run: GISTMEM_SERVER=... /usr/bin/python3 -m unittest chat_python_test
"""

import dataclasses
import os
import re
import subprocess
import sys
import tempfile
import unittest

import chat_test_support as support
from chat_server_process import ServerProcess

support.use_python_client()

import grpc  # noqa: E402

from gistmem_client import GistmemClient, GistmemError, Policy  # noqa: E402

SYSTEM = "You are a helpful assistant."
MESSAGES = ["Hello! What is the capital of France?", "And what about Germany?",
            "Thanks. One more: Italy?"]
GREEDY = {"temperature": 0.0, "max_tokens": 12}
# A document for the tests below (the example script puts its own text).
MANUAL = ("The lighthouse log. The lamp is lit at sunset and put out at sunrise. The keeper "
          "winds the clockwork every four hours, oils the gears on Sundays and writes the "
          "weather into the red book. Fog horn: two blasts every thirty seconds.")
POOLED = Policy("pool", ratio=4, window=8, sink_tokens=2)
EXAMPLE = support.REPO_ROOT / "clients" / "examples" / "shared_document.py"


def summary(reply):
    """What must match between two sessions that read the same stream."""
    return reply.text, reply.token_ids, reply.end


class PythonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="gistmem-python-")
        cls.server = ServerProcess(os.path.join(cls.tmp.name, "db"))
        try:
            cls.client = GistmemClient(cls.server.start(), timeout=120)
        except Exception:
            cls.tmp.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        try:
            cls.server.stop()
        finally:
            cls.server.kill()
            cls.tmp.cleanup()

    def new_session(self, **kwargs):
        return self.client.create_session(SYSTEM, **kwargs).session_id

    def test_health(self):
        self.assertEqual(self.client.health(), "SERVING")

    def test_session_lifecycle(self):
        session = self.client.create_session(SYSTEM, session_id="py-lifecycle",
                                             labels={"suite": "python"})
        self.assertEqual(session.session_id, "py-lifecycle")
        fetched = self.client.get_session("py-lifecycle")
        self.assertEqual((fetched.system_prompt, dict(fetched.labels)),
                         (SYSTEM, {"suite": "python"}))
        self.assertIn("py-lifecycle", [s.session_id for s in self.client.list_sessions(1)])
        with self.assertRaises(GistmemError) as caught:
            self.client.create_session(session_id="py-lifecycle")
        self.assertEqual(caught.exception.code, grpc.StatusCode.ALREADY_EXISTS)
        self.client.delete_session("py-lifecycle")
        with self.assertRaises(GistmemError) as caught:
            self.client.get_session("py-lifecycle")
        self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)

    def test_generate_streams_deltas_then_turn_end(self):
        session_id = self.new_session()
        reply = self.client.generate(session_id, MESSAGES[0], **GREEDY)
        deltas = list(reply)
        self.assertEqual("".join(deltas), reply.text)
        self.assertIn(reply.end.finish_reason, ("stop", "length"))
        self.assertLessEqual(reply.end.usage.completion_tokens, 12)
        self.assertGreater(reply.end.usage.prompt_tokens, 0)
        self.assertEqual(reply.session_id, session_id)
        self.assertEqual(self.client.get_session(session_id).stream_tokens,
                         reply.end.usage.stream_tokens)

    def test_chat_stream_and_generate_build_the_same_session(self):
        on_stream = self.new_session()
        with self.client.chat(on_stream) as chat:
            streamed = [chat.turn(message, **GREEDY) for message in MESSAGES]
        one_by_one = self.new_session()
        generated = [self.client.generate(one_by_one, message, **GREEDY).wait()
                     for message in MESSAGES]
        self.assertEqual([summary(r) for r in streamed], [summary(r) for r in generated])
        self.assertGreater(streamed[1].end.usage.cached_tokens, 0)
        self.assertLess(streamed[0].turn_index, streamed[1].turn_index)

    def test_fork_continues_like_the_original(self):
        original = self.new_session()
        self.client.generate(original, MESSAGES[0], **GREEDY).wait()
        fork = self.client.fork_session(original).session_id
        self.assertNotEqual(fork, original)
        on_fork = self.client.generate(fork, MESSAGES[1], **GREEDY).wait()
        on_original = self.client.generate(original, MESSAGES[1], **GREEDY).wait()
        self.assertEqual(summary(on_fork), summary(on_original))
        # The fork starts from the original's cache instead of recomputing it.
        self.assertGreater(on_fork.end.usage.cached_tokens, 0)

    def test_append_then_generate(self):
        session_id = self.new_session()
        before = self.client.get_session(session_id).stream_tokens
        usage = self.client.append(session_id, '{"tool": "weather", "result": "rain"}')
        self.assertEqual(usage.completion_tokens, 0)
        self.assertGreater(usage.stream_tokens, before)
        self.assertEqual(self.client.stats(session_id).stream_tokens, usage.stream_tokens)
        reply = self.client.generate(session_id, "Do I need an umbrella?", **GREEDY).wait()
        self.assertGreater(reply.end.usage.cached_tokens, 0)

    def test_cancelled_turn_is_not_stored(self):
        session_id = self.new_session()
        with self.client.chat(session_id) as chat:
            first = chat.turn(MESSAGES[0], **GREEDY)
            before = self.client.stats(session_id)
            reply = chat.send(MESSAGES[1], temperature=0.0, max_tokens=1500)
            next(iter(reply), None)
            chat.cancel()
            reply.wait()
            if reply.end.finish_reason != "cancelled":
                self.skipTest(f"the turn ended ({reply.end.finish_reason}) before the cancel")
            self.assertEqual(self.client.stats(session_id), before)
            after = chat.turn(MESSAGES[1], **GREEDY)
        control = self.new_session()
        self.assertEqual(summary(self.client.generate(control, MESSAGES[0], **GREEDY).wait()),
                         summary(first))
        self.assertEqual(summary(self.client.generate(control, MESSAGES[1], **GREEDY).wait()),
                         summary(after))

    def test_errors_carry_the_status_code(self):
        with self.assertRaises(GistmemError) as caught:
            self.client.generate("no-such-session", "hi").wait()
        self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)
        with self.assertRaises(GistmemError) as caught:
            with self.client.chat("no-such-session") as chat:
                chat.turn("hi")
        self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)
        session_id = self.new_session()
        refused = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
        for content in ("lorem ipsum " * 10_000, "x" * (5 << 20)):  # > context; > 4 MiB
            with self.subTest(chars=len(content)), self.assertRaises(GistmemError) as caught:
                self.client.generate(session_id, content, **GREEDY).wait()
            self.assertIn(caught.exception.code, refused)
        with self.assertRaises(GistmemError) as caught:
            self.client.generate(session_id, "hi", temperature=-1.0).wait()
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(self.client.get_session(session_id).turns, 0)

    def test_put_document_is_content_addressed(self):
        text = MANUAL + " Spare wicks are in the oak chest."  # put by no other test
        first = self.client.put_document(text, POOLED, labels={"suite": "python"})
        self.assertTrue(first.created)
        self.assertTrue(first.document_id.startswith("d-"), first.document_id)
        self.assertEqual(first.policy, POOLED)
        self.assertEqual(first.labels, {"suite": "python"})
        self.assertGreater(first.raw_tokens, 40)
        self.assertLess(first.retained_entries, first.stream_tokens)  # pooled: it shrank
        self.assertGreater(first.bytes, 0)
        self.assertIsNotNone(first.create_time)
        second = self.client.put_document(text, POOLED)
        self.assertFalse(second.created)  # found stored: nothing was computed
        self.assertEqual(second, dataclasses.replace(first, created=False))
        self.assertEqual(self.client.get_document(first.document_id), second)
        # Another policy (or role) is another document.
        full = self.client.put_document(text, "full")
        self.assertTrue(full.created)
        self.assertNotEqual(full.document_id, first.document_id)
        self.assertEqual(full.retained_entries, full.stream_tokens)
        as_tool = self.client.put_document(text, POOLED, role="tool")
        self.assertNotEqual(as_tool.document_id, first.document_id)

    def test_attach_document_into_two_sessions(self):
        document = self.client.put_document(MANUAL, POOLED)
        sessions = [self.new_session(), self.new_session()]
        for session_id in sessions:
            # The system prompt is read with the first message: one first keeps it first.
            before = self.client.append(session_id, "Here is the log.", role="user")
            attached = self.client.attach_document(session_id, document.document_id,
                                                   if_idle=True)
            self.assertEqual(attached.attached_entries, document.retained_entries)
            self.assertEqual(attached.usage.prompt_tokens, 0)  # nothing was computed
            self.assertEqual(attached.usage.stream_tokens,
                             before.stream_tokens + document.stream_tokens)
            stats = self.client.stats(session_id)
            self.assertEqual((stats.documents, stats.document_entries),
                             (1, document.retained_entries))
            self.assertEqual(stats.stream_tokens, attached.usage.stream_tokens)
            self.assertEqual(self.client.get_session(session_id).stream_tokens,
                             attached.usage.stream_tokens)
        replies = [self.client.generate(session_id, "When is the lamp lit?", **GREEDY).wait()
                   for session_id in sessions]
        # Same prompt, same document, same question: the same answer, and the document's
        # positions came from the cache.
        self.assertEqual(summary(replies[0])[:2], summary(replies[1])[:2])
        for reply in replies:
            self.assertGreaterEqual(reply.end.usage.cached_tokens, document.stream_tokens)
        for session_id in sessions:
            self.assertEqual(self.client.stats(session_id).document_entries,
                             document.retained_entries)

    def test_document_errors_carry_the_status_code(self):
        unknown = "d-0123456789abcdef0123456789abcdef"
        with self.assertRaises(GistmemError) as caught:
            self.client.get_document(unknown)
        self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)
        session_id = self.new_session()
        with self.assertRaises(GistmemError) as caught:
            self.client.attach_document(session_id, unknown)
        self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)
        document = self.client.put_document(MANUAL, POOLED)
        with self.assertRaises(GistmemError) as caught:
            self.client.attach_document("no-such-session", document.document_id)
        self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)
        for bad in ("bad id!", ""):
            with self.subTest(document_id=bad), self.assertRaises(GistmemError) as caught:
                self.client.get_document(bad)
            self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaises(GistmemError) as caught:
            self.client.put_document("")
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaises(GistmemError) as caught:
            self.client.put_document(MANUAL, role="narrator")
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaises(GistmemError) as caught:  # the fixture is not gist-trained
            self.client.put_document(MANUAL, "gist")
        self.assertEqual(caught.exception.code, grpc.StatusCode.FAILED_PRECONDITION)
        self.assertEqual(self.client.stats(session_id).documents, 0)

    def test_attach_if_idle_while_a_turn_runs_is_aborted(self):
        document = self.client.put_document(MANUAL, POOLED)
        session_id = self.new_session()
        with self.client.chat(session_id) as chat:
            reply = chat.send(MESSAGES[0], temperature=0.0, max_tokens=1500)
            next(iter(reply), None)
            try:
                self.client.attach_document(session_id, document.document_id, if_idle=True)
                attached = True
            except GistmemError as error:
                self.assertEqual(error.code, grpc.StatusCode.ABORTED)
                attached = False
            chat.cancel()
            reply.wait()
        if attached:
            self.skipTest(f"the turn ended ({reply.end.finish_reason}) before the attach")
        self.assertEqual(self.client.stats(session_id).documents, 0)

    def run_example(self):
        process = subprocess.run(
            [sys.executable, str(EXAMPLE), "--server", self.server.address, "--max-tokens", "8"],
            capture_output=True, text=True, timeout=300, check=False)
        self.assertEqual(process.returncode, 0, support.describe(process))
        return process.stdout

    def test_shared_document_example(self):
        output = self.run_example()
        puts = re.findall(r"^agent ([AB]) put: (d-[0-9a-f]{32}) created=(True|False)", output,
                          re.MULTILINE)
        self.assertEqual(len(puts), 2, output)
        self.assertEqual(puts[0][1], puts[1][1], output)  # one document
        self.assertEqual([created for _, _, created in puts], ["True", "False"], output)
        self.assertIn("second put: same document, created=False, nothing computed", output)
        entries = re.search(r"retained_entries=(\d+) \(", output)
        self.assertIsNotNone(entries, output)
        stream = re.search(r"stream_tokens=(\d+) retained_entries", output)
        self.assertLess(int(entries.group(1)), int(stream.group(1)), output)
        attached = re.findall(r"attached (\d+) entries, prompt_tokens=0", output)
        self.assertEqual(attached, [entries.group(1)] * 2, output)
        stats = re.findall(r"^agent [AB] stats: .*document_entries=(\d+) documents=1 ", output,
                           re.MULTILINE)
        self.assertEqual(stats, [entries.group(1)] * 2, output)
        # The example deleted its sessions.
        for session_id in re.findall(r"^agent [AB] session (\S+):", output, re.MULTILINE):
            with self.assertRaises(GistmemError) as caught:
                self.client.get_session(session_id)
            self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)
        # A second run finds the document stored: neither put computes anything.
        again = re.findall(r"^agent [AB] put: (d-[0-9a-f]{32}) created=(True|False)",
                           self.run_example(), re.MULTILINE)
        self.assertEqual(again, [(puts[0][1], "False")] * 2)


class PythonResumeAfterKillTest(unittest.TestCase):
    """SIGKILL the server the moment a TurnEnd arrives: that turn must be durable."""

    def test_continue_after_kill_9(self):
        tmp = tempfile.TemporaryDirectory(prefix="gistmem-python-kill-")
        self.addCleanup(tmp.cleanup)
        server = ServerProcess(os.path.join(tmp.name, "db"))
        self.addCleanup(server.kill)

        with GistmemClient(server.start(), timeout=120) as client:
            control = client.create_session(SYSTEM).session_id
            with client.chat(control) as chat:
                expected = [chat.turn(message, **GREEDY) for message in MESSAGES]
            session_id = client.create_session(SYSTEM).session_id
            chat = client.chat(session_id)
            first = chat.turn(MESSAGES[0], **GREEDY)  # returns as soon as TurnEnd is read
            server.kill()
            chat.abort()
        self.assertEqual(summary(first), summary(expected[0]))

        with GistmemClient(server.start(), timeout=120) as client:
            with client.chat(session_id) as chat:
                resumed = [chat.turn(message, **GREEDY) for message in MESSAGES[1:]]
            self.assertEqual(client.get_session(control).stream_tokens,
                             expected[-1].end.usage.stream_tokens)
        self.assertEqual([summary(r) for r in resumed], [summary(r) for r in expected[1:]])



class KeysAndTlsTest(unittest.TestCase):
    """A server with API keys behind TLS (a certificate made here with openssl)."""

    KEY = "python-test-key-000111222"

    def test_key_and_certificate(self):
        tmp = tempfile.TemporaryDirectory(prefix="gistmem-python-tls-")
        self.addCleanup(tmp.cleanup)
        cert, key = os.path.join(tmp.name, "cert.pem"), os.path.join(tmp.name, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert],
                       check=True, capture_output=True)
        keys = os.path.join(tmp.name, "keys")
        with open(keys, "w") as f:
            f.write(f"{self.KEY} team-python\n")
        server = ServerProcess(os.path.join(tmp.name, "db"),
                               ("--api_keys_file", keys, "--tls_cert", cert, "--tls_key", key))
        self.addCleanup(server.kill)
        address = server.start()
        with open(cert, "rb") as f:
            root = f.read()
        with GistmemClient(address, timeout=60, api_key=self.KEY,
                           tls_root_certificates=root) as client:
            session = client.create_session(system_prompt="Secure.")
            self.assertTrue(session.session_id)
        with GistmemClient(address, timeout=60, tls_root_certificates=root) as anonymous:
            with self.assertRaises(GistmemError) as caught:
                anonymous.create_session(system_prompt="No key.")
            self.assertEqual(caught.exception.code, grpc.StatusCode.UNAUTHENTICATED)
        with GistmemClient(address, timeout=10, api_key=self.KEY) as plaintext:
            with self.assertRaises(GistmemError) as caught:
                plaintext.create_session(system_prompt="Plaintext.")
            self.assertEqual(caught.exception.code, grpc.StatusCode.UNAVAILABLE)

if __name__ == "__main__":
    unittest.main()
