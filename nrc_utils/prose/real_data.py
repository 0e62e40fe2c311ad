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


def absent_sentence(absent: Sequence[Mapping[str, str]], fallback: str | None = None) -> str:
    """One sentence per requested data set left out (rows with ``title``, ``kind`` ``"absent"``
    or ``"unreadable"``, the loader's ``reason``, which says where to put the files, and an
    optional install ``hint``), or that every one is present; then, when ``fallback`` names the
    data set used because none of the requested ones could be read, :func:`fallback_sentence`."""
    if not len(absent):
        return "Every data set that this profile asks for is present."
    out = []
    for row in absent:
        what = "is absent from this build" if row["kind"] == "absent" else "could not be read in this build"
        hint = f" ({row['hint']})" if row.get("hint") else ""
        out.append(f"**{row['title']} {what}** and left out of this chapter: {row['reason']}{hint}.")
    if fallback:
        out.append(fallback_sentence(True, fallback))
    return " ".join(out)


def fallback_sentence(fallback: bool, fallback_title: str = "Digits") -> str:
    """When none of the requested data sets could be read: the chapter runs on ``fallback_title``
    instead (empty otherwise)."""
    if not fallback:
        return ""
    return (f"**None of the requested data sets could be read, so this build runs the chapter on "
            f"{fallback_title} instead** (shipped with scikit-learn, always present): every number below is "
            f"measured on {fallback_title}.")


def balance_sentence(rows: Sequence[Mapping[str, object]]) -> str:
    """How the classes of each present data set are represented (rows with ``title``, ``split``
    ``"per class"`` or ``"subset"``, and the smallest and largest class size ``train_min``,
    ``train_max``, ``test_min``, ``test_max``)."""
    out = []
    for r in rows:
        balanced = r["train_min"] == r["train_max"] and r["test_min"] == r["test_max"]
        what = "split" if r["split"] == "per class" else "subset"
        if balanced:
            out.append(f"The {r['title']} {what} is class-balanced: {r['train_min']} training and "
                       f"{r['test_min']} test images in every class.")
        else:
            out.append(f"The {r['title']} {what} is not class-balanced: {r['train_min']} to {r['train_max']} "
                       f"training and {r['test_min']} to {r['test_max']} test images per class.")
    return " ".join(out)


def hessian_skipped(hessian_max_params: int) -> str:
    """Why a network's Hessian eigenvalues were not computed (parameter ``hessian_max_params``), for
    ``report.hessian_summary``: ``hessian_skipped(3000) == "more than 3,000 parameters, the chapter's
    hessian_max_params: the Lanczos iteration would take minutes per network on a laptop CPU"``."""
    return (f"more than {hessian_max_params:,} parameters, the chapter's hessian_max_params: the Lanczos iteration "
            "would take minutes per network on a laptop CPU")


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


# --------------------------------------------------------------------------------------
# One data set against another (chapter 6: what Fashion-MNIST shows that digits did not)
# --------------------------------------------------------------------------------------

def _rank_span(lo: float, hi: float) -> str:
    return f"{int(lo)}" if lo == hi else f"{int(lo)} to {int(hi)}"


def claims(f: Mapping[str, object], tolerance: float) -> dict[str, bool | None]:
    """The yes/no statements :func:`contrast` compares, from one data set's findings
    (``nrc_utils.experiments.real_data.set_findings``); None where they cannot be judged:

    - ``trend``: the distance to rank K of every hidden layer falls as lambda grows;
    - ``rank_K``: at the largest lambda every hidden layer has numerical rank at most K;
    - ``rank_tcv``: Spearman(TCV_2 of the inputs, distance to rank K) > :data:`RANK_TCV_POSITIVE`;
    - ``cut_K``: cut to rank K at the largest lambda, the accuracy stays within ``tolerance``;
    - ``rmin``: the rank the networks need falls with lambda;
    - ``collapse``: with a larger lambda the last layer's inputs are more collapsed (both measures fall).
    """
    if not f["n_reached"]:
        return dict.fromkeys(CLAIMS)
    return {"trend": None if f["trend"] is None else f["trend"] == "falls",
            "rank_K": None if _nan(f["rank_hidden_hi"]) else bool(f["rank_hidden_hi"] <= f["K"]),
            "rank_tcv": None if _nan(f["spearman_tail"]) else bool(f["spearman_tail"] > RANK_TCV_POSITIVE),
            "cut_K": None if _nan(f["accK_hi"]) or _nan(f["full_hi"]) else bool(f["accK_hi"] >= f["full_hi"] - tolerance),
            "rmin": None if _nan(f["rmin_trend"]) else bool(f["rmin_trend"] < 0),
            "collapse": None if f["tcv_up"] is None or f["nc1_up"] is None else not (f["tcv_up"] or f["nc1_up"])}


