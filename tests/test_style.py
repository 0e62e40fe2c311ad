"""Tests for nrc_utils.style and the safe glued Markdown of nrc_utils.report."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from IPython.core.formatters import format_display_data  # noqa: E402
from myst_nb.core.variables import format_plain_text  # noqa: E402

from nrc_utils import report, style  # noqa: E402


def test_setup_draws_on_an_opaque_white_background_for_the_dark_theme():
    style.setup()
    assert matplotlib.rcParams["figure.facecolor"] == "white"
    assert matplotlib.rcParams["savefig.transparent"] is False


def test_figure_size_caps_the_width_and_keeps_the_aspect():
    assert style.figure_size(1, 2, (3.0, 2.0)) == (6.0, 2.0)
    w, h = style.figure_size(2, 10, (3.0, 2.0))
    assert w == style.MAX_WIDTH and h == pytest.approx(4.0 * style.MAX_WIDTH / 30.0, abs=1e-3)
    with pytest.raises(ValueError, match="at least one row"):
        style.figure_size(0, 1)


def test_lambda_palette_orders_positive_values_and_greys_zero():
    pal = style.lambda_palette([0.1, 0.0, 0.01, 0.1])
    assert list(pal) == [0.1, 0.0, 0.01]
    assert pal[0.0] == matplotlib.colors.to_rgb(style.NO_DECAY_COLOUR)
    assert pal[0.01] != pal[0.1] and style.lambda_label(0.01) == "λ = 0.01"
    # darker for larger lambda on the sequential palette: sum of RGB decreases
    assert sum(pal[0.1]) < sum(pal[0.01])


def test_markers_faces_and_ticks():
    assert style.layer_markers(["W1", "W2"]) == {"W1": "o", "W2": "s"}
    assert len(set(style.layer_markers(range(len(style.MARKERS))).values())) == len(style.MARKERS)
    assert style.face("red", True) == "red" and style.face("red", False) == "none"
    assert style.hollow_handle().get_markerfacecolor() == "none"
    fig, ax = style.subplots(1, 1)
    ax.set_xscale("log")
    ax.set_xlim(0.01, 10)
    style.plain_log_ticks(ax, "x")
    assert ax.xaxis.get_major_formatter()(0.01, 0) == "0.01"
    with pytest.raises(ValueError, match="axis must be"):
        style.plain_log_ticks(ax, "z")
    plt.close(fig)


@pytest.mark.parametrize("text", [".", "book", "/", "http://example.org", "**bold** and `code`"])
def test_glued_markdown_is_the_text_itself_never_a_path_or_url(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "book").mkdir()
    bundle, _ = format_display_data(report.markdown(text))
    assert bundle["text/markdown"] == text
    # {glue:text} reads text/plain back with literal_eval: it must give the text, not a number
    assert format_plain_text(bundle["text/plain"], "") == text


@pytest.mark.parametrize("text", ["9e+03", "4.2e-03", "0.5", "[1, 2]"])
def test_glued_text_that_looks_like_a_number_stays_text(text):
    bundle, _ = format_display_data(report.markdown(text))
    assert format_plain_text(bundle["text/plain"], "") == text
    assert format_plain_text(bundle["text/plain"], "s") == text


def test_markdown_refuses_non_text():
    with pytest.raises(TypeError, match="must be a str"):
        report.markdown(0.5)


def test_glue_turns_numpy_scalars_into_numbers_and_text_into_markdown(monkeypatch):
    import numpy as np
    import myst_nb

    seen = {}
    monkeypatch.setattr(myst_nb, "glue", lambda key, value, display: seen.update({key: (value, display)}))
    report.glue("x", np.float64(0.25))
    report.glue("n", np.int64(3))
    report.glue("s", ".")
    assert seen["x"] == (0.25, False) and type(seen["x"][0]) is float
    assert type(seen["n"][0]) is int
    assert seen["s"][0] == report.markdown(".")
