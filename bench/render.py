"""Rendering figures, side by side: time to render 3/5/7 masters (first run, which
issues the PKI, and a re-render that reuses it), `bakery --help` start time, and the
user-data a master boots with, per provider: the small store-backed one (`user_data:
store`, the default) next to the embedded whole tree (`user_data: embedded`), against
each provider's limit. Prints figures; asserts nothing.

    .venv/bin/python bench/render.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bakery.errors import RenderError
from bakery.pipeline import Cluster, write_nodes
from bakery.render.userdata import LIMITS

REPO = Path(__file__).resolve().parent.parent
RUNS = 5


def spec_text(masters: int, algorithm: str, user_data: str = "embedded") -> str:
    return ((REPO / "examples" / "aws.yaml").read_text().replace("masters: 3", f"masters: {masters}")
            + f"key_algorithm: {algorithm}\nuser_data: {user_data}\n")


def user_data_sizes(example: str, user_data: str) -> tuple[int, int, str, int]:
    """(plain, encoded, encoding, limit) of a master's user-data for examples/<example>.yaml."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "cluster.yaml"
        spec.write_text((REPO / "examples" / f"{example}.yaml").read_text() + f"user_data: {user_data}\n")
        c = Cluster.load(spec, Path(tmp) / "build")
        c.state = {"discovery": {"mode": c.spec.etcd.bootstrap, "url": "https://discovery.etcd.io/0123456789abcdef0123456789abcdef"}}
        ud = next(iter(c.render().nodes.values())).user_data
        return len(ud.plain), len(ud.encoded), ud.encoding, LIMITS[c.spec.provider]


def time_render(masters: int, algorithm: str) -> tuple[float, float, int, int]:
    firsts, rerenders = [], []
    plain = encoded = 0
    for _ in range(RUNS):
        with tempfile.TemporaryDirectory() as tmp:
            spec = Path(tmp) / "cluster.yaml"
            spec.write_text(spec_text(masters, algorithm))
            t0 = time.perf_counter()
            c = Cluster.load(spec, Path(tmp) / "build")
            write_nodes(c.paths, c.render())  # keeps the PKI the first render issued
            firsts.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            r = Cluster.load(spec, Path(tmp) / "build").render()
            rerenders.append(time.perf_counter() - t0)
            ud = next(iter(r.nodes.values())).user_data
            plain, encoded = len(ud.plain), len(ud.encoded)
    return statistics.median(firsts), statistics.median(rerenders), plain, encoded


def cli_start() -> float:
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bakery.cli", "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    print(f"bench/render.py — median of {RUNS} runs, AWS example spec, limit 16,384 bytes")
    print(f"{'masters':>7}  {'keys':<10}  {'first render':>12}  {'re-render':>9}  {'plain B':>8}  {'encoded B':>9}  {'plain/limit':>11}  {'encoded/limit':>13}")
    for algorithm in ("ecdsa-p256", "rsa-2048"):
        for masters in (3, 5, 7):
            try:
                first, again, plain, encoded = time_render(masters, algorithm)
            except RenderError as e:
                print(f"{masters:>7}  {algorithm:<10}  does not fit: {e.lines()[0].split(': ', 1)[-1]}")
                continue
            print(f"{masters:>7}  {algorithm:<10}  {first * 1000:>10.1f}ms  {again * 1000:>7.1f}ms  {plain:>8,}  {encoded:>9,}  "
                  f"{plain / 16384:>11.0%}  {encoded / 16384:>13.0%}")
    print("\nuser-data a master boots with, per provider (first master of each example):")
    print(f"{'example':<8}  {'user_data':<9}  {'plain B':>8}  {'encoded B':>9}  {'encoding':<8}  {'of limit':>8}")
    for example in ("aws", "gcp", "local"):
        for mode in ("embedded", "store"):
            plain, encoded, encoding, limit = user_data_sizes(example, mode)
            print(f"{example:<8}  {mode:<9}  {plain:>8,}  {encoded:>9,}  {encoding:<8}  {encoded / limit:>8.1%}")
    print(f"\n`bakery --help` start (python -m bakery.cli --help): {cli_start() * 1000:.0f} ms median")


if __name__ == "__main__":
    main()
