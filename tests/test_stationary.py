"""nrc_utils.stationary: batched L-BFGS, the Newton stage and the smallest Hessian eigenvalue, on tiny networks."""

from __future__ import annotations

import math

import pytest
import torch

from nrc_utils import data, gradients, stationary, train
from nrc_utils.losses import sample_losses
from nrc_utils.models import MLP

D, WIDTHS, K = 6, [5, 5], 3


@pytest.fixture(autouse=True)
def one_thread():
    """Networks this small run fastest on one thread (two threads on a busy machine wait on each other)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def mixture(seed: int = 0, s: float = 0.5):
    ds = data.gaussian_mixture(K, D, 10, s, seed=seed)
    return ds.X.double(), ds.y


def nets(seeds, widths=WIDTHS, bias=False):
    return [MLP(D, widths, K, "tanh", bias, seed=s).double() for s in seeds]


def problem(lams, per_member_data=False, loss="mse", bias=False, decay_bias=True, widths=WIDTHS):
    """``(problem, theta0, X, y)`` for members with seeds 0..M-1; per-member data from different mixture seeds."""
    M = len(lams)
    if per_member_data:
        pairs = [mixture(seed=m) for m in range(M)]
        X, y = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    else:
        X, y = mixture()
    prob, theta = stationary.Problem.from_mlps(nets(range(M), widths, bias), X, y, lams, loss, decay_bias)
    return prob, theta, X, y


def book_residual(net, X, y, lam, loss="mse", decay_bias=True) -> float:
    return max(gradients.stationarity_residuals(net, X, y, lam, loss, decay_bias))


def test_evaluate_matches_autograd_and_book_residuals():
    prob, theta, X, y = problem([0.01, 0.03], per_member_data=True, loss="ce", bias=True, decay_bias=False)
    phi, g, L, rho = prob.evaluate(theta, X, y, prob.lams)
    auto = torch.func.grad(lambda t: prob.phi(t, X, y, prob.lams).sum())(theta)
    assert torch.allclose(g, auto, rtol=1e-10, atol=1e-12)
    assert torch.allclose(phi, prob.phi(theta, X, y, prob.lams), rtol=1e-12)
    for m, net in enumerate(prob.mlps(theta)):
        ref = gradients.stationarity_residuals(net, X[m], y[m], prob.lams[m].item(), "ce", decay_bias=False)
        assert rho[m].tolist() == pytest.approx(ref, rel=1e-10)
        L_ref, _ = train.regularised_loss(net, X[m], y[m], prob.lams[m].item(), "ce", decay_bias=False)
        assert L[m].item() == pytest.approx(L_ref.item(), rel=1e-12)


def test_batched_equals_one_by_one_across_lambdas_and_data():
    lams = [0.02, 0.05, 0.1]
    prob, theta, X, y = problem(lams, per_member_data=True)
    alone = [stationary.Problem(D, WIDTHS, K, X[m], y[m], [lam]) for m, lam in enumerate(lams)]
    # the first iterations: the same steps, to rounding (the members do not see one another)
    short = stationary.lbfgs(prob, theta, tol=0.0, max_iter=25)
    for m in range(3):
        one = stationary.lbfgs(alone[m], theta[m:m + 1], tol=0.0, max_iter=25)
        assert torch.allclose(short.theta[m], one.theta[0], rtol=0, atol=1e-10)
    # to the stopping tolerance: the same stationary point (Newton settles both to 1e-12)
    batched = stationary.lbfgs(prob, theta, tol=1e-7, max_iter=5000)
    assert batched.stops == ["target"] * 3
    polished = stationary.newton(prob, batched.theta, tol=1e-12, eigenvalues=False)
    for m, lam in enumerate(lams):
        one = stationary.lbfgs(alone[m], theta[m:m + 1], tol=1e-7, max_iter=5000)
        assert one.stops == ["target"]
        # later iterates drift apart by rounding (batched products sum in another order), the counts with them
        assert abs(batched.iterations[m] - one.iterations[0]) <= max(10, one.iterations[0] // 4)
        one_polished = stationary.newton(alone[m], one.theta, tol=1e-12, eigenvalues=False)
        assert torch.allclose(polished.theta[m], one_polished.theta[0], rtol=0, atol=1e-9)
        net = prob.mlps(batched.theta)[m]
        assert book_residual(net, X[m], y[m], lam) <= 1e-7
    # one member at a time through the queue: the same iterates
    queued = stationary.lbfgs(prob, theta, tol=0.0, max_iter=25, max_batch=1)
    assert torch.allclose(queued.theta, short.theta, rtol=0, atol=1e-10)
    assert queued.batch_sizes == [1] * 75


def _two_loop(g: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Nocedal & Wright, Algorithm 7.4, with H_0 = (s^T y / y^T y) I of the newest pair (identity without pairs)."""
    q, alphas = g.clone(), []
    for s, y in reversed(pairs):
        a = (s @ q) / (y @ s)
        alphas.append(a)
        q = q - a * y
    r = q * ((pairs[-1][0] @ pairs[-1][1]) / (pairs[-1][1] @ pairs[-1][1]) if pairs else 1.0)
    for (s, y), a in zip(pairs, reversed(alphas)):
        r = r + s * (a - (y @ r) / (y @ s))
    return r


