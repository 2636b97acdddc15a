"""A v2 discovery etcd on the host, for `etcd.bootstrap: discovery` without a discovery URL.

Debian's etcd 3.4 with `--enable-v2` serves the v2 keys API the discovery protocol
uses. It listens on 127.0.0.1 only; the VMs reach it through a guestfwd relay
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


def argv(cluster: str, net: NetPlan, data_dir: Path, binary: str = ETCD) -> list[str]:
    peer = f"http://{HOST}:{net.discovery_peer_port}"
    name = f"bakery-{cluster}-discovery"
    return [
        binary,
        f"--name={name}",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={net.discovery_endpoint}",
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


def guest_url(token: str) -> str:
    """The discovery URL as the VMs see it (through the guestfwd relay)."""
    return f"http://{GUEST_DISCOVERY}:{GUEST_DISCOVERY_PORT}{REGISTRY}/{token}"


def healthy(endpoint: str) -> bool:
    try:
        r = httpx.get(f"{endpoint}/health", timeout=2)
        return r.status_code == 200 and r.json().get("health") == "true"
    except (httpx.HTTPError, ValueError):
        return False
