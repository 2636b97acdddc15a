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
  bakery bake -f cluster.yaml                   build the golden image with Packer
  bakery up -f cluster.yaml                     create (or converge) the load balancer and masters
  bakery status -f cluster.yaml                 what is running, and is it healthy
  bakery rollout -f cluster.yaml                replace the masters one at a time onto the newest image
  bakery down -f cluster.yaml                   delete exactly what carries the cluster's tag

exit codes: 0 ok, 1 unexpected, 2 bad input, 3 PKI, 4 bake, 5 provider, 6 etcd, 7 state, 130 interrupted
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


def cmd_init(args: argparse.Namespace) -> int:
    from bakery.errors import SpecError
    from bakery.output import atomic_write
    from bakery.render.templates import data_dir

    text = (data_dir("examples") / f"{args.provider}.yaml").read_text()
    if args.file == "-":
        out(text.rstrip("\n"))
        return 0
    target = Path(args.file)
    if target.exists() and not args.force:
        raise SpecError(f"{target} exists; not overwriting it (use --force, or -f another path, or -f - for stdout)")
    atomic_write(target, text)
    err(f"wrote {target}: a commented {args.provider} spec. Next: bakery validate -f {target}")
    return 0


def _print_pki_changes(changes: list[str]) -> None:
    for change in changes:
        err(f"pki: {change}")


