"""Convolutional decoder and encoder: shapes for any image size and batch shape, the flat
parameter layout every likelihood expects, spatial locality, clear errors, and a short fit
on the 8x8 digits."""

from __future__ import annotations

import pyro
import pytest
import torch

from guides import DiagonalNormalGuide
from guides.encoders import ENCODERS, ConvEncoder, MLPEncoder
from models import DECODERS, LIKELIHOODS, VAE, ConvDecoder, StandardNormalPrior
from models.priors import VampPrior
from ppl_vae.data import load_dataset
from ppl_vae.training import fit, mean_elbo

IMAGE_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 5, 7), (2, 1, 1)]


@pytest.mark.parametrize("image_shape", IMAGE_SHAPES)
def test_decoder_output_shape_for_any_image_and_batch(image_shape):
    num_pixels = torch.Size(image_shape).numel()
    decoder = ConvDecoder(4, 2 * num_pixels, hidden=(16,), image_shape=image_shape)
    assert decoder(torch.randn(3, 5, 4)).shape == (3, 5, 2 * num_pixels)
    assert decoder(torch.randn(4)).shape == (2 * num_pixels,)
    assert decoder(torch.randn(0, 4)).shape == (0, 2 * num_pixels)


@pytest.mark.parametrize("image_shape", IMAGE_SHAPES)
def test_encoder_two_stages_for_any_image_and_batch(image_shape):
    num_pixels = torch.Size(image_shape).numel()
    encoder = ConvEncoder((num_pixels,), 3, hidden=(16,), min_scale=1e-3, image_shape=image_shape)
    x = torch.randn(4, 5, num_pixels)
    h = encoder.features(x)
    assert h.shape == (4, 5, encoder.feature_dim) and encoder.feature_dim == 16
    loc, scale = encoder.gaussian(h)
    assert loc.shape == scale.shape == (4, 5, 3) and (scale >= 1e-3).all()
    torch.testing.assert_close(encoder(x)[0], loc)
    # one datapoint at a time gives the same answer as the batch
    torch.testing.assert_close(encoder(x[1, 2])[0], loc[1, 2], rtol=1e-5, atol=1e-6)


def test_encoder_takes_image_shaped_data_and_no_hidden_layers():
    encoder = ConvEncoder((1, 8, 8), 2, hidden=(), channels=(4,))
    assert encoder.image_shape == (1, 8, 8)
    assert encoder.feature_dim == 4 * 4 * 4
    assert encoder(torch.randn(7, 1, 8, 8))[0].shape == (7, 2)


def test_decoder_layout_is_param_then_channel_then_row_then_column():
    c, height, width, params = 2, 5, 6, 3
    decoder = ConvDecoder(
        4, params * c * height * width, hidden=(8,), image_shape=(c, height, width)
    )
    maps = {}
    decoder.deconv.register_forward_hook(lambda module, args, out: maps.setdefault("out", out))
    flat = decoder(torch.randn(2, 3, 4))
    image = maps["out"]  # (B, P*C, H, W) straight from the last transposed convolution
    assert image.shape == (6, params * c, height, width)
    per_param = flat.unflatten(-1, (params, c * height * width)).reshape(6, params, -1)
    for p, ch, h, w in [(0, 0, 0, 0), (2, 1, 4, 5), (1, 0, 3, 2), (2, 0, 1, 4)]:
        index = ch * height * width + h * width + w
        torch.testing.assert_close(per_param[:, p, index], image[:, p * c + ch, h, w])


