r"""Amortized Sylvester normalizing flows (van den Berg et al., 2018 [1]).

One layer maps :math:`z \in \mathbb{R}^d` to

.. math::

    f(z) = z + Q R \tanh(\tilde R Q^\top z + b), \qquad
    \log\left|\det \frac{\partial f}{\partial z}\right|
        = \sum_{i=1}^{M} \log\left(1 + (1 - \tanh^2 a_i)\, R_{ii}\tilde R_{ii}\right),
    \quad a = \tilde R Q^\top z + b,

with :math:`Q \in \mathbb{R}^{d \times M}` of orthonormal columns, :math:`R, \tilde R \in
\mathbb{R}^{M \times M}` upper triangular and :math:`b \in \mathbb{R}^M`. By Sylvester's
determinant identity :math:`\det(I_d + Q R D \tilde R Q^\top) = \det(I_M + D \tilde R R)`
(:math:`D = \mathrm{diag}(\tanh'(a))`, :math:`Q^\top Q = I_M`), and :math:`\tilde R R` is
upper triangular, hence the sum above. The diagonals are
:math:`R_{ii} = \tanh(\rho_{ii})`, :math:`\tilde R_{ii} = \tanh(\tilde\rho_{ii})` ([1],
section 4), so :math:`R_{ii}\tilde R_{ii} \in (-1, 1)`, every factor is positive and the map
is invertible. All of :math:`Q, R, \tilde R, b` are read off the encoder features
:math:`h(x)` (amortized, as in [1]). Two ways to make :math:`Q`:

* ``kind="householder"`` (H-SNF): :math:`Q = H_1 \cdots H_T`,
  :math:`H_t = I - 2 v_t v_t^\top / \lVert v_t\rVert^2`, a full orthogonal matrix (M = d)
  from ``num_householder`` = T vectors;
* ``kind="orthogonal"`` (O-SNF): ``num_columns`` = M <= d columns, orthonormalised. Paper
  [1] iterates :math:`Q \leftarrow Q(I + \tfrac12(I - Q^\top Q))` until convergence; here a
  (differentiable) reduced QR decomposition does the same job exactly, so the log-det is
  exact and not only up to the iteration's tolerance.

**Inverse.** Split :math:`z` into :math:`v = Q^\top z` and the part orthogonal to the
columns of Q, which the map leaves unchanged. Then :math:`Q^\top y = v + R\tanh(\tilde R v +
b)` is upper triangular in :math:`v`: from the last coordinate up, each :math:`v_i` solves
the strictly increasing scalar equation
:math:`v_i + R_{ii}\tanh(\tilde R_{ii} v_i + c_i) = t_i` with :math:`c_i, t_i` known from
:math:`v_{>i}` (:func:`guides.flows._solve.solve_tanh`); finally
:math:`z = y - QR\tanh(\tilde R v + b)`. Pyro's ``Sylvester`` has fixed parameters and
inverts only its own samples, hence this module.

References

[1] van den Berg, Hasenclever, Tomczak & Welling (2018), *Sylvester Normalizing Flows for
    Variational Inference*, UAI.
[2] Rezende & Mohamed (2015), *Variational Inference with Normalizing Flows*, ICML.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.distributions import Transform, constraints

from guides.flows._checks import check_choice, check_hidden, check_int
from guides.flows._solve import solve_tanh
from guides.flows.base import AmortizedFlow
from models.networks import mlp

__all__ = ["KINDS", "AmortizedSylvester", "SylvesterTransform"]

#: The ways to build Q: Householder reflections (H-SNF) or orthonormalised columns (O-SNF).
KINDS = ("householder", "orthogonal")


class SylvesterTransform(Transform):
    r""":math:`f(z) = z + QR\tanh(\tilde R Q^\top z + b)` with given (batched) parameters.

    :param q: ``(..., d, M)`` with orthonormal columns.
    :param r: ``(..., M, M)`` upper triangular.
    :param r_tilde: ``(..., M, M)`` upper triangular, with
        :math:`R_{ii}\tilde R_{ii} > -1`.
    :param b: ``(..., M)``.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(
        self, q: torch.Tensor, r: torch.Tensor, r_tilde: torch.Tensor, b: torch.Tensor
    ) -> None:
        super().__init__(cache_size=1)
        self.q, self.r, self.r_tilde, self.b = q, r, r_tilde, b
        self.diag_product = r.diagonal(dim1=-2, dim2=-1) * r_tilde.diagonal(dim1=-2, dim2=-1)

    # Products are taken right to left, vector by vector (4 matrix-vector products per z),
    # never forming Q R or R~ Q^T: those are (d x M) @ (M x M) products per datapoint, which
    # cost d M^2 each and dominated training time at d = M = 50.

    def _preactivation(self, z: torch.Tensor) -> torch.Tensor:
        projected = (z.unsqueeze(-2) @ self.q).squeeze(-2)  # Q^T z, (..., M)
        return (self.r_tilde @ projected.unsqueeze(-1)).squeeze(-1) + self.b

    def _expand(self, act: torch.Tensor) -> torch.Tensor:
        """Q R act for ``act`` of shape (..., M)."""
        return (self.q @ (self.r @ act.unsqueeze(-1))).squeeze(-1)

    def _call(self, z: torch.Tensor) -> torch.Tensor:
        return z + self._expand(torch.tanh(self._preactivation(z)))

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        r, r_tilde = self.r, self.r_tilde
        s = (y.unsqueeze(-2) @ self.q).squeeze(-2)  # Q^T y, (..., M)
        m = s.shape[-1]
        v: list[torch.Tensor] = [s[..., 0]] * m
        act: list[torch.Tensor] = [s[..., 0]] * m
        for i in reversed(range(m)):
            t, c = s[..., i], self.b[..., i]
            if i < m - 1:
                t = t - (r[..., i, i + 1 :] * torch.stack(act[i + 1 :], -1)).sum(-1)
                c = c + (r_tilde[..., i, i + 1 :] * torch.stack(v[i + 1 :], -1)).sum(-1)
            v[i] = solve_tanh(t, r[..., i, i], r_tilde[..., i, i], c)
            act[i] = torch.tanh(r_tilde[..., i, i] * v[i] + c)
        return y - self._expand(torch.stack(act, -1))

    def log_abs_det_jacobian(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        slope = 1 - torch.tanh(self._preactivation(z)).square()
        return torch.log1p(slope * self.diag_product).sum(-1)


def _upper(off: torch.Tensor, diag: torch.Tensor) -> torch.Tensor:
    """An upper triangular ``(..., M, M)`` from its strict upper part and its diagonal."""
    m = diag.shape[-1]
    rows, cols = torch.triu_indices(m, m, offset=1, device=diag.device)
    # index_copy along the flattened last dimension (backward: a gather) is several times
    # faster than advanced-index assignment or masked_scatter and their backward passes.
    flat = diag.new_zeros(diag.shape[:-1] + (m * m,)).index_copy(-1, rows * m + cols, off)
    matrix = flat.unflatten(-1, (m, m))
    return matrix + torch.diag_embed(diag)


class AmortizedSylvester(AmortizedFlow):
    r"""A Sylvester layer whose :math:`Q, R, \tilde R, b` come from the context :math:`h(x)`.

    :param latent_dim: dimension d of z.
    :param context_dim: size of the context (the encoder's ``feature_dim``).
    :param kind: ``"householder"`` (H-SNF, M = d) or ``"orthogonal"`` (O-SNF).
    :param num_householder: reflections T for ``kind="householder"``; default 2 (only with
        that kind).
    :param num_columns: columns M of Q for ``kind="orthogonal"``, 1..d; default d (only
        with that kind).
    :param hidden: hidden layer sizes of the network reading the parameters off the
        context; the default ``()`` is the linear read-out of [1].

    :math:`R` starts small (its read-out weights scaled by ``1e-2``), so the layer starts
    near the identity map; the O-SNF columns start near the first M unit vectors.
    """

    def __init__(
        self,
        latent_dim: int,
        context_dim: int,
        *,
        kind: str = "householder",
        num_householder: int | None = None,
        num_columns: int | None = None,
        hidden: Sequence[int] = (),
    ) -> None:
        super().__init__(latent_dim, context_dim)
        d = self.latent_dim
        self.kind = check_choice("kind", kind, KINDS)
        self.hidden = check_hidden("hidden", hidden)
        if kind == "householder":
            if num_columns is not None:
                raise ValueError(
                    "num_columns applies to kind='orthogonal' only (householder uses M = d); "
                    f"got num_columns={num_columns!r} with kind='householder'"
                )
            self.num_householder = check_int(
                "num_householder", 2 if num_householder is None else num_householder
            )
            self.num_columns = d
            q_size = self.num_householder * d
        else:
            if num_householder is not None:
                raise ValueError(
                    "num_householder applies to kind='householder' only; got "
                    f"num_householder={num_householder!r} with kind='orthogonal'"
                )
            self.num_householder = 0
            self.num_columns = check_int(
                "num_columns", d if num_columns is None else num_columns, maximum=d
            )
            q_size = d * self.num_columns
        m = self.num_columns
        off = m * (m - 1) // 2
        # Read-out layout: [R strict upper, R diagonal, R~ strict upper, R~ diagonal, b, Q].
        self._sizes = [off, m, off, m, m, q_size]
        self.net = mlp(context_dim, self.hidden, sum(self._sizes))
        with torch.no_grad():
            last = self.net[-1]
            last.weight[: off + m].mul_(1e-2)
            last.bias[: off + m].mul_(1e-2)
            q_bias = last.bias[-q_size:]
            if kind == "householder":
                q_bias.normal_()
            else:
                q_bias.copy_(torch.eye(d, m).flatten())

    def _q(self, raw: torch.Tensor) -> torch.Tensor:
        d, m = self.latent_dim, self.num_columns
        if self.kind == "orthogonal":
            q, _ = torch.linalg.qr(raw.unflatten(-1, (d, m)), mode="reduced")
            return q
        vectors = raw.unflatten(-1, (self.num_householder, d))
        norms = vectors.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(raw.dtype).tiny)
        vectors = vectors / norms
        q = torch.eye(d, dtype=raw.dtype, device=raw.device).expand(raw.shape[:-1] + (d, d))
        for t in range(self.num_householder):
            vector = vectors[..., t, :]
            # Q <- Q H_t = Q - 2 (Q v) v^T, the outer product by broadcasting (not a bmm)
            q = q - 2 * (q @ vector.unsqueeze(-1)) * vector.unsqueeze(-2)
        return q

    def condition(self, context: torch.Tensor) -> SylvesterTransform:
        """A fresh :class:`SylvesterTransform` (new cache) for the context
        ``(..., context_dim)``."""
        r_off, r_diag, rt_off, rt_diag, b, q_raw = self.net(context).split(self._sizes, dim=-1)
        r = _upper(r_off, torch.tanh(r_diag))
        r_tilde = _upper(rt_off, torch.tanh(rt_diag))
        return SylvesterTransform(self._q(q_raw), r, r_tilde, b)
