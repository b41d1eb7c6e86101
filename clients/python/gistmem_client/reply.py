"""Reply: one turn's answer as it streams; iterate for text deltas, then read `end`."""

from typing import Iterator, List, Optional

import grpc

from gistmem_client.errors import GistmemError, rpc_errors
from gistmem_client.types import TurnEnd


class Reply:
    """Iterating yields the reply's text deltas (str) as they arrive; after the last one,
    `end` holds the TurnEnd (finish reason, usage). `wait()` reads the rest at once.

    The events come from a Generate call or from a turn on a Chat stream; a Reply reads only
    its own turn's events, up to and including its TurnEnd.
    """

    def __init__(self, events: Iterator, session_id: str = ""):
        self._events = events
        self.session_id = session_id
        self.turn_index: Optional[int] = None
        self.text = ""
        self.token_ids: List[int] = []
        self.end: Optional[TurnEnd] = None

    @property
    def done(self) -> bool:
        return self.end is not None

    def __iter__(self) -> Iterator[str]:
        while self.end is None:
            with rpc_errors():
                event = next(self._events, None)
            if event is None:
                raise GistmemError(grpc.StatusCode.UNKNOWN, "stream ended before TurnEnd")
            kind = event.WhichOneof("event")
            if kind == "start":
                self.session_id = event.start.session_id or self.session_id
                self.turn_index = event.start.turn_index
            elif kind == "delta":
                self.token_ids.extend(event.delta.token_ids)
                if event.delta.text:
                    self.text += event.delta.text
                    yield event.delta.text
            elif kind == "end":
                self.end = TurnEnd.from_proto(event.end)
                self.turn_index = self.end.turn_index

    def wait(self) -> "Reply":
        """Reads the turn to its end; returns self (reply.text, reply.end are then set)."""
        for _ in self:
            pass
        return self

    def __repr__(self) -> str:
        return f"Reply(session_id={self.session_id!r}, text={self.text!r}, end={self.end!r})"
