"""The figures of chapter 1 (``01_introduction``), drawn from the tables of
:mod:`nrc_utils.experiments.introduction` in the book's style (:mod:`nrc_utils.style`).

``status`` is :func:`nrc_utils.experiments.introduction.stationarity`: one row per network with
``net``, ``lam``, ``residual`` and ``reached`` (``None`` for the network without weight decay, which
has no residual target). The weight-decayed network's residual is in every legend, and it is drawn
hollow when it missed its target.
"""

from __future__ import annotations

import matplotlib.ticker as mticker
import numpy as np
import pandas as pd

from .. import style
from ..experiments.introduction import NETS


def _looks(status: pd.DataFrame) -> dict[str, dict]:
    """Per network: ``colour`` (:func:`nrc_utils.style.lambda_palette`), marker ``face`` and legend ``label``
    (``"λ = 0.01, residual 2.4e-06"`` where there is a residual)."""
    pal = style.lambda_palette(status["lam"])
    out = {}
    for row in status.itertuples():
        colour = pal[float(row.lam)]
        label = style.lambda_label(row.lam)
        if row.reached is not None:
            label += f", residual {row.residual:.1e}"
        out[row.net] = {"colour": colour, "face": style.face(colour, row.reached is not False), "label": label}
    return out


def _hollow_note(ax, status: pd.DataFrame, **legend) -> None:
    """The legend, with the hollow-marker entry when a network missed its target."""
    handles, _ = ax.get_legend_handles_labels()
    if (status["reached"] == False).any():  # noqa: E712 (None is not a miss)
        handles.append(style.hollow_handle())
    ax.legend(handles=handles, **legend)


def layer_spectra(spectra: pd.DataFrame, status: pd.DataFrame, K: int, rank_rtol: float):
    """One panel per layer ``W_l``: ``sigma_j(W_l) / sigma_1(W_l)`` against ``j`` (log scale) for both
    networks, the line ``j = K`` and the tolerance of the numerical rank."""
    looks = _looks(status)
    layers = sorted(spectra["layer"].unique())
    fig, axes = style.subplots(1, len(layers), panel=(3.1, 3.4), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, layer in zip(axes, layers):
        for net in NETS:
            part = spectra[(spectra["net"] == net) & (spectra["layer"] == layer) & (spectra["sigma_rel"] > 0)]
            lk = looks[net]
            ax.semilogy(part["j"], part["sigma_rel"], "o-", ms=3, lw=1, color=lk["colour"], mfc=lk["face"],
                        label=lk["label"])
        ax.axvline(K, color="0.2", lw=1, ls=":", label=f"j = K = {K}")
        ax.axhline(rank_rtol, color="black", lw=0.8, ls="--", label=f"tolerance {rank_rtol:g}")
        first = spectra[spectra["layer"] == layer].iloc[0]
        ax.set_title(f"$W_{layer}$ ({first['rows']}×{first['cols']})")
        ax.set_xlabel("index $j$")
    axes[0].set_ylabel(r"$\sigma_j(W_l)\,/\,\sigma_1(W_l)$")
    _hollow_note(axes[-1], status, loc="lower left", fontsize="small")
    return fig


def feature_collapse(collapse_frame: pd.DataFrame, status: pd.DataFrame):
    """Two panels against the layer ``h_l``: the normalised ``TCV_2`` (left) and NC1 (right, log scale)."""
    looks = _looks(status)
    fig, axes = style.subplots(1, 2, panel=(4.5, 3.4))
    layers = sorted(collapse_frame["layer"].unique())
    for ax, measure in zip(axes, ["tcv2_normalised", "nc1"]):
        for net in NETS:
            part = collapse_frame[collapse_frame["net"] == net].sort_values("layer")
            lk = looks[net]
            ax.plot(part["layer"], part[measure], "o-", color=lk["colour"], mfc=lk["face"], label=lk["label"])
        ax.set_xticks(layers, labels=[f"$h_{l}$" for l in layers])
        ax.set_xlabel("features (layer input $h_{l}$; $h_0$ = pixels)")
    axes[0].set_ylabel(r"$\mathrm{tr}\,\Sigma_W\,/\,\mathrm{tr}\,(\Sigma_W + \Sigma_B)$")
    axes[1].set_ylabel(r"NC1 $= \mathrm{tr}(\Sigma_W \Sigma_B^{+})/K$")
    axes[0].set_ylim(0, None)
    axes[1].set_yscale("log")
    axes[1].yaxis.set_major_locator(mticker.LogLocator(subs=(1, 2, 5)))
    style.plain_log_ticks(axes[1], "y")
    _hollow_note(axes[0], status, fontsize="small")
    return fig


def truncation_accuracy(trunc: pd.DataFrame, status: pd.DataFrame, K: int):
    """Test accuracy against the rank ``r`` of every truncated layer (log scale), both networks, and ``r = K``."""
    looks = _looks(status)
    fig, ax = style.subplots(panel=(6.0, 3.4))
    for net in NETS:
        part = trunc[trunc["net"] == net].sort_values("r")
        lk = looks[net]
        ax.plot(part["r"], part["accuracy"], "o-", ms=3, color=lk["colour"], mfc=lk["face"], lw=1.5,
                label=lk["label"])
    ax.axvline(K, color="0.2", lw=1, ls=":", label=f"r = K = {K}")
    ax.set_xscale("log")
    ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500) if t <= trunc["r"].max()]
    ax.set_xticks(ticks)
    style.plain_log_ticks(ax, "x")
    ax.set_xlabel("rank $r$ of every truncated layer")
    ax.set_ylabel("test accuracy")
    _hollow_note(ax, status, fontsize="small")
    return fig


__all__ = ["feature_collapse", "layer_spectra", "truncation_accuracy"]
