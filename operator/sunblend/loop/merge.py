"""JSON merge patches (RFC 7386) for the pool's status: what to send, and what the server will keep.

A merge patch replaces lists but merges maps: a key left out of a map stays on the server, and
only ``null`` removes it. The engine's state holds maps whose keys come and go (spot risk per
offer, surge per offer, ...), so the status patch must null the keys that went, or old entries
would come back on the next read. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def diff(before: Any, after: Any) -> Any:
    """The merge patch that turns ``before`` into ``after``: removed map keys become None."""
    if not isinstance(before, Mapping) or not isinstance(after, Mapping):
        return after
    patch: dict[str, Any] = {key: None for key in before if key not in after}
    for key, value in after.items():
        patch[key] = diff(before.get(key), value) if key in before else value
    return patch


def apply(before: Any, patch: Any) -> Any:
    """What the server holds after ``patch`` is merged into ``before``."""
    if not isinstance(patch, Mapping):
        return patch
    result: dict[str, Any] = dict(before) if isinstance(before, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply(result.get(key), value)
    return result
