"""`bakery bake`: stage a Packer folder per target, validate, build, record the image.

    for each target (the spec's provider, or --only):
        recipe   = stage.recipe(...)          files + content hash + image name (pure)
        skip when --if-changed and images.json has that hash
        write build/<cluster>/packer/<target>/ (output.write_tree)
        packer init (Packer >= 1.7) -> packer validate -> packer build -machine-readable
        images.json <- the artifact (only after Packer succeeded); manifest.json beside it

Every subprocess goes through one injectable Runner (packer.SubprocessRunner by default).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bakery import components, hosttools
from bakery.bake import images, machine, stage
from bakery.bake import packer as pk
from bakery.components import cache
from bakery.errors import BakeError, Problem
from bakery.output import atomic_write, write_tree
from bakery.providers.base import Progress, no_progress
from bakery.spec import ClusterSpec
from bakery.state import ClusterPaths

TARGETS = tuple(stage.SOURCES)
# What packer/scripts/local/*.sh run on this host (executable -> Debian package).
LOCAL_TOOLS = {"debootstrap": "debootstrap", "mkfs.ext4": "e2fsprogs", "qemu-img": "qemu-utils", "chroot": "coreutils"}


@dataclass
class TargetResult:
    target: str
    name: str
    hash: str
    status: str  # "built", "unchanged", "planned"
    record: dict[str, Any] | None = None
    argv: list[list[str]] = field(default_factory=list)


@dataclass(frozen=True)
class Options:
    only: Sequence[str] = ()
    if_changed: bool = False
    dry_run: bool = False
    packer: str = "packer"
    mirror: str | None = None  # default: the one apt uses on this machine
    templates: Path | None = None  # default: bakery's packer/ folder


def targets(spec: ClusterSpec, only: Sequence[str]) -> list[str]:
    """The targets to bake: --only (aliases resolved) or the spec's provider."""
    chosen = [stage.ALIASES.get(t, t) for t in only] or [spec.provider]
    for t in chosen:
        if t not in stage.SOURCES:
            raise BakeError(f"--only {t}: unknown target; choose from {', '.join([*TARGETS, *stage.ALIASES])}")
    return list(dict.fromkeys(chosen))


def staging_dir(paths: ClusterPaths, target: str) -> Path:
    return paths.base / "packer" / target


def local_image_dir(paths: ClusterPaths, name: str) -> Path:
    return paths.base / "images" / name


def unhashed_vars(spec: ClusterSpec, paths: ClusterPaths, rec: stage.Recipe, binaries: Mapping[str, Path] | None = None) -> dict[str, str]:
    """-var values that locate things but do not change the image (not in its hash)."""
    out = {"image_name": rec.name}
    if rec.target == "aws":
        from bakery.providers.aws.clients import endpoint_url

        endpoint = endpoint_url(spec.aws.endpoint_url if spec.aws else None)
        if endpoint:
            out["aws_endpoint"] = endpoint
    if rec.target == "local":
        out["local_binary_paths"] = json.dumps([str(p) for p in binaries.values()]) if binaries else "[]"
        out["local_output_dir"] = str(local_image_dir(paths, rec.name).resolve())
        out["local_work_dir"] = str((paths.base / "packer" / ".work").resolve())
    return out


def bake(
    spec: ClusterSpec,
    paths: ClusterPaths,
    opts: Options = Options(),
    *,
    runner: pk.Runner | None = None,
    progress: Progress = no_progress,
) -> list[TargetResult]:
    runner = runner or pk.SubprocessRunner()
    chosen = targets(spec, opts.only)
    if not opts.dry_run:
        # every host program the build runs, before anything is staged or started
        tools = {opts.packer: "packer", **(LOCAL_TOOLS if "local" in chosen else {})}
        hosttools.require(tools, "`bakery bake`" + (" of the local image" if "local" in chosen else ""), BakeError, target="bake")
    exe = pk.find(opts.packer)
    mirror = opts.mirror or stage.debian_mirror(stage.read_apt_sources())
    templates = opts.templates or stage.template_dir()
    binaries = _local_binaries(spec, opts, progress) if "local" in chosen else {}
    sums = {c: cache.sha256(p) for c, p in binaries.items()}
    with _env() as env:
        version = _packer_version(exe, runner, env)
        return [_bake_one(spec, paths, opts, stage.recipe(spec, t, mirror, templates, version, sums), exe, version, runner, env,
                          progress, binaries if t == "local" else {})
                for t in chosen]


