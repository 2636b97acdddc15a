"""Rendered command lines, config files and manifests checked against a Reference.

Each check returns (errors, warnings): an unknown or removed flag or field is an
error; a deprecated one is a warning that names the replacement. Command lines come
from static pod manifests and from systemd units (ExecStart, with $VARS expanded from
the unit's EnvironmentFile), so both runtimes are covered.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping
from pathlib import PurePosixPath
from typing import Any

import yaml

from bakery.reference import COMPONENTS, Reference

Findings = tuple[list[str], list[str]]
LOG_RUNNER = "go-runner"  # the image's log runner: its own flags, then the component's argv


def component_argv(command: list[str]) -> tuple[str, list[str]] | None:
    """(component, its flags) when `command` runs one of the four components, else None."""
    argv = list(command)
    if argv and PurePosixPath(argv[0]).name == LOG_RUNNER:
        rest = [a for a in argv[1:] if not a.startswith("-")]
        if not rest:
            return None
        argv = argv[argv.index(rest[0]):]
    if not argv:
        return None
    name = PurePosixPath(argv[0]).name
    return (name, argv[1:]) if name in COMPONENTS else None


def check_flags(ref: Reference, component: str, args: list[str], where: str) -> Findings:
    flags = ref.flags[component]
    errors: list[str] = []
    warnings: list[str] = []
    for arg in args:
        if not arg.startswith("-"):
            continue
        name, _, value = arg.lstrip("-").partition("=")
        label = f"{where}: {component} --{name}"
        if name in flags.removed:
            errors.append(f"{label} is removed ({flags.removed[name]}) [Kubernetes {ref.minor}]")
        elif name in flags.deprecated:
            warnings.append(f"{label} is deprecated in Kubernetes {ref.minor}: {flags.deprecated[name]}")
        elif name not in flags.current:
            errors.append(f"{label} is not a flag of {component} {ref.minor}")
        elif name == "controllers" and flags.controllers:
            e, w = _check_controllers(ref, value, label)
            errors += e
            warnings += w
        elif name == "node-labels" and flags.node_labels:
            errors += _check_node_labels(flags.node_labels, value, label)
    return errors, warnings


def _check_node_labels(rules: dict[str, list[str]], value: str, label: str) -> list[str]:
    """Labels the kubelet itself refuses at start-up (it exits), and NodeRestriction too."""
    out = []
    for item in filter(None, value.split(",")):
        key = item.split("=", 1)[0]
        prefix = key.split("/", 1)[0] if "/" in key else ""
        restricted = any(prefix == ns or prefix.endswith(f".{ns}") for ns in ("kubernetes.io", "k8s.io"))
        allowed = key in rules["allowed"] or any(prefix == ns or prefix.endswith(f".{ns}") for ns in rules["allowed_namespaces"])
        if restricted and not allowed:
            out.append(f"{label}: {key!r} is in the kubernetes.io/k8s.io namespace the kubelet refuses at start-up "
                       "(and NodeRestriction forbids); set it through the API once the Node is registered")
    return out


def _check_controllers(ref: Reference, value: str, label: str) -> Findings:
    flags = ref.flags["kube-controller-manager"]
    aliases = flags.controller_aliases or {}
    errors, warnings = [], []
    for item in filter(None, value.split(",")):
        name = item.removeprefix("-")
        if name == "*":
            continue
        if name in aliases:
            warnings.append(f"{label}: {name!r} is a legacy alias ({aliases[name]})")
        elif name not in flags.controllers:
            errors.append(f"{label}: {name!r} is not a controller of Kubernetes {ref.minor}")
    return errors, warnings


def check_config(ref: Reference, doc: Any, where: str) -> Findings:
    """A KubeletConfiguration or KubeSchedulerConfiguration document: every key a field."""
    if not isinstance(doc, dict) or doc.get("kind") not in ref.configs:
        return [], []
    kind = ref.configs[doc["kind"]]
    if doc.get("apiVersion") != kind.api_version:
        return [f"{where}: {kind.kind} apiVersion {doc.get('apiVersion')!r} is not {kind.api_version}"], []
    errors, warnings = [], []
    free = {f[:-2] for f in kind.fields if f.endswith(".*")}  # maps whose keys are not fields
    for path in _paths(doc):
        if any(path.startswith(f"{m}.") for m in free):
            continue
        if path in kind.deprecated:
            warnings.append(f"{where}: {kind.kind} {path} is deprecated in Kubernetes {ref.minor}: {kind.deprecated[path]}")
        elif path not in kind.fields and path not in free:
            errors.append(f"{where}: {path} is not a field of {kind.kind} ({kind.api_version}) in Kubernetes {ref.minor}")
    return errors, warnings


def _paths(doc: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in doc.items():
        path = f"{prefix}{key}"
        yield path
        if isinstance(value, Mapping):
            yield from _paths(value, f"{path}.")


def check_pod(ref: Reference, pod: Any, where: str) -> Findings:
    """Every key of a Pod manifest a field of its type (the official client's models)."""
    errors: list[str] = []
    _walk(ref, pod, "V1Pod", "", where, errors)
    return errors, []


def _walk(ref: Reference, value: Any, type_: str, path: str, where: str, errors: list[str]) -> None:
    fields = ref.pod_types.get(type_)
    if fields is None or not isinstance(value, dict):
        return  # a type bakery's manifests do not reach, or a scalar where a map goes (check_manifest says so)
    for key, sub in value.items():
        here = f"{path}.{key}" if path else str(key)
        if key not in fields:
            errors.append(f"{where}: {here} is not a field of {type_.removeprefix('V1')} in Kubernetes {ref.minor}")
            continue
        t = fields[key]
        inner = re.fullmatch(r"list\[(V1\w+)\]", t)
        if inner and isinstance(sub, list):
            for i, item in enumerate(sub):
                _walk(ref, item, inner[1], f"{here}[{i}]", where, errors)
        elif re.fullmatch(r"V1\w+", t):
            _walk(ref, sub, t, here, where, errors)


def unit_command(unit: str, env_files: Mapping[str, str]) -> list[str] | None:
    """A systemd unit's ExecStart argv with $VAR/${VAR} taken from its EnvironmentFile(s)."""
    env: dict[str, str] = {}
    exec_start = None
    for line in unit.splitlines():
        key, _, value = line.partition("=")
        if key == "EnvironmentFile":
            text = env_files.get(value.lstrip("-"))
            if text is not None:
                env.update(_env_file(text))
        elif key == "ExecStart":
            exec_start = value.lstrip("-@:+!")
    if exec_start is None:
        return None
    argv: list[str] = []
    for word in shlex.split(exec_start):
        m = re.fullmatch(r"\$\{?(\w+)\}?", word)
        argv += shlex.split(env.get(m[1], "")) if m else [word]
    return argv


def _env_file(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            k, _, v = line.partition("=")
            out[k.strip()] = " ".join(shlex.split(v))
    return out


def check_files(ref: Reference, files: Mapping[str, bytes]) -> Findings:
    """Every manifest, systemd unit and component config file among a node's files."""
    errors: list[str] = []
    warnings: list[str] = []

    def add(found: Findings) -> None:
        errors.extend(found[0])
        warnings.extend(found[1])

    text = {p: d.decode("utf-8", "replace") for p, d in files.items()}
    for path, body in sorted(text.items()):
        if path.endswith(".manifest"):
            try:
                pod = yaml.safe_load(body)
            except yaml.YAMLError:
                continue  # check_manifest reports it
            if not isinstance(pod, dict):
                continue
            add(check_pod(ref, pod, path))
            for c in (pod.get("spec") or {}).get("containers") or []:
                found = component_argv([str(a) for a in c.get("command") or []] + [str(a) for a in c.get("args") or []])
                if found:
                    add(check_flags(ref, found[0], found[1], f"{path} ({c.get('name')})"))
        elif path.startswith("/etc/systemd/system/") and path.endswith(".service"):
            argv = unit_command(body, text)
            found = component_argv(argv) if argv else None
            if found:
                add(check_flags(ref, found[0], found[1], path))
        elif path.endswith((".yaml", ".yml")) and "kind:" in body:
            try:
                doc = yaml.safe_load(body)
            except yaml.YAMLError:
                continue
            add(check_config(ref, doc, path))
    return errors, warnings
