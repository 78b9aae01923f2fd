"""Bot and admin API keys: generated once, stored only as SHA-256 digests, checked in constant time."""

import hashlib
import hmac
import secrets
import time

KEY_PREFIX = "bsk_"
ADMIN_KEY_PREFIX = "bsa_"


def generate_key(prefix=KEY_PREFIX):
    """A new API key: a recognizable prefix (a bot's, or ADMIN_KEY_PREFIX) and 256 random bits."""
    return prefix + secrets.token_urlsafe(32)


def hash_key(key):
    """The hex SHA-256 of the key's UTF-8 bytes, the only form that is stored."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def scope_of(key_hash, bot_keys):
    """The scope of `key_hash` among `bot_keys`, (hash, expiry on time.monotonic()'s clock
    or None, scope) triples, or None when it is not one of them or has expired. Every hash
    is compared, each in constant time."""
    now = time.monotonic()
    found = None
    for stored_hash, expires, scope in bot_keys:
        if hmac.compare_digest(key_hash, stored_hash) and (expires is None or expires > now):
            found = scope
    return found
