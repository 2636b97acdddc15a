"""A small Cloud Storage JSON API (and IAM service-account API) server for tests.

No GCS emulator ships as a package here, so the real google-cloud-storage client (and
bakery's own REST calls to iam.googleapis.com) talk to this one on 127.0.0.1. It keeps
state and answers with GCS's documented errors
(https://cloud.google.com/storage/docs/json_api/v1/status-codes) where bakery depends on
them:

- buckets: insert (`project` required; 400 `invalid` for a name outside GCS's naming
  rules; 409 `conflict` when it exists, "You already own this bucket"; 409 for a name
  another project holds, whose get answers 403 `forbidden`), get (404 `notFound`),
  patch (iamConfiguration.uniformBucketLevelAccess, publicAccessPrevention
  enforced|inherited, versioning, labels; `ifMetagenerationMatch`), delete (409
  `conflict` while any object or noncurrent version remains);
- bucket IAM: getIamPolicy (`optionsRequestedPolicyVersion`; 400 when the policy has
  conditions and a version below 3 is asked for), setIamPolicy (etag must match: 412;
  conditions need version 3 and uniform bucket-level access: 400; allUsers /
  allAuthenticatedUsers under enforced public access prevention: 412; a service
  account this server does not know: 400; a role outside roles/storage.*: 400);
- objects: uploads as the client sends them (uploadType media, multipart, resumable with
  308 for partial chunks), get (metadata, or `alt=media` with x-goog-hash, also under
  /download/), list (prefix, delimiter, versions, maxResults <= 1000, pageToken), delete
  (404 `notFound`; `generation=` removes one version); `ifGenerationMatch` on every write
  (0: only if no live object; 412 `conditionNotMet`); versioning keeps noncurrent
  generations;
- IAM (`/v1/projects/P/serviceAccounts`): create (account id 6-30 characters matching
  [a-z]([-a-z0-9]*[a-z0-9]): 400 INVALID_ARGUMENT; 409 ALREADY_EXISTS), get/delete (404
  NOT_FOUND), list with paging; a deleted account's bucket bindings become
  `deleted:serviceAccount:...?uid=N`, as IAM shows them.

Tests count calls by (method, kind) and inject faults (one HTTP error) without patching.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import google_crc32c

from tests.fake_http import serving

LIST_MAX = 1000
STORAGE_ROLES = {
    "roles/storage.admin", "roles/storage.objectAdmin", "roles/storage.objectCreator", "roles/storage.objectViewer",
    "roles/storage.objectUser", "roles/storage.legacyBucketOwner", "roles/storage.legacyBucketReader",
    "roles/storage.legacyBucketWriter", "roles/storage.legacyObjectOwner", "roles/storage.legacyObjectReader",
}
MEMBER_RE = re.compile(r"^(allUsers|allAuthenticatedUsers|(user|serviceAccount|group|domain|projectOwner|projectEditor|projectViewer|deleted:serviceAccount):\S+|principal(Set)?://\S+)$")
ACCOUNT_ID_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])$")


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str, *, rpc: bool = False) -> None:
        super().__init__(message)
        self.status, self.reason, self.message, self.rpc = status, reason, message, rpc

    def payload(self) -> dict[str, Any]:
        if self.rpc:  # iam.googleapis.com answers in google.rpc.Status form
            return {"error": {"code": self.status, "message": self.message, "status": self.reason}}
        return {"error": {"code": self.status, "message": self.message,
                          "errors": [{"domain": "global", "reason": self.reason, "message": self.message}]}}


def not_met() -> ApiError:
    return ApiError(412, "conditionNotMet", "At least one of the pre-conditions you specified did not hold.")


@dataclass
class Fault:
    """Answer the next matching call with `status` (kind as in FakeGCS.calls, e.g. "object.upload").
    `lost`: carry the call out first, then answer `status`, as when a response is lost on its way."""

    kind: str
    status: int = 503
    remaining: int = 1
    lost: bool = False


@dataclass
class _Version:
    data: bytes
    meta: dict[str, Any]
    generation: int
    metageneration: int = 1
    deleted: float | None = None  # time it became noncurrent


@dataclass
class FakeGCS:
    """`with FakeGCS().running() as gcs:` then point clients at `gcs.url`."""

    project: str = "test-project"
    project_number: str = "123456789012"
    buckets: dict[str, dict[str, Any]] = field(default_factory=dict)
    objects: dict[str, dict[str, list[_Version]]] = field(default_factory=dict)  # bucket -> name -> versions
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    foreign: set[str] = field(default_factory=set)  # bucket names another project owns
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)  # email -> service account
    calls: list[tuple[str, str]] = field(default_factory=list)  # (HTTP method, kind)
    faults: list[Fault] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._gen = itertools.count(int(time.time() * 1_000_000))
        self._ids = itertools.count(100_000_000_000_000_000_000)
        self._uploads: dict[str, dict[str, Any]] = {}
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ---------------------------------------------------------------------

    @contextmanager
    def running(self) -> Iterator[FakeGCS]:
        fake = self

        class Handler(_Handler):
            gcs = fake

        with serving(Handler) as self._server:
            yield self

    @property
    def url(self) -> str:
        assert self._server is not None, "use `with fake.running():`"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- test helpers ------------------------------------------------------------------

    def count(self, kind: str, method: str | None = None) -> int:
        with self._lock:
            return sum(1 for m, k in self.calls if k == kind and method in (None, m))

    def mutations(self) -> list[str]:
        with self._lock:
            return [k for m, k in self.calls if m in ("POST", "PUT", "PATCH", "DELETE")]

    def live(self, bucket: str) -> dict[str, bytes]:
        """name -> bytes of every live object."""
        with self._lock:
            return {n: v[-1].data for n, v in self.objects.get(bucket, {}).items() if v and v[-1].deleted is None}

    def versions(self, bucket: str) -> int:
        with self._lock:
            return sum(len(v) for v in self.objects.get(bucket, {}).values())

    # -- dispatch ----------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], headers: Any, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        kind, handler, args = self._route(method, parts)
        with self._lock:
            self.calls.append((method, kind))
            fault = next((f for f in self.faults if f.kind == kind and f.remaining > 0), None)
            if fault is None:
                return handler(query, headers, raw, *args)
            fault.remaining -= 1
            if fault.lost:
                handler(query, headers, raw, *args)
            raise ApiError(fault.status, "backendError", f"Injected fault on {method} {kind}", rpc=kind.startswith("iam."))

    def _route(self, method: str, p: list[str]) -> tuple[str, Any, tuple[Any, ...]]:
        def nope() -> ApiError:
            return ApiError(404, "notFound", f"Not Found: {method} /{'/'.join(p)}")

        if p[:1] == ["v1"] and len(p) >= 4 and p[1] == "projects" and p[3] == "serviceAccounts":
            project = p[2]
            if len(p) == 4 and method == "POST":
                return "iam.create", self._sa_create, (project,)
            if len(p) == 4 and method == "GET":
                return "iam.list", self._sa_list, (project,)
            if len(p) == 5 and method in ("GET", "DELETE"):
                return f"iam.{method.lower()}", self._sa_get if method == "GET" else self._sa_delete, (project, p[4])
            raise nope()
        if p[:3] == ["upload", "storage", "v1"] and len(p) == 6 and p[3] == "b" and p[5] == "o":
            if method == "POST":
                return "object.upload", self._upload, (p[4],)
            if method == "PUT":
                return "object.upload", self._upload_chunk, (p[4],)
        if p[:3] == ["download", "storage", "v1"] and len(p) == 7 and p[3] == "b" and p[5] == "o" and method == "GET":
            return "object.get", self._object_get, (p[4], p[6], True)
        if p[:2] != ["storage", "v1"] or len(p) < 3 or p[2] != "b":
            raise nope()
        rest = p[3:]
        if not rest:
            if method == "POST":
                return "bucket.insert", self._bucket_insert, ()
            raise nope()
        bucket = rest[0]
        if len(rest) == 1:
            table = {"GET": ("bucket.get", self._bucket_get), "PATCH": ("bucket.patch", self._bucket_patch),
                     "DELETE": ("bucket.delete", self._bucket_delete)}
            if method in table:
                return table[method][0], table[method][1], (bucket,)
            raise nope()
        if rest[1] == "iam" and len(rest) == 2:
            if method == "GET":
                return "bucket.getIamPolicy", self._iam_get, (bucket,)
            if method == "PUT":
                return "bucket.setIamPolicy", self._iam_set, (bucket,)
        if rest[1] == "o" and len(rest) == 2 and method == "GET":
            return "object.list", self._object_list, (bucket,)
        if rest[1] == "o" and len(rest) == 3:
            if method == "GET":
                return "object.get", self._object_get, (bucket, rest[2], False)
            if method == "DELETE":
                return "object.delete", self._object_delete, (bucket, rest[2])
        raise nope()

    # -- buckets -----------------------------------------------------------------------

    def _bucket(self, name: str) -> dict[str, Any]:
        if name in self.foreign:
            raise ApiError(403, "forbidden", "anonymous caller does not have storage.buckets.get access to the Google Cloud Storage bucket. Permission 'storage.buckets.get' denied on resource (or it may not exist).")
        b = self.buckets.get(name)
        if b is None:
            raise ApiError(404, "notFound", "The specified bucket does not exist.")
        return b

    def _bucket_insert(self, q: dict[str, str], h: Any, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        if not q.get("project"):
            raise ApiError(400, "required", "Required parameter: project")
        body = _json(raw)
        name = body.get("name", "")
        if not valid_bucket_name(name):
            raise ApiError(400, "invalid", f"Invalid bucket name: '{name}'")
        if name in self.foreign:
            raise ApiError(409, "conflict", "The requested bucket name is not available. The bucket namespace is shared by all users of the system. Please select a different name and try again.")
        if name in self.buckets:
            raise ApiError(409, "conflict", "You already own this bucket. Please select another name.")
        now = _now()
        bucket: dict[str, Any] = {
            "kind": "storage#bucket", "id": name, "name": name, "selfLink": f"{self.url}/storage/v1/b/{name}",
            "projectNumber": self.project_number, "metageneration": "1", "location": str(body.get("location", "US")).upper(),
            "locationType": "multi-region", "storageClass": body.get("storageClass", "STANDARD"), "timeCreated": now,
            "updated": now, "etag": "CAE=",
            "iamConfiguration": {"uniformBucketLevelAccess": {"enabled": False}, "bucketPolicyOnly": {"enabled": False},
                                 "publicAccessPrevention": "inherited"},
        }
        self._apply(bucket, body)
        self.buckets[name] = bucket
        self.objects[name] = {}
        self.policies[name] = {"version": 1, "etag": "CAE=", "bindings": [
            {"role": "roles/storage.legacyBucketOwner", "members": [f"projectEditor:{q['project']}", f"projectOwner:{q['project']}"]},
            {"role": "roles/storage.legacyBucketReader", "members": [f"projectViewer:{q['project']}"]},
        ]}
        return _ok(bucket)

    def _apply(self, bucket: dict[str, Any], body: dict[str, Any]) -> None:
        """The writable bucket fields of an insert or patch body, checked as GCS checks them."""
        iam = body.get("iamConfiguration") or {}
        pap = iam.get("publicAccessPrevention")
        if pap is not None and pap not in ("enforced", "inherited", "unspecified"):
            raise ApiError(400, "invalid", f"Invalid argument: publicAccessPrevention '{pap}' (enforced or inherited)")
        ubla = iam.get("uniformBucketLevelAccess", iam.get("bucketPolicyOnly"))
        if ubla is not None:
            if not isinstance(ubla, dict) or not isinstance(ubla.get("enabled", False), bool):
                raise ApiError(400, "invalid", "Invalid argument: iamConfiguration.uniformBucketLevelAccess.enabled must be a boolean")
            enabled = bool(ubla.get("enabled"))
            if not enabled and self._has_conditions(bucket.get("name", "")):
                raise ApiError(400, "invalid", "Uniform bucket-level access cannot be disabled while the bucket's IAM policy has conditions.")
            state: dict[str, Any] = {"enabled": enabled}
            if enabled:
                state["lockedTime"] = _now(90 * 86400)
            bucket["iamConfiguration"]["uniformBucketLevelAccess"] = dict(state)
            bucket["iamConfiguration"]["bucketPolicyOnly"] = dict(state)
        if pap is not None:
            bucket["iamConfiguration"]["publicAccessPrevention"] = "inherited" if pap == "unspecified" else pap
        if "versioning" in body:
            v = body["versioning"] or {}
            if not isinstance(v.get("enabled", False), bool):
                raise ApiError(400, "invalid", "Invalid argument: versioning.enabled must be a boolean")
            bucket["versioning"] = {"enabled": bool(v.get("enabled"))}
        if "labels" in body:
            labels = dict(bucket.get("labels", {}))
            for k, v in (body["labels"] or {}).items():
                if v is None:
                    labels.pop(k, None)
                    continue
                if not re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", k) or not re.fullmatch(r"[a-z0-9_-]{0,63}", str(v)):
                    raise ApiError(400, "invalid", f"Invalid argument: label {k}={v}")
                labels[k] = v
            bucket["labels"] = labels

    def _bucket_get(self, q: dict[str, str], h: Any, raw: bytes, name: str) -> tuple[int, dict[str, str], bytes]:
        return _ok(self._bucket(name))

    def _bucket_patch(self, q: dict[str, str], h: Any, raw: bytes, name: str) -> tuple[int, dict[str, str], bytes]:
        bucket = self._bucket(name)
        if "ifMetagenerationMatch" in q and q["ifMetagenerationMatch"] != bucket["metageneration"]:
            raise not_met()
        body = _json(raw)
        for readonly in ("name", "id", "projectNumber", "location"):
            if readonly in body and body[readonly] != bucket.get(readonly):
                raise ApiError(400, "invalid", f"Invalid argument: {readonly} cannot be changed")
        self._apply(bucket, body)
        bucket["metageneration"] = str(int(bucket["metageneration"]) + 1)
        bucket["updated"] = _now()
        return _ok(bucket)

    def _bucket_delete(self, q: dict[str, str], h: Any, raw: bytes, name: str) -> tuple[int, dict[str, str], bytes]:
        self._bucket(name)
        if any(self.objects[name].values()):
            raise ApiError(409, "conflict", "The bucket you tried to delete is not empty.")
        del self.buckets[name], self.objects[name], self.policies[name]
        return 204, {}, b""

    # -- bucket IAM --------------------------------------------------------------------

    def _has_conditions(self, name: str) -> bool:
        return any("condition" in b for b in self.policies.get(name, {}).get("bindings", []))

    def _iam_get(self, q: dict[str, str], h: Any, raw: bytes, name: str) -> tuple[int, dict[str, str], bytes]:
        self._bucket(name)
        policy = self.policies[name]
        asked = int(q.get("optionsRequestedPolicyVersion", "1"))
        if self._has_conditions(name) and asked < 3:
            raise ApiError(400, "invalid", "The policy has conditions: request policy version 3 (optionsRequestedPolicyVersion=3).")
        return _ok({"kind": "storage#policy", "resourceId": f"projects/_/buckets/{name}", **json.loads(json.dumps(policy))})

    def _iam_set(self, q: dict[str, str], h: Any, raw: bytes, name: str) -> tuple[int, dict[str, str], bytes]:
        bucket = self._bucket(name)
        body = _json(raw)
        current = self.policies[name]
        if body.get("etag") and body["etag"] != current["etag"]:
            raise not_met()
        version = int(body.get("version", 1))
        bindings = body.get("bindings", [])
        enforced = bucket["iamConfiguration"]["publicAccessPrevention"] == "enforced"
        for b in bindings:
            role, members = b.get("role", ""), b.get("members", [])
            if role not in STORAGE_ROLES and not role.startswith(("projects/", "organizations/")):
                raise ApiError(400, "invalid", f"Role {role} is not supported for this resource.")
            if not members:
                raise ApiError(400, "invalid", f"Invalid argument: binding for {role} has no members")
            for m in members:
                if not MEMBER_RE.match(m):
                    raise ApiError(400, "invalid", f"Invalid argument: member '{m}' is not of the form type:id")
                if m in ("allUsers", "allAuthenticatedUsers") and enforced:
                    raise ApiError(412, "conditionNotMet", "The member bindings allUsers and allAuthenticatedUsers are not allowed since public access prevention is enforced.")
                if m.startswith("serviceAccount:") and m.endswith(f"@{self.project}.iam.gserviceaccount.com") and m[15:] not in self.accounts:
                    raise ApiError(400, "invalid", f"Service account {m[15:]} does not exist.")
            if "condition" in b:
                cond = b["condition"] or {}
                if version < 3:
                    raise ApiError(400, "invalid", "Bindings with conditions need policy version 3.")
                if not bucket["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"]:
                    raise ApiError(400, "invalid", "IAM conditions can only be set on buckets with uniform bucket-level access enabled.")
                if not cond.get("expression") or not cond.get("title"):
                    raise ApiError(400, "invalid", "Invalid argument: a condition needs a title and an expression.")
        etag = base64.b64encode(hashlib.sha256(json.dumps(bindings, sort_keys=True).encode() + current["etag"].encode()).digest()[:8]).decode()
        self.policies[name] = {"version": version, "etag": etag, "bindings": json.loads(json.dumps(bindings))}
        return self._iam_get({"optionsRequestedPolicyVersion": "3"}, h, b"", name)

    # -- objects -----------------------------------------------------------------------

    def _live(self, bucket: str, name: str) -> _Version | None:
        versions = self.objects[bucket].get(name, [])
        return versions[-1] if versions and versions[-1].deleted is None else None

    def _resource(self, bucket: str, name: str, v: _Version) -> dict[str, Any]:
        res = {
            "kind": "storage#object", "id": f"{bucket}/{name}/{v.generation}", "name": name, "bucket": bucket,
            "selfLink": f"{self.url}/storage/v1/b/{bucket}/o/{quote(name, safe='')}",
            "mediaLink": f"{self.url}/download/storage/v1/b/{bucket}/o/{quote(name, safe='')}?generation={v.generation}&alt=media",
            "generation": str(v.generation), "metageneration": str(v.metageneration),
            "contentType": v.meta.get("contentType", "application/octet-stream"), "storageClass": "STANDARD",
            "size": str(len(v.data)), "md5Hash": base64.b64encode(hashlib.md5(v.data).digest()).decode(),
            "crc32c": _crc32c(v.data), "etag": base64.b64encode(str(v.generation).encode()).decode(),
            "timeCreated": v.meta["timeCreated"], "updated": v.meta["timeCreated"],
        }
        if v.deleted is not None:
            res["timeDeleted"] = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(v.deleted))
        return res

    def _check_preconditions(self, q: dict[str, str], live: _Version | None) -> None:
        if "ifGenerationMatch" in q:
            want = q["ifGenerationMatch"]
            if not want.isdigit():
                raise ApiError(400, "invalid", f"Invalid argument: ifGenerationMatch '{want}'")
            if (live.generation if live else 0) != int(want):
                raise not_met()
        if "ifGenerationNotMatch" in q and live is not None and str(live.generation) == q["ifGenerationNotMatch"]:
            raise ApiError(304, "notModified", "Not Modified")
        if "ifMetagenerationMatch" in q and (live is None or str(live.metageneration) != q["ifMetagenerationMatch"]):
            raise not_met()

    def _write(self, bucket: str, name: str, data: bytes, meta: dict[str, Any], q: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        self._bucket(bucket)
        if not name or len(name.encode()) > 1024 or name in (".", "..") or name.startswith(".well-known/acme-challenge/") \
                or any(c in name for c in "\r\n"):
            raise ApiError(400, "invalid", f"Invalid object name: '{name[:100]}'")
        live = self._live(bucket, name)
        self._check_preconditions(q, live)
        for key in ("md5Hash", "crc32c"):
            expected = {"md5Hash": base64.b64encode(hashlib.md5(data).digest()).decode(), "crc32c": _crc32c(data)}[key]
            if meta.get(key) and meta[key] != expected:
                raise ApiError(400, "invalid", f"Provided {key} \"{meta[key]}\" doesn't match calculated {key} \"{expected}\".")
        versions = self.objects[bucket].setdefault(name, [])
        if live is not None:
            if self.buckets[bucket].get("versioning", {}).get("enabled"):
                live.deleted = time.time()
            else:
                versions.pop()
        v = _Version(data, {"contentType": meta.get("contentType") or "application/octet-stream", "timeCreated": _now()},
                     next(self._gen))
        versions.append(v)
        return _ok(self._resource(bucket, name, v))

    def _upload(self, q: dict[str, str], h: Any, raw: bytes, bucket: str) -> tuple[int, dict[str, str], bytes]:
        self._bucket(bucket)
        kind = q.get("uploadType")
        if kind == "media":
            if not q.get("name"):
                raise ApiError(400, "required", "Required parameter: name")
            return self._write(bucket, q["name"], raw, {"contentType": h.get("Content-Type")}, q)
        if kind == "multipart":
            meta, data = _multipart(h.get("Content-Type", ""), raw)
            name = meta.get("name") or q.get("name", "")
            return self._write(bucket, name, data, meta, q)
        if kind == "resumable":
            meta = _json(raw) if raw else {}
            name = meta.get("name") or q.get("name", "")
            if not name:
                raise ApiError(400, "required", "Required parameter: name")
            self._check_preconditions(q, self._live(bucket, name))  # checked again when the upload completes
            upload_id = f"upload-{next(self._ids)}"
            self._uploads[upload_id] = {"bucket": bucket, "name": name, "meta": {**meta, "contentType": meta.get("contentType") or h.get("X-Upload-Content-Type")},
                                        "query": {k: v for k, v in q.items() if k.startswith("if")}, "data": bytearray()}
            location = f"{self.url}/upload/storage/v1/b/{bucket}/o?uploadType=resumable&upload_id={upload_id}"
            return 200, {"Location": location}, b""
        raise ApiError(400, "invalid", f"Invalid upload type: '{kind}'")

    def _upload_chunk(self, q: dict[str, str], h: Any, raw: bytes, bucket: str) -> tuple[int, dict[str, str], bytes]:
        session = self._uploads.get(q.get("upload_id", ""))
        if session is None or session["bucket"] != bucket:
            raise ApiError(404, "notFound", "No such upload session.")
        m = re.fullmatch(r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)", h.get("Content-Range", "").strip())
        if not m:
            raise ApiError(400, "invalid", "Invalid Content-Range header")
        data = session["data"]
        if m[1] is not None:
            start, end = int(m[1]), int(m[2])
            if start != len(data) or end - start + 1 != len(raw):
                raise ApiError(400, "invalid", f"Chunk bytes {start}-{end} do not continue the {len(data)} bytes received")
            data.extend(raw)
        total = m[3]
        if total != "*" and int(total) == len(data):
            del self._uploads[q["upload_id"]]
            return self._write(bucket, session["name"], bytes(data), session["meta"], session["query"])
        headers = {"Range": f"bytes=0-{len(data) - 1}"} if data else {}
        return 308, headers, b""

    def _object_get(self, q: dict[str, str], h: Any, raw: bytes, bucket: str, name: str, media: bool) -> tuple[int, dict[str, str], bytes]:
        self._bucket(bucket)
        versions = self.objects[bucket].get(name, [])
        if "generation" in q:
            v = next((x for x in versions if str(x.generation) == q["generation"]), None)
        else:
            v = self._live(bucket, name)
        if v is None:
            raise ApiError(404, "notFound", f"No such object: {bucket}/{name}")
        self._check_preconditions(q, v)
        if media or q.get("alt") == "media":
            headers = {"Content-Type": v.meta["contentType"], "x-goog-generation": str(v.generation),
                       "x-goog-metageneration": str(v.metageneration), "x-goog-stored-content-length": str(len(v.data)),
                       "x-goog-hash": f"crc32c={_crc32c(v.data)},md5={base64.b64encode(hashlib.md5(v.data).digest()).decode()}"}
            return 200, headers, v.data
        return _ok(self._resource(bucket, name, v))

    def _object_list(self, q: dict[str, str], h: Any, raw: bytes, bucket: str) -> tuple[int, dict[str, str], bytes]:
        self._bucket(bucket)
        size = int(q.get("maxResults", LIST_MAX))
        if size < 1:
            raise ApiError(400, "invalid", f"Invalid argument: maxResults {size}")
        size = min(size, LIST_MAX)
        prefix, delimiter, all_versions = q.get("prefix", ""), q.get("delimiter"), q.get("versions", "").lower() == "true"
        entries: list[tuple[str, Any]] = []  # sorted (name, version) or (prefix, None)
        seen_prefixes: set[str] = set()
        for name in sorted(self.objects[bucket]):
            if not name.startswith(prefix):
                continue
            if delimiter and delimiter in name[len(prefix):]:
                p = name[: len(prefix) + name[len(prefix):].index(delimiter) + len(delimiter)]
                if p not in seen_prefixes:
                    seen_prefixes.add(p)
                    entries.append((p, None))
                continue
            for v in self.objects[bucket][name]:
                if all_versions or v.deleted is None:
                    entries.append((name, v))
        token = q.get("pageToken", "")
        start = 0
        if token:
            try:
                start = int(base64.urlsafe_b64decode(token.encode()).decode())
            except ValueError:
                raise ApiError(400, "invalid", f"Invalid argument: pageToken '{token}'") from None
        page = entries[start : start + size]
        out: dict[str, Any] = {"kind": "storage#objects"}
        items = [self._resource(bucket, n, v) for n, v in page if v is not None]
        prefixes = [n for n, v in page if v is None]
        if items:
            out["items"] = items
        if prefixes:
            out["prefixes"] = prefixes
        if start + size < len(entries):
            out["nextPageToken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        return _ok(out)

    def _object_delete(self, q: dict[str, str], h: Any, raw: bytes, bucket: str, name: str) -> tuple[int, dict[str, str], bytes]:
        self._bucket(bucket)
        versions = self.objects[bucket].get(name, [])
        if "generation" in q:
            v = next((x for x in versions if str(x.generation) == q["generation"]), None)
            if v is None:
                raise ApiError(404, "notFound", f"No such object: {bucket}/{name}")
            versions.remove(v)
        else:
            live = self._live(bucket, name)
            if live is None:
                raise ApiError(404, "notFound", f"No such object: {bucket}/{name}")
            self._check_preconditions(q, live)
            if self.buckets[bucket].get("versioning", {}).get("enabled"):
                live.deleted = time.time()
            else:
                versions.pop()
        if not versions:
            self.objects[bucket].pop(name, None)
        return 204, {}, b""

    # -- IAM service accounts ----------------------------------------------------------

    def _sa(self, project: str, ref: str) -> dict[str, Any]:
        sa = self.accounts.get(ref) or next((a for a in self.accounts.values() if a["uniqueId"] == ref), None)
        if sa is None or (project != "-" and sa["projectId"] != project):
            raise ApiError(404, "NOT_FOUND", f"Unknown service account: {ref}", rpc=True)
        return sa

    def _sa_create(self, q: dict[str, str], h: Any, raw: bytes, project: str) -> tuple[int, dict[str, str], bytes]:
        body = _json(raw, rpc=True)
        account_id = str(body.get("accountId", ""))
        if not 6 <= len(account_id) <= 30:
            raise ApiError(400, "INVALID_ARGUMENT", f'The account ID "{account_id}" does not have a length between 6 and 30.', rpc=True)
        if not ACCOUNT_ID_RE.match(account_id):
            raise ApiError(400, "INVALID_ARGUMENT", f"{account_id} does not match [a-zA-Z][a-zA-Z\\d\\-]*[a-zA-Z\\d].", rpc=True)
        sa_body = body.get("serviceAccount") or {}
        if len(sa_body.get("displayName", "")) > 100 or len(sa_body.get("description", "")) > 256:
            raise ApiError(400, "INVALID_ARGUMENT", "displayName is at most 100 characters and description at most 256.", rpc=True)
        email = f"{account_id}@{project}.iam.gserviceaccount.com"
        if email in self.accounts:
            raise ApiError(409, "ALREADY_EXISTS", f"Service account {account_id} already exists within project projects/{project}.", rpc=True)
        unique = str(next(self._ids))
        sa = {"name": f"projects/{project}/serviceAccounts/{email}", "projectId": project, "uniqueId": unique,
              "email": email, "displayName": sa_body.get("displayName", ""), "description": sa_body.get("description", ""),
              "etag": "MDEwMjE5MjA=", "oauth2ClientId": unique}
        self.accounts[email] = sa
        return _ok(sa)

    def _sa_get(self, q: dict[str, str], h: Any, raw: bytes, project: str, ref: str) -> tuple[int, dict[str, str], bytes]:
        return _ok(self._sa(project, ref))

    def _sa_delete(self, q: dict[str, str], h: Any, raw: bytes, project: str, ref: str) -> tuple[int, dict[str, str], bytes]:
        sa = self._sa(project, ref)
        del self.accounts[sa["email"]]
        member = f"serviceAccount:{sa['email']}"
        for policy in self.policies.values():
            for b in policy["bindings"]:
                b["members"] = [f"deleted:{m}?uid={sa['uniqueId']}" if m == member else m for m in b["members"]]
        return _ok({})

    def _sa_list(self, q: dict[str, str], h: Any, raw: bytes, project: str) -> tuple[int, dict[str, str], bytes]:
        accounts = sorted((a for a in self.accounts.values() if a["projectId"] == project), key=lambda a: a["email"])
        size = min(int(q.get("pageSize", 20)), 100)
        start = int(q["pageToken"]) if q.get("pageToken", "").isdigit() else 0
        out: dict[str, Any] = {"accounts": accounts[start : start + size]}
        if start + size < len(accounts):
            out["nextPageToken"] = str(start + size)
        return _ok(out)


def valid_bucket_name(name: str) -> bool:
    """GCS's bucket naming rules (https://cloud.google.com/storage/docs/buckets#naming)."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*[a-z0-9]", name):
        return False
    if "." in name:
        if len(name) > 222 or any(not 1 <= len(part) <= 63 for part in name.split(".")):
            return False
    elif not 3 <= len(name) <= 63:
        return False
    try:
        ipaddress.IPv4Address(name)
        return False
    except ValueError:
        pass
    return not name.startswith("goog") and "google" not in name and "g00gle" not in name


