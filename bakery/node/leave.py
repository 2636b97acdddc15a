"""`bakery-node leave`: a master going away on purpose takes its etcd member with it.

Run by bakery-node.service's ExecStop (before etcd and the kubelet stop: the unit is
ordered after them), one log line per step, every step bounded, the whole run within
`timeout`; a step that fails is logged and the next one still runs, so a shutdown is
never held up for long:

    1. shutdown   a reboot keeps the member: it comes back with its data dir
    2. lifecycle  EC2: IMDSv2 autoscaling/target-lifecycle-state; `Terminated` means the
                  autoscaling group is terminating this instance and waits on its hook
    3. etcd       under the join lock (join.py): remove this master's own member when the
                  others keep a quorum without it (a learner always may go; the last
                  member, or one whose leaving would cost quorum, stays, and the next
                  replacement removes it: its instance is gone)
    4. store      forget its membership record (members.forget)
    5. complete   CompleteLifecycleAction CONTINUE on the group's hook (group.LEAVE_HOOK),
                  with the instance's own credentials, when step 2 said so
"""

from __future__ import annotations

import logging
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bakery.errors import BakeryError, NodeError
from bakery.etcd import Client, Member, while_unsettled
from bakery.node import members as records
from bakery.node.join import Refused, lock_key, quorum
from bakery.node.lock import LeaseLock
from bakery.topology import Node

log = logging.getLogger("bakery.node.leave")

IMDS = "http://169.254.169.254"
TOKEN_TTL = 60  # seconds; IMDSv2 takes 1-21600


@dataclass(frozen=True)
class Left:
    """What the leave did."""

    removed: int = 0  # the member id removed, 0: none
    forgot: bool = False
    completed: bool = False
    kept: str = ""  # why the member stays, when it does


def plan_leave(me: Node, members: Sequence[Member], healthy: set[int]) -> Member:
    """My member, if removing it is safe for quorum; else Refused with the reason. Pure."""
    mine = next((m for m in members if me.peer_url in m.peer_urls), None)
    if mine is None:
        raise Refused(f"etcd lists no member at my peer URL {me.peer_url}: nothing to remove")
    if mine.is_learner:
        return mine
    voters = [m for m in members if not m.is_learner]
    up = [m for m in voters if m.id in healthy]
    if len(up) < quorum(len(voters)):
        raise Refused(f"no quorum: {len(up)} of {len(voters)} voting members healthy; etcd cannot change its membership")
    left = [m for m in voters if m.id != mine.id]
    if not left:
        raise Refused("I am the last voting member: removing me would end the cluster")
    left_up = [m for m in left if m.id in healthy]
    if len(left_up) < quorum(len(left)):
        down = [m.name or f"{m.id:x}" for m in left if m.id not in healthy]
        raise Refused(f"unsafe for quorum: without me {len(left_up)} of {len(left)} voting members would be healthy, "
                      f"{quorum(len(left))} needed (down: {', '.join(down)})")
    return mine


def target_lifecycle_state(base: str = IMDS, timeout: float = 2.0) -> str | None:
    """The Auto Scaling target lifecycle state from instance metadata (IMDSv2), None when
    this instance is in no group (404) or there is no metadata service."""
    try:
        put = urllib.request.Request(f"{base}/latest/api/token", method="PUT",
                                     headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL)})
        with urllib.request.urlopen(put, timeout=timeout) as r:
            token = r.read().decode()
        get = urllib.request.Request(f"{base}/latest/meta-data/autoscaling/target-lifecycle-state",
                                     headers={"X-aws-ec2-metadata-token": token})
        with urllib.request.urlopen(get, timeout=timeout) as r:
            return r.read().decode().strip() or None
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise NodeError(f"instance metadata answered {e.code} for the target lifecycle state") from None
    except OSError:
        return None


def shutdown_kind(run: Callable[[Sequence[str]], str] | None = None) -> str:
    """"reboot" when systemd has a reboot queued, else "poweroff" (or "unknown" without systemd)."""
    def systemctl(argv: Sequence[str]) -> str:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False).stdout

    try:
        jobs = (run or systemctl)(["systemctl", "list-jobs", "--no-legend", "--no-pager"])
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if any(t in jobs for t in ("reboot.target", "kexec.target", "soft-reboot.target")):
        return "reboot"
    return "poweroff"


def leave(me: Node, cluster: str, store: Any, client: Callable[[Sequence[str]], Client], *,
          lifecycle_state: str | None, complete: Callable[[], None] | None, shutdown: str = "poweroff",
          timeout: float = 240.0, lock_ttl: int = 15) -> Left:
    """Every step of the module's doc after the two look-ups (`shutdown`, `lifecycle_state`);
    `complete()` ends the group's lifecycle action (None: not in a group)."""
    deadline = time.monotonic() + timeout
    terminating = lifecycle_state == "Terminated"
    log.info("%s: leaving (%s; autoscaling target state %s)", me.name, shutdown, lifecycle_state or "none: not in a group")
    removed, forgot, kept = 0, False, ""
    if shutdown == "reboot" and not terminating:
        kept = "a reboot: the member comes back with its data dir"
        log.info("%s: etcd: keeping member (%s)", me.name, kept)
    else:
        try:
            removed = _remove_own_member(me, cluster, store, client, deadline, lock_ttl)
        except Refused as r:
            kept = str(r)
            log.warning("%s: etcd: keeping my member: %s", me.name, kept)
        except Exception as e:  # any failure: logged, and the lifecycle hook is still completed
            kept = str(e) or type(e).__name__
            log.warning("%s: etcd: could not remove my member: %s", me.name, kept)
        if removed:
            try:
                records.forget(store, cluster, me.name, removed)
                forgot = True
                log.info("%s: store: forgot my membership record", me.name)
            except BakeryError as e:
                log.warning("%s: store: could not forget my membership record: %s", me.name, e)
    completed = False
    if terminating and complete is not None:
        try:
            complete()
            completed = True
            log.info("%s: lifecycle: completed the group's termination hook (CONTINUE)", me.name)
        except BakeryError as e:
            log.warning("%s: lifecycle: %s; the hook's heartbeat timeout ends it (CONTINUE)", me.name, e)
    elif terminating:
        log.info("%s: lifecycle: no autoscaling client: the hook's heartbeat timeout ends it", me.name)
    return Left(removed, forgot, completed, kept)


