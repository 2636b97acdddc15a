"""HAProxy on the host: the local cluster's load balancer, over the masters' etcd client
ports and over their API servers.

TCP mode both (TLS passes through: etcd and the API server check client certificates
themselves), `option redispatch` + `retries` so a dead member costs a retry rather than a
failed request (TESTING.md). etcd backends get a TCP connect check; API backends an HTTPS
`GET /readyz` verified against the cluster CA (the API server answers it anonymously,
render/configs.py), so a master whose API server is up but not ready (no etcd, still
starting its informers) takes no requests. The admin socket answers `show stat` for
`bakery status` and the tests.
"""

from __future__ import annotations

import csv
import io
import socket
from collections.abc import Mapping
from pathlib import Path

from bakery.errors import ProviderError
from bakery.providers.local.net import HOST, NetPlan

ETCD_BACKEND = "masters"
API_BACKEND = "apiservers"


def config(cluster: str, net: NetPlan, stats_socket: Path, ca: Path, backends: Mapping[str, tuple[str, int]] | None = None,
           api_backends: Mapping[str, tuple[str, int]] | None = None) -> str:
    """haproxy.cfg for `cluster`. Pure. `ca`: the cluster CA (build/<cluster>/pki/ca.crt)
    the API health checks verify the servers against. `backends` / `api_backends`: node ->
    (host, port) of its etcd client port / API server port as the host reaches it
    (default: the VMs' forwards on 127.0.0.1)."""
    backends = backends or {n.name: (HOST, n.etcd_port) for n in net.nodes}
    api_backends = api_backends or {n.name: (HOST, n.api_port) for n in net.nodes}
    lines = [
        f"# bakery local load balancer for {cluster}: etcd clients and the Kubernetes API -> the masters",
        "global",
        f"    stats socket {stats_socket} mode 600 level admin",
        "    maxconn 1024",
        "    # a reload (-sf) lets the old process finish its connections, for at most this long",
        "    hard-stop-after 15s",
        "",
        "defaults",
        "    mode tcp",
        "    timeout connect 2s",
        "    timeout client 1h",
        "    timeout server 1h",
        "    timeout check 2s",
        "    retries 3",
        "    option redispatch",
        "",
        "frontend etcd",
        f"    bind {HOST}:{net.lb_port}",
        f"    default_backend {ETCD_BACKEND}",
        "",
        "frontend kube-apiserver",
        f"    bind {HOST}:{net.api_lb_port}",
        f"    default_backend {API_BACKEND}",
        "",
        f"backend {ETCD_BACKEND}",
        "    balance roundrobin",
        "    option tcp-check",
        "    default-server inter 1s fall 2 rise 1",
    ]
    lines += [f"    server {name} {host}:{port} check" for name, (host, port) in backends.items()]
    lines += [
        "",
        f"backend {API_BACKEND}",
        "    balance roundrobin",
        "    option httpchk",
        "    http-check send meth GET uri /readyz",
        "    http-check expect status 200",
        f"    default-server inter 1s fall 2 rise 1 check-ssl verify required ca-file {ca}",
    ]
    # the chain is verified (a server the cluster CA did not sign is down); without SNI or
    # verifyhost HAProxy checks no name, as a VM's forward on 127.0.0.1 is in no certificate
    lines += [f"    server {name} {host}:{port} check" for name, (host, port) in api_backends.items()]
    return "\n".join(lines) + "\n"


def argv(cfg: Path, replaces: int | None = None) -> list[str]:
    """HAProxy in the foreground (-db): bakery records its PID and stops it by PID. With
    `replaces`, a seamless reload: the new process binds beside the old one (SO_REUSEPORT)
    and then tells it to stop listening and finish its connections (-sf)."""
    return ["haproxy", "-db", "-f", str(cfg), *(["-sf", str(replaces)] if replaces else [])]


def server_states(stats_socket: Path, timeout: float = 2.0, backend: str = ETCD_BACKEND) -> dict[str, str]:
    """`backend`'s server name -> HAProxy's status (UP, DOWN, "UP 1/2", MAINT, ...)."""
    return backend_states(stats_socket, timeout).get(backend, {})


def backend_states(stats_socket: Path, timeout: float = 2.0) -> dict[str, dict[str, str]]:
    """Every backend's server states (as `server_states`), from one `show stat`."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(stats_socket))
            s.sendall(b"show stat\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
    except OSError as e:
        raise ProviderError(f"HAProxy stats socket {stats_socket}: {e.strerror or e}") from None
    text = b"".join(chunks).decode().lstrip("# ")
    states: dict[str, dict[str, str]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        if row.get("pxname") in (ETCD_BACKEND, API_BACKEND) and row.get("svname") not in ("BACKEND", "FRONTEND"):
            states.setdefault(row["pxname"], {})[row["svname"]] = row["status"]
    return states
