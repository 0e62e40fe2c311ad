"""nrc_utils.figures.eigenvalue_equation: chapter 2's figures from small hand-made tables."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from nrc_utils import style  # noqa: E402
from nrc_utils.experiments import eigenvalue_equation as ee  # noqa: E402
from nrc_utils.figures import eigenvalue_equation as figs  # noqa: E402

ACTS = ["tanh", "relu"]
LAMS = [0.001, 0.01]


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def curves():
    rows = []
    for data in ee.DATASETS:
        for act in ACTS:
            for lam in LAMS:
                for it, phase in ((0, "sgd"), (10, "sgd"), (60, "lbfgs")):
                    rows.append({"data": data, "activation": act, "λ": lam, "iteration": it, "phase": phase,
                                 "residual": 10.0 ** (-it / 10) if act == "tanh" else 1e-2})
    return pd.DataFrame(rows)


def layers(reached_all=False):
    rows = []
    for data in ee.DATASETS:
        for act in ACTS:
            for lam in LAMS:
                for l in (1, 2, 3):
                    res = 1e-8 if act == "tanh" else 1e-2
                    rows.append({"data": data, "activation": act, "λ": lam, "seed": 0, "layer": l, "residual": res,
                                 "reached": reached_all or act == "tanh"})
    return pd.DataFrame(rows)


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_residual_curves_one_panel_per_data_set_with_target_and_lambda_labels():
    fig = figs.residual_curves(curves(), ACTS, gd_steps=10, polish_tol=1e-7)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == list(ee.DATASETS)
    assert axes[0].get_yscale() == "log"
    texts = legend_texts(axes[-1])
    assert style.lambda_label(0.001) in texts and "relu" in texts
    assert any(np.allclose(line.get_ydata(), 1e-7) for line in axes[0].get_lines())  # the target


@pytest.mark.parametrize("reached_all", [False, True])
def test_layer_residuals_hollow_for_networks_that_missed(reached_all):
    fig = figs.layer_residuals(layers(reached_all), ACTS, polish_tol=1e-7)
    ax = fig.axes[0]
    faces = [line.get_markerfacecolor() for line in ax.get_lines() if line.get_marker() in figs.ACTIVATION_MARKERS]
    assert ("none" in faces) is not reached_all
    assert (style.hollow_handle().get_label() in legend_texts(fig.axes[-1])) is not reached_all


def test_side_by_side_draws_both_matrices_and_four_spectra():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((4, 5))
    pair = ee.EigenPair(W, W + 1e-6, 1e-6, 2e-6)
    rough = ee.EigenPair(W, W + 0.1 * rng.standard_normal((4, 5)), 0.1, 0.2)
    fig = figs.side_by_side(pair, rough, "tanh", "relu")
    spectra = fig.axes[2]
    assert len(spectra.get_lines()) == 4 and spectra.get_yscale() == "log"
    assert [im.get_array().shape for im in fig.axes[0].get_images()] == [(4, 5)]


def test_gradient_rank_one_panel_per_layer():
    rows, full = [], []
    for net in ee.RANK_NETWORKS:
        for l, (r, c) in {1: (5, 64), 2: (5, 5)}.items():
            for b in (1, 2, 4):
                rows.append({"network": net, "layer": l, "|B|": b, "batch": 0, "rank G_B": min(b, 4),
                             "bound": min(b, 5), "shape bound": min(b, r, c)})
            full.append({"network": net, "layer": l, "rank": 5})
    fig = figs.gradient_rank(pd.DataFrame(rows), pd.DataFrame(full), {1: (5, 64), 2: (5, 5)}, N=30)
    assert len(fig.axes) == 2 and "5 × 64" in fig.axes[0].get_title()
    assert fig.axes[0].get_xscale() == "log"


def test_alignment_three_panels():
    cos = pd.DataFrame([{"λ": lam, "seed": 0, "step": t, "cosine": 0.1} for lam in (0.0, 0.01) for t in range(2, 9)])
    win = pd.DataFrame([{"λ": lam, "seed": 0, "step": t, "effective rank": 3.0, "sum": 2.0, "single": 1.5}
                        for lam in (0.0, 0.01) for t in (4, 8)])
    fig = figs.alignment(cos, win, window=4, shape=(5, 6))
    assert len(fig.axes) == 3
    assert style.lambda_label(0.0) in legend_texts(fig.axes[1])
    assert "5 × 6" in fig.axes[2].get_ylabel()


def test_split_along_sgd_grid_and_stationary_diamonds():
    split = pd.DataFrame([{"λ": lam, "seed": 0, "step": t, "layer": l, **dict(zip(ee.SPLIT_COLUMNS[2:], (1, 2, 1, 0.5, 0, 3)))}
                          for lam in LAMS for t in (0, 4) for l in (1, 2)])
    runs = ee.SGDRuns(pd.DataFrame(), pd.DataFrame(), split, pd.DataFrame())
    stationary = pd.DataFrame([{"λ": lam, "layer": l, "lamW": 1.0, "A": 2.0, "B": 1.0, "R": 0.0} for lam in LAMS
                               for l in (1, 2)])
    fig = figs.split_along_sgd(ee.split_along_sgd(runs), stationary, sgd_steps=4)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 4 and panels[0].get_title() == f"layer $l = 1$, {style.lambda_label(0.001)}"
    diamonds = [line for line in panels[0].get_lines() if line.get_marker() == "D"]
    assert len(diamonds) == 3
    assert "stationary network (GD + L-BFGS)" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_k_minus_one_one_panel_per_layer():
    spectra = pd.DataFrame([{"network": net, "layer": l, "j": j, "ratio": 10.0 ** -j}
                            for net in ee.BIAS_NETWORKS for l in (1, 2, 3) for j in range(1, 5)])
    fig = figs.k_minus_one(spectra, K=4)
    assert [ax.get_title() for ax in fig.axes] == [f"layer $l = {l}$" for l in (1, 2, 3)]
    assert set(ee.BIAS_NETWORKS) <= set(legend_texts(fig.axes[0]))
