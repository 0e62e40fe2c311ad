"""Neural collapse measures of a layer's features, streamed in float64 (the measures of
chapter 3, ``03_neural_rank_collapse``: definition ``def-tcv`` and the section on neural collapse measures).

Features ``h_i`` (rows of ``H``, one per sample, dimension ``D``) are grouped by labels
``y_i`` in ``0..K-1``: the classes, or any other partition into ``K`` groups, e.g. a
k-means clustering (:func:`kmeans_partition`): the bound of chapter 3's theorem
``thm-neural-rank-collapse`` (our form of Theorem 3.1 of Zangrando et al., arXiv:2402.03991)
holds for any partition into ``K`` groups. With ``n_c`` samples in
group ``c`` and ``N = sum_c n_c``:

- class means ``mu_c = (1/n_c) sum_{i in c} h_i``, global mean ``mu_G = (1/N) sum_i h_i``,
  residuals ``e_i = h_i - mu_{y_i}``;
- ``Sigma_W = (1/N) sum_i e_i e_i^T``,
  ``Sigma_B = sum_c (n_c/N) (mu_c - mu_G)(mu_c - mu_G)^T``,
  ``Sigma_T = (1/N) sum_i (h_i - mu_G)(h_i - mu_G)^T = Sigma_W + Sigma_B`` (exactly).
  For balanced classes these equal Papyan, Han and Donoho's (PNAS 2020)
  ``Sigma_W = (1/K) sum_c (1/n_c) sum_{i in c} e_i e_i^T`` and
  ``Sigma_B = (1/K) sum_c (mu_c - mu_G)(mu_c - mu_G)^T``; for unbalanced groups the
  sample-weighted form above is the one that makes ``Sigma_T = Sigma_W + Sigma_B`` hold
  exactly, and NC1 on unbalanced groups (e.g. a k-means partition) is this sample-weighted
  variant, not Papyan et al.'s class-averaged one;
- ``NC1 = tr(Sigma_W Sigma_B^+) / K`` (Papyan, Han, Donoho 2020);
- the ratio ``tr(Sigma_W) / tr(Sigma_B)``;
- CDNV, the class-distance normalised variance (Galanti, Gyorgy, Hutter, ICLR 2022):
  ``(Var_c + Var_c') / (2 ||mu_c - mu_c'||^2)`` for ``c != c'``, with
  ``Var_c = (1/n_c) sum_{i in c} ||e_i||^2``;
- TCV, the paper's total cluster variation: ``TCV_1 = sum_i ||e_i||`` and
  ``TCV_2 = sum_i ||e_i||^2`` (raw; they fall when weight decay shrinks the features),
  and normalised by the total variation around the global mean,
  ``TCV_1 / sum_i ||h_i - mu_G||`` and ``TCV_2 / sum_i ||h_i - mu_G||^2``. The paper's
  exact normalisation is not known to us; these are the book's definitions
  (chapter 3, definition ``def-tcv``).

No ``D x D`` matrix and no pseudo-inverse is ever formed. ``Sigma_B = M M^T`` with
``M = [sqrt(n_c/N) (mu_c - mu_G)]_c`` (``D x K``); with the thin SVD ``M = U S V^T``,
keeping the ``r <= K - 1`` singular values ``s_j > rtol * s_1``,

    tr(Sigma_W Sigma_B^+) = sum_{j <= r} u_j^T Sigma_W u_j / s_j^2,
    u_j^T Sigma_W u_j = (1/N) sum_i (e_i^T u_j)^2,

and the ``r`` sums are accumulated in the second pass: memory ``O(D K)`` whatever ``N``.

Streaming follows rhubarbwu/neural-collapse (two passes over the same batches: class
means first, then the within-class statistics). Everything is accumulated in float64;
batches may be torch tensors (any dtype, any device; moved to CPU float64 batch by
batch) or numpy arrays. Features of shape ``(B, C, H, W)`` are flattened to ``(B, D)``.

Empty groups (a label in ``0..K-1`` that no sample carries) are skipped: their count is
0, their row of ``means`` and of ``cdnv_matrix`` is NaN, they add nothing to ``Sigma_B``,
and the ``K`` that divides NC1 is the number of non-empty groups.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, Iterable

import numpy as np
import torch

from .spectral import ratio

__all__ = [
    "CollapseStats",
    "CollapseAccumulator",
    "collapse_stats",
    "collapse_stats_stream",
    "kmeans_partition",
]

#: Relative cut-off on the singular values of ``M`` (``Sigma_B = M M^T``) in NC1:
#: directions with ``s_j <= rtol * s_1`` count as outside the range of ``Sigma_B``. The
#: K-th singular value of ``M`` is zero in exact arithmetic (the weighted centred means
#: sum to zero) and of order 1e-16 * s_1 in float64, far below this cut-off.
DEFAULT_RTOL = 1e-8


@dataclass
class CollapseStats:
    """Neural collapse statistics of features ``h_i`` grouped by labels in ``0..K-1``.

    Shapes: ``counts (K,)``, ``means (K, D)``, ``global_mean (D,)``,
    ``cdnv_matrix (K, K)``; everything else is a scalar. Formulas: module docstring.
    Undefined values are NaN, never an exception: NC1 and the ratio when
    ``Sigma_B = 0`` (fewer than two distinct group means; the ratio is inf when also
    ``tr Sigma_W > 0``), the CDNV diagonal and the rows of empty groups; a CDNV entry is
    inf when two groups share their mean but not their zero variance.
    """

    K: int
    N: int
    D: int
    counts: np.ndarray
    means: np.ndarray
    global_mean: np.ndarray
    tr_within: float
    tr_between: float
    tr_total: float
    nc1: float
    within_between_ratio: float
    cdnv: float
    cdnv_matrix: np.ndarray
    tcv1: float
    tcv2: float
    tcv1_normalised: float
    tcv2_normalised: float
    rank_between: int  # r, the number of singular values of M kept in NC1

    def as_dict(self) -> dict[str, float | int]:
        """The scalar fields (everything but the arrays), e.g. for a ``pandas`` row."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if not isinstance(getattr(self, f.name), np.ndarray)
        }


