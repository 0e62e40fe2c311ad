"""Chapter 4, Gaussian mixtures: the figures, drawn from the tables of
:mod:`nrc_utils.experiments.gaussian_mixtures` in the book's style (:mod:`nrc_utils.style`).

Colours: the noise level ``s`` on :func:`nrc_utils.style.sequence_palette`, the weight decay on
:func:`nrc_utils.style.lambda_palette`; layers by :func:`nrc_utils.style.layer_markers`; networks
that missed their stationarity target hollow (:func:`nrc_utils.style.face`) or, in the phase
diagram, hatched white. The captions (in the chapter) give the residual range of the networks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.lines as mlines
import matplotlib.patches as mpatches
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
import seaborn as sns

from .. import style
from ..report import subscript

#: Smallest tail drawn on the log colour scale of the phase diagram.
TAIL_FLOOR = 1e-12


def _grid_ticks(ax, values: Sequence[float], axis: str = "x", every: int = 1) -> None:
    """Major ticks at the grid values (every ``every``-th), labelled as plain numbers, no minor ticks."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(mticker.FixedLocator(list(values)[::every]))
    style.plain_log_ticks(ax, axis)
    target.set_minor_locator(mticker.NullLocator())


def _pivot(rows: pd.DataFrame, col: str) -> pd.DataFrame:
    """``col`` of one layer's rows as a lambda x s table, the largest lambda on top."""
    return rows.pivot(index="lambda", columns="s", values=col).sort_index(ascending=False)


def input_tcv(draws: pd.DataFrame, expected: pd.DataFrame):
    """Normalised ``TCV_2(X) / (N s^2 d)`` (left) and ``TCV_1(X) / (N s sqrt d)`` (right) of every draw
    against ``d`` (log scale), coloured by ``s``, with the expectations of {prf:ref}`prop-input-tcv` in black.
    ``draws``, ``expected``: ``InputTCV.draws`` and ``InputTCV.expected``."""
    fig, axes = style.subplots(1, 2, panel=(5.0, 3.8))
    d_grid = list(expected["d"])
    palette = {f"{v:g}": c for v, c in style.sequence_palette(sorted(draws["s"].unique())).items()}
    shown = draws.assign(s=draws["s"].map(lambda v: f"{v:g}"))
    for ax, col, lab in ((axes[0], "tcv2_norm", r"$\mathrm{TCV}_2(X) / (N s^2 d)$"),
                         (axes[1], "tcv1_norm", r"$\mathrm{TCV}_1(X) / (N s \sqrt{d})$")):
        sns.stripplot(data=shown, x="d", y=col, hue="s", native_scale=True, log_scale=(2, None), dodge=False,
                      jitter=0.08, size=3, alpha=0.6, ax=ax, palette=palette)
        ax.scatter(d_grid, expected[col], marker="_", s=900, linewidths=2, color="black", zorder=5,
                   label="expectation (proposition)")
        ax.axhline(1.0, color="gray", lw=0.8, ls=":")
        ax.set(xlabel="dimension $d$", ylabel=lab)
        _grid_ticks(ax, d_grid)
        ax.legend(title="$s$", fontsize="small", loc="lower right")
    return fig


def propagation(prop: pd.DataFrame, s_grid: Sequence[float], hidden: Sequence[int]):
    """{prf:ref}`prop-propagation` one step at a time: measured ``sqrt(TCV_2(H_l))`` (left) and
    ``TCV_1(H_l)`` (right) of every hidden layer of every network against its bound from ``H_{l-1}``,
    log-log, with the diagonal; colour ``s``, marker layer, hollow when the network missed its target.
    ``prop``: ``Measurements.propagation``."""
    colours = style.sequence_palette(s_grid)
    markers = style.layer_markers(hidden)
    fig, axes = style.subplots(1, 2, panel=(5.25, 4.2))
    for ax, meas, bnd, lab_m, lab_b in (
            (axes[0], np.sqrt(prop["tcv2_out"]), prop["bound_sqrt_tcv2"], r"measured $\sqrt{\mathrm{TCV}_2(H_l)}$",
             r"$\mathrm{Lip}(s)\,\|W_l\|_2\,\sqrt{\mathrm{TCV}_2(H_{l-1})}$"),
            (axes[1], prop["tcv1_out"], prop["bound_tcv1"], r"measured $\mathrm{TCV}_1(H_l)$",
             r"$2\,\mathrm{Lip}(s)\,\|W_l\|_2\,\mathrm{TCV}_1(H_{l-1})$")):
        for i, row in prop.iterrows():
            c = colours[row["s"]]
            ax.scatter(bnd[i], meas[i], marker=markers[row["layer"]], s=40, edgecolors=c,
                       facecolors=style.face(c, bool(row["reached"])), linewidths=1.1)
        lo, hi = min(meas.min(), bnd.min()) / 2, max(meas.max(), bnd.max()) * 2
        ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, ls="--")
        ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel=f"bound: {lab_b}", ylabel=lab_m)
    handles = ([mlines.Line2D([], [], ls="", marker="o", color=colours[v], label=f"s = {v:g}") for v in s_grid]
               + [mlines.Line2D([], [], ls="", marker=markers[l], color="gray", label=f"layer l = {l}") for l in hidden]
               + [mlines.Line2D([], [], color="black", lw=0.8, ls="--", label="measured = bound")])
    if not prop["reached"].all():
        handles.append(style.hollow_handle("hollow: ρ above target"))
    fig.legend(handles=handles, loc="outside right center", fontsize="small")
    return fig


