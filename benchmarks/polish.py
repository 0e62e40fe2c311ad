"""Benchmark of nrc_utils.stationary: batched polishing against train.polish one network at a time.

Run from the repository root:

    .venv/bin/python benchmarks/polish.py [--threads 2] [--parts 1,2] [--repeats 1]

It prints its figures as it goes; the last line is one JSON object with all of them. Times are
wall-clock seconds (``time.perf_counter``) with the process CPU time beside them; with
``--repeats`` above 1 the two paths of part 1 run interleaved and the best run counts. The load
average is printed at the start and the end: on a shared CPU the numbers move with what else runs,
so compare the ratios of one run.

1. Sixteen networks of chapter 3 (``03_neural_rank_collapse``, ci profile): the Gaussian mixture
   ``K = 4, d = 24``, 50 points per class, ``s = 0.4``; MLPs 24-24-24-24-4, tanh, no biases, square
   loss; ``lambda`` in ``{0.003, 0.008, 0.02, 0.05}`` times seeds 0..3; 300 steps of full-batch
   gradient descent (lr 0.5, float64, ``ensemble.train_ensemble``), then to a residual below 1e-6:
   ``train.polish`` on each network in turn (``torch.optim.LBFGS``, history 100, strong Wolfe,
   checked every 50 iterations) against one call of ``stationary.lbfgs`` for all sixteen (the book's
   ``train.LBFGS_OPTIONS``: history 50; Armijo, checked every iteration), and against the same
   ``stationary.lbfgs`` run on one network at a time (what ``train.train`` does for a single MLP),
   which isolates the gain of batching. Then ``stationary.newton`` from the batched result to
   1e-12, with the smallest Hessian eigenvalue of every network.
2. Time per network to 1e-12 for the digits MLP 64-64-64-10 of ``benchmarks/benchmark.py`` part 3
   (tanh, no biases, ``lambda = 5e-3``, N = 1797, 1000 steps of full-batch GD at lr 0.5), with
   cross-entropy and with the square loss: ``stationary.lbfgs`` to 1e-6, then ``stationary.newton``
   (8,832 parameters: Newton-CG, Lanczos for the smallest eigenvalue).
3. What limits part 1: the iterations each of part 1's four ``lambda = 0.003`` networks needs to reach
   the residual target, for ``stationary.lbfgs`` with histories of 20, 50 and 100 pairs (one batched
   call each) and for ``train.polish`` (``torch.optim.LBFGS``, history 100, strong Wolfe). The batched
   run lasts as long as its slowest member, so its iteration count sets the speed-up.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time

os.environ.setdefault("NRC_PROGRESS", "0")

import torch

from nrc_utils import data, ensemble, gradients, stationary, train
from nrc_utils.models import MLP


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def book_residual(net, X, y, lam, loss) -> float:
    return max(gradients.stationarity_residuals(net, X, y, lam, loss))


# --------------------------------------------------------------------------------------
# 1. sixteen chapter-3 networks
# --------------------------------------------------------------------------------------

def chapter3_start():
    mix = data.gaussian_mixture(4, 24, 50, 0.4, mean_scale=1.0, seed=0)
    X, y = mix.X.double(), mix.y
    lams, seeds = ensemble.grid([0.003, 0.008, 0.02, 0.05], [0, 1, 2, 3])
    cfg = train.TrainConfig(loss="mse", lr=0.5, steps=300, record_every=300, dtype="float64")
    res = ensemble.train_ensemble(24, [24, 24, 24], 4, lams, seeds, X, y, cfg, polish=False, use_cache=False,
                                  device="cpu")
    return X, y, lams, [r.model.double() for r in res]


def torch_polish(net, X, y, lam: float, tol: float, max_seconds: float):
    """``train.polish`` on a copy of ``net`` (``torch.optim.LBFGS``, history 100, strong Wolfe, checked every 50
    iterations) to residual ``tol``: ``(network, stop reason, iterations)``."""
    n, hist = copy.deepcopy(net), {}
    cfg = train.TrainConfig(lam=lam, loss="mse", polish_tol=tol, polish_max_iter=10**6, polish_max_seconds=max_seconds,
                            polish_chunk=50)
    stop = train.polish(n, X, y, cfg, hist)
    return n, stop, hist["step"][-1]


def part1(repeats: int, tol: float, max_seconds: float) -> dict:
    X, y, lams, nets = chapter3_start()
    print(f"1. 16 chapter-3 networks 24-24-24-24-4 (tanh, square loss, N={len(y)}), lambda {sorted(set(lams))} x 4 seeds, "
          f"after 300 GD steps; to residual < {tol:g}: train.polish one by one vs stationary.lbfgs batched "
          f"(best of {repeats})")

    def singles():
        return [torch_polish(net, X, y, lam, tol, max_seconds) for net, lam in zip(nets, lams)]

    problem, theta0 = stationary.Problem.from_mlps(nets, X, y, lams, "mse")

    def batched():
        return stationary.lbfgs(problem, theta0, tol=tol, max_iter=10**6, max_seconds=max_seconds,
                                **train.LBFGS_OPTIONS)

    def same_solver():
        """stationary.lbfgs one network at a time (M = 1, as train.train polishes a single MLP)."""
        out = []
        for m, lam in enumerate(lams):
            one, th = stationary.Problem.from_mlps([nets[m]], X, y, [lam], "mse")
            out.append(stationary.lbfgs(one, th, tol=tol, max_iter=10**6, max_seconds=max_seconds,
                                        **train.LBFGS_OPTIONS))
        return out

    best = {"singles": [math.inf, math.inf], "batched": [math.inf, math.inf], "same_solver": [math.inf, math.inf]}
    for _ in range(repeats):
        for name, fn in (("singles", singles), ("batched", batched), ("same_solver", same_solver)):
            out, wall, cpu = timed(fn)
            best[name] = [min(best[name][0], wall), min(best[name][1], cpu)]
            if name == "singles":
                s_out = out
            elif name == "batched":
                b_out = out
            else:
                o_out = out
    s_res = [book_residual(n, X, y, lam, "mse") for (n, _s, _i), lam in zip(s_out, lams)]
    b_res = [book_residual(n, X, y, lam, "mse") for n, lam in zip(problem.mlps(b_out.theta), lams)]
    iters_s = [i for _n, _s, i in s_out]
    r = {
        "members": len(lams), "tol": tol,
        "polish_singles_s": best["singles"][0], "polish_batched_s": best["batched"][0],
        "polish_singles_cpu_s": best["singles"][1], "polish_batched_cpu_s": best["batched"][1],
        "polish_speedup": best["singles"][0] / best["batched"][0],
        "polish_speedup_cpu": best["singles"][1] / best["batched"][1],
        "max_final_residual_singles": max(s_res), "max_final_residual_batched": max(b_res),
        "stops_singles": [s for _n, s, _i in s_out], "stops_batched": b_out.stops,
        "iterations_singles": iters_s, "iterations_batched": b_out.iterations,
        "batched_iterations": len(b_out.batch_sizes),
        "ms_per_batched_iteration": 1000 * best["batched"][0] / max(1, len(b_out.batch_sizes)),
        "polish_same_solver_singles_s": best["same_solver"][0],
        "polish_speedup_same_solver": best["same_solver"][0] / best["batched"][0],
        "iterations_same_solver_singles": [o.iterations[0] for o in o_out],
    }
    print(f"   one by one (train.polish): {r['polish_singles_s']:.1f} s ({r['polish_singles_cpu_s']:.1f} s CPU), "
          f"{sum(iters_s)} iterations in all, largest final residual {r['max_final_residual_singles']:.2e}, "
          f"stops {sorted(set(r['stops_singles']))}")
    print(f"   batched (stationary.lbfgs, history {train.LBFGS_OPTIONS['history_size']}): "
          f"{r['polish_batched_s']:.1f} s ({r['polish_batched_cpu_s']:.1f} s CPU), "
          f"{sum(b_out.iterations)} member-iterations in {len(b_out.batch_sizes)} batched iterations "
          f"({r['ms_per_batched_iteration']:.2f} ms each), largest final residual {r['max_final_residual_batched']:.2e}, "
          f"stops {sorted(set(b_out.stops))}")
    print(f"   speed-up {r['polish_speedup']:.2f}x wall ({r['polish_speedup_cpu']:.2f}x CPU)")
    print(f"   the same solver one network at a time (stationary.lbfgs, M = 1): {r['polish_same_solver_singles_s']:.1f} s, "
          f"{sum(r['iterations_same_solver_singles'])} iterations in all: batching alone gives "
          f"{r['polish_speedup_same_solver']:.2f}x")
    # Newton from the batched result
    nt, wall, cpu = timed(lambda: stationary.newton(problem, b_out.theta, tol=1e-12))
    n_res = [book_residual(n, X, y, lam, "mse") for n, lam in zip(problem.mlps(nt.theta), lams)]
    r.update({"newton_s": wall, "newton_cpu_s": cpu, "newton_s_per_network": wall / len(lams),
              "newton_stops": nt.stops, "newton_iterations": nt.iterations, "newton_raised": nt.raised,
              "newton_max_final_residual": max(n_res),
              "min_eigenvalue_scaled": nt.min_eigenvalue_scaled.tolist(),
              "min_eigenvalue_over_lambda": (nt.min_eigenvalue / problem.lams).tolist(),
              "batched_polish_to_1e-12_s": best["batched"][0] + wall,
              "speedup_to_1e-12_vs_singles_to_tol": best["singles"][0] / (best["batched"][0] + wall)})
    print(f"   then stationary.newton (dense Hessian, {problem.P} parameters): {wall:.1f} s ({wall / len(lams):.2f} s "
          f"per network), Newton steps {nt.iterations}, stops {sorted(set(nt.stops))}, largest final residual "
          f"{max(n_res):.2e}; smallest Hessian eigenvalue of L_lambda/lambda^2: "
          f"{min(r['min_eigenvalue_scaled']):.3g} .. {max(r['min_eigenvalue_scaled']):.3g} "
          f"({sum(e > 0 for e in r['min_eigenvalue_scaled'])} of {len(lams)} positive)")
    print(f"   batched L-BFGS + Newton to 1e-12: {r['batched_polish_to_1e-12_s']:.1f} s, "
          f"{r['speedup_to_1e-12_vs_singles_to_tol']:.2f}x faster than one by one to {tol:g}")
    return r


# --------------------------------------------------------------------------------------
# 2. digits MLP to 1e-12
# --------------------------------------------------------------------------------------

def digits_run(loss: str, max_seconds: float) -> dict:
    ds = data.digits()
    X, y = ds.X.double(), ds.y
    lam = 5e-3
    cfg = train.TrainConfig(lam=lam, loss=loss, lr=0.5, steps=1000, record_every=1000, dtype="float64", seed=0)
    gd, gd_s, _ = timed(lambda: train.train(MLP(64, [64, 64], 10, seed=0), X, y, cfg, use_cache=False))
    problem, theta0 = stationary.Problem.from_mlps([gd.model.double()], X, y, [lam], loss)
    first, l_s, l_cpu = timed(lambda: stationary.lbfgs(problem, theta0, tol=1e-6, max_iter=10**6,
                                                       max_seconds=max_seconds))
    nt, n_s, n_cpu = timed(lambda: stationary.newton(problem, first.theta, tol=1e-12, max_seconds=max_seconds))
    net = problem.mlps(nt.theta)[0]
    res = book_residual(net, X, y, lam, loss)
    out = {"loss": loss, "gd_s": gd_s, "residual_after_gd": gd.max_residual,
           "lbfgs_s": l_s, "lbfgs_iterations": first.iterations[0], "lbfgs_stop": first.stops[0],
           "residual_after_lbfgs": first.max_residuals[0].item(),
           "newton_s": n_s, "newton_iterations": nt.iterations[0], "newton_stop": nt.stops[0],
           "newton_raised": nt.raised[0], "newton_negative_curvature": nt.negative_curvature[0],
           "residual": res, "reached_1e-12": res <= 1e-12,
           "min_eigenvalue": nt.min_eigenvalue[0].item(), "min_eigenvalue_scaled": nt.min_eigenvalue_scaled[0].item(),
           "seconds_to_1e-12_after_gd": l_s + n_s, "cpu_s_after_gd": l_cpu + n_cpu}
    print(f"   {loss:>3}: GD {gd_s:.1f} s (residual {gd.max_residual:.1e}); stationary.lbfgs {l_s:.1f} s "
          f"({first.iterations[0]} iterations, {first.stops[0]}, residual {out['residual_after_lbfgs']:.1e}); "
          f"stationary.newton {n_s:.1f} s ({nt.iterations[0]} Newton-CG steps, {nt.stops[0]}, Lanczos included) "
          f"to residual {res:.2e}; smallest Hessian eigenvalue of L_lambda {out['min_eigenvalue']:.3g} "
          f"({out['min_eigenvalue_scaled']:.3g} on the scale of L_lambda/lambda^2); "
          f"after GD: {l_s + n_s:.1f} s per network")
    return out


def part2(max_seconds: float) -> dict:
    print("2. Time per network to 1e-12: digits MLP 64-64-64-10, tanh, no biases, lambda=0.005, N=1797, "
          "1000 GD steps (lr 0.5), then stationary.lbfgs to 1e-6 and stationary.newton to 1e-12")
    return {loss: digits_run(loss, max_seconds) for loss in ("ce", "mse")}


# --------------------------------------------------------------------------------------
# 3. iterations of the slowest networks against the history size
# --------------------------------------------------------------------------------------

def part3(tol: float, max_seconds: float) -> dict:
    X, y, lams, nets = chapter3_start()
    lam = min(lams)
    sel = [m for m, v in enumerate(lams) if v == lam]
    print(f"3. Iterations to residual < {tol:g} of the {len(sel)} networks of part 1 with lambda = {lam:g} "
          f"(members {sel}): stationary.lbfgs by history size, and train.polish (torch.optim.LBFGS, history 100)")
    problem, theta0 = stationary.Problem.from_mlps([nets[m] for m in sel], X, y, [lam] * len(sel), "mse")
    out: dict = {"members": sel, "lambda": lam}
    for h in (20, 50, 100):
        r, wall, _cpu = timed(lambda: stationary.lbfgs(problem, theta0, tol=tol, max_iter=10**6, max_seconds=max_seconds,
                                                       history_size=h))
        out[f"lbfgs_history_{h}"] = {"iterations": r.iterations, "stops": r.stops, "seconds": wall,
                                     "ms_per_batched_iteration": 1000 * wall / max(1, len(r.batch_sizes))}
        print(f"   stationary.lbfgs, history {h:>3}: iterations {r.iterations}, {wall:.1f} s "
              f"({out[f'lbfgs_history_{h}']['ms_per_batched_iteration']:.2f} ms per batched iteration), "
              f"stops {sorted(set(r.stops))}")
    runs = [torch_polish(nets[m], X, y, lam, tol, max_seconds) for m in sel]
    its, stops = [i for _n, _s, i in runs], [s for _n, s, _i in runs]
    out["torch_lbfgs_history_100"] = {"iterations": its, "stops": stops}
    print(f"   train.polish (torch.optim.LBFGS, history 100, counted in chunks of 50): iterations {its}, "
          f"stops {sorted(set(stops))}")
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--parts", default="1,2", help="which parts to run, e.g. 1 or 1,3 (default 1,2)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each path of part 1, the best counts")
    parser.add_argument("--tol", type=float, default=1e-6, help="residual target of part 1 (default 1e-6)")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="time cap of every solve (default 900)")
    args = parser.parse_args(argv)
    parts = {int(p) for p in args.parts.split(",")}
    torch.set_num_threads(args.threads)
    start_load = load()
    print(f"nrc_utils.stationary benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; load average {start_load}")
    result: dict = {"threads": torch.get_num_threads(), "torch": torch.__version__, "cpus": os.cpu_count(),
                    "load_start": start_load}
    if 1 in parts:
        result["chapter3"] = part1(args.repeats, args.tol, args.max_seconds)
    if 2 in parts:
        result["digits"] = part2(args.max_seconds)
    if 3 in parts:
        result["iterations_by_history"] = part3(args.tol, args.max_seconds)
    result["load_end"] = load()
    print(f"load average at the end: {result['load_end']}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
