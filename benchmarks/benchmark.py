"""Benchmarks of nrc_utils: ensemble speed-up, streaming collapse metrics, time to stationarity.

Run from the repository root:

    .venv/bin/python benchmarks/benchmark.py [--threads 2] [--parts 1,2,3]

It prints its figures as it goes; the last line is one JSON object with all of them.
Times are wall-clock seconds (``time.perf_counter``), with the process CPU time
(``time.process_time``) beside them; each timed stage runs ``--repeats`` times,
interleaved, and the best run counts. The machine's load average is printed at the
start and the end: on a shared CPU the numbers move with what else is running.

1. Ensemble speed-up: 16 members (4 lambdas x 4 seeds) of a digits MLP
   64-128-128-128-10 (tanh, no biases, square loss), trained by
   ``ensemble.train_ensemble`` as one batched model versus 16 ``train.train`` runs one
   after another (no cache, no polishing, recording only at the first and last step,
   where ``train.run_sgd`` always evaluates): mini-batch SGD (batch 32) and full-batch GD.
   The members' weights are checked against the single runs.
2. Collapse metrics (``collapse.collapse_stats_stream``) of N x 512 float32 features,
   K = 10, streamed in batches of 1000, for N = 60000 and 120000: seconds, and the peak
   memory allocated during the computation (``tracemalloc``, which sees numpy's
   allocations) beyond the features themselves; the timing is repeated in a fresh
   process, where page faults on numpy's temporaries dominate.
3. Time to stationarity: the digits MLP 64-64-64-10 (tanh, no biases, lambda = 5e-3)
   trained by ``train.train`` with full-batch GD then float64 L-BFGS to a relative
   stationarity residual below 1e-6 (``polish_tol``), L-BFGS capped at
   ``--max-lbfgs-seconds``, with cross-entropy and with the square loss; prints when the
   residual first fell below 1e-3 .. 1e-6.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import time
import tracemalloc

os.environ.setdefault("NRC_PROGRESS", "0")  # no progress bars in either path being timed

import numpy as np
import torch

from nrc_utils import collapse, data, ensemble, train
from nrc_utils.models import MLP


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def timed(fn):
    """``(result, wall seconds, CPU seconds)`` of ``fn()``."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


# --------------------------------------------------------------------------------------
# 1. Ensemble speed-up
# --------------------------------------------------------------------------------------

def ensemble_speedup(X: torch.Tensor, y: torch.Tensor, batch_size: int | None, steps: int, repeats: int) -> dict:
    """Best-of-``repeats`` wall and CPU time of the batched ensemble and of 16 single runs."""
    widths = [128, 128, 128]
    lams, seeds = ensemble.grid([1e-4, 1e-3, 3e-3, 1e-2], [0, 1, 2, 3])
    cfg = train.TrainConfig(lr=0.05, steps=steps, batch_size=batch_size, loss="mse", record_every=steps)

    def batched():
        return ensemble.train_ensemble(64, widths, 10, lams, seeds, X, y, cfg, polish=False, use_cache=False)

    def singles():
        return [train.train(MLP(64, widths, 10, seed=s), X, y, dataclasses.replace(cfg, lam=lam, seed=s),
                            use_cache=False) for lam, s in zip(lams, seeds)]

    best = {"ensemble": [math.inf, math.inf], "singles": [math.inf, math.inf]}
    for _ in range(repeats):  # interleaved, so both see the same background load
        for name, fn in (("ensemble", batched), ("singles", singles)):
            out, wall, cpu = timed(fn)
            best[name] = [min(best[name][0], wall), min(best[name][1], cpu)]
            if name == "ensemble":
                ens_out = out
            else:
                single_out = out
    # SGD steps alone, from the records: seconds[0] is the first evaluation, seconds[-1] adds the steps and the
    # final evaluation, so the steps took about seconds[-1] - 2 seconds[0] (members of the ensemble share a clock)
    ens_steps = ens_out[0].history["seconds"][-1] - 2 * ens_out[0].history["seconds"][0]
    single_steps = sum(r.history["seconds"][-1] - 2 * r.history["seconds"][0] for r in single_out)
    diff = max(max((a - b).abs().max().item() for a, b in zip(r.model.state_dict().values(),
                                                               s.model.state_dict().values()))
               for r, s in zip(ens_out, single_out))
    loss_diff = max(max(abs(a - b) / abs(b) for a, b in zip(r.history["loss"], s.history["loss"]))
                    for r, s in zip(ens_out, single_out))
    return {
        "members": len(lams), "widths": widths, "batch_size": batch_size, "steps": steps,
        "ensemble_s": best["ensemble"][0], "singles_s": best["singles"][0],
        "ensemble_cpu_s": best["ensemble"][1], "singles_cpu_s": best["singles"][1],
        "speedup": best["singles"][0] / best["ensemble"][0],
        "speedup_cpu": best["singles"][1] / best["ensemble"][1],
        "ensemble_steps_s": ens_steps, "singles_steps_s": single_steps, "speedup_steps": single_steps / ens_steps,
        "max_weight_diff": diff, "max_rel_loss_diff": loss_diff,
    }