class _Handler(BaseHTTPRequestHandler):
    gcs: FakeGCS
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    wbufsize = -1

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            status, headers, body = self.gcs.handle(method, url.path, query, self.headers, raw)
            if not headers.get("Content-Type") and body:
                headers["Content-Type"] = "application/json; charset=UTF-8"
        except ApiError as e:
            status, headers, body = e.status, {"Content-Type": "application/json; charset=UTF-8"}, json.dumps(e.payload()).encode()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")


def _ok(body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json; charset=UTF-8"}, json.dumps(body).encode()


def _json(raw: bytes, rpc: bool = False) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"{}")
    except ValueError as e:
        raise ApiError(400, "INVALID_ARGUMENT" if rpc else "parseError", f"Invalid JSON payload received. {e}", rpc=rpc) from None
    if not isinstance(body, dict):
        raise ApiError(400, "INVALID_ARGUMENT" if rpc else "parseError", "Invalid JSON payload received: not an object", rpc=rpc)
    return body


def _multipart(content_type: str, raw: bytes) -> tuple[dict[str, Any], bytes]:
    """multipart/related: a JSON metadata part, then the media part."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/related") or not m:
        raise ApiError(400, "invalid", "A multipart upload needs Content-Type multipart/related with a boundary")
    sep = b"--" + m[1].encode()
    chunks = raw.split(sep)
    parts = [c for c in chunks[1:] if not c.startswith(b"--")]
    if len(parts) != 2:
        raise ApiError(400, "invalid", f"A multipart upload has 2 parts (metadata, media), not {len(parts)}")

    def body(part: bytes) -> bytes:
        _, _, content = part.partition(b"\r\n\r\n")
        return content[:-2] if content.endswith(b"\r\n") else content

    return _json(body(parts[0])), body(parts[1])


def _crc32c(data: bytes) -> str:
    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()


def _now(ahead: float = 0.0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + ahead))
