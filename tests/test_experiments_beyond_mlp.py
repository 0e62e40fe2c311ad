"""nrc_utils.experiments.beyond_mlp (chapter 7): the three drivers on tiny sizes (tables, columns, the
bounds, the symmetry counts), the data helpers and their fallback, the parameter relations."""

import numpy as np
import pandas as pd
import pytest

from nrc_utils import data
from nrc_utils.experiments import beyond_mlp as exp
from nrc_utils.params import ParameterError

TINY = dict(seed=0, n_seeds=1, activation="tanh", loss="ce",
            cnn_dataset="digits", cnn_classes=2, cnn_per_class=4, cnn_channels=[2, 3], cnn_kernel=3, cnn_pool=1,
            cnn_hidden=4, cnn_bias=False, cnn_lambdas=[0.03], kmeans_sizes=[1, 2],
            res_classes=2, res_per_class=4, res_width=4, res_branch_width=3, res_blocks=1, res_lambdas=[0.03],
            att_K=2, att_T=3, att_d=5, att_d_k=3, att_d_v=2, att_per_class=5, att_signal=2.0, att_noise=0.5,
            att_lambdas=[0.05], lbfgs_tol=1e-6, tol=1e-12, claim_tol=1e-9, lbfgs_max_iter=500, newton_max_iter=12,
            max_seconds=20.0, rank_rtol=1e-3, train_device="cpu")


@pytest.fixture
def p(tmp_path, monkeypatch):
    monkeypatch.setenv("NRC_CACHE_DIR", str(tmp_path))
    return exp.PARAMETERS.check(TINY)


def test_cnn_experiment_tables(p):
    r = exp.cnn_experiment(p, [0], "cpu")
    assert list(r.nets["lam"]) == [0.03] and r.nets["n_params"].iloc[0] == 18 + 54 + 12 * 4 + 8
    assert set(r.matrices["matrix"]) == {"conv1", "conv2", "fc1", "fc2"}
    assert (r.matrices["grad_error"] < 1e-12).all()
    assert (r.matrices["rank_grad"] <= np.minimum(r.matrices["rank_U"], r.matrices["rank_D"])).all()
    assert r.bounds["holds"].all() and set(r.bounds["partition"]) == {"class", "k-means"}
    assert set(r.spectra.columns) >= {"matrix", "j", "sigma", "rel", "reached"}
    assert r.data.name == "digits" and r.data.X.shape == (8, 1, 8, 8)
    if r.nets["reached"].iloc[0]:  # stationary: lambda W = -grad, so the ranks agree
        assert (r.matrices["rank"] == r.matrices["rank_grad"]).all()


def test_residual_experiment_tables(p):
    r = exp.residual_experiment(p, [0], "cpu")
    assert list(r.matrices["matrix"]) == ["W_in", "W_1,1", "W_1,2", "W_out"]
    assert len(r.stream) == 2 and r.stream["growth"].iloc[1] <= r.stream["growth_bound"].iloc[1]
    row = r.nets.iloc[0]
    assert row["predicted_zero_eigs"] == exp.rotation_dim(4, int(row["stream_rank"]))
    if row["reached"]:
        assert row["n_zero_eigs"] >= row["predicted_zero_eigs"]


def test_attention_experiment_tables(p):
    r = exp.attention_experiment(p, [0], "cpu")
    prod = r.products.iloc[0]
    assert r.N == 10 and len(r.svs) == 5
    assert prod["identity_error"] < 1e-12 and prod["grad_check"] < 1e-12
    if prod["reached"]:
        assert prod["imbalance"] < 1e-8 and prod["rank_M"] <= prod["n_unit"]
        assert r.nets.iloc[0]["n_zero_eigs"] >= r.nets.iloc[0]["predicted_zero_eigs"] - 0


def test_rotation_dim_and_trend():
    assert exp.rotation_dim(8, 5) == 25 and exp.rotation_dim(8, 8) == 28 and exp.rotation_dim(8, 0) == 0
    assert exp.rotation_dim(12, 4) == 38
    frame = pd.DataFrame({"matrix": ["a"] * 3 + ["b"] * 3 + ["c"] * 2, "lam": [1, 2, 3, 1, 2, 3, 1, 2],
                          "rank": [5, 4, 3, 2, 2, 2, 1, 2], "reached": [True] * 8})
    t = exp.lambda_trend(frame, "rank")
    assert t["a"] == pytest.approx(-1.0) and np.isnan(t["b"]) and np.isnan(t["c"])


def test_image_data_subsets_and_fallback(monkeypatch):
    img = exp.image_data("digits", 3, 5, seed=1)
    assert img.X.shape == (15, 1, 8, 8) and sorted(set(img.y.tolist())) == [0, 1, 2]
    assert abs(float(img.X.mean())) < 1e-12 and float(img.X.std()) == pytest.approx(1.0)

    def absent(*a, **k):
        raise data.DataNotFoundError("no Fashion-MNIST files in data/FashionMNIST/raw")

    monkeypatch.setattr(data, "load", absent)
    img = exp.image_data("fashion_mnist", 2, 3, seed=0)
    assert img.name == "digits" and img.asked == "fashion_mnist" and "FashionMNIST" in img.absent
    with pytest.raises(ValueError, match="fewer than"):
        exp.image_data("digits", 2, 500, seed=0)
    X, y = exp.digits_flat(2, 3, seed=0)
    assert X.shape == (6, 64) and y.tolist() == [0, 0, 0, 1, 1, 1]


def test_parameter_relations():
    with pytest.raises(ParameterError, match="att_d"):
        exp.PARAMETERS.check({**TINY, "att_d": 4, "att_K": 3})
    with pytest.raises(ParameterError, match="cnn_kernel"):
        exp.PARAMETERS.check({**TINY, "cnn_kernel": 5})
    assert exp.solver(exp.PARAMETERS.check(TINY)).tol == 1e-12
