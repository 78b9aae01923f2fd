"""Start the tests' botstate processes fast: import botstate once, then fork each server and command.

About 300 servers and commands start in a run of the tests, and each spent most of
its ~0.3 s importing Flask, marshmallow and the rest. The zygote, one per test
process, imports them once; each `python serve.py` or `python -m botstate` the tests
start is a fork of it that takes the test's environment, folder, files and
arguments, then runs the same file or module Python would run (runpy), and exits
as Python exits. What a fork skips is only the imports: the test talks to a real
process on a real port. A test that is about the interpreter's own start (the
console script, ulimits, a terminal) keeps a real `exec`, and so does every
process when TEST_EXEC=1 is set.

The protocol is a JSON line each way on the zygote's stdin and stdout. A start,
{"id", "args", "env", "cwd", "stdin", "stdout", "stderr"}, is answered {"id", "child", "pid"},
and the child's exit is reported {"exited": child, "code"} with subprocess's return codes.
A signal, {"id", "signal": child, "signum"}, is answered {"id"} once sent, or once known
needless: the zygote reaps its children, so it alone knows whether a pid is still theirs.
Forks share the zygote's hash seed; TEST_EXEC=1 gives each its own.
"""

import atexit
import contextlib
import functools
import gc
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


# The console scripts of `botstate` and `flask`: Python files, as serve.py is.
BOTSTATE_SCRIPT = str(Path(sys.executable).parent / "botstate")
FLASK_SCRIPT = str(Path(sys.executable).parent / "flask")


@functools.cache
def _has_pidfds():
    """Whether this system gives process file descriptors (Linux 5.3 and later), which the zygote watches."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


def forkable(args):
    """Whether `python ARGS` is one the zygote can start: serve.py, or the botstate or flask command."""
    if os.environ.get("TEST_EXEC") == "1" or not _has_pidfds():
        return False
    return args[:1] in (["serve.py"], [BOTSTATE_SCRIPT], [FLASK_SCRIPT]) or args[:2] in (
        ["-m", "botstate"],
        ["-m", "flask"],
    )


class ZygoteDied(RuntimeError):
    """The zygote is gone: what it forked can no longer be waited for or signalled through it."""


class ForkedProcess:
    """A child of the zygote, with the part of subprocess.Popen's interface the tests use."""

    def __init__(self, zygote, child, pid, args):
        self.zygote = zygote
        self.child = child  # the zygote's number for it: unlike a pid, never reused
        self.pid = pid
        self.args = args
        self.returncode = None

    def poll(self):
        """The exit code, or None while it runs."""
        return self.wait(timeout=0, raising=False)

    def wait(self, timeout=None, raising=True):
        """Wait for the exit; its code (subprocess.TimeoutExpired after `timeout` seconds)."""
        if self.returncode is None:
            self.returncode = self.zygote.exit_code(self.child, timeout)
        if self.returncode is None and raising:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, signum):
        """Signal the process unless it has exited (the zygote, which reaps it, decides that)."""
        if self.returncode is None:
            self.zygote.signal(self.child, signum)

    def terminate(self):
        """SIGTERM."""
        self.send_signal(signal.SIGTERM)

    def kill(self):
        """SIGKILL."""
        self.send_signal(signal.SIGKILL)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.wait()


class Zygote:
    """The test process's side: the zygote process, its answers and its children's exits."""

    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, __file__], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
        )
        self.changed = threading.Condition()
        self.sending = threading.Lock()  # one request line at a time on the pipe
        self.answers = {}
        self.exits = {}
        self.next_id = 0
        self.alive = True
        self.reader = threading.Thread(target=self._read_answers, daemon=True)
        self.reader.start()

    def close(self):
        """Stop the zygote (its children go on) once it has read what was sent."""
        self.process.stdin.close()
        self.process.wait(timeout=30)
        self.reader.join(timeout=30)
        self.process.stdout.close()

    def _read_answers(self):
        for line in self.process.stdout:
            answer = json.loads(line)
            with self.changed:
                if "exited" in answer:
                    self.exits[answer["exited"]] = answer["code"]
                else:
                    self.answers[answer["id"]] = answer
                self.changed.notify_all()
        with self.changed:
            self.alive = False
            self.changed.notify_all()

    def _ask(self, **request):
        """Send a request; the zygote's answer to it."""
        with self.changed:
            request_id = self.next_id
            self.next_id += 1
        line = json.dumps({"id": request_id, **request}).encode() + b"\n"
        try:
            with self.sending:
                self.process.stdin.write(line)
        except BrokenPipeError:
            raise ZygoteDied("the test zygote is gone") from None
        with self.changed:
            self.changed.wait_for(lambda: request_id in self.answers or not self.alive, timeout=30)
            if request_id not in self.answers:
                raise ZygoteDied("the test zygote did not answer")
            return self.answers.pop(request_id)

    def start(self, args, env, cwd=ROOT, stdin=os.devnull, stdout=os.devnull, stderr=None):
        """Fork `python ARGS`; stdout and stderr go to files (stderr to stdout's if None)."""
        answer = self._ask(
            args=list(args),
            env=dict(env),
            cwd=str(cwd),
            stdin=str(stdin),
            stdout=str(stdout),
            stderr=str(stderr or stdout),
        )
        return ForkedProcess(self, answer["child"], answer["pid"], list(args))

    def signal(self, child, signum):
        """Signal a child, unless it has exited."""
        self._ask(signal=child, signum=int(signum))

    def exit_code(self, child, timeout):
        """The child's exit code once it has exited, waiting up to `timeout` seconds; else None."""
        with self.changed:
            self.changed.wait_for(lambda: child in self.exits or not self.alive, timeout=timeout)
            if child not in self.exits and not self.alive:
                raise ZygoteDied("the test zygote is gone: its children cannot be waited for")
            return self.exits.get(child)


