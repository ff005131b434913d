"""Keep a Celery worker running.

Celery's consumer gives up for good on some broker failures (seen when Redis restarts while
messages are unacknowledged: kombu fails while restoring them, "Unrecoverable error"), and a
node or head node whose worker is gone stays gone until someone restarts it. So
``sdc agent run``, ``sdc mockcloud`` and ``sdc headnode worker`` run their worker in a child
process and start a new one when it dies of an error, as systemd's ``Restart=`` would; SIGTERM
and SIGINT stop both. A child that cannot even start (bad settings, a missing pool) exits with
:data:`EXIT_CONFIG` and is not restarted: its one-line error is the answer.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from types import FrameType

log = logging.getLogger(__name__)

CHILD_ENV = "SDC_SUPERVISED_CHILD"
#: sysexits' EX_CONFIG: the child's settings or host cannot work, restarting will not help
EXIT_CONFIG = 78
#: a child that lived less than this died "at once"; a few such deaths in a row end it
MIN_UPTIME = 10.0
QUICK_DEATHS = 5
MAX_DELAY = 30.0


def is_child() -> bool:
    return os.environ.get(CHILD_ENV) == "1"


def supervise(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """Run ``argv`` until it exits cleanly or we are told to stop; returns its exit code."""
    stop = threading.Event()
    current: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        stop.set()
        for child in current:
            if child.poll() is None:
                child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    quick, delay = 0, 1.0
    while True:
        started = time.monotonic()
        child = subprocess.Popen(list(argv), env={**os.environ, **environ, CHILD_ENV: "1"})
        current[:] = [child]
        code = child.wait()
        if stop.is_set() or code in (0, EXIT_CONFIG):
            return 1 if code == EXIT_CONFIG else code
        lived = time.monotonic() - started
        quick = quick + 1 if lived < MIN_UPTIME else 0
        if quick >= QUICK_DEATHS:
            log.error("the worker died %d times in a row at start; giving up", quick)
            return code
        delay = min(delay * 2, MAX_DELAY) if quick else 1.0
        log.warning("the worker exited with %s after %.0f s; starting it again in %.0f s",
                    code, lived, delay)
        if stop.wait(delay):
            return code
