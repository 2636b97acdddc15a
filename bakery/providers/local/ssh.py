"""bakery's own SSH key for the local VMs, and the ssh command line that uses it.

The key is generated once per cluster (ssh-keygen, ed25519, 0600) under
build/<cluster>/local/ssh/; the NoCloud vendor-data authorises it for root. Each
node keeps its own known_hosts, started afresh with its disk: a node's host key is
accepted on first contact and checked afterwards.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from bakery.errors import ProviderError
from bakery.providers.local.net import HOST


def ensure_key(folder: Path) -> Path:
    """The private key's path, generating the pair when missing."""
    key = folder / "id_ed25519"
    if key.exists():
        if key.stat().st_mode & 0o077:
            raise ProviderError(f"{key}: permissions are too open; chmod 600 it (ssh refuses such keys too)")
        return key
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    tmp = folder / ".id_ed25519.new"
    for p in (tmp, tmp.with_name(tmp.name + ".pub")):
        p.unlink(missing_ok=True)
    try:
        r = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"bakery@{folder.parent.parent.name}",
                            "-f", str(tmp)], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise ProviderError("ssh-keygen not found: install openssh-client (make setup-system)") from None
    if r.returncode != 0:
        raise ProviderError(f"ssh-keygen failed: {r.stderr.strip()}")
    tmp.with_name(tmp.name + ".pub").replace(key.with_suffix(".pub"))
    tmp.replace(key)
    return key


def public_key(key: Path) -> str:
    return key.with_suffix(".pub").read_text().strip()


def argv(key: Path, port: int, known_hosts: Path, alias: str, command: list[str] | None = None, *, batch: bool = True) -> list[str]:
    """ssh as root to a node's forwarded port on 127.0.0.1."""
    out = [
        "ssh", "-i", str(key), "-p", str(port),
        "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "StrictHostKeyChecking=accept-new",
        "-o", f"HostKeyAlias={alias}",
        "-o", "ConnectTimeout=30",
        "-o", "LogLevel=ERROR",
    ]
    if batch:
        out += ["-o", "BatchMode=yes"]
    out.append(f"root@{HOST}")
    if command:
        out += ["--", *command]
    return out
