"""Chapter 6, "Experiments on real data": SGD ensembles over a lambda grid on every real data set
that is present, polished to stationary points, measured layer by layer and truncated.

The paper (Zangrando et al., arXiv:2402.03991) reports that the ranks of trained weight matrices
fall as the weight decay lambda grows and depend on the within-class variability of the hidden
representations; its data sets and settings are not known to us, so every choice here is the
book's own (the chapter's parameters, ruled by :data:`PARAMETERS`).

Pipeline (each step one function, each returning tidy tables):

1. :func:`load_data_sets`: the present data sets, flattened and standardised with training
   statistics (:func:`nrc_utils.data.standardize`); an absent or unreadable one is kept with the
   loader's one-line message.
2. :func:`train_networks`: per data set, mini-batch SGD on every (lambda, seed) as one batched
   ensemble (:func:`nrc_utils.ensemble.train_ensemble`, ``polish=False``), then float64 L-BFGS
   from the SGD weights (:func:`nrc_utils.train.train` with ``steps=0``, a warm start cached
   under its own start) until every layer's relative residual
   ``rho_l = ||grad_{W_l} L_0 + lambda W_l||_F / ||lambda W_l||_F`` is below ``polish_tol``.
3. :func:`layer_measures`: per network and layer ``W_l`` (``d_l x d_{l-1}``) the numerical rank
   ``r_eps(W_l) = #{j : sigma_j > eps sigma_1}``, the relative distance to rank ``K``
   ``dist_F(W_l, M_K)/||W_l||_F = (sum_{j>K} sigma_j^2)^{1/2} / ||W_l||_F`` (chapter 1,
   def-ch1-ranks), and of the training features ``h_{l-1}`` that enter the layer the normalised
   ``TCV_2 = tr Sigma_W / tr Sigma_T`` (def-tcv) and ``NC1 = tr(Sigma_W Sigma_B^+)/K``
   (:func:`nrc_utils.collapse.collapse_stats`). The classes of the digits are unequal (174 to
   183 images), so the sample-weighted ``Sigma_W, Sigma_B`` are used, for which
   ``Sigma_T = Sigma_W + Sigma_B`` holds exactly (:mod:`nrc_utils.collapse`).
4. :func:`layer_summary`, :func:`rank_tcv_correlation`, :func:`truncation_table` with
   :func:`truncation_summary`, :func:`polish_comparison`: the numbers the chapter's prose quotes,
   on the reference data set (the first present one) and on the networks that reached the target.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from .. import collapse, data, ensemble, models, params, spectral, train, truncation
from ..device import setup as _setup_device

STEM = "06_real_data"
#: The data sets this chapter can use: every name of :data:`nrc_utils.data.NAMES` that
#: ``data.load(name)`` accepts without further arguments (not the synthetic Gaussian mixture).
REAL_DATA_SETS = tuple(n for n in data.NAMES if n != "gaussian_mixture")
TITLES = {"digits": "Digits", "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
#: What else gets a data set that may be missing, beside the loader's message (which says where
#: to copy its files).
INSTALL_HINTS = {"fashion_mnist": "on Debian or Ubuntu, `apt-get install dataset-fashion-mnist` puts it in "
                                  "/usr/share/datasets, where it is found"}
#: The data set the chapter runs on when none of the requested ones can be read (shipped with
#: scikit-learn, so always present).
FALLBACK = "digits"
REPO = Path(__file__).resolve().parents[2]


def title(name: str) -> str:
    """The display name of a data set (``"fashion_mnist"`` -> ``"Fashion-MNIST"``)."""
    return TITLES.get(name, name)


# --------------------------------------------------------------------------------------
# Parameter rules
# --------------------------------------------------------------------------------------

def _digits_class_sizes() -> np.ndarray:
    """``n_c`` of the 1797 scikit-learn digits, ``(10,)``."""
    return np.bincount(data.digits(standardize=False).y.numpy(), minlength=10)


def check_relations(values: Mapping[str, Any]) -> None:
    """What involves several parameters: the digits split keeps every class on both sides
    (``1 <= round(test_fraction * n_c) <= n_c - 1`` for each class ``c``, as
    :meth:`nrc_utils.data.Dataset.split` rounds), and the image subsets keep every one of the
    ``K = 10`` classes (``max_train >= 2K``, ``max_test >= K``, ruled singly)."""
    if "digits" in values["datasets"]:
        n = _digits_class_sizes()
        test = np.round(values["test_fraction"] * n)
        if (test < 1).any() or (test > n - 1).any():
            PARAMETERS.refuse("test_fraction", values["test_fraction"],
                              f"a fraction that leaves every digits class (of {n.min()} to {n.max()} images) "
                              "at least one training and one test image")


PARAMETERS = params.Rules(STEM, {
    "seed": params.integer(ge=0),
    "n_seeds": params.integer(ge=1),
    "datasets": params.grid(params.one_of(*REAL_DATA_SETS), distinct=True),
    "test_fraction": params.number(gt=0, lt=1),
    "max_train": params.integer(ge=20),
    "max_test": params.integer(ge=10),
    "widths": params.grid(params.integer(ge=1)),
    "activation": params.one_of(*models.SMOOTH_ACTIVATIONS),
    "loss": params.one_of("ce", "mse"),
    "lambdas": params.grid(params.number(gt=0), distinct=True),
    "lr": params.number(gt=0),
    "momentum": params.number(ge=0, lt=1),
    "batch_size": params.integer(ge=1),
    "steps": params.integer(ge=1),
    "polish_tol": params.number(gt=0),
    "polish_max_iter": params.integer(ge=1),
    "polish_max_seconds": params.number(gt=0),
    "newton_tol": params.number(gt=0),
    "hessian_max_params": params.integer(ge=0),
    "train_device": params.one_of("auto", "cpu", "cuda"),
    "rank_rtol": params.number(gt=0, lt=1),
    "trunc_tolerance": params.number(ge=0, le=1),
}, relations=check_relations)


def training_device(train_device: str, seed: int) -> torch.device:
    """Seed everything and pick the device: one CPU thread (the ci networks are 64 wide, where one
    thread beats two on a shared machine), CUDA when ``"auto"`` finds it, else ``train_device``."""
    device = _setup_device(seed, max_threads=1)
    return device if train_device == "auto" else torch.device(train_device)


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------

@dataclass
class DataSets:
    """``present``: ``{name: (train, test)}``, flattened ``(N, d)`` float32, standardised;
    ``absent``: one row per requested set left out (``name, title, kind, reason, hint``; kind
    ``"absent"`` or ``"unreadable"``; ``hint`` from :data:`INSTALL_HINTS` or empty);
    ``overview``: one row per present set, with the range of its class sizes; ``balance``: one
    row per present set (``title, split, train_min, train_max, test_min, test_max``: the smallest
    and largest number of images of a class, ``split`` ``"per class"`` for digits and
    ``"subset"`` for the image sets); ``fallback``: true when none of the requested sets could be
    read and :data:`FALLBACK` is used instead."""

    present: dict[str, tuple[data.Dataset, data.Dataset]]
    absent: pd.DataFrame
    overview: pd.DataFrame
    balance: pd.DataFrame = field(default_factory=pd.DataFrame)
    fallback: bool = False

    @property
    def ref(self) -> str | None:
        """The data set the prose's numbers refer to: the first present one."""
        return next(iter(self.present), None)

    def K(self, name: str) -> int:
        return self.present[name][0].K


