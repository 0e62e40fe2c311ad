"""nrc_utils.prose.real_data (chapter 6): every sentence-building branch, both sides of each
threshold, the empty case and the case where no network reached its target."""

import math

import pytest

from nrc_utils.prose import real_data as prose
from nrc_utils.report import markdown

NAN = math.nan


def test_lists_and_names():
    assert prose.names_list(["Digits", "MNIST"]) == "Digits, MNIST"
    assert prose.names_list([]) == "no data set"
    assert prose.architecture([64, 32]) == "d → 64 → 32 → K"
    assert prose.loss_name("ce") == "cross-entropy" and prose.loss_name("mse") == "the square loss"
    assert prose.lambda_set([0.003, 0.01]) == "{0.003, 0.01}"
    assert prose.code("tanh") == "`tanh`"
    assert prose.layers_text([2, 3]) == "W₂, W₃" and prose.layers_text([]) == "none"


def test_absent_sentence_every_kind_and_none():
    assert prose.absent_sentence([]) == "Every data set that this profile asks for is present."
    text = prose.absent_sentence([
        {"title": "MNIST", "kind": "absent", "reason": "copy the files to data/MNIST/raw"},
        {"title": "CIFAR-10", "kind": "unreadable", "reason": "data_batch_1.bin is truncated"}])
    assert text == ("**MNIST is absent from this build** and left out of this chapter: copy the files to "
                    "data/MNIST/raw. **CIFAR-10 could not be read in this build** and left out of this chapter: "
                    "data_batch_1.bin is truncated.")


@pytest.mark.parametrize("hidden, falling, rising, expected", [
    ([2, 3], [], [], "No network reached the target"),
    ([], [], [], "no layer that reads hidden features"),
    ([2, 3], [2, 3], [], "falls as λ grows (Spearman correlation with λ negative in each), as the paper states"),
    ([2, 3], [2], [3], "**contradicted** in layers W₃: there the relative distance to rank K grows with λ"),
    ([2, 3], [], [2, 3], "it falls in none."),
    ([2, 3], [2], [], "shows no monotone trend with λ"),
])
def test_trend_verdict(hidden, falling, rising, expected):
    n = 0 if expected.startswith("No network") else 4
    assert expected in prose.trend_verdict(hidden, falling, rising, n)


@pytest.mark.parametrize("tcv_up, nc1_up, expected", [
    (True, True, "*less* collapsed here (both measures grow)"),
    (False, False, "more collapsed (both measures fall)"),
    (True, False, "opposite directions"),
    (False, True, "opposite directions"),
    (None, None, "No network reached the target at both ends"),
])
def test_collapse_direction(tcv_up, nc1_up, expected):
    assert expected in prose.collapse_direction(tcv_up, nc1_up)


def test_within_layer_and_its_reading():
    assert prose.within_layer({2: 0.714, 3: -0.31}) == "W₂: 0.71; W₃: -0.31"
    assert prose.within_layer({}) == "not enough networks"
    assert prose.within_reading({2: 0.7, 3: -0.3}).startswith("Within W₃ the relation is reversed")
    assert prose.within_reading({2: 0.7, 3: 0.0}).startswith("Within every layer the correlation is not negative")
    assert prose.within_reading({}) == "Too few networks reached the target to measure the relation within a layer."


@pytest.mark.parametrize("rho, expected", [
    (0.85, "positive, as the paper's picture predicts"),
    (prose.RANK_TCV_POSITIVE + 1e-9, "positive"),
    (prose.RANK_TCV_POSITIVE, "weak or negative"),
    (-0.5, "weak or negative"),
    (NAN, "not measured"),
])
def test_rank_tcv_verdict_on_both_sides_of_the_threshold(rho, expected):
    assert prose.rank_tcv_verdict(rho).startswith(expected)


