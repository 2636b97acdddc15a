"""Build Kubernetes and etcd from the Go modules their projects publish.

`go install k8s.io/kubernetes/cmd/kube-apiserver@v1.37.2` is refused: k8s.io/kubernetes'
go.mod replaces its staging modules (k8s.io/api, k8s.io/client-go, ...) with folders of
its own tree. So bakery writes a small wrapper module that requires k8s.io/kubernetes at the
release and replaces every staging module with the same release's published version
(v0.37.2 for v1.37.2), then runs `go build` for the commands. etcd the same way: one
wrapper requiring go.etcd.io/etcd/{server,etcdctl,etcdutl}/v3 at one tag, and a
three-line main for `etcd` itself (its main package sits in the repository's root
module, which also has replace directives).

Static binaries (CGO_ENABLED=0, -trimpath), stamped with their version as the projects'
own release builds stamp it (k8s.io/component-base/version, via -ldflags -X). The module
system verifies every module against go.sum and the checksum database. The wrapper and
the full log stay in <cache>/src/ and <cache>/logs/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from bakery.errors import ComponentError

Progress = Callable[[str], None]
LOG_TAIL = 15  # lines of a failed build shown in the error
# A go command that prints nothing for this long is reported as still working.
HEARTBEAT_SECS = 30.0

KUBERNETES_CMDS = {c: f"k8s.io/kubernetes/cmd/{c}" for c in
                   ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl")}
ETCD_CMDS = {"etcd": "bakery.local/etcd-build/etcd", "etcdctl": "go.etcd.io/etcd/etcdctl/v3",
             "etcdutl": "go.etcd.io/etcd/etcdutl/v3"}

ETCD_MAIN = """\
// etcd's main, as the etcd repository's root main.go has it: the server's own entry point.
package main

