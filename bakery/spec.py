"""The cluster.yaml model: parsed once, at the edge, into a frozen ClusterSpec.

`load(path)` reads the file and `parse(text, filename)` does the work; bakery/specfile.py
bounds both (size, file type, UTF-8, YAML depth and alias expansion). Every string field
has a grammar (bakery/grammar.py), so nothing that reaches a template can carry a
newline. Every problem is collected and raised together as one SpecError (at most
MAX_PROBLEMS lines), each with the file, the line and the key, and what is allowed there
(STYLE.md #5). Risky but valid settings end up in `ClusterSpec.warnings`. Nothing
downstream re-validates.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from bakery import grammar, specfile, versions
from bakery.errors import Problem, SpecError

# Oldest releases whose flags and APIs the rendered manifests use at all (KubeletConfiguration
# v1beta1 with staticPodPath, the components' --authentication-kubeconfig); what is
# *supported* is the table in bakery/versions.py.
MIN_KUBERNETES = versions.OLDEST_RENDERABLE_KUBERNETES
MIN_ETCD = versions.OLDEST_RENDERABLE_ETCD

# Options of the 2015 guide (and the flags behind them) that current Kubernetes removed, or
# kept only as deprecated aliases bakery refuses. Keyed by flag name; the value says what
# happened to it and what replaces it. Used for the
# spec's extra_args and by bakery.render.lint on rendered manifests.
REMOVED_FLAGS: dict[str, str] = {
    "basic-auth-file": "removed in Kubernetes 1.19; use client certificates (bakery issues admin.kubeconfig)",
    "insecure-port": "removed in Kubernetes 1.24; the API server serves TLS only",
    "insecure-bind-address": "removed in Kubernetes 1.24; the API server serves TLS only",
    "address": "removed from the scheduler and controller-manager in 1.24; use --bind-address",
    "port": "removed from the scheduler and controller-manager; they serve TLS on --secure-port",
    "admission-control": "deprecated since Kubernetes 1.10 (1.37 still takes it, with a warning); use --enable-admission-plugins",
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
# ASCII digits without leading zeros (semver 2.0.0: 1.031.4 is refused, not read as 1.31.4); pydantic's (Rust) `$` is the end of text
VERSION_RE = r"^v?(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,3})$"
# etcd: "8 GiB is a suggested maximum size for normal environments and etcd warns at
# startup if the configured value exceeds it" (etcd.io/docs/v3.5/dev-guide/limit/).
ETCD_QUOTA_MAX = 8 * 1024**3
MAX_PROBLEMS = 20  # lines printed for one spec; the rest are counted
EXTENSION_PREFIX = "x-"  # top-level keys bakery ignores: a place for YAML anchors


class _Model(BaseModel):
    # strict: a number is a number, a string a string. No "3" or 3.0 for 3, no `yes` (a YAML
    # 1.1 boolean) for 1, no 1.37 (a YAML float) for "1.37": parse() names the YAML rule.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)


# Every string that reaches a rendered file has its own grammar (bakery/grammar.py).
Cidr = Annotated[str, AfterValidator(grammar.cidr), Field(description="IPv4 CIDR, e.g. 10.0.0.0/24")]
Ipv4 = Annotated[str, AfterValidator(grammar.ipv4)]
DnsName = Annotated[str, AfterValidator(grammar.dns_name)]
Url = Annotated[str, AfterValidator(grammar.url)]
Registry = Annotated[str, AfterValidator(grammar.registry)]
ImageRef = Annotated[str, AfterValidator(grammar.image_ref)]
Token = Annotated[str, AfterValidator(lambda v: _match(grammar.TOKEN_RE, v, "a token: letters, digits, '.', '_' and '-', 1-128 characters"))]
ZoneName = Annotated[str, AfterValidator(lambda v: _match(grammar.ZONE_RE, v, "a zone name: lowercase letters, digits and '-'"))]
FlagName = Annotated[str, AfterValidator(grammar.flag_name)]
FlagValue = Annotated[str, AfterValidator(grammar.flag_value)]
Text = Annotated[str, AfterValidator(grammar.single_line)]
Port = Annotated[int, Field(ge=1, le=65535)]


def _match(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.match(value):
        raise ValueError(f"{value!r} is not {what}")
    return value


def _cloud_name(what: str, pattern: str) -> Any:
    """A cloud identifier (region, VPC id, project, ...) checked against its documented shape."""
    compiled = re.compile(f"(?:{pattern})" + r"\Z")
    return Annotated[str, AfterValidator(lambda v: _match(compiled, v, what))]


AwsRegion = _cloud_name("an AWS region like us-east-1", r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}")
AwsVpcId = _cloud_name("a VPC id like vpc-0123456789abcdef0", r"vpc-[0-9a-f]{8,17}")
AwsSubnetId = _cloud_name("a subnet id like subnet-0123456789abcdef0", r"subnet-[0-9a-f]{8,17}")
AwsAmi = _cloud_name("an AMI id like ami-0123456789abcdef0", r"ami-[0-9a-f]{8,17}")
AwsInstanceType = _cloud_name("an EC2 instance type like m6i.large", r"[a-z0-9-]{1,32}\.[a-z0-9-]{1,32}")
AwsName = _cloud_name("an IAM/EC2 name: letters, digits and +=,.@_- (1-255)", r"[A-Za-z0-9+=,.@_-]{1,255}|arn:aws[a-z-]*:iam::[0-9]{12}:instance-profile/[A-Za-z0-9+=,.@_/-]{1,128}")
GcpProject = _cloud_name("a GCP project id: 6-30 lowercase letters, digits and '-'", r"([a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]")
GcpRegion = _cloud_name("a GCP region like us-central1", r"[a-z]+(-[a-z]+)+[0-9]{1,2}")
GcpResource = _cloud_name("a GCE resource name (lowercase letters, digits, '-', 1-63) or a projects/... path",
                          r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?|(https://www\.googleapis\.com/compute/v1/)?projects/[a-z0-9.:-]+(/[a-z0-9-]+)+")
GcpMachineType = _cloud_name("a GCE machine type like e2-standard-2", r"[a-z0-9]+(-[a-z0-9]+)*")
GcpServiceAccount = _cloud_name("a service account e-mail or 'default'", r"default|[a-z0-9._%+-]{1,64}@[a-z0-9.-]{1,190}")


class NetworkSpec(_Model):
    """Where the masters live and the cluster's internal ranges."""

    subnet: Cidr = Field("10.240.0.0/24", description="Masters' subnet; addresses are derived from it unless listed")
    first_host: int = Field(10, ge=1, description="Master i gets the subnet's host number first_host + i")
    addresses: list[Ipv4] = Field(default_factory=list, description="Explicit master addresses, one per master, in index order")
    service_cidr: Cidr = Field("10.96.0.0/12", description="Service ClusterIP range; its first address is the kubernetes service")
    pod_cidr: Cidr = Field("10.244.0.0/16", description="Pod range for the controller-manager's node IPAM")
    dns_domain: DnsName = Field("cluster.local", description="Cluster DNS domain (lowercase ASCII DNS name)")


class LoadBalancerSpec(_Model):
    """The API servers' load balancer. Its DNS name and/or IP go into the API server certificate."""

    port: Port = Field(6443, description="Port the load balancer listens on and the API servers serve")
    dns_name: DnsName | None = Field(None, description="Stable DNS name for the API (a CNAME you own); the cloud's own name is added when known")
    ip: Ipv4 | None = Field(None, description="Reserved IP of the load balancer, when known in advance")
    scheme: Literal["internet-facing", "internal"] = "internet-facing"
    allowed_cidrs: list[Cidr] = Field(default_factory=lambda: ["0.0.0.0/0"], min_length=1, description="Who may reach the API port (IPv4 CIDRs)")


