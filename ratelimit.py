"""The optional rate limit (BOTSTATE_RATE_LIMIT) per bot and per admin key, counted by Flask-Limiter: in this
process's memory, or in a file a server's worker processes share."""

import math
import time

from flask import current_app, g

from errors import APIError
from storage import shared_rate_counts

EXTENSION = "botstate.rate_limit"
# One budget per bot (or admin key) across all its endpoints, not one per endpoint.
SCOPE = "bot"


def init_app(app):
    """Set up the limit when RATE_LIMIT is set; unset, the app gets no limiter, hooks or headers."""
    if not app.config["RATE_LIMIT"]:
        return
    # Imported only when set: Flask-Limiter and limits take about 40 ms to import, at every start.
    from flask_limiter import Limiter, RateLimitExceeded

    worker = app.extensions.get("botstate.worker")
    limiter = Limiter(
        _budget,
        app=app,
        storage_uri="memory://" if worker is None else shared_rate_counts(worker.rate_counts),
        # A count that cannot be made (the workers' shared folder gone, its disk full) lets the request
        # through, logged, rather than fail it with a 500.
        swallow_errors=True,
        strategy="fixed-window",
        headers_enabled=False,
        on_breach=_too_many_requests,
    )
    app.extensions[EXTENSION] = limiter.shared_limit(app.config["RATE_LIMIT"], scope=SCOPE)
    # The response on_breach made; without this handler errors.py would word a generic 429.
    app.register_error_handler(RateLimitExceeded, lambda error: error.get_response())


def count_request():
    """Count the request, once authenticated, against its bot's budget: a 429 past it."""
    bot_limit = current_app.extensions.get(EXTENSION)
    if bot_limit is None:
        return
    # Entering the limit is the check and the count; it raises RateLimitExceeded past the limit.
    with bot_limit:
        pass


def _budget():
    # auth.authenticate (a bot's slug) or admin_auth.authenticate_admin (an admin key's name) sets it before
    # count_request runs; a slug never holds a colon, so the two never share a budget.
    admin = g.get("admin")
    return g.bot_slug if admin is None else f"admin:{admin}"


def _too_many_requests(request_limit):
    """The 429 for a bot past its limit, with the seconds until its window starts over."""
    seconds = math.ceil(request_limit.window.reset_time - time.time())
    return APIError(
        429,
        f"Rate limit exceeded: {request_limit.limit}",
        "TOO_MANY_REQUESTS",
        {"Retry-After": str(max(1, seconds))},
    ).response()
