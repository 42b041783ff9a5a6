"""Plain PyTorch building blocks shared by decoders (models/) and encoders (guides/)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["ACTIVATIONS", "mlp"]

#: Activation functions by name, for decoders and encoders alike.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


def mlp(
    in_features: int,
    hidden: Sequence[int],
    out_features: int,
    activation: str = "relu",
) -> nn.Sequential:
    """A multilayer perceptron ``in -> hidden[0] -> ... -> out`` with no final activation.

    :param activation: a key of :data:`ACTIVATIONS`.
    """
    if activation not in ACTIVATIONS:
        choices = ", ".join(sorted(ACTIVATIONS))
        raise ValueError(f"unknown activation {activation!r}; choose one of: {choices}")
    if in_features < 1 or out_features < 1 or any(h < 1 for h in hidden):
        raise ValueError(
            f"layer sizes must be positive, got in={in_features}, hidden={list(hidden)}, "
            f"out={out_features}"
        )
    sizes = [in_features, *hidden]
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), ACTIVATIONS[activation]()]
    layers.append(nn.Linear(sizes[-1], out_features))
    return nn.Sequential(*layers)
