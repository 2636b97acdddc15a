"""What a node's serial console says about its first boot. Pure: text in, facts out.

cloud-init's stages print one line each to the console (its units log to
journal+console), which lets `up` follow every node without logging in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_STAGE = re.compile(rb"Cloud-init v\. \S+ running '([^']+)'")
_FINISHED = re.compile(rb"Cloud-init v\. \S+ finished at")


@dataclass(frozen=True)
class Boot:
    kernel: bool  # the kernel printed anything
    cloud_init: str | None  # last stage seen: init-local, init, modules:config, modules:final
    finished: bool

    @property
    def phase(self) -> str:
        if self.finished:
            return "cloud-init finished"
        if self.cloud_init:
            return f"cloud-init {self.cloud_init}"
        return "booting" if self.kernel else "starting"


def read(text: bytes) -> Boot:
    stages = _STAGE.findall(text)
    return Boot(
        kernel=bool(text.strip()),
        cloud_init=stages[-1].decode() if stages else None,
        finished=bool(_FINISHED.search(text)),
    )
