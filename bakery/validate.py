"""Checks of rendered output, used by `bakery validate` and by the tests.

Each check returns a list of problems (empty = fine). They read rendered bytes and
never write. Checks that need something outside bakery (cloud-init's schema file,
the monit binary) say when they could not run rather than pass silently.
"""

from __future__ import annotations

import base64
import gzip
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from bakery.spec import REMOVED_FLAGS

# Debian's cloud-init ships its schema here (TESTING.md).
CLOUD_INIT_SCHEMAS = (
    "/usr/lib/python3/dist-packages/cloudinit/config/schemas/schema-cloud-config-v1.json",
    "/usr/lib/python3/site-packages/cloudinit/config/schemas/schema-cloud-config-v1.json",
)


@dataclass
class Report:
    """Problems found, checks that could not run (with why), and warnings (deprecations)."""

    problems: list[str]
    skipped: list[str]
    warnings: list[str] = field(default_factory=list)


def write_files(user_data: bytes) -> dict[str, dict[str, Any]]:
    """path -> write_files entry with `content` decoded to bytes under `data`."""
    doc = yaml.safe_load(user_data)
    out = {}
    for entry in doc.get("write_files", []):
        content = entry.get("content", "")
        enc = entry.get("encoding", "")
        if enc in ("gz+b64", "gzip+base64", "gz+base64"):
            data = gzip.decompress(base64.b64decode(content))
        elif enc in ("b64", "base64"):
            data = base64.b64decode(content)
        else:
            data = content.encode()
        out[entry["path"]] = {**entry, "data": data}
    return out


def cloud_init_schema() -> dict[str, Any] | None:
    for candidate in CLOUD_INIT_SCHEMAS:
        p = Path(candidate)
        if p.exists():
            return json.loads(p.read_text())
    return None


def check_cloud_config(user_data: bytes, schema: dict[str, Any]) -> list[str]:
    """Validate a #cloud-config document against cloud-init's own schema, strictly."""
    import jsonschema

    if not user_data.startswith(b"#cloud-config\n"):
        return ["user-data does not start with #cloud-config"]
    doc = yaml.safe_load(user_data)
    validator = jsonschema.Draft4Validator(schema)
    problems = [f"{'.'.join(str(p) for p in e.absolute_path) or '<top>'}: {e.message}" for e in validator.iter_errors(doc)]
    known = _top_level_keys(schema)
    # cloud-init does not flag unknown top-level keys (TESTING.md); we do.
    problems += [f"{k}: not a cloud-config key" for k in doc if k not in known]
    return problems


def _top_level_keys(schema: dict[str, Any]) -> set[str]:
    """Keys cloud-init knows at the top level: the properties of every allOf branch."""
    keys = set(schema.get("properties", {}))
    for branch in schema.get("allOf", []):
        ref = branch.get("$ref", "")
        target = schema.get("$defs", {}).get(ref.rsplit("/", 1)[-1], branch) if ref else branch
        keys |= set(target.get("properties", {}))
    return keys


def check_no_private_key(user_data: bytes) -> list[str]:
    """A user-data that carries key material, in any encoding cloud-init decodes
    (plain, b64, gz+b64 write_files entries), is refused: user-data is readable by anyone
    allowed to describe the instance."""
    texts = [user_data]
    try:
        files = write_files(user_data)
    except (yaml.YAMLError, AttributeError, TypeError, ValueError, OSError):  # not a #cloud-config with write_files
        files = {}
    texts += [f["data"] for f in files.values()]
    if any(b"PRIVATE KEY" in t or b"client-key-data" in t for t in texts):
        return ["carries a private key (user-data is readable by anyone who may describe the instance)"]
    return []


def check_manifest(text: bytes | str, path: str = "manifest") -> list[str]:
    """A static pod manifest: a v1 Pod on the host network whose containers have a
    command, whose mounts match volumes, and no flag removed from current Kubernetes."""
    try:
        pod = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return [f"{path}: not YAML ({e})"]
    out: list[str] = []
    if not isinstance(pod, dict) or pod.get("apiVersion") != "v1" or pod.get("kind") != "Pod":
        return [f"{path}: not an apiVersion v1 Pod"]
    spec = pod.get("spec") or {}
    if spec.get("hostNetwork") is not True:
        out.append(f"{path}: spec.hostNetwork must be true for a control-plane static pod")
    if not pod.get("metadata", {}).get("name"):
        out.append(f"{path}: metadata.name missing")
    volumes = {v.get("name"): v for v in spec.get("volumes", [])}
    used: set[str] = set()
    containers = spec.get("containers") or []
    if not containers:
        out.append(f"{path}: no containers")
    for c in containers:
        name = c.get("name", "?")
        if not c.get("image"):
            out.append(f"{path}: container {name}: no image")
        cmd = c.get("command") or []
        if not cmd or not all(isinstance(a, str) for a in cmd):
            out.append(f"{path}: container {name}: command must be a list of strings")
        for arg in cmd:
            flag = arg.split("=", 1)[0].lstrip("-") if arg.startswith("--") else None
            if flag in REMOVED_FLAGS:
                out.append(f"{path}: container {name}: --{flag} is {REMOVED_FLAGS[flag]}")
        for m in c.get("volumeMounts", []):
            used.add(m.get("name"))
            if m.get("name") not in volumes:
                out.append(f"{path}: container {name}: mount {m.get('name')!r} has no volume")
            if not str(m.get("mountPath", "")).startswith("/"):
                out.append(f"{path}: container {name}: mount {m.get('name')!r} needs an absolute mountPath")
    for v in volumes:
        if v not in used:
            out.append(f"{path}: volume {v!r} is not mounted by any container")
    return out


