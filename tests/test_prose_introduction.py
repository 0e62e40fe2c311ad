"""nrc_utils.prose.introduction: every sentence of chapter 1, every branch."""

import math

import pytest

from nrc_utils.prose import introduction as prose


def test_architecture_activation_and_loss_names():
    assert prose.architecture(64, [64, 64, 64], 10) == "64 → 64 → 64 → 64 → 10"
    assert prose.activation_name("tanh") == "`tanh`"
    assert prose.loss_name("ce") == "cross-entropy"
    assert prose.loss_name("mse") == "the square loss"
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        prose.loss_name("hinge")


@pytest.mark.parametrize("stop, expected", [
    ("target", "reached"),
    ("iteration cap", "not reached: polishing stopped at its iteration cap"),
    ("time cap", "not reached: polishing stopped at its time cap"),
    ("no progress", "not reached: polishing stopped when no step lowered the loss (L-BFGS) or the residual (Newton) "
                    "any more"),
    (None, "not reached: the network was not polished"),
    ("something new", "not reached: polishing stopped (something new)"),
])
def test_polish_note_names_what_stopped_lbfgs(stop, expected):
    assert prose.polish_note(stop) == expected


@pytest.mark.parametrize("rank, word", [(9, "below"), (10, "equal to"), (11, "above")])
def test_rank_vs_K_on_both_sides_and_at_K(rank, word):
    assert prose.rank_vs_K(rank, 10) == word


def test_last_layer_note_for_each_loss():
    assert prose.last_layer_note("ce", 10).endswith("rank at most K − 1 = 9")
    assert prose.last_layer_note("mse", 10) == "the proposition does not apply to the square loss"


@pytest.mark.parametrize("value, reference, expected", [
    (0.94, 0.96, "a lower"), (0.97, 0.96, "a higher"), (0.96, 0.96, "the same"),
    (math.nan, 0.96, "an undefined"), (0.96, math.nan, "an undefined"),
])
def test_compare_gives_the_phrase_with_its_article(value, reference, expected):
    assert prose.compare(value, reference, "lower", "higher") == expected


def test_compare_uses_an_before_a_vowel():
    assert prose.compare(2.0, 1.0, "smaller", "even larger") == "an even larger"


def _row(tcv, nc1, means=5.0):
    return {"tcv2_normalised": tcv, "nc1": nc1, "means_effective_rank": means}


def test_collapse_reading_when_tcv_falls_but_nc1_rises_explains_the_means():
    text = prose.collapse_reading(_row(0.117, 5.09, 5.49), _row(0.180, 0.27, 8.0), 10)
    assert text.startswith("The two measures disagree. Weight decay leaves a smaller fraction")
    assert "effective rank 5.5 with weight decay against 8.0 without" in text
    assert text.endswith("span K − 1 = 9 directions.")


def test_collapse_reading_when_both_fall():
    assert prose.collapse_reading(_row(0.1, 0.2), _row(0.2, 0.3), 10).startswith("Both measures agree")


def test_collapse_reading_when_only_nc1_falls():
    assert prose.collapse_reading(_row(0.3, 0.2), _row(0.2, 0.3), 10) == (
        "The two measures disagree: weight decay lowers NC1 but not the within-class fraction of the spread.")


def test_collapse_reading_when_neither_falls_and_for_ties_and_nan():
    neither = prose.collapse_reading(_row(0.3, 0.4), _row(0.2, 0.3), 10)
    assert neither.startswith("Neither measure shows tighter clustering")
    assert prose.collapse_reading(_row(0.2, 0.3), _row(0.2, 0.3), 10) == neither  # a tie is not lower
    assert prose.collapse_reading(_row(math.nan, math.nan), _row(0.2, 0.3), 10) == neither
    # NC1 undefined but TCV lower: the "disagree" reading (a NaN is never lower)
    assert prose.collapse_reading(_row(0.1, math.nan), _row(0.2, 0.3), 10).startswith("The two measures disagree.")
