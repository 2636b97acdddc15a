"""Is a GCE instance still there? For bakery-node deciding whether a dead etcd member's machine is gone.

    alive(project, zone, name) -> True (it runs, or is starting), False (GCE says it is gone:
    404, or another machine now holds the name), None (unsure: no metadata server, no permission,
    a network error, or a stopped or suspended machine, whose disk, and etcd data, may come back)

The call is instances.get with the instance's own service account: an access token from the
metadata server (`Metadata-Flavor: Google`, as GCE requires), then the Compute API. Only the
answer "gone" may lead to removing a member, so every doubt is None. A group repairs a master
under the same name (tests/fake_gce.py), so `instance_id` (from the member's record) tells the
machine that ran the member from its replacement.

Endpoints: env BAKERY_GCE_METADATA_URL (default http://metadata.google.internal) and
BAKERY_GCP_ENDPOINT_URL (default https://compute.googleapis.com), for tests on loopback.
"""

from __future__ import annotations

import os

import httpx

METADATA_ENV = "BAKERY_GCE_METADATA_URL"
COMPUTE_ENV = "BAKERY_GCP_ENDPOINT_URL"
METADATA_URL = "http://metadata.google.internal"
COMPUTE_URL = "https://compute.googleapis.com"
TIMEOUT = 5.0  # seconds per call: a caller retries with backoff; a slow answer is no answer
TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"

# instance.status values (compute v1) of a machine that runs or is on its way there. STOPPING,
# TERMINATED, SUSPENDING and SUSPENDED keep the disk: such a member may come back (a group
# repairs it under the same name, and then `instance_id` differs).
RUNNING = {"PROVISIONING", "STAGING", "RUNNING", "REPAIRING"}


def alive(project: str, zone: str, name: str, *, instance_id: str | None = None,
          client: httpx.Client | None = None) -> bool | None:
    """True, False or None (see the module doc). Never raises for a cloud or network problem."""
    own = client is None
    http = client or httpx.Client(timeout=TIMEOUT)
    try:
        token = _token(http)
        if token is None:
            return None
        base = os.environ.get(COMPUTE_ENV) or COMPUTE_URL
        r = http.get(f"{base.rstrip('/')}/compute/v1/projects/{project}/zones/{zone}/instances/{name}",
                     headers={"Authorization": f"Bearer {token}"})
        if r.status_code == 404:
            return False
        if r.status_code != 200:
            return None  # 401/403 (no compute.instances.get), 429, 5xx: unsure
        body = r.json()
        if instance_id is not None and str(body.get("id")) != str(instance_id):
            return False  # same name, another machine: the one that ran the member is gone
        return True if body.get("status") in RUNNING else None
    except (httpx.HTTPError, ValueError):
        return None
    finally:
        if own:
            http.close()


def _token(http: httpx.Client) -> str | None:
    base = os.environ.get(METADATA_ENV) or METADATA_URL
    r = http.get(f"{base.rstrip('/')}{TOKEN_PATH}", headers={"Metadata-Flavor": "Google"})
    if r.status_code != 200:
        return None
    token = r.json().get("access_token")
    return token if isinstance(token, str) and token else None
