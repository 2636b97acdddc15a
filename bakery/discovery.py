"""etcd bootstrap: how a master's etcd finds its peers on first boot.

`Bootstrap` is the pure value renders use (which flags the etcd manifest gets);
`bootstrap_for(spec, state)` derives it from the spec and what state.json recorded.
Creating tokens (which talks HTTP) lives beside it, in `new_token`.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from bakery import state, topology
from bakery.errors import EtcdError, SpecError, StateError
from bakery.etcd import Client
from bakery.spec import ClusterSpec
from bakery.state import ClusterPaths
from bakery.topology import ClusterPlan

Mode = Literal["static", "discovery", "discovery-v3", "dns-srv", "store"]


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
    # For "store" and "new": the winner's one-member cluster (default: the rendered node alone).
    initial_cluster: str | None = None


def bootstrap_for(spec: ClusterSpec, state: dict[str, Any] | None = None) -> Bootstrap:
    """The bootstrap renders use: the spec's mode, filled in from state.json."""
    state = state or {}
    e = spec.etcd
    recorded = state.get("discovery") or {}
    if recorded.get("mode") not in (None, e.bootstrap):
        recorded = {}  # a token made for another bootstrap mode
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


# -- creating tokens (talks HTTP; everything above is pure) ---------------------------


@dataclass(frozen=True)
class Token:
    """What `new_token` made (or found) for the spec's bootstrap mode."""

    mode: Mode
    url: str | None = None
    token: str | None = None
    srv_records: tuple[str, ...] = ()
    created: bool = False
    note: str = ""


V3_REGISTRY = "/_etcd/registry"


def srv_records(plan: ClusterPlan, ttl: int = 300) -> tuple[str, ...]:
    """The DNS records `--discovery-srv=<domain>` needs, in zone-file form.

    etcd looks up _etcd-server-ssl._tcp.<domain> for peers and checks that each target
    resolves to one of its own --initial-advertise-peer-urls, hence the A records.
    """
    domain = plan.spec.etcd.srv_domain
    if not domain:
        raise SpecError("etcd.bootstrap is dns-srv but etcd.srv_domain is not set")
    d = domain.rstrip(".")
    out = []
    for n in plan.nodes:
        out.append(f"_etcd-server-ssl._tcp.{d}. {ttl} IN SRV 0 0 {n.peer_port} {n.name}.{d}.")
    for n in plan.nodes:
        out.append(f"_etcd-client-ssl._tcp.{d}. {ttl} IN SRV 0 0 {n.client_port} {n.name}.{d}.")
    for n in plan.nodes:
        out.append(f"{n.name}.{d}. {ttl} IN A {n.address}")
    return tuple(out)


def new_token(
    spec: ClusterSpec,
    paths: ClusterPaths,
    *,
    replace: bool = False,
    http: httpx.Client | None = None,
    etcd_client: Client | None = None,
    token: str | None = None,
) -> Token:
    """Create what the spec's bootstrap mode needs and record it in state.json.

    discovery     GET <discovery_service>/new?size=N (the public service's protocol), or,
                  when discovery_service is a v2 keys URL (.../v2/keys/...), PUT
                  <service>/<token>/_config/size itself.
    discovery-v3  put /_etcd/registry/<token>/_config/size on the discovery endpoints.
    static        nothing to create.
    dns-srv       nothing to create here: the SRV records to publish are returned.

    A token is for the first boot only: refused once state.json says the cluster
    bootstrapped. An unused recorded token is returned again unless `replace`.
    `http` / `etcd_client` / `token` are injectable for tests.
    """
    st = state.load(paths)
    if st.get("bootstrapped"):
        raise StateError(
            f"{paths.state}: cluster {spec.name} bootstrapped at {st.get('bootstrapped_at', 'an earlier run')}; "
            "a discovery token is for the first boot only. A replacement master joins with `member add` "
            "and --initial-cluster-state=existing, which render does by itself"
        )
    mode = spec.etcd.bootstrap
    if mode == "static":
        return Token(mode, note="static bootstrap: --initial-cluster comes from the plan; nothing to create")
    if mode == "store":
        return Token(mode, note="store bootstrap: the first master to claim the store's bootstrap key starts etcd; nothing to create")
    if mode == "dns-srv":
        records = srv_records(topology.plan(spec))
        state.update(paths, discovery={"mode": mode, "srv_records": list(records), "created_at": _now()})
        return Token(mode, srv_records=records, created=True, note=f"publish these records in {spec.etcd.srv_domain}")
    if mode == "discovery" and spec.etcd.discovery_url:
        return Token(mode, url=spec.etcd.discovery_url, note="etcd.discovery_url is set in the spec; it is used as is")
    if mode == "discovery-v3" and spec.etcd.discovery_token:
        return Token(mode, token=spec.etcd.discovery_token, note="etcd.discovery_token is set in the spec; it is used as is")
    recorded = st.get("discovery") or {}
    if recorded.get("mode") == mode and not replace:
        return Token(mode, url=recorded.get("url"), token=recorded.get("token"),
                     note="reusing the unused token in state.json (--replace makes a new one)")
    made = _new_v2(spec, http, token) if mode == "discovery" else _new_v3(spec, etcd_client, token)
    state.update(paths, discovery={"mode": mode, "url": made.url, "token": made.token, "size": spec.masters, "created_at": _now()})
    return made


