"""RFC 7396 JSON Merge Patch: the patch that turns one state into another, when one can."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def same(old: object, new: object) -> bool:
    """Equal as JSON: `1`, `1.0` and `True` differ, as they would once stored."""
    if type(old) is not type(new):
        return False
    if isinstance(old, dict) and isinstance(new, dict):
        return old.keys() == new.keys() and all(same(old[key], new[key]) for key in old)
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(same(a, b) for a, b in zip(old, new, strict=True))
    return old == new


def _has_null(value: object) -> bool:
    """Whether a patch value holds a null that merging reads as a removal: itself, or a member of its objects.

    Arrays replace what they patch whole, nulls inside them and all.
    """
    if isinstance(value, dict):
        return any(_has_null(item) for item in value.values())
    return value is None


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """The merge patch from `old` to `new`; None when none says it (`new` sets a null that a patch would remove)."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key in old and isinstance(old[key], dict) and isinstance(value, dict):
            inner = diff(old[key], value)
            if inner is None:
                return None
            if inner:
                patch[key] = inner
        elif key not in old or not same(old[key], value):
            if _has_null(value):
                return None
            patch[key] = value
    return patch
