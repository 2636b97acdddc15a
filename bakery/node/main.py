"""`bakery-node`: the console script systemd's bakery-node.service runs on every master.

Logs one line per step to stderr (the journal); exit codes as `bakery`'s, plus 9 when
this instance cannot be made a master (identity, description, CA material).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from bakery.errors import BakeryError
from bakery.node import identity
from bakery.node.agent import STATE_DIR, Agent
from bakery.node.description import CONFIG, NodeConfig
from bakery.store import open_store

log = logging.getLogger("bakery.node")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bakery-node",
        description="Make this instance a master of the cluster its user-data names: fetch the cluster "
        "description and CA material from the state store, issue this master's own certificates "
        "(keys made here, never uploaded), render its files with bakery's builders, and join etcd "
        "(day 0: the spec's bootstrap mode; later: as a learner, promoted once in sync).",
        epilog="Run by bakery-node.service at every boot; safe to rerun. Logs one line per step. "
        "`bakery-node backup` (bakery-backup.timer, hourly): the etcd leader uploads a snapshot of its member "
        "to the store and prunes old ones; the other masters exit 0. `bakery-node leave` (the unit's ExecStop): "
        "remove this master's etcd member when the others keep quorum without it (not on a reboot), forget its "
        "membership record, and complete the autoscaling group's termination hook when the group is terminating it.",
    )
    p.add_argument("command", nargs="?", choices=("apply", "backup", "leave"), default="apply",
                   help="apply (default): make this instance a master; backup: the scheduled etcd backup; "
                   "leave: at shutdown, take this master's etcd member out first")
    p.add_argument("--config", type=Path, default=CONFIG, help=f"node config the user-data writes (default {CONFIG})")
    p.add_argument("--instance-data", type=Path, default=identity.INSTANCE_DATA,
                   help=f"cloud-init's instance data (default {identity.INSTANCE_DATA})")
    p.add_argument("--root", type=Path, default=Path("/"), help="where the node's files are written (default /)")
    p.add_argument("--state-dir", type=Path, default=STATE_DIR,
                   help=f"the agent's own state: CA material, leaf keys (default {STATE_DIR}, 0700)")
    p.add_argument("--imds-url", default="http://169.254.169.254", help="leave: the EC2 instance metadata service")
    p.add_argument("--timeout", type=float, default=240.0,
                   help="leave: give up after this many seconds (below the group hook's heartbeat and the unit's TimeoutStopSec)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="bakery-node: %(message)s", stream=sys.stderr)
    try:
        config = NodeConfig.load(args.config)
        ident = identity.load(args.instance_data)
        store = open_store(config.store)
        agent = Agent(config, ident, store, root=args.root, state_dir=args.state_dir)
        if ident.cloud in ("aws", "ec2"):
            from bakery.node import ec2

            try:
                agent.is_alive = ec2.instance_alive(ec2.clients(ec2.region_of(ident.zone))("ec2"), store, config.cluster)
            except BakeryError as e:  # no boto3 in the image: a dead member then waits for its own name's return
                log.warning("ec2: %s; cannot tell whether a member's instance is gone", e)
        if args.command == "backup":
            from bakery.node.backup import scheduled_backup

            scheduled_backup(agent)
        elif args.command == "leave":
            from bakery.node.leave import run

            run(agent, imds=args.imds_url, timeout=args.timeout)
        else:
            agent.apply()
    except BakeryError as e:
        for line in e.lines():
            log.error("%s", line)
        return e.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
