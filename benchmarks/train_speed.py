r"""Seconds per training epoch: ppl_vae's ``fit`` against a plain-PyTorch VAE training loop.

Three ways of training the *same* network on binarized MNIST are timed, epoch by epoch,
interleaved in one process (ppl_vae, differentiable_loss, reference, ppl_vae, ...), so drift
of a shared machine hits all three alike:

- **ppl_vae**: :func:`ppl_vae.training.fit` (one epoch per call, the optimizer carried over)
  on the model/guide of ``build_vae(ModelSpec(data_shape=(784,), likelihood="bernoulli",
  latent_dim=50, hidden=(200, 200), activation="tanh"))`` with its defaults: Pyro's
  ``Trace_ELBO`` and ``pyro.optim.Adam``, i.e. ``SVI.step`` per minibatch. The time is the
  wall time of the whole ``fit`` call, its input checks included; the column "fit's setup,
  within ppl_vae" is that wall time minus the epoch's own ``EpochRecord.seconds`` (checks of
  the data and the parameter names, paid once per ``fit`` call, not per epoch).
- **differentiable_loss**: the same Pyro program, the same model/guide, trained without
  SVI's machinery: ``Trace_ELBO().differentiable_loss(model, guide, x)``, ``backward()``
  and one ``torch.optim.Adam`` over all parameters. The gap between this column and the
  reference is the cost of running a Pyro program (tracing, replay, PyroModule parameter
  access through the param store, distribution objects); the gap between ppl_vae and this
  column is the cost of ``SVI``/``PyroOptim``/``fit``.
- **reference**: a hand-written PyTorch loop over the identical network: encoder
  784-200-200-100 with tanh, ``loc`` and ``softplus(.) + 1e-4`` scale from the two halves
  of the output (as :class:`guides.encoders.MLPEncoder`), one reparameterised draw
  :math:`z = \mu + \sigma \epsilon`, decoder 50-200-200-784 with tanh giving Bernoulli
  logits, prior N(0, I), loss minus the single-sample ELBO summed over the minibatch (as
  ``Trace_ELBO``), ``torch.optim.Adam`` with the same learning rate.

All three start from the same weights, see the same shuffled minibatches and optimise the
same objective with the same optimizer, so the final ELBOs (each measured by
:func:`ppl_vae.training.mean_elbo` over the training data, common random numbers) should be
close. Prints, per batch size, the median seconds per epoch, the median per-repeat ratio to
the reference and the final mean ELBO per datapoint, as a markdown table::

    OMP_NUM_THREADS=1 python benchmarks/train_speed.py --data-dir ../shared/data
    OMP_NUM_THREADS=1 python benchmarks/train_speed.py --data-dir ../shared/data \
        --num-data 10000 --repeats 3 --batch-sizes 100 1000
    OMP_NUM_THREADS=1 python benchmarks/train_speed.py --data-dir ../shared/data --profile 200

``--profile STEPS`` instead runs cProfile over that many ``SVI.step`` calls at the first batch
size and prints the functions with the largest cumulative and own times.

Targets of the issue: ppl_vae / reference <= 1.2 at batch size 100 and <= 1.05 at batch
size 1000. Timings depend on the machine and its load; this script is a measurement, never
part of the test suite.
"""

from __future__ import annotations

import argparse
import cProfile
import math
import platform
import pstats
import statistics
import time
from collections.abc import Callable

import pyro
import pyro.optim
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.util import is_validation_enabled
from torch import nn

from ppl_vae.build import ModelSpec, build_vae
from ppl_vae.data import load_dataset
from ppl_vae.params import claim_param_names
from ppl_vae.training import fit, mean_elbo

SPEC = ModelSpec(
    data_shape=(784,), likelihood="bernoulli", latent_dim=50, hidden=(200, 200), activation="tanh"
)
MIN_SCALE = 1e-4  # MLPEncoder's default floor of the scale
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def plain_mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with tanh between them, none after the last (as ``models.networks.mlp``)."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


