"""gistmem-chat against a real gistmem-server (subprocess, temp RocksDB, fixture model):
turns and their usage, errors and exit codes, stats, and resuming a session after a clean
restart and after kill -9, compared with a session that was never interrupted.

Run: GISTMEM_CHAT=... GISTMEM_SERVER=... /usr/bin/python3 -m unittest chat_cli_test
"""

import os
import tempfile
import unittest

import chat_test_support as support
from chat_server_process import ServerProcess

SYSTEM = "You are a helpful assistant."
FIRST = "Hello! What is the capital of France?"
SECOND = "And what about Germany?"
THIRD = "Thanks. One more: Italy?"
GREEDY = ("--temperature", "0", "--max_tokens", "12")
STATS_FIELDS = {"session_id", "stream_tokens", "raw_tokens", "retained_entries", "sink_entries",
                "gist_entries", "pooled_entries", "window_entries", "bytes_gpu", "bytes_host",
                "bytes_disk", "compression_ratio"}


class ServerTestCase(unittest.TestCase):
    """Helpers for tests that drive gistmem-chat against self.server."""

    server: ServerProcess

    def chat(self, address, *args):
        return support.run_chat(address, *args)

    def chat_json(self, address, *args):
        """Runs a scripted gistmem-chat --json that must succeed; returns its JSON lines."""
        process = self.chat(address, *args, "--json")
        self.assertEqual(process.returncode, 0, self.explain(process))
        return support.json_lines(process)

    def assert_fails_with(self, process, *code_names):
        self.assertIn(process.returncode, [support.EXIT_CODES[name] for name in code_names],
                      self.explain(process))
        self.assertTrue(process.stderr.startswith(tuple(f"{name}: " for name in code_names)),
                        self.explain(process))

    def explain(self, process):
        return f"{support.describe(process)}\nserver log (tail):\n{self.server.log()[-4000:]}"

    def assert_same_turn(self, turn, control):
        """Same greedy reply and the same accounting as the control session's turn."""
        keys = ("reply", "finish_reason", "turn_index", "usage")
        self.assertEqual({k: turn[k] for k in keys}, {k: control[k] for k in keys})


class ChatCliTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="gistmem-chat-cli-")
        cls.server = ServerProcess(os.path.join(cls.tmp.name, "db"))
        try:
            cls.address = cls.server.start()
        except Exception:
            cls.tmp.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
        finally:
            cls.server.kill()
            cls.tmp.cleanup()

    def new_turn(self, message=FIRST):
        [turn] = self.chat_json(self.address, "--new", "--system", SYSTEM, "--message", message,
                                *GREEDY)
        return turn

    def test_health(self):
        process = self.chat(self.address, "--health")
        self.assertEqual(process.returncode, 0, self.explain(process))
        self.assertEqual(process.stdout, "SERVING\n")

    def test_new_session_then_continue_it(self):
        first = self.new_turn()
        self.assertTrue(first["session_id"])
        self.assertIn(first["finish_reason"], ("stop", "length"))
        usage = first["usage"]
        self.assertGreater(usage["prompt_tokens"], 0)
        self.assertLessEqual(usage["completion_tokens"], 12)
        if first["finish_reason"] == "length":
            self.assertEqual(usage["completion_tokens"], 12)
        self.assertGreaterEqual(usage["stream_tokens"],
                                usage["prompt_tokens"] + usage["completion_tokens"])

        [second] = self.chat_json(self.address, "--session", first["session_id"], "--message",
                                  SECOND, *GREEDY)
        self.assertEqual(second["session_id"], first["session_id"])
        self.assertGreater(second["turn_index"], first["turn_index"])
        # The first turn's tokens come from the cache, not recomputed.
        self.assertGreater(second["usage"]["cached_tokens"], 0)
        self.assertLessEqual(second["usage"]["cached_tokens"], usage["stream_tokens"])
        self.assertGreater(second["usage"]["stream_tokens"], usage["stream_tokens"])

    def test_turns_of_one_invocation_share_the_session(self):
        first, second = self.chat_json(self.address, "--new", "--message", FIRST, "--message",
                                       SECOND, *GREEDY)
        self.assertEqual(second["session_id"], first["session_id"])
        self.assertGreater(second["turn_index"], first["turn_index"])
        self.assertGreater(second["usage"]["cached_tokens"], 0)

    def test_append_adds_context_without_a_reply(self):
        appended, turn = self.chat_json(self.address, "--new", "--append",
                                        '{"tool": "weather", "result": "rain"}', "--message",
                                        "Do I need an umbrella?", *GREEDY)
        self.assertTrue(appended["appended"])
        self.assertEqual(appended["usage"]["completion_tokens"], 0)
        self.assertGreater(appended["usage"]["prompt_tokens"], 0)
        self.assertEqual(turn["session_id"], appended["session_id"])
        self.assertGreater(turn["usage"]["cached_tokens"], 0)
        self.assertGreater(turn["usage"]["stream_tokens"], appended["usage"]["stream_tokens"])

    def test_text_mode_prints_the_same_reply_as_json(self):
        process = self.chat(self.address, "--new", "--system", SYSTEM, "--message", FIRST,
                            *GREEDY)
        self.assertEqual(process.returncode, 0, self.explain(process))
        self.assertRegex(process.stderr, r"^session: \S+\n")
        self.assertEqual(process.stdout, self.new_turn()["reply"] + "\n")

    def test_unknown_session_is_not_found(self):
        process = self.chat(self.address, "--session", "no-such-session", "--message", "hi")
        self.assert_fails_with(process, "NOT_FOUND")
        process = self.chat(self.address, "--session", "no-such-session", "--stats")
        self.assert_fails_with(process, "NOT_FOUND")

    def test_oversized_message_is_refused_and_not_stored(self):
        session_id = self.new_turn()["session_id"]
        [before] = self.chat_json(self.address, "--session", session_id, "--stats")
        # ~24k words: far over the fixture model's 2048-token context.
        process = self.chat(self.address, "--session", session_id, "--message",
                            "lorem ipsum " * 10_000)
        self.assert_fails_with(process, "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED")
        [after] = self.chat_json(self.address, "--session", session_id, "--stats")
        self.assertEqual(after, before)
        [turn] = self.chat_json(self.address, "--session", session_id, "--message", SECOND,
                                *GREEDY)
        self.assertGreater(turn["usage"]["cached_tokens"], 0)

    def test_stats_json(self):
        turn = self.new_turn()
        [stats] = self.chat_json(self.address, "--session", turn["session_id"], "--stats")
        self.assertEqual(set(stats), STATS_FIELDS)
        self.assertEqual(stats["session_id"], turn["session_id"])
        self.assertEqual(stats["stream_tokens"], turn["usage"]["stream_tokens"])
        self.assertGreater(stats["retained_entries"], 0)
        self.assertLessEqual(stats["retained_entries"], stats["stream_tokens"])
        self.assertAlmostEqual(stats["compression_ratio"],
                               stats["stream_tokens"] / stats["retained_entries"], places=3)

    def test_client_chosen_session_id(self):
        self.assertEqual(self.chat_json(self.address, "--new", "--session", "cli-chosen-id"),
                         [{"session_id": "cli-chosen-id"}])
        process = self.chat(self.address, "--new", "--session", "cli-chosen-id")
        self.assert_fails_with(process, "ALREADY_EXISTS")


