"""gistmem-chat and the Python client against a scripted fake server (chat_fake_server.py):
the client side of the protocol, including what a model cannot make happen on demand
(cancel mid-turn, a call dying mid-turn, a stream ending without TurnEnd).

Run: GISTMEM_CHAT=build/.../gistmem-chat /usr/bin/python3 -m unittest chat_fake_server_test
"""

import signal
import subprocess
import threading
import time
import unittest

import chat_test_support as support

support.use_python_client()

import grpc  # noqa: E402

from chat_fake_server import FakeServer  # noqa: E402
from gistmem_client import GistmemClient, GistmemError  # noqa: E402
from gistmem_client._stubs import health_pb2  # noqa: E402


class FakeServerTestCase(unittest.TestCase):
    def setUp(self):
        self.server = FakeServer().__enter__()
        self.addCleanup(self.server.__exit__, None, None, None)
        self.address = self.server.address

    def chat(self, *args, stdin=""):
        return support.run_chat(self.address, *args, stdin=stdin, timeout=30)

    def assert_exit(self, process, code):
        self.assertEqual(process.returncode, code, support.describe(process))


class ChatCliTest(FakeServerTestCase):
    def test_bad_flags_exit_2(self):
        for args in (["--message", "hi"], ["--message"], ["--new", "--policy", "nope"],
                     ["--session", "s", "--system", "only with --new"], ["--health", "--new"]):
            self.assert_exit(self.chat(*args), support.EXIT_USAGE)
        # absl rejects malformed flags itself, with its own exit code 1.
        self.assert_exit(self.chat("--no_such_flag"), 1)

    def test_unreachable_server_is_unavailable(self):
        process = support.run_chat(f"127.0.0.1:{support.free_port()}", "--new", "--message",
                                   "hi", "--json")
        self.assert_exit(process, support.EXIT_CODES["UNAVAILABLE"])
        self.assertTrue(process.stderr.startswith("UNAVAILABLE: "), process.stderr)

    def test_health(self):
        process = self.chat("--health")
        self.assert_exit(process, 0)
        self.assertEqual(process.stdout.strip(), "SERVING")
        self.server.health.status = health_pb2.HealthCheckResponse.NOT_SERVING
        process = self.chat("--health")
        self.assert_exit(process, support.EXIT_NOT_SERVING)
        self.assertEqual(process.stdout.strip(), "NOT_SERVING")

    def test_new_session_turn_json(self):
        process = self.chat("--new", "--system", "be brief", "--message", "hello there", "--json")
        self.assert_exit(process, 0)
        [turn] = support.json_lines(process)
        self.assertEqual(turn["reply"], "echo: hello there ")
        self.assertEqual(turn["finish_reason"], "stop")
        self.assertEqual(turn["usage"], {"prompt_tokens": 2, "completion_tokens": 3,
                                         "cached_tokens": 2, "stream_tokens": 7})
        session = self.server.gistmem._sessions[turn["session_id"]].proto
        self.assertEqual(session.system_prompt, "be brief")

    def test_actions_run_in_order_on_one_session(self):
        process = self.chat("--new", "--message", "one", "--append", "tool out", "--message",
                            "two, with a comma", "--append_role", "tool", "--json")
        self.assert_exit(process, 0)
        first, appended, second = support.json_lines(process)
        self.assertEqual(first["reply"], "echo: one ")
        self.assertEqual(appended, {"session_id": first["session_id"], "appended": True,
                                    "usage": {"prompt_tokens": 2, "completion_tokens": 0,
                                              "cached_tokens": 3, "stream_tokens": 5}})
        self.assertEqual(second["reply"], "echo: two, with a comma ")
        self.assertEqual(second["session_id"], first["session_id"])
        self.assertEqual(second["usage"]["cached_tokens"], 5)
        self.assertGreater(second["turn_index"], first["turn_index"])

    def test_sampling_flags_reach_the_server(self):
        process = self.chat("--new", "--message", "a b c d e", "--max_tokens", "2", "--json")
        self.assert_exit(process, 0)
        [turn] = support.json_lines(process)
        self.assertEqual((turn["reply"], turn["finish_reason"]), ("echo: a ", "length"))

    def test_text_mode_streams_reply_and_names_new_session(self):
        process = self.chat("--new", "--message", "hi", "--message", "again")
        self.assert_exit(process, 0)
        self.assertEqual(process.stdout, "echo: hi \necho: again \n")
        self.assertRegex(process.stderr, r"^session: fake-\d+\n$")

    def test_new_session_alone(self):
        process = self.chat("--new", "--session", "chosen-id", "--json")
        self.assert_exit(process, 0)
        self.assertEqual(support.json_lines(process), [{"session_id": "chosen-id"}])
        process = self.chat("--new", "--session", "chosen-id", "--json")
        self.assert_exit(process, support.EXIT_CODES["ALREADY_EXISTS"])

    def test_unknown_session_is_not_found(self):
        process = self.chat("--session", "missing", "--message", "hi", "--json")
        self.assert_exit(process, support.EXIT_CODES["NOT_FOUND"])
        self.assertEqual(process.stderr, "NOT_FOUND: session missing not found\n")
        self.assertEqual(process.stdout, "")

    def test_oversized_message_is_invalid_argument(self):
        process = self.chat("--new", "--message", "x" * 100_001)
        self.assert_exit(process, support.EXIT_CODES["INVALID_ARGUMENT"])

    def test_call_failing_mid_turn(self):
        process = self.chat("--new", "--message", "die now", "--json")
        self.assert_exit(process, support.EXIT_CODES["INTERNAL"])
        self.assertEqual(process.stderr, "INTERNAL: the fake server died mid-turn\n")

    def test_stream_ending_without_turn_end_is_an_error(self):
        process = self.chat("--new", "--message", "hangup", "--json")
        self.assert_exit(process, support.EXIT_CODES["UNKNOWN"])
        self.assertIn("ended before TurnEnd", process.stderr)

    def test_stats_json(self):
        turn = support.json_lines(self.chat("--new", "--message", "x y", "--json"))[0]
        process = self.chat("--session", turn["session_id"], "--stats")
        self.assert_exit(process, 0)
        [stats] = support.json_lines(process)
        self.assertEqual(stats["session_id"], turn["session_id"])
        self.assertEqual(stats["stream_tokens"], turn["usage"]["stream_tokens"])
        self.assertEqual(stats["compression_ratio"], 1.0)
        self.assertEqual(set(stats), {
            "session_id", "stream_tokens", "raw_tokens", "retained_entries", "sink_entries",
            "gist_entries", "pooled_entries", "window_entries", "bytes_gpu", "bytes_host",
            "bytes_disk", "compression_ratio"})

    def test_interactive_commands(self):
        stdin = "hello\n/stats\n//slash\n/new\n/session fake-1\n/session nope\n/help\nbye\n/quit\n"
        process = self.chat(stdin=stdin)
        self.assert_exit(process, 0)
        out = process.stdout
        self.assertIn("session: fake-1\n", out)
        self.assertIn("echo: hello \n", out)
        self.assertIn('"session_id": "fake-1"', out)  # /stats
        self.assertIn("echo: /slash \n", out)
        self.assertIn("session: fake-2\n", out)
        self.assertIn("session: fake-1 (4 turns, ", out)
        self.assertIn("NOT_FOUND: session nope not found", process.stderr)
        self.assertIn("commands:", out)
        self.assertTrue(out.endswith("echo: bye \n"), out)
        self.assertIn("[stop: 1 prompt + 2 completion tokens", process.stderr)

    def test_interactive_ctrl_c_cancels_the_turn(self):
        chat = subprocess.Popen([support.required_path("GISTMEM_CHAT"), "--server", self.address],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.addCleanup(chat.kill)
        chat.stdin.write("slow\n")
        chat.stdin.flush()
        self.assertEqual(chat.stdout.readline(), "session: fake-1\n")
        self.assertEqual(chat.stdout.read(5), "slow ")  # the turn is streaming
        chat.send_signal(signal.SIGINT)
        out, err = chat.communicate("after\n/quit\n", timeout=30)
        self.assertEqual(chat.returncode, 0, err)
        self.assertIn("[cancelled: ", err)
        self.assertTrue(out.endswith("echo: after \n"), out)
        session = self.server.gistmem._sessions["fake-1"].proto
        self.assertEqual(session.turns, 2)  # the cancelled turn was not stored


class PythonClientTest(FakeServerTestCase):
    def setUp(self):
        super().setUp()
        self.client = GistmemClient(self.address, timeout=30)
        self.addCleanup(self.client.close)

    def test_generate_streams_deltas_then_turn_end(self):
        session_id = self.client.create_session("sys").session_id
        reply = self.client.generate(session_id, "a b", max_tokens=10)
        self.assertEqual(list(reply), ["echo: ", "a ", "b "])
        self.assertEqual(reply.text, "echo: a b ")
        self.assertEqual(reply.token_ids, [5, 1, 1])
        self.assertEqual(reply.end.finish_reason, "stop")
        self.assertEqual(reply.end.usage.completion_tokens, 3)
        self.assertEqual(reply.turn_index, 0)

    def test_chat_session_turns_and_cancel(self):
        session_id = self.client.create_session().session_id
        with self.client.chat(session_id) as chat:
            self.assertEqual(chat.turn("one").text, "echo: one ")
            reply = chat.send("slow")
            deltas = iter(reply)
            self.assertEqual(next(deltas), "slow ")
            chat.cancel()
            reply.wait()
            self.assertEqual(reply.end.finish_reason, "cancelled")
            self.assertLess(reply.end.usage.completion_tokens, 200)
            self.assertEqual(chat.turn("two").end.turn_index, 2)

    def test_cancel_from_another_thread(self):
        session_id = self.client.create_session().session_id
        with self.client.chat(session_id) as chat:
            reply = chat.send("slow")
            threading.Timer(0.1, chat.cancel).start()
            started = time.monotonic()
            reply.wait()
            self.assertEqual(reply.end.finish_reason, "cancelled")
            self.assertLess(time.monotonic() - started, 3)

    def test_unread_turn_is_finished_by_the_next_send(self):
        session_id = self.client.create_session().session_id
        with self.client.chat(session_id) as chat:
            first = chat.send("first")
            second = chat.send("second").wait()
        self.assertEqual((first.text, second.text), ("echo: first ", "echo: second "))

    def test_errors_carry_the_status_code(self):
        with self.assertRaises(GistmemError) as caught:
            self.client.get_session("missing")
        self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertEqual(str(caught.exception), "NOT_FOUND: session missing not found")
        session_id = self.client.create_session().session_id
        with self.assertRaises(GistmemError) as caught:
            self.client.generate(session_id, "die").wait()
        self.assertEqual(caught.exception.code, grpc.StatusCode.INTERNAL)
        with self.assertRaises(GistmemError) as caught:
            with self.client.chat(session_id) as chat:
                chat.turn("hangup")
        self.assertEqual(caught.exception.code, grpc.StatusCode.UNKNOWN)
        with self.assertRaises(GistmemError) as caught:
            self.client.append(session_id, "x" * 100_001)
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)

    def test_session_management(self):
        ids = [self.client.create_session(session_id=f"s{i}", policy="gist",
                                          default_sampling={"temperature": 0.5}).session_id
               for i in range(3)]
        self.assertEqual([s.session_id for s in self.client.list_sessions(page_size=2)], ids)
        session = self.client.get_session("s0")
        self.assertEqual(session.policy.kind, session.policy.GIST)
        self.assertAlmostEqual(session.default_sampling.temperature, 0.5)
        self.assertEqual(self.client.fork_session("s0", "s0-fork").session_id, "s0-fork")
        self.client.delete_session("s1")
        self.assertEqual([s.session_id for s in self.client.list_sessions()],
                         ["s0", "s0-fork", "s2"])
        usage = self.client.append("s0", "tool output", role="tool")
        self.assertEqual((usage.prompt_tokens, usage.completion_tokens), (2, 0))
        self.assertEqual(self.client.stats("s0").stream_tokens, 2)
        self.assertEqual(self.client.health(), "SERVING")
        with self.assertRaises(TypeError):
            self.client.generate("s0", "x", temprature=0)


if __name__ == "__main__":
    unittest.main()