@pytest.mark.parametrize("acc_K, full, expected", [
    (0.959, 0.965, "a high numerical rank does not mean that the small singular values matter"),
    (0.9551, 0.965, "a high numerical rank does not mean"),  # just inside the tolerance
    (0.90, 0.965, "their singular values beyond the K-th do carry accuracy"),
    (NAN, 0.965, "no SGD network was measured at this λ"),
    (0.9, NAN, "no SGD network was measured at this λ"),
])
def test_sgd_trunc_reading(acc_K, full, expected):
    assert prose.sgd_trunc_reading(acc_K, full, 0.01).startswith(expected)


@pytest.mark.parametrize("trend, expected", [
    (-0.9, "the larger λ, the fewer singular values the network needs"),
    (0.0, "does **not** fall with λ"),
    (0.4, "does **not** fall with λ"),
    (NAN, "no network reached the target"),
])
def test_trunc_verdict(trend, expected):
    assert expected in prose.trunc_verdict(trend)


@pytest.mark.parametrize("sgd, pol, expected", [
    (35.0, 11.0, "The polishing is not a small correction"),
    (12.0, 0.75 * 12.0, "Polishing changes the ranks little here"),  # at the threshold
    (12.0, 11.0, "Polishing changes the ranks little here"),
    (35.0, NAN, "No network that reads hidden features reached the target"),
    (NAN, NAN, "No network that reads hidden features reached the target"),
])
def test_polish_reading(sgd, pol, expected):
    assert prose.polish_reading(sgd, pol).startswith(expected)


@pytest.mark.parametrize("residuals, expected", [
    ([1.2, 1.5, 1.0], "every SGD network has a layer with ρ_l ≥ 1"),
    ([0.95, 1.5, 1.2], "2 of 3 SGD networks have a layer with ρ_l ≥ 1"),
    ([0.5, 0.2], "no SGD network has a layer with ρ_l ≥ 1"),
    ([], "there is no SGD network to judge"),
])
def test_sgd_vacuous(residuals, expected):
    assert prose.sgd_vacuous(residuals).startswith(expected)


def test_every_sentence_is_safe_markdown_even_when_it_is_a_path():
    # glued through report.glue: a sentence that names a path is still the sentence
    for text in (prose.names_list([]), prose.within_layer({}), prose.absent_sentence([])):
        assert markdown(text)._repr_markdown_() == text


# --------------------------------------------------------------------------------------
# Data: balance, absent sets, the fallback
# --------------------------------------------------------------------------------------

def test_balance_sentence_balanced_and_not():
    rows = [{"title": "Digits", "split": "per class", "train_min": 122, "train_max": 128, "test_min": 52,
             "test_max": 55},
            {"title": "Fashion-MNIST", "split": "subset", "train_min": 20, "train_max": 20, "test_min": 100,
             "test_max": 100}]
    assert prose.balance_sentence(rows) == (
        "The Digits split is not class-balanced: 122 to 128 training and 52 to 55 test images per class. "
        "The Fashion-MNIST subset is class-balanced: 20 training and 100 test images in every class.")
    # equal training classes but unequal test classes is not balanced
    assert "not class-balanced" in prose.balance_sentence([{**rows[1], "test_max": 101}])
    assert prose.balance_sentence([]) == ""


def test_absent_sentence_with_a_hint_and_the_fallback():
    row = {"title": "Fashion-MNIST", "kind": "absent", "reason": "copy the files to data/FashionMNIST/raw",
           "hint": "on Debian or Ubuntu, `apt-get install dataset-fashion-mnist` puts it in /usr/share/datasets"}
    text = prose.absent_sentence([row], fallback="Digits")
    assert text.startswith("**Fashion-MNIST is absent from this build** and left out of this chapter: copy the "
                           "files to data/FashionMNIST/raw (on Debian or Ubuntu, `apt-get install")
    assert text.endswith(prose.fallback_sentence(True, "Digits"))
    assert "runs the chapter on Digits instead" in text and text.endswith("every number below is measured on Digits.")
    assert prose.absent_sentence([{**row, "hint": ""}]).endswith("data/FashionMNIST/raw.")
    assert prose.fallback_sentence(False) == ""


