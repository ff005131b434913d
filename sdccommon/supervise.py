"""Keep a Celery worker running.

Celery's consumer gives up for good on some broker failures (seen when Redis restarts while
messages are unacknowledged: kombu fails while restoring them, "Unrecoverable error"), and a
node or head node whose worker is gone stays gone until someone restarts it. So
``sdc agent run``, ``sdc mockcloud`` and ``sdc headnode worker`` run their worker in a child
process and start a new one when it dies of an error, as systemd's ``Restart=`` would; SIGTERM
and SIGINT stop both. A child that cannot even start (bad settings, a missing pool) exits at
once with :data:`EXIT_CONFIG` and is not restarted: its one-line error is the answer.

The child dies with its supervisor, however the supervisor dies: a supervisor killed with
SIGKILL (or by the OOM killer) cannot forward a signal, and an orphaned worker would go on
serving its node next to the one a restarted supervisor starts (two agents for one server,
each with its own view of the node). The kernel sends the child SIGKILL when its parent dies
(``PR_SET_PDEATHSIG``), set between fork and exec, where the child also checks that its
parent is still the supervisor that forked it (the supervisor may die before the setting is
made). SIGKILL, not a warm shutdown: such a worker's shutdown can hang for good on a broken
broker connection, and its tasks are acknowledged late and idempotent, so the running ones
are delivered again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

CHILD_ENV = "SDC_SUPERVISED_CHILD"
#: the pid of the supervisor, in its child's environment (see :func:`watch_supervisor`)
SUPERVISOR_ENV = "SDC_SUPERVISOR_PID"
#: seconds between a child's checks that its supervisor still lives
ORPHAN_CHECK_INTERVAL = 1.0
#: sysexits' EX_SOFTWARE: a child found itself orphaned and ended itself
EXIT_ORPHANED = 70
#: sysexits' EX_CONFIG: the child's settings or host cannot work, restarting will not help
EXIT_CONFIG = 78
#: a child that lived less than this died "at once"; a few such deaths in a row end it
MIN_UPTIME = 10.0
QUICK_DEATHS = 5
MAX_DELAY = 30.0


def is_child() -> bool:
    return os.environ.get(CHILD_ENV) == "1"


#: linux/prctl.h
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """What a child runs between fork and exec so that it dies with this process (None
    where the kernel has no ``prctl``). Built before the fork: the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    prctl = libc.prctl
    parent = os.getpid()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the supervisor died before the setting was made
            os._exit(1)

    return arm


def supervise(argv: Sequence[str], environ: Mapping[str, str], pass_fds: Sequence[int] = (),
              on_start: Callable[[int], None] | None = None) -> int:
    """Run ``argv`` until it exits cleanly or we are told to stop; returns its exit code.

    ``pass_fds`` stay open in every child (the node locks); ``on_start`` gets each new
    child's pid."""
    stop = threading.Event()
    current: list[subprocess.Popen[bytes]] = []
    _forward_signals(stop, current)
    return _keep_running(argv, environ, stop, current, pass_fds, on_start)


def supervise_all(commands: Sequence[tuple[Sequence[str], Mapping[str, str]]]) -> int:
    """Run every ``(argv, environ)`` of ``commands`` as a child, each kept running as
    :func:`supervise` keeps one; SIGTERM and SIGINT stop them all. One that gives up (it
    cannot start) stops the others: the group is not what was asked for without it.
    Returns the first non-zero exit code, else 0."""
    stop = threading.Event()
    current: list[subprocess.Popen[bytes]] = []
    _forward_signals(stop, current)
    codes: list[int] = []

    def keep(argv: Sequence[str], environ: Mapping[str, str]) -> None:
        # Each child is forked by its own thread, which lives until that child has
        # exited for good: the kernel's death signal follows the forking thread.
        mine: list[subprocess.Popen[bytes]] = []
        code = _keep_running(argv, environ, stop, mine, registry=current)
        codes.append(code)
        if code != 0 and not stop.is_set():
            stop.set()
            for child in list(current):
                if child.poll() is None:
                    child.terminate()

    threads = [threading.Thread(target=keep, args=command, name=f"supervise-{n}")
               for n, command in enumerate(commands)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        # joined with a timeout: the main thread must stay free to take signals
        for thread in threads:
            thread.join(0.5)
    return next((code for code in codes if code != 0), 0)


def _forward_signals(stop: threading.Event, current: list[subprocess.Popen[bytes]]) -> None:
    def forward(signum: int, _frame: FrameType | None) -> None:
        stop.set()
        for child in list(current):
            if child.poll() is None:
                child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)


def _keep_running(argv: Sequence[str], environ: Mapping[str, str], stop: threading.Event,
                  current: list[subprocess.Popen[bytes]], pass_fds: Sequence[int] = (),
                  on_start: Callable[[int], None] | None = None,
                  registry: list[subprocess.Popen[bytes]] | None = None) -> int:
    """Start ``argv`` again whenever it dies of an error, until it exits cleanly, ``stop``
    is set, or it keeps dying at start. ``current`` holds the running child (``registry``,
    if given, every child of a group: the signal handler's list)."""
    quick, delay = 0, 1.0
    arm = _die_with_parent()
    while True:
        started = time.monotonic()
        # The death signal goes with the thread that forked the child: this loop runs in
        # a thread that lives as long as the child (the main thread, for one child).
        child = subprocess.Popen(list(argv), env={**os.environ, **environ, CHILD_ENV: "1",
                                                  SUPERVISOR_ENV: str(os.getpid())},
                                 pass_fds=tuple(pass_fds), preexec_fn=arm)
        if registry is not None:
            registry.append(child)  # one append per start: a few dead ones cost nothing
        current[:] = [child]
        if stop.is_set() and child.poll() is None:
            child.terminate()  # told to stop while it was starting
        if on_start is not None:
            on_start(child.pid)
        code = child.wait()
        lived = time.monotonic() - started
        if stop.is_set() or code == 0:
            return code
        if code == EXIT_CONFIG and lived < MIN_UPTIME:
            return 1  # it could not start; it said why
        quick = quick + 1 if lived < MIN_UPTIME else 0
        if quick >= QUICK_DEATHS:
            log.error("the worker died %d times in a row at start; giving up", quick)
            return code
        delay = min(delay * 2, MAX_DELAY) if quick else 1.0
        log.warning("the worker exited with %s after %.0f s; starting it again in %.0f s",
                    code, lived, delay)
        if stop.wait(delay):
            return code


