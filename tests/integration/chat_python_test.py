"""The Python client (clients/python, gistmem_client) against a real gistmem-server
(subprocess, temp RocksDB, fixture model).

Run: GISTMEM_SERVER=... /usr/bin/python3 -m unittest chat_python_test
"""

import os
import tempfile
import unittest

import chat_test_support as support
from chat_server_process import ServerProcess

support.use_python_client()

import grpc  # noqa: E402

from gistmem_client import GistmemClient, GistmemError  # noqa: E402

SYSTEM = "You are a helpful assistant."
MESSAGES = ["Hello! What is the capital of France?", "And what about Germany?",
            "Thanks. One more: Italy?"]
GREEDY = {"temperature": 0.0, "max_tokens": 12}


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


if __name__ == "__main__":
    unittest.main()
