"""Processes the local provider starts: launched detached, recorded by PID, stopped by PID.

A PID file holds the PID and a marker: a string that must appear in the process's
command line (a QEMU `-name`, a config path, a data folder). A PID whose process is
gone, is a zombie, or is now some other program is stale and treated as not running;
so a reboot or a crash never makes bakery signal a stranger.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bakery.errors import ProviderError
from bakery.output import atomic_write


@dataclass(frozen=True)
class Record:
    pid: int
    marker: str


def read(pidfile: Path) -> Record | None:
    try:
        data = json.loads(pidfile.read_text())
        return Record(int(data["pid"]), str(data["marker"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def alive(record: Record | None) -> bool:
    """Is `record`'s process running and still the program we started?"""
    if record is None:
        return False
    proc = Path(f"/proc/{record.pid}")
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X") and record.marker.encode() in cmdline


def running(pidfile: Path) -> int | None:
    """The PID recorded in `pidfile` when that process is alive, else None."""
    record = read(pidfile)
    return record.pid if alive(record) else None


def start(argv: Sequence[str], *, pidfile: Path, marker: str, log: Path, cwd: Path | None = None) -> int:
    """Start `argv` in its own session (it outlives bakery), output to `log`; record its PID."""
    if marker not in " ".join(argv):
        raise ValueError(f"marker {marker!r} is not in the command line")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        try:
            p = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=cwd, start_new_session=True, close_fds=True,
            )
        except OSError as e:
            raise ProviderError(f"cannot start {argv[0]}: {e.strerror}") from None
    atomic_write(pidfile, json.dumps({"pid": p.pid, "marker": marker}) + "\n")
    return p.pid


def exited(pid: int) -> bool:
    """True once `pid` is gone (reaping it when it is our child)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return True
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def stop(pidfile: Path, *, timeout: float = 10.0) -> int | None:
    """SIGTERM the recorded process (SIGKILL after `timeout`), remove the PID file.

    Returns the PID that was stopped, or None when nothing of ours was running.
    """
    record = read(pidfile)
    pid = None
    if alive(record):
        assert record is not None
        pid = record.pid
        _signal(pid, signal.SIGTERM)
        if not wait_exit(pid, timeout):
            _signal(pid, signal.SIGKILL)
            if not wait_exit(pid, 10):
                raise ProviderError(f"pid {pid} ({pidfile}) survived SIGKILL for 10 s; it is left running")
    pidfile.unlink(missing_ok=True)
    return pid


def signal_only(pid: int) -> None:
    """SIGTERM without waiting (stop() several processes in parallel, then wait for each)."""
    _signal(pid, signal.SIGTERM)


def wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not exited(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def until(ok: Callable[[], bool], timeout: float, what: str, pidfile: Path, log: Path) -> None:
    """Wait for `ok()` while the process recorded in `pidfile` runs; bounded by `timeout`."""
    deadline = time.monotonic() + timeout
    while not ok():
        if not running(pidfile):
            raise ProviderError(f"{what} exited at start: {tail(log)} (log: {log})")
        if time.monotonic() > deadline:
            raise ProviderError(f"{what} not ready after {timeout:.0f}s (log: {log})")
        time.sleep(0.2)


def tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "no output"
    return " | ".join(text[-lines:]) or "no output"
