"""nrc_utils.prose.beyond_mlp (chapter 7): every sentence-building branch, the empty cases and the
contradictions."""

import math

import pandas as pd

from nrc_utils.prose import beyond_mlp as prose

NAN = math.nan


def _nets(stops, residuals, reached, **cols):
    return pd.DataFrame({"stop": stops, "residual": residuals, "reached": reached, **cols})


def test_stationarity_sentence_every_branch():
    assert prose.stationarity_sentence(_nets([], [], []), "CNNs", 1e-12, 1e-9) == "No CNNs were trained."
    assert prose.stationarity_sentence(_nets(["target"] * 2, [3e-13, 8.01e-13], [True] * 2), "CNNs", 1e-12, 1e-9) == (
        "All 2 CNNs reached the target residual 1e-12 (largest residual at most 8.1e-13).")
    text = prose.stationarity_sentence(_nets(["target", "no progress", "time cap"], [1e-13, 2.01e-12, 5e-11],
                                             [True, True, True]), "nets", 1e-12, 1e-9)
    assert text.startswith("1 of 3 nets reached the target residual 1e-12; 1 stopped with “no progress” "
                           "(residuals up to 2.1e-12); 1 stopped with “time cap” (residuals up to 5.0e-11).")
    assert text.endswith("Every one is within the tolerance 1e-09 that the statements below use.")
    text = prose.stationarity_sentence(_nets(["target", "iteration cap"], [1e-13, 1e-3], [True, False]),
                                       "nets", 1e-12, 1e-9)
    assert "1 network above the tolerance 1e-09 is drawn hollow" in text
    text = prose.stationarity_sentence(_nets(["time cap"] * 2, [1e-3, 1e-2], [False, False]), "nets", 1e-12, 1e-9)
    assert "2 networks above the tolerance 1e-09 are drawn hollow" in text


def test_eigen_kind_and_sentence():
    assert prose.eigen_kind({"n_negative_eigs": -1, "min_eig": NAN}) == "unknown"
    assert prose.eigen_kind({"n_negative_eigs": 1, "n_zero_eigs": 0, "min_eig": -1.0}) == "saddle"
    assert prose.eigen_kind({"n_negative_eigs": 0, "n_zero_eigs": 3, "min_eig": 1e-15}) == "flat"
    assert prose.eigen_kind({"n_negative_eigs": 0, "n_zero_eigs": 0, "min_eig": 1e-3}) == "minimum"
    nets = pd.DataFrame({"n_negative_eigs": [0, 0, 2, -1], "n_zero_eigs": [0, 4, 0, -1],
                         "min_eig": [1e-3, 1e-15, -0.5, NAN]})
    text = prose.eigen_sentence(nets, "nets")
    assert "1 of 4 nets are strict local minima" in text and "1 of 4 have no negative Hessian eigenvalue" in text
    assert "**1 of 4 are saddle points**" in text and "1 of 4 too large for the dense Hessian" in text
    assert text.endswith("The smallest eigenvalues lie between -5.0e-01 and 1.0e-03.")
    unknown = pd.DataFrame({"n_negative_eigs": [-1], "n_zero_eigs": [-1], "min_eig": [NAN]})
    assert "too large to form" in prose.eigen_sentence(unknown, "nets")


def test_flat_sentence_match_mismatch_empty():
    assert prose.flat_sentence(pd.DataFrame(), "rotations") == "No network to compare."
    ok = pd.DataFrame({"lam": [0.1, 0.2], "seed": [0, 0], "n_zero_eigs": [20, 26], "predicted_zero_eigs": [20, 26]})
    assert prose.flat_sentence(ok, "the rotations") == (
        "The number of zero Hessian eigenvalues equals the dimension of the orbit of the rotations in all 2 "
        "networks (20, 26), as it must if every flat direction is one of that symmetry and there is no other.")
    bad = ok.assign(n_zero_eigs=[20, 27])
    text = prose.flat_sentence(bad, "the rotations")
    assert text.startswith("**The number of zero Hessian eigenvalues differs") and "λ = 0.2, seed 0: 27 measured, 26 predicted" in text


