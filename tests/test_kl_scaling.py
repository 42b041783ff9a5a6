"""ScaleLatents (beta-VAE) and KL warm-up: the scaled losses on the same draws, the schedule
as fit applies it, and reporting that ignores beta."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import JitTrace_ELBO, Trace_ELBO, TraceMeanField_ELBO
from torch import nn

from ppl_vae.build import ModelSpec, build_vae
from ppl_vae.errors import ConfigError
from ppl_vae.kl_scaling import KLWarmup, ScaleLatents, kl_warmup, scale_latents
from ppl_vae.objectives import build_objective
from ppl_vae.training import fit, mean_elbo
from tests.mean_field_oracle import diagonal_guide, kl_to_prior
from tests.oracle import LinearGaussian

SHIFT, COV_SCALE = 0.3, 1.5


def _same_draw_terms(oracle, guide, x, seed):
    """Sums over the batch of log p(x|z), log p(z), log q(z|x) on the draw a
    one-particle ELBO makes under ``seed`` (the guide is run first, as Pyro does)."""
    pyro.set_rng_seed(seed)
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(oracle.model, guide_trace)).get_trace(x)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    return (
        model_trace.nodes["x"]["log_prob_sum"],
        model_trace.nodes["z"]["log_prob_sum"],
        guide_trace.nodes["z"]["log_prob_sum"],
    )


@pytest.mark.parametrize("beta", [0.0, 0.25, 3.0])
def test_trace_elbo_under_scale_latents_is_the_beta_objective(float64, beta):
    oracle = LinearGaussian.random()
    x = oracle.sample(9)
    guide = oracle.gaussian_guide(mean_shift=SHIFT, cov_scale=COV_SCALE)
    pyro.set_rng_seed(1)
    loss = Trace_ELBO().loss(scale_latents(oracle.model, beta), scale_latents(guide, beta), x)
    log_lik, log_prior, log_q = _same_draw_terms(oracle, guide, x, seed=1)
    expected = log_lik + beta * (log_prior - log_q)
    assert loss == pytest.approx(-float(expected), rel=1e-12)  # same draws: rounding only


@pytest.mark.parametrize("beta", [0.0, 0.25, 3.0])
def test_trace_mean_field_scales_the_analytic_kl_by_the_guide_scale(float64, beta):
    oracle = LinearGaussian.random()
    x = oracle.sample(9)
    guide = diagonal_guide(oracle, SHIFT, COV_SCALE)
    kl = float(kl_to_prior(oracle, x, SHIFT, COV_SCALE).sum())
    log_lik, _, _ = _same_draw_terms(oracle, guide, x, seed=2)
    objective = TraceMeanField_ELBO()
    pyro.set_rng_seed(2)
    loss = objective.loss(scale_latents(oracle.model, beta), scale_latents(guide, beta), x)
    assert loss == pytest.approx(-(float(log_lik) - beta * kl), rel=1e-12)
    # Pyro multiplies the analytic KL by the *guide* site's scale only: scaling the model
    # alone leaves the KL untouched, which is why the handler goes on both programs.
    pyro.set_rng_seed(2)
    model_only = objective.loss(scale_latents(oracle.model, beta), guide, x)
    assert model_only == pytest.approx(-(float(log_lik) - kl), rel=1e-12)


def test_trace_mean_field_monte_carlo_fallback_is_scaled_too(float64):
    # A full-covariance guide against a diagonal prior has no registered KL, so Pyro uses
    # log p(z) of the model site minus the guide's entropy term, both scaled.
    oracle = LinearGaussian.random()
    x = oracle.sample(9)
    guide = oracle.gaussian_guide(mean_shift=SHIFT, cov_scale=COV_SCALE)
    beta = 0.4
    pyro.set_rng_seed(3)
    loss = TraceMeanField_ELBO().loss(
        scale_latents(oracle.model, beta), scale_latents(guide, beta), x
    )
    log_lik, log_prior, log_q = _same_draw_terms(oracle, guide, x, seed=3)
    assert loss == pytest.approx(-float(log_lik + beta * (log_prior - log_q)), rel=1e-12)


def test_only_latent_sites_are_scaled_and_scales_compose():
    def program(x):
        with pyro.plate("data", 100, subsample_size=10) as rows:
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x[rows])

    x = torch.randn(100)
    trace = poutine.trace(ScaleLatents(0.5)(program)).get_trace(x)
    assert trace.nodes["data"]["scale"] == 1.0  # the subsample site
    assert trace.nodes["x"]["scale"] == pytest.approx(10.0)  # the minibatch scale, unchanged
    assert trace.nodes["z"]["scale"] == pytest.approx(5.0)  # 100/10 times beta

    # Restricted to latent sites it is poutine.scale: a program without observations
    def prior_only():
        with pyro.plate("data", 4):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    pyro.set_rng_seed(0)
    ours = poutine.trace(ScaleLatents(0.3)(prior_only)).get_trace().log_prob_sum()
    pyro.set_rng_seed(0)
    pyros = poutine.trace(poutine.scale(prior_only, 0.3)).get_trace().log_prob_sum()
    assert torch.equal(ours, pyros)
    assert scale_latents(prior_only, 1.0) is prior_only


def test_warmup_schedule():
    schedule = kl_warmup(4)
    assert [schedule(e) for e in range(1, 8)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [kl_warmup(2, start=0.2, final=0.6)(e) for e in (1, 2, 3)] == pytest.approx(
        [0.2, 0.4, 0.6]
    )
    assert kl_warmup(0)(1) == 1.0 and schedule == KLWarmup(4, 0.0, 1.0)
    for bad in ({"epochs": -1}, {"epochs": 2.5}, {"epochs": 2, "start": -0.1}):
        with pytest.raises(ConfigError):
            kl_warmup(**bad)
    with pytest.raises(ConfigError, match="count from 1"):
        schedule(0)
    for beta in (-1.0, math.nan, math.inf, "x"):
        with pytest.raises(ConfigError, match="beta"):
            ScaleLatents(beta)


class _ScaleRecorder(pyro.poutine.messenger.Messenger):
    """Records each site's scale after every handler has processed it, separately for SVI
    steps (gradients on) and for fit's ELBO reports (run under ``torch.no_grad``)."""

    def __init__(self, seen: dict) -> None:
        super().__init__()
        self.seen = seen

    def _postprocess_message(self, msg) -> None:
        if msg["type"] == "sample":
            phase = "step" if torch.is_grad_enabled() else "report"
            self.seen.setdefault((phase, msg["name"]), set()).add(float(msg["scale"]))


