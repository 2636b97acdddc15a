"""The generic master user-data for a GCE instance template (managed instance groups).

Every instance a managed group starts gets the same metadata, so the document is a
cloud-init Jinja template (`## template: jinja`): the files every master shares go in
as they are (base64, so Jinja never reads them), and what differs per node is filled in
at boot. cloud-init's GCE datasource gives the standard v1 keys (instance id, zone,
hostname) but not the address, so a first runcmd asks the metadata server for it.
Pure: the same plan and files give the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

from bakery.render import NodeFile, generic
from bakery.topology import ClusterPlan

NODE_VARS = {
    "BAKERY_INSTANCE_ID": "{{ v1.instance_id }}",
    "BAKERY_ZONE": "{{ v1.availability_zone }}",
    "BAKERY_REGION": "{{ v1.region }}",
    "BAKERY_HOSTNAME": "{{ v1.local_hostname }}",
}
# https://cloud.google.com/compute/docs/metadata/predefined-metadata-keys
ADDRESS_URL = "http://metadata.google.internal/computeMetadata/v1/instance/network-interfaces/0/ip"


def generic_document(plan: ClusterPlan, files: Iterable[NodeFile]) -> bytes:
    """The `## template: jinja` #cloud-config for any master. GCE's instance-data has no
    address, so a first runcmd asks the metadata server for it."""
    fetch = (
        "import urllib.request as u; "
        f"r = u.Request('{ADDRESS_URL}', headers={{'Metadata-Flavor': 'Google'}}); "
        "print('BAKERY_NODE_ADDRESS=' + u.urlopen(r, timeout=30).read().decode())"
    )
    return generic.document(plan, files, NODE_VARS, runcmd=[["sh", "-c", f'python3 -c "{fetch}" >> {generic.NODE_ENV}']])
