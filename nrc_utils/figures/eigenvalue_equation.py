"""The figures of chapter 2 (``02_eigenvalue_equation``), drawn from the tables of
:mod:`nrc_utils.experiments.eigenvalue_equation` in the book's style (:mod:`nrc_utils.style`).

Weight decays are coloured by :func:`nrc_utils.style.lambda_palette` and labelled by
:func:`nrc_utils.style.lambda_label`; the residual of the eigenvalue equation is drawn in the
stationarity figures (against the polishing target) and plotted as the term ``R_l`` in the split;
networks that missed the target are drawn hollow (:func:`nrc_utils.style.face`). Each function returns
the figure; the chapter glues it and writes the caption.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.lines as mlines
import numpy as np
import pandas as pd
import seaborn as sns

from .. import style
from ..experiments.eigenvalue_equation import RANK_NETWORKS, SPLIT_TERMS, EigenPair

#: Markers of the two activations of the stationarity figures (smooth, non-smooth).
ACTIVATION_MARKERS = ("o", "X")


def _lambda_labels(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, tuple]]:
    """``df`` with its column ``λ`` as legend labels (``"λ = 0.01"``) and the palette keyed by label."""
    pal = style.lambda_palette(sorted(df["λ"].unique()))
    return df.assign(**{"λ": df["λ"].map(style.lambda_label)}), {style.lambda_label(v): c for v, c in pal.items()}


def residual_curves(curves: pd.DataFrame, activations: Sequence[str], gd_steps: int, polish_tol: float,
                    newton_tol: float | None = None):
    """``max_l rho_l`` along training (table of :func:`~nrc_utils.experiments.eigenvalue_equation.residual_curves`),
    one panel per data set: GD up to the dotted line, then L-BFGS (and Newton's last step); dashed: L-BFGS's
    target, dash-dotted: Newton's (when given)."""
    curves, pal = _lambda_labels(curves)
    names = list(dict.fromkeys(curves["data"]))
    fig, axes = style.subplots(1, len(names), panel=(5.5, 4.2), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, name in zip(axes, names):
        sns.lineplot(data=curves[curves.data == name], x="iteration", y="residual", hue="λ", style="activation",
                     style_order=list(activations), palette=pal, ax=ax, legend=ax is axes[-1])
        ax.axvline(gd_steps, color="0.4", lw=1, ls=":")
        ax.text(gd_steps, 0.97, " GD | L-BFGS" + (", Newton" if newton_tol is not None else ""),
                transform=ax.get_xaxis_transform(), fontsize=9, va="top", color="0.3")
        ax.axhline(polish_tol, color="0.4", lw=1, ls="--")
        if newton_tol is not None:
            ax.axhline(newton_tol, color="0.4", lw=1, ls="-.")
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("iteration (GD steps, then L-BFGS iterations" + (" and Newton steps)" if newton_tol is not None
                                                                       else ")"))
        ax.set_ylabel(r"relative residual $\max_l\ \|\nabla_{W_l}\mathcal{L}_0 + \lambda W_l\|_F / \|\lambda W_l\|_F$")
    axes[-1].legend(loc="upper right", fontsize=8)
    return fig


def layer_residuals(layers: pd.DataFrame, activations: Sequence[str], polish_tol: float,
                    newton_tol: float | None = None):
    """The final ``rho_l`` of every layer (table of :func:`~nrc_utils.experiments.eigenvalue_equation.layer_residuals`),
    one panel per data set: a line per lambda (colour) and activation (line style; mean over seeds, band: range),
    a marker per network, hollow when it missed its target; dashed: L-BFGS's target, dash-dotted: Newton's."""
    layers, pal = _lambda_labels(layers)
    names = list(dict.fromkeys(layers["data"]))
    markers = dict(zip(activations, ACTIVATION_MARKERS))
    fig, axes = style.subplots(1, len(names), panel=(5.5, 4.0), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, name in zip(axes, names):
        part = layers[layers.data == name]
        sns.lineplot(data=part, x="layer", y="residual", hue="λ", style="activation", style_order=list(activations),
                     dashes=True, palette=pal, errorbar=("pi", 100), ax=ax, legend=False)
        for (label, act, _), net in part.groupby(["λ", "activation", "seed"], sort=False):
            colour = pal[label]
            ax.plot(net["layer"], net["residual"], ls="", marker=markers[act], ms=6, color=colour,
                    mfc=style.face(colour, bool(net["reached"].all())))
        ax.axhline(polish_tol, color="0.4", lw=1, ls="--")
        if newton_tol is not None:
            ax.axhline(newton_tol, color="0.4", lw=1, ls="-.")
        ax.set_yscale("log")
        ax.set_xticks(sorted(part.layer.unique()))
        ax.set_xlabel("layer $l$")
        ax.set_ylabel(r"final relative residual $\rho_l$")
        ax.set_title(name)
    handles = [mlines.Line2D([], [], color=c, label=lab) for lab, c in pal.items()]
    handles += [mlines.Line2D([], [], color="0.3", marker=markers[a], ls="-" if i == 0 else "--", label=a)
                for i, a in enumerate(activations)]
    if not layers["reached"].all():
        handles.append(style.hollow_handle())
    axes[-1].legend(handles=handles, fontsize=8, loc="center right")
    return fig


def side_by_side(smooth: EigenPair, rough: EigenPair, smooth_activation: str, nonsmooth_activation: str):
    """``lambda W_l`` and ``-grad L_0`` of the smooth network on one colour scale, and the singular values of
    both matrices of both networks (``cor-eigenvalue-spectra``)."""
    fig, axes = style.subplots(1, 3, panel=(13 / 3, 4.2), gridspec_kw={"width_ratios": [1, 1, 1.25]})
    vmax = np.abs(smooth.lamW).max()
    im = None
    for ax, M, title in ((axes[0], smooth.lamW, r"$\lambda W_l$"), (axes[1], smooth.negG, r"$-\nabla_{W_l}\mathcal{L}_0$")):
        im = ax.imshow(M, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(title)
        ax.set_xlabel("input unit (column)")
        ax.set_ylabel("output unit (row)")
        ax.grid(False)
    fig.colorbar(im, ax=axes[:2], shrink=0.8, label="entry")
    ax = axes[2]
    for pair, act, colour, marker in ((smooth, smooth_activation, "C0", "o"), (rough, nonsmooth_activation, "C3", "s")):
        s_W, s_G = pair.singular_values
        j = np.arange(1, len(s_W) + 1)
        ax.semilogy(j, s_W, marker, ms=6, mfc="none", color=colour, label=rf"$\sigma_j(\lambda W_l)$, {act}")
        ax.semilogy(j, s_G, ".", ms=4, color=colour, label=rf"$\sigma_j(-\nabla\mathcal{{L}}_0)$, {act}")
    ax.set_xlabel("index $j$")
    ax.set_ylabel("singular value")
    ax.set_title("spectra")
    ax.legend(fontsize=8)
    return fig


def gradient_rank(ranks: pd.DataFrame, full: pd.DataFrame, shapes: Mapping[int, tuple[int, int]], N: int):
    """Numerical ranks of mini-batch gradients against the batch size, one panel per layer, with the bound of
    ``prop-gradient-rank`` per network (dashed), its shape form (gray) and the full batch (open markers)."""
    looks = {RANK_NETWORKS[0]: ("C1", "s", 0.94), RANK_NETWORKS[1]: ("C0", "o", 1.06)}
    fig, axes = style.subplots(1, len(shapes), panel=(3.8, 3.9), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, (l, part) in zip(axes, ranks.groupby("layer")):
        shape_bound = part.groupby("|B|")["shape bound"].max()
        ax.plot(shape_bound.index, shape_bound.values, color="0.6", lw=3, alpha=0.6, label=r"$\min(|B|, d_{l-1}, d_l)$")
        for label, (colour, marker, dx) in looks.items():
            sub = part[part.network == label]
            bound = sub.groupby("|B|")["bound"].max()
            ax.plot(bound.index, bound.values, ls="--", lw=1, color=colour,
                    label=rf"$\min(|B|, \mathrm{{rank}}\,H_{{l-1,B}}, \mathrm{{rank}}\,D_{{l,B}})$, {label}")
            ax.scatter(sub["|B|"] * dx, sub["rank G_B"], s=20, marker=marker, color=colour, zorder=3,
                       label=rf"$\mathrm{{rank}}\,G_B$, {label}")
            f = full[(full.network == label) & (full.layer == l)]["rank"]
            ax.scatter([N * dx] * len(f), f, s=60, marker=marker, facecolor="none", edgecolor=colour, zorder=3)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_title(f"layer $l = {l}$ ($d_l \\times d_{{l-1}}$ = {shapes[l][0]} × {shapes[l][1]})", fontsize=10)
        ax.set_xlabel("batch size $|B|$ (open: all $N$)")
    axes[0].set_ylabel(r"numerical rank of $G_B$")
    axes[0].legend(fontsize=7, loc="upper left")
    return fig


def alignment(cosines: pd.DataFrame, windows: pd.DataFrame, window: int, shape: tuple[int, int]):
    """Three panels along SGD, per lambda: running mean of the cosine of successive gradients; effective rank
    of a window's stacked gradients (dashed: ``window``); effective rank of their sum (solid) and of one
    gradient (dashed; gray: full rank ``min(shape)``)."""
    cosines, pal = _lambda_labels(cosines)
    windows, _ = _lambda_labels(windows)
    fig, axes = style.subplots(1, 3, panel=(5.0, 4.2))
    sns.lineplot(data=cosines, x="step", y="cosine", hue="λ", palette=pal, ax=axes[0], legend=False,
                 errorbar=("pi", 100))
    axes[0].axhline(0, color="0.4", lw=1)
    axes[0].set_ylabel(rf"cosine of successive $\bar G_t$ (running mean, {window} pairs)")
    axes[0].set_xlabel("SGD step $t$")
    sns.lineplot(data=windows, x="step", y="effective rank", hue="λ", palette=pal, ax=axes[1], marker="o",
                 errorbar=("pi", 100))
    axes[1].axhline(window, color="0.4", lw=1, ls="--")
    axes[1].set_ylim(bottom=0)
    axes[1].set_ylabel(f"effective rank of {window} stacked $\\bar G_t$")
    axes[1].set_xlabel("SGD step $t$ (end of window)")
    axes[1].legend(fontsize=8)
    long = windows.melt(id_vars=["λ", "seed", "step"], value_vars=["sum", "single"], var_name="of", value_name="er")
    sns.lineplot(data=long, x="step", y="er", hue="λ", style="of", style_order=["sum", "single"], palette=pal,
                 ax=axes[2], errorbar=("pi", 100), legend=False)
    axes[2].axhline(min(shape), color="0.4", lw=1, ls="--")
    axes[2].set_ylim(bottom=0)
    axes[2].set_ylabel(f"effective rank of $G$ (a {shape[0]} × {shape[1]} matrix)")
    axes[2].set_xlabel("SGD step $t$ (end of window)")
    axes[2].legend([mlines.Line2D([], [], color="0.3"), mlines.Line2D([], [], color="0.3", ls="--")],
                   [f"sum of the {window} gradients", "one gradient (mean)"], fontsize=8, loc="upper right")
    return fig


def split_along_sgd(split: pd.DataFrame, stationary: pd.DataFrame, sgd_steps: int):
    """The norms of ``lambda W_l = A_l + B_l + R_l`` along SGD (long table of
    :func:`~nrc_utils.experiments.eigenvalue_equation.split_along_sgd`), a row of panels per layer, a column
    per lambda, and diamonds at the right: ``lambda W_l``, ``A_l``, ``B_l`` of the stationary network
    (:func:`~nrc_utils.experiments.eigenvalue_equation.stationary_split`)."""
    terms = list(SPLIT_TERMS.values())
    term_pal = dict(zip(terms, sns.color_palette(n_colors=len(terms))))
    layers, lams = sorted(split.layer.unique()), sorted(split["λ"].unique())
    fig, axes = style.subplots(len(layers), len(lams), panel=(3.7, 2.6), sharex=True, sharey="row", squeeze=False)
    for i, l in enumerate(layers):
        for j, lam in enumerate(lams):
            ax = axes[i, j]
            part = split[(split.layer == l) & (split["λ"] == lam)]
            sns.lineplot(data=part, x="step", y="norm", hue="term", style="term", hue_order=terms, style_order=terms,
                         palette=term_pal, ax=ax, legend=(i == 0 and j == len(lams) - 1), errorbar=("pi", 100))
            stat = stationary[(stationary["λ"] == lam) & (stationary.layer == l)]
            for key in ("lamW", "A", "B"):
                ax.plot([sgd_steps * 1.07] * len(stat), stat[key], marker="D", ms=6, color=term_pal[SPLIT_TERMS[key]],
                        clip_on=False)
            ax.set_yscale("log")
            ax.set_title(f"layer $l = {l}$, {style.lambda_label(lam)}", fontsize=10)
            ax.set_xlabel("SGD step $t$" if i == len(layers) - 1 else "")
            ax.set_ylabel("Frobenius norm" if j == 0 else "")
    handles, labels = axes[0, -1].get_legend_handles_labels()
    axes[0, -1].get_legend().remove()
    handles.append(mlines.Line2D([], [], ls="none", marker="D", color="0.4"))
    labels.append("stationary network (GD + L-BFGS)")
    fig.legend(handles, labels, loc="outside lower center", ncols=5, fontsize=9)
    return fig


def k_minus_one(spectra: pd.DataFrame, K: int):
    """``sigma_j(A_l) / sigma_1(A_l)``, ``j <= K``, one panel per layer, for the networks with undecayed biases
    and without biases (item 3 of ``prop-cluster-split``)."""
    layers = sorted(spectra.layer.unique())
    fig, axes = style.subplots(1, len(layers), panel=(3.8, 3.6), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, (l, part) in zip(axes, spectra.groupby("layer")):
        sns.lineplot(data=part, x="j", y="ratio", hue="network", style="network", markers=True, ax=ax,
                     legend=ax is axes[0], palette=["C2", "C0"])
        ax.set_yscale("log")
        ax.set_xticks(range(1, K + 1))
        ax.set_title(f"layer $l = {l}$", fontsize=10)
        ax.set_xlabel("index $j$")
    axes[0].set_ylabel(r"$\sigma_j(A_l)\, /\, \sigma_1(A_l)$")
    axes[0].legend(fontsize=8, loc="lower left")
    return fig


__all__ = ["ACTIVATION_MARKERS", "alignment", "gradient_rank", "k_minus_one", "layer_residuals", "residual_curves",
           "side_by_side", "split_along_sgd"]