class _Pair:
    """A tiny trainable pair on the oracle's model family (plain functions)."""

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.decoder = nn.Linear(2, 5)
        self.encoder = nn.Linear(5, 4)

    def model(self, x, mask=None):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 0.5).to_event(1), obs=x)

    def guide(self, x, mask=None):
        pyro.module("encoder", self.encoder)
        loc, raw = self.encoder(x).chunk(2, dim=-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))

    def parameters(self) -> torch.Tensor:
        return torch.cat(
            [p.detach().flatten() for p in (*self.decoder.parameters(), *self.encoder.parameters())]
        )


def test_fit_applies_the_warmup_schedule_per_epoch():
    pair = _Pair()
    x = LinearGaussian.random().sample(24)
    seen = {"model": {}, "guide": {}}

    def recorded(role, fn):
        def program(x, mask=None):
            with _ScaleRecorder(seen[role]):
                fn(x)

        return program

    by_epoch = {}

    def snapshot(record, optimizer):
        by_epoch[record.epoch] = {role: dict(sites) for role, sites in seen.items()}
        for sites in seen.values():
            sites.clear()

    result = fit(
        recorded("model", pair.model),
        recorded("guide", pair.guide),
        x,
        beta=kl_warmup(3),
        epochs=5,
        batch_size=8,
        progress=False,
        on_epoch_end=snapshot,
    )
    schedule = [0.0, 1 / 3, 2 / 3, 1.0, 1.0]
    assert [r.beta for r in result.history] == pytest.approx(schedule)
    for epoch, beta in enumerate(schedule, start=1):
        for role in ("model", "guide"):
            scales = by_epoch[epoch][role]
            assert sorted(scales["step", "z"]) == pytest.approx([beta]), (epoch, role)
        # neither the observed site nor the plate's subsample site is ever scaled
        assert by_epoch[epoch]["model"]["step", "x"] == {1.0}
        assert by_epoch[epoch]["model"]["step", "data"] == {1.0}
        # While beta != 1 the training ELBO is reported after the epoch by mean_elbo, which
        # runs the unscaled programs; at beta == 1 the step losses are the ELBO already.
        reported = by_epoch[epoch]["guide"].get(("report", "z"))
        assert reported == (None if beta == 1.0 else {1.0})


