r"""The guide of the semi-supervised model M2 (:class:`~models.semi_supervised.SemiSupervisedVAE`).

.. math::

    q(y, z \mid x) = q_\phi(y \mid x)\, q_\psi(z \mid x, y),

a classifier :math:`q(y \mid x)` (:class:`~guides.classifier.Classifier`) and the conditional
guide :math:`q(z \mid x, y)` of :class:`~guides.conditional.ConditionalGuide` (encoder
features joined to ``onehot(y)``, any registered posterior family), as in Kingma et al. [1].

``guide(x, mask=None, *, y=None)``: with labels the site ``"y"`` is not sampled (the model
observes it) and z is drawn from :math:`q(z \mid x, y)`; without them ``"y"`` is drawn from
:math:`q(y \mid x)` with ``infer={"enumerate": "parallel"}``, so
:class:`~pyro.infer.TraceEnum_ELBO` replaces the draw by all ``num_classes`` values at once
(the label gets shape ``(num_classes, 1)`` on the enumeration dimension left of the plates)
and z is drawn once per class. Under a plain trace (the importance-sampling estimators) the
label is sampled like any latent site, so the contract of DESIGN.md section 2 holds.

References

[1] Kingma, Rezende, Mohamed & Welling (2014), *Semi-supervised Learning with Deep
    Generative Models*, NeurIPS.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_

from guides.classifier import Classifier
from guides.conditional import ConditionalGuide
from models.conditional import check_labels, one_hot
from models.masking import fill_missing

__all__ = ["ENUMERATE_CHOICES", "SemiSupervisedGuide"]

#: How the unobserved label is handled: ``"parallel"`` (summed out exactly by TraceEnum_ELBO,
#: all classes in one vectorized pass), ``"sequential"`` (summed, one class at a time) or
#: ``None`` (sampled, for Trace_ELBO's score-function estimator).
ENUMERATE_CHOICES = ("parallel", "sequential", None)


class SemiSupervisedGuide(PyroModule):
    r"""``guide(x, mask=None, *, y=None)``: y ~ q(y | x) when ``y`` is not given, then
    z ~ q(z | x, y).

    :param classifier: a :class:`~guides.classifier.Classifier` (or any module with
        ``num_classes`` and ``distribution(x) -> Categorical``).
    :param latent_guide: the :class:`~guides.conditional.ConditionalGuide` of z; its site
        name is used.
    :param enumerate: one of :data:`ENUMERATE_CHOICES`.
    """

    def __init__(
        self,
        classifier: Classifier,
        latent_guide: ConditionalGuide,
        enumerate: str | None = "parallel",
    ) -> None:
        super().__init__()
        if classifier.num_classes != latent_guide.num_classes:
            raise ValueError(
                f"the classifier has {classifier.num_classes} classes but the latent guide "
                f"{latent_guide.num_classes}"
            )
        if enumerate not in ENUMERATE_CHOICES:
            raise ValueError(f"enumerate must be one of {ENUMERATE_CHOICES}, got {enumerate!r}")
        self.classifier = classifier
        self.latent_guide = latent_guide
        self.num_classes = classifier.num_classes
        self.enumerate = enumerate
        to_pyro_module_(self)

    @property
    def site(self) -> str:
        """The name of the latent site of z."""
        return self.latent_guide.site

    def classify(self, x: torch.Tensor) -> dist.Categorical:
        r""":math:`q(y \mid x)` for a batch ``x``: batch shape ``(N,)``."""
        return self.classifier.distribution(x)

    def latent_posterior(self, x: torch.Tensor, y: torch.Tensor) -> dist.TorchDistribution:
        r""":math:`q(z \mid x, y)` for a batch ``x`` and labels whose shape broadcasts against
        ``(N,)``: checked labels ``(N,)``, or enumerated ones ``(num_classes, 1)`` (then the
        batch shape is ``(num_classes, N)``). The encoder features of x are computed once."""
        guide = self.latent_guide
        h = guide.encoder.features(x)
        codes = one_hot(y, self.num_classes, h)
        h = h.expand(*codes.shape[:-1], h.shape[-1])
        g = guide.label_network.features(torch.cat([h, codes], dim=-1))
        return guide.family(*guide.label_network.gaussian(g), g)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sample the label (when ``y`` is ``None``) and the latent site; returns z. With a
        per-element ``mask`` both networks read x only where it is observed (the holes hold
        the latent guide's ``fill_value``, as in :class:`~guides.conditional.ConditionalGuide`);
        a per-datapoint mask is ignored.

        :raises ValueError: for bad labels.
        """
        if y is not None:
            y = check_labels(y, self.num_classes, x.shape[0])
        x = fill_missing(x, mask, self.latent_guide.fill_value)
        with pyro.plate("data", x.shape[0], dim=-1):
            if y is None:
                infer = {} if self.enumerate is None else {"enumerate": self.enumerate}
                y = pyro.sample("y", self.classify(x), infer=infer)
            return pyro.sample(self.site, self.latent_posterior(x, y))