def _local_binaries(spec: ClusterSpec, opts: Options, progress: Progress) -> dict[str, Path]:
    """The real programs of the spec's versions for the local image: obtained (built or
    downloaded once per machine) for a bake; only looked up for a dry run."""
    k8s, etcd = spec.kubernetes_version, spec.etcd_version
    if opts.dry_run:
        found = components.cached(stage.LOCAL_BINARIES, k8s, etcd)
        missing = [c for c, p in found.items() if p is None]
        if missing:
            raise BakeError(f"the local image carries {', '.join(missing)} of Kubernetes {k8s} / etcd {etcd}, which this "
                            f"machine's cache does not hold yet: `bakery binaries -f <spec>` builds or downloads them")
        return {c: p for c, p in found.items() if p is not None}
    return components.obtain(stage.LOCAL_BINARIES, k8s, etcd, progress=lambda line: progress("binaries", "obtaining", line.strip()))


def _bake_one(
    spec: ClusterSpec, paths: ClusterPaths, opts: Options, rec: stage.Recipe, exe: str,
    version: tuple[int, int, int], runner: pk.Runner, env: Mapping[str, str], progress: Progress,
    binaries: Mapping[str, Path],
) -> TargetResult:
    step = f"image {rec.target}"
    folder = staging_dir(paths, rec.target).resolve()
    var = unhashed_vars(spec, paths, rec, binaries)
    argv = [pk.validate_argv(exe, folder, rec.source, var), pk.build_argv(exe, folder, rec.source, var)]
    if pk.supports_required_plugins(version):
        argv.insert(0, pk.init_argv(exe, folder))
    result = TargetResult(rec.target, rec.name, rec.hash, "planned", argv=argv)
    known = images.find(images.load(paths.images, spec.name), rec.target, rec.hash)
    if opts.if_changed and known is not None:
        progress(step, "unchanged", rec.name)
        result.status, result.record = "unchanged", known
        return result
    if opts.dry_run:
        progress(step, "planned", rec.name)
        return result

    write_tree(folder, rec.files)
    progress(step, "validating", rec.name)
    for cmd in argv[:-1]:
        _run(runner, cmd, folder, env, progress, step, what=cmd[1])
    progress(step, "building", rec.name)
    started = time.time()
    try:
        out = _run(runner, argv[-1], folder, env, progress, step, what="build")
    except BaseException:
        if rec.target == "local":
            with contextlib.suppress(BakeError):  # the first error is the one to report
                _remove_work(Path(var["local_work_dir"]))
        raise
    if rec.target == "local":
        _remove_work(Path(var["local_work_dir"]))
    record = _record(spec, rec, version, out, var, started)
    manifest = folder / "manifest.json"
    if manifest.is_file():
        atomic_write(paths.base / f"manifest-{rec.target}.json", manifest.read_bytes())
    images.record(paths.images, spec.name, record)
    progress(step, "built", rec.name)
    result.status, result.record = "built", record
    return result


def _run(
    runner: pk.Runner, argv: list[str], folder: Path, env: Mapping[str, str], progress: Progress, step: str, what: str
) -> machine.Output:
    parser = machine.Parser()

    def on_line(raw: str) -> None:
        line = parser.feed(raw)
        text = machine.ui_text(line) if line else None
        if text and text.strip():
            progress(step, what, text.strip().splitlines()[0][:160])

    res = runner(argv, cwd=folder, env=env, on_line=on_line)
    # Packer's whole output stays beside the staged build, for the reader of a failure.
    atomic_write(folder / f"packer-{what}.log", "".join(f"{line}\n" for line in res.lines))
    if res.returncode != 0:
        headline = f"packer {what} failed (exit {res.returncode}); its whole output: {folder / f'packer-{what}.log'}"
        lines = _error_lines(parser.output, res.lines)
        raise BakeError(headline, [Problem(headline), *(Problem(f"packer: {line.strip()}") for line in lines)])
    return parser.output


