"""ChatSession: one Chat stream kept open for a session's turns."""

import queue
from typing import Optional

from gistmem_client._stubs import pb
from gistmem_client.errors import rpc_errors
from gistmem_client.reply import Reply
from gistmem_client.types import sampling_params

_END_OF_REQUESTS = None

# The metadata a router hashes on to send a session's calls to one server.
SESSION_HEADER = "x-gistmem-session"


class ChatSession:
    """Turns go out on one bidirectional stream; each `send` returns the turn's Reply.

        with client.chat(session_id) as chat:
            for delta in chat.send("Hello", max_tokens=32):
                print(delta, end="")

    Use it from one thread; `cancel()` may be called from another while a Reply is read.

    A turn whose stream fails with UNAVAILABLE before its TurnEnd is sent again on a new
    stream, up to `retries` times (see Reply).
    """

    def __init__(self, stub, session_id: str, timeout: Optional[float] = None, metadata=None,
                 retries: int = 0, retry_delay: float = 0.5):
        self.session_id = session_id
        self._stub = stub
        self._timeout = timeout
        self._metadata = tuple(metadata or ()) + ((SESSION_HEADER, session_id),)
        self._retries = retries
        self._retry_delay = retry_delay
        self._current: Optional[Reply] = None
        self._closed = False
        self._open()

    def _open(self):
        """A new Chat call (the first request on it names the session)."""
        self._requests: "queue.SimpleQueue" = queue.SimpleQueue()
        self._first_request = True
        self._call = self._stub.Chat(self._request_iterator(self._requests),
                                     timeout=self._timeout, metadata=self._metadata)
        return self._call

    @staticmethod
    def _request_iterator(requests):
        # gRPC reads this from its own thread; ending it half-closes the stream.
        while True:
            request = requests.get()
            if request is _END_OF_REQUESTS:
                return
            yield request

    def _stored_turns(self) -> int:
        with rpc_errors():
            return self._stub.GetSession(pb.GetSessionRequest(session_id=self.session_id),
                                         timeout=self._timeout, metadata=self._metadata).turns

    def _resend(self, turn: "pb.Turn"):
        """The failed stream's turn again, on a new stream."""
        self._requests.put(_END_OF_REQUESTS)
        self._call.cancel()
        call = self._open()
        self._put(pb.ChatRequest(turn=turn))
        return call

    def _put(self, request: "pb.ChatRequest") -> None:
        if self._closed:
            raise ValueError("ChatSession is closed")
        if self._first_request:  # the first request names the session
            request.session_id = self.session_id
            self._first_request = False
        self._requests.put(request)

    def send(self, content: str, role: str = "user", **sampling) -> Reply:
        """Starts a turn; iterate the Reply for its deltas. An unread earlier turn is read to
        its end first (its Reply keeps the text)."""
        if self._current is not None and not self._current.done:
            self._current.wait()
        turn = pb.Turn(message=pb.Message(role=role, content=content),
                       sampling=sampling_params(**sampling))
        self._put(pb.ChatRequest(turn=turn))
        self._current = Reply(self._call, self.session_id, restart=lambda: self._resend(turn),
                              retries=self._retries, retry_delay=self._retry_delay,
                              stored_turns=self._stored_turns)
        return self._current

    def turn(self, content: str, role: str = "user", **sampling) -> Reply:
        """send() and wait for the whole reply."""
        return self.send(content, role, **sampling).wait()

    def cancel(self) -> None:
        """Stops the running turn; its Reply ends with finish_reason "cancelled"."""
        self._put(pb.ChatRequest(cancel=pb.CancelTurn()))

    def close(self) -> None:
        """Half-closes the stream and waits for the server to end it; raises GistmemError if
        the call ended with an error."""
        if self._closed:
            return
        self._closed = True
        self._requests.put(_END_OF_REQUESTS)
        with rpc_errors():
            for _ in self._call:  # events after our half-close (there should be none)
                pass

    def abort(self) -> None:
        """Cancels the call without waiting (a running turn is not stored)."""
        self._closed = True
        self._requests.put(_END_OF_REQUESTS)
        self._call.cancel()

    def __enter__(self) -> "ChatSession":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
