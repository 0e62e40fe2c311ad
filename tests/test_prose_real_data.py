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
