"""What a client connection may hold: deadlines for a request's headers and body,
idle connections given up when the server is full, and the file descriptors all that needs.

Waitress hands a request to a worker thread only once it has arrived in full, so
a slow client never holds a thread; what it holds is a connection slot. Waitress
alone keeps a slot for as long as a byte arrives now and then, and stops
accepting at its connection limit. Here a slot must be earned: a new request's
headers must arrive within HEADER_TIMEOUT, its body at MIN_BODY_RATE on average,
and at the limit the connections that wait for nothing (idle keep-alive, or
connected and silent) give way to new ones.
"""

import logging
import resource
import time

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher, WSGITask

log = logging.getLogger("botstate")

# File descriptors kept for what is not a client: the database and its WAL, the
# PostgreSQL pool, the listening sockets, waitress's trigger pipe, log files.
RESERVED_FILES = 64
# A client's socket, and the temporary files waitress spills a large body and a large answer to.
FILES_PER_CONNECTION = 3
# At the limit, give up this share of the slots in one go (at least one), so a
# burst of new clients does not meet a full server at every accept.
GIVE_UP_SHARE = 20
# Seconds a connection must have waited for nothing before it is given up: one
# just accepted, or just answered, is about to send its request.
IDLE_GRACE = 1.0
# Bytes of a response kept until the I/O thread sends them (more go out from the worker thread at once).
RESPONSE_BUFFER_BYTES = 64 * 1024
# Seconds between two log lines saying the server is full.
FULL_LOG_INTERVAL = 60


class Deadlines:
    """How long a client may take to send a request: headers in `header_timeout`
    seconds, then the body at `min_body_rate` bytes per second on average."""

    def __init__(self, header_timeout, min_body_rate):
        self.header_timeout = header_timeout
        self.min_body_rate = min_body_rate

    def overdue(self, channel, now):
        """Whether `channel` has taken too long over the request it is sending (or not sending)."""
        request = channel.request
        if request is None:  # between requests: only a connection that never sent a byte has a deadline
            return not channel.spoke and now - channel.opened > self.header_timeout
        if request.headers_at is None:
            return now - request.started > self.header_timeout
        sending = now - request.headers_at
        # The body gets the header timeout as a head start, then must keep up the rate.
        return sending > self.header_timeout and request.body_bytes_received < self.min_body_rate * sending


class TimedRequestParser(HTTPRequestParser):
    """Waitress's request parser, noting when the request began and when its headers ended."""

    def __init__(self, adj):
        super().__init__(adj)
        self.started = time.monotonic()  # made when the request's first bytes arrive
        self.headers_at = None

    def received(self, data):
        """Parse `data` as waitress does; note the moment the headers are complete."""
        consumed = super().received(data)
        if self.headers_at is None and self.headers_finished:
            self.headers_at = time.monotonic()
        return consumed


class FlushingTask(WSGITask):
    """Waitress's task, which sends what the response left in the buffer itself, from its thread, once
    the app is done: a small response then goes out whole in one send(), even once a SIGTERM has
    stopped the I/O thread that would otherwise send it."""

    def finish(self):
        """End the response as waitress does, then send it."""
        super().finish()
        self.channel.send_what_is_written()


class TimedChannel(HTTPChannel):
    """Waitress's connection, knowing when it opened and whether the client ever sent a byte."""

    parser_class = TimedRequestParser
    task_class = FlushingTask

    def send_what_is_written(self):
        """Send the buffered output now, from this (the task's) thread, as waitress's write_soon does
        past send_bytes; the I/O thread sends what is left."""
        with self.outbuf_lock:
            if self.total_outbufs_len and self.connected:
                self._flush_exception(self._flush_some, do_close=False)

    def __init__(self, server, sock, addr, adj, map=None):
        self.opened = time.monotonic()
        self.spoke = self.blank_only = False
        super().__init__(server, sock, addr, adj, map)

    def handle_read(self):
        """Read as waitress does; blank lines between requests, which waitress drops, are no activity."""
        before, self.blank_only = self.last_activity, False
        super().handle_read()
        if self.blank_only:
            self.last_activity = before

    def received(self, data):
        """Take the client's bytes as waitress does."""
        if data and self.request is None and not data.strip(b"\r\n"):
            self.blank_only = True  # else \r\n\r\n now and then would hold a slot with no deadline
        elif data:
            self.spoke = True
        return super().received(data)

    def waits_for_nothing(self):
        """Whether the connection has no request in progress, queued or being answered."""
        return not (
            self.requests
            or self.request is not None
            or self.will_close
            or self.close_when_flushed
            or self.total_outbufs_len
        )


