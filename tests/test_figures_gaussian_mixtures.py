"""nrc_utils.figures.gaussian_mixtures: chapter 4's figures draw from small synthetic tables, in the book's style."""

import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from nrc_utils import style  # noqa: E402
from nrc_utils.experiments import gaussian_mixtures as gm  # noqa: E402
from nrc_utils.figures import gaussian_mixtures as figs  # noqa: E402

S, LAM, HIDDEN = [0.05, 0.1, 0.2], [0.003, 0.012], [1, 2]


@pytest.fixture(autouse=True)
def _close():
    style.setup()
    yield
    plt.close("all")


def _tails(missed=()):
    rows = []
    for s, lam, l in itertools.product(S, LAM, HIDDEN):
        rows.append({"s": s, "lambda": lam, "layer": l, "seed": 0, "rank": 3 + int(s > 0.1) + l,
                     "tail": 10 * s ** 2 / lam ** 0.5 * l, "reached": (s, lam) not in missed,
                     "resolved": s > 0.05})
    return pd.DataFrame(rows)


def _prop(reached=True):
    t = _tails()
    return pd.DataFrame({"s": t["s"], "layer": t["layer"], "reached": reached, "tcv2_out": t["tail"] ** 2,
                         "bound_sqrt_tcv2": 2 * t["tail"], "tcv1_out": t["tail"], "bound_tcv1": 3 * t["tail"]})


def _legend_labels(fig):
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return [t.get_text() for lg in legends for t in lg.get_texts()]


def test_input_tcv_two_panels_with_the_expectation_at_every_d():
    out = gm.input_tcv(2, 4, [2, 8], [0.1, 1.0], 3)
    fig = figs.input_tcv(out.draws, out.expected)
    assert len(fig.axes) == 2
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["2", "8"]
    assert "expectation (proposition)" in _legend_labels(fig)
    assert fig.get_figwidth() <= style.MAX_WIDTH


def test_propagation_hollow_markers_only_when_a_network_missed():
    fig = figs.propagation(_prop(), S, HIDDEN)
    labels = _legend_labels(fig)
    assert "s = 0.05" in labels and "layer l = 2" in labels and "measured = bound" in labels
    assert not any(lab.startswith("hollow") for lab in labels)
    fig = figs.propagation(_prop(reached=False), S, HIDDEN)
    assert "hollow: ρ above target" in _legend_labels(fig)
    faces = [c.get_facecolors() for c in fig.axes[0].collections]
    assert all(len(f) == 0 or f[0][3] == 0 for f in faces)  # every marker hollow


def test_phase_diagram_panels_and_hatched_missed_cells():
    t = _tails(missed={(0.2, 0.003)})
    fig = figs.phase_diagram(t, S, LAM, HIDDEN, 1e-3)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 2 * len(HIDDEN) and len(fig.axes) == len(panels) + 2  # one colour bar per row
    assert [ax.get_title() for ax in panels[:2]] == ["$W_1$", "$W_2$"]
    hatched = [p for ax in panels for p in ax.patches if p.get_hatch() == "///"]
    assert len(hatched) == 2 * len(HIDDEN)  # one missed cell per panel
    assert figs.phase_diagram(_tails(), S, LAM, HIDDEN, 1e-3).get_figwidth() <= style.MAX_WIDTH


def test_slopes_filled_only_where_fitted_and_the_bound_exponent_dashed():
    fig = figs.slopes(_tails(), S, LAM, HIDDEN, {"s": 1.0, "lambda": -2.5})
    assert len(fig.axes) == 2
    labels = _legend_labels(fig)
    assert "slope 1 (a priori bound)" in labels and "slope -2.5 (a priori bound)" in labels
    assert "hollow: not fitted" in labels and "W₁" in labels and "λ = 0.003" in labels and "s = 0.2" in labels
    dashed = [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 1
    # the reference line ends at the top of the data
    assert dashed[0].get_ydata().max() == pytest.approx(_tails()["tail"].max())
    # filled markers: the resolved points of networks at their target (s > 0.05 here)
    filled = [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "None"]
    assert sum(len(ln.get_xdata()) for ln in filled) == int((_tails()["s"] > 0.05).sum())
    assert np.all(np.concatenate([ln.get_xdata() for ln in filled]) > 0.05)
