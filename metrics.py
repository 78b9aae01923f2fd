"""GET /metrics in Prometheus's text format (prometheus_client), when BOTSTATE_METRICS=1.

Labels are routes, methods, statuses and error kinds: never a key, a bot, an account or a ticker.
Each label takes its values from a fixed set, so no client can make new series.
"""

import logging
import threading
import time

from flask import Response, current_app, g, request

import jsoncodec
from storage import ItemError

log = logging.getLogger("botstate")

# Seconds: from a cached read (about 1 ms) to a 1000-item write under load.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# Methods counted by name (RFC 9110 and PATCH); a client may send any token, which counts as OTHER.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})
OTHER = "other"


class Metrics:
    """The app's own registry (so that several apps in one process never share counts) and its metrics.

    With `shared_dir` (the app is one of a server's workers), the counts go to prometheus_client's
    per-process files there, and the registry sums every worker's files at each scrape.
    """

    def __init__(self, storage, max_state_bytes, shared_dir=None):
        from prometheus_client import CollectorRegistry, Counter, Histogram  # only when metrics are on

        self.registry = CollectorRegistry()
        if shared_dir is None:
            self.registry.register(_StorageCounters(storage))
            counted_in = self.registry
            self.storage_counts = None
        else:
            from prometheus_client.multiprocess import MultiProcessCollector

            MultiProcessCollector(self.registry, path=shared_dir)
            counted_in = None  # each count is written to this process's file as it happens
            self.storage_counts = _SharedStorageCounters(storage)
        self.requests = Counter(
            "botstate_requests",
            "HTTP requests answered, by route and status.",
            ["method", "route", "status"],
            registry=counted_in,
        )
        self.latency = Histogram(
            "botstate_request_duration_seconds",
            "Time to answer a request, by route.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=counted_in,
        )
        self.items = Counter(
            "botstate_state_items",
            "State items of POST and PATCH requests, by outcome (succeeded or the error).",
            ["outcome"],
            registry=counted_in,
        )
        self.database_faults = Counter(
            "botstate_database_faults",
            "Requests answered 503 because the database was busy or unavailable.",
            ["kind"],
            registry=counted_in,
        )
        self.outcomes = frozenset(
            {"succeeded", "Version conflict"}
            | {error.value.format(max_state_bytes=max_state_bytes) for error in ItemError}
        )

    def outcome(self, error):
        """The outcome label of an item error message: its kind, or OTHER for a message not known here."""
        kind = error.split(":")[0]  # "Version conflict: expected 1, found 2"
        return kind if kind in self.outcomes else OTHER


def method_label(method):
    """The label of a request method: the method itself if in METHODS, else OTHER."""
    return method if method in METHODS else OTHER


# The storage's own counts: (metric, help, the storage's attribute).
STORAGE_COUNTS = (
    (
        "botstate_database_retries",
        "Write transactions tried again after the database aborted them to break a deadlock (PostgreSQL).",
        "retries",
    ),
    (
        "botstate_changes_pruned",
        "Change-log entries removed by pruning (BOTSTATE_HISTORY_DAYS, BOTSTATE_HISTORY_VERSIONS).",
        "changes_pruned",
    ),
    (
        "botstate_idempotency_answers_pruned",
        "Idempotency-Key answers removed by pruning, a day after their request.",
        "answers_pruned",
    ),
)


class _StorageCounters:
    """The storage's counts, read at each scrape: write transactions tried again, change-log entries
    and Idempotency-Key answers pruned."""

    def __init__(self, storage):
        self.storage = storage

    def collect(self):
        """A counter of each of STORAGE_COUNTS."""
        from prometheus_client.core import CounterMetricFamily

        for name, documentation, attribute in STORAGE_COUNTS:
            yield CounterMetricFamily(name, documentation, value=getattr(self.storage, attribute))


class _SharedStorageCounters:
    """The storage's counts as counters in this worker's files, brought up to date after each request."""

    def __init__(self, storage):
        from prometheus_client import Counter

        self.storage = storage
        self.lock = threading.Lock()
        self.counters = [
            (Counter(name, documentation, registry=None), attribute, [0])
            for name, documentation, attribute in STORAGE_COUNTS
        ]

    def catch_up(self):
        """Add to each counter what the storage counted since the last call."""
        with self.lock:  # two requests ending at once would each add the same difference
            for counter, attribute, seen in self.counters:
                now = getattr(self.storage, attribute)
                if now != seen[0]:
                    counter.inc(now - seen[0])
                    seen[0] = now


def init_app(app):
    """Count every request and serve GET /metrics, when the METRICS setting is on."""
    if not app.config["METRICS"]:
        return
    worker = app.extensions.get("botstate.worker")
    app.extensions["botstate.metrics"] = Metrics(
        app.extensions["botstate.storage"],
        app.config["MAX_STATE_BYTES"],
        shared_dir=None if worker is None else worker.metrics_dir,
    )
    app.after_request(_count)
    app.add_url_rule("/metrics", "metrics", _exposition, methods=["GET"], provide_automatic_options=False)


def database_fault(kind):
    """Count a 503 for a database that was "busy" or "unavailable" (no-op when metrics are off)."""
    metrics = current_app.extensions.get("botstate.metrics")
    if metrics is not None:
        metrics.database_faults.labels(kind).inc()


def _count(response):
    try:
        _count_in(current_app.extensions["botstate.metrics"], response)
    except OSError as error:  # the workers' files (TMPDIR) gone or full: the request is answered all the same
        _warn_once(error)
    return response


_warned = []


def _warn_once(error):
    if not _warned:
        _warned.append(error)
        log.warning("could not count a request in the metrics (their files in TMPDIR): %s", error)


def _count_in(metrics, response):
    """Count the answered request, its latency and its items."""
    method = method_label(request.method)
    route = request.url_rule.rule if request.url_rule is not None else "(no route)"
    metrics.requests.labels(method, route, str(response.status_code)).inc()
    started = g.get("started")
    if started is not None:
        metrics.latency.labels(method, route).observe(time.perf_counter() - started)
    summary = g.get("summary")
    if summary is not None:
        metrics.items.labels("succeeded").inc(summary["succeeded"])
        for error, count in g.failures.items():
            metrics.items.labels(metrics.outcome(error)).inc(count)
    if metrics.storage_counts is not None:
        metrics.storage_counts.catch_up()


def _exposition():
    from prometheus_client import generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

    # The classic text format, which every Prometheus reads; botstate's names are plain ASCII.
    registry = current_app.extensions["botstate.metrics"].registry
    try:
        text = generate_latest(registry)
    except OSError as error:  # the workers' files (TMPDIR) gone
        _warn_once(error)
        body = {"error": "Metrics are unavailable, retry later", "code": "SERVICE_UNAVAILABLE"}
        return Response(jsoncodec.dumps_bytes(body), status=503, mimetype="application/json")
    return Response(text, content_type=CONTENT_TYPE_PLAIN_0_0_4)
