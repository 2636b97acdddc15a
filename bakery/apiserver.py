"""The Kubernetes API as the operator's machine sees it: is it ready, through which address.

`GET /readyz` is answered anonymously (render/configs.py limits anonymous requests to the
health endpoints), so a probe needs the cluster CA and no credentials: nothing secret is
read or sent. The server is verified against the CA; a server the CA did not sign is "not
ready" with the TLS error as the detail, never trusted.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass(frozen=True)
class Ready:
    ok: bool
    detail: str  # "ok", the failing checks the API server listed, or the connection error

    def __bool__(self) -> bool:
        return self.ok


def readyz(endpoint: str, ca: Path, *, timeout: float = 3.0) -> Ready:
    """`endpoint` (https://host:port)'s /readyz, verified against `ca`."""
    try:
        context = ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError) as e:
        return Ready(False, f"cluster CA {ca}: {e}")
    r = _get(f"{endpoint}/readyz", context, timeout)
    if isinstance(r, Ready):
        return r
    if r.status_code == 200:
        return Ready(True, "ok")
    failed = [line.strip() for line in r.text.splitlines() if line.startswith("[-]")]
    return Ready(False, f"HTTP {r.status_code}" + (f": {', '.join(failed)}" if failed else ""))


def authorized(endpoint: str, ca: Path, cert: Path, key: Path, *, timeout: float = 3.0) -> Ready:
    """Can the identity in `cert` read the kube-system namespace through `endpoint`?

    ok: yes; otherwise the detail says why (403: the RBAC addon is not applied yet).
    """
    try:
        context = ssl.create_default_context(cafile=str(ca))
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as e:
        return Ready(False, f"client certificate {cert}: {type(e).__name__}")  # never the key's content
    r = _get(f"{endpoint}/api/v1/namespaces/kube-system", context, timeout)
    if isinstance(r, Ready):
        return r
    if r.status_code == 200:
        return Ready(True, "ok")
    if r.status_code == 403:
        return Ready(False, "HTTP 403: no rights yet (bakery's RBAC addon is applied by the masters' bakery-node-register)")
    return Ready(False, f"HTTP {r.status_code}")


def _get(url: str, context: ssl.SSLContext, timeout: float) -> httpx.Response | Ready:
    """The answer to GET `url`, or a not-ready Ready naming the connection's failure."""
    try:
        with httpx.Client(verify=context, timeout=timeout) as client:
            return client.get(url)
    except httpx.HTTPError as e:
        return Ready(False, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
