"""Chapter 7 (``07_beyond_the_mlp``): the eigenvalue equation and its rank bounds for convolutional,
residual and attention layers, measured at stationary points.

The science is :mod:`nrc_utils.architectures` (the models, the rows a weight matrix reads, the
cluster bounds on rows, the attention balancedness identity) and :mod:`nrc_utils.module_stationarity`
(L-BFGS then Newton to a residual of ``1e-12`` for any ``nn.Module``, with the smallest Hessian
eigenvalue). One driver per experiment, each returning tidy ``pandas`` tables in a dataclass:

- :func:`cnn_experiment`: a small CNN over a lambda grid; per network the residual and eigenvalue,
  per weight matrix (reshaped kernels and dense layers) its rank and distance to rank ``K``, per
  partition of its input rows (classes, k-means of the patches) the bounds (a) and (c);
- :func:`residual_experiment`: a residual MLP over lambda; the same per matrix, and the
  within-class variability along the residual stream and at the branch inputs;
- :func:`attention_experiment`: a one-layer attention classifier on the synthetic sequence task;
  the rank of ``W_Q^T W_K`` (and of ``W_O W_V``), the singular values of ``grad_M L_0 / lambda``,
  the balancedness identity and the flat directions of the Hessian.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import architectures as arch
from .. import data, params, spectral
from .. import module_stationarity as ms
from ..device import pick_device
from ..device import setup as _setup_device

STEM = "07_beyond_the_mlp"
IMAGE_SETS = ("digits", "fashion_mnist")
TITLES = {"digits": "Digits", "fashion_mnist": "Fashion-MNIST"}
#: Relative size below which a Hessian eigenvalue counts as zero (a flat direction), in units of
#: the largest eigenvalue's magnitude.
ZERO_EIG_RTOL = 1e-8
#: A singular value of ``grad_M L_0 / lambda`` "equals 1" within this (the residual is ~1e-12).
UNIT_ATOL = 1e-6


def _check_relations(v: Mapping[str, Any]) -> None:
    if v["att_d"] - 1 < v["att_K"] + 1:
        PARAMETERS.refuse("att_d", v["att_d"], f"at least att_K + 2 = {v['att_K'] + 2} (the task needs "
                          "orthonormal class and marker directions beside the constant coordinate)")
    side = 8 if v["cnn_dataset"] == "digits" else 28
    s1 = (side - v["cnn_kernel"] + 1) // v["cnn_pool"]
    if s1 - v["cnn_kernel"] + 1 < 2:
        PARAMETERS.refuse("cnn_kernel", v["cnn_kernel"], f"a kernel that leaves a 2x2 output of the second "
                          f"convolution on {side}x{side} images with pooling {v['cnn_pool']}")


PARAMETERS = params.Rules(STEM, {
    "seed": params.integer(ge=0),
    "n_seeds": params.integer(ge=1),
    "activation": params.one_of("tanh", "gelu", "softplus"),
    "loss": params.one_of("ce", "mse"),
    "cnn_dataset": params.one_of(*IMAGE_SETS),
    "cnn_classes": params.integer(ge=2, le=10),
    "cnn_per_class": params.integer(ge=2),
    "cnn_channels": params.grid(params.integer(ge=1), min_len=2, max_len=2),
    "cnn_kernel": params.integer(ge=1, le=7),
    "cnn_pool": params.integer(ge=1, le=4),
    "cnn_hidden": params.integer(ge=1),
    "cnn_bias": params.boolean(),
    "cnn_lambdas": params.grid(params.number(gt=0), distinct=True),
    "kmeans_sizes": params.grid(params.integer(ge=1), distinct=True),
    "res_per_class": params.integer(ge=2),
    "res_width": params.integer(ge=1),
    "res_branch_width": params.integer(ge=1),
    "res_blocks": params.integer(ge=1, le=8),
    "res_classes": params.integer(ge=2, le=10),
    "res_lambdas": params.grid(params.number(gt=0), distinct=True),
    "att_K": params.integer(ge=2),
    "att_T": params.integer(ge=2),
    "att_d": params.integer(ge=4),
    "att_d_k": params.integer(ge=1),
    "att_d_v": params.integer(ge=1),
    "att_per_class": params.integer(ge=2),
    "att_signal": params.number(gt=0),
    "att_noise": params.number(ge=0),
    "att_lambdas": params.grid(params.number(gt=0), distinct=True),
    "lbfgs_tol": params.number(gt=0),
    "tol": params.number(gt=0),
    "claim_tol": params.number(gt=0),
    "lbfgs_max_iter": params.integer(ge=1),
    "newton_max_iter": params.integer(ge=0),
    "max_seconds": params.number(gt=0),
    "rank_rtol": params.number(gt=0, lt=1),
    "train_device": params.one_of("auto", "cpu", "cuda"),
}, relations=_check_relations)


def training_device(train_device: str, seed: int) -> torch.device:
    """Seed everything, run on one CPU thread (:func:`nrc_utils.device.setup` with
    ``max_threads=1``) and pick the device (``"auto"``: CUDA when present). The networks here have at
    most a few thousand parameters: on a 2-core machine shared with other work, two threads made the
    chapter about eight times slower than one (measured: 435 s against 55 s for the ci profile's
    training), because every small Hessian product waits for the busier core."""
    _setup_device(seed, max_threads=1)
    return pick_device(train_device)


def solver(p: Mapping[str, Any]) -> ms.SolverConfig:
    """The :class:`nrc_utils.module_stationarity.SolverConfig` of the chapter's parameters."""
    return ms.SolverConfig(lbfgs_tol=p["lbfgs_tol"], tol=p["tol"], lbfgs_max_iter=p["lbfgs_max_iter"],
                           max_seconds=p["max_seconds"], newton_max_iter=p["newton_max_iter"])


