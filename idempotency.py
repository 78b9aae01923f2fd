"""Idempotency-Key on POST and PATCH: the header read, the request's digest, and its answer kept and replayed.

A write sent with a key keeps its answer in the same transaction as its rows
(backends/answers.py), so an answer exists exactly when the write committed: a
repeat with the same key and body gets that answer and writes nothing, whichever
server process it reaches. A repeat that arrives while the first still runs gets
a 409, and the same key with another request than the kept answer's a 422; only a
200 is kept, so a request refused (400, 413, 503, ...) can be sent again with its key.
"""

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import threading
import zlib

from flask import current_app, g, request

from errors import RETRY_AFTER_SECONDS, APIError, bad_request

log = logging.getLogger("botstate")

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
KEY_TOO_LONG = f"{HEADER} must be at most {MAX_KEY_LENGTH} characters"
KEY_EMPTY = f"{HEADER} must not be empty"
KEY_NOT_ASCII = f"{HEADER} must be printable ASCII"
KEY_REUSED = f"{HEADER} was used with a different request body"
KEY_IN_PROGRESS = f"A request with this {HEADER} is in progress"
PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")
# A Structured Field string (RFC 8941 3.3.3), as the IETF draft writes the key: "..." with \" and \\.
SF_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])+)"')


def requested_key():
    """The request's Idempotency-Key (a quoted string unquoted, spaces around it dropped), None without one,
    or the 400 naming what is wrong."""
    value = request.headers.get(HEADER)
    if value is None:
        return None
    value = value.strip(" \t")
    if not PRINTABLE_ASCII.fullmatch(value):
        raise bad_request(KEY_NOT_ASCII)
    quoted = SF_STRING.fullmatch(value)
    if quoted:
        value = re.sub(r"\\(.)", r"\1", quoted.group(1))
    if not value:
        raise bad_request(KEY_EMPTY)
    if len(value) > MAX_KEY_LENGTH:
        raise bad_request(KEY_TOO_LONG)
    return value


def fingerprint(body):
    """The digest that tells two requests with one key apart: their method and body bytes."""
    digest = hashlib.sha256(request.method.encode())
    digest.update(b"\n")
    digest.update(body)
    return digest.digest()


def key_reused():
    """The 422 for a key sent again with another request."""
    return APIError(422, KEY_REUSED, "UNPROCESSABLE_ENTITY")


def in_progress():
    """The 409 for a key whose first request is still running, with when to send it again."""
    return APIError(409, KEY_IN_PROGRESS, "CONFLICT", {"Retry-After": str(RETRY_AFTER_SECONDS)})


class Running:
    """The keys this process's requests hold while they run: a repeat meanwhile gets its 409 at once.

    With `shared_file` (the workers of one server share it) a key is also held across processes, by a
    lock of the kernel on one byte of that file, at an offset the key's digest picks: a worker's repeat
    of another worker's running request gets its 409 too, and a worker that dies lets its keys go.
    (SQLite's writers take turns, so the database can tell a repeat only once the first has ended.)
    """

    def __init__(self, shared_file=None):
        self._held = set()
        self._lock = threading.Lock()
        self._shared_file = shared_file
        self._fd = self._pid = None

    @contextlib.contextmanager
    def holding(self, bot_id, key):
        """Hold (bot, key) for the block; the 409 when a request holds it (whatever its body: the first
        may still fail and keep nothing, so only a kept answer can tell a 422)."""
        with self._lock:
            held = (bot_id, key) in self._held
            self._held.add((bot_id, key))
        try:
            if held:
                raise in_progress()
            with self._across_processes(bot_id, key):
                yield
        finally:
            if not held:
                with self._lock:
                    self._held.discard((bot_id, key))

    @contextlib.contextmanager
    def _across_processes(self, bot_id, key):
        fd = self._shared_fd()
        # POSIX record locks belong to the process: this process's own holders are told apart above.
        offset = int.from_bytes(hashlib.sha256(f"{bot_id}\n{key}".encode()).digest()[:7], "big")
        try:
            if fd is not None:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except OSError as error:
            if error.errno in (errno.EACCES, errno.EAGAIN):
                raise in_progress() from None
            _shared_file_failed(error)
            fd = None
        try:
            yield
        finally:
            if fd is not None:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)

    def _shared_fd(self):
        """The shared file, opened by this process (a forked worker opens its own); None without one, or
        when it cannot be opened (the workers' folder removed): then a repeat is told by the database only,
        once the first request has ended, rather than the request failing."""
        if self._shared_file is None:
            return None
        with self._lock:
            if self._fd is None or self._pid != os.getpid():
                try:
                    self._fd = os.open(self._shared_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                except OSError as error:
                    _shared_file_failed(error)
                    return None
                self._pid = os.getpid()
            return self._fd


def _shared_file_failed(error):
    log.warning("Idempotency-Keys are held in this worker only: %s", error)


def running():
    """The app's Running keys."""
    return current_app.extensions["botstate.idempotency"]


def stored_body(body):
    """An answer's body as it is kept: compressed (a bulk write's answer repeats its field names)."""
    return zlib.compress(body, 1)


def replay(answer, digest):
    """The kept answer, sent again; the 422 when it answered another request."""
    if answer.fingerprint != digest:
        raise key_reused()
    response = current_app.response_class(zlib.decompress(answer.body), status=answer.status)
    response.mimetype = "application/json"
    response.headers[REPLAYED_HEADER] = "true"
    g.replayed = True  # for the request's log line
    return response
