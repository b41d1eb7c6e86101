"""A scripted stand-in for gistmem-server, for testing the clients' side of the protocol.

The real server's replies come from a model; this one's are fixed, so the client tests can
check what no model makes happen on demand: a cancel landing mid-turn, a stream that dies or
ends without TurnEnd, a server that is not SERVING. "Tokens" are whitespace-separated words.

The reply to a message is "echo: " followed by its words, one delta per word. Messages that
start with a command word behave differently:
  slow  ...  200 words, 20 ms apart (time to cancel)
  die   ...  one delta, then the call fails with INTERNAL
  hangup ... one delta, then the stream ends OK without a TurnEnd
"""

import concurrent.futures
import itertools
import queue
import threading
import time

import grpc

from gistmem_client._stubs import health_pb2, health_pb2_grpc, pb, pb_grpc

MAX_CONTENT_CHARS = 100_000


class _Session:
    def __init__(self, request: "pb.CreateSessionRequest", session_id: str):
        self.proto = pb.Session(session_id=session_id, system_prompt=request.system_prompt,
                                policy=request.policy, default_sampling=request.default_sampling,
                                labels=request.labels)
        self.proto.stream_tokens = len(request.system_prompt.split())
        self.lock = threading.Lock()


class FakeGistmem(pb_grpc.GistmemServicer):
    def __init__(self):
        self._sessions = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def _find(self, session_id, context) -> _Session:
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"session {session_id} not found")
        return session

    def CreateSession(self, request, context):
        with self._lock:
            session_id = request.session_id or f"fake-{next(self._ids)}"
            if session_id in self._sessions:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"session {session_id} exists")
            self._sessions[session_id] = _Session(request, session_id)
            return self._sessions[session_id].proto

    def GetSession(self, request, context):
        return self._find(request.session_id, context).proto

    def ListSessions(self, request, context):
        with self._lock:
            ids = sorted(self._sessions)
        start = int(request.page_token or 0)
        size = request.page_size or 100
        page = ids[start:start + size]
        next_token = str(start + size) if start + size < len(ids) else ""
        return pb.ListSessionsResponse(sessions=[self._sessions[i].proto for i in page],
                                       next_page_token=next_token)

    def DeleteSession(self, request, context):
        self._find(request.session_id, context)
        with self._lock:
            del self._sessions[request.session_id]
        return pb.DeleteSessionResponse()

    def ForkSession(self, request, context):
        source = self._find(request.session_id, context)
        fork = self.CreateSession(pb.CreateSessionRequest(session_id=request.new_session_id),
                                  context)
        fork.CopyFrom(source.proto)
        fork.session_id = request.new_session_id or fork.session_id
        return fork

    def GetSessionStats(self, request, context):
        session = self._find(request.session_id, context)
        tokens = session.proto.stream_tokens
        return pb.SessionStats(session_id=request.session_id, stream_tokens=tokens,
                               raw_tokens=tokens, retained_entries=tokens,
                               window_entries=tokens, compression_ratio=1.0)

    def Append(self, request, context):
        session = self._find(request.session_id, context)
        self._check_content(request.message.content, context)
        with session.lock:
            read = len(request.message.content.split())
            cached = session.proto.stream_tokens
            session.proto.stream_tokens += read
            session.proto.turns += 1
            return pb.AppendResponse(usage=pb.Usage(prompt_tokens=read, cached_tokens=cached,
                                                    stream_tokens=session.proto.stream_tokens))

    def Generate(self, request, context):
        session = self._find(request.session_id, context)
        self._check_content(request.message.content, context)
        yield from self._turn(session, pb.Turn(message=request.message, sampling=request.sampling),
                              context, lambda: False)

    def Chat(self, request_iterator, context):
        # Requests are read on another thread so that a CancelTurn is seen mid-turn.
        requests = queue.Queue()

        def read_requests():
            try:
                for request in request_iterator:
                    requests.put(request)
            except grpc.RpcError:
                pass
            requests.put(None)

        threading.Thread(target=read_requests, daemon=True).start()
        first = requests.get()
        if first is None:
            return
        session = self._find(first.session_id, context)
        pending = [first]
        while True:
            request = pending.pop(0) if pending else requests.get()
            if request is None:
                return
            if request.WhichOneof("action") != "turn":
                continue  # a cancel with no turn running
            self._check_content(request.turn.message.content, context)

            def cancelled():
                while True:
                    try:
                        nxt = requests.get_nowait()
                    except queue.Empty:
                        return False
                    if nxt is not None and nxt.WhichOneof("action") == "cancel":
                        return True
                    pending.append(nxt)

            if not (yield from self._turn(session, request.turn, context, cancelled)):
                return  # hung up

    def _check_content(self, content, context):
        if len(content) > MAX_CONTENT_CHARS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"message of {len(content)} characters is over {MAX_CONTENT_CHARS}")

    def _turn(self, session, turn, context, cancelled):
        """Yields one turn's events; returns False when it hung up without a TurnEnd."""
        words = turn.message.content.split()
        command = words[0] if words else ""
        reply = (["slow"] * 200) if command == "slow" else ["echo:"] + words
        max_tokens = turn.sampling.max_tokens if turn.sampling.HasField("max_tokens") else 0
        with session.lock:
            cached = session.proto.stream_tokens
            yield pb.ChatEvent(start=pb.TurnStart(session_id=session.proto.session_id,
                                                  turn_index=session.proto.turns))
            reason = pb.FINISH_REASON_STOP
            sent = 0
            for word in reply:
                if max_tokens and sent == max_tokens:
                    reason = pb.FINISH_REASON_LENGTH
                    break
                if cancelled():
                    reason = pb.FINISH_REASON_CANCELLED
                    break
                yield pb.ChatEvent(delta=pb.TokenDelta(text=word + " ", token_ids=[len(word)]))
                sent += 1
                if command == "die":
                    context.abort(grpc.StatusCode.INTERNAL, "the fake server died mid-turn")
                if command == "hangup":
                    return False
                if command == "slow":
                    time.sleep(0.02)
            usage = pb.Usage(prompt_tokens=len(words), completion_tokens=sent,
                             cached_tokens=cached, stream_tokens=cached)
            index = session.proto.turns
            if reason != pb.FINISH_REASON_CANCELLED:  # a cancelled turn is not stored
                session.proto.stream_tokens += len(words) + sent
                session.proto.turns += 2
                usage.stream_tokens = session.proto.stream_tokens
            yield pb.ChatEvent(end=pb.TurnEnd(finish_reason=reason, usage=usage,
                                              turn_index=index))
            return True


class FakeHealth(health_pb2_grpc.HealthServicer):
    def __init__(self):
        self.status = health_pb2.HealthCheckResponse.SERVING

    def Check(self, request, context):
        return health_pb2.HealthCheckResponse(status=self.status)


class FakeServer:
    """Starts on a free loopback port; `address` is HOST:PORT. Use as a context manager."""

    def __init__(self):
        self.gistmem = FakeGistmem()
        self.health = FakeHealth()
        self._server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=16))
        pb_grpc.add_GistmemServicer_to_server(self.gistmem, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"

    def __enter__(self) -> "FakeServer":
        self._server.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.stop(grace=None)
