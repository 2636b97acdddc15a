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
- Both paths leave the network through its default internet gateway: Private Google Access
  for the default domains needs a route to Google's API addresses, Cloud NAT a default route,
  each with next hop `default-internet-gateway`
  (https://cloud.google.com/vpc/docs/configure-private-google-access#config-routing). GCE
  makes `0.0.0.0/0` to it with every network; hardened networks delete it. bakery checks for a
  route that applies to the masters (no tags, or the masters' tag) on any network, its own
  default included, and never adds one: routes are the network owner's.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from bakery.errors import ProviderError

NAT_ALL = ("ALL_SUBNETWORKS_ALL_IP_RANGES", "ALL_SUBNETWORKS_ALL_PRIMARY_IP_RANGES")
INTERNET_GATEWAY = "global/gateways/default-internet-gateway"
# private.googleapis.com and restricted.googleapis.com: with a private DNS zone for
# googleapis.com, a route to one of them is all Private Google Access needs
GOOGLE_VIPS = (ipaddress.IPv4Network("199.36.153.8/30"), ipaddress.IPv4Network("199.36.153.4/30"))
ANYWHERE = ipaddress.IPv4Network("0.0.0.0/0")


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


def routes_out(routes: list[Any], network: str, tag: str) -> dict[str, str]:
    """The routes through the default internet gateway that apply to the masters, by reach:
    "anywhere" (0.0.0.0/0: Google's APIs, and the internet through a Cloud NAT) and "google"
    (a route that covers private.googleapis.com or restricted.googleapis.com only)."""
    out: dict[str, str] = {}
    for r in routes:
        if not _same(r.network, network) or not r.next_hop_gateway.endswith(INTERNET_GATEWAY):
            continue
        if r.tags and tag not in r.tags:  # a tagged route applies to instances with one of its tags
            continue
        try:
            dest = ipaddress.IPv4Network(r.dest_range)
        except ValueError:  # an IPv6 route: the masters speak IPv4
            continue
        if dest == ANYWHERE:
            out.setdefault("anywhere", r.name)
        elif any(vip.subnet_of(dest) for vip in GOOGLE_VIPS):
            out.setdefault("google", r.name)
    return out


def _no_route(where: str, network: str, need: str) -> ProviderError:
    return ProviderError(
        f"gcp: {where}: network {_last(network)} has no route {need} with next hop default-internet-gateway that "
        "applies to the masters (no tags, or their tag), so neither Private Google Access nor a Cloud NAT can carry "
        "their traffic to Cloud Storage and the Compute API. Add one: gcloud compute routes create "
        f"{_last(network)}-internet --network {_last(network)} --destination-range 0.0.0.0/0 "
        "--next-hop-gateway default-internet-gateway")


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
    out = routes_out(c.list("list routes", c.client("Routes").list, c.types.ListRoutesRequest(project=project)),
                     subnet.network, provider.names.tag)
    if "anywhere" not in out and (nat or spec.etcd.bootstrap == "discovery"):
        raise _no_route(where, subnet.network, "0.0.0.0/0")  # a Cloud NAT only translates what the route sends out
    if not out:
        raise _no_route(where, subnet.network, "to Google's APIs (0.0.0.0/0, or private.googleapis.com's 199.36.153.8/30)")
    route = out.get("anywhere") or out["google"]
    if subnet.private_ip_google_access or nat:
        how = "Private Google Access" if subnet.private_ip_google_access else f"Cloud NAT {nat}"
        ledger.found("path", f"{subnet.name}: {how}, route {route}")
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
