"""`skiplab cost --depths 1..64` for ten strategies: the per-depth path (SKIPLAB_COST_PREFIX=0,
one counted forward per depth) against the prefix path (skiplab.cost.prefix: one counted
forward at the deepest), side by side in one run, each in a fresh process (imports
included). Checks that both print the same JSON byte for byte and prints the wall and CPU
seconds, the ratio and the machine (issue 25, item 7).

    python benchmarks/cost_depths.py            # the README's command
    python benchmarks/cost_depths.py --depths 1..16 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time

SKIPS = "plain,add,rezero,layerscale,highway,dense,concat-prev,concat-double,concat-half,dwa"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run(argv: list[str], prefix: str) -> tuple[float, float, bytes]:
    env = dict(os.environ, SKIPLAB_COST_PREFIX=prefix)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(argv, env=env, check=True, capture_output=True).stdout
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip", default=SKIPS)
    p.add_argument("--depths", default="1..64")
    p.add_argument("--repeats", type=int, default=1, help="runs of each path (the median is printed)")
    p.add_argument("--new-only", action="store_true", help="time the prefix path only")
    args = p.parse_args()
    argv = [sys.executable, "-m", "skiplab", "cost", "--skip", args.skip, "--depths", args.depths, "--json"]
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs visible, load average before "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}; torch {_torch_version()}")
    print("command: skiplab " + " ".join(argv[3:]))
    paths = [("prefix (new)", "1")] + ([] if args.new_only else [("per depth (old)", "0")])
    results = {}
    for name, flag in paths:
        runs = [run(argv, flag) for _ in range(args.repeats)]
        runs.sort(key=lambda r: r[0])
        wall, cpu, out = runs[len(runs) // 2]
        results[name] = (wall, cpu, out)
        print(f"{name:>16}: {wall:7.1f} s wall, {cpu:7.1f} s CPU (median of {args.repeats})", flush=True)
    if not args.new_only:
        (nw, nc, new), (ow, oc, old) = results["prefix (new)"], results["per depth (old)"]
        print(f"identical JSON: {new == old} ({len(new):,} bytes); speed-up {ow / nw:.1f}x wall, {oc / nc:.1f}x CPU")
        if new != old:
            sys.exit(1)
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    main()
