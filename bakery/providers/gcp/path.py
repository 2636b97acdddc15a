"""The masters' path to Cloud Storage and the Compute API.

Masters have no `accessConfigs`: no external address, so no internet access
(https://cloud.google.com/compute/docs/ip-addresses#externaladdresses). They reach
storage.googleapis.com and compute.googleapis.com through Private Google Access on their
subnetwork (no charge: https://cloud.google.com/vpc/docs/private-google-access) or through a
Cloud NAT on a router of the region that covers the subnetwork.

- The spec names no network (`gcp.network: default`, no `gcp.subnetwork`): bakery turns
  Private Google Access on for the default network's subnetwork in the region
  (subnetworks.setPrivateIpGoogleAccess; `bakery down` leaves it on: it is the project's
  subnetwork, and the setting is free and harmless for other instances).
- The spec names a network or subnetwork: bakery checks and refuses, naming the subnetwork.
- `etcd.bootstrap: discovery` asks a public host (discovery.etcd.io): Private Google Access
  does not reach it, and bakery makes no Cloud NAT (a per-VM hourly charge plus data, and a
  router to own): it needs a Cloud NAT of the user's covering the subnetwork.
"""

from __future__ import annotations

from typing import Any

from bakery.errors import ProviderError

NAT_ALL = ("ALL_SUBNETWORKS_ALL_IP_RANGES", "ALL_SUBNETWORKS_ALL_PRIMARY_IP_RANGES")


def _last(link: str) -> str:
    return link.rstrip("/").rsplit("/", 1)[-1]


def _same(a: str, b: str) -> bool:
    """Two resource links (full URL or partial path) naming the same resource."""
    return a.split("/projects/")[-1].removeprefix("projects/") == b.split("/projects/")[-1].removeprefix("projects/")


def nat_covers(routers: list[Any], network: str, subnetwork: str) -> str | None:
    """The `router/nat` that translates the subnetwork's addresses, or None."""
    for r in routers:
        if not _same(r.network, network):
            continue
        for nat in r.nats:
            scope = nat.source_subnetwork_ip_ranges_to_nat
            if scope in NAT_ALL or (scope == "LIST_OF_SUBNETWORKS"
                                    and any(_same(s.name, subnetwork) for s in nat.subnetworks)):
                return f"{r.name}/{nat.name}"
    return None


def ensure(provider: Any) -> None:
    """Give (default network) or check (the user's) the masters' path; ProviderError otherwise."""
    spec, L, c, ledger = provider.spec, provider.layout, provider.compute, provider.ledger
    gcp = spec.provider_spec
    project, region = L.project, L.region
    network = L.network
    given = gcp.network != "default" or gcp.subnetwork is not None
    subs = c.list("list subnetworks", c.client("Subnetworks").list,
                  c.types.ListSubnetworksRequest(project=project, region=region))
    if L.subnetwork:
        subnet = next((s for s in subs if _same(s.self_link, L.subnetwork)), None)
        if subnet is None:
            raise ProviderError(f"gcp.subnetwork: {L.subnetwork} does not exist in {region}")
    else:
        mine = [s for s in subs if _same(s.network, network)]
        if len(mine) != 1:
            raise ProviderError(f"gcp.network: {network} has {len(mine)} subnetworks in {region}: "
                                "name the masters' one as gcp.subnetwork")
        subnet = mine[0]
    routers = c.list("list routers", c.client("Routers").list, c.types.ListRoutersRequest(project=project, region=region))
    nat = nat_covers(routers, subnet.network, subnet.self_link)
    where = f"subnetwork {subnet.name} ({region}, network {_last(subnet.network)})"
    if spec.etcd.bootstrap == "discovery" and nat is None:
        raise ProviderError(
            f"etcd.bootstrap: discovery: masters have no external address and {where} has no Cloud NAT, so "
            "they cannot reach the discovery service; use etcd.bootstrap store, or add a Cloud NAT covering it")
    if subnet.private_ip_google_access or nat:
        ledger.found("path", f"{subnet.name}: " + ("Private Google Access" if subnet.private_ip_google_access else f"Cloud NAT {nat}"))
        return
    if given:
        raise ProviderError(
            f"gcp: masters have no external address and {where} has neither Private Google Access nor a Cloud NAT: "
            "they cannot reach Cloud Storage or the Compute API. Turn it on: gcloud compute networks subnets update "
            f"{subnet.name} --region {region} --enable-private-ip-google-access")
    what = f"turn on Private Google Access for {subnet.name}"
    op = c.call(what, c.client("Subnetworks").set_private_ip_google_access_unary, allow=(), project=project, region=region,
                subnetwork=subnet.name,
                subnetworks_set_private_ip_google_access_request_resource=c.types.SubnetworksSetPrivateIpGoogleAccessRequest(
                    private_ip_google_access=True))
    c.wait(op, what)
    ledger.made("private-google-access", subnet.name)
