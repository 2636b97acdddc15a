"""The one module that writes bakery's outputs to disk, atomically.

Everything else returns data; this turns it into files. A file is written to a
temporary name in the same folder, fsynced, chmod'ed, then renamed over the target,
so a crash or Ctrl-C leaves the old file or the new one, never half of either.
A tree (a node's rendered files) is written beside its target and swapped in whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A file to write `path` through: created beside it with permissions `mode` (set
    before any byte lands), fsynced and renamed over `path` only when the block ends
    without an exception; removed otherwise. For content that streams in."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, data: bytes | str, mode: int = 0o644) -> Path:
    """Write `data` to `path` atomically with permissions `mode`."""
    with atomic_file(path, mode) as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any, mode: int = 0o644) -> Path:
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", mode)


def write_tree(target: str | Path, files: Iterable[tuple[str, bytes, int]]) -> Path:
    """Replace folder `target` with exactly `files` (relative path, content, mode).

    The new tree is built in a sibling temporary folder and renamed into place; the old
    tree is removed only after the new one is complete.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for rel, content, mode in files:
            dest = tmp / rel.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            os.chmod(dest, mode)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            if old.exists():
                shutil.rmtree(old)
            target.rename(old)
        tmp.rename(target)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
