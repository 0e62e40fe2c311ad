"""nrc_utils.report: shown bounds stay true; slopes and subscripts for the prose."""

import math
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nrc_utils import report
from nrc_utils.report import rounded


@pytest.mark.parametrize("value, spec, direction, expected", [
    (0.9967, ".3f", -1, "0.996"),
    (0.9967, ".3f", +1, "0.997"),
    (0.9075, ".2f", -1, "0.90"),
    (0.04704, ".1e", +1, "4.8e-02"),
    (1.04e-7, ".1e", +1, "1.1e-07"),
    (9.5e11, ".0e", -1, "9e+11"),  # ".0e" shows 1e+12; rounding down stays in the value's decade
    (5.6e4, ".0e", -1, "5e+04"),
    (1.4e-13, ".0e", +1, "2e-13"),
    (9.99, ".1f", +1, "10.0"),
    (0.0, ".2f", +1, "0.00"),
    (1.25, ".2f", +1, "1.25"),  # exactly representable at the precision: unchanged
    (3e-5, ".1e", +1, "3.0e-05"),  # the float nearest 3e-5 lies above it, but it is the number shown
])
def test_known_values(value, spec, direction, expected):
    assert rounded(value, spec, direction) == expected


@settings(max_examples=300, deadline=None, database=None)
@given(value=st.floats(min_value=-1e12, max_value=1e12, allow_nan=False).filter(lambda v: v == 0 or abs(v) > 1e-250),
       spec=st.sampled_from([".0f", ".2f", ".3f", ".0e", ".1e", ".2e", ".1g", ".2g", ".3g"]),
       direction=st.sampled_from([-1, 1]))
def test_the_shown_number_bounds_the_value_within_one_unit(value, spec, direction):
    text = rounded(value, spec, direction)
    shown = float(text)
    # on the safe side exactly, or the very number that reads back as the value
    assert (Decimal(text) - Decimal(value)) * direction >= 0 or shown == value
    # and it is the next number at that precision, not a cruder one: within one unit of the last digit
    n = int(spec[1:-1])
    if spec[-1] == "f":
        unit = 10.0 ** -n
    else:
        top = max(abs(value), abs(shown))
        unit = 10.0 ** (math.floor(math.log10(top)) - (n if spec[-1] == "e" else max(n, 1) - 1)) if top else 0.0
    assert abs(shown - value) <= unit * (1 + 1e-9) + 4 * math.ulp(max(abs(value), abs(shown)))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="direction"):
        rounded(1.0, ".2f", 0)
    with pytest.raises(ValueError, match="spec"):
        rounded(1.0, "2f", 1)
    assert rounded(math.inf, ".1e", 1) == "inf"


def test_stop_summary_counts_and_explains():
    from types import SimpleNamespace

    from nrc_utils.report import stop_summary

    def result(stop, res):
        return SimpleNamespace(polish_stop=stop, max_residual=res, config=SimpleNamespace(polish_tol=1e-6))

    done = [result("target", 4e-7), result("target", 9.04e-7)]
    assert stop_summary(done, "nets") == "All 2 nets reached the target 1e-06 (largest residual at most 9.1e-07)."
    mixed = done + [result("no progress", 1.2e-6), result("iteration cap", 3e-5), result(None, 0.5)]
    assert stop_summary(mixed, "nets") == (
        "2 of 5 nets reached the target 1e-06; 1 stopped when a chunk of L-BFGS iterations no longer lowered "
        "the loss (residuals up to 1.2e-06); 1 stopped at the iteration cap (residuals up to 3.0e-05); "
        "1 were not polished (residuals up to 5.0e-01).")





def test_subscript_turns_digits_into_subscripts():
    assert "W" + report.subscript(12) == "W₁₂"
    assert report.subscript("H_3") == "H_₃"


def test_lbfgs_iterations_counts_the_polish_steps_after_sgd():
    import torch

    from nrc_utils import models, train

    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(30, 4, generator=g), torch.arange(30) % 3
    cfg = dict(lam=0.05, loss="mse", lr=0.1, steps=20, seed=0, record_every=5)
    plain = train.train(models.MLP(4, [6], 3, activation="tanh", seed=0), X, y, train.TrainConfig(**cfg),
                        device="cpu", use_cache=False)
    assert report.lbfgs_iterations(plain) == 0
    polished = train.train(models.MLP(4, [6], 3, activation="tanh", seed=0), X, y,
                           train.TrainConfig(**cfg, polish_tol=1e-6, polish_max_iter=400), device="cpu",
                           use_cache=False)
    assert 0 < report.lbfgs_iterations(polished) <= 400
    assert report.lbfgs_iterations(polished) == polished.history["step"][-1] - 20
