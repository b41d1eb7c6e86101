"""--log_format json: one JSON object per line on stderr with time and level; one "call"
line per finished gRPC call (method, code, tenant, session id, request id, duration) and one
"turn" line per turn (turn index, tokens, timings); message and reply text only with
--log_content."""

import os
import shutil
import tempfile
import unittest

import ops_support as ops
from ops_support import GistmemClient, GistmemError, ServerProcess, grpc

KEY = "logs-key-0123456789abcdef"
SECRET_WORDS = "pineapple submarine"


class JsonLogsTest(unittest.TestCase):
    def run_server(self, *flags: str) -> list:
        directory = tempfile.mkdtemp(prefix="gistmem-logs-")
        self.addCleanup(shutil.rmtree, directory, True)
        keys = os.path.join(directory, "keys")
        with open(keys, "w") as out:
            out.write(f"{KEY} acme\n")
        self.db = os.path.join(directory, "db")
        server = ServerProcess(self.db,
                               ["--log_format", "json", "--api_keys_file", keys, *flags])
        address = server.start()
        try:
            with GistmemClient(address, timeout=60, api_key=KEY) as client:
                session = client.create_session("Be brief.", session_id="logged").session_id
                client.generate(session, f"Remember {SECRET_WORDS}.", max_tokens=4).wait()
                with self.assertRaises(GistmemError) as raised:
                    client.get_session("absent")
                self.assertEqual(raised.exception.code, grpc.StatusCode.NOT_FOUND)
        finally:
            self.assertEqual(server.stop(), 0)
        self.server_log = server.log()
        return ops.json_log_lines(server)

    def test_every_line_is_json_with_time_and_level(self):
        lines = self.run_server()
        stderr_lines = [line for line in self.server_log.splitlines()
                        if line and not line.startswith(("$ ", "starting on ", "listening on "))]
        self.assertEqual(len(lines), len(stderr_lines), self.server_log)
        for line in lines:
            self.assertRegex(line["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
            self.assertIn(line["level"], ("trace", "debug", "info", "warning", "error",
                                          "critical"))
            self.assertIn("msg", line)

    def test_one_line_per_call_and_per_turn(self):
        lines = self.run_server()
        calls = [line for line in lines if line["msg"] == "call"]
        by_method = {line["method"]: line for line in calls}
        self.assertEqual(sorted(by_method), ["CreateSession", "Generate", "GetSession"])
        generate = by_method["Generate"]
        self.assertEqual(generate["code"], "OK")
        self.assertEqual(generate["tenant"], "acme")
        self.assertEqual(generate["session_id"], "logged")
        self.assertRegex(generate["request_id"], r"^[0-9a-f]{16}$")
        self.assertGreater(generate["duration_ms"], 0)
        missing = by_method["GetSession"]
        self.assertEqual(missing["code"], "NOT_FOUND")
        self.assertEqual(missing["level"], "warning")
        self.assertEqual(missing["session_id"], "absent")
        self.assertIn("error", missing)

        turns = [line for line in lines if line["msg"] == "turn"]
        self.assertEqual(len(turns), 1, turns)
        turn = turns[0]
        self.assertEqual(turn["session_id"], "logged")
        self.assertEqual(turn["tenant"], "acme")
        self.assertIsInstance(turn["turn"], int)
        self.assertGreaterEqual(turn["turn"], 1)
        self.assertGreater(turn["prompt_tokens"], 0)
        self.assertIn("duration_ms", turn)
        # No content unless asked for.
        self.assertNotIn(SECRET_WORDS, self.server_log)
        self.assertNotIn("message", turn)

    def test_log_content_adds_message_and_reply(self):
        lines = self.run_server("--log_content")
        turn = next(line for line in lines if line["msg"] == "turn")
        self.assertIn(SECRET_WORDS, turn["message"])
        self.assertIn("reply", turn)

    def test_rocksdb_info_log_goes_through_spdlog(self):
        lines = self.run_server("--log_level", "debug")
        self.assertTrue(any(line.get("logger") == "rocksdb" for line in lines),
                        self.server_log[:3000])
        # No LOG file of RocksDB's own in the store's directory.
        self.assertFalse([name for name in os.listdir(self.db) if name.startswith("LOG")],
                         os.listdir(self.db))


if __name__ == "__main__":
    unittest.main()
