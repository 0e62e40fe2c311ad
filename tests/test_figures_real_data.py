"""nrc_utils.figures.real_data (chapter 6): every figure draws from hand-made tables of the
experiment's shape, one row or panel per data set, hollow markers for networks that missed the
target, the residual in a title or the legend."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from nrc_utils import style  # noqa: E402
from nrc_utils.figures import real_data as figures  # noqa: E402

LAMBDAS = [0.003, 0.01, 0.03]
RESIDUAL = "max ρ ≤ 8.4e-05"


def _pol():
    rows = []
    for data in ("Digits", "MNIST"):
        for lam in LAMBDAS:
            for seed in (0, 1):
                for l in (1, 2, 3):
                    rows.append({"data": data, "stage": "polished", "lambda": lam, "seed": seed, "layer": l,
                                 "rank": 30 - 5 * l, "rel_tail": 0.0 if l == 3 else 0.1 * lam / l,
                                 "tcv2n": 0.6 / l + 0.01 * seed, "nc1": 1.0 + l, "test_acc": 0.9,
                                 "reached": seed == 0})
    return pd.DataFrame(rows)


def _trunc():
    rows = []
    for data in ("Digits", "MNIST"):
        for lam in LAMBDAS:
            for seed in (0, 1):
                for stage in ("sgd", "polished"):
                    for r in range(1, 65):
                        rows.append({"data": data, "stage": stage, "lambda": lam, "seed": seed, "r": r,
                                     "acc": min(0.95, 0.1 * r), "full": 0.95, "rmin": 10,
                                     "reached": stage == "polished" and seed == 0})
    return pd.DataFrame(rows)


@pytest.fixture(autouse=True)
def _close():
    style.setup()
    yield
    plt.close("all")


def _texts(fig):
    out = [t.get_text() for t in fig.texts] + [ax.get_title() for ax in fig.axes]
    for legend in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]:
        out += [t.get_text() for t in legend.get_texts()]
    return " ".join(out)


def _hollow_count(fig):
    n = 0
    for ax in fig.axes:
        for coll in ax.collections:
            fc = coll.get_facecolors()
            n += len(coll.get_offsets()) if len(fc) == 0 or (fc[:, 3] == 0).all() else 0
    return n


def test_layers_figure_one_row_per_data_set_hollow_misses_and_residual():
    fig = figures.layers_figure(_pol(), {"Digits": 10, "MNIST": 10}, LAMBDAS, RESIDUAL)
    assert len(fig.axes) == 2 * len(figures.LAYER_PANELS)
    assert RESIDUAL in _texts(fig) and "hollow: target missed" in _texts(fig)
    assert _hollow_count(fig) > 0
    assert fig.axes[1].get_yscale() == "log" and fig.axes[0].get_yscale() == "linear"


def test_rank_tcv_figure():
    pts = _pol()
    pts = pts[pts["rel_tail"] > 0]
    fig = figures.rank_tcv_figure(pts, LAMBDAS, RESIDUAL)
    assert len(fig.axes) == 4
    texts = _texts(fig)
    assert RESIDUAL in texts and "λ = 0.003" in texts and "$W_1$" in texts
    assert _hollow_count(fig) > 0
    assert fig.axes[0].get_xscale() == "log"


def test_truncation_figure_one_panel_per_data_set():
    fig = figures.truncation_figure(_trunc(), {"Digits": 10, "MNIST": 10}, LAMBDAS, RESIDUAL)
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    styles = {line.get_linestyle() for line in ax.get_lines()}
    assert {"-", "--", ":", "-."} <= styles  # reached, missed, SGD only, r = K
    assert "polished (max ρ ≤ 8.4e-05)" in _texts(fig)
    assert [t.get_text() for t in ax.get_xticklabels()][:3] == ["1", "2", "5"]


def test_polish_figure():
    both = pd.DataFrame({"lambda": LAMBDAS * 2, "rel_tail_sgd": [0.1, 0.2, 0.3, 0.01, 0.02, 0.03],
                         "rel_tail_pol": [0.01, 0.05, 0.1, 0.001, 0.002, 0.03],
                         "reached_pol": [True, True, False, True, False, True]})
    fig = figures.polish_figure(both, LAMBDAS, RESIDUAL)
    assert len(fig.axes) == 1 and _hollow_count(fig) == 2
    assert RESIDUAL in _texts(fig) and "no change" in _texts(fig)


def test_log_axis_labels_a_narrow_range():
    fig, ax = plt.subplots()
    ax.plot([1, 2], [0.09, 0.15])
    figures.log_axis(ax, "y")
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels and all("10^" not in s and "$" not in s for s in labels)
