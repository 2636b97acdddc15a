"""User-data encoding against each provider's limit."""

from __future__ import annotations

import base64
import gzip
import random

import pytest

from bakery.errors import RenderError
from bakery.render.userdata import LIMITS, decode, encode, gzip_bytes


def doc(size: int, *, compressible: bool = True) -> bytes:
    if compressible:
        body = b"write_files: []\n" * (size // 16 + 1)
    else:
        rng = random.Random(size)
        body = bytes(rng.choice(b"0123456789abcdef") for _ in range(size))
    return (b"#cloud-config\n" + body)[:size]


def test_plain_when_it_fits():
    ud = encode(doc(16_384), "aws")
    assert ud.encoding == "plain" and ud.encoded == ud.plain and ud.share == 1.0


def test_aws_gzips_the_whole_document_when_plain_does_not_fit():
    plain = doc(40_000)
    ud = encode(plain, "aws")
    assert ud.encoding == "gzip" and len(ud.encoded) <= LIMITS["aws"]
    assert gzip.decompress(ud.encoded) == plain == decode(ud.encoded, "gzip")


def test_gce_uses_base64_of_gzip_with_the_encoding_flag():
    plain = doc(300_000)
    ud = encode(plain, "gcp")
    assert ud.encoding == "base64" and len(ud.encoded) <= LIMITS["gcp"]
    assert gzip.decompress(base64.b64decode(ud.encoded)) == plain == decode(ud.encoded, "base64")


def test_gzip_is_deterministic():
    assert gzip_bytes(b"x" * 1000) == gzip_bytes(b"x" * 1000)
    assert gzip_bytes(b"x")[4:8] == b"\0\0\0\0", "mtime must be zero"


@pytest.mark.parametrize(("provider", "size"), [("aws", 30_000), ("gcp", 400_000)])
def test_over_the_limit_lists_each_file_largest_first(provider: str, size: int):
    with pytest.raises(RenderError) as e:
        encode(doc(size, compressible=False), provider, node="n0", sizes={"/a": 10, "/big": 9000, "/mid": 500})
    lines = e.value.lines()
    assert lines[0].startswith("n0: user-data is ") and f"over the {provider} limit of {LIMITS[provider]:,} bytes" in lines[0]
    assert [line.rsplit(" ", 1)[-1] for line in lines[1:]] == ["/big", "/mid", "/a"]