def _features(h: Any) -> np.ndarray:
    """A batch of features as a float64 numpy array of shape ``(B, D)``."""
    if isinstance(h, torch.Tensor):
        # move in the stored precision, cast in numpy: torch's multithreaded cast stalls
        # on a busy 2-core machine, numpy's single-threaded one does not
        h = h.detach().cpu()
        if h.dtype not in (torch.float32, torch.float64):
            h = h.to(torch.float64)  # half, bfloat16, integers: numpy cannot read all of them
        h = h.numpy()
    h = np.asarray(h, dtype=np.float64)
    if h.ndim == 1:
        raise ValueError(f"features must have shape (batch, D), got shape {h.shape}")
    return h.reshape(h.shape[0], -1)


def _labels(labels: Any, B: int, K: int) -> np.ndarray:
    """Labels as an int64 numpy array of shape ``(B,)``, checked to lie in ``0..K-1``."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.shape != (B,):
        raise ValueError(f"labels must have shape ({B},) to match the features, got {labels.shape}")
    if B and labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers in 0..{K - 1}, got dtype {labels.dtype}")
    labels = labels.astype(np.int64, copy=False)
    if B and (labels.min() < 0 or labels.max() >= K):
        raise ValueError(
            f"labels must lie in 0..{K - 1}, got values from {labels.min()} to {labels.max()}; "
            "pass the right K"
        )
    return labels


class CollapseAccumulator:
    """Two-pass streaming accumulator of :class:`CollapseStats` (float64).

    Pass 1: call :meth:`add_means` on every batch ``(h, labels)``. Pass 2: call
    :meth:`add_within` on the same batches (any order, any batching). Then
    :meth:`result`. Memory is ``O(K D)`` whatever the number of samples.

    ``D`` is taken from the first batch when not given; ``rtol`` is the cut-off of
    :data:`DEFAULT_RTOL` used in NC1.
    """

    def __init__(self, K: int, D: int | None = None, *, rtol: float = DEFAULT_RTOL):
        if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
            raise ValueError(f"K must be a positive integer (the number of groups), got {K!r}")
        self.K = int(K)
        self.D = None if D is None else int(D)
        self.rtol = float(rtol)
        self._counts = np.zeros(self.K, dtype=np.int64)
        self._sums: np.ndarray | None = None if D is None else np.zeros((self.K, self.D))
        # pass 2 (set up by _start_within)
        self._frozen = False
        self._means: np.ndarray | None = None  # (K, D), zero rows for empty groups
        self._global_mean: np.ndarray | None = None
        self._U: np.ndarray | None = None  # (D, r)
        self._s: np.ndarray | None = None  # (r,)
        self._counts2 = np.zeros(self.K, dtype=np.int64)
        self._within_sq = np.zeros(self.K)  # per group sum_i ||e_i||^2
        self._within_norm = 0.0  # sum_i ||e_i||
        self._total_sq = 0.0  # sum_i ||h_i - mu_G||^2
        self._total_norm = 0.0  # sum_i ||h_i - mu_G||
        self._proj_sq: np.ndarray | None = None  # sum_i (e_i^T u_j)^2, j = 1..r

    def _check_D(self, h: np.ndarray) -> None:
        if self.D is None:
            self.D = h.shape[1]
            self._sums = np.zeros((self.K, self.D))
        elif h.shape[1] != self.D:
            raise ValueError(f"features have D={h.shape[1]} but earlier batches had D={self.D}")

    def add_means(self, h: Any, labels: Any) -> None:
        """Pass 1: add a batch to the group counts and sums (for ``mu_c`` and ``mu_G``)."""
        if self._frozen:
            raise RuntimeError(
                "add_means called after add_within: the means are fixed once pass 2 starts; "
                "use a new CollapseAccumulator"
            )
        h = _features(h)
        y = _labels(labels, h.shape[0], self.K)
        self._check_D(h)
        if h.shape[0] == 0:
            return
        counts = np.bincount(y, minlength=self.K)
        self._counts += counts
        for c in np.flatnonzero(counts):  # O(B D) in all; no BLAS call on a tiny one-hot
            self._sums[c] += h[y == c].sum(axis=0)

    def _start_within(self) -> None:
        """Fix the means and the thin SVD of ``M`` at the start of pass 2."""
        N = int(self._counts.sum())
        if N == 0:
            raise RuntimeError("no samples yet: call add_means(h, labels) on every batch first")
        present = self._counts > 0
        means = np.zeros((self.K, self.D))
        means[present] = self._sums[present] / self._counts[present, None]
        self._means = means
        self._global_mean = self._sums.sum(axis=0) / N
        weights = np.sqrt(self._counts[present] / N)
        M = ((means[present] - self._global_mean) * weights[:, None]).T  # D x K_present
        U, s, _ = np.linalg.svd(M, full_matrices=False)
        keep = s > self.rtol * s[0] if s.size and s[0] > 0 else np.zeros(s.size, dtype=bool)
        self._U = np.ascontiguousarray(U[:, keep])
        self._s = s[keep]
        self._proj_sq = np.zeros(self._s.size)
        self._frozen = True

    def add_within(self, h: Any, labels: Any) -> None:
        """Pass 2: add a batch's residuals ``e_i = h_i - mu_{y_i}`` to the within statistics."""
        if not self._frozen:
            self._start_within()
        h = _features(h)
        y = _labels(labels, h.shape[0], self.K)
        if h.shape[1] != self.D:
            raise ValueError(f"features have D={h.shape[1]} but pass 1 had D={self.D}")
        if h.shape[0] == 0:
            return
        self._counts2 += np.bincount(y, minlength=self.K)
        e = h - self._means[y]
        e_sq = np.einsum("ij,ij->i", e, e)
        self._within_sq += np.bincount(y, weights=e_sq, minlength=self.K)
        self._within_norm += float(np.sqrt(e_sq).sum())
        if self._s.size:
            P = e @ self._U
            self._proj_sq += np.einsum("ij,ij->j", P, P)
        g = h - self._global_mean
        g_sq = np.einsum("ij,ij->i", g, g)
        self._total_sq += float(g_sq.sum())
        self._total_norm += float(np.sqrt(g_sq).sum())

    def result(self) -> CollapseStats:
        """The statistics, once both passes have seen the same samples."""
        if not self._frozen or self._counts2.sum() == 0:
            raise RuntimeError(
                "no within-class pass yet: after add_means, call add_within(h, labels) "
                "on the same batches, then result()"
            )
        if not np.array_equal(self._counts, self._counts2):
            raise RuntimeError(
                f"pass 2 saw {self._counts2.sum()} samples (per group {self._counts2.tolist()}) "
                f"but pass 1 saw {self._counts.sum()} ({self._counts.tolist()}); "
                "feed the same batches to both passes"
            )
        K, D = self.K, self.D
        counts = self._counts.copy()
        N = int(counts.sum())
        present = counts > 0
        K_present = int(present.sum())
        means = self._means.copy()
        means[~present] = np.nan
        mu_G = self._global_mean.copy()

        centred = means[present] - mu_G
        tr_between = float(np.sum(counts[present] / N * np.einsum("ij,ij->i", centred, centred)))
        tr_within = float(self._within_sq.sum() / N)
        tr_total = self._total_sq / N
        if self._s.size:
            nc1 = float(np.sum(self._proj_sq / N / self._s**2) / K_present)
        else:
            nc1 = float("nan")

        # CDNV over pairs of non-empty groups
        var = np.full(K, np.nan)
        var[present] = self._within_sq[present] / counts[present]
        diff = means[:, None, :] - means[None, :, :]
        dist_sq = np.einsum("abd,abd->ab", diff, diff)
        with np.errstate(divide="ignore", invalid="ignore"):
            cdnv_matrix = (var[:, None] + var[None, :]) / (2.0 * dist_sq)
        np.fill_diagonal(cdnv_matrix, np.nan)
        pairs = cdnv_matrix[np.triu(np.outer(present, present), k=1)]  # c < c', both non-empty
        cdnv = float(np.mean(pairs)) if pairs.size else float("nan")

        tcv1 = self._within_norm
        tcv2 = float(self._within_sq.sum())
        return CollapseStats(
            K=K,
            N=N,
            D=D,
            counts=counts,
            means=means,
            global_mean=mu_G,
            tr_within=tr_within,
            tr_between=tr_between,
            tr_total=tr_total,
            nc1=nc1,
            within_between_ratio=ratio(tr_within, tr_between),
            cdnv=cdnv,
            cdnv_matrix=cdnv_matrix,
            tcv1=tcv1,
            tcv2=tcv2,
            tcv1_normalised=ratio(tcv1, self._total_norm),
            tcv2_normalised=ratio(tcv2, self._total_sq),
            rank_between=int(self._s.size),
        )


