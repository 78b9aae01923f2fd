"""Who is calling the admin API: an admin key in `Authorization: Bearer`, checked on every request.

Admin keys and bot keys never stand for each other: a bot key is no admin key (it is not in
admin_keys), and an admin key is no bot's key (bot endpoints read x-api-key from bot_keys).
"""

import functools

from flask import current_app, g, request

import keys
import ratelimit
from errors import APIError
from operations import Refused

ADMIN_KEY_REQUIRED = "Admin key required"
INVALID_ADMIN_KEY = "Invalid admin key"


def admin_key_required():
    """The 401 for a request without an admin key."""
    return APIError(401, ADMIN_KEY_REQUIRED, "UNAUTHORIZED", {"WWW-Authenticate": "Bearer"})


def bearer_token():
    """The token of an `Authorization: Bearer TOKEN` header (the scheme in any case), or None."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def authenticate_admin():
    """The name of the admin key the request carries: 401 without one, 403 for one that is not an admin key."""
    token = bearer_token()
    if token is None:
        raise admin_key_required()
    name = current_app.extensions["botstate.storage"].find_admin_key(keys.hash_key(token))
    if name is None:
        raise APIError(403, INVALID_ADMIN_KEY, "FORBIDDEN")
    g.admin = name
    return name


def admin_endpoint(view):
    """Make `view(**path)` an admin API view: the admin key checked and the request counted against the key's
    rate limit first; an operation's refusal answered as its status and message."""

    @functools.wraps(view)
    def checked(**path):
        authenticate_admin()
        ratelimit.count_request()
        try:
            return view(**path)
        except Refused as refused:
            raise APIError(refused.status, refused.message, refused.code) from None

    return checked
