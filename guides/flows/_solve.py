r"""The scalar equation behind the numerical inverses of planar and Sylvester flows.

Both flows reduce their inverse to equations of the form

.. math::

    g(v) = v + r \tanh(\tilde r\, v + c) - t = 0, \qquad 1 + r \tilde r > 0,

solved elementwise. :math:`g'(v) = 1 + r \tilde r\,(1 - \tanh^2) \ge \min(1, 1 + r\tilde r)
> 0`, so :math:`g` is strictly increasing with exactly one root, and because
:math:`|\tanh| \le 1` the root lies in :math:`[t - |r|, t + |r|]`. :func:`solve_tanh` runs
Newton's method safeguarded by bisection on that bracket, in float64 and without gradients,
then takes one last Newton step *with* autograd from the (detached) root: at the root that
step changes no value but carries the implicit-function gradient
:math:`\partial v / \partial\theta = -(\partial g/\partial\theta) / g'`, so inverses stay
differentiable with respect to ``t``, ``r``, ``r_tilde`` and ``c``.
"""

from __future__ import annotations

import torch

__all__ = ["solve_tanh"]


def _g_and_slope(
    v: torch.Tensor, t: torch.Tensor, r: torch.Tensor, r_tilde: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    act = torch.tanh(r_tilde * v + c)
    return v + r * act - t, 1 + r * r_tilde * (1 - act.square())


def solve_tanh(
    t: torch.Tensor,
    r: torch.Tensor,
    r_tilde: torch.Tensor,
    c: torch.Tensor,
    *,
    tol: float = 1e-12,
    max_iter: int = 200,
) -> torch.Tensor:
    r"""The root of :math:`v + r \tanh(\tilde r v + c) = t`, elementwise and broadcast.

    Requires :math:`1 + r\tilde r > 0` (the flows guarantee it by construction). Iterates
    until every step is below ``tol * (1 + |v|)`` (in float64 the root is then accurate to
    about ``1e-12`` relative), at most ``max_iter`` times, which bisection alone would need
    only for brackets wider than ``2**max_iter * tol``.
    """
    shape = torch.broadcast_shapes(t.shape, r.shape, r_tilde.shape, c.shape)
    with torch.no_grad():
        t64, r64, rt64, c64 = (
            a.detach().to(torch.float64).expand(shape) for a in (t, r, r_tilde, c)
        )
        lo, hi = t64 - r64.abs(), t64 + r64.abs()
        v = t64.clone()
        for _ in range(max_iter):
            g, slope = _g_and_slope(v, t64, r64, rt64, c64)
            lo = torch.where(g < 0, v, lo)
            hi = torch.where(g > 0, v, hi)
            newton = v - g / slope
            inside = (newton > lo) & (newton < hi)
            new = torch.where(inside, newton, 0.5 * (lo + hi))
            new = torch.where(g == 0, v, new)
            done = bool(((new - v).abs() <= tol * (1 + v.abs())).all())
            v = new
            if done:
                break
    v = v.to(t.dtype)
    g, slope = _g_and_slope(v, t, r, r_tilde, c)
    return v - g / slope
