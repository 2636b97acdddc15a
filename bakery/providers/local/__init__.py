"""The local provider: three (or five, seven) QEMU VMs on this machine behind HAProxy.

    net.py        host ports, guest addresses and MACs (pure)
    vm.py         QEMU argv for a master and for the network hub (pure), KVM probe
    seed.py       the NoCloud seed: meta-data, network-config, vendor-data, cloud-localds
    lb.py         haproxy.cfg (pure) and the stats socket
    discovery.py  the host's v2 discovery etcd and its tokens
    relay.py      the guestfwd program that lets VMs reach that etcd
    console.py    boot progress read from a serial console log (pure)
    proc.py       PID files: start detached, recognise stale, stop by PID
    ssh.py        bakery's SSH key and the ssh command line
    provider.py   up / status / down
"""

from bakery.providers.local.provider import LocalProvider, create

__all__ = ["LocalProvider", "create"]
