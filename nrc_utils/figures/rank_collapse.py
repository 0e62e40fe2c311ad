"""The figures of chapter 3 (``03_neural_rank_collapse``), drawn from the tables of
:mod:`nrc_utils.experiments.rank_collapse` in the book's style (:mod:`nrc_utils.style`).

``reached`` is always a mapping ``{(lambda, seed): bool}`` (the lambda sweep) or
``{(s, seed): bool}`` (the centroid-loss networks): a network that missed its stationarity target
is drawn with hollow markers (:func:`nrc_utils.style.face`) and the legend says so
(:func:`nrc_utils.style.hollow_handle`). Every figure names the largest stationarity residual
``max_l rho_l`` of the networks it shows in its title (``residual``), so the figure itself says
how close to a stationary point the theory is being tested.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .. import style
from ..report import rounded

#: The certificate's quantities (columns of ``cert``) and their legend labels and colours.
BOUND_QUANTITIES = {
    "tail": (r"measured $\mathrm{dist}_F(W_l, \mathcal{M}_K)$", "black"),
    "bound_exact": (r"(a) $\|\sum_i \delta_i e_i^\top\|_F / \lambda N$", "tab:blue"),
    "bound_tcv1": (r"(b) $\max_i\|\delta_i\|\,\mathrm{TCV}_1 / \lambda N$", "tab:orange"),
    "bound_tcv2": (r"(c) $\|D_l\|_F \sqrt{\mathrm{TCV}_2} / \lambda N$", "tab:green"),
    "residual_term": (r"residual term $\|R_l\|_F / \lambda$ (in (a)-(c))", "tab:gray"),
}
TCV_MEASURES = {"tcv1": r"$\mathrm{TCV}_1$", "tcv2": r"$\mathrm{TCV}_2$",
                "tcv1_normalised": r"$\overline{\mathrm{TCV}}_1$ (normalised)",
                "tcv2_normalised": r"$\overline{\mathrm{TCV}}_2$ (normalised)"}
COLLAPSE_MEASURES = {"tcv2": r"$\mathrm{TCV}_2$ (raw)", "tcv2_normalised": r"$\overline{\mathrm{TCV}}_2$",
                     "nc1": "NC1", "cdnv": "CDNV"}


def residual_title(residual: float) -> str:
    """``"max_l ρ_l ≤ 8.9e-07"``: the stationarity line of a figure title (rounded up)."""
    return f"stationarity residuals max$_l\\,\\rho_l \\leq$ {rounded(residual, '.1e', +1)}"


def _finish(fig, residual: float | None) -> None:
    """The stationarity line as the figure's title."""
    if residual is not None:
        fig.suptitle(residual_title(residual), fontsize="small")


