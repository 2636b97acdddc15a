"""Write bakery/reference/<minor>/ from the real programs of one Kubernetes release.

    python -m bakery.reference.generate --kubernetes 1.37.2 [--bin-dir DIR] [--out bakery/reference]

Flags (kube-apiserver.yaml, kube-scheduler.yaml, kube-controller-manager.yaml, kubelet.yaml)
come from the release's binaries, by default the ones in bakery's cache
(<cache>/kubernetes/v<version>/, what `bakery binaries` builds or downloads), else from
--bin-dir:

  - `<binary> --help`: every `--name` line is a flag; a flag whose help text says
    `DEPRECATED:` (the kubelet's config-file flags, some scheduler flags) is deprecated,
    with that text as the message. The controller-manager's `--controllers` help lists
    every controller name; the kubelet's `--node-labels` help lists the labels and
    prefixes it allows in the kubernetes.io namespace.
  - probes, for the names --help does not show (pflag hides a flag marked deprecated):
    `<binary> --<name>=<value> --help`. "unknown flag: --name" means removed; "Flag --name
    has been deprecated, <message>" means deprecated with that message; no complaint means
    the flag exists but is hidden. The names probed are every flag any committed minor's
    data lists (current, deprecated or removed) that this --help does not show, so what
    was once known stays probed, and every name the release's Go source passes to
    MarkDeprecated or MarkHidden (k8s.io/kubernetes and the staging modules that define
    the components' shared flags, from the Go module proxy); of the latter only what the
    binary accepts is kept, since most belong to other programs. Controller-manager aliases: every alias the committed
    data lists is probed with `kube-controller-manager --controllers=<alias>` (it refuses
    an unknown name before it reads its kubeconfig); the binary does not say what an
    alias stands for, so the data keeps only that it is accepted.

Config fields (kubelet-config.yaml, kube-scheduler-config.yaml, authentication-config.yaml)
and Pod types (pod.json) come from the Go types of the published staging modules at the
matching version (k8s.io/kubelet, k8s.io/kube-scheduler, k8s.io/apiserver, k8s.io/api
v0.<minor>.<patch>), reflected by the Go program in bakery/reference/gen/ (needs `go`; the
modules come from the Go module proxy). These need no binaries: --types-only writes only
them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from bakery.components import cache
from bakery.reference import COMPONENTS, HERE

GEN = HERE / "gen"
PROBE_VALUES = ("1", "true", "1s", "a=b", "127.0.0.1", "x")  # until one parses, for the flag's type
CONFIGS = {
    "kubelet-config": ("k8s.io/kubelet", "config/v1beta1/types.go"),
    "kube-scheduler-config": ("k8s.io/kube-scheduler", "config/v1/types.go"),
    "authentication-config": ("k8s.io/apiserver", "pkg/apis/apiserver/v1/types.go"),
}
# Where the components' flags are defined: the release's module, and the staging modules
# (at v0.<minor>.<patch>) whose option sets they share.
SOURCE_MODULES = ("k8s.io/kubernetes", "k8s.io/apiserver", "k8s.io/component-base", "k8s.io/controller-manager",
                  "k8s.io/cloud-provider")
MARKED = re.compile(r'\bMark(?:Deprecated|Hidden)\("([a-z0-9][a-z0-9-]*)"')
FLAG_LINE = re.compile(r"^ {2,8}(?:-[A-Za-z0-9], )?--([A-Za-z0-9][A-Za-z0-9_.-]*)(.*)$")


class GenerateError(Exception):
    pass


# --- --help -------------------------------------------------------------------------


def parse_help(text: str) -> dict[str, str]:
    """{flag name: its help text (continuation lines joined)} of a pflag --help."""
    out: dict[str, str] = {}
    last = None
    for line in text.splitlines():
        m = FLAG_LINE.match(line)
        if m:
            last = m[1]
            out[last] = m[2].strip()
        elif last and line.startswith(" " * 10) and line.strip():
            out[last] += " " + line.strip()
        elif not line.strip() or not line.startswith(" "):
            last = None
    return out


def help_deprecation(text: str) -> str | None:
    """The message of a flag whose help text says DEPRECATED:, else None."""
    m = re.search(r"\(?DEPRECATED:\s*(.*)$", text)
    if not m:
        return None
    message = re.sub(r"\s*\(default .*\)$", "", m[1].strip())
    if m[0].startswith("(") and message.endswith(")"):
        message = message[:-1]
    return message.strip()


def help_controllers(text: str) -> list[str]:
    """The `All controllers:` list of the controller-manager's --controllers help."""
    m = re.search(r"All controllers: ([a-z0-9, -]+?)\s*(?:Disabled-by-default|$)", text)
    if not m:
        raise GenerateError("kube-controller-manager --help: no 'All controllers:' in the --controllers text")
    return sorted(c.strip() for c in m[1].split(",") if c.strip())