def test_reported_elbos_do_not_depend_on_beta():
    data = LinearGaussian.random().sample(40, seed=3)
    train, valid = data[:24], data[24:]
    reports = {}
    for beta in (0.3, 0.7, 1.0):
        pyro.clear_param_store()
        pair = _Pair()
        result = fit(
            pair.model,
            pair.guide,
            train,
            valid_data=valid,
            beta=beta,
            epochs=1,
            batch_size=8,
            seed=2,
            optimizer=pyro.optim.SGD({"lr": 0.0}),  # parameters stay as built
            progress=False,
        )
        reports[beta] = result.history[0]
    # valid_elbo: the plain ELBO with common random numbers, whatever beta was
    assert reports[0.3].valid_elbo == reports[0.7].valid_elbo == reports[1.0].valid_elbo
    # train_elbo with beta != 1 is mean_elbo of the training data after the epoch
    expected = mean_elbo(pair.model, pair.guide, train, seed=2)
    assert reports[0.3].train_elbo == reports[0.7].train_elbo == expected
    # ... while the optimised objective moves with beta: with unchanged parameters and the
    # same seeds every run makes the same draws, so it is log p(x|z) + beta (log p(z) -
    # log q(z|x)) summed on fixed draws, linear in beta (float32 sums: rel 1e-5)
    objective = {beta: record.train_objective for beta, record in reports.items()}
    slope = (objective[0.7] - objective[0.3]) / 0.4
    assert objective[1.0] == pytest.approx(objective[0.7] + 0.3 * slope, rel=1e-5)
    assert slope < 0  # minus a KL estimate, positive on these draws
    # with beta = 1 and Trace_ELBO the reported ELBO is the objective's running mean itself
    assert reports[1.0].train_elbo == reports[1.0].train_objective


def test_reported_train_elbo_matches_mean_elbo_after_real_training():
    data = LinearGaussian.random().sample(40, seed=3)
    pair = _Pair()
    result = fit(
        pair.model, pair.guide, data, beta=0.5, epochs=2, batch_size=8, seed=4, progress=False
    )
    assert result.history[-1].train_elbo == mean_elbo(pair.model, pair.guide, data, seed=4)


def test_objectives_that_cannot_scale_refuse_beta():
    oracle = LinearGaussian.random()
    x = oracle.sample(8)
    guide = oracle.gaussian_guide()
    for beta in (0.5, kl_warmup(2)):
        with pytest.raises(ConfigError, match="not supported with the RenyiELBO objective"):
            fit(oracle.model, guide, x, elbo=build_objective("iwae"), beta=beta, progress=False)
    # beta = 1 (or a schedule already at 1 in the epochs run) is fine
    fit(
        oracle.model,
        guide,
        x,
        elbo=build_objective("renyi"),
        beta=kl_warmup(2),
        start_epoch=2,
        epochs=1,
        progress=False,
    )
    # a JIT-compiled ELBO would keep the first epoch's scales: a changing beta is refused
    with pytest.raises(ConfigError, match="JitTrace_ELBO compiles the program once"):
        fit(oracle.model, guide, x, elbo=JitTrace_ELBO(), beta=kl_warmup(2), progress=False)
    with pytest.raises(ConfigError, match="beta at epoch 1 must be finite"):
        fit(oracle.model, guide, x, beta=lambda epoch: -1.0, epochs=1, progress=False)


def test_resumed_warmup_equals_an_uninterrupted_run():
    x = LinearGaussian.random().sample(32, seed=5)
    options = {"batch_size": 8, "lr": 1e-2, "seed": 7, "progress": False, "beta": kl_warmup(4)}

    pyro.clear_param_store()
    full = _Pair()
    reference = fit(full.model, full.guide, x, epochs=4, **options)

    pyro.clear_param_store()
    split = _Pair()
    first = fit(split.model, split.guide, x, epochs=2, **options)
    rest = fit(
        split.model, split.guide, x, epochs=2, start_epoch=2, optimizer=first.optimizer, **options
    )
    assert [r.beta for r in first.history + rest.history] == [0.0, 0.25, 0.5, 0.75]
    assert [r.beta for r in reference.history] == [0.0, 0.25, 0.5, 0.75]
    # Same seeds per epoch, same schedule, same optimizer state: bit-identical arithmetic.
    torch.testing.assert_close(split.parameters(), full.parameters(), rtol=0, atol=0)
    for ours, theirs in zip(first.history + rest.history, reference.history, strict=True):
        assert (ours.train_elbo, ours.train_objective) == (
            theirs.train_elbo,
            theirs.train_objective,
        )


def test_training_elbo_after_the_epoch_sees_transformed_batches():
    # Grey levels binarized on the fly for a Bernoulli likelihood: the ELBO reported with
    # beta != 1 must score binarized data too (grey values lie outside the support)
    grey = torch.rand(40, 6)
    model, guide = build_vae(ModelSpec(data_shape=(6,), latent_dim=2, hidden=(8,)))
    result = fit(
        model,
        guide,
        grey,
        beta=0.5,
        epochs=2,
        batch_size=10,
        progress=False,
        batch_transform=torch.bernoulli,
    )
    first, second = (record.train_elbo for record in result.history)
    assert math.isfinite(first) and math.isfinite(second)
