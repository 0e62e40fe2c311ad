"""The sentences of chapter 7, "Beyond the MLP", from the run's tables.

Pure functions: small tables (``pandas`` DataFrames of :mod:`nrc_utils.experiments.beyond_mlp`)
and numbers in, Markdown text out; every branch is driven by ``tests/test_prose_beyond_mlp.py``.
Numbers in "at most" / "at least" sentences are rounded in the safe direction
(:func:`nrc_utils.report.rounded`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from ..report import rounded

#: Spearman correlation with lambda beyond which a quantity "falls" / "grows" with lambda.
TREND = 0.5


def _up(x: float) -> str:
    return rounded(float(x), ".1e", +1)


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def stationarity_sentence(nets: pd.DataFrame, what: str, tol: float, claim_tol: float) -> str:
    """How many of ``nets`` (rows with ``stop``, ``residual``, ``reached``) reached the Newton target
    ``tol``, why the others stopped, and how many are within ``claim_tol`` (the networks the
    statements use)."""
    n = len(nets)
    if n == 0:
        return f"No {what} were trained."
    hit = nets[nets["stop"] == "target"]
    if len(hit) == n:
        return (f"All {n} {what} reached the target residual {tol:.0e} "
                f"(largest residual at most {_up(nets['residual'].max())}).")
    parts = [f"{len(hit)} of {n} {what} reached the target residual {tol:.0e}"]
    for stop, g in nets[nets["stop"] != "target"].groupby("stop", sort=True):
        parts.append(f"{len(g)} stopped with “{stop}” (residuals up to {_up(g['residual'].max())})")
    out = "; ".join(parts) + "."
    miss = int((~nets["reached"]).sum())
    if miss == 0:
        out += f" Every one is within the tolerance {claim_tol:.0e} that the statements below use."
    else:
        out += (f" {_plural(miss, 'network')} above the tolerance {claim_tol:.0e} "
                f"{'is' if miss == 1 else 'are'} drawn hollow and left out of every statement.")
    return out


def eigen_kind(row: Mapping) -> str:
    """``"saddle"`` (a negative Hessian eigenvalue beyond round-off), ``"flat"`` (none negative,
    some zero: a minimum up to flat directions), ``"minimum"`` (all positive) or ``"unknown"``
    (no eigenvalues computed)."""
    if row.get("n_negative_eigs", -1) < 0 or (isinstance(row.get("min_eig"), float) and math.isnan(row["min_eig"])):
        return "unknown"
    if row["n_negative_eigs"] > 0:
        return "saddle"
    if row["n_zero_eigs"] > 0:
        return "flat"
    return "minimum"


def eigen_sentence(nets: pd.DataFrame, what: str) -> str:
    """What the smallest Hessian eigenvalues of ``nets`` say: strict minima, minima up to flat
    directions, saddles, or not computed."""
    kinds = [eigen_kind(r) for r in nets.to_dict("records")]
    lo, hi = float(nets["min_eig"].min()), float(nets["min_eig"].max())
    counts = {k: kinds.count(k) for k in ("minimum", "flat", "saddle", "unknown")}
    n = len(kinds)
    if counts["unknown"] == n:
        return f"The Hessian of the {what} was too large to form, so their index is not known."
    out = []
    if counts["minimum"]:
        out.append(f"{counts['minimum']} of {n} {what} are strict local minima (every Hessian eigenvalue positive)")
    if counts["flat"]:
        out.append(f"{counts['flat']} of {n} have no negative Hessian eigenvalue but some that are zero up to "
                   "round-off (a minimum up to flat directions, or a degenerate point that the Hessian cannot tell "
                   "apart)")
    if counts["saddle"]:
        out.append(f"**{counts['saddle']} of {n} are saddle points** (a negative eigenvalue beyond round-off)")
    if counts["unknown"]:
        out.append(f"{counts['unknown']} of {n} too large for the dense Hessian")
    return "; ".join(out) + f". The smallest eigenvalues lie between {lo:.1e} and {hi:.1e}."


def flat_sentence(nets: pd.DataFrame, symmetry: str) -> str:
    """The measured number of zero Hessian eigenvalues (``n_zero_eigs``) against the dimension of
    the rotation orbit (``predicted_zero_eigs``) of ``symmetry``."""
    if len(nets) == 0:
        return "No network to compare."
    same = nets["n_zero_eigs"] == nets["predicted_zero_eigs"]
    values = ", ".join(f"{int(a)}" for a in sorted(set(nets["n_zero_eigs"])))
    if same.all():
        return (f"The number of zero Hessian eigenvalues equals the dimension of the orbit of {symmetry} "
                f"in all {len(nets)} networks ({values}), as it must if every flat direction is one of that "
                "symmetry and there is no other.")
    bad = nets[~same]
    pairs = "; ".join(f"λ = {r['lam']:g}, seed {int(r['seed'])}: {int(r['n_zero_eigs'])} measured, "
                      f"{int(r['predicted_zero_eigs'])} predicted" for r in bad.to_dict("records"))
    return (f"**The number of zero Hessian eigenvalues differs from the dimension of the orbit of {symmetry} "
            f"in {len(bad)} of {len(nets)} networks** ({pairs}): there are flat directions (or missing ones) "
            "that the symmetry does not explain.")


def conv_rank_sentence(matrices: pd.DataFrame) -> str:
    """For the convolutions (``kind == "conv"``, networks that reached): the rank of each patch
    matrix ``U`` against its number of columns (full rank: the patch bound restricts nothing), and
    whether every kernel's rank equals the rank of its signal matrix ``D``."""
    conv = matrices[(matrices["kind"] == "conv") & matrices["reached"]]
    if len(conv) == 0:
        return "No convolution of a network that reached the tolerance to report on."
    parts, full = [], True
    for name, g in conv.groupby("matrix", sort=False):
        q = int(g["shape"].iloc[0].split("×")[1])
        full &= bool((g["rank_U"] == q).all())
        parts.append(f"{span(g['rank_U'])} of {q} for {name}")
    first = ("The patch matrices have rank " + ", ".join(parts)
             + (": full column rank, so the patches restrict nothing" if full else
                ": where one is rank-deficient, the patches themselves restrict the kernel's rank (its rows lie "
                "in their row space)"))
    eq_D = bool((conv["rank"] == conv["rank_D"]).all())
    second = ("every reshaped kernel has exactly the rank of its signal matrix D: the bound that binds is the "
              "signals' (the column side of λW = −(1/N) DᵀU)"
              if eq_D else "the rank of a reshaped kernel differs from that of its signal matrix D in some networks "
              "(the numerical-rank tolerance counts small singular values differently)")
    return f"{first}; {second}."


