"""Per-job logs: what a worker prints while it runs a job also goes to the job's log, RUN/jobs/<id>/log.txt.

A worker's own log (RUN/workers/worker-K.log, a SLURM task's output) interleaves every job it ran; the
job's log holds that one job's lines from every worker and attempt that ran it, appended (a retried,
taken-over or resumed job keeps its history), each attempt under a line naming the job, the host, the
process and the time. The process's sys.stdout and sys.stderr are teed while the job runs: print,
warnings, logging's default handler and Rich consoles that write to them (a live progress bar in a
terminal draws past the tee). A log that cannot be written (a full disk) never fails the job: it
stops taking lines.
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

LOG = "log.txt"


class _Sink:
    """The job's log file, opened for appending; silent from its first failed write on."""

    def __init__(self, path: Path):
        try:
            self._file = open(path, "a", encoding="utf-8", errors="replace", buffering=1)
        except OSError:
            self._file = None

    def write(self, text: str) -> None:
        if self._file is None:
            return
        try:
            self._file.write(text)
        except RuntimeError:  # a reentrant write (a signal handler printing mid-write): that line is not logged
            pass
        except (OSError, ValueError):  # ValueError: written by a thread after the job ended
            self.close()

    def close(self) -> None:
        handle, self._file = self._file, None
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.close()


class _Tee:
    """A text stream that also writes to the job's log; everything else is the stream's own (its
    terminal, its encoding, and a Rich live display's proxy, which Rich then writes to directly)."""

    def __init__(self, stream, sink: _Sink):
        self._stream, self._sink = stream, sink

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        self._sink.write(text)
        return written

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str):
        if name in ("_stream", "_sink"):  # not set yet (a copy being made): never ask the stream
            raise AttributeError(name)
        return getattr(self._stream, name)


@contextlib.contextmanager
def job_log(folder: Path, job_id: str) -> Iterator[Path]:
    """While the block runs, what this process prints also goes to `folder`/log.txt; yields its path."""
    sink = _Sink(folder / LOG)
    sink.write(f"--- job {job_id}: {socket.gethostname()} pid {os.getpid()}, "
               f"{time.strftime('%Y-%m-%d %H:%M:%S %z')} ---\n")
    out, err = sys.stdout, sys.stderr
    if out is not None:
        sys.stdout = _Tee(out, sink)
    if err is not None:
        sys.stderr = _Tee(err, sink)
    try:
        yield folder / LOG
    finally:
        sys.stdout, sys.stderr = out, err
        sink.close()