def preload():
    """Import what botstate's servers and commands import, so that no fork imports it again."""
    sys.path[0] = str(ROOT)  # not tests/: as for `python serve.py`
    import flask.cli  # noqa: F401
    import flask_limiter  # noqa: F401
    import flask_limiter.commands  # noqa: F401 - the flask command loads it as a plugin
    import psycopg  # noqa: F401
    import psycopg_pool  # noqa: F401

    import backends.postgres  # noqa: F401
    import backends.sqlite  # noqa: F401
    import botstate  # noqa: F401
    import cli  # noqa: F401
    import serve  # noqa: F401


def become(request):
    """In the fork: take the request's files, folder, environment and arguments."""
    os.chdir(request["cwd"])
    stdin = os.open(request["stdin"], os.O_RDONLY)
    stdout = os.open(request["stdout"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    stderr = stdout
    if request["stderr"] != request["stdout"]:
        stderr = os.open(request["stderr"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for source, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(source, target)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the zygote's pipes and pidfds, as exec's close_fds would
    os.environ.clear()
    os.environ.update(request["env"])
    sys.orig_argv = [sys.executable, *request["args"]]


def run(args):
    """Run `python ARGS` in this process as the interpreter would: a module (-m) or a file."""
    import runpy

    if args[0] == "-m":
        sys.path[0] = os.getcwd()
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.path[0] = os.path.dirname(os.path.abspath(args[0]))
        sys.argv = list(args)
        runpy.run_path(args[0], run_name="__main__")


def outcome_of(args):
    """Run `python ARGS`; its exit status as the interpreter would give it, or minus the signal it dies of."""
    try:
        run(args)
    except SystemExit as exit:
        if exit.code is None or isinstance(exit.code, int):
            return (exit.code or 0) & 0xFF  # as the exit status holds it: never negative
        print(exit.code, file=sys.stderr)
        return 1
    except BaseException as error:  # noqa: BLE001 - reported as the interpreter would
        traceback = error.__traceback__
        while traceback is not None and traceback.tb_frame.f_code.co_filename == __file__:
            traceback = traceback.tb_next  # the zygote's own frames, which `python ARGS` has not
        sys.excepthook(type(error), error, traceback)
        return -signal.SIGINT if isinstance(error, KeyboardInterrupt) else 1
    return 0


def leave(code):
    """End the fork as the interpreter ends: join its threads, run atexit, flush; then exit at once.

    Tearing down the modules that the zygote imported would take a tenth of a second
    per process (each object touched, each page copied). What that teardown would
    still do, botstate does itself first: its commands and servers close their storage.
    """
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    if code < 0:  # killed by a signal, as KeyboardInterrupt leaves Python
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code)


def serve_forks():
    """Fork a child per start request on stdin, signal children on request, until stdin closes;
    report each child's exit by its number."""
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    pidfds = {}  # child number -> its pidfd, until it is reaped
    pending = b""
    while True:
        for key, _ in selector.select():
            if key.data is not None:
                child, pid = key.data
                selector.unregister(key.fd)
                _, status = os.waitpid(pid, 0)
                os.close(pidfds.pop(child))
                answer(exited=child, code=os.waitstatus_to_exitcode(status))
                continue
            chunk = os.read(0, 1 << 16)
            if not chunk:
                return
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                request = json.loads(line)
                if "signal" in request:
                    pidfd = pidfds.get(request["signal"])
                    if pidfd is not None:  # not yet reaped: the pidfd cannot name another process
                        with contextlib.suppress(ProcessLookupError):
                            signal.pidfd_send_signal(pidfd, request["signum"])
                    answer(id=request["id"])
                    continue
                pid = os.fork()
                if pid == 0:
                    become(request)
                    leave(outcome_of(request["args"]))
                child = request["id"]
                pidfds[child] = os.pidfd_open(pid)
                selector.register(pidfds[child], selectors.EVENT_READ, (child, pid))
                answer(id=child, child=child, pid=pid)


def answer(**fields):
    """One JSON line to the test process, unbuffered (a fork must inherit no half-written buffer)."""
    os.write(1, json.dumps(fields).encode() + b"\n")


if __name__ == "__main__":
    preload()
    gc.freeze()  # no fork's collections touch, and so copy, what the zygote imported
    serve_forks()