class ApiKeyTest(ServerTestCase):
    """A server with API keys: gistmem-chat presents one with --api_key or $GISTMEM_API_KEY."""

    KEY = "cli-test-key-0123456789"

    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="gistmem-chat-keys-")
        self.addCleanup(tmp.cleanup)
        keys = os.path.join(tmp.name, "keys")
        with open(keys, "w") as f:
            f.write(f"{self.KEY} tenant-a\n")
        self.server = ServerProcess(os.path.join(tmp.name, "db"), ("--api_keys_file", keys))
        self.addCleanup(self.server.kill)
        self.address = self.server.start()

    def test_a_key_is_needed_and_scopes_the_sessions(self):
        self.assert_fails_with(self.chat(self.address, "--new", "--message", FIRST),
                               "UNAUTHENTICATED")
        self.assert_fails_with(self.chat(self.address, "--api_key", "wrong-key-0000000000",
                                         "--new"), "UNAUTHENTICATED")
        [turn] = self.chat_json(self.address, "--api-key", self.KEY, "--new", "--message", FIRST,
                                *GREEDY)
        os.environ["GISTMEM_API_KEY"] = self.KEY
        try:
            [again] = self.chat_json(self.address, "--session", turn["session_id"], "--message",
                                     SECOND, *GREEDY)
        finally:
            del os.environ["GISTMEM_API_KEY"]
        self.assertEqual(again["session_id"], turn["session_id"])


class ResumeTest(ServerTestCase):
    """A session continued after a restart replies exactly as one that never stopped."""

    def server_args(self, tmp: str):
        return ()

    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="gistmem-chat-resume-")
        self.addCleanup(tmp.cleanup)
        self.server = ServerProcess(os.path.join(tmp.name, "db"), self.server_args(tmp.name))
        self.addCleanup(self.server.kill)

    def control_turns(self, address):
        return self.chat_json(address, "--new", "--system", SYSTEM, "--message", FIRST,
                              "--message", SECOND, "--message", THIRD, *GREEDY)

    def resume_after(self, interrupt):
        address = self.server.start()
        control = self.control_turns(address)
        [first] = self.chat_json(address, "--new", "--system", SYSTEM, "--message", FIRST,
                                 *GREEDY)
        self.assert_same_turn(first, control[0])
        session_id = first["session_id"]

        interrupt()  # the turn above was acknowledged (its TurnEnd printed) before this
        address = self.server.start()
        [second] = self.chat_json(address, "--session", session_id, "--message", SECOND,
                                  *GREEDY)
        self.assert_same_turn(second, control[1])

        interrupt()
        address = self.server.start()
        [third] = self.chat_json(address, "--session", session_id, "--message", THIRD, *GREEDY)
        self.assert_same_turn(third, control[2])
        [stats] = self.chat_json(address, "--session", control[0]["session_id"], "--stats")
        self.assertEqual(stats["stream_tokens"], control[2]["usage"]["stream_tokens"])

    def test_resume_after_clean_restart(self):
        self.resume_after(lambda: self.assertEqual(self.server.stop(), 0, self.server.log()))

    def test_resume_after_kill_9(self):
        self.resume_after(self.server.kill)


class PooledResumeTest(ResumeTest):
    """The same with compression on: the server's default policy pools spans of 4."""

    def server_args(self, tmp):
        return ("--policy", "pool", "--ratio", "4", "--window", "8", "--sink_tokens", "4")

    def test_stats_show_the_compression(self):
        address = self.server.start()
        *_, turn = self.chat_json(address, "--new", "--message", FIRST, "--message", SECOND,
                                *GREEDY)
        [stats] = self.chat_json(address, "--session", turn["session_id"], "--stats")
        self.assertGreater(stats["pooled_entries"], 0)
        self.assertLessEqual(stats["window_entries"], 8 + 4)
        self.assertGreater(stats["compression_ratio"], 2.0)


class GistResumeTest(ResumeTest):
    """The same with gist tokens: the fixture weights plus a gist_config.json."""

    def server_args(self, tmp):
        model = os.path.join(tmp, "gist-model")
        os.mkdir(model)
        source = os.environ["GISTMEM_TEST_MODEL"]
        for name in os.listdir(source):
            os.symlink(os.path.join(source, name), os.path.join(model, name))
        with open(os.path.join(model, "gist_config.json"), "w") as f:
            f.write('{"gist_token_id": 7, "ratios": [4], "default_ratio": 4, '
                    '"sink_tokens": 4, "window": 8}')
        return ("--model", model, "--policy", "gist")


if __name__ == "__main__":
    unittest.main()
