"""Plain Python views of the API's small messages, and builders for its requests."""

import dataclasses
import datetime
from typing import Dict, Optional, Union

from gistmem_client._stubs import pb

_FINISH_REASONS = {
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_CANCELLED: "cancelled",
}

_SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "repetition_penalty", "seed", "max_tokens")


@dataclasses.dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0  # tokens read this turn (template and message)
    completion_tokens: int = 0  # tokens generated this turn
    cached_tokens: int = 0  # earlier stream tokens reused from the cache
    stream_tokens: int = 0  # the session's stream length after the turn

    @classmethod
    def from_proto(cls, usage: "pb.Usage") -> "Usage":
        return cls(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens,
                   usage.stream_tokens)


@dataclasses.dataclass(frozen=True)
class TurnEnd:
    finish_reason: str  # "stop", "length", "cancelled" or "unspecified"
    usage: Usage
    turn_index: int

    @classmethod
    def from_proto(cls, end: "pb.TurnEnd") -> "TurnEnd":
        return cls(_FINISH_REASONS.get(end.finish_reason, "unspecified"),
                   Usage.from_proto(end.usage), end.turn_index)


@dataclasses.dataclass(frozen=True)
class Policy:
    """A memory policy: kind "full", "window", "pool" or "gist" ("unspecified" = the server's
    default); 0 in ratio, window or sink_tokens = the server's or the model's default."""
    kind: str = "unspecified"
    ratio: int = 0  # raw tokens per gist or pooled entry
    window: int = 0  # raw tokens kept verbatim
    sink_tokens: int = 0  # first tokens kept for good

    @classmethod
    def from_proto(cls, policy: "pb.MemoryPolicy") -> "Policy":
        kind = pb.MemoryPolicy.Kind.Name(policy.kind)
        return cls("unspecified" if kind == "KIND_UNSPECIFIED" else kind.lower(),
                   policy.ratio, policy.window, policy.sink_tokens)

    def to_proto(self) -> "pb.MemoryPolicy":
        kind = "KIND_UNSPECIFIED" if self.kind == "unspecified" else self.kind.upper()
        return pb.MemoryPolicy(kind=pb.MemoryPolicy.Kind.Value(kind), ratio=self.ratio,
                               window=self.window, sink_tokens=self.sink_tokens)


@dataclasses.dataclass(frozen=True)
class Document:
    """A shared document: read once under `policy`, stored content-addressed (the same text,
    model and policy give the same id), attachable to any number of sessions."""
    document_id: str
    model: str  # the model's fingerprint
    policy: Policy  # as the server resolved it (defaults filled in)
    raw_tokens: int  # text tokens read
    stream_tokens: int  # positions it takes in a session (gist tokens included)
    retained_entries: int  # KV entries per layer kept
    bytes: int  # K/V bytes of its one copy
    created: bool  # False: it was stored already and nothing was computed
    labels: Dict[str, str]
    create_time: Optional[datetime.datetime]  # UTC; None when the server sent none

    @classmethod
    def from_proto(cls, document: "pb.Document") -> "Document":
        create_time = None
        if document.HasField("create_time"):
            create_time = document.create_time.ToDatetime().replace(
                tzinfo=datetime.timezone.utc)
        return cls(document.document_id, document.model, Policy.from_proto(document.policy),
                   document.raw_tokens, document.stream_tokens, document.retained_entries,
                   document.bytes, document.created, dict(document.labels), create_time)


@dataclasses.dataclass(frozen=True)
class Attachment:
    """What AttachDocument did. Nothing is computed: usage.prompt_tokens is 0,
    usage.cached_tokens the document's positions, usage.stream_tokens the session's stream
    length after the attach."""
    usage: Usage
    attached_entries: int  # the document's KV entries per layer the session now sees

    @classmethod
    def from_proto(cls, response: "pb.AttachDocumentResponse") -> "Attachment":
        return cls(Usage.from_proto(response.usage), response.attached_entries)


def sampling_params(**sampling) -> "pb.SamplingParams":
    """SamplingParams with only the given fields set; the rest keep the session's defaults.

    Keywords: temperature, top_k, top_p, repetition_penalty, seed, max_tokens.
    """
    unknown = set(sampling) - set(_SAMPLING_FIELDS)
    if unknown:
        raise TypeError(f"unknown sampling parameters: {', '.join(sorted(unknown))}")
    return pb.SamplingParams(**{k: v for k, v in sampling.items() if v is not None})


def memory_policy(policy: Union[None, str, Policy, "pb.MemoryPolicy"]
                  ) -> Optional["pb.MemoryPolicy"]:
    """A MemoryPolicy from "full", "window", "pool", "gist" (model defaults), a Policy or a
    message."""
    if policy is None or isinstance(policy, pb.MemoryPolicy):
        return policy
    if isinstance(policy, Policy):
        return policy.to_proto()
    return pb.MemoryPolicy(kind=pb.MemoryPolicy.Kind.Value(policy.upper()))
