"""The figures of chapter 6, "Experiments on real data", from the tables of
:mod:`nrc_utils.experiments.real_data`, in the book's style (:mod:`nrc_utils.style`).

Colours: lambda on :func:`~nrc_utils.style.lambda_palette`; layers on
:func:`~nrc_utils.style.sequence_palette` and told apart by :func:`~nrc_utils.style.layer_markers`;
networks that missed their stationarity target hollow (:func:`~nrc_utils.style.face`), with
:func:`~nrc_utils.style.hollow_handle` in the legend. Every figure states the largest residual
``max_l rho_l`` of the polished networks it shows (argument ``residual``, e.g.
``"max ρ ≤ 8.4e-05"``) in its title.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.lines as mlines
import matplotlib.ticker as mticker
import pandas as pd

from .. import style

TAIL_LABEL = r"$\mathrm{dist}_F(W_l, \mathcal{M}_K)\,/\,\|W_l\|_F$"
RANK_LABEL = r"numerical rank $r_\varepsilon(W_l)$"
#: The per-layer panels of :func:`layers_figure`: column, axis label, log scale.
LAYER_PANELS = (("rank", RANK_LABEL, False), ("rel_tail", TAIL_LABEL, True),
                ("tcv2n", r"$\overline{\mathrm{TCV}}_2(H_{l-1})$", True), ("nc1", r"NC1 of $H_{l-1}$", True))


def log_axis(ax, axis: str = "y") -> None:
    """A log axis labelled with plain numbers (:func:`nrc_utils.style.plain_log_ticks`), with ticks
    at 1, 2, 5 times the powers of ten when the data span less than two decades (so that a
    narrow range still has labelled ticks). Call after drawing."""
    getattr(ax, f"set_{axis}scale")("log")
    lo, hi = getattr(ax, f"get_{axis}lim")()
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(mticker.LogLocator(subs=(1, 2, 5) if hi / lo < 100 else (1,)))
    style.plain_log_ticks(ax, axis)


def lambda_axis(ax, lambdas: Sequence[float]) -> None:
    """Log x axis with the lambda grid as its ticks, plain numbers."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(mticker.FixedLocator(list(lambdas)))
    ax.xaxis.set_minor_locator(mticker.NullLocator())
    style.plain_log_ticks(ax, "x")
    if len(lambdas) > 5:
        ax.tick_params(axis="x", labelrotation=45)
    ax.set_xlabel(r"weight decay $\lambda$")


def _layer_styles(layers: Sequence[int]) -> tuple[dict, dict]:
    layers = sorted(int(l) for l in layers)
    return style.sequence_palette(layers, "viridis"), style.layer_markers(layers)


def layers_figure(pol: pd.DataFrame, K: Mapping[str, int], lambdas: Sequence[float], residual: str):
    """Rank, distance to rank K, normalised TCV_2 and NC1 of the inputs, per layer against lambda:
    one row of four panels per data set (``pol``: the polished rows of ``layer_measures``; ``K``:
    ``{data title: K}``). One point per seed (hollow: target missed), a line through the medians;
    ``W_L`` is left out of the distance panel (its ``K`` rows put it at distance 0)."""
    titles = list(dict.fromkeys(pol["data"]))
    colours, markers = _layer_styles(pol["layer"].unique())
    fig, axes = style.subplots(len(titles), len(LAYER_PANELS), panel=(3.3, 3.4), squeeze=False)
    for i, name in enumerate(titles):
        frame = pol[pol["data"] == name]
        for j, (col, label, logy) in enumerate(LAYER_PANELS):
            ax = axes[i, j]
            for l, fl in frame.groupby("layer"):
                if col == "rel_tail" and (fl[col] <= 0).all():
                    continue
                med = fl.groupby("lambda")[col].median()
                ax.plot(med.index, med.values, "-", color=colours[l], lw=1.2)
                for reached, pts in fl.groupby("reached"):
                    ax.scatter(pts["lambda"], pts[col], s=24, marker=markers[l], linewidths=1.0, zorder=3,
                               facecolors=style.face(colours[l], bool(reached)), edgecolors=colours[l])
            lambda_axis(ax, lambdas)
            if logy:
                log_axis(ax, "y")
            ax.set_ylabel(label)
            ax.set_title(name, fontsize="medium")
        axes[i, 0].axhline(K[name], color="black", lw=1, ls=":")
    handles = [mlines.Line2D([], [], color=colours[l], marker=markers[l], label=f"$W_{l}$ (input $h_{l - 1}$)")
               for l in colours]
    handles += [mlines.Line2D([], [], color="black", lw=1, ls=":", label="rank $K$"),
                style.hollow_handle("hollow: target missed")]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize="small")
    fig.suptitle(f"polished networks ({residual})", fontsize="medium")
    return fig


