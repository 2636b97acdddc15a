"""A small etcd v3 client over the HTTP/JSON gateway (httpx), with TLS client certificates.

The gateway speaks the gRPC API as JSON: `POST /v3/<service>/<call>`; keys and values
are base64; int64 fields are JSON strings; a failed txn leaves out `succeeded`. Every
failure raises EtcdError naming the endpoint and the call, never key material.

    c = Client(["https://10.0.0.10:2379"], tls=TLS(ca, crt, key))
    lease = c.lease_grant(30)
    won = c.create(b"/podmaster/scheduler", b"node-1", lease=lease.id)

Requests go to the endpoints in order; a connection failure moves to the next one, an
answer from etcd (even an error) does not. A call that changes the cluster (member add,
remove, promote; txn) moves on only when the connection failed before anything was sent:
after a timeout it may have been applied, so it is not resent to the next endpoint but
settled by asking etcd (a linearizable member list) what happened.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from bakery.errors import EtcdError, EtcdOutcomeUnknown
from bakery.output import atomic_file

T = TypeVar("T")

# how many seconds a member add waits out etcd's refusal of an ID it removed (Client._add_fresh_id)
ADD_ID_RETRIES = 3


@dataclass(frozen=True)
class TLS:
    """Paths of the CA bundle and the client certificate/key (never their contents)."""

    ca: str | Path | None = None
    cert: str | Path | None = None
    key: str | Path | None = None


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True)
class Lease:
    id: int
    ttl: int


@dataclass(frozen=True)
class Member:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool


@dataclass(frozen=True)
class Status:
    endpoint: str
    version: str
    member_id: int
    leader: int
    raft_term: int
    db_size: int
    revision: int = 0  # the member's current revision when it answered
    cluster_id: int = 0  # two members with different ids belong to two clusters

    @property
    def is_leader(self) -> bool:
        return self.member_id == self.leader


@dataclass(frozen=True)
class Probe:
    """What one endpoint said to /health. `state`: healthy (a leader and a quorum behind
    it), unhealthy (etcd answered, but not healthy), refused (the host answered that
    nothing listens on the port: no member there), unreachable (no answer: a timeout, no
    route, a TLS failure; nothing is known)."""

    endpoint: str
    state: str
    detail: str = ""

    @property
    def answered(self) -> bool:
        return self.state in ("healthy", "unhealthy")


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    responses: tuple[dict[str, Any], ...]


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def unb64(data: str | None) -> bytes:
    return base64.b64decode(data) if data else b""


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with `prefix`."""
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return b"\0"


# -- txn building blocks (plain dicts in the gateway's shape) -------------------------


def compare_create_revision(key: bytes | str, revision: int = 0, result: str = "EQUAL") -> dict[str, Any]:
    return {"key": b64(key), "target": "CREATE", "result": result, "create_revision": str(revision)}


def compare_lease(key: bytes | str, lease: int, result: str = "EQUAL") -> dict[str, Any]:
    return {"key": b64(key), "target": "LEASE", "result": result, "lease": str(lease)}