def part1(repeats: int) -> dict:
    ds = data.digits()
    X, y = ds.X, ds.y
    print(f"1. Ensemble speed-up: 16 members of a digits MLP 64-128-128-128-10 (tanh), N={len(y)}, "
          f"batched train_ensemble vs 16 train.train runs in a row (best of {repeats}, interleaved)")
    out = {}
    # 1000 SGD steps: a short training run (the chapters train for thousands); the two full-batch
    # evaluations every run makes (first and last step) weigh less than at 300 steps
    for name, batch_size, steps in (("sgd", 32, 1000), ("gd", None, 20)):
        r = ensemble_speedup(X, y, batch_size, steps, repeats)
        label = f"mini-batch SGD (batch 32, {steps} steps)" if batch_size else f"full-batch GD ({steps} steps)"
        print(f"   {label}: ensemble {r['ensemble_s']:.2f} s, singles {r['singles_s']:.2f} s, "
              f"speed-up {r['speedup']:.1f}x wall ({r['speedup_cpu']:.1f}x CPU time; SGD steps alone "
              f"{r['ensemble_steps_s']:.2f} s vs {r['singles_steps_s']:.2f} s, {r['speedup_steps']:.1f}x); "
              f"members vs single runs: max |dW| = {r['max_weight_diff']:.1e}, "
              f"max rel. loss diff = {r['max_rel_loss_diff']:.1e}")
        out[name] = r
    return out


# --------------------------------------------------------------------------------------
# 2. Streaming collapse metrics
# --------------------------------------------------------------------------------------

def features(N: int, D: int, K: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered float32 features ``h_i = m_{y_i} + xi_i`` with ``m_c ~ 3 N(0, I)``, ``xi_i ~ N(0, I)``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, N)
    H = rng.standard_normal((N, D), dtype=np.float32)
    H += (3.0 * rng.standard_normal((K, D))).astype(np.float32)[y]
    return H, y


def collapse_run(N: int, repeats: int, D: int = 512, K: int = 10, batch: int = 1000) -> dict:
    H, y = features(N, D, K)

    def batches():
        return ((H[i:i + batch], y[i:i + batch]) for i in range(0, N, batch))

    best = math.inf
    for _ in range(repeats):
        stats, wall, _cpu = timed(lambda: collapse.collapse_stats_stream(batches, K))
        best = min(best, wall)
    tracemalloc.start()
    collapse.collapse_stats_stream(batches, K)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"N": N, "D": D, "K": K, "batch": batch, "seconds": best, "peak_extra_MB": peak / 2**20,
            "features_MB": H.nbytes / 2**20, "nc1": stats.nc1}


def fresh_process_seconds(repeats: int) -> dict[str, float] | None:
    """Part 2's timings in a new Python process (this script, ``--parts 2``), or ``None`` inside that process.

    Why: each batch makes a few 4 MB float64 temporaries. In a fresh process glibc
    serves them with a new ``mmap`` each time, and the page faults cost several times
    the arithmetic; once a process has freed blocks of that size (after any training,
    as in a chapter) they come from the heap. Both numbers are reported.
    """
    if os.environ.get("NRC_BENCH_CHILD"):
        return None
    env = {**os.environ, "NRC_BENCH_CHILD": "1"}
    done = subprocess.run([sys.executable, __file__, "--parts", "2", "--repeats", str(repeats)], env=env,
                          capture_output=True, text=True, check=True)
    child = json.loads(done.stdout.strip().splitlines()[-1])["collapse"]
    return {N: r["seconds"] for N, r in child.items()}


def part2(repeats: int) -> dict:
    print(f"2. Collapse metrics: collapse_stats_stream on N x 512 float32 features, K=10, batches of 1000 "
          f"(best of {repeats}; memory: tracemalloc peak during the call)")
    out = {}
    for N in (60000, 120000):
        r = collapse_run(N, repeats)
        print(f"   N={N}: {r['seconds']:.2f} s, peak extra memory {r['peak_extra_MB']:.1f} MB "
              f"(the features themselves: {r['features_MB']:.0f} MB), NC1 = {r['nc1']:.4f}")
        out[str(N)] = r
    fresh = fresh_process_seconds(repeats)
    if fresh is not None:
        for N, seconds in fresh.items():
            out[N]["seconds_fresh_process"] = seconds
        print("   the same in a fresh Python process (numpy's 4 MB temporaries page-faulted in anew each batch): "
              + ", ".join(f"N={N}: {seconds:.2f} s" for N, seconds in fresh.items()))
    return out


