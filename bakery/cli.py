"""The `bakery` command. The only module that prints.

Each subcommand is a `cmd_<name>(args) -> int` function registered in `_parser()`.
Library code raises BakeryError; `main` prints its lines (one per problem) on stderr
and exits with the error's code. Heavy imports (cloud SDKs, cryptography, Jinja2)
happen inside the commands so that `bakery --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bakery import __version__
from bakery.errors import BakeryError

EPILOG = """\
typical use:
  bakery init --provider local > cluster.yaml   write a commented starter spec
  bakery validate -f cluster.yaml               check the spec and everything it renders
  bakery render -f cluster.yaml                 write build/<cluster>/nodes/<node>/{user-data,files/}
  bakery binaries -f cluster.yaml               the real etcd and Kubernetes programs of the spec's versions
  bakery bake -f cluster.yaml                   build the golden image with Packer
  bakery up -f cluster.yaml                     create (or converge) the load balancer and masters
  bakery status -f cluster.yaml                 what is running, and is it healthy
  bakery rollout -f cluster.yaml                replace the masters one at a time onto the newest image
  bakery nightly -f cluster.yaml                bake --if-changed, rollout if the image changed, a JSON report
  bakery backup -f cluster.yaml                 an etcd snapshot into the state store (list, prune)
  bakery restore -f cluster.yaml --backup ID    bring etcd back from a backup
  bakery down -f cluster.yaml                   delete exactly what carries the cluster's tag

exit codes: 0 ok, 1 unexpected, 2 bad input, 3 PKI, 4 bake, 5 provider, 6 etcd,
  7 state or build folder (-o not a writable folder, disk full), 8 state store,
  9 node agent, 10 drift (--fail-on-drift), 11 binaries (build or download),
  130 interrupted, 141 stdout closed early (`| head`)
"""


# -- output helpers (the only printing in bakery) -----------------------------------


def out(line: str = "") -> None:
    print(line, flush=True)


def err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    """A plain, aligned table; numbers right-aligned."""
    cells = [[str(h) for h in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [all(_is_number(r[i]) for r in cells[1:]) and len(cells) > 1 for i in range(len(header))]
    for n, r in enumerate(cells):
        line = "  ".join(c.rjust(w) if numeric[i] and n else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        out(line.rstrip())


def _is_number(s: str) -> bool:
    return s.replace(",", "").replace(".", "").replace("%", "").isdigit()


class ProgressPrinter:
    """Turns provider/bake progress events into timestamped lines on stderr.

    One line per state change, prefixed with the seconds since the command started,
    so a log of a slow `up` reads as a timeline at 3 a.m.
    """

    def __init__(self, quiet: bool = False) -> None:
        self.start = time.monotonic()
        self.quiet = quiet
        self._last: dict[str, str] = {}

    def __call__(self, step: str, status: str, detail: str = "") -> None:
        if self.quiet or self._last.get(step) == status + detail:
            return
        self._last[step] = status + detail
        elapsed = time.monotonic() - self.start
        err(f"[{elapsed:6.1f}s] {step:<28} {status}{('  ' + detail) if detail else ''}")


# -- commands -----------------------------------------------------------------------


def cmd_schema(args: argparse.Namespace) -> int:
    from bakery import spec

    out(json.dumps(spec.json_schema(), indent=2))
    return 0


# The starter each provider's `init` writes: the recommended layout, the one `bakery rollout`
# and `bakery nightly` replace masters in (AWS: an autoscaling group; GCP: managed groups).
STARTERS = {"local": "local.yaml", "aws": "aws-asg.yaml", "gcp": "gcp.yaml"}


def cmd_init(args: argparse.Namespace) -> int:
    from bakery.errors import SpecError
    from bakery.output import atomic_write
    from bakery.render.templates import data_dir

    text = (data_dir("examples") / STARTERS[args.provider]).read_text()
    # `bakery init > cluster.yaml` (the shell made the file, empty, before bakery ran) and
    # `bakery init | head` mean stdout: without -f, a stdout that is not a terminal gets the spec.
    if args.file == "-" or (args.file is None and not sys.stdout.isatty()):
        out(text.rstrip("\n"))
        return 0
    target = Path(args.file or "cluster.yaml")
    # An empty file holds nothing to lose (a redirect's, a `touch`); anything else is the user's.
    if target.exists() and not args.force and not (target.is_file() and target.stat().st_size == 0):
        raise SpecError(f"{target} exists; not overwriting it (use --force, or -f another path, or -f - for stdout)")
    atomic_write(target, text)
    err(f"wrote {target}: a commented {args.provider} spec. Next: bakery validate -f {target}")
    return 0


def _kubectl(spec: Any) -> str:
    """The kubectl to show: the machine's cached one of the spec's version (a kubectl on PATH
    may be outside the one minor of skew kubectl supports), else the one on PATH."""
    from bakery.components import cache

    cached = cache.Slot(cache.root(), "kubernetes", spec.kubernetes_version.lstrip("v")).path("kubectl")
    return str(cached) if cached.exists() else "kubectl"


def _warn(spec: Any) -> None:
    """The spec's warnings (accepted settings that undo a hardening), one line each, on stderr."""
    for w in spec.warnings:
        err(f"warning: {w}")


def _print_pki_changes(pki: Any) -> None:
    for change in pki.changes:
        err(f"pki: {change}")
    for warning in pki.warnings:
        err(f"warning: {warning}")


def cmd_render(args: argparse.Namespace) -> int:
    from bakery.pipeline import Cluster, write_nodes

    cluster = Cluster.load(args.file, args.build_dir)
    _warn(cluster.spec)
    rendered = cluster.render()
    write_nodes(cluster.paths, rendered)  # the PKI's changes are swapped in with the node trees
    _print_pki_changes(rendered.pki)
    rows = []
    for name, r in rendered.nodes.items():
        ud = r.user_data
        rows.append((name, r.node.address, r.node.zone, len(r.files), f"{len(ud.plain):,}", f"{len(ud.encoded):,}",
                     ud.encoding, f"{ud.share:.0%}"))
    table(rows, ("NODE", "ADDRESS", "ZONE", "FILES", "PLAIN", "ENCODED", "ENCODING", f"OF {cluster.spec.provider.upper()} LIMIT"))
    kubeconfig = cluster.paths.base / "admin.kubeconfig"
    if rendered.plan.lb.endpoint:
        out(f"\nwrote {cluster.paths.nodes}/<node>/{{user-data,files/}} and {kubeconfig} ({rendered.plan.lb.endpoint})")
    else:
        out(f"\nwrote {cluster.paths.nodes}/<node>/{{user-data,files/}}")
        err(f"note: {kubeconfig} not written: the load balancer's address is not known yet; `bakery up` writes it "
            "once the load balancer exists (or set load_balancer.dns_name / load_balancer.ip)")
    return 0