@pytest.mark.parametrize("image_shape", [(1, 8, 8), (1, 28, 28), (2, 7, 5)])
def test_decoder_pixel_depends_on_the_matching_spatial_location(image_shape):
    c, height, width = image_shape
    decoder = ConvDecoder(3, c * height * width, hidden=(8,), image_shape=image_shape)
    last = decoder.deconv[-1]
    inputs = {}

    def keep_input(module, args):
        args[0].retain_grad()
        inputs["map"] = args[0]

    last.register_forward_pre_hook(keep_input)
    flat = decoder(torch.randn(1, 3))
    for ch, h, w in [(0, 0, 0), (c - 1, height - 1, width - 1), (0, height // 2, width // 3)]:
        inputs["map"].grad = None
        flat[0, ch * height * width + h * width + w].backward(retain_graph=True)
        grad = inputs["map"].grad[0].abs().sum(0)  # (H', W') of the coarser map
        rows, cols = torch.nonzero(grad, as_tuple=True)
        assert rows.numel() > 0
        # stride 2, kernel 3, padding 1: output o reads inputs i with |2i - o| <= 1
        assert ((2 * rows - h).abs() <= 1).all() and ((2 * cols - w).abs() <= 1).all()


def test_encoder_reads_flat_pixels_in_channel_row_column_order():
    c, height, width = 2, 6, 8
    encoder = ConvEncoder((c * height * width,), 2, hidden=(8,), image_shape=(c, height, width))
    maps = {}
    encoder.conv[0].register_forward_hook(lambda module, args, out: maps.setdefault("out", out))
    x = torch.randn(1, c * height * width, requires_grad=True)
    encoder.features(x)
    # stride 2, kernel 3, padding 1: output (1, 2) reads input rows 1..3 and columns 3..5
    (grad,) = torch.autograd.grad(maps["out"][0, :, 1, 2].sum(), x)
    pixels = torch.nonzero(grad[0]).flatten()
    channels = pixels // (height * width)
    rows = (pixels % (height * width)) // width
    cols = pixels % width
    assert set(channels.tolist()) == {0, 1}
    assert set(rows.tolist()) == {1, 2, 3} and set(cols.tolist()) == {3, 4, 5}
    as_images = ConvEncoder((c, height, width), 2, hidden=(8,))
    as_images.load_state_dict(encoder.state_dict())
    image = x.detach().reshape(1, c, height, width)
    torch.testing.assert_close(as_images.features(image), encoder.features(x.detach()))


def test_registries_build_conv_networks_the_way_the_builder_does():
    decoder = DECODERS["conv"](5, 2 * 64, hidden=(16,), activation="tanh", image_shape=(1, 8, 8))
    assert decoder.params_per_pixel == 2 and decoder.out_features == 128
    encoder = ENCODERS["conv"](
        (64,), 5, hidden=(16,), activation="elu", input_scale=1 / 16, image_shape=(1, 8, 8)
    )
    assert encoder.latent_dim == 5 and float(encoder.input_scale) == pytest.approx(1 / 16)


def test_clear_errors():
    with pytest.raises(ValueError, match=r"image_shape=\(C, H, W\)"):
        ConvDecoder(2, 64)
    with pytest.raises(ValueError, match=r"image_shape=\(C, H, W\)"):
        ConvEncoder((64,), 2)
    with pytest.raises(ValueError, match="holds 49 values but the data have 64"):
        ConvEncoder((64,), 2, image_shape=(1, 7, 7))
    with pytest.raises(ValueError, match="multiple of C\\*H\\*W = 64"):
        ConvDecoder(2, 100, image_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="unknown activation"):
        ConvDecoder(2, 64, activation="nope", image_shape=(1, 8, 8))


def test_mlp_encoder_state_dict_keys_are_unchanged():
    keys = list(MLPEncoder((6,), 2, hidden=(8, 8)).state_dict())
    assert keys == [
        "input_scale",
        "net.0.weight",
        "net.0.bias",
        "net.2.weight",
        "net.2.bias",
        "net.4.weight",
        "net.4.bias",
    ]


def test_conv_encoder_serves_a_vamp_prior():
    encoder = ConvEncoder((64,), 3, hidden=(8,), image_shape=(1, 8, 8))
    prior = VampPrior(3, encoder=encoder, data_shape=(64,), num_components=5, input_max=16)
    assert prior().log_prob(torch.randn(4, 2, 3)).shape == (4, 2)


def test_conv_vae_fits_the_digits():
    data = load_dataset("digits")
    x = data.train[:512]
    likelihood = LIKELIHOODS["binomial"]((64,), total_count=16)
    decoder = ConvDecoder(4, likelihood.num_params, hidden=(32,), image_shape=data.image_shape)
    encoder = ConvEncoder((64,), 4, hidden=(32,), input_scale=1 / 16, image_shape=data.image_shape)
    model = VAE(StandardNormalPrior(4), decoder, likelihood)
    guide = DiagonalNormalGuide(encoder)
    before = mean_elbo(model, guide, x)
    fit(model, guide, x, epochs=4, batch_size=64, lr=3e-3, progress=False)
    after = mean_elbo(model, guide, x)
    assert after > before + 20, (before, after)
    with pyro.plate("particles", 3, dim=-2):
        trace = pyro.poutine.trace(guide).get_trace(x[:5])
    assert trace.nodes["z"]["value"].shape == (3, 5, 4)
