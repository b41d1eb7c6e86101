#!/usr/bin/env python3
"""gistmem-cli end to end: logits against the transformers fixtures, tokenize/detokenize,
generate (reproducible with a seed, streamed text equal to --json text), and error exits.

usage: cli_test.py PATH/TO/gistmem-cli REPO_ROOT
"""
import json
import struct
import subprocess
import sys
import unittest
from pathlib import Path

CLI = ""
MODELS = Path()


def read_safetensors(path: Path) -> dict:
    """F32 tensors of a safetensors file as flat lists (enough for the fixtures)."""
    data = path.read_bytes()
    (header_len,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + header_len])
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        assert entry["dtype"] == "F32", entry
        raw = data[8 + header_len + begin:8 + header_len + end]
        tensors[name] = (entry["shape"], list(struct.unpack(f"<{len(raw) // 4}f", raw)))
    return tensors


def run(*args: str, stdin: str = "", check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([CLI, *args], input=stdin.encode(), capture_output=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}: {result.stderr.decode()}")
    return result


class LogitsCommand(unittest.TestCase):
    def test_matches_transformers_on_every_fixture(self):
        for name in ["llama-gqa-bf16", "qwen2-tied-f32", "mistral-window-f16"]:
            directory = MODELS / name
            cases = json.loads((directory / "reference_cases.json").read_text())["cases"]
            expected = read_safetensors(directory / "reference_logits.safetensors")
            case = cases[1]  # 33 tokens: several positions, quick
            tokens = ",".join(str(t) for t in case["tokens"])
            got = json.loads(run("logits", "--model", str(directory), "--tokens", tokens).stdout)
            shape, flat = expected[case["logits"]]
            self.assertEqual(len(got["logits"]), shape[0])
            for row_index, row in enumerate(got["logits"]):
                want = flat[row_index * shape[1]:(row_index + 1) * shape[1]]
                self.assertEqual(len(row), len(want))
                scale = max(abs(w) for w in want)
                worst = max(abs(g - w) for g, w in zip(row, want)) / scale
                self.assertLessEqual(worst, 1e-4, f"{name} row {row_index}")

    def test_bad_token_list_is_an_error(self):
        result = run("logits", "--model", str(MODELS / "qwen2-tied-f32"), "--tokens", "1,x",
                     check=False)
        self.assertEqual(result.returncode, 1)
        self.assertIn("'x' is not a token id", result.stderr.decode())

    def test_token_outside_vocabulary_is_an_error(self):
        result = run("logits", "--model", str(MODELS / "qwen2-tied-f32"), "--tokens", "5,300",
                     check=False)
        self.assertEqual(result.returncode, 1)
        self.assertIn("outside the vocabulary", result.stderr.decode())

    def test_missing_model_directory_is_an_error(self):
        result = run("logits", "--model", str(MODELS / "nope"), "--tokens", "1", check=False)
        self.assertEqual(result.returncode, 1)
        self.assertIn("nope", result.stderr.decode())


class TokenizerCommands(unittest.TestCase):
    TOKENIZER = None

    @classmethod
    def setUpClass(cls):
        cls.TOKENIZER = str(MODELS / "llama-gqa-bf16" / "tokenizer.json")

    def test_tokenize_then_detokenize_round_trips(self):
        text = "Hello, world!\n  Numbers 12345 and <|eot_id|> ünïcödé 😀"
        ids = json.loads(run("tokenize", "--tokenizer", self.TOKENIZER, stdin=text).stdout)["ids"]
        self.assertGreater(len(ids), 5)
        back = run("detokenize", "--tokenizer", self.TOKENIZER,
                   stdin=json.dumps({"ids": ids})).stdout.decode()
        self.assertEqual(back, text)

    def test_special_token_is_one_id(self):
        ids = json.loads(run("tokenize", "--tokenizer", self.TOKENIZER,
                             stdin="<|eot_id|>").stdout)["ids"]
        self.assertEqual(len(ids), 1)


class GenerateCommand(unittest.TestCase):
    def generate(self, *extra: str) -> subprocess.CompletedProcess:
        return run("generate", "--model", str(MODELS / "llama-gqa-bf16"), "--prompt",
                   "The quick brown fox", "--max_tokens", "12", *extra)

    def test_seeded_sampling_is_reproducible(self):
        args = ("--temperature", "0.9", "--top_p", "0.9", "--seed", "42", "--json")
        first = json.loads(self.generate(*args).stdout)
        second = json.loads(self.generate(*args).stdout)
        self.assertEqual(first["ids"], second["ids"])
        self.assertEqual(len(first["ids"]), 12)
        self.assertEqual(first["finish_reason"], "length")
        other = json.loads(self.generate("--temperature", "0.9", "--seed", "43", "--json").stdout)
        self.assertNotEqual(first["ids"], other["ids"])

    def test_streamed_text_equals_json_text(self):
        streamed = self.generate("--temperature", "0").stdout.decode()
        as_json = json.loads(self.generate("--temperature", "0", "--json").stdout)
        self.assertEqual(streamed, as_json["text"] + "\n")

    def test_flags_may_be_spelled_with_dashes(self):
        dashed = run("generate", "--model", str(MODELS / "llama-gqa-bf16"), "--prompt",
                     "The quick brown fox", "--max-tokens", "5", "--temperature=0", "--json")
        underscored = self.generate("--temperature", "0", "--json")
        self.assertEqual(json.loads(dashed.stdout)["ids"], json.loads(underscored.stdout)["ids"][:5])
        self.assertEqual(len(json.loads(dashed.stdout)["ids"]), 5)

    def test_out_of_range_sampling_is_rejected(self):
        result = run("generate", "--model", str(MODELS / "llama-gqa-bf16"), "--prompt", "x",
                     "--top_p", "1.5", check=False)
        self.assertEqual(result.returncode, 1)
        self.assertIn("top_p", result.stderr.decode())


if __name__ == "__main__":
    CLI = sys.argv.pop(1)
    MODELS = Path(sys.argv.pop(1)) / "tests" / "fixtures" / "models"
    unittest.main(verbosity=2)
