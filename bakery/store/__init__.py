"""The state store: where a cluster's CA material, description, membership and backups
live, so that any master booted from the cluster's image can fetch them itself.

    store = open_store("file:///var/lib/bakery-store")   # or s3://bucket/prefix, gs://bucket/prefix
    store.put("prod/cluster.json", data)
    store.put_if_absent("prod/etcd/bootstrap", b"prod-master-0")   # True for exactly one caller
    store.get("prod/pki/ca.crt")                                    # StoreNotFound when absent

One small interface (`Store`, in base.py) with three backends: a local folder
(folder.py), S3 (s3.py, boto3) and GCS (gcs.py, google-cloud-storage). The cloud
backends are imported only when their scheme is opened (STYLE.md #7). Where each object
lives is in layout.py; nothing else spells a store key.
"""

from __future__ import annotations

from bakery.store.base import Store, check_key, open_store

__all__ = ["Store", "check_key", "open_store"]
