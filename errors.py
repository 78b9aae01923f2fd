"""One JSON error envelope for every failure the service answers, registered on the app."""

import logging

from flask import current_app, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

import metrics
from storage import DatabaseBusy, DatabaseUnavailable

log = logging.getLogger("botstate")

RETRY_AFTER_SECONDS = 1


class APIError(Exception):
    """An error answered as JSON: {"error", "code"}, or {"message"} when code is None."""

    def __init__(self, status, message, code=None, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}

    def response(self):
        """The Flask response for this error."""
        body = (
            {"message": self.message}
            if self.code is None
            else {
                "error": self.message,
                "code": self.code,
            }
        )
        response = jsonify(body)
        response.status_code = self.status
        response.headers.update(self.headers)
        return response


def bad_request(message):
    """A 400 with the spec's BAD_REQUEST code."""
    return APIError(400, message, "BAD_REQUEST")


def _http_error(error):
    if isinstance(error, RequestEntityTooLarge):
        limit = current_app.config["MAX_BODY_BYTES"]
        return APIError(413, f"Request body exceeds {limit} bytes", "PAYLOAD_TOO_LARGE").response()
    code = (error.name or "error").upper().replace(" ", "_").replace("'", "")
    message = {404: "Not found", 405: "Method not allowed"}.get(error.code, error.name)
    response = APIError(error.code or 500, message, code).response()
    # Keep what werkzeug would have sent besides the body, e.g. Allow on a 405.
    for name, value in error.get_headers():
        if name.lower() not in ("content-type", "content-length"):
            response.headers[name] = value
    return response


def _service_unavailable(message, level, kind):
    """A handler answering 503 with `message` and Retry-After, logging why at `level`, counted as `kind`."""

    def handle(error):
        log.log(level, "%s: %s", message, error)
        metrics.database_fault(kind)
        return APIError(503, message, "SERVICE_UNAVAILABLE", {"Retry-After": str(RETRY_AFTER_SECONDS)}).response()

    return handle


def _unexpected(error):
    log.exception("unexpected error", exc_info=error)
    return APIError(500, "Internal server error", "INTERNAL_SERVER_ERROR").response()


def register_error_handlers(app):
    """Answer every error as JSON: routing 404/405, client errors, storage faults, bugs."""
    app.register_error_handler(APIError, lambda error: error.response())
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(
        DatabaseBusy, _service_unavailable("Database is busy, retry later", logging.WARNING, "busy")
    )
    app.register_error_handler(
        DatabaseUnavailable,
        _service_unavailable("Database is unavailable, retry later", logging.ERROR, "unavailable"),
    )
    app.register_error_handler(Exception, _unexpected)
