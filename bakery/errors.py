"""Every error bakery raises on purpose. cli.py maps each class to an exit code.

One flat module (STYLE.md #12): a reader sees the whole hierarchy at once.
Messages never carry key material: callers pass paths and names, not contents.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where (file, line, key) and what is allowed."""

    message: str
    file: str | None = None
    line: int | None = None
    key: str | None = None

    def __str__(self) -> str:
        where = self.file or ""
        if self.line is not None:
            where += f":{self.line}"
        if self.key:
            where += f"{': ' if where else ''}{self.key}"
        return f"{where}: {self.message}" if where else self.message


class BakeryError(Exception):
    """Base class. `exit_code` is what the CLI returns; `problems` one line each."""

    exit_code = 1

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems = list(problems or [])

    def lines(self) -> list[str]:
        return [str(p) for p in self.problems] or [self.message]


class SpecError(BakeryError):
    """cluster.yaml is unreadable or invalid."""

    exit_code = 2


class RenderError(BakeryError):
    """The spec is valid but cannot be rendered (e.g. user-data over the provider limit)."""

    exit_code = 2


class PKIError(BakeryError):
    """Existing certificates or keys are unusable (wrong permissions, mismatched SANs)."""

    exit_code = 3


class BakeError(BakeryError):
    """Packer is missing or failed."""

    exit_code = 4


class ProviderError(BakeryError):
    """A cloud (or the local hypervisor) refused or failed a call."""

    exit_code = 5


class EtcdError(BakeryError):
    """An etcd endpoint failed a call. The message names the endpoint and the call."""

    exit_code = 6


class EtcdOutcomeUnknown(EtcdError):
    """A call that changes etcd got no answer after it was sent (a timeout, a dropped
    connection): it may have been applied. Never resent blindly to another endpoint."""


class StoreError(BakeryError):
    """The state store (folder, S3, GCS) refused or failed a call, or holds something unusable."""

    exit_code = 8


class StoreNotFound(StoreError):
    """The object asked for is not in the store."""


class NodeError(BakeryError):
    """bakery-node cannot make this instance a master: its identity, the cluster
    description or the CA material is missing or does not check out. Nothing was started."""

    exit_code = 9


class DriftError(BakeryError):
    """`up`/`rollout --fail-on-drift`: the command did its work, but some resource differs
    from what bakery would create (each drift line was printed)."""

    exit_code = 10


class StateError(BakeryError):
    """build/<cluster>/state.json is missing, corrupt or from another cluster, or the build
    folder (-o) is not a writable folder."""

    exit_code = 7


class OutputError(StateError):
    """An output could not be written (disk full, read-only, permissions); what was there
    before is unchanged."""


class ComponentError(BakeryError):
    """A Kubernetes or etcd binary could not be obtained: no source has that version, the Go
    toolchain is missing or too old, a download failed its checksum, or a build failed (the
    message names the log)."""

    exit_code = 11