def _remove_own_member(me: Node, cluster: str, store: Any, client: Callable[[Sequence[str]], Client],
                       deadline: float, lock_ttl: int) -> int:
    others = [r.client_url for r in records.records(store, cluster) if r.client_url != me.client_url]
    urls = list(dict.fromkeys([*others, me.client_url]))
    members, healthy = _survey(client, urls)
    plan_leave(me, members, healthy)  # refuse before taking the lock
    live = [m.client_urls[0] for m in members if m.id in healthy and me.peer_url not in m.peer_urls] or urls
    wait = max(deadline - time.monotonic() - 5.0, 1.0)
    with LeaseLock(client, live, lock_key(cluster), me.name, ttl=lock_ttl, wait=wait, poll=0.2, backoff=2.0) as lock:
        members, healthy = _survey(client, live)  # what changed while another node held the lock
        mine = plan_leave(me, members, healthy)
        lock.check()
        with client(live) as c:
            settle = max(min(30.0, deadline - time.monotonic()), 1.0)
            while_unsettled(lambda: c.member_remove(mine.id), settle=settle, poll=0.5)
    log.info("%s: etcd: removed my member %x (%s)", me.name, mine.id, "a learner" if mine.is_learner else "the others keep quorum")
    return mine.id


def _survey(client: Callable[[Sequence[str]], Client], urls: Sequence[str]) -> tuple[list[Member], set[int]]:
    with client(list(urls)) as c:
        members = c.member_list()
        healthy = {m.id for m in members if m.client_urls and not m.is_learner and c.health(m.client_urls[0])}
    return members, healthy


def lifecycle_completer(autoscaling: Any, group_name: str, hook: str, instance_id: str) -> Callable[[], None]:
    """CompleteLifecycleAction for this instance; AWS's errors as one BakeryError line."""

    def complete() -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            autoscaling.complete_lifecycle_action(AutoScalingGroupName=group_name, LifecycleHookName=hook,
                                                  InstanceId=instance_id, LifecycleActionResult="CONTINUE")
        except ClientError as e:
            err = e.response.get("Error", {})
            raise NodeError(f"CompleteLifecycleAction on {group_name}/{hook}: {err.get('Code')}: {err.get('Message')}") from None
        except BotoCoreError as e:
            raise NodeError(f"CompleteLifecycleAction on {group_name}/{hook}: {e}") from None

    return complete


def run(agent: Any, *, imds: str = IMDS, timeout: float = 240.0, shutdown: str | None = None,
        autoscaling: Callable[[str], Any] | None = None) -> Left:
    """The whole `bakery-node leave` for `agent` (bakery.node.agent.Agent): its identity,
    config and store; `autoscaling(region)` makes the Auto Scaling client (default: boto3
    with the instance's own credentials). When the cluster description cannot be read,
    the member stays (the next replacement removes it) and the hook is still completed."""
    from bakery.etcd import Client as EtcdClient
    from bakery.node.ec2 import region_of
    from bakery.providers.aws import group

    ident = agent.identity
    kind = shutdown or shutdown_kind()
    state = None
    if ident.cloud in ("aws", "ec2"):
        try:
            state = target_lifecycle_state(imds)
        except NodeError as e:
            log.warning("%s: lifecycle: %s", ident.instance_id, e)
    try:
        p = agent.prepare()
    except BakeryError as e:
        p = None
        log.warning("%s: cannot read the cluster description (%s): keeping the etcd member", ident.instance_id, e)
    region = (getattr(p.description.spec.provider_spec, "region", None) if p else None) or region_of(ident.zone)
    complete = None
    if state == "Terminated":
        make = autoscaling or _boto3_autoscaling
        try:
            complete = lifecycle_completer(make(region), group.name(agent.config.cluster), group.LEAVE_HOOK, ident.instance_id)
        except BakeryError as e:  # e.g. no boto3 in the image
            log.warning("%s: lifecycle: %s", ident.instance_id, e)
    if p is None:
        if complete is not None:
            try:
                complete()
                log.info("%s: lifecycle: completed the group's termination hook (CONTINUE)", ident.instance_id)
                return Left(completed=True, kept="no cluster description")
            except BakeryError as e:
                log.warning("%s: lifecycle: %s", ident.instance_id, e)
        return Left(kept="no cluster description")
    tls = p.etcd_client_tls()
    return leave(p.me, agent.config.cluster, agent.store, lambda urls: EtcdClient(list(urls), tls, timeout=3.0),
                 lifecycle_state=state, complete=complete, shutdown=kind, timeout=timeout)


def _boto3_autoscaling(region: str) -> Any:
    from bakery.node import ec2

    return ec2.clients(region)("autoscaling")
