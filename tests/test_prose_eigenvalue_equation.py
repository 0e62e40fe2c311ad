"""nrc_utils.prose.eigenvalue_equation: every branch of chapter 2's generated sentences."""

import pytest

from nrc_utils.prose import eigenvalue_equation as prose


@pytest.mark.parametrize("loss, text", [("ce", "cross-entropy loss"),
                                        ("mse", "square loss ℓ(f, y) = ½‖f − e_y‖²")])
def test_loss_name(loss, text):
    assert prose.loss_name(loss) == text


def test_loss_name_refuses_an_unknown_loss():
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        prose.loss_name("hinge")


def test_architecture_code_and_number_list():
    assert prose.architecture(64, [64, 64], 10) == "64 → 64 → 64 → 10"
    assert prose.architecture(8, [], 3) == "8 → 3"
    assert prose.code("tanh") == "`tanh`"
    assert prose.number_list([0.001, 0.003, 0.01]) == "0.001, 0.003, 0.01"
    assert prose.number_list([0.0]) == "0"
    assert prose.number_list([]) == "none"


@pytest.mark.parametrize("sums, text", [
    ([25.6, 23.1, 19.0, 12.5], "across the grid it decreases as λ grows"),
    ([25.6, 23.1, 23.1, 12.5], "across the grid it does not decrease monotonically with λ"),  # ties: not strict
    ([12.5, 25.6], "across the grid it does not decrease monotonically with λ"),
    ([12.5], "with a single λ there is no trend across the grid to read"),
    ([], "with a single λ there is no trend across the grid to read"),
])
def test_alignment_trend(sums, text):
    assert prose.alignment_trend(sums) == text


@pytest.mark.parametrize("checks, text", [
    ([{"layer": 1, "sigma_K": 1e-9, "bound": 2e-9}, {"layer": 2, "sigma_K": 0.0, "bound": 0.0}],
     "holds in every layer"),
    ([{"layer": 1, "sigma_K": 2e-9 * (1 + 1e-12), "bound": 2e-9}], "holds in every layer"),  # round-off slack
    ([{"layer": 1, "sigma_K": 1e-9, "bound": 2e-9}, {"layer": 2, "sigma_K": 3e-9, "bound": 2e-9}],
     "fails in layer(s) 2"),
    ([{"layer": 1, "sigma_K": 3e-9, "bound": 2e-9}, {"layer": 3, "sigma_K": float("nan"), "bound": 2e-9}],
     "fails in layer(s) 1, 3"),  # all missed (a NaN is no pass)
    ([], "could not be checked (no layer has a bias)"),
])
def test_bias_bound_verdict(checks, text):
    assert prose.bias_bound_verdict(checks) == text


CE_LAST = "the cross-entropy signals sum to zero over its K outputs"
CENTRED = "its inputs are centred over these samples"


@pytest.mark.parametrize("ratios, centring, loss, text", [
    # the chapter's case: kept in the hidden layers, collapsed in the last one (cross-entropy)
    ({1: 4.04e-3, 2: 5e-3, 3: 1e-16}, 0.1, "ce",
     f"the ratio stays at 4.0e-03 or more in layer(s) 1, 2; it collapses anyway in layer 3 (1e-16: {CE_LAST}), "
     "as item 4 of the proposition says"),
    # "or more" is rounded down
    ({1: 3.96e-3, 2: 5e-3}, 0.1, "ce", "the ratio stays at 3.9e-03 or more in layer(s) 1, 2"),
    # just at the threshold counts as kept, just below as collapsed
    ({1: 1e-5, 2: 5e-3, 3: 0.2}, 0.1, "ce", "the ratio stays at 1.0e-05 or more in layer(s) 1, 2, 3"),
    ({1: 9.9e-6, 2: 5e-3, 3: 0.2}, 0.1, "mse",
     "the ratio stays at 5.0e-03 or more in layer(s) 2, 3; it collapses anyway in layer 1 (1e-05), "
     "for a reason item 4 does not name"),
    # centred inputs name layer 1, and only below the threshold
    ({1: 1e-9, 2: 5e-3, 3: 1e-16}, 1e-9, "ce",
     f"the ratio stays at 5.0e-03 or more in layer(s) 2; it collapses anyway in layer 1 (1e-09: {CENTRED}) and "
     f"layer 3 (1e-16: {CE_LAST}), as item 4 of the proposition says"),
    ({1: 1e-9, 2: 5e-3, 3: 1e-16}, 1e-5, "ce",
     f"the ratio stays at 5.0e-03 or more in layer(s) 2; it collapses anyway in layer 3 (1e-16: {CE_LAST}), "
     "as item 4 of the proposition says; it also collapses in layer 1 (1e-09), for a reason item 4 does not name"),
    # the square loss gives the last layer no reason
    ({1: 5e-3, 3: 1e-16}, 0.1, "mse",
     "the ratio stays at 5.0e-03 or more in layer(s) 1; it collapses anyway in layer 3 (1e-16), "
     "for a reason item 4 does not name"),
    # every layer collapses: with and without reasons
    ({1: 1e-9, 2: 1e-12, 3: 1e-16}, 1e-9, "ce",
     f"the ratio collapses in every layer: in layer 1 (1e-09: {CENTRED}) and layer 3 (1e-16: {CE_LAST}), "
     "as item 4 of the proposition says; in layer 2 (1e-12), for a reason item 4 does not name"),
    ({2: 1e-12}, 0.1, "ce", "the ratio collapses in every layer: in layer 2 (1e-12), for a reason item 4 does not name"),
    ({3: 1e-16}, 0.1, "ce", f"the ratio collapses in every layer: in layer 3 (1e-16: {CE_LAST}), "
                            "as item 4 of the proposition says"),
    # no layer at all
    ({}, 0.1, "ce", "there is no layer to read"),
])
def test_k_minus_one_reading(ratios, centring, loss, text):
    assert prose.k_minus_one_reading(ratios, 1e-5, centring, 3, loss) == text
