r"""Missing data, model and guide side: with a per-element mask the model scores
:math:`\log p(x_{\text{obs}} \mid z)`, the guides never read the holes, the importance-sampled
estimate is of :math:`\log p(x_{\text{obs}})` (checked against the linear-Gaussian oracle's
closed-form marginal of the observed coordinates), the ``obs_mask`` imputation program
splits the likelihood site as Pyro documents, and a VAE trains with holes.

The oracle here is the library's own :class:`models.VAE` with a linear decoder and a fixed
Normal likelihood: z ~ N(0, I), x | z ~ N(Wz + b, s^2 I). For the observed coordinates o of
a datapoint, x_o ~ N(b_o, S_oo) with S = W W^T + s^2 I, and p(z | x_o) = N(C W_o^T (x_o -
b_o) / s^2, C) with C = (I + W_o^T W_o / s^2)^{-1}.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch import nn

from guides import DiagonalNormalGuide, MLPEncoder
from guides.conditional import ConditionalGuide
from guides.hierarchical import HierarchicalGuide
from models import VAE, StandardNormalPrior
from models.likelihoods.normal import FixedNormalLikelihood, NormalLikelihood
from models.masking import element_distribution, fill_missing, impute_program
from ppl_vae.estimators import elbo, log_likelihood
from ppl_vae.importance import log_importance_weights
from ppl_vae.seeding import derive_seed
from ppl_vae.training import fit
from tests.oracle import LinearGaussian


class MaskedOracle:
    """Closed forms of the linear-Gaussian VAE with missing coordinates."""

    def __init__(self, oracle: LinearGaussian) -> None:
        self.W, self.b, self.s = oracle.W, oracle.b, oracle.s
        self.latent_dim = oracle.latent_dim
        self.data_dim = oracle.W.shape[0]
        eye = torch.eye(self.data_dim, dtype=self.W.dtype)
        self.cov = self.W @ self.W.T + self.s**2 * eye

    def vae(self) -> VAE:
        """The oracle as a :class:`models.VAE` (linear decoder, fixed-scale Normal)."""
        decoder = nn.Linear(self.latent_dim, self.data_dim).to(self.W.dtype)
        with torch.no_grad():
            decoder.weight.copy_(self.W)
            decoder.bias.copy_(self.b)
        likelihood = FixedNormalLikelihood((self.data_dim,), scale=self.s)
        return VAE(StandardNormalPrior(self.latent_dim), decoder, likelihood).to(self.W.dtype)

    def log_observed(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log N(x_o; b_o, S_oo) per datapoint."""
        out = []
        for row, observed in zip(x, mask, strict=True):
            o = observed.nonzero().flatten()
            marginal = dist.MultivariateNormal(self.b[o], self.cov[o][:, o])
            out.append(marginal.log_prob(row[o]))
        return torch.stack(out)

    def conditional(self, x: torch.Tensor, mask: torch.Tensor):
        """Per datapoint ``(mean, cov)`` of x_m | x_o; ``mean`` is x's shape (x where
        observed), ``cov`` a list of the (|m|, |m|) covariances."""
        means, covs = x.clone(), []
        for n, (row, observed) in enumerate(zip(x, mask, strict=True)):
            o, m = observed.nonzero().flatten(), (~observed).nonzero().flatten()
            gain = self.cov[m][:, o] @ torch.linalg.inv(self.cov[o][:, o])
            means[n, m] = self.b[m] + gain @ (row[o] - self.b[o])
            covs.append(self.cov[m][:, m] - gain @ self.cov[o][:, m])
        return means, covs

    def posterior(self, x: torch.Tensor, mask: torch.Tensor):
        """``(loc (N, d), cov (N, d, d))`` of p(z | x_o)."""
        locs, covs = [], []
        eye = torch.eye(self.latent_dim, dtype=self.W.dtype)
        for row, observed in zip(x, mask, strict=True):
            o = observed.nonzero().flatten()
            Wo = self.W[o]
            cov = torch.linalg.inv(eye + Wo.T @ Wo / self.s**2)
            locs.append(cov @ Wo.T @ (row[o] - self.b[o]) / self.s**2)
            covs.append(cov)
        return torch.stack(locs), torch.stack(covs)

    def exact_guide(self):
        """q(z | x_o) = p(z | x_o): a plain Pyro guide that reads the mask."""

        def guide(x, mask=None):
            mask = torch.ones_like(x, dtype=torch.bool) if mask is None else mask
            loc, cov = self.posterior(x, mask)
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.MultivariateNormal(loc, covariance_matrix=cov))

        return guide

    def encoder_guide(self, fill_mean: bool = True) -> DiagonalNormalGuide:
        """The library's guide with a linear encoder set to the complete-data posterior
        mean and sds a little wider than the prior's (a mean-field proposal that ignores
        which coordinates are missing, with bounded weights); the holes are filled with b
        (the data mean) or 0."""
        encoder = MLPEncoder((self.data_dim,), self.latent_dim, hidden=()).to(self.W.dtype)
        eye = torch.eye(self.latent_dim, dtype=self.W.dtype)
        cov = torch.linalg.inv(eye + self.W.T @ self.W / self.s**2)
        gain = cov @ self.W.T / self.s**2  # loc = gain (x - b)
        sd = torch.full((self.latent_dim,), 1.2, dtype=self.W.dtype)  # wider than p(z|x_o)
        raw = sd + torch.log(-torch.expm1(-sd))  # softplus^{-1}(sd), ignoring the 1e-4 floor
        with torch.no_grad():
            layer = encoder.net[-1]
            layer.weight.zero_()
            layer.bias.zero_()
            layer.weight[: self.latent_dim].copy_(gain)
            layer.bias[: self.latent_dim].copy_(-gain @ self.b)
            layer.bias[self.latent_dim :].copy_(raw)
        guide = DiagonalNormalGuide(encoder)
        guide.fill_value = self.b.clone() if fill_mean else 0.0
        return guide


