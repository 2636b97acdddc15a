"""Run `bakery` with a signal delivered at the N-th file-system call under a folder.

    python tests/crash_at.py count LOG ROOT -- ARGS...    run normally; write one line per call to LOG
    python tests/crash_at.py KILL|INT N ROOT -- ARGS...   send SIGKILL/SIGINT to itself just before call N

Calls counted: os.open/mkdir/chmod/rename/replace/unlink/rmdir on a path under ROOT,
and os.fsync/os.fchmod (only bakery's writes use them). The signal is a real one sent
with os.kill to this process: SIGKILL ends it where it stands (a crash, a power cut
as far as bakery's files go); SIGINT raises KeyboardInterrupt right there (Ctrl-C).
This is how the tests interrupt a render at chosen points instead of at random times.
"""

from __future__ import annotations

import os
import signal
import sys

PATH_CALLS = ("open", "mkdir", "chmod", "rename", "replace", "unlink", "rmdir")
FD_CALLS = ("fsync", "fchmod")


def main() -> int:
    mode, arg, root = sys.argv[1], sys.argv[2], os.path.abspath(sys.argv[3])
    assert sys.argv[4] == "--"
    argv = sys.argv[5:]
    calls: list[str] = []
    target = None if mode == "count" else int(arg)
    sig = {"KILL": signal.SIGKILL, "INT": signal.SIGINT}.get(mode)

    def wrap(name: str, fn, by_path: bool):
        def wrapper(*a, **kw):
            if by_path:
                p = a[0] if a else kw.get("path", kw.get("src"))
                if not isinstance(p, str | bytes | os.PathLike) or not os.path.abspath(os.fsdecode(p)).startswith(root):
                    return fn(*a, **kw)
                calls.append(f"{name} {os.fsdecode(p)}")
            else:
                calls.append(name)
            if target is not None and len(calls) == target:
                os.kill(os.getpid(), sig)
            return fn(*a, **kw)
        return wrapper

    for name in PATH_CALLS:
        setattr(os, name, wrap(name, getattr(os, name), True))
    for name in FD_CALLS:
        setattr(os, name, wrap(name, getattr(os, name), False))

    from bakery import cli

    try:
        rc = cli.main(argv)
    finally:
        if mode == "count":
            with open(arg, "w") as f:
                f.writelines(f"{c}\n" for c in calls)
    return rc


if __name__ == "__main__":
    sys.exit(main())
