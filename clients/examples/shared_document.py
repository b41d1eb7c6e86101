#!/usr/bin/python3
"""Two agents share one document on gistmem: the document is read once, compressed under a
memory policy and stored; both agents' sessions attach it without recomputation (the server
keeps one copy in memory for both) and then ask their own questions about it.

    clients/python/generate_stubs.sh
    clients/examples/shared_document.py --server 127.0.0.1:7070
    clients/examples/shared_document.py --server 127.0.0.1:7070 --policy gist   # gist model

Agent A puts the document; agent B puts the same text again, which finds the stored copy
(created=False: the same text, model and policy give the same id, and nothing is computed).
The example prints the document's retained entries against the stream positions it takes,
what each attach cost, both replies and both sessions' stats. It exits 1 on a failed call or
when the second put was not answered from the stored copy.
"""

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "python"))

from gistmem_client import GistmemClient, GistmemError, Policy  # noqa: E402

MANUAL = (
    "Pump station manual. Valve A opens at 3 bar and valve B at 5 bar. The night shift checks "
    "the seals every four hours and writes the readings into the blue log book. In winter the "
    "intake heater runs from November to March. If the pressure passes 7 bar, close valve B "
    "first, then call the duty engineer on extension 4410. The spare filters are in cabinet 12, "
    "and a filter is changed after 500 hours of running or when the pressure drop passes 0.8 "
    "bar, whichever comes first.")
AGENTS = [
    ("A", "You are the night operator of the pump station. Answer briefly.",
     "At what pressure does valve B open?"),
    ("B", "You are the maintenance planner of the pump station. Answer briefly.",
     "When must a filter be changed?"),
]


def print_document(label: str, document) -> None:
    ratio = document.stream_tokens / max(document.retained_entries, 1)
    policy = document.policy
    print(f"{label}: {document.document_id} created={document.created} "
          f"policy={policy.kind}(ratio={policy.ratio}, window={policy.window}, "
          f"sinks={policy.sink_tokens})")
    print(f"  raw_tokens={document.raw_tokens} stream_tokens={document.stream_tokens} "
          f"retained_entries={document.retained_entries} ({ratio:.1f}x smaller) "
          f"bytes={document.bytes}")


def print_stats(agent: str, stats) -> None:
    print(f"agent {agent} stats: stream_tokens={stats.stream_tokens} "
          f"retained_entries={stats.retained_entries} document_entries={stats.document_entries} "
          f"documents={stats.documents} bytes_host={stats.bytes_host} "
          f"compression_ratio={stats.compression_ratio:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True, help="gistmem server, HOST:PORT")
    parser.add_argument("--document", type=pathlib.Path,
                        help="read the document from this file (default: a short manual)")
    parser.add_argument("--policy", default="pool",
                        choices=["full", "window", "pool", "gist", "unspecified"],
                        help="how the document is compressed (gist needs a gist-trained model; "
                             "unspecified: the server's default)")
    parser.add_argument("--ratio", type=int, default=4, help="raw tokens per gist or pooled "
                        "entry (0 = the server's or model's default)")
    parser.add_argument("--window", type=int, default=16, help="raw tokens kept verbatim "
                        "(a multiple of the ratio; 0 = default)")
    parser.add_argument("--sink-tokens", type=int, default=4, help="first tokens kept for good "
                        "(0 = default)")
    parser.add_argument("--max-tokens", type=int, default=32, help="most tokens per reply")
    parser.add_argument("--keep", action="store_true",
                        help="keep the two sessions (default: delete them at the end)")
    args = parser.parse_args()
    text = args.document.read_text() if args.document else MANUAL
    policy = Policy(args.policy, args.ratio, args.window, args.sink_tokens)

    with GistmemClient(args.server, timeout=300) as client:
        sessions = []
        try:
            client.wait_until_ready(30)
            # Agent A reads the document once.
            first = client.put_document(text, policy, labels={"title": "pump station manual"})
            print_document("agent A put", first)
            if not first.created:
                print("  (already stored by an earlier put: nothing was computed)")
            # Agent B puts the same text: the server finds it and computes nothing.
            second = client.put_document(text, policy)
            print_document("agent B put", second)
            if second.created or second.document_id != first.document_id:
                print("error: the second put was not answered from the stored document",
                      file=sys.stderr)
                return 1
            print("  second put: same document, created=False, nothing computed")

            for agent, system_prompt, question in AGENTS:
                session_id = client.create_session(system_prompt,
                                                   labels={"agent": agent}).session_id
                sessions.append(session_id)
                # A session reads its system prompt with its first message, and an attach
                # goes at the end of the stream, so a message first keeps the prompt first.
                client.append(session_id, "Here is the station manual.", role="user")
                attached = client.attach_document(session_id, first.document_id)
                print(f"agent {agent} session {session_id}: attached "
                      f"{attached.attached_entries} entries, prompt_tokens="
                      f"{attached.usage.prompt_tokens} (nothing computed), stream now "
                      f"{attached.usage.stream_tokens} tokens")
            for (agent, _, question), session_id in zip(AGENTS, sessions):
                print(f"agent {agent} asks: {question}")
                print(f"agent {agent} hears: ", end="", flush=True)
                reply = client.generate(session_id, question, temperature=0.0,
                                        max_tokens=args.max_tokens)
                for delta in reply:
                    print(delta, end="", flush=True)
                print(f"\n  ({reply.end.finish_reason}, {reply.end.usage.prompt_tokens} tokens "
                      f"read, {reply.end.usage.completion_tokens} generated)")
            for (agent, _, _), session_id in zip(AGENTS, sessions):
                print_stats(agent, client.stats(session_id))
            print(f"one copy of {first.retained_entries} entries per layer ({first.bytes} "
                  f"bytes) serves both sessions")
        except GistmemError as error:
            print(error, file=sys.stderr)
            return 1
        finally:
            if not args.keep:
                for session_id in sessions:
                    try:
                        client.delete_session(session_id)
                    except GistmemError as error:
                        print(f"could not delete {session_id}: {error}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
