"""HAProxy on the host: the local cluster's load balancer over the masters' etcd client ports.

TCP mode (TLS passes through to etcd, which checks client certificates itself), a
TCP connect check per backend, `option redispatch` + `retries` so a dead member
costs a retry rather than a failed request (TESTING.md). The admin socket answers
`show stat` for `bakery status` and the tests.
"""

from __future__ import annotations

import csv
import io
import socket
from collections.abc import Mapping
from pathlib import Path

from bakery.errors import ProviderError
from bakery.providers.local.net import HOST, NetPlan


def config(cluster: str, net: NetPlan, stats_socket: Path, backends: Mapping[str, tuple[str, int]] | None = None) -> str:
    """haproxy.cfg for `cluster`. Pure. `backends`: node -> (host, port) of its etcd client
    port as the host reaches it (default: the VMs' forwards on 127.0.0.1)."""
    backends = backends or {n.name: (HOST, n.etcd_port) for n in net.nodes}
    lines = [
        f"# bakery local load balancer for {cluster}: etcd clients -> the masters' client ports",
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
        "    default_backend masters",
        "",
        "backend masters",
        "    balance roundrobin",
        "    option tcp-check",
        "    default-server inter 1s fall 2 rise 1",
    ]
    lines += [f"    server {name} {host}:{port} check" for name, (host, port) in backends.items()]
    return "\n".join(lines) + "\n"


def argv(cfg: Path, replaces: int | None = None) -> list[str]:
    """HAProxy in the foreground (-db): bakery records its PID and stops it by PID. With
    `replaces`, a seamless reload: the new process binds beside the old one (SO_REUSEPORT)
    and then tells it to stop listening and finish its connections (-sf)."""
    return ["haproxy", "-db", "-f", str(cfg), *(["-sf", str(replaces)] if replaces else [])]


def server_states(stats_socket: Path, timeout: float = 2.0) -> dict[str, str]:
    """Backend server name -> HAProxy's status (UP, DOWN, "UP 1/2", MAINT, ...)."""
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
    states = {}
    for row in csv.DictReader(io.StringIO(text)):
        if row.get("pxname") == "masters" and row.get("svname") not in ("BACKEND", "FRONTEND"):
            states[row["svname"]] = row["status"]
    return states
