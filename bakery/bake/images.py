"""build/<cluster>/images.json: every image bakery built for a cluster, newest last.

    {"version": 1, "cluster": "demo",
     "local": {...record}, "aws": {...record}, "gcp": {...record},   # what `up` boots, per target
     "images": [{...record}, ...]}                                    # history, for `images list/prune`

A record: target, name, hash, kubernetes_version, etcd_version, packer_version, built_at,
and per target: aws `image` (the AMI in the build region), `region`, `amis` ({region: ami
id} with the copies); gcp `image` + `project`; local `disk`, `kernel`, `initrd` (absolute
paths). Written atomically through bakery.output (old document or new, never a mix),
only after a build succeeded, and read-modify-written under a lock so two bakes of
different targets do not drop each other's record.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bakery.errors import BakeError
from bakery.output import atomic_write_json, locked

VERSION = 1


def load(path: Path, cluster: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"version": VERSION, "cluster": cluster, "images": []}
    except (OSError, json.JSONDecodeError) as e:
        raise BakeError(f"{path}: unreadable ({e}); move it aside and bake again") from None
    if not isinstance(data, dict) or data.get("cluster") != cluster:
        raise BakeError(f"{path}: belongs to cluster {data.get('cluster')!r}, not {cluster!r}")
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
    return load(path, cluster).get(target)


def record(path: Path, cluster: str, rec: dict[str, Any]) -> dict[str, Any]:
    """Add a built image and make it current for its target; returns the new document."""
    with locked(path):
        data = load(path, cluster)
        data["images"] = [r for r in data["images"] if not (r.get("target") == rec["target"] and r.get("name") == rec["name"])]
        data["images"].append(rec)
        data[rec["target"]] = rec
        atomic_write_json(path, data)
    return data


def prune_plan(data: dict[str, Any], keep: int) -> list[dict[str, Any]]:
    """Records to drop: all but the newest `keep` per target, never a current one."""
    if keep < 1:
        raise BakeError(f"--keep {keep}: keep at least the current image (1)")
    drop: list[dict[str, Any]] = []
    for target in sorted({r["target"] for r in data["images"]}):
        mine = [r for r in data["images"] if r["target"] == target]
        cur = (data.get(target) or {}).get("name")
        drop += [r for r in mine[: max(0, len(mine) - keep)] if r["name"] != cur]
    return drop


def prune(path: Path, cluster: str, keep: int, delete: Callable[[dict[str, Any]], list[str]]) -> list[tuple[dict[str, Any], list[str]]]:
    """Delete old images (`delete(record)` removes the AMIs, GCE image or local folder) and
    forget each one only once its deletion succeeded, rewriting images.json every time:
    an error part-way leaves the not-yet-deleted images recorded. Returns (record, deleted)."""
    done: list[tuple[dict[str, Any], list[str]]] = []
    for rec in prune_plan(load(path, cluster), keep):
        deleted = delete(rec)
        with locked(path):
            data = load(path, cluster)
            data["images"] = [r for r in data["images"] if (r["target"], r["name"]) != (rec["target"], rec["name"])]
            atomic_write_json(path, data)
        done.append((rec, deleted))
    return done
