"""A lock held by an etcd lease: serializes the membership changes of nodes that join at once.

    with LeaseLock(client, "/bakery/prod/node/join-lock", "prod-master-3", ttl=15, wait=300) as lock:
        lock.check()          # EtcdError once the lease could not be renewed
        ...                   # member remove / add / promote

Acquire is the podmaster's compare-and-swap: a txn "create_revision(key) == 0 -> put key
with my lease", which exactly one contender wins. A background thread renews the lease
every TTL/3; release revokes it, so the next node goes at once instead of after the TTL.
A holder that dies simply stops renewing: its key goes with its lease.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence

from bakery.errors import EtcdError, EtcdOutcomeUnknown
from bakery.etcd import Client, compare_create_revision, op_put, op_range, unb64

log = logging.getLogger("bakery.node.lock")


class LeaseLock:
    def __init__(self, client: Callable[[Sequence[str]], Client], endpoints: Sequence[str], key: str, holder: str, *,
                 ttl: int = 15, wait: float = 300.0, poll: float = 0.5, backoff: float = 5.0) -> None:
        self._open = client
        self.endpoints = list(endpoints)
        self.key = key
        self.holder = holder
        self.ttl = ttl
        self.wait = wait
        self.poll = poll
        self.backoff = backoff
        self.lease = 0
        self.acquired_at: float | None = None
        self.released_at: float | None = None
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LeaseLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait
        delay = self.poll
        waiting_for = None
        with self._open(self.endpoints) as c:
            self.lease = c.lease_grant(self.ttl).id
            try:
                while True:
                    try:
                        r = c.txn([compare_create_revision(self.key, 0)], [op_put(self.key, self.holder, self.lease)],
                                  [op_range(self.key)])
                    except EtcdOutcomeUnknown as e:
                        # the put may have been applied: the next try's failure branch says whose the key is
                        log.info("%s: the join lock's txn got no answer (%s); asking again", self.holder, e)
                        r = None
                    holder, lease = _holder(r.responses) if r is not None else (None, 0)
                    if r is not None and (r.succeeded or lease == self.lease):
                        self.acquired_at = time.monotonic()
                        log.info("%s: holds the join lock %s (lease %x, ttl %ds)", self.holder, self.key, self.lease, self.ttl)
                        break
                    holder = holder or "?"
                    if holder != waiting_for:
                        log.info("%s: waiting for the join lock %s, held by %s", self.holder, self.key, holder)
                        waiting_for = holder
                    if time.monotonic() + delay > deadline:
                        raise EtcdError(f"{self.holder}: the join lock {self.key} stayed held by {holder} for {self.wait:.0f}s; "
                                        "another node's join is stuck or slow: see its journal")
                    # renew our own lease while we wait: it must outlive the wait
                    c.lease_keepalive(self.lease)
                    time.sleep(delay)
                    delay = min(delay * 2, self.backoff)
            except BaseException:
                _revoke_quietly(c, self.lease)
                self.lease = 0
                raise
        self._thread = threading.Thread(target=self._renew, name=f"join-lock-{self.holder}", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """EtcdError when the lease is gone (the lock may now be someone else's)."""
        if self._lost:
            raise EtcdError(f"{self.holder}: lost the join lock {self.key}: {self._lost}; stopping before the next membership change")

    def release(self) -> None:
        if not self.lease:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.ttl)
        try:
            with self._open(self.endpoints) as c:
                c.lease_revoke(self.lease)
            log.info("%s: released the join lock %s", self.holder, self.key)
        except EtcdError as e:
            log.warning("%s: could not revoke the join lock's lease %x (it expires within %ds): %s", self.holder, self.lease, self.ttl, e)
        self.released_at = time.monotonic()
        self.lease = 0

    def _renew(self) -> None:
        every = max(self.ttl / 3, 0.2)
        last_ok = time.monotonic()
        with self._open(self.endpoints) as c:
            while not self._stop.wait(every):
                try:
                    if c.lease_keepalive(self.lease, timeout=every) > 0:
                        last_ok = time.monotonic()
                        continue
                    self._lost = f"lease {self.lease:x} expired"
                except EtcdError as e:
                    if time.monotonic() - last_ok < self.ttl:
                        continue
                    self._lost = f"no renewal for {self.ttl}s ({e})"
                log.warning("%s: %s", self.holder, self._lost)
                return


def _holder(responses: tuple[dict, ...]) -> tuple[str | None, int]:
    """Who holds the lock key, and under which lease, from a txn's failure branch."""
    for r in responses:
        kvs = (r.get("response_range") or {}).get("kvs") or []
        if kvs:
            return unb64(kvs[0].get("value")).decode(errors="replace"), int(kvs[0].get("lease", 0))
    return None, 0


def _revoke_quietly(c: Client, lease: int) -> None:
    with contextlib.suppress(EtcdError):  # it expires by itself
        c.lease_revoke(lease)