class EtcdSpec(_Model):
    """How the masters' etcd members find each other on first boot."""

    bootstrap: Literal["static", "discovery", "discovery-v3", "dns-srv", "store"] = Field(
        "static",
        description="static: initial-cluster from the plan; discovery: a v2 discovery URL; "
        "discovery-v3: etcd 3.6 --discovery-token; dns-srv: --discovery-srv; "
        "store: the first master to claim the state store's bootstrap key starts a one-member cluster, "
        "every other one joins it as a learner (for masters whose addresses are not known in advance). "
        "Default static; store when the masters are a group (gcp.masters: mig) and this key is not set",
    )
    discovery_url: Url | None = Field(None, description="discovery: a full token URL; created by `bakery discovery new` when absent")
    discovery_service: Url = Field("https://discovery.etcd.io", description="discovery: the service `bakery discovery new` asks for a token")
    discovery_endpoints: list[Url] = Field(default_factory=list, description="discovery-v3: the discovery etcd's client URLs")
    discovery_token: Token | None = Field(None, description="discovery-v3: the token; created by `bakery discovery new` when absent")
    srv_domain: DnsName | None = Field(None, description="dns-srv: the domain holding _etcd-server-ssl._tcp records")
    client_port: Port = 2379
    peer_port: Port = 2380
    quota_backend_bytes: int = Field(ETCD_QUOTA_MAX, ge=1024**2, le=ETCD_QUOTA_MAX, description="etcd --quota-backend-bytes (at most etcd's suggested maximum, 8 GiB)")


class ImagesSpec(_Model):
    """Container images. Tags default to the spec's versions."""

    registry: Registry = Field("registry.k8s.io", description="Registry for the Kubernetes and etcd images")
    etcd: ImageRef | None = Field(None, description="Full etcd image reference (default <registry>/etcd:<etcd version>-0)")
    pause: ImageRef | None = Field(None, description="Full pause image reference (default <registry>/pause:3.10)")
    podmaster: ImageRef = Field("ghcr.io/bakery-k8s/podmaster:0.1.0", description="Image built from the repository's Dockerfile")


class ComponentArgs(_Model):
    """Extra flags for one component, name without dashes -> value. Removed 2015 flags are refused."""

    extra_args: dict[FlagName, FlagValue] = Field(
        default_factory=dict, description="Flag name without dashes -> value; flags removed since 2015 (REMOVED_FLAGS) are refused")
    hardening_overrides: list[FlagName] = Field(
        default_factory=list, description="Flags of extra_args that undo bakery's hardening on purpose (e.g. [anonymous-auth]): "
        "without its name here such a flag is refused; with it, every run warns")


class Zone(_Model):
    name: ZoneName
    subnet: Cidr | None = Field(None, description="This zone's subnet (AWS subnets live in one zone); default: network.subnet")


class AwsSpec(_Model):
    region: AwsRegion = "us-east-1"
    zones: list[Zone] = Field(default_factory=lambda: [Zone(name="us-east-1a"), Zone(name="us-east-1b"), Zone(name="us-east-1c")])
    vpc_id: AwsVpcId | None = Field(None, description="Existing VPC; default: a VPC tagged with the cluster")
    subnet_ids: dict[ZoneName, AwsSubnetId] = Field(default_factory=dict, description="Existing subnet per zone name")
    instance_type: AwsInstanceType = "m6i.large"
    image: AwsAmi | None = Field(None, description="AMI id; default: the one `bakery bake` recorded")
    instance_profile: AwsName | None = None
    key_name: Text | None = None
    root_volume_gb: int = Field(40, ge=8)
    endpoint_url: Url | None = Field(None, description="Override for local servers; env BAKERY_AWS_ENDPOINT_URL wins")
    masters: Literal["instances", "asg"] = Field(
        "asg", description="How the masters run. asg (default): one autoscaling group from the cluster's launch template "
        "(min = max = desired = masters, across the zones' subnets, in the load balancer's target group): an instance "
        "that dies is replaced by the group and the replacement joins etcd by itself (bakery-node). A group picks each "
        "instance's address, so etcd must bootstrap without fixed addresses: etcd.bootstrap store (what asg means "
        "when etcd.bootstrap is not given), discovery or discovery-v3. instances: one plain instance per master at the "
        "plan's fixed address (network.first_host / network.addresses); nothing replaces a dead one but a rollout")
    health_check_grace_seconds: int = Field(
        900, ge=60, le=7200, description="asg: seconds after an instance starts before the group acts on its health "
        "checks. The group uses EC2 status checks (HealthCheckType EC2), not the load balancer's: an ELB health check "
        "would terminate a master whose API server is not serving yet (first boot: image pull, etcd join, "
        "certificates), and replace it again, forever; the grace covers a slow first boot")
    metadata_hop_limit: int = Field(
        1, ge=1, le=2, description="IMDSv2 PUT response hop limit on the masters. 1 (default, as kops does for masters): only the "
        "host itself reaches the instance metadata service, so a pod cannot take the instance role's credentials. "
        "2 only if a pod on a master must reach IMDS through the container network (e.g. a cloud controller or CSI "
        "driver without host networking); that lets every pod on the masters read the instance's credentials")

    _zones_of_region = model_validator(mode="before")(lambda data: _default_zones(data, "us-east-1", "{}{}"))


class GcpSpec(_Model):
    project: GcpProject = "my-project"
    region: GcpRegion = "us-central1"
    zones: list[Zone] = Field(default_factory=lambda: [Zone(name="us-central1-a"), Zone(name="us-central1-b"), Zone(name="us-central1-c")])
    network: GcpResource = "default"
    subnetwork: GcpResource | None = None
    machine_type: GcpMachineType = "e2-standard-2"
    image: GcpResource | None = Field(None, description="Image self-link or name; default: the one `bakery bake` recorded")
    service_account: GcpServiceAccount | None = None
    boot_disk_gb: int = Field(40, ge=10)
    endpoint_url: Url | None = Field(None, description="Override for local servers; env BAKERY_GCP_ENDPOINT_URL wins")
    masters: Literal["instances", "mig"] = Field(
        "mig", description="mig (default): one managed instance group per zone, from the cluster's instance template "
        "(the one small user-data), behind the backend service; GCE recreates a master that is deleted or stops, and "
        "the replacement joins etcd by itself. GCE picks the masters' addresses and names "
        "(<cluster>-master-xxxx), so etcd must bootstrap without knowing them: etcd.bootstrap store (the default "
        "with mig), discovery or discovery-v3. instances: plain instances at the plan's fixed addresses "
        "(<cluster>-master-N) in unmanaged groups; nothing replaces one that dies until `bakery up` or a rollout")

    _zones_of_region = model_validator(mode="before")(lambda data: _default_zones(data, "us-central1", "{}-{}"))


# etcd bootstrap modes that work when nobody knows the masters' addresses in advance.
GROUP_BOOTSTRAPS = ("store", "discovery", "discovery-v3")