# --------------------------------------------------------------------------------------
# One data set against another
# --------------------------------------------------------------------------------------

def _f(title="Digits", **kw):
    """Findings of one data set as set_findings returns them (digits-like values)."""
    f = {"data": title, "K": 10, "n_networks": 6, "n_reached": 6, "lam_lo": 0.003, "lam_hi": 0.03, "trend": "falls",
         "rank_hidden_lo": 11, "rank_hidden_lo_max": 12, "rank_hidden_hi": 11, "rank_hidden_hi_min": 10,
         "tail_hidden_lo": 3e-3, "tail_hidden_hi": 4e-4, "spearman_tail": 0.85, "rmin_lo": 12.0, "rmin_hi": 5.0,
         "rmin_trend": -0.9, "accK_hi": 0.938, "full_hi": 0.938, "acc_lo": 0.957, "acc_hi": 0.938,
         "tcv_pixels": 0.69, "tcv_last_hi": 0.146, "tcv_up": True, "nc1_up": True, "n_train": 1258}
    f.update(kw)
    return f


FASHION = dict(title="Fashion-MNIST", rank_hidden_hi=9, rank_hidden_hi_min=5, tail_hidden_lo=6.7e-4,
               tail_hidden_hi=1.4e-4, spearman_tail=0.55, rmin_lo=5.0, rmin_hi=4.5, accK_hi=0.7245, full_hi=0.724,
               acc_hi=0.724, tcv_last_hi=0.027, n_train=200)


def test_claims_each_way_and_unjudged():
    c = prose.claims(_f(), 0.01)
    assert c == {"trend": True, "rank_K": False, "rank_tcv": True, "cut_K": True, "rmin": True, "collapse": False}
    c = prose.claims(_f(trend="rises", rank_hidden_hi=10, spearman_tail=0.3, accK_hi=0.9, rmin_trend=0.0,
                        tcv_up=False, nc1_up=False), 0.01)
    assert c == {"trend": False, "rank_K": True, "rank_tcv": False, "cut_K": False, "rmin": False, "collapse": True}
    assert prose.claims(_f(trend="flat"), 0.01)["trend"] is False
    c = prose.claims(_f(trend=None, rank_hidden_hi=NAN, spearman_tail=NAN, accK_hi=NAN, rmin_trend=NAN,
                        tcv_up=None), 0.01)
    assert set(c.values()) == {None}
    assert set(prose.claims(_f(n_reached=0), 0.01).values()) == {None}
    assert tuple(prose.claims(_f(), 0.01)) == prose.CLAIMS


def test_contrast_when_fashion_shows_what_digits_did_not():
    text = prose.contrast("Digits", _f(), "Fashion-MNIST", _f(**FASHION), 0.01)
    assert text.startswith("**What Fashion-MNIST shows that Digits did not:** on Fashion-MNIST at the largest λ "
                           "every layer that reads hidden features has numerical rank at most K (rank 5 to 9, K = 10), "
                           "while on Digits at the largest λ some layer that reads hidden features keeps numerical "
                           "rank above K (rank 10 to 11, K = 10).")
    assert "Where they disagree the other way" not in text and "agree on every point" not in text
    assert ("**On both:** the distance to rank K of every layer that reads hidden features falls as λ grows "
            "(Digits: median distance 3.0e-03 → 4.0e-04; Fashion-MNIST: median distance 6.7e-04 → 1.4e-04)") in text
    assert "(Digits: r = 12 → 5; Fashion-MNIST: r = 5 → 4.5)" in text
    assert text.endswith("with a larger λ the last layer's inputs are not more collapsed (TCV₂ or NC1 grows).")
    assert "Not judged" not in text


