"""The JSON Lines format of `flask states export` and `import`: one record per row, checked on the way in."""

import re

import clock
import jsoncodec
from schemas import is_uuid, is_valid_bot_slug, is_valid_name
from storage import KEY_SCOPES, TRANSFER_KINDS, WRITE_SCOPE
from symbols import is_valid_symbol

# Times as the databases give them out: UTC, milliseconds.
# Versions past this lose their last digits in JavaScript clients (and near 2**63 overflow).
MAX_VERSION = 2**53
KEY_HASH = re.compile(r"[0-9a-f]{64}")
UUID_FIELDS = {"id", "botId", "accountId", "tickerId", "rowId"}
CHANGE_OPS = ("upsert", "delete")
OPTIONAL_TIMES = {"expiresAt", "lastUsedAt"}
# Fields that files written by an earlier version lack, and what such a record means by them.
ADDED_LATER = {("key", "scope"): WRITE_SCOPE}


# How the other string fields are checked.
_VALIDATORS = {
    "slug": is_valid_bot_slug,
    "symbol": is_valid_symbol,
    "name": is_valid_name,
    "keyHash": lambda value: KEY_HASH.fullmatch(value) is not None,
    "scope": lambda value: value in KEY_SCOPES,
}


class BadRecord(ValueError):
    """A line that is not a record botstate can import; the message says why."""


def dump_record(kind, record):
    """One line of the export: the record as JSON, its kind first, the state exactly as stored."""
    line = {"kind": kind, **record}
    if record.get("state") is not None:
        line["state"] = jsoncodec.Raw(record["state"])
    return jsoncodec.dumps_bytes(line) + b"\n"


def parse_record(line):
    """(kind, record) from one line of an export, ready for storage.import_records; BadRecord if not."""
    try:
        value = jsoncodec.loads(line)
    except jsoncodec.InvalidJSON as error:
        raise BadRecord(f"not JSON ({error})") from None
    if not isinstance(value, dict):
        raise BadRecord("not a JSON object")
    kind = value.pop("kind", None)
    if kind not in TRANSFER_KINDS:
        raise BadRecord(f"kind must be one of {', '.join(TRANSFER_KINDS)}, got {kind!r}")
    fields = TRANSFER_KINDS[kind][1]
    for (added_kind, field), default in ADDED_LATER.items():
        if added_kind == kind:
            value.setdefault(field, default)
    missing = [field for field in fields if field not in value]
    unknown = sorted(set(value) - set(fields))
    if missing or unknown:
        raise BadRecord(
            f"a {kind} record has the fields {', '.join(fields)}"
            + (f"; missing {', '.join(missing)}" if missing else f"; unknown {', '.join(unknown)}")
        )
    record = {field: _checked(kind, field, value[field]) for field in fields}
    if kind == "change" and (record["state"] is None) != (record["op"] == "delete"):
        raise BadRecord("a change has a state if it is an upsert, and none if it is a delete")
    return kind, record


def _checked(kind, field, value):
    """The field's value as stored, or BadRecord."""
    if kind == "change" and field == "state" and value is None:
        return None  # a delete's
    if field == "op":
        if value not in CHANGE_OPS:
            raise BadRecord(f"op must be one of {', '.join(CHANGE_OPS)}, got {value!r}")
        return value
    if field == "state":
        if not isinstance(value, dict):
            raise BadRecord("state must be a JSON object")
        # No setting lets a state nest deeper than the encoder writes: a deeper one was never stored.
        if jsoncodec.depth_exceeds(value, jsoncodec.MAX_DEPTH):
            raise BadRecord(f"state is nested more than {jsoncodec.MAX_DEPTH} levels deep")
        return jsoncodec.dumps(value)
    if value is None and (field in OPTIONAL_TIMES or (kind, field) == ("account", "name")):
        return None
    if field == "version":
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VERSION:
            raise BadRecord(f"version must be an integer from 1 to {MAX_VERSION}, got {value!r}")
        return value
    if not isinstance(value, str):
        raise BadRecord(f"{field} must be a string, got {value!r}")
    if field in UUID_FIELDS:
        ok = is_uuid(value)
        value = value.lower()
    elif field.endswith("At") or field == "at":
        ok = clock.is_stored_time(value)
    else:
        ok = _VALIDATORS[field](value)
    if not ok:
        raise BadRecord(f"{field} {value[:80]!r} is not valid")
    return value