def _conv(rank_U, rank, rank_D):
    return pd.DataFrame({"kind": ["conv", "conv", "dense"], "reached": [True, True, True],
                         "matrix": ["conv1", "conv2", "fc1"], "shape": ["4×9", "8×36", "12×32"],
                         "rank_U": rank_U, "rank": rank, "rank_D": rank_D})


def test_conv_rank_sentence_branches():
    text = prose.conv_rank_sentence(_conv([9, 36, 24], [4, 6, 7], [4, 6, 7]))
    assert text.startswith("The patch matrices have rank 9 of 9 for conv1, 36 of 36 for conv2: full column rank")
    assert "exactly the rank of its signal matrix" in text
    text = prose.conv_rank_sentence(_conv([9, 27, 24], [4, 5, 7], [4, 6, 7]))
    assert "27 of 36 for conv2: where one is rank-deficient, the patches themselves restrict" in text and "differs from that of its signal" in text
    none = _conv([9, 36, 24], [4, 6, 7], [4, 6, 7]).assign(reached=False)
    assert prose.conv_rank_sentence(none).startswith("No convolution")


def test_bound_verdict_and_vacuity():
    assert prose.bound_verdict(pd.DataFrame()) == "there is nothing to check"
    assert prose.bound_verdict(pd.DataFrame({"holds": [True, True]})) == "holds in all 2 cases, as it must"
    assert prose.bound_verdict(pd.DataFrame({"holds": [True, False]})).startswith("**fails in 1 of 2 cases")
    b = pd.DataFrame({"trivial": [False, False, True], "reached": [True, True, True],
                      "rel_bound_a": [0.5, 1.2, 0.1], "rel_bound_c": [2.0, 6.0, 0.2]})
    assert prose.vacuity_sentence(b, "CNN's matrices") == (
        "For the CNN's matrices, bound (a) is below ‖W‖_F in 1 of 2 cases and bound (c) in 0 of 2; "
        "(c) is a median factor 4.5 above (a).")
    assert "nothing to bound" in prose.vacuity_sentence(b.assign(trivial=True), "x")


def test_patch_tcv_sentence_branches():
    rows = pd.DataFrame({"reached": [True, True], "kind": ["conv", "conv"], "tcv2n": [0.93, 0.99],
                         "tail": [0.3, 0.0], "tcv2": [2e4, 3e4], "tcv2_needed": [0.2, 0.0]})
    text = prose.patch_tcv_sentence(rows)
    assert "between 0.93 and 0.99 (near 1: the patches hardly cluster by class)" in text and "1.0e+05" in text
    text = prose.patch_tcv_sentence(rows.assign(tcv2n=[0.1, 0.2], tail=[0.0, 0.0]))
    assert "well below 1: the patches cluster by class" in text and "no TCV is needed" in text
    assert "(in between)" in prose.patch_tcv_sentence(rows.assign(tcv2n=[0.3, 0.9]))
    assert prose.patch_tcv_sentence(rows.assign(kind="dense")) == "No convolution to report on."


def test_patch_verdict_branches():
    base = {"kind": "conv", "partition": "class", "trivial": False, "reached": True}
    none = pd.DataFrame([{**base, "trivial": True, "rel_bound_a": 0.5, "rel_tail": 0.1}])
    assert prose.patch_verdict(none).startswith("No convolution has more than")
    nothing = pd.DataFrame([{**base, "rel_bound_a": 1.1, "rel_tail": 0.1}])
    assert prose.patch_verdict(nothing).startswith("**Against what the mechanism of the paper suggests")
    little = pd.DataFrame([{**base, "rel_bound_a": 0.81, "rel_tail": 0.12}, {**base, "rel_bound_a": 1.2, "rel_tail": 0.0}])
    assert "below ‖W‖_F for 1 of 2 kernels but never below 0.81" in prose.patch_verdict(little)
    good = pd.DataFrame([{**base, "rel_bound_a": 0.2, "rel_tail": 0.15}])
    assert prose.patch_verdict(good).startswith("With the classes as clusters, bound (a) is below ‖W‖_F for 1 of 1")


