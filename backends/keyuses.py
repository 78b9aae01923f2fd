"""When each key was last used, kept in memory between flushes; and progress of long row-by-row work."""

import contextlib
import logging
import random
import threading
import time

log = logging.getLogger("botstate.storage")

PROGRESS_EVERY = 500
# Seconds between two writes of the keys' last use, by a background thread.
KEY_USE_FLUSH_INTERVAL = 5


def first_flush_delay():
    """Seconds until a process's first flush: a random part of the interval, so that the workers of a server
    take turns through it instead of flushing at the same moment."""
    return KEY_USE_FLUSH_INTERVAL * random.uniform(0.1, 1.0)


class KeyUses:
    """When each (bot id, key hash) last authenticated a request, kept in memory between two flushes.

    Not written per request: that would add a write to every read.
    """

    def __init__(self):
        self._uses = {}
        self._lock = threading.Lock()
        self._failing = None  # the last flush's error, logged once

    def record(self, bot_id, key_hash):
        """Note that a request authenticated with this key now."""
        with self._lock:
            self._uses[bot_id, key_hash] = time.time()

    @contextlib.contextmanager
    def taken(self):
        """The uses recorded so far, taken out; put back (unless newer ones came) when the block fails."""
        with self._lock:
            uses, self._uses = self._uses, {}
        try:
            yield uses
        except BaseException:
            with self._lock:
                for key, used in uses.items():
                    self._uses.setdefault(key, used)
            raise

    def flush_or_log(self, flush):
        """Call flush(), logging (once per distinct error) instead of raising."""
        try:
            flush()
        except Exception as error:  # noqa: BLE001 - a background thread must go on
            if str(error) != self._failing:
                log.warning("could not store when keys were last used (kept for the next try): %s", error)
            self._failing = str(error)
        else:
            self._failing = None


def reporting(rows, on_progress):
    """Each of `rows`, calling on_progress(n) (when given) as they are done."""
    for done, row in enumerate(rows, start=1):
        yield row
        if on_progress is not None and done % PROGRESS_EVERY == 0:
            on_progress(PROGRESS_EVERY)
    if on_progress is not None:
        on_progress(len(rows) % PROGRESS_EVERY)
