"""bakery-podmaster: the 2015 podmaster, rebuilt on etcd v3 with a real compare-and-swap.

One podmaster per master node and component. It copies `--source-file` (a static pod
manifest in /srv/kubernetes) to `--dest-file` (in the kubelet's manifest folder) only
while it holds the lock `--key` in etcd, so one node at a time runs the component:

- acquire: grant a lease of `--ttl-secs`, then a txn "create_revision(key) == 0 ->
  put key=whoami with the lease". Exactly one contender can win it.
- hold: renew the lease every `--sleep` (at most every TTL/4). Each renewal sets a
  deadline of 3/4 TTL after the keepalive was SENT, on the monotonic clock: the lease
  cannot expire on the server before then. Every request is cut off at the deadline.
- lose: when the lease is gone, the key is no longer ours, or the deadline passes
  without a renewal, remove dest-file first and only then look at etcd again. A holder
  that was frozen (SIGSTOP, a VM pause) finds its deadline passed on waking and removes
  dest-file before doing anything else.
- stop: on SIGTERM/SIGINT remove dest-file, then revoke the lease so another node takes
  over at its next poll instead of after the TTL.

dest-file is written atomically (temp file + rename in the same folder); the temp file
starts with a dot, which the kubelet ignores in its manifest folder. A restarted
podmaster never adopts an old lease: it waits, like everyone else, for it to go.

Logs go to stderr through `logging`; this module never prints.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from bakery.errors import EtcdError
from bakery.etcd import TLS, Client
from bakery.output import atomic_write

log = logging.getLogger("bakery.podmaster")

# A holder trusts its lock for this share of the TTL after a keepalive was sent.
DEADLINE_SHARE = 0.75


@dataclass(frozen=True)
class Config:
    key: str
    whoami: str
    ttl: int
    sleep: float
    source: Path
    dest: Path
    request_timeout: float = 5.0
    unit: str | None = None  # runtime: systemd: the unit run while the lock is held


def systemctl(argv: Sequence[str]) -> None:
    """Run one systemctl call (bounded); a failure is logged, and the next round tries again."""
    try:
        done = subprocess.run(["systemctl", *argv], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.error("systemctl %s: %s", " ".join(argv), e)
        return
    if done.returncode != 0:
        log.error("systemctl %s: exit %s: %s", " ".join(argv), done.returncode, done.stderr.strip()[-300:])


class Stop(Exception):
    """Raised by the SIGTERM/SIGINT handler to leave the loop wherever it is."""


class Podmaster:
    """The election loop. `step()` does one round; `run()` loops until Stop."""

    def __init__(self, client: Client, cfg: Config, clock: Callable[[], float] = time.monotonic,
                 units: Callable[[Sequence[str]], None] = systemctl) -> None:
        self.client = client
        self.cfg = cfg
        self.clock = clock
        self.units = units
        self.lease: int | None = None
        self.deadline = 0.0  # clock() value after which a holder must consider the lock lost

    @property
    def holding(self) -> bool:
        return self.lease is not None

    @property
    def interval(self) -> float:
        """Seconds between rounds: a holder renews at least four times per TTL."""
        return min(self.cfg.sleep, self.cfg.ttl / 4) if self.holding else self.cfg.sleep

    def step(self) -> None:
        if self.holding and self.clock() >= self.deadline:
            self._lose("could not renew the lease before its deadline")
        if self.holding:
            self._renew()
        else:
            self._remove_dest()
            self._try_acquire()

    def run(self) -> None:
        self._remove_dest(stop_unit=True)  # a fresh process holds nothing
        while True:
            started = self.clock()
            try:
                self.step()
            except EtcdError as e:
                log.warning("%s", e)
            wake = started + self.interval
            if self.holding:
                wake = min(wake, self.deadline)
            time.sleep(max(0.0, wake - self.clock()))

    def release(self) -> None:
        """Give the lock up now: dest first, then the lease (so a successor never overlaps)."""
        self._remove_dest(stop_unit=True)
        lease, self.lease = self.lease, None
        if lease is not None:
            try:
                self.client.lease_revoke(lease, timeout=min(self.cfg.request_timeout, 2.0))
                log.info("released %s (lease %x revoked)", self.cfg.key, lease)
            except EtcdError as e:
                log.warning("could not revoke lease %x, it expires within %ss: %s", lease, self.cfg.ttl, e)

    # -- rounds -----------------------------------------------------------------------

    def _try_acquire(self) -> None:
        sent = self.clock()
        lease = self.client.lease_grant(self.cfg.ttl, timeout=self.cfg.request_timeout)
        deadline = sent + lease.ttl * DEADLINE_SHARE
        try:
            won = self.client.create(self.cfg.key, self.cfg.whoami, lease.id, timeout=self._left(deadline))
        except EtcdError:
            self._revoke_quietly(lease.id)
            raise
        if not won:
            self._revoke_quietly(lease.id)
            holder = self.client.get(self.cfg.key)
            log.debug("%s is held by %s", self.cfg.key, holder.value.decode(errors="replace") if holder else "nobody")
            return
        self.lease, self.deadline = lease.id, deadline
        log.info("acquired %s as %s (lease %x, ttl %ss)", self.cfg.key, self.cfg.whoami, lease.id, lease.ttl)
        self._sync_dest()

    def _renew(self) -> None:
        assert self.lease is not None
        sent = self.clock()
        try:
            ttl = self.client.lease_keepalive(self.lease, timeout=self._left(self.deadline))
        except EtcdError as e:
            log.warning("renewing %s failed (deadline in %.1fs): %s", self.cfg.key, self.deadline - self.clock(), e)
            if self.clock() >= self.deadline:
                self._lose("could not renew the lease before its deadline")
            return
        if ttl <= 0:
            self._lose("the lease expired")
            return
        self.deadline = max(self.deadline, sent + ttl * DEADLINE_SHARE)
        if self.clock() >= self.deadline:  # the answer came too late to count (e.g. frozen meanwhile)
            self._lose("the renewal came back after its deadline")
            return
        holder = self.client.get(self.cfg.key, timeout=self._left(self.deadline))
        if holder is None or holder.lease != self.lease:
            self._lose("the key is no longer ours")
            return
        self._sync_dest()

    def _sync_dest(self) -> None:
        """Make dest a copy of source, unless the deadline passed meanwhile."""
        try:
            content = self.cfg.source.read_bytes()
        except OSError as e:
            log.error("cannot read --source-file %s: %s", self.cfg.source, e.strerror)
            return
        try:
            current = self.cfg.dest.read_bytes()
        except OSError:
            current = None
        if current == content:
            return
        if self.clock() >= self.deadline:
            self._lose("the deadline passed before dest could be written")
            return
        atomic_write(self.cfg.dest, content)
        log.info("wrote %s", self.cfg.dest)
        if self.cfg.unit:
            self.units(["start", "--no-block", self.cfg.unit])
            log.info("started %s", self.cfg.unit)

    def _lose(self, why: str) -> None:
        self._remove_dest()
        lease, self.lease = self.lease, None
        log.warning("lost %s: %s", self.cfg.key, why)
        if lease is not None:
            self._revoke_quietly(lease)

    def _remove_dest(self, *, stop_unit: bool = False) -> None:
        """dest gone and, with a unit, the unit stopped when dest was there (or when
        `stop_unit`): waited for, since the lease is given up only after, so two masters
        never run the component at once."""
        try:
            self.cfg.dest.unlink()
            log.info("removed %s", self.cfg.dest)
            stop_unit = True
        except FileNotFoundError:
            pass
        if self.cfg.unit and stop_unit:
            self.units(["stop", self.cfg.unit])

    def _revoke_quietly(self, lease: int) -> None:
        with contextlib.suppress(EtcdError):  # it expires by itself within the TTL
            self.client.lease_revoke(lease, timeout=min(self.cfg.request_timeout, self.cfg.ttl / 4))

    def _left(self, deadline: float) -> float:
        """A request timeout that never runs past `deadline` (at least 10 ms)."""
        return max(0.01, min(self.cfg.request_timeout, deadline - self.clock()))


# -- command line ---------------------------------------------------------------------


def parse_duration(text: str) -> float:
    """'5s', '500ms', '1m', or plain seconds ('2.5') -> seconds (the original took Go durations)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 5s, 500ms or 1m")
    value = float(m[1])
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m[2]]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bakery-podmaster",
        description="Copy --source-file to --dest-file only while this node holds --key in etcd.",
    )
    p.add_argument("--etcd-servers", default="http://127.0.0.1:2379", help="comma-separated etcd client URLs (default: %(default)s)")
    p.add_argument("--key", required=True, help="the lock's key in etcd, e.g. scheduler")
    p.add_argument("--whoami", default=socket.gethostname(), help="this node's identity, stored as the key's value (default: hostname)")
    p.add_argument("--ttl-secs", type=int, default=30, help="lease TTL in seconds (default: %(default)s)")
    p.add_argument("--sleep", type=parse_duration, default=5.0, help="time between rounds, e.g. 5s or 500ms (default: 5s)")
    p.add_argument("--source-file", type=Path, required=True, help="manifest to copy while holding the lock")
    p.add_argument("--dest-file", type=Path, required=True, help="where the copy goes (the kubelet's manifest folder)")
    p.add_argument("--unit", help="runtime: systemd: also start this systemd unit while holding the lock, and stop it "
                   "(waiting) before giving the lock up")
    # TLS flags named like kube-apiserver's (--key is the lock's key, as in 2015)
    p.add_argument("--etcd-cafile", help="CA bundle that signed the etcd server certificates")
    p.add_argument("--etcd-certfile", help="client certificate for etcd")
    p.add_argument("--etcd-keyfile", help="private key of --etcd-certfile")
    p.add_argument("--request-timeout", type=parse_duration, default=5.0, help="upper bound for one etcd request (default: 5s)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every round")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s podmaster[%(process)d] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    if args.ttl_secs < 2:
        parser.error("--ttl-secs must be at least 2 (etcd's minimum lease TTL)")
    if args.sleep <= 0 or args.sleep >= args.ttl_secs * DEADLINE_SHARE:
        parser.error(f"--sleep must be positive and shorter than 3/4 of --ttl-secs ({args.ttl_secs * DEADLINE_SHARE:g}s)")
    if bool(args.etcd_certfile) != bool(args.etcd_keyfile):
        parser.error("--etcd-certfile and --etcd-keyfile go together")
    cfg = Config(
        key=args.key,
        whoami=args.whoami,
        ttl=args.ttl_secs,
        sleep=args.sleep,
        source=args.source_file,
        dest=args.dest_file,
        request_timeout=args.request_timeout,
        unit=args.unit,
    )
    try:
        client = Client(args.etcd_servers, TLS(args.etcd_cafile, args.etcd_certfile, args.etcd_keyfile), timeout=args.request_timeout)
    except EtcdError as e:
        log.error("%s", e)
        return 2
    pm = Podmaster(client, cfg)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("podmaster for %s as %s: ttl %ss, sleep %gs, %s -> %s", cfg.key, cfg.whoami, cfg.ttl, cfg.sleep, cfg.source, cfg.dest)
    try:
        pm.run()
    except Stop as s:
        log.info("%s: stopping", s)
    finally:
        pm.release()
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
