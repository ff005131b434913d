"""Run one host command from an argument list; the single seam every host module goes through.

A failed command raises :class:`HostCommandError` carrying the argv and the tool's stderr, so
the message that reaches the head node says what the tool said. Tests replace the runner with
:func:`use_runner` to check exact argument lists and feed recorded outputs (the SmartOS
backend, the ZFS driver) without the tools.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PosixPath

from agents.backends.base import BackendError

DEFAULT_TIMEOUT = 120.0


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class HostCommandError(BackendError):
    """A host tool failed; the head node sees ``HostCommandFailed`` with the tool's words."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        said = self.stderr or "(no output)"
        super().__init__("HostCommandFailed", f"{' '.join(self.argv)}: exit {returncode}: {said}")


class StdoutFile(PosixPath):
    """An ``output`` file that receives the command's stdout only; its stderr is captured
    apart (a data stream such as ``zfs send``'s, which a warning must not corrupt)."""


#: (argv, input, timeout, output) -> Completed. ``output``: a file that receives the command's
#: stdout and stderr instead of pipes (a detached container inherits them and would keep a
#: pipe open forever); a :class:`StdoutFile` receives stdout only.
Runner = Callable[[Sequence[str], "bytes | None", float, "Path | None"], Completed]


def subprocess_runner(
    argv: Sequence[str], input: bytes | None, timeout: float, output: Path | None
) -> Completed:
    if output is None:
        proc = subprocess.run(list(argv), input=input, capture_output=True, timeout=timeout,
                              stdin=None if input is not None else subprocess.DEVNULL)
        return Completed(tuple(argv), proc.returncode,
                         proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))
    if isinstance(output, StdoutFile):
        with open(output, "ab") as out:
            proc = subprocess.run(list(argv), input=input, stdout=out, stderr=subprocess.PIPE,
                                  timeout=timeout,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        return Completed(tuple(argv), proc.returncode, "", proc.stderr.decode(errors="replace"))
    start = output.stat().st_size if output.exists() else 0
    with open(output, "ab") as out:
        proc = subprocess.run(list(argv), input=input, stdout=out, stderr=out, timeout=timeout,
                              stdin=None if input is not None else subprocess.DEVNULL)
    with open(output, "rb") as fh:
        fh.seek(start)
        said = fh.read().decode(errors="replace")
    return Completed(tuple(argv), proc.returncode, "", said)


_runner: Runner = subprocess_runner
_runner_lock = threading.Lock()


@contextlib.contextmanager
def use_runner(runner: Runner) -> Iterator[None]:
    """Run every host command through ``runner`` until the block ends (tests)."""
    global _runner
    with _runner_lock:
        saved, _runner = _runner, runner
    try:
        yield
    finally:
        with _runner_lock:
            _runner = saved


def run(
    argv: Sequence[str],
    *,
    input: bytes | str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    output: Path | None = None,
    ok_codes: Sequence[int] = (0,),
    retries: int = 0,
    retry_delay: float = 0.2,
) -> str:
    """Run ``argv`` and return its stdout; raise HostCommandError when it fails.

    ``retries`` is only for tools known to fail transiently (say so where it is used)."""
    data = input.encode() if isinstance(input, str) else input
    for attempt in range(retries + 1):
        try:
            done = _runner(argv, data, timeout, output)
        except subprocess.TimeoutExpired as exc:
            raise HostCommandError(argv, -1, f"timed out after {timeout:g} s") from exc
        except FileNotFoundError as exc:
            raise HostCommandError(argv, 127, f"{argv[0]}: command not found") from exc
        if done.returncode in ok_codes:
            return done.stdout
        if attempt < retries:
            time.sleep(retry_delay)
    raise HostCommandError(argv, done.returncode, done.stderr or done.stdout)
