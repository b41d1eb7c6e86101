#!/usr/bin/python3
"""An agent loop on gistmem: user turns go over one Chat stream, tool results are appended to
the session's memory with Append (no reply generated for them), and the agent can stop and
later resume the same memory by session id.

    clients/python/generate_stubs.sh
    clients/examples/agent_loop.py --server 127.0.0.1:7070             # prints the session id
    clients/examples/agent_loop.py --server 127.0.0.1:7070 --session ID   # resume it later

Each stdin line is a user turn, except:
    !calc EXPR   run the calculator tool yourself; its result is appended as a tool message
    !file PATH   append a file's text as a document the model can use in later turns
    /quit        stop (the session stays on the server, resumable by id)
When a reply contains a line "TOOL calc: EXPR", the agent runs the tool, appends the result
and lets the model continue from it (at most MAX_TOOL_ROUNDS times per user turn).
"""

import argparse
import ast
import operator
import pathlib
import re
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "python"))

from gistmem_client import GistmemClient, GistmemError  # noqa: E402

SYSTEM_PROMPT = (
    "You are an agent with a calculator. To use it, write a line 'TOOL calc: <expression>' "
    "and stop; the result comes back as a tool message. Answer briefly.")
TOOL_CALL = re.compile(r"^TOOL (\w+): (.+)$", re.MULTILINE)
MAX_TOOL_ROUNDS = 3
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
              ast.Div: operator.truediv, ast.Pow: operator.pow, ast.USub: operator.neg,
              ast.Mod: operator.mod}


def calc(expression: str) -> str:
    """Arithmetic only: walks the syntax tree instead of eval() on model output."""
    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.operand))
        raise ValueError("only numbers and + - * / % ** are allowed")
    try:
        return str(value(ast.parse(expression, mode="eval").body))
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError) as error:
        return f"error: {error}"


TOOLS = {"calc": calc}


def stream(reply) -> str:
    for delta in reply:
        print(delta, end="", flush=True)
    print()
    return reply.text


def run_tool_calls(client, session_id, reply_text, sampling):
    """Runs the tools a reply asked for and lets the model continue after each result."""
    for _ in range(MAX_TOOL_ROUNDS):
        call = TOOL_CALL.search(reply_text)
        if call is None or call.group(1) not in TOOLS:
            return
        result = TOOLS[call.group(1)](call.group(2))
        print(f"[tool {call.group(1)}({call.group(2)}) = {result}]")
        client.append(session_id, f"{call.group(1)} result: {result}", role="tool")
        # An empty message continues from the stream, which now ends with the tool result.
        reply_text = stream(client.generate(session_id, "", **sampling))


def open_session(client, session_id):
    if session_id:
        session = client.get_session(session_id)
        print(f"resumed session {session_id}: {session.turns} turns, "
              f"{session.stream_tokens} tokens in memory")
        return session_id
    session_id = client.create_session(SYSTEM_PROMPT).session_id
    print(f"session {session_id} (resume with --session {session_id})")
    return session_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True, help="gistmem server, HOST:PORT")
    parser.add_argument("--session", default="", help="resume this session instead of a new one")
    parser.add_argument("--max-tokens", type=int, default=128, help="most tokens per reply")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    args = parser.parse_args()
    sampling = {"max_tokens": args.max_tokens, "temperature": args.temperature}

    with GistmemClient(args.server) as client:
        try:
            session_id = open_session(client, args.session)
            with client.chat(session_id) as chat:
                for line in sys.stdin:
                    line = line.rstrip("\n")
                    if line == "/quit":
                        break
                    if line.startswith("!calc "):
                        result = calc(line[len("!calc "):])
                        client.append(session_id, f"calc result: {result}", role="tool")
                        print(f"[appended calc result {result}]")
                    elif line.startswith("!file "):
                        try:
                            text = pathlib.Path(line[len("!file "):]).read_text()
                        except OSError as error:
                            print(f"[{error}]")
                            continue
                        usage = client.append(session_id, text, role="user")
                        print(f"[appended {usage.prompt_tokens} tokens]")
                    elif line:
                        run_tool_calls(client, session_id, stream(chat.send(line, **sampling)),
                                       sampling)
            stats = client.stats(session_id)
            print(f"memory: {stats.stream_tokens} tokens kept in {stats.retained_entries} "
                  f"entries per layer ({stats.compression_ratio:.1f}x)")
        except GistmemError as error:
            print(error, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
