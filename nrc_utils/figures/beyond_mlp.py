"""The figures of chapter 7, "Beyond the MLP", from the tables of
:mod:`nrc_utils.experiments.beyond_mlp`, in the book's style (:mod:`nrc_utils.style`).

lambda on :func:`~nrc_utils.style.lambda_palette`; networks whose residual is above the chapter's
claim tolerance drawn hollow (:func:`~nrc_utils.style.face`, :func:`~nrc_utils.style.hollow_handle`).
Every figure puts its networks' stationarity (``note``: the largest residual and the range of the
smallest Hessian eigenvalues, :func:`stationarity_note`) in its title.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.lines as mlines
import numpy as np
import pandas as pd

from .. import style
from ..report import rounded

TAIL = r"$\mathrm{dist}_F(W, \mathcal{M}_K)/\|W\|_F$"


def stationarity_note(nets: pd.DataFrame) -> str:
    """``"max ρ ≤ 8.2e-13, λ_min(H) from -9.3e-14 to 1.2e-03"``: the largest residual (rounded up)
    and the range of the smallest Hessian eigenvalues of ``nets``."""
    res = rounded(float(nets["residual"].max()), ".1e", +1)
    lo, hi = float(nets["min_eig"].min()), float(nets["min_eig"].max())
    return f"max ρ ≤ {res}, λ_min(H) from {lo:.1e} to {hi:.1e}"


def _legend_lambdas(ax, lambdas: Sequence[float], extra: Sequence = (), hollow: bool = False, **kw) -> None:
    pal = style.lambda_palette(lambdas)
    handles = [mlines.Line2D([], [], color=pal[l], marker="o", label=style.lambda_label(l)) for l in lambdas]
    handles += list(extra)
    if hollow:
        handles.append(style.hollow_handle())
    ax.legend(handles=handles, fontsize="small", **kw)


def spectra_figure(spectra: pd.DataFrame, lambdas: Sequence[float], note: str, title: str):
    """Normalised singular values ``sigma_j / sigma_1`` of every weight matrix (one panel each),
    one line per network, colour by lambda (log scale; exact zeros drawn at the panel's floor)."""
    mats = list(dict.fromkeys(spectra["matrix"]))
    fig, axes = style.subplots(1, len(mats), panel=(3.0, 2.9), squeeze=False)
    pal = style.lambda_palette(lambdas)
    floor = 1e-17
    any_hollow = False
    for ax, mat in zip(axes[0], mats):
        sub = spectra[spectra["matrix"] == mat]
        for (lam, seed), g in sub.groupby(["lam", "seed"]):
            reached = bool(g["reached"].all())
            any_hollow |= not reached
            ax.plot(g["j"], np.maximum(g["rel"], floor), "-", color=pal[lam], lw=1, alpha=0.8,
                    marker="o", ms=4, mfc=style.face(pal[lam], reached))
        ax.set_yscale("log")
        ax.set_ylim(floor / 3, 3)
        ax.set_title(mat, fontsize="medium")
        ax.set_xlabel("$j$")
    axes[0][0].set_ylabel(r"$\sigma_j(W) / \sigma_1(W)$")
    _legend_lambdas(axes[0][-1], lambdas, hollow=any_hollow, loc="lower left")
    fig.suptitle(f"{title} ({note})", fontsize="medium")
    return fig


def bounds_figure(bounds: pd.DataFrame, lambdas: Sequence[float], note: str, title: str):
    """Per weight matrix (one panel each): the distance to rank ``K`` (filled circles) against the
    bounds (a) (squares, dashed) and (c) (triangles, dotted), all relative to ``||W||_F``, for the
    k-means partitions of the matrix's input rows into ``K`` clusters (lines) and for the class
    partition (stars: distance; crosses: bound (a)); colour by lambda, first seed; above the
    grey line at 1 a bound says nothing."""
    mats = list(dict.fromkeys(bounds["matrix"]))
    fig, axes = style.subplots(1, len(mats), panel=(3.0, 2.9), squeeze=False)
    pal = style.lambda_palette(lambdas)
    seed0 = bounds["seed"].min()
    floor = 1e-6
    for ax, mat in zip(axes[0], mats):
        sub = bounds[(bounds["matrix"] == mat) & (bounds["seed"] == seed0)]
        for lam, g in sub.groupby("lam"):
            km = g[g["partition"] == "k-means"].sort_values("K")
            cl = g[g["partition"] == "class"]
            c = pal[lam]
            reached = bool(g["reached"].all())
            ax.plot(km["K"], np.maximum(km["rel_tail"], floor), "-o", color=c, ms=4, mfc=style.face(c, reached))
            ax.plot(km["K"], km["rel_bound_a"], "--s", color=c, ms=4, mfc="none")
            ax.plot(km["K"], km["rel_bound_c"], ":^", color=c, ms=4, mfc="none")
            ax.plot(cl["K"], np.maximum(cl["rel_tail"], floor), "*", color=c, ms=10)
            ax.plot(cl["K"], cl["rel_bound_a"], "x", color=c, ms=8)
        ax.axhline(1.0, color="0.5", lw=1)
        ax.set_yscale("log")
        ax.set_title(mat, fontsize="medium")
        ax.set_xlabel("clusters $K$")
    axes[0][0].set_ylabel(f"{TAIL} and its bounds")
    extra = [mlines.Line2D([], [], color="0.3", marker="o", ls="-", label="distance (k-means)"),
             mlines.Line2D([], [], color="0.3", marker="s", ls="--", mfc="none", label="bound (a)"),
             mlines.Line2D([], [], color="0.3", marker="^", ls=":", mfc="none", label="bound (c)"),
             mlines.Line2D([], [], color="0.3", marker="*", ls="", ms=10, label="distance (classes)"),
             mlines.Line2D([], [], color="0.3", marker="x", ls="", label="bound (a), classes")]
    _legend_lambdas(axes[0][-1], lambdas, extra, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(f"{title} ({note}; distances below {floor:g} drawn at {floor:g})", fontsize="medium")
    return fig


def residual_figure(matrices: pd.DataFrame, stream: pd.DataFrame, lambdas: Sequence[float], K: int, note: str):
    """Left: numerical rank of every matrix of the residual MLP against lambda (one marker per matrix,
    one point per seed; dotted: ``K``). Right: normalised ``TCV_2`` of the stream ``h_l``
    (solid) and of the branch inputs ``s(W_{l,1} h_{l-1})`` (dashed) along the depth, colour by
    lambda, first seed."""
    fig, (a1, a2) = style.subplots(1, 2, panel=(4.2, 3.2))
    mats = list(dict.fromkeys(matrices["matrix"]))
    marks = style.layer_markers(mats)
    cols = style.sequence_palette(mats, "viridis")
    offs = np.linspace(-0.08, 0.08, len(mats))
    for off, mat in zip(offs, mats):
        g = matrices[matrices["matrix"] == mat]
        for _, row in g.iterrows():
            a1.plot(row["lam"] * (1 + off), row["rank"], marks[mat], color=cols[mat],
                    mfc=style.face(cols[mat], bool(row["reached"])), ls="")
    a1.axhline(K, color="0.3", ls=":", lw=1)
    a1.set_xscale("log")
    a1.set_xticks(list(lambdas))
    style.plain_log_ticks(a1, "x")
    a1.set_xlabel(r"weight decay $\lambda$")
    a1.set_ylabel(r"numerical rank of $W$")
    a1.legend(handles=[mlines.Line2D([], [], color=cols[m], marker=marks[m], ls="", label=m) for m in mats],
              fontsize="small", ncol=2)
    pal = style.lambda_palette(lambdas)
    s0 = stream[stream["seed"] == stream["seed"].min()]
    for lam, g in s0.groupby("lam"):
        a2.plot(g["l"], g["tcv2n_stream"], "-o", color=pal[lam])
        b = g.dropna(subset=["tcv2n_branch"])
        a2.plot(b["l"], b["tcv2n_branch"], "--s", color=pal[lam], mfc="none")
    a2.set_xlabel("block $l$")
    a2.set_xticks(sorted(s0["l"].unique()))
    a2.set_ylabel(r"normalised $\mathrm{TCV}_2$")
    _legend_lambdas(a2, lambdas, [mlines.Line2D([], [], color="0.3", marker="o", label="stream $h_l$"),
                                  mlines.Line2D([], [], color="0.3", marker="s", ls="--", mfc="none",
                                                label=r"branch input $s(W_{l,1}h_{l-1})$")])
    fig.suptitle(f"Residual MLP ({note})", fontsize="medium")
    return fig


def attention_figure(svs: pd.DataFrame, products: pd.DataFrame, lambdas: Sequence[float], note: str):
    """Left: singular values of ``M = W_Q^T W_K`` per network (log; zeros at the floor). Middle:
    singular values of ``G / lambda``, ``G = grad_M L_0`` (the line at 1: where the directions of
    ``M`` must sit, ``thm-ch7-attention``). Right: ``rank M`` (filled) and the number of singular
    values of ``G/lambda`` equal to 1 (hollow, larger) against lambda."""
    fig, axes = style.subplots(1, 3, panel=(3.4, 3.0))
    pal = style.lambda_palette(lambdas)
    floor = 1e-17
    for (lam, seed), g in svs.groupby(["lam", "seed"]):
        c = pal[lam]
        reached = bool(g["reached"].all())
        axes[0].plot(g["j"], np.maximum(g["sv_M"], floor), "-o", color=c, ms=4, mfc=style.face(c, reached), lw=1)
        axes[1].plot(g["j"], g["sv_G"], "-o", color=c, ms=4, mfc=style.face(c, reached), lw=1)
    axes[0].set_yscale("log")
    axes[0].set_ylabel(r"$\sigma_j(W_Q^\top W_K)$")
    axes[1].axhline(1.0, color="0.3", ls=":", lw=1)
    axes[1].set_ylabel(r"$\sigma_j(\nabla_M \mathcal{L}_0)/\lambda$")
    for ax in axes[:2]:
        ax.set_xlabel("$j$")
    for _, row in products.iterrows():
        c = pal[row["lam"]]
        axes[2].plot(row["lam"], row["rank_M"], "o", color=c, ms=6, mfc=style.face(c, bool(row["reached"])))
        axes[2].plot(row["lam"], row["n_unit"], "o", color=c, ms=11, mfc="none")
    axes[2].set_xscale("log")
    axes[2].set_xticks(list(lambdas))
    style.plain_log_ticks(axes[2], "x")
    axes[2].set_xlabel(r"weight decay $\lambda$")
    axes[2].set_ylabel(r"rank $M$;  #$\{j: \sigma_j(G)/\lambda = 1\}$")
    _legend_lambdas(axes[0], lambdas, loc="lower left")
    fig.suptitle(f"One-layer attention ({note})", fontsize="medium")
    return fig


__all__ = ["attention_figure", "bounds_figure", "residual_figure", "spectra_figure", "stationarity_note"]