def prepare(name: str, test_fraction: float, max_train: int, max_test: int, seed: int
            ) -> tuple[data.Dataset, data.Dataset]:
    """``(train, test)`` of data set ``name``: digits split per class (``test_fraction`` of each
    class held out); MNIST, Fashion-MNIST, CIFAR-10 as stratified random subsets of at most
    ``max_train`` / ``max_test`` images of their official sets; flattened to ``(N, d)``, every
    pixel standardised with the training mean and standard deviation. Raises the loader's
    :class:`nrc_utils.data.DataError` when the files are absent, damaged or unreadable."""
    if name == "digits":
        tr, te = data.load("digits", standardize=False).split(test_fraction, seed=seed)
    else:
        tr, te = data.load(name, train=True), data.load(name, train=False)
        if max_train < len(tr):
            _, tr = tr.split(max_train / len(tr), seed=seed)
        if max_test < len(te):
            _, te = te.split(max_test / len(te), seed=seed)
    return data.standardize(tr, te)


def _reason(err: BaseException) -> str:
    """The loader's one-line message, paths inside the repository relative, no final period."""
    return " ".join(str(err).replace(str(REPO) + "/", "").split()).rstrip(".")


def class_sizes(ds: data.Dataset) -> np.ndarray:
    """``n_c``, the number of samples of each class ``c = 0..K-1``, ``(K,)``."""
    return np.bincount(ds.y.cpu().numpy(), minlength=ds.K)


def _size_range(n: np.ndarray) -> str:
    return f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"