def help_node_labels(text: str) -> dict[str, list[str]] | None:
    """The prefixes and labels the kubelet's --node-labels help allows in kubernetes.io."""
    prefixes = re.search(r"allowed prefix \(([^)]*)\)", text)
    labels = re.search(r"specifically allowed set \(([^)]*)\)", text)
    if not (prefixes and labels):
        return None
    split = lambda s: sorted(x.strip() for x in s.split(",") if x.strip())  # noqa: E731
    return {"allowed": split(labels[1]), "allowed_namespaces": split(prefixes[1])}


# --- probes -------------------------------------------------------------------------


def run(argv: list[str], timeout: float = 60) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise GenerateError(f"{' '.join(argv)}: no answer in {timeout:.0f}s") from e
    return r.stdout + r.stderr


def read_probe(name: str, output: str) -> tuple[str, str] | None:
    """What a binary's answer to `--<name>=<value> --help` says: (kind, message) with kind
    removed, deprecated or current; None when the value did not parse (try another)."""
    n = re.escape(name)
    if re.search(rf"unknown flag: --{n}(?![\w-])", output):
        return "removed", f"unknown flag: --{name}"
    m = re.search(rf"Flag --{n} has been deprecated, (.*)", output)
    if m:
        return "deprecated", m[1].strip()
    if re.search(rf'invalid argument \\?"[^"]*?\\?" for \\?"(?:-\w, )?--{n}\\?" flag', output):  # the kubelet quotes with \"
        return None
    return "current", ""


def probe(binary: Path, name: str) -> tuple[str, str]:
    for value in PROBE_VALUES:
        found = read_probe(name, run([str(binary), f"--{name}={value}", "--help"]))
        if found:
            return found
    return "current", ""  # it exists: every value was parsed and refused as a value


def probe_alias(binary: Path, alias: str) -> bool:
    """Whether kube-controller-manager accepts `alias` in --controllers. It checks the
    names before it reads its kubeconfig, so a missing kubeconfig ends it either way."""
    with tempfile.TemporaryDirectory() as tmp:
        out = run([str(binary), f"--controllers={alias}", f"--kubeconfig={tmp}/none", "--secure-port=0"])
    if f'\\"{alias}\\" is not in the list of known controllers' in out:
        return False
    if "no such file or directory" in out:
        return True
    raise GenerateError(f"kube-controller-manager --controllers={alias}: unexpected answer: {out[-500:]}")


# --- flags --------------------------------------------------------------------------


def previous(out: Path, component: str) -> tuple[set[str], set[str]]:
    """Every flag name and every controller alias the committed data of any minor lists."""
    names: set[str] = set()
    aliases: set[str] = set()
    for path in sorted(out.glob(f"*/{component}.yaml")):
        d = yaml.safe_load(path.read_text()) or {}
        names |= set(d.get("current") or ()) | set(d.get("deprecated") or {}) | set(d.get("removed") or {})
        aliases |= set(d.get("controller_aliases") or {})
    return names, aliases


def marked_in_source(version: str, go: str) -> set[str]:
    """Every flag name the release's Go source marks deprecated or hidden (any program's)."""
    staging = "v0." + version.split(".", 1)[1]
    mods = [f"{m}@{'v' + version if m == 'k8s.io/kubernetes' else staging}" for m in SOURCE_MODULES]
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([go, "mod", "download", "-json", *mods], cwd=tmp, capture_output=True, text=True, check=False,
                           timeout=1800, env=dict(os.environ, GOFLAGS="-mod=mod"))
    if r.returncode != 0:
        raise GenerateError(f"go mod download {' '.join(mods)}: {(r.stdout + r.stderr)[-2000:]}")
    names: set[str] = set()
    for doc in re.findall(r'"Dir": "([^"]+)"', r.stdout):
        root = Path(doc)
        for sub in (("cmd", "pkg") if root.name.startswith("kubernetes@") else (".",)):
            for path in (root / sub).rglob("*.go"):
                if not path.name.endswith("_test.go"):
                    names |= set(MARKED.findall(path.read_text(errors="replace")))
    return names