def bound_verdict(bounds: pd.DataFrame) -> str:
    """Whether distance <= (a) <= (c) held in every row (it must: it is an identity and two
    inequalities)."""
    if len(bounds) == 0:
        return "there is nothing to check"
    bad = int((~bounds["holds"]).sum())
    if bad == 0:
        return f"holds in all {len(bounds)} cases, as it must"
    return f"**fails in {bad} of {len(bounds)} cases: a contradiction, so a bug or round-off**"


def vacuity_sentence(bounds: pd.DataFrame, what: str) -> str:
    """For the non-trivial rows of ``bounds`` (clusters fewer than the matrix's smaller dimension)
    of networks that reached: in how many the bounds (a) and (c) are below ``||W||_F`` (else they
    certify nothing the zero matrix does not)."""
    b = bounds[~bounds["trivial"] & bounds["reached"]]
    if len(b) == 0:
        return f"For the {what} every partition has at least as many clusters as the smaller dimension: nothing to bound."
    a = int((b["rel_bound_a"] < 1).sum())
    c = int((b["rel_bound_c"] < 1).sum())
    ratio = float((b["rel_bound_c"] / b["rel_bound_a"]).median())
    return (f"For the {what}, bound (a) is below ‖W‖_F in {a} of {len(b)} cases and bound (c) in {c} of "
            f"{len(b)}; (c) is a median factor {ratio:.1f} above (a).")


