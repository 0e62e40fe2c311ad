"""Tests for nrc_utils.figures.rank_collapse (chapter 3's figures) on small synthetic tables:
each figure draws, says its residual in the title, and marks a missed network hollow."""

import matplotlib

matplotlib.use("Agg")

import itertools

import numpy as np
import pandas as pd
import pytest

from nrc_utils import style
from nrc_utils.figures import rank_collapse as figs

LAMS, K, L = [0.01, 0.02, 0.05], 2, 3


@pytest.fixture(autouse=True)
def _style():
    import matplotlib.pyplot as plt

    style.setup()
    yield
    plt.close("all")


def reached(missed=None):
    return {(lam, 0): lam != missed for lam in LAMS}


def cert():
    rows = []
    for part, l, lam in itertools.product(["classes", "k-means"], range(1, L), LAMS):
        rows.append({"partition": part, "layer": l, "lambda": lam, "seed": 0, "tail": 0.1 * lam,
                     "bound_exact": 1.0, "bound_tcv1": 3.0, "bound_tcv2": 2.0, "residual_term": 1e-7})
    return pd.DataFrame(rows)


def coll():
    rows = [{"partition": "classes", "feature": f, "lambda": lam, "seed": 0, "tcv1": 1 + f, "tcv2": 2 + f,
             "tcv1_normalised": 0.5, "tcv2_normalised": 0.4, "nc1": lam, "cdnv": 0.1}
            for f, lam in itertools.product(range(L), LAMS)]
    return pd.DataFrame(rows)


def hollow_markers(fig):
    return [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_markerfacecolor() == "none"]


def legend_texts(fig):
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    return [t.get_text() for lg in legends for t in lg.get_texts()]


def test_residual_title_rounds_up():
    assert figs.residual_title(8.81e-7).endswith("8.9e-07")


@pytest.mark.parametrize("missed", [None, 0.02])
def test_bound_figure(missed):
    fig = figs.bound_figure(cert(), reached(missed), L, 8.81e-7)
    assert len(fig.axes) == 2 * (L - 1)
    assert "8.9e-07" in fig._suptitle.get_text()
    assert bool(hollow_markers(fig)) == (missed is not None)
    assert any("hollow" in t for t in legend_texts(fig)) == (missed is not None)


@pytest.mark.parametrize("missed", [None, 0.05])
def test_spectra_figure(missed):
    spec = pd.DataFrame([{"layer": f"$W_{l}$", "lambda": lam, "seed": 0, "j": j, "sigma": 1.0 / j}
                         for l, lam, j in itertools.product(range(1, L + 1), LAMS, range(1, 4))])
    fig = figs.spectra_figure(spec, reached(missed), LAMS, K, 0, 1e-6)
    assert len(fig.axes) == L
    assert bool(hollow_markers(fig)) == (missed is not None)


@pytest.mark.parametrize("measures", [figs.TCV_MEASURES, figs.COLLAPSE_MEASURES])
def test_measures_figure(measures):
    names = ["$H_0$", "$H_1$", "$H_2$"]
    fig = figs.measures_figure(coll(), reached(0.01), measures, names, 1e-6)
    assert len(fig.axes) == len(measures)
    assert hollow_markers(fig) and any("hollow" in t for t in legend_texts(fig))


def test_rank_tcv_figure():
    rk = pd.DataFrame([{"layer": f"$W_{l}$", "lambda": lam, "seed": 0, "rank": 3 + l, "TCV1 / (lambda N)": 10 * lam,
                        "stationary": lam != 0.05} for l, lam in itertools.product(range(1, L), LAMS)])
    fig = figs.rank_tcv_figure(rk, LAMS, K, 1e-3, 1e-6)
    texts = legend_texts(fig)
    assert "λ = 0.01" in texts and "W₁" in texts and f"K = {K}" in texts and any("hollow" in t for t in texts)


def test_centroid_figures():
    S = [0.1, 0.05]
    cspec = pd.DataFrame([{"s": s, "seed": 0, "layer": f"$W_{l}$", "j": j, "sigma": 1.0 / j, "residual term": 1e-7}
                          for s, l, j in itertools.product(S, range(1, L), range(1, 4))])
    ok = {(s, 0): True for s in S}
    fig = figs.centroid_spectra_figure(cspec, ok, K, 0, 1e-7)
    assert len(fig.axes) == L - 1 and not hollow_markers(fig)
    gap = pd.DataFrame([{"s": s, "seed": 0, "loss gap": s**2, "function distance": s**2, "weight distance": s}
                        for s in S])
    ctail = pd.DataFrame([{"s": s, "seed": 0, "layer": f"$W_{l}$", "tail": s**2, "bound (a)": s, "solver floor": 1e-8}
                          for s, l in itertools.product(S, range(1, L))])
    fig = figs.centroid_gap_figure(gap, ctail, S, 0, 1e-7, ok, {(0.1, 0): True, (0.05, 0): False})
    assert len(fig.axes) == 2 and hollow_markers(fig) and any("hollow" in t for t in legend_texts(fig))