def load_data_sets(names: Sequence[str], test_fraction: float, max_train: int, max_test: int,
                   seed: int) -> DataSets:
    """:func:`prepare` every data set of ``names`` that can be read; the others become rows of
    ``absent`` with the loader's message (which says which files to put where). When none can be
    read, the chapter goes on with :data:`FALLBACK` (``fallback=True``), so that it still runs and
    says what is missing."""
    present, absent = {}, []
    for name in names:
        try:
            present[name] = prepare(name, test_fraction, max_train, max_test, seed)
        except data.DataError as err:
            kind = "absent" if isinstance(err, data.DataNotFoundError) else "unreadable"
            absent.append({"name": name, "title": title(name), "kind": kind, "reason": _reason(err),
                           "hint": INSTALL_HINTS.get(name, "")})
    fallback = not present
    if fallback:
        present[FALLBACK] = prepare(FALLBACK, test_fraction, max_train, max_test, seed)
    rows, balance = [], []
    for n, (tr, te) in present.items():
        n_tr, n_te = class_sizes(tr), class_sizes(te)
        rows.append({"data set": title(n), "d (inputs)": tr.d, "K": tr.K, "N train": len(tr), "N test": len(te),
                     "train per class": _size_range(n_tr), "test per class": _size_range(n_te)})
        balance.append({"title": title(n), "split": "per class" if n == "digits" else "subset",
                        "train_min": int(n_tr.min()), "train_max": int(n_tr.max()),
                        "test_min": int(n_te.min()), "test_max": int(n_te.max())})
    return DataSets(present, pd.DataFrame(absent, columns=["name", "title", "kind", "reason", "hint"]),
                    pd.DataFrame(rows), pd.DataFrame(balance), fallback)


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------

