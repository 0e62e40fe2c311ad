"""The sentences of chapter 6, "Experiments on real data", from the run's numbers.

Pure functions: numbers, lists and small tables in, Markdown text out. Every branch is driven
by ``tests/test_prose_real_data.py`` (both sides of each threshold, the empty case, the case
where no network reached its target). The numbers come from :mod:`nrc_utils.experiments.real_data`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from ..report import subscript

#: Spearman correlation (normalised TCV_2 of the inputs against the distance to rank K, across
#: layers and lambda) above which the chapter calls it positive, as the paper's picture predicts.
RANK_TCV_POSITIVE = 0.3
#: Polishing "changes the ranks" when the median rank of the hidden layers after polishing is
#: below this fraction of the median after SGD.
POLISH_RANK_FRACTION = 0.75
LOSS_NAMES = {"ce": "cross-entropy", "mse": "the square loss"}


def _nan(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def names_list(titles: Sequence[str]) -> str:
    """``"Digits, MNIST"``; ``"no data set"`` when empty."""
    return ", ".join(titles) if titles else "no data set"


def absent_sentence(absent: Sequence[Mapping[str, str]]) -> str:
    """One sentence per requested data set left out (rows with ``title``, ``kind`` ``"absent"``
    or ``"unreadable"``, and the loader's ``reason``), or that every one is present."""
    if not len(absent):
        return "Every data set that this profile asks for is present."
    out = []
    for row in absent:
        what = "is absent from this build" if row["kind"] == "absent" else "could not be read in this build"
        out.append(f"**{row['title']} {what}** and left out of this chapter: {row['reason']}.")
    return " ".join(out)


def architecture(widths: Sequence[int]) -> str:
    """``"d → 64 → 64 → K"``."""
    return " → ".join(["d", *map(str, widths), "K"])


def loss_name(loss: str) -> str:
    """``"cross-entropy"`` or ``"the square loss"``."""
    return LOSS_NAMES[loss]


def lambda_set(lambdas: Sequence[float]) -> str:
    """``"{0.003, 0.01}"``."""
    return "{" + ", ".join(f"{v:g}" for v in lambdas) + "}"


def code(text: str) -> str:
    """``text`` as inline code."""
    return f"`{text}`"


def layers_text(layers: Sequence[int]) -> str:
    """``"W₂, W₃"``; ``"none"`` when empty."""
    return ", ".join(f"W{subscript(l)}" for l in layers) if layers else "none"


def trend_verdict(hidden: Sequence[int], falling: Sequence[int], rising: Sequence[int], n_networks: int) -> str:
    """How the relative distance to rank K of the hidden layers moves with lambda (per-layer
    Spearman sign: ``falling`` negative, ``rising`` positive) over ``n_networks`` networks that
    reached the target."""
    if n_networks == 0:
        return "No network reached the target, so no trend with λ is reported."
    if not hidden:
        return "This network has no layer that reads hidden features, so there is no trend with λ to report."
    if len(falling) == len(hidden):
        return ("In every layer that reads hidden features the relative distance to rank K falls as λ grows "
                "(Spearman correlation with λ negative in each), as the paper states.")
    if rising:
        return (f"The paper's statement that the ranks decrease with λ is **contradicted** in layers "
                f"{layers_text(rising)}: there the relative distance to rank K grows with λ (positive Spearman "
                f"correlation); it falls in {layers_text(falling)}.")
    return ("Over this λ grid the relative distance to rank K of the layers that read hidden features shows no "
            "monotone trend with λ.")


def collapse_direction(tcv_up: bool | None, nc1_up: bool | None) -> str:
    """How the last layer's input collapse measures move from the smallest to the largest lambda
    (empty when no network reached the target at both ends)."""
    if tcv_up is None or nc1_up is None:
        return "No network reached the target at both ends of the λ grid, so the collapse measures are not compared."
    if tcv_up and nc1_up:
        return ("With a larger λ the last layer's inputs are *less* collapsed here (both measures grow): whatever "
                "lowers the ranks along λ in this experiment, it is not tighter clusters at the last hidden layer.")
    if not (tcv_up or nc1_up):
        return "With a larger λ the last layer's inputs are more collapsed (both measures fall)."
    return "The two collapse measures of the last layer's inputs move in opposite directions with λ."


def within_layer(within: Mapping[int, float]) -> str:
    """``"W₂: 0.71; W₃: -0.31"``; ``"not enough networks"`` when empty."""
    return "; ".join(f"W{subscript(l)}: {v:.2f}" for l, v in within.items()) or "not enough networks"


def within_reading(within: Mapping[int, float]) -> str:
    """What the within-layer correlations say (negative ones: the relation is reversed)."""
    reversed_ = [l for l, v in within.items() if v < 0]
    if reversed_:
        return (f"Within {layers_text(reversed_)} the relation is reversed: across λ and seeds, *less* clustered "
                "inputs go with a layer *closer* to rank K. The bound allows this, since it divides the within-class "
                "variability by λ; but the paper's statement that the ranks depend on the level of neural collapse "
                "then holds across layers, not along λ within these layers.")
    if within:
        return ("Within every layer the correlation is not negative either: less within-class variability of the "
                "inputs goes with a smaller distance to rank K.")
    return "Too few networks reached the target to measure the relation within a layer."


def rank_tcv_verdict(rho: float) -> str:
    """The reading of the across-layer Spearman correlation (threshold :data:`RANK_TCV_POSITIVE`)."""
    if _nan(rho):
        return "not measured, since fewer than three layers of networks that reached the target are left"
    if rho > RANK_TCV_POSITIVE:
        return ("positive, as the paper's picture predicts: the more tightly clustered a layer's inputs, the closer "
                "the layer is to rank K")
    return "weak or negative, which does **not** support the paper's picture of ranks driven by the within-class variability"


def sgd_trunc_reading(acc_K: float, full: float, tolerance: float) -> str:
    """Whether the SGD networks keep their accuracy (within ``tolerance``) when cut to rank K."""
    if _nan(acc_K) or _nan(full):
        return "no SGD network was measured at this λ"
    if acc_K >= full - tolerance:
        return "a high numerical rank does not mean that the small singular values matter"
    return "their singular values beyond the K-th do carry accuracy"


def trunc_verdict(rmin_trend: float) -> str:
    """Whether the rank the networks need falls with lambda (sign of a Spearman correlation)."""
    if _nan(rmin_trend):
        return "no network reached the target, so nothing is said about the rank the networks need"
    if rmin_trend < 0:
        return "the larger λ, the fewer singular values the network needs"
    return "the number of singular values the network needs does **not** fall with λ over this grid"


def polish_reading(rank_sgd: float, rank_pol: float) -> str:
    """Whether polishing lowers the hidden layers' median rank (below
    :data:`POLISH_RANK_FRACTION` of the SGD median)."""
    if _nan(rank_sgd) or _nan(rank_pol):
        return "No network that reads hidden features reached the target, so the ranks before and after are not compared."
    if rank_pol < POLISH_RANK_FRACTION * rank_sgd:
        return ("The polishing is not a small correction: the low ranks this chapter reports belong to the stationary "
                "points of the weight-decayed loss, and the networks that SGD at a fixed learning rate leaves behind "
                "show them far less in numerical rank (what their extra singular values carry is measured by the "
                "truncation above).")
    return "Polishing changes the ranks little here: SGD already ends close to the ranks of the stationary points."


def sgd_vacuous(sgd_residuals: Sequence[float]) -> str:
    """How many SGD networks have a layer with ``rho_l >= 1`` (where the remark allows any distance)."""
    n = len(sgd_residuals)
    big = sum(1 for r in sgd_residuals if r >= 1)
    if n == 0:
        return "there is no SGD network to judge"
    if big == n:
        return "every SGD network has a layer with ρ_l ≥ 1, where the remark above allows any distance from rank K"
    if big == 0:
        return "no SGD network has a layer with ρ_l ≥ 1, but none is stationary up to the polishing target either"
    return (f"{big} of {n} SGD networks have a layer with ρ_l ≥ 1, where the remark above allows any distance "
            "from rank K")


__all__ = ["LOSS_NAMES", "POLISH_RANK_FRACTION", "RANK_TCV_POSITIVE", "absent_sentence", "architecture", "code",
           "collapse_direction", "lambda_set", "layers_text", "loss_name", "names_list", "polish_reading",
           "rank_tcv_verdict", "sgd_trunc_reading", "sgd_vacuous", "trend_verdict", "trunc_verdict",
           "within_layer", "within_reading"]