def _group_needs_store(data: Any, provider: str, section: type[BaseModel], group: str) -> bool:
    """True when the raw mapping asks for `provider` masters in a group (`<provider>.masters: <group>`,
    or that section's default) and names no etcd.bootstrap: such a spec bootstraps through the store."""
    if not isinstance(data, dict) or data.get("provider") != provider:
        return False
    raw = data.get(provider)
    masters = raw.get("masters", section.model_fields["masters"].default) if isinstance(raw, dict) else section.model_fields["masters"].default
    etcd = data.get("etcd", {})
    return masters == group and isinstance(etcd, dict) and "bootstrap" not in etcd


def _group_default_bootstrap(data: Any, provider: str, section: type[BaseModel], group: str) -> Any:
    if _group_needs_store(data, provider, section, group):
        return {**data, "etcd": {**data.get("etcd", {}), "bootstrap": "store"}}
    return data


def _group_problems(spec: ClusterSpec, provider: str, group: str) -> list[tuple[Loc, str]]:
    """Masters in a group (`<provider>.masters: <group>`) sit at addresses the cloud picks and boot one
    shared user-data: a bootstrap that needs fixed addresses, fixed addresses, or per-node user-data cannot work."""
    section = spec.provider_spec
    if spec.provider != provider or getattr(section, "masters", None) != group:
        return []
    out: list[tuple[Loc, str]] = []
    key = f"{provider}.masters: {group}"
    if spec.etcd.bootstrap not in GROUP_BOOTSTRAPS:
        out.append((("etcd", "bootstrap"), f"{spec.etcd.bootstrap} needs the masters' addresses in advance, "
                    f"but {key} lets the cloud pick them: use etcd.bootstrap: store (the default for groups; drop the key), "
                    f"discovery or discovery-v3, or set {provider}.masters: instances"))
    if spec.user_data == "embedded":
        out.append((("user_data",), f"embedded gives each master its own user-data, but every master of "
                    f"{key} boots the group's one template: use user_data: store, or set {provider}.masters: instances"))
    if spec.network.addresses:
        out.append((("network", "addresses"), f"fixed master addresses cannot hold a group: {key} lets the cloud "
                    f"pick them: drop network.addresses, or set {provider}.masters: instances"))
    return out


def _default_zones(data: Any, default_region: str, form: str) -> Any:
    """Without `zones`, the region's zones a, b and c (so `region: eu-west-1` alone works)."""
    if isinstance(data, dict) and "zones" not in data:
        region = data.get("region", default_region)
        if isinstance(region, str):
            return {**data, "zones": [{"name": form.format(region, z)} for z in "abc"]}
    return data


class LocalSpec(_Model):
    """The local provider: systemd-nspawn containers (default) or QEMU VMs on this machine."""

    runtime: Literal["container", "vm"] = Field(
        "container", description="container: systemd-nspawn from the baked root (seconds); vm: QEMU guests (kernel-level fidelity)")
    zones: list[Zone] = Field(default_factory=lambda: [Zone(name="local")])
    memory_mb: int = Field(1536, ge=256, description="Each VM's memory (runtime: vm); its kube-apiserver alone holds about 300 MB")
    cpus: int = Field(1, ge=1)
    image: Text | None = Field(None, description="qcow2 path; default: the one `bakery bake` recorded")
    port_base: int = Field(22000, ge=1024, le=65000, description="First host port for the VMs' forwards on 127.0.0.1")


class StoreSpec(_Model):
    """The state store masters read the cluster's CA material and description from (bakery/store/location.py)."""

    url: str | None = Field(None, description="s3://BUCKET[/prefix] (aws), gs://BUCKET[/prefix] (gcp), file:///absolute/folder "
                            "(local); default: s3://<name>-bakery-<hash of region>, gs://<name>-bakery-<hash of project>, "
                            "file://<build>/<name>/store")
    kms_key_id: str | None = Field(None, description="aws: KMS key id, key ARN or alias ARN for the bucket's default "
                                   "encryption; default SSE-S3")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        from bakery.store.location import check_url

        return None if v is None else check_url(v)

    @field_validator("kms_key_id")
    @classmethod
    def _kms(cls, v: str | None) -> str | None:
        from bakery.store.location import check_kms_key

        return None if v is None else check_kms_key(v)


class ClusterSpec(_Model):
    """One highly available Kubernetes control plane."""

    name: str = Field(pattern=NAME_RE, description="Cluster name: lowercase letters, digits and '-', at most 32 characters")
    provider: Literal["local", "aws", "gcp"]
    masters: int = Field(3, description="Number of masters: 3, 5 or 7")
    kubernetes_version: str = Field(versions.DEFAULT_KUBERNETES, pattern=VERSION_RE,
                                    description="A Kubernetes release of a minor upstream supports: "
                                    + ", ".join(versions.SUPPORTED_MINORS) + " (bakery/versions.py)")
    etcd_version: str = Field("", pattern=r"^$|" + VERSION_RE,
                              description="etcd release; default: the one bakery pairs with kubernetes_version, as kubeadm does")
    allow_unsupported_versions: bool = Field(
        False, description="true: accept a Kubernetes or etcd release outside bakery/versions.py (past upstream end of "
        "life, or not yet run by bakery); warned about on every run")
    election: Literal["builtin", "podmaster"] = Field("builtin", description="builtin: --leader-elect; podmaster: the 2015 lease-holding copier")
    runtime: Literal["static-pods", "systemd"] = Field("static-pods", description="How etcd (and podmaster) run on the node")
    user_data: Literal["store", "embedded"] = Field(
        "store", description="store: every master boots the cluster's one small user-data (cluster, store URL, digest; "
        "nothing secret) and bakery-node fetches the CA material from the state store and issues its own leaves. "
        "embedded: each master's whole file tree, private keys included, inside its own user-data (README "
        "## Embedded user-data says what that exposes)")
    key_algorithm: Literal["ecdsa-p256", "rsa-2048"] = "ecdsa-p256"
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    load_balancer: LoadBalancerSpec = Field(default_factory=LoadBalancerSpec)
    etcd: EtcdSpec = Field(default_factory=EtcdSpec)
    images: ImagesSpec = Field(default_factory=ImagesSpec)
    apiserver: ComponentArgs = Field(default_factory=ComponentArgs)
    scheduler: ComponentArgs = Field(default_factory=ComponentArgs)
    controller_manager: ComponentArgs = Field(default_factory=ComponentArgs)
    store: StoreSpec = Field(default_factory=StoreSpec)
    aws: AwsSpec | None = None
    gcp: GcpSpec | None = None
    local: LocalSpec | None = None
    # Lines about accepted but risky settings (extra_args that undo a hardening); the CLI
    # prints them on stderr. Not part of the file's schema.
    _warnings: tuple[Problem, ...] = PrivateAttr(default=())

    def __eq__(self, other: object) -> bool:
        """Two specs are equal when their fields are: the warnings name the file and line they
        were read from, so the spec inside a published description (re-parsed on a node) equals
        the operator's cluster.yaml although its warnings point elsewhere. (pydantic's own
        __eq__ also compares private attributes.)"""
        if not isinstance(other, BaseModel):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__
    # (unhashable, as before: its lists never hashed)

    # Group masters: without an explicit etcd.bootstrap, the one mode that needs no address.
    _gcp_group_bootstrap = model_validator(mode="before")(lambda data: _group_default_bootstrap(data, "gcp", GcpSpec, "mig"))
    _aws_group_bootstrap = model_validator(mode="before")(lambda data: _group_default_bootstrap(data, "aws", AwsSpec, "asg"))

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
        return _at_least(v, MIN_ETCD, "etcd") if v else v

    @model_validator(mode="after")
    def _paired_etcd(self) -> ClusterSpec:
        """Without etcd_version, the release bakery pairs with the Kubernetes minor."""
        if not self.etcd_version:
            object.__setattr__(self, "etcd_version", versions.default_etcd(self.kubernetes_version))
        return self

    # -- derived, read-only views -------------------------------------------------

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return self._warnings

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
    if not m:  # validated at parse time; a spec built past validation gets an error, not a wrong render
        raise ValueError(f"{v[:40]!r} is not a version (MAJOR.MINOR.PATCH)")
    return int(m[1]), int(m[2]), int(m[3])


