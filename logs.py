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
    handler = LineHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if log_format == "JSON" else LineFormatter())
    # Waitress's own warnings (a full queue, a failed socket) come out in the same format.
    for name in ("botstate", "waitress"):
        logger = logging.getLogger(name)
        if not logger.hasHandlers():
            logger.addHandler(handler)
            logger.propagate = False


def log_request(logger, message, fields):
    """Log a request's line at INFO: written at once by botstate's own handler when it is the logger's one
    way out, else through logging (a test's capture, a configuration of the embedding program's own)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handlers = logger.handlers
    if (
        len(handlers) == 1
        and type(handlers[0]) is LineHandler
        and not logger.filters
        and handlers[0].write(message, fields)
    ):
        return
    logger.info(message, extra={"request": fields})


class LineHandler(logging.StreamHandler):
    """logging's stream handler, which also writes a request's line itself: the same line its formatter
    would make of the record, without the record (a request's logging was a tenth of its CPU)."""

    def write(self, message, fields):
        """Write the request's line now; False when that is not this handler's to do (filters, a level)."""
        if self.filters or self.level > logging.INFO or not isinstance(self.formatter, (LineFormatter, JSONFormatter)):
            return False
        line = self.formatter.request_line(message, fields, time.time())
        try:
            with self.lock:
                self.stream.write(line + self.terminator)
                self.stream.flush()
        except Exception:  # noqa: BLE001 - as logging does: say so on stderr, never fail the request
            record = logging.LogRecord("botstate", logging.INFO, "", 0, message, None, None)
            self.handleError(record)
        return True


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
        return self._time_text(record.created, int(record.msecs))

    def _time_text(self, created, msecs):
        second = int(created)
        cached_second, text = self._stamp
        if second != cached_second:
            text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            self._stamp = (second, text)
        return f"{text},{msecs:03d}"

    def request_line(self, message, fields, created):
        """The line format() makes of an INFO record of `message` created at `created`."""
        return f"{self._time_text(created, int((created - int(created)) * 1000))} INFO {message}"  # msecs as logging's


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, then a request's fields or the message."""

    def request_line(self, message, fields, created):
        """The line format() makes of an INFO record with these request fields, created at `created`."""
        return jsoncodec.dumps({"time": clock.stored_time_of(created), "level": "INFO", **fields})

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