@pytest.mark.parametrize("ticks, empty", [(0, [[], []]), (1, [[], []]), (3, [[], [1]]), (5, [[], []]),
                                          (6, [[0], [3, 4]]), (13, [[], [9, 12]]), (13, [list(range(8)), [10]])])
def test_compact_product_in_its_ring_matches_the_two_loop_recursion(ticks, empty):
    """The batch writes ring slot t % h (h = 5) at its iteration t, an empty slot for a member whose pair
    was not kept (``empty[m]``: the iterations before it entered, or a failed curvature test). The
    compact form (Byrd, Nocedal & Schnabel eq. 3.13) ordered by age gives the two-loop recursion's H g
    over the pairs of the last h iterations, for empty, partial and wrapped rings with holes anywhere."""
    gen = torch.Generator().manual_seed(ticks + 7 * sum(map(len, empty)))
    P, h, m = 12, 5, 2
    A = torch.randn(P, P, generator=gen, dtype=torch.float64)
    A = A @ A.T + torch.eye(P, dtype=torch.float64)  # y = A s: positive curvature
    Zt = torch.zeros(m, P, 2 * h, dtype=torch.float64)
    SY, YY = torch.zeros(m, h, h, dtype=torch.float64), torch.zeros(m, h, h, dtype=torch.float64)
    filled = torch.zeros(m, h, dtype=torch.bool)
    kept: list[list] = [[None] * ticks for _ in range(m)]
    for member in range(m):
        for t in range(ticks):
            slot = t % h
            s = torch.randn(P, generator=gen, dtype=torch.float64)
            if t in empty[member]:
                s = torch.zeros(P, dtype=torch.float64)
            else:
                kept[member][t] = (s, A @ s)
            Zt[member, :, slot], Zt[member, :, h + slot] = s, A @ s
            filled[member, slot] = t not in empty[member]
            S, Y = Zt[member, :, :h], Zt[member, :, h:]
            SY[member], YY[member] = S.T @ Y, Y.T @ Y
    g = torch.randn(m, P, generator=gen, dtype=torch.float64)
    window = [[p for p in kept[member][-h:] if p is not None] for member in range(m)]
    gamma = torch.tensor([(w[-1][0] @ w[-1][1]) / (w[-1][1] @ w[-1][1]) if w else 1.0 for w in window],
                         dtype=torch.float64)
    out = stationary._inverse_hessian_product(g, Zt, SY, YY, filled, gamma, oldest=ticks % h)
    for member in range(m):
        ref = _two_loop(g[member], window[member])
        assert torch.allclose(out[member], ref, rtol=1e-9, atol=1e-12)