class Reference:
    """The plain-PyTorch VAE and its training loop, weights copied from a ppl_vae pair."""

    def __init__(self, model: nn.Module, guide: nn.Module, lr: float) -> None:
        d, h, k = 784, list(SPEC.hidden), SPEC.latent_dim
        self.encoder = plain_mlp([d, *h, 2 * k])
        self.decoder = plain_mlp([k, *h, d])
        self.encoder.load_state_dict(guide.encoder.net.state_dict())
        self.decoder.load_state_dict(model.decoder.net.state_dict())
        params = [*self.encoder.parameters(), *self.decoder.parameters()]
        self.optimizer = torch.optim.Adam(params, lr=lr)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Minus the single-sample ELBO, summed over the minibatch."""
        loc, raw_scale = self.encoder(x).chunk(2, dim=-1)
        scale = F.softplus(raw_scale) + MIN_SCALE
        z = loc + scale * torch.randn_like(loc)
        logits = self.decoder(z)
        log_px = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        log_pz = (-0.5 * z.square() - HALF_LOG_2PI).sum(-1)
        log_qz = (-0.5 * ((z - loc) / scale).square() - scale.log() - HALF_LOG_2PI).sum(-1)
        return -(log_px + log_pz - log_qz).sum()

    def epoch(self, x: torch.Tensor, batch_size: int, order: torch.Tensor) -> None:
        for begin in range(0, x.shape[0], batch_size):
            batch = x[order[begin : begin + batch_size]]
            self.optimizer.zero_grad()
            loss = self.loss(batch)
            loss.backward()
            self.optimizer.step()
            if not math.isfinite(loss.item()):
                raise RuntimeError("the reference loss diverged")

    def as_pyro(self) -> tuple[nn.Module, nn.Module]:
        """A ppl_vae model/guide holding the reference's weights, for :func:`mean_elbo`."""
        model, guide = build_vae(SPEC)
        guide.encoder.net.load_state_dict(self.encoder.state_dict())
        model.decoder.net.load_state_dict(self.decoder.state_dict())
        return model, guide


class DifferentiableLoss:
    """The Pyro program trained by ``Trace_ELBO().differentiable_loss`` and torch's Adam."""

    def __init__(self, model: nn.Module, guide: nn.Module, lr: float) -> None:
        self.model, self.guide = model, guide
        self.elbo = Trace_ELBO()
        params = [*model.parameters(), *guide.parameters()]
        self.optimizer = torch.optim.Adam(params, lr=lr)

    def epoch(self, x: torch.Tensor, batch_size: int, order: torch.Tensor) -> None:
        claim_param_names(self.model, self.guide)  # the other pair uses the same names
        for begin in range(0, x.shape[0], batch_size):
            batch = x[order[begin : begin + batch_size]]
            self.optimizer.zero_grad()
            loss = self.elbo.differentiable_loss(self.model, self.guide, batch)
            loss.backward()
            self.optimizer.step()
            if not math.isfinite(loss.item()):
                raise RuntimeError("the differentiable_loss run diverged")


def final_elbo(model: nn.Module, guide: nn.Module, x: torch.Tensor) -> float:
    claim_param_names(model, guide)
    return mean_elbo(model, guide, x, batch_size=1000, seed=0)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_batch_size(x: torch.Tensor, batch_size: int, args: argparse.Namespace) -> dict:
    pyro.clear_param_store()
    torch.manual_seed(0)
    model, guide = build_vae(SPEC)
    model_d, guide_d = build_vae(SPEC)
    model_d.load_state_dict(model.state_dict())
    guide_d.load_state_dict(guide.state_dict())
    reference = Reference(model, guide, args.lr)
    plain = DifferentiableLoss(model_d, guide_d, args.lr)
    optimizer = pyro.optim.Adam({"lr": args.lr})

    setup: list[float] = []

    def ppl_vae_epoch(epoch: int) -> None:
        start = time.perf_counter()
        options = {"batch_size": batch_size, "lr": args.lr, "optimizer": optimizer}
        result = fit(
            model, guide, x, epochs=1, start_epoch=epoch, seed=0, progress=False, **options
        )
        setup.append(time.perf_counter() - start - result.history[0].seconds)

    seconds: dict[str, list[float]] = {"ppl_vae": [], "differentiable_loss": [], "reference": []}
    for epoch in range(args.warmup + args.repeats):
        # The same shuffle for the two runs outside fit; fit shuffles with its own seed.
        order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(epoch))
        pyro.set_rng_seed(epoch)
        t_fit = timed(lambda: ppl_vae_epoch(epoch))  # noqa: B023
        t_plain = timed(lambda: plain.epoch(x, batch_size, order))  # noqa: B023
        t_ref = timed(lambda: reference.epoch(x, batch_size, order))  # noqa: B023
        if epoch >= args.warmup:
            seconds["ppl_vae"].append(t_fit)
            seconds["differentiable_loss"].append(t_plain)
            seconds["reference"].append(t_ref)
    elbos = {
        "ppl_vae": final_elbo(model, guide, x),
        "differentiable_loss": final_elbo(model_d, guide_d, x),
        "reference": final_elbo(*reference.as_pyro(), x),
    }
    ratios = {
        name: statistics.median(a / b for a, b in zip(times, seconds["reference"], strict=True))
        for name, times in seconds.items()
    }
    return {
        "seconds": {name: statistics.median(times) for name, times in seconds.items()},
        "ratio": ratios,
        "fit_setup": statistics.median(setup[args.warmup :]),
        "elbo": elbos,
        "epochs": args.warmup + args.repeats,
    }