def cmd_render(args: argparse.Namespace) -> int:
    from bakery.pipeline import Cluster, write_nodes

    cluster = Cluster.load(args.file, args.build_dir)
    rendered = cluster.render()
    write_nodes(cluster.paths, rendered)
    _print_pki_changes(rendered.pki.changes)
    rows = []
    for name, r in rendered.nodes.items():
        ud = r.user_data
        rows.append((name, r.node.address, r.node.zone, len(r.files), f"{len(ud.plain):,}", f"{len(ud.encoded):,}",
                     ud.encoding, f"{ud.share:.0%}"))
    table(rows, ("NODE", "ADDRESS", "ZONE", "FILES", "PLAIN", "ENCODED", "ENCODING", f"OF {cluster.spec.provider.upper()} LIMIT"))
    out(f"\nwrote {cluster.paths.nodes}/<node>/{{user-data,files/}} and {cluster.paths.base / 'admin.kubeconfig'}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from bakery import validate
    from bakery.errors import Problem, RenderError
    from bakery.pipeline import Cluster

    cluster = Cluster.load(args.file, args.build_dir)
    out(f"{args.file}: spec ok ({cluster.spec.name}, {cluster.spec.provider}, {cluster.spec.masters} masters)")
    # Render in memory with a throwaway copy of the PKI: validate writes nothing.
    rendered = cluster.render(keep_pki=False)
    schema = validate.cloud_init_schema()
    problems: list[str] = []
    skipped: set[str] = set()
    for name, r in rendered.nodes.items():
        report = validate.check_node(r.user_data.plain, schema=schema)
        problems += [f"{name}: {p}" for p in report.problems]
        skipped.update(report.skipped)
        if not problems:
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
    result = provider.up(cluster.render_callback(), wait=args.wait or cluster.spec.provider == "local")
    out(f"{cluster.spec.name}: {len(result.created)} created, {len(result.existing)} already there; "
        f"ids in {cluster.paths.state}")
    if result.endpoint and cluster.spec.provider == "local":  # the local LB fronts etcd: the image has no API server
        pki = cluster.paths.pki / "etcd"
        out(f"etcd: {result.endpoint}  (client cert {pki / 'healthcheck-client.crt'}, CA {pki / 'ca.crt'}); "
            f"bakery status | ssh NODE | logs NODE | down")
    elif result.endpoint:
        out(f"API: {result.endpoint}  (kubectl --kubeconfig {cluster.paths.base / 'admin.kubeconfig'} get nodes)")
    for line in result.drift:
        err(f"drift: {line}")
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    from bakery import providers, rollout
    from bakery.errors import ProviderError
    from bakery.etcd import TLS, Client
    from bakery.pipeline import Cluster

    cluster = Cluster.load(args.file, args.build_dir)
    progress = ProgressPrinter()
    provider = providers.get(cluster.spec, cluster.paths, progress)
    if not hasattr(provider, "replace_master"):
        raise ProviderError(f"the {cluster.spec.provider} provider cannot replace masters yet; replace them by hand "
                            "(member remove, member add --learner, boot with `bakery render`'s user-data) one at a time")
    etcd_pki = cluster.paths.pki / "etcd"
    tls = TLS(etcd_pki / "ca.crt", etcd_pki / "healthcheck-client.crt", etcd_pki / "healthcheck-client.key")
    endpoints = dict(args.etcd_endpoint) if args.etcd_endpoint else getattr(provider, "etcd_endpoints", dict)() or None
    done = rollout.rollout(cluster, lambda urls: Client(list(urls), tls), provider, nodes=args.node or (),
                           endpoints=endpoints, progress=progress, timing=rollout.Timing(healthy=args.timeout))
    for r in done:
        out(f"{r.node}: replaced in {r.seconds:.0f}s (etcd member {r.old_member:x} -> {r.new_member:x})")
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
    status = providers.get(s, state.paths(s.name, args.build_dir), ProgressPrinter(quiet=True)).status()
    if args.output == "json":
        out(json.dumps(status_document(status), indent=2, sort_keys=True))
        return 0
    table([(n.name, n.id or "-", n.address or "-", n.zone or "-", n.state, n.health, n.image or "-") for n in status.nodes],
          ("NODE", "ID", "ADDRESS", "ZONE", "STATE", "TARGET HEALTH", "IMAGE"))
    if status.provider == "local":  # ID is the QEMU or nspawn PID, health the node's own etcd member
        backends = status.extra.get("backends") or {}
        out()
        table([(n.name, n.extra.get("runtime", "-"), _cell(n.extra.get("cloud-init")),
                "leader" if n.extra.get("leader") else ("follower" if n.health == "healthy" else "-"),
                backends.get(n.name, "-"), n.extra.get("etcd", "-"))
               for n in status.nodes], ("NODE", "RUNTIME", "CLOUD-INIT", "ETCD", "LB BACKEND", "ETCD URL"))
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
    out(f"\n{status.provider} {status.cluster}: API {status.endpoint or '(no load balancer)'}")
    return 0


def _cell(value: object, width: int = 60) -> str:
    text = "-" if value is None else str(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 3] + "..."


def cmd_down(args: argparse.Namespace) -> int:
    from bakery import providers, spec, state
    from bakery.errors import SpecError

    s = spec.load(args.file)
    provider = providers.get(s, state.paths(s.name, args.build_dir), ProgressPrinter())
    if args.purge and s.provider != "local":
        raise SpecError(f"down --purge removes the local provider's VM disks; this spec's provider is {s.provider}")
    deleted = provider.down(purge=True) if args.purge else provider.down()
    for d in deleted:
        out(f"deleted {d}")
    out(f"{s.name}: {len(deleted)} resources deleted" if deleted else f"{s.name}: nothing carries the cluster's tag; nothing to delete")
    return 0


def cmd_launch_template(args: argparse.Namespace) -> int:
    from bakery import providers
    from bakery.errors import SpecError
    from bakery.pipeline import Cluster
    from bakery.providers.aws import launch_template
    from bakery.render import generic

    cluster = Cluster.load(args.file, args.build_dir)
    if cluster.spec.provider != "aws":
        raise SpecError(f"{args.file}: launch templates are an AWS feature; this spec's provider is {cluster.spec.provider}")
    rendered = cluster.render(keep_pki=False)  # the LB's names from state.json; the PKI is left as it is
    document = launch_template.generic_document(rendered.plan, generic.shared_files(rendered.nodes))
    provider = providers.get(cluster.spec, cluster.paths, ProgressPrinter())
    tid, version = provider.launch_template(document)
    out(f"launch template {tid} version {version} (default): {len(document):,} bytes of generic user-data")
    return 0


def cmd_instance_template(args: argparse.Namespace) -> int:
    from bakery.errors import SpecError
    from bakery.pipeline import Cluster
    from bakery.providers.gcp import GcpProvider, template
    from bakery.render import generic
    from bakery.render.userdata import encode

    cluster = Cluster.load(args.file, args.build_dir)
    if cluster.spec.provider != "gcp":
        raise SpecError(f"{args.file}: instance templates are a GCP feature; this spec's provider is {cluster.spec.provider}")
    rendered = cluster.render(keep_pki=False)  # the LB's address from state.json; the PKI is left as it is
    document = template.generic_document(rendered.plan, generic.shared_files(rendered.nodes))
    name = GcpProvider(cluster.spec, cluster.paths, ProgressPrinter()).instance_template(encode(document, "gcp", node="instance-template"))
    out(f"instance template {name}: {len(document):,} bytes of generic user-data")
    return 0


def cmd_bake(args: argparse.Namespace) -> int:
    from bakery import bake, spec, state

    s = spec.load(args.file)
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
    pruned = images.prune(state.paths(s.name, args.build_dir).images, s.name, args.keep, cloud.Deleter(s))
    for rec, deleted in pruned:
        out(f"pruned {rec['target']} {rec['name']}: deleted {', '.join(deleted) or 'nothing (already gone)'}")
    out(f"{s.name}: {len(pruned)} image(s) pruned, newest {args.keep} per target kept")
    return 0


# -- parser and main ----------------------------------------------------------------


def cmd_discovery_new(args: argparse.Namespace) -> int:
    from bakery import discovery, spec, state

    s = spec.load(args.file)
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
    if s.provider != "local":
        raise SpecError(f"`bakery {command}` is for the local provider's VMs; {args.file} uses {s.provider} "
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
                       description="Write a commented starter spec for a provider. Refuses to overwrite a file.")
    p.add_argument("--provider", choices=("local", "aws", "gcp"), default="local", help="default: %(default)s")
    p.add_argument("-f", "--file", default="cluster.yaml", help="where to write it; - for stdout (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("render", help="render every master's user-data and file tree",
                       description="Issue or reuse the cluster's certificates and write build/<cluster>/nodes/<node>/ "
                       "(user-data and the expanded files/ tree). Prints the size of each node's user-data "
                       "against the provider's limit. Same spec + same PKI = byte-identical output.")
    _add_spec_arg(p)
    p.set_defaults(func=cmd_render)

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
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("rollout", help="replace masters one at a time without losing etcd quorum (nightly rebuilds)",
                       description="For each master (followers first, the leader last): check that every etcd member "
                       "is healthy, remove the master's member, add it back as a learner, re-render it to join the "
                       "existing cluster, have the provider boot a new machine from the current image, promote the "
                       "learner once it caught up, and wait until all members are healthy. Stops at the first problem, "
                       "with at most one master out of the cluster. Needs network access to the masters' etcd client "
                       "port (run it inside the VPC, or give --etcd-endpoint).")
    _add_spec_arg(p)
    p.add_argument("--node", action="append", metavar="NAME", help="replace only this master (repeatable; default: all)")
    p.add_argument("--etcd-endpoint", action="append", type=_endpoint, metavar="NODE=URL",
                   help="how to reach a master's etcd from here (repeatable; default: the plan's addresses)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for each new member (default: %(default)s)")
    p.set_defaults(func=cmd_rollout)

    p = sub.add_parser("status", help="the masters, their target health, and the API endpoint")
    _add_spec_arg(p)
    p.add_argument("--output", choices=("table", "json"), default="table", help="default: %(default)s")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("down", help="delete exactly what carries the cluster's tag",
                       description="Delete, in reverse order, every resource tagged with the cluster and wait for it; "
                       "says what it deleted. Resources without the tag are never touched; a second run does nothing.")
    _add_spec_arg(p)
    p.add_argument("--purge", action="store_true", help="local: also remove the VMs' disks, console logs and SSH key")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("ssh", help="local: ssh into a master VM as root with bakery's key",
                       description="Runs ssh to the master's forwarded port on 127.0.0.1 with the key in "
                       "build/<cluster>/local/ssh/. Anything after the node name is run as the remote command.")
    _add_spec_arg(p)
    p.add_argument("node", help="master name, e.g. local-master-0")
    p.add_argument("remote", nargs=argparse.REMAINDER, help="command to run (default: a login shell)")
    p.set_defaults(func=cmd_ssh)

    p = sub.add_parser("logs", help="local: a master VM's serial console log (kernel, systemd, cloud-init)")
    _add_spec_arg(p)
    p.add_argument("node", help="master name, e.g. local-master-0")
    p.add_argument("-n", "--lines", type=int, default=0, help="only the last N lines (default: all)")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("launch-template", help="AWS: create or update the masters' launch template (for autoscaling groups)",
                       description="One generic `## template: jinja` user-data that a node completes at boot from its "
                       "own instance-data; a new template version (made the default) when it changes. Run after `up`.")
    _add_spec_arg(p)
    p.set_defaults(func=cmd_launch_template)

    p = sub.add_parser("instance-template", help="GCP: create the masters' instance template (for managed instance groups)",
                       description="One generic `## template: jinja` user-data that a node completes at boot from its "
                       "own instance-data; templates are immutable, so a change makes a new one (named by its content). Run after `up`.")
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
                                 "discovery_endpoints; dns-srv: print the SRV and A records to publish; static: nothing. "
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


if __name__ == "__main__":
    sys.exit(main())
