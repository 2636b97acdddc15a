"""What goes into an image: the staged Packer folder, its variables and its content hash.

Pure functions over data: `inputs(...)` lists every file of a build (templates,
scripts, shipped files, the generated variables file) as (path, bytes, mode); `content_hash`
digests them; `image_name` puts the Kubernetes version and the hash into the name.
Writing the folder is output.write_tree's job.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bakery
from bakery.render.templates import data_dir
from bakery.spec import AwsSpec, ClusterSpec, GcpSpec

# bakery's target name -> the Packer source that builds it (packer/*.pkr.hcl)
# What runs inside the local image, from bakery's own sources.
IMAGE_ENTRIES = ("podmaster", "node.main")
CLOUD_LIB = "work/bakery-lib"  # build.pkr.hcl: where the cloud builds' shell-local puts bakery-node's modules

SOURCES: dict[str, str] = {"aws": "amazon-ebs.bakery", "gcp": "googlecompute.bakery", "local": "null.local"}
ALIASES: dict[str, str] = {"qemu": "local"}

CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-scheduler", "kube-controller-manager", "pause", "podmaster")
# The real programs the local image runs (runtime: systemd), from bakery/components' cache;
# scripts/local/configure.sh installs them into /usr/local/bin and checks their sums.
LOCAL_BINARIES = ("etcd", "etcdctl", "etcdutl", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
VARS_FILE = "bakery.auto.pkrvars.hcl"
PLUGINS_FILE = "plugins/required_plugins.pkr.hcl"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

File = tuple[str, bytes, int]


@dataclass(frozen=True)
class Recipe:
    """One target's build: its staged files, content hash and image name."""

    target: str
    source: str
    files: tuple[File, ...]
    hash: str
    name: str
    variables: Mapping[str, Any]


def template_dir() -> Path:
    """packer/ of a checkout, or the copy a wheel carries in bakery/_data/packer."""
    here = Path(bakery.__file__).resolve().parent
    for candidate in (here / "_data" / "packer", here.parent / "packer"):
        if (candidate / "build.pkr.hcl").is_file():
            return candidate
    raise FileNotFoundError(f"bakery's Packer templates are missing (looked in {here / '_data/packer'} and {here.parent / 'packer'})")


def _tree(root: Path, prefix: str, skip: Iterable[str] = ()) -> list[File]:
    skip = set(skip)
    out: list[File] = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if not p.is_file() or "__pycache__" in p.parts or p.suffix == ".pyc" or rel.split("/")[0] in skip:
            continue
        out.append((f"{prefix}{rel}", p.read_bytes(), 0o755 if p.stat().st_mode & 0o111 else 0o644))
    return out


def debian_mirror(apt_sources: Mapping[str, str], suite: str = "bookworm") -> str:
    """The Debian mirror apt uses here, from sources.list texts (one-line and deb822 forms).

    `apt_sources` maps file name -> text (/etc/apt/sources.list and sources.list.d/*).
    Falls back to deb.debian.org when none lists `suite`.
    """
    for name in sorted(apt_sources):
        text = apt_sources[name]
        if name.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = _deb822(stanza)
                if suite in fields.get("Suites", "").split() and "deb" in fields.get("Types", "").split():
                    uris = fields.get("URIs", "").split()
                    if uris:
                        return uris[0].rstrip("/")
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                    return words[1].rstrip("/")
    return DEFAULT_MIRROR


def _deb822(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in stanza.splitlines():
        if line.startswith("#") or ":" not in line or line[:1].isspace():
            continue
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def read_apt_sources(etc_apt: Path = Path("/etc/apt")) -> dict[str, str]:
    files = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list")),
             *sorted((etc_apt / "sources.list.d").glob("*.sources"))]
    return {p.name: p.read_text(errors="replace") for p in files if p.is_file()}