def _claim_text(name: str, value: bool) -> str:
    """Claim ``name`` in words, as it holds (``value``) or not."""
    yes, no = {
        "trend": ("the distance to rank K of every layer that reads hidden features falls as λ grows",
                  "the distance to rank K does not fall with λ in every layer that reads hidden features"),
        "rank_K": ("at the largest λ every layer that reads hidden features has numerical rank at most K",
                   "at the largest λ some layer that reads hidden features keeps numerical rank above K"),
        "rank_tcv": ("across layers and λ, the layers with more tightly clustered inputs are closer to rank K",
                     "across layers and λ, the distance to rank K follows the clustering of the inputs only weakly "
                     "or not at all"),
        "cut_K": ("cut to rank K at the largest λ, the networks keep their test accuracy",
                  "cut to rank K at the largest λ, the networks lose test accuracy"),
        "rmin": ("the larger λ, the fewer singular values the networks need",
                 "the number of singular values the networks need does not fall with λ"),
        "collapse": ("with a larger λ the last layer's inputs are more collapsed (TCV₂ and NC1 both fall)",
                     "with a larger λ the last layer's inputs are not more collapsed (TCV₂ or NC1 grows)"),
    }[name]
    return yes if value else no


def _claim_numbers(name: str, f: Mapping[str, object]) -> str:
    """The numbers behind claim ``name`` on findings ``f`` (empty for ``collapse``)."""
    if name == "trend":
        return f"median distance {f['tail_hidden_lo']:.1e} → {f['tail_hidden_hi']:.1e}"
    if name == "rank_K":
        return f"rank {_rank_span(f['rank_hidden_hi_min'], f['rank_hidden_hi'])}, K = {f['K']}"
    if name == "rank_tcv":
        return f"Spearman {f['spearman_tail']:.2f}"
    if name == "cut_K":
        return f"{f['accK_hi']:.1%} cut, {f['full_hi']:.1%} full"
    if name == "rmin":
        return f"r = {f['rmin_lo']:g} → {f['rmin_hi']:g}"
    return ""


def _with_numbers(text: str, numbers: str) -> str:
    return f"{text} ({numbers})" if numbers else text


#: The claims of :func:`claims`, in the order :func:`contrast` lists them, with short names.
CLAIM_NAMES = {"trend": "the trend with λ", "rank_K": "the rank at the largest λ",
               "rank_tcv": "rank against within-class variability", "cut_K": "the cut to rank K",
               "rmin": "the rank the networks need", "collapse": "the collapse of the last layer's inputs"}
CLAIMS = tuple(CLAIM_NAMES)


def _reach_note(title: str, f: Mapping[str, object]) -> str:
    if f["n_reached"] == f["n_networks"]:
        return ""
    if not f["n_reached"]:
        return (f"No {title} network reached the target residual, so {title} is not compared: it would take a "
                "longer polish than this build allows.")
    return (f"Only {f['n_reached']} of {f['n_networks']} {title} networks reached the target residual in this "
            "build; the comparison uses those.")


def contrast(a_title: str, a: Mapping[str, object] | None, b_title: str, b: Mapping[str, object] | None,
             tolerance: float) -> str:
    """What data set ``b`` shows that ``a`` did not, where they disagree the other way, and where
    they agree (findings of ``set_findings``; None: the set is not in this build), over the
    :data:`CLAIMS` both can judge (networks that reached the target only)."""
    if a is None and b is None:
        return f"Neither {a_title} nor {b_title} is in this build, so the two are not compared."
    if a is None or b is None:
        missing, present = (a_title, b_title) if a is None else (b_title, a_title)
        return (f"{missing} is not in this build (see the data above), so this build cannot say what the two show "
                f"differently; the numbers of {present} stand alone.")
    notes = " ".join(t for t in (_reach_note(a_title, a), _reach_note(b_title, b)) if t)
    if not a["n_reached"] or not b["n_reached"]:
        return notes
    ca, cb = claims(a, tolerance), claims(b, tolerance)
    judged = [c for c in CLAIMS if ca[c] is not None and cb[c] is not None]
    unjudged = [c for c in CLAIMS if c not in judged]
    new = [c for c in judged if cb[c] and not ca[c]]
    other = [c for c in judged if ca[c] and not cb[c]]
    same = [c for c in judged if ca[c] == cb[c]]
    out = [notes] if notes else []
    if new:
        out.append(f"**What {b_title} shows that {a_title} did not:** " + "; ".join(
            f"on {b_title} {_with_numbers(_claim_text(c, True), _claim_numbers(c, b))}, while on {a_title} "
            f"{_with_numbers(_claim_text(c, False), _claim_numbers(c, a))}" for c in new) + ".")
    if other:
        out.append("**Where they disagree the other way:** " + "; ".join(
            f"on {a_title} {_with_numbers(_claim_text(c, True), _claim_numbers(c, a))}, while on {b_title} "
            f"{_with_numbers(_claim_text(c, False), _claim_numbers(c, b))}" for c in other) + ".")
    if not new and not other and judged:
        out.append(f"{b_title} shows nothing here that {a_title} did not: the two agree on every point compared.")
    if same:
        def both(c):
            na, nb = _claim_numbers(c, a), _claim_numbers(c, b)
            return _with_numbers(_claim_text(c, ca[c]), na and f"{a_title}: {na}; {b_title}: {nb}")

        out.append("**On both:** " + "; ".join(both(c) for c in same) + ".")
    if unjudged:
        out.append("Not judged on both (too few networks or a constant measure): "
                   + ", ".join(CLAIM_NAMES[c] for c in unjudged) + ".")
    return " ".join(out)


