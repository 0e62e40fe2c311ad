"""Load time and peak memory of the full Fashion-MNIST training set through ``nrc_utils.data``.

Run from the repository root:

    .venv/bin/python benchmarks/data_load.py [--repeats 3] [--root DIR]

Every measurement runs in a fresh Python process (this script started again with
``--child``), so that nothing of an earlier load is reused:

- ``time``: ``nrc_utils.data.fashion_mnist(train=True)`` (60,000 images 28x28, read from the
  ``*-idx?-ubyte.gz`` files, decoded, checked and scaled to float32 in [0, 1]), wall-clock
  (``time.perf_counter``) and CPU (``time.process_time``) seconds, and the growth of the
  process's peak resident set (``resource.getrusage(...).ru_maxrss``) from just before the
  load (after the imports) to just after it. Repeated ``--repeats`` times, each in its own
  process; the first is the coldest the page cache allows here, the best is reported beside it.
- ``tracemalloc``: the same load in another fresh process under ``tracemalloc``, which sees
  numpy's allocations: the peak of Python-level allocations during the load and what is still
  held after it (the returned arrays).

The machine's load average is printed at the start and the end: on a shared CPU the times move
with what else is running. The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

MIB = 2**20


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def maxrss_bytes() -> int:
    """Peak resident set of this process so far, in bytes (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def child(mode: str, root: str | None) -> dict:
    """One measurement in this (fresh) process: ``mode`` is ``"time"`` or ``"tracemalloc"``."""
    from nrc_utils import data

    if mode == "tracemalloc":
        import tracemalloc

        tracemalloc.start()
        ds = data.fashion_mnist(root=root, train=True)
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return {"tracemalloc_peak_mib": peak / MIB, "tracemalloc_held_mib": current / MIB, "n": len(ds)}
    rss0 = maxrss_bytes()
    w, c = time.perf_counter(), time.process_time()
    ds = data.fashion_mnist(root=root, train=True)
    wall, cpu = time.perf_counter() - w, time.process_time() - c
    return {"wall_s": wall, "cpu_s": cpu, "maxrss_before_mib": rss0 / MIB,
            "maxrss_growth_mib": (maxrss_bytes() - rss0) / MIB, "n": len(ds), "shape": list(ds.X.shape),
            "dtype": str(ds.X.dtype), "array_mib": (ds.X.element_size() * ds.X.nelement()
                                                    + ds.y.element_size() * ds.y.nelement()) / MIB}


def run_child(mode: str, root: str | None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", mode] + (["--root", root] if root else [])
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["(no message)"])[-1]
        sys.exit(f"error: the {mode} measurement failed: {last}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes timed (default 3)")
    ap.add_argument("--root", default=None, help="data root (default: nrc_utils.data's search order)")
    ap.add_argument("--child", choices=["time", "tracemalloc"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.root)))
        return

    from nrc_utils import data

    if not data.available("fashion_mnist", args.root):
        sys.exit("error: Fashion-MNIST is not installed: `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
                 f"or copy its four *-idx?-ubyte.gz files to {data.data_root(args.root) / 'fashion_mnist'}")
    start = load_average()
    print(f"load average at start: {start}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    runs = []
    for i in range(args.repeats):
        r = run_child("time", args.root)
        runs.append(r)
        print(f"run {i + 1}: {r['wall_s']:.2f} s wall, {r['cpu_s']:.2f} s CPU, peak RSS +{r['maxrss_growth_mib']:.0f} MiB "
              f"(from {r['maxrss_before_mib']:.0f} MiB after the imports)", flush=True)
    tm = run_child("tracemalloc", args.root)
    first = runs[0]
    print(f"{first['n']} images {tuple(first['shape'])} {first['dtype']}: arrays {first['array_mib']:.0f} MiB; "
          f"tracemalloc peak {tm['tracemalloc_peak_mib']:.0f} MiB, held after the load {tm['tracemalloc_held_mib']:.0f} MiB")
    end = load_average()
    print(f"load average at end: {end}")
    best = min(runs, key=lambda r: r["wall_s"])
    print(json.dumps({
        "what": "nrc_utils.data.fashion_mnist(train=True)", "n": first["n"], "shape": first["shape"],
        "dtype": first["dtype"], "array_mib": round(first["array_mib"], 1),
        "load_wall_s_first": round(first["wall_s"], 3), "load_cpu_s_first": round(first["cpu_s"], 3),
        "load_wall_s_best": round(best["wall_s"], 3), "load_cpu_s_best": round(best["cpu_s"], 3),
        "load_wall_s_all": [round(r["wall_s"], 3) for r in runs],
        "maxrss_growth_mib": round(max(r["maxrss_growth_mib"] for r in runs), 1),
        "maxrss_before_mib": round(first["maxrss_before_mib"], 1),
        "tracemalloc_peak_mib": round(tm["tracemalloc_peak_mib"], 1),
        "tracemalloc_held_mib": round(tm["tracemalloc_held_mib"], 1),
        "repeats": args.repeats, "loadavg_start": start, "loadavg_end": end, "cpus": os.cpu_count(),
        "python": platform.python_version()}))


if __name__ == "__main__":
    main()