def phase_diagram(tails: pd.DataFrame, s_grid: Sequence[float], lambdas: Sequence[float], hidden: Sequence[int],
                  rank_rtol: float):
    """Numerical rank (top) and ``log10 dist_F(W_l, M_K)`` (bottom) of each hidden layer (columns) over
    ``s`` (horizontal) and ``lambda`` (vertical, largest on top); cells of networks that missed the
    target hatched white. ``tails``: ``Measurements.tails`` rows of one seed's hidden layers."""
    n_s, n_l = len(s_grid), len(lambdas)
    fig, axes = style.subplots(2, len(hidden), panel=(max(3.3, 0.55 * n_s) + 1.2 / len(hidden),
                                                      max(3.0, 0.4 * n_l) + 0.3),
                               sharex=True, sharey=True, squeeze=False)
    annot = {"size": 11 if n_s <= 5 else 8}
    log_tail = np.log10(tails["tail"].clip(lower=TAIL_FLOOR))
    vmin, vmax = float(log_tail.min()), float(log_tail.max())
    for j, l in enumerate(hidden):
        sub = tails[tails["layer"] == l]
        last = j == len(hidden) - 1
        sns.heatmap(_pivot(sub, "rank"), ax=axes[0, j], annot=True, fmt="d", annot_kws=annot, cmap="crest", vmin=1,
                    vmax=int(tails["rank"].max()) + 1, cbar=last,
                    cbar_kws={"label": f"numerical rank (rtol {rank_rtol:g})"})
        sns.heatmap(np.log10(_pivot(sub, "tail").clip(lower=TAIL_FLOOR)), ax=axes[1, j], annot=True, fmt=".1f",
                    annot_kws=annot, cmap="rocket_r", vmin=vmin, vmax=vmax, cbar=last,
                    cbar_kws={"label": r"$\log_{10}\,\mathrm{dist}_F(W_l, \mathcal{M}_K)$"})
        for ax in axes[:, j]:
            for yi, xi in zip(*np.where(~_pivot(sub, "reached").to_numpy(bool))):
                ax.add_patch(mpatches.Rectangle((xi, yi), 1, 1, fill=False, hatch="///", ec="white", lw=0))
        axes[0, j].set_title(f"$W_{l}$")
    for ax in axes.flat:
        ax.set_xticklabels([f"{v:g}" for v in sorted(s_grid)], rotation=0 if n_s <= 5 else 45)
        ax.set_yticklabels([f"{v:g}" for v in sorted(lambdas, reverse=True)], rotation=0)
        ax.set(xlabel="", ylabel="")
    for ax in axes[-1]:
        ax.set_xlabel("within-class noise $s$")
    for ax in axes[:, 0]:
        ax.set_ylabel(r"weight decay $\lambda$")
    return fig


def slopes(tails: pd.DataFrame, s_grid: Sequence[float], lambdas: Sequence[float], hidden: Sequence[int],
           exponents: Mapping[str, float]):
    """Tail of each hidden layer against ``s`` (left, one colour per ``lambda``) and against ``lambda``
    (right, one colour per ``s``), log-log, with the a priori bound's exponent dashed, placed at the top of
    the data; filled markers enter the slope fits (``reached & resolved``), hollow ones do not.
    ``tails``: ``Measurements.tails`` rows of one seed's hidden layers."""
    markers = style.layer_markers(hidden)
    lam_colours, s_colours = style.lambda_palette(lambdas), style.sequence_palette(s_grid)
    fig, axes = style.subplots(1, 2, panel=(5.5, 5.4))
    top = float(tails["tail"].max())
    for ax, var, fixed, colours, name in ((axes[0], "s", "lambda", lam_colours, "λ"),
                                          (axes[1], "lambda", "s", s_colours, "s")):
        for (fv, l), g in tails.groupby([fixed, "layer"]):
            g = g.sort_values(var)
            c = colours[fv]
            used = (g["reached"] & g["resolved"]).to_numpy(bool)
            ax.plot(g[var], g["tail"], color=c, lw=1, marker=markers[l], ms=5, mfc="none", ls="-", alpha=0.9)
            ax.plot(g[var][used], g["tail"][used], ls="", marker=markers[l], ms=5, color=c)
        ax.set(xscale="log", yscale="log")
        grid_v = np.array(sorted(s_grid if var == "s" else lambdas))
        e = exponents[var]
        ref = (grid_v / grid_v[0]) ** e
        ax.plot(grid_v, ref * (top / ref.max()), color="black", lw=1, ls="--", label=f"slope {e:g} (a priori bound)")
        _grid_ticks(ax, grid_v, every=max(1, len(grid_v) // 4))
        h, _ = ax.get_legend_handles_labels()
        h += [mlines.Line2D([], [], ls="-", marker="o", color=colours[v], label=f"{name} = {v:g}") for v in colours]
        h += [mlines.Line2D([], [], ls="", marker=markers[l], color="gray", label="W" + subscript(l)) for l in hidden]
        h += [style.hollow_handle("hollow: not fitted")]
        ax.legend(handles=h, fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=3,
                  frameon=False)
    axes[0].set(xlabel="within-class noise $s$", ylabel=r"$\mathrm{dist}_F(W_l, \mathcal{M}_K)$",
                title=r"against $s$, one colour per $\lambda$")
    axes[1].set(xlabel=r"weight decay $\lambda$", ylabel=r"$\mathrm{dist}_F(W_l, \mathcal{M}_K)$",
                title=r"against $\lambda$, one colour per $s$")
    return fig


__all__ = ["TAIL_FLOOR", "input_tcv", "phase_diagram", "propagation", "slopes"]
