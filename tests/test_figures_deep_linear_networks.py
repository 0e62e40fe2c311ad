"""nrc_utils.figures.deep_linear_networks: the four figures of chapter 5, drawn from the tables of
exactly balanced forecast networks (no training)."""

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from nrc_utils import deep_linear, models  # noqa: E402
from nrc_utils.experiments import deep_linear_networks as exp  # noqa: E402
from nrc_utils.figures import deep_linear_networks as figs  # noqa: E402

SIGMA = [0.45, 0.2, 0.05]


def fake_runs(pb, missed=()):
    """Results whose weights are balanced factorisations of the forecast (perturbed a little, so that
    the imbalance is not exactly zero); ``missed``: the keys that 'missed' their target."""
    U, _, Vt = np.linalg.svd(pb.A, full_matrices=False)
    runs = {}
    for L in (2, 3):
        for lam in (0.01, 0.02):
            for sd in (0, 1):
                W = U @ np.diag(deep_linear.forecast_spectrum(SIGMA, lam, L)) @ Vt
                Ws = deep_linear.balanced_factorisation(W, L, width=3, seed=sd)
                model = models.deep_linear(pb.d, 3, L, pb.K, seed=sd).double()
                with torch.no_grad():
                    for layer, M in zip(models.weight_layers(model), Ws):
                        layer.weight.copy_(torch.as_tensor(M) * (1 + 1e-6 * (sd + 1)))
                miss = (L, lam, sd) in missed
                stop = "iteration cap" if miss else "target"
                runs[(L, lam, sd)] = SimpleNamespace(model=model, polish_stop=stop, stop=stop, reached=not miss,
                                                     min_eigenvalue=None, max_residual=1e-3 if miss else 1e-7,
                                                     final={"loss": 0.0})
    return runs


@pytest.fixture(scope="module", params=[(), ((3, 0.02, 1),)], ids=["all reached", "one missed"])
def comparison(request):
    pb = exp.whitened_problem(SIGMA, K=3, d=4, n_per_class=5, seed=0)
    return exp.compare_with_forecast(fake_runs(pb, request.param), pb, 1e-3), bool(request.param)


def legend_texts(legend):
    return [t.get_text() for t in legend.get_texts()]


def test_scalar_maps_one_line_style_per_branch():
    fig = figs.scalar_maps(exp.scalar_maps(0.01, 0.35, n=80), exp.thresholds(0.01, (1, 2, 3, 4)), 0.01)
    (ax,) = fig.get_axes()
    assert ax.get_title() == r"scalar problem, $\lambda = 0.01$"
    texts = legend_texts(ax.get_legend())
    assert texts[:4] == ["$L = 1$", "$L = 2$", "$L = 3$", "$L = 4$"] and r"jump threshold $\sigma_c$" in texts
    plt.close(fig)


def test_pieces_split_at_jumps_only():
    assert [list(p) for p in figs._pieces(np.array([0, 0, 0.1, 0.11]))] == [[0, 1], [2, 3]]
    assert len(figs._pieces(np.linspace(0, 1, 100))) == 1


def test_forecast_vs_trained(comparison):
    cmp, missed = comparison
    curves = exp.forecast_curves([0.01, 0.02], [2, 3], 0.5, n=100)
    fig = figs.forecast_vs_trained(curves, cmp.svs, cmp.nets)
    axes = fig.get_axes()
    assert len(axes) == 2 and axes[0].get_title().startswith("depth $L = 2$, residuals ≤ ")
    assert ("hollow: residual above target" in legend_texts(fig.legends[0])) == missed
    hollow = [len(c.get_facecolors()) == 0 or c.get_facecolors()[0][3] == 0 for ax in axes for c in ax.collections]
    assert any(hollow) == missed  # a hollow marker has no (or a transparent) face
    plt.close(fig)


def test_layer_spectra(comparison):
    cmp, missed = comparison
    fig = figs.layer_spectra(cmp.layers, cmp.nets, 0.02, 1)
    axes = fig.get_axes()
    assert [ax.get_title().split(",")[0] for ax in axes] == ["L = 2", "L = 3"]
    assert ("hollow: residual above target" in legend_texts(axes[1].get_legend())) == missed
    assert "forecast $0$" in legend_texts(axes[1].get_legend())  # 0.05 is set to zero at depth 3
    plt.close(fig)


def test_balance(comparison):
    cmp, missed = comparison
    fig = figs.balance(cmp.balance, cmp.nets)
    axes = fig.get_axes()
    assert len(axes) == 2 and all(ax.get_yscale() == "log" for ax in axes)
    texts = legend_texts(axes[-1].get_legend())
    assert texts[:2] == ["λ = 0.01", "λ = 0.02"] and ("hollow: residual above target" in texts) == missed
    plt.close(fig)
