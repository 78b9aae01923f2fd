"""The JSON Lines format of `flask states export` and `import`: one record per row, checked on the way in."""

import re

import jsoncodec
from schemas import is_uuid, is_valid_slug, is_valid_symbol
from storage import TRANSFER_KINDS

# Times as the databases give them out: UTC, milliseconds.
STORED_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
KEY_HASH = re.compile(r"[0-9a-f]{64}")
UUID_FIELDS = {"id", "botId", "accountId", "tickerId"}
OPTIONAL_TIMES = {"expiresAt", "lastUsedAt"}


class BadRecord(ValueError):
    """A line that is not a record botstate can import; the message says why."""


def dump_record(kind, record):
    """One line of the export: the record as JSON, its kind first, the state exactly as stored."""
    line = {"kind": kind, **record}
    if kind == "state":
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
    missing = [field for field in fields if field not in value]
    unknown = sorted(set(value) - set(fields))
    if missing or unknown:
        raise BadRecord(f"a {kind} record has the fields {', '.join(fields)}" + (
            f"; missing {', '.join(missing)}" if missing else f"; unknown {', '.join(unknown)}"
        ))
    return kind, {field: _checked(kind, field, value[field]) for field in fields}


def _checked(kind, field, value):
    """The field's value as stored, or BadRecord."""
    if field == "state":
        return jsoncodec.dumps(value)
    if value is None and (field in OPTIONAL_TIMES or (kind, field) == ("account", "name")):
        return None
    if field == "version":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadRecord(f"version must be a positive integer, got {value!r}")
        return value
    if not isinstance(value, str):
        raise BadRecord(f"{field} must be a string, got {value!r}")
    valid = {
        "slug": lambda: is_valid_slug(value),
        "symbol": lambda: is_valid_symbol(value),
        "keyHash": lambda: KEY_HASH.fullmatch(value) is not None,
        "name": lambda: bool(value) or kind == "account",
    }
    if field in UUID_FIELDS:
        ok = is_uuid(value)
        value = value.lower()
    elif field.endswith("At"):
        ok = STORED_TIME.fullmatch(value) is not None
    else:
        ok = valid[field]()
    if not ok:
        raise BadRecord(f"{field} {value[:80]!r} is not valid")
    return value
