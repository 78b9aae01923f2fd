"""Who is calling a bot endpoint: the slug and key checked, the login remembered, the rate limit counted.

Every bot endpoint is a @bot_endpoint view: it gets a Bot, and reaches the bot's states
only through Bot.call, which hands storage the Credentials this module checked and
checks the key afresh when storage finds it stale.
"""

import functools

from flask import current_app, g, request
from werkzeug.exceptions import HTTPException

import keys
import ratelimit
from errors import APIError, bad_request
from records import WRITE_SCOPE, Credentials, NotFound, StaleKey
from schemas import INVALID_SLUG, is_valid_slug

# Bots remembered per slug: (bot id, its working keys) as last read. A remembered
# login saves a read per request; it is never the last word, since every storage
# call made with it checks the key again (see Bot.call).
REMEMBERED_BOTS_MAX = 10_000


def storage():
    """The storage backend of the running app."""
    return current_app.extensions["botstate.storage"]


def bot_not_found(slug):
    """The spec's 404 for an unknown bot."""
    return APIError(404, f"Bot with slug '{slug}' not found", "NOT_FOUND")


def invalid_key():
    """The spec's 403 for a key that is not the bot's."""
    return APIError(403, "Invalid API key for this bot")


def remembered_bots(app):
    """The app's slug -> (bot id, keys) memory, keys as storage.find_bot_credentials gives them."""
    return app.extensions.setdefault("botstate.bots", {})


def authenticate(slug, fresh=False):
    """The Credentials of the bot `slug` names, once the x-api-key header proves the caller is it.

    Without `fresh`, a bot remembered from an earlier request is not read again.
    """
    if not is_valid_slug(slug):
        raise bad_request(INVALID_SLUG)
    g.bot_slug = slug
    api_key = request.headers.get("x-api-key", "")
    if not api_key.strip():
        raise APIError(401, "API key required. Include x-api-key header.")
    hashes = keys.hashes_of(api_key)
    app = current_app._get_current_object()  # looked up once
    bots = remembered_bots(app)
    database = app.extensions["botstate.storage"]
    remembered = None if fresh else bots.get(slug)
    match = None if remembered is None else keys.matching(hashes, remembered[1])
    if match is None:
        remembered = database.find_bot_credentials(slug)
        if remembered is None:
            bots.pop(slug, None)
            raise bot_not_found(slug)
        if len(bots) >= REMEMBERED_BOTS_MAX:
            bots.clear()
        bots[slug] = remembered
        match = keys.matching(hashes, remembered[1])
        if match is None:
            raise invalid_key()
    key_hash, scope = match
    database.record_key_use(remembered[0], key_hash)
    return Credentials(remembered[0], key_hash, scope)


def admit(slug):
    """What authenticate(slug) returns, once the request is counted against the bot's rate limit.

    Only a request that proved its key counts, so nobody else can use up a bot's budget.
    """
    credentials = authenticate(slug)
    try:
        ratelimit.count_request()
    except HTTPException:  # the 429; a key rotated away since the bot was remembered gets its 403
        authenticate(slug, fresh=True)
        raise
    return credentials


def read_only():
    """The 403 for a write with a read key: after the spec's checks, so a client of the spec never meets it."""
    return APIError(403, "This API key is read-only")


class Bot:
    """The bot a request proved it is: its slug, and storage calls made with its checked key."""

    def __init__(self, slug, credentials):
        self.slug = slug
        self.credentials = credentials
        # Whether storage has seen the key work during this request: then no answer needs a fresh read.
        self.confirmed = False

    def call(self, method, *args, **kwargs):
        """method(credentials, ...), a storage call that checks the key itself; should it find
        the bot gone or re-keyed, answer what a fresh authentication says."""
        try:
            result = method(self.credentials, *args, **kwargs)
        except (NotFound, StaleKey):
            self.credentials = authenticate(self.slug, fresh=True)  # 404 or 403, unless it changed back
            try:
                result = method(self.credentials, *args, **kwargs)
            except NotFound:
                raise bot_not_found(self.slug) from None
            except StaleKey:
                raise invalid_key() from None
        self.confirmed = True
        return result

    @property
    def read_only(self):
        """Whether the request's key may only read."""
        return self.credentials.scope != WRITE_SCOPE

    def check_writes(self):
        """The read-only 403 unless the request's key may write."""
        if self.read_only:
            raise read_only()


def bot_endpoint(view):
    """Make `view(bot, **path)` the view of a /api/bots/<slug>/ route: the slug, key, remembered
    login and rate limit checked first; a bad request answered only once a fresh read confirms
    the key, so that 404 and 403 come before any 400."""

    @functools.wraps(view)
    def checked(slug, **path):
        bot = Bot(slug, admit(slug))
        try:
            return view(bot, **path)
        except (APIError, HTTPException):
            if not bot.confirmed:
                authenticate(slug, fresh=True)
            raise

    checked.bot_endpoint = True
    return checked
