"""nrc_utils.experiments.real_data (chapter 6): the parameter rules refuse bad values in one line
and allow both profiles; the driver keeps absent data sets as the loader's sentence, flattens and
standardises image sets; a tiny digits run gives tidy tables whose summaries follow their
definitions (and are NaN, not errors, when no network reached its target)."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from nrc_utils import data, params, train
from nrc_utils.experiments import real_data as rd

ROOT = Path(__file__).resolve().parents[1]


def _profile(name):
    import sys

    sys.path.insert(0, str(ROOT / "ci"))
    import project  # the runner's own reading of the profiles (YAML 1.2 floats such as 1e-4)

    return dict(project.load_profile(ROOT, name)[rd.STEM])


# --------------------------------------------------------------------------------------
# Parameter rules
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", ["ci", "paper"])
def test_both_profiles_are_allowed_and_every_parameter_has_a_rule(profile):
    values = _profile(profile)
    assert set(rd.PARAMETERS.names) == set(values)
    assert rd.PARAMETERS.check(values) == values


BAD = [
    ("seed", -1), ("n_seeds", 0),
    ("datasets", []), ("datasets", ["digits", "imagenet"]), ("datasets", ["gaussian_mixture"]),
    ("datasets", ["digits", "digits"]),
    ("test_fraction", 0.0), ("test_fraction", 1.0), ("test_fraction", math.nan),
    ("max_train", 0), ("max_train", 5), ("max_test", 0),
    ("widths", []), ("widths", [64, 0]),
    ("activation", "relu"), ("activation", "sigmoid"), ("loss", "hinge"),
    ("lambdas", []), ("lambdas", [0.0, 0.01]), ("lambdas", [-0.01]), ("lambdas", [math.inf]),
    ("lambdas", [0.01, 0.01]),
    ("lr", 0.0), ("lr", math.nan), ("momentum", -0.1), ("momentum", 1.0),
    ("batch_size", 0), ("steps", 0),
    ("polish_tol", 0.0), ("polish_tol", -1e-4), ("polish_max_iter", 0),
    ("polish_max_seconds", 0.0), ("polish_max_seconds", math.inf),
    ("train_device", "tpu"), ("rank_rtol", 0.0), ("rank_rtol", 1.0),
    ("trunc_tolerance", -0.01), ("trunc_tolerance", math.nan),
    ("test_fraction", 0.001),  # no digits class keeps a test image
    ("test_fraction", 0.999),  # no digits class keeps a training image
]


@pytest.mark.parametrize("name, value", BAD)
def test_each_bad_value_is_one_line_naming_the_parameter(name, value):
    values = {**_profile("ci"), name: value}
    with pytest.raises(params.ParameterError) as err:
        rd.PARAMETERS.check(values)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{rd.STEM}.{name} = {value!r}: ")


def test_the_runner_finds_the_rules():
    from nrc_utils import experiments

    assert experiments.rules()[rd.STEM] is rd.PARAMETERS
    with pytest.raises(params.ParameterError, match="06_real_data.lambdas"):
        experiments.check_parameters(rd.STEM, {**_profile("ci"), "lambdas": []})


def test_a_split_without_digits_needs_no_digits_rule():
    rd.PARAMETERS.check({**_profile("ci"), "datasets": ["mnist"], "test_fraction": 0.001})


def test_every_real_data_set_of_the_loader_is_allowed():
    assert set(rd.REAL_DATA_SETS) == set(data.NAMES) - {"gaussian_mixture"}
    assert set(rd.REAL_DATA_SETS) <= set(rd.TITLES)


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------

def test_digits_split_per_class_and_standardised_with_training_statistics():
    tr, te = rd.prepare("digits", 0.3, 2000, 1000, seed=0)
    assert tr.X.shape[1] == te.X.shape[1] == 64 and len(tr) + len(te) == 1797
    n = np.bincount(data.digits(standardize=False).y.numpy(), minlength=10)
    np.testing.assert_array_equal(np.bincount(te.y.numpy(), minlength=10), np.round(0.3 * n))
    X = tr.X.double()
    assert X.mean(0).abs().max() < 1e-5
    std = X.std(0, unbiased=False)
    assert ((std - 1).abs() < 1e-4).logical_or(std < 1e-6).all()  # constant pixels only centred


def test_an_absent_set_becomes_the_loaders_sentence(monkeypatch, tmp_path):
    monkeypatch.setenv("NRC_DATA_ROOT", str(tmp_path))
    if data.available("cifar10"):
        pytest.skip("CIFAR-10 is installed system-wide here")
    sets = rd.load_data_sets(["digits", "cifar10"], 0.3, 100, 50, seed=0)
    assert list(sets.present) == ["digits"] and sets.ref == "digits"
    row = sets.absent.iloc[0]
    assert (row["name"], row["title"], row["kind"]) == ("cifar10", "CIFAR-10", "absent")
    assert "\n" not in row["reason"] and not row["reason"].endswith(".") and row["reason"]
    assert list(sets.overview["data set"]) == ["Digits"]


def test_an_unreadable_set_is_kept_apart_and_none_present_falls_back_to_digits(monkeypatch):
    corrupt = data.DataCorruptError
    real_load = data.load

    def load(name, *a, **kw):
        if name == "mnist":
            raise corrupt("/x/train-images-idx3-ubyte.gz is truncated; copy it again.")
        return real_load(name, *a, **kw)

    monkeypatch.setattr(data, "load", load)
    sets = rd.load_data_sets(["mnist", "digits"], 0.3, 100, 50, seed=0)
    assert list(sets.present) == ["digits"]
    expected = "absent" if corrupt is data.DataNotFoundError else "unreadable"
    assert sets.absent.iloc[0]["kind"] == expected
    assert sets.absent.iloc[0]["reason"] == "/x/train-images-idx3-ubyte.gz is truncated; copy it again"
    assert not sets.fallback
    none = rd.load_data_sets(["mnist"], 0.3, 100, 50, seed=0)  # the chapter goes on, on digits, and says so
    assert none.fallback and list(none.present) == [rd.FALLBACK] == ["digits"] and none.ref == "digits"
    assert list(none.absent["name"]) == ["mnist"] and list(none.overview["data set"]) == ["Digits"]
    assert none.absent.iloc[0]["hint"] == ""


def test_every_requested_set_absent_goes_on_with_one_sentence_each(monkeypatch, tmp_path):
    from nrc_utils.prose import real_data as prose

    monkeypatch.setenv("NRC_DATA_ROOT", str(tmp_path))
    monkeypatch.setattr(data, "SYSTEM_DATA_DIRS", ())  # as on a machine without Debian's package
    sets = rd.load_data_sets(["fashion_mnist", "cifar10"], 0.3, 100, 50, seed=0)
    assert sets.fallback and list(sets.present) == ["digits"]
    assert list(sets.absent["kind"]) == ["absent", "absent"]
    hint = sets.absent.iloc[0]["hint"]
    assert hint == rd.INSTALL_HINTS["fashion_mnist"] and "apt-get install dataset-fashion-mnist" in hint
    text = prose.absent_sentence(sets.absent.to_dict("records"), rd.title(rd.FALLBACK))
    assert "\n" not in text and text.count("**") == 6  # two sets, then the fallback, each in bold
    assert "FashionMNIST/raw" in text and str(tmp_path) in text  # where to put the files
    assert text.endswith(prose.fallback_sentence(True, "Digits"))


def test_digits_balance_rows_give_the_unequal_class_sizes():
    sets = rd.load_data_sets(["digits"], 0.3, 100, 50, seed=0)
    row = sets.balance.iloc[0]
    assert (row["title"], row["split"], row["train_min"], row["train_max"]) == ("Digits", "per class", 122, 128)
    assert list(sets.overview.columns[-2:]) == ["train per class", "test per class"]
    assert sets.overview.iloc[0]["train per class"] == "122–128"


@pytest.mark.skipif(not data.available("fashion_mnist"), reason="Fashion-MNIST is not installed here")
def test_the_fashion_mnist_subset_of_the_ci_profile_is_class_balanced():
    ci = _profile("ci")
    sets = rd.load_data_sets(["fashion_mnist"], ci["test_fraction"], ci["max_train"], ci["max_test"], seed=ci["seed"])
    tr, te = sets.present["fashion_mnist"]
    # 6000 training and 1000 test images per class: round(max / N * n_c) of each class, equal for all
    assert (rd.class_sizes(tr) == ci["max_train"] // 10).all() and (rd.class_sizes(te) == ci["max_test"] // 10).all()
    assert (len(tr), len(te)) == (ci["max_train"], ci["max_test"])
    row = sets.balance.iloc[0]
    assert (row["split"], row["train_min"], row["train_max"], row["test_min"], row["test_max"]) == (
        "subset", ci["max_train"] // 10, ci["max_train"] // 10, ci["max_test"] // 10, ci["max_test"] // 10)
    assert not sets.fallback and sets.absent.empty


def test_the_paper_profile_asks_for_every_image_of_fashion_mnist():
    paper = _profile("paper")
    assert "fashion_mnist" in paper["datasets"] and paper["max_train"] >= 60000 and paper["max_test"] >= 10000


@pytest.mark.skipif(not data.available("fashion_mnist"), reason="Fashion-MNIST is not installed here")
def test_image_sets_are_subsampled_flattened_and_standardised():
    tr, te = rd.prepare("fashion_mnist", 0.3, 60, 30, seed=0)
    assert tr.X.ndim == 2 and tr.X.shape[1] == 784 and tr.K == 10
    assert 50 <= len(tr) <= 70 and 20 <= len(te) <= 40
    assert set(tr.y.tolist()) == set(range(10))
    assert tr.X.double().mean(0).abs().max() < 1e-5


# --------------------------------------------------------------------------------------
# A tiny run on digits
# --------------------------------------------------------------------------------------

LAMBDAS = [0.01, 0.03]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("NRC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    try:
        sets = rd.load_data_sets(["digits"], 0.3, 100, 50, seed=0)
        cfg = rd.sgd_config("ce", lr=0.05, momentum=0.9, batch_size=64, steps=30, polish_tol=1e-3,
                            polish_max_iter=40, polish_max_seconds=10.0)
        training = rd.train_networks(sets, [12, 12], "tanh", LAMBDAS, [0], cfg, device="cpu")
        meas = rd.layer_measures(sets, training, 1e-3)
        trunc = rd.truncation_table(sets, training, [1, 2, 5, 10, 12], 0.01)
    finally:
        mp.undo()
    return sets, training, meas, trunc


def test_training_has_both_stages_per_lambda_and_seed(run):
    sets, training, meas, trunc = run
    net = training.networks
    assert len(net) == 4 and sorted(net["stage"].unique()) == ["polished", "sgd"]
    assert not net[net["stage"] == "sgd"]["reached"].any()
    pol = net[net["stage"] == "polished"]
    assert list(pol["reached"]) == [s == "target" for s in pol["polish_stop"]]
    for (name, stage, lam, seed), r in training.results.items():
        assert r.config.lam == lam and (r.config.steps == 0) == (stage == "polished")
    # polishing starts from the SGD weights: the polished net is the SGD net plus L-BFGS steps
    assert (pol["max_rho"].to_numpy() < net[net["stage"] == "sgd"]["max_rho"].to_numpy()).all()


def test_layer_measures_follow_their_definitions(run):
    sets, training, meas, trunc = run
    assert len(meas) == 4 * 3 and list(meas["layer"].unique()) == [1, 2, 3]
    assert set(meas["shape"]) == {"12×64", "12×12", "10×12"}
    last = meas[meas["layer"] == 3]
    assert (last["rel_tail"] == 0).all()  # W_L has K rows: rank K already
    assert ((meas["tcv2n"] > 0) & (meas["tcv2n"] < 1)).all()
    assert (meas["rank"] <= 12).all() and (meas["rank"] >= 1).all()
    r = training.results["digits", "polished", 0.03, 0]
    np.testing.assert_allclose(meas[(meas["stage"] == "polished") & (meas["lambda"] == 0.03)]["rho"], r.residuals)


def test_summaries_of_a_run(run):
    sets, training, meas, trunc = run
    s = rd.layer_summary(meas, "Digits", 3, LAMBDAS)
    assert s.hidden == [2] and set(s.falling) | set(s.rising) <= {2}
    corr = rd.rank_tcv_correlation(meas, "Digits", s.hidden)
    assert (corr.points["rel_tail"] > 0).all() and (corr.points["stage"] == "polished").all()
    assert corr.n_points == int(corr.points["reached"].sum())
    both = rd.polish_comparison(meas, "Digits", s.hidden)
    assert len(both.both) == 2 * 2 and 0 <= both.numbers["polish_frac_lower"] <= 1
    assert set(trunc["r"]) == {1, 2, 5, 10, 12} and len(trunc) == 4 * 5
    full = trunc[trunc["r"] == 12]
    np.testing.assert_allclose(full["acc"], full["full"])  # no layer has rank above 12
    cut = rd.truncation_summary(trunc, "Digits", 10, s.lam_lo, s.lam_hi)
    assert cut["trunc_sgd_rmin_lo"] in {1, 2, 5, 10, 12}


# --------------------------------------------------------------------------------------
# Summaries on hand-made tables
# --------------------------------------------------------------------------------------

def _meas(reached=True):
    """Two lambdas x two seeds, L = 4 layers, made-up values with known medians."""
    rows = []
    for lam in (0.01, 0.1):
        for seed in (0, 1):
            for stage in ("sgd", "polished"):
                for l in (1, 2, 3, 4):
                    big = lam == 0.01
                    rows.append({"data": "Digits", "stage": stage, "lambda": lam, "seed": seed, "layer": l,
                                 "rank": (30 if l == 1 else 12 + seed) if big else (15 if l == 1 else 10 + seed),
                                 "rel_tail": 0.0 if l == 4 else (0.1 if big else 0.01) * (2 if stage == "sgd" else 1),
                                 "tcv2n": 0.5 / l + (0.1 if big else 0.0) + 0.01 * seed,
                                 "nc1": 1.0 * l + (0.0 if big else 1.0),
                                 "test_acc": 0.9 + 0.01 * seed, "rho": 1e-5, "max_rho": 1e-5,
                                 "reached": reached and stage == "polished"})
    return pd.DataFrame(rows)


def test_layer_summary_reads_the_ends_of_the_lambda_grid():
    s = rd.layer_summary(_meas(), "Digits", 4, [0.01, 0.1])
    assert (s.lam_lo, s.lam_hi, s.hidden) == (0.01, 0.1, [2, 3])
    n = s.numbers
    assert (n["dig_rank_hidden_lo"], n["dig_rank_hidden_lo_max"], n["dig_rank_hidden_hi_min"], n["dig_rank_hidden_hi"]) \
        == (12, 13, 10, 11)
    assert (n["dig_rank_W1_lo"], n["dig_rank_W1_hi"]) == (30, 15)
    assert n["dig_tail_hidden_lo"] == pytest.approx(0.1) and n["dig_tail_hidden_hi"] == pytest.approx(0.01)
    assert s.falling == [2, 3] and s.rising == []
    assert s.tcv_up is False and s.nc1_up is True and s.n_networks == 4
    assert n["tcv_pixels"] == pytest.approx(np.median([0.6, 0.61, 0.5, 0.51]))


def test_without_a_network_at_the_target_everything_is_nan_not_an_error():
    meas = _meas(reached=False)
    s = rd.layer_summary(meas, "Digits", 4, [0.01, 0.1])
    assert (s.lam_lo, s.lam_hi) == (0.01, 0.1) and s.tcv_up is None and s.nc1_up is None and s.n_networks == 0
    assert all(math.isnan(v) for v in s.numbers.values())
    corr = rd.rank_tcv_correlation(meas, "Digits", s.hidden)
    assert corr.n_points == 0 and math.isnan(corr.spearman_tail) and corr.within == {}
    both = rd.polish_comparison(meas, "Digits", s.hidden)
    assert math.isnan(both.numbers["pol_rank_hidden_med"]) and both.numbers["sgd_rank_hidden_med"] == 11.5
    assert both.numbers["polish_tail_ratio_med"] == pytest.approx(0.5) and both.numbers["polish_frac_lower"] == 1.0


def test_rank_tcv_correlation_across_and_within_layers():
    corr = rd.rank_tcv_correlation(_meas(), "Digits", [2, 3])
    assert corr.n_points == 12  # 3 layers with more than K rows x 2 lambdas x 2 seeds
    assert corr.spearman_tail > 0.3
    assert set(corr.within) == {2, 3} and all(v > 0 for v in corr.within.values())


def _trunc(reached=True):
    rows = []
    for lam, need in ((0.01, 5), (0.1, 2)):
        for seed in (0, 1):
            for stage in ("sgd", "polished"):
                for r in (1, 2, 5, 10):
                    acc = 0.9 if r >= need else 0.5
                    rows.append({"data": "Digits", "stage": stage, "lambda": lam, "seed": seed, "r": r, "acc": acc,
                                 "full": 0.9, "rmin": need, "reached": reached and stage == "polished"})
    return pd.DataFrame(rows)


def test_truncation_summary_medians_and_trend():
    cut = rd.truncation_summary(_trunc(), "Digits", 10, 0.01, 0.1)
    assert (cut["trunc_rmin_lo"], cut["trunc_rmin_hi"], cut["trunc_sgd_rmin_lo"]) == (5, 2, 5)
    assert cut["trunc_accK_hi"] == 0.9 and cut["trunc_full_lo"] == 0.9
    assert cut["rmin_trend"] < 0
    flat = _trunc()
    flat["rmin"] = 5
    assert rd.truncation_summary(flat, "Digits", 10, 0.01, 0.1)["rmin_trend"] == 0.0
    none = rd.truncation_summary(_trunc(reached=False), "Digits", 10, 0.01, 0.1)
    assert math.isnan(none["rmin_trend"]) and math.isnan(none["trunc_rmin_lo"])
    assert none["trunc_sgd_rmin_lo"] == 5


def test_lambda_trend_and_spearman_edge_cases():
    f = pd.DataFrame({"layer": [1, 1, 1, 2, 2, 2], "lambda": [1, 2, 3, 1, 2, 3], "v": [3, 2, 1, 5, 5, 5]})
    assert rd.lambda_trend(f, "v") == {1: -1.0}
    assert math.isnan(rd.spearman([1, 2], [2, 1])) and math.isnan(rd.spearman([1, 1, 1], [1, 2, 3]))
    assert rd.spearman([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)


def test_config_and_device():
    cfg = rd.sgd_config("ce", 0.05, 0.9, 64, 1500, 1e-4, 3000, 8.0)
    assert isinstance(cfg, train.TrainConfig) and cfg.record_every == 300 and cfg.validate()
    assert rd.training_device("cpu", 0) == torch.device("cpu")


# --------------------------------------------------------------------------------------
# One data set against another
# --------------------------------------------------------------------------------------

def _two_sets():
    """_meas / _trunc for Digits and a second set whose hidden layers reach rank 8 at the larger lambda."""
    m, t = _meas(), _trunc()
    m2, t2 = m.copy(), t.copy()
    m2["data"], t2["data"] = "Fashion-MNIST", "Fashion-MNIST"
    m2.loc[(m2["lambda"] == 0.1) & m2["layer"].isin([2, 3]), "rank"] = 8
    return pd.concat([m, m2], ignore_index=True), pd.concat([t, t2], ignore_index=True)


def test_set_findings_per_data_set():
    meas, trunc = _two_sets()
    a = rd.set_findings(meas, trunc, "Digits", 10, 1258, 4, [0.01, 0.1])
    b = rd.set_findings(meas, trunc, "Fashion-MNIST", 10, 200, 4, [0.01, 0.1])
    assert (a["n_networks"], a["n_reached"], a["trend"], a["K"], a["n_train"]) == (4, 4, "falls", 10, 1258)
    assert (a["rank_hidden_lo"], a["rank_hidden_lo_max"], a["rank_hidden_hi_min"], a["rank_hidden_hi"]) == (12, 13, 10, 11)
    assert (b["rank_hidden_hi_min"], b["rank_hidden_hi"]) == (8, 8)
    assert a["tail_hidden_lo"] == pytest.approx(0.1) and a["tail_hidden_hi"] == pytest.approx(0.01)
    assert a["spearman_tail"] > 0.3 and (a["rmin_lo"], a["rmin_hi"]) == (5, 2) and a["rmin_trend"] < 0
    assert a["accK_hi"] == 0.9 and a["full_hi"] == 0.9 and a["tcv_up"] is False and a["nc1_up"] is True
    assert a["tcv_last_hi"] == pytest.approx(np.median([0.125, 0.135]))
    table = rd.findings_table([a, b])
    assert list(table["data set"]) == ["Digits", "Fashion-MNIST"]
    assert list(table["reached target"]) == ["4 of 4", "4 of 4"]
    assert list(table["hidden layers' rank, largest λ"]) == ["10–11", "8"]
    assert table.iloc[0]["r needed, smallest → largest λ"] == "5 → 2"
    assert table.iloc[0]["test accuracy, largest λ (cut to K)"] == "90.0% (90.0%)"


def test_set_findings_without_a_network_at_the_target():
    meas, trunc = _meas(reached=False), _trunc(reached=False)
    f = rd.set_findings(meas, trunc, "Digits", 10, 1258, 4, [0.01, 0.1])
    assert (f["n_networks"], f["n_reached"], f["trend"], f["tcv_up"]) == (4, 0, None, None)
    assert math.isnan(f["spearman_tail"]) and math.isnan(f["rank_hidden_hi"]) and math.isnan(f["accK_hi"])
    row = rd.findings_table([f]).iloc[0]
    assert row["reached target"] == "0 of 4"
    assert row.drop(["data set", "reached target"]).isna().all()


def test_set_findings_trend_rises_and_flat():
    meas, trunc = _meas(), _trunc()
    up = meas.copy()
    up.loc[(up["lambda"] == 0.1) & (up["layer"] == 3), "rel_tail"] = 1.0  # W_3 moves away from rank K
    assert rd.set_findings(up, trunc, "Digits", 10, 1, 4, [0.01, 0.1])["trend"] == "rises"
    flat = meas.copy()
    flat.loc[flat["layer"] == 3, "rel_tail"] = 0.05  # constant in lambda: neither falls nor rises
    assert rd.set_findings(flat, trunc, "Digits", 10, 1, 4, [0.01, 0.1])["trend"] == "flat"
