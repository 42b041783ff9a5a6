"""Ground floor: generative programs p(z) p(x|z) and their parts. Imports torch and pyro only."""

from models.conditional import ConditionalVAE, check_labels, one_hot
from models.decoders import DECODERS, ConvDecoder, MLPDecoder
from models.hierarchical import HierarchicalVAE
from models.likelihoods import (
    LIKELIHOODS,
    BernoulliLikelihood,
    BinomialLikelihood,
    Likelihood,
    NormalLikelihood,
)
from models.masking import mask_datapoints, split_mask
from models.networks import ACTIVATIONS, GaussianMLP, mlp
from models.priors import PRIORS, StandardNormalPrior
from models.semi_supervised import SemiSupervisedVAE
from models.vae import VAE

__all__ = [
    "ACTIVATIONS",
    "DECODERS",
    "LIKELIHOODS",
    "PRIORS",
    "VAE",
    "BernoulliLikelihood",
    "BinomialLikelihood",
    "ConditionalVAE",
    "ConvDecoder",
    "GaussianMLP",
    "HierarchicalVAE",
    "Likelihood",
    "MLPDecoder",
    "NormalLikelihood",
    "SemiSupervisedVAE",
    "StandardNormalPrior",
    "check_labels",
    "mask_datapoints",
    "mlp",
    "one_hot",
    "split_mask",
]
