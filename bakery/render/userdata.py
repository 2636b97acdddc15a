"""Node files -> one #cloud-config document, encoded to fit the provider's limit.

Pure: the same files give the same bytes. gzip output is made deterministic by a
zero mtime and no file name in the header.
"""

from __future__ import annotations

import base64
import gzip
import io
from dataclasses import dataclass
from typing import Literal

from bakery.errors import Problem, RenderError

# Provider limits on one user-data value, in bytes, as the provider counts them.
# AWS: the user-data of RunInstances/launch templates, before AWS's own base64 (16 KB).
# GCE: one metadata value (256 KB); all metadata together may hold 512 KB.
LIMITS: dict[str, int] = {"aws": 16_384, "gcp": 262_144, "local": 262_144}

Encoding = Literal["plain", "gzip", "base64"]


@dataclass(frozen=True)
class UserData:
    """A node's user-data: the plain document, the bytes to send, and how they are encoded."""

    plain: bytes
    encoded: bytes
    encoding: Encoding
    limit: int

    @property
    def share(self) -> float:
        """Encoded size as a share of the limit (0.5 = half)."""
        return len(self.encoded) / self.limit


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return buf.getvalue()


def encode(plain: bytes, provider: str, *, node: str = "", sizes: dict[str, int] | None = None) -> UserData:
    """Choose the encoding that fits `provider`'s limit, or raise RenderError with a breakdown.

    AWS takes raw bytes (the SDK base64s them); cloud-init unpacks gzip itself, so the
    whole document is gzipped only when the plain one does not fit. GCE metadata values
    are text: when the plain document does not fit, it is gzipped and base64'd and the
    instance carries `user-data-encoding: base64` (cloud-init's GCE datasource decodes it).
    """
    limit = LIMITS[provider]
    if len(plain) <= limit:
        return UserData(plain, plain, "plain", limit)
    if provider == "aws":
        candidate = UserData(plain, gzip_bytes(plain), "gzip", limit)
    else:
        candidate = UserData(plain, base64.b64encode(gzip_bytes(plain)), "base64", limit)
    if len(candidate.encoded) <= limit:
        return candidate
    biggest = sorted((sizes or {}).items(), key=lambda kv: -kv[1])
    problems = [
        Problem(
            f"user-data is {len(candidate.encoded):,} bytes {candidate.encoding}-encoded "
            f"({len(plain):,} plain), over the {provider} limit of {limit:,} bytes",
            key=node or None,
        )
    ] + [Problem(f"{size:>8,} bytes  {path}", key=node or None) for path, size in biggest]
    raise RenderError(f"{node}: user-data over the {provider} limit", problems)


def decode(data: bytes, encoding: Encoding) -> bytes:
    """The inverse of encode(); tests and drift detection use it on what the cloud returns."""
    if encoding == "base64":
        data = base64.b64decode(data)
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    return data