def patch_tcv_sentence(class_rows: pd.DataFrame) -> str:
    """The class-wise normalised ``TCV_2`` of the patches (rows of the conv layers, networks that
    reached) and how far their raw ``TCV_2`` is from what bound (c) needs."""
    b = class_rows[class_rows["reached"] & (class_rows["kind"] == "conv")]
    if len(b) == 0:
        return "No convolution to report on."
    lo, hi = float(b["tcv2n"].min()), float(b["tcv2n"].max())
    need = b[b["tail"] > 0]
    if len(need):
        factor = float((need["tcv2"] / need["tcv2_needed"]).median())
        tail = (f" For bound (c) to certify the measured distance to rank K, the patches' raw "
                f"TCV₂ would have to be a median factor {factor:.1e} smaller than it is.")
    else:
        tail = " Every kernel is already at distance 0 from rank K, so no TCV is needed."
    clustered = "near 1: the patches hardly cluster by class" if lo > 0.8 else (
        "well below 1: the patches cluster by class" if hi < 0.5 else "in between")
    return (f"Grouped by the class of their image, the patches have normalised TCV₂ between "
            f"{rounded(lo, '.2f', -1)} and {rounded(hi, '.2f', +1)} ({clustered}).{tail}")


def trend_sentence(trends: Mapping[str, float], what: str = "numerical rank") -> str:
    """``trends``: ``{matrix: Spearman correlation of the quantity with lambda}`` (NaN: constant or
    too few networks). Which matrices fall, grow, or show no trend."""
    if not trends:
        return f"No matrix to report a trend of the {what} on."
    fall = [m for m, v in trends.items() if not math.isnan(v) and v <= -TREND]
    grow = [m for m, v in trends.items() if not math.isnan(v) and v >= TREND]
    flat = [m for m, v in trends.items() if math.isnan(v)]
    other = [m for m in trends if m not in fall + grow + flat]
    parts = []
    if fall:
        parts.append(f"falls with λ in {', '.join(fall)}")
    if grow:
        parts.append(f"**grows with λ in {', '.join(grow)}** (against the weight-decay picture)")
    if flat:
        parts.append(f"is the same at every λ in {', '.join(flat)}")
    if other:
        parts.append(f"shows no clear trend in {', '.join(other)}")
    return f"The {what} " + "; ".join(parts) + "."


def skip_sentence(stream: pd.DataFrame) -> str:
    """What the residual stream's within-class variability does along the depth (networks that
    reached): the raw ``TCV_2`` growth per block against its bound, and the normalised ``TCV_2`` of
    the stream and of the branch inputs."""
    s = stream[stream["reached"]]
    blocks = s.dropna(subset=["growth"])
    if len(blocks) == 0:
        return "No residual network reached the tolerance."
    within = bool((blocks["growth"] <= blocks["growth_bound"] * (1 + 1e-12)).all())
    g_lo, g_hi = float(blocks["growth"].min()), float(blocks["growth"].max())
    first = (f"Per block the raw √TCV₂ of the stream changes by a factor between "
             f"{g_lo:.2f} and {g_hi:.2f}, "
             + ("within the bound of the proposition in every block" if within else
                "**above the bound of the proposition in some block: a contradiction**"))
    last, first_l = s[s["l"] == s["l"].max()], s[s["l"] == 0]
    n_in = float(first_l["tcv2n_stream"].median())
    n_out = float(last["tcv2n_stream"].median())
    branch_lower = bool((blocks["tcv2n_branch"] < blocks["tcv2n_stream"]).all())
    trend = "falls" if n_out < n_in else "does not fall"
    second = (f"; the normalised TCV₂ of the stream {trend} along the depth (median "
              f"{n_in:.3f} at h₀, {n_out:.3f} at the last block)")
    third = ("; every branch input is more tightly clustered than the stream entering the block"
             if branch_lower else "; the branch inputs are not always more clustered than the stream")
    return first + second + third + "."


def attention_sentence(products: pd.DataFrame) -> str:
    """``rank W_Q^T W_K`` against the number of unit singular values of ``G/lambda`` (equal at
    every stationary point by ``thm-ch7-attention``), and ``sigma_1(G)/lambda`` against 1
    (``prop-ch7-attention-second``), for the networks that reached."""
    p = products[products["reached"]]
    if len(p) == 0:
        return "No attention network reached the tolerance."
    eq = bool((p["rank_M"] <= p["n_unit"]).all())
    exact = bool((p["rank_M"] == p["n_unit"]).all())
    gmax = float(p["g_max"].max())
    first = ("In every network the rank of W_Qᵀ W_K equals the number of singular values of "
             "∇_M L₀/λ that are 1" if exact else
             ("In every network the rank of W_Qᵀ W_K is at most the number of singular values of "
              "∇_M L₀/λ that are 1 (some unit singular values carry no direction of M)"
              if eq else "**In some network the rank of W_Qᵀ W_K exceeds the number of unit singular values "
              "of ∇_M L₀/λ: a contradiction of the theorem**"))
    second = (f", and no singular value of ∇_M L₀/λ exceeds 1 (largest "
              f"{gmax:.9f}), as a local minimum requires" if gmax <= 1 + 1e-6 else
              f", but **σ₁(∇_M L₀)/λ = {gmax:.4f} > 1 in some network: by the "
              "proposition it is not a local minimum**")
    ranks = p.groupby("lam")["rank_M"].median()
    third = (f". The median rank goes from {ranks.iloc[0]:.0f} at λ = {ranks.index[0]:g} to "
             f"{ranks.iloc[-1]:.0f} at λ = {ranks.index[-1]:g}")
    return first + second + third + "."


