"""The state store's operations per backend, on loopback: a folder, S3 (boto3 against
moto's server in its own process) and GCS (google-cloud-storage against tests/fake_gcs.py).
Milliseconds per call (median of N), a put_if_absent race, and a listing of 1,000 keys.
The fakes' own time is most of the cloud figures: they compare bakery's client paths,
not the clouds. Prints a table; asserts nothing.

    .venv/bin/python bench/store.py [-n 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


@contextmanager
def folder() -> Iterator[object]:
    from bakery.store.folder import FolderStore

    with tempfile.TemporaryDirectory(prefix="bakery-bench-store-") as tmp:
        yield FolderStore(Path(tmp) / "store")


@contextmanager
def s3() -> Iterator[object]:
    from bakery.store.s3 import S3Store
    from tests.moto_server import server_process

    with server_process() as moto:
        client = moto.client("s3")
        client.create_bucket(Bucket="bench-store")
        yield S3Store("bench-store", "root", client=client)


@contextmanager
def gcs() -> Iterator[object]:
    from bakery.store.gcs import GCSStore, default_client
    from tests.fake_gcs import FakeGCS

    with FakeGCS().running() as fake:
        client = default_client(endpoint=fake.url)
        client.create_bucket("bench-store")
        yield GCSStore("bench-store", "root", client=client)


BACKENDS: list[tuple[str, Callable[[], object]]] = [("folder", folder), ("s3 (moto)", s3), ("gcs (fake)", gcs)]


def ms(fn: Callable[[int], object], n: int) -> float:
    times = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def run(store: object, n: int) -> tuple[float, ...]:
    s: object = store
    blob = b"x" * 2048  # about a certificate
    put = ms(lambda i: s.put(f"demo/pki/{i}.crt", blob), n)  # type: ignore[attr-defined]
    get = ms(lambda i: s.get(f"demo/pki/{i}.crt"), n)  # type: ignore[attr-defined]
    claim = ms(lambda i: s.put_if_absent(f"demo/claims/{i}", b"node"), n)  # type: ignore[attr-defined]
    lost = ms(lambda i: s.put_if_absent(f"demo/claims/{i}", b"other"), n)  # type: ignore[attr-defined]
    start = threading.Barrier(8)

    def racer(i: int) -> bool:
        start.wait(timeout=30)
        return bool(s.put_if_absent("demo/etcd/bootstrap", f"node-{i}".encode()))  # type: ignore[attr-defined]

    t = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        winners = sum(pool.map(racer, range(8)))
    race = (time.perf_counter() - t) * 1000
    assert winners == 1, winners  # a broken store is not a figure
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: s.put(f"demo/backups/{i:04d}.db", b""), range(1000)))  # type: ignore[attr-defined]
    t = time.perf_counter()
    listed = len(s.list("demo/backups/"))  # type: ignore[attr-defined]
    listing = (time.perf_counter() - t) * 1000
    assert listed == 1000
    return put, get, claim, lost, race, listing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=50, help="calls per operation (default: %(default)s)")
    args = parser.parse_args()
    header = ("backend", "put ms", "get ms", "claim ms", "lost claim ms", "8-way race ms", "list 1000 ms")
    print(f"state store operations, median of {args.n} calls, 2 KB objects, loopback")
    print("  ".join(f"{h:>13}" for h in header))
    for name, backend in BACKENDS:
        with backend() as store:
            figures = run(store, args.n)
        print("  ".join([f"{name:>13}", *(f"{f:>13.2f}" for f in figures)]))
    print("claim: a put_if_absent that wins; lost claim: one that finds the key taken; 8-way race: 8 threads, one winner.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
