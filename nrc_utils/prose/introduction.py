"""The sentences of chapter 1 (``01_introduction``): pure functions of the run's numbers.

Every branch is driven by ``tests/test_prose_introduction.py``: both sides of each comparison,
ties, and the network that missed its stationarity target.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

#: The chapter's loss names (parameter ``loss``).
LOSS_NAMES = {"ce": "cross-entropy", "mse": "the square loss"}

#: What stopped the last polishing stage (``TrainResult.stop``: Newton's, else L-BFGS's), after "not reached: ".
_MISSED = {"iteration cap": "polishing stopped at its iteration cap",
           "time cap": "polishing stopped at its time cap",
           "no progress": "polishing stopped when no step lowered the loss (L-BFGS) or the residual (Newton) any more",
           None: "the network was not polished"}


def architecture(d: int, widths: Sequence[int], K: int) -> str:
    """The layer widths ``d → w_1 → ... → K``: ``architecture(64, [64, 64], 10) == "64 → 64 → 64 → 10"``."""
    return " → ".join(str(n) for n in [d, *widths, K])


def activation_name(activation: str) -> str:
    """The activation as code: ``"`tanh`"``."""
    return f"`{activation}`"


def loss_name(loss: str) -> str:
    """``"cross-entropy"`` for ``"ce"``, ``"the square loss"`` for ``"mse"``."""
    if loss not in LOSS_NAMES:
        raise ValueError(f"unknown loss {loss!r}; choose one of: {', '.join(LOSS_NAMES)}")
    return LOSS_NAMES[loss]


def polish_note(stop: str | None) -> str:
    """Whether the weight-decayed network reached its residual target, from ``TrainResult.stop``:
    ``"reached"``, or ``"not reached: "`` and what stopped the polishing."""
    if stop == "target":
        return "reached"
    return "not reached: " + _MISSED.get(stop, f"polishing stopped ({stop})")


def rank_vs_K(rank: int, K: int) -> str:
    """``"below"``, ``"equal to"`` or ``"above"``: a rank against ``K`` (as in "10 (equal to K)")."""
    return "below" if rank < K else "equal to" if rank == K else "above"


def last_layer_note(loss: str, K: int) -> str:
    """What the chapter's proposition ``prop-ch1-last-layer`` says of the rows of ``W_L``:
    they sum to zero with cross-entropy (rank at most ``K - 1``); nothing for the square loss."""
    if loss == "ce":
        return f"with cross-entropy, the proposition above requires exactly zero, hence rank at most K − 1 = {K - 1}"
    return "the proposition does not apply to the square loss"


def compare(value: float, reference: float, less: str, more: str) -> str:
    """``value`` against ``reference`` as a noun phrase with its article: ``"a <less>"``, ``"a <more>"`` or
    ``"the same"`` (exactly equal), e.g. "the weight-decayed network has *a lower* test accuracy";
    ``"an undefined"`` when either is NaN."""
    if math.isnan(value) or math.isnan(reference):
        return "an undefined"
    if value == reference:
        return "the same"
    word = less if value < reference else more
    return ("an " if word[:1] in "aeiou" else "a ") + word


def collapse_reading(wd: Mapping[str, float], nowd: Mapping[str, float], K: int) -> str:
    """How the two measures of within-class variability at ``h_{L-1}`` compare between the networks.

    ``wd``, ``nowd``: the rows of the last hidden layer in
    :func:`nrc_utils.experiments.introduction.feature_collapse` (``tcv2_normalised``, ``nc1``,
    ``means_effective_rank``, shown with one decimal). "Lower" is strict; a NaN is never lower.
    """
    means_rank_wd, means_rank_nowd = wd["means_effective_rank"], nowd["means_effective_rank"]
    tcv_lower = wd["tcv2_normalised"] < nowd["tcv2_normalised"]
    nc1_lower = wd["nc1"] < nowd["nc1"]
    if tcv_lower and not nc1_lower:
        return (
            "The two measures disagree. Weight decay leaves a smaller fraction of the spread within "
            "classes, but a larger NC1. NC1 divides the within-class spread, direction by direction, by "
            "the between-class spread, and the weight-decayed network places its class means in few "
            f"directions: the centred class means of the last layer's inputs have effective rank {means_rank_wd:.1f} "
            f"with weight decay against {means_rank_nowd:.1f} without. In the remaining directions some "
            "classes are separated only weakly, and there the small within-class spread weighs heavily. "
            "The features of the weight-decayed network are more tightly clustered in the sense of the "
            "paper's total cluster variation, but they are not closer to full neural collapse, whose "
            f"class means span K − 1 = {K - 1} directions."
        )
    if tcv_lower:
        return ("Both measures agree: the features of the weight-decayed network are more tightly "
                "clustered by class.")
    if nc1_lower:
        return ("The two measures disagree: weight decay lowers NC1 but not the within-class fraction "
                "of the spread.")
    return ("Neither measure shows tighter clustering with weight decay, contrary to the picture "
            "the paper draws.")


__all__ = ["LOSS_NAMES", "activation_name", "architecture", "collapse_reading", "compare", "last_layer_note",
           "loss_name", "polish_note", "rank_vs_K"]
