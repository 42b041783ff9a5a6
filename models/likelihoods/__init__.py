r"""Likelihoods p(x | z): small modules that turn decoder output into a distribution over x.

A likelihood declares ``params_per_element`` (decoder outputs per data element),
``support`` and :meth:`~models.likelihoods.base.Likelihood.support_violation` (what to do
with data outside it); ``forward(params, feature_mask=None)`` takes decoder output shaped
``(..., params_per_element, *data_shape)`` and returns a distribution with event shape
``data_shape``. One module per likelihood; this package holds the registry.
"""

from models.likelihoods.base import Likelihood
from models.likelihoods.bernoulli import BernoulliLikelihood
from models.likelihoods.beta import BetaLikelihood
from models.likelihoods.binomial import BinomialLikelihood
from models.likelihoods.categorical import CategoricalLikelihood
from models.likelihoods.continuous_bernoulli import ContinuousBernoulliLikelihood
from models.likelihoods.discretized_logistic import DiscretizedLogisticLikelihood
from models.likelihoods.laplace import LaplaceLikelihood
from models.likelihoods.negative_binomial import NegativeBinomialLikelihood
from models.likelihoods.normal import (
    FixedNormalLikelihood,
    HeteroscedasticNormalLikelihood,
    NormalLikelihood,
)
from models.likelihoods.poisson import PoissonLikelihood
from models.likelihoods.student_t import StudentTLikelihood

__all__ = [
    "LIKELIHOODS",
    "BernoulliLikelihood",
    "BetaLikelihood",
    "BinomialLikelihood",
    "CategoricalLikelihood",
    "ContinuousBernoulliLikelihood",
    "DiscretizedLogisticLikelihood",
    "FixedNormalLikelihood",
    "HeteroscedasticNormalLikelihood",
    "LaplaceLikelihood",
    "Likelihood",
    "NegativeBinomialLikelihood",
    "NormalLikelihood",
    "PoissonLikelihood",
    "StudentTLikelihood",
]

#: Likelihoods by name; each is constructed as ``LIKELIHOODS[name](data_shape, **options)``.
LIKELIHOODS: dict[str, type[Likelihood]] = {
    "bernoulli": BernoulliLikelihood,
    "continuous_bernoulli": ContinuousBernoulliLikelihood,
    "beta": BetaLikelihood,
    "binomial": BinomialLikelihood,
    "categorical": CategoricalLikelihood,
    "discretized_logistic": DiscretizedLogisticLikelihood,
    "normal": NormalLikelihood,
    "normal_fixed": FixedNormalLikelihood,
    "normal_heteroscedastic": HeteroscedasticNormalLikelihood,
    "laplace": LaplaceLikelihood,
    "student_t": StudentTLikelihood,
    "poisson": PoissonLikelihood,
    "negative_binomial": NegativeBinomialLikelihood,
}