def _error_lines(out: machine.Output, raw: Sequence[str]) -> list[str]:
    """Packer's own words: per-build errors, else `ui,error` lines, else its plain output."""
    lines = [f"{build}: {msg}" for build, msgs in out.errors.items() for msg in msgs]
    if not lines:
        lines = [ln for e in out.error_lines for ln in e.splitlines() if ln.strip()]
    if not lines:
        lines = [ln for ui in out.ui_lines if "rror" in ui for ln in ui.splitlines() if ln.strip()]
    if not lines:
        lines = [ln for ln in raw if ln.strip()][-20:]
    return lines or ["packer printed nothing"]


def _record(
    spec: ClusterSpec, rec: stage.Recipe, version: tuple[int, int, int],
    out: machine.Output, var: Mapping[str, str], started: float,
) -> dict[str, Any]:
    # Artifact 0 is the builder's; later ones are post-processors' (manifest repeats it).
    arts = sorted(out.artifacts_of(rec.source), key=lambda a: a.index)
    if not arts:
        raise BakeError(f"packer build of {rec.source} reported no artifact; images.json left as it was")
    record: dict[str, Any] = {
        "target": rec.target, "name": rec.name, "hash": rec.hash,
        "kubernetes_version": spec.kubernetes_version.lstrip("v"), "etcd_version": spec.etcd_version.lstrip("v"),
        "packer_version": ".".join(map(str, version)),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(time.time() - started, 1),
    }
    art = arts[0]
    if rec.target == "aws":
        record["amis"] = machine.amis(art)
        record["region"] = rec.variables["aws_region"]
        record["image"] = record["amis"].get(record["region"])
        if not record["image"]:
            raise BakeError(f"packer's amazon-ebs artifact {art.id!r} names no AMI in {record['region']}; images.json left as it was")
    elif rec.target == "gcp":
        record["image"] = art.id
        record["project"] = rec.variables["gcp_project"]
    else:
        out_dir = Path(var["local_output_dir"])
        files = {"disk": out_dir / "disk.qcow2", "kernel": out_dir / "vmlinuz", "initrd": out_dir / "initrd.img"}
        missing = [str(p) for p in files.values() if not p.is_file()]
        # The unpacked root the container runtime boots (an overlayfs lower layer).
        files["root"] = out_dir / "root"
        if not (files["root"] / "sbin" / "init").exists():
            missing.append(str(files["root"]))
        if missing:
            raise BakeError(f"packer finished but the local image is incomplete (missing {', '.join(missing)})")
        record.update({k: str(p) for k, p in files.items()})
        record["format"] = "qcow2"
    return record


def _remove_work(work: Path) -> None:
    """Drop the local build's scratch root, unless something is still mounted in it
    (debootstrap mounts /proc and /sys; its script unmounts them on every exit)."""
    if not work.exists():
        return
    mounts = Path("/proc/self/mounts").read_text().split("\n")
    inside = [m.split()[1] for m in mounts if len(m.split()) > 1 and m.split()[1].startswith(str(work) + "/")]
    if inside:
        raise BakeError(f"{work}: still mounted ({', '.join(inside)}); unmount them, then remove the folder")
    shutil.rmtree(work)


def _packer_version(exe: str, runner: pk.Runner, env: Mapping[str, str]) -> tuple[int, int, int]:
    res = runner(pk.version_argv(exe), cwd=Path.cwd(), env=env, on_line=lambda _line: None)
    if res.returncode != 0:
        raise BakeError(f"`{exe} version` failed (exit {res.returncode}): {' '.join(res.lines)[:200]}")
    return pk.parse_version("\n".join(res.lines))


@contextlib.contextmanager
def _env() -> Iterator[dict[str, str]]:
    """Packer's environment: a private, short TMPDIR (Packer puts its plugins' unix sockets
    there, and a socket path over 108 bytes crashes Packer 1.6), removed afterwards with the
    packer-log files it collects; no colours, no checkpoint calls home."""
    tmp = tempfile.mkdtemp(prefix="bakery-packer-")
    try:
        yield {**os.environ, "TMPDIR": tmp, "PACKER_NO_COLOR": "1", "CHECKPOINT_DISABLE": "1",
               "PACKER_CACHE_DIR": str(Path(tmp) / "cache")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def describe(results: Sequence[TargetResult]) -> str:
    """A JSON summary of a bake (for --dry-run and scripts)."""
    return json.dumps([{"target": r.target, "name": r.name, "hash": r.hash, "status": r.status,
                        "argv": r.argv, "record": r.record} for r in results], indent=2)
