"""Reply: one turn's answer as it streams; iterate for text deltas, then read `end`."""

from typing import Callable, Iterator, List, Optional

import time

import grpc

from gistmem_client.errors import GistmemError, rpc_errors
from gistmem_client.types import TurnEnd


def connection_lost(error: GistmemError) -> bool:
    """UNAVAILABLE, or the stream reset under the call by the transport (a router whose
    server died mid-reply resets the HTTP/2 stream: gRPC reports UNKNOWN "Stream removed" or
    INTERNAL "RST_STREAM"); a status the server sent never reads like these."""
    if error.code == grpc.StatusCode.UNAVAILABLE:
        return True
    return error.code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL) and (
        "Stream removed" in error.details or "RST_STREAM" in error.details)


class Reply:
    """Iterating yields the reply's text deltas (str) as they arrive; after the last one,
    `end` holds the TurnEnd (finish reason, usage). `wait()` reads the rest at once.

    The events come from a Generate call or from a turn on a Chat stream; a Reply reads only
    its own turn's events, up to and including its TurnEnd.

    `restart` (optional) sends the turn again and returns its new events: a turn whose call
    fails with UNAVAILABLE (or loses its stream, see connection_lost) before its TurnEnd (nothing of it was acknowledged, so nothing was
    stored: the server serving it died, a router found no server) is sent again, up to
    `retries` times, `retry_delay` seconds apart (not when `stored_turns`, the session's
    stored turn count, shows the lost attempt was stored after all). The text yielded already is not yielded
    again; a retried reply that does not begin with it (sampling that is not greedy) raises
    GistmemError(ABORTED). `attempts` counts the calls the turn took.
    """

    def __init__(self, events: Iterator, session_id: str = "",
                 restart: Optional[Callable[[], Iterator]] = None, retries: int = 0,
                 retry_delay: float = 0.5, stored_turns: Optional[Callable[[], int]] = None):
        self._events = events
        self.session_id = session_id
        self.turn_index: Optional[int] = None
        self.text = ""
        self.token_ids: List[int] = []
        self.end: Optional[TurnEnd] = None
        self._restart = restart
        self._retries_left = retries if restart is not None else 0
        self._retry_delay = retry_delay
        self._stored_turns = stored_turns
        self.attempts = 1

    def _check_not_stored(self, error: GistmemError) -> None:
        """A server may die after storing the turn and before sending its TurnEnd: then the
        turn must not be sent again (it would be stored twice)."""
        if self._stored_turns is None or self.turn_index is None:
            return
        try:
            stored = self._stored_turns()
        except GistmemError as unknown:
            # Admitted, maybe stored, and nobody can say: sending it again could store it twice.
            raise GistmemError(error.code, f"{error.details} (the turn may have been stored; "
                               f"its session cannot be read: {unknown.details})") from error
        if stored > self.turn_index:
            raise GistmemError(error.code, "the turn was stored but its reply was lost with "
                               f"the connection ({error.details}); read the session instead "
                               "of sending it again") from error

    def _next_event(self):
        """The next event, sending the turn again after an UNAVAILABLE failure."""
        while True:
            try:
                with rpc_errors():
                    return next(self._events, None)
            except GistmemError as error:
                if not connection_lost(error) or self._retries_left <= 0:
                    raise
                self._retries_left -= 1
                self.attempts += 1
                time.sleep(self._retry_delay)
                self._check_not_stored(error)
                with rpc_errors():
                    self._events = self._restart()
                self._replayed = ""
                self._replayed_ids = []

    @property
    def done(self) -> bool:
        return self.end is not None

    def __iter__(self) -> Iterator[str]:
        self._replayed = None  # after a retry: the new reply's text while it repeats ours
        while self.end is None:
            event = self._next_event()
            if event is None:
                raise GistmemError(grpc.StatusCode.UNKNOWN, "stream ended before TurnEnd")
            kind = event.WhichOneof("event")
            if kind == "start":
                self.session_id = event.start.session_id or self.session_id
                self.turn_index = event.start.turn_index
            elif kind == "delta":
                text = event.delta.text
                if self._replayed is not None:
                    # A retried turn: skip what the first attempt already gave.
                    self._replayed += text
                    self._replayed_ids.extend(event.delta.token_ids)
                    if len(self._replayed) <= len(self.text):
                        if not self.text.startswith(self._replayed):
                            raise GistmemError(grpc.StatusCode.ABORTED,
                                               "the retried turn's reply differs from the "
                                               "text already received")
                        continue
                    if not self._replayed.startswith(self.text):
                        raise GistmemError(grpc.StatusCode.ABORTED,
                                           "the retried turn's reply differs from the text "
                                           "already received")
                    text = self._replayed[len(self.text):]
                    self._replayed = None
                    # The retried call's ids, whole: the first attempt's are discarded.
                    self.token_ids = self._replayed_ids
                else:
                    self.token_ids.extend(event.delta.token_ids)
                if text:
                    self.text += text
                    yield text
            elif kind == "end":
                self.end = TurnEnd.from_proto(event.end)
                self.turn_index = self.end.turn_index

    def initial_metadata(self) -> dict:
        """The current call's initial metadata (waits for it), e.g. "x-gistmem-node", which
        the router of scripts/haproxy-config adds to name the node serving the turn."""
        with rpc_errors():
            return dict(self._events.initial_metadata())

    def wait(self) -> "Reply":
        """Reads the turn to its end; returns self (reply.text, reply.end are then set)."""
        for _ in self:
            pass
        return self

    def __repr__(self) -> str:
        return f"Reply(session_id={self.session_id!r}, text={self.text!r}, end={self.end!r})"