def component_flags(component: str, binary: Path, version: str, out: Path, marked: Iterable[str] = ()) -> dict[str, Any]:
    """One flag file's data. `marked`: names the source marks deprecated or hidden (the
    names earlier data lists are probed anyway, so the committed data carries them)."""
    program = run([str(binary), "--version"]).strip()
    if program.split()[-1:] != [f"v{version}"]:
        raise GenerateError(f"{binary} --version says {program!r}, not Kubernetes v{version}")
    help_text = run([str(binary), "--help"])
    shown = parse_help(help_text)
    if len(shown) < 10:
        raise GenerateError(f"{binary} --help lists {len(shown)} flags; is it {component}?")
    current, deprecated, removed, hidden = [], {}, {}, []
    for name, text in shown.items():
        message = help_deprecation(text)
        if message:
            deprecated[name] = message
        else:
            current.append(name)
    known, aliases = previous(out, component)
    for name in sorted(known - set(shown)):
        kind, message = probe(binary, name)
        if kind == "removed":
            removed[name] = f"{component} v{version} answers: {message}"
        elif kind == "deprecated":
            deprecated[name] = message
        else:
            current.append(name)
            hidden.append(name)
    for name in sorted(set(marked) - known - set(shown)):
        kind, message = probe(binary, name)
        if kind == "deprecated":
            deprecated[name] = message
        elif kind == "current":
            current.append(name)
            hidden.append(name)
    data: dict[str, Any] = {
        "source": {
            "repository": "kubernetes/kubernetes",
            "path": f"cmd/{component}",
            "version": f"v{version}",
            "program": program,
            "how": f"`{component} --help` (flag lines; DEPRECATED: in their text), and "
                   f"`{component} --<name>=<value> --help` for the names --help does not show: those earlier "
                   "data lists, and those the release's source passes to MarkDeprecated/MarkHidden",
            "command": command(version),
        },
        "current": sorted(current),
        "hidden": sorted(hidden),
        "deprecated": dict(sorted(deprecated.items())),
        "removed": dict(sorted(removed.items())),
    }
    if component == "kube-controller-manager":
        data["controllers"] = help_controllers(shown.get("controllers", ""))
        accepted = {a: f"kube-controller-manager v{version} accepts it; not a name its --help lists"
                    for a in sorted(aliases) if a not in data["controllers"] and probe_alias(binary, a)}
        data["controller_aliases"] = accepted
    if component == "kubelet":
        labels = help_node_labels(shown.get("node-labels", ""))
        if labels:
            data["node_labels"] = labels
    return data


# --- Go types -----------------------------------------------------------------------


def go_binary(given: str | None) -> str:
    found = given or shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if not found:
        raise GenerateError("no `go` on PATH (or /usr/local/go/bin/go); --go PATH")
    return found


STAGING_DIRECT = ("k8s.io/api", "k8s.io/apiserver", "k8s.io/kube-scheduler", "k8s.io/kubelet")


def go_types(version: str, go: str) -> dict[str, Any]:
    """Run bakery/reference/gen with its staging modules pinned to v0.<minor>.<patch>."""
    staging = "v0." + version.split(".", 1)[1]
    env = dict(os.environ, PATH=f"{Path(go).parent}{os.pathsep}{os.environ.get('PATH', '')}", GOFLAGS="-mod=mod")
    with tempfile.TemporaryDirectory(prefix="bakery-reference-gen-") as tmp:
        for name in ("main.go", "go.sum"):
            if (GEN / name).exists():
                shutil.copy(GEN / name, Path(tmp) / name)
        # a go.mod of the four direct requirements only: the committed one's indirect
        # k8s.io/* lines (client-go, component-base, ... at the committed release) would pull
        # k8s.io/api up to that release by minimal version selection
        go_version = next(line.split()[1] for line in (GEN / "go.mod").read_text().splitlines() if line.startswith("go "))
        (Path(tmp) / "go.mod").write_text(f"module bakery/reference/gen\n\ngo {go_version}\n\nrequire (\n"
                                          + "".join(f"\t{m} {staging}\n" for m in STAGING_DIRECT) + ")\n")
        for argv in ([go, "mod", "tidy"], [go, "run", "."]):
            r = subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True, check=False, timeout=1800)
            if r.returncode != 0:
                raise GenerateError(f"{' '.join(argv)} (in a copy of {GEN}): {r.stderr[-2000:]}")
    types = json.loads(r.stdout)
    wrong = {m: v for m, v in types["modules"].items() if v != staging}
    if wrong:
        raise GenerateError(f"bakery/reference/gen for {version} read {wrong}, not {staging}")
    return types


def config_files(types: dict[str, Any], version: str) -> dict[str, dict[str, Any]]:
    out = {}
    for name, (module, path) in CONFIGS.items():
        c = types["configs"][name]
        out[name] = {
            "source": {
                "repository": f"kubernetes/{module.split('/')[1]} (Go module {module})",
                "path": path,
                "version": types["modules"][module],
                "program": f"bakery/reference/gen (reflection over {c['goType']}; json tags; Go doc 'Deprecated:')",
                "command": command(version),
            },
            "apiVersion": c["apiVersion"],
            "kind": c["kind"],
            "fields": c["fields"],
            "deprecated": c["deprecated"] or {},
        }
    return out