def test_finished_members_leave_the_batch():
    prob, theta, _X, _y = problem([0.01, 0.03, 0.1, 0.15])
    r = stationary.lbfgs(prob, theta, tol=1e-6, max_iter=5000)
    assert r.stops == ["target"] * 4
    assert len(set(r.iterations)) > 1  # they finish at different iterations
    # a member is in the batch exactly for its own iterations, and the batch shrinks as members stop
    assert sum(r.batch_sizes) == sum(r.iterations)
    assert len(r.batch_sizes) == max(r.iterations)
    assert r.batch_sizes[0] == 4 and r.batch_sizes[-1] == 1
    assert all(a >= b for a, b in zip(r.batch_sizes, r.batch_sizes[1:]))
    # at most max_batch at a time; a waiting member enters when one stops
    q = stationary.lbfgs(prob, theta, tol=1e-6, max_iter=5000, max_batch=2)
    assert max(q.batch_sizes) == 2 and sum(q.batch_sizes) == sum(q.iterations)
    assert q.stops == ["target"] * 4


def test_stop_reasons_per_member():
    prob, theta, X, y = problem([0.02, 0.02, 0.02])
    # member 0: an easy target; member 1: no target, three iterations; member 2: no target, until the
    # line search can no longer see a decrease
    r = stationary.lbfgs(prob, theta, tol=[1e-3, 0.0, 0.0], max_iter=[100000, 3, 100000], max_seconds=120)
    assert r.stops == ["target", "iteration cap", "no progress"]
    assert r.max_residuals[0] <= 1e-3 and r.iterations[1] == 3
    assert r.max_residuals[2] < 1e-6 and r.iterations[2] < 5000  # at the floor of a line search on the loss
    t = stationary.lbfgs(prob, theta, tol=0.0, max_iter=100000, max_seconds=0.0)
    assert t.stops == ["time cap"] * 3 and t.iterations == [1, 1, 1]
    assert set(r.stops) | set(t.stops) == set(train.POLISH_STOPS)


def test_start_at_target_takes_no_iteration():
    prob, theta, _X, _y = problem([0.02])
    r = stationary.lbfgs(prob, theta, tol=math.inf)
    assert r.stops == ["target"] and r.iterations == [0] and r.batch_sizes == []


def _polished(lams, tol=1e-5, **kw):
    prob, theta, X, y = problem(lams, **kw)
    return prob, stationary.lbfgs(prob, theta, tol=tol, max_iter=20000), X, y


@pytest.mark.parametrize("dense_max_params", [10**6, 0], ids=["dense", "newton-cg"])
def test_newton_reaches_1e_12(dense_max_params):
    prob, first, X, y = _polished([0.01, 0.05])
    assert (first.max_residuals > 1e-8).all()  # Newton has work to do
    nt = stationary.newton(prob, first.theta, tol=1e-12, dense_max_params=dense_max_params)
    assert nt.stops == ["target", "target"]
    assert nt.method == ["dense" if dense_max_params else "cg"] * 2
    for m, net in enumerate(prob.mlps(nt.theta)):
        assert book_residual(net, X, y, prob.lams[m].item()) <= 1e-12
        assert nt.max_residuals[m] <= 1e-12 and nt.start_residuals[m] == pytest.approx(first.max_residuals[m].item())
    assert (nt.min_eigenvalue > 0).all()  # these are strict local minima


def _dense_reference_min_eigenvalue(net, X, y, lam, loss="mse"):
    """Smallest eigenvalue of the Hessian of L_lambda by torch.autograd.functional.hessian on the MLP."""
    params = [p.detach().clone() for p in net.parameters()]
    shapes = [p.shape for p in params]
    flat = torch.cat([p.reshape(-1) for p in params])

    def L(v):
        ws, off = [], 0
        for s in shapes:
            n = math.prod(s)
            ws.append(v[off:off + n].reshape(s))
            off += n
        out = torch.func.functional_call(net, dict(zip([k for k, _ in net.named_parameters()], ws)), (X,))
        from nrc_utils.losses import sample_losses
        return sample_losses(out, y, loss).mean() + lam / 2 * sum((w * w).sum() for w in ws)

    H = torch.autograd.functional.hessian(L, flat)
    return torch.linalg.eigvalsh(H)[0].item()