def collapse_stats(
    H: Any,
    labels: Any,
    K: int | None = None,
    batch_size: int | None = None,
    *,
    rtol: float = DEFAULT_RTOL,
) -> CollapseStats:
    """:class:`CollapseStats` of in-memory features ``H`` (``N x D``) and ``labels``.

    ``K`` defaults to ``max(labels) + 1``. The computation runs through
    :class:`CollapseAccumulator` in batches of ``batch_size`` rows (default: one batch),
    so it is the streaming code path; a smaller ``batch_size`` bounds the float64 copy.
    """
    n = len(H)
    if K is None:
        y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if y.size == 0:
            raise ValueError("no samples: H and labels are empty")
        K = int(y.max()) + 1
    step = n if batch_size is None else int(batch_size)
    if step < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    acc = CollapseAccumulator(K, rtol=rtol)
    for start in range(0, n, step):
        acc.add_means(H[start : start + step], labels[start : start + step])
    for start in range(0, n, step):
        acc.add_within(H[start : start + step], labels[start : start + step])
    return acc.result()


def collapse_stats_stream(
    batches: Callable[[], Iterable[tuple[Any, Any]]],
    K: int,
    *,
    rtol: float = DEFAULT_RTOL,
) -> CollapseStats:
    """:class:`CollapseStats` from a stream of ``(h, labels)`` batches.

    ``batches()`` is called twice (pass 1: means, pass 2: within-class statistics) and
    must yield the same samples both times, e.g. ``lambda: feature_batches(model, loader)``
    with a loader that does not shuffle, or the same shuffled set in another order.
    """
    acc = CollapseAccumulator(K, rtol=rtol)
    for h, y in batches():
        acc.add_means(h, y)
    for h, y in batches():
        acc.add_within(h, y)
    return acc.result()


def kmeans_partition(H: Any, K: int, seed: int = 0) -> np.ndarray:
    """Labels ``0..K-1`` of a k-means clustering of the rows of ``H`` (float64).

    scikit-learn ``KMeans(n_clusters=K, n_init=10, random_state=seed)``. Used to show
    that clusters need not be classes: the bound of chapter 3's ``thm-neural-rank-collapse``
    (our form of the paper's Theorem 3.1) holds for any partition into ``K`` groups, and
    k-means minimises ``TCV_2`` over partitions (locally), so it gives the smallest right-hand
    side (c), which is monotone in ``TCV_2``; forms (a) and (b) need not be smallest for it.
    """
    from sklearn.cluster import KMeans

    X = _features(H)
    if X.shape[0] < K:
        raise ValueError(f"k-means needs at least K={K} samples, got {X.shape[0]}")
    km = KMeans(n_clusters=int(K), n_init=10, random_state=seed)
    return km.fit_predict(X).astype(np.int64)
