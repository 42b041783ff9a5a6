"""Ground floor: generative programs p(z) p(x|z) and their parts. Imports torch and pyro only."""

from models.decoders import DECODERS, MLPDecoder
from models.likelihoods import (
    LIKELIHOODS,
    BernoulliLikelihood,
    BinomialLikelihood,
    Likelihood,
    NormalLikelihood,
)
from models.networks import ACTIVATIONS, mlp
from models.priors import PRIORS, StandardNormalPrior
from models.vae import VAE

__all__ = [
    "ACTIVATIONS",
    "DECODERS",
    "LIKELIHOODS",
    "PRIORS",
    "VAE",
    "BernoulliLikelihood",
    "BinomialLikelihood",
    "Likelihood",
    "MLPDecoder",
    "NormalLikelihood",
    "StandardNormalPrior",
    "mlp",
]
