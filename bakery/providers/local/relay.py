"""stdin/stdout <-> one TCP connection: the program behind a QEMU `guestfwd=...-cmd:`.

QEMU runs it once per guest connection to the forwarded address, with the
connection on stdin/stdout. It lets VMs on a restricted user-mode network reach one
host service (the discovery etcd) and nothing else.

    python -m bakery.providers.local.relay 127.0.0.1 22001
"""

from __future__ import annotations

import os
import selectors
import socket
import sys


def relay(host: str, port: int, stdin: int = 0, stdout: int = 1) -> None:
    """Copy both ways until the host side closes (the guest's half-close is passed on)."""
    sock = socket.create_connection((host, port), timeout=10)
    sock.settimeout(None)
    sel = selectors.DefaultSelector()
    sel.register(stdin, selectors.EVENT_READ, "guest")
    sel.register(sock, selectors.EVENT_READ, "host")
    with sock:
        while True:
            for key, _ in sel.select():
                if key.data == "guest":
                    data = os.read(stdin, 65536)
                    if data:
                        sock.sendall(data)
                    else:
                        sel.unregister(stdin)
                        sock.shutdown(socket.SHUT_WR)
                else:
                    data = sock.recv(65536)
                    if not data:
                        return
                    view = memoryview(data)
                    while view:
                        view = view[os.write(stdout, view):]


if __name__ == "__main__":
    relay(sys.argv[1], int(sys.argv[2]))
