"""Bot and admin API keys: generated once, stored only as SHA-256 digests (a read key's apart from a write key's),
checked in constant time."""

import hashlib
import hmac
import secrets
import time

from records import KEY_SCOPES, WRITE_SCOPE

KEY_PREFIX = "bsk_"
ADMIN_KEY_PREFIX = "bsa_"
# What a read key's stored hash is taken over, before the key: a server that predates scopes matches the
# SHA-256 of the key itself, so it never takes a read key for a write key; it refuses it.
READ_KEY_CONTEXT = "botstate:read-key\n"


def generate_key(prefix=KEY_PREFIX):
    """A new API key: a recognizable prefix (a bot's, or ADMIN_KEY_PREFIX) and 256 random bits."""
    return prefix + secrets.token_urlsafe(32)


def hash_key(key, scope=WRITE_SCOPE):
    """The hex SHA-256 that is stored of a key of `scope`, the only form kept: of the key's UTF-8 bytes for a
    write key (and an admin key), of READ_KEY_CONTEXT and them for a read key."""
    text = key if scope == WRITE_SCOPE else READ_KEY_CONTEXT + key
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def hashes_of(key):
    """The hash `key` would be stored under as a key of each scope."""
    return {scope: hash_key(key, scope) for scope in KEY_SCOPES}


def matching(hashes, bot_keys):
    """(stored hash, scope) of the key whose hashes_of() are `hashes` among `bot_keys`, (hash, expiry on
    time.monotonic()'s clock or None, scope) triples; None when it is none of them or has expired.
    Every hash is compared, each in constant time."""
    now = time.monotonic()
    found = None
    for stored_hash, expires, scope in bot_keys:
        if hmac.compare_digest(hashes.get(scope, ""), stored_hash) and (expires is None or expires > now):
            found = stored_hash, scope
    return found
