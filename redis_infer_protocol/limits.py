"""The bounds both sides of the wire enforce: decode limits, id and reply_to lengths, the priority range."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MAX_REQUEST_ID_BYTES: Final = 128
"""Longest request ``id`` field, in UTF-8 bytes."""

MAX_REPLY_TO_BYTES: Final = 256
"""Longest ``reply_to`` field, in UTF-8 bytes."""

PRIORITY_MIN: Final = -(2**31)
PRIORITY_MAX: Final = 2**31 - 1
"""A request's ``priority`` (and every other integer body field) is a signed 32-bit integer."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard bounds on what a peer may make us allocate. Checked before any allocation."""

    max_body_bytes: int = 64 * 1024 * 1024
    max_tensors: int = 64
    max_rank: int = 8
    max_elements: int = 64 * 1024 * 1024
    max_name_bytes: int = 256
    max_parameters: int = 64
    max_string_bytes: int = 4096  # parameter values and error messages
    max_bytes_elements: int = 1024 * 1024  # elements of one BYTES tensor (each is a Python object)

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be positive")


DEFAULT_LIMITS: Final = Limits()


def in_int32(value: int) -> bool:
    """Whether an integer fits the wire's signed 32-bit fields."""
    return PRIORITY_MIN <= value <= PRIORITY_MAX
