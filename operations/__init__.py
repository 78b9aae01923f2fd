"""What the admin commands and the admin API do, written once: each operation checks its values,
acts on the storage, and answers a JSON-ready value or a Refused that both interfaces show as is."""

import contextlib

from storage import Conflict, NotFound


class Refused(Exception):
    """An operation refused: an HTTP status (400, 404 or 409), a code and the one-line message."""

    CODES = {400: "BAD_REQUEST", 404: "NOT_FOUND", 409: "CONFLICT"}

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = self.CODES[status]


@contextlib.contextmanager
def refusing():
    """Turn the storage's NotFound and Conflict into a Refused (404, 409) with the storage's message."""
    try:
        yield
    except NotFound as error:
        raise Refused(404, str(error)) from None
    except Conflict as error:
        raise Refused(409, str(error)) from None


def page_after(rows, more, key):
    """The key to list the next page after (the last row's `key`), or None when this page is the last."""
    return rows[-1][key] if more and rows else None
