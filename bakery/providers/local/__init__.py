"""The local provider: three (or five, seven) masters on this machine behind HAProxy, as
systemd-nspawn containers (local.runtime: container, the default) or QEMU VMs (vm).

    net.py         host ports, guest addresses and MACs (pure)
    runtime.py     a master's machine: ContainerRuntime | VmRuntime (launch, stop, shell, result)
    container.py   systemd-nspawn argv (pure), the overlayfs root, the seed inside it, nsenter
    bridge.py      the containers' bridge and network namespaces (no route out, no forwarding)
    vm.py          QEMU argv for a master and for the network hub (pure), KVM probe
    seed.py        the NoCloud seed documents; cloud-localds for VMs
    lb.py          haproxy.cfg (pure) and the stats socket
    discovery.py   the host's v2 discovery etcd and its tokens
    relay.py       the guestfwd program that lets VMs reach that etcd
    console.py     boot progress read from a console log (pure)
    proc.py        PID files: start detached, recognise stale, stop by PID
    ssh.py         bakery's SSH key and the ssh command line (VMs)
    supervisor.py  the master group: relaunches a master whose machine died
    provider.py    up / status / down / launch_master / replace_master
"""

from bakery.providers.local.provider import LocalProvider, create

__all__ = ["LocalProvider", "create"]
