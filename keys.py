"""Bot API keys: generated once, stored only as SHA-256 digests, checked in constant time."""

import hashlib
import hmac
import secrets
import time

KEY_PREFIX = "bsk_"


def generate_key():
    """A new API key: a recognizable prefix and 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key):
    """The hex SHA-256 of the key's UTF-8 bytes, the only form that is stored."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def works(key_hash, bot_keys):
    """Whether `key_hash` is one of `bot_keys`, (hash, expiry on time.monotonic()'s clock
    or None) pairs, and not expired. Every hash is compared, each in constant time."""
    now = time.monotonic()
    found = False
    for stored_hash, expires in bot_keys:
        if hmac.compare_digest(key_hash, stored_hash) and (expires is None or expires > now):
            found = True
    return found
