"""Bots and their keys: create, list, show, re-key, add and revoke keys, delete."""

import re

import keys
from operations import Refused, page_after, refusing
from schemas import MAX_NAME_LENGTH, MAX_SLUG_LENGTH, is_valid_bot_slug, is_valid_name
from storage import KEY_FINGERPRINT_LENGTH, KEY_SCOPES, WRITE_SCOPE

MAX_GRACE_SECONDS = 30 * 24 * 3600
FINGERPRINT = re.compile(f"[0-9a-f]{{{KEY_FINGERPRINT_LENGTH}}}")


def check_slug(slug):
    """Refused (400) unless `slug` is one a bot may have."""
    if not is_valid_bot_slug(slug):
        raise Refused(
            400,
            f"invalid slug {slug[:MAX_SLUG_LENGTH]!r}: use only letters, digits, hyphens and underscores"
            f" (at most {MAX_SLUG_LENGTH})",
        )


def check_name(name):
    """Refused (400) unless `name` (None or empty: none given) is a valid display name."""
    if name and not is_valid_name(name):
        raise Refused(400, bad_name(name))


def bad_name(name):
    """Why a name is refused."""
    return f"name {name[:40]!r} must be 1 to {MAX_NAME_LENGTH} characters without control characters"


def check_scope(scope):
    """Refused (400) unless `scope` is one of KEY_SCOPES."""
    if scope not in KEY_SCOPES:
        raise Refused(400, f"scope must be one of {', '.join(KEY_SCOPES)}, got {str(scope)[:40]!r}")


def check_grace(grace_seconds):
    """Refused (400) unless `grace_seconds` is an integer from 0 to MAX_GRACE_SECONDS."""
    if isinstance(grace_seconds, bool) or not isinstance(grace_seconds, int):
        raise Refused(400, f"graceSeconds must be an integer from 0 to {MAX_GRACE_SECONDS}")
    if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
        raise Refused(400, f"graceSeconds must be an integer from 0 to {MAX_GRACE_SECONDS}")


def create_bot(storage, slug, name=None):
    """Create a bot with one write key: the bot, and the key (shown this once)."""
    check_slug(slug)
    check_name(name)
    api_key = keys.generate_key()
    with refusing():
        bot = storage.create_bot(slug, name or slug, keys.hash_key(api_key))
    return {"id": bot["id"], "slug": bot["slug"], "name": bot["name"], "createdAt": bot["createdAt"], "apiKey": api_key}


def list_bots(storage, limit, after=None):
    """A page of bots by slug, with their number of states, and the slug to list after next (None: the last)."""
    rows, more = storage.page_bots(limit, after)
    return rows, page_after(rows, more, "slug")


def get_bot(storage, slug):
    """The bot `slug`, with its number of states; Refused (404) when there is none."""
    bot = storage.get_bot(slug)
    if bot is None:
        raise Refused(404, f"Bot {slug!r} not found")
    return bot


def rotate_key(storage, slug, grace_seconds=0, scope=WRITE_SCOPE):
    """A new key of `scope` for the bot; its old keys of that scope stop at once or after `grace_seconds`."""
    check_grace(grace_seconds)
    check_scope(scope)
    api_key = keys.generate_key()
    with refusing():
        bot = storage.replace_bot_key(slug, keys.hash_key(api_key, scope), grace_seconds=grace_seconds, scope=scope)
    return {
        "id": bot["id"],
        "slug": bot["slug"],
        "name": bot["name"],
        "apiKey": api_key,
        "scope": scope,
        "oldKeysExpireAt": bot["oldKeysExpireAt"],
    }


def add_key(storage, slug, scope=WRITE_SCOPE):
    """One more key of `scope` for the bot, beside its others: the key (shown this once) and its fingerprint."""
    check_scope(scope)
    api_key = keys.generate_key()
    with refusing():
        key = storage.add_bot_key(slug, keys.hash_key(api_key, scope), scope)
    return {"slug": slug, "apiKey": api_key, **key}


def revoke_keys(storage, slug, every=False, fingerprint=None):
    """Stop the bot's keys in a grace period, or `every` key, or the one with `fingerprint`; how many stopped."""
    if not isinstance(every, bool):
        raise Refused(400, "all must be true or false")
    if fingerprint is not None:
        if every:
            raise Refused(400, "name one key by its fingerprint, or every key: not both")
        if not isinstance(fingerprint, str) or FINGERPRINT.fullmatch(fingerprint) is None:
            raise Refused(
                400,
                f"fingerprint must be the {KEY_FINGERPRINT_LENGTH} lowercase hex digits that the bot's keys list shows",
            )
    with refusing():
        revoked = storage.revoke_bot_keys(slug, every=every, fingerprint=fingerprint)
    return {"slug": slug, "revoked": revoked}


def list_keys(storage, slug):
    """The bot's working keys, newest first: fingerprint, scope, created, expires and last used."""
    with refusing():
        return storage.list_bot_keys(slug)


def delete_bot(storage, slug):
    """Delete the bot and every state it stored: what it was, and how many states went with it."""
    with refusing():
        bot = storage.delete_bot(slug)
    return {"id": bot["id"], "slug": bot["slug"], "deletedStates": bot["states"]}
