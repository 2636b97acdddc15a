"""A folder as a state store: the local provider's, and every test's.

put writes a temporary file beside the target, fsyncs it and renames it over the
target. put_if_absent hard-links the finished temporary file to the target, which
fails if the target exists: of several writers exactly one wins, and no reader ever
sees a half-written object. Objects are 0600 and folders 0700, whatever the umask:
the store holds CA keys.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bakery.errors import StoreError, StoreNotFound
from bakery.store.base import check_key

FILE_MODE = 0o600
DIR_MODE = 0o700


class FolderStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _mkdirs(self, folder: Path) -> None:
        missing = []
        while not folder.is_dir():
            missing.append(folder)
            folder = folder.parent
        for d in reversed(missing):
            try:
                d.mkdir(mode=DIR_MODE)
            except FileExistsError:
                continue
            os.chmod(d, DIR_MODE)

    def _staged(self, path: Path, data: bytes) -> str:
        try:
            self._mkdirs(path.parent)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        except OSError as e:
            raise StoreError(f"store {self.url}: cannot write {path.name}: {e.strerror}") from None
        try:
            os.fchmod(fd, FILE_MODE)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException as e:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(e, OSError):
                raise StoreError(f"store {self.url}: cannot write {path.name}: {e.strerror}") from None
            raise
        return tmp

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise StoreNotFound(f"store {self.url}: no object {key}") from None
        except OSError as e:
            raise StoreError(f"store {self.url}: cannot read {key}: {e.strerror}") from None

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._staged(path, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        tmp = self._staged(path, data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            Path(tmp).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> list[str]:
        check_key(prefix, prefix=True)
        if not self.root.is_dir():
            return []
        keys = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel_dir = os.path.relpath(dirpath, self.root)
            for name in filenames:
                if name.startswith("."):
                    continue  # a put's temporary file
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
