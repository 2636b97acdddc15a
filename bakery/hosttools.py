"""The host programs a command runs, checked before it starts anything.

`bakery bake` and `bakery up` call `require` first: a missing program is named with
the Debian package that has it and the make target that installs it, and nothing has
been started or written yet.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping

from bakery.errors import BakeryError


def missing(tools: Mapping[str, str]) -> dict[str, str]:
    """tool -> Debian package, for every tool not on PATH (where the scripts look too)."""
    return {t: pkg for t, pkg in tools.items() if shutil.which(t) is None}


def require(tools: Mapping[str, str], who: str, error: type[BakeryError], *, target: str) -> None:
    """Raise `error` naming each missing tool, its package, and `make <target>`."""
    gone = missing(tools)
    if not gone:
        return
    names = ", ".join(f"{t} (Debian package {pkg})" for t, pkg in gone.items())
    packages = " ".join(sorted(set(gone.values())))
    raise error(f"{who} needs programs not found on PATH: {names}; `make {target}` installs them "
                f"(or `make setup-system`, or apt-get install {packages}); nothing was started")