def contrast_summary(a_title: str, a: Mapping[str, object] | None, b_title: str, b: Mapping[str, object] | None,
                     tolerance: float) -> str:
    """One sentence for the chapter's conclusions: on how many of the :data:`CLAIMS` the two data
    sets agree, and which ones differ (``contrast`` gives the details)."""
    if a is None or b is None:
        missing = " and ".join(t for t, f in ((a_title, a), (b_title, b)) if f is None)
        return f"{missing} {'is' if ' and ' not in missing else 'are'} not in this build, so the two data sets are not compared."
    if not a["n_reached"] or not b["n_reached"]:
        return f"{a_title} and {b_title} are not compared: one of them has no network at the target residual."
    ca, cb = claims(a, tolerance), claims(b, tolerance)
    judged = [c for c in CLAIMS if ca[c] is not None and cb[c] is not None]
    differ = [c for c in judged if ca[c] != cb[c]]
    if not judged:
        return f"{a_title} and {b_title} are not compared: too few networks to judge any point on both."
    if not differ:
        return f"{b_title} and {a_title} agree on all {len(judged)} points compared."
    names = [CLAIM_NAMES[c] for c in differ]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return (f"{b_title} and {a_title} agree on {len(judged) - len(differ)} of the {len(judged)} points compared and "
            f"differ on {listed}.")


def across_sets(a_title: str, a: Mapping[str, object] | None, b_title: str, b: Mapping[str, object] | None) -> str:
    """Two data sets side by side at the largest lambda: which is the harder task (median test
    accuracy), and whether the one whose last layer's inputs are more tightly clustered
    (normalised TCV_2) also has its hidden layers closer to rank K (median distance), as the
    paper's picture predicts. One short sentence when a set is missing or has no network at the
    target (:func:`contrast` says why)."""
    if a is None or b is None or not a["n_reached"] or not b["n_reached"]:
        return f"{a_title} and {b_title} are not set side by side in this build."
    out = []
    if not (_nan(a["acc_hi"]) or _nan(b["acc_hi"])):
        if a["acc_hi"] == b["acc_hi"]:
            out.append(f"{b_title} and {a_title} are equally hard for these networks (median test accuracy "
                       f"{b['acc_hi']:.1%} at the largest λ).")
        else:
            word = "harder" if b["acc_hi"] < a["acc_hi"] else "easier"
            out.append(f"{b_title} is the {word} task for these networks: median test accuracy {b['acc_hi']:.1%} at "
                       f"the largest λ, against {a['acc_hi']:.1%} on {a_title} ({b['n_train']} training images "
                       f"against {a['n_train']}).")
    tcv, tail = (a["tcv_last_hi"], b["tcv_last_hi"]), (a["tail_hidden_hi"], b["tail_hidden_hi"])
    if any(_nan(x) for x in (*tcv, *tail)) or tcv[0] == tcv[1]:
        return " ".join(out) or f"{a_title} and {b_title} are not set side by side in this build."
    tight = b_title if tcv[1] < tcv[0] else a_title
    loose = a_title if tight == b_title else b_title
    t_tcv, l_tcv = sorted(tcv)
    t_tail, l_tail = (tail[1], tail[0]) if tight == b_title else tail
    where = (f"({tight}: normalised TCV₂ {t_tcv:.3f}, against {l_tcv:.3f} on {loose}; median distance to rank K "
             f"of the hidden layers {t_tail:.1e} against {l_tail:.1e})")
    if t_tail < l_tail:
        out.append(f"Across the two data sets, the one whose last layer's inputs are more tightly clustered at the "
                   f"largest λ also has the layers that read hidden features closer to rank K {where}, as the paper's "
                   "picture predicts; with training sets of different sizes and kinds this describes these two runs, "
                   "it does not test the bound.")
    else:
        out.append(f"Across the two data sets, the one whose last layer's inputs are more tightly clustered at the "
                   f"largest λ does **not** have the layers that read hidden features closer to rank K {where}: across "
                   "data sets the paper's picture does not order these two runs.")
    return " ".join(out)


__all__ = ["CLAIMS", "CLAIM_NAMES", "LOSS_NAMES", "POLISH_RANK_FRACTION", "RANK_TCV_POSITIVE", "absent_sentence",
           "across_sets", "architecture", "balance_sentence", "claims", "code", "collapse_direction", "contrast",
           "contrast_summary",
           "fallback_sentence", "lambda_set", "layers_text", "loss_name", "names_list", "polish_reading",
           "rank_tcv_verdict", "sgd_trunc_reading", "sgd_vacuous", "trend_verdict", "trunc_verdict",
           "within_layer", "within_reading"]