class DrainingDispatcher(ThreadedTaskDispatcher):
    """Waitress's task threads, whose shutdown also answers the requests received in full but not yet
    started: waitress cancels those, closing their connections unanswered, and a worker of one
    thread has one queued behind its running request whenever two arrive together."""

    shut_down = False

    def shutdown(self, cancel_pending=True, timeout=5):
        """Let the threads take what is queued, then stop them, all within `timeout` seconds, once (a
        later call waits no more); whether every thread has stopped. What is still queued then is
        cancelled, as waitress does."""
        if not self.shut_down:
            self.shut_down = True
            deadline = time.monotonic() + timeout
            while self.queue and time.monotonic() < deadline:
                time.sleep(0.005)
            super().shutdown(cancel_pending, max(0.0, deadline - time.monotonic()))
        with self.lock:
            return not self.threads


class ListeningOnSeveral(MultiSocketServer):
    """Waitress's server of several listening sockets (a host of several addresses), whose stop leaves
    the closing to its owner, as the one-socket server's does: closed while a request still runs, its
    wake-up pipe would be written to after it was closed."""

    def run(self):
        """Serve until Ctrl-C or SIGTERM, then stop the threads (see DrainingDispatcher.shutdown)."""
        try:
            self.asyncore.loop(
                timeout=self.adj.asyncore_loop_timeout, map=self.map, use_poll=self.adj.asyncore_use_poll
            )
        except (SystemExit, KeyboardInterrupt):
            self.task_dispatcher.shutdown()


class GuardedServer(TcpWSGIServer):
    """A waitress TCP server that drops clients past their deadlines and, at its
    connection limit, closes idle connections to make room for new ones."""

    channel_class = TimedChannel
    full_logged_at = float("-inf")

    def __init__(self, application, map, deadlines, clients_limit, **kwargs):
        self.deadlines, self.clients_limit = deadlines, clients_limit
        super().__init__(application, map, **kwargs)

    def maintenance(self, now):
        """Close idle connections past the channel timeout, and clients past their deadlines."""
        super().maintenance(now)
        clock = time.monotonic()
        for channel in list(self.active_channels.values()):
            if not channel.requests and self.deadlines.overdue(channel, clock):
                channel.will_close = True

    def readable(self):
        """Accept while below the connection limit, first making room at it.

        Waitress's own readable() does the same without making room, and logs a
        warning each time the count crosses the limit: under a flood, a line per accept.
        """
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        if not self.accepting:
            return False
        if len(self._map) < self.adj.connection_limit:
            return True
        if now - self.full_logged_at >= FULL_LOG_INTERVAL:
            self.full_logged_at = now
            log.warning(
                "connection limit reached (%d connections): new clients wait,"
                " and idle connections are closed to make room",
                self.clients_limit,
            )
        self.give_up_idle_connections(now)
        return False

    def give_up_idle_connections(self, now):
        """Close the connections idle longest, that wait for nothing, so new clients get in."""
        idle = [
            channel
            for channel in self.active_channels.values()
            if channel.waits_for_nothing() and now - channel.last_activity >= IDLE_GRACE
        ]
        idle.sort(key=lambda channel: channel.last_activity)
        for channel in idle[: max(1, self.adj.connection_limit // GIVE_UP_SHARE)]:
            channel.will_close = True


def file_limit_for(connection_limit):
    """Raise this process's open-file limit for `connection_limit` clients, as far as the
    hard limit lets; returns how many connections it allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connection_limit * FILES_PER_CONNECTION + RESERVED_FILES
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    return max(1, min(connection_limit, (soft - RESERVED_FILES) // FILES_PER_CONNECTION))


def create_server(application, deadlines, sockets=(), **settings):
    """A waitress server with `settings` (waitress's adjustments) whose clients keep `deadlines`.

    It listens on `sockets`, when given (bound and listening already, e.g. by a parent
    process), instead of binding settings' host and port.
    """
    settings.setdefault("asyncore_use_poll", True)  # select() cannot watch past 1024 descriptors
    adj = Adjustments(**settings)
    # Waitress sends each write at once (send_bytes=1): a response's headers and its body went out in
    # two send()s, two TCP segments and two wake-ups of the client. Buffered up to this, a small
    # response goes out whole, in one send() as its task ends (FlushingTask).
    adj.send_bytes = RESPONSE_BUFFER_BYTES
    if sockets:
        listening = [(sock, (sock.family, sock.type, sock.proto, sock.getsockname())) for sock in sockets]
    else:
        listening = [(None, sockinfo) for sockinfo in adj.listen]
    clients_limit = adj.connection_limit
    adj.connection_limit += len(listening) + 1  # waitress counts its listening sockets and trigger too
    socket_map = {}
    dispatcher = DrainingDispatcher()
    dispatcher.set_thread_count(adj.threads)
    servers = [
        GuardedServer(
            application,
            socket_map,
            deadlines,
            clients_limit,
            dispatcher=dispatcher,
            adj=adj,
            sockinfo=sockinfo,
            _sock=sock,
            bind_socket=sock is None,
        )
        for sock, sockinfo in listening
    ]
    if len(servers) == 1:
        return servers[0]
    listening = [(server.effective_host, server.effective_port) for server in servers]
    return ListeningOnSeveral(socket_map, adj, listening, dispatcher, servers[-1].log_info)