def rank_tcv_figure(points: pd.DataFrame, lambdas: Sequence[float], residual: str):
    """Distance to rank K (left) and numerical rank (right) of ``W_l`` against the normalised
    TCV_2 of its inputs, one row per data set (``points``: ``RankTCV.points``); colour: lambda,
    marker: layer, hollow: target missed."""
    titles = list(dict.fromkeys(points["data"]))
    palette = style.lambda_palette(lambdas)
    markers = style.layer_markers(sorted(int(l) for l in points["layer"].unique()))
    fig, axes = style.subplots(len(titles), 2, panel=(4.6, 3.6), squeeze=False)
    for i, name in enumerate(titles):
        frame = points[points["data"] == name]
        for ax, col, label in ((axes[i, 0], "rel_tail", TAIL_LABEL), (axes[i, 1], "rank", RANK_LABEL)):
            for (l, lam, reached), p in frame.groupby(["layer", "lambda", "reached"]):
                ax.scatter(p["tcv2n"], p[col], s=30, marker=markers[l], linewidths=1.0, alpha=0.9,
                           facecolors=style.face(palette[lam], bool(reached)), edgecolors=palette[lam])
            log_axis(ax, "x")
            ax.set_xlabel(r"$\overline{\mathrm{TCV}}_2(H_{l-1})$ of the layer's inputs")
            ax.set_ylabel(label)
            ax.set_title(f"{name} ({residual})", fontsize="medium")
        log_axis(axes[i, 0], "y")
    handles = [mlines.Line2D([], [], ls="", marker=m, color="0.4", label=f"$W_{l}$") for l, m in markers.items()]
    handles += [mlines.Line2D([], [], ls="", marker="o", color=palette[lam], label=style.lambda_label(lam))
                for lam in lambdas]
    handles.append(style.hollow_handle("hollow: target missed"))
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    return fig


def truncation_figure(trunc: pd.DataFrame, K: Mapping[str, int], lambdas: Sequence[float], residual: str):
    """Test accuracy after cutting every layer to rank ``r``, one panel per data set (``trunc``:
    ``truncation_table``): polished networks solid (dashed: target missed), the same networks after
    SGD dotted, colour by lambda, one line per seed; ``r = K`` black dash-dotted."""
    titles = list(dict.fromkeys(trunc["data"]))
    palette = style.lambda_palette(lambdas)
    fig, axes = style.subplots(1, len(titles), panel=(5.2 + 2.2 / len(titles), 4.0), squeeze=False)  # + legend
    for ax, name in zip(axes[0], titles):
        frame = trunc[trunc["data"] == name]
        for (lam, seed, stage), f in frame.groupby(["lambda", "seed", "stage"]):
            ls = ":" if stage == "sgd" else "-" if bool(f["reached"].iloc[0]) else "--"
            ax.plot(f["r"], f["acc"], color=palette[lam], lw=1.0 if stage == "sgd" else 1.4, ls=ls)
        ax.axvline(K[name], color="black", lw=1, ls="-.")
        ax.set_xscale("log")
        r_max = int(frame["r"].max())
        ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if t <= r_max]
        ax.set_xticks(ticks, labels=[str(t) for t in ticks])
        ax.xaxis.set_minor_formatter(mticker.NullFormatter())
        ax.set_xlim(1, r_max)
        ax.set_xlabel("rank $r$ kept in every layer")
        ax.set_ylabel("test accuracy")
        ax.set_title(name, fontsize="medium")
    handles = [mlines.Line2D([], [], color=palette[lam], lw=1.4, label=style.lambda_label(lam)) for lam in lambdas]
    handles += [mlines.Line2D([], [], color="0.3", lw=1.4, ls="-", label=f"polished ({residual})"),
                mlines.Line2D([], [], color="0.3", lw=1.4, ls="--", label="polished, target missed"),
                mlines.Line2D([], [], color="0.3", lw=1.0, ls=":", label="SGD only (not stationary)"),
                mlines.Line2D([], [], color="black", lw=1, ls="-.", label="r = K")]
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    return fig


def polish_figure(both: pd.DataFrame, lambdas: Sequence[float], residual: str):
    """Relative distance to rank K of every layer with more than K rows, after SGD (x) and after
    polishing (y) of the same network (``both``: ``PolishComparison.both``), colour by lambda,
    hollow: target missed; the dashed diagonal is "no change"."""
    palette = style.lambda_palette(lambdas)
    fig, ax = style.subplots(1, 1, panel=(5.6, 4.4))
    for (lam, reached), p in both.groupby(["lambda", "reached_pol"]):
        ax.scatter(p["rel_tail_sgd"], p["rel_tail_pol"], s=26, facecolors=style.face(palette[lam], bool(reached)),
                   edgecolors=palette[lam])
    lo = min(both["rel_tail_sgd"].min(), both["rel_tail_pol"].min()) / 1.5
    ax.plot([lo, 1], [lo, 1], color="black", lw=0.8, ls="--")
    log_axis(ax, "x")
    log_axis(ax, "y")
    ax.set_xlabel(r"after SGD: $\mathrm{dist}_F(W_l, \mathcal{M}_K)/\|W_l\|_F$")
    ax.set_ylabel("after polishing")
    ax.set_title(f"after polishing: {residual}", fontsize="medium")
    handles = [mlines.Line2D([], [], ls="", marker="o", color=palette[lam], label=style.lambda_label(lam))
               for lam in lambdas]
    handles += [mlines.Line2D([], [], color="black", lw=0.8, ls="--", label="no change"),
                style.hollow_handle("hollow: target missed")]
    ax.legend(handles=handles, fontsize="small")
    return fig


__all__ = ["LAYER_PANELS", "lambda_axis", "layers_figure", "log_axis", "polish_figure", "rank_tcv_figure",
           "truncation_figure"]
