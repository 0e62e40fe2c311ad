"""The figures of chapter 5 (``05_deep_linear_networks``), drawn from the tables of
:mod:`nrc_utils.experiments.deep_linear_networks` in the book's style (:mod:`nrc_utils.style`).

Trained networks are drawn hollow when they missed their residual target, and each panel's title
gives the largest stationarity residual ``max_l rho_l`` of its networks.
"""

from __future__ import annotations

import matplotlib.lines as mlines
import numpy as np
import pandas as pd

from .. import style

#: A rise of the forecast curve larger than this between neighbouring grid points is drawn as a jump.
JUMP = 0.02


def _pieces(y: np.ndarray) -> list[np.ndarray]:
    """The index ranges of ``y`` between its jumps (rises above :data:`JUMP`), so a line does not bridge them."""
    jumps = np.flatnonzero(np.diff(y) > JUMP)
    return np.split(np.arange(len(y)), jumps + 1)


def _residual_title(nets: pd.DataFrame, head: str) -> str:
    """``"<head>, residuals ≤ 7.6e-07"``: the largest residual of the panel's networks."""
    return f"{head}, residuals ≤ {nets['residual'].max():.1e}" if len(nets) else head


def scalar_maps(maps: pd.DataFrame, thresholds: pd.DataFrame, lam: float):
    """The solution ``s_L(sigma)`` of the scalar problem per depth (thick), and for ``L > 2`` the positive
    local minimum (dashed), the local maximum (dotted) and the jump threshold ``sigma_c`` (dash-dotted)."""
    depths = sorted(maps["L"].unique())
    pal = style.sequence_palette(depths)
    fig, ax = style.subplots(panel=(7.5, 4.6))
    for L in depths:
        part = maps[maps["L"] == L]
        g = part[part["branch"] == "global"]
        for k, idx in enumerate(_pieces(g["s"].to_numpy())):
            ax.plot(g["sigma"].to_numpy()[idx], g["s"].to_numpy()[idx], color=pal[L], lw=2,
                    label=f"$L = {L}$" if k == 0 else None)
        for branch, ls in (("local minimum", "--"), ("local maximum", ":")):
            b = part[part["branch"] == branch]
            if len(b):
                ax.plot(b["sigma"], b["s"], color=pal[L], lw=1, ls=ls)
        if L > 2:
            ax.axvline(float(thresholds.set_index("L").loc[L, "sigma_c"]), color=pal[L], lw=0.8, ls="-.", alpha=0.7)
    grid = np.sort(maps["sigma"].unique())
    ax.plot(grid, grid, color="0.6", lw=0.8, label=r"$s = \sigma$")
    ax.plot([], [], color="0.3", lw=1, ls="--", label="positive local minimum ($L > 2$)")
    ax.plot([], [], color="0.3", lw=1, ls=":", label="local maximum ($L > 2$)")
    ax.plot([], [], color="0.3", lw=0.8, ls="-.", label=r"jump threshold $\sigma_c$")
    ax.set(xlabel=r"singular value of the target map $\sigma_i(A)$", ylabel=r"singular value of $W$: $s$",
           title=fr"scalar problem, $\lambda = {lam:g}$")
    ax.legend(fontsize="small", loc="upper left")
    return fig