def _new_v2(spec: ClusterSpec, http: httpx.Client | None, token: str | None) -> Token:
    service = spec.etcd.discovery_service.rstrip("/")
    size = spec.masters
    own = http is None
    client = http or httpx.Client(timeout=10)
    try:
        if "/v2/keys" in service:
            token = token or secrets.token_hex(16)
            url = f"{service}/{token}"
            # prevExist=false: never reuse someone else's token
            r = client.put(f"{url}/_config/size", data={"value": str(size), "prevExist": "false"})
            if r.status_code not in (200, 201):
                raise EtcdError(f"{url}/_config/size: PUT answered HTTP {r.status_code}: {r.text[:200]}")
            return Token("discovery", url=url, token=token, created=True)
        r = client.get(f"{service}/new", params={"size": str(size)})
        url = r.text.strip()
        if r.status_code != 200 or not url.startswith(("http://", "https://")):
            raise EtcdError(f"{service}/new?size={size}: expected a token URL, got HTTP {r.status_code}: {r.text[:200]}")
        return Token("discovery", url=url, token=url.rstrip("/").rsplit("/", 1)[-1], created=True)
    except httpx.HTTPError as e:
        raise EtcdError(f"{service}: discovery token request failed: {type(e).__name__}: {e}") from None
    finally:
        if own:
            client.close()


def _new_v3(spec: ClusterSpec, etcd_client: Client | None, token: str | None) -> Token:
    endpoints = spec.etcd.discovery_endpoints
    if not endpoints and etcd_client is None:
        raise SpecError("etcd.bootstrap is discovery-v3 but etcd.discovery_endpoints is empty: list the discovery etcd's client URLs")
    token = token or secrets.token_hex(16)
    client = etcd_client or Client(endpoints)
    try:
        key = f"{V3_REGISTRY}/{token}/_config/size"
        if not client.create(key, str(spec.masters)):
            raise EtcdError(f"{key} exists already on {', '.join(client.endpoints)}: pick another token")
    finally:
        if etcd_client is None:
            client.close()
    return Token("discovery-v3", token=token, created=True)


def record_bootstrapped(spec: ClusterSpec, paths: ClusterPaths, client: Client) -> dict[str, Any]:
    """Once every master is a started voting member: remember it, so renders from now on
    use --initial-cluster-state=existing with the membership etcd reports."""
    members = client.member_list()
    started = [m for m in members if m.name and m.peer_urls and not m.is_learner]
    if len(started) < spec.masters:
        names = ", ".join(m.name or f"{m.id:x} (not started)" for m in members)
        raise EtcdError(f"etcd reports {len(started)} started voting members of {spec.masters} ({names}); not recording a bootstrap yet")
    initial = ",".join(f"{m.name}={m.peer_urls[0]}" for m in sorted(started, key=lambda m: m.name))
    return state.update(paths, bootstrapped=True, bootstrapped_at=_now(), initial_cluster=initial)


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