def test_contrast_disagreeing_the_other_way_and_unjudged_points():
    b = _f(**{**FASHION, "trend": "rises", "rank_hidden_hi": 11, "spearman_tail": NAN})
    text = prose.contrast("Digits", _f(), "Fashion-MNIST", b, 0.01)
    assert "What Fashion-MNIST shows that Digits did not" not in text
    assert ("**Where they disagree the other way:** on Digits the distance to rank K of every layer that reads hidden "
            "features falls as λ grows (median distance 3.0e-03 → 4.0e-04), while on Fashion-MNIST the distance to "
            "rank K does not fall with λ in every layer that reads hidden features (median distance 6.7e-04 → "
            "1.4e-04).") in text
    assert text.endswith("Not judged on both (too few networks or a constant measure): rank against within-class "
                         "variability.")
    both_ways = prose.contrast("Digits", _f(), "Fashion-MNIST", {**b, "rank_hidden_hi": 9}, 0.01)
    assert "What Fashion-MNIST shows that Digits did not:** on Fashion-MNIST at the largest λ" in both_ways
    assert "**Where they disagree the other way:** on Digits the distance" in both_ways


def test_contrast_when_they_agree_on_everything():
    text = prose.contrast("Digits", _f(), "Fashion-MNIST", _f("Fashion-MNIST"), 0.01)
    assert text.startswith("Fashion-MNIST shows nothing here that Digits did not: the two agree on every point "
                           "compared. **On both:**")
    # a claim without numbers (the collapse) is stated once, for both
    assert text.endswith("with a larger λ the last layer's inputs are not more collapsed (TCV₂ or NC1 grows).")
    assert "(Digits: Spearman 0.85; Fashion-MNIST: Spearman 0.85)" in text


def test_contrast_when_a_set_is_absent_or_both_are():
    assert prose.contrast("Digits", None, "Fashion-MNIST", None, 0.01) == (
        "Neither Digits nor Fashion-MNIST is in this build, so the two are not compared.")
    assert prose.contrast("Digits", _f(), "Fashion-MNIST", None, 0.01) == (
        "Fashion-MNIST is not in this build (see the data above), so this build cannot say what the two show "
        "differently; the numbers of Digits stand alone.")
    assert prose.contrast("Digits", None, "Fashion-MNIST", _f(**FASHION), 0.01).startswith(
        "Digits is not in this build (see the data above)")


def test_contrast_says_when_networks_missed_the_target():
    partial = prose.contrast("Digits", _f(), "Fashion-MNIST", _f(**FASHION, n_reached=4), 0.01)
    assert partial.startswith("Only 4 of 6 Fashion-MNIST networks reached the target residual in this build; the "
                              "comparison uses those. **What Fashion-MNIST shows")
    none = prose.contrast("Digits", _f(), "Fashion-MNIST", _f(**FASHION, n_reached=0), 0.01)
    assert none == ("No Fashion-MNIST network reached the target residual, so Fashion-MNIST is not compared: it would "
                    "take a longer polish than this build allows.")
    both = prose.contrast("Digits", _f(n_reached=0), "Fashion-MNIST", _f(**FASHION, n_reached=0), 0.01)
    assert both.startswith("No Digits network reached") and "No Fashion-MNIST network reached" in both


