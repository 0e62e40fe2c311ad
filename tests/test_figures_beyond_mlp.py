"""nrc_utils.figures.beyond_mlp (chapter 7): every figure draws from hand-made tables of the
experiments' shape, with its panels, hollow markers for networks above the tolerance and the
stationarity note in its title."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from nrc_utils import style  # noqa: E402
from nrc_utils.figures import beyond_mlp as figs  # noqa: E402

LAMS = [0.003, 0.01]
NOTE = "max ρ ≤ 8.2e-13, λ_min(H) from 1.0e-05 to 2.0e-03"


def setup_module():
    style.setup()


def test_stationarity_note_rounds_up():
    nets = pd.DataFrame({"residual": [8.11e-13, 2e-14], "min_eig": [1e-5, 2e-3]})
    assert figs.stationarity_note(nets) == NOTE


def _spectra():
    rows = []
    for lam in LAMS:
        for seed in (0, 1):
            for mat in ("conv1", "fc1"):
                for j in range(1, 5):
                    rows.append({"lam": lam, "seed": seed, "matrix": mat, "j": j, "rel": 10.0 ** -(j - 1) if j < 4 else 0.0,
                                 "reached": seed == 0})
    return pd.DataFrame(rows)


def test_spectra_figure():
    fig = figs.spectra_figure(_spectra(), LAMS, NOTE, "CNN")
    assert len(fig.axes) == 2 and NOTE in fig._suptitle.get_text()
    faces = [l.get_markerfacecolor() for l in fig.axes[0].lines]
    assert "none" in faces  # seed 1 missed the tolerance: hollow
    plt.close(fig)


def test_bounds_figure():
    rows = []
    for lam in LAMS:
        for mat in ("conv2", "fc1"):
            for part, K in (("k-means", 1), ("k-means", 2), ("class", 3)):
                rows.append({"lam": lam, "seed": 0, "matrix": mat, "partition": part, "K": K, "rel_tail": 0.1 / K,
                             "rel_bound_a": 0.9, "rel_bound_c": 5.0, "reached": True})
    fig = figs.bounds_figure(pd.DataFrame(rows), LAMS, NOTE, "CNN")
    assert len(fig.axes) == 2 and NOTE in fig._suptitle.get_text()
    assert fig.axes[0].get_yscale() == "log"
    plt.close(fig)


def test_residual_figure():
    mats = pd.DataFrame([{"lam": lam, "seed": s, "matrix": m, "rank": 4, "reached": s == 0}
                         for lam in LAMS for s in (0, 1) for m in ("W_in", "W_1,1", "W_out")])
    stream = pd.DataFrame([{"lam": lam, "seed": s, "l": l, "tcv2n_stream": 0.2 - 0.02 * l,
                            "tcv2n_branch": np.nan if l == 0 else 0.1} for lam in LAMS for s in (0, 1) for l in (0, 1, 2)])
    fig = figs.residual_figure(mats, stream, LAMS, 5, NOTE)
    assert len(fig.axes) == 2 and "Residual MLP" in fig._suptitle.get_text()
    plt.close(fig)


def test_attention_figure():
    svs = pd.DataFrame([{"lam": lam, "seed": 0, "j": j, "sv_M": [2.0, 0.5, 0.0][j - 1], "sv_G": [1, 1, 0.4][j - 1],
                         "reached": True} for lam in LAMS for j in (1, 2, 3)])
    prods = pd.DataFrame([{"lam": lam, "seed": 0, "rank_M": 2, "n_unit": 2, "reached": lam == 0.003} for lam in LAMS])
    fig = figs.attention_figure(svs, prods, LAMS, NOTE)
    assert len(fig.axes) == 3 and NOTE in fig._suptitle.get_text()
    assert fig.axes[1].lines[-1].get_ydata()[0] == 1.0 or any(
        np.allclose(l.get_ydata(), 1.0) for l in fig.axes[1].lines)
    plt.close(fig)