def _at_least(v: str, minimum: tuple[int, int], what: str) -> str:
    m = re.match(VERSION_RE, v)
    if m and (int(m[1]), int(m[2])) < minimum:
        raise ValueError(f"{what} {v} is older than the supported minimum {minimum[0]}.{minimum[1]}")
    return v


# -- semantic checks across fields --------------------------------------------------

Loc = tuple[str | int, ...]

# Ports on every master besides the spec's own (API, etcd client and peer).
FIXED_PORTS = {
    2381: "etcd's metrics port",
    10248: "the kubelet's healthz port",
    10250: "the kubelet's API port",
    10257: "kube-controller-manager's secure port",
    10259: "kube-scheduler's secure port",
}
# etcd's IANA ports; a spec that swaps them is a typo waiting to confuse every tool.
ETCD_CLIENT_PORT, ETCD_PEER_PORT = 2379, 2380
# RFC 6335: ports 0-1023 are IANA's system ports, each assigned to a service that a master
# may run (22 ssh in the cloud images, 53 DNS for systemd-resolved, 123 NTP): no component
# bakery renders listens there, except the API on 443, the HTTPS port (the kubernetes
# Service's own port, and what managed clusters serve).
SYSTEM_PORTS_END = 1024
SYSTEM_PORT_NAMES = {22: "ssh", 25: "SMTP", 53: "DNS", 67: "DHCP", 68: "DHCP", 80: "HTTP", 111: "rpcbind", 123: "NTP", 323: "chrony"}
API_SYSTEM_PORTS = (443,)

# Host numbers of a subnet a master may not take: (first usable, reserved at the end, why).
RESERVED_HOSTS: dict[str, tuple[int, int, str]] = {
    # EC2 CreateSubnet: "AWS reserves both the first four and the last IPv4 address in each subnet's CIDR block"
    "aws": (4, 1, "AWS reserves the first four addresses of every subnet (network, VPC router, DNS, future use) and the last"),
    # VPC "Unusable addresses in IPv4 subnet ranges": network, default gateway, second-to-last, broadcast
    "gcp": (2, 2, "GCP reserves the first two addresses of every subnet (network, default gateway) and the last two"),
    "local": (1, 1, "the network and broadcast addresses"),
}
# Prefix lengths a cloud subnet may have: AWS CreateSubnet and CreateVpc take /16 to /28;
# a GCE subnet's primary range is /8 to /29.
SUBNET_PREFIXES: dict[str, tuple[int, int, str]] = {
    "aws": (16, 28, "an AWS VPC or subnet is a /16 to a /28"),
    "gcp": (8, 29, "a GCE subnet's primary range is a /8 to a /29"),
}
# Ranges a masters' subnet may not use, per cloud. AWS takes RFC 1918 or a publicly routable
# range (VPC User Guide, "VPC CIDR blocks"), and puts its instance metadata, DNS and time
# service at 169.254.169.x; GCP lists its "prohibited IPv4 subnet ranges" (0.0.0.0/8,
# 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4, 255.255.255.255/32, and its Private Google Access
# addresses) and accepts 240.0.0.0/4. Local masters live on one machine: loopback and
# link-local work there (tests use 127.0.0.x).
_GOOGLE_ACCESS = (ipaddress.IPv4Network("199.36.153.4/30"), ipaddress.IPv4Network("199.36.153.8/30"))
grammar.SPECIAL_RANGES.update({n: "(Private Google Access's addresses, prohibited in a GCP subnet)" for n in _GOOGLE_ACCESS})
SUBNET_REFUSED: dict[str, tuple[ipaddress.IPv4Network, ...]] = {
    "aws": (grammar.THIS_NETWORK, grammar.LOOPBACK, grammar.LINK_LOCAL, grammar.MULTICAST, grammar.RESERVED, grammar.BROADCAST),
    "gcp": (grammar.THIS_NETWORK, grammar.LOOPBACK, grammar.LINK_LOCAL, grammar.MULTICAST, grammar.BROADCAST, *_GOOGLE_ACCESS),
    "local": (grammar.THIS_NETWORK, grammar.MULTICAST, grammar.RESERVED, grammar.BROADCAST),
}
# Pod and Service addresses are endpoints, which Kubernetes validates: "May not be loopback
# (127.0.0.0/8), link-local (169.254.0.0/16), or link-local multicast (224.0.0.0/24)"
# (core/v1 EndpointAddress.ip); a Service range in any of these, or in 0.0.0.0/8 or the
# multicast block, gives ClusterIPs the kernel treats specially.
K8S_REFUSED = (grammar.THIS_NETWORK, grammar.LOOPBACK, grammar.LINK_LOCAL, grammar.MULTICAST, grammar.BROADCAST)
# Sources a load balancer never sees a packet from.
SOURCE_REFUSED = (grammar.THIS_NETWORK, grammar.LOOPBACK, grammar.LINK_LOCAL, grammar.MULTICAST, grammar.RESERVED, grammar.BROADCAST)
# kube-apiserver refuses a --service-cluster-ip-range of more than 20 host bits ("for
# 32-bit addresses, the mask must be >= 12"). The smallest range bakery can use holds the
# kubernetes Service (its first address) and cluster DNS (its tenth, as bakery renders the
# kubelet's clusterDNS): a /28, 14 usable addresses (kubernetes.io's "Extend Service IP
# Ranges" starts from one).
SERVICE_PREFIX_MIN, SERVICE_PREFIX_MAX = 12, 28
# kube-controller-manager --allocate-node-cidrs gives every Node, each master included, a
# --node-cidr-mask-size(-ipv4) slice of --cluster-cidr (default /24), and exits when the
# cluster CIDR is smaller than one slice.
NODE_CIDR_MASK = 24


def _removed_flag_problems(data: dict[str, Any]) -> list[tuple[Loc, str]]:
    """2015-era flags in extra_args, found on the raw mapping so that they are reported
    together with any other problem in the file."""
    out: list[tuple[Loc, str]] = []
    for component in ("apiserver", "scheduler", "controller_manager"):
        section = data.get(component)
        args = section.get("extra_args") if isinstance(section, dict) else None
        for flag in args if isinstance(args, dict) else ():
            name = str(flag).lstrip("-")
            if name in REMOVED_FLAGS:
                out.append(((component, "extra_args", flag), f"--{name} is {REMOVED_FLAGS[name]}"))
    return out


def _number_problems(lines: specfile.LineMap) -> list[tuple[Loc, str]]:
    """Integers written other than in plain decimal (06443 is octal in YAML 1.1, 64:43 base 60)."""
    out: list[tuple[Loc, str]] = []
    for path, written in lines.scalars("tag:yaml.org,2002:int"):
        if path and isinstance(path[0], str) and path[0].startswith(EXTENSION_PREFIX):
            continue
        try:
            value = yaml.safe_load(written)  # the same resolver: what the loader made of it
        except yaml.YAMLError:
            continue
        if isinstance(value, int) and (problem := grammar.yaml_int_form(written, value)) is not None:
            out.append((path, problem))
    return out


