"""moto's server on 127.0.0.1 and real boto3 clients pointed at it, with event hooks.

Tests inject clients through the provider's `client_factory`; every behaviour they
observe goes through botocore's own event system (TESTING.md: no patching):

- `Calls` records each API call (service, operation, the dag step running it);
- `latency` sleeps before each HTTP send (bench/up.py's per-call latency);
- `fail_after` raises `Interrupted` right after the Nth mutating call has succeeded,
  the worst moment for an interruption: the resource exists, bakery never heard of it.
  From then on every call fails, on every thread, as if the process had died;
- `not_yet` answers an operation's first calls with a NotFound error, as EC2 does for a
  resource created a moment ago (eventual consistency), without reaching the server;
- tags are held to EC2's and ELBv2's documented limits, which moto does not enforce: at
  most 50 per resource, keys of at most 128 and values of at most 256 characters, no
  `aws:` prefix (EC2 answers TagLimitExceeded / InvalidParameterValue, ELBv2 TooManyTags /
  ValidationError).

`make_spec` and `fixed_render` give tests and bench/up.py a cluster and a render callback
with fixed user-data (no PKI), so they measure the provider alone.

moto accepts duplicate LB names and ignores ClientToken, so what these tests see about
idempotence is bakery's own doing.

Auto Scaling, where moto is kinder than AWS (`AsgRules`, hooked into every autoscaling
client `Moto.client` makes): moto's CreateAutoScalingGroup silently replaces a group of
the same name (AWS: AlreadyExists); its DeleteAutoScalingGroup deletes a group that still
has instances without ForceDelete (AWS: ResourceInUse); PutLifecycleHook and
SuspendProcesses take a group that does not exist (AWS: ValidationError) and
PutLifecycleHook any HeartbeatTimeout (AWS: 30-7200 s); moto has no CompleteLifecycleAction
and no Terminating:Wait at all. `Lifecycle` plays the group's side of a termination hook:
`terminate(iid)` holds a hooked group's instance in Terminating:Wait (what
DescribeAutoScalingGroups/Instances then report, and the fake IMDS's target lifecycle
state), CompleteLifecycleAction ends it (the instance is terminated and the group starts a
replacement), one for no such action answers ValidationError as AWS does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bakery import spec as spec_mod
from bakery import topology
from bakery.providers.base import LBAddress, RenderedNode
from bakery.render.userdata import encode

MUTATING = ("Create", "Run", "Register", "Deregister", "Authorize", "Attach", "Detach", "Modify",
            "Delete", "Terminate", "Put", "Update", "Suspend", "Resume", "Set", "Complete")
REGION = "us-east-1"


class Interrupted(Exception):
    """Raised by the fault hook: stands in for a crash or Ctrl-C mid-run."""


@dataclass
class Calls:
    """Every call the injected clients made: (service, operation, step)."""

    log: list[tuple[str, str, str | None]] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)  # mutating calls the server carried out
    fail_after: int | None = None
    tripped: bool = False
    not_yet: dict[str, tuple[str, int]] = field(default_factory=dict)  # operation -> (error code, times)
    latency: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def mutating(self) -> list[str]:
        return [op for _, op, _ in self.log if op.startswith(MUTATING)]

    def ops(self) -> list[str]:
        return [op for _, op, _ in self.log]

    def clear(self) -> None:
        with self._lock:
            self.log.clear()

    def _before(self, model: Any, context: dict[str, Any] | None = None, **_: Any) -> Any:
        from bakery.providers.aws import dag

        with self._lock:
            if self.tripped:
                raise Interrupted(f"{model.name}: the process is down (fault injected)")
            self.log.append((model.service_model.service_name, model.name, dag.current()))
            refused = (context or {}).get("bakery_tag_error")
            if refused:
                return _error(refused)
            code, times = self.not_yet.get(model.name, ("", 0))
            if times:
                self.not_yet[model.name] = (code, times - 1)
                return _error(code)
        return None

    def _after(self, model: Any, http_response: Any, **_: Any) -> None:
        if not model.name.startswith(MUTATING) or http_response.status_code >= 300:
            return
        with self._lock:
            self.completed.append(model.name)
            if self.fail_after is not None and len(self.completed) >= self.fail_after:
                self.tripped = True
        if self.tripped:
            raise Interrupted(f"fault injected after mutating call #{self.fail_after}")

    def _params(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        code = tag_problem(model.service_model.service_name, params)
        if code:  # botocore hands the same request context to before-call
            context["bakery_tag_error"] = code

    def _send(self, **_: Any) -> None:
        if self.latency:
            time.sleep(self.latency)

    def hook(self, client: Any) -> Any:
        events = client.meta.events
        events.register("before-parameter-build.*.*", self._params)
        events.register("before-call.*.*", self._before)
        events.register("after-call.*.*", self._after)
        events.register("before-send.*.*", self._send)
        return client


SPEC = """\
name: {name}
provider: aws
masters: {masters}
aws:
  region: us-east-1
  masters: instances
  zones:
    - {{name: us-east-1a, subnet: 10.240.0.0/24}}
    - {{name: us-east-1b, subnet: 10.240.1.0/24}}
    - {{name: us-east-1c, subnet: 10.240.2.0/24}}
