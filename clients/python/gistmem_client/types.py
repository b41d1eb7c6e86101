"""Plain Python views of the API's small messages, and builders for its requests."""

import dataclasses
from typing import Optional, Union

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


def sampling_params(**sampling) -> "pb.SamplingParams":
    """SamplingParams with only the given fields set; the rest keep the session's defaults.

    Keywords: temperature, top_k, top_p, repetition_penalty, seed, max_tokens.
    """
    unknown = set(sampling) - set(_SAMPLING_FIELDS)
    if unknown:
        raise TypeError(f"unknown sampling parameters: {', '.join(sorted(unknown))}")
    return pb.SamplingParams(**{k: v for k, v in sampling.items() if v is not None})


def memory_policy(policy: Union[None, str, "pb.MemoryPolicy"]) -> Optional["pb.MemoryPolicy"]:
    """A MemoryPolicy from "full", "window", "pool", "gist" (model defaults) or a message."""
    if policy is None or isinstance(policy, pb.MemoryPolicy):
        return policy
    return pb.MemoryPolicy(kind=pb.MemoryPolicy.Kind.Value(policy.upper()))
