"""Chapter 1 (``01_introduction``): one multilayer perceptron trained on the digits with and
without weight decay, compared layer by layer.

The paper (Zangrando et al., arXiv:2402.03991) says that at a stationary point of the
weight-decayed loss ``L_lambda = L_0 + (lambda/2) sum_l ||W_l||_F^2`` every weight matrix is a
scaled gradient, ``lambda W_l = -grad_{W_l} L_0``, and is close to rank ``K`` when the inputs of
layer ``l`` cluster around ``K`` means (neural rank collapse). The chapter shows it on one
network ``f(x) = W_L s(W_{L-1} ... s(W_1 x))`` (no biases), trained twice from the same weights:
with ``lambda = lam_wd`` (then polished by L-BFGS to a stationary point, :func:`nrc_utils.train.train`)
and with ``lambda = 0`` (the same SGD steps, no polishing: there is no eigenvalue equation).

Every function returns a tidy ``pandas.DataFrame``; the network keys are :data:`NETS`
(``"nowd"``: ``lambda = 0``, ``"wd"``: ``lambda = lam_wd``), in that order in every table.
The measures are those of the science modules: singular values and ranks
(:mod:`nrc_utils.spectral`, the chapter's definition ``def-ch1-ranks``), within-class
variability (:mod:`nrc_utils.collapse`, definition ``def-ch1-variability``), truncated SVDs
(:mod:`nrc_utils.truncation`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import collapse, data, losses, models, params, report, spectral, train, truncation

#: The two networks of the chapter, in table order: without and with weight decay.
NETS = ("nowd", "wd")


def _check_split(values: Mapping[str, Any]) -> None:
    """The stratified split must leave every class of the digits on both sides
    (``round(test_fraction * n_c)`` test samples of class ``c``, :meth:`nrc_utils.data.Dataset.split`)."""
    counts = np.bincount(data.digits(standardize=False).y.numpy())
    tf = values["test_fraction"]
    if any(round(tf * n) < 1 or round(tf * n) > n - 1 for n in counts):
        PARAMETERS.refuse("test_fraction", tf, f"a fraction that puts at least one digit of every class on "
                          f"each side (classes of {counts.min()} to {counts.max()} digits)")


PARAMETERS = params.Rules("01_introduction", {
    "seed": params.integer(ge=0),
    "test_fraction": params.number(gt=0, lt=1),
    # W_2 .. W_{L-1} read hidden features: the chapter needs at least two hidden layers
    "widths": params.grid(params.integer(ge=1), min_len=2),
    "activation": params.one_of(*models.ACTIVATIONS),
    "loss": params.one_of(*losses.LOSSES),
    "lam_wd": params.number(gt=0),
    "lr": params.number(gt=0),
    "momentum": params.number(ge=0, lt=1),
    "batch_size": params.integer(ge=1),
    "steps": params.integer(ge=1),
    "polish_tol": params.number(gt=0),
    "polish_max_iter": params.integer(ge=1),
    "polish_max_seconds": params.number(gt=0),
    "newton_tol": params.number(gt=0),
    "rank_rtol": params.number(gt=0, lt=1),
    "trunc_tolerance": params.number(ge=0, le=1),
}, relations=_check_split)


def digits_split(test_fraction: float, seed: int) -> tuple[data.Dataset, data.Dataset]:
    """The standardised digits (:func:`nrc_utils.data.digits`), split per class into ``(train, test)``."""
    return data.digits().split(test_fraction, seed=seed)


def train_networks(train_set: data.Dataset, *, seed: int, widths: Sequence[int], activation: str, loss: str,
                   lam_wd: float, lr: float, momentum: float, batch_size: int, steps: int, polish_tol: float,
                   polish_max_iter: int, polish_max_seconds: float, newton_tol: float, device: str = "auto",
                   **_: Any) -> dict[str, train.TrainResult]:
    """``{"nowd": ..., "wd": ...}``: the chapter's MLP ``d -> widths -> K`` (no biases, weights from
    ``seed``) trained by the same mini-batch SGD with momentum, with ``lambda = 0`` and with
    ``lambda = lam_wd``; the latter then polished by float64 L-BFGS until every layer's relative
    residual is below ``polish_tol`` and by Newton's method to ``newton_tol`` (smooth activations),
    with the smallest Hessian eigenvalue (:func:`nrc_utils.train.train`, cached). Extra keyword
    arguments (the chapter's other parameters) are ignored."""
    out = {}
    for net, lam in zip(NETS, (0.0, lam_wd)):
        model = models.MLP(train_set.d, widths, train_set.K, activation=activation, bias=False, seed=seed)
        cfg = train.TrainConfig(
            lam=lam, loss=loss, lr=lr, momentum=momentum, steps=steps, batch_size=batch_size, seed=seed,
            record_every=max(1, steps // 10), polish_tol=polish_tol if lam > 0 else None,
            polish_max_iter=polish_max_iter, polish_max_seconds=polish_max_seconds,
            newton_tol=newton_tol if lam > 0 else None)
        out[net] = train.train(model, train_set.X, train_set.y, cfg, device=device)
    return out


def stationarity(runs: Mapping[str, train.TrainResult]) -> pd.DataFrame:
    """One row per network: ``net``, ``lam``, ``residual`` (``max_l rho_l``, the largest relative residual
    ``||grad_{W_l} L_0 + lambda W_l||_F / ||lambda W_l||_F``; NaN without weight decay), ``stop``
    (``TrainResult.stop``: Newton's reason when it ran, else L-BFGS's), ``target`` (that stage's residual
    target), ``lbfgs_iterations`` (:func:`nrc_utils.report.lbfgs_iterations`), ``min_eigenvalue`` (the
    smallest Hessian eigenvalue of ``L_lambda``, NaN where not computed) and ``reached`` (the residual
    target; ``None`` for ``lambda = 0``, which has none)."""
    return pd.DataFrame([
        {"net": net, "lam": runs[net].config.lam, "residual": runs[net].max_residual, "stop": runs[net].stop,
         "target": runs[net].target, "lbfgs_iterations": report.lbfgs_iterations(runs[net]),
         "min_eigenvalue": runs[net].min_eigenvalue if runs[net].min_eigenvalue is not None else float("nan"),
         "reached": runs[net].reached if runs[net].config.polish_tol is not None else None}
        for net in NETS])


def accuracies(runs: Mapping[str, train.TrainResult], train_set: data.Dataset,
               test_set: data.Dataset) -> pd.DataFrame:
    """One row per network: ``net``, ``lam``, ``train`` and ``test`` accuracy
    (:func:`nrc_utils.truncation.accuracy`, in the model's dtype)."""
    return pd.DataFrame([
        {"net": net, "lam": runs[net].config.lam,
         "train": truncation.accuracy(runs[net].model, train_set.X, train_set.y),
         "test": truncation.accuracy(runs[net].model, test_set.X, test_set.y)}
        for net in NETS])


def layer_spectra(runs: Mapping[str, train.TrainResult]) -> pd.DataFrame:
    """The singular values of every weight matrix: one row per ``(net, layer, j)`` with ``lam``,
    ``rows``, ``cols`` (the shape of ``W_layer``), ``sigma`` (``sigma_j(W_layer)``, float64,
    descending) and ``sigma_rel = sigma_j / sigma_1``. ``layer`` counts from 1 (``W_1`` reads the pixels)."""
    rows = []
    for net in NETS:
        for layer, W in enumerate(models.weight_matrices(runs[net].model), start=1):
            s = spectral.singular_values(W.detach())
            for j, v in enumerate(s, start=1):
                rows.append({"net": net, "lam": runs[net].config.lam, "layer": layer, "rows": W.shape[0],
                             "cols": W.shape[1], "j": j, "sigma": float(v),
                             "sigma_rel": float(v / s[0]) if s[0] > 0 else 0.0})
    return pd.DataFrame(rows)


def layer_ranks(spectra: pd.DataFrame, rank_rtol: float) -> pd.DataFrame:
    """One row per ``(net, layer)`` of :func:`layer_spectra`: ``numerical_rank``
    ``#{j : sigma_j > rank_rtol sigma_1}`` and ``effective_rank`` ``exp(H(p))``, ``p_j = sigma_j / sum_k sigma_k``
    (:mod:`nrc_utils.spectral`), with ``lam``, ``rows``, ``cols``."""
    rows = []
    for (net, layer), part in spectra.groupby(["net", "layer"], sort=False):
        s = part["sigma"].to_numpy()
        rows.append({"net": net, "lam": part["lam"].iloc[0], "layer": layer, "rows": part["rows"].iloc[0],
                     "cols": part["cols"].iloc[0], "numerical_rank": spectral.numerical_rank(s, rank_rtol),
                     "effective_rank": spectral.effective_rank(s)})
    return pd.DataFrame(rows)


def rank_summary(ranks: pd.DataFrame) -> dict[str, float]:
    """The ranks the chapter's text quotes, from :func:`layer_ranks` of a network with ``L >= 3`` layers:
    ``rank_W1_wd``, ``rank_deep_wd`` (the largest numerical rank of ``W_2 .. W_{L-1}``, the layers that
    read hidden features), ``rank_WL_wd``, ``rank_hidden_min_nowd`` (the smallest of ``W_1 .. W_{L-1}``),
    ``rank_WL_nowd``, ``effrank_deep_wd`` (largest effective rank of ``W_2 .. W_{L-1}``) and
    ``effrank_hidden_min_nowd`` (smallest of ``W_1 .. W_{L-1}``)."""
    nr = ranks.pivot(index="layer", columns="net", values="numerical_rank").sort_index()
    er = ranks.pivot(index="layer", columns="net", values="effective_rank").sort_index()
    L = int(nr.index.max())
    if L < 3:
        raise ValueError(f"the rank summary needs at least 3 layers (two hidden ones), got {L}")
    return {"rank_W1_wd": int(nr.loc[1, "wd"]), "rank_deep_wd": int(nr.loc[2:L - 1, "wd"].max()),
            "rank_WL_wd": int(nr.loc[L, "wd"]), "rank_hidden_min_nowd": int(nr.loc[1:L - 1, "nowd"].min()),
            "rank_WL_nowd": int(nr.loc[L, "nowd"]), "effrank_deep_wd": float(er.loc[2:L - 1, "wd"].max()),
            "effrank_hidden_min_nowd": float(er.loc[1:L - 1, "nowd"].min())}


def rank_table(ranks: pd.DataFrame, labels: Mapping[str, str]) -> pd.DataFrame:
    """The chapter's table of :func:`layer_ranks`: one row per layer (``W₁``, shape), the numerical
    and then the effective ranks (one decimal) of each network, headed ``"numerical rank, <label>"``."""
    out = []
    for layer, part in ranks.groupby("layer", sort=True):
        part = part.set_index("net")
        row = {"layer": "W" + report.subscript(layer),
               "shape": f"{part['rows'].iloc[0]}×{part['cols'].iloc[0]}"}
        row.update({f"numerical rank, {labels[n]}": int(part.loc[n, "numerical_rank"]) for n in NETS})
        row.update({f"effective rank, {labels[n]}": round(float(part.loc[n, "effective_rank"]), 1) for n in NETS})
        out.append(row)
    return pd.DataFrame(out)


def last_layer_row_sum(run: train.TrainResult) -> float:
    """``||1^T W_L|| / ||W_L||_F``: how far the rows of the last layer are from summing to zero
    (exactly zero at a stationary point with cross-entropy, the chapter's ``prop-ch1-last-layer``)."""
    W = models.weight_matrices(run.model)[-1].detach().double()
    return float(W.sum(0).norm() / W.norm())


def feature_collapse(runs: Mapping[str, train.TrainResult], train_set: data.Dataset) -> pd.DataFrame:
    """Within-class variability of the training features ``h_0`` (pixels) .. ``h_{L-1}`` of each
    network: one row per ``(net, layer)`` (``layer = l`` for ``h_l``) with ``tcv2_normalised``
    ``= tr Sigma_W / (tr Sigma_W + tr Sigma_B)``, ``nc1 = tr(Sigma_W Sigma_B^+) / K`` and
    ``means_effective_rank``, the effective rank of the centred class means ``mu_c - mu_G`` (``K x D``).

    The digits' classes are unbalanced (174 to 183 samples), so ``Sigma_W`` and ``Sigma_B`` are the
    sample-weighted ones of :mod:`nrc_utils.collapse` (``Sigma_B = sum_c (n_c/N)(mu_c - mu_G)(mu_c - mu_G)^T``),
    for which ``Sigma_T = Sigma_W + Sigma_B`` exactly; Papyan et al.'s class-averaged forms differ
    from them for unbalanced classes.
    """
    rows = []
    for net in NETS:
        model = runs[net].model
        with torch.no_grad():
            hs, _ = model.features(train_set.X.to(next(model.parameters()).dtype))
        for layer, h in enumerate(hs):
            st = collapse.collapse_stats(h, train_set.y, train_set.K)
            rows.append({"net": net, "lam": runs[net].config.lam, "layer": layer,
                         "tcv2_normalised": st.tcv2_normalised, "nc1": st.nc1,
                         "means_effective_rank": spectral.effective_rank(st.means - st.global_mean)})
    return pd.DataFrame(rows)


def truncation_accuracy(runs: Mapping[str, train.TrainResult], test_set: data.Dataset,
                        ranks: Sequence[int]) -> pd.DataFrame:
    """Test accuracy after every layer is replaced by its truncated SVD of rank ``r``
    (:func:`nrc_utils.truncation.truncation_curve`): one row per ``(net, r)`` with ``lam`` and ``accuracy``."""
    rows = []
    for net in NETS:
        acc = truncation.truncation_curve(runs[net].model, test_set.X, test_set.y, list(ranks))
        rows += [{"net": net, "lam": runs[net].config.lam, "r": int(r), "accuracy": float(a)}
                 for r, a in zip(ranks, acc)]
    return pd.DataFrame(rows)


def smallest_safe_rank(curve: pd.DataFrame, full_accuracy: float, tolerance: float) -> int | None:
    """The smallest ``r`` of ``curve`` (columns ``r``, ``accuracy``) from which on every truncation keeps
    an accuracy of at least ``full_accuracy - tolerance``; ``None`` when even the largest ``r`` does not."""
    curve = curve.sort_values("r")
    ok = (curve["accuracy"] >= full_accuracy - tolerance).to_numpy()
    for i, r in enumerate(curve["r"]):
        if ok[i:].all():
            return int(r)
    return None


def truncation_summary(trunc: pd.DataFrame, acc: pd.DataFrame, K: int, tolerance: float) -> pd.DataFrame:
    """One row per network: ``acc_at_K`` (the accuracy of :func:`truncation_accuracy` at ``r = K``)
    and ``r_min`` (:func:`smallest_safe_rank` against the full network's test accuracy)."""
    rows = []
    for net in NETS:
        curve = trunc[trunc["net"] == net]
        full = float(acc.set_index("net").loc[net, "test"])
        at_K = curve[curve["r"] == K]["accuracy"]
        rows.append({"net": net, "acc_at_K": float(at_K.iloc[0]) if len(at_K) else float("nan"),
                     "r_min": smallest_safe_rank(curve, full, tolerance)})
    return pd.DataFrame(rows)


__all__ = ["NETS", "PARAMETERS", "accuracies", "digits_split", "feature_collapse", "last_layer_row_sum",
           "layer_ranks", "layer_spectra", "rank_summary", "rank_table", "smallest_safe_rank", "stationarity", "train_networks",
           "truncation_accuracy", "truncation_summary"]
