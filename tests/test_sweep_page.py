"""The Sweeps page's helpers: the example run, a file shown as a code block, the figure."""

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from nrc_utils import report, sweep  # noqa: E402
from nrc_utils.figures import sweeps as figs  # noqa: E402


def test_file_block_is_the_file_in_a_fenced_block(tmp_path):
    f = tmp_path / "g.yaml"
    f.write_text("chapter: 05_deep_linear_networks\naxes: {seed: [0, 1]}\n\n")
    assert sweep.file_block(f) == report.markdown("```yaml\nchapter: 05_deep_linear_networks\naxes: {seed: [0, 1]}\n```")


def test_a_failed_example_sweep_is_one_line_with_the_commands_last_lines(tmp_path):
    with pytest.raises(RuntimeError, match=r"^the example sweep failed \(exit status 2\): .*error: ") as err:
        sweep.run_example(tmp_path / "missing.yaml", tmp_path / "out")
    assert "\n" not in str(err.value)


def test_the_figure_draws_the_ok_points_of_each_depth():
    rows = [{"lambdas": lam, "depths": L, "status": "ok" if (lam, L) != (0.04, 3) else "failed",
             "ch5_n_forecast_zeros": z, "ch5_n_zeros_found": z}
            for lam, L, z in [(0.01, 2, 1), (0.04, 2, 3), (0.01, 3, 2), (0.04, 3, 5)]]
    fig = figs.zeros_against_lambda(pd.DataFrame(rows))
    ax = fig.axes[0]
    assert [len(c.get_offsets()) for c in ax.collections] == [3]  # dots of the ok points, no bands
    assert sorted(len(line.get_xdata()) for line in ax.lines if len(line.get_xdata())) == [1, 2]  # forecasts
    assert ax.get_xscale() == "log" and ax.get_legend().get_title().get_text() == "depth"
