#!/usr/bin/env python3
"""Makes the committed seed corpus of the fuzz targets (tests/fuzz/corpus/<target>/).

    /usr/bin/python3 tests/fuzz/make_corpus.py --server build/service/gistmem-server \
        --store-tool build/tests/fault/gistmem-store-tool

- store_records_fuzzer: values of a real store: gistmem-server (models/gistmem-16k) holds
  sessions under every policy with small windows and a shared document, is stopped, and
  gistmem-store-tool dump writes its values; KV segments go in header-only (the target's
  fix-up flag 8 makes their payload), restore seeds pair each session's stored memory state
  with its segments.
- request_fuzzer: requests of every type, serialized with the Python stubs of gistmem.v1.
- tokenizer_fuzzer: texts (ASCII, other scripts, emoji, special-token spellings, whitespace
  runs) and id sequences.
- safetensors_fuzzer: small well-formed files of each dtype, metadata, empty tensors.

The inputs' first byte selects what the target does with the rest (see each *_fuzzer.cc).
"""

import argparse
import json
import os
import pathlib
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
HEADER = 20  # the record envelope (store/record_codec.h)


def write(corpus: pathlib.Path, name: str, data: bytes) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    (corpus / name).write_bytes(data)


def header_only(value: bytes) -> bytes:
    """A kv or documents value's payload without its K/V bytes: u32 length + header."""
    payload = value[HEADER:]
    (length,) = struct.unpack_from("<I", payload)
    return payload[:4 + length]


def store_corpus(server: str, store_tool: str, out: pathlib.Path) -> None:
    os.environ.update(GISTMEM_SERVER=server, GISTMEM_STORE_TOOL=store_tool,
                      GISTMEM_TEST_MODEL=str(ROOT / "models" / "gistmem-16k"))
    sys.path.insert(0, str(ROOT / "tests" / "fault"))
    import fault_support as fs  # noqa: E402
    from fault_support import GistmemClient, Policy, ServerProcess  # noqa: E402

    policies = {"full": Policy("full"), "window": Policy("window", window=2, sink_tokens=1),
                "pool": Policy("pool", ratio=2, window=2, sink_tokens=1),
                "gist": Policy("gist", ratio=2, window=2, sink_tokens=1)}
    with tempfile.TemporaryDirectory(prefix="gistmem-corpus-") as tmp:
        db = os.path.join(tmp, "db")
        server_process = ServerProcess(db)
        address = server_process.start()
        with GistmemClient(address, timeout=60) as client:
            for name, policy in policies.items():
                client.create_session("Be brief." if name != "full" else "",
                                      session_id=f"seed-{name}", policy=policy)
                client.generate(f"seed-{name}", "Hi", max_tokens=2, temperature=0).wait()
                if name != "full":
                    client.append(f"seed-{name}", "ok", role="tool")
                    client.generate(f"seed-{name}", "More?", max_tokens=3, temperature=0).wait()
            document = client.put_document("A short shared note.",
                                           Policy("window", window=2, sink_tokens=1))
            client.append("seed-window", "Here is the note.", role="user")
            client.attach_document("seed-window", document.document_id)
        assert server_process.stop() == 0
        code, report = fs.store_check(db)
        assert code == 0, report
        dump = os.path.join(tmp, "dump")
        subprocess.run([store_tool, "dump", "--db", db, "--out", dump], check=True,
                       stdout=subprocess.DEVNULL)
        manifest = json.loads(pathlib.Path(dump, "manifest.json").read_text())
        values = {entry["file"]: pathlib.Path(dump, entry["file"]).read_bytes()
                  for entry in manifest}

        modes = {"sessions": 0, "transcript": 1, "kv": 2, "documents": 3, "default": 4}
        kv_of = {}
        for entry in manifest:
            family, value = entry["family"], values[entry["file"]]
            mode = modes[family]
            stem = entry["file"].removesuffix(".bin")
            if family in ("kv", "documents"):
                session = entry["key"].split("/")[1]
                kv_of.setdefault(session, []).append(value)
                short = value[:HEADER] + header_only(value)  # checksum no longer matches
                write(out, f"{stem}-raw-short", bytes([mode]) + short)
                write(out, f"{stem}-wrapped", bytes([5 + mode]) + header_only(value))
                if family == "documents":
                    write(out, f"{stem}-entries", bytes([12, 1 | 8]) + header_only(value))
            else:
                write(out, f"{stem}-raw", bytes([mode]) + value)
                write(out, f"{stem}-wrapped", bytes([5 + mode]) + value[HEADER:])
            if family == "sessions":
                write(out, f"{stem}-record", bytes([10, 2]) + value)
        for entry in manifest:
            if entry["family"] != "sessions" or "policy" not in entry:
                continue
            policy, memory = entry["policy"], entry["memory"]
            seed = bytes([11, policy["kind"], policy["ratio"], policy["window"],
                          policy["sink_tokens"], 1 | 8])
            seed += struct.pack("<4q", memory["stream_tokens"], memory["raw_tokens"],
                                memory["pooled_spans"], memory["next_entry_serial"])
            for value in kv_of.get(entry["session_id"], []):
                segment = header_only(value)
                seed += struct.pack("<I", len(segment)) + segment
            write(out, f"restore-{entry['session_id']}", seed)