def op_put(key: bytes | str, value: bytes | str, lease: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        body["lease"] = str(lease)
    return {"request_put": body}


def op_range(key: bytes | str) -> dict[str, Any]:
    return {"request_range": {"key": b64(key)}}


def op_delete(key: bytes | str) -> dict[str, Any]:
    return {"request_delete_range": {"key": b64(key)}}


def _kv(d: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=unb64(d.get("key")),
        value=unb64(d.get("value")),
        create_revision=int(d.get("create_revision", 0)),
        mod_revision=int(d.get("mod_revision", 0)),
        version=int(d.get("version", 0)),
        lease=int(d.get("lease", 0)),
    )


def _member(d: dict[str, Any]) -> Member:
    return Member(
        id=int(d.get("ID", 0)),
        name=d.get("name", ""),
        peer_urls=tuple(d.get("peerURLs", ())),
        client_urls=tuple(d.get("clientURLs", ())),
        is_learner=bool(d.get("isLearner", False)),
    )


class Client:
    """etcd v3 through the JSON gateway of one or more client URLs."""

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        tls: TLS | None = None,
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e]
        if not endpoints:
            raise EtcdError("no etcd endpoints given")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        tls = tls or TLS()
        kwargs: dict[str, Any] = {"timeout": timeout}
        if transport is not None:
            kwargs["transport"] = transport
        try:
            if tls.ca or tls.cert:
                kwargs["verify"] = _ssl_context(tls)
            self._http = httpx.Client(**kwargs)
        except (OSError, ValueError) as e:
            # ssl errors name the file, not its contents
            raise EtcdError(f"etcd client TLS files unusable (ca={tls.ca}, cert={tls.cert}, key={tls.key}): {type(e).__name__}") from None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport --------------------------------------------------------------------

    def call(self, path: str, body: dict[str, Any], *, endpoint: str | None = None, timeout: float | None = None,
             resend: bool = True) -> dict[str, Any]:
        """POST `body` to `/v3/<path>`; the first endpoint that answers wins.

        `resend=False` for a call that changes the cluster: it moves to the next endpoint
        only when the connection failed before the request went out; once sent, no answer
        raises EtcdOutcomeUnknown (it may have been applied)."""
        targets = [endpoint] if endpoint else list(self.endpoints)
        failures: list[str] = []
        for ep in targets:
            try:
                r = self._http.post(f"{ep}/v3/{path}", json=body, timeout=self.timeout if timeout is None else timeout)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:  # no connection: nothing was sent
                failures.append(f"{ep}: {_reason(e)}")
                continue
            except httpx.HTTPError as e:
                if not resend:
                    raise EtcdOutcomeUnknown(f"{ep}: etcd {path}: no answer ({_reason(e)}); it may have been applied, "
                                             "so it is not resent to another endpoint") from None
                failures.append(f"{ep}: {_reason(e)}")
                continue
            if endpoint is None and ep != self.endpoints[0]:
                # stick to the endpoint that answered: a dead first one costs a timeout per call
                self.endpoints.remove(ep)
                self.endpoints.insert(0, ep)
            return _decode(ep, path, r)
        raise EtcdError(f"etcd {path} failed on every endpoint: {'; '.join(failures)}")

    # -- kv ---------------------------------------------------------------------------

    def put(self, key: bytes | str, value: bytes | str, lease: int = 0) -> int:
        """Write `key`; returns the revision of the write."""
        body = op_put(key, value, lease)["request_put"]
        return int(self.call("kv/put", body).get("header", {}).get("revision", 0))

    def range(self, key: bytes | str, range_end: bytes | None = None, *, prefix: bool = False, limit: int = 0,
              timeout: float | None = None) -> list[KeyValue]:
        k = key.encode() if isinstance(key, str) else key
        body: dict[str, Any] = {"key": b64(k)}
        if prefix:
            range_end = prefix_end(k)
        if range_end is not None:
            body["range_end"] = b64(range_end)
        if limit:
            body["limit"] = str(limit)
        return [_kv(d) for d in self.call("kv/range", body, timeout=timeout).get("kvs", [])]

    def get(self, key: bytes | str, *, timeout: float | None = None) -> KeyValue | None:
        kvs = self.range(key, timeout=timeout)
        return kvs[0] if kvs else None

    def delete(self, key: bytes | str, *, prefix: bool = False) -> int:
        """Delete `key` (or every key under it); returns how many went."""
        k = key.encode() if isinstance(key, str) else key
        body: dict[str, Any] = {"key": b64(k)}
        if prefix:
            body["range_end"] = b64(prefix_end(k))
        return int(self.call("kv/deleterange", body).get("deleted", 0))

    def txn(self, compare: Iterable[dict[str, Any]], success: Iterable[dict[str, Any]] = (), failure: Iterable[dict[str, Any]] = (), *, timeout: float | None = None) -> TxnResult:
        body = {"compare": list(compare), "success": list(success), "failure": list(failure)}
        # not resent: a compare-and-swap applied twice answers "failed" the second time
        r = self.call("kv/txn", body, timeout=timeout, resend=False)
        return TxnResult(bool(r.get("succeeded", False)), tuple(r.get("responses", ())))

    def create(self, key: bytes | str, value: bytes | str, lease: int = 0, *, timeout: float | None = None) -> bool:
        """Put `key` only if it does not exist (compare create_revision == 0): a real compare-and-swap."""
        return self.txn([compare_create_revision(key, 0)], [op_put(key, value, lease)], timeout=timeout).succeeded

    # -- leases -----------------------------------------------------------------------

    def lease_grant(self, ttl: int, *, timeout: float | None = None) -> Lease:
        r = self.call("lease/grant", {"TTL": str(ttl)}, timeout=timeout)
        if r.get("error"):
            raise EtcdError(f"etcd lease/grant refused: {r['error']}")
        return Lease(int(r["ID"]), int(r.get("TTL", 0)))

    def lease_keepalive(self, lease: int, *, timeout: float | None = None) -> int:
        """Renew `lease`; returns its TTL in seconds, 0 when it has already expired."""
        r = self.call("lease/keepalive", {"ID": str(lease)}, timeout=timeout)
        return int(r.get("result", r).get("TTL", 0))

    def lease_revoke(self, lease: int, *, timeout: float | None = None) -> None:
        self.call("lease/revoke", {"ID": str(lease)}, timeout=timeout)

    # -- cluster ----------------------------------------------------------------------

    def member_list(self, *, linearizable: bool = False) -> list[Member]:
        """etcd's members as the answering member knows them; `linearizable`: as the
        cluster's leader has committed them (needs a quorum), never a follower's stale view."""
        body = {"linearizable": True} if linearizable else {}
        return [_member(m) for m in self.call("cluster/member/list", body).get("members", [])]

    def member_add(self, peer_urls: Sequence[str], *, learner: bool = False) -> Member:
        """Add a member at `peer_urls` (a learner: not voting until promoted). An add that
        got no answer, or that etcd refuses because a member holds those peer URLs already,
        is settled by looking that member up: one nobody started yet, of the kind asked
        for, is the one this add made (or an earlier try of it) and is returned."""
        body = {"peerURLs": list(peer_urls), "isLearner": learner}
        try:
            r = self._add_fresh_id(body)
        except EtcdOutcomeUnknown:
            if (m := self._added(peer_urls, learner)) is not None:
                return m
            r = self.call("cluster/member/add", body, resend=False)  # not applied: once more
        except EtcdError as e:
            # etcd derives a member's ID from its peer URLs and the second: a repeated add
            # says "member ID already exist" within the second, "Peer URLs already exists" after
            if "Peer URLs already exists" not in str(e) and "member ID already exist" not in str(e):
                raise
            if (m := self._added(peer_urls, learner)) is not None:
                return m
            holder = next((m for m in self.member_list(linearizable=True) if set(peer_urls) & set(m.peer_urls)), None)
            raise EtcdError(f"{e}: member {holder.id:x} ({holder.name or 'not started'}, "
                            f"{'a learner' if holder.is_learner else 'a voter'}) holds {', '.join(peer_urls)}; "
                            "not adding a second member there" if holder else str(e)) from None
        return _member(r.get("member", {}))

    def _add_fresh_id(self, body: dict[str, Any]) -> dict[str, Any]:
        """One member add, again in the next second while etcd refuses it as "member not
        found". etcd derives the new member's ID from its peer URLs and the current second
        (membership.NewMember), and refuses an ID it has removed: a member removed and added
        back at the same peer URLs within one second (a master replaced at its old address,
        a stale record cleared) collides with itself. The refused add changed nothing, so it
        is safe to send again once the second has turned."""
        for _ in range(ADD_ID_RETRIES):
            try:
                return self.call("cluster/member/add", body, resend=False)
            except EtcdError as e:
                if isinstance(e, EtcdOutcomeUnknown) or "member not found" not in str(e):
                    raise
                time.sleep(1.0)  # a full second: a new one on etcd's clock too, whatever its offset
        return self.call("cluster/member/add", body, resend=False)

    def _added(self, peer_urls: Sequence[str], learner: bool) -> Member | None:
        return next((m for m in self.member_list(linearizable=True)
                     if set(m.peer_urls) == set(peer_urls) and not m.client_urls and m.is_learner == learner), None)

    def member_promote(self, member_id: int) -> None:
        """Promote learner `member_id`; done when a linearizable member list shows it a
        voter already (an earlier promotion whose answer was lost)."""
        try:
            self.call("cluster/member/promote", {"ID": str(member_id)}, resend=False)
        except EtcdError as e:
            m = next((m for m in self.member_list(linearizable=True) if m.id == member_id), None)
            if m is None or m.is_learner:
                raise e from None

    def member_remove(self, member_id: int) -> None:
        """Remove member `member_id`; done when a linearizable member list no longer has
        it, whoever removed it: etcd's "member not found" after another actor (a surge, a
        heal, a join) removed it first, or after an earlier try whose answer was lost."""
        body = {"ID": str(member_id)}
        try:
            self.call("cluster/member/remove", body, resend=False)
        except EtcdOutcomeUnknown:
            if self._listed(member_id):
                self._remove_again(body, member_id)  # not applied (yet): a second remove is safe
        except EtcdError as e:
            if "member not found" not in str(e):
                raise
            if self._listed(member_id):
                raise EtcdError(f"{e}, yet a linearizable member list still has {member_id:x}") from None

    def _remove_again(self, body: dict[str, Any], member_id: int) -> None:
        try:
            self.call("cluster/member/remove", body, resend=False)
        except EtcdError as e:
            if "member not found" not in str(e) or self._listed(member_id):
                raise

    def _listed(self, member_id: int) -> bool:
        return any(m.id == member_id for m in self.member_list(linearizable=True))

    # -- maintenance ------------------------------------------------------------------

    def status(self, endpoint: str) -> Status:
        ep = endpoint.rstrip("/")
        r = self.call("maintenance/status", {}, endpoint=ep)
        return Status(
            endpoint=ep,
            version=r.get("version", ""),
            member_id=int(r.get("header", {}).get("member_id", 0)),
            leader=int(r.get("leader", 0)),
            raft_term=int(r.get("raftTerm", 0)),
            db_size=int(r.get("dbSize", 0)),
            revision=int(r.get("header", {}).get("revision", 0)),
            cluster_id=int(r.get("header", {}).get("cluster_id", 0)),
        )

    def move_leader(self, endpoint: str, target_id: int) -> None:
        """Hand the leadership to member `target_id` (a started voter); `endpoint` must be the
        leader's: etcd's MoveLeader (maintenance/transfer-leadership), which elects the target
        at once instead of after an election timeout without a leader."""
        self.call("maintenance/transfer-leadership", {"targetID": str(target_id)}, endpoint=endpoint.rstrip("/"))

    def health(self, endpoint: str) -> bool:
        """etcd's own /health: true when the member has a leader and serves reads."""
        return self.probe(endpoint).state == "healthy"

    def probe(self, endpoint: str) -> Probe:
        """/health of `endpoint`, telling an answer, a refused connection (positively no
        etcd there) and no answer at all apart."""
        ep = endpoint.rstrip("/")
        try:
            r = self._http.get(f"{ep}/health")
        except httpx.HTTPError as e:
            refused = isinstance(e, httpx.ConnectError) and _refused(e)
            return Probe(ep, "refused" if refused else "unreachable", _reason(e))
        try:
            body = r.json()
            healthy = r.status_code == 200 and body.get("health") == "true"
        except (ValueError, AttributeError):
            return Probe(ep, "unhealthy", f"HTTP {r.status_code}, not etcd's /health answer")
        if healthy:
            return Probe(ep, "healthy")
        return Probe(ep, "unhealthy", f"HTTP {r.status_code}: {str(body.get('reason') or body)[:120]}")

    def snapshot(self, dest: str | Path, endpoint: str | None = None) -> Path:
        """Stream a snapshot of the backend into `dest` (0600, written atomically)."""
        ep = (endpoint or self.endpoints[0]).rstrip("/")
        dest = Path(dest)
        with atomic_file(dest, 0o600) as f:
            try:
                with self._http.stream("POST", f"{ep}/v3/maintenance/snapshot", json={}) as r:
                    if r.status_code != 200:
                        r.read()
                        _decode(ep, "maintenance/snapshot", r)
                    for line in r.iter_lines():
                        if not line.strip():
                            continue
                        chunk = json.loads(line)
                        if "error" in chunk:
                            raise EtcdError(f"{ep}: etcd maintenance/snapshot failed: {_message(chunk['error'])}")
                        f.write(unb64(chunk.get("result", {}).get("blob")))
            except httpx.HTTPError as e:
                raise EtcdError(f"{ep}: etcd maintenance/snapshot failed: {_reason(e)}") from None
        return dest


