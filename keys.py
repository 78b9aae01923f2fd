"""Bot API keys: generated once, stored only as SHA-256 digests, checked in constant time."""

import hashlib
import hmac
import secrets

KEY_PREFIX = "bsk_"


def generate_key():
    """A new API key: a recognizable prefix and 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key):
    """The hex SHA-256 of the key's UTF-8 bytes, the only form that is stored."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def hashes_match(key_hash, stored_hash):
    """Whether two key hashes are equal, compared in constant time."""
    return hmac.compare_digest(key_hash, stored_hash)
