"""The experiments of chapter 3, ``03_neural_rank_collapse`` (the paper's Theorem 3.1 and its
centroid loss; Zangrando et al., arXiv:2402.03991).

- :func:`lambda_sweep`: tanh MLPs on a noisy Gaussian mixture, one per ``(lambda, seed)``, trained
  as one ensemble (:func:`nrc_utils.ensemble.train_ensemble`, cached) and polished with L-BFGS
  towards a stationary point of ``L_lambda``.
- :func:`layer_measurements`: for every network and layer, the certificate of the book's
  ``thm-neural-rank-collapse`` (right-hand sides (a), (b), (c) with their residual term,
  :func:`nrc_utils.gradients.certificate`) with the classes and with a k-means partition of the
  layer's inputs, the parts of the class and variability parts outside the top-``K`` singular
  subspaces (:func:`nrc_utils.spectral.outside_top_k`), the spectra, numerical ranks and the
  collapse measures (TCV, NC1, CDNV: :func:`nrc_utils.collapse.collapse_stats`).
- :func:`initial_certificate`, :func:`corollary_table`, :func:`rank_against_tcv`,
  :func:`measure_trends`, :func:`rank_moves`: what the chapter reads off those tables.
- :func:`centroid_gap`: the full loss against the book's centroid loss (``def-centroid-loss``,
  every input replaced by its class centroid) over a grid of within-class noise levels ``s``
  (``prop-centroid-gap``, ``thm-centroid-loss``), trained with :func:`nrc_utils.train.train`
  (cached).

Every function returns tidy pandas DataFrames (one row per network, layer, singular value...)
or plain numbers; the sentences are built by :mod:`nrc_utils.prose.rank_collapse`, the figures
drawn by :mod:`nrc_utils.figures.rank_collapse`. ``p`` is always the chapter's parameter
mapping as checked by :data:`PARAMETERS` (``PARAMETERS.check(globals())``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import collapse, data, ensemble, gradients, models, params, spectral, train
from ..report import lbfgs_iterations, subscript

STEM = "03_neural_rank_collapse"
#: The three right-hand sides of ``thm-neural-rank-collapse``, as named by ``gradients.certificate``.
BOUNDS = ("bound_exact", "bound_tcv1", "bound_tcv2")
#: The collapse measures whose direction across the lambda grid the chapter reports.
MEASURES = {"tcv2": "raw TCV_2", "tcv2_normalised": "normalised TCV_2", "nc1": "NC1", "cdnv": "CDNV"}
#: Relative slack of "measured <= bound" comparisons (float64 round-off of the two sides).
SLACK = 1e-12


def _relations(v: Mapping[str, Any]) -> None:
    """``sigma_{K+1}`` of every hidden layer is measured: ``K`` must be below ``d`` and every width."""
    smallest = min(v["d"], *v["widths"])
    if v["K"] >= smallest:
        PARAMETERS.refuse("K", v["K"], f"an integer below d and every width (here below {smallest}): "
                                       "sigma_(K+1) of every hidden layer is measured")


PARAMETERS = params.Rules(STEM, {
    "seed": params.integer(ge=0),
    "n_seeds": params.integer(ge=1),
    "K": params.integer(ge=1),
    "d": params.integer(ge=1),
    "n_per_class": params.integer(ge=1),
    "mean_scale": params.number(gt=0),
    "widths": params.grid(params.integer(ge=1)),
    "activation": params.one_of(*models.ACTIVATIONS),
    "loss": params.one_of("mse", "ce"),
    "lr": params.number(gt=0),
    "gd_steps": params.integer(ge=0),
    "polish_max_seconds": params.number(gt=0),
    "newton_tol": params.number(gt=0),
    "train_device": params.one_of("cpu", "cuda", "auto"),
    "sweep_s": params.number(ge=0),
    "lambdas": params.grid(params.number(gt=0), distinct=True),
    "sweep_polish_tol": params.number(gt=0),
    "sweep_polish_max_iter": params.integer(ge=1),
    "rank_rtol": params.number(gt=0, lt=1),
    "kmeans_seed": params.integer(ge=0),
    "centroid_lambda": params.number(gt=0),
    "centroid_s": params.grid(params.number(gt=0), min_len=2, distinct=True),
    "centroid_polish_tol": params.number(gt=0),
    "centroid_polish_max_iter": params.integer(ge=1),
    "centroid_eps": params.number(gt=0),
}, relations=_relations)


def seeds(p: Mapping[str, Any]) -> list[int]:
    """The networks' seeds ``seed, seed + 1, ..., seed + n_seeds - 1``."""
    return [p["seed"] + j for j in range(p["n_seeds"])]


