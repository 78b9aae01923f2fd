"""The service's log lines: text for people (the default), or one JSON object per line for log shippers."""

import logging
import sys
import time

import clock
import jsoncodec

FORMATS = ("TEXT", "JSON")


def configure_logging(level, log_format="TEXT"):
    """Send the service's logs to stderr, one line each, unless logging is configured already."""
    logging.getLogger("botstate").setLevel(level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if log_format == "JSON" else LineFormatter())
    # Waitress's own warnings (a full queue, a failed socket) come out in the same format.
    for name in ("botstate", "waitress"):
        logger = logging.getLogger(name)
        if not logger.hasHandlers():
            logger.addHandler(handler)
            logger.propagate = False


def startup_line(message, log_format="TEXT"):
    """A line the server prints whatever the log level (listening, stopped), in the log's format."""
    if log_format == "JSON":
        return jsoncodec.dumps({"time": clock.stored_time_of(time.time()), "level": "INFO", "message": message})
    return message


class LineFormatter(logging.Formatter):
    """`time level message`, formatting the date once a second: one runs per request."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(message)s")
        self._stamp = (None, "")

    def formatTime(self, record, datefmt=None):
        """The record's local time, as logging's default format writes it."""
        second = int(record.created)
        cached_second, text = self._stamp
        if second != cached_second:
            text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            self._stamp = (second, text)
        return f"{text},{int(record.msecs):03d}"


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, then a request's fields or the message."""

    def format(self, record):
        """The record as one line of JSON; a traceback goes in "error"."""
        entry = {"time": clock.stored_time_of(record.created), "level": record.levelname}
        fields = getattr(record, "request", None)
        if fields is None:
            entry["message"] = record.getMessage()
        else:
            entry.update(fields)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return jsoncodec.dumps(entry)
