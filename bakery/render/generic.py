"""One generic user-data for every master an autoscaling group (AWS launch template)
or managed instance group (GCE instance template) starts.

Every instance of such a group gets the same document, so it is a cloud-init Jinja
template (`## template: jinja`): the files every master shares go in as they are
(base64, so Jinja never reads their content), and what differs per node is filled in
at boot from the instance's own instance-data into /etc/bakery/node.env. Each
provider names the instance-data keys that hold those values on its cloud. Pure:
the same plan and files give the same bytes.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence

import yaml

from bakery.render import NodeFile, NodeRender
from bakery.topology import ClusterPlan

NODE_ENV = "/etc/bakery/node.env"


def shared_files(nodes: Mapping[str, NodeRender]) -> list[NodeFile]:
    """The files every master has byte for byte (CA certificates, shared kubeconfigs,
    monit and kubelet config); anything naming one node's address or name is left out."""
    renders = list(nodes.values())
    if not renders:
        return []
    common = set(renders[0].files)
    for r in renders[1:]:
        common &= set(r.files)
    return sorted(common, key=lambda f: f.path)


def document(plan: ClusterPlan, files: Iterable[NodeFile], node_vars: Mapping[str, str],
             runcmd: Sequence[Sequence[str]] = ()) -> bytes:
    """The `## template: jinja` #cloud-config. `node_vars` maps BAKERY_* names to Jinja
    expressions over instance-data; BAKERY_HOSTNAME also sets the hostname."""
    env = {"BAKERY_CLUSTER": plan.name, **node_vars,
           "BAKERY_API_ENDPOINT": plan.lb.endpoint or "", "BAKERY_ETCD_ENDPOINTS": ",".join(plan.client_urls)}
    entries = [{"path": NODE_ENV, "permissions": "0644", "owner": "root:root",
                "content": "".join(f"{k}={v}\n" for k, v in env.items())}]
    for f in sorted(files, key=lambda f: f.path):
        entries.append({"path": f.path, "permissions": f"{f.mode:04o}", "owner": f.owner,
                        "encoding": "b64", "content": base64.b64encode(f.content).decode()})
    config: dict[str, object] = {"hostname": node_vars["BAKERY_HOSTNAME"], "write_files": entries}
    if runcmd:
        config["runcmd"] = [list(c) for c in runcmd]
    body = yaml.safe_dump(config, sort_keys=False, width=1 << 16)
    return f"## template: jinja\n#cloud-config\n# bakery {plan.name}: generic master, completed at boot from instance-data\n{body}".encode()