def _text_problems(data: Any, path: Loc = ()) -> list[tuple[Loc, str]]:
    """Every string in the file, keys included, is one line of printable text: a newline
    or control character never reaches a template, whatever the field."""
    out: list[tuple[Loc, str]] = []
    if isinstance(data, dict):
        for k, v in data.items():
            here = (*path, k if isinstance(k, str | int) else str(k))
            if isinstance(k, str):
                out += _single_line(k, here, "key")
            out += _text_problems(v, here)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _text_problems(v, (*path, i))
    elif isinstance(data, str):
        out += _single_line(data, path, "value")
    return out


def _single_line(text: str, path: Loc, what: str) -> list[tuple[Loc, str]]:
    try:
        grammar.single_line(text)
    except ValueError as e:
        return [(path, f"the {what} {e}")]
    return []


def _version_verdicts(spec: ClusterSpec) -> list[tuple[Loc, str]]:
    """Versions outside bakery/versions.py: problems, or warnings with allow_unsupported_versions."""
    out: list[tuple[Loc, str]] = []
    for loc, verdict in ((("kubernetes_version",), versions.check_kubernetes(spec.kubernetes_version)),
                         (("etcd_version",), versions.check_etcd(spec.etcd_version, spec.kubernetes_version))):
        if not verdict.supported:
            out.append((loc, verdict.problem))
    return out


def _semantic_problems(spec: ClusterSpec) -> list[tuple[Loc, str]]:
    """Checks that need several fields at once. Returns (location, message) pairs."""
    out: list[tuple[Loc, str]] = []
    if not spec.allow_unsupported_versions:
        out += [(loc, f"{m}; to run it anyway, set allow_unsupported_versions: true") for loc, m in _version_verdicts(spec)]
    net = spec.network
    zones = spec.zones
    section = spec.provider  # where the zones are: aws.zones, gcp.zones, local.zones
    if not zones:
        out.append(((section, "zones"), "at least one zone is required"))
        return out
    if spec.provider != "local" and getattr(spec, spec.provider) is None:
        out.append(((spec.provider,), f"provider is {spec.provider!r} but the {spec.provider!r} section is missing"))
    out += _zone_problems(spec, section)
    if net.addresses and len(net.addresses) != spec.masters:
        out.append(
            (("network", "addresses"), f"{len(net.addresses)} addresses for {spec.masters} masters: give one per master or none")
        )
    low, high, reserves = RESERVED_HOSTS[spec.provider]
    seen: dict[str, int] = {}
    for i in range(spec.masters):
        zone = zones[i % len(zones)]
        subnet = ipaddress.IPv4Network(zone.subnet or net.subnet)
        if i < len(net.addresses):
            loc: Loc = ("network", "addresses", i)
            addr = ipaddress.IPv4Address(net.addresses[i])
        else:
            loc = ("network", "first_host")
            if net.first_host + i >= subnet.num_addresses - high:
                out.append((loc, f"master {i} would get host number {net.first_host + i}, beyond {subnet}"))
                continue
            addr = subnet.network_address + net.first_host + i
        host = int(addr) - int(subnet.network_address)
        if addr not in subnet:
            out.append((loc, f"{addr} is outside the usable range of master {i}'s subnet {subnet} (zone {zone.name})"))
        elif host < low or host >= subnet.num_addresses - high:
            fix = f"first_host must be at least {low}" if loc[-1] == "first_host" else f"use an address from host number {low} on"
            out.append((loc, f"{addr} (host number {host} of master {i}'s subnet {subnet}) is not usable: {reserves}; {fix}"))
        if str(addr) in seen:
            out.append((loc, f"{addr} is given to masters {seen[str(addr)]} and {i}: addresses must be distinct"))
        seen.setdefault(str(addr), i)
    service = ipaddress.IPv4Network(net.service_cidr)
    pods = ipaddress.IPv4Network(net.pod_cidr)
    if service.overlaps(pods):
        out.append((("network", "service_cidr"), f"{service} overlaps pod_cidr {pods}"))
    node_subnets = {("network", "subnet"): ipaddress.IPv4Network(net.subnet)}
    for i, z in enumerate(zones):
        if z.subnet:
            node_subnets[(section, "zones", i, "subnet")] = ipaddress.IPv4Network(z.subnet)
    for loc, subnet in node_subnets.items():
        for key, other in (("service_cidr", service), ("pod_cidr", pods)):
            if subnet.overlaps(other):
                out.append((("network", key), f"{other} overlaps the masters' subnet {subnet} ({_dotted(loc)}): "
                             "Service and Pod ranges must be apart from node addresses"))
    out += _range_problems(spec, section)
    e = spec.etcd
    if e.bootstrap == "discovery-v3" and not e.discovery_endpoints:
        out.append((("etcd", "discovery_endpoints"), "discovery-v3 needs the discovery etcd's client URLs"))
    if e.bootstrap == "dns-srv" and not e.srv_domain:
        out.append((("etcd", "srv_domain"), "dns-srv needs the domain that holds the SRV records"))
    if e.bootstrap == "discovery" and _version(spec.etcd_version)[:2] >= (3, 7):
        out.append((("etcd", "bootstrap"), f"discovery (the v2 discovery URL) is gone from etcd 3.7: etcd "
                    f"{spec.etcd_version} refuses --discovery. Use store (no external service), discovery-v3 (a "
                    "discovery etcd cluster), static or dns-srv; or etcd_version 3.6 (Kubernetes 1.35 and 1.36 pair with it)"))
    if e.bootstrap == "discovery-v3" and _version(spec.etcd_version)[:2] < (3, 6):
        out.append((("etcd_version",), f"discovery-v3 needs etcd 3.6 or later, not {spec.etcd_version}"))
    out += _port_problems(spec)
    out += _hardening(spec)[0]
    out += _group_problems(spec, "aws", "asg")
    if spec.provider == "local" and spec.local is not None and spec.local.runtime == "vm" and spec.user_data == "store":
        out.append((("user_data",), "local.runtime: vm boots QEMU guests, which cannot reach the host's folder store: "
                    "set `user_data: embedded` (README ## Embedded user-data says what it exposes), or use "
                    "local.runtime: container"))
    out += _group_problems(spec, "gcp", "mig")
    from bakery.store.location import provider_problem

    if store_problem := provider_problem(spec):
        out.append((("store", "url"), store_problem))
    return out


def _zone_problems(spec: ClusterSpec, section: str) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    zones = spec.zones
    first: dict[str, int] = {}
    for i, z in enumerate(zones):
        if z.name in first:
            out.append(((section, "zones", i, "name"), f"zone {z.name} is listed twice (entries {first[z.name]} and {i}): list each zone once"))
        first.setdefault(z.name, i)
    region = getattr(spec.provider_spec, "region", None)
    if region and spec.provider in ("aws", "gcp"):
        for i, z in enumerate(zones):
            # AWS zones are the region plus a letter (us-east-1a); GCE zones the region, '-' and a letter
            if not z.name.startswith(region if spec.provider == "aws" else f"{region}-"):
                out.append(((section, "zones", i, "name"), f"zone {z.name} is not in region {region}"))
    if spec.provider == "aws":
        explicit = [(i, z, ipaddress.IPv4Network(z.subnet)) for i, z in enumerate(zones) if z.subnet]
        for a, (i, za, na) in enumerate(explicit):
            for j, zb, nb in explicit[a + 1 :]:
                if za.name != zb.name and na.overlaps(nb):
                    out.append(((section, "zones", j, "subnet"), f"{nb} overlaps {na} of zone {za.name} (entry {i}): an AWS subnet lives in one zone"))
        aws = spec.provider_spec
        names = {z.name for z in zones}
        for zone in getattr(aws, "subnet_ids", {}):
            if zone not in names:
                out.append(((section, "subnet_ids", zone), f"zone {zone} is not in {section}.zones ({', '.join(sorted(names))})"))
    return out