def profile(x: torch.Tensor, batch_size: int, steps: int, lr: float) -> None:
    """cProfile over ``steps`` SVI steps, as fit makes them."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    model, guide = build_vae(SPEC)
    claim_param_names(model, guide)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), loss=Trace_ELBO())
    batches = [x[i % (x.shape[0] // batch_size) * batch_size :][:batch_size] for i in range(steps)]
    for batch in batches[:10]:  # warm-up
        svi.step(batch)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for batch in batches:
        svi.step(batch)
    profiler.disable()
    seconds = time.perf_counter() - start
    print(f"{steps} SVI steps at batch size {batch_size}: {1000 * seconds / steps:.2f} ms/step")
    print("(under cProfile, which inflates Python-heavy code more than kernels)")
    stats = pstats.Stats(profiler).strip_dirs()
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--num-data", type=int, default=10_000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs of each")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs of each first")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS")
    args = parser.parse_args()

    x = load_dataset("binarized_mnist", data_dir=args.data_dir).train[: args.num_data]
    x = x.reshape(x.shape[0], -1).contiguous()
    if args.profile:
        profile(x, args.batch_sizes[0], args.profile, args.lr)
        return

    results = {b: run_batch_size(x, b, args) for b in args.batch_sizes}
    print(
        f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, pyro {pyro.__version__}, "
        f"torch.get_num_threads() = {torch.get_num_threads()}, "
        f"Pyro validation {'on' if is_validation_enabled() else 'off'} "
        "(the machine may be shared with other jobs)"
    )
    print(
        f"N = {x.shape[0]} training points, {args.repeats} timed epochs of each after "
        f"{args.warmup} warm-up, interleaved; s/epoch and ratios are medians"
    )
    print()
    print(
        "| batch | ppl_vae fit (s/epoch) | differentiable_loss (s/epoch) | reference (s/epoch) "
        "| fit's setup, within ppl_vae (s) | ratio ppl_vae / ref | ratio diff_loss / ref "
        "| ELBO ppl_vae | ELBO diff_loss | ELBO ref |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for batch_size, r in results.items():
        s, q, e = r["seconds"], r["ratio"], r["elbo"]
        print(
            f"| {batch_size} | {s['ppl_vae']:.3f} | {s['differentiable_loss']:.3f} "
            f"| {s['reference']:.3f} | {r['fit_setup']:.3f} | {q['ppl_vae']:.2f} "
            f"| {q['differentiable_loss']:.2f} "
            f"| {e['ppl_vae']:.2f} | {e['differentiable_loss']:.2f} | {e['reference']:.2f} |"
        )
    print()
    print(
        "Targets: ratio ppl_vae / ref <= 1.2 at batch 100, <= 1.05 at batch 1000. ELBO: mean "
        f"per datapoint over the training data after {results[args.batch_sizes[0]]['epochs']} "
        "epochs, by ppl_vae.training.mean_elbo (one draw per point, seed 0)."
    )


if __name__ == "__main__":
    main()
