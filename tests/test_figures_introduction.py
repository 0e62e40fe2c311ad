"""nrc_utils.figures.introduction: the three figures of chapter 1 from small hand-made tables."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from nrc_utils.figures import introduction as figs  # noqa: E402


def status(reached=True):
    return pd.DataFrame([{"net": "nowd", "lam": 0.0, "residual": np.nan, "reached": None},
                         {"net": "wd", "lam": 0.01, "residual": 2.4e-6 if reached else 3e-3, "reached": reached}])


def spectra():
    rows = []
    for net in ("nowd", "wd"):
        for layer, (r, c) in enumerate([(4, 5), (4, 4), (3, 4)], start=1):
            s = np.sort(np.random.default_rng(layer).uniform(0.01, 1, min(r, c)))[::-1]
            rows += [{"net": net, "lam": 0.0 if net == "nowd" else 0.01, "layer": layer, "rows": r, "cols": c,
                      "j": j, "sigma": v, "sigma_rel": v / s[0]} for j, v in enumerate(s, start=1)]
    return pd.DataFrame(rows)


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


@pytest.mark.parametrize("reached", [True, False])
def test_layer_spectra_one_panel_per_layer_with_the_residual_in_the_legend(reached):
    fig = figs.layer_spectra(spectra(), status(reached), K=3, rank_rtol=1e-3)
    axes = fig.get_axes()
    assert len(axes) == 3 and axes[0].get_title() == "$W_1$ (4×5)"
    texts = legend_texts(axes[-1])
    assert texts[0] == "λ = 0" and texts[1].startswith("λ = 0.01, residual ")
    assert ("hollow: residual above target" in texts) == (not reached)
    wd_line = axes[0].get_lines()[1]
    assert (wd_line.get_markerfacecolor() == "none") == (not reached)
    plt.close(fig)


@pytest.mark.parametrize("reached", [True, False])
def test_feature_collapse_two_panels(reached):
    frame = pd.DataFrame([{"net": n, "lam": lam, "layer": l, "tcv2_normalised": 0.5 / (l + 1), "nc1": 1.0 + l}
                          for n, lam in (("nowd", 0.0), ("wd", 0.01)) for l in range(3)])
    fig = figs.feature_collapse(frame, status(reached))
    left, right = fig.get_axes()
    assert right.get_yscale() == "log"
    assert [t.get_text() for t in left.get_xticklabels()] == ["$h_0$", "$h_1$", "$h_2$"]
    assert ("hollow: residual above target" in legend_texts(left)) == (not reached)
    plt.close(fig)


def test_truncation_accuracy_log_ranks_with_plain_ticks():
    frame = pd.DataFrame([{"net": n, "lam": lam, "r": r, "accuracy": min(1.0, 0.2 * r)}
                          for n, lam in (("nowd", 0.0), ("wd", 0.01)) for r in range(1, 13)])
    fig = figs.truncation_accuracy(frame, status(), K=10)
    (ax,) = fig.get_axes()
    assert ax.get_xscale() == "log"
    assert list(ax.get_xticks()) == [1, 2, 5, 10]
    assert "r = K = 10" in legend_texts(ax)
    plt.close(fig)