# ============================================================================ data
@dataclass
class ImageData:
    """``X`` ``(N, 1, S, S)`` float64 (standardised by one mean and one standard deviation over all
    pixels, so that a patch keeps its shape), ``y`` ``(N,)``, ``K`` classes, ``name`` of the set used,
    ``asked`` the set asked for and ``absent`` the loader's reason when it could not be read."""

    X: torch.Tensor
    y: torch.Tensor
    K: int
    name: str
    asked: str
    absent: str = ""

    @property
    def title(self) -> str:
        return TITLES.get(self.name, self.name)


def image_data(name: str, classes: int, per_class: int, seed: int) -> ImageData:
    """``per_class`` random training images of each of the first ``classes`` classes of ``name``
    (``"digits"``, 8x8; ``"fashion_mnist"``, 28x28, falling back to digits with the reason when its
    files cannot be read)."""
    absent = ""
    try:
        ds = data.digits(standardize=False) if name == "digits" else data.load(name, train=True)
        used = name
    except data.DataError as err:
        absent = " ".join(str(err).split()).rstrip(".")
        ds, used = data.digits(standardize=False), "digits"
    side = 8 if used == "digits" else 28
    X = ds.X.reshape(len(ds), 1, side, side).double()
    rng = np.random.default_rng(seed)
    y = ds.y.numpy()
    idx = []
    for c in range(classes):
        members = np.flatnonzero(y == c)
        if len(members) < per_class:
            raise ValueError(f"class {c} of {used} has {len(members)} images, fewer than {per_class}")
        idx.append(np.sort(rng.choice(members, per_class, replace=False)))
    idx = torch.as_tensor(np.concatenate(idx))
    Xs = X[idx]
    Xs = (Xs - Xs.mean()) / Xs.std()
    return ImageData(Xs, ds.y[idx], classes, used, name, absent)


