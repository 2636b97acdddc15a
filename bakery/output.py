"""The one module that writes bakery's outputs to disk, atomically.

Everything else returns data; this turns it into files. A file is written to a
temporary name in the same folder with its mode set before any byte lands, fsynced,
then renamed over the target (and the folder fsynced), so a crash, Ctrl-C or a full
disk leaves the old file or the new one, never half of either. A tree (the PKI, a
node's rendered files, a Packer staging folder) is written complete beside its target
and swapped in whole; `recover_tree` finishes or undoes a swap a crash cut short.
Folders get their modes explicitly, whatever the umask. An OSError becomes an
OutputError naming the path.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from bakery.errors import OutputError

DIR_MODE = 0o700


def _error(path: Path, e: OSError) -> OutputError:
    why = e.strerror or str(e)
    hint = {errno.ENOSPC: "free some space and run again", errno.EDQUOT: "free some space and run again",
            errno.EROFS: "the file system is read-only; choose another folder (-o)",
            errno.EACCES: "not writable by this user; choose another folder (-o) or fix its permissions",
            errno.EPERM: "not writable by this user; choose another folder (-o) or fix its permissions"}.get(e.errno or 0)
    return OutputError(f"{path}: cannot write ({why}){'; ' + hint if hint else ''}; what was there before is unchanged")


def make_dirs(path: str | Path, mode: int = DIR_MODE) -> Path:
    """Create `path` and missing parents with `mode` (not the umask's); an existing folder is left as it is."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    if p.exists() and not p.is_dir():
        raise OutputError(f"{p}: not a folder, so nothing can be written under it; move it aside or choose another folder (-o)")
    for d in reversed(missing):
        try:
            with contextlib.suppress(FileExistsError):
                d.mkdir()
                os.chmod(d, mode)
        except OSError as e:
            raise OutputError(f"{d}: cannot create this folder ({e.strerror}); choose another folder (-o) or fix "
                              "the permissions of the one above it") from None
    return path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A file to write `path` through: created beside it with permissions `mode` (set
    before any byte lands), fsynced and renamed over `path` only when the block ends
    without an exception; removed otherwise. For content that streams in: an error the
    block raises passes through unchanged; bakery's own writes raise OutputError."""
    path = Path(path)
    make_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, mode)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _error(path, e) from None
    with os.fdopen(fd, "wb") as f:
        try:
            yield f
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        try:
            f.flush()
            os.fsync(f.fileno())
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise _error(path, e) from None
    try:
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _error(path, e) from None


def atomic_write(path: str | Path, data: bytes | str, mode: int = 0o644) -> Path:
    """Write `data` to `path` atomically with permissions `mode`."""
    path = Path(path)
    try:
        with atomic_file(path, mode) as f:
            f.write(data.encode() if isinstance(data, str) else data)
    except OSError as e:  # the write itself (a full disk)
        raise _error(path, e) from None
    return path


def atomic_write_json(path: str | Path, obj: Any, mode: int = 0o644) -> Path:
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", mode)


@contextlib.contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on `path`.lock for a read-modify-write of `path`, so two
    bakery commands (two bakes of different targets) do not lose each other's update."""
    lock = Path(path).with_name(f".{Path(path).name}.lock")
    make_dirs(lock.parent)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise _error(lock, e) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# -- trees -------------------------------------------------------------------------------


def _staging(target: Path) -> tuple[Path, Path]:
    return target.with_name(f".{target.name}.new"), target.with_name(f".{target.name}.old")


_RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (renameat2 RENAME_EXCHANGE); False where unsupported."""
    renameat2 = getattr(_libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive flock on `folder` itself: two bakery runs never stage or swap the
    same tree at once (one would remove the other's staging folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield
        return
    except OSError as e:
        raise _error(folder, e) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def recover_tree(target: str | Path) -> None:
    """Finish or undo a `write_tree` a crash cut short: the new tree is complete once the
    old one was moved aside, so it is moved in; otherwise the old one stays. Leftover
    staging folders are removed."""
    target = Path(target)
    new, old = _staging(target)
    if not (new.exists() or old.exists()):
        return
    with _folder_lock(target.parent):
        _recover(target)


def _recover(target: Path) -> None:
    new, old = _staging(target)
    try:
        if not target.exists():
            if old.exists() and new.exists():
                new.rename(target)
            elif old.exists():
                old.rename(target)
        for leftover in (new, old):
            if leftover.exists():
                shutil.rmtree(leftover)
    except OSError as e:
        raise _error(target, e) from None


def write_tree(target: str | Path, files: Iterable[tuple[str, bytes, int]], *, dir_mode: int = 0o755,
               precondition: Callable[[], None] | None = None) -> Path:
    """Replace folder `target` with exactly `files` (relative path, content, mode), folders
    `dir_mode`. The new tree is built and fsynced in a sibling staging folder and swapped
    in at once; the old tree is removed only after that. `precondition` runs first, under
    the lock that keeps other writers of the folder out, and may raise to write nothing."""
    target = Path(target)
    make_dirs(target.parent)
    with _folder_lock(target.parent):
        _recover(target)
        if precondition is not None:  # under the lock: e.g. "the tree is still the one I read"
            precondition()
        return _write_tree(target, files, dir_mode)


@dataclass(frozen=True)
class Tree:
    """One folder for write_trees: its files (relative path, content, mode) and a check
    that runs under its folder's lock before anything is written (may raise)."""

    target: Path
    files: Sequence[tuple[str, bytes, int]]
    dir_mode: int = 0o755
    precondition: Callable[[], None] | None = None


def write_trees(trees: Sequence[Tree]) -> list[Path]:
    """Several trees as one step: under every parent folder's lock (taken in a fixed
    order), each precondition passes and each tree is staged complete before the first
    is swapped in, so a full disk, an error or Ctrl-C while writing leaves all of them
    as they were. The swaps are renames (no new blocks), in the order given."""
    parents = sorted({Path(t.target).parent for t in trees})
    with contextlib.ExitStack() as stack:
        for parent in parents:
            make_dirs(parent)
            stack.enter_context(_folder_lock(parent))
        for t in trees:
            _recover(Path(t.target))
            if t.precondition is not None:
                t.precondition()
        staged: list[Path] = []
        try:
            for t in trees:
                _stage(Path(t.target), t.files, t.dir_mode)
                staged.append(Path(t.target))
        except BaseException:
            for target in staged:
                shutil.rmtree(_staging(target)[0], ignore_errors=True)
            raise
        return [_swap(Path(t.target)) for t in trees]


def _write_tree(target: Path, files: Iterable[tuple[str, bytes, int]], dir_mode: int) -> Path:
    _stage(target, files, dir_mode)
    return _swap(target)


def _stage(target: Path, files: Iterable[tuple[str, bytes, int]], dir_mode: int) -> None:
    """`files` written and fsynced in `target`'s staging folder; `target` untouched."""
    new, _ = _staging(target)
    try:
        os.mkdir(new)
        os.chmod(new, dir_mode)
        folders = {new}
        for rel, content, mode in files:
            dest = new / rel.lstrip("/")
            for parent in reversed(dest.relative_to(new).parents[:-1]):
                d = new / parent
                if d not in folders:
                    d.mkdir(exist_ok=True)
                    os.chmod(d, dir_mode)
                    folders.add(d)
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), mode)
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
        for d in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            _fsync_dir(d)
    except OSError as e:
        shutil.rmtree(new, ignore_errors=True)
        raise _error(target, e) from None
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise


def _swap(target: Path) -> Path:
    """The staged tree swapped in for `target`: one rename exchange, or two renames."""
    new, old = _staging(target)
    try:
        if target.exists() and _exchange(new, target):
            _fsync_dir(target.parent)
            shutil.rmtree(new)  # now the old tree
        else:
            if target.exists():
                target.rename(old)
            new.rename(target)
            _fsync_dir(target.parent)
            if old.exists():
                shutil.rmtree(old)
    except OSError as e:
        if not old.exists():  # before the swap: the old tree is untouched
            shutil.rmtree(new, ignore_errors=True)
        raise _error(target, e) from None
    except BaseException:
        if not old.exists():
            shutil.rmtree(new, ignore_errors=True)
        raise
    return target