# --------------------------------------------------------------------------------------
# 3. Time to stationarity
# --------------------------------------------------------------------------------------

def stationarity_run(loss: str, max_seconds: float) -> dict:
    ds = data.digits()
    X, y = ds.X, ds.y
    cfg = train.TrainConfig(lam=5e-3, loss=loss, lr=0.5, steps=1000, batch_size=None, record_every=250,
                            polish_tol=1e-6, polish_max_iter=10**6, polish_max_seconds=max_seconds, seed=0)
    r, wall, cpu = timed(lambda: train.train(MLP(64, [64, 64], 10, seed=0), X, y, cfg, use_cache=False))
    h = r.history
    gd = [i for i, p in enumerate(h["phase"]) if p == "sgd"]
    lbfgs = [i for i, p in enumerate(h["phase"]) if p == "lbfgs"]
    # seconds of L-BFGS until the recorded residual first fell below each level (records every polish_chunk iterations)
    milestones = {}
    for level in (1e-3, 1e-4, 1e-5, 1e-6):
        hits = [h["seconds"][i] for i in lbfgs if h["residual"][i] < level]
        milestones[f"{level:g}"] = hits[0] if hits else None
    out = {
        "loss": loss,
        "lbfgs_s_to_residual": milestones,
        "gd_s": h["seconds"][gd[-1]],
        "residual_after_gd": h["residual"][gd[-1]],
        "lbfgs_s": h["seconds"][lbfgs[-1]] if lbfgs else 0.0,
        "lbfgs_iterations": h["step"][-1] - cfg.steps if lbfgs else 0,
        "residual": r.max_residual,
        "reached": r.max_residual < cfg.polish_tol,
        "total_s": wall, "total_cpu_s": cpu,
        "L_lambda": r.final["loss"], "acc": r.final["acc"],
    }
    print(f"   {loss:>3}: GD {out['gd_s']:.1f} s (residual {out['residual_after_gd']:.1e}), "
          f"L-BFGS {out['lbfgs_s']:.1f} s ({out['lbfgs_iterations']} iterations), residual reached "
          f"{out['residual']:.2e} ({'below' if out['reached'] else 'NOT below'} 1e-6); "
          f"total {wall:.1f} s wall, {cpu:.1f} s CPU; L_lambda = {out['L_lambda']:.8f}, train accuracy {out['acc']:.3f}")
    print("        L-BFGS seconds until the residual first fell below: " + ", ".join(
        f"{k}: {'-' if v is None else f'{v:.1f} s'}" for k, v in milestones.items()))
    return out


def part3(max_seconds: float) -> dict:
    print("3. Time to stationarity: digits MLP 64-64-64-10, tanh, no biases, lambda=0.005, N=1797; full-batch GD "
          f"(lr 0.5, 1000 steps), then float64 L-BFGS on L_lambda/lambda^2 to residual < 1e-6 (at most {max_seconds:g} s); "
          "cross-entropy (the book's default) and square loss")
    return {loss: stationarity_run(loss, max_seconds) for loss in ("ce", "mse")}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--parts", default="1,2,3", help="which benchmarks to run, e.g. 1,3 (default 1,2,3)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per timed stage, the best counts (default 3)")
    parser.add_argument("--max-lbfgs-seconds", type=float, default=120.0,
                        help="L-BFGS time cap of part 3 (default 120)")
    args = parser.parse_args(argv)
    parts = {int(p) for p in args.parts.split(",")}
    torch.set_num_threads(args.threads)
    start_load = load()
    print(f"nrc_utils benchmarks: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; load average {start_load} "
          "(other processes share this CPU: the timings are noisy)")
    result: dict = {"threads": torch.get_num_threads(), "torch": torch.__version__, "cpus": os.cpu_count(),
                    "load_start": start_load}
    if 1 in parts:
        result["ensemble"] = part1(args.repeats)
    if 2 in parts:
        result["collapse"] = part2(args.repeats)
    if 3 in parts:
        result["stationarity"] = part3(args.max_lbfgs_seconds)
    result["load_end"] = load()
    print(f"load average at the end: {result['load_end']}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