def _range_problems(spec: ClusterSpec, section: str) -> list[tuple[Loc, str]]:
    """Ranges that cannot work: sizes the cloud or Kubernetes refuse, and addresses that are not unicast."""
    out: list[tuple[Loc, str]] = []
    net = spec.network
    subnets: list[tuple[Loc, str]] = [(("network", "subnet"), net.subnet)]
    subnets += [((section, "zones", i, "subnet"), z.subnet) for i, z in enumerate(spec.zones) if z.subnet]
    who = {"aws": "AWS", "gcp": "GCP", "local": "the local provider"}[spec.provider]
    low, high, reserves = RESERVED_HOSTS[spec.provider]
    masters_in = {loc: 0 for loc, _ in subnets}  # master i lives in zone i mod len(zones)
    for i in range(spec.masters):
        z = i % len(spec.zones)
        masters_in[(section, "zones", z, "subnet") if spec.zones[z].subnet else ("network", "subnet")] += 1
    for loc, text in subnets:
        subnet = ipaddress.IPv4Network(text)
        if (special := grammar.special_range(subnet, SUBNET_REFUSED[spec.provider])) is not None:
            out.append((loc, f"{subnet} overlaps {special}: {who} needs a unicast range for the masters' subnet "
                        "(RFC 1918: 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)"))
        elif spec.provider in SUBNET_PREFIXES and not (
                SUBNET_PREFIXES[spec.provider][0] <= subnet.prefixlen <= SUBNET_PREFIXES[spec.provider][1]):
            out.append((loc, f"{subnet} is a /{subnet.prefixlen}: {SUBNET_PREFIXES[spec.provider][2]}"))
        elif (usable := subnet.num_addresses - low - high) < (count := masters_in[loc]):
            out.append((loc, f"{subnet} holds {max(usable, 0)} usable host address(es) ({reserves}), "
                        f"too few for the {count} master(s) it holds"))
    for key, text in (("service_cidr", net.service_cidr), ("pod_cidr", net.pod_cidr)):
        cidr = ipaddress.IPv4Network(text)
        if (special := grammar.special_range(cidr, K8S_REFUSED)) is not None:
            out.append((("network", key), f"{cidr} overlaps {special}: Kubernetes needs unicast addresses for "
                        f"{'Services' if key == 'service_cidr' else 'Pods'}"))
    service = ipaddress.IPv4Network(net.service_cidr)
    if service.prefixlen > SERVICE_PREFIX_MAX:
        out.append((("network", "service_cidr"), f"{service} holds {service.num_addresses} addresses, too few: the kubernetes "
                    f"Service takes its first and cluster DNS its tenth (.10); at least a /{SERVICE_PREFIX_MAX}"))
    elif service.prefixlen < SERVICE_PREFIX_MIN:
        out.append((("network", "service_cidr"), f"{service} is larger than kube-apiserver accepts: "
                    f"--service-cluster-ip-range must be a /{SERVICE_PREFIX_MIN} or smaller"))
    cm = spec.controller_manager.extra_args
    if cm.get("allocate-node-cidrs", "true").strip().lower() not in ("false", "0", "f"):
        mask_arg = cm.get("node-cidr-mask-size-ipv4", cm.get("node-cidr-mask-size", str(NODE_CIDR_MASK)))
        mask = int(mask_arg) if mask_arg.isdigit() and int(mask_arg) <= 32 else NODE_CIDR_MASK
        pods = ipaddress.IPv4Network(net.pod_cidr)
        nodes = 2 ** (mask - pods.prefixlen) if pods.prefixlen <= mask else 0
        if nodes < spec.masters:
            out.append((("network", "pod_cidr"), f"{pods} holds {nodes} node range(s) of /{mask} (kube-controller-manager "
                        f"--node-cidr-mask-size), too few for {spec.masters} masters, each a Node: at least a "
                        f"/{mask - (spec.masters - 1).bit_length()}"))
    for i, text in enumerate(spec.load_balancer.allowed_cidrs):
        cidr = ipaddress.IPv4Network(text)
        if (special := grammar.special_range(cidr, SOURCE_REFUSED, within=True)) is not None:
            out.append((("load_balancer", "allowed_cidrs", i), f"{cidr} lies in {special}: no client reaches the "
                        "load balancer from there"))
    return out


def _port_problems(spec: ClusterSpec) -> list[tuple[Loc, str]]:
    """The API, etcd client and peer ports differ from each other and from the ports the
    kubelet, scheduler, controller-manager and etcd's metrics listen on."""
    out: list[tuple[Loc, str]] = []
    e = spec.etcd
    used: dict[int, str] = dict(FIXED_PORTS)
    for loc, port, what in ((("load_balancer", "port"), spec.load_balancer.port, "load_balancer.port (the API server's)"),
                            (("etcd", "client_port"), e.client_port, "etcd.client_port"),
                            (("etcd", "peer_port"), e.peer_port, "etcd.peer_port")):
        if port in used:
            out.append((loc, f"port {port} is already {used[port]}; every port on a master must differ"))
        else:
            used[port] = what
    if (e.client_port, e.peer_port) == (ETCD_PEER_PORT, ETCD_CLIENT_PORT):
        out.append((("etcd", "client_port"), f"client and peer ports are swapped: etcd's are {ETCD_CLIENT_PORT} (client) and {ETCD_PEER_PORT} (peer)"))
    for loc, port, allowed in ((("load_balancer", "port"), spec.load_balancer.port, API_SYSTEM_PORTS),
                               (("etcd", "client_port"), e.client_port, ()), (("etcd", "peer_port"), e.peer_port, ())):
        if port < SYSTEM_PORTS_END and port not in allowed:
            name = f" ({SYSTEM_PORT_NAMES[port]}'s)" if port in SYSTEM_PORT_NAMES else ""
            others = f"{', '.join(map(str, allowed))} or " if allowed else ""
            out.append((loc, f"port {port}{name} is an IANA system port (0-1023, RFC 6335), assigned to a service a master "
                        f"may run; use {others}a port from 1024 (the conventional: 6443 for the API, 2379/2380 for etcd)"))
    return out


def _port_warnings(spec: ClusterSpec) -> list[tuple[Loc, str]]:
    """etcd's two ports far from any convention: accepted, with a note."""
    e = spec.etcd
    if (e.client_port, e.peer_port) == (ETCD_CLIENT_PORT, ETCD_PEER_PORT) or e.peer_port == e.client_port + 1:
        return []
    return [(("etcd", "peer_port"), f"etcd's ports {e.client_port} (client) and {e.peer_port} (peer) follow no convention. "
             f"Note: etcd's IANA ports are {ETCD_CLIENT_PORT} and {ETCD_PEER_PORT}, and tools, firewall rules and runbooks "
             "expect those or a pair one apart (peer = client + 1, e.g. 12379/12380)")]