def random_mask(num: int, dim: int, seed: int = 0, p: float = 0.5) -> torch.Tensor:
    """Independent holes with probability p, at least one observed element per row."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(num, dim, generator=gen) > p
    mask[torch.arange(num), torch.randint(0, dim, (num,), generator=gen)] = True
    return mask


@pytest.fixture
def masked_oracle(float64) -> MaskedOracle:
    return MaskedOracle(LinearGaussian.random(data_dim=6, latent_dim=2, s=0.5, seed=3))


@pytest.fixture
def holes(masked_oracle: MaskedOracle):
    x = LinearGaussian(masked_oracle.W, masked_oracle.b, masked_oracle.s).sample(30, seed=4)
    return x, random_mask(*x.shape, seed=5)


def garbage_in_holes(x: torch.Tensor, mask: torch.Tensor, seed: int = 9) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.where(mask, x, 100 * torch.randn(x.shape, generator=gen, dtype=x.dtype))


@pytest.mark.parametrize("num_samples", [1, 200])
def test_exact_guide_gives_the_closed_form_log_p_of_the_observed_coordinates(
    masked_oracle, holes, num_samples
):
    # With q = p(z | x_o) every weight equals p(x_o): the estimate is exact for any K,
    # whatever values the holes hold.
    x, mask = holes
    model, guide = masked_oracle.vae(), masked_oracle.exact_guide()
    truth = masked_oracle.log_observed(x, mask)
    estimate = log_likelihood(
        model, guide, garbage_in_holes(x, mask), mask=mask, num_samples=num_samples, seed=1
    )
    torch.testing.assert_close(estimate.log_likelihood, truth, rtol=1e-6, atol=0)
    torch.testing.assert_close(estimate.elbo, truth, rtol=1e-6, atol=0)
    # The observed marginal is not the complete-data density: the test can tell them apart.
    complete = log_likelihood(model, guide, x, num_samples=1, seed=1).log_likelihood
    with_holes = ~mask.all(dim=1)
    assert (complete - truth)[with_holes].abs().min() > 0.1
    torch.testing.assert_close(complete[~with_holes], estimate.log_likelihood[~with_holes])


def test_library_guide_with_holes_is_a_consistent_proposal(masked_oracle, holes):
    # A mean-field encoder that sees the holes filled with the data mean is not the
    # posterior, so the ELBO is below log p(x_o), and IS with K = 2000 is within 3 of its
    # standard errors of the closed form, while 3 standard errors are small next to the gap.
    x, mask = holes
    model, guide = masked_oracle.vae(), masked_oracle.encoder_guide()
    truth = masked_oracle.log_observed(x, mask).mean()
    estimate = log_likelihood(model, guide, x, mask=mask, num_samples=2000, seed=2)
    mean_elbo = elbo(model, guide, x, mask=mask, num_samples=2000, seed=3).mean()
    assert abs(estimate.log_likelihood.mean() - truth) < 3 * estimate.mean_stderr
    assert 3 * estimate.mean_stderr < 0.1 * (truth - mean_elbo)


@pytest.mark.parametrize("fill_mean", [True, False])
def test_values_in_the_holes_change_nothing(masked_oracle, holes, fill_mean):
    x, mask = holes
    model, guide = masked_oracle.vae(), masked_oracle.encoder_guide(fill_mean)
    a = log_importance_weights(model, guide, x, mask=mask, num_samples=20, seed=4)
    b = log_importance_weights(
        model, guide, garbage_in_holes(x, mask), mask=mask, num_samples=20, seed=4
    )
    assert torch.equal(a, b)
    # ... while without the mask the same values change the weights.
    c = log_importance_weights(model, guide, garbage_in_holes(x, mask), num_samples=20, seed=4)
    assert not torch.allclose(a, c)


def test_fill_missing():
    x = torch.arange(6.0).reshape(2, 3)
    mask = torch.tensor([[True, False, True], [False, True, True]])
    assert torch.equal(fill_missing(x, mask, -1.0), torch.tensor([[0.0, -1, 2], [-1, 4, 5]]))
    fill = torch.tensor([10.0, 20.0, 30.0])
    assert torch.equal(fill_missing(x, mask, fill), torch.tensor([[0.0, 20, 2], [10, 4, 5]]))
    assert fill_missing(x, None) is x
    assert fill_missing(x, torch.tensor([True, False])) is x  # per-datapoint mask


def _draws(guide, x, mask, **kwargs):
    with poutine.trace() as tracer, pyro.plate("particles", 3, dim=-2):
        pyro.set_rng_seed(derive_seed(0, 1))
        guide(x, mask, **kwargs)
    return {
        name: site["value"]
        for name, site in tracer.trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and name != "particles"
    }


@pytest.mark.parametrize("kind", ["amortized", "hierarchical", "conditional"])
def test_every_amortized_guide_reads_only_observed_elements(kind):
    D = 7
    encoder = MLPEncoder((D,), 2, hidden=(8,))
    guide = {
        "amortized": lambda: DiagonalNormalGuide(encoder),
        "hierarchical": lambda: HierarchicalGuide.build(encoder, 3, hidden=(8,)),
        "conditional": lambda: ConditionalGuide.build(encoder, 3, hidden=(8,)),
    }[kind]()
    kwargs = {"y": torch.tensor([0, 2, 1, 1])} if kind == "conditional" else {}
    x = torch.rand(4, D)
    mask = random_mask(4, D, seed=1)
    a = _draws(guide, x, mask, **kwargs)
    b = _draws(guide, garbage_in_holes(x, mask), mask, **kwargs)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The encoder sees fill_value in the holes: the same draws as filling x by hand.
    guide.fill_value = 0.25
    c = _draws(guide, x, mask, **kwargs)
    d = _draws(guide, torch.where(mask, x, 0.25), None, **kwargs)
    assert all(torch.equal(c[k], d[k]) for k in c)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_impute_program_splits_the_site_as_obs_mask_documents(masked_oracle, holes):
    x, mask = holes
    model = masked_oracle.vae()
    z = torch.randn(4, x.shape[0], 2, dtype=x.dtype)
    with pyro.plate("particles", 4, dim=-2):
        trace = poutine.trace(poutine.condition(model, data={"z": z})).get_trace(x, mask)
    trace.compute_log_prob()
    site = trace.nodes["x"]
    px = element_distribution(site["fn"], event_dim=1)
    assert px.batch_shape == (4, x.shape[0], x.shape[1]) and px.event_shape == ()
    imputed = poutine.trace(impute_program).get_trace(px, x, mask)
    imputed.compute_log_prob()
    observed, unobserved = imputed.nodes["x_observed"], imputed.nodes["x_unobserved"]
    assert observed["is_observed"] and not unobserved["is_observed"]
    # Summed over the feature plate, x_observed scores what the engine's "x" site scores:
    # log p(x_obs | z), with the holes marginalized out.
    torch.testing.assert_close(observed["log_prob"].sum(-1), site["log_prob"])
    assert (unobserved["log_prob"][..., mask] == 0).all()
    assert (unobserved["log_prob"][..., ~mask] != 0).all()
    value = imputed.nodes["x"]["value"]
    assert torch.equal(value[:, mask], x[mask].expand(4, -1))
    assert torch.equal(value[:, ~mask], unobserved["value"][:, ~mask])
    frames = {f.name: f.dim for f in observed["cond_indep_stack"]}
    assert frames == {"features": -1, "data": -2, "particles": -3}


def test_a_likelihood_that_does_not_factorize_cannot_be_imputed():
    mvn = dist.MultivariateNormal(torch.zeros(3, 4), torch.eye(4))
    with pytest.raises(ValueError, match="does not factorize"):
        element_distribution(mvn, 1)
    normal = dist.Normal(torch.zeros(3, 4), 1.0)
    assert element_distribution(normal.mask(torch.ones(4, dtype=torch.bool)).to_event(1), 1) is (
        normal
    )
    assert element_distribution(normal.to_event(1).mask(True), 1) is normal


def _elbo_and_grads(model, guide, x, mask, seed=0):
    pyro.set_rng_seed(seed)
    loss = Trace_ELBO().differentiable_loss(model, guide, x, mask)
    params = [*model.parameters(), *guide.parameters()]
    return loss, torch.autograd.grad(loss, params)


def test_training_loss_and_gradients_ignore_the_holes(masked_oracle, holes):
    x, mask = holes
    model, guide = masked_oracle.vae(), masked_oracle.encoder_guide()
    loss, grads = _elbo_and_grads(model, guide, x, mask)
    loss2, grads2 = _elbo_and_grads(model, guide, garbage_in_holes(x, mask), mask)
    assert torch.equal(loss, loss2)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads2, strict=True))
    assert all(bool(torch.isfinite(g).all()) for g in grads)


def _posterior_guide(model: VAE):
    """q(z | x_o) = p(z | x_o) under the model's current (detached) parameters: with it the
    ELBO equals log p(x_o) and its gradient in the model's parameters is that of log p(x_o)
    (Fisher's identity), so SVI climbs the observed-data likelihood with no guide bias."""

    def guide(x, mask=None):
        W, b = model.decoder.weight.detach(), model.decoder.bias.detach()
        precision = model.likelihood.scale.detach().square().reciprocal()
        observed = torch.ones_like(x) if mask is None else mask.to(x.dtype)
        weight = observed * precision
        eye = torch.eye(W.shape[1], dtype=x.dtype)
        lam = eye + torch.einsum("id,ni,ie->nde", W, weight, W)
        loc = torch.linalg.solve(lam, ((weight * (x - b)) @ W).unsqueeze(-1)).squeeze(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(loc, precision_matrix=lam))

    return guide


def _train_by_svi(model, guide, x, mask):
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(300):
        svi.step(x, mask)


def _train_by_fit(model, guide, x, mask):
    fit(
        model, guide, x, train_mask=mask, epochs=300, batch_size=x.shape[0], lr=0.05, progress=False
    )


@pytest.mark.parametrize("train", [_train_by_svi, _train_by_fit], ids=["svi", "fit"])
def test_a_vae_trains_with_holes(float64, train):
    # Pyro's SVI on model(x, mask), or fit(train_mask=...), 40% of the coordinates missing
    # at random. Training scores log p(x_obs | z) only, so it climbs the observed-data
    # likelihood and recovers the marginal covariance of the complete data,
    # W W^T + diag(sigma^2) (relative error 0.07; 0.05 when the same loop sees the complete
    # data, and 0.03 for the sample covariance of the complete data). Zero-filled holes taken
    # as data are far off (0.46).
    truth = LinearGaussian.random(data_dim=5, latent_dim=2, s=0.5, seed=6)
    truth.b = torch.zeros_like(truth.b)  # so zeros in the holes look like data
    x = truth.sample(800, seed=7)
    mask = random_mask(*x.shape, seed=8, p=0.4)
    zero_filled = torch.where(mask, x, 0.0)
    model = VAE(StandardNormalPrior(2), nn.Linear(2, 5), NormalLikelihood((5,))).double()
    train(model, _posterior_guide(model), zero_filled, mask)
    W = model.decoder.weight.detach()
    fitted = W @ W.T + torch.diag(model.likelihood.scale.detach().square())
    cov = truth.W @ truth.W.T + truth.s**2 * torch.eye(5, dtype=x.dtype)
    error = torch.linalg.norm(fitted - cov) / torch.linalg.norm(cov)
    naive = torch.linalg.norm(zero_filled.T @ zero_filled / 800 - cov) / torch.linalg.norm(cov)
    assert error < 0.12, error
    assert naive > 3 * error, (naive, error)