import (
\t"os"

\t"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
\tetcdmain.Main(os.Args)
}
"""


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(CGO_ENABLED="0", GOWORK="off", GOFLAGS="-mod=mod")
    env.setdefault("GOTOOLCHAIN", "local")
    return env


def go_version(env: Mapping[str, str]) -> tuple[int, int, int]:
    """The toolchain's version; ComponentError when there is no usable `go`."""
    exe = shutil.which("go", path=env.get("PATH"))
    if exe is None:
        raise ComponentError("building from the Go modules needs the Go toolchain, and `go` is not on PATH: install Go "
                             "(https://go.dev/doc/install), or choose the official release downloads with "
                             "--source release (BAKERY_BINARIES=release)")
    try:
        out = subprocess.run([exe, "env", "GOVERSION"], capture_output=True, text=True, env=dict(env), timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ComponentError(f"`go env GOVERSION` failed: {e}") from None
    m = re.match(r"go(\d+)\.(\d+)(?:\.(\d+))?", out.stdout.strip())
    if out.returncode != 0 or not m:
        raise ComponentError(f"`go env GOVERSION` failed: {(out.stderr or out.stdout).strip()[-300:]}")
    return int(m[1]), int(m[2]), int(m[3] or 0)


def _run(argv: Sequence[str], cwd: Path, env: Mapping[str, str], log: Path, progress: Progress, what: str,
         timeout: float) -> None:
    """Run a go command, appending its output to `log`; progress every package or heartbeat."""
    started = time.monotonic()
    last = started
    with log.open("a") as f:
        f.write(f"$ {' '.join(argv)}\n")
        f.flush()
        proc = subprocess.Popen(argv, cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        count = 0
        try:
            for line in proc.stdout:
                f.write(line)
                count += 1
                now = time.monotonic()
                if now - started > timeout:
                    proc.kill()
                    raise ComponentError(f"{what} took longer than {timeout:.0f} s and was stopped; full log: {log}")
                if now - last >= HEARTBEAT_SECS:
                    progress(f"  {what}: {count} packages/modules so far, {now - started:.0f} s")
                    last = now
            rc = proc.wait(timeout=max(1.0, timeout - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            proc.kill()
            raise ComponentError(f"{what} took longer than {timeout:.0f} s and was stopped; full log: {log}") from None
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL:]
        raise ComponentError(f"{what} failed (exit {rc}); last lines:\n  " + "\n  ".join(tail) + f"\nfull log: {log}")
    progress(f"  {what}: done in {time.monotonic() - started:.0f} s")


def _module_info(module: str, version: str, cwd: Path, env: Mapping[str, str], log: Path) -> dict[str, str]:
    """`go mod download -json` of one module: its go.mod path, or why the proxy has no such version."""
    out = subprocess.run(["go", "mod", "download", "-json", f"{module}@v{version}"], cwd=cwd, env=dict(env),
                         capture_output=True, text=True, timeout=900)
    with log.open("a") as f:
        f.write(f"$ go mod download -json {module}@v{version}\n{out.stdout}{out.stderr}")
    try:
        info = json.loads(out.stdout or "{}")
    except json.JSONDecodeError:
        info = {}
    if out.returncode != 0 or info.get("Error") or not info.get("GoMod"):
        why = info.get("Error") or out.stderr.strip()[-400:] or "no go.mod returned"
        raise ComponentError(f"the Go module proxy has no {module}@v{version}: {why}")
    return info


def _needs_go(gomod: str) -> tuple[int, int, int]:
    m = re.search(r"^go (\d+)\.(\d+)(?:\.(\d+))?\s*$", gomod, re.M)
    return (int(m[1]), int(m[2]), int(m[3] or 0)) if m else (0, 0, 0)


def _check_toolchain(have: tuple[int, int, int], need: tuple[int, int, int], what: str) -> None:
    if have < need:
        h, n = ".".join(map(str, have)), ".".join(map(str, need))
        raise ComponentError(f"{what} needs Go {n} or newer and this machine's go is {h}: install a newer Go, or set "
                             f"GOTOOLCHAIN=go{n} to let the go command fetch that toolchain from the module proxy")


def kubernetes_wrapper(version: str, kubernetes_gomod: str) -> str:
    """go.mod of the wrapper module: k8s.io/kubernetes at `version`, every staging module
    it replaces with a local folder pinned to the same release (v0.<minor>.<patch>)."""
    staging = re.findall(r"^\s*(k8s\.io/[A-Za-z0-9._-]+)\s+=>\s+\./staging/", kubernetes_gomod, re.M)
    if not staging:
        raise ComponentError(f"k8s.io/kubernetes v{version}'s go.mod replaces no staging modules: not a layout bakery knows")
    _, minor, patch = version.split(".")
    pinned = f"v0.{minor}.{patch}"
    go = ".".join(map(str, _needs_go(kubernetes_gomod))) or "1.22"
    lines = ["module bakery.local/kubernetes-build", "", f"go {go}", "", f"require k8s.io/kubernetes v{version}", "",
             "replace ("]
    lines += [f"\t{m} => {m} {pinned}" for m in sorted(set(staging))]
    lines += [")", ""]
    return "\n".join(lines)


def _tools_go(packages: Sequence[str]) -> str:
    imports = "\n".join(f'\t_ "{p}"' for p in packages)
    return f"//go:build tools\n\n// The commands bakery builds, so that `go mod tidy` keeps their modules.\npackage tools\n\nimport (\n{imports}\n)\n"


def _kubernetes_ldflags(version: str) -> str:
    """What kubernetes' hack/lib/version.sh stamps, for `--version` and /version."""
    _, minor, _ = version.split(".")
    stamps = {"gitVersion": f"v{version}", "gitMajor": "1", "gitMinor": minor, "gitTreeState": "clean",
              "buildDate": "1970-01-01T00:00:00Z"}
    xs = [f"-X {pkg}.{k}={v}" for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
          for k, v in stamps.items()]
    return " ".join(["-s", "-w", *xs])


def build(project: str, version: str, components: Sequence[str], out: Path, *, root: Path,
          progress: Progress, timeout: float = 7200.0) -> dict[str, Path]:
    """Build `components` of `project` at `version` into `out`; returns component -> path."""
    env = _go_env()
    have = go_version(env)
    src = root / "src" / f"{project}-v{version}"
    logs = root / "logs"
    src.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{project}-v{version}.log"
    log.write_text(f"# bakery: build of {project} v{version} ({', '.join(components)}) with go {'.'.join(map(str, have))}\n")
    if project == "kubernetes":
        info = _module_info("k8s.io/kubernetes", version, src, env, log)
        gomod = Path(info["GoMod"]).read_text()
        _check_toolchain(have, _needs_go(gomod), f"Kubernetes v{version}")
        (src / "go.mod").write_text(kubernetes_wrapper(version, gomod))
        (src / "tools.go").write_text(_tools_go(list(KUBERNETES_CMDS.values())))
        cmds = KUBERNETES_CMDS
        ldflags = _kubernetes_ldflags(version)
    elif project == "etcd":
        info = _module_info("go.etcd.io/etcd/server/v3", version, src, env, log)
        _check_toolchain(have, _needs_go(Path(info["GoMod"]).read_text()), f"etcd v{version}")
        go = ".".join(map(str, _needs_go(Path(info["GoMod"]).read_text())))
        (src / "go.mod").write_text(
            f"module bakery.local/etcd-build\n\ngo {go}\n\nrequire (\n"
            + "".join(f"\tgo.etcd.io/etcd/{m}/v3 v{version}\n" for m in ("server", "etcdctl", "etcdutl")) + ")\n")
        (src / "etcd").mkdir(exist_ok=True)
        (src / "etcd" / "main.go").write_text(ETCD_MAIN)
        (src / "tools.go").write_text(_tools_go([ETCD_CMDS["etcdctl"], ETCD_CMDS["etcdutl"]]))
        cmds = ETCD_CMDS
        ldflags = "-s -w"
    else:
        raise ComponentError(f"no Go build is known for {project}")
    progress(f"  resolving modules for {project} v{version} (go mod tidy)")
    _run(["go", "mod", "tidy"], src, env, log, progress, f"go mod tidy for {project} v{version}", timeout)
    targets = [cmds[c] for c in components]
    progress(f"  compiling {', '.join(components)} (a cold build takes minutes per component on 2 cores; log: {log})")
    _run(["go", "build", "-v", "-trimpath", f"-ldflags={ldflags}", "-o", f"{out}/", *targets], src, env, log, progress,
         f"go build of {project} v{version}", timeout)
    # go names a command after its import path's last element, the one before a /vN
    # suffix (go.etcd.io/etcd/etcdctl/v3 -> etcdctl): each component's own name.
    made = {c: out / c for c in components}
    for c, binary in made.items():
        if not binary.is_file():
            raise ComponentError(f"go build of {project} v{version} wrote no {c} into {out}; full log: {log}")
    return made