def watch_supervisor(interval: float = ORPHAN_CHECK_INTERVAL) -> None:
    """In a supervised child: end this process once its parent is no longer the supervisor
    that started it. The kernel's death signal does this at once on Linux; this check is
    for kernels without ``prctl`` (a SmartOS node's agent), a second later."""
    expected = os.environ.get(SUPERVISOR_ENV, "")
    if not expected.isdigit():
        return

    def watch() -> None:
        while os.getppid() == int(expected):
            time.sleep(interval)
        sys.stderr.write(f"the supervisor (pid {expected}) is gone; this worker ends too\n")
        sys.stderr.flush()
        os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


#: a worker that has taken no message for this long while its queues hold some is stuck
STALL_AFTER = 30.0
#: sysexits' EX_TEMPFAIL: the watchdog ended a stuck worker; the supervisor starts a new one
EXIT_STALLED = 75


class ConsumerWatchdog:
    """Ends this worker process when its consumer has stopped taking messages.

    After some broker failures Celery's consumer neither recovers nor exits (it hangs after
    an "Unrecoverable error", or keeps counting lost acks against its prefetch). The signal
    we can trust is the queue: messages are waiting, nothing has been received for
    ``stall_after`` seconds, and no task is running. Then the process exits with
    :data:`EXIT_STALLED` and its supervisor starts a fresh worker; the head node's sweep
    re-sends whatever was lost.
    """

    def __init__(self, redis_url: str, queues: Sequence[str],
                 stall_after: float = STALL_AFTER) -> None:
        self.redis_url = redis_url
        self.queues = list(queues)
        self.stall_after = stall_after
        self.last_activity = time.monotonic()
        self.running = 0
        self._lock = threading.Lock()

    def connect(self) -> None:
        """Follow the worker's own signals; call before the worker starts."""
        from celery import signals

        signals.task_received.connect(self._touch, weak=False)
        signals.task_prerun.connect(self._started, weak=False)
        signals.task_postrun.connect(self._finished, weak=False)

    def _touch(self, **_: object) -> None:
        self.last_activity = time.monotonic()

    def _started(self, **_: object) -> None:
        with self._lock:
            self.running += 1
        self._touch()

    def _finished(self, **_: object) -> None:
        with self._lock:
            self.running -= 1
        self._touch()

    def stalled(self, waiting: int, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return waiting > 0 and self.running <= 0 and now - self.last_activity > self.stall_after

    def start(self) -> None:
        threading.Thread(target=self._watch, name="consumer-watchdog", daemon=True).start()

    def waiting(self, client: Any) -> int:
        """Messages waiting in the queues: kombu keeps a queue as one Redis list per message
        priority (the head node's new jobs wait in the lowest)."""
        from kombu.transport.redis import PRIORITY_STEPS, Channel

        with client.pipeline(transaction=False) as pipe:
            for queue in self.queues:
                for priority in PRIORITY_STEPS:
                    pipe.llen(f"{queue}{Channel.sep}{priority}" if priority else queue)
            return sum(int(n) for n in pipe.execute())

    def _watch(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url, socket_timeout=5)
        while True:
            time.sleep(self.stall_after / 3)
            try:
                waiting = self.waiting(client)
            except redis.RedisError:
                continue  # the broker is away: nothing to judge the consumer by
            if self.stalled(waiting):
                log.error("the worker has taken no message for %.0f s while %d wait; "
                          "ending it so a fresh one starts", self.stall_after, waiting)
                os._exit(EXIT_STALLED)


class _ExitOnUnrecoverable(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.CRITICAL and "Unrecoverable error" in record.getMessage():
            # This handler runs before the root logger's: say what the error was, since
            # nothing else will once we exit.
            sys.stderr.write(f"{logging.Formatter().format(record)}\n"
                             "the worker's consumer gave up; exiting so a fresh one starts\n")
            sys.stderr.flush()
            os._exit(EXIT_STALLED)


def exit_on_unrecoverable() -> None:
    """End the worker the moment Celery declares an "Unrecoverable error". Its own shutdown
    after that can hang for good when the broker went away (seen with Redis restarts: kombu
    fails while restoring unacknowledged messages), and a hung worker is never restarted by
    its supervisor. The unacknowledged messages stay in Redis and come back after the
    visibility timeout; the head node's sweep re-sends anything else.

    The handler sits on the logger of Celery's worker, not on the root logger: Celery gives
    the root logger its console handler only when the root has none, and one there made the
    workflow worker silent (no "ready", no task errors). Celery clears the handlers of the
    root and ``celery`` loggers when it sets up logging, never those of ``celery.worker``."""
    worker_logger = logging.getLogger("celery.worker")
    if not any(isinstance(h, _ExitOnUnrecoverable) for h in worker_logger.handlers):
        worker_logger.addHandler(_ExitOnUnrecoverable())
