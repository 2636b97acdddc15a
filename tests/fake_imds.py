"""A fake EC2 instance metadata service (IMDSv2) for one instance, on loopback.

It answers as IMDS does with HttpTokens required (the launch template's setting): a
session token from `PUT /latest/api/token` (the TTL header must be 1-21600, else 400),
401 for a GET without a valid token, 404 for what this instance does not have. The
target lifecycle state comes from the test's Auto Scaling side (tests/moto_server.py
Lifecycle): `InService`, `Terminated` while the group waits on its termination hook, 404
when the instance is in no group.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

from tests.fake_http import serving

TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"


@contextmanager
def imds(instance_id: str, lifecycle_state: Callable[[str], str | None]) -> Iterator[str]:
    """Serve instance `instance_id`'s metadata; yields the base URL."""
    tokens: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, code: int, body: str = "") -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self) -> None:
            if self.path != "/latest/api/token":
                return self._send(404)
            ttl = self.headers.get(TTL_HEADER, "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                return self._send(400)
            token = secrets.token_urlsafe(16)
            tokens.add(token)
            return self._send(200, token)

        def do_GET(self) -> None:
            if self.headers.get(TOKEN_HEADER) not in tokens:
                return self._send(401)
            meta = {"/latest/meta-data/instance-id": instance_id}
            state = lifecycle_state(instance_id)
            if state:
                meta["/latest/meta-data/autoscaling/target-lifecycle-state"] = state
            if self.path not in meta:
                return self._send(404)
            return self._send(200, meta[self.path])

    with serving(Handler) as server:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}"