def sgd_config(loss: str, lr: float, momentum: float, batch_size: int, steps: int, polish_tol: float,
               polish_max_iter: int, polish_max_seconds: float, newton_tol: float | None = None,
               hessian_max_params: int | None = None) -> train.TrainConfig:
    """The shared :class:`nrc_utils.train.TrainConfig` of every network (lambda and seed are set per
    member by the ensemble; five records over the SGD stage)."""
    return train.TrainConfig(lam=1.0, loss=loss, lr=lr, momentum=momentum, steps=steps, batch_size=batch_size,
                             record_every=max(1, steps // 5), polish_tol=polish_tol,
                             polish_max_iter=polish_max_iter, polish_max_seconds=polish_max_seconds,
                             newton_tol=newton_tol, hessian_max_params=hessian_max_params)


@dataclass
class Training:
    """``results``: ``{(name, stage, lambda, seed): TrainResult}`` with stage ``"sgd"`` or
    ``"polished"``; ``networks``: one row per network (``name, data, stage, lambda, seed,
    max_rho, polish_stop, stop, min_eigenvalue, reached``; ``stop`` the last polishing stage's
    reason, ``reached`` true only for polished networks whose last stage stopped at its target)."""

    results: dict[tuple[str, str, float, int], train.TrainResult]
    networks: pd.DataFrame = field(default_factory=pd.DataFrame)

    def stage(self, stage: str) -> list[train.TrainResult]:
        return [r for key, r in self.results.items() if key[1] == stage]

    def reached(self, key: tuple[str, str, float, int]) -> bool:
        return key[1] == "polished" and self.results[key].reached


def train_networks(sets: DataSets, widths: Sequence[int], activation: str, lambdas: Sequence[float],
                   seeds: Sequence[int], cfg: train.TrainConfig, device: Any = "auto") -> Training:
    """Stage 1, SGD: per present data set, every (lambda, seed) of ``ensemble.grid(lambdas, seeds)``
    trained as one batched MLP ``d -> widths -> K`` without biases (``train_ensemble``,
    ``polish=False``). Stage 2, polishing: from the SGD networks of a data set, all at once,
    ``train.polish_warm`` (``steps=0``: batched L-BFGS in float64 until ``max_l rho_l < cfg.polish_tol``
    or a cap, then Newton to ``cfg.newton_tol``). Both stages are cached by ``nrc_utils.train``'s keys."""
    lam_list, seed_list = ensemble.grid(lambdas, seeds)
    results = {}
    for name, (tr, _) in sets.present.items():
        sgd = ensemble.train_ensemble(tr.d, widths, tr.K, lam_list, seed_list, tr.X, tr.y, cfg,
                                      activation=activation, bias=False, device=str(device), polish=False)
        warm = [dataclasses.replace(r.config, steps=0, polish_tol=cfg.polish_tol, newton_tol=cfg.newton_tol,
                                    hessian_max_params=cfg.hessian_max_params) for r in sgd]
        polished = train.polish_warm([copy.deepcopy(r.model) for r in sgd], tr.X, tr.y, warm, device=str(device))
        for r, p in zip(sgd, polished):
            results[name, "sgd", r.config.lam, r.config.seed] = r
            results[name, "polished", r.config.lam, r.config.seed] = p
    out = Training(results)
    out.networks = pd.DataFrame(
        [{"name": k[0], "data": title(k[0]), "stage": k[1], "lambda": k[2], "seed": k[3],
          "max_rho": r.max_residual, "polish_stop": r.polish_stop, "stop": r.stop,
          "min_eigenvalue": r.min_eigenvalue if r.min_eigenvalue is not None else float("nan"),
          "reached": out.reached(k)}
         for k, r in results.items()],
        columns=["name", "data", "stage", "lambda", "seed", "max_rho", "polish_stop", "stop", "min_eigenvalue",
                 "reached"])
    return out


# --------------------------------------------------------------------------------------
# Measures per layer
# --------------------------------------------------------------------------------------

def input_stats(train_set: data.Dataset) -> collapse.CollapseStats:
    """:func:`nrc_utils.collapse.collapse_stats` of the inputs ``h_0`` of ``train_set`` (float64):
    the same for every network of a data set, so :func:`layer_measures` computes it once."""
    return collapse.collapse_stats(train_set.X.double().flatten(1), train_set.y, train_set.K)


def network_layers(model: torch.nn.Module, train_set: data.Dataset, test_set: data.Dataset, rank_rtol: float,
                   inputs: collapse.CollapseStats | None = None) -> pd.DataFrame:
    """One row per layer ``l = 1..L`` of ``model``: ``shape``, ``rank`` (``r_eps(W_l)``,
    ``eps = rank_rtol``), ``rel_tail`` (``dist_F(W_l, M_K)/||W_l||_F``), ``tcv2n`` and ``nc1`` of
    the training features ``h_{l-1}`` (``h_0`` the inputs, whose statistics may be passed as
    ``inputs`` = :func:`input_stats`; sample-weighted class covariances), and the network's
    ``test_acc``."""
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        hs, _ = model.features(train_set.X.to(dtype))
    acc = truncation.accuracy(model, test_set.X, test_set.y)
    K, rows = train_set.K, []
    for l, W in enumerate(models.weight_matrices(model), start=1):
        sv = spectral.singular_values(W.detach())
        st = inputs if l == 1 and inputs is not None else collapse.collapse_stats(hs[l - 1], train_set.y, K)
        rows.append({"layer": l, "shape": "×".join(map(str, W.shape)), "rank": spectral.numerical_rank(sv, rank_rtol),
                     "rel_tail": spectral.tail_distance(sv, K) / np.sqrt(np.sum(sv**2)),
                     "tcv2n": st.tcv2_normalised, "nc1": st.nc1, "test_acc": acc})
    return pd.DataFrame(rows)


def layer_measures(sets: DataSets, training: Training, rank_rtol: float) -> pd.DataFrame:
    """:func:`network_layers` of every network, with ``data, stage, lambda, seed`` and the
    network's residuals: ``rho`` (of the layer), ``max_rho``, ``reached``."""
    frames, inputs = [], {}
    for key, r in training.results.items():
        name, stage, lam, sd = key
        if name not in inputs:
            inputs[name] = input_stats(sets.present[name][0])
        f = network_layers(r.model, *sets.present[name], rank_rtol, inputs[name])
        f.insert(0, "data", title(name))
        f.insert(1, "stage", stage)
        f.insert(2, "lambda", lam)
        f.insert(3, "seed", sd)
        f["rho"] = [r.residuals[l - 1] for l in f["layer"]]
        f["max_rho"] = r.max_residual
        f["reached"] = training.reached(key)
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def hidden_layers(L: int) -> list[int]:
    """The layers that read hidden features: ``W_2, ..., W_{L-1}`` (not the pixels' ``W_1``, not
    ``W_L``, whose ``K`` rows make its distance to rank ``K`` zero)."""
    return list(range(2, L))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of ``x`` and ``y``; NaN with fewer than three pairs or a
    constant side."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.unique(x).size < 2 or np.unique(y).size < 2:
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def lambda_trend(frame: pd.DataFrame, col: str) -> dict[int, float]:
    """``{layer: Spearman correlation of col with lambda}`` over the rows of ``frame`` (per layer;
    layers where lambda or ``col`` is constant are left out)."""
    out = {}
    for l, fl in frame.groupby("layer"):
        if fl["lambda"].nunique() > 1 and fl[col].nunique() > 1:
            out[int(l)] = float(stats.spearmanr(fl["lambda"], fl[col]).statistic)
    return out


@dataclass
class LayerSummary:
    """The reference data set's layers, over the polished networks that reached the target.

    ``lam_lo, lam_hi``: the smallest and largest lambda with such a network (the grid's ends when
    there is none); ``numbers``: the quoted values (NaN where no network is left), keyed as the
    chapter glues them without ``ch6_``; ``hidden``: :func:`hidden_layers`; ``falling`` /
    ``rising``: hidden layers whose relative distance to rank ``K`` has a negative / positive
    Spearman correlation with lambda; ``tcv_up`` / ``nc1_up``: whether the last layer's input
    ``TCV_2`` / NC1 is larger at ``lam_hi`` than at ``lam_lo`` (None without networks);
    ``n_networks``: how many networks of the reference set reached the target."""

    lam_lo: float
    lam_hi: float
    numbers: dict[str, float]
    hidden: list[int]
    falling: list[int]
    rising: list[int]
    tcv_up: bool | None
    nc1_up: bool | None
    n_networks: int = 0


def layer_summary(meas: pd.DataFrame, ref_title: str, L: int, lambdas: Sequence[float]) -> LayerSummary:
    """:class:`LayerSummary` of data set ``ref_title`` from :func:`layer_measures`."""
    dig = meas[(meas["stage"] == "polished") & meas["reached"] & (meas["data"] == ref_title)]
    hidden = hidden_layers(L)
    tail_trend = lambda_trend(dig[dig["layer"].isin(hidden)], "rel_tail")
    lam_lo, lam_hi = (min(dig["lambda"]), max(dig["lambda"])) if len(dig) else (min(lambdas), max(lambdas))
    lo, hi = dig[dig["lambda"] == lam_lo], dig[dig["lambda"] == lam_hi]
    names = ("rank_hidden_lo", "rank_hidden_lo_max", "rank_hidden_hi", "rank_hidden_hi_min", "rank_W1_lo",
             "rank_W1_hi", "tail_hidden_lo", "tail_hidden_hi", "acc_lo", "acc_hi", "tcv_last_lo", "tcv_last_hi",
             "nc1_last_lo", "nc1_last_hi")
    numbers = {f"dig_{k}": math.nan for k in names}
    numbers["tcv_pixels"] = math.nan
    tcv_up = nc1_up = None
    if len(lo) and len(hi):
        h_lo, h_hi = lo[lo["layer"].isin(hidden)], hi[hi["layer"].isin(hidden)]
        last_lo, last_hi = lo[lo["layer"] == L], hi[hi["layer"] == L]
        values = {"rank_hidden_lo": h_lo["rank"].min(), "rank_hidden_lo_max": h_lo["rank"].max(),
                  "rank_hidden_hi": h_hi["rank"].max(), "rank_hidden_hi_min": h_hi["rank"].min(),
                  "rank_W1_lo": lo[lo["layer"] == 1]["rank"].min(), "rank_W1_hi": hi[hi["layer"] == 1]["rank"].max(),
                  "tail_hidden_lo": h_lo["rel_tail"].median(), "tail_hidden_hi": h_hi["rel_tail"].median(),
                  "acc_lo": lo["test_acc"].median(), "acc_hi": hi["test_acc"].median(),
                  "tcv_last_lo": last_lo["tcv2n"].median(), "tcv_last_hi": last_hi["tcv2n"].median(),
                  "nc1_last_lo": last_lo["nc1"].median(), "nc1_last_hi": last_hi["nc1"].median()}
        for k, v in values.items():
            numbers[f"dig_{k}"] = int(v) if k.startswith("rank") and not pd.isna(v) else float(v)
        numbers["tcv_pixels"] = float(dig[dig["layer"] == 1]["tcv2n"].median())
        tcv_up = bool(values["tcv_last_hi"] > values["tcv_last_lo"])
        nc1_up = bool(values["nc1_last_hi"] > values["nc1_last_lo"])
    return LayerSummary(float(lam_lo), float(lam_hi), numbers, hidden,
                        [l for l in hidden if tail_trend.get(l, 0) < 0], [l for l in hidden if tail_trend.get(l, 0) > 0],
                        tcv_up, nc1_up, int(dig.groupby(["lambda", "seed"]).ngroups))


@dataclass
class RankTCV:
    """Rank against within-class variability. ``points``: the polished layers with more than
    ``K`` rows (``rel_tail > 0``), every network; ``spearman_tail`` / ``spearman_rank``: Spearman
    correlation of ``tcv2n`` with ``rel_tail`` / ``rank`` over the ``n_points`` of them whose
    network reached the target (all data sets, layers and lambdas); ``within``:
    ``{layer: the same correlation within one hidden layer of the reference set}``."""

    points: pd.DataFrame
    spearman_tail: float
    spearman_rank: float
    n_points: int
    within: dict[int, float]


def rank_tcv_correlation(meas: pd.DataFrame, ref_title: str, hidden: Sequence[int]) -> RankTCV:
    """:class:`RankTCV` from :func:`layer_measures`."""
    pts_all = meas[(meas["stage"] == "polished") & (meas["rel_tail"] > 0)]
    pts = pts_all[pts_all["reached"]]
    within = {}
    for l in hidden:
        fl = pts[(pts["data"] == ref_title) & (pts["layer"] == l)]
        rho = spearman(fl["tcv2n"], fl["rel_tail"])
        if not math.isnan(rho):
            within[l] = rho
    return RankTCV(pts_all.reset_index(drop=True), spearman(pts["tcv2n"], pts["rel_tail"]),
                   spearman(pts["tcv2n"], pts["rank"]), len(pts), within)


# --------------------------------------------------------------------------------------
# Truncation
# --------------------------------------------------------------------------------------

def truncation_table(sets: DataSets, training: Training, r_grid: Sequence[int], tolerance: float) -> pd.DataFrame:
    """One row per network and ``r`` of ``r_grid``: the test accuracy ``acc`` with every layer cut
    to its best rank-``r`` approximation (chapter 6, truncated SVD; ``truncation_curve``), the
    network's ``full`` accuracy, its ``rmin`` (:func:`nrc_utils.truncation.smallest_sufficient_rank`) and ``reached``."""
    frames = []
    for key, r in training.results.items():
        name, stage, lam, sd = key
        te = sets.present[name][1]
        curve = truncation.truncation_curve(r.model, te.X, te.y, r_grid)
        full = truncation.accuracy(r.model, te.X, te.y)
        frames.append(pd.DataFrame({"data": title(name), "stage": stage, "lambda": lam, "seed": sd, "r": list(r_grid),
                                    "acc": curve, "full": full,
                                    "rmin": truncation.smallest_sufficient_rank(r_grid, curve, full, tolerance),
                                    "reached": training.reached(key)}))
    return pd.concat(frames, ignore_index=True)


def truncation_summary(trunc: pd.DataFrame, ref_title: str, K: int, lam_lo: float, lam_hi: float) -> dict[str, float]:
    """Medians over seeds on ``ref_title``, keyed as glued without ``ch6_``: for the SGD networks at
    ``lam_lo`` (``trunc_sgd_rmin_lo``, ``trunc_sgd_accK_lo`` (cut to rank ``K``),
    ``trunc_sgd_full_lo``); for the polished ones that reached the target at ``lam_lo`` and
    ``lam_hi`` (``trunc_rmin_*``, ``trunc_accK_*``, ``trunc_full_*``); ``rmin_trend``, the
    Spearman correlation of their ``rmin`` with lambda (0 when ``rmin`` is constant, NaN
    without networks). NaN where a lambda has no network."""
    ref = trunc[trunc["data"] == ref_title]
    out = {}

    def medians(frame, suffix, lams):
        per_net = frame.groupby(["lambda", "seed"]).agg(rmin=("rmin", "first"), full=("full", "first"))
        acc_K = frame[frame["r"] == K].groupby("lambda")["acc"].median()
        rmin, full = per_net.groupby("lambda")["rmin"].median(), per_net.groupby("lambda")["full"].median()
        for tag, lam in lams:
            out[f"trunc{suffix}_rmin_{tag}"] = float(rmin.get(lam, math.nan))
            out[f"trunc{suffix}_accK_{tag}"] = float(acc_K.get(lam, math.nan))
            out[f"trunc{suffix}_full_{tag}"] = float(full.get(lam, math.nan))
        return per_net

    medians(ref[ref["stage"] == "sgd"], "_sgd", [("lo", lam_lo)])
    per_net = medians(ref[(ref["stage"] == "polished") & ref["reached"]], "", [("lo", lam_lo), ("hi", lam_hi)])
    if len(per_net) == 0:
        out["rmin_trend"] = math.nan
    elif per_net["rmin"].nunique() > 1:
        out["rmin_trend"] = float(stats.spearmanr(per_net.index.get_level_values("lambda"), per_net["rmin"]).statistic)
    else:
        out["rmin_trend"] = 0.0
    return out


# --------------------------------------------------------------------------------------
# What polishing changes
# --------------------------------------------------------------------------------------

@dataclass
class PolishComparison:
    """``both``: one row per layer with more than ``K`` rows (``rel_tail > 0`` in both stages),
    its ``rel_tail, rank, rho, test_acc`` after SGD (``_sgd``) and after polishing (``_pol``, with
    ``reached_pol``); ``numbers``: the quoted values, keyed as glued without ``ch6_``."""

    both: pd.DataFrame
    numbers: dict[str, float]


def polish_comparison(meas: pd.DataFrame, ref_title: str, hidden: Sequence[int]) -> PolishComparison:
    """:class:`PolishComparison` from :func:`layer_measures`: ``polish_tail_ratio_med`` (median of
    ``rel_tail_pol / rel_tail_sgd``), ``polish_frac_lower`` (fraction of layers where it fell),
    ``sgd_rho_med`` (median per-layer SGD residual), ``sgd_rank_hidden_med`` /
    ``pol_rank_hidden_med`` (median rank of the reference set's hidden layers after SGD / after
    polishing, networks that reached the target), ``polish_acc_change_min`` / ``_max`` (test
    accuracy polished minus SGD, over all networks)."""
    index = ["data", "lambda", "seed", "layer"]
    sgd_m = meas[meas["stage"] == "sgd"].set_index(index)
    pol_m = meas[meas["stage"] == "polished"].set_index(index)
    both = sgd_m[["rel_tail", "rank", "rho", "test_acc"]].add_suffix("_sgd").join(
        pol_m[["rel_tail", "rank", "rho", "test_acc", "reached"]].add_suffix("_pol")).reset_index()
    both = both[(both["rel_tail_sgd"] > 0) & (both["rel_tail_pol"] > 0)].reset_index(drop=True)
    ratio = both["rel_tail_pol"] / both["rel_tail_sgd"]
    ref = both[(both["data"] == ref_title) & both["layer"].isin(list(hidden))]
    per_net = ["data", "lambda", "seed"]
    acc_change = (pol_m.groupby(per_net)["test_acc"].first() - sgd_m.groupby(per_net)["test_acc"].first())
    numbers = {"polish_tail_ratio_med": float(ratio.median()), "polish_frac_lower": float((ratio < 1).mean()),
               "sgd_rho_med": float(both["rho_sgd"].median()),
               "sgd_rank_hidden_med": float(ref["rank_sgd"].median()),
               "pol_rank_hidden_med": float(ref[ref["reached_pol"].astype(bool)]["rank_pol"].median()),
               "polish_acc_change_min": float(acc_change.min()), "polish_acc_change_max": float(acc_change.max())}
    return PolishComparison(both, numbers)


# --------------------------------------------------------------------------------------
# One data set against another
# --------------------------------------------------------------------------------------

def set_findings(meas: pd.DataFrame, trunc: pd.DataFrame, data_title: str, K: int, n_train: int, L: int,
                 lambdas: Sequence[float]) -> dict[str, Any]:
    """What the polished networks of one data set show, as plain numbers for
    :func:`nrc_utils.prose.real_data.contrast` (the networks that reached the target only; NaN
    and None where none did). Keys: ``data, K, n_networks`` (polished networks of the set),
    ``n_reached``, ``lam_lo, lam_hi``; ``trend`` (``"falls"`` when the distance to rank ``K`` of
    every hidden layer has a negative Spearman correlation with lambda, ``"rises"`` when one has a
    positive one, else ``"flat"``; None without networks); ``rank_hidden_hi`` (largest numerical
    rank of a hidden layer at ``lam_hi``) with ``rank_hidden_hi_min`` and, at ``lam_lo``,
    ``rank_hidden_lo, rank_hidden_lo_max`` (smallest, largest);
    ``tail_hidden_lo, tail_hidden_hi`` (median distance to rank ``K`` of the hidden layers);
    ``spearman_tail`` (normalised TCV_2 of the inputs against the distance to rank ``K``, this set's
    layers with more than ``K`` rows, all lambdas); ``rmin_lo, rmin_hi, rmin_trend``,
    ``accK_hi, full_hi`` (:func:`truncation_summary`); ``acc_lo, acc_hi`` (median test accuracy);
    ``tcv_pixels``, ``tcv_last_hi`` (normalised TCV_2 of the pixels, of the last layer's inputs at
    ``lam_hi``); ``tcv_up, nc1_up`` (:class:`LayerSummary`); ``n_train`` (training images)."""
    s = layer_summary(meas, data_title, L, lambdas)
    pol = meas[(meas["stage"] == "polished") & (meas["data"] == data_title)]
    pts = pol[pol["reached"] & (pol["rel_tail"] > 0)]
    cut = truncation_summary(trunc, data_title, K, s.lam_lo, s.lam_hi)
    n = s.numbers
    if s.n_networks == 0:
        trend = None
    elif s.hidden and len(s.falling) == len(s.hidden):
        trend = "falls"
    else:
        trend = "rises" if s.rising else "flat"
    return {"data": data_title, "K": int(K), "n_networks": int(pol.groupby(["lambda", "seed"]).ngroups),
            "n_reached": s.n_networks, "lam_lo": s.lam_lo, "lam_hi": s.lam_hi, "trend": trend,
            "rank_hidden_lo": n["dig_rank_hidden_lo"], "rank_hidden_lo_max": n["dig_rank_hidden_lo_max"],
            "rank_hidden_hi": n["dig_rank_hidden_hi"],
            "rank_hidden_hi_min": n["dig_rank_hidden_hi_min"], "tail_hidden_lo": n["dig_tail_hidden_lo"],
            "tail_hidden_hi": n["dig_tail_hidden_hi"], "spearman_tail": spearman(pts["tcv2n"], pts["rel_tail"]),
            "rmin_lo": cut["trunc_rmin_lo"], "rmin_hi": cut["trunc_rmin_hi"], "rmin_trend": cut["rmin_trend"],
            "accK_hi": cut["trunc_accK_hi"], "full_hi": cut["trunc_full_hi"], "acc_lo": n["dig_acc_lo"],
            "acc_hi": n["dig_acc_hi"], "tcv_pixels": n["tcv_pixels"], "tcv_last_hi": n["dig_tcv_last_hi"],
            "tcv_up": s.tcv_up, "nc1_up": s.nc1_up, "n_train": int(n_train)}


def findings_table(findings: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per data set of :func:`set_findings`, the columns the chapter shows (medians over
    the networks that reached the target; empty where none did)."""
    def span(lo, hi):
        if pd.isna(lo) or pd.isna(hi):
            return None
        return f"{int(lo)}" if lo == hi else f"{int(lo)}–{int(hi)}"

    rows = []
    for f in findings:
        rows.append({"data set": f["data"], "reached target": f"{f['n_reached']} of {f['n_networks']}",
                     "hidden layers' rank, smallest λ": span(f["rank_hidden_lo"], f["rank_hidden_lo_max"]),
                     "hidden layers' rank, largest λ": span(f["rank_hidden_hi_min"], f["rank_hidden_hi"]),
                     "distance to rank K, smallest → largest λ":
                         None if pd.isna(f["tail_hidden_lo"]) else f"{f['tail_hidden_lo']:.1e} → {f['tail_hidden_hi']:.1e}",
                     "Spearman(TCV₂, distance)": None if pd.isna(f["spearman_tail"]) else round(f["spearman_tail"], 2),
                     "r needed, smallest → largest λ":
                         None if pd.isna(f["rmin_lo"]) or pd.isna(f["rmin_hi"]) else f"{f['rmin_lo']:.0f} → {f['rmin_hi']:.0f}",
                     "test accuracy, largest λ (cut to K)":
                         None if pd.isna(f["full_hi"]) else f"{f['full_hi']:.1%} ({f['accK_hi']:.1%})",
                     "TCV₂ of the pixels": None if pd.isna(f["tcv_pixels"]) else round(f["tcv_pixels"], 2)})
    return pd.DataFrame(rows)


__all__ = ["DataSets", "FALLBACK", "INSTALL_HINTS", "LayerSummary", "PARAMETERS", "PolishComparison",
           "REAL_DATA_SETS", "RankTCV", "STEM", "TITLES", "Training", "check_relations", "class_sizes",
           "findings_table", "hidden_layers", "input_stats", "lambda_trend", "layer_measures", "layer_summary",
           "load_data_sets", "network_layers", "polish_comparison", "prepare", "set_findings",
           "rank_tcv_correlation", "sgd_config", "spearman", "title", "train_networks",
           "training_device", "truncation_summary", "truncation_table"]
