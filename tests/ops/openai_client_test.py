"""The OpenAI-compatible endpoint (--http_listen) driven by the official `openai` npm client
(installed by fetch_openai_client.sh in the test set-up): models, a non-streaming and a
streaming completion, a one-off session, a session resumed across a server restart, a bad
key, and errors as OpenAI-style JSON."""

import json
import os
import shutil
import subprocess
import tempfile
import unittest
import urllib.request

import ops_support as ops
from ops_support import GistmemClient, GistmemError, ServerProcess, grpc, support

KEY = "test-key-0123456789abcdef"
CLIENT_DIR = os.environ.get("GISTMEM_OPENAI_CLIENT", "")


class OpenAiClientTest(unittest.TestCase):
    def setUp(self):
        if not os.path.isdir(os.path.join(CLIENT_DIR, "node_modules", "openai")):
            self.fail(f"the openai npm client is not installed in {CLIENT_DIR!r} "
                      "(tests/ops/fetch_openai_client.sh)")
        self.directory = tempfile.mkdtemp(prefix="gistmem-openai-")
        keys = os.path.join(self.directory, "keys")
        with open(keys, "w") as out:
            out.write(f"{KEY} acme\n")
        self.server = ServerProcess(os.path.join(self.directory, "db"),
                                    ["--http_listen", "127.0.0.1:0", "--api_keys_file", keys])
        self.start()

    def start(self):
        self.address = self.server.start()
        self.http_port = ops.printed_port(self.server, "http")
        self.model = os.path.basename(os.path.normpath(support.model_dir()))

    def tearDown(self):
        if self.server.running():
            self.server.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def node(self, *args: str) -> dict:
        environment = dict(os.environ, OPENAI_BASE_URL=f"http://127.0.0.1:{self.http_port}/v1",
                           OPENAI_API_KEY=KEY, GISTMEM_MODEL=self.model,
                           NODE_PATH=os.path.join(CLIENT_DIR, "node_modules"))
        process = subprocess.run(["node", os.path.join(ops.HERE, "openai_client.cjs"), *args],
                                 capture_output=True, text=True, timeout=300, env=environment,
                                 check=False)
        self.assertEqual(process.returncode, 0,
                         f"{args}: {process.stderr}\n{process.stdout}\n{self.server.log()}")
        return json.loads(process.stdout)

    def grpc_client(self) -> GistmemClient:
        return GistmemClient(self.address, timeout=60, api_key=KEY)

    def test_models_lists_the_served_model(self):
        self.assertEqual(self.node("models")["ids"], [self.model])

    def test_non_streaming_then_streaming_in_one_session(self):
        first = self.node("chat", "sdk-session")
        with self.grpc_client() as client:
            turns_after_first = client.get_session("sdk-session").turns
        self.assertEqual(first["object"], "chat.completion")
        self.assertEqual(first["role"], "assistant")
        self.assertIn(first["finish_reason"], ("stop", "length"))
        self.assertEqual(first["session_id"], "sdk-session")
        self.assertGreater(first["usage"]["prompt_tokens"], 0)
        self.assertGreater(first["usage"]["completion_tokens"], 0)
        self.assertLessEqual(first["usage"]["completion_tokens"], 8)
        self.assertEqual(first["usage"]["total_tokens"],
                         first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"])

        second = self.node("stream", "sdk-session")
        self.assertEqual(second["role"], "assistant")
        self.assertIn(second["finish_reason"], ("stop", "length"))
        self.assertGreater(second["chunks"], 2)
        self.assertIsNotNone(second["usage"])
        # Only the new message was read: the rest came from the session's memory.
        self.assertGreater(second["usage"]["prompt_tokens_details"]["cached_tokens"],
                           first["usage"]["prompt_tokens"])
        # The replies are the session's turns, as gRPC sees them.
        with self.grpc_client() as client:
            session = client.get_session("sdk-session")
            self.assertEqual(session.turns, turns_after_first + 2)  # user, assistant
            self.assertEqual(session.system_prompt, "You are a terse assistant.")

    def test_one_off_session_is_deleted(self):
        reply = self.node("chat", "-")
        self.assertTrue(reply["session_id"])
        self.assertEqual(reply["usage"]["prompt_tokens_details"]["cached_tokens"], 0)
        with self.grpc_client() as client:
            with self.assertRaises(GistmemError) as raised:
                client.get_session(reply["session_id"])
            self.assertEqual(raised.exception.code, grpc.StatusCode.NOT_FOUND)

    def test_session_resumes_across_a_restart(self):
        first = self.node("chat", "resume-me")
        with self.grpc_client() as client:
            turns_before = client.get_session("resume-me").turns
        self.assertEqual(self.server.stop(), 0)
        self.start()
        second = self.node("stream", "resume-me")
        self.assertIn(second["finish_reason"], ("stop", "length"))
        cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        self.assertGreaterEqual(cached, first["usage"]["prompt_tokens"]
                                + first["usage"]["completion_tokens"] - 1)
        with self.grpc_client() as client:
            self.assertEqual(client.get_session("resume-me").turns, turns_before + 2)

    def test_bad_key_is_an_authentication_error(self):
        error = self.node("badkey")
        self.assertEqual(error["status"], 401, error)
        self.assertEqual(error["name"], "AuthenticationError", error)
        self.assertEqual(error["type"], "authentication_error", error)

    def test_errors_are_openai_json(self):
        base = f"http://127.0.0.1:{self.http_port}/v1/chat/completions"
        cases = [
            ({"model": self.model, "messages": []}, 400, "invalid_request_error"),
            ({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}, 404,
             "invalid_request_error"),
            ({"model": self.model, "messages": [{"role": "user", "content": "x"}],
              "session_id": ".."}, 400, "invalid_request_error"),
        ]
        for body, status, kind in cases:
            request = urllib.request.Request(
                base, data=json.dumps(body).encode(), method="POST",
                headers={"Content-Type": "application/json", "Authorization": f"bearer {KEY}"})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    self.fail(f"{body}: HTTP {response.status}")
            except urllib.error.HTTPError as error:
                answer = json.loads(error.read().decode())
                self.assertEqual(error.code, status, (body, answer))
                self.assertEqual(answer["error"]["type"], kind, answer)
                self.assertTrue(answer["error"]["message"], answer)


if __name__ == "__main__":
    unittest.main()