def digits_flat(classes: int, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` random digits of each of the classes ``0..classes-1``, pixels standardised
    over all 1797 digits (``nrc_utils.data.digits``), float64 ``(N, 64)``."""
    ds = data.digits()
    rng = np.random.default_rng(seed)
    y = ds.y.numpy()
    idx = np.concatenate([np.sort(rng.choice(np.flatnonzero(y == c), per_class, replace=False))
                          for c in range(classes)])
    idx = torch.as_tensor(idx)
    return ds.X[idx].double(), ds.y[idx]


# ============================================================================ shared measurements
def _net_row(r: ms.FitResult, claim_tol: float, **keys) -> dict:
    """One row of a network's table; ``reached``: its residual is at most ``claim_tol`` (it enters
    the chapter's statements; ``stop`` says whether Newton reached the target ``tol``)."""
    row = dict(keys)
    row.update(ms.summary_row(r))
    row["reached"] = bool(r.residual <= claim_tol)
    low = r.extra.get("eigs_low")
    row["eig_max"] = r.extra.get("eig_max", math.nan)
    row["n_zero_eigs"] = int(np.sum(np.abs(low) <= ZERO_EIG_RTOL * row["eig_max"])) if low is not None else -1
    row["n_negative_eigs"] = int(np.sum(low < -ZERO_EIG_RTOL * row["eig_max"])) if low is not None else -1
    return row


def _fit(build, X, y, lam, p, device) -> ms.FitResult:
    r = ms.fit(build, X, y, lam, p["loss"], solver(p), device=device)
    return r


def _matrix_rows(rows: Sequence[arch.LayerRows], y: torch.Tensor, K: int, lam: float, rank_rtol: float,
                 kmeans_sizes: Sequence[int], seed: int, keys: Mapping) -> tuple[list[dict], list[dict]]:
    """Per weight matrix: one row (rank, distance to rank ``K``, rank of the row matrix ``U`` and of
    the signals ``D``, the gradient check); per (matrix, partition): one row of
    :func:`nrc_utils.architectures.cluster_bound`."""
    mats, bounds = [], []
    for lr in rows:
        sv = spectral.singular_values(lr.W)
        norm = float(np.sqrt(np.sum(sv**2)))
        min_dim = min(lr.W.shape)
        ranks_U = spectral.numerical_rank(spectral.singular_values(lr.U), 1e-10)
        ranks_D = spectral.numerical_rank(spectral.singular_values(lr.D), 1e-10)
        mats.append({**keys, "matrix": lr.name, "kind": lr.kind, "shape": "×".join(map(str, lr.W.shape)),
                     "min_dim": min_dim, "rows": lr.U.shape[0], "positions": lr.positions,
                     "rank": spectral.numerical_rank(sv, rank_rtol), "rank_U": ranks_U, "rank_D": ranks_D,
                     "rank_grad": spectral.numerical_rank(spectral.singular_values(lr.grad), 1e-10),
                     "rel_tail_K": spectral.tail_distance(sv, K) / norm if norm > 0 else math.nan,
                     "norm": norm, "grad_error": float(torch.linalg.norm(lr.gradient() - lr.grad)
                                                       / torch.linalg.norm(lr.grad).clamp_min(1e-300))})
        sizes = [r for r in kmeans_sizes if r < min_dim]
        for part, labels in arch.row_partitions(lr, y, K, sizes, seed=seed).items():
            b = arch.cluster_bound(lr, labels, lam)
            bounds.append({**keys, "matrix": lr.name, "kind": lr.kind, "min_dim": min_dim,
                           "partition": "class" if part == "class" else "k-means", **b,
                           "rel_tail": b["tail"] / norm, "rel_bound_a": b["bound_a"] / norm,
                           "rel_bound_c": b["bound_c"] / norm, "holds": b["tail"] <= b["bound_a"] * (1 + 1e-9)
                           and b["bound_a"] <= b["bound_c"] * (1 + 1e-9), "trivial": b["K"] >= min_dim})
    return mats, bounds


# ============================================================================ CNN
@dataclass
class CNNResult:
    """``nets`` (one row per network: ``lam, seed``, stop, residual, eigenvalues, accuracy),
    ``matrices`` (one row per network and weight matrix), ``bounds`` (one row per network, matrix
    and partition), ``spectra`` (one row per network, matrix and singular value ``j``: ``sigma``,
    ``rel`` = ``sigma_j / sigma_1``), ``data`` (:class:`ImageData`)."""

    nets: pd.DataFrame
    matrices: pd.DataFrame
    bounds: pd.DataFrame
    spectra: pd.DataFrame
    data: ImageData


def _spectra(rows: Sequence[arch.LayerRows], keys: Mapping) -> list[dict]:
    out = []
    for lr in rows:
        sv = spectral.singular_values(lr.W)
        for j, s in enumerate(sv, start=1):
            out.append({**keys, "matrix": lr.name, "j": j, "sigma": float(s), "rel": float(s / sv[0]) if sv[0] > 0
                        else math.nan})
    return out


def cnn_experiment(p: Mapping[str, Any], seeds: Sequence[int], device: Any = "cpu") -> CNNResult:
    """Train and polish :class:`nrc_utils.architectures.ConvNet` for every ``lambda`` of
    ``p["cnn_lambdas"]`` and seed (cached), then measure every weight matrix against the bounds."""
    img = image_data(p["cnn_dataset"], p["cnn_classes"], p["cnn_per_class"], p["seed"])
    side = img.X.shape[-1]
    pool = p["cnn_pool"]
    nets, mats, bounds, spectra = [], [], [], []
    for lam in p["cnn_lambdas"]:
        for sd in seeds:
            def build(sd=sd):
                return arch.ConvNet(1, side, img.K, p["cnn_channels"], p["cnn_kernel"], pool, 2, p["cnn_hidden"],
                                    p["activation"], p["cnn_bias"], seed=sd)
            r = _fit(build, img.X, img.y, lam, p, device)
            keys = {"lam": lam, "seed": sd}
            nets.append(_net_row(r, p["claim_tol"], **keys))
            rows = arch.layer_rows(r.model.cpu(), img.X, img.y, p["loss"])
            m, b = _matrix_rows(rows, img.y, img.K, lam, p["rank_rtol"], p["kmeans_sizes"], sd, keys)
            for row in m + b:
                row["reached"] = nets[-1]["reached"]
            mats += m
            bounds += b
            spectra += _spectra(rows, {**keys, "reached": nets[-1]["reached"]})
    return CNNResult(pd.DataFrame(nets), pd.DataFrame(mats), pd.DataFrame(bounds), pd.DataFrame(spectra), img)


# ============================================================================ residual MLP
@dataclass
class ResidualResult:
    """``nets`` (as in :class:`CNNResult`, plus ``stream_rank`` and ``predicted_zero_eigs``, see
    :func:`stream_basis`), ``matrices``, ``bounds`` and ``spectra`` as in :class:`CNNResult`; ``stream``: one row per network and block ``l``: ``tcv2n_stream`` (normalised
    ``TCV_2`` of ``h_l``, ``l = 0..B``), ``tcv2n_branch`` (of the branch input ``s(W_{l,1} h_{l-1})``,
    ``l = 1..B``), ``growth`` (``sqrt(TCV_2(h_l) / TCV_2(h_{l-1}))``) and ``growth_bound``
    (``1 + Lip(s) ||W_{l,2}||_2 ||W_{l,1}||_2``, the book's ``prop-ch7-residual``)."""

    nets: pd.DataFrame
    matrices: pd.DataFrame
    bounds: pd.DataFrame
    spectra: pd.DataFrame
    stream: pd.DataFrame


def _tcv(H: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Raw and normalised ``TCV_2`` of the rows of ``H`` grouped by ``y``."""
    H = H.double()
    E = H.clone()
    for c in torch.unique(y):
        E[y == c] -= H[y == c].mean(0)
    raw = float(E.pow(2).sum())
    total = float((H - H.mean(0)).pow(2).sum())
    return raw, raw / total if total > 0 else math.nan


def stream_basis(model: arch.ResidualMLP) -> torch.Tensor:
    """The vectors of the residual stream's space that the network uses, side by side (``m x ...``):
    the columns of ``W_in`` and of every ``W_{l,2}``, the rows of every ``W_{l,1}`` and of ``W_out``.
    Its rank ``r`` is the dimension of the stream the network lives in; the rotations ``h -> O h``
    of the stream (``W_in -> O W_in``, ``W_{l,2} -> O W_{l,2}``, ``W_{l,1} -> W_{l,1} O^T``,
    ``W_out -> W_out O^T``) keep the function and the penalty, and move the weights along
    :func:`rotation_dim` ``(m, r)`` directions: flat directions of the Hessian."""
    parts = [model.w_in.weight, *[w.weight for w in model.w2], *[w.weight.T for w in model.w1], model.w_out.weight.T]
    return torch.cat([p_.detach().double() for p_ in parts], 1)


def residual_experiment(p: Mapping[str, Any], seeds: Sequence[int], device: Any = "cpu") -> ResidualResult:
    """Train and polish :class:`nrc_utils.architectures.ResidualMLP` on digits for every ``lambda``
    of ``p["res_lambdas"]`` and seed (cached); measure every matrix and the stream."""
    X, y = digits_flat(p["res_classes"], p["res_per_class"], p["seed"])
    K = p["res_classes"]
    # Lipschitz constants of the activations: tanh and softplus 1, GELU below 1.13
    lip = {"tanh": 1.0, "softplus": 1.0, "gelu": 1.13}[p["activation"]]
    nets, mats, bounds, spectra, stream = [], [], [], [], []
    for lam in p["res_lambdas"]:
        for sd in seeds:
            def build(sd=sd):
                return arch.ResidualMLP(X.shape[1], p["res_width"], p["res_branch_width"], p["res_blocks"], K,
                                        p["activation"], seed=sd)
            r = _fit(build, X, y, lam, p, device)
            keys = {"lam": lam, "seed": sd}
            model = r.model.cpu()
            row = _net_row(r, p["claim_tol"], **keys)
            row["stream_rank"] = spectral.numerical_rank(spectral.singular_values(stream_basis(model)), p["rank_rtol"])
            row["predicted_zero_eigs"] = rotation_dim(p["res_width"], row["stream_rank"])
            nets.append(row)
            rows = arch.layer_rows(model, X, y, p["loss"])
            m, b = _matrix_rows(rows, y, K, lam, p["rank_rtol"], p["kmeans_sizes"], sd, keys)
            for row in m + b:
                row["reached"] = nets[-1]["reached"]
            mats += m
            bounds += b
            spectra += _spectra(rows, {**keys, "reached": nets[-1]["reached"]})
            with torch.no_grad():
                hs = model.stream(X)
                prev = None
                for l, h in enumerate(hs):
                    raw, norm = _tcv(h, y)
                    row = {**keys, "l": l, "tcv2_stream": raw, "tcv2n_stream": norm, "reached": nets[-1]["reached"]}
                    if l > 0:
                        W1, W2 = model.w1[l - 1].weight, model.w2[l - 1].weight
                        u = model.act(model.w1[l - 1](hs[l - 1]))
                        row["tcv2n_branch"] = _tcv(u, y)[1]
                        row["growth"] = math.sqrt(raw / prev) if prev > 0 else math.nan
                        row["growth_bound"] = 1 + lip * float(torch.linalg.matrix_norm(W2, 2)
                                                               * torch.linalg.matrix_norm(W1, 2))
                    stream.append(row)
                    prev = raw
    return ResidualResult(pd.DataFrame(nets), pd.DataFrame(mats), pd.DataFrame(bounds), pd.DataFrame(spectra),
                          pd.DataFrame(stream))


# ============================================================================ attention
@dataclass
class AttentionResult:
    """``nets`` (as :class:`CNNResult`, plus ``predicted_zero_eigs``, the dimension of the
    rotation symmetries of the two products), ``products`` (one row per network: ``rank_M``,
    ``n_unit`` (singular values of ``G/lambda`` within :data:`UNIT_ATOL` of 1), ``g_max``
    (``sigma_1(G)/lambda``), ``imbalance``, ``identity_error``, ``certificate``, ``grad_check``,
    ``nuclear_gap``, ``rank_VO`` (rank of ``W_O W_V``), ``imbalance_VO``), ``svs`` (one row per
    network and ``j``: ``sv_M``, ``sv_G`` = ``sigma_j(G)/lambda``), the task's ``P``
    (class directions) and ``N``."""

    nets: pd.DataFrame
    products: pd.DataFrame
    svs: pd.DataFrame
    N: int


def rotation_dim(n: int, r: int) -> int:
    """Dimension of the orbit of a balanced two-factor factorisation with inner dimension ``n`` and
    rank ``r`` under ``(A, B) -> (O A, O B)``, ``O`` orthogonal: ``n(n-1)/2 - (n-r)(n-r-1)/2``
    (rotations of the ``n - r`` directions both factors leave out move nothing)."""
    return n * (n - 1) // 2 - (n - r) * (n - r - 1) // 2


def attention_experiment(p: Mapping[str, Any], seeds: Sequence[int], device: Any = "cpu") -> AttentionResult:
    """Train and polish :class:`nrc_utils.architectures.AttentionClassifier` on
    :func:`nrc_utils.architectures.sequence_task` for every ``lambda`` of ``p["att_lambdas"]`` and
    seed (cached); measure the products ``W_Q^T W_K`` and ``W_O W_V`` and the identity."""
    X, y, _P = arch.sequence_task(p["att_per_class"], p["att_K"], p["att_T"], p["att_d"], p["att_signal"],
                                  p["att_noise"], seed=p["seed"])
    nets, prods, svs = [], [], []
    for lam in p["att_lambdas"]:
        for sd in seeds:
            def build(sd=sd):
                return arch.AttentionClassifier(p["att_d"], p["att_d_k"], p["att_d_v"], p["att_K"], seed=sd)
            r = _fit(build, X, y, lam, p, device)
            keys = {"lam": lam, "seed": sd}
            model = r.model.cpu()
            b = arch.attention_balance(model, X, y, lam, p["loss"])
            tol_M = p["rank_rtol"]
            rank_M = spectral.numerical_rank(b["sv_M"], tol_M)
            Wv, Wo = model.w_v.weight.detach(), model.w_o.weight.detach()
            VO = spectral.singular_values(Wo @ Wv)
            rank_VO = spectral.numerical_rank(VO, tol_M)
            row = _net_row(r, p["claim_tol"], **keys)
            row["predicted_zero_eigs"] = rotation_dim(p["att_d_k"], rank_M) + rotation_dim(p["att_d_v"], rank_VO)
            nets.append(row)
            scale = max(float(torch.linalg.norm(Wo.T @ Wo)), float(torch.linalg.norm(Wv @ Wv.T)))
            prods.append({**keys, "rank_M": rank_M, "n_unit": int(np.sum(np.abs(b["sv_G_over_lam"] - 1) <= UNIT_ATOL)),
                          "g_max": float(b["sv_G_over_lam"][0]), "imbalance": b["imbalance"],
                          "identity_error": b["identity_error"], "certificate": b["certificate"],
                          "grad_check": b["grad_check"], "nuclear_gap": b["nuclear_gap"], "rank_VO": rank_VO,
                          "imbalance_VO": float(torch.linalg.norm(Wo.T @ Wo - Wv @ Wv.T)) / scale,
                          "d_k": p["att_d_k"], "reached": row["reached"], "acc": r.acc})
            for j, (a, g) in enumerate(zip(b["sv_M"], b["sv_G_over_lam"]), start=1):
                svs.append({**keys, "j": j, "sv_M": float(a), "sv_G": float(g), "reached": row["reached"]})
    return AttentionResult(pd.DataFrame(nets), pd.DataFrame(prods), pd.DataFrame(svs), len(y))


# ============================================================================ summaries
def residual_range(nets: pd.DataFrame) -> dict[str, float]:
    """``res_max`` (largest residual), ``eig_min`` and ``eig_max_min`` (the range of the smallest
    Hessian eigenvalues), ``n``, ``n_reached``."""
    return {"res_max": float(nets["residual"].max()), "eig_min": float(nets["min_eig"].min()),
            "eig_max_min": float(nets["min_eig"].max()), "n": int(len(nets)), "n_reached": int(nets["reached"].sum())}


def lambda_trend(frame: pd.DataFrame, col: str, by: str = "matrix") -> dict[str, float]:
    """``{matrix: Spearman correlation of col with lambda}`` over the networks that reached the
    target (NaN where it is constant or fewer than 3 networks)."""
    from scipy import stats

    out = {}
    for name, g in frame[frame["reached"]].groupby(by, sort=False):
        if len(g) < 3 or g[col].nunique() < 2 or g["lam"].nunique() < 2:
            out[name] = math.nan
        else:
            out[name] = float(stats.spearmanr(g["lam"], g[col]).statistic)
    return out


__all__ = ["AttentionResult", "CNNResult", "ImageData", "PARAMETERS", "ResidualResult", "attention_experiment",
           "cnn_experiment", "digits_flat", "image_data", "lambda_trend", "residual_experiment", "residual_range",
           "rotation_dim", "solver", "stream_basis", "training_device"]
