"""Packer command lines (pure functions) and the one runner every subprocess goes through.

The argv builders take values and return lists, so tests check them without running
anything. `Runner` is the seam (STYLE.md #8): `bake` only calls `runner(argv, cwd, env,
on_line)`; tests pass the real `SubprocessRunner` or a recording one.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bakery.errors import BakeError

INSTALL_HINT = (
    "install Packer: `apt-get install packer` on Debian (or `make setup-system`), "
    "or a release from the HashiCorp downloads page; then check `packer version`"
)


@dataclass(frozen=True)
class RunResult:
    returncode: int
    lines: tuple[str, ...]


class Runner(Protocol):
    def __call__(
        self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], on_line: Callable[[str], None]
    ) -> RunResult: ...


def version_argv(packer: str) -> list[str]:
    return [packer, "version"]


def init_argv(packer: str, folder: Path) -> list[str]:
    return [packer, "init", str(folder)]


def _common(only: str, variables: Mapping[str, str]) -> list[str]:
    argv = [f"-only={only}"]
    for name in sorted(variables):
        argv.append(f"-var={name}={variables[name]}")
    return argv


def validate_argv(packer: str, folder: Path, only: str, variables: Mapping[str, str]) -> list[str]:
    """`packer validate` of one source; hashed variables come from *.auto.pkrvars.hcl in `folder`."""
    return [packer, "validate", *_common(only, variables), str(folder)]


def build_argv(packer: str, folder: Path, only: str, variables: Mapping[str, str]) -> list[str]:
    """`packer build -machine-readable` of one source. -force: an interrupted earlier run
    may have left an output behind; bakery records only complete builds anyway."""
    return [packer, "build", "-machine-readable", "-force", "-color=false", *_common(only, variables), str(folder)]


def parse_version(text: str) -> tuple[int, int, int]:
    """`Packer v1.6.6` (or `1.11.2`) -> (1, 6, 6)."""
    m = re.search(r"v?(\d+)\.(\d+)\.(\d+)", text)
    if not m:
        raise BakeError(f"cannot read Packer's version from {text.strip()[:80]!r}")
    return int(m[1]), int(m[2]), int(m[3])


def supports_required_plugins(version: tuple[int, int, int]) -> bool:
    """`packer { required_plugins }` and `packer init` arrived in 1.7."""
    return version >= (1, 7, 0)


def find(packer: str) -> str:
    """The packer executable, or a BakeError saying how to install it."""
    path = shutil.which(packer)
    if path is None:
        raise BakeError(f"`{packer}` not found on PATH: {INSTALL_HINT}")
    return path


class SubprocessRunner:
    """Runs a command, streaming each output line to `on_line` as it comes.

    The child gets its own process group, so that Ctrl-C reaches bakery first; bakery
    then sends SIGINT to the whole group (Packer and the scripts it runs clean up on it)
    and waits for all of them. A second Ctrl-C while waiting kills the group.
    """

    def __call__(
        self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], on_line: Callable[[str], None]
    ) -> RunResult:
        # SIGINT is held back while Packer starts: a Ctrl-C between fork and the `try`
        # below would leave a Packer running in its own session with nobody to stop it.
        # The child must not inherit the blocked mask, so it is unblocked before exec.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            proc = subprocess.Popen(
                list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True,
                preexec_fn=_unblock_sigint,
            )
        except FileNotFoundError:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            raise BakeError(f"`{argv[0]}` not found: {INSTALL_HINT}") from None
        except BaseException:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            raise
        lines: list[str] = []
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a pending Ctrl-C is raised here
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                lines.append(line)
                on_line(line)
            return RunResult(proc.wait(), tuple(lines))
        except KeyboardInterrupt:
            _interrupt(proc)
            raise
        finally:
            if proc.stdout is not None:
                proc.stdout.close()


def _unblock_sigint() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


GROUP_GRACE = 120.0  # seconds the scripts Packer ran may take to clean up after it exits


def _interrupt(proc: subprocess.Popen[str]) -> None:
    """SIGINT to Packer's process group, then wait for Packer AND every process of the group:
    Packer can exit before the script it ran has finished its own cleanup (debootstrap's
    mounts). A second Ctrl-C, or the grace period running out, kills the group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait()
        deadline = time.monotonic() + GROUP_GRACE
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