def balance_sentence(products: pd.DataFrame) -> str:
    """The measured imbalance of ``(W_Q, W_K)`` and of ``(W_O^T, W_V)``, and the round-off of the
    identity (networks that reached)."""
    p = products[products["reached"]]
    if len(p) == 0:
        return "No attention network reached the tolerance."
    return (f"The pairs are balanced: ‖W_Q W_Qᵀ − W_K W_Kᵀ‖_F is at most {_up(p['imbalance'].max())} "
            f"of ‖W_Q W_Qᵀ‖_F (the residual bound: at most {_up(p['certificate'].max())}), "
            f"‖W_Oᵀ W_O − W_V W_Vᵀ‖_F at most {_up(p['imbalance_VO'].max())} of its scale, and the two "
            f"sides of the identity agree to {_up(p['identity_error'].max())} (round-off).")


def span(values) -> str:
    """``"4"`` or ``"4–6"`` (the smallest and largest of integer ``values``); ``"none"`` when empty."""
    vals = [int(v) for v in values]
    if not vals:
        return "none"
    lo, hi = min(vals), max(vals)
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def patch_verdict(bounds: pd.DataFrame) -> str:
    """Whether the clustering of patches by class explains the conv kernels' distance to rank ``K``
    (non-trivial class rows of conv layers, networks that reached): how often bound (a) is below
    ``||W||_F``, how low it gets, and how that compares with the measured distances."""
    b = bounds[(bounds["kind"] == "conv") & (bounds["partition"] == "class") & ~bounds["trivial"] & bounds["reached"]]
    if len(b) == 0:
        return ("No convolution has more than K rows and columns, so the class bound has nothing to say about "
                "the kernels.")
    below = int((b["rel_bound_a"] < 1).sum())
    low = float(b["rel_bound_a"].min())
    tail = float(b["rel_tail"].max())
    measured = f"the measured distances to rank K are at most {rounded(tail, '.2f', +1)} ‖W‖_F"
    if below == 0:
        return ("**Against what the mechanism of the paper suggests, the clustering of patches does not explain "
                "the ranks of the kernels here**: with the classes as clusters, even bound (a) is at least "
                f"{rounded(low, '.2f', -1)} ‖W‖_F for every kernel, no better than the zero matrix, while "
                f"{measured}.")
    if low > 2 * tail:
        return ("**The clustering of patches certifies little of the kernels' low rank**: with the classes as "
                f"clusters, bound (a) is below ‖W‖_F for {below} of {len(b)} kernels but never below "
                f"{rounded(low, '.2f', -1)} ‖W‖_F, while {measured}.")
    return (f"With the classes as clusters, bound (a) is below ‖W‖_F for {below} of {len(b)} kernels and "
            f"gets as low as {rounded(low, '.2f', -1)} ‖W‖_F, the scale of the measured distances ({measured}).")


def absent_sentence(asked: str, used: str, reason: str) -> str:
    """When the CNN's data set could not be read: which one is used instead and why (empty otherwise)."""
    if not reason:
        return ""
    return (f"**{asked} could not be read in this build, so the CNN runs on {used}** ({reason}); every CNN "
            f"number below is measured on {used}.")


__all__ = ["patch_verdict", "span", "absent_sentence", "attention_sentence", "balance_sentence", "bound_verdict", "conv_rank_sentence",
           "eigen_kind", "eigen_sentence", "flat_sentence", "patch_tcv_sentence", "skip_sentence",
           "stationarity_sentence", "trend_sentence", "vacuity_sentence"]
