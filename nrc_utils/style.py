"""The book's figure style: one theme, one palette per quantity, one way to mark what missed.

Every chapter calls :func:`setup` once and draws with the helpers below; no chapter sets a
theme, a palette for lambda or a log-axis formatter of its own.

- Theme: seaborn ``whitegrid`` in the ``notebook`` context, on an opaque white figure
  background, so that a figure stays readable in the book's dark theme (a transparent
  background would put black text on a dark page).
- Size: the book's text column is about :data:`COLUMN_WIDTH` inches wide at the resolution the
  figures are drawn; :func:`subplots` gives each panel a size and caps the whole figure at
  :data:`MAX_WIDTH` inches (wider figures are only scaled down by the browser, text and all).
- Colours: lambda on the sequential ``flare`` palette with ``lambda = 0`` in grey
  (:func:`lambda_palette`); other ordered grids (noise levels, depths) on :func:`sequence_palette`.
- Networks that missed their stationarity target are drawn hollow (:func:`face`), and every
  figure that does so says it in its legend (:func:`hollow_handle`): the theorem is about
  stationary points.
- Layers are told apart by marker (:func:`layer_markers`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

#: Width of the book's text column, in inches at the figures' resolution.
COLUMN_WIDTH = 7.5
#: No figure is drawn wider than this (inches).
MAX_WIDTH = 13.0
#: The markers that tell layers apart, in layer order.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">")
#: The colour of lambda = 0 (no weight decay) and of other references.
NO_DECAY_COLOUR = "0.45"
LAMBDA_PALETTE = "flare"
SEQUENCE_PALETTE = "crest"


def setup() -> None:
    """Set the book's theme (call once per chapter, before the first figure)."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid")
    mpl.rcParams.update({
        "figure.facecolor": "white",
        "savefig.facecolor": "white",
        "savefig.transparent": False,
        "figure.dpi": 100,
        "legend.framealpha": 0.9,
    })


def figure_size(nrows: int = 1, ncols: int = 1, panel: tuple[float, float] = (3.6, 3.2)) -> tuple[float, float]:
    """``(width, height)`` in inches for ``nrows x ncols`` panels of size ``panel``, the width capped
    at :data:`MAX_WIDTH` (the height shrinks in proportion)."""
    if nrows < 1 or ncols < 1:
        raise ValueError(f"a figure needs at least one row and one column of panels, got {nrows} x {ncols}")
    width, height = ncols * panel[0], nrows * panel[1]
    scale = min(1.0, MAX_WIDTH / width)
    return round(width * scale, 3), round(height * scale, 3)


def subplots(nrows: int = 1, ncols: int = 1, panel: tuple[float, float] = (3.6, 3.2), **kw):
    """``plt.subplots`` with :func:`figure_size` and a constrained layout; returns ``(fig, axes)``."""
    import matplotlib.pyplot as plt

    kw.setdefault("layout", "constrained")
    return plt.subplots(nrows, ncols, figsize=figure_size(nrows, ncols, panel), **kw)


def lambda_label(lam: float) -> str:
    """``"λ = 0.01"``: the legend and title label of a weight decay."""
    return f"λ = {lam:g}"


def lambda_palette(lambdas: Iterable[float]) -> dict[float, tuple]:
    """``{lambda: colour}``: the positive values in increasing order on :data:`LAMBDA_PALETTE`,
    ``lambda = 0`` in :data:`NO_DECAY_COLOUR`. Keys are the values as given (deduplicated)."""
    import matplotlib.colors as mcolors
    import seaborn as sns

    values = list(dict.fromkeys(float(v) for v in lambdas))
    positive = sorted(v for v in values if v > 0)
    colours = dict(zip(positive, sns.color_palette(LAMBDA_PALETTE, n_colors=max(len(positive), 1))))
    return {v: colours[v] if v > 0 else mcolors.to_rgb(NO_DECAY_COLOUR) for v in values}


def sequence_palette(values: Iterable, name: str = SEQUENCE_PALETTE) -> dict:
    """``{value: colour}`` for an ordered grid (noise levels, depths, seeds) on a sequential palette,
    in the order given."""
    import seaborn as sns

    values = list(dict.fromkeys(values))
    return dict(zip(values, sns.color_palette(name, n_colors=max(len(values), 1))))


def layer_markers(layers: Sequence) -> dict:
    """``{layer: marker}`` in layer order (from :data:`MARKERS`, repeating past the eleventh)."""
    return {layer: MARKERS[i % len(MARKERS)] for i, layer in enumerate(layers)}


def face(colour, reached: bool):
    """The marker face of a network: filled with ``colour`` when it reached its stationarity
    target, hollow (``"none"``) when it did not."""
    return colour if reached else "none"


def hollow_handle(label: str = "hollow: residual above target"):
    """A legend entry that explains hollow markers."""
    import matplotlib.lines as mlines

    return mlines.Line2D([], [], ls="", marker="o", ms=7, mfc="none", color="0.4", label=label)


def plain_log_ticks(ax, axis: str = "both") -> None:
    """Label a log axis with plain numbers (``0.01``, ``3``) instead of powers of ten, minor ticks
    unlabelled. ``axis`` is ``"x"``, ``"y"`` or ``"both"``."""
    import matplotlib.ticker as mticker

    if axis not in ("x", "y", "both"):
        raise ValueError(f"axis must be 'x', 'y' or 'both', got {axis!r}")
    for name in ("x", "y") if axis == "both" else (axis,):
        target = ax.xaxis if name == "x" else ax.yaxis
        target.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
        target.set_minor_formatter(mticker.NullFormatter())


__all__ = [
    "COLUMN_WIDTH", "LAMBDA_PALETTE", "MARKERS", "MAX_WIDTH", "NO_DECAY_COLOUR", "SEQUENCE_PALETTE",
    "face", "figure_size", "hollow_handle", "lambda_label", "lambda_palette", "layer_markers",
    "plain_log_ticks", "sequence_palette", "setup", "subplots",
]