def cmd_pki_renew(args: argparse.Namespace) -> int:
    from bakery.pipeline import Cluster

    cluster = Cluster.load(args.file, args.build_dir)
    renewed = cluster.renew_pki(args.before, keep_keys=args.keep_keys)
    _print_pki_changes(renewed)
    if not renewed.changes:
        out(f"{cluster.paths.pki}: no certificate expires within {args.before} days; nothing renewed")
        return 0
    out(f"{cluster.paths.pki}: {len(renewed.changes)} certificate(s) renewed. Next: bakery render -f {args.file}, "
        "then bakery rollout (masters read their certificates at boot)")
    return 0


def cmd_pki_adopt(args: argparse.Namespace) -> int:
    from bakery.pipeline import Cluster

    cluster = Cluster.load(args.file, args.build_dir)
    adopted = cluster.adopt_pki()
    _print_pki_changes(adopted)
    out(f"{cluster.paths.pki}: manifest written. Next: bakery render -f {args.file}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from bakery import validate
    from bakery.errors import Problem, RenderError
    from bakery.pipeline import Cluster

    cluster = Cluster.load(args.file, args.build_dir)
    _warn(cluster.spec)
    out(f"{args.file}: spec ok ({cluster.spec.name}, {cluster.spec.provider}, {cluster.spec.masters} masters)")
    # Render in memory with a throwaway copy of the PKI: validate writes nothing.
    rendered = cluster.render(keep_pki=False)
    for warning in rendered.pki.warnings:
        err(f"warning: {warning}")
    schema = validate.cloud_init_schema()
    problems: list[str] = []
    skipped: set[str] = set()
    if cluster.spec.user_data == "store":
        ud = next(iter(rendered.nodes.values())).user_data
        problems += [f"user-data: {p}" for p in (validate.check_cloud_config(ud.plain, schema) if schema else [])]
        problems += [f"user-data: {p}" for p in validate.check_no_private_key(ud.plain)]
        if not problems:
            out(f"user-data ok (every master: {len(ud.encoded):,} bytes {ud.encoding}, {ud.share:.0%} of the limit, no secret)")
    for name, r in rendered.nodes.items():
        # the node's whole tree, as bakery-node writes it (or its user-data, when embedded)
        report = validate.check_node(r.document, schema=schema, kubernetes_version=cluster.spec.kubernetes_version)
        problems += [f"{name}: {p}" for p in report.problems]
        skipped.update(report.skipped)
        for w in report.warnings:
            err(f"warning: {name}: {w}")
        if not problems and cluster.spec.user_data == "store":
            out(f"{name}: files ok ({len(r.files)} files)")
        elif not problems:
            out(f"{name}: user-data ok ({len(r.files)} files, {len(r.user_data.encoded):,} bytes {r.user_data.encoding}, "
                f"{r.user_data.share:.0%} of the limit)")
    for s in sorted(skipped):
        err(f"not checked: {s}")
    if problems:
        raise RenderError("rendered output has problems", [Problem(p) for p in problems])
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    import dataclasses

    from bakery import providers
    from bakery.pipeline import Cluster
    from bakery.providers.base import LBAddress

    cluster = Cluster.load(args.file, args.build_dir)
    _warn(cluster.spec)
    lb = cluster.lb_address()
    if not (lb.dns_names or lb.ips):
        # The LB does not exist yet, and its name goes into the certificates: render once
        # against a stand-in name longer than any cloud's, with a throwaway copy of the PKI,
        # so user-data over the provider's limit is refused before any API call.
        probe = cluster
        if cluster.spec.etcd.bootstrap == "discovery" and not (cluster.spec.etcd.discovery_url or cluster.state.get("discovery")):
            # the local provider makes its token only once its discovery etcd runs: a stand-in as long as a real URL
            stand_in = {"url": "http://" + "0" * 15 + ":65535/v2/keys/_etcd/registry/" + "0" * 32, "token": "0" * 32}
            probe = dataclasses.replace(cluster, state={**cluster.state, "discovery": stand_in})
        probe.render(LBAddress(dns_names=("size-probe-" + "0" * 50 + ".lb-" + "0" * 30 + ".invalid",)), keep_pki=False)
    provider = providers.get(cluster.spec, cluster.paths, ProgressPrinter())
    # local: `up` is watched by a person and returns at a healthy etcd (its whole point)
    result = provider.up(cluster.render_callback(store=provider.store), wait=args.wait or cluster.spec.provider == "local")
    out(f"{cluster.spec.name}: {len(result.created)} created, {len(result.existing)} already there; "
        f"ids in {cluster.paths.state}")
    if result.endpoint and cluster.spec.provider == "local":  # the local LB fronts etcd and the API
        pki = cluster.paths.pki / "etcd"
        out(f"etcd: {result.endpoint}  (client cert {pki / 'healthcheck-client.crt'}, CA {pki / 'ca.crt'})")
        if result.api_endpoint:  # `up` waited for it; `bakery status` says whether it is still ready
            out(f"API:  {result.api_endpoint}  (admin kubeconfig {cluster.paths.base / 'admin.kubeconfig'})")
            out(f"      {_kubectl(cluster.spec)} --kubeconfig {cluster.paths.base / 'admin.kubeconfig'} get leases -n kube-system")
        out("bakery status | ssh NODE | logs NODE | down")
    elif result.endpoint:
        out(f"API: {result.endpoint}  (kubectl --kubeconfig {cluster.paths.base / 'admin.kubeconfig'} get nodes)")
    if cluster.spec.provider == "aws" and cluster.spec.provider_spec.instance_profile:
        from bakery.providers.aws import iam

        err(f"aws.instance_profile {cluster.spec.provider_spec.instance_profile} is used as given: bakery made no role. "
            "Its role needs this policy (and EC2 in its trust policy):")
        out(json.dumps(iam.policy_document(cluster.spec), indent=2))
    _report_drift(result.drift, args.fail_on_drift)
    return 0


def _report_drift(drift: Sequence[str], fail: bool) -> None:
    from bakery.errors import DriftError

    for line in drift:
        err(f"drift: {line}")
    if drift and fail:
        raise DriftError(f"{len(drift)} drift line(s) above (--fail-on-drift)")


def cmd_rollout(args: argparse.Namespace) -> int:
    from bakery import providers
    from bakery.pipeline import Cluster

    cluster = Cluster.load(args.file, args.build_dir)
    _warn(cluster.spec)
    progress = ProgressPrinter()
    provider = providers.get(cluster.spec, cluster.paths, progress)
    done = _rollout(args, cluster, provider, progress)
    for r in done:
        by = f" by {r.replacement}" if r.replacement else ""
        out(f"{r.node}: replaced in {r.seconds:.0f}s{by} (etcd member {r.old_member:x} -> {r.new_member:x})")
    _report_drift(_provider_drift(provider), args.fail_on_drift)
    return 0


def cmd_nightly(args: argparse.Namespace) -> int:
    from bakery import bake, nightly, providers
    from bakery.pipeline import Cluster

    cluster = Cluster.load(args.file, args.build_dir)
    progress = ProgressPrinter()
    provider = providers.get(cluster.spec, cluster.paths, progress)
    opts = bake.Options(if_changed=True, packer=args.packer)
    report = nightly.run(cluster.paths, bake=lambda: bake.bake(cluster.spec, cluster.paths, opts, progress=progress),
                         rollout=lambda: _rollout(args, Cluster.load(args.file, args.build_dir), provider, progress),
                         drift=lambda: _provider_drift(provider))
    for image in report["bake"]["images"]:
        out(f"{image['target']}: {image['name']} {image['status']}")
    for r in report["rollout"]["replaced"]:
        out(f"{r['node']}: replaced in {r['seconds']:.0f}s")
    if not report["rollout"]["ran"]:
        out(f"rollout skipped: {report['rollout']['reason']}")
    out(f"nightly: {report['seconds']:.0f}s; report in {report['report']}")
    _report_drift(report["drift"], args.fail_on_drift)
    return 0


def _rollout(args: argparse.Namespace, cluster: Any, provider: Any, progress: ProgressPrinter) -> list[Any]:
    from bakery import reach, rollout
    from bakery.errors import EtcdError, ProviderError
    from bakery.etcd import TLS, Client

    if getattr(provider, "cattle", False):
        return _surge_rollout(args, cluster, provider, progress)
    if getattr(args, "dry_run", False):
        raise ProviderError(f"--dry-run: the {cluster.spec.provider} provider replaces masters in their slots; "
                            "its plan is every master in turn, followers first and the leader last")
    if not hasattr(provider, "replace_master"):
        raise ProviderError(f"the {cluster.spec.provider} provider cannot replace masters yet; replace them by hand "
                            "(member remove, member add --learner, boot with `bakery render`'s user-data) one at a time")
    etcd_pki = cluster.paths.pki / "etcd"
    tls = TLS(etcd_pki / "ca.crt", etcd_pki / "healthcheck-client.crt", etcd_pki / "healthcheck-client.key")
    # masters in fixed slots: the plan's names, wherever the provider (or --etcd-endpoint) reaches them
    members = reach.locate(cluster.spec, provider, None, args.etcd_endpoint or ())
    found = members.by_name()
    plan = cluster.render().plan
    if missing := [n.name for n in plan.nodes if n.name not in found]:
        raise EtcdError(f"no etcd client URL for {', '.join(missing)}: {members.looked_at()} (give --etcd-endpoint NODE=URL)")
    endpoints = {n.name: found[n.name] for n in plan.nodes}
    return rollout.rollout(cluster, lambda urls: Client(list(urls), tls), provider, nodes=getattr(args, "node", None) or (),
                           endpoints=endpoints, progress=progress, timing=rollout.Timing(healthy=args.timeout))


def _surge_rollout(args: argparse.Namespace, cluster: Any, provider: Any, progress: ProgressPrinter) -> list[Any]:
    """Masters as cattle: surge one new master per old one, journaled in the store (bakery/surge.py);
    the group's current members are where surge reaches etcd (bakery/reach.py's group source)."""
    from bakery import reach, rollout, surge
    from bakery.etcd import TLS, Client

    etcd_pki = cluster.paths.pki / "etcd"
    tls = TLS(etcd_pki / "ca.crt", etcd_pki / "healthcheck-client.crt", etcd_pki / "healthcheck-client.key")
    client = lambda urls: Client(list(urls), tls)  # noqa: E731
    store = provider.store()
    group = provider.group()
    nodes = getattr(args, "node", None) or ()
    if getattr(args, "dry_run", False):
        journal = surge.load_journal(store, cluster.spec.name)
        with client(reach.locate(cluster.spec, provider, store).require("ask for the leader")) as etcd:
            leader = surge.leader_name(etcd, group)
        for line in surge.plan(group, journal, nodes, leader):
            out(line)
        return []
    return surge.rollout(cluster.spec.name, client, group, store, surge.user_data(cluster, store), nodes=nodes, progress=progress,
                         timing=rollout.Timing(healthy=args.timeout), workdir=cluster.paths.root)


def _provider_drift(provider: Any) -> list[str]:
    """What the provider's ledger noted as drift while it worked (providers without one: none)."""
    return list(getattr(getattr(provider, "ledger", None), "drift", None) or [])


def _etcd_access(args: argparse.Namespace, *, machines: bool = False) -> tuple[Any, Any, Any, Any]:
    """(Cluster, its store, where its etcd members are (bakery/reach.py), bakery's etcd client TLS)."""
    import ipaddress

    from bakery import providers, reach, topology
    from bakery.etcd import TLS
    from bakery.pipeline import Cluster

    cluster = Cluster.load(args.file, args.build_dir)
    plan = topology.plan(cluster.spec, lb_dns_names=cluster.lb_address().dns_names, lb_ips=cluster.lb_address().ips)
    # members on loopback addresses (several on one host, in development) are reached directly
    on_loopback = all(ipaddress.ip_address(n.address).is_loopback for n in plan.nodes)
    provider = None if on_loopback else providers.get(cluster.spec, cluster.paths, ProgressPrinter(quiet=True))
    store = _store(args, cluster)
    members = reach.locate(cluster.spec, provider, store, args.etcd_endpoint or (), plan=plan, machines=machines)
    pki = cluster.paths.pki / "etcd"
    return cluster, store, members, TLS(pki / "ca.crt", pki / "healthcheck-client.crt", pki / "healthcheck-client.key")


def _store(args: argparse.Namespace, cluster: Any) -> Any:
    from bakery import backup
    from bakery.store import open_store

    return open_store(backup.store_url(cluster.spec, cluster.paths.root, args.store))


def cmd_backup(args: argparse.Namespace) -> int:
    import datetime as dt

    from bakery import backup
    from bakery.etcd import Client

    if args.action == "list":
        return _backup_list(args)
    if args.action == "prune":
        from bakery.pipeline import Cluster

        cluster = Cluster.load(args.file, args.build_dir)
        gone = backup.prune(_store(args, cluster), cluster.spec.name)
        for i in gone:
            out(f"deleted backup {i}")
        out(f"{cluster.spec.name}: {len(gone)} backup(s) pruned (kept: hourly for 7 days, daily for 365 days, the newest)")
        return 0
    cluster, store, members, tls = _etcd_access(args)
    urls = members.require("take a snapshot through")
    with Client(urls, tls) as c:
        status = backup.healthy_member(c, urls)
        b = backup.take(c, status, store, cluster.spec.name, now=dt.datetime.now(dt.UTC))
    if not b.created:
        out(f"backup {b.id}: already in {store.url} (same minute, same revision); nothing uploaded")
        return 0
    out(f"backup {b.id}: {b.size:,} bytes at revision {b.revision} from member {b.member} ({b.endpoint}, etcd {b.etcd_version}) "
        f"in {b.seconds:.1f}s; sha256 {b.sha256}")
    out(f"stored in {store.url}/{cluster.spec.name}/backups/")
    return 0


def _backup_list(args: argparse.Namespace) -> int:
    import datetime as dt

    from bakery import backup
    from bakery.pipeline import Cluster

    cluster = Cluster.load(args.file, args.build_dir)
    store = _store(args, cluster)
    listed = backup.list_backups(store, cluster.spec.name)
    keep = backup.retained([b.id for b in listed if b.complete and b.ours], dt.datetime.now(dt.UTC))
    if args.output == "json":
        out(json.dumps([{"id": b.id, "complete": b.complete, "ours": b.ours, "kept": b.id in keep, **(b.meta or {})}
                        for b in listed], indent=2, sort_keys=True))
        return 0
    if not listed:
        out(f"{cluster.spec.name}: no backups in {store.url} (bakery backup -f {args.file})")
        return 0
    rows = []
    for b in reversed(listed):
        m = b.meta or {}
        state = "incomplete" if not b.complete else ("kept" if b.id in keep else "prunable") if b.ours else "not bakery's"
        rows.append((b.id, m.get("taken_at", "-"), m.get("revision", "-"), f"{m['size']:,}" if "size" in m else "-",
                     m.get("member", "-"), m.get("etcd_version", "-"), state))
    table(rows, ("ID", "TAKEN", "REVISION", "BYTES", "MEMBER", "ETCD", "RETENTION"))
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from bakery import reach, restore

    cluster, store, members, tls = _etcd_access(args, machines=True)
    restore.check_backup(store, cluster.spec.name, args.backup)  # a bad backup is refused before anything is asked
    seen = reach.survey(members, tls)
    lines = reach.restore_allowed(members, seen, force=args.force)
    for line in lines:
        err(f"checked: {line}")
    if args.force and any(s.state not in ("refused", "not running") for s in seen):
        err("warning: --force: restoring although not every member was seen down")
    req = restore.request(store, cluster.spec.name, args.backup,
                          members=[(e.name, e.advertised) for e in members.endpoints])
    out(f"restore of backup {req.backup} (sha256 {req.sha256}) requested in {store.url}; the old cluster's "
        "bootstrapped marker and member records are gone")
    out("next: restart bakery-node on every master (or replace them): the first to start restores the backup as a "
        "one-member cluster, the others join it as learners")
    return 0


def _endpoint(text: str) -> tuple[str, str]:
    node, sep, url = text.partition("=")
    if not sep or not url.startswith("https://"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NODE=https://HOST:PORT")
    return node, url


STATUS_SCHEMA = "bakery.status/v1"


def status_document(status: Any) -> dict[str, Any]:
    """`bakery status --output json`: a stable document (README, "bakery status").

    {"schema": "bakery.status/v1", "cluster", "provider", "endpoint",
     "nodes": [{"name", "id", "address", "zone", "state", "health", "image", "extra": {...}}],
     "extra": {...}}; provider-specific keys live only under "extra"."""
    import dataclasses

    return {"schema": STATUS_SCHEMA, **dataclasses.asdict(status)}


def cmd_status(args: argparse.Namespace) -> int:
    from bakery import providers, spec, state

    s = spec.load(args.file)

    _warn(s)
    provider = providers.get(s, state.paths(s.name, args.build_dir), ProgressPrinter(quiet=True))
    status = provider.status()
    if status.provider == "local" and any(n.state == "running" for n in status.nodes):
        # every member any source knows, and which cluster each serves: two ids are a split brain
        status.extra["etcd_members"] = _etcd_members(s, provider)
    if args.output == "json":
        out(json.dumps(status_document(status), indent=2, sort_keys=True))
        return 0
    table([(n.name, n.id or "-", n.address or "-", n.zone or "-", n.state, n.health, n.image or "-") for n in status.nodes],
          ("NODE", "ID", "ADDRESS", "ZONE", "STATE", "TARGET HEALTH", "IMAGE"))
    groups = status.extra.get("groups") or {}  # masters in cloud groups (gcp.masters: mig)
    if groups:
        out()
        table([(name, g["zone"], str(g["target_size"]), g["template"], "yes" if g["stable"] else "no", ", ".join(g["instances"]) or "-")
               for name, g in sorted(groups.items())], ("GROUP", "ZONE", "TARGET", "TEMPLATE", "STABLE", "INSTANCES"))
    if status.provider == "local":  # ID is the QEMU or nspawn PID, health the node's own etcd member
        backends = status.extra.get("backends") or {}
        api_backends = status.extra.get("api_backends") or {}
        out()
        table([(n.name, n.extra.get("runtime", "-"), _cell(n.extra.get("cloud-init")),
                "leader" if n.extra.get("leader") else ("follower" if n.health == "healthy" else
                                                        _cell(" ".join(filter(None, (n.health, n.extra.get("health_detail")))))),
                backends.get(n.name, "-"), n.extra.get("etcd", "-"), _cell(n.extra.get("api", "-")),
                api_backends.get(n.name, "-"))
               for n in status.nodes],
              ("NODE", "RUNTIME", "CLOUD-INIT", "ETCD", "ETCD LB BACKEND", "ETCD URL", "API SERVER", "API LB BACKEND"))
        services = status.extra.get("services") or {}
        rows = [(name, st) for name, st in services.items()]
        network = status.extra.get("network")
        if network:
            fwd = {"0": "forwarding off", "1": "FORWARDING ON", "-": "absent"}.get(network["forwarding"], network["forwarding"])
            rows.append(("bridge", f"{network['bridge']} {network['host_address']} ({network['subnet']}), {fwd}"))
        if status.extra.get("backends_error"):
            rows.append(("backends", _cell(status.extra["backends_error"])))
        out()
        table(rows, ("SERVICE", "STATE"))
    members = status.extra.get("etcd_members") or []
    if members:
        out()
        table([(m["name"], m["url"], ", ".join(m["sources"]), m["state"], m["cluster_id"] or "-", "yes" if m["leader"] else "")
               for m in members], ("ETCD MEMBER", "URL", "FOUND IN", "STATE", "CLUSTER", "LEADER"))
        ids = {m["cluster_id"] for m in members if m["cluster_id"]}
        if len(ids) > 1:
            err(f"warning: etcd answers with {len(ids)} cluster ids ({', '.join(sorted(ids))}): two clusters behind one "
                "load balancer; see `bakery restore --help`")
    api = status.extra.get("api")
    if status.provider == "local":  # its LB fronts both: etcd on one port, the API on another
        ready = "-" if not api else ("ready" if api["ready"] else f"not ready: {_cell(api['detail'])}")
        out(f"\n{status.provider} {status.cluster}: etcd {status.endpoint}; API {api['endpoint'] if api else '(load balancer stopped)'} "
            f"({ready})")
    else:
        out(f"\n{status.provider} {status.cluster}: API {status.endpoint or '(no load balancer)'}")
    return 0


def _etcd_members(s: Any, provider: Any) -> list[dict[str, Any]]:
    """What each member found anywhere (bakery/reach.py) says: state, cluster and member id, leadership."""
    from bakery import reach

    seen = reach.survey(reach.locate(s, provider, provider.store()), provider.tls())
    return [{"name": x.endpoint.name, "url": x.endpoint.url, "sources": list(x.endpoint.sources), "state": x.state,
             "cluster_id": f"{x.cluster_id:x}" if x.cluster_id else "", "member_id": f"{x.member_id:x}" if x.member_id else "",
             "leader": x.leader} for x in seen]


def _cell(value: object, width: int = 60) -> str:
    text = "-" if value is None else str(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 3] + "..."


def cmd_down(args: argparse.Namespace) -> int:
    from bakery import providers, spec, state

    s = spec.load(args.file)

    _warn(s)
    provider = providers.get(s, state.paths(s.name, args.build_dir), ProgressPrinter())
    deleted = provider.down(purge=True) if args.purge else provider.down()
    for d in deleted:
        out(f"deleted {d}")
    out(f"{s.name}: {len(deleted)} resources deleted" if deleted else f"{s.name}: nothing carries the cluster's tag; nothing to delete")
    return 0


def _published_user_data(args: argparse.Namespace, provider_name: str, what: str) -> tuple[Any, Any]:
    """(provider, the small user-data) for a group template, after publishing the cluster
    description and CA material it names to the state store (created by `bakery up`)."""
    from bakery import providers
    from bakery.errors import SpecError
    from bakery.pipeline import Cluster, write_nodes

    cluster = Cluster.load(args.file, args.build_dir)
    _warn(cluster.spec)
    if cluster.spec.provider != provider_name:
        raise SpecError(f"{args.file}: {what}s are a {provider_name.upper()} feature; this spec's provider is {cluster.spec.provider}")
    if cluster.spec.user_data != "store":
        raise SpecError(f"{args.file}: user_data: {cluster.spec.user_data}: every instance of a group boots the same "
                        "document, so a template needs `user_data: store` (the default)")
    provider = providers.get(cluster.spec, cluster.paths, ProgressPrinter())
    rendered = cluster.render()  # the LB's names from state.json
    write_nodes(cluster.paths, rendered)
    digest, written = cluster.publish(rendered, provider.store())
    _print_pki_changes(rendered.pki)
    err(f"store {cluster.store_url()}: description {digest}" + (f" ({len(written)} objects written)" if written else " (unchanged)"))
    (first, *_) = rendered.nodes.values()
    return provider, first.user_data


def cmd_launch_template(args: argparse.Namespace) -> int:
    provider, user_data = _published_user_data(args, "aws", "launch template")
    tid, version = provider.launch_template(user_data)
    out(f"launch template {tid} version {version} (default): {len(user_data.encoded):,} bytes of user-data, no secret")
    return 0


def cmd_instance_template(args: argparse.Namespace) -> int:
    provider, user_data = _published_user_data(args, "gcp", "instance template")
    name = provider.instance_template(user_data)
    out(f"instance template {name}: {len(user_data.encoded):,} bytes of user-data, no secret")
    return 0


def cmd_bake(args: argparse.Namespace) -> int:
    from bakery import bake, spec, state

    s = spec.load(args.file)

    _warn(s)
    opts = bake.Options(only=args.only or (), if_changed=args.if_changed, dry_run=args.dry_run, packer=args.packer,
                        templates=Path(args.templates) if args.templates else None)
    results = bake.bake(s, state.paths(s.name, args.build_dir), opts, progress=ProgressPrinter())
    if args.dry_run:
        out(bake.describe(results))
        return 0
    for r in results:
        rec = r.record or {}
        where = rec.get("disk") or rec.get("image") or ", ".join(f"{k}={v}" for k, v in rec.get("amis", {}).items())
        out(f"{r.target}: {r.name} {r.status}{('  ' + where) if where else ''}")
    out(f"recorded in {state.paths(s.name, args.build_dir).images}")
    return 0


def cmd_binaries(args: argparse.Namespace) -> int:
    from bakery import components, spec, versions

    if args.supported:
        if args.kubernetes_version or args.etcd_version:
            raise BakeryError("--supported obtains every supported minor's default release: it takes no --kubernetes-version "
                              "or --etcd-version")
        pairs = [(versions.KUBERNETES[m][-1], versions.default_etcd(versions.KUBERNETES[m][-1]))
                 for m in versions.SUPPORTED_MINORS]
    elif args.kubernetes_version:
        pairs = [(args.kubernetes_version, args.etcd_version or versions.default_etcd(args.kubernetes_version))]
    else:
        s = spec.load(args.file)
        _warn(s)
        pairs = [(s.kubernetes_version, s.etcd_version)]
    wanted = args.component or list(components.ALL)
    many = len(pairs) > 1
    if args.cached:
        rows = [((k8s,) if many else ()) + (c, str(p) if p else "(not cached)")
                for k8s, etcd in pairs for c, p in components.cached(wanted, k8s, etcd).items()]
        table(rows, (("kubernetes",) if many else ()) + ("component", "binary"))
        return 0
    started = time.monotonic()

    def progress(line: str) -> None:
        err(f"[{time.monotonic() - started:6.1f}s] {line}")

    rows = []
    for k8s, etcd in pairs:
        paths = components.obtain(wanted, k8s, etcd, source=args.source, progress=progress)
        rows += [((k8s,) if many else ()) + (c, str(p)) for c, p in paths.items()]
    table(rows, (("kubernetes",) if many else ()) + ("component", "binary"))
    return 0


def _images_rows(data: dict[str, Any]) -> list[tuple[Any, ...]]:
    current = {data[t]["name"] for t in ("aws", "gcp", "local") if isinstance(data.get(t), dict)}
    rows = []
    for rec in reversed(data["images"]):
        art = rec.get("disk") or rec.get("image") or " ".join(f"{k}:{v}" for k, v in rec.get("amis", {}).items())
        rows.append((rec["target"], rec["name"], rec.get("kubernetes_version"), rec.get("built_at"),
                     "*" if rec["name"] in current else "", art))
    return rows


def cmd_images_list(args: argparse.Namespace) -> int:
    from bakery import spec, state
    from bakery.bake import images

    s = spec.load(args.file)

    _warn(s)
    data = images.load(state.paths(s.name, args.build_dir).images, s.name)
    if args.output == "json":
        out(json.dumps(data, indent=2, sort_keys=True))
    elif data["images"]:
        table(_images_rows(data), ("TARGET", "NAME", "KUBERNETES", "BUILT", "CURRENT", "ARTIFACT"))
    else:
        out(f"{s.name}: no images yet (bakery bake -f {args.file})")
    return 0


def cmd_images_prune(args: argparse.Namespace) -> int:
    from bakery import spec, state
    from bakery.bake import cloud, images

    s = spec.load(args.file)

    _warn(s)
    pruned = images.prune(state.paths(s.name, args.build_dir).images, s.name, args.keep, cloud.Deleter(s))
    for rec, deleted in pruned:
        out(f"pruned {rec['target']} {rec['name']}: deleted {', '.join(deleted) or 'nothing (already gone)'}")
    out(f"{s.name}: {len(pruned)} image(s) pruned, newest {args.keep} per target kept")
    return 0


# -- parser and main ----------------------------------------------------------------


def cmd_discovery_new(args: argparse.Namespace) -> int:
    from bakery import discovery, spec, state

    s = spec.load(args.file)

    _warn(s)
    token = discovery.new_token(s, state.paths(s.name, args.build_dir), replace=args.replace)
    for record in token.srv_records:
        out(record)
    if token.url:
        out(token.url)
    elif token.token:
        out(token.token)
    if token.note:
        err(token.note)
    if token.created:
        err(f"recorded in {state.paths(s.name, args.build_dir).state}; `bakery render` uses it for the first boot only")
    return 0


def _local_provider(args: argparse.Namespace, command: str) -> Any:
    from bakery import providers, spec, state
    from bakery.errors import SpecError

    s = spec.load(args.file)

    _warn(s)
    if s.provider != "local":
        raise SpecError(f"`bakery {command}` is for the local provider's masters (containers or VMs); {args.file} uses {s.provider} "
                        "(use the cloud's own console and SSH access)")
    return providers.get(s, state.paths(s.name, args.build_dir), ProgressPrinter(quiet=True))


def cmd_ssh(args: argparse.Namespace) -> int:
    remote = args.remote[1:] if args.remote[:1] == ["--"] else args.remote
    argv = _local_provider(args, "ssh").ssh_argv(args.node, remote)
    sys.stdout.flush()
    os.execvp(argv[0], argv)
    return 1  # not reached: exec replaces bakery


def cmd_logs(args: argparse.Namespace) -> int:
    from bakery.errors import ProviderError

    path = _local_provider(args, "logs").console_log(args.node)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        raise ProviderError(f"{path}: no console log yet; `bakery up` starts {args.node} and its log") from None
    for line in lines[-args.lines:] if args.lines > 0 else lines:
        out(line)
    return 0


def _add_spec_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--file", default="cluster.yaml", metavar="CLUSTER_YAML", help="the cluster spec (default: %(default)s)")
    p.add_argument("-o", "--build-dir", default=os.environ.get("BAKERY_BUILD_DIR", "build"), metavar="DIR",
                   help="where bakery keeps PKI, state and rendered files (default: %(default)s, env BAKERY_BUILD_DIR)")


def _add_store_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", metavar="URL", help="the state store (default: file://<build>/<cluster>/store)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bakery",
        description="Highly available Kubernetes control planes from golden images: one cluster.yaml "
        "-> certificates, per-node cloud-init, Packer images, masters behind a load balancer.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"bakery {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("schema", help="print the JSON schema of cluster.yaml")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("init", help="write a commented starter cluster.yaml",
                       description="Write a commented starter spec for a provider, in its recommended layout "
                       "(aws: an autoscaling group; gcp: managed instance groups). Refuses to overwrite a file that is "
                       "not empty. Without -f, a redirected or piped stdout gets the spec (`bakery init > cluster.yaml`).")
    p.add_argument("--provider", choices=tuple(STARTERS), default="local", help="default: %(default)s")
    p.add_argument("-f", "--file", default=None, help="where to write it; - for stdout (default: stdout when it is "
                   "redirected or piped, else cluster.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("render", help="render every master's user-data and file tree",
                       description="Issue or reuse the cluster's certificates and write build/<cluster>/nodes/<node>/ "
                       "(user-data and the expanded files/ tree). Prints the size of each node's user-data "
                       "against the provider's limit. Same spec + same PKI = byte-identical output.")
    _add_spec_arg(p)
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("pki", help="the cluster's certificates: renew the leaves before they expire, adopt an older PKI")
    pki_sub = p.add_subparsers(dest="pki_command", metavar="ACTION", required=True)
    q = pki_sub.add_parser("renew", help="re-issue every leaf certificate that expires within --before days",
                           description="Load and verify build/<cluster>/pki, re-issue (with the same CAs) every leaf "
                           "certificate that expires within --before days, with new keys unless --keep-keys, and swap "
                           "the PKI in as one unit. Says what it renewed. The CAs are never renewed here. Then render "
                           "and roll the masters out so they run the new certificates.")
    _add_spec_arg(q)
    q.add_argument("--before", type=int, default=30, metavar="DAYS", help="renew what expires within DAYS (default: %(default)s)")
    q.add_argument("--keep-keys", action="store_true", help="keep each leaf's private key (default: a new key per leaf)")
    q.set_defaults(func=cmd_pki_renew)
    q = pki_sub.add_parser("adopt", help="write the manifest of a PKI an older bakery made (no manifest.json)",
                           description="Check build/<cluster>/pki as strictly as every load does (CAs self-signed, each "
                           "leaf signed by its CA and matching its key, keys 0600), add the CA material older versions "
                           "lacked (front-proxy CA, encryption secret) and write manifest.json. Refuses a partial PKI.")
    _add_spec_arg(q)
    q.set_defaults(func=cmd_pki_adopt)

    p = sub.add_parser("validate", help="check the spec and everything it renders (writes nothing)",
                       description="Check the spec, then render in memory and check each node's user-data against "
                       "cloud-init's schema, each manifest's structure and flags, each monit file with `monit -t`, "
                       "and each certificate against its CA. Exit 2 on any problem.")
    _add_spec_arg(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("up", help="create or converge the load balancer and the masters",
                       description="Find or create (by the cluster's tag) the network, the load balancer, then render "
                       "with its address and start one master per plan node; register them behind it. Safe to rerun: "
                       "an existing master whose user-data differs is reported as drift, never replaced.")
    _add_spec_arg(p)
    p.add_argument("--wait", action="store_true", help="wait until every master is a healthy target (bounded)")
    p.add_argument("--fail-on-drift", action="store_true", help="exit 10 when drift was reported (for scheduled jobs)")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("rollout", help="replace masters one at a time without losing etcd quorum (nightly rebuilds)",
                       description="Masters as cattle (local containers with user_data: store): for each master "
                       "(followers first, the leader last) check that every etcd member is healthy, snapshot etcd into "
                       "the state store, start one new master from the current image (surge), wait until bakery-node "
                       "made it a healthy voter, then remove the old master's member and retire its machine: the "
                       "cluster never has fewer healthy voters than masters. A journal in the store makes a rerun "
                       "after Ctrl-C or a failure continue where it stopped (--dry-run shows where). Masters in fixed "
                       "slots (QEMU guests, embedded user-data): remove the master's member, add it back as a learner, "
                       "re-render it to join, boot a new machine in its slot, promote the learner; at most one master "
                       "is out of the cluster. Stops at the first problem. Needs network access to the masters' etcd "
                       "client port (run it inside the VPC, or give --etcd-endpoint).")
    _add_spec_arg(p)
    p.add_argument("--node", action="append", metavar="NAME", help="replace only this master (repeatable; default: all)")
    p.add_argument("--etcd-endpoint", action="append", type=_endpoint, metavar="NODE=URL",
                   help="how to reach a master's etcd from here (repeatable; default: where the group, the provider "
                   "and the store's member records say the masters are)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for each new member (default: %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="print what the rollout would do (and where a journaled one "
                   "stopped), change nothing")
    p.add_argument("--fail-on-drift", action="store_true", help="exit 10 when the provider reported drift (for scheduled jobs)")
    p.set_defaults(func=cmd_rollout)

    p = sub.add_parser("nightly", help="the nightly job: bake --if-changed, rollout only when the image changed, a JSON report",
                       description="Bake the spec's image with --if-changed; when a new image was built, roll every "
                       "master onto it (as `bakery rollout`). Writes build/<cluster>/nightly-<UTC time>.json: the images "
                       "and their status, the masters replaced, seconds per step and in all, drift, and the failed step "
                       "if one failed (the exit code is that step's).")
    _add_spec_arg(p)
    p.add_argument("--etcd-endpoint", action="append", type=_endpoint, metavar="NODE=URL",
                   help="how to reach a master's etcd from here (repeatable; default: where the group, the provider "
                   "and the store's member records say the masters are)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for each new member (default: %(default)s)")
    p.add_argument("--packer", default=os.environ.get("PACKER", "packer"), help="the packer executable (default: %(default)s, env PACKER)")
    p.add_argument("--fail-on-drift", action="store_true", help="exit 10 when the provider reported drift")
    p.set_defaults(func=cmd_nightly)

    p = sub.add_parser("backup", help="an etcd snapshot into the state store; `backup list`, `backup prune`",
                       description="take (default): a snapshot through the first healthy member, uploaded to the store's "
                       "<cluster>/backups/ as <UTC minute>-r<revision>.db with a .db.sha256 checksum and .json metadata. "
                       "list: every backup and what retention does with it. prune: delete what retention does not keep "
                       "(hourly for 7 days, daily for 365 days, the newest always), only backups bakery wrote.")
    p.add_argument("action", nargs="?", choices=("take", "list", "prune"), default="take", help="default: %(default)s")
    _add_spec_arg(p)
    _add_store_arg(p)
    p.add_argument("--etcd-endpoint", action="append", type=_endpoint, metavar="NODE=URL",
                   help="how to reach a master's etcd from here (repeatable; default: where the group, the provider "
                   "and the store's member records say the masters are)")
    p.add_argument("--output", choices=("table", "json"), default="table", help="list: default %(default)s")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("restore", help="bring etcd back from a backup (refuses unless every member was seen down)",
                       description="Check the backup against its checksum; look at every member the group, the provider, "
                       "the plan's fixed slots, the store's records and --etcd-endpoint know, and refuse unless each was seen "
                       "down (connection refused, or its machine not running): a healthy member always refuses, no answer "
                       "needs --force. Then ask the masters to restore it: the state store gets a restore request and loses "
                       "the old cluster's bootstrapped marker and member records. At their next start, one master "
                       "restores the snapshot (etcdutl snapshot restore) as a new one-member cluster and the others join it.")
    _add_spec_arg(p)
    _add_store_arg(p)
    p.add_argument("--backup", required=True, metavar="ID", help="a backup id from `bakery backup list`")
    p.add_argument("--force", action="store_true", help="restore although not every member was seen down (no answer, "
                   "or an answer without quorum); never over a healthy member")
    p.add_argument("--etcd-endpoint", action="append", type=_endpoint, metavar="NODE=URL",
                   help="how to reach a master's etcd from here (repeatable; default: where the group, the provider "
                   "and the store's member records say the masters are)")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("status", help="the masters, their target health, and the API endpoint")
    _add_spec_arg(p)
    p.add_argument("--output", choices=("table", "json"), default="table", help="default: %(default)s")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("down", help="delete exactly what carries the cluster's tag",
                       description="Delete, in reverse order, every resource tagged with the cluster and wait for it; "
                       "says what it deleted. Resources without the tag are never touched; a second run does nothing.")
    _add_spec_arg(p)
    p.add_argument("--purge", action="store_true", help="aws/gcp: also empty and delete the store's bucket (bakery's own); "
                   "local: also remove the VMs' disks, console logs and SSH key")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("ssh", help="local: a root shell on a master, a container (nsenter) or a VM (ssh)",
                       description="A root shell on a local master: in a container (the default runtime) through "
                       "nsenter into its namespaces; in a VM (local.runtime: vm) through ssh to its forwarded port on "
                       "127.0.0.1 with the key in build/<cluster>/local/ssh/. Anything after the node name is run as "
                       "the remote command.")
    _add_spec_arg(p)
    p.add_argument("node", help="master name, e.g. local-master-0")
    p.add_argument("remote", nargs=argparse.REMAINDER, help="command to run (default: a login shell)")
    p.set_defaults(func=cmd_ssh)

    p = sub.add_parser("logs", help="local: a master's console log, a container's or a VM's (kernel, systemd, cloud-init)")
    _add_spec_arg(p)
    p.add_argument("node", help="master name, e.g. local-master-0")
    p.add_argument("-n", "--lines", type=int, default=0, help="only the last N lines (default: all)")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("launch-template", help="AWS: create or update the masters' launch template (for autoscaling groups)",
                       description="The cluster's one small user-data (no secret: bakery-node on each instance fetches the rest "
                       "from the state store, which this publishes first) in the `<cluster>-master` launch template; a new "
                       "template version (made the default) when it changes. Run after `up`, which creates the store.")
    _add_spec_arg(p)
    p.set_defaults(func=cmd_launch_template)

    p = sub.add_parser("instance-template", help="GCP: create the masters' instance template (for managed instance groups)",
                       description="The cluster's one small user-data (no secret: bakery-node on each instance fetches the rest "
                       "from the state store, which this publishes first) in an instance template; templates are immutable, "
                       "so a change makes a new one (named by its content). Run after `up`, which creates the store.")
    _add_spec_arg(p)
    p.set_defaults(func=cmd_instance_template)

    p = sub.add_parser("bake", help="build the golden image(s) with Packer and record them in images.json",
                       description="Stage build/<cluster>/packer/<target>/, run `packer validate` then `packer build "
                       "-machine-readable`, and record the artifact (AMI per region, GCE image, local disk + kernel + "
                       "initrd) in build/<cluster>/images.json. The image name carries the Kubernetes version and a "
                       "hash of every input. Default target: the spec's provider.")
    _add_spec_arg(p)
    p.add_argument("--only", action="append", choices=("aws", "gcp", "local", "qemu"),
                   help="bake this target (repeatable; qemu = local)")
    p.add_argument("--if-changed", action="store_true", help="skip a target whose inputs' hash is already in images.json")
    p.add_argument("--dry-run", action="store_true", help="print the image names, hashes and packer commands; run nothing")
    p.add_argument("--packer", default=os.environ.get("PACKER", "packer"), help="the packer executable (default: %(default)s, env PACKER)")
    p.add_argument("--templates", metavar="DIR", help="Packer templates to use instead of bakery's own packer/ folder")
    p.set_defaults(func=cmd_bake)

    p = sub.add_parser("binaries", help="obtain the spec's etcd and Kubernetes binaries into this machine's cache",
                       description="Make sure this machine's cache (BAKERY_CACHE_DIR, default ~/.cache/bakery) holds the "
                       "real etcd, etcdctl, etcdutl, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and "
                       "kubectl of the spec's versions, and print where. Missing ones are built from the Go modules the "
                       "Kubernetes and etcd projects publish when a Go toolchain is on PATH (a cold build takes tens of "
                       "minutes on 2 cores, once per machine), else downloaded from the official releases and checked "
                       "against their published sha256. `bake` and `up` call the same code.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  bakery binaries -f cluster.yaml\n  bakery binaries --kubernetes-version 1.36.3 "
                       "--component kube-apiserver\n  bakery binaries -f cluster.yaml --cached\n"
                       "  bakery binaries --supported     # every supported minor's default release (what `make test` runs)")
    _add_spec_arg(p)
    p.add_argument("--kubernetes-version", metavar="V", help="instead of the spec's: this Kubernetes release")
    p.add_argument("--etcd-version", metavar="V", help="with --kubernetes-version: this etcd release (default: the paired one)")
    p.add_argument("--component", action="append", choices=("kube-apiserver", "kube-controller-manager", "kube-scheduler",
                   "kubelet", "kubectl", "etcd", "etcdctl", "etcdutl"), help="only this one (repeatable; default: all)")
    p.add_argument("--source", choices=("auto", "build", "release"), default=None,
                   help="build: from the Go modules; release: the official downloads; auto (default, or BAKERY_BINARIES): "
                   "build when `go` is on PATH")
    p.add_argument("--cached", action="store_true", help="only show what the cache holds; build and download nothing")
    p.add_argument("--supported", action="store_true",
                   help="instead of the spec's: the newest release bakery knows of every supported Kubernetes minor, each with "
                   "its paired etcd")
    p.set_defaults(func=cmd_binaries)

    p = sub.add_parser("images", help="list or prune the images bakery built for the cluster")
    images_sub = p.add_subparsers(dest="images_command", metavar="ACTION", required=True)
    q = images_sub.add_parser("list", help="every recorded image, newest first (* = what up boots)")
    _add_spec_arg(q)
    q.add_argument("--output", choices=("table", "json"), default="table", help="default: %(default)s")
    q.set_defaults(func=cmd_images_list)
    q = images_sub.add_parser("prune", help="forget all but the newest N images per target; delete old local disks")
    _add_spec_arg(q)
    q.add_argument("--keep", type=int, default=2, help="images to keep per target (default: %(default)s)")
    q.set_defaults(func=cmd_images_prune)

    p = sub.add_parser("discovery", help="etcd bootstrap: create the discovery token for the spec's mode")
    discovery_sub = p.add_subparsers(dest="discovery_command", metavar="ACTION", required=True)
    q = discovery_sub.add_parser("new", help="create (or show the unused) token and record it in state.json",
                                 description="discovery: GET <discovery_service>/new?size=N, or PUT <token>/_config/size "
                                 "on a v2 keys URL; discovery-v3: put /_etcd/registry/<token>/_config/size on "
                                 "discovery_endpoints; dns-srv: print the SRV and A records to publish; static, store: nothing. "
                                 "Refused once the cluster bootstrapped: a token is for the first boot only.")
    _add_spec_arg(q)
    q.add_argument("--replace", action="store_true", help="make a new token even if an unused one is recorded")
    q.set_defaults(func=cmd_discovery_new)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # Ctrl-C must always raise KeyboardInterrupt here (and reach Packer through bakery).
    # A process started with SIGINT ignored (any `cmd &` from a shell without job control:
    # scripts, CI, make in the background) inherits SIG_IGN, and Python then installs no
    # handler: the SIGINT was silently dropped and a bake ran on to its end.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return int(args.func(args) or 0)
    except BakeryError as e:
        for line in e.lines():
            err(f"error: {line}")
        return e.exit_code
    except KeyboardInterrupt:
        err("interrupted; nothing half-written (outputs are replaced atomically)")
        return 130
    except BrokenPipeError:
        # `bakery init -f - | head -3`: the reader left. Say nothing (stdout is gone) and keep
        # Python's exit-time flush from raising again; exit as a program ended by SIGPIPE does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as e:
        import errno

        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        err(f"error: {e.filename or ''}{': ' if e.filename else ''}{e.strerror} (what bakery wrote before is unchanged)")
        return 7


if __name__ == "__main__":
    sys.exit(main())
