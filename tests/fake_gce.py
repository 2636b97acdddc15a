"""A small Compute Engine REST server for tests: keeps state and answers like GCE.

No GCE emulator exists (TESTING.md), so the real google-cloud-compute clients talk to
this one on 127.0.0.1. It holds the resources bakery uses (addresses, firewalls,
instances, region health checks and backend services, instance groups, forwarding
rules, instance templates, images) and behaves as GCE does where bakery depends on it:

- insert of an existing name: 409 `alreadyExists`; get/delete of a missing one: 404 `notFound`;
- references to missing resources: 404; deleting a resource still in use: 400
  `resourceInUseByAnotherResource`; adding a member twice: 400 `memberAlreadyExists`
  (kubernetes/ingress-gce#2587, ansible/ansible#72897), or an instance of another zone or
  network: 400 `invalid`; removing a missing instance: 404 `notFound`
  (hashicorp/terraform-provider-google#56); removing a non-member: 400 `invalid` (GCE's
  exact answer is not documented; the fake refuses so that no caller relies on it);
- one metadata value over 262,144 bytes (or all of them over 512 KB): 400;
- label keys `[a-z][a-z0-9_-]{0,62}`, values `[a-z0-9_-]{0,63}`, at most 64 labels;
  descriptions up to 2,048 characters; an instance without machineType, a boot disk or
  a network interface: 400 `invalid` / `required`; firewall sourceRanges that are not CIDRs: 400;
- addresses and forwarding rules do not keep `labels` given to insert: Google's reference says
  they "can only be added or modified by the setLabels method". Their insert drops them (the
  resource starts with no labels and a labelFingerprint), setLabels sets them;
- setMetadata / setLabels need the current fingerprint (`metadata.fingerprint`,
  `labelFingerprint`, as a get returns them): without it or with a stale one, 412
  `conditionNotMet` ("Supplied fingerprint does not match current metadata fingerprint");
- every mutation returns an Operation (zone, region or global) that is RUNNING for
  `op_seconds`, then DONE; `.../operations/NAME/wait` blocks until then;
- lists take `filter` (`field = value`, `!=`, `:`, several in parentheses ANDed;
  dotted fields such as `labels.bakery-cluster`) and `maxResults`/`pageToken`.

Zonal managed instance groups (instanceGroupManagers: insert/get/list/delete, resize,
setInstanceTemplate, deleteInstances, listManagedInstances) behave as GCE documents them:

- insert needs baseInstanceName, an existing instanceTemplate (404) and a targetSize; it
  creates the zone's instanceGroup of the same name (a name an instance group already holds:
  409 `alreadyExists`), whose description says which manager controls it; autoHealingPolicies'
  initialDelaySec is in [0, 3600] and their health check must exist;
- the group keeps its target size: it creates `<baseInstanceName>-<4 random [a-z0-9]>`
  instances from the template (metadata copied, plus GCE's own `instance-template` and
  `created-by` keys), each CREATING for `boot_seconds` before it is RUNNING; an instance deleted
  or stopped (TERMINATED) behind its back is repaired under the same name (with the group's current template when
  instanceLifecyclePolicy.forceUpdateOnRepair is YES, else the one it was made from);
  isStable and currentActions follow; listManagedInstances is PAGELESS, as GCE's default;
- deleting a template a manager uses: 400 `resourceInUseByAnotherResource` ("The
  instance_template resource '...' is already being used by '.../instanceGroupManagers/M'",
  hashicorp/terraform-provider-google#6277); deleting a manager whose group is a backend:
  the same error naming the backend service (terraform-google-modules/terraform-google-vm#45);
  deleting the managed instanceGroup itself or adding instances to it: 400; deleting the
  manager deletes its instances and its group.

Tests inject faults (an HTTP error, or an operation that ends in an error and creates
nothing) and per-call latency, and count calls by kind (insert, delete, get, list,
action:<verb>, wait).
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import json
import random
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fake_http import serving

BASE = "https://www.googleapis.com/compute/v1/"
METADATA_VALUE_LIMIT = 262_144
METADATA_TOTAL_LIMIT = 512 * 1024
PAGE_MAX = 500

# Collections whose insert ignores `labels`: set only by setLabels (Compute API reference).
LABELS_BY_SET_LABELS = ("addresses", "forwardingRules")
# collection -> scope kind ("global", "regions", "zones") and the resource's `kind`
COLLECTIONS = {
    "addresses": ("regions", "compute#address"),
    "firewalls": ("global", "compute#firewall"),
    "instances": ("zones", "compute#instance"),
    "healthChecks": ("regions", "compute#healthCheck"),
    "backendServices": ("regions", "compute#backendService"),
    "instanceGroups": ("zones", "compute#instanceGroup"),
    "forwardingRules": ("regions", "compute#forwardingRule"),
    "instanceTemplates": ("global", "compute#instanceTemplate"),
    "images": ("global", "compute#image"),
    "instanceGroupManagers": ("zones", "compute#instanceGroupManager"),
    "subnetworks": ("regions", "compute#subnetwork"),
    "routers": ("regions", "compute#router"),
    "routes": ("global", "compute#route"),
}
DEFAULT_REGIONS = ("us-central1", "us-east1", "europe-west1", "asia-east1")
# GCE's `created-by` metadata names the project by number (projects/NUMBER/zones/Z/instanceGroupManagers/M)
PROJECT_NUMBER = "123456789012"
SUFFIX_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
BASE_INSTANCE_NAME_RE = re.compile(r"[a-z][-a-z0-9]{0,57}")

PATH_RE = re.compile(
    r"^/compute/v1/projects/(?P<project>[^/]+)/(?P<scope>global|regions/[^/]+|zones/[^/]+)"
    r"/(?P<collection>[A-Za-z]+)(?:/(?P<name>[^/]+)(?:/(?P<verb>[A-Za-z]+))?)?$"
)
LABEL_KEY_RE = re.compile(r"[a-z][a-z0-9_-]{0,62}")
LABEL_VALUE_RE = re.compile(r"[a-z0-9_-]{0,63}")
LABELS_MAX = 64
DESCRIPTION_MAX = 2048
FILTER_TERM_RE = re.compile(r'^\s*([A-Za-z0-9_.\-]+)\s*(!=|=|:)\s*(?:"([^"]*)"|([^\s()"]+))\s*$')


class GceError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


@dataclass
class Call:
    method: str
    path: str
    kind: str  # insert, delete, get, list, wait, action:<verb>
    collection: str
    name: str | None


@dataclass
class Fault:
    """Make the next matching call fail. `op_error`: accept it, then end its operation in an error."""

    kind: str  # as Call.kind, e.g. "insert" or "action:addInstances"
    collection: str | None = None
    status: int = 503
    op_error: bool = False
    after: int = 0  # let this many matching calls through first
    remaining: int = 1

    def matches(self, call: Call) -> bool:
        if self.remaining <= 0 or call.kind != self.kind or self.collection not in (None, call.collection):
            return False
        if self.after > 0:
            self.after -= 1
            return False
        return True


@dataclass
class _Op:
    body: dict[str, Any]
    done_at: float
    error: dict[str, Any] | None = None
    apply: Any = None  # callable run when the operation completes (e.g. a delayed rollback)


@dataclass
class FakeGCE:
    """`with FakeGCE().running() as gce:` then point clients at `gce.url`."""

    project: str = "test-project"
    latency: float = 0.0  # seconds added to every request
    op_seconds: float = 0.0  # how long each operation stays RUNNING
    page_size: int = PAGE_MAX
    calls: list[Call] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    # (project, scope, collection) -> name -> resource
    store: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = field(default_factory=dict)
    health: dict[str, str] = field(default_factory=dict)  # instance selfLink -> HEALTHY/UNHEALTHY
    boot_seconds: float = 0.0  # how long a managed instance is CREATING before it is RUNNING
    ephemeral_range: str = "10.128.1.0/24"  # where instances without a networkIP get theirs
    seed: int = 0  # managed instances' name suffixes

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._ids = itertools.count(1_000_000_000_000)
        self._ops: dict[str, _Op] = {}
        self._server: ThreadingHTTPServer | None = None
        self._random = random.Random(self.seed)
        # the project's auto-mode `default` network: a subnetwork per region, Private Google Access off
        for i, region in enumerate(DEFAULT_REGIONS):
            self.add_subnetwork(region, cidr=self.ephemeral_range if i == 0 else f"10.{132 + i}.0.0/20")
        # and, as GCE makes with every network, its default route to the internet gateway
        self.add_route("default-route-internet", "0.0.0.0/0")

    # -- lifecycle ---------------------------------------------------------------------

    @contextmanager
    def running(self) -> Iterator[FakeGCE]:
        fake = self

        class Handler(_Handler):
            gce = fake

        with serving(Handler) as self._server:
            yield self

    @property
    def url(self) -> str:
        assert self._server is not None, "use `with fake.running():`"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- test helpers ------------------------------------------------------------------

    def add_subnetwork(self, region: str, name: str = "default", network: str = "default", cidr: str | None = None,
                       private_ip_google_access: bool = False) -> dict[str, Any]:
        """A subnetwork as the project has it (an auto-mode `default` network has one per region,
        with privateIpGoogleAccess false)."""
        with self._lock:
            return self._create(self.project, f"regions/{region}", "subnetworks", {
                "name": name, "network": f"{BASE}projects/{self.project}/global/networks/{network}",
                "ipCidrRange": cidr or self.ephemeral_range, "privateIpGoogleAccess": private_ip_google_access,
                "fingerprint": "AAAAAAAAAAA="})

    def add_router(self, region: str, name: str, network: str = "default", nats: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A Cloud Router, with `nats` as routers.insert takes them (name, sourceSubnetworkIpRangesToNat,
        subnetworks[{name, sourceIpRangesToNat}], natIpAllocateOption)."""
        with self._lock:
            return self._create(self.project, f"regions/{region}", "routers", {
                "name": name, "network": f"{BASE}projects/{self.project}/global/networks/{network}", "nats": nats or []})

    def add_route(self, name: str, dest_range: str, network: str = "default", tags: list[str] | None = None,
                  next_hop: str = "default-internet-gateway") -> dict[str, Any]:
        """A route as routes.insert takes it; `next_hop` names a gateway (GCE's only one is
        default-internet-gateway)."""
        with self._lock:
            return self._create(self.project, "global", "routes", {
                "name": name, "network": f"{BASE}projects/{self.project}/global/networks/{network}",
                "destRange": dest_range, "priority": 1000, "tags": tags or [],
                "nextHopGateway": f"{BASE}projects/{self.project}/global/gateways/{next_hop}"})

    def remove(self, collection: str, name: str) -> None:
        """Delete a project resource (a route, a subnetwork) as its owner would, outside bakery."""
        with self._lock:
            for (_, _, col), items in self.store.items():
                if col == collection and name in items:
                    del items[name]
                    return
            raise KeyError(f"{collection}/{name}")

    def add_image(self, name: str) -> str:
        with self._lock:
            res = self._create(self.project, "global", "images", {"name": name, "status": "READY"})
        return res["selfLink"]

    def count(self, kind: str, collection: str | None = None) -> int:
        with self._lock:
            return sum(1 for c in self.calls if c.kind == kind and collection in (None, c.collection))

    def resources(self, collection: str) -> list[dict[str, Any]]:
        """Every stored resource of one collection, across scopes, after the managers' background work."""
        with self._lock:
            self._reconcile()
            return self._all(collection)

    def _all(self, collection: str) -> list[dict[str, Any]]:
        return [dict(r) for (_, _, col), items in self.store.items() if col == collection for r in items.values()]

    def inventory(self) -> dict[str, list[str]]:
        """collection -> sorted names, for comparing end states."""
        with self._lock:
            self._reconcile()
            out: dict[str, list[str]] = {}
            for (_, _, col), items in self.store.items():
                if col not in ("images", "subnetworks", "routers", "routes"):  # the project's, not a cluster's
                    out.setdefault(col, []).extend(items)
            return {k: sorted(v) for k, v in out.items() if v}

    def members(self, group_name: str) -> list[str]:
        for g in self._all("instanceGroups"):
            if g["name"] == group_name:
                return sorted(_last(m) for m in g["_members"])
        raise KeyError(group_name)

    # -- request handling (called from handler threads) --------------------------------

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
        if self.latency:
            time.sleep(self.latency)
        m = PATH_RE.match(path)
        if not m:
            raise GceError(404, "notFound", f"The requested URL {path} was not found on this server.")
        project, scope, collection, name, verb = m.group("project", "scope", "collection", "name", "verb")
        kind = _call_kind(method, collection, name, verb)
        call = Call(method, path, kind, collection, name)
        with self._lock:
            self.calls.append(call)
            hits = [f for f in self.faults if f.matches(call)]  # every fault counts every call
            fault = hits[0] if hits else None
            if fault:
                fault.remaining -= 1
                if not fault.op_error:
                    raise GceError(fault.status, "backendError", f"Injected fault on {method} {path}")
            self._reconcile()
            if collection == "operations":
                return 200, self._operation(project, scope, name, verb, path)
            if collection not in COLLECTIONS or COLLECTIONS[collection][0] != scope.split("/")[0]:
                raise GceError(404, "notFound", f"The requested URL {path} was not found on this server.")
            key = (project, scope, collection)
            if kind == "list":
                return 200, self._list(key, path, query)
            if kind == "get":
                return 200, _public(self._get(key, name))
            if kind == "insert":
                return 200, self._insert(key, body or {}, fault)
            if kind == "delete":
                return 200, self._delete(key, name, fault)
            return 200, self._action(key, name, verb, body or {}, query, fault)

    # operations

    def _new_op(self, project: str, scope: str, op_type: str, target: str, fault: Fault | None, rollback: Any = None) -> dict[str, Any]:
        op_id = next(self._ids)
        name = f"operation-{op_id}"
        body: dict[str, Any] = {
            "kind": "compute#operation",
            "id": str(op_id),
            "name": name,
            "operationType": op_type,
            "targetLink": target,
            "status": "RUNNING",
            "progress": 0,
            "insertTime": _now(),
            "selfLink": f"{BASE}projects/{project}/{scope}/operations/{name}",
        }
        if scope.startswith("zones/"):
            body["zone"] = f"{BASE}projects/{project}/{scope}"
        elif scope.startswith("regions/"):
            body["region"] = f"{BASE}projects/{project}/{scope}"
        op = _Op(body, time.monotonic() + self.op_seconds)
        if fault and fault.op_error:
            op.error = {"errors": [{"code": "QUOTA_EXCEEDED", "message": f"Injected operation error on {op_type} {_last(target)}"}]}
            op.apply = rollback
        self._ops[name] = op
        if not self.op_seconds:
            self._finish(op)
        return dict(op.body)

    def _finish(self, op: _Op) -> None:
        if op.body["status"] == "DONE":
            return
        op.body.update(status="DONE", progress=100, endTime=_now())
        if op.error:
            op.body["error"] = op.error
            op.body["httpErrorStatusCode"] = 403
            op.body["httpErrorMessage"] = "FORBIDDEN"
            if op.apply:
                op.apply()

    def _operation(self, project: str, scope: str, name: str | None, verb: str | None, path: str) -> dict[str, Any]:
        op = self._ops.get(name or "")
        if op is None or not op.body["selfLink"].endswith(f"projects/{project}/{scope}/operations/{name}"):
            raise GceError(404, "notFound", f"The resource 'projects/{project}/{scope}/operations/{name}' was not found")
        if verb == "wait":
            # GCE's wait returns when the operation is DONE or after about two minutes.
            deadline = min(op.done_at, time.monotonic() + 120)
            self._lock.release()
            try:
                time.sleep(max(0.0, deadline - time.monotonic()))
            finally:
                self._lock.acquire()
        if time.monotonic() >= op.done_at:
            self._finish(op)
        return dict(op.body)

    # storage

    def _create(self, project: str, scope: str, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        res = dict(body)
        res.update(
            kind=COLLECTIONS[collection][1],
            id=str(next(self._ids)),
            creationTimestamp=_now(),
            selfLink=f"{BASE}projects/{project}/{scope}/{collection}/{body['name']}",
        )
        if scope.startswith("zones/"):
            res["zone"] = f"{BASE}projects/{project}/{scope}"
        elif scope.startswith("regions/"):
            res["region"] = f"{BASE}projects/{project}/{scope}"
        self.store.setdefault((project, scope, collection), {})[body["name"]] = res
        return res

    def _get(self, key: tuple[str, str, str], name: str | None) -> dict[str, Any]:
        res = self.store.get(key, {}).get(name or "")
        if res is None:
            raise GceError(404, "notFound", f"The resource 'projects/{key[0]}/{key[1]}/{key[2]}/{name}' was not found")
        return res

    def _find(self, link: str) -> dict[str, Any] | None:
        """A resource by self link or partial URL (projects/P/zones/Z/instances/N)."""
        m = re.search(r"projects/([^/]+)/(global|regions/[^/]+|zones/[^/]+)/([A-Za-z]+)/([^/]+)$", link or "")
        if not m:
            return None
        return self.store.get((m[1], m[2], m[3]), {}).get(m[4])

    def _require(self, link: str, what: str) -> dict[str, Any]:
        res = self._find(link)
        if res is None:
            raise GceError(404, "notFound", f"The resource '{link}' of {what} was not found")
        return res

    def _list(self, key: tuple[str, str, str], path: str, query: dict[str, list[str]]) -> dict[str, Any]:
        items = [_public(r) for r in self.store.get(key, {}).values() if _matches(r, query.get("filter", [""])[0])]
        return {"kind": COLLECTIONS[key[2]][1] + "List", "id": path, **self._page(items, query)}

    def _page(self, items: list[dict[str, Any]], query: dict[str, list[str]]) -> dict[str, Any]:
        """One page of `items` per maxResults/pageToken, with nextPageToken when more remain."""
        size = min(int(query.get("maxResults", [PAGE_MAX])[0]), self.page_size, PAGE_MAX)
        token = query.get("pageToken", [""])[0]
        start = 0
        if token:
            if not token.startswith("page-") or not token[5:].isdigit():
                raise GceError(400, "invalid", f"Invalid value for field 'pageToken': '{token}'.")
            start = int(token[5:])
        out: dict[str, Any] = {"items": items[start : start + size]}
        if start + size < len(items):
            out["nextPageToken"] = f"page-{start + size}"
        return out

    def _insert(self, key: tuple[str, str, str], body: dict[str, Any], fault: Fault | None) -> dict[str, Any]:
        project, scope, collection = key
        name = body.get("name")
        if not name or not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
            raise GceError(400, "invalid", f"Invalid value for field 'resource.name': '{name}'. Must be a match of regex '(?:[a-z](?:[-a-z0-9]{{0,61}}[a-z0-9])?)'")
        if name in self.store.get(key, {}):
            raise GceError(409, "alreadyExists", f"The resource 'projects/{project}/{scope}/{collection}/{name}' already exists")
        _check_labels(body.get("labels"), "resource.labels")
        if len(body.get("description", "")) > DESCRIPTION_MAX:
            raise GceError(400, "invalid", f"Invalid value for field 'resource.description': must be at most {DESCRIPTION_MAX} characters")
        getattr(self, f"_check_{collection}", lambda s, b: None)(scope, body)
        if collection in LABELS_BY_SET_LABELS:
            body = {**body, "labels": {}}
        res = self._create(project, scope, collection, body)
        getattr(self, f"_fill_{collection}", lambda r: None)(res)
        _fingerprint(res)
        return self._new_op(project, scope, "insert", res["selfLink"], fault, rollback=lambda: self._discard(key, name))

    def _discard(self, key: tuple[str, str, str], name: str) -> None:
        """Remove a resource; a manager takes its instances and its instance group with it."""
        res = self.store.get(key, {}).pop(name, None)
        if res is None or key[2] != "instanceGroupManagers":
            return
        instances = self.store.get((key[0], key[1], "instances"), {})
        for entry in res["_managed"]:
            inst = instances.get(entry["name"])
            if inst is not None and inst["id"] == entry.get("id"):
                del instances[entry["name"]]
        self.store.get((key[0], key[1], "instanceGroups"), {}).pop(name, None)

    def _delete(self, key: tuple[str, str, str], name: str | None, fault: Fault | None) -> dict[str, Any]:
        res = self._get(key, name)
        users = self._users(res)
        if users:
            raise GceError(400, "resourceInUseByAnotherResource",
                           f"The {SINGULAR[key[2]]} resource '{res['selfLink'][len(BASE):]}' is already being used by '{users[0][len(BASE):]}'")
        if fault and fault.op_error:
            return self._new_op(key[0], key[1], "delete", res["selfLink"], fault)
        self._discard(key, res["name"])
        if key[2] == "instances":  # GCE drops a deleted instance from its groups
            for (_, _, col), items in self.store.items():
                for group in items.values() if col == "instanceGroups" else ():
                    group["_members"].discard(res["selfLink"])
                    group["size"] = len(group["_members"])
        return self._new_op(key[0], key[1], "delete", res["selfLink"], None)

    def _users(self, res: dict[str, Any]) -> list[str]:
        link = res["selfLink"]
        if res.get("_manager"):  # a managed instance group goes with its manager only
            return [res["_manager"]]
        if res["kind"] == "compute#instanceGroupManager":
            link = res["instanceGroup"]  # backend services name the manager's group
        users = []
        for items in self.store.values():
            for other in items.values():
                refs: list[str] = []
                if other["kind"] == "compute#instanceGroupManager":
                    refs = [other.get("instanceTemplate", "")] + [v.get("instanceTemplate", "") for v in other.get("versions", [])]
                    refs += [p.get("healthCheck", "") for p in other.get("autoHealingPolicies", [])]
                elif other["kind"] == "compute#forwardingRule":
                    refs = [other.get("backendService", "")]
                    if res["kind"] == "compute#address" and other.get("IPAddress") in (res.get("address"), link):
                        users.append(other["selfLink"])
                elif other["kind"] == "compute#backendService":
                    refs = list(other.get("healthChecks", [])) + [b.get("group", "") for b in other.get("backends", [])]
                elif (
                    other["kind"] == "compute#instance"
                    and res["kind"] == "compute#address"
                    and any(n.get("networkIP") == res.get("address") for n in other.get("networkInterfaces", []))
                ):
                    users.append(other["selfLink"])
                if any(_same(r, link) for r in refs):
                    users.append(other["selfLink"])
        return users

    def _action(self, key: tuple[str, str, str], name: str | None, verb: str | None, body: dict[str, Any],
                query: dict[str, list[str]], fault: Fault | None) -> dict[str, Any]:
        res = self._get(key, name)
        if key[2] == "instanceGroupManagers":
            return self._manager_action(key, res, verb, body, query, fault)
        if key[2] == "instanceGroups" and verb in ("addInstances", "removeInstances") and res.get("_manager"):
            raise GceError(400, "invalid", f"Instance group '{res['selfLink'][len(BASE):]}' is managed by "
                                           f"'{res['_manager'][len(BASE):]}': change its instances through the instance group manager")
        if key[2] == "instanceGroups" and verb == "listInstances":
            members = [{"instance": m, "status": "RUNNING"} for m in sorted(res["_members"])]
            return {"kind": "compute#instanceGroupsListInstances", **self._page(members, query)}
        if key[2] == "instanceGroups" and verb == "addInstances":
            new = []
            for ref in body.get("instances", []):
                inst = self._require(ref.get("instance", ""), "instances")
                if inst["zone"] != res["zone"]:
                    raise GceError(400, "invalid", f"Instance '{inst['name']}' is not in zone {_last(res['zone'])} of the instance group")
                nets = [n.get("network", "") for n in inst.get("networkInterfaces", [])]
                if res.get("network") and not any(_same(n, res["network"]) for n in nets):
                    raise GceError(400, "invalid", f"Resource '{inst['selfLink'][len(BASE):]}' is in a different network than '{res['selfLink'][len(BASE):]}'")
                if inst["selfLink"] in res["_members"]:
                    raise GceError(400, "memberAlreadyExists", f"The resource '{inst['selfLink'][len(BASE):]}' is already a member of '{res['selfLink'][len(BASE):]}'")
                new.append(inst["selfLink"])
            res["_members"].update(new)
            res["size"] = len(res["_members"])
            return self._new_op(key[0], key[1], "addInstances", res["selfLink"], fault, rollback=lambda: res["_members"].difference_update(new))
        if key[2] == "instanceGroups" and verb == "removeInstances":
            gone = []
            for ref in body.get("instances", []):
                inst = self._require(ref.get("instance", ""), "instances")
                if inst["selfLink"] not in res["_members"]:
                    raise GceError(400, "invalid", f"The resource '{inst['selfLink'][len(BASE):]}' is not a member of '{res['selfLink'][len(BASE):]}'")
                gone.append(inst["selfLink"])
            res["_members"].difference_update(gone)
            res["size"] = len(res["_members"])
            return self._new_op(key[0], key[1], "removeInstances", res["selfLink"], fault, rollback=lambda: res["_members"].update(gone))
        if key[2] == "instances" and verb == "setMetadata":
            if body.get("fingerprint") != res.get("metadata", {}).get("fingerprint"):
                raise GceError(412, "conditionNotMet", "Supplied fingerprint does not match current metadata fingerprint.")
            self._check_instances(key[1], {"metadata": body, "name": res["name"]}, metadata_only=True)
            res["metadata"] = {k: v for k, v in body.items() if k != "fingerprint"}
            _fingerprint(res)
            return self._new_op(key[0], key[1], "setMetadata", res["selfLink"], fault)
        if key[2] == "subnetworks" and verb == "setPrivateIpGoogleAccess":
            value = body.get("privateIpGoogleAccess")
            if not isinstance(value, bool):
                raise GceError(400, "required", "Required field 'privateIpGoogleAccess' not specified")
            before = res.get("privateIpGoogleAccess", False)
            res["privateIpGoogleAccess"] = value
            return self._new_op(key[0], key[1], "setPrivateIpGoogleAccess", res["selfLink"], fault,
                                rollback=lambda: res.update(privateIpGoogleAccess=before))
        if verb == "setLabels" and "labels" in res:
            if body.get("labelFingerprint") != res.get("labelFingerprint"):
                raise GceError(412, "conditionNotMet", "Labels fingerprint either invalid or resource labels have changed")
            _check_labels(body.get("labels"), "labels")
            res["labels"] = dict(body.get("labels") or {})
            _fingerprint(res)
            return self._new_op(key[0], key[1], "setLabels", res["selfLink"], fault)
        if verb is None and key[2] == "firewalls":  # PATCH: the given fields replace the stored ones
            if body.get("name", res["name"]) != res["name"]:
                raise GceError(400, "invalid", "Invalid value for field 'resource.name': a patch cannot rename")
            self._check_firewalls(key[1], body)
            res.update({k: v for k, v in body.items() if k not in ("id", "selfLink", "creationTimestamp", "kind")})
            return self._new_op(key[0], key[1], "patch", res["selfLink"], fault)
        if key[2] == "backendServices" and verb == "getHealth":
            group = self._require(body.get("group", ""), "backend groups")
            return {
                "kind": "compute#backendServiceGroupHealth",
                "healthStatus": [
                    {"instance": m, "ipAddress": self._find(m)["networkInterfaces"][0]["networkIP"], "healthState": self.health.get(m, "UNHEALTHY")}  # type: ignore[index]
                    for m in sorted(group["_members"])
                ],
            }
        raise GceError(400, "invalid", f"{verb} is not supported on {key[2]} by this fake")

    # per-collection validation and defaults, as GCE applies them

    def _check_instances(self, scope: str, body: dict[str, Any], metadata_only: bool = False) -> None:
        items = body.get("metadata", {}).get("items", [])
        for item in items:
            if not re.fullmatch(r"[a-zA-Z0-9_-]{1,128}", item.get("key", "")):
                raise GceError(400, "invalid", f"Invalid value for field 'resource.metadata.items.key': '{item.get('key')}'")
        for item in items:
            if len(item.get("value", "").encode()) > METADATA_VALUE_LIMIT:
                raise GceError(400, "invalid", f"Invalid value for field 'resource.metadata': metadata value for key '{item.get('key')}' exceeds the {METADATA_VALUE_LIMIT} byte limit")
        if sum(len(i.get("key", "").encode()) + len(i.get("value", "").encode()) for i in items) > METADATA_TOTAL_LIMIT:
            raise GceError(400, "invalid", "Invalid value for field 'resource.metadata': total metadata size exceeds 512 KB")
        if metadata_only:
            return
        for field_name in ("machineType", "disks", "networkInterfaces"):
            if not body.get(field_name):
                raise GceError(400, "required", f"Required field 'resource.{field_name}' not specified")
        if sum(1 for d in body["disks"] if d.get("boot")) != 1:
            raise GceError(400, "invalid", "Invalid value for field 'resource.disks': exactly one boot disk is required")
        for d in body["disks"]:
            _check_labels(d.get("initializeParams", {}).get("labels"), "resource.disks[].initializeParams.labels")
        for disk in body.get("disks", []):
            image = disk.get("initializeParams", {}).get("sourceImage")
            if image:
                self._require(image, "disks[].initializeParams.sourceImage")
        for nic in body.get("networkInterfaces", []):
            ip = nic.get("networkIP")
            for other in self._all("instances"):
                if ip and any(n.get("networkIP") == ip for n in other.get("networkInterfaces", [])):
                    raise GceError(400, "invalid", f"IP address '{ip}' is already being used by instance '{other['name']}'")

    def _check_instanceTemplates(self, scope: str, body: dict[str, Any]) -> None:
        _check_labels(body.get("properties", {}).get("labels"), "resource.properties.labels")
        self._check_instances(scope, body.get("properties", {}))

    def _check_firewalls(self, scope: str, body: dict[str, Any]) -> None:
        for i, r in enumerate(body.get("sourceRanges", [])):
            try:
                ipaddress.ip_network(r, strict=False)
            except ValueError:
                raise GceError(400, "invalid", f"Invalid value for field 'resource.sourceRanges[{i}]': '{r}'. Must be a CIDR address range that is contained in the network.") from None

    def _check_backendServices(self, scope: str, body: dict[str, Any]) -> None:
        for hc in body.get("healthChecks", []):
            self._require(hc, "healthChecks")
        for b in body.get("backends", []):
            self._require(b.get("group", ""), "backends[].group")

    def _check_forwardingRules(self, scope: str, body: dict[str, Any]) -> None:
        if body.get("backendService"):
            self._require(body["backendService"], "backendService")

    def _check_addresses(self, scope: str, body: dict[str, Any]) -> None:
        ip = body.get("address")
        if ip and any(a.get("address") == ip for a in self._all("addresses")):
            raise GceError(400, "invalid", f"IP address '{ip}' is already reserved")

    def _fill_addresses(self, res: dict[str, Any]) -> None:
        if not res.get("address"):
            # GCE picks a free one: internal from the subnetwork, external from its pool
            # (here TEST-NET-3, which is never routed)
            prefix = "10.128.0." if res.get("addressType") == "INTERNAL" else "203.0.113."
            taken = {a.get("address") for a in self._all("addresses")}
            res["address"] = next(f"{prefix}{i}" for i in range(2, 255) if f"{prefix}{i}" not in taken)
        res.setdefault("addressType", "EXTERNAL")
        res["status"] = "RESERVED"

    def _fill_instances(self, res: dict[str, Any]) -> None:
        res["status"] = "RUNNING"
        project = res["selfLink"][len(BASE):].split("/")[1]
        for i, nic in enumerate(res.get("networkInterfaces", [])):
            nic.setdefault("name", f"nic{i}")
            nic.setdefault("network", f"{BASE}projects/{project}/global/networks/default")  # GCE's default
            if not nic.get("subnetwork"):  # an auto-mode network: its subnetwork in the instance's region
                region = "regions/" + _last(res["zone"]).rsplit("-", 1)[0]
                sub = next((x for x in self.store.get((project, region, "subnetworks"), {}).values()
                            if _same(x["network"], nic["network"])), None)
                if sub is not None:
                    nic["subnetwork"] = sub["selfLink"]
            if not nic.get("networkIP"):
                nic["networkIP"] = self._free_ip()

    def _free_ip(self) -> str:
        """An ephemeral internal address: the first of `ephemeral_range` no instance or reservation holds."""
        taken = {a.get("address") for a in self._all("addresses")}
        taken |= {n.get("networkIP") for i in self._all("instances") for n in i.get("networkInterfaces", [])}
        for ip in ipaddress.IPv4Network(self.ephemeral_range).hosts():
            if str(ip) not in taken:
                return str(ip)
        raise GceError(400, "ipSpaceExhausted", f"IP space of '{self.ephemeral_range}' is exhausted")

    # managed instance groups

    def _check_instanceGroupManagers(self, scope: str, body: dict[str, Any]) -> None:
        base = body.get("baseInstanceName")
        if not base:
            raise GceError(400, "required", "Required field 'resource.baseInstanceName' not specified")
        if not BASE_INSTANCE_NAME_RE.fullmatch(base):
            raise GceError(400, "invalid", f"Invalid value for field 'resource.baseInstanceName': '{base}'. Must be a match of regex '[a-z][-a-z0-9]{{0,57}}'")
        if not body.get("instanceTemplate") and not body.get("versions"):
            raise GceError(400, "required", "Required field 'resource.instanceTemplate' not specified")
        for t in [body.get("instanceTemplate")] + [v.get("instanceTemplate") for v in body.get("versions", [])]:
            if t:
                self._require(t, "instanceTemplate")
        size = body.get("targetSize")
        if size is None:
            raise GceError(400, "required", "Required field 'resource.targetSize' not specified")
        if not isinstance(size, int) or size < 0:
            raise GceError(400, "invalid", f"Invalid value for field 'resource.targetSize': '{size}'. Must be greater than or equal to 0")
        project = self.project
        if body["name"] in self.store.get((project, scope, "instanceGroups"), {}):
            raise GceError(409, "alreadyExists", f"The resource 'projects/{project}/{scope}/instanceGroups/{body['name']}' already exists")
        policies = body.get("autoHealingPolicies", [])
        if len(policies) > 1:
            raise GceError(400, "invalid", "Invalid value for field 'resource.autoHealingPolicies': at most one policy is supported")
        for p in policies:
            delay = p.get("initialDelaySec", 300)
            if not 0 <= delay <= 3600:
                raise GceError(400, "invalid", f"Invalid value for field 'resource.autoHealingPolicies[0].initialDelaySec': '{delay}'. Must be from range [0, 3600]")
            if p.get("healthCheck"):
                self._require(p["healthCheck"], "autoHealingPolicies[0].healthCheck")
        policy = body.get("updatePolicy", {})
        for field_name, allowed in (("type", ("PROACTIVE", "OPPORTUNISTIC")), ("minimalAction", ("NONE", "REFRESH", "RESTART", "REPLACE")),
                                    ("mostDisruptiveAllowedAction", ("NONE", "REFRESH", "RESTART", "REPLACE")),
                                    ("replacementMethod", ("SUBSTITUTE", "RECREATE"))):
            if field_name in policy and policy[field_name] not in allowed:
                raise GceError(400, "invalid", f"Invalid value for field 'resource.updatePolicy.{field_name}': '{policy[field_name]}'")
        for i, np in enumerate(body.get("namedPorts", [])):
            if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", np.get("name", "")) or not 1 <= int(np.get("port", 0)) <= 65535:
                raise GceError(400, "invalid", f"Invalid value for field 'resource.namedPorts[{i}]': '{np}'")

    def _fill_instanceGroupManagers(self, res: dict[str, Any]) -> None:
        project, scope = _where(res["selfLink"])
        if res.get("instanceTemplate"):
            res["instanceTemplate"] = self._require(res["instanceTemplate"], "instanceTemplate")["selfLink"]
        template = self._find(res.get("instanceTemplate") or res["versions"][0]["instanceTemplate"]) or {}
        nics = template.get("properties", {}).get("networkInterfaces", [{}])
        group = self._create(project, scope, "instanceGroups", {
            "name": res["name"],
            "description": f"This instance group is controlled by Instance Group Manager '{res['name']}'. To modify instances in this "
                           "group, use the Instance Group Manager API: https://cloud.google.com/compute/docs/reference/latest/instanceGroupManagers",
            "network": nics[0].get("network", f"{BASE}projects/{project}/global/networks/default"),
        })
        group.update(_members=set(), size=0, _manager=res["selfLink"])
        res["instanceGroup"] = group["selfLink"]
        res["updatePolicy"] = {"type": "PROACTIVE", "minimalAction": "REPLACE", "mostDisruptiveAllowedAction": "REPLACE",
                               "maxSurge": {"fixed": 1, "calculated": 1}, "maxUnavailable": {"fixed": 1, "calculated": 1},
                               "replacementMethod": "SUBSTITUTE", **res.get("updatePolicy", {})}
        res["instanceLifecyclePolicy"] = {"forceUpdateOnRepair": "NO", "defaultActionOnFailure": "REPAIR", **res.get("instanceLifecyclePolicy", {})}
        res.setdefault("listManagedInstancesResults", "PAGELESS")
        res["_managed"] = []
        self._reconcile_one(res)

    def _reconcile(self) -> None:
        for (_, _, col), items in list(self.store.items()):
            if col == "instanceGroupManagers":
                for mig in list(items.values()):
                    self._reconcile_one(mig)

    def _reconcile_one(self, mig: dict[str, Any]) -> None:
        """What GCE's manager does in the background: keep the target size, repair what was
        deleted behind its back, finish creating, and report stability."""
        project, scope = _where(mig["selfLink"])
        instances = self.store.setdefault((project, scope, "instances"), {})
        now = time.monotonic()
        entries: list[dict[str, Any]] = mig["_managed"]
        current = mig.get("instanceTemplate") or mig["versions"][0]["instanceTemplate"]
        proactive = mig["updatePolicy"]["type"] == "PROACTIVE"
        for e in list(entries):
            inst = instances.get(e["name"])
            if inst is not None and inst["id"] == e["id"] and inst.get("status") in ("TERMINATED", "STOPPED"):
                del instances[e["name"]]  # stopped behind the group's back: repaired like a deleted one
                inst = None
            if inst is not None and inst["id"] == e["id"]:
                if proactive and not _same(e["template"], current) and e["action"] == "NONE":
                    del instances[e["name"]]  # SUBSTITUTE: a new instance with a new name takes its place
                    entries.remove(e)
                continue
            if inst is not None:  # another instance took the name: GCE cannot recreate it
                continue
            # deleted or gone behind the group's back: repaired under the same name
            force = mig["instanceLifecyclePolicy"].get("forceUpdateOnRepair") == "YES"
            template = current if force or self._find(e["template"]) is None else e["template"]
            self._boot(mig, e, template, now, "RECREATING")
        while len(entries) < mig["targetSize"]:
            name = f"{mig['baseInstanceName']}-{''.join(self._random.choice(SUFFIX_CHARS) for _ in range(4))}"
            if name in instances:
                continue
            e = {"name": name}
            entries.append(e)
            self._boot(mig, e, current, now, "CREATING")
        while len(entries) > mig["targetSize"]:
            e = entries.pop()
            inst = instances.get(e["name"])
            if inst is not None and inst["id"] == e["id"]:
                del instances[e["name"]]
        for e in entries:
            if e["action"] != "NONE" and now >= e["ready_at"]:
                e["action"] = "NONE"
                instances[e["name"]]["status"] = "RUNNING"
        group = self.store[(project, scope, "instanceGroups")][mig["name"]]
        group["_members"] = {instances[e["name"]]["selfLink"] for e in entries}
        group["size"] = len(entries)
        actions = {a: 0 for a in ("abandoning", "creating", "creatingWithoutRetries", "deleting", "none", "recreating",
                                  "refreshing", "restarting", "resuming", "starting", "stopping", "suspending", "verifying")}
        for e in entries:
            actions[e["action"].lower()] += 1
        mig["currentActions"] = actions
        mig["status"] = {
            "isStable": actions["none"] == len(entries) == mig["targetSize"],
            "versionTarget": {"isReached": all(_same(e["template"], current) for e in entries)},
        }

    def _boot(self, mig: dict[str, Any], entry: dict[str, Any], template_link: str, now: float, action: str) -> None:
        """One managed instance from the template: its properties, GCE's two metadata keys, the zone's machine type."""
        project, scope = _where(mig["selfLink"])
        template = self._find(template_link)
        assert template is not None, template_link
        body = json.loads(json.dumps(template["properties"]))
        body["name"] = entry["name"]
        body["machineType"] = f"{BASE}projects/{project}/{scope}/machineTypes/{_last(body.get('machineType', 'n1-standard-1'))}"
        items = [i for i in body.get("metadata", {}).get("items", []) if i.get("key") not in ("instance-template", "created-by")]
        items += [{"key": "instance-template", "value": template["selfLink"][len(BASE):]},
                  {"key": "created-by", "value": f"projects/{PROJECT_NUMBER}/{scope}/instanceGroupManagers/{mig['name']}"}]
        body["metadata"] = {"items": items}
        res = self._create(project, scope, "instances", body)
        self._fill_instances(res)
        _fingerprint(res)
        entry.update(id=res["id"], template=template["selfLink"], ready_at=now + self.boot_seconds,
                     action=action if self.boot_seconds else "NONE")
        if self.boot_seconds:
            res["status"] = "STAGING"

    def _manager_action(self, key: tuple[str, str, str], mig: dict[str, Any], verb: str | None, body: dict[str, Any],
                        query: dict[str, list[str]], fault: Fault | None) -> dict[str, Any]:
        instances = self.store.get((key[0], key[1], "instances"), {})
        if verb == "listManagedInstances":  # PAGELESS: maxResults and pageToken are ignored
            out = []
            for e in mig["_managed"]:
                inst = instances.get(e["name"])
                out.append({"instance": f"{BASE}projects/{key[0]}/{key[1]}/instances/{e['name']}", "id": e["id"], "name": e["name"],
                            "instanceStatus": inst["status"] if inst else "STOPPED", "currentAction": e["action"],
                            "version": {"instanceTemplate": e["template"]}})
            return {"managedInstances": out}
        if verb == "resize":
            raw = query.get("size", [""])[0]
            if not raw.lstrip("-").isdigit() or int(raw) < 0:
                raise GceError(400, "invalid", f"Invalid value for field 'size': '{raw}'. Must be greater than or equal to 0")
            before = mig["targetSize"]
            mig["targetSize"] = int(raw)
            self._reconcile_one(mig)
            return self._new_op(key[0], key[1], "compute.instanceGroupManagers.resize", mig["selfLink"], fault,
                                rollback=lambda: mig.update(targetSize=before))
        if verb == "setInstanceTemplate":
            if not body.get("instanceTemplate"):
                raise GceError(400, "required", "Required field 'instanceTemplate' not specified")
            link = self._require(body["instanceTemplate"], "instanceTemplate")["selfLink"]
            before = mig.get("instanceTemplate")
            mig["instanceTemplate"] = link
            if "versions" in mig:
                mig["versions"] = [{"instanceTemplate": link}]
            return self._new_op(key[0], key[1], "compute.instanceGroupManagers.setInstanceTemplate", mig["selfLink"], fault,
                                rollback=lambda: mig.update(instanceTemplate=before))
        if verb == "deleteInstances":  # the group shrinks by what it deletes
            names = []
            for ref in body.get("instances", []):
                name = _last(ref)
                if not any(e["name"] == name for e in mig["_managed"]) or not _same(ref, f"{BASE}projects/{key[0]}/{key[1]}/instances/{name}"):
                    raise GceError(400, "invalid", f"The resource '{ref}' is not a member of '{mig['selfLink'][len(BASE):]}'")
                names.append(name)
            for name in names:
                e = next(e for e in mig["_managed"] if e["name"] == name)
                mig["_managed"].remove(e)
                if (inst := instances.get(name)) is not None and inst["id"] == e["id"]:
                    del instances[name]
            mig["targetSize"] -= len(names)
            self._reconcile_one(mig)
            return self._new_op(key[0], key[1], "compute.instanceGroupManagers.deleteInstances", mig["selfLink"], fault)
        raise GceError(400, "invalid", f"{verb} is not supported on instanceGroupManagers by this fake")

    def _fill_instanceGroups(self, res: dict[str, Any]) -> None:
        res["_members"] = set()
        res["size"] = 0


class _Handler(BaseHTTPRequestHandler):
    gce: FakeGCE
    protocol_version = "HTTP/1.1"
    # One segment per response: headers and body written separately meet Nagle and
    # delayed ACK, which costs 40 ms a call on keep-alive connections.
    disable_nagle_algorithm = True
    wbufsize = -1

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
            status, payload = self.gce.handle(method, url.path, parse_qs(url.query), body)
        except GceError as e:
            status, payload = e.status, {
                "error": {"code": e.status, "message": e.message, "errors": [{"message": e.message, "domain": "global", "reason": e.reason}]}
            }
        except json.JSONDecodeError as e:
            status, payload = 400, {"error": {"code": 400, "message": f"Invalid JSON payload received. {e}", "errors": [{"reason": "parseError", "domain": "global", "message": str(e)}]}}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PATCH(self) -> None:
        self._serve("PATCH")


SINGULAR = {
    "addresses": "address", "firewalls": "firewall", "instances": "instance", "healthChecks": "health_check",
    "backendServices": "backend_service", "instanceGroups": "instance_group", "forwardingRules": "forwarding_rule",
    "instanceTemplates": "instance_template", "images": "image", "instanceGroupManagers": "instance_group_manager",
}


def _where(link: str) -> tuple[str, str]:
    """(project, scope) of a self link."""
    m = re.search(r"projects/([^/]+)/(global|regions/[^/]+|zones/[^/]+)/", link)
    assert m, link
    return m[1], m[2]


def _call_kind(method: str, collection: str, name: str | None, verb: str | None) -> str:
    if collection == "operations":
        return "wait" if verb == "wait" else "get"
    if verb:
        return f"action:{verb}"
    if name is None:
        return "insert" if method == "POST" else "list"
    return {"GET": "get", "DELETE": "delete"}.get(method, f"action:{method.lower()}")


def _matches(res: dict[str, Any], expr: str) -> bool:
    """GCE list filter: `a = b`, `a != b`, `a : b`, or several `(a = b) (c = d)` ANDed."""
    expr = expr.strip()
    if not expr:
        return True
    terms = re.findall(r"\(([^()]*)\)", expr) if expr.startswith("(") else [expr]
    if expr.startswith("(") and re.sub(r"\([^()]*\)", "", expr).strip():
        raise GceError(400, "invalid", f"Invalid value for field 'filter': '{expr}'. Invalid list filter expression.")
    for term in terms:
        m = FILTER_TERM_RE.match(term)
        if not m:
            raise GceError(400, "invalid", f"Invalid value for field 'filter': '{expr}'. Invalid list filter expression.")
        path, op, value = m[1], m[2], m[3] if m[3] is not None else m[4]
        actual: Any = res
        for part in path.split("."):
            actual = actual.get(part) if isinstance(actual, dict) else None
        if op == ":":
            ok = actual is not None and (value == "*" or value in str(actual))
        else:
            ok = (actual is not None and str(actual) == value) == (op == "=")
        if not ok:
            return False
    return True


def _check_labels(labels: dict[str, str] | None, where: str) -> None:
    for k, v in (labels or {}).items():
        if not LABEL_KEY_RE.fullmatch(k) or not LABEL_VALUE_RE.fullmatch(str(v)):
            raise GceError(400, "invalid", f"Invalid value for field '{where}': '{k}={v}'. Label keys and values may contain only "
                                           "lowercase letters, digits, '_' and '-' (a key starts with a letter), at most 63 characters")
    if len(labels or {}) > LABELS_MAX:
        raise GceError(400, "invalid", f"Invalid value for field '{where}': at most {LABELS_MAX} labels")


def _fingerprint(res: dict[str, Any]) -> None:
    """GCE's optimistic-locking fingerprints: a hash of the labels, and of the metadata."""
    def digest(x: Any) -> str:
        return hashlib.sha256(json.dumps(x, sort_keys=True).encode()).hexdigest()[:12]

    if "labels" in res:
        res["labelFingerprint"] = digest(res["labels"])
    if res.get("kind") == "compute#instance":
        meta = res.setdefault("metadata", {})
        meta["kind"] = "compute#metadata"
        meta["fingerprint"] = digest(meta.get("items", []))


def _public(res: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in res.items() if not k.startswith("_")}


def _same(a: str, b: str) -> bool:
    def tail(x: str) -> str:
        return x[x.find("projects/") :] if "projects/" in x else x

    return bool(a) and tail(a) == tail(b)


def _last(link: str) -> str:
    return link.rstrip("/").rsplit("/", 1)[-1]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00", time.gmtime())