# -- extra_args that undo a hardening (warnings, not errors) ---------------------------


def _true(value: str) -> bool:
    return value.strip().lower() in ("1", "t", "true")  # Go's strconv.ParseBool


def _items(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


# (components, flag, predicate on the value, the hardening it undoes)
WEAKENING: tuple[tuple[tuple[str, ...], str, Any, str], ...] = (
    (("apiserver",), "authorization-mode", lambda v: "AlwaysAllow" in _items(v),
     "authorization by Node,RBAC (CIS: --authorization-mode is not AlwaysAllow)"),
    (("apiserver",), "authorization-mode", lambda v: not {"Node", "RBAC"} <= set(_items(v)) and "AlwaysAllow" not in _items(v),
     "the Node and RBAC authorizers (CIS: --authorization-mode includes Node and RBAC)"),
    (("apiserver",), "anonymous-auth", _true, "anonymous requests refused (CIS: --anonymous-auth=false)"),
    (("apiserver", "scheduler", "controller_manager"), "profiling", _true, "profiling off (CIS: --profiling=false)"),
    (("apiserver", "scheduler", "controller_manager"), "insecure-skip-tls-verify", lambda v: v == "" or _true(v),
     "TLS server verification"),
    (("apiserver",), "token-auth-file", lambda v: bool(v), "no static token file (CIS: --token-auth-file is not set)"),
    (("apiserver",), "enable-admission-plugins", lambda v: "AlwaysAdmit" in _items(v),
     "admission control (CIS: AlwaysAdmit is not enabled)"),
    (("apiserver",), "enable-admission-plugins", lambda v: "NodeRestriction" not in _items(v),
     "the NodeRestriction admission plugin (this value replaces bakery's list; CIS: NodeRestriction is enabled)"),
    (("apiserver",), "disable-admission-plugins",
     lambda v: bool({"NodeRestriction", "ServiceAccount", "NamespaceLifecycle"} & set(_items(v))),
     "the NodeRestriction, ServiceAccount and NamespaceLifecycle admission plugins (CIS)"),
    (("apiserver",), "service-account-lookup", lambda v: not _true(v), "service account token lookup (CIS: --service-account-lookup=true)"),
    (("apiserver", "scheduler", "controller_manager"), "tls-min-version", lambda v: v in ("VersionTLS10", "VersionTLS11"),
     "TLS 1.2 as the minimum version"),
    (("scheduler", "controller_manager"), "bind-address", lambda v: v not in ("127.0.0.1", "::1"),
     "serving only on 127.0.0.1 (CIS: --bind-address=127.0.0.1)"),
    (("controller_manager",), "use-service-account-credentials", lambda v: not _true(v),
     "one credential per controller (CIS: --use-service-account-credentials=true)"),
    (("controller_manager",), "feature-gates", lambda v: "RotateKubeletServerCertificate=false" in v.replace(" ", ""),
     "kubelet serving certificate rotation (CIS: RotateKubeletServerCertificate=true)"),
)


# Flags that name a file or folder a component reads or writes (from each component's
# reference page, bakery/reference). Their values must be files bakery manages: a path
# elsewhere on the host (`tls-cert-file: /etc/shadow`) is an override of bakery's hardening.
PATH_FLAGS = frozenset({
    "admission-control-config-file", "audit-log-path", "audit-policy-file", "audit-webhook-config-file",
    "authentication-config", "authentication-kubeconfig", "authentication-token-webhook-config-file",
    "authorization-config", "authorization-kubeconfig", "authorization-policy-file", "authorization-webhook-config-file",
    "cert-dir", "client-ca-file", "cloud-config", "cluster-signing-cert-file", "cluster-signing-key-file",
    "cluster-signing-kube-apiserver-client-cert-file", "cluster-signing-kube-apiserver-client-key-file",
    "cluster-signing-kubelet-client-cert-file", "cluster-signing-kubelet-client-key-file",
    "cluster-signing-kubelet-serving-cert-file", "cluster-signing-kubelet-serving-key-file",
    "cluster-signing-legacy-unknown-cert-file", "cluster-signing-legacy-unknown-key-file", "config",
    "debug-socket-path", "egress-selector-config-file", "encryption-provider-config", "etcd-cafile", "etcd-certfile",
    "etcd-keyfile", "flex-volume-plugin-dir", "kubeconfig", "kubelet-certificate-authority", "kubelet-client-certificate",
    "kubelet-client-key", "leader-migration-config", "oidc-ca-file", "peer-ca-file", "proxy-client-cert-file",
    "proxy-client-key-file", "pv-recycler-pod-template-filepath-hostpath", "pv-recycler-pod-template-filepath-nfs",
    "requestheader-client-ca-file", "root-ca-file", "service-account-key-file", "service-account-private-key-file",
    "service-account-signing-key-file", "tls-cert-file", "tls-private-key-file", "tls-sni-cert-key", "token-auth-file",
    "tracing-config-file", "write-config-to",
})
# What bakery renders and mounts for the control plane (bakery/render): its folder and the audit log.
MANAGED_ROOTS = ("/etc/kubernetes/",)
MANAGED_FILES = ("/var/log/kube-apiserver-audit.log",)


def _paths(flag: str, value: str) -> list[str]:
    """The paths in a path flag's value: tls-sni-cert-key is certfile,keyfile[:domains]."""
    if flag == "tls-sni-cert-key":
        value = value.split(":", 1)[0]
    if flag == "audit-log-path" and value.strip() == "-":  # "-" is standard out
        return []
    return [v.strip() for v in value.split(",")] if flag in ("tls-sni-cert-key", "service-account-key-file") else [value.strip()]


def _undone(component: str, flag: str, value: str) -> str | None:
    """The hardening `--flag=value` undoes on `component`, or None."""
    for components, name, weakens, hardening in WEAKENING:
        if component in components and flag == name and weakens(value):
            return hardening
    if flag in PATH_FLAGS:
        outside = [p for p in _paths(flag, value) if not grammar.managed_path(p, MANAGED_ROOTS, MANAGED_FILES)]
        if outside:
            return (f"every file a component reads is one bakery renders under {', '.join(MANAGED_ROOTS)} "
                    f"({_short(outside[0], 60)} is not)")
    return None


def _hardening(spec: ClusterSpec) -> tuple[list[tuple[Loc, str]], list[tuple[Loc, str]]]:
    """(problems, warnings): an extra_arg that undoes bakery's hardening is refused unless its
    component's hardening_overrides names it, and then warned about on every run; an override
    that overrides nothing is refused (it would silently allow a later change)."""
    problems: list[tuple[Loc, str]] = []
    warnings: list[tuple[Loc, str]] = []
    for component in ("apiserver", "scheduler", "controller_manager"):
        section: ComponentArgs = getattr(spec, component)
        overrides = set(section.hardening_overrides)
        for flag, value in section.extra_args.items():
            hardening = _undone(component, flag, value)
            if hardening is None:
                continue
            loc: Loc = (component, "extra_args", flag)
            head = f"--{flag}={_cut(value, 80)} undoes bakery's hardening: {hardening}"
            if flag in overrides:
                warnings.append((loc, f"{head} (overridden on purpose: {component}.hardening_overrides)"))
            else:
                problems.append((loc, f"{head}; to do it on purpose, list it: {component}.hardening_overrides: [{flag}]"))
        for i, flag in enumerate(section.hardening_overrides):
            if flag not in section.extra_args or _undone(component, flag, section.extra_args[flag]) is None:
                problems.append(((component, "hardening_overrides", i), f"{flag} is listed but {component}.extra_args "
                                 f"does not undo a hardening with it; drop it from the list"))
    return problems, warnings


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


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")


def _dotted(path: tuple[Any, ...]) -> str:
    """network.addresses[2]; a key that is not plain is shown quoted and cut (never a raw newline)."""
    out = ""
    for p in path:
        if p == "[key]":  # pydantic's marker for "the key itself" of a dict entry
            continue
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and _PLAIN_KEY.match(p):
            out += f".{p}" if out else p
        else:
            out += f"[{_short(p, 40)}]"
    return out


def parse(text: str, filename: str = "cluster.yaml") -> ClusterSpec:
    """Parse and validate cluster.yaml text. Raises SpecError listing every problem
    (at most MAX_PROBLEMS lines, then a count of the rest)."""
    doc = specfile.compose(text, filename)
    data, lines = doc.data, doc.lines
    if not isinstance(data, dict):
        raise SpecError(f"{filename}: not a mapping", [Problem("the file must be a YAML mapping (name: ..., provider: ...)", filename, 1)])
    found: dict[str, Problem] = {}

    def add(path: Loc, message: str) -> None:
        key = _dotted(path)
        found.setdefault(key, Problem(message, filename, lines.line(path), key))  # one line per key: the first reason

    for path, message in _text_problems(data) + _removed_flag_problems(data) + _number_problems(lines):
        add(path, message)
    # Top-level keys starting with "x-" are free for YAML anchors that merge keys reuse
    # (`x-defaults: &d {...}` then `<<: *d`), as in Compose files; bakery ignores them.
    data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith(EXTENSION_PREFIX))}
    try:
        spec = ClusterSpec.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            path = tuple(err["loc"])
            add(path, _explain(err, path, lines))
        _raise(filename, found)
        raise AssertionError("unreachable") from None
    _raise(filename, found)
    for path, message in _semantic_problems(spec):
        add(path, message)
    _raise(filename, found)
    warnings = _hardening(spec)[1] + _port_warnings(spec)
    if spec.allow_unsupported_versions:
        warnings += [(loc, f"{m} (accepted: allow_unsupported_versions is true)") for loc, m in _version_verdicts(spec)]
    spec._warnings = tuple(Problem(m, filename, lines.line(p), _dotted(p)) for p, m in warnings)
    return spec