def test_trend_sentence_branches():
    assert prose.trend_sentence({}) == "No matrix to report a trend of the numerical rank on."
    text = prose.trend_sentence({"conv1": -0.9, "conv2": 0.8, "fc1": NAN, "fc2": 0.1})
    assert text == ("The numerical rank falls with λ in conv1; **grows with λ in conv2** (against the weight-decay "
                    "picture); is the same at every λ in fc1; shows no clear trend in fc2.")


def _stream(growth, bound, branch, stream_last):
    return pd.DataFrame({"reached": [True, True], "l": [0, 1], "growth": [NAN, growth], "growth_bound": [NAN, bound],
                         "tcv2n_stream": [0.2, stream_last], "tcv2n_branch": [NAN, branch]})


def test_skip_sentence_branches():
    text = prose.skip_sentence(_stream(1.2, 1.7, 0.1, 0.15))
    assert "between 1.20 and 1.20, within the bound" in text and "falls along the depth" in text
    assert "every branch input is more tightly clustered" in text
    text = prose.skip_sentence(_stream(1.9, 1.7, 0.3, 0.25))
    assert "**above the bound of the proposition" in text and "does not fall" in text and "not always more" in text
    assert prose.skip_sentence(_stream(1.2, 1.7, 0.1, 0.1).assign(reached=False)) == (
        "No residual network reached the tolerance.")


def _prods(rank_M, n_unit, g_max, reached=True):
    return pd.DataFrame({"lam": [0.01, 0.1], "rank_M": rank_M, "n_unit": n_unit, "g_max": g_max,
                         "reached": [reached, reached], "imbalance": [1e-14, 2e-14], "certificate": [1e-11, 2e-11],
                         "imbalance_VO": [1e-15, 1e-15], "identity_error": [3e-15, 3e-15]})


def test_attention_sentence_branches():
    text = prose.attention_sentence(_prods([4, 1], [4, 1], [1.0, 1.0]))
    assert text.startswith("In every network the rank of W_Qᵀ W_K equals the number")
    assert "as a local minimum requires" in text and "from 4 at λ = 0.01 to 1 at λ = 0.1" in text
    text = prose.attention_sentence(_prods([3, 1], [4, 1], [1.0, 1.2]))
    assert "is at most the number" in text and "**σ₁(∇_M L₀)/λ = 1.2000 > 1" in text
    text = prose.attention_sentence(_prods([5, 1], [4, 1], [1.0, 1.0]))
    assert "a contradiction of the theorem" in text
    assert prose.attention_sentence(_prods([4, 1], [4, 1], [1.0, 1.0], reached=False)).startswith("No attention")


def test_balance_absent_span():
    text = prose.balance_sentence(_prods([4, 1], [4, 1], [1.0, 1.0]))
    assert "at most 2.0e-14" in text and "at most 2.0e-11" in text and "agree to 3.0e-15" in text
    assert prose.balance_sentence(_prods([4, 1], [4, 1], [1.0, 1.0], False)).startswith("No attention")
    assert prose.absent_sentence("Fashion-MNIST", "Digits", "") == ""
    assert prose.absent_sentence("Fashion-MNIST", "Digits", "copy the files to data/FashionMNIST/raw") == (
        "**Fashion-MNIST could not be read in this build, so the CNN runs on Digits** (copy the files to "
        "data/FashionMNIST/raw); every CNN number below is measured on Digits.")
    assert prose.span([4, 6, 5]) == "4–6" and prose.span([3, 3]) == "3" and prose.span([]) == "none"