def variables(spec: ClusterSpec, target: str, mirror: str, binary_sums: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The content-hashed Packer variables of `target`, from the spec (and, for the local
    image, the sha256 of each binary it carries: a new build is a new image)."""
    common: dict[str, Any] = {
        "kubernetes_version": spec.kubernetes_version.lstrip("v"),
        "etcd_version": spec.etcd_version.lstrip("v"),
    }
    if target == "local":
        sums = binary_sums or {}
        return {**common, "debian_mirror": mirror, "local_binaries": [f"{sums[c]}  {c}" for c in LOCAL_BINARIES if c in sums]}
    common["control_plane_images"] = [spec.image_ref(c) for c in CONTROL_PLANE]
    if target == "aws":
        return {**common, "aws_region": (spec.aws or AwsSpec()).region}
    gcp = spec.gcp or GcpSpec()
    return {**common, "gcp_project": gcp.project, "gcp_zone": gcp.zones[0].name}


def hcl_vars(values: Mapping[str, Any]) -> str:
    """A .pkrvars.hcl file. JSON strings and lists are HCL; `${` and `%{` are escaped."""
    lines = ["# Written by `bakery bake`; part of the image's content hash.\n"]
    for name in sorted(values):
        text = json.dumps(values[name]).replace("${", "$${").replace("%{", "%%{")
        lines.append(f"{name} = {text}\n")
    return "".join(lines)


def inputs(target: str, values: Mapping[str, Any], templates: Path, packer_version: tuple[int, int, int]) -> list[File]:
    """Every file of `target`'s staged build folder, sorted by path."""
    files = _tree(templates, "", skip={"plugins"})
    if packer_version >= (1, 7, 0):
        files.append((PLUGINS_FILE.split("/")[-1], (templates / PLUGINS_FILE).read_bytes(), 0o644))
    # bakery-podmaster and bakery-node run from these sources inside every image
    # (scripts/bakery.sh); the node agent renders with the templates `bakery render` uses.
    package = Path(bakery.__file__).resolve().parent
    files += [(f"files/bakery/{m}", (package / m).read_bytes(), 0o644) for m in shipped_modules(package, IMAGE_ENTRIES)]
    cloudinit = data_dir("cloudinit")
    files += [(f"files/bakery/_data/cloudinit/{rel}", data, mode) for rel, data, mode in _tree(cloudinit, "")]
    if target != "local":
        # `packer validate` wants the file provisioner's sources to exist; scripts/lib.sh
        # replaces this folder with the modules it fetches before the upload
        files.append((f"{CLOUD_LIB}/.filled-by-lib.sh", b"", 0o644))
    files.append((VARS_FILE, hcl_vars(values).encode(), 0o644))
    return sorted(files)


def shipped_modules(package: Path, entries: Sequence[str]) -> list[str]:
    """bakery's module files (relative paths) that the `entries` modules import, directly
    or not, with the packages' __init__.py files on the way, so the local image, and its
    hash, follow only the code that runs in it."""
    todo, seen = list(entries), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        for i in range(1, len(parts)):
            todo.append(".".join(parts[:i]))  # parent packages run their __init__
        rel = _module_file(package, parts)
        tree = ast.parse((package / rel).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bakery"):
                base = node.module.removeprefix("bakery").lstrip(".")
                if base:
                    todo.append(base)
                for a in node.names:  # `from bakery.x import y` where y is a module
                    sub = f"{base}.{a.name}" if base else a.name
                    if _module_file(package, sub.split("."), must=False):
                        todo.append(sub)
            elif isinstance(node, ast.Import):
                todo += [a.name.removeprefix("bakery.") for a in node.names if a.name.startswith("bakery.")]
    files = {_module_file(package, n.split(".")) for n in seen} | {"__init__.py"}
    return sorted(files)


def _module_file(package: Path, parts: Sequence[str], *, must: bool = True) -> str:
    as_package = "/".join(parts) + "/__init__.py"
    as_module = "/".join(parts) + ".py"
    for rel in (as_package, as_module):
        if (package / rel).is_file():
            return rel
    if must:
        raise FileNotFoundError(f"bakery module {'.'.join(parts)} not found under {package}")
    return ""


def content_hash(files: Iterable[File], packer_version: tuple[int, int, int]) -> str:
    """sha256 over every path, mode and content, and the Packer version."""
    h = hashlib.sha256()
    h.update(f"packer {'.'.join(map(str, packer_version))}\n".encode())
    for path, data, mode in sorted(files):
        h.update(f"{path}\0{mode:o}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def image_name(kubernetes_version: str, digest: str) -> str:
    """bakery-k8s-1-31-4-<12 hex>: valid as an AMI name and a GCE image name."""
    return f"bakery-k8s-{kubernetes_version.lstrip('v').replace('.', '-')}-{digest[:12]}"


def recipe(spec: ClusterSpec, target: str, mirror: str, templates: Path, packer_version: tuple[int, int, int],
           binary_sums: Mapping[str, str] | None = None) -> Recipe:
    values = variables(spec, target, mirror, binary_sums)
    files = tuple(inputs(target, values, templates, packer_version))
    digest = content_hash(files, packer_version)
    return Recipe(target, SOURCES[target], files, digest, image_name(spec.kubernetes_version, digest), values)
