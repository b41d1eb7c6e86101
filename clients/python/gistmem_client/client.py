"""GistmemClient: the gistmem.v1 API with Python arguments and GistmemError on failure."""

from typing import Dict, Iterator, Optional, Sequence, Tuple, Union

import grpc

from gistmem_client._stubs import health_pb2, health_pb2_grpc, pb, pb_grpc
from gistmem_client.chat_session import SESSION_HEADER, ChatSession
from gistmem_client.errors import GistmemError, rpc_errors
from gistmem_client.reply import Reply
from gistmem_client.types import (Attachment, Document, Policy, Usage, memory_policy,
                                  sampling_params)


class GistmemClient:
    """A connection to a gistmem server.

        with GistmemClient("127.0.0.1:7070") as client:
            session = client.create_session(system_prompt="You are terse.")
            print(client.generate(session.session_id, "Hi", max_tokens=16).wait().text)

    `timeout` (seconds) bounds every unary call and each Generate stream; None = no limit.
    Sessions and stats come back as the API's messages (gistmem_client.pb.Session, ...);
    documents as gistmem_client.Document.

    Every call about a session carries its id as "x-gistmem-session" metadata, so a router
    in front of several servers (HAProxy, hashing on it) sends a session's calls to the
    server that holds its cache.
    """

    def __init__(self, address: str, *, timeout: Optional[float] = None,
                 channel_options: Sequence[Tuple[str, object]] = (),
                 api_key: Optional[str] = None, tls_root_certificates: Optional[bytes] = None,
                 turn_retries: int = 3, retry_delay: float = 0.5):
        """api_key: sent as "x-api-key" metadata on every call (servers run with
        --api_keys_file need one). tls_root_certificates: PEM of the CA of the server's TLS
        certificate; None means a plaintext channel. turn_retries: how often a turn that
        failed with UNAVAILABLE before its TurnEnd is sent again (see Reply), retry_delay
        seconds apart; 0 = never."""
        self.address = address
        self.timeout = timeout
        self.turn_retries = turn_retries
        self.retry_delay = retry_delay
        metadata = (("x-api-key", api_key),) if api_key else None
        self._call_options = {"timeout": timeout, "metadata": metadata}
        if tls_root_certificates is None:
            self._channel = grpc.insecure_channel(address, options=list(channel_options))
        else:
            credentials = grpc.ssl_channel_credentials(root_certificates=tls_root_certificates)
            self._channel = grpc.secure_channel(address, credentials,
                                                options=list(channel_options))
        self._stub = pb_grpc.GistmemStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def _session_options(self, session_id: str) -> dict:
        """Call options with the session's routing header."""
        metadata = tuple(self._call_options["metadata"] or ())
        if session_id:
            metadata += ((SESSION_HEADER, session_id),)
        return {"timeout": self.timeout, "metadata": metadata or None}

    def __enter__(self) -> "GistmemClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def wait_until_ready(self, timeout: float) -> None:
        """Blocks until the channel connects; raises GistmemError(UNAVAILABLE) after timeout."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError as error:
            raise GistmemError(grpc.StatusCode.UNAVAILABLE,
                               f"no connection to {self.address} in {timeout} s") from error

    # Health.

    def health(self, service: str = "") -> str:
        """grpc.health.v1 Check: "SERVING", "NOT_SERVING", "UNKNOWN" or "SERVICE_UNKNOWN"."""
        with rpc_errors():
            response = self._health.Check(health_pb2.HealthCheckRequest(service=service),
                                          **self._call_options)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    # Sessions.

    def create_session(self, system_prompt: str = "", *, session_id: str = "",
                       policy: Union[None, str, Policy, "pb.MemoryPolicy"] = None,
                       default_sampling: Optional[Dict] = None,
                       labels: Optional[Dict[str, str]] = None) -> "pb.Session":
        """A new session. policy: "full", "window", "pool", "gist", a Policy or a
        pb.MemoryPolicy (None = the server's default); default_sampling: keywords as for
        generate()."""
        request = pb.CreateSessionRequest(system_prompt=system_prompt, session_id=session_id,
                                          policy=memory_policy(policy),
                                          default_sampling=sampling_params(
                                              **(default_sampling or {})),
                                          labels=labels or {})
        with rpc_errors():
            return self._stub.CreateSession(request, **self._session_options(session_id))

    def get_session(self, session_id: str) -> "pb.Session":
        with rpc_errors():
            return self._stub.GetSession(pb.GetSessionRequest(session_id=session_id),
                                         **self._session_options(session_id))

    def list_sessions(self, page_size: int = 0) -> Iterator["pb.Session"]:
        """Every session, fetched page by page as the iterator advances."""
        page_token = ""
        while True:
            with rpc_errors():
                response = self._stub.ListSessions(
                    pb.ListSessionsRequest(page_size=page_size, page_token=page_token),
                    **self._call_options)
            yield from response.sessions
            page_token = response.next_page_token
            if not page_token:
                return

    def delete_session(self, session_id: str) -> None:
        with rpc_errors():
            self._stub.DeleteSession(pb.DeleteSessionRequest(session_id=session_id),
                                     **self._session_options(session_id))

    def fork_session(self, session_id: str, new_session_id: str = "") -> "pb.Session":
        """A new session starting from a copy of this one's memory."""
        with rpc_errors():
            return self._stub.ForkSession(
                pb.ForkSessionRequest(session_id=session_id, new_session_id=new_session_id),
                **self._session_options(session_id))

    def stats(self, session_id: str) -> "pb.SessionStats":
        """Where the session's memory stands; document_entries and documents count the shared
        documents attached to it (not in retained_entries nor bytes_host)."""
        with rpc_errors():
            return self._stub.GetSessionStats(pb.GetSessionStatsRequest(session_id=session_id),
                                              **self._session_options(session_id))

    # Turns.

    def append(self, session_id: str, content: str, role: str = "tool") -> Usage:
        """Adds context (a tool result, an observation, a document) without generating."""
        request = pb.AppendRequest(session_id=session_id,
                                   message=pb.Message(role=role, content=content))
        with rpc_errors():
            return Usage.from_proto(
                self._stub.Append(request, **self._session_options(session_id)).usage)

    def generate(self, session_id: str, message: str = "", role: str = "user", *,
                 if_idle: bool = False, **sampling) -> Reply:
        """One turn on its own call. Iterate the Reply for text deltas; reply.end then holds
        the TurnEnd. Sampling keywords: temperature, top_k, top_p, repetition_penalty, seed,
        max_tokens (unset ones keep the session's defaults). An empty message continues."""
        request = pb.GenerateRequest(session_id=session_id,
                                     message=pb.Message(role=role, content=message),
                                     sampling=sampling_params(**sampling), if_idle=if_idle)
        options = self._session_options(session_id)
        with rpc_errors():
            events = self._stub.Generate(request, **options)
        return Reply(events, session_id, restart=lambda: self._stub.Generate(request, **options),
                     retries=self.turn_retries, retry_delay=self.retry_delay,
                     stored_turns=lambda: self.get_session(session_id).turns)

    def chat(self, session_id: str, timeout: Optional[float] = None) -> ChatSession:
        """A ChatSession: one Chat stream for many turns (timeout bounds the whole stream)."""
        return ChatSession(self._stub, session_id, timeout, self._call_options["metadata"],
                           retries=self.turn_retries, retry_delay=self.retry_delay)

    # Shared documents.

    def put_document(self, text: str, policy: Union[None, str, Policy, "pb.MemoryPolicy"] = None,
                     labels: Optional[Dict[str, str]] = None,
                     role: Optional[str] = None) -> Document:
        """Reads a document once and stores it compressed under `policy` (as for
        create_session; None = the server's default). The same text, model and policy give
        the same document_id; then document.created is False, nothing was computed and the
        stored document comes back as it was first put (its labels, not these).
        role: "user" (None = the server's default), "system" or "tool"."""
        request = pb.PutDocumentRequest(text=text, policy=memory_policy(policy),
                                        labels=labels or {}, role=role or "")
        with rpc_errors():
            return Document.from_proto(self._stub.PutDocument(request, **self._call_options))

    def get_document(self, document_id: str) -> Document:
        """A stored document (created is False)."""
        with rpc_errors():
            return Document.from_proto(self._stub.GetDocument(
                pb.GetDocumentRequest(document_id=document_id), **self._call_options))

    def attach_document(self, session_id: str, document_id: str, *,
                        if_idle: bool = False) -> Attachment:
        """Places a stored document at the end of the session's stream, computing nothing
        (one copy in memory serves every session attached to it). if_idle: ABORTED instead
        of waiting when a turn of the session is running."""
        request = pb.AttachDocumentRequest(session_id=session_id, document_id=document_id,
                                           if_idle=if_idle)
        with rpc_errors():
            return Attachment.from_proto(
                self._stub.AttachDocument(request, **self._session_options(session_id)))
