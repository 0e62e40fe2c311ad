"""The sentences of chapter 2 (``02_eigenvalue_equation``), built from the run's numbers.

Pure functions: numbers and tables in, Markdown text out; every branch is driven by
``tests/test_prose_eigenvalue_equation.py``. The labels are the chapter's: ``prop-cluster-split``
(items 3 and 4: when the class part ``A_l`` has rank ``K - 1``), ``prop-sgd-unrolled`` (the alignment
of mini-batch gradients), ``prop-gradient-rank``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..report import rounded

# Unicode, not TeX: glued Markdown is not typeset
#: The loss of every network of the chapter, as the text names it.
LOSS_NAMES = {"ce": "cross-entropy loss", "mse": "square loss ℓ(f, y) = ½‖f − e_y‖²"}


def loss_name(loss: str) -> str:
    """``"cross-entropy loss"`` or the square loss with its formula."""
    if loss not in LOSS_NAMES:
        raise ValueError(f"unknown loss {loss!r}; choose one of: {', '.join(LOSS_NAMES)}")
    return LOSS_NAMES[loss]


def architecture(d: int, widths: Sequence[int], K: int) -> str:
    """``"64 → 64 → 64 → 10"``: the widths of an MLP from its input to its output."""
    return " → ".join(str(n) for n in (d, *widths, K))


def number_list(values: Sequence[float]) -> str:
    """``"0.001, 0.003, 0.01"`` (``:g``); ``"none"`` for an empty list."""
    return ", ".join(f"{v:g}" for v in values) if len(values) else "none"


def code(name: str) -> str:
    """``name`` as inline code: ``"`tanh`"``."""
    return f"`{name}`"


def alignment_trend(sums_by_lambda: Sequence[float]) -> str:
    """How the effective rank of a window's summed gradients varies over the lambda grid (values in
    increasing lambda): strictly decreasing, not, or a grid of one lambda (no trend to read)."""
    if len(sums_by_lambda) < 2:
        return "with a single λ there is no trend across the grid to read"
    if all(a > b for a, b in zip(sums_by_lambda, sums_by_lambda[1:])):
        return "across the grid it decreases as λ grows"
    return "across the grid it does not decrease monotonically with λ"


def bias_bound_verdict(checks: Sequence[Mapping[str, float]], rel_slack: float = 1e-9) -> str:
    """Whether ``sigma_K(A_l) <= ||grad_b L_0|| ||mean_c mu_c||`` (item 3 of ``prop-cluster-split``) holds in
    the checked layers (rows ``layer, sigma_K, bound``; relative slack ``rel_slack`` for round-off):
    "holds in every layer", "fails in layer(s) ..." or, with no layer to check, says so."""
    rows = list(checks)
    if not rows:
        return "could not be checked (no layer has a bias)"
    failed = [int(c["layer"]) for c in rows if not c["sigma_K"] <= c["bound"] * (1 + rel_slack) + 1e-300]
    if not failed:
        return "holds in every layer"
    return f"fails in layer(s) {', '.join(map(str, failed))}"


def _collapse_reason(layer: int, last_layer: int, loss: str, centring: float, collapse_rtol: float) -> str | None:
    """Why item 4 of ``prop-cluster-split`` gives ``rank A_l <= K - 1`` for a layer, or ``None``: centred
    inputs (``l = 1``), or cross-entropy signals that sum to zero over the ``d_L = K`` outputs (the last
    layer: only there ``rank A_l <= d_l - 1`` is ``K - 1``)."""
    if layer == 1 and centring < collapse_rtol:
        return "its inputs are centred over these samples"
    if layer == last_layer and loss == "ce":
        return "the cross-entropy signals sum to zero over its K outputs"
    return None


def k_minus_one_reading(ratios: Mapping[int, float], collapse_rtol: float, centring: float, last_layer: int,
                        loss: str) -> str:
    """What ``sigma_K(A_l) / sigma_1(A_l)`` of the network *without* biases shows, layer by layer
    (``{layer: ratio}``): the layers where it stays at or above ``collapse_rtol`` (its smallest value,
    rounded down), and the layers where it collapses anyway, with item 4's reason when it names one
    (``centring``: ``||mean_i x_i|| / mean_i ||x_i||``, compared with ``collapse_rtol``)."""
    if not ratios:
        return "there is no layer to read"
    kept = [l for l, r in ratios.items() if r >= collapse_rtol]
    named, unnamed = [], []
    for l, r in ratios.items():
        if r < collapse_rtol:
            why = _collapse_reason(l, last_layer, loss, centring, collapse_rtol)
            (named if why else unnamed).append(f"layer {l} ({r:.0e}: {why})" if why else f"layer {l} ({r:.0e})")
    named_text = " and ".join(named) + ", as item 4 of the proposition says"
    unnamed_text = " and ".join(unnamed) + ", for a reason item 4 does not name"
    if not kept:
        details = [f"in {named_text}"] * bool(named) + [f"in {unnamed_text}"] * bool(unnamed)
        return "the ratio collapses in every layer: " + "; ".join(details)
    text = (f"the ratio stays at {rounded(min(ratios[l] for l in kept), '.1e', -1)} or more in layer(s) "
            f"{', '.join(map(str, kept))}")
    if named:
        text += f"; it collapses anyway in {named_text}"
    if unnamed:
        text += f"; it {'also collapses' if named else 'collapses anyway'} in {unnamed_text}"
    return text


__all__ = ["LOSS_NAMES", "alignment_trend", "architecture", "bias_bound_verdict", "code", "k_minus_one_reading",
           "loss_name", "number_list"]
