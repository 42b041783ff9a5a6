"""Priors p(z): modules whose ``forward()`` returns a distribution with ``event_dim == 1``.

Parameters of fixed priors are buffers, so ``.to(device)`` and checkpoints carry them; learned
ones are ``nn.Parameter``s. One module per prior; this package holds the registry. A prior
class with ``needs_encoder = True`` (the VampPrior) also takes the guide's ``encoder=`` and the
``data_shape=`` as keyword arguments.
"""

from models.priors.flow import FlowPrior
from models.priors.laplace import LaplacePrior
from models.priors.learned_normal import LearnedNormalPrior
from models.priors.mixture import MixturePrior
from models.priors.normal import StandardNormalPrior
from models.priors.student_t import StudentTPrior
from models.priors.vamp import VampPrior

__all__ = [
    "PRIORS",
    "FlowPrior",
    "LaplacePrior",
    "LearnedNormalPrior",
    "MixturePrior",
    "StandardNormalPrior",
    "StudentTPrior",
    "VampPrior",
]

#: Priors by name; each is constructed as ``PRIORS[name](latent_dim, **options)``.
PRIORS: dict[str, type] = {
    "normal": StandardNormalPrior,
    "learned_normal": LearnedNormalPrior,
    "mixture": MixturePrior,
    "vamp": VampPrior,
    "laplace": LaplacePrior,
    "student_t": StudentTPrior,
    "flow": FlowPrior,
}
