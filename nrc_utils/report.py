"""Numbers, text and tables for the chapters' prose.

A value glued into an "at most" or "at least" sentence must stay true once rounded for
display: 0.9967 shown as "at least 0.997" is false. :func:`rounded` formats a value at a
given precision and rounds in the safe direction.

Glued text goes through :func:`glue` (or :func:`markdown`): ``IPython.display.Markdown(text)``
reads ``text`` as a *file* when it names an existing path (``"."``, ``"book"``, ...), which once
turned a one-character sentence ending into ``IsADirectoryError`` on a fresh clone.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import numpy as np


def rounded(value: float, spec: str, direction: int) -> str:
    """``value`` formatted with ``spec`` (``'.2f'``, ``'.1e'``, ``'.2g'``), rounded up (``direction=+1``)
    or down (``direction=-1``) at the shown precision, so that "at most" (up) or "at least" (down)
    the shown number stays true. Zero and non-finite values are formatted as they are.

    ``rounded(0.9967, '.3f', -1) == '0.996'``; ``rounded(1.04e-7, '.1e', +1) == '1.1e-07'``.
    The rounding is done in exact decimal arithmetic on the float's value; a value shown as the
    decimal it was written from (``3e-5`` as ``'3.0e-05'``) is left as it is.
    """
    if direction not in (-1, 1):
        raise ValueError(f"direction must be +1 (round up) or -1 (round down), got {direction}")
    if len(spec) < 3 or spec[0] != "." or spec[-1] not in "efg" or not spec[1:-1].isdigit():
        raise ValueError(f"spec must look like '.2f', '.1e' or '.2g', got {spec!r}")
    value = float(value)
    text = format(value, spec)
    # the shown text is kept when it reads back as the value itself or lies on the safe side of it
    if not math.isfinite(value) or value == 0 or (float(text) - value) * direction >= 0:
        return text
    n = int(spec[1:-1])
    exact = Decimal(value)
    if spec[-1] == "f":
        quantum = Decimal(1).scaleb(-n)
    else:  # 'e': n digits after the point; 'g': n significant digits; in the value's own decade
        quantum = Decimal(1).scaleb(exact.adjusted() - (n if spec[-1] == "e" else max(n, 1) - 1))
    return format(float(exact.quantize(quantum, rounding=ROUND_CEILING if direction > 0 else ROUND_FLOOR)), spec)


class Markdown:
    """Markdown text for display or glue that is always the text itself, never a file name or URL.

    ``_repr_markdown_`` gives the text (``{glue:md}`key` `` in a chapter); ``repr`` gives the text
    as a Python string literal, which ``{glue:text}`key` `` reads back with ``literal_eval``: the
    text itself, never a number (a bare ``9e+03`` would be read as ``9000.0``)."""

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"markdown text must be a str, got {type(text).__name__}")
        self.text = text

    def _repr_markdown_(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return repr(self.text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Markdown) and other.text == self.text

    __hash__ = None  # type: ignore[assignment]


def markdown(text: str) -> Markdown:
    """``text`` as :class:`Markdown`: safe to glue whatever it says (``"."`` included)."""
    return Markdown(text)


def glue(key: str, value: object) -> None:
    """``myst_nb.glue(key, value, display=False)``, with a ``str`` glued as :func:`markdown` and a
    numpy scalar as the Python number it holds: the one way a chapter glues a value (numbers stay
    numbers, for ``{glue:text}`key:.2f` ``)."""
    from myst_nb import glue as _glue

    if isinstance(value, np.generic):  # numpy 2 shows np.float64(0.5), which {glue:text} cannot read
        value = value.item()
    _glue(key, markdown(value) if isinstance(value, str) else value, display=False)


def table(df: "object", **kw: object) -> None:
    """Show a pandas DataFrame as an HTML table without its index (empty cells for missing values)."""
    from IPython.display import HTML, display

    display(HTML(df.to_html(index=False, na_rep="", **kw)))  # type: ignore[attr-defined]


#: What a number of networks did, by the reason their last polishing stage stopped (``TrainResult.stop``:
#: Newton's when it ran, else L-BFGS's), as a predicate after "k networks".
STOP_PLURAL = {"no progress": "stopped when no step lowered the loss (L-BFGS) or the residual (Newton) any more",
               "iteration cap": "stopped at the iteration cap", "time cap": "stopped at the time cap",
               "not polished": "were not polished"}


def _targets(results: "list") -> str:
    targets = sorted({r.target for r in results if r.target is not None})
    if len(targets) == 1:
        return f"the target {targets[0]:.0e}"
    return "their targets (" + " or ".join(f"{t:.0e}" for t in targets) + ")"


def stop_summary(results: "list", what: str) -> str:
    """One sentence: how many of ``results`` (``train.TrainResult``) reached the residual target of their
    last polishing stage (``TrainResult.target``: Newton's ``newton_tol`` when it ran, else ``polish_tol``),
    and why the others stopped (``TrainResult.stop``), with their largest residuals (rounded up).

    ``stop_summary(results, "networks of the sweep")`` gives e.g. "4 of 5 networks of the sweep
    reached the target 1e-12; 1 stopped at the iteration cap (residuals up to 3.2e-06)."
    """
    reasons = [r.stop or "not polished" for r in results]
    n, m = reasons.count("target"), len(results)
    if n == m:
        worst = max(r.max_residual for r in results)
        return f"All {m} {what} reached {_targets(results)} (largest residual at most {rounded(worst, '.1e', +1)})."
    others = []
    for key, predicate in STOP_PLURAL.items():
        miss = [r for r, why in zip(results, reasons) if why == key]
        if miss:
            worst = max(r.max_residual for r in miss)
            others.append(f"{len(miss)} {predicate} (residuals up to {rounded(worst, '.1e', +1)})")
    return f"{n} of {m} {what} reached {_targets(results)}; " + "; ".join(others) + "."


#: A smallest Hessian eigenvalue within this fraction of the largest one (in absolute value) is zero up to
#: rounding (the value of ``nrc_utils.stationary.ZERO_RTOL``, repeated so that this module stays light).
HESSIAN_ZERO_RTOL = 1e-10


def hessian_kind(min_eigenvalue: float, max_eigenvalue: float | None) -> str:
    """``"minimum"`` (smallest eigenvalue of the Hessian above ``HESSIAN_ZERO_RTOL`` times the largest in absolute
    value), ``"saddle"`` (below minus that), or ``"flat"`` (zero up to rounding: a flat direction, e.g. a
    continuous symmetry of the network). Without the largest eigenvalue the sign decides (zero is flat)."""
    scale = HESSIAN_ZERO_RTOL * abs(max_eigenvalue) if max_eigenvalue is not None and math.isfinite(max_eigenvalue) \
        else 0.0
    if min_eigenvalue > scale:
        return "minimum"
    if min_eigenvalue < -scale:
        return "saddle"
    return "flat"


def hessian_summary(results: "list", what: str, why_missing: str = "no Newton stage") -> str:
    """One sentence on the smallest eigenvalue of the Hessian of ``L_lambda`` at each of ``results``
    (``train.TrainResult.min_eigenvalue`` and ``max_eigenvalue``, computed with the Newton stage), read by
    :func:`hessian_kind`: a strict local minimum, a flat direction (zero up to rounding), or a saddle.
    Networks without it are counted apart, with ``why_missing`` (by default: no Newton stage, i.e. not
    smooth or not polished; a chapter that leaves large networks out says so), except those whose
    Lanczos iteration stopped at a cap before converging (``TrainResult.hessian`` ``"lanczos: ..."``),
    which are counted with that reason.

    e.g. "The Hessian of L_λ is positive definite at all 5 networks of the sweep (smallest eigenvalue
    from 2.1e-05 to 3.0e-04): strict local minima, not saddles."
    """
    done = [r for r in results if r.min_eigenvalue is not None and math.isfinite(r.min_eigenvalue)]
    missing = len(results) - len(done)
    done_ids = {id(r) for r in done}
    capped = sum(1 for r in results if id(r) not in done_ids and str(getattr(r, "hessian", None)).startswith("lanczos:"))
    lanczos_words = "the Lanczos iteration reached its cap before converging"
    if capped == missing:
        why_missing = lanczos_words
    elif capped:
        why_missing = f"{missing - capped}: {why_missing}; {capped}: {lanczos_words}"
    if not done:
        return f"The Hessian's smallest eigenvalue was not computed for the {what} ({why_missing})."
    kinds = {"minimum": [], "flat": [], "saddle": []}
    for r in done:
        kinds[hessian_kind(r.min_eigenvalue, getattr(r, "max_eigenvalue", None))].append(r.min_eigenvalue)
    flat_words = (f"zero up to rounding (at most {HESSIAN_ZERO_RTOL:.0e} of the largest eigenvalue in absolute "
                  "value: a flat direction, along which second order cannot tell a minimum from a saddle)")
    if len(results) == 1:
        v = done[0].min_eigenvalue
        if kinds["minimum"]:
            return (f"The Hessian of L_λ at the {what} is positive definite (smallest eigenvalue "
                    f"{rounded(v, '.1e', -1)}): a strict local minimum, not a saddle.")
        if kinds["flat"]:
            return f"The smallest eigenvalue of the Hessian of L_λ at the {what}, {v:.1e}, is {flat_words}."
        return (f"The Hessian of L_λ at the {what} has the negative smallest eigenvalue {rounded(v, '.1e', -1)}: "
                "a saddle, not a local minimum.")
    if len(kinds["minimum"]) == len(done):
        pos = kinds["minimum"]
        text = (f"The Hessian of L_λ is positive definite at {'all ' if not missing else ''}{len(pos)} {what} "
                f"(smallest eigenvalue from {rounded(min(pos), '.1e', -1)} to {rounded(max(pos), '.1e', +1)}): "
                "strict local minima, not saddles.")
    else:
        parts = []
        if kinds["minimum"]:
            parts.append(f"{len(kinds['minimum'])} are strict local minima (smallest eigenvalue at least "
                         f"{rounded(min(kinds['minimum']), '.1e', -1)})")
        if kinds["flat"]:
            parts.append(f"{len(kinds['flat'])} have a smallest eigenvalue that is {flat_words}")
        if kinds["saddle"]:
            parts.append(f"{len(kinds['saddle'])} are saddles (smallest eigenvalue down to "
                         f"{rounded(min(kinds['saddle']), '.1e', -1)})")
        text = (f"Of the {len(done)} {what} with a computed Hessian of L_λ, " + "; ".join(parts) + ".")
    if missing:
        text += f" It was not computed for {missing} more ({why_missing})."
    return text


def lbfgs_iterations(result: "object") -> int:
    """The L-BFGS iterations that ``train.polish`` ran for a ``train.TrainResult`` (0 when it was not
    polished): its record counts steps on, from the last SGD step, through the polishing."""
    h = result.history  # type: ignore[attr-defined]
    steps = [s for s, phase in zip(h.get("step", []), h.get("phase", [])) if phase == "lbfgs"]
    if not steps:
        return 0
    return int(steps[-1] - result.config.steps)  # type: ignore[attr-defined]


_SUBSCRIPTS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def subscript(text: object) -> str:
    """``text`` with its digits as subscripts, for tables and glued text where no math is rendered:
    ``"W" + subscript(3) == "W₃"``."""
    return str(text).translate(_SUBSCRIPTS)


__all__ = ["Markdown", "STOP_PLURAL", "glue", "lbfgs_iterations", "markdown", "rounded", "stop_summary", "subscript", "table"]