def _ssl_context(tls: TLS) -> Any:
    import ssl

    ctx = ssl.create_default_context(cafile=str(tls.ca) if tls.ca else None)
    if tls.cert:
        ctx.load_cert_chain(str(tls.cert), str(tls.key) if tls.key else None)
    return ctx


def _refused(e: BaseException) -> bool:
    """A connection refused (ECONNREFUSED) somewhere in the exception's causes."""
    seen: BaseException | None = e
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _reason(e: httpx.HTTPError) -> str:
    kind = type(e).__name__
    text = str(e)
    return f"{kind}: {text}" if text else kind


def _message(err: Any) -> str:
    if isinstance(err, dict):
        return str(err.get("message") or err.get("error") or err)
    return str(err)


def _decode(endpoint: str, path: str, r: httpx.Response) -> dict[str, Any]:
    try:
        data = r.json()
    except ValueError:
        data = None
    if r.status_code != 200 or not isinstance(data, dict):
        detail = _message(data) if isinstance(data, dict) else r.text[:200]
        raise EtcdError(f"{endpoint}: etcd {path} failed: HTTP {r.status_code}: {detail}")
    if isinstance(data.get("error"), dict):
        # streaming calls (keepalive, snapshot) answer 200 and wrap errors in an object
        raise EtcdError(f"{endpoint}: etcd {path} failed: {_message(data['error'])}")
    return data


def while_unsettled(call: Callable[[], T], *, settle: float, poll: float) -> T:
    """Run a membership change, retrying for up to `settle` seconds while etcd refuses it
    as "unhealthy cluster": with strict reconfiguration checks (the default) etcd refuses
    changes until every peer has been connected a few seconds, e.g. just after a restart."""
    deadline = time.monotonic() + settle
    while True:
        try:
            return call()
        except EtcdError as e:
            if "unhealthy cluster" not in str(e) or time.monotonic() > deadline:
                raise
        time.sleep(poll)