def depth(p: Mapping[str, Any]) -> int:
    """``L``: the number of weight matrices (hidden layers plus the output layer)."""
    return len(p["widths"]) + 1


def layer_name(l: int) -> str:
    """``"$W_3$"``: the label of layer ``l`` in tables and figures (math)."""
    return f"$W_{l}$"


def plain(name: str) -> str:
    """``"$W_3$"`` -> ``"W₃"``, for tables and glued text where no math is rendered."""
    return subscript(name.strip("$").replace("_", ""))


def setup_device(p: Mapping[str, Any]) -> torch.device:
    """Seed everything, one torch thread (these networks are a few tens wide: one thread is faster
    than two), and the training device: ``train_device``, or CUDA when present for ``"auto"``."""
    import nrc_utils.device

    device = nrc_utils.device.setup(p["seed"], max_threads=1)
    return device if p["train_device"] == "auto" else torch.device(p["train_device"])


def training_config(p: Mapping[str, Any], lam: float, tol: float, max_iter: int, seed: int = 0) -> train.TrainConfig:
    """Full-batch gradient descent (``gd_steps`` at ``lr``), then float64 L-BFGS towards every
    ``rho_l < tol``, at most ``max_iter`` iterations and ``polish_max_seconds``, then Newton's method to
    ``newton_tol`` (``train.polish_networks``)."""
    return train.TrainConfig(lam=lam, loss=p["loss"], lr=p["lr"], steps=p["gd_steps"],
                             record_every=max(1, p["gd_steps"] // 5), polish_tol=tol, polish_max_iter=max_iter,
                             polish_max_seconds=p["polish_max_seconds"], newton_tol=p["newton_tol"], seed=seed)


def reached(result: train.TrainResult) -> bool:
    """Whether the network's last polishing stage stopped at its residual target (``TrainResult.reached``)."""
    return result.reached


def stationarity_rows(experiment: str, results: Sequence[train.TrainResult], **extra: Any) -> pd.DataFrame:
    """One row per network: ``experiment``, ``extra`` columns (e.g. ``s``), seed, lambda, its largest
    relative residual ``max_l rho_l``, target (of the last polishing stage), what stopped it, L-BFGS
    iterations, the smallest Hessian eigenvalue of ``L_lambda`` (``λ_min(H)``), training accuracy and
    ``L_lambda``."""
    return pd.DataFrame([{
        "experiment": experiment, **{k: (v[i] if isinstance(v, (list, tuple)) else v) for k, v in extra.items()},
        "seed": r.config.seed, "lambda": r.config.lam, "max_l ρ_l": r.max_residual, "target": r.target,
        "stopped by": r.stop or "not polished", "L-BFGS iterations": lbfgs_iterations(r),
        "λ_min(H)": float("nan") if r.min_eigenvalue is None else r.min_eigenvalue,
        "train accuracy": r.final["acc"], "L_lambda": r.final["loss"]} for i, r in enumerate(results)])


@dataclass
class Sweep:
    """The lambda sweep: the mixture ``X`` (``N x d``), ``y`` (``N``), one result per ``(lambda, seed)``
    in :func:`nrc_utils.ensemble.grid` order, and whether each reached its target."""

    X: torch.Tensor
    y: torch.Tensor
    results: list[train.TrainResult]

    @property
    def networks(self) -> dict[tuple[float, int], train.TrainResult]:
        return {(r.config.lam, r.config.seed): r for r in self.results}

    @property
    def reached(self) -> dict[tuple[float, int], bool]:
        return {key: reached(r) for key, r in self.networks.items()}

    @property
    def residuals(self) -> np.ndarray:
        return np.array([r.max_residual for r in self.results])


def lambda_sweep(p: Mapping[str, Any], device: torch.device | str) -> Sweep:
    """Train the sweep: mixture ``x = m_c + sweep_s * xi`` (``data.gaussian_mixture``), one MLP
    ``d -> widths -> K`` without biases per ``(lambda, seed)``, the same starting weights for every
    lambda, all as one ensemble (cached), each polished to ``sweep_polish_tol``."""
    mix = data.gaussian_mixture(p["K"], p["d"], p["n_per_class"], p["sweep_s"], mean_scale=p["mean_scale"],
                                seed=p["seed"])
    lams, sds = ensemble.grid(p["lambdas"], seeds(p))
    cfg = training_config(p, p["lambdas"][0], p["sweep_polish_tol"], p["sweep_polish_max_iter"])
    results = ensemble.train_ensemble(p["d"], p["widths"], p["K"], lams, sds, mix.X, mix.y, cfg,
                                      activation=p["activation"], bias=False, device=str(device))
    return Sweep(mix.X, mix.y, results)


@dataclass
class LayerMeasurements:
    """Tables of the sweep's networks.

    ``cert``: one row per (partition, layer, lambda, seed): the certificate's ``tail``,
    ``bound_exact`` (a), ``bound_tcv1`` (b), ``bound_tcv2`` (c), ``residual_term``,
    ``relative_residual``, ``tcv1``, ``tcv2``; ``A_out``, ``B_out``: the parts of the class part
    ``A_l`` and the variability part ``B_l`` outside the top-K singular subspaces of ``W_l``,
    relative to their norms; ``AB_out_over_B_out``: that of ``A_l + B_l`` over that of ``B_l``;
    ``ari``: adjusted Rand index of the partition against the classes.
    ``spec``: one row per (layer, lambda, seed, j): ``sigma`` = sigma_j(W_l).
    ``coll``: one row per (partition, feature l-1, lambda, seed): TCVs, NC1, CDNV, ``ratio``
    (tr Sigma_W / tr Sigma_B) of ``H_{l-1}``, and ``rank`` (at ``rank_rtol``) and ``eff_rank`` of ``W_l``.
    """

    cert: pd.DataFrame
    spec: pd.DataFrame
    coll: pd.DataFrame


def layer_measurements(p: Mapping[str, Any], sweep: Sweep) -> LayerMeasurements:
    """Measure every layer of every network of ``sweep`` (float64; see :class:`LayerMeasurements`)."""
    from sklearn.metrics import adjusted_rand_score

    K, L, loss = p["K"], depth(p), p["loss"]
    X64, y = sweep.X.double(), sweep.y
    cert_rows, spec_rows, coll_rows = [], [], []
    for (lam, sd), r in sweep.networks.items():
        model = r.model
        with torch.no_grad():
            hs, _ = model.features(X64)
        Ws = [W.detach() for W in models.weight_matrices(model)]
        by_class = gradients.certificate(model, X64, y, lam, loss)
        signals = gradients.layer_signals(model, X64, y, loss)
        # layer l with the k-means partition of its own inputs h_{l-1}
        kms = [collapse.kmeans_partition(hs[l - 1], K, seed=p["kmeans_seed"]) for l in range(1, L + 1)]
        by_kmeans = gradients.certificate(model, X64, y, lam, loss, labels=kms, K=K)
        for l in range(1, L + 1):
            H, km, W = hs[l - 1], kms[l - 1], Ws[l - 1]
            split = gradients.cluster_split(signals[l - 1], y, K)
            A, B = split.class_part, split.variability_part
            out_A, out_B, out_AB = (spectral.outside_top_k(M, W, K) for M in (A, B, A + B))
            for partition, row in (("classes", by_class[l - 1]), ("k-means", by_kmeans[l - 1])):
                cert_rows.append({"partition": partition, "layer": l, "lambda": lam, "seed": sd, **{
                    k: row[k] for k in ("tail", *BOUNDS, "residual_term", "relative_residual", "tcv1", "tcv2")},
                    "A_out": out_A / A.norm().item(), "B_out": out_B / B.norm().item(),
                    "AB_out_over_B_out": out_AB / out_B,
                    "ari": adjusted_rand_score(y.numpy(), km) if partition == "k-means" else 1.0})
            sv = spectral.singular_values(W)
            spec_rows += [{"layer": layer_name(l), "lambda": lam, "seed": sd, "j": j, "sigma": s_j}
                          for j, s_j in enumerate(sv, start=1)]
            for partition, labels in (("classes", y), ("k-means", km)):
                st = collapse.collapse_stats(H, labels, K)
                coll_rows.append({"partition": partition, "feature": l - 1, "lambda": lam, "seed": sd,
                                  "tcv1": st.tcv1, "tcv2": st.tcv2, "tcv1_normalised": st.tcv1_normalised,
                                  "tcv2_normalised": st.tcv2_normalised, "nc1": st.nc1, "cdnv": st.cdnv,
                                  "ratio": st.within_between_ratio, "rank": spectral.numerical_rank(sv, p["rank_rtol"]),
                                  "eff_rank": spectral.effective_rank(sv)})
    return LayerMeasurements(pd.DataFrame(cert_rows), pd.DataFrame(spec_rows), pd.DataFrame(coll_rows))


def sweep_numbers(p: Mapping[str, Any], sweep: Sweep) -> dict[str, Any]:
    """The numbers of the sweep's description (keys are the chapter's glue keys without ``ch3_``)."""
    res = sweep.residuals
    cfg = training_config(p, p["lambdas"][0], p["sweep_polish_tol"], p["sweep_polish_max_iter"])
    return {"K": p["K"], "L": depth(p), "N": len(sweep.y), "n_per_class": p["n_per_class"], "sweep_s": p["sweep_s"],
            "mean_scale": p["mean_scale"], "mean_gap": math.sqrt(2) * p["mean_scale"], "gd_steps": p["gd_steps"],
            "lr": p["lr"], "polish_chunk": cfg.polish_chunk, "polish_max_seconds": p["polish_max_seconds"],
            "sweep_tol": p["sweep_polish_tol"], "sweep_max_iter": p["sweep_polish_max_iter"], "newton_tol": p["newton_tol"],
            "rank_rtol": p["rank_rtol"], "n_sweep_stationary": int(sum(sweep.reached.values())),
            "sweep_radius": p["sweep_s"] * math.sqrt(p["d"]), "n_sweep": len(sweep.results),
            "n_lambdas": len(p["lambdas"]), "n_seeds": p["n_seeds"], "lam_min": min(p["lambdas"]),
            "lam_max": max(p["lambdas"]), "sweep_res_max": float(res.max()), "sweep_res_min": float(res.min())}


def bound_holds(cert: pd.DataFrame) -> dict[str, int]:
    """``{bound: number of rows with tail <= bound}`` (up to :data:`SLACK`)."""
    return {b: int((cert["tail"] <= cert[b] * (1 + SLACK)).sum()) for b in BOUNDS}


def bound_ratios(cert: pd.DataFrame, L: int) -> pd.DataFrame:
    """Tightness: one row per (bound, partition) with ``min``, ``max``, ``median`` of bound / tail over
    the hidden layers where the tail is resolved (above ten times the residual term, the solver
    floor) and ``n`` such cases."""
    hidden = cert[(cert["layer"] < L) & (cert["tail"] > 10 * cert["residual_term"])]
    rows = []
    for b in BOUNDS:
        for part in ("classes", "k-means"):
            sub = hidden[hidden["partition"] == part]
            ratio = sub[b] / sub["tail"]
            rows.append({"bound": b, "partition": part, "n": len(sub), "min": float(ratio.min()),
                         "max": float(ratio.max()), "median": float(ratio.median())})
    return pd.DataFrame(rows)


def certificate_numbers(cert: pd.DataFrame, L: int) -> dict[str, float | int]:
    """What the chapter reads off ``cert`` (keys: glue keys without ``ch3_``): cases, failed
    comparisons, cases where (b) >= (c), the residual term's largest share of (a), the outside
    parts of ``A_l``, ``B_l``, their cancellation, the k-means agreement with the classes and the
    k-means/classes ratio of TCV_2."""
    hid_all = cert[cert["layer"] < L]
    hid_cls = cert[(cert["partition"] == "classes") & (cert["layer"] < L)]
    ari = cert[cert["partition"] == "k-means"].groupby("layer")["ari"].median()
    pivot = cert.pivot_table(index=["layer", "lambda", "seed"], columns="partition", values="tcv2")
    km_over_cls = pivot["k-means"] / pivot["classes"]
    hidden_resolved = hid_all[hid_all["tail"] > 10 * hid_all["residual_term"]]
    return {
        "n_cases": len(cert), "violations": 3 * len(cert) - sum(bound_holds(cert).values()),
        "n_b_weaker": int((cert["bound_tcv1"] >= cert["bound_tcv2"]).sum()),
        "ratio_n": int((hidden_resolved["partition"] == "classes").sum()),
        "ratio_n_all": int((hid_all["partition"] == "classes").sum()),
        "residual_share_max": float((cert["residual_term"] / cert["bound_exact"]).max()),
        "A_out_med": float(hid_cls["A_out"].median()), "B_out_med": float(hid_cls["B_out"].median()),
        "AB_cancel_med": float(hid_cls["AB_out_over_B_out"].median()),
        "AB_cancel_max": float(hid_cls["AB_out_over_B_out"].max()),
        "ari_H0": float(ari.loc[1]), "ari_deep_min": float(ari.loc[2:].min()), "ari_deep_max": float(ari.loc[2:].max()),
        "km_tcv2_ratio_min": float(km_over_cls.min()), "km_tcv2_ratio_max": float(km_over_cls.max()),
        "km_tcv2_lower_frac": float((km_over_cls <= 1 + 1e-9).mean()),
    }


def initial_certificate(p: Mapping[str, Any], sweep: Sweep) -> pd.DataFrame:
    """The certificate at the starting weights of the sweep's networks (far from any stationary
    point): one row per (lambda, seed, layer), columns of ``gradients.certificate``."""
    X64, rows = sweep.X.double(), []
    for lam in p["lambdas"]:
        for sd in seeds(p):
            net0 = models.MLP(p["d"], p["widths"], p["K"], p["activation"], bias=False, seed=sd).double()
            rows += [{**row, "seed": sd} for row in gradients.certificate(net0, X64, sweep.y, lam, p["loss"])]
    return pd.DataFrame(rows)


def initial_numbers(init: pd.DataFrame) -> dict[str, Any]:
    """Whether the certificate holds at the starting weights, their residuals and the residual term's
    smallest share of (a)."""
    ok = bool((init["tail"] <= init[list(BOUNDS)].min(axis=1) * (1 + SLACK)).all())
    return {"ok": ok, "n": len(init), "init_rho_min": float(init["relative_residual"].min()),
            "init_rho_max": float(init["relative_residual"].max()),
            "init_share_min": float((init["residual_term"] / init["bound_exact"]).min())}


def corollary_table(p: Mapping[str, Any], sweep: Sweep, cert: pd.DataFrame) -> pd.DataFrame:
    """``cor-numerical-rank`` at ``eps = rank_rtol * sigma_1(W_l)`` for the hidden layers of the
    first seed's networks: full rank, rank at rtol, the corollary's bound with (a) (capped at the
    full rank), ``sigma_{K+1}`` and (a)."""
    K, L, sd, rows = p["K"], depth(p), seeds(p)[0], []
    cls = cert[cert["partition"] == "classes"].set_index(["layer", "lambda", "seed"])
    for (lam, s), r in sweep.networks.items():
        if s != sd:
            continue
        for l, W in enumerate(models.weight_matrices(r.model)[:L - 1], start=1):
            sv = spectral.singular_values(W.detach())
            eps, a, full_rank = p["rank_rtol"] * sv[0], cls.loc[(l, lam, sd), "bound_exact"], min(W.shape)
            rows.append({"layer": plain(layer_name(l)), "λ": f"{lam:g}", "full rank": full_rank,
                         "rank at rtol": int((sv > eps).sum()),
                         "corollary with (a)": min(gradients.rank_bound(a, eps, K), full_rank),
                         "σ_{K+1}": sv[K], "(a)": a})
    return pd.DataFrame(rows)


def rank_against_tcv(p: Mapping[str, Any], sweep: Sweep, coll: pd.DataFrame) -> pd.DataFrame:
    """One row per hidden layer ``W_l`` and network: ``layer``, ``lambda``, ``seed``, ``rank`` of
    ``W_l``, ``TCV1 / (lambda N)`` of its inputs (classes), ``stationary`` (reached the target)."""
    L, N, ok = depth(p), len(sweep.y), sweep.reached
    rk = coll[(coll["partition"] == "classes") & (coll["feature"] < L - 1)].copy()
    rk["layer"] = rk["feature"].map(lambda f: layer_name(f + 1))
    rk["TCV1 / (lambda N)"] = rk["tcv1"] / (rk["lambda"] * N)
    rk["stationary"] = [ok[(lam, sd)] for lam, sd in zip(rk["lambda"], rk["seed"])]
    return rk.reset_index(drop=True)


def spearman(x: Sequence[float], y: Sequence[float], min_points: int = 3) -> float:
    """Spearman correlation of ``x`` and ``y``; NaN with fewer than ``min_points`` points or a constant ``y``."""
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(y) < min_points or len(np.unique(y)) < 2:
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


def measure_fold(coll: pd.DataFrame, measure: str, feature: int, seed: int) -> dict[str, float]:
    """A measure at one layer input ``H_feature`` (classes, one seed) across the lambda grid:
    ``first``, ``last`` (smallest / largest lambda), ``factor`` = last / first, ``spearman`` with lambda."""
    from scipy import stats

    cls = coll[coll["partition"] == "classes"]
    sub = cls[(cls["feature"] == feature) & (cls["seed"] == seed)].sort_values("lambda")
    v = sub[measure].to_numpy()
    return {"first": float(v[0]), "last": float(v[-1]), "factor": float(v[-1] / v[0]),
            "spearman": float(stats.spearmanr(sub["lambda"], v).statistic)}


def measure_trends(coll: pd.DataFrame, L: int, seed: int) -> pd.DataFrame:
    """One row per (hidden feature ``H_f``, f = 1..L-1, measure of :data:`MEASURES`): ``layer input``,
    ``measure``, and :func:`measure_fold`'s numbers."""
    return pd.DataFrame([{"feature": f, "layer input": plain(f"H_{f}"), "measure": m, "name": name,
                          **measure_fold(coll, m, f, seed)} for f in range(1, L) for m, name in MEASURES.items()])


def rank_moves(rk: pd.DataFrame, seed: int) -> list[dict[str, Any]]:
    """How the rank of each hidden layer moves with lambda (one seed, networks that reached the target
    only): ``layer`` (plain), ``ranks`` in lambda order, ``lambdas``, ``never rises``, ``spearman``
    with lambda (NaN with fewer than 3 points or constant ranks)."""
    out = []
    for lname, grp in rk[(rk["seed"] == seed) & rk["stationary"]].groupby("layer", sort=False):
        grp = grp.sort_values("lambda")
        r_l = grp["rank"].to_numpy()
        out.append({"layer": plain(lname), "ranks": [int(v) for v in r_l], "lambdas": list(grp["lambda"]),
                    "never rises": bool(np.all(np.diff(r_l) <= 0)), "spearman": spearman(grp["lambda"], r_l)})
    return out


@dataclass
class CentroidGap:
    """The centroid-loss experiment: ``results`` (full and centroid network per (seed, s), in that
    order), and the tables

    ``gap``: one row per (s, seed): ``loss gap`` ``|L_lambda(full) - L^c_lambda(centroid)|``,
    ``function distance`` ``||f*(X) - f^c*(X)||_F / ||f^c*(X)||_F``, ``weight distance`` (relative,
    all layers), ``tcv2_data`` (TCV_2 of the inputs), ``res_full``, ``res_cent``;
    ``ctail``: one row per (s, seed, hidden layer): the full network's ``tail``, ``bound (a)``,
    ``(b)``, ``(c)``, ``solver floor`` (its residual term), ``weight gap`` ``||W*_l - W^c*_l||_F``, and
    the centroid network's ``sigma_K+1``, ``tail``, ``residual term``, rank and corollary at
    ``centroid_eps``;
    ``cspec``: one row per (s, seed, hidden layer, j): the centroid network's ``sigma`` and its
    ``residual term``.
    """

    results: list[train.TrainResult]
    gap: pd.DataFrame
    ctail: pd.DataFrame
    cspec: pd.DataFrame
    stationarity: pd.DataFrame = field(default_factory=pd.DataFrame)

    def reached_by(self, experiment: str) -> dict[tuple[float, int], bool]:
        """``{(s, seed): reached its target}`` of the ``"full loss"`` or ``"centroid loss"`` networks."""
        st = self.stationarity[self.stationarity["experiment"] == experiment]
        return {(s, sd): why == "target" for s, sd, why in zip(st["s"], st["seed"], st["stopped by"])}


def centroid_gap(p: Mapping[str, Any], device: torch.device | str) -> CentroidGap:
    """For every seed and every ``s`` of ``centroid_s``: the mixture with the same means and noise
    draws scaled by ``s``, and two networks from the same weights, one trained on the data (full
    loss), one on the data with every ``x_i`` replaced by its class centroid (centroid loss), both at
    ``centroid_lambda`` polished to ``centroid_polish_tol`` (``train.train``, cached)."""
    K, L, lam, eps = p["K"], depth(p), p["centroid_lambda"], p["centroid_eps"]
    gap_rows, ctail_rows, cspec_rows, results, st = [], [], [], [], []
    for sd in seeds(p):
        for s in p["centroid_s"]:
            mix = data.gaussian_mixture(K, p["d"], p["n_per_class"], s, mean_scale=p["mean_scale"], seed=p["seed"])
            Xs, ys = mix.X, mix.y
            Xc = gradients.class_means(Xs.double(), ys, K)[ys].float()  # every x_i replaced by its centroid
            cfg = training_config(p, lam, p["centroid_polish_tol"], p["centroid_polish_max_iter"], seed=sd)
            full, cent = (train.train(models.MLP(p["d"], p["widths"], K, p["activation"], bias=False, seed=sd), Z, ys,
                                      cfg, device=str(device)) for Z in (Xs, Xc))
            results += [full, cent]
            st += [stationarity_rows("full loss", [full], s=s), stationarity_rows("centroid loss", [cent], s=s)]
            Xs64, Xc64 = Xs.double(), Xc.double()
            with torch.no_grad():
                f_full, f_cent = full.model(Xs64), cent.model(Xs64)
            Wf = [W.detach() for W in models.weight_matrices(full.model)]
            Wc = [W.detach() for W in models.weight_matrices(cent.model)]
            cert_full = gradients.certificate(full.model, Xs64, ys, lam, p["loss"])
            cert_cent = gradients.certificate(cent.model, Xc64, ys, lam, p["loss"])
            gap_rows.append({
                "s": s, "seed": sd, "loss gap": abs(full.final["loss"] - cent.final["loss"]),
                "function distance": ((f_full - f_cent).norm() / f_cent.norm()).item(),
                "weight distance": math.sqrt(sum(((a - b) ** 2).sum().item() for a, b in zip(Wf, Wc)))
                                   / math.sqrt(sum((b ** 2).sum().item() for b in Wc)),
                "tcv2_data": collapse.collapse_stats(Xs64, ys, K).tcv2,
                "res_full": full.max_residual, "res_cent": cent.max_residual})
            for l in range(1, L):
                cf, cc = cert_full[l - 1], cert_cent[l - 1]
                sv_c = spectral.singular_values(Wc[l - 1])
                ctail_rows.append({"s": s, "seed": sd, "layer": layer_name(l), "tail": cf["tail"],
                                   "bound (a)": cf["bound_exact"], "bound (b)": cf["bound_tcv1"],
                                   "bound (c)": cf["bound_tcv2"], "solver floor": cf["residual_term"],
                                   "weight gap": (Wf[l - 1] - Wc[l - 1]).norm().item(),
                                   "centroid sigma_K+1": sv_c[K], "centroid tail": cc["tail"],
                                   "centroid residual term": cc["residual_term"],
                                   "centroid rank at eps": int((sv_c > eps).sum()),
                                   "centroid corollary at eps": gradients.rank_bound(cc["bound_exact"], eps, K)})
                cspec_rows += [{"s": s, "seed": sd, "layer": layer_name(l), "j": j, "sigma": s_j,
                                "residual term": cc["residual_term"]} for j, s_j in enumerate(sv_c, start=1)]
    return CentroidGap(results, pd.DataFrame(gap_rows), pd.DataFrame(ctail_rows), pd.DataFrame(cspec_rows),
                       pd.concat(st, ignore_index=True))


def centroid_numbers(cg: CentroidGap, K: int, seed: int) -> dict[str, Any]:
    """What the chapter reads off the centroid experiment (keys: glue keys without ``ch3_``); the
    distances at the smallest and largest ``s`` are those of ``seed``."""
    gap, ctail, cspec = cg.gap, cg.ctail, cg.cspec
    g0 = gap[gap["seed"] == seed]
    smallest, largest = g0[g0["s"] == g0["s"].min()].iloc[0], g0[g0["s"] == g0["s"].max()].iloc[0]
    return {
        "wdist_small_s": float(smallest["weight distance"]), "wdist_large_s": float(largest["weight distance"]),
        "fdist_small_s": float(smallest["function distance"]), "gap_small_s": float(smallest["loss gap"]),
        "c_n_reached": sum(reached(r) for r in cg.results), "c_n_nets": len(cg.results),
        "c_s_min": float(gap["s"].min()), "c_s_max": float(gap["s"].max()),
        "c_res_cent_max": float(gap["res_cent"].max()), "c_res_full_max": float(gap["res_full"].max()),
        "c_res_max": float(max(gap["res_cent"].max(), gap["res_full"].max())),
        "c_sigmaK1_max": float(ctail["centroid sigma_K+1"].max()),
        "c_sigmaK1_over_res_max": float((ctail["centroid sigma_K+1"] / ctail["centroid residual term"]).max()),
        "c_restrm_max": float(ctail["centroid residual term"].max()),
        "c_sigmaK_min": float(cspec[cspec["j"] == K]["sigma"].min()),
        "c_rank_max": int(ctail["centroid rank at eps"].max()),
        "c_cor_max": int(ctail["centroid corollary at eps"].max()),
        "c_floor_max": float(ctail["solver floor"].max()),
        "cert_ok": bool((ctail["centroid tail"] <= ctail["centroid residual term"] * (1 + SLACK)).all()),
        "gap_ineq": bool((ctail["tail"] <= ctail["weight gap"] + ctail["centroid tail"] + SLACK).all()),
        "c_gap_over_tail_med": float((ctail["weight gap"] / ctail["tail"]).median()),
    }


def gap_slopes(gap: pd.DataFrame) -> dict[str, float]:
    """Log-log slopes in ``s`` (one least-squares line through the points of every seed) of the loss
    gap, the function and weight distances and TCV_2 of the data (``spectral.loglog_slope``)."""
    return {q: spectral.loglog_slope(gap["s"], gap[q])
            for q in ("loss gap", "function distance", "weight distance", "tcv2_data")}


def tail_slope_table(ctail: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Log-log slopes in ``s`` per hidden layer of the full-loss minimiser (one seed): its ``tail``
    (fitted only where above ten times the solver floor ``||R_l||_F / lambda``; NaN when fewer than
    two such points), ``points fitted (tail)``, and the ``weight gap`` and the three bounds."""
    rows = []
    for lname, grp in ctail[ctail["seed"] == seed].groupby("layer"):
        above = grp[grp["tail"] > 10 * grp["solver floor"]]
        rows.append({"layer": lname, "tail": spectral.loglog_slope(above["s"], above["tail"]),
                     "points fitted (tail)": f"{len(above)} of {len(grp)}",
                     **{q: spectral.loglog_slope(grp["s"], grp[q])
                        for q in ("weight gap", "bound (a)", "bound (b)", "bound (c)")}})
    return pd.DataFrame(rows)


def tail_slope_numbers(slope_tab: pd.DataFrame) -> dict[str, float]:
    """``slope_<quantity>_min`` / ``_max`` over the layers of :func:`tail_slope_table` (``bound (a)`` ->
    ``bound_a``; NaNs skipped)."""
    out = {}
    for q in ("tail", "bound (a)", "bound (b)", "bound (c)", "weight gap"):
        key = q.replace(" ", "_").replace("(", "").replace(")", "")
        out[f"slope_{key}_min"], out[f"slope_{key}_max"] = float(slope_tab[q].min()), float(slope_tab[q].max())
    return out


def weight_slopes(gap: pd.DataFrame) -> list[float]:
    """The log-log slope in ``s`` of the relative weight distance, seed by seed (seed order)."""
    return [spectral.loglog_slope(grp["s"], grp["weight distance"]) for _, grp in gap.groupby("seed")]


def stationarity_summary(st: pd.DataFrame) -> pd.DataFrame:
    """One row per experiment of the stationarity table ``st`` (:func:`stationarity_rows`): networks,
    target, how many reached it, median and largest ``max_l rho_l``, most L-BFGS iterations, and what
    stopped the others (with counts)."""
    st = st.assign(reached=st["stopped by"] == "target")
    summary = st.groupby("experiment", sort=False).agg(
        networks=("max_l ρ_l", "size"), **{"target": ("target", "first"), "reached target": ("reached", "sum"),
                                             "median max_l ρ_l": ("max_l ρ_l", "median"),
                                             "largest max_l ρ_l": ("max_l ρ_l", "max"),
                                             "most L-BFGS iterations": ("L-BFGS iterations", "max")}).reset_index()
    summary["others stopped by"] = [
        ", ".join(f"{why} ({n})" for why, n in st[(st["experiment"] == e) & ~st["reached"]]["stopped by"]
                  .value_counts().items()) for e in summary["experiment"]]
    return summary


__all__ = ["BOUNDS", "CentroidGap", "LayerMeasurements", "MEASURES", "PARAMETERS", "STEM", "Sweep",
           "bound_holds", "bound_ratios", "centroid_gap", "centroid_numbers", "certificate_numbers",
           "corollary_table", "depth", "gap_slopes", "initial_certificate", "initial_numbers", "lambda_sweep",
           "layer_measurements", "layer_name", "measure_fold", "measure_trends", "plain", "rank_against_tcv",
           "rank_moves", "reached", "seeds", "setup_device", "spearman", "stationarity_rows",
           "stationarity_summary", "sweep_numbers", "tail_slope_numbers", "tail_slope_table", "training_config", "weight_slopes"]