"""


def make_spec(name: str = "demo", masters: int = 3, extra: str = "", group: bool = False) -> spec_mod.ClusterSpec:
    """The test cluster: plain instances (today's path), or with `group` an autoscaling group."""
    text = SPEC.format(name=name, masters=masters)
    if group:
        text = text.replace("  masters: instances\n", "  masters: asg\n")
    return spec_mod.parse(text + extra)


def group_render(spec: spec_mod.ClusterSpec, digest: str = "sha256:" + "1" * 64, sink: list[bytes] | None = None):
    """A render callback giving every node the same small user-data (what a group boots)."""
    from bakery import render
    from bakery.node.description import NodeConfig

    def callback(lb: LBAddress) -> dict[str, RenderedNode]:
        plan = topology.plan(spec, lb_dns_names=lb.dns_names, lb_ips=lb.ips)
        ud = render.node_user_data(NodeConfig(spec.name, f"s3://{spec.name}-state", digest).to_json(), "aws")
        if sink is not None:
            sink.append(ud.encoded)
        return {n.name: RenderedNode(n.name, n.address, n.zone, ud) for n in plan.nodes}

    return callback


def fixed_render(spec: spec_mod.ClusterSpec, tag: str = "v1", sink: dict[str, bytes] | None = None):
    """A render callback with fixed user-data per node; master-1's is too big for plain and gzips."""

    def render(lb: LBAddress) -> dict[str, RenderedNode]:
        plan = topology.plan(spec, lb_dns_names=lb.dns_names, lb_ips=lb.ips)
        out = {}
        for n in plan.nodes:
            plain = f"#cloud-config\n# {tag} {n.name} {n.address} {plan.lb.endpoint}\n".encode()
            if n.index == 1:
                plain += b"# " + b"padding " * 2500 + b"\n"  # 20 KB plain, well under 16 KB gzipped
            out[n.name] = RenderedNode(n.name, n.address, n.zone, encode(plain, "aws"))
            if sink is not None:
                sink[n.name] = plain
        return out

    return render


TAGS_MAX, TAG_KEY_MAX, TAG_VALUE_MAX = 50, 128, 256


def tag_problem(service: str, params: dict[str, Any]) -> str | None:
    """The error code EC2 or ELBv2 would answer for the tags in `params`, or None."""
    groups = [spec.get("Tags", []) for spec in params.get("TagSpecifications", [])]
    if isinstance(params.get("Tags"), list):
        groups.append(params["Tags"])
    for tags in groups:
        if len(tags) > TAGS_MAX:
            return "TooManyTags" if service == "elbv2" else "TagLimitExceeded"
        for t in tags:
            key, value = str(t.get("Key", "")), str(t.get("Value", ""))
            if not key or len(key) > TAG_KEY_MAX or len(value) > TAG_VALUE_MAX or key.lower().startswith("aws:"):
                return "ValidationError" if service == "elbv2" else "InvalidParameterValue"
    return None


def _error(code: str, message: str = "") -> tuple[Any, dict[str, Any]]:
    """A (response, parsed) pair as a before-call handler returns it: botocore raises it as
    the ClientError the service would have sent (the mechanism botocore's Stubber uses)."""
    from botocore.awsrequest import AWSResponse

    return AWSResponse("", 400, {}, None), {"Error": {"Code": code, "Message": message or f"{code} (injected)"}}


def _ok() -> tuple[Any, dict[str, Any]]:
    """A success answered by the harness itself (an operation moto lacks)."""
    from botocore.awsrequest import AWSResponse

    return AWSResponse("", 200, {}, None), {"ResponseMetadata": {"HTTPStatusCode": 200}}


class Lifecycle:
    """The instances a hooked group holds in Terminating:Wait: id -> (group, hook name)."""

    def __init__(self, moto: Moto) -> None:
        self.moto = moto
        self.waiting: dict[str, tuple[str, str]] = {}
        self.completed: list[tuple[str, str, str, str]] = []  # (group, hook, instance, result)
        self._lock = threading.Lock()

    def group_of(self, instance_id: str) -> str | None:
        found = self.moto.plain("autoscaling").describe_auto_scaling_instances(InstanceIds=[instance_id])["AutoScalingInstances"]
        return found[0]["AutoScalingGroupName"] if found else None

    def terminate(self, instance_id: str) -> str:
        """What the group does to a member it terminates (scale-in, instance refresh, a
        rollout's TerminateInstanceInAutoScalingGroup): with a termination hook the instance
        waits; without one it goes at once. Returns the lifecycle state it is in."""
        group = self.group_of(instance_id)
        assert group is not None, f"{instance_id} is in no group"
        hooks = [h for h in self.moto.plain("autoscaling").describe_lifecycle_hooks(AutoScalingGroupName=group)["LifecycleHooks"]
                 if h["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"]
        if hooks:
            with self._lock:
                self.waiting[instance_id] = (group, hooks[0]["LifecycleHookName"])
            return "Terminating:Wait"
        self._end(instance_id)
        return "Terminated"

    def _end(self, instance_id: str) -> None:
        self.moto.plain("autoscaling").terminate_instance_in_auto_scaling_group(
            InstanceId=instance_id, ShouldDecrementDesiredCapacity=False)

    def complete(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        iid, group, hook = params.get("InstanceId"), params.get("AutoScalingGroupName"), params.get("LifecycleHookName")
        result = params.get("LifecycleActionResult")
        if result not in ("CONTINUE", "ABANDON"):
            return _error("ValidationError", f"LifecycleActionResult {result!r} is not CONTINUE or ABANDON")
        with self._lock:
            held = self.waiting.get(iid or "")
            if held != (group, hook):
                return _error("ValidationError", f"No active Lifecycle Action found with instance ID {iid}")
            del self.waiting[iid]  # type: ignore[arg-type]
            self.completed.append((group, hook, iid, result))  # type: ignore[arg-type]
        self._end(iid)  # type: ignore[arg-type]
        return _ok()

    def state(self, instance_id: str) -> str | None:
        """The target lifecycle state IMDS reports (autoscaling/target-lifecycle-state)."""
        with self._lock:
            if instance_id in self.waiting:
                return "Terminated"
        return "InService" if self.group_of(instance_id) else None

    def rewrite(self, parsed: dict[str, Any]) -> None:
        """Describe* answers as AWS gives them while an instance waits on the hook."""
        with self._lock:
            waiting = set(self.waiting)
        items = [i for g in parsed.get("AutoScalingGroups", []) for i in g.get("Instances", [])]
        items += parsed.get("AutoScalingInstances", [])
        for i in items:
            if i.get("InstanceId") in waiting:
                i["LifecycleState"] = "Terminating:Wait"


class AsgRules:
    """Auto Scaling's documented errors where moto is kinder (module docstring)."""

    HEARTBEAT = (30, 7200)

    def __init__(self, moto: Moto) -> None:
        self.moto = moto

    def _group(self, group_name: str | None) -> dict[str, Any] | None:
        found = self.moto.plain("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=[group_name or ""])["AutoScalingGroups"]
        return found[0] if found else None

    def _stash(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["bakery_asg_params"] = dict(params)  # the API's own parameters, before serializing

    def before(self, model: Any, context: dict[str, Any] | None = None, **_: Any) -> Any:
        op, body = model.name, (context or {}).get("bakery_asg_params", {})
        name = body.get("AutoScalingGroupName")
        if op == "CreateAutoScalingGroup" and self._group(name) is not None:
            return _error("AlreadyExists", f"AutoScalingGroup by this name already exists - A group with the name {name} already exists")
        if op in ("PutLifecycleHook", "SuspendProcesses", "ResumeProcesses", "UpdateAutoScalingGroup",
                  "DeleteAutoScalingGroup", "AttachLoadBalancerTargetGroups") and self._group(name) is None:
            return _error("ValidationError", f"AutoScalingGroup name not found - AutoScalingGroup '{name}' not found")
        if op == "DeleteAutoScalingGroup" and not body.get("ForceDelete") and self._group(name)["Instances"]:  # type: ignore[index]
            return _error("ResourceInUse", "You cannot delete an AutoScalingGroup while there are instances or pending "
                                           "Spot instance request(s) still in the group.")
        if op == "PutLifecycleHook":
            low, high = self.HEARTBEAT
            if "HeartbeatTimeout" in body and not low <= int(body["HeartbeatTimeout"]) <= high:
                return _error("ValidationError", f"HeartbeatTimeout must be between {low} and {high} seconds")
        if op == "CompleteLifecycleAction":
            return self.moto.lifecycle.complete(body)
        return None

    def after(self, model: Any, parsed: dict[str, Any], **_: Any) -> None:
        if model.name in ("DescribeAutoScalingGroups", "DescribeAutoScalingInstances"):
            self.moto.lifecycle.rewrite(parsed)

    def hook(self, client: Any) -> Any:
        client.meta.events.register("before-parameter-build.autoscaling.*", self._stash)
        client.meta.events.register("before-call.autoscaling.*", self.before)
        client.meta.events.register("after-call.autoscaling.*", self.after)
        return client


class Ec2Rules:
    """What EC2 refuses and moto does not check. An interface endpoint with private DNS (the
    default for an AWS service) needs the VPC's enableDnsSupport and enableDnsHostnames both
    true (EC2 API reference, CreateVpcEndpoint PrivateDnsEnabled); a VPC that CreateVpc made
    has enableDnsHostnames false, and EC2 answers InvalidParameter."""

    def __init__(self, moto: Moto) -> None:
        self.moto = moto

    def _stash(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["bakery_ec2_params"] = dict(params)

    def before(self, model: Any, context: dict[str, Any] | None = None, **_: Any) -> Any:
        params = (context or {}).get("bakery_ec2_params") or {}
        if model.name != "CreateVpcEndpoint" or params.get("VpcEndpointType") != "Interface":
            return None
        if not params.get("PrivateDnsEnabled", True):
            return None
        ec2, vpc = self.moto.plain("ec2"), params.get("VpcId", "")
        for attribute in ("enableDnsSupport", "enableDnsHostnames"):
            key = attribute[0].upper() + attribute[1:]
            if not ec2.describe_vpc_attribute(VpcId=vpc, Attribute=attribute)[key]["Value"]:
                return _error("InvalidParameter", "Enabling private DNS requires both enableDnsSupport and "
                              f"enableDnsHostnames VPC attributes set to true for {vpc}")
        return None

    def hook(self, client: Any) -> Any:
        client.meta.events.register("before-parameter-build.ec2.*", self._stash)
        client.meta.events.register("before-call.ec2.*", self.before)
        return client


class Moto:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._session: Any = None  # one session: its loader caches the service models
        self._plain: dict[str, Any] = {}
        self.lifecycle = Lifecycle(self)
        self.rules = AsgRules(self)
        self.ec2_rules = Ec2Rules(self)

    def plain(self, service: str) -> Any:
        """A client with no hook at all: what the harness itself uses to look at moto."""
        if service not in self._plain:
            self._plain[service] = self._client(service)
        return self._plain[service]

    def reset(self) -> None:
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
        self.lifecycle = Lifecycle(self)

    def _client(self, service: str) -> Any:
        import boto3
        from botocore.config import Config

        if self._session is None:
            self._session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                                  region_name=REGION)
        return self._session.client(service, endpoint_url=self.endpoint,
                                    config=Config(retries={"mode": "adaptive", "max_attempts": 3}))

    def client(self, service: str, calls: Calls | None = None) -> Any:
        c = self._client(service)
        if calls is not None:
            calls.hook(c)  # first: a call the fault hook stops never reaches the rules
        if service == "autoscaling":
            self.rules.hook(c)
        if service == "ec2":
            self.ec2_rules.hook(c)
        return c

    def factory(self, calls: Calls | None = None):
        return lambda service: self.client(service, calls)

    def register_ami(self) -> str:
        """A golden image stand-in (moto's own AMI list is not loaded: it makes every reset slow)."""
        return self.client("ec2").register_image(Name="bakery-test", RootDeviceName="/dev/xvda")["ImageId"]


def _fix_launch_template_versions() -> None:
    """A moto defect, not a kindness: CreateLaunchTemplate keeps UserData as moto's
    Base64EncodedString, CreateLaunchTemplateVersion keeps the raw string, and an
    autoscaling group that launches from such a version fails with HTTP 500 (an
    AssertionError in LaunchTemplateVersion.user_data). EC2 launches from any version;
    so does moto with the string wrapped as CreateLaunchTemplate would have."""
    from moto.core.types import Base64EncodedString
    from moto.ec2.models.launch_templates import LaunchTemplateVersion

    original = LaunchTemplateVersion.user_data
    if getattr(original.fget, "bakery_fixed", False):
        return

    def user_data(self: Any) -> Any:
        raw = self.data.get("UserData")
        if isinstance(raw, str):
            self.data["UserData"] = Base64EncodedString(raw)
        return original.fget(self)

    user_data.bakery_fixed = True  # type: ignore[attr-defined]
    LaunchTemplateVersion.user_data = property(user_data)  # type: ignore[method-assign,assignment]


def start() -> tuple[Any, Moto]:
    """Start moto on a free port of 127.0.0.1. Sets MOTO_EC2_LOAD_DEFAULT_AMIS=false for this process."""
    os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"
    _fix_launch_template_versions()
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one INFO line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, Moto(f"http://{host}:{port}")


@contextlib.contextmanager
def server_process() -> Iterator[Moto]:
    """moto's server as its own process (bench/: no GIL shared with the client under test)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    moto = Moto(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                moto.reset()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"moto_server did not start on 127.0.0.1:{port}") from None
                time.sleep(0.1)
        yield moto
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def moto_session() -> Iterator[Moto]:
    server, moto = start()
    try:
        yield moto
    finally:
        server.stop()


@pytest.fixture
def moto(moto_session: Moto) -> Moto:
    moto_session.reset()
    return moto_session


def record_ami(paths: Any, ami: str, region: str = "us-east-1") -> None:
    """Record `ami` in images.json the way `bakery bake` does (bakery.bake.images)."""
    from bakery.bake import images

    paths.base.mkdir(parents=True, exist_ok=True)
    images.record(paths.images, paths.cluster, {"target": "aws", "name": f"test-{ami}", "image": ami, "region": region,
                                                "amis": {region: ami}})