def _lambda_ticks(ax, values) -> None:
    """Plain log ticks at (at most four of) the grid's values."""
    import matplotlib.ticker as mticker

    grid = sorted(set(float(v) for v in values))
    style.plain_log_ticks(ax, "x")
    ax.xaxis.set_major_locator(mticker.FixedLocator(grid[::max(1, -(-len(grid) // 4))]))
    ax.xaxis.set_minor_locator(mticker.NullLocator())


def _points(ax, x, y, colour, faces, marker="o", **kw):
    """A line through ``(x, y)`` with markers, filled where ``faces`` is true (reached the target) and
    hollow (:func:`nrc_utils.style.face`) where not."""
    faces = np.asarray(faces, bool)
    ax.plot(x, y, color=colour, lw=1.2, marker=marker, ms=5, markevery=list(np.flatnonzero(faces)), **kw)
    if (~faces).any():
        ax.plot(np.asarray(x)[~faces], np.asarray(y)[~faces], ls="", marker=marker, ms=5, color=colour,
                mfc=style.face(colour, False))


def bound_figure(cert: pd.DataFrame, reached: Mapping, L: int, residual: float):
    """``thm-neural-rank-collapse`` per hidden layer (columns) and partition (rows: classes, k-means):
    the measured distance of ``W_l`` from rank ``K`` and the right-hand sides (a), (b), (c) with their
    residual term, against lambda (log-log), one line per seed."""
    partitions = ["classes", "k-means"]
    fig, axes = style.subplots(2, L - 1, panel=(3.2, 2.8), sharex=True, sharey=True, squeeze=False)
    for i, part in enumerate(partitions):
        for j, l in enumerate(range(1, L)):
            ax = axes[i, j]
            sub = cert[(cert["partition"] == part) & (cert["layer"] == l)]
            for q, (label, colour) in BOUND_QUANTITIES.items():
                for sd, grp in sub.groupby("seed"):
                    grp = grp[grp[q] > 0].sort_values("lambda")
                    faces = [reached[(lam, sd)] for lam in grp["lambda"]]
                    _points(ax, grp["lambda"].to_numpy(), grp[q].to_numpy(), colour, faces,
                            label=label if sd == sub["seed"].min() else None)
            ax.set(xscale="log", yscale="log")
            _lambda_ticks(ax, cert["lambda"])
            ax.set_title(f"{part}, $W_{l}$", fontsize="medium")
            if i == 1:
                ax.set_xlabel(r"weight decay $\lambda$")
    fig.supylabel("Frobenius distance / bound", fontsize="medium")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if not all(reached.values()):
        handles.append(style.hollow_handle())
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize="small", frameon=False)
    _finish(fig, residual)
    return fig


def spectra_figure(spec: pd.DataFrame, reached: Mapping, lambdas: Sequence[float], K: int, seed: int,
                   residual: float):
    """Singular values of every layer (one panel per layer, log scale) for every lambda of the sweep
    (one seed), coloured by :func:`nrc_utils.style.lambda_palette`; dashed lines with hollow markers
    for networks that missed their target. Red dotted line between ``j = K`` and ``K + 1``."""
    import matplotlib.ticker as mticker

    layers = list(dict.fromkeys(spec["layer"]))
    pal = style.lambda_palette(lambdas)
    fig, axes = style.subplots(1, len(layers), panel=(2.7, 2.9), squeeze=False)
    for ax, lname in zip(axes[0], layers):
        for lam in lambdas:
            sub = spec[(spec["seed"] == seed) & (spec["layer"] == lname) & (spec["lambda"] == lam)]
            ok = reached[(lam, seed)]
            ax.plot(sub["j"], sub["sigma"], color=pal[float(lam)], lw=1.2, ls="-" if ok else "--", marker="o",
                    ms=4, mfc=style.face(pal[float(lam)], ok), mew=1.0, label=style.lambda_label(lam))
        ax.axvline(K + 0.5, color="tab:red", lw=1, ls=":")
        ax.set(yscale="log", title=lname, xlabel="index $j$")
        ax.xaxis.set_major_locator(mticker.MaxNLocator(integer=True, nbins=5))
    axes[0, 0].set_ylabel(r"$\sigma_j(W_l)$")
    handles, _ = axes[0, 0].get_legend_handles_labels()
    if not all(reached[(lam, seed)] for lam in lambdas):
        handles.append(style.hollow_handle("hollow, dashed: residual above target"))
    fig.legend(handles=handles, loc="outside right center", fontsize="small")
    _finish(fig, residual)
    return fig


def measures_figure(coll: pd.DataFrame, reached: Mapping, measures: Mapping[str, str], feature_names: Sequence[str],
                    residual: float):
    """One panel per measure (``measures``: column -> title) of the inputs ``H_{l-1}`` of every layer
    (classes as clusters) against lambda, log-log, one colour per layer input
    (:func:`nrc_utils.style.sequence_palette`), one line per seed."""
    cls = coll[coll["partition"] == "classes"]
    features = sorted(cls["feature"].unique())
    pal = style.sequence_palette(features)
    fig, axes = style.subplots(1, len(measures), panel=(2.9, 2.8), squeeze=False)
    for ax, (m, title) in zip(axes[0], measures.items()):
        for f in features:
            for sd, grp in cls[cls["feature"] == f].groupby("seed"):
                grp = grp.sort_values("lambda")
                faces = [reached[(lam, sd)] for lam in grp["lambda"]]
                _points(ax, grp["lambda"].to_numpy(), grp[m].to_numpy(), pal[f], faces,
                        label=feature_names[f] if sd == cls["seed"].min() else None)
        ax.set(xscale="log", yscale="log", title=title, xlabel=r"weight decay $\lambda$")
        _lambda_ticks(ax, cls["lambda"])
    handles, _ = axes[0, 0].get_legend_handles_labels()
    if not all(reached.values()):
        handles.append(style.hollow_handle())
    fig.legend(handles=handles, title="layer input", loc="outside right center", fontsize="small")
    _finish(fig, residual)
    return fig


def rank_tcv_figure(rk: pd.DataFrame, lambdas: Sequence[float], K: int, rank_rtol: float, residual: float):
    """Numerical rank of each hidden layer against ``TCV_1(H_{l-1}) / (lambda N)`` (``rk``:
    :func:`nrc_utils.experiments.rank_collapse.rank_against_tcv`), colour = lambda, marker = layer,
    hollow = missed its target."""
    import matplotlib.lines as mlines
    import matplotlib.ticker as mticker

    from ..experiments.rank_collapse import plain

    pal = style.lambda_palette(lambdas)
    layers = list(dict.fromkeys(rk["layer"]))
    markers = style.layer_markers(layers)
    fig, ax = style.subplots(1, 1, panel=(6.4, 4.0))
    for x, rank, lam, layer, ok in zip(rk["TCV1 / (lambda N)"], rk["rank"], rk["lambda"], rk["layer"],
                                       rk["stationary"]):
        c = pal[float(lam)]
        ax.scatter(x, rank, s=70, marker=markers[layer], facecolors=style.face(c, ok), edgecolors=c, linewidths=1.2)
    ax.axhline(K, color="tab:red", lw=1, ls=":")
    ax.set_xscale("log")
    style.plain_log_ticks(ax, "x")
    ax.yaxis.set_major_locator(mticker.MaxNLocator(integer=True))
    ax.set_xlabel(r"$\mathrm{TCV}_1(H_{l-1}) / (\lambda N)$")
    ax.set_ylabel(f"numerical rank of $W_l$ (rtol {rank_rtol:g})")
    handles = ([mlines.Line2D([], [], ls="", marker="o", ms=7, color=pal[float(lam)], label=style.lambda_label(lam))
                for lam in lambdas]
               + [mlines.Line2D([], [], ls="", marker=markers[n], ms=7, color="gray", label=plain(n)) for n in layers]
               + [mlines.Line2D([], [], color="tab:red", lw=1, ls=":", label=f"K = {K}")])
    if not rk["stationary"].all():
        handles.append(style.hollow_handle())
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    _finish(fig, residual)
    return fig


def centroid_spectra_figure(cspec: pd.DataFrame, reached: Mapping, K: int, seed: int, residual: float):
    """Singular values of the hidden layers of the centroid-loss networks (one seed), one colour per
    noise level ``s`` (:func:`nrc_utils.style.sequence_palette`), with each network's certificate level
    ``||R^c_l||_F / lambda`` dashed; red dotted line between ``j = K`` and ``K + 1``."""
    c0 = cspec[cspec["seed"] == seed]
    s_values = list(dict.fromkeys(c0["s"]))
    pal = style.sequence_palette(s_values, "rocket")
    layers = list(dict.fromkeys(c0["layer"]))
    fig, axes = style.subplots(1, len(layers), panel=(3.0, 2.8), sharey=True, squeeze=False)
    for ax, lname in zip(axes[0], layers):
        for s in s_values:
            sub = c0[(c0["layer"] == lname) & (c0["s"] == s)]
            ok = reached[(s, seed)]
            ax.plot(sub["j"], sub["sigma"], color=pal[s], lw=1.2, marker="o", ms=4, mfc=style.face(pal[s], ok),
                    label=f"{s:g}")
            ax.axhline(sub["residual term"].iloc[0], color=pal[s], lw=0.8, ls="--")
        ax.axvline(K + 0.5, color="tab:red", lw=1, ls=":")
        ax.set(yscale="log", title=lname, xlabel="index $j$")
    axes[0, 0].set_ylabel(r"$\sigma_j(W^{c}_l)$")
    handles, _ = axes[0, 0].get_legend_handles_labels()
    if not all(reached[(s, seed)] for s in s_values):
        handles.append(style.hollow_handle())
    fig.legend(handles=handles, title="$s$", loc="outside right center", fontsize="small")
    _finish(fig, residual)
    return fig


def centroid_gap_figure(gap: pd.DataFrame, ctail: pd.DataFrame, centroid_s: Sequence[float], seed: int,
                        residual: float, reached_full: Mapping, reached_centroid: Mapping):
    """Left: loss gap, function distance and weight distance of the full and centroid minimisers
    against ``s`` (log-log, one line per seed) with a slope-2 reference. Right: the full minimiser's
    distance from rank ``K`` per hidden layer (solid) and bound (a) (dashed), the solver floor
    ``max_l ||R_l||_F / lambda`` (one seed) and slopes 1 and 2. Hollow markers: on the left, a pair
    of which one network missed its target; on the right, a full-loss network that missed it."""
    import matplotlib.ticker as mticker

    quantities = {
        "loss gap": (r"$|\mathcal{L}_\lambda(\Theta^*) - \mathcal{L}^c_\lambda(\Theta^{c*})|$", "tab:blue", "o"),
        "function distance": (r"$\|f_{\Theta^*}(X) - f_{\Theta^{c*}}(X)\|_F / \|f_{\Theta^{c*}}(X)\|_F$",
                              "tab:orange", "X"),
        "weight distance": ("relative weight distance (not invariant)", "tab:gray", "s")}
    fig, axes = style.subplots(1, 2, panel=(5.5, 4.0))
    s_ref = np.array([min(centroid_s), max(centroid_s)])
    for q, (label, colour, marker) in quantities.items():
        for sd, grp in gap.groupby("seed"):
            grp = grp.sort_values("s")
            faces = [reached_full[(s, sd)] and reached_centroid[(s, sd)] for s in grp["s"]]
            _points(axes[0], grp["s"].to_numpy(), grp[q].to_numpy(), colour, faces, marker=marker,
                    label=label if sd == seed else None)
    g0 = gap[gap["seed"] == seed]
    axes[0].plot(s_ref, g0["function distance"].max() * (s_ref / s_ref[1]) ** 2, color="black", lw=0.8, ls="--",
                 label=r"slope 2 ($\propto s^2$)")
    axes[0].set(xscale="log", yscale="log", xlabel="within-class noise $s$", title="full loss vs centroid loss")
    axes[0].legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    floor = ctail[ctail["seed"] == seed].groupby("s")["solver floor"].max()
    axes[1].plot(floor.index, floor.values, color="tab:gray", lw=1, ls="-.",
                 label=r"solver floor $\max_l \|R_l\|_F/\lambda$")
    layers = list(dict.fromkeys(ctail["layer"]))
    pal = style.sequence_palette(layers)
    markers = style.layer_markers(layers)
    for lname in layers:
        for sd, grp in ctail[ctail["layer"] == lname].groupby("seed"):
            grp = grp.sort_values("s")
            first, faces = sd == seed, [reached_full[(s, sd)] for s in grp["s"]]
            _points(axes[1], grp["s"].to_numpy(), grp["tail"].to_numpy(), pal[lname], faces, marker=markers[lname],
                    label=f"{lname}: measured $\\mathrm{{dist}}_F(W^*_l, \\mathcal{{M}}_K)$" if first else None)
            _points(axes[1], grp["s"].to_numpy(), grp["bound (a)"].to_numpy(), pal[lname], faces,
                    marker=markers[lname], ls="--", label=f"{lname}: bound (a)" if first else None)
    for power, ls in ((1, ":"), (2, "--")):
        axes[1].plot(s_ref, ctail["bound (a)"].max() * (s_ref / s_ref[1]) ** power, color="black", lw=0.8, ls=ls,
                     label=f"slope {power}")
    axes[1].set(xscale="log", yscale="log", xlabel="within-class noise $s$",
                title="full-loss minimiser: distance from rank $K$")
    handles, _ = axes[1].get_legend_handles_labels()
    if not (all(reached_full.values()) and all(reached_centroid.values())):
        handles.append(style.hollow_handle())
    axes[1].legend(handles=handles, fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    for ax in axes:
        ax.xaxis.set_major_locator(mticker.FixedLocator(sorted(centroid_s)[::max(1, len(centroid_s) // 3)]))
        style.plain_log_ticks(ax, "x")
        ax.xaxis.set_minor_locator(mticker.NullLocator())
    _finish(fig, residual)
    return fig


__all__ = ["BOUND_QUANTITIES", "COLLAPSE_MEASURES", "TCV_MEASURES", "bound_figure", "centroid_gap_figure",
           "centroid_spectra_figure", "measures_figure", "rank_tcv_figure", "residual_title", "spectra_figure"]
