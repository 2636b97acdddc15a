"""Prints what hostile specs cost `bakery validate`: CPU seconds and peak memory of a child
process per input, next to a valid example (the tests hold the same inputs to 2 s of CPU
and 200 MB as a pass/fail limit; this prints the figures). Then the corpus the hostile tests
hold (tests/test_spec_hostile.py: the named classes and the family generated from the model,
issue 23): its size, the time spec.parse takes per spec and the peak memory of the process
that parses them all (figures printed, never asserted; the corpus needs the dev extra).

    .venv/bin/python bench/hostile.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def bomb(levels: int) -> bytes:
    lines = ['name: lol\nprovider: local\nl0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, levels)]
    return "".join(lines).encode()


INPUTS: dict[str, bytes | str] = {
    "examples/aws.yaml (valid)": (REPO / "examples" / "aws.yaml").read_bytes(),
    "billion laughs (9 levels)": bomb(9),
    "nested flow, 200,000 levels": b"name: x\nprovider: local\nnetwork: " + b"[" * 200_000 + b"\n",
    "60 MB file": b"name: x\nprovider: local\nk: " + b"x" * 60_000_000 + b"\n",
    "25,000 unknown keys": b"name: x\nprovider: local\n" + b"".join(b"key%d: 1\n" % i for i in range(25_000)),
    "/dev/zero": "/dev/zero",
}


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent across exec.
CHILD = ("import resource, sys\n"
         "from bakery import cli\n"
         "code = cli.main(sys.argv[1:])\n"
         "u = resource.getrusage(resource.RUSAGE_SELF)\n"
         "hwm = next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
         "print(f'{u.ru_utime + u.ru_stime} {hwm}', file=sys.stderr)\n"
         "sys.exit(code)\n")


def measure(path: str, build: str) -> tuple[int, float, float]:
    """(exit code, CPU seconds, peak RSS in MB) of `bakery validate -f path`, in a child of its own."""
    r = subprocess.run([sys.executable, "-c", CHILD, "validate", "-f", path, "-o", build],
                       capture_output=True, text=True, timeout=120, check=False)
    cpu, rss_kb = r.stderr.strip().splitlines()[-1].split()
    return r.returncode, float(cpu), int(rss_kb) / 1024


# One child parses the whole corpus, so that its peak memory is the corpus's, not the bench's.
CORPUS_CHILD = ("import sys, time\n"
                "from bakery import spec\n"
                "from tests import test_spec_hostile as t\n"
                "texts = [text for text, _ in t.HOSTILE.values()]\n"
                "texts += [t._spec_with(path, raw) for path, raw in t.GENERATED.values()]\n"
                "times, refused = [], 0\n"
                "for text in texts:\n"
                "    start = time.perf_counter()\n"
                "    try:\n"
                "        spec.parse(text)\n"
                "    except spec.SpecError:\n"
                "        refused += 1\n"
                "    times.append(time.perf_counter() - start)\n"
                "hwm = next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
                "times.sort()\n"
                "print(len(t.HOSTILE), len(t.GENERATED), refused, sum(times) / len(times), times[len(times) // 2], times[-1], hwm)\n")


def corpus() -> None:
    r = subprocess.run([sys.executable, "-c", CORPUS_CHILD], capture_output=True, text=True, timeout=300,
                       check=False, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    if r.returncode != 0:
        print(f"corpus: not measured ({r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode})")
        return
    named, generated, refused, mean, median, worst, hwm = r.stdout.split()
    total = int(named) + int(generated)
    print(f"\ncorpus: {total} specs ({named} named classes, {generated} generated from the model), {refused} refused")
    print(f"spec.parse per spec: mean {float(mean) * 1000:.2f} ms, median {float(median) * 1000:.2f} ms, "
          f"slowest {float(worst) * 1000:.2f} ms; peak RSS {int(hwm) / 1024:.0f} MB")


def main() -> None:
    print(f"{'input':<30} {'exit':>4} {'cpu s':>6} {'peak RSS MB':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in INPUTS.items():
            if isinstance(data, str):
                path = data
            else:
                path = os.path.join(tmp, "cluster.yaml")
                Path(path).write_bytes(data)
            code, cpu, rss = measure(path, os.path.join(tmp, "build"))
            print(f"{name:<30} {code:>4} {cpu:>6.2f} {rss:>12.0f}")
    corpus()


if __name__ == "__main__":
    main()
