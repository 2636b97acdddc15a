"""The cluster.yaml model: parsed once, at the edge, into a frozen ClusterSpec.

`load(path)` reads the file, `parse(text, filename)` does the work. Every problem is
collected and raised together as one SpecError, each with the file, the line and the
key, and what is allowed there (STYLE.md #5). Nothing downstream re-validates.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bakery.errors import Problem, SpecError

# Oldest releases whose flags and APIs the rendered manifests use (KubeletConfiguration
# v1beta1 with staticPodPath, --service-account-issuer required since 1.20, the
# components' --authentication-kubeconfig, --enable-admission-plugins). We support
# releases still in their upstream maintenance window or one behind it.
MIN_KUBERNETES = (1, 29)
MIN_ETCD = (3, 5)

# Options of the 2015 guide (and the flags behind them) that current Kubernetes removed.
# Keyed by flag name; the value says when it went and what replaces it. Used for the
# spec's extra_args and by bakery.render.lint on rendered manifests.
REMOVED_FLAGS: dict[str, str] = {
    "basic-auth-file": "removed in Kubernetes 1.19; use client certificates (bakery issues admin.kubeconfig)",
    "insecure-port": "removed in Kubernetes 1.24; the API server serves TLS only",
    "insecure-bind-address": "removed in Kubernetes 1.24; the API server serves TLS only",
    "address": "removed from the scheduler and controller-manager in 1.24; use --bind-address",
    "port": "removed from the scheduler and controller-manager; they serve TLS on --secure-port",
    "admission-control": "removed in Kubernetes 1.24; use --enable-admission-plugins",
    "master": "talks plain HTTP to the insecure port, which is gone; use --kubeconfig",
    "kubelet-https": "removed in Kubernetes 1.22; the kubelet is always reached over TLS",
    "service-account-api-audiences": "removed in Kubernetes 1.25; use --api-audiences",
    "enable-swagger-ui": "removed in Kubernetes 1.14",
    "repair-malformed-updates": "removed in Kubernetes 1.14",
    "experimental-bootstrap-kubeconfig": "removed in Kubernetes 1.23; use --bootstrap-kubeconfig",
    "api-servers": "removed from the kubelet in 1.8; use --kubeconfig",
}
# The same options as 2015-era cluster.yaml keys people write by habit.
REMOVED_SPEC_KEYS: dict[str, str] = {
    "basic_auth_file": REMOVED_FLAGS["basic-auth-file"],
    "insecure_port": REMOVED_FLAGS["insecure-port"],
    "admission_control": REMOVED_FLAGS["admission-control"],
    "docker": "Docker is replaced by containerd; nothing to configure",
}

NAME_RE = r"^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$"
VERSION_RE = r"^v?(\d+)\.(\d+)\.(\d+)$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


Cidr = Annotated[str, Field(description="IPv4 CIDR, e.g. 10.0.0.0/24")]


class NetworkSpec(_Model):
    """Where the masters live and the cluster's internal ranges."""

    subnet: Cidr = Field("10.240.0.0/24", description="Masters' subnet; addresses are derived from it unless listed")
    first_host: int = Field(10, ge=1, description="Master i gets the subnet's host number first_host + i")
    addresses: list[str] = Field(default_factory=list, description="Explicit master addresses, one per master, in index order")
    service_cidr: Cidr = Field("10.96.0.0/12", description="Service ClusterIP range; its first address is the kubernetes service")
    pod_cidr: Cidr = Field("10.244.0.0/16", description="Pod range for the controller-manager's node IPAM")
    dns_domain: str = Field("cluster.local", description="Cluster DNS domain")

    @field_validator("subnet", "service_cidr", "pod_cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        try:
            return str(ipaddress.IPv4Network(v, strict=True))
        except ValueError as e:
            raise ValueError(f"not an IPv4 network in CIDR form ({e})") from None

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for a in v:
            try:
                ipaddress.IPv4Address(a)
            except ValueError:
                raise ValueError(f"{a!r} is not an IPv4 address") from None
        return v


class LoadBalancerSpec(_Model):
    """The API servers' load balancer. Its DNS name and/or IP go into the API server certificate."""

    port: int = Field(6443, ge=1, le=65535, description="Port the load balancer listens on and the API servers serve")
    dns_name: str | None = Field(None, description="Stable DNS name for the API (a CNAME you own); the cloud's own name is added when known")
    ip: str | None = Field(None, description="Reserved IP of the load balancer, when known in advance")
    scheme: Literal["internet-facing", "internal"] = "internet-facing"
    allowed_cidrs: list[Cidr] = Field(default_factory=lambda: ["0.0.0.0/0"], description="Who may reach the API port")

    @field_validator("ip")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        if v is not None:
            ipaddress.IPv4Address(v)
        return v


class EtcdSpec(_Model):
    """How the masters' etcd members find each other on first boot."""

    bootstrap: Literal["static", "discovery", "discovery-v3", "dns-srv"] = Field(
        "static",
        description="static: initial-cluster from the plan; discovery: a v2 discovery URL; "
        "discovery-v3: etcd 3.6 --discovery-token; dns-srv: --discovery-srv",
    )
    discovery_url: str | None = Field(None, description="discovery: a full token URL; created by `bakery discovery new` when absent")
    discovery_service: str = Field("https://discovery.etcd.io", description="discovery: the service `bakery discovery new` asks for a token")
    discovery_endpoints: list[str] = Field(default_factory=list, description="discovery-v3: the discovery etcd's client URLs")
    discovery_token: str | None = Field(None, description="discovery-v3: the token; created by `bakery discovery new` when absent")
    srv_domain: str | None = Field(None, description="dns-srv: the domain holding _etcd-server-ssl._tcp records")
    client_port: int = Field(2379, ge=1, le=65535)
    peer_port: int = Field(2380, ge=1, le=65535)
    quota_backend_bytes: int = Field(8 * 1024**3, ge=1024**2, description="etcd --quota-backend-bytes")


class ImagesSpec(_Model):
    """Container images. Tags default to the spec's versions."""

    registry: str = Field("registry.k8s.io", description="Registry for the Kubernetes and etcd images")
    etcd: str | None = Field(None, description="Full etcd image reference (default <registry>/etcd:<etcd version>-0)")
    pause: str | None = Field(None, description="Full pause image reference (default <registry>/pause:3.10)")
    podmaster: str = Field("ghcr.io/bakery-k8s/podmaster:0.1.0", description="Image built from the repository's Dockerfile")


class ComponentArgs(_Model):
    """Extra flags for one component, name without dashes -> value. Removed 2015 flags are refused."""

    extra_args: dict[str, str] = Field(default_factory=dict, description="Flags removed since 2015 (REMOVED_FLAGS) are refused")


class Zone(_Model):
    name: str
    subnet: Cidr | None = Field(None, description="This zone's subnet (AWS subnets live in one zone); default: network.subnet")


class AwsSpec(_Model):
    region: str = "us-east-1"
    zones: list[Zone] = Field(default_factory=lambda: [Zone(name="us-east-1a"), Zone(name="us-east-1b"), Zone(name="us-east-1c")])
    vpc_id: str | None = Field(None, description="Existing VPC; default: a VPC tagged with the cluster")
    subnet_ids: dict[str, str] = Field(default_factory=dict, description="Existing subnet per zone name")
    instance_type: str = "m6i.large"
    image: str | None = Field(None, description="AMI id; default: the one `bakery bake` recorded")
    instance_profile: str | None = None
    key_name: str | None = None
    root_volume_gb: int = Field(40, ge=8)
    endpoint_url: str | None = Field(None, description="Override for local servers; env BAKERY_AWS_ENDPOINT_URL wins")


class GcpSpec(_Model):
    project: str = "my-project"
    region: str = "us-central1"
    zones: list[Zone] = Field(default_factory=lambda: [Zone(name="us-central1-a"), Zone(name="us-central1-b"), Zone(name="us-central1-c")])
    network: str = "default"
    subnetwork: str | None = None
    machine_type: str = "e2-standard-2"
    image: str | None = Field(None, description="Image self-link or name; default: the one `bakery bake` recorded")
    service_account: str | None = None
    boot_disk_gb: int = Field(40, ge=10)
    endpoint_url: str | None = Field(None, description="Override for local servers; env BAKERY_GCP_ENDPOINT_URL wins")


class LocalSpec(_Model):
    """The local provider: systemd-nspawn containers (default) or QEMU VMs on this machine."""

    runtime: Literal["container", "vm"] = Field(
        "container", description="container: systemd-nspawn from the baked root (seconds); vm: QEMU guests (kernel-level fidelity)")
    zones: list[Zone] = Field(default_factory=lambda: [Zone(name="local")])
    memory_mb: int = Field(768, ge=256)
    cpus: int = Field(1, ge=1)
    image: str | None = Field(None, description="qcow2 path; default: the one `bakery bake` recorded")
    port_base: int = Field(22000, ge=1024, le=65000, description="First host port for the VMs' forwards on 127.0.0.1")


class ClusterSpec(_Model):
    """One highly available Kubernetes control plane."""

    name: str = Field(pattern=NAME_RE, description="Cluster name: lowercase letters, digits and '-', at most 32 characters")
    provider: Literal["local", "aws", "gcp"]
    masters: int = Field(3, description="Number of masters: 3, 5 or 7")
    kubernetes_version: str = Field("1.31.4", pattern=VERSION_RE)
    etcd_version: str = Field("3.5.17", pattern=VERSION_RE)
    election: Literal["builtin", "podmaster"] = Field("builtin", description="builtin: --leader-elect; podmaster: the 2015 lease-holding copier")
    runtime: Literal["static-pods", "systemd"] = Field("static-pods", description="How etcd (and podmaster) run on the node")
    key_algorithm: Literal["ecdsa-p256", "rsa-2048"] = "ecdsa-p256"
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    load_balancer: LoadBalancerSpec = Field(default_factory=LoadBalancerSpec)
    etcd: EtcdSpec = Field(default_factory=EtcdSpec)
    images: ImagesSpec = Field(default_factory=ImagesSpec)
    apiserver: ComponentArgs = Field(default_factory=ComponentArgs)
    scheduler: ComponentArgs = Field(default_factory=ComponentArgs)
    controller_manager: ComponentArgs = Field(default_factory=ComponentArgs)
    aws: AwsSpec | None = None
    gcp: GcpSpec | None = None
    local: LocalSpec | None = None

    @field_validator("masters")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v not in (3, 5, 7):
            raise ValueError(f"{v} masters: use 3, 5 or 7 (an odd etcd membership that survives 1, 2 or 3 failures)")
        return v

    @field_validator("kubernetes_version")
    @classmethod
    def _k8s(cls, v: str) -> str:
        return _at_least(v, MIN_KUBERNETES, "Kubernetes")

    @field_validator("etcd_version")
    @classmethod
    def _etcd(cls, v: str) -> str:
        return _at_least(v, MIN_ETCD, "etcd")

    # -- derived, read-only views -------------------------------------------------

    @property
    def provider_spec(self) -> AwsSpec | GcpSpec | LocalSpec:
        section = getattr(self, self.provider)
        if section is not None:
            return section
        return {"aws": AwsSpec, "gcp": GcpSpec, "local": LocalSpec}[self.provider]()

    @property
    def zones(self) -> list[Zone]:
        return self.provider_spec.zones

    @property
    def kubernetes_minor(self) -> str:
        major, minor, _ = _version(self.kubernetes_version)
        return f"{major}.{minor}"

    def image_ref(self, component: str) -> str:
        """Container image for a control-plane component, from the registry and versions."""
        v = self.kubernetes_version.lstrip("v")
        if component == "etcd":
            return self.images.etcd or f"{self.images.registry}/etcd:{self.etcd_version.lstrip('v')}-0"
        if component == "pause":
            return self.images.pause or f"{self.images.registry}/pause:3.10"
        if component == "podmaster":
            return self.images.podmaster
        return f"{self.images.registry}/{component}:v{v}"


def _version(v: str) -> tuple[int, int, int]:
    m = re.match(VERSION_RE, v)
    assert m, v  # pattern validated first
    return int(m[1]), int(m[2]), int(m[3])


def _at_least(v: str, minimum: tuple[int, int], what: str) -> str:
    m = re.match(VERSION_RE, v)
    if m and (int(m[1]), int(m[2])) < minimum:
        raise ValueError(f"{what} {v} is older than the supported minimum {minimum[0]}.{minimum[1]}")
    return v


# -- semantic checks across fields --------------------------------------------------


def _removed_flag_problems(data: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """2015-era flags in extra_args, found on the raw mapping so that they are reported
    together with any other problem in the file."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    for component in ("apiserver", "scheduler", "controller_manager"):
        section = data.get(component)
        args = section.get("extra_args") if isinstance(section, dict) else None
        for flag in args if isinstance(args, dict) else ():
            name = str(flag).lstrip("-")
            if name in REMOVED_FLAGS:
                out.append(((component, "extra_args", flag), f"--{name} is {REMOVED_FLAGS[name]}"))
    return out


def _semantic_problems(spec: ClusterSpec) -> list[tuple[tuple[str | int, ...], str]]:
    """Checks that need several fields at once. Returns (location, message) pairs."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    net = spec.network
    zones = spec.zones
    if not zones:
        out.append(((spec.provider, "zones"), "at least one zone is required"))
        return out
    if spec.provider != "local" and getattr(spec, spec.provider) is None:
        out.append(((spec.provider,), f"provider is {spec.provider!r} but the {spec.provider!r} section is missing"))
    if net.addresses and len(net.addresses) != spec.masters:
        out.append(
            (("network", "addresses"), f"{len(net.addresses)} addresses for {spec.masters} masters: give one per master or none")
        )
    seen: dict[str, int] = {}
    for i in range(spec.masters):
        zone = zones[i % len(zones)]
        subnet = ipaddress.IPv4Network(zone.subnet or net.subnet)
        if i < len(net.addresses):
            loc: tuple[str | int, ...] = ("network", "addresses", i)
            addr = ipaddress.IPv4Address(net.addresses[i])
        else:
            loc = ("network", "first_host")
            if net.first_host + i >= subnet.num_addresses - 1:
                out.append((loc, f"master {i} would get host number {net.first_host + i}, beyond {subnet}"))
                continue
            addr = subnet.network_address + net.first_host + i
        if addr not in subnet or addr in (subnet.network_address, subnet.broadcast_address):
            out.append((loc, f"{addr} is outside the usable range of master {i}'s subnet {subnet} (zone {zone.name})"))
        if str(addr) in seen:
            out.append((loc, f"{addr} is given to masters {seen[str(addr)]} and {i}: addresses must be distinct"))
        seen.setdefault(str(addr), i)
    service = ipaddress.IPv4Network(net.service_cidr)
    pods = ipaddress.IPv4Network(net.pod_cidr)
    if service.overlaps(pods):
        out.append((("network", "service_cidr"), f"{service} overlaps pod_cidr {pods}"))
    e = spec.etcd
    if e.bootstrap == "discovery-v3" and not e.discovery_endpoints:
        out.append((("etcd", "discovery_endpoints"), "discovery-v3 needs the discovery etcd's client URLs"))
    if e.bootstrap == "dns-srv" and not e.srv_domain:
        out.append((("etcd", "srv_domain"), "dns-srv needs the domain that holds the SRV records"))
    if e.bootstrap == "discovery-v3" and _version(spec.etcd_version)[:2] < (3, 6):
        out.append((("etcd_version",), f"discovery-v3 needs etcd 3.6 or later, not {spec.etcd_version}"))
    if e.client_port == e.peer_port:
        out.append((("etcd", "peer_port"), "client and peer ports must differ"))
    return out


# -- YAML with line numbers ----------------------------------------------------------


class _Lines:
    """Maps a key path ('network', 'addresses', 1) to the line where YAML had it."""

    def __init__(self, node: yaml.Node | None) -> None:
        self.lines: dict[tuple[Any, ...], int] = {}
        if node is not None:
            self._walk(node, ())

    def _walk(self, node: yaml.Node, path: tuple[Any, ...]) -> None:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = (*path, k.value)
                self.lines[key] = k.start_mark.line + 1
                self._walk(v, key)
                self.lines[key] = k.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                self._walk(v, (*path, i))

    def line(self, path: tuple[Any, ...]) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for k, _ in node.value:
        key = loader.construct_object(k, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", k.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _model_for(path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that holds the mapping at `path` (for "did you mean")."""
    model: type[BaseModel] | None = ClusterSpec
    for part in path:
        if model is None or isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        candidates = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        inner = [a for a in getattr(ann, "__args__", ()) for a in getattr(a, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
        model = (candidates or inner or [None])[0]
    return model


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def parse(text: str, filename: str = "cluster.yaml") -> ClusterSpec:
    """Parse and validate cluster.yaml text. Raises SpecError listing every problem."""
    try:
        node = yaml.compose(text, Loader=_UniqueKeyLoader)
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        msg = " ".join(filter(None, [e.context, e.problem])) or str(e)
        raise SpecError(f"{filename}: YAML syntax error", [Problem(f"YAML syntax error: {msg}", filename, line)]) from None
    except yaml.YAMLError as e:
        raise SpecError(f"{filename}: YAML error", [Problem(f"YAML error: {e}", filename)]) from None
    if not isinstance(data, dict):
        raise SpecError(f"{filename}: not a mapping", [Problem("the file must be a YAML mapping (name: ..., provider: ...)", filename, 1)])
    lines = _Lines(node)
    problems = [Problem(m, filename, lines.line(path), _dotted(path)) for path, m in _removed_flag_problems(data)]
    try:
        spec = ClusterSpec.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            path = tuple(err["loc"])
            problems.append(Problem(_explain(err, path), filename, lines.line(path), _dotted(path)))
    if problems:
        raise SpecError(f"{filename}: {len(problems)} problem(s)", _by_line(problems)) from None
    for path, message in _semantic_problems(spec):
        problems.append(Problem(message, filename, lines.line(path), _dotted(path)))
    if problems:
        raise SpecError(f"{filename}: {len(problems)} problem(s)", _by_line(problems))
    return spec


def _by_line(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.line or 0, p.key or ""))


def _explain(err: Any, path: tuple[Any, ...]) -> str:
    kind = err["type"]
    key = path[-1] if path else None
    if kind == "extra_forbidden" and isinstance(key, str):
        if key in REMOVED_SPEC_KEYS:
            return f"unknown key {key!r}: {REMOVED_SPEC_KEYS[key]}"
        model = _model_for(path[:-1])
        allowed = sorted(model.model_fields) if model else []
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown key {key!r}{hint} (allowed: {', '.join(allowed)})"
    if kind == "literal_error":
        return f"{err['input']!r} is not allowed; expected {err['ctx']['expected']}"
    if kind == "missing":
        return "required key is missing"
    if kind == "string_pattern_mismatch":
        if key == "name":
            return f"{err['input']!r} is not a valid name: lowercase letters, digits and '-', starting with a letter, at most 32 characters"
        return f"{err['input']!r} is not a version like 1.31.4"
    msg = err["msg"]
    return msg.removeprefix("Value error, ")


def load(path: str | Path) -> ClusterSpec:
    """Read and parse a cluster.yaml file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{p}: no such file", [Problem("no such file (bakery init --provider local > cluster.yaml writes one)", str(p))]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{p}: unreadable", [Problem(f"cannot read: {e}", str(p))]) from None
    return parse(text, str(p))


def json_schema() -> dict[str, Any]:
    """The JSON schema of cluster.yaml (`bakery schema`), for editors and CI linters."""
    schema = ClusterSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "bakery cluster.yaml"
    return schema
