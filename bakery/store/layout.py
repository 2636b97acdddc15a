"""Where each object of a cluster lives in the store: `<cluster>/...`. The one place
that spells a store key. IAM policies (what a master may read and write) are derived
from the prefixes here, so a new object gets the right access by living in the right
prefix.

    <cluster>/cluster.json            the current cluster description nodes render from
    <cluster>/descriptions/<d>.json   every published description by digest (a node asks for the one
                                      its user-data names, so re-publishing never strands a booting node)
    <cluster>/pki/...                 CA material: ca.{crt,key}, etcd/ca.{crt,key},
                                      front-proxy-ca.{crt,key}, sa.{key,pub}  (operator writes; nodes read)
    <cluster>/members/<node>.json     membership record, one object per master (nodes write)
    <cluster>/etcd/bootstrap          store-mode day 0: the node that won put_if_absent (nodes write)
    <cluster>/etcd/bootstrapped       marker: etcd exists; every later node joins as a learner (nodes write)
    <cluster>/backups/<id>.db         etcd snapshots, <id>.db.sha256 and <id>.json beside each (nodes and operator write)
    <cluster>/etcd/restore.json       a requested restore: which backup the next day 0 starts from (operator writes;
                                      the node that completes the restore deletes it)
    <cluster>/rollout/journal.json    the running rollout's journal (operator writes)
"""

from __future__ import annotations

from bakery.store.base import check_key


def _c(cluster: str) -> str:
    return check_key(cluster)


def description(cluster: str) -> str:
    return f"{_c(cluster)}/cluster.json"


def description_by_digest(cluster: str, digest: str) -> str:
    """`digest` is 'sha256:<hex>'; the key spells it 'sha256-<hex>'."""
    return check_key(f"{_c(cluster)}/descriptions/{digest.replace(':', '-')}.json")


def pki(cluster: str, rel: str) -> str:
    return check_key(f"{_c(cluster)}/pki/{rel}")


def pki_prefix(cluster: str) -> str:
    return f"{_c(cluster)}/pki/"


def member(cluster: str, node: str) -> str:
    return check_key(f"{_c(cluster)}/members/{node}.json")


def members_prefix(cluster: str) -> str:
    return f"{_c(cluster)}/members/"


def bootstrap_claim(cluster: str) -> str:
    return f"{_c(cluster)}/etcd/bootstrap"


def bootstrapped(cluster: str) -> str:
    return f"{_c(cluster)}/etcd/bootstrapped"


def etcd_prefix(cluster: str) -> str:
    return f"{_c(cluster)}/etcd/"


def backup(cluster: str, backup_id: str) -> str:
    return check_key(f"{_c(cluster)}/backups/{backup_id}.db")


def backup_checksum(cluster: str, backup_id: str) -> str:
    """`sha256sum` format; written last, so a backup without it is incomplete."""
    return check_key(f"{_c(cluster)}/backups/{backup_id}.db.sha256")


def backup_meta(cluster: str, backup_id: str) -> str:
    return check_key(f"{_c(cluster)}/backups/{backup_id}.json")


def restore_request(cluster: str) -> str:
    return f"{_c(cluster)}/etcd/restore.json"


def backups_prefix(cluster: str) -> str:
    return f"{_c(cluster)}/backups/"


def rollout_journal(cluster: str) -> str:
    return f"{_c(cluster)}/rollout/journal.json"


def cluster_prefix(cluster: str) -> str:
    return f"{_c(cluster)}/"


def node_writable_prefixes(cluster: str) -> tuple[str, ...]:
    """What a master's own credentials may write (everything else under the cluster is read-only to it)."""
    return (members_prefix(cluster), etcd_prefix(cluster), backups_prefix(cluster))
