"""Tests for nrc_utils.params: the rules of chapter parameters, refused in one line."""

import math

import pytest

from nrc_utils import params as p


RULES = p.Rules("03_x", {
    "lambdas": p.grid(p.number(gt=0)),
    "widths": p.grid(p.integer(ge=1)),
    "lr": p.number(gt=0),
    "momentum": p.number(ge=0, lt=1),
    "loss": p.one_of("ce", "mse"),
    "tol": p.optional(p.number(gt=0)),
    "flag": p.boolean(),
    "name": p.text(),
})
GOOD = {"lambdas": [0.1, 0.2], "widths": [8, 8], "lr": 0.1, "momentum": 0.9, "loss": "ce",
        "tol": None, "flag": True, "name": "digits"}


def test_good_values_pass_and_extra_keys_are_ignored():
    assert RULES.check({**GOOD, "profile": "ci", "np": object()}) == GOOD


@pytest.mark.parametrize("name, value, allowed", [
    ("lambdas", [], "a non-empty list of finite numbers > 0"),
    ("lambdas", [0.1, -1.0], "a non-empty list of finite numbers > 0"),
    ("lambdas", [math.inf], "a non-empty list of finite numbers > 0"),
    ("widths", [8, 0], "a non-empty list of integers >= 1"),
    ("widths", [8, True], "a non-empty list of integers >= 1"),
    ("lr", math.nan, "a finite number > 0"),
    ("lr", 0.0, "a finite number > 0"),
    ("momentum", 1.0, "a finite number >= 0 and < 1"),
    ("momentum", -0.1, "a finite number >= 0 and < 1"),
    ("loss", "hinge", "one of 'ce', 'mse'"),
    ("tol", -1e-6, "null or a finite number > 0"),
    ("flag", 1, "true or false"),
    ("name", " ", "a non-empty string"),
])
def test_each_bad_value_is_refused_in_one_line_naming_parameter_and_rule(name, value, allowed):
    with pytest.raises(p.ParameterError) as err:
        RULES.check({**GOOD, name: value})
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"03_x.{name} = {value!r}: expected {allowed} ")
    assert f"--set 03_x.{name}=VALUE" in msg


def test_a_missing_parameter_is_refused():
    values = dict(GOOD)
    del values["lr"]
    with pytest.raises(p.ParameterError, match=r"03_x.lr = None: missing"):
        RULES.check(values)


def test_relations_run_after_the_single_rules_and_refuse_by_name():
    def relations(v):
        if v["K"] > v["n"]:
            rules.refuse("K", v["K"], f"at most n = {v['n']} (one sample per class at least)")

    rules = p.Rules("04_y", {"K": p.integer(ge=1), "n": p.integer(ge=1)}, relations)
    rules.check({"K": 2, "n": 3})
    with pytest.raises(p.ParameterError, match=r"^04_y.K = 5: at most n = 3"):
        rules.check({"K": 5, "n": 3})
    with pytest.raises(p.ParameterError, match=r"^04_y.K = 0: expected an integer >= 1"):
        rules.check({"K": 0, "n": 3})  # the single rule first: relations never see a bad K


def test_grid_phrases_and_orders():
    assert p.grid(p.integer(ge=1), min_len=2, max_len=2).allowed == "a list of exactly 2 integers >= 1"
    inc = p.grid(p.number(ge=0), increasing=True)
    assert inc.problem([0.1, 0.2]) is None and inc.problem([0.2, 0.1]) is not None
    dis = p.grid(p.integer(), distinct=True)
    assert dis.problem([1, 2]) is None and dis.problem([1, 1]) is not None
    assert p.grid(p.number()).problem("0.1") is not None  # a string is not a list


def test_all_rules_collects_modules_that_declare_parameters():
    class M:
        PARAMETERS = RULES

    assert p.all_rules([M, object()]) == {"03_x": RULES}
