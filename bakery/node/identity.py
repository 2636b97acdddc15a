"""Who this instance is, from cloud-init's own /run/cloud-init/instance-data.json.

The standardized `v1` keys give the instance id, hostname and zone on every
datasource. The private address is not a v1 key: EC2 reports it in the crawled
metadata (`ds.meta-data.local-ipv4`), NoCloud in the seed's meta-data
(`ds.meta_data.local-ipv4`, which bakery writes); GCE's cloud-init crawls no address,
so there the agent asks the kernel which local address routes to the cluster subnet
(`source_address_towards`, no packet sent).
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bakery.errors import NodeError

INSTANCE_DATA = Path("/run/cloud-init/instance-data.json")
MAX_INSTANCE_DATA = 4 * 1024 * 1024


@dataclass(frozen=True)
class Identity:
    instance_id: str
    hostname: str
    zone: str
    cloud: str
    address: str | None  # None: not in instance-data (GCE); resolved by routing


def read_capped(path: Path, limit: int, what: str) -> bytes:
    """The bytes of a local file the agent reads at boot, at most `limit` of them; one
    NodeError line naming the file and `what` it should have been otherwise."""
    try:
        with path.open("rb") as f:
            raw = f.read(limit + 1)
    except OSError as e:
        raise NodeError(f"{path}: cannot read {what}: {e.strerror}") from None
    if len(raw) > limit:
        raise NodeError(f"{path}: larger than {limit} bytes; not {what}")
    return raw


def load(path: str | Path = INSTANCE_DATA) -> Identity:
    path = Path(path)
    raw = read_capped(path, MAX_INSTANCE_DATA, "cloud-init's instance data")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise NodeError(f"{path}: not JSON ({e})") from None
    return parse(data, str(path))


def parse(data: Any, where: str = "instance-data") -> Identity:
    if not isinstance(data, dict) or not isinstance(data.get("v1"), dict):
        raise NodeError(f"{where}: no 'v1' object (is this cloud-init's instance-data.json?)")
    v1 = data["v1"]

    def need(key: str) -> str:
        value = v1.get(key) or v1.get(key.replace("_", "-"))
        if not isinstance(value, str) or not value:
            raise NodeError(f"{where}: v1.{key} is missing or empty")
        return value

    instance_id = need("instance_id")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", instance_id):
        raise NodeError(f"{where}: v1.instance_id {instance_id!r:.80} is not an instance id")
    hostname = need("local_hostname").split(".")[0].lower()
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", hostname):
        raise NodeError(f"{where}: v1.local_hostname {hostname!r:.80} is not a DNS label")
    # GCE reports projects/<n>/zones/<zone>; EC2 and NoCloud the bare zone name.
    zone = (v1.get("availability_zone") or v1.get("availability-zone") or "local").rsplit("/", 1)[-1]
    cloud = v1.get("cloud_name") or v1.get("cloud-name") or "unknown"
    return Identity(instance_id, hostname, zone, str(cloud), _address(data.get("ds"), where))


def _address(ds: Any, where: str) -> str | None:
    if not isinstance(ds, dict):
        return None
    for section in ("meta-data", "meta_data"):
        meta = ds.get(section)
        if isinstance(meta, dict):
            value = meta.get("local-ipv4") or meta.get("local_ipv4")
            if value is not None:
                try:
                    return str(ipaddress.IPv4Address(str(value)))
                except ValueError:
                    raise NodeError(f"{where}: ds.{section}.local-ipv4 {value!r:.40} is not an IPv4 address") from None
    return None


def source_address_towards(target: str) -> str:
    """The local address the kernel would use to reach `target` (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((target, 9))
        except OSError as e:
            raise NodeError(f"no route from this instance to {target}: {e.strerror}") from None
        return s.getsockname()[0]
