r"""Decoder networks: map a latent ``z`` of shape ``(..., latent_dim)`` to the flat
``(..., out_features)`` parameters a likelihood needs.

``out_features = P * D`` for ``P`` parameters per data element and ``D`` elements; the
likelihood reads them as ``params.unflatten(-1, (P, *data_shape))``, so parameter ``p`` of
element ``i`` sits at index ``p * D + i``. For images flattened in ``(C, H, W)`` order,
element ``i = c*H*W + h*W + w``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.networks import check_activation, check_image_shape, halved_sizes, mlp

__all__ = ["DECODERS", "ConvDecoder", "MLPDecoder"]


class MLPDecoder(nn.Module):
    """A multilayer perceptron decoder with configurable hidden sizes and activation."""

    def __init__(
        self,
        latent_dim: int,
        out_features: int,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.out_features = out_features
        self.net = mlp(latent_dim, hidden, out_features, activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class ConvDecoder(nn.Module):
    r"""A deconvolutional decoder for images of shape ``image_shape = (C, H, W)``.

    A dense network (``hidden`` layers) maps z to a feature map of ``channels[0]`` channels
    at reduced resolution :math:`\lceil H / 2^S \rceil \times \lceil W / 2^S \rceil` with
    :math:`S` = ``len(channels)``; then :math:`S` transposed convolutions (kernel 3, stride 2)
    each double the resolution, the output padding chosen so the last lands exactly on
    :math:`H \times W` for any sizes (8x8, 28x28, odd sizes too), in the style of the DCGAN
    generator (Radford et al., 2016). The last one has ``P * C`` output channels for the
    ``P = out_features / (C H W)`` likelihood parameters per pixel and no activation.

    The output is flat, ``(..., out_features)``, laid out channel-major so that
    ``params.unflatten(-1, (P, C*H*W))[..., p, c*H*W + h*W + w]`` is parameter ``p`` of
    pixel ``(c, h, w)``: the layout every likelihood expects. Leading batch dimensions
    ``(K, N, ...)`` are flattened into one for the convolutions and restored.

    :param latent_dim: size of z.
    :param out_features: ``P * C * H * W``.
    :param hidden: hidden sizes of the dense part (may be empty).
    :param image_shape: ``(C, H, W)``, required (keyword).
    :param channels: channels of the feature maps from coarsest to finest.
    """

    def __init__(
        self,
        latent_dim: int,
        out_features: int,
        hidden: Sequence[int] = (256,),
        activation: str = "relu",
        *,
        image_shape: Sequence[int] | None = None,
        channels: Sequence[int] = (64, 32),
    ) -> None:
        super().__init__()
        self.image_shape = check_image_shape(image_shape, who="decoder")
        num_pixels = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
        if out_features < 1 or out_features % num_pixels:
            raise ValueError(
                f"out_features ({out_features}) must be a positive multiple of C*H*W = "
                f"{num_pixels} (parameters per pixel times pixels) for image_shape "
                f"{self.image_shape}"
            )
        channels = tuple(int(c) for c in channels)
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"channels must be one or more positive sizes, got {channels}")
        act = check_activation(activation)
        self.latent_dim = int(latent_dim)
        self.out_features = int(out_features)
        self.params_per_pixel = out_features // num_pixels
        c, height, width = self.image_shape
        heights = halved_sizes(height, len(channels))[::-1]  # coarsest first
        widths = halved_sizes(width, len(channels))[::-1]
        self.start_shape = (channels[0], heights[0], widths[0])
        self.dense = nn.Sequential(
            mlp(self.latent_dim, hidden, channels[0] * heights[0] * widths[0], activation), act()
        )
        layers: list[nn.Module] = []
        outs = [*channels[1:], self.params_per_pixel * c]
        for i, (n_in, n_out) in enumerate(zip(channels, outs, strict=True)):
            # (in - 1) * 2 - 2 + 3 + pad = 2 in - 1 + pad: pad 1 reaches an even size, 0 an odd.
            padding = (1 - heights[i + 1] % 2, 1 - widths[i + 1] % 2)
            layers.append(nn.ConvTranspose2d(n_in, n_out, 3, 2, 1, output_padding=padding))
            if i < len(channels) - 1:
                layers.append(act())
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-1]
        maps = self.dense(z.reshape(batch.numel(), self.latent_dim))
        out = self.deconv(maps.reshape(batch.numel(), *self.start_shape))
        return out.reshape(*batch, self.out_features)


#: Decoders by name; each is ``DECODERS[name](latent_dim, out_features, **options)``; the
#: ``"conv"`` decoder also needs the keyword ``image_shape=(C, H, W)``.
DECODERS: dict[str, type[nn.Module]] = {"mlp": MLPDecoder, "conv": ConvDecoder}