def pod_file(types: dict[str, Any], version: str) -> dict[str, Any]:
    return {
        "_source": {
            "note": "the Pod and every type it reaches: JSON name -> type, in the Python client's notation",
            "repository": "kubernetes/api (Go module k8s.io/api)",
            "path": "core/v1/types.go (and apimachinery meta/v1 ObjectMeta), by reflection in bakery/reference/gen",
            "version": types["modules"]["k8s.io/api"],
            "command": command(version),
        },
        "types": dict(sorted(types["pod"].items())),
    }


# --- writing ------------------------------------------------------------------------


def command(version: str) -> str:
    return f"python -m bakery.reference.generate --kubernetes {version}"


HEADERS = {
    "flags": "# {component} {version} flags, generated from the binary (see source).\n"
             "# current: accepted (hidden: accepted, not in --help); deprecated: accepted, with the\n"
             "# binary's message; removed: the binary answers `unknown flag`.\n",
    "config": "# {kind} ({api_version}) fields in {version}, as dotted paths, generated from the Go\n"
              "# types (see source); a path ending in .* is a map, or a list of objects, whose keys\n"
              "# or items are not fields here.\n",
}


def dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100, allow_unicode=True)


def render_flags(component: str, version: str, data: dict[str, Any]) -> str:
    return HEADERS["flags"].format(component=component, version=f"v{version}") + dump(data)


def render_config(version: str, data: dict[str, Any]) -> str:
    head = HEADERS["config"].format(kind=data["kind"], api_version=data["apiVersion"], version=f"v{version}")
    return head + dump(data)


def render_pod(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, sort_keys=False) + "\n"


def generate(version: str, out: Path, bin_dir: Path | None, *, types_only: bool = False, go: str | None = None,
             components: Iterable[str] = COMPONENTS, say=print) -> dict[str, str]:
    """{file name: text} of the folder for `version`'s minor (not written)."""
    files: dict[str, str] = {}
    go = go_binary(go)
    if not types_only:
        say(f"names marked deprecated or hidden in the v{version} source")
        marked = marked_in_source(version, go)
        folder = bin_dir or cache.Slot(cache.root(), "kubernetes", version).folder
        for c in components:
            binary = folder / c
            if not (binary.is_file() and os.access(binary, os.X_OK)):
                raise GenerateError(f"no {c} binary at {binary}: `bakery binaries` builds the release's, or give --bin-dir")
            say(f"{c}: {binary} --help and probes")
            files[f"{c}.yaml"] = render_flags(c, version, component_flags(c, binary, version, out, marked))
    say(f"config fields and Pod types: bakery/reference/gen at v0.{version.split('.', 1)[1]}")
    types = go_types(version, go)
    for name, data in config_files(types, version).items():
        files[f"{name}.yaml"] = render_config(version, data)
    files["pod.json"] = render_pod(pod_file(types, version))
    return files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bakery.reference.generate",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kubernetes", required=True, metavar="VERSION", help="the release, e.g. 1.37.2 (its minor names the folder)")
    p.add_argument("--bin-dir", type=Path, help="folder with kube-apiserver, kube-scheduler, kube-controller-manager and "
                   "kubelet of that release (default: bakery's cache, <cache>/kubernetes/v<version>/)")
    p.add_argument("--out", type=Path, default=HERE, help="the reference folder (default: %(default)s); writes <out>/<minor>/")
    p.add_argument("--go", help="the Go toolchain (default: go on PATH, else /usr/local/go/bin/go)")
    p.add_argument("--types-only", action="store_true", help="only the config fields and pod.json (no binaries needed); "
                   "the flag files of the folder are left as they are")
    args = p.parse_args(argv)
    version = args.kubernetes.lstrip("v")
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        p.error(f"--kubernetes {args.kubernetes!r}: want a release like 1.37.2")
    folder = args.out / ".".join(version.split(".")[:2])
    if args.types_only and args.out.resolve() == HERE.resolve() and not all((folder / f"{c}.yaml").exists() for c in COMPONENTS):
        p.error(f"--types-only: {folder} has no flag files, and bakery loads only complete folders; "
                "give --out another folder, or the binaries (--bin-dir)")
    try:
        files = generate(version, args.out, args.bin_dir, types_only=args.types_only, go=args.go,
                         say=lambda line: print(line, file=sys.stderr))
    except GenerateError as e:
        print(f"generate: {e}", file=sys.stderr)
        return 1
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
        print(folder / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
