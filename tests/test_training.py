"""fit() on library models and on user-written Pyro programs; the model/guide contract."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from ppl_vae.build import ModelSpec, build_vae
from ppl_vae.data import load_dataset
from ppl_vae.errors import ConfigError, ContractError, DataError, TrainingDivergedError
from ppl_vae.estimators import elbo, log_likelihood
from ppl_vae.training import fit, mean_elbo
from tests.oracle import LinearGaussian


class UserPair:
    """A user's own model and guide: plain functions with ``pyro.module`` and
    ``pyro.param``, nothing from models/ or guides/."""

    def __init__(self, data_dim: int, latent_dim: int) -> None:
        self.latent_dim = latent_dim
        self.decoder = nn.Linear(latent_dim, data_dim)
        self.encoder = nn.Sequential(
            nn.Linear(data_dim, 16), nn.Tanh(), nn.Linear(16, 2 * latent_dim)
        )

    def model(self, x, mask=None):
        pyro.module("user_decoder", self.decoder)
        log_s = pyro.param("log_s", torch.zeros(()))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), log_s.exp()).to_event(1), obs=x)

    def guide(self, x, mask=None):
        pyro.module("user_encoder", self.encoder)
        loc, raw = self.encoder(x).chunk(2, dim=-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))


def test_user_written_pyro_program_trains_and_is_evaluated():
    oracle = LinearGaussian.random(data_dim=5, latent_dim=2, s=0.5)
    train, test = oracle.sample(800, seed=1), oracle.sample(200, seed=2)
    pair = UserPair(5, 2)
    before = elbo(pair.model, pair.guide, test, seed=0).mean()
    result = fit(
        pair.model,
        pair.guide,
        train,
        valid_data=test,
        epochs=40,
        batch_size=50,
        lr=2e-2,
        progress=False,
    )
    assert len(result.history) == 40 and result.seconds > 0
    assert all(r.valid_elbo is not None for r in result.history)
    estimate = log_likelihood(pair.model, pair.guide, test, num_samples=500, seed=0)
    assert estimate.log_likelihood.shape == (200,)
    assert (estimate.log_likelihood >= estimate.elbo).all()  # Jensen, on the same draws
    assert estimate.elbo.mean() > before + 5
    # The family contains the truth, so the fitted log p(x) approaches the true one; 0.25
    # nats per datapoint allows for 40 epochs of SGD on 800 points (measured: 0.12).
    truth = oracle.log_marginal(test).mean()
    assert abs(estimate.log_likelihood.mean() - truth) < 0.25


def test_fit_improves_a_library_vae_on_digits():
    digits = load_dataset("digits")
    spec = ModelSpec(
        data_shape=digits.data_shape,
        likelihood="binomial",
        likelihood_options={"total_count": 16},
        latent_dim=4,
        hidden=(64,),
        input_scale=1 / 16,
    )
    model, guide = build_vae(spec)
    records = []
    result = fit(
        model,
        guide,
        digits.train[:500],
        valid_data=digits.valid,
        epochs=6,
        batch_size=50,
        lr=3e-3,
        progress=False,
        on_epoch_end=lambda record, optimizer: records.append(record),
    )
    assert records == result.history
    assert [r.epoch for r in records] == list(range(1, 7))
    assert result.train_elbo[-1] > result.train_elbo[0] + 20
    assert result.valid_elbo[-1] > result.valid_elbo[0]
    assert all(r.steps == 10 and r.seconds > 0 for r in records)
    assert len(result.step_elbo) == 60
    first_epoch = sum(result.step_elbo[:10]) * 50 / 500  # minibatches of 50 out of 500
    assert first_epoch == pytest.approx(result.train_elbo[0])


def test_fit_is_reproducible_with_a_seed():
    x = torch.randint(0, 2, (64, 6)).float()

    def run():
        pyro.clear_param_store()
        torch.manual_seed(1)
        model, guide = build_vae(ModelSpec(data_shape=(6,), latent_dim=2, hidden=(8,)))
        fit(model, guide, x, epochs=2, batch_size=16, seed=5, progress=False)
        return torch.cat([p.flatten() for p in model.parameters()])

    torch.testing.assert_close(run(), run(), rtol=0, atol=0)


def test_a_second_model_keeps_its_own_weights():
    # Pyro's global parameter store would hand model B the weights of model A (same names).
    x = torch.randint(0, 2, (32, 6)).float()
    spec = ModelSpec(data_shape=(6,), latent_dim=2, hidden=(8,))
    model_a, guide_a = build_vae(spec)
    fit(model_a, guide_a, x, epochs=1, batch_size=8, progress=False)
    model_b, guide_b = build_vae(spec)
    weights_b = [p.detach().clone() for p in model_b.parameters()]
    log_likelihood(model_b, guide_b, x, num_samples=2)
    for before, after in zip(weights_b, model_b.parameters(), strict=True):
        assert torch.equal(before, after)
    a_weight = next(model_a.parameters())
    assert not torch.equal(a_weight, next(model_b.parameters()))


def test_divergence_is_reported():
    def model(x, mask=None):
        loc = pyro.param("loc", torch.zeros(()))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(loc, 1.0).expand([x.shape[1]]).to_event(1), obs=x)

    def guide(x, mask=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    x = torch.full((8, 3), 3e38)  # finite, but its squared error overflows float32
    with pytest.raises(TrainingDivergedError, match="lower the learning rate"):
        fit(model, guide, x, epochs=1, batch_size=8, progress=False)


def test_contract_violations_are_named():
    oracle = LinearGaussian.random()
    x = oracle.sample(3)

    def guide_without_z(x, mask=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    with pytest.raises(ContractError, match=r"does not sample the model's latent sites \['z'\]"):
        log_likelihood(oracle.model, guide_without_z, x, num_samples=2)

    def guide_with_data_plate_left(x, mask=None):
        with pyro.plate("data", x.shape[0], dim=-2), pyro.plate("latent", 2, dim=-1):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ContractError, match=r"guide failed .*particles.* collide at dim=-2"):
        log_likelihood(oracle.model, guide_with_data_plate_left, x, num_samples=2)

    def guide_with_extra_batch_dim(x, mask=None):
        with pyro.plate("latent", 2, dim=-3), pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    with pytest.raises(
        ContractError, match=r"batch shape \(2, 2, 1\).*only the particles and the .data. plate"
    ):
        log_likelihood(oracle.model, guide_with_extra_batch_dim, x, num_samples=2)


@pytest.mark.parametrize(
    ("option", "message"),
    [({"epochs": -1}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"lr": 0.0}, "lr")],
)
def test_bad_training_options(option, message):
    oracle = LinearGaussian.random()
    settings = {"epochs": 1, "batch_size": 4, "lr": 1e-3, **option}
    with pytest.raises(ValueError, match=message):
        fit(oracle.model, oracle.gaussian_guide(), oracle.sample(4), progress=False, **settings)


def test_programs_without_a_mask_argument_work_when_no_mask_is_given(float64):
    oracle = LinearGaussian.random()
    x = oracle.sample(6)
    exact = oracle.gaussian_guide()

    def model(x):
        oracle.model(x)

    def guide(x):
        exact(x)

    estimate = log_likelihood(model, guide, x, num_samples=3, seed=0)
    torch.testing.assert_close(estimate.log_likelihood, oracle.log_marginal(x), rtol=1e-6, atol=0)
    with pytest.raises(ContractError, match="guide failed .*positional argument"):
        log_likelihood(model, guide, x, num_samples=3, mask=torch.ones(6, dtype=torch.bool))


def test_model_spec_for_dataset_uses_what_the_data_know():
    digits = load_dataset("digits")
    spec = ModelSpec.for_dataset(digits, latent_dim=3)
    assert spec.likelihood == "binomial" and spec.likelihood_options == {"total_count": 16}
    assert spec.data_shape == (64,) and spec.input_scale == 1 / 16 and spec.latent_dim == 3
    normal = ModelSpec.for_dataset(digits, likelihood="normal")
    assert normal.likelihood_options == {}
    own = ModelSpec.for_dataset(digits, likelihood_options={"total_count": 20}, input_scale=1.0)
    assert own.likelihood_options == {"total_count": 20} and own.input_scale == 1.0


class ConditionalPair:
    """A conditional program: plain functions taking the labels as the keyword ``y``.

    Column 0 of each datapoint *is* its label, and the model checks it, so a minibatch
    whose labels were not shuffled with the rows fails loudly.
    """

    num_classes = 3

    def __init__(self) -> None:
        self.seen_labels: list[torch.Tensor] = []

    def model(self, x, mask=None, *, y):
        assert torch.equal(x[:, 0], y.to(x.dtype)), "labels out of step with their rows"
        self.seen_labels.append(y)
        class_loc = pyro.param("class_loc", torch.zeros(self.num_classes, x.shape[1]))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            loc = class_loc[y] + z.unsqueeze(-1)
            pyro.sample("x", dist.Normal(loc, 0.3).to_event(1), obs=x)

    def guide(self, x, mask=None, *, y):
        shift = pyro.param("guide_shift", torch.zeros(self.num_classes))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(shift[y], 0.5))


def _labelled(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=gen)
    x = torch.cat([y[:, None].float(), 2.0 * y[:, None] + torch.randn(n, 2, generator=gen)], 1)
    return x, y


def test_fit_passes_labels_shuffled_with_the_data():
    pair = ConditionalPair()
    x, y = _labelled(36, seed=0)
    x_valid, y_valid = _labelled(12, seed=1)
    result = fit(
        pair.model,
        pair.guide,
        x,
        train_labels=y.numpy(),  # any array-like
        valid_data=x_valid,
        valid_labels=y_valid.tolist(),
        epochs=30,
        batch_size=8,
        lr=5e-2,
        progress=False,
    )
    assert all(math.isfinite(r.valid_elbo) for r in result.history)
    assert result.valid_elbo[-1] > result.valid_elbo[0]
    assert pair.seen_labels[0].dtype == torch.int64
    # the per-class means were learnt from the labels: the fitted mean of class c,
    # class_loc[c] + E_q[z | y = c], is near the class's sample mean (measured error 0.07 at
    # most; the z prior shrinks the guide's shift a little, 150 Adam steps)
    learnt = pyro.param("class_loc").detach() + pyro.param("guide_shift").detach()[:, None]
    sample_means = torch.stack([x[y == c].mean(0) for c in range(3)])
    torch.testing.assert_close(learnt, sample_means, atol=0.3, rtol=0)
    # mean_elbo takes the labels too
    assert math.isfinite(mean_elbo(pair.model, pair.guide, x_valid, y=y_valid))


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"train_labels": [0, 1]}, DataError, r"one class index per datapoint, shape \(6,\)"),
        ({"train_labels": [0, 1, 2, 0, 1, 0.5]}, DataError, "whole class indices"),
        ({"train_labels": [0, 1, 2, 0, 1, 3]}, DataError, "class 3 but the model has 3"),
        ({"train_labels": [0, 1, 2, 0, 1, -1]}, DataError, "negative"),
        ({"train_labels": [0] * 6, "valid_data": "x"}, ConfigError, "pass valid_labels"),
        ({"train_labels": [0] * 6, "valid_labels": [0] * 6}, ConfigError, "without valid_data"),
        ({"valid_labels": [0] * 6, "valid_data": "x"}, ConfigError, "without train_labels"),
        (
            {"train_labels": [0] * 6, "valid_data": "x", "valid_labels": [0, 1, 2, 3, 0, 0]},
            DataError,
            "validation labels contain class 3",
        ),
    ],
)
def test_bad_labels_are_named(options, error, message):
    pair = ConditionalPair()
    pair.model.__func__.num_classes = 3  # what validate_labels reads from a program
    x, _ = _labelled(6, seed=0)
    options = {key: x if value == "x" else value for key, value in options.items()}
    with pytest.raises(error, match=message):
        fit(pair.model, pair.guide, x, epochs=1, progress=False, **options)


def test_labels_for_an_unconditional_program_are_refused():
    oracle = LinearGaussian.random()
    with pytest.raises(ContractError, match="model does not take the keyword argument y"):
        fit(oracle.model, oracle.gaussian_guide(), oracle.sample(4), train_labels=[0] * 4)
