"""Labels for conditional programs: the estimators pass ``y`` to model and guide, per
datapoint, and reject labels that cannot be class indices."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppl_vae import DataError, log_likelihood
from ppl_vae.estimators import elbo
from ppl_vae.validation import validate_labels

NUM_CLASSES = 3


class ClassShift:
    """The model (called as ``program(x, y=y)``) x | z, y ~ N(z + c_y, 1), z ~ N(0, 1), and
    the exact posterior as guide: every log weight equals log p(x | y) = log N(x; c_y, 2)."""

    num_classes = NUM_CLASSES
    data_shape = (1,)

    @property
    def centres(self) -> torch.Tensor:
        return torch.tensor([-2.0, 0.0, 3.0])  # in the default dtype of the test

    def __call__(self, x, mask=None, *, y):  # the model; num_classes is checked against y
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(1), 1.0).to_event(1))
            loc = z + self.centres[y].unsqueeze(-1)
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def guide(self, x, mask=None, *, y):
        loc = (x - self.centres[y].unsqueeze(-1)) / 2
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, 0.5**0.5).to_event(1))

    def log_marginal(self, x, y):
        return dist.Normal(self.centres[y], 2**0.5).log_prob(x[:, 0])


def test_estimators_condition_on_labels(float64):
    program = ClassShift()
    x = torch.tensor([[-1.0], [0.5], [2.0], [4.0]])
    y = torch.tensor([0, 1, 2, 2])
    estimate = log_likelihood(program, program.guide, x, y=y, num_samples=7, seed=3)
    exact = program.log_marginal(x, y)
    # Exact posterior as guide: every weight is p(x | y), so the estimate is exact for any K.
    torch.testing.assert_close(estimate.log_likelihood, exact, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(estimate.elbo, exact, rtol=1e-10, atol=1e-10)
    other = log_likelihood(program, program.guide, x, y=torch.zeros(4, dtype=torch.int64))
    assert not torch.allclose(other.log_likelihood, exact)


def test_labels_follow_their_datapoints_through_chunks(float64):
    program = ClassShift()
    x = torch.linspace(-3, 5, 9).unsqueeze(-1)
    y = torch.arange(9) % NUM_CLASSES
    whole = elbo(program, program.guide, x, y=y, num_samples=4, seed=1)
    chunked = elbo(program, program.guide, x, y=y, num_samples=4, seed=1, chunk_size=4)
    torch.testing.assert_close(whole, chunked, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(whole, program.log_marginal(x, y), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (torch.tensor([0, 1]), "one class index per datapoint"),
        (torch.tensor([0, 1, 3]), "model has 3 classes"),
        (torch.tensor([0, -1, 2]), "negative class"),
        (torch.tensor([0.0, 0.5, 1.0]), "whole class indices"),
        (torch.tensor([True, False, True]), "integer class indices"),
        ("abc", "class indices"),
    ],
)
def test_bad_labels_are_named(labels, message):
    program = ClassShift()
    x = torch.zeros(3, 1)
    with pytest.raises(DataError, match=message):
        log_likelihood(program, program.guide, x, y=labels, num_samples=2)


def test_validate_labels_accepts_whole_floats_and_lists():
    labels = validate_labels([0.0, 2.0, 1.0], 3, ClassShift())
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 2, 1]
