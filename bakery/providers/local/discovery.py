"""A v2 discovery etcd on the host, for `etcd.bootstrap: discovery` without a discovery URL.

Debian's etcd 3.4 with `--enable-v2` serves the v2 keys API the discovery protocol
uses. It listens on 127.0.0.1 (and, for containers, on the bridge's host address in
the cluster subnet); the VMs reach it through a guestfwd relay
(net.GUEST_DISCOVERY), so the URL written into their user-data differs from the
one the host uses to create the token.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx

from bakery.errors import ProviderError
from bakery.providers.local.net import GUEST_DISCOVERY, GUEST_DISCOVERY_PORT, HOST, NetPlan

ETCD = "/usr/bin/etcd"  # Debian etcd-server 3.4: still serves the v2 API
REGISTRY = "/v2/keys/_etcd/registry"


def argv(cluster: str, net: NetPlan, data_dir: Path, binary: str = ETCD, *, also_on: str | None = None) -> list[str]:
    """`also_on`: a second client address (the container bridge's host address), so that
    containers reach the discovery etcd directly; VMs come through the guestfwd relay."""
    peer = f"http://{HOST}:{net.discovery_peer_port}"
    listen = net.discovery_endpoint + (f",http://{also_on}:{net.discovery_port}" if also_on else "")
    name = f"bakery-{cluster}-discovery"
    return [
        binary,
        f"--name={name}",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={listen}",
        f"--advertise-client-urls={net.discovery_endpoint}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster={name}={peer}",
        "--enable-v2=true",
    ]


def new_token(endpoint: str, size: int, *, client: httpx.Client | None = None) -> str:
    """Create a discovery token expecting `size` members; returns the token."""
    token = secrets.token_hex(16)
    http = client or httpx.Client(timeout=5)
    try:
        r = http.put(f"{endpoint}{REGISTRY}/{token}/_config/size", data={"value": str(size)})
    except httpx.HTTPError as e:
        raise ProviderError(f"discovery etcd {endpoint}: cannot create a token: {type(e).__name__}") from None
    finally:
        if client is None:
            http.close()
    if r.status_code not in (200, 201):
        raise ProviderError(f"discovery etcd {endpoint}: creating a token answered HTTP {r.status_code}: {r.text[:200]}")
    return token


def token_exists(endpoint: str, token: str) -> bool:
    try:
        r = httpx.get(f"{endpoint}{REGISTRY}/{token}/_config/size", timeout=5)
    except httpx.HTTPError as e:
        raise ProviderError(f"discovery etcd {endpoint}: {type(e).__name__}") from None
    return r.status_code == 200


def guest_url(token: str, host: str = GUEST_DISCOVERY, port: int = GUEST_DISCOVERY_PORT) -> str:
    """The discovery URL as the masters see it: through the VMs' guestfwd relay by default,
    or the bridge's host address for containers."""
    return f"http://{host}:{port}{REGISTRY}/{token}"


def healthy(endpoint: str) -> bool:
    try:
        r = httpx.get(f"{endpoint}/health", timeout=2)
        return r.status_code == 200 and r.json().get("health") == "true"
    except (httpx.HTTPError, ValueError):
        return False
