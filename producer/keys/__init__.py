"""Deprecated: moved to :mod:`redis_infer_protocol.keys`; this re-export goes in the next release.

A package rather than ``producer/keys.py``, so that git sees that file as moved (merges follow the move).
"""

from __future__ import annotations

import warnings

from redis_infer_protocol.keys import *  # noqa: F403
from redis_infer_protocol.keys import __all__ as __all__

warnings.warn(
    "producer.keys is deprecated; import redis_infer_protocol.keys instead",
    DeprecationWarning,
    stacklevel=2,
)
