"""`bakery-node backup`, run hourly by bakery-backup.timer on every master: the current
leader snapshots its own member into the store's backups prefix with this master's own
credentials (the store grants masters write access there, layout.node_writable_prefixes)
and prunes by the retention policy; every other master says it is not the leader and
exits 0. One leader, one backup an hour, whichever master leads.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from bakery import backup
from bakery.etcd import Client
from bakery.node.agent import Agent

log = logging.getLogger("bakery.node")


@dataclass(frozen=True)
class Scheduled:
    node: str
    leader: bool
    backup: backup.Backup | None = None
    pruned: tuple[str, ...] = ()


def scheduled_backup(agent: Agent, now: dt.datetime | None = None) -> Scheduled:
    p = agent.prepare()  # the description, CA material and this master's own client certificate
    url = p.me.client_url
    with Client([url], p.etcd_client_tls()) as c:
        status = c.status(url)
        if not status.is_leader:
            log.info("backup: %s (member %x) is not the etcd leader (%x); the leader takes the backup", p.me.name,
                     status.member_id, status.leader)
            return Scheduled(p.me.name, False)
        b = backup.take(c, status, agent.store, agent.config.cluster, now=now, workdir=agent.state_dir)
    log.info("backup %s: %d bytes at revision %d, sha256 %s%s", b.id, b.size, b.revision, b.sha256,
             "" if b.created else " (already in the store)")
    pruned = tuple(backup.prune(agent.store, agent.config.cluster, now=now))
    for i in pruned:
        log.info("backup %s pruned by the retention policy", i)
    return Scheduled(p.me.name, True, b, pruned)
