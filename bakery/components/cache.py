"""One cache of binaries per machine: <root>/<project>/v<version>/<component>.

The root is $BAKERY_CACHE_DIR, else $XDG_CACHE_HOME/bakery, else ~/.cache/bakery. A
component is installed by rename from a staging folder on the same file system, with its
sha256 beside it: an interrupted build or download leaves no half binary, and a binary
whose bytes no longer match its recorded sum counts as missing. One lock per project and
version (flock), so parallel tests or two `bakery up`s build once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def root(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    if env.get("BAKERY_CACHE_DIR"):
        return Path(env["BAKERY_CACHE_DIR"])
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "bakery"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Slot:
    """The cache folder of one project at one version."""

    def __init__(self, root: Path, project: str, version: str) -> None:
        self.root = root
        self.folder = root / project / f"v{version}"

    def path(self, component: str) -> Path:
        return self.folder / component

    def has(self, component: str) -> bool:
        binary, recorded = self.path(component), self.folder / f"{component}.sha256"
        if not (binary.is_file() and recorded.is_file() and os.access(binary, os.X_OK)):
            return False
        return recorded.read_text().split()[0] == sha256(binary)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A scratch folder beside the slot (same file system, so install is a rename),
        removed afterwards whatever happens."""
        work = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.folder))
        try:
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def install(self, component: str, made: Path) -> Path:
        """Move `made` into the slot: sum first (to a temporary name), then the binary by rename."""
        made.chmod(0o755)
        digest = sha256(made)
        tmp_sum = self.folder / f".{component}.sha256.tmp"
        tmp_sum.write_text(f"{digest}  {component}\n")
        os.replace(made, self.path(component))
        os.replace(tmp_sum, self.folder / f"{component}.sha256")
        return self.path(component)
