"""Run one host command from an argument list; the single seam every host module goes through.

A failed command raises :class:`HostCommandError` carrying the argv and the tool's stderr, so
the message that reaches the head node says what the tool said. Tests replace the runner with
:func:`use_runner` to check exact argument lists and feed recorded outputs (the SmartOS
backend, the ZFS driver) without the tools.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PosixPath
from typing import IO, Protocol

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


# -- commands whose stdout or stdin is a stream ---------------------------------------------
# A send stream (``zfs send``) is read as the command writes it and a receive (``zfs
# receive``) is fed as the data comes: neither fits in memory nor needs a file. Tests replace
# the starter with :func:`use_streamer`, as they replace the runner.

#: the unit a stream is read and written in
STREAM_CHUNK = 1 << 20
#: how long a streaming command may take to exit once its stream ended (seconds)
STREAM_EXIT_TIMEOUT = 600.0


class Streaming(Protocol):
    """A started command; ``stdout`` (a send) or ``stdin`` (a receive) is a pipe."""

    stdin: IO[bytes] | None
    stdout: IO[bytes] | None

    def wait(self, timeout: float) -> Completed:
        """Its exit, and what it said on stderr (its stdout too when that was no pipe)."""
        ...

    def kill(self) -> None: ...


#: (argv, pipe stdin, pipe stdout) -> the started command
Streamer = Callable[[Sequence[str], bool, bool], Streaming]


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Piped:
    def __init__(self, argv: Sequence[str], pipe_stdin: bool, pipe_stdout: bool) -> None:
        self.argv = tuple(argv)
        # what the tool says goes to a file: a chatty tool must never block on a full pipe
        self._said = tempfile.TemporaryFile()  # noqa: SIM115 -- wait() closes it
        self._proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE if pipe_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipe_stdout else self._said, stderr=self._said)
        self.stdin, self.stdout = self._proc.stdin, self._proc.stdout

    def wait(self, timeout: float) -> Completed:
        for pipe in (self.stdin, self.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        try:
            code = self._proc.wait(timeout)
            late = ""
        except subprocess.TimeoutExpired:
            self.kill()
            code = self._proc.wait()
            late = f"\n(killed: still running {timeout:g} s after its stream ended)"
        self._said.seek(0)
        said = self._said.read().decode(errors="replace") + late
        self._said.close()
        return Completed(self.argv, code, "", said)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()


def _start_piped(argv: Sequence[str], pipe_stdin: bool, pipe_stdout: bool) -> Streaming:
    return _Piped(argv, pipe_stdin, pipe_stdout)


_streamer: Streamer = _start_piped


@contextlib.contextmanager
def use_streamer(streamer: Streamer) -> Iterator[None]:
    """Start every streaming command through ``streamer`` until the block ends (tests)."""
    global _streamer
    with _runner_lock:
        saved, _streamer = _streamer, streamer
    try:
        yield
    finally:
        with _runner_lock:
            _streamer = saved


def _start(argv: Sequence[str], pipe_stdin: bool, pipe_stdout: bool) -> Streaming:
    try:
        return _streamer(argv, pipe_stdin, pipe_stdout)
    except FileNotFoundError as exc:
        raise HostCommandError(argv, 127, f"{argv[0]}: command not found") from exc


def stream_from(argv: Sequence[str], *, exit_timeout: float = STREAM_EXIT_TIMEOUT
                ) -> Generator[bytes, None, None]:
    """``argv``'s stdout, chunk by chunk as it comes. A command that fails raises
    HostCommandError after its last chunk, so a consumer never takes a stream cut short for
    a whole one; a consumer that stops early (closes the iterator) kills the command."""
    proc = _start(argv, False, True)
    assert proc.stdout is not None
    done: Completed | None = None
    try:
        while piece := proc.stdout.read(STREAM_CHUNK):
            yield piece
        done = proc.wait(exit_timeout)
    finally:
        if done is None:
            proc.kill()
            proc.wait(exit_timeout)
    if done.returncode != 0:
        raise HostCommandError(argv, done.returncode, done.stderr)


def stream_into(argv: Sequence[str], source: Readable, *,
                exit_timeout: float = STREAM_EXIT_TIMEOUT) -> str:
    """Feed ``source`` to ``argv``'s stdin to its end; returns what the command said. When
    reading ``source`` fails (a stream cut), the command sees its stdin end there (a ``zfs
    receive -s`` then keeps what it got) and the reading error is raised."""
    proc = _start(argv, True, False)
    assert proc.stdin is not None
    try:
        while piece := source.read(STREAM_CHUNK):
            proc.stdin.write(piece)
    except BrokenPipeError:
        pass  # the command stopped reading: its exit says why
    except BaseException:
        proc.wait(exit_timeout)
        raise
    done = proc.wait(exit_timeout)
    if done.returncode != 0:
        raise HostCommandError(argv, done.returncode, done.stderr)
    return done.stderr