def check_monit(configs: dict[str, bytes]) -> list[str] | None:
    """Run `monit -t` on each rendered monit file; None when monit is not installed."""
    monit = shutil.which("monit")
    if monit is None:
        return None
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in configs.items():
            conf = Path(tmp) / Path(name).name
            conf.write_bytes(content)
            control = Path(tmp) / f"{conf.name}.monitrc"
            control.write_text(f"set daemon 30\nset idfile {tmp}/id\nset statefile {tmp}/state\ninclude {conf}\n")
            control.chmod(0o600)
            r = subprocess.run([monit, "-t", "-c", str(control)], capture_output=True, text=True, check=False)
            if r.returncode != 0:
                out.append(f"{name}: monit -t: {(r.stderr or r.stdout).strip()}")
    return out


def check_certificates(pairs: Iterable[tuple[str, bytes, bytes]]) -> list[str]:
    """(name, certificate PEM, CA PEM): each must be directly issued by its CA and valid now."""
    import datetime as dt

    out = []
    now = dt.datetime.now(dt.UTC)
    for name, cert_pem, ca_pem in pairs:
        cert, ca = x509.load_pem_x509_certificate(cert_pem), x509.load_pem_x509_certificate(ca_pem)
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, Exception) as e:  # InvalidSignature has no message
            out.append(f"{name}: not signed by its CA ({type(e).__name__})")
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            out.append(f"{name}: not valid now ({cert.not_valid_before_utc} .. {cert.not_valid_after_utc})")
    return out


def check_upstream(files: dict[str, bytes], kubernetes_version: str) -> Report:
    """Flags, config fields and Pod fields against the Kubernetes references of the
    spec's version (bakery/reference): unknown or removed is a problem, deprecated a warning."""
    from bakery import reference
    from bakery.reference.checks import check_files

    ref, note = reference.select(kubernetes_version)
    errors, warnings = check_files(ref, files)
    return Report(errors, [note] if note else [], warnings)


def check_node(user_data: bytes, *, schema: dict[str, Any] | None, kubernetes_version: str | None = None) -> Report:
    """Every check on one node's rendered user-data; with `kubernetes_version`, also
    against that version's Kubernetes references."""
    problems: list[str] = []
    skipped: list[str] = []
    warnings: list[str] = []
    if schema is None:
        skipped.append("cloud-init schema: cloud-init is not installed (apt-get install cloud-init)")
    else:
        problems += [f"user-data: {p}" for p in check_cloud_config(user_data, schema)]
    files = write_files(user_data)
    for path, entry in files.items():
        if path.endswith(".manifest"):
            problems += check_manifest(entry["data"], path)
    monit = check_monit({p: e["data"] for p, e in files.items() if p.startswith("/etc/monit/conf.d/")})
    if monit is None:
        skipped.append("monit -t: monit is not installed (apt-get install monit)")
    else:
        problems += monit
    # etcd's certificates (and the API server's client certificate for etcd) come from the etcd CA,
    # the front-proxy client's from the front-proxy CA
    cas = {"ca": files.get("/etc/kubernetes/pki/ca.crt"), "etcd": files.get("/etc/kubernetes/pki/etcd/ca.crt"),
           "front-proxy": files.get("/etc/kubernetes/pki/front-proxy-ca.crt")}
    pairs = []
    for path, entry in files.items():
        if path.endswith(".crt") and not path.endswith(("/ca.crt", "-ca.crt")):
            ca = cas["etcd" if "etcd" in path else "front-proxy" if "front-proxy" in path else "ca"]
            if ca is None:
                problems.append(f"{path}: its CA certificate is not in the user-data")
                continue
            pairs.append((path, entry["data"], ca["data"]))
    problems += check_certificates(pairs)
    for path, entry in files.items():
        if (path.endswith((".key", ".conf")) or path.endswith("/encryption-config.yaml")) and entry.get("permissions") != "0600":
            problems.append(f"{path}: holds a private key but has permissions {entry.get('permissions')}, not 0600")
    if kubernetes_version is not None:
        upstream = check_upstream({p: e["data"] for p, e in files.items()}, kubernetes_version)
        problems += upstream.problems
        skipped += upstream.skipped
        warnings += upstream.warnings
    return Report(problems, skipped, warnings)