def _raise(filename: str, found: dict[str, Problem]) -> None:
    if not found:
        return
    problems = _by_line(list(found.values()))
    shown = problems[:MAX_PROBLEMS]
    if len(problems) > MAX_PROBLEMS:
        shown.append(Problem(f"... and {len(problems) - MAX_PROBLEMS} more problem(s)", filename))
    raise SpecError(f"{filename}: {len(problems)} problem(s)", shown)


def _by_line(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.line or 0, p.key or ""))


# pydantic's strict type errors -> what the key takes.
TYPE_WORDS = {
    "int_type": "a whole number", "string_type": "a string", "bool_type": "true or false", "float_type": "a number",
    "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
}


def _printable(written: str | None) -> str | None:
    """The text as written when it fits on one short line, else None (the value's repr is shown)."""
    if written is None or len(written) > 60 or not written.isprintable():
        return None
    return written


def _field(path: tuple[Any, ...]) -> Any:
    if not path or not isinstance(path[-1], str):
        return None
    model = _model_for(path[:-1])
    return model.model_fields.get(path[-1]) if model is not None else None


def _takes(path: tuple[Any, ...], expected: str) -> str:
    """'a whole number from 1 to 65535': the kind, with the field's bounds when it has any."""
    field = _field(path)
    lo = next((m.ge for m in getattr(field, "metadata", ()) if hasattr(m, "ge")), None)
    hi = next((m.le for m in getattr(field, "metadata", ()) if hasattr(m, "le")), None)
    if lo is not None and hi is not None:
        return f"{expected} from {lo} to {hi}"
    if lo is not None:
        return f"{expected} of at least {lo}"
    return expected


def _type_problem(err: Any, path: tuple[Any, ...], lines: specfile.LineMap) -> str | None:
    """A value of the wrong YAML type: what was written, the YAML rule that read it, what the key takes."""
    kind, value = err["type"], err.get("input")
    if kind == "literal_error" and not isinstance(value, str) and not isinstance(value, list | dict):
        return f"{grammar.yaml_reading(_printable(lines.written(path)), value)}; expected {err['ctx']['expected']}"
    expected = TYPE_WORDS.get(kind)
    if expected is None:
        return None
    written = _printable(lines.written(path))
    message = f"{grammar.yaml_reading(written, value)}; expected {_takes(path, expected)}"
    if kind == "int_type" and isinstance(value, str) and grammar.DECIMAL_RE.match(value.strip()):
        message += f": write it without quotes, {value.strip()}"
    elif kind == "int_type" and isinstance(value, float) and value.is_integer():
        message += f": write {int(value)}"
    elif kind == "string_type" and isinstance(value, bool | int | float) and written is not None:
        message += f": quote it, \"{written}\""
    return message


def _explain(err: Any, path: tuple[Any, ...], lines: specfile.LineMap) -> str:
    kind = err["type"]
    key = path[-1] if path else None
    if (typed := _type_problem(err, path, lines)) is not None:
        return typed
    if kind == "extra_forbidden" and isinstance(key, str):
        if key in REMOVED_SPEC_KEYS:
            return f"unknown key {key!r}: {REMOVED_SPEC_KEYS[key]}"
        model = _model_for(path[:-1])
        allowed = sorted(model.model_fields) if model else []
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown key {_short(key)}{hint} (allowed: {', '.join(allowed)})"
    if kind == "literal_error":
        return f"{_short(err['input'])} is not allowed; expected {err['ctx']['expected']}"
    if kind == "missing":
        return "required key is missing"
    if kind == "string_pattern_mismatch":
        if key == "name":
            return f"{_short(err['input'])} is not a valid name: lowercase letters, digits and '-', starting with a letter, at most 32 characters"
        zeros = " (MAJOR.MINOR.PATCH in decimal without leading zeros, as semver writes them)"
        leading = isinstance(err["input"], str) and re.search(r"(?:^v?|\.)0[0-9]", err["input"])
        return f"{_short(err['input'])} is not a version like {versions.DEFAULT_KUBERNETES}" + (zeros if leading else "")
    if kind == "less_than_equal" and key == "quota_backend_bytes":
        return f"{err['input']} is over {ETCD_QUOTA_MAX} (8 GiB), etcd's suggested maximum backend size"
    if kind == "too_short" and isinstance(err.get("input"), list):
        return "the list is empty; give at least one entry"
    msg = err["msg"]
    return _cut(msg.removeprefix("Value error, "), 300)


def _short(value: object, limit: int = 80) -> str:
    """A value quoted for one error line: repr (control characters show as escapes), cut."""
    return _cut(repr(value), limit)


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load(path: str | Path) -> ClusterSpec:
    """Read (bounded: specfile.read) and parse a cluster.yaml file."""
    return parse(specfile.read(path), str(path))


def json_schema() -> dict[str, Any]:
    """The JSON schema of cluster.yaml (`bakery schema`), for editors and CI linters."""
    schema = ClusterSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "bakery cluster.yaml"
    schema["patternProperties"] = {f"^{EXTENSION_PREFIX}": {}}  # anchors for merge keys
    return schema
