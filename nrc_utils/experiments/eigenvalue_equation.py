"""Chapter 2 (``02_eigenvalue_equation``): weight decay and the eigenvalue equation, measured.

The chapter states, proves and checks on trained networks (Zangrando et al., arXiv:2402.03991,
Sec. 3; the book's labels):

- ``thm-eigenvalue-equation``: ``grad_{W_l} L_0 = (1/N) D_l^T H_{l-1}``, and at a stationary point of
  ``L_lambda = L_0 + (lambda/2) sum_l ||W_l||_F^2`` every ``lambda W_l = -grad_{W_l} L_0``. Measured by
  the relative residual ``rho_l = ||grad_{W_l} L_0 + lambda W_l||_F / ||lambda W_l||_F``
  (:func:`nrc_utils.gradients.stationarity_residuals`) of networks trained by full-batch GD then
  float64 L-BFGS (:func:`stationarity_sweep`, :func:`residual_curves`, :func:`layer_residuals`);
- ``cor-eigenvalue-spectra``: ``|sigma_j(lambda W_l) - sigma_j(-grad L_0)| <= ||R_l||_2``
  (:func:`side_by_side`);
- ``prop-gradient-rank`` (the paper's Proposition 3.1): ``rank G_B <= min(|B|, rank H_{l-1,B},
  rank D_{l,B})`` (:func:`gradient_ranks`);
- ``prop-sgd-unrolled``: SGD with weight decay is a discounted sum of mini-batch gradients, whose
  alignment the chapter measures (:func:`sgd_alignment_runs`);
- ``prop-cluster-split``: ``lambda W_l = A_l + B_l + R_l`` along SGD (:func:`split_along_sgd`) and at
  stationary networks (:func:`stationary_split`), and the ``K - 1`` refinement with undecayed biases
  (:func:`k_minus_one`).

Networks are the chapter's MLPs without biases (:class:`nrc_utils.models.MLP`); every training goes
through :func:`nrc_utils.train.train` (cached), the SGD runs with a measuring callback through
:func:`nrc_utils.cache.cached` under the configuration of :func:`nrc_utils.train.cache_key`. Functions
take the chapter's parameters as keyword arguments (extra ones are ignored) and return tidy
``pandas.DataFrame`` tables, or small dataclasses of them; ``*_numbers`` functions return the scalars
the chapter glues, ``{key: value}`` with plain Python numbers (keys without the ``ch2_`` prefix).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import cache, data, gradients, losses, models, params, report, spectral, train
from ..device import pick_device

STEM = "02_eigenvalue_equation"
#: The two data sets of the stationarity experiment, in table and figure order.
DATASETS = ("Gaussian mixture", "digits")
#: The networks of the gradient-rank experiment, in table order.
RANK_NETWORKS = ("at initialisation", "stationary (trained)")
#: The networks of the K - 1 experiment, in table order.
BIAS_NETWORKS = ("biases, not decayed", "no biases")
#: The terms of the cluster split (``prop-cluster-split``), as the figure labels them.
SPLIT_TERMS = {"lamW": r"$\|\lambda W_l\|_F$", "A": r"$\|A_l\|_F$ (rank $\leq K$)",
               "B": r"$\|B_l\|_F$ (variability)", "R": r"$\|R_l\|_F$ (residual)"}


def _py(value: Any) -> Any:
    """A numpy scalar as the Python number it holds (glued numbers must read back as numbers)."""
    return value.item() if isinstance(value, np.generic) else value


def _plain(numbers: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _py(v) for k, v in numbers.items()}


# --------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _digit_counts() -> tuple[int, ...]:
    return tuple(int(n) for n in np.bincount(data.digits(standardize=False).y.numpy()))


def digits_size(digits_per_class: int) -> int:
    """``N`` of the chapter's digits subset: ``sum_c min(n_c, digits_per_class)`` (``n_c``: the images of
    class ``c`` among the 1797)."""
    return sum(min(n, digits_per_class) for n in _digit_counts())


def _relations(v: Mapping[str, Any]) -> None:
    """What involves several parameters: the showcase network and layers exist, batches fit in the
    digits subset, the SGD windows fit in the run, at least one SGD run has ``lambda > 0``."""
    rules = PARAMETERS
    if v["nonsmooth_activation"] == v["smooth_activation"]:
        rules.refuse("nonsmooth_activation", v["nonsmooth_activation"],
                     f"an activation other than smooth_activation = {v['smooth_activation']!r}")
    if v["showcase_lambda"] not in v["lambdas"]:
        rules.refuse("showcase_lambda", v["showcase_lambda"], f"one of lambdas = {v['lambdas']!r}")
    n_layers = len(v["digits_widths"]) + 1
    for name in ("showcase_layer", "alignment_layer"):
        if v[name] > n_layers:
            rules.refuse(name, v[name], f"a layer of the digits MLP, 1 to {n_layers}")
    N = digits_size(v["digits_per_class"])
    if max(v["batch_sizes"]) > N:
        rules.refuse("batch_sizes", v["batch_sizes"], f"batch sizes of at most the N = {N} digits of the subset")
    if v["sgd_batch_size"] > N:
        rules.refuse("sgd_batch_size", v["sgd_batch_size"], f"at most the N = {N} digits of the subset")
    for name in ("alignment_window", "split_every"):
        if v[name] > v["sgd_steps"]:
            rules.refuse(name, v[name], f"at most sgd_steps = {v['sgd_steps']}")
    if not any(lam > 0 for lam in v["sgd_lambdas"]):
        rules.refuse("sgd_lambdas", v["sgd_lambdas"], "a list with at least one lambda > 0 (the cluster split "
                     "of lambda W_l needs lambda > 0)")


_RANK_RTOL = params.number(ge=0, lt=1)

PARAMETERS = params.Rules(STEM, {
    "seed": params.integer(ge=0),
    "n_seeds": params.integer(ge=1),
    "loss": params.one_of(*losses.LOSSES),
    "lambdas": params.grid(params.number(gt=0), distinct=True),
    "smooth_activation": params.one_of(*models.SMOOTH_ACTIVATIONS),
    "nonsmooth_activation": params.one_of(*models.ACTIVATIONS),
    "gm_K": params.integer(ge=2),
    "gm_d": params.integer(ge=1),
    "gm_n_per_class": params.integer(ge=1),
    "gm_s": params.number(ge=0),
    "gm_mean_scale": params.number(ge=0),
    "gm_widths": params.grid(params.integer(ge=1)),
    "digits_per_class": params.integer(ge=1),
    # the K - 1 experiment reads sigma_K(A_l), K = 10 digits: every layer needs at least K units
    "digits_widths": params.grid(params.integer(ge=10)),
    "gd_steps": params.integer(ge=0),
    "gd_lr": params.number(gt=0),
    "polish_tol": params.number(gt=0),
    "polish_max_iter": params.integer(ge=1),
    "polish_max_seconds": params.number(gt=0),
    "newton_tol": params.number(gt=0),
    "showcase_lambda": params.number(gt=0),
    "showcase_layer": params.integer(ge=1),
    "showcase_rank_rtol": _RANK_RTOL,
    "batch_sizes": params.grid(params.integer(ge=1)),
    "batches_per_size": params.integer(ge=1),
    "gradient_rank_rtol": _RANK_RTOL,
    "sgd_lambdas": params.grid(params.number(ge=0), distinct=True),
    "sgd_batch_size": params.integer(ge=1),
    "sgd_lr": params.number(gt=0),
    "sgd_steps": params.integer(ge=1),
    "alignment_layer": params.integer(ge=1),
    # cosines of successive gradients need two gradients per window
    "alignment_window": params.integer(ge=2),
    "split_every": params.integer(ge=1),
    "split_rank_rtol": _RANK_RTOL,
    "bias_lambda": params.number(gt=0),
    "collapse_rtol": params.number(gt=0, lt=1),
}, relations=_relations)


# --------------------------------------------------------------------------------------
# data and training
# --------------------------------------------------------------------------------------


def digits_subset(digits_per_class: int, seed: int) -> data.Dataset:
    """The standardised digits (:func:`nrc_utils.data.digits`, pixels standardised over all 1797 images),
    at most ``digits_per_class`` per class: a seeded random choice (numpy ``default_rng(seed)``, one
    permutation per class), in the original order."""
    all_digits = data.digits()
    rng = np.random.default_rng(seed)
    y = all_digits.y.numpy()
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:digits_per_class]
                                   for c in range(all_digits.K)]))
    return all_digits.subset(keep)


def chapter_data(*, seed: int, gm_K: int, gm_d: int, gm_n_per_class: int, gm_s: float, gm_mean_scale: float,
                 gm_widths: Sequence[int], digits_per_class: int, digits_widths: Sequence[int],
                 **_: Any) -> dict[str, tuple[data.Dataset, list[int]]]:
    """``{name: (data set, hidden widths)}`` for :data:`DATASETS`: the Gaussian mixture
    ``x = m_c + s xi`` in ``R^d``, ``||m_c|| = gm_mean_scale`` (:func:`nrc_utils.data.gaussian_mixture`),
    and :func:`digits_subset`."""
    gm = data.gaussian_mixture(K=gm_K, d=gm_d, n_per_class=gm_n_per_class, s=gm_s, mean_scale=gm_mean_scale,
                               seed=seed)
    return {"Gaussian mixture": (gm, list(gm_widths)),
            "digits": (digits_subset(digits_per_class, seed), list(digits_widths))}


@dataclass(frozen=True)
class Training:
    """The chapter's training to stationarity: ``gd_steps`` of full-batch GD in float64 on ``L_lambda``
    (``torch.optim.SGD(weight_decay=lambda)``), then float64 L-BFGS until every layer's
    ``rho_l < polish_tol``, or ``polish_max_iter`` iterations, or ``polish_max_seconds``, then Newton's
    method to ``newton_tol`` for smooth activations (:func:`nrc_utils.train.train`, cached)."""

    loss: str
    gd_steps: int
    gd_lr: float
    polish_tol: float
    polish_max_iter: int
    polish_max_seconds: float
    newton_tol: float | None = None
    device: str = "auto"

    @classmethod
    def of(cls, *, loss: str, gd_steps: int, gd_lr: float, polish_tol: float, polish_max_iter: int,
           polish_max_seconds: float, newton_tol: float | None = None, device: Any = "auto", **_: Any) -> "Training":
        """The recipe from the chapter's parameters (extra ones ignored)."""
        return cls(loss, gd_steps, gd_lr, polish_tol, polish_max_iter, polish_max_seconds, newton_tol, str(device))

    def config(self, lam: float, seed: int, bias: bool = False) -> train.TrainConfig:
        """The :class:`nrc_utils.train.TrainConfig` of a network; biases (if any) are not decayed."""
        return train.TrainConfig(lam=lam, loss=self.loss, lr=self.gd_lr, steps=self.gd_steps, seed=seed,
                                 dtype="float64", decay_bias=not bias, record_every=max(1, self.gd_steps // 10),
                                 polish_tol=self.polish_tol, polish_max_iter=self.polish_max_iter,
                                 polish_max_seconds=self.polish_max_seconds, newton_tol=self.newton_tol)

    def fit(self, ds: data.Dataset, widths: Sequence[int], activation: str, lam: float, seed: int,
            bias: bool = False) -> train.TrainResult:
        """The MLP ``d -> widths -> K`` (weights from ``seed``) trained to stationarity."""
        model = models.MLP(ds.d, list(widths), ds.K, activation, bias=bias, seed=seed)
        return train.train(model, ds.X, ds.y, self.config(lam, seed, bias), device=self.device)


# --------------------------------------------------------------------------------------
# training to stationarity (thm-eigenvalue-equation)
# --------------------------------------------------------------------------------------


@dataclass
class Sweep:
    """Networks trained to stationarity, keyed ``(data, activation, lambda, seed)``, and their table
    ``summary`` (one row per network, the columns the chapter shows)."""

    runs: dict[tuple[str, str, float, int], train.TrainResult]
    summary: pd.DataFrame
    seconds: float = 0.0

    def result(self, data_name: str, activation: str, lam: float, seed: int) -> train.TrainResult:
        return self.runs[(data_name, activation, lam, seed)]


def _lbfgs_seconds(result: train.TrainResult) -> float:
    """Wall time of the L-BFGS stage as recorded (seconds since the stage began; 0 when not polished)."""
    lb = [s for s, p in zip(result.history["seconds"], result.history["phase"]) if p == "lbfgs"]
    return float(lb[-1]) if lb else 0.0


def stationarity_sweep(training: Training, datasets: Mapping[str, tuple[data.Dataset, Sequence[int]]],
                       activations: Sequence[str], lambdas: Sequence[float], seeds: Sequence[int]) -> Sweep:
    """Every (data set, activation, lambda, seed) trained by ``training``; the summary has one row per
    network: ``data, activation, λ, seed, max residual ρ`` (``max_l rho_l``), ``L-BFGS iterations``
    (:func:`nrc_utils.report.lbfgs_iterations`), ``L-BFGS seconds``, ``train accuracy``, ``L_λ``,
    ``stopped by`` (``TrainResult.stop``, the last polishing stage), ``λ_min(H)`` (the smallest Hessian
    eigenvalue of ``L_λ``, NaN without the Newton stage)."""
    t0 = time.perf_counter()
    runs = {(name, act, lam, sd): training.fit(ds, widths, act, lam, sd)
            for name, (ds, widths) in datasets.items() for act in activations for lam in lambdas for sd in seeds}
    seconds = time.perf_counter() - t0
    rows = [{"data": name, "activation": act, "λ": lam, "seed": sd, "max residual ρ": r.max_residual,
             "L-BFGS iterations": report.lbfgs_iterations(r), "L-BFGS seconds": _lbfgs_seconds(r),
             "train accuracy": r.final["acc"], "L_λ": r.final["loss"], "stopped by": r.stop,
             "λ_min(H)": float("nan") if r.min_eigenvalue is None else r.min_eigenvalue}
            for (name, act, lam, sd), r in runs.items()]
    return Sweep(runs, pd.DataFrame(rows), seconds)


def residual_curves(sweep: Sweep, seed: int) -> pd.DataFrame:
    """``max_l rho_l`` along training of the networks of ``seed``: columns ``data, activation, λ,
    iteration`` (GD steps, then L-BFGS iterations, then Newton steps, counted on), ``phase`` (``sgd``,
    ``lbfgs`` or ``newton``),
    ``residual``."""
    rows = [{"data": name, "activation": act, "λ": lam, "iteration": step, "phase": phase, "residual": res}
            for (name, act, lam, sd), r in sweep.runs.items() if sd == seed
            for step, phase, res in zip(r.history["step"], r.history["phase"], r.history["residual"])]
    return pd.DataFrame(rows, columns=["data", "activation", "λ", "iteration", "phase", "residual"])


def layer_residuals(sweep: Sweep) -> pd.DataFrame:
    """The final ``rho_l`` of every layer of every network: columns ``data, activation, λ, seed, layer,
    residual, reached`` (whether the network reached its polishing target)."""
    rows = [{"data": name, "activation": act, "λ": lam, "seed": sd, "layer": l, "residual": res,
             "reached": r.reached}
            for (name, act, lam, sd), r in sweep.runs.items() for l, res in enumerate(r.residuals, start=1)]
    return pd.DataFrame(rows, columns=["data", "activation", "λ", "seed", "layer", "residual", "reached"])


def stationarity_numbers(sweep: Sweep, smooth_activation: str, nonsmooth_activation: str) -> dict[str, Any]:
    """What the text says of the sweep: the smooth networks' largest residual (overall and on the digits;
    ``*_up``: rounded up for "at most"), the non-smooth networks' smallest (``*_down``: rounded down
    for "no lower than") and largest, their ratio rounded down (``res_gap``), the largest L-BFGS
    iterations and seconds of a smooth network, the lowest training accuracy (rounded down), the
    L-BFGS chunk."""
    s = sweep.summary
    smooth, rough = s[s.activation == smooth_activation], s[s.activation == nonsmooth_activation]
    res_s, res_r = smooth["max residual ρ"], rough["max residual ρ"]
    return _plain({
        "res_smooth_max_digits": report.rounded(smooth[smooth.data == "digits"]["max residual ρ"].max(), ".1e", +1),
        "res_smooth_max": res_s.max(),
        "res_smooth_max_up": report.rounded(res_s.max(), ".1e", +1),
        "res_rough_min_down": report.rounded(res_r.min(), ".1e", -1),
        "polish_chunk": next(iter(sweep.runs.values())).config.polish_chunk,
        "res_smooth_min": res_s.min(),
        "res_rough_min": res_r.min(),
        "res_rough_max": res_r.max(),
        "res_gap": report.rounded(res_r.min() / res_s.max(), ".0e", -1),
        "lbfgs_seconds_max": report.rounded(smooth["L-BFGS seconds"].max(), ".1f", +1),
        "lbfgs_iter_max": int(smooth["L-BFGS iterations"].max()),
        "acc_min": report.rounded(s["train accuracy"].min(), ".3f", -1),
    })


def smooth_results(sweep: Sweep, smooth_activation: str) -> list[train.TrainResult]:
    """The networks with the smooth activation (for :func:`nrc_utils.report.stop_summary`)."""
    return [r for (_, act, _, _), r in sweep.runs.items() if act == smooth_activation]


# --------------------------------------------------------------------------------------
# one layer, side by side (cor-eigenvalue-spectra)
# --------------------------------------------------------------------------------------


@dataclass
class EigenPair:
    """``lambda W_l`` and ``-grad_{W_l} L_0`` (both ``d_l x d_{l-1}``, float64) of one network, its
    ``rho_l`` and the largest residual of the network."""

    lamW: np.ndarray
    negG: np.ndarray
    rho: float
    max_rho: float

    @property
    def singular_values(self) -> tuple[np.ndarray, np.ndarray]:
        """``(sigma(lambda W_l), sigma(-grad L_0))``, each in decreasing order."""
        return spectral.singular_values(self.lamW), spectral.singular_values(self.negG)

    @property
    def sv_gap(self) -> float:
        """``max_j |sigma_j(lambda W_l) - sigma_j(-grad L_0)| / sigma_1(lambda W_l)``."""
        a, b = self.singular_values
        return float(np.abs(a - b).max() / a[0])

    @property
    def weyl(self) -> float:
        """``||R_l||_2 / sigma_1(lambda W_l)``, the bound on :attr:`sv_gap` of ``cor-eigenvalue-spectra``."""
        return float(np.linalg.norm(self.lamW - self.negG, 2) / spectral.singular_values(self.lamW)[0])


def eigen_pair(result: train.TrainResult, ds: data.Dataset, layer: int, loss: str) -> EigenPair:
    """:class:`EigenPair` of layer ``layer`` (1-based) of a trained network on ``ds``
    (``-grad L_0 = -(1/N) D_l^T H_{l-1}``, :func:`nrc_utils.gradients.layer_signals`)."""
    net = result.model.double()
    sig = gradients.layer_signals(net, ds.X.double(), ds.y, loss)[layer - 1]
    W = models.weight_matrices(net)[layer - 1].detach().double()
    return EigenPair((result.config.lam * W).numpy(), (-sig.gradient()).numpy(), result.residuals[layer - 1],
                     result.max_residual)


def side_by_side_numbers(smooth: EigenPair, rough: EigenPair, *, showcase_layer: int, showcase_lambda: float,
                         showcase_rank_rtol: float, **_: Any) -> dict[str, Any]:
    """The showcase layer's residuals, spectral gaps and Weyl bounds (``*_rough``: the non-smooth network),
    the numerical ranks of ``lambda W_l`` (relative tolerance ``showcase_rank_rtol``)."""
    return _plain({
        "show_layer": showcase_layer, "show_lambda": f"{showcase_lambda:g}",
        "show_rho": smooth.rho, "show_rho_rough": rough.rho,
        "show_rho_max_up": report.rounded(smooth.max_rho, ".1e", +1),
        "show_sv_gap": smooth.sv_gap, "show_sv_gap_rough": rough.sv_gap,
        "show_weyl": smooth.weyl, "show_weyl_rough": rough.weyl,
        "show_rank": spectral.numerical_rank(smooth.lamW, showcase_rank_rtol),
        "show_rank_rough": spectral.numerical_rank(rough.lamW, showcase_rank_rtol),
        "show_rank_rtol": showcase_rank_rtol, "show_width": min(smooth.lamW.shape),
    })


# --------------------------------------------------------------------------------------
# gradient ranks (prop-gradient-rank)
# --------------------------------------------------------------------------------------


@dataclass
class GradientRanks:
    """``ranks``: one row per (network, batch size, batch, layer): ``network, layer, |B|, batch,
    rank G_B, bound`` (``min(|B|, rank H_{l-1,B}, rank D_{l,B})``), ``shape bound``
    (``min(|B|, d_{l-1}, d_l)``); ``full``: ``network, layer, rank`` of the full-batch gradient;
    ``shapes``: ``{layer: (d_l, d_{l-1})}``; ``N`` samples."""

    ranks: pd.DataFrame
    full: pd.DataFrame
    shapes: dict[int, tuple[int, int]]
    N: int


def gradient_ranks(nets: Mapping[str, torch.nn.Module], ds: data.Dataset, *, loss: str, batch_sizes: Sequence[int],
                   batches_per_size: int, gradient_rank_rtol: float, seed: int, **_: Any) -> GradientRanks:
    """Numerical ranks (relative tolerance ``gradient_rank_rtol``) of mini-batch gradients
    ``G_B = D_{l,B}^T H_{l-1,B}`` of every layer of each network (``{label: model}``, converted to
    float64), with the bound of ``prop-gradient-rank``; ``batches_per_size`` random batches per size,
    the same batches for every network (one ``torch.Generator`` seeded ``seed`` per network)."""
    rows, full, shapes = [], [], {}
    rank = functools.partial(spectral.numerical_rank, rtol=gradient_rank_rtol)
    for label, net in nets.items():
        sigs = gradients.layer_signals(net.double(), ds.X.double(), ds.y, loss)
        gen = torch.Generator().manual_seed(seed)
        for b in batch_sizes:
            for rep in range(batches_per_size):
                idx = torch.randperm(len(ds), generator=gen)[:b]
                for sig in sigs:
                    rows.append({"network": label, "layer": sig.layer, "|B|": len(idx), "batch": rep,
                                 "rank G_B": rank(gradients.minibatch_gradient(sig, idx)),
                                 "bound": min(len(idx), rank(sig.H[idx]), rank(sig.D[idx])),
                                 "shape bound": min(len(idx), sig.H.shape[1], sig.D.shape[1])})
        full += [{"network": label, "layer": sig.layer, "rank": rank(sig.gradient())} for sig in sigs]
        shapes = {sig.layer: (sig.D.shape[1], sig.H.shape[1]) for sig in sigs}
    return GradientRanks(pd.DataFrame(rows), pd.DataFrame(full, columns=["network", "layer", "rank"]), shapes, len(ds))


def gradient_rank_numbers(gr: GradientRanks, ds: data.Dataset, *, gradient_rank_rtol: float,
                          batches_per_size: int, **_: Any) -> dict[str, Any]:
    """Counts of the experiment: the rank of the inputs, gradients above the bound (``rank_exceed``),
    gradients that attain it at the start and at the stationary point, the smallest batch whose
    gradient falls below it at the stationary point (``N`` when none does), full-batch ranks per layer."""
    r = gr.ranks
    init, trained = r[r.network == RANK_NETWORKS[0]], r[r.network == RANK_NETWORKS[1]]
    below = trained[trained["rank G_B"] < trained["bound"]]
    full = {net: ", ".join(str(v) for v in part.sort_values("layer")["rank"]) for net, part in gr.full.groupby("network")}
    return _plain({
        "rank_X": spectral.numerical_rank(ds.X.double(), gradient_rank_rtol),
        "rank_cases": len(r), "rank_cases_each": len(trained),
        "rank_exceed": int((r["rank G_B"] > r["bound"]).sum()),
        "rank_equal_init": int((init["rank G_B"] == init["bound"]).sum()),
        "rank_equal_trained": int((trained["rank G_B"] == trained["bound"]).sum()),
        "rank_below_from": int(below["|B|"].min()) if len(below) else gr.N,
        "rank_full_trained": full.get(RANK_NETWORKS[1], ""), "rank_full_init": full.get(RANK_NETWORKS[0], ""),
        "rank_rtol": gradient_rank_rtol, "rank_batches": batches_per_size,
    })


# --------------------------------------------------------------------------------------
# SGD: alignment (prop-sgd-unrolled) and the cluster split along training (prop-cluster-split)
# --------------------------------------------------------------------------------------

#: Columns of the split record of one SGD run (one row per measured step and layer).
SPLIT_COLUMNS = ("step", "layer", "lamW", "A", "B", "R", "identity", "rank_A")


def sgd_alignment(ds: data.Dataset, *, lam: float, net_seed: int, loss: str, digits_widths: Sequence[int],
                  smooth_activation: str, sgd_lr: float, sgd_steps: int, sgd_batch_size: int, alignment_layer: int,
                  alignment_window: int, split_every: int, split_rank_rtol: float, device: Any = "auto",
                  **_: Any) -> tuple[dict[str, np.ndarray], dict]:
    """One SGD run (float64, no momentum) of the digits MLP with a callback that records every
    mini-batch gradient ``bar G_t`` of layer ``alignment_layer`` and, for ``lambda > 0``, the cluster split
    of every layer at step 0 and every ``split_every`` steps (:func:`nrc_utils.gradients.cluster_split_norms`).

    Returns ``(arrays, meta)`` (:func:`nrc_utils.cache.cached`, under the configuration of
    :func:`nrc_utils.train.cache_key` plus the measurement's and the source of this module):

    - ``cos``, ``cos_step``: cosines of successive gradients within each window of ``alignment_window``
      steps, and the step ``t`` (from 1) of the later gradient of the pair;
    - ``window_end``, ``erank``, ``erank_sum``, ``erank_single``: per window, the effective rank of
      the stacked gradients, of their sum, and the mean effective rank of one gradient
      (:func:`nrc_utils.gradients.gradient_alignment`, :func:`nrc_utils.spectral.effective_rank`);
    - ``split``: ``n x 8``, columns :data:`SPLIT_COLUMNS`;
    - meta ``history`` and ``final`` of the run (:class:`nrc_utils.train.TrainResult`).
    """
    model = models.MLP(ds.d, list(digits_widths), ds.K, smooth_activation, bias=False, seed=net_seed)
    cfg = train.TrainConfig(lam=lam, loss=loss, lr=sgd_lr, steps=sgd_steps, batch_size=sgd_batch_size, seed=net_seed,
                            dtype="float64", record_every=max(1, sgd_steps // 10))
    _, train_config = train.cache_key(model, cfg, ds.X, ds.y, device=device)
    config = {"what": f"{__name__}.sgd_alignment", "train": train_config, "layer": alignment_layer,
              "window": alignment_window, "split_every": split_every, "split_rank_rtol": split_rank_rtol,
              "measure_code": cache.code_fingerprint(("experiments/eigenvalue_equation.py",))}

    def compute():
        dev = pick_device(device)
        X64, yd = ds.X.to(dev, torch.float64), ds.y.to(dev)
        layers = gradients.linear_layers(model)
        grads, split = [], []

        def measure_split(step, m):
            for sig, layer in zip(gradients.layer_signals(m, X64, yd, loss), layers):
                n = gradients.cluster_split_norms(sig, layer.weight, lam, yd, ds.K, split_rank_rtol)
                split.append([step, sig.layer] + [n[k] for k in SPLIT_COLUMNS[2:]])

        def callback(step, m):
            grads.append(layers[alignment_layer - 1].weight.grad.detach().double().cpu().clone())
            if lam > 0 and (step + 1) % split_every == 0:
                measure_split(step + 1, m)

        if lam > 0:
            measure_split(0, model.to(dev, torch.float64))
        result = train.train(model, ds.X, ds.y, cfg, device=device, callback=callback)
        return _alignment_arrays(grads, alignment_window, split), {"history": result.history, "final": result.final}

    return cache.cached(config, compute)


def _alignment_arrays(grads: list[torch.Tensor], window: int, split: list[list[float]]) -> dict[str, np.ndarray]:
    """The window measures of :func:`sgd_alignment` from the recorded gradients."""
    single = [spectral.effective_rank(g) for g in grads]
    cos_step, cos, ends, stacked, summed, one = [], [], [], [], [], []
    for w in range(0, len(grads) - window + 1, window):
        a = gradients.gradient_alignment(grads[w:w + window])
        cos_step += list(range(w + 2, w + window + 1))  # pair (t-1, t), steps counted from 1
        cos += list(a["cosine_successive"])
        ends.append(w + window)
        stacked.append(a["effective_rank_stacked"])
        summed.append(a["effective_rank_sum"])
        one.append(float(np.mean(single[w:w + window])))
    return {"cos": np.asarray(cos), "cos_step": np.asarray(cos_step), "window_end": np.asarray(ends),
            "erank": np.asarray(stacked), "erank_sum": np.asarray(summed), "erank_single": np.asarray(one),
            "split": np.asarray(split, dtype=np.float64).reshape(-1, len(SPLIT_COLUMNS))}


@dataclass
class SGDRuns:
    """The SGD runs of :func:`sgd_alignment_runs`: ``cosines`` (``λ, seed, step, cosine``: running
    mean over ``alignment_window`` pairs), ``windows`` (``λ, seed, step`` (end of window), ``effective
    rank``, ``sum``, ``single``), ``split`` (``λ, seed`` and :data:`SPLIT_COLUMNS`, ``lambda > 0`` only),
    ``residuals`` (``λ, seed, residual``: ``max_l rho_l`` at the end, ``lambda > 0``), and the seconds."""

    cosines: pd.DataFrame
    windows: pd.DataFrame
    split: pd.DataFrame
    residuals: pd.DataFrame
    seconds: float = 0.0


def sgd_alignment_runs(ds: data.Dataset, *, sgd_lambdas: Sequence[float], seeds: Sequence[int], alignment_window: int,
                       **kw: Any) -> SGDRuns:
    """:func:`sgd_alignment` for every lambda of ``sgd_lambdas`` and every seed, as tables."""
    t0 = time.perf_counter()
    runs = {(lam, sd): sgd_alignment(ds, lam=lam, net_seed=sd, alignment_window=alignment_window, **kw)
            for lam in sgd_lambdas for sd in seeds}
    seconds = time.perf_counter() - t0
    cos, win, split, res = [], [], [], []
    for (lam, sd), (arr, meta) in runs.items():
        c = pd.Series(arr["cos"]).rolling(alignment_window, min_periods=1).mean().to_numpy()
        cos.append(pd.DataFrame({"λ": lam, "seed": sd, "step": arr["cos_step"].astype(int), "cosine": c}))
        win.append(pd.DataFrame({"λ": lam, "seed": sd, "step": arr["window_end"].astype(int),
                                 "effective rank": arr["erank"], "sum": arr["erank_sum"], "single": arr["erank_single"]}))
        if lam > 0:
            part = pd.DataFrame(arr["split"], columns=list(SPLIT_COLUMNS))
            part[["step", "layer", "rank_A"]] = part[["step", "layer", "rank_A"]].astype(int)
            split.append(part.assign(**{"λ": lam, "seed": sd})[["λ", "seed", *SPLIT_COLUMNS]])
            res.append({"λ": lam, "seed": sd, "residual": meta["history"]["residual"][-1]})
    return SGDRuns(pd.concat(cos, ignore_index=True), pd.concat(win, ignore_index=True),
                   pd.concat(split, ignore_index=True), pd.DataFrame(res, columns=["λ", "seed", "residual"]), seconds)


def alignment_numbers(runs: SGDRuns, shapes: Mapping[int, tuple[int, int]], *, sgd_lambdas: Sequence[float],
                      sgd_lr: float, sgd_steps: int, sgd_batch_size: int, alignment_layer: int,
                      alignment_window: int, seeds: Sequence[int], **_: Any) -> dict[str, Any]:
    """What the text says of the alignment: mean cosine over the first window (the largest over
    lambda), over the last window and the effective ranks of the last window for the largest and the
    smallest lambda (``*_hi``, ``*_lo``), the effective rank of one gradient (range over lambda) and of
    full rank, the SGD memory ``1/(eta lambda)`` and the weight ``(1 - eta lambda)^T`` of the start for the
    largest lambda, and the final residuals of the first seed's runs with ``lambda > 0``."""
    cos, win = runs.cosines, runs.windows
    lam_hi, lam_lo = max(sgd_lambdas), min(sgd_lambdas)
    last = cos[cos.step > sgd_steps - alignment_window]
    last_cos = {lam: last[last["λ"] == lam].cosine.mean() for lam in (lam_hi, lam_lo)}
    end = win[win.step == win.step.max()].groupby("λ")[["effective rank", "sum", "single"]].mean()
    res = runs.residuals[runs.residuals.seed == seeds[0]].residual
    return _plain({
        "sgd_batch": sgd_batch_size, "sgd_lr": sgd_lr, "sgd_steps": sgd_steps,
        "align_layer": alignment_layer, "align_window": alignment_window,
        "align_cos_first": cos[cos.step <= alignment_window].groupby("λ").cosine.mean().max(),
        "align_lam_hi": f"{lam_hi:g}", "align_lam_lo": f"{lam_lo:g}",
        "align_cos_hi": last_cos[lam_hi], "align_cos_lo": last_cos[lam_lo],
        "align_er_hi": end.loc[lam_hi, "effective rank"], "align_er_lo": end.loc[lam_lo, "effective rank"],
        "align_sum_hi": end.loc[lam_hi, "sum"], "align_sum_lo": end.loc[lam_lo, "sum"],
        "align_single_min": end["single"].min(), "align_single_max": end["single"].max(),
        "align_full": min(shapes[alignment_layer]),
        "align_memory_hi": 1 / (sgd_lr * lam_hi), "align_forget_hi": (1 - sgd_lr * lam_hi) ** sgd_steps,
        "sgd_res_min": res.min(), "sgd_res_max": res.max(),
    })


def alignment_sums(runs: SGDRuns) -> list[float]:
    """The effective rank of the sum of the last window's gradients, per lambda in increasing order
    (mean over seeds)."""
    win = runs.windows
    end = win[win.step == win.step.max()].groupby("λ")["sum"].mean().sort_index()
    return [float(v) for v in end]


def split_along_sgd(runs: SGDRuns) -> pd.DataFrame:
    """The cluster split along SGD in long form: ``λ, seed, step, layer, term`` (:data:`SPLIT_TERMS`
    labels), ``norm``."""
    long = runs.split.melt(id_vars=["λ", "seed", "step", "layer"], value_vars=list(SPLIT_TERMS), var_name="term",
                           value_name="norm")
    long["term"] = long["term"].map(SPLIT_TERMS)
    return long.sort_values(["λ", "seed", "step", "layer"], kind="stable").reset_index(drop=True)


def stationary_split(training: Training, ds: data.Dataset, widths: Sequence[int], activation: str,
                     lambdas: Sequence[float], seed: int) -> pd.DataFrame:
    """The cluster split (classes as clusters) of stationary networks (``training``, same start) for each
    ``lambda > 0`` of ``lambdas``: ``λ, layer`` and the norms ``lamW, A, B, R`` of
    :func:`nrc_utils.gradients.cluster_split_norms`."""
    rows = []
    for lam in (v for v in lambdas if v > 0):
        net = training.fit(ds, widths, activation, lam, seed).model.double()
        X = ds.X.double()
        for sig, layer in zip(gradients.layer_signals(net, X, ds.y, training.loss), gradients.linear_layers(net)):
            n = gradients.cluster_split_norms(sig, layer.weight, lam, ds.y, ds.K)
            rows.append({"λ": lam, "layer": sig.layer, **{k: n[k] for k in ("lamW", "A", "B", "R")}})
    return pd.DataFrame(rows, columns=["λ", "layer", "lamW", "A", "B", "R"])


def split_numbers(runs: SGDRuns, stationary: pd.DataFrame, K: int, *, split_rank_rtol: float,
                  **_: Any) -> dict[str, Any]:
    """What the text says of the split: the largest relative error of the identity
    ``||lambda W_l - A_l - B_l - R_l|| / ||lambda W_l||`` (rounded up), the largest rank of ``A_l``, and the ranges
    of ``||B_l|| / ||A_l||`` and ``||R_l|| / ||lambda W_l||`` at the end of SGD (mean over seeds per
    lambda and layer) and of ``||B_l|| / ||A_l||`` and ``||A_l|| / ||lambda W_l||`` at the stationary
    networks."""
    s = runs.split
    final = s[s.step == s.step.max()].groupby(["λ", "layer"])[["lamW", "A", "B", "R"]].mean()
    BA, RW = final.B / final.A, final.R / final.lamW
    return _plain({
        "split_identity": report.rounded((s.identity / s.lamW).max(), ".1e", +1),
        "split_rankA_max": int(s.rank_A.max()), "K_digits": K, "split_rtol": split_rank_rtol,
        "split_BA_min": float(BA.min()), "split_BA_max": float(BA.max()),
        "split_RW_min": float(RW.min()), "split_RW_max": float(RW.max()),
        "split_stat_BA_min": float((stationary.B / stationary.A).min()),
        "split_stat_BA_max": float((stationary.B / stationary.A).max()),
        "split_stat_AW_min": float((stationary.A / stationary.lamW).min()),
        "split_stat_AW_max": float((stationary.A / stationary.lamW).max()),
    })


def split_ratio_table(runs: SGDRuns) -> pd.DataFrame:
    """``λ, layer, ‖B_l‖ / ‖A_l‖, ‖R_l‖ / ‖λW_l‖`` at the end of SGD (means over seeds)."""
    s = runs.split
    final = s[s.step == s.step.max()].groupby(["λ", "layer"])[["lamW", "A", "B", "R"]].mean()
    return pd.DataFrame({"‖B_l‖ / ‖A_l‖": final.B / final.A, "‖R_l‖ / ‖λW_l‖": final.R / final.lamW}).reset_index()


# --------------------------------------------------------------------------------------
# undecayed biases: rank K - 1 (prop-cluster-split, item 3)
# --------------------------------------------------------------------------------------


@dataclass
class KMinusOne:
    """The two stationary networks of the ``K - 1`` experiment (``biased``: undecayed biases, ``unbiased``:
    no biases), ``spectra`` (``network, layer, j, ratio``: ``sigma_j(A_l) / sigma_1(A_l)``, ``j <= K``),
    ``checks`` (``layer, sigma_K, bound``: item 3's bound ``||grad_b L_0|| ||mean_c mu_c||``, biased
    layers), ``centring``, ``||mean_i x_i|| / mean_i ||x_i||`` of the inputs, and the ``K`` classes."""

    biased: train.TrainResult
    unbiased: train.TrainResult
    spectra: pd.DataFrame
    checks: pd.DataFrame
    centring: float
    K: int


def class_part_spectra(result: train.TrainResult, ds: data.Dataset, loss: str, network: str
                       ) -> tuple[list[dict], list[dict]]:
    """Rows ``network, layer, j, ratio`` of the ``K`` largest singular values of the class part ``A_l``
    (:func:`nrc_utils.gradients.cluster_split`, classes as clusters) over the largest, and, for layers
    with a bias, ``layer, sigma_K, bound`` (:func:`nrc_utils.gradients.bias_class_part_bound`)."""
    net, K = result.model.double(), ds.K
    rows, checks = [], []
    for sig, layer in zip(gradients.layer_signals(net, ds.X.double(), ds.y, loss), gradients.linear_layers(net)):
        s = spectral.singular_values(gradients.cluster_split(sig, ds.y, K).class_part)[:K]
        s = np.pad(s, (0, K - len(s)))  # a layer narrower than K: sigma_j = 0 beyond its rank
        rows += [{"network": network, "layer": sig.layer, "j": j + 1, "ratio": float(v / s[0])} for j, v in enumerate(s)]
        if layer.bias is not None:
            checks.append({"layer": sig.layer, "sigma_K": float(s[K - 1]),
                           "bound": gradients.bias_class_part_bound(sig, ds.y, K)})
    return rows, checks


def k_minus_one(training: Training, ds: data.Dataset, widths: Sequence[int], activation: str, lam: float,
                seed: int) -> KMinusOne:
    """Two stationary MLPs from the same start (``training``): with biases that are not decayed, and
    without biases; their class-part spectra and item 3's bound."""
    biased = training.fit(ds, widths, activation, lam, seed, bias=True)
    unbiased = training.fit(ds, widths, activation, lam, seed, bias=False)
    rows_b, checks = class_part_spectra(biased, ds, training.loss, BIAS_NETWORKS[0])
    rows_u, _ = class_part_spectra(unbiased, ds, training.loss, BIAS_NETWORKS[1])
    X = ds.X.double()
    centring = (X.mean(0).norm() / X.norm(dim=1).mean()).item()
    return KMinusOne(biased, unbiased, pd.DataFrame(rows_b + rows_u), pd.DataFrame(checks, columns=["layer", "sigma_K", "bound"]),
                     centring, ds.K)


def k_ratios(km1: KMinusOne, network: str) -> dict[int, float]:
    """``{layer: sigma_K(A_l) / sigma_1(A_l)}`` of one network of the experiment."""
    s = km1.spectra
    part = s[(s.network == network) & (s.j == km1.K)]
    return {int(l): float(r) for l, r in zip(part.layer, part.ratio)}


def k_minus_one_numbers(km1: KMinusOne, *, bias_lambda: float, collapse_rtol: float, **_: Any) -> dict[str, Any]:
    """The residuals of the two networks, the largest ``sigma_K / sigma_1`` with undecayed biases (rounded
    up), lambda and the collapse threshold."""
    return _plain({
        "km1_lambda": f"{bias_lambda:g}", "km1_res": km1.biased.max_residual, "km1_res_nobias": km1.unbiased.max_residual,
        "km1_ratio_max": report.rounded(max(k_ratios(km1, BIAS_NETWORKS[0]).values()), ".1e", +1),
        "km1_collapse_rtol": collapse_rtol,
    })


__all__ = [
    "BIAS_NETWORKS", "DATASETS", "EigenPair", "GradientRanks", "KMinusOne", "PARAMETERS", "RANK_NETWORKS",
    "SGDRuns", "SPLIT_COLUMNS", "SPLIT_TERMS", "STEM", "Sweep", "Training", "alignment_numbers", "alignment_sums",
    "chapter_data", "class_part_spectra", "digits_size", "digits_subset", "eigen_pair", "gradient_rank_numbers",
    "gradient_ranks", "k_minus_one", "k_minus_one_numbers", "k_ratios", "layer_residuals", "residual_curves",
    "sgd_alignment", "sgd_alignment_runs", "side_by_side_numbers", "smooth_results", "split_along_sgd",
    "split_numbers", "split_ratio_table", "stationarity_numbers", "stationarity_sweep", "stationary_split",
]