def request_corpus(out: pathlib.Path) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    import chat_test_support as support  # noqa: E402
    support.use_python_client()
    from gistmem_client import pb  # noqa: E402

    sampling = pb.SamplingParams(temperature=0.7, top_k=40, top_p=0.9, repetition_penalty=1.1,
                                 seed=1, max_tokens=32)
    requests = {
        0: [pb.CreateSessionRequest(system_prompt="You are terse.", session_id="my-session",
                                    policy=pb.MemoryPolicy(kind=pb.MemoryPolicy.GIST, ratio=8),
                                    default_sampling=sampling, labels={"team": "a"}),
            pb.CreateSessionRequest(policy=pb.MemoryPolicy(kind=pb.MemoryPolicy.POOL, ratio=4,
                                                           window=16, sink_tokens=4)),
            pb.CreateSessionRequest(policy=pb.MemoryPolicy(kind=pb.MemoryPolicy.WINDOW,
                                                           window=64))],
        1: [pb.GenerateRequest(session_id="s-1", message=pb.Message(role="user", content="Hi"),
                               sampling=sampling),
            pb.GenerateRequest(session_id="s-1", if_idle=True,
                               message=pb.Message(content="Spell <|eot_id|> for me")),
            pb.GenerateRequest(session_id="s-1",
                               sampling=pb.SamplingParams(temperature=0, max_tokens=1))],
        2: [pb.ChatRequest(session_id="s-1", turn=pb.Turn(
                message=pb.Message(role="tool", content='{"ok": true}'), sampling=sampling)),
            pb.ChatRequest(cancel=pb.CancelTurn())],
        3: [pb.AppendRequest(session_id="s-1",
                             message=pb.Message(role="system", content="Context: é ü 中文 🙂"))],
        4: [pb.PutDocumentRequest(text="A shared manual.\nLine two.", role="tool",
                                  policy=pb.MemoryPolicy(kind=pb.MemoryPolicy.POOL, ratio=4,
                                                         window=16), labels={"k": "v"})],
        5: [pb.ListSessionsRequest(page_size=10, page_token=b"s-1".hex())],
        6: [pb.ForkSessionRequest(session_id="s-1", new_session_id="s-2")],
        7: [pb.AttachDocumentRequest(session_id="s-1", document_id="d-0123456789abcdef",
                                     if_idle=True)],
        8: [pb.GetSessionStatsRequest(session_id="s-1")],
    }
    for kind, messages in requests.items():
        for i, message in enumerate(messages):
            write(out, f"{type(message).__name__}-{i}",
                  bytes([kind]) + message.SerializeToString())


def tokenizer_corpus(out: pathlib.Path) -> None:
    texts = ["Hello, world!", "  leading and trailing spaces  ", "line one\nline two\r\n\n",
             "numbers 1234567 and 3.14159", "don't I'll we're",
             "é ü ß — « quotes » 中文 日本語 한국어 العربية", "emoji 🙂👍🏽 and ZWJ 👩‍💻",
             "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
             "<|gist|> inside <|eot_id|>text", "\t\ttabs\tand   runs    of spaces",
             "x" * 200, "a\u0301 combining"]
    for i, text in enumerate(texts):
        write(out, f"text-{i}", b"\x00" + text.encode())
    write(out, "text-invalid-utf8", b"\x00abc\xff\xfe\xc0\x80def")
    id_lists = [[0, 2, 3, 4, 5, 1], [100, 200, 300, 8191, 8192, -1, 2**31 - 1],
                [228, 189, 160], [50, 51, 52, 53, 54, 55, 56, 57]]
    for i, ids in enumerate(id_lists):
        write(out, f"ids-{i}", b"\x01" + struct.pack(f"<{len(ids)}i", *ids))


def safetensors_file(tensors: dict, metadata=None) -> bytes:
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def safetensors_corpus(out: pathlib.Path) -> None:
    f32 = struct.pack("<4f", 1.0, -2.5, 0.0, 3.75)
    files = {
        "f32": safetensors_file({"w": ("F32", [2, 2], f32)}, {"format": "pt"}),
        "mixed": safetensors_file({"a": ("BF16", [3], b"\x80\x3f\x00\x40\x00\xc0"),
                                   "b": ("F16", [1, 2], b"\x00\x3c\x00\xbc"),
                                   "model.embed_tokens.weight": ("F32", [1], f32[:4])}),
        "empty-tensor": safetensors_file({"e": ("F32", [0, 5], b""), "s": ("F16", [], b"\x00\x3c")}),
        "no-tensors": safetensors_file({}, {}),
    }
    for name, data in files.items():
        write(out, name, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=str(ROOT / "build" / "service" / "gistmem-server"))
    parser.add_argument("--store-tool",
                        default=str(ROOT / "build" / "tests" / "fault" / "gistmem-store-tool"))
    args = parser.parse_args()
    corpus = HERE / "corpus"
    for target in ("store_records_fuzzer", "request_fuzzer", "tokenizer_fuzzer",
                   "safetensors_fuzzer"):
        shutil.rmtree(corpus / target, ignore_errors=True)
    store_corpus(args.server, args.store_tool, corpus / "store_records_fuzzer")
    request_corpus(corpus / "request_fuzzer")
    tokenizer_corpus(corpus / "tokenizer_fuzzer")
    safetensors_corpus(corpus / "safetensors_fuzzer")
    for target in sorted(corpus.iterdir()):
        files = list(target.iterdir())
        print(f"{target.name}: {len(files)} inputs, {sum(f.stat().st_size for f in files)} bytes")


if __name__ == "__main__":
    main()