def test_smallest_eigenvalue_dense_and_lanczos_match_a_reference():
    prob, first, X, y = _polished([0.01, 0.05], tol=1e-6)
    dense = stationary.newton(prob, first.theta, tol=1e-12)
    lanczos = stationary.newton(prob, first.theta, tol=1e-12, eig_dense_max_params=0)
    assert dense.eig_method == ["eigvalsh"] * 2 and lanczos.eig_method == ["lanczos"] * 2
    for m, net in enumerate(prob.mlps(dense.theta)):
        ref = _dense_reference_min_eigenvalue(net, X, y, prob.lams[m].item())
        assert dense.min_eigenvalue[m].item() == pytest.approx(ref, rel=1e-8)
        assert lanczos.min_eigenvalue[m].item() == pytest.approx(ref, rel=1e-6)
    assert torch.allclose(dense.min_eigenvalue_scaled, dense.min_eigenvalue / prob.lams**2)


@pytest.mark.parametrize("eig_dense_max_params", [10**6, 0], ids=["eigvalsh", "lanczos"])
def test_a_saddle_is_reported_with_a_negative_eigenvalue(eig_dense_max_params):
    """All-zero weights of a one-hidden-layer tanh net are stationary (every gradient vanishes); with the
    square loss, L_0 = -tr(W_2 W_1 A) + O(||W||^4) + const there, A = (1/N) sum_i x_i e_{y_i}^T, so the Hessian
    of L_lambda is lambda I + [[0, -A (x) I], [-A^T (x) I, 0]] (per hidden unit) with smallest eigenvalue
    lambda - sigma_max(A): a saddle when lambda < sigma_max(A)."""
    X, y = mixture()
    A = X.T @ torch.nn.functional.one_hot(y, K).double() / X.shape[0]
    sigma = torch.linalg.svdvals(A)[0].item()
    lam = 0.1 * sigma
    net = MLP(D, [4], K, "tanh", seed=0).double()
    for p in net.parameters():
        p.data.zero_()
    prob, theta = stationary.Problem.from_mlps([net], X, y, [lam], "mse")
    nt = stationary.newton(prob, theta, tol=1e-12, eig_dense_max_params=eig_dense_max_params)
    assert nt.stops == ["target"] and nt.iterations == [0] and nt.max_residuals[0] == 0
    assert nt.eig_method == ["eigvalsh" if eig_dense_max_params else "lanczos"]
    assert nt.min_eigenvalue[0].item() == pytest.approx(lam - sigma, rel=1e-6)
    assert nt.min_eigenvalue[0] < 0


def test_newton_never_returns_a_worse_point_and_says_why_it_stopped():
    prob, first, X, y = _polished([0.02, 0.05], tol=1e-6)
    start = first.max_residuals
    # tol 0 cannot be met: Newton stops at the float64 floor ("no progress") or the cap, at its best point
    nt = stationary.newton(prob, first.theta, tol=0.0, max_iter=8)
    assert set(nt.stops) <= {"no progress", "iteration cap"}
    assert (nt.max_residuals <= start).all() and (nt.max_residuals < 1e-12).all()
    for m, net in enumerate(prob.mlps(nt.theta)):
        assert book_residual(net, X, y, prob.lams[m].item()) == pytest.approx(nt.max_residuals[m].item(), rel=1e-3)
    capped = stationary.newton(prob, first.theta, tol=0.0, max_iter=0)
    assert capped.stops == ["iteration cap"] * 2 and torch.equal(capped.theta, first.theta)
    timed = stationary.newton(prob, first.theta, tol=0.0, max_seconds=0.0)
    assert timed.stops == ["time cap"] * 2


def test_polish_runs_both_stages():
    prob, theta, X, y = problem([0.01, 0.05], per_member_data=True)
    r = stationary.polish(prob, theta, lbfgs_tol=1e-6, tol=1e-12)
    assert r.lbfgs.stops == ["target"] * 2 and r.stops == ["target"] * 2
    assert (r.max_residuals <= 1e-12).all() and torch.equal(r.theta, r.newton.theta)


def test_bad_input_is_refused():
    X, y = mixture()
    with pytest.raises(ValueError, match="lambda > 0"):
        stationary.Problem(D, WIDTHS, K, X, y, [0.0])
    with pytest.raises(ValueError, match="X must be"):
        stationary.Problem(D, WIDTHS, K, X[None].expand(3, -1, -1), y, [0.1, 0.1])
    prob, theta, _X, _y = problem([0.1, 0.1])
    with pytest.raises(ValueError, match="tol must be"):
        stationary.lbfgs(prob, theta, tol=[1e-6, 1e-6, 1e-6])
    with pytest.raises(ValueError, match="theta0 must be"):
        stationary.newton(prob, theta[:1])


