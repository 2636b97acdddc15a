"""The generic master user-data for a GCE instance template (managed instance groups).

Every instance a managed group starts gets the same metadata, so the document is a
cloud-init Jinja template (`## template: jinja`): the files every master shares go in
as they are (base64, so Jinja never reads them), and what differs per node is filled in
at boot. cloud-init's GCE datasource gives the standard v1 keys (instance id, zone,
hostname) but not the address, so a first runcmd asks the metadata server for it.
Pure: the same plan and files give the same bytes.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping

import yaml

from bakery.render import NodeFile, NodeRender
from bakery.topology import ClusterPlan

NODE_ENV = "/etc/bakery/node.env"
NODE_VARS = {
    "BAKERY_INSTANCE_ID": "{{ v1.instance_id }}",
    "BAKERY_ZONE": "{{ v1.availability_zone }}",
    "BAKERY_REGION": "{{ v1.region }}",
    "BAKERY_HOSTNAME": "{{ v1.local_hostname }}",
}
# https://cloud.google.com/compute/docs/metadata/predefined-metadata-keys
ADDRESS_URL = "http://metadata.google.internal/computeMetadata/v1/instance/network-interfaces/0/ip"


def shared_files(nodes: Mapping[str, NodeRender]) -> list[NodeFile]:
    """The files every master has byte for byte; anything naming one node is left out."""
    renders = list(nodes.values())
    if not renders:
        return []
    common = set(renders[0].files)
    for r in renders[1:]:
        common &= set(r.files)
    return sorted(common, key=lambda f: f.path)


def generic_document(plan: ClusterPlan, files: Iterable[NodeFile]) -> bytes:
    env = {"BAKERY_CLUSTER": plan.name, **NODE_VARS,
           "BAKERY_API_ENDPOINT": plan.lb.endpoint or "", "BAKERY_ETCD_ENDPOINTS": ",".join(plan.client_urls)}
    entries = [{"path": NODE_ENV, "permissions": "0644", "owner": "root:root",
                "content": "".join(f"{k}={v}\n" for k, v in env.items())}]
    for f in sorted(files, key=lambda f: f.path):
        entries.append({"path": f.path, "permissions": f"{f.mode:04o}", "owner": f.owner,
                        "encoding": "b64", "content": base64.b64encode(f.content).decode()})
    fetch = (
        "import urllib.request as u; "
        f"r = u.Request('{ADDRESS_URL}', headers={{'Metadata-Flavor': 'Google'}}); "
        "print('BAKERY_NODE_ADDRESS=' + u.urlopen(r, timeout=30).read().decode())"
    )
    config = {
        "hostname": NODE_VARS["BAKERY_HOSTNAME"],
        "write_files": entries,
        "runcmd": [["sh", "-c", f'python3 -c "{fetch}" >> {NODE_ENV}']],
    }
    body = yaml.safe_dump(config, sort_keys=False, width=1 << 16)
    return f"## template: jinja\n#cloud-config\n# bakery {plan.name}: generic master, completed at boot from instance-data\n{body}".encode()
