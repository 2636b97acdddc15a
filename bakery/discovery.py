"""etcd bootstrap: how a master's etcd finds its peers on first boot.

`Bootstrap` is the pure value renders use (which flags the etcd manifest gets);
`bootstrap_for(spec, state)` derives it from the spec and what state.json recorded.
Creating tokens (which talks HTTP) lives beside it, in `new_token`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from bakery.spec import ClusterSpec

Mode = Literal["static", "discovery", "discovery-v3", "dns-srv"]


@dataclass(frozen=True)
class Bootstrap:
    """Everything the etcd flags depend on besides the plan."""

    mode: Mode
    # "new" on the first boot of the cluster; "existing" once state.json says it
    # bootstrapped: a replacement master joins after `member add`, never by discovery.
    cluster_state: Literal["new", "existing"] = "new"
    discovery_url: str | None = None
    discovery_token: str | None = None
    discovery_endpoints: tuple[str, ...] = ()
    srv_domain: str | None = None
    # For "existing": the --initial-cluster the surviving members reported at member add.
    initial_cluster: str | None = None


def bootstrap_for(spec: ClusterSpec, state: dict[str, Any] | None = None) -> Bootstrap:
    """The bootstrap renders use: the spec's mode, filled in from state.json."""
    state = state or {}
    recorded = state.get("discovery", {})
    e = spec.etcd
    existing = bool(state.get("bootstrapped"))
    return Bootstrap(
        mode=e.bootstrap,
        cluster_state="existing" if existing else "new",
        discovery_url=e.discovery_url or recorded.get("url"),
        discovery_token=e.discovery_token or recorded.get("token"),
        discovery_endpoints=tuple(e.discovery_endpoints),
        srv_domain=e.srv_domain,
        initial_cluster=state.get("initial_cluster") if existing else None,
    )
