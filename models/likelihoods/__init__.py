r"""Likelihoods p(x | z): small modules that turn decoder output into a distribution over x.

A likelihood declares ``params_per_element`` (decoder outputs per data element),
``support`` and :meth:`~models.likelihoods.base.Likelihood.support_violation` (what to do
with data outside it); ``forward(params, feature_mask=None)`` takes decoder output shaped
``(..., params_per_element, *data_shape)`` and returns a distribution with event shape
``data_shape``. One module per likelihood; this package holds the registry.
"""

from models.likelihoods.base import Likelihood
from models.likelihoods.bernoulli import BernoulliLikelihood
from models.likelihoods.binomial import BinomialLikelihood
from models.likelihoods.normal import NormalLikelihood

__all__ = [
    "LIKELIHOODS",
    "BernoulliLikelihood",
    "BinomialLikelihood",
    "Likelihood",
    "NormalLikelihood",
]

#: Likelihoods by name; each is constructed as ``LIKELIHOODS[name](data_shape, **options)``.
LIKELIHOODS: dict[str, type[Likelihood]] = {
    "bernoulli": BernoulliLikelihood,
    "binomial": BinomialLikelihood,
    "normal": NormalLikelihood,
}
