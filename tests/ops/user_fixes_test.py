"""What a new user ran into (issue 15), each checked on the real binaries: --help lists each
binary's own flags; a gist-trained model makes gist the default policy; a short API key is
refused with a message that ends its line; "authorization: bearer KEY" in any case works;
two different keys in one call are refused; dot-only session ids are refused."""

import os
import shutil
import subprocess
import tempfile
import unittest

import ops_support as ops
from ops_support import GistmemClient, GistmemError, ServerProcess, grpc, support

KEY = "fixes-key-0123456789abcdef"
OTHER_KEY = "other-key-0123456789abcdef"
TINY_MODEL = str(ops.REPO_ROOT / "models" / "gistmem-16k")


def binary(variable: str) -> str:
    return support.required_path(variable)


class HelpTest(unittest.TestCase):
    def check_help(self, command, flags):
        process = subprocess.run([*command, "--help"], capture_output=True, text=True,
                                 timeout=60, check=False)
        output = process.stdout + process.stderr
        self.assertNotIn("No flags matched", output, command)
        for flag in flags:
            self.assertIn(flag, output, f"{command}: {output}")

    def test_server_help_lists_its_flags(self):
        self.check_help([binary("GISTMEM_SERVER")],
                        ["--model", "--db", "--policy", "--metrics_listen", "--http_listen",
                         "--log_format", "--max_cache_bytes", "--log_level"])

    def test_cli_help_lists_its_flags(self):
        self.check_help([binary("GISTMEM_CLI")], ["--model", "--tokens", "--max_tokens"])

    def test_chat_help_lists_its_flags(self):
        self.check_help([binary("GISTMEM_CHAT")], ["--server", "--session"])

    def test_bench_help_lists_its_flags(self):
        self.check_help([binary("GISTMEM_BENCH")], ["--model", "--lengths"])


class ServerFixesTest(unittest.TestCase):
    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="gistmem-fixes-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.servers = []

    def tearDown(self):
        for server in self.servers:
            if server.running():
                server.stop()

    def start(self, *flags, model=None) -> str:
        server = ServerProcess(os.path.join(self.directory, f"db{len(self.servers)}"), flags)
        if model:
            server.extra_args = [*server.extra_args, "--model", model]
        self.servers.append(server)
        return server.start()

    def keys_file(self) -> str:
        path = os.path.join(self.directory, "keys")
        with open(path, "w") as out:
            out.write(f"{KEY} acme\n{OTHER_KEY} globex\n")
        return path

    def test_gist_model_defaults_to_gist_and_policy_flag_overrides(self):
        with GistmemClient(self.start(model=TINY_MODEL), timeout=60) as client:
            self.assertEqual(client.create_session().policy.kind, ops.pb.MemoryPolicy.GIST)
        with GistmemClient(self.start("--policy", "full", model=TINY_MODEL), timeout=60) as client:
            self.assertEqual(client.create_session().policy.kind, ops.pb.MemoryPolicy.FULL)
        # The fixture checkpoint has no gist_config.json: full.
        with GistmemClient(self.start(), timeout=60) as client:
            self.assertEqual(client.create_session().policy.kind, ops.pb.MemoryPolicy.FULL)

    def test_short_key_error_names_the_rule_and_ends_its_line(self):
        keys = os.path.join(self.directory, "short-keys")
        with open(keys, "w") as out:
            out.write("short acme\n")
        process = subprocess.run(
            [binary("GISTMEM_SERVER"), "--model", support.model_dir(), "--db",
             os.path.join(self.directory, "db-short"), "--listen", "127.0.0.1:0",
             "--api_keys_file", keys], capture_output=True, text=True, timeout=120, check=False)
        self.assertEqual(process.returncode, 1, process.stderr)
        self.assertIn("16 characters or more", process.stderr)
        self.assertTrue(process.stderr.endswith("\n"), repr(process.stderr[-80:]))

    def call_with(self, address: str, metadata) -> grpc.StatusCode:
        channel = grpc.insecure_channel(address)
        self.addCleanup(channel.close)
        stub = ops.pb_grpc.GistmemStub(channel)
        try:
            stub.ListSessions(ops.pb.ListSessionsRequest(), metadata=metadata, timeout=30)
            return grpc.StatusCode.OK
        except grpc.RpcError as error:
            return error.code()

    def test_bearer_scheme_is_case_insensitive_and_conflicts_are_refused(self):
        address = self.start("--api_keys_file", self.keys_file())
        for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
            self.assertEqual(self.call_with(address, [("authorization", f"{scheme} {KEY}")]),
                             grpc.StatusCode.OK, scheme)
        self.assertEqual(self.call_with(address, [("authorization", f"Basic {KEY}")]),
                         grpc.StatusCode.UNAUTHENTICATED)
        # The same key twice is fine; two different keys are refused, never one silently.
        self.assertEqual(self.call_with(address, [("x-api-key", KEY),
                                                  ("authorization", f"Bearer {KEY}")]),
                         grpc.StatusCode.OK)
        self.assertEqual(self.call_with(address, [("x-api-key", KEY),
                                                  ("authorization", f"Bearer {OTHER_KEY}")]),
                         grpc.StatusCode.UNAUTHENTICATED)

    def test_dot_only_session_ids_are_refused(self):
        with GistmemClient(self.start(), timeout=60) as client:
            for bad in (".", "..", "..."):
                with self.assertRaises(GistmemError) as raised:
                    client.create_session(session_id=bad)
                self.assertEqual(raised.exception.code, grpc.StatusCode.INVALID_ARGUMENT, bad)
            self.assertEqual(client.create_session(session_id="..a").session_id, "..a")


if __name__ == "__main__":
    unittest.main()
