"""build/<cluster>/images.json: every image bakery built for a cluster, newest last.

    {"version": 1, "cluster": "demo",
     "current": {"local": {...record}, "aws": {...}},   # what `up` boots
     "images":  [{...record}, ...]}                      # history, for `images list/prune`

A record: target, name, hash, kubernetes_version, etcd_version, packer_version, built_at,
and per target `amis` ({region: ami id}), `image` + `project` (GCE), or `disk`, `kernel`,
`initrd` (local, absolute paths). Written atomically through bakery.output, and only
after a build succeeded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bakery.errors import BakeError
from bakery.output import atomic_write_json

VERSION = 1


def load(path: Path, cluster: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"version": VERSION, "cluster": cluster, "current": {}, "images": []}
    except (OSError, json.JSONDecodeError) as e:
        raise BakeError(f"{path}: unreadable ({e}); move it aside and bake again") from None
    if not isinstance(data, dict) or data.get("cluster") != cluster:
        raise BakeError(f"{path}: belongs to cluster {data.get('cluster')!r}, not {cluster!r}")
    data.setdefault("current", {})
    data.setdefault("images", [])
    return data


def find(data: dict[str, Any], target: str, digest: str) -> dict[str, Any] | None:
    """The recorded image of `target` built from inputs with this hash, if any."""
    for rec in reversed(data["images"]):
        if rec.get("target") == target and rec.get("hash") == digest:
            return rec
    return None


def current(path: Path, cluster: str, target: str) -> dict[str, Any] | None:
    """The image `up` should boot for `target` (e.g. "local": disk, kernel, initrd)."""
    return load(path, cluster)["current"].get(target)


def record(path: Path, cluster: str, rec: dict[str, Any]) -> dict[str, Any]:
    """Add a built image and make it current for its target; returns the new document."""
    data = load(path, cluster)
    data["images"] = [r for r in data["images"] if not (r.get("target") == rec["target"] and r.get("name") == rec["name"])]
    data["images"].append(rec)
    data["current"][rec["target"]] = rec
    atomic_write_json(path, data)
    return data


def prune_plan(data: dict[str, Any], keep: int) -> list[dict[str, Any]]:
    """Records to drop: all but the newest `keep` per target, never a current one."""
    if keep < 1:
        raise BakeError(f"--keep {keep}: keep at least the current image (1)")
    drop: list[dict[str, Any]] = []
    for target in sorted({r["target"] for r in data["images"]}):
        mine = [r for r in data["images"] if r["target"] == target]
        cur = data["current"].get(target, {}).get("name")
        drop += [r for r in mine[: max(0, len(mine) - keep)] if r["name"] != cur]
    return drop


def prune(path: Path, cluster: str, keep: int) -> list[dict[str, Any]]:
    """Forget old images and delete the local ones' files. Cloud images (AMIs, GCE images)
    are dropped from the record and returned so the caller can name them for deletion."""
    data = load(path, cluster)
    drop = prune_plan(data, keep)
    names = {(r["target"], r["name"]) for r in drop}
    data["images"] = [r for r in data["images"] if (r["target"], r["name"]) not in names]
    atomic_write_json(path, data)
    for rec in drop:
        if rec["target"] == "local" and rec.get("disk"):
            shutil.rmtree(Path(rec["disk"]).parent, ignore_errors=True)
    return drop
