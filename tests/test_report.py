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


def _result(stop, res, target=1e-6, eig=None, eig_max=None, hessian=None):
    from types import SimpleNamespace

    return SimpleNamespace(stop=stop, max_residual=res, target=target, min_eigenvalue=eig, max_eigenvalue=eig_max,
                           hessian=hessian)


def test_stop_summary_counts_and_explains():
    from nrc_utils.report import stop_summary

    done = [_result("target", 4e-7), _result("target", 9.04e-7)]
    assert stop_summary(done, "nets") == "All 2 nets reached the target 1e-06 (largest residual at most 9.1e-07)."
    mixed = done + [_result("no progress", 1.2e-6), _result("iteration cap", 3e-5), _result(None, 0.5, None),
                    _result("time cap", 2e-6)]
    assert stop_summary(mixed, "nets") == (
        "2 of 6 nets reached the target 1e-06; 1 stopped when no step lowered the loss (L-BFGS) or the residual "
        "(Newton) any more (residuals up to 1.2e-06); 1 stopped at the iteration cap (residuals up to 3.0e-05); "
        "1 stopped at the time cap (residuals up to 2.0e-06); 1 were not polished (residuals up to 5.0e-01).")


def test_stop_summary_names_every_target():
    """Networks whose last stage differs (Newton for tanh, L-BFGS for ReLU) have different targets: both are named."""
    from nrc_utils.report import stop_summary

    both = [_result("target", 3e-13, 1e-12), _result("target", 4e-7, 1e-6)]
    assert stop_summary(both, "nets") == ("All 2 nets reached their targets (1e-12 or 1e-06) "
                                          "(largest residual at most 4.0e-07).")


def test_hessian_kind_reads_the_smallest_eigenvalue_against_the_largest():
    from nrc_utils import stationary
    from nrc_utils.report import HESSIAN_ZERO_RTOL, hessian_kind

    assert HESSIAN_ZERO_RTOL == stationary.ZERO_RTOL
    assert hessian_kind(2e-9, 10.0) == "minimum" and hessian_kind(-2e-9, 10.0) == "saddle"
    assert hessian_kind(5e-10, 10.0) == "flat" and hessian_kind(-5e-10, 10.0) == "flat"
    assert hessian_kind(1e-30, None) == "minimum" and hessian_kind(0.0, None) == "flat"
    assert hessian_kind(-1e-30, float("nan")) == "saddle"


def test_hessian_summary_every_branch():
    from nrc_utils.report import hessian_summary

    assert hessian_summary([_result("target", 1e-13, eig=2.14e-5, eig_max=3.0),
                            _result("target", 1e-13, eig=2.96e-4, eig_max=3.0)], "nets") == (
        "The Hessian of L_λ is positive definite at all 2 nets (smallest eigenvalue from 2.1e-05 to 3.0e-04): "
        "strict local minima, not saddles.")
    flat = ("zero up to rounding (at most 1e-10 of the largest eigenvalue in absolute value: a flat direction, "
            "along which second order cannot tell a minimum from a saddle)")
    assert hessian_summary([_result("target", 1e-13, eig=-3.01e-3, eig_max=1.0),
                            _result("target", 1e-13, eig=1e-13, eig_max=2.0),
                            _result("target", 1e-13, eig=5.55e-2, eig_max=1.0),
                            _result("no progress", 1e-5)], "nets") == (
        "Of the 3 nets with a computed Hessian of L_λ, 1 are strict local minima (smallest eigenvalue at least "
        f"5.5e-02); 1 have a smallest eigenvalue that is {flat}; 1 are saddles (smallest eigenvalue down to "
        "-3.1e-03). It was not computed for 1 more (no Newton stage).")
    assert hessian_summary([_result("target", 1e-13, eig=-1.2e-12, eig_max=5.0),
                            _result("target", 1e-13, eig=1.5e-15, eig_max=5.0)], "nets") == (
        f"Of the 2 nets with a computed Hessian of L_λ, 2 have a smallest eigenvalue that is {flat}.")
    assert hessian_summary([_result("target", 1e-13, eig=1e-3), _result("target", 1e-7, eig=float("nan"))],
                           "nets") == ("The Hessian of L_λ is positive definite at 1 nets (smallest eigenvalue from "
                                       "1.0e-03 to 1.0e-03): strict local minima, not saddles. It was not computed "
                                       "for 1 more (no Newton stage).")
    assert hessian_summary([_result("target", 1e-13, eig=3.14e-4, eig_max=1.0)], "net") == (
        "The Hessian of L_λ at the net is positive definite (smallest eigenvalue 3.1e-04): a strict local minimum, "
        "not a saddle.")
    assert hessian_summary([_result("target", 1e-13, eig=-2.01e-6, eig_max=1.0)], "net") == (
        "The Hessian of L_λ at the net has the negative smallest eigenvalue -2.1e-06: a saddle, not a local minimum.")
    assert hessian_summary([_result("target", 1e-13, eig=-2.0e-14, eig_max=1.0)], "net") == (
        f"The smallest eigenvalue of the Hessian of L_λ at the net, -2.0e-14, is {flat}.")
    assert hessian_summary([_result("no progress", 1e-3)], "nets") == (
        "The Hessian's smallest eigenvalue was not computed for the nets (no Newton stage).")
    assert hessian_summary([_result("target", 1e-13)], "nets", "more than 3000 parameters") == (
        "The Hessian's smallest eigenvalue was not computed for the nets (more than 3000 parameters).")
    assert hessian_summary([_result("target", 1e-13, eig=1e-3, eig_max=1.0), _result("target", 1e-13)], "nets",
                           "too large") .endswith("It was not computed for 1 more (too large).")


def test_hessian_summary_names_a_lanczos_cap_apart_from_the_chapters_reason():
    from nrc_utils.report import hessian_summary

    capped = _result("target", 1e-13, eig=None, hessian="lanczos: step cap")
    timed = _result("target", 1e-13, eig=float("nan"), hessian="lanczos: time cap")
    skipped = _result("target", 1e-13, hessian="skipped")
    words = "the Lanczos iteration reached its cap before converging"
    assert hessian_summary([capped, timed], "nets", "too large") == (
        f"The Hessian's smallest eigenvalue was not computed for the nets ({words}).")
    assert hessian_summary([_result("target", 1e-13, eig=1e-3, eig_max=1.0), capped, skipped], "nets",
                           "too large").endswith(f"It was not computed for 2 more (1: too large; 1: {words}).")


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


def test_no_prose_module_writes_tex():
    """Glued Markdown is not typeset by the book (raw $...$ reaches the page: ci/check_browser.py finds it), so
    every generated sentence writes its symbols in Unicode."""
    import importlib
    import inspect
    import pkgutil

    import nrc_utils.prose as package

    for info in pkgutil.iter_modules(package.__path__):
        source = inspect.getsource(importlib.import_module(f"nrc_utils.prose.{info.name}"))
        assert "$" not in source, f"nrc_utils/prose/{info.name}.py writes TeX"
    assert "$" not in inspect.getsource(report)