def test_trace_records_every_kth_iteration_with_L0_and_the_residual():
    """``trace_every``: every member's ``(iteration, L_lambda, L_0, residual, seconds)`` after every k-th iteration;
    with k = 1 the last entry is the returned point: L_lambda, L_0 and the residual of the returned network."""
    prob, theta, X, y = problem([0.01, 0.05], per_member_data=True)
    r = stationary.lbfgs(prob, theta, tol=1e-8, trace_every=5)
    for m in range(2):
        assert [t[0] for t in r.trace[m]] == list(range(5, r.iterations[m] + 1, 5))
        seconds = [t[4] for t in r.trace[m]]
        assert all(b >= a for a, b in zip(seconds, seconds[1:]))
        assert all(L > L0 > 0 for _it, L, L0, _res, _sec in r.trace[m])
    every = stationary.lbfgs(prob, theta, tol=1e-8, trace_every=1)
    for m, net in enumerate(prob.mlps(every.theta)):
        it, L, L0, res, _sec = every.trace[m][-1]
        L_ref, out = train.regularised_loss(net, X[m], y[m], prob.lams[m].item(), "mse")
        L0_ref = sample_losses(out, y[m], "mse").mean()
        assert it == every.iterations[m] and L == pytest.approx(L_ref.item(), rel=1e-12)
        assert L0 == pytest.approx(L0_ref.item(), rel=1e-9)
        assert res == pytest.approx(book_residual(net, X[m], y[m], prob.lams[m].item()), rel=1e-8)
    assert stationary.lbfgs(prob, theta, tol=1e-8).trace == [[], []]


def test_forward_mode_products_write_no_warning():
    """The Hessian-vector products (torch.func.jvp) load torch's decompositions at import, warning-free: a
    chapter's stderr stays empty."""
    import subprocess
    import sys

    code = ("import torch; from nrc_utils import stationary, models;"
            "X = torch.randn(8, 3, dtype=torch.float64); y = torch.arange(8) % 2;"
            "p, t = stationary.Problem.from_mlps([models.MLP(3, [4], 2).double()], X, y, [0.1], 'mse');"
            "p.hvp(t, torch.ones_like(t), *p.data(torch.arange(1)))")
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stderr == "", out.stderr[-2000:]


def test_newton_reaches_1e_12_where_a_symmetry_makes_the_hessian_singular():
    """A deep linear network (identity activation) is invariant under W_2 -> W_2 Q^T, W_1 -> Q W_1 (Q orthogonal),
    so its Hessian is singular at every stationary point: an LU step moves along the flat directions and stalls
    near 1e-11 (measured: chapter 5's problem, depth 2 and 3); the pseudo-inverse step reaches 1e-12, and the
    smallest eigenvalue is zero up to rounding against the largest (stationary.ZERO_RTOL), read as flat."""
    from nrc_utils.experiments import deep_linear_networks as dln

    pr = dln.whitened_problem([0.33, 0.26, 0.2, 0.15, 0.1, 0.065, 0.045, 0.025], 8, 12, 20, 0)
    nets_ = [MLP(12, [12], 8, "identity", False, seed=s).double() for s in range(2)]
    prob, theta = stationary.Problem.from_mlps(nets_, pr.X.double(), pr.y, [0.01, 0.02], "mse")
    first = stationary.lbfgs(prob, theta, tol=1e-6)
    r = stationary.newton(prob, first.theta, tol=1e-12)
    assert r.stops == ["target", "target"] and (r.max_residuals <= 1e-12).all()
    assert (r.max_eigenvalue > 0).all()
    assert (r.min_eigenvalue.abs() <= stationary.ZERO_RTOL * r.max_eigenvalue).all()
    low, high, how = stationary.extreme_eigenvalues(prob, r.theta, dense_max_params=10)  # Lanczos at both ends
    assert how == ["lanczos", "lanczos"]
    assert torch.allclose(high, r.max_eigenvalue, rtol=1e-6)
    assert (low.abs() <= stationary.ZERO_RTOL * high).all()