def test_contrast_summary_every_branch():
    a, b = _f(), _f(**FASHION)
    assert prose.contrast_summary("Digits", a, "Fashion-MNIST", b, 0.01) == (
        "Fashion-MNIST and Digits agree on 5 of the 6 points compared and differ on the rank at the largest λ.")
    assert prose.contrast_summary("Digits", a, "Fashion-MNIST", {**b, "rmin_trend": 0.0, "trend": "flat"}, 0.01) == (
        "Fashion-MNIST and Digits agree on 3 of the 6 points compared and differ on the trend with λ, the rank at the "
        "largest λ and the rank the networks need.")
    assert prose.contrast_summary("Digits", a, "Fashion-MNIST", _f("Fashion-MNIST"), 0.01) == (
        "Fashion-MNIST and Digits agree on all 6 points compared.")
    assert prose.contrast_summary("Digits", a, "Fashion-MNIST", None, 0.01) == (
        "Fashion-MNIST is not in this build, so the two data sets are not compared.")
    assert prose.contrast_summary("Digits", None, "Fashion-MNIST", None, 0.01) == (
        "Digits and Fashion-MNIST are not in this build, so the two data sets are not compared.")
    assert prose.contrast_summary("Digits", a, "Fashion-MNIST", {**b, "n_reached": 0}, 0.01).endswith(
        "one of them has no network at the target residual.")
    unjudged = _f(trend=None, rank_hidden_hi=NAN, spearman_tail=NAN, accK_hi=NAN, rmin_trend=NAN, tcv_up=None)
    assert prose.contrast_summary("Digits", a, "Fashion-MNIST", unjudged, 0.01).endswith(
        "too few networks to judge any point on both.")


def test_across_sets_every_branch():
    a, b = _f(), _f(**FASHION)
    text = prose.across_sets("Digits", a, "Fashion-MNIST", b)
    assert text.startswith("Fashion-MNIST is the harder task for these networks: median test accuracy 72.4% at the "
                           "largest λ, against 93.8% on Digits (200 training images against 1258).")
    assert ("also has the layers that read hidden features closer to rank K (Fashion-MNIST: normalised TCV₂ 0.027, "
            "against 0.146 on Digits; median distance to rank K of the hidden layers 1.4e-04 against 4.0e-04), as the "
            "paper's picture predicts") in text
    easier = prose.across_sets("Digits", a, "Fashion-MNIST", {**b, "acc_hi": 0.99})
    assert easier.startswith("Fashion-MNIST is the easier task")
    assert prose.across_sets("Digits", a, "Fashion-MNIST", {**b, "acc_hi": 0.938}).startswith(
        "Fashion-MNIST and Digits are equally hard for these networks")
    # the tighter set is the one with the larger distance: the picture does not order them
    against = prose.across_sets("Digits", a, "Fashion-MNIST", {**b, "tail_hidden_hi": 1e-3})
    assert "does **not** have the layers that read hidden features closer to rank K" in against
    assert "(Fashion-MNIST: normalised TCV₂ 0.027, against 0.146 on Digits; median distance to rank K of the " \
           "hidden layers 1.0e-03 against 4.0e-04)" in against
    # the tighter set may be the first one
    first = prose.across_sets("Digits", a, "Fashion-MNIST", {**b, "tcv_last_hi": 0.3})
    assert "(Digits: normalised TCV₂ 0.146, against 0.300 on Fashion-MNIST; median distance to rank K of the hidden " \
           "layers 4.0e-04 against 1.4e-04)" in first and "does **not**" in first
    # equal clustering or a missing number: only the accuracy sentence
    assert prose.across_sets("Digits", a, "Fashion-MNIST", {**b, "tcv_last_hi": 0.146}).count(". ") == 0
    assert "Across" not in prose.across_sets("Digits", a, "Fashion-MNIST", {**b, "tail_hidden_hi": NAN})
    assert prose.across_sets("Digits", a, "Fashion-MNIST", {**b, "acc_hi": NAN, "tcv_last_hi": NAN}) == (
        "Digits and Fashion-MNIST are not set side by side in this build.")
    for missing in ((None, b), (a, None), (None, None), (a, {**b, "n_reached": 0})):
        assert prose.across_sets("Digits", missing[0], "Fashion-MNIST", missing[1]) == (
            "Digits and Fashion-MNIST are not set side by side in this build.")


def test_hessian_skipped_names_the_parameter_and_the_cost():
    assert prose.hessian_skipped(3000) == ("more than 3,000 parameters, the chapter's hessian_max_params: the Lanczos "
                                           "iteration would take minutes per network on a laptop CPU")
