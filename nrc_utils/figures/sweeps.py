"""The figure of the Sweeps page: the example sweep of chapter 5's forecast over lambda and depth."""

from __future__ import annotations

from .. import style


def zeros_against_lambda(results):
    """Singular values of the end-to-end matrix set to zero, forecast (dashed lines) and found by
    training (dots), against lambda, one colour per depth, from the points that ran ``ok``
    (``results``: :func:`nrc_utils.sweep.load_results` of a sweep of ``05_deep_linear_networks``
    over ``lambdas`` and ``depths``, each wrapped)."""
    import seaborn as sns

    ok = results[results["status"] == "ok"].copy()
    ok["depth"] = ok["depths"].map(lambda L: f"L = {L}")
    palette = style.sequence_palette(sorted(ok["depth"].unique()))
    fig, ax = style.subplots(1, 1, panel=(5.0, 3.4))
    sns.lineplot(data=ok, x="lambdas", y="ch5_n_forecast_zeros", hue="depth", palette=palette, ax=ax,
                 linestyle="--", legend=False, errorbar=None)
    sns.scatterplot(data=ok, x="lambdas", y="ch5_n_zeros_found", hue="depth", palette=palette, ax=ax,
                    s=80, zorder=3)
    ax.set_xscale("log")
    ax.set_xticks(sorted(ok["lambdas"].unique()))
    style.plain_log_ticks(ax, "x")
    ax.margins(x=0.15, y=0.12)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel(r"weight decay $\lambda$")
    ax.set_ylabel("singular values of $W$ set to zero")
    ax.set_title("forecast (dashed) and found by training (dots)")
    ax.legend(title="depth", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return fig


__all__ = ["zeros_against_lambda"]