def forecast_vs_trained(curves: pd.DataFrame, svs: pd.DataFrame, nets: pd.DataFrame):
    """One panel per depth: the forecast ``s_L(sigma)`` per lambda (lines; dashed: the positive local
    minimum that loses to 0) and the trained ``c_i = u_i^T W v_i`` of every network (markers, hollow when
    the network missed its target)."""
    depths, lambdas = sorted(curves["L"].unique()), sorted(curves["lam"].unique())
    pal = style.lambda_palette(lambdas)
    fig, axes = style.subplots(1, len(depths), panel=(4.2, 4.7), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, L in zip(axes, depths):
        for lam in lambdas:
            cv = curves[(curves["L"] == L) & (curves["lam"] == lam)]
            for idx in _pieces(cv["s"].to_numpy()):
                ax.plot(cv["sigma"].to_numpy()[idx], cv["s"].to_numpy()[idx], color=pal[lam], lw=1.5)
            ax.plot(cv["sigma"], cv["s_local"], color=pal[lam], lw=1, ls="--")
            part = svs[(svs["L"] == L) & (svs["lam"] == lam)]
            for reached, p in part.groupby("reached"):
                ax.scatter(p["sigma_A"], p["trained"], s=34, marker="o", facecolor=style.face(pal[lam], bool(reached)),
                           edgecolor=pal[lam], lw=1.2, zorder=3)
        ax.set(title=_residual_title(nets[nets["L"] == L], f"depth $L = {L}$"), xlabel=r"$\sigma_i(A)$")
    axes[0].set_ylabel(r"trained $c_i = u_i^\top W v_i$ (markers), forecast $s_L(\sigma_i)$ (lines)")
    handles = [mlines.Line2D([], [], color=pal[lam], marker="o", lw=1.5, label=style.lambda_label(lam))
               for lam in lambdas]
    handles += [mlines.Line2D([], [], color="0.3", ls="--", label="positive local minimum (not global)")]
    if not nets["reached"].all():
        handles.append(style.hollow_handle())
    fig.legend(handles=handles, fontsize="small", loc="outside lower center", ncol=len(handles))
    return fig


def layer_spectra(layers: pd.DataFrame, nets: pd.DataFrame, lam: float, seed: int):
    """One panel per depth, for the network ``(L, lam, seed)``: the singular values ``sigma_j(W_l)`` of every
    layer (one colour and marker per layer, slightly offset), the forecast ``s_j^(1/L)`` (black bars) and
    the indices the forecast sets to zero (gray band); log scale, the residual in the title."""
    sub = layers[(layers["lam"] == lam) & (layers["seed"] == seed)].copy()
    sub["sigma_plot"] = sub["sigma"].clip(lower=1e-12)
    depths = sorted(sub["L"].unique())
    fig, axes = style.subplots(1, len(depths), panel=(4.2, 4.0), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, L in zip(axes, depths):
        part = sub[sub["L"] == L]
        names = list(part["layer"].unique())
        pal, markers = style.sequence_palette(names), style.layer_markers(names)
        net = nets[(nets["L"] == L) & (nets["lam"] == lam) & (nets["seed"] == seed)].iloc[0]
        for k, name in enumerate(names):
            p = part[part["layer"] == name]
            ax.plot(p["j"] + (k - (L - 1) / 2) * 0.08, p["sigma_plot"], ls="", marker=markers[name], ms=5,
                    color=pal[name], mfc=style.face(pal[name], bool(net["reached"])), label=name)
        fc = part.drop_duplicates("j")
        kept = fc[fc["forecast"] > 0]
        ax.plot(kept["j"], kept["forecast"], color="black", lw=0, marker="_", ms=18, mew=2,
                label=r"forecast $s_L(\sigma_j)^{1/L}$")
        zero_j = fc[fc["forecast"] == 0]["j"]
        if len(zero_j):
            ax.axvspan(zero_j.min() - 0.5, zero_j.max() + 0.5, color="0.85", zorder=0, label="forecast $0$")
        ax.set(yscale="log", xlabel="index $j$", title=f"L = {L}, residual {net['residual']:.1e}")
        ax.set_xticks(sorted(fc["j"]))
        ax.legend(fontsize="x-small", loc="lower left",
                  handles=ax.get_legend_handles_labels()[0] + ([] if net["reached"] else [style.hollow_handle()]))
    axes[0].set_ylabel(r"$\sigma_j(W_l)$")
    return fig


def balance(bal: pd.DataFrame, nets: pd.DataFrame):
    """One panel per depth: the measured relative imbalance of every pair of layers (solid, circles) and
    the residual bound of ``prop-ch5-balanced`` on the same scale (dashed, squares), per lambda (colour)
    and seed (one line each; hollow markers for networks that missed their target); log scale."""
    depths, lambdas = sorted(nets["L"].unique()), sorted(nets["lam"].unique())
    pal = style.lambda_palette(lambdas)
    fig, axes = style.subplots(1, len(depths), panel=(4.2, 4.0), sharey=True)
    axes = np.atleast_1d(axes)
    looks = {"imbalance": ("-", "o"), "certificate": ("--", "s")}
    for ax, L in zip(axes, depths):
        for (lam, sd), p in bal[bal["L"] == L].groupby(["lam", "seed"], sort=True):
            p = p.sort_values("pair")
            reached = bool(p["reached"].all())
            for quantity, (ls, marker) in looks.items():
                ax.plot(p["pair"], p[quantity], ls=ls, marker=marker, color=pal[lam], ms=5,
                        mfc=style.face(pal[lam], reached))
        ax.set(yscale="log", xlabel="pair of layers $(l, l+1)$",
               title=_residual_title(nets[nets["L"] == L], f"$L = {L}$"))
        ax.set_xticks(range(1, L))
    axes[0].set_ylabel("relative imbalance")
    handles = [mlines.Line2D([], [], color=pal[lam], lw=1.5, label=style.lambda_label(lam)) for lam in lambdas]
    handles += [mlines.Line2D([], [], color="0.3", ls="-", marker="o",
                              label=r"measured $\|W_{l+1}^\top W_{l+1} - W_l W_l^\top\|_F$ (relative)"),
                mlines.Line2D([], [], color="0.3", ls="--", marker="s", label="bound of Prop. (residual), same scale")]
    if not nets["reached"].all():
        handles.append(style.hollow_handle())
    axes[-1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
    return fig


__all__ = ["JUMP", "balance", "forecast_vs_trained", "layer_spectra", "scalar_maps"]
