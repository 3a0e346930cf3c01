"""Deprecated: moved to :mod:`redis_infer_protocol.codec`; this re-export goes in the next release.

A package rather than ``producer/codec.py``, so that git sees that file as moved (merges follow the move).
"""

from __future__ import annotations

import warnings

from redis_infer_protocol.codec import *  # noqa: F403
from redis_infer_protocol.codec import __all__ as __all__

warnings.warn(
    "producer.codec is deprecated; import redis_infer_protocol.codec instead",
    DeprecationWarning,
    stacklevel=2,
)