def _dense_extremes(prob, theta):
    """Smallest and largest eigenvalues of the Hessians of ``L_lambda / lambda^2``, ``(M,)`` each, from eigvalsh."""
    ev = torch.linalg.eigvalsh(prob.hessians(theta, *prob.data(torch.arange(prob.M))))
    return ev[:, 0], ev[:, -1]


def test_lanczos_finds_both_ends_of_the_spectrum_of_every_member():
    """Members with their own lambda and data, one batched run: both Ritz values agree with eigvalsh, the
    residuals meet the tolerance, and the Krylov space stays smaller than P (no full tridiagonalisation)."""
    prob, theta, X, y = problem([0.01, 0.03, 0.1], per_member_data=True, loss="ce", widths=[8, 8])
    theta = stationary.lbfgs(prob, theta, tol=1e-6).theta
    low, high = _dense_extremes(prob, theta)
    r = stationary.lanczos(prob, theta, tol=1e-10)
    assert r.stops == ["converged"] * 3
    assert torch.allclose(r.smallest, low, rtol=1e-8) and torch.allclose(r.largest, high, rtol=1e-10)
    assert (r.residuals.max(1).values <= 1e-10 * r.largest.abs()).all()
    assert max(r.steps) < prob.P


def test_lanczos_members_alone_or_in_one_batch_or_in_chunks_agree():
    prob, theta, X, y = problem([0.01, 0.05], loss="mse", widths=[8, 8])
    theta = stationary.lbfgs(prob, theta, tol=1e-6).theta
    both = stationary.lanczos(prob, theta)
    chunked = stationary.lanczos(prob, theta, memory_bytes=1)  # one member per chunk
    second = stationary.lanczos(prob, theta, members=[1])
    assert torch.allclose(chunked.smallest, both.smallest, rtol=1e-9)
    assert second.smallest[0].item() == pytest.approx(both.smallest[1].item(), rel=1e-9)
    assert second.largest[0].item() == pytest.approx(both.largest[1].item(), rel=1e-9)


def test_lanczos_at_its_caps_returns_ritz_values_inside_the_spectrum_and_says_so():
    """Cauchy interlacing: any Ritz value lies in [lambda_min, lambda_max]; a capped run says which cap, and
    extreme_eigenvalues reports no eigenvalue for it (NaN) rather than an unconverged one."""
    prob, theta, X, y = problem([0.01, 0.05], loss="ce", widths=[8, 8])
    theta = stationary.lbfgs(prob, theta, tol=1e-6).theta
    low, high = _dense_extremes(prob, theta)
    r = stationary.lanczos(prob, theta, max_steps=4)
    assert r.stops == ["step cap"] * 2 and r.steps == [4, 4]
    assert (r.smallest >= low).all() and (r.largest <= high).all() and (r.smallest > low * 1.01).all()
    timed = stationary.lanczos(prob, theta, max_seconds=0.0)
    assert timed.stops == ["time cap"] * 2 and timed.steps == [1, 1]
    lo, hi, how = stationary.extreme_eigenvalues(prob, theta, dense_max_params=0, lanczos_max_steps=4)
    assert how == ["lanczos: step cap"] * 2 and torch.isnan(lo).all() and torch.isnan(hi).all()


def test_lanczos_stops_exactly_when_the_krylov_space_is_invariant():
    """With max_steps = P the last beta vanishes (P orthonormal vectors span R^P): the Ritz values are then
    the exact extreme eigenvalues and the residuals are recorded as zero."""
    prob, theta, X, y = problem([0.02], loss="mse", widths=[3])
    low, high = _dense_extremes(prob, theta)
    r = stationary.lanczos(prob, theta, tol=0.0, max_steps=10**6)
    assert r.stops == ["converged"] and r.steps == [prob.P] and r.residuals.abs().max() == 0
    assert r.smallest[0].item() == pytest.approx(low[0].item(), rel=1e-9)
    assert r.largest[0].item() == pytest.approx(high[0].item(), rel=1e-12)
