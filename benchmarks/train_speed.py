r"""Seconds per training epoch: ppl_vae's ``fit`` against a plain-PyTorch VAE training loop.

Five ways of training the *same* network on binarized MNIST are timed, epoch by epoch,
interleaved in one process (fit, fit with a Pyro optimizer, differentiable_loss, reference,
reference with fused Adam, fit, ...), so drift of a shared machine hits all alike:

- **fit**: :func:`ppl_vae.training.fit` (one epoch per call, the optimizer carried over)
  on the model/guide of ``build_vae(ModelSpec(data_shape=(784,), likelihood="bernoulli",
  latent_dim=50, hidden=(200, 200), activation="tanh"))`` with its defaults: Pyro's
  ``Trace_ELBO``, its ``differentiable_loss`` and ``backward()`` per minibatch, one
  :class:`ppl_vae.optim.TorchOptim` Adam over all parameters (PyTorch's fused Adam), Pyro's
  validation on for the first step of each call only. The time is the wall time of the
  whole ``fit`` call, its input checks included; "setup" is that wall time minus the
  epoch's own ``EpochRecord.seconds`` (checks of the data and the parameter names, paid once
  per ``fit`` call, not per epoch).
- **fit, pyro.optim.Adam**: the same ``fit`` handed ``pyro.optim.Adam({"lr": lr})``, which
  trains through ``SVI.step`` with one torch Adam per parameter and validation as set:
  what ``fit`` did before it had its own optimizer.
- **differentiable_loss**: the same Pyro program trained by a hand-written loop:
  ``Trace_ELBO().differentiable_loss(model, guide, x)``, ``backward()`` and one
  ``torch.optim.Adam`` (PyTorch's default implementation) over all parameters, Pyro's
  validation on: what a Pyro user would write without ``fit``.
- **reference**: a hand-written PyTorch loop over the identical network: encoder
  784-200-200-100 with tanh, ``loc`` and ``softplus(.) + 1e-4`` scale from the two halves
  of the output (as :class:`guides.encoders.MLPEncoder`), one reparameterised draw
  :math:`z = \mu + \sigma \epsilon`, decoder 50-200-200-784 with tanh giving Bernoulli
  logits, prior N(0, I), loss minus the single-sample ELBO summed over the minibatch (as
  ``Trace_ELBO``), ``torch.optim.Adam`` with the same learning rate and PyTorch's default
  implementation (on the CPU the per-tensor loop): the loop a PyTorch user writes.
- **reference, fused Adam**: the same loop with ``torch.optim.Adam(..., fused=True)``, the
  optimizer ``fit`` uses, so its ratio isolates the cost of running a Pyro program.

All start from the same weights, see the same shuffled minibatches and optimise the same
objective with Adam at the same learning rate, so the final ELBOs (each measured by
:func:`ppl_vae.training.mean_elbo` over the training data, common random numbers) should be
close. Prints, per batch size and way, the median seconds per epoch (wall-clock and the
process's CPU time), the median per-repeat ratios to the two references and the final mean
ELBO per datapoint, as a markdown table::

    OMP_NUM_THREADS=1 python benchmarks/train_speed.py --data-dir ../shared/data
    OMP_NUM_THREADS=1 python benchmarks/train_speed.py --data-dir ../shared/data \
        --num-data 10000 --repeats 3 --batch-sizes 100 1000
    OMP_NUM_THREADS=1 python benchmarks/train_speed.py --data-dir ../shared/data --profile 300

``--profile STEPS`` instead runs cProfile over that many of ``fit``'s steps at the first
batch size (as ``fit`` makes them: :class:`ppl_vae.steps.Steps`, validation off) and prints
where a step's time goes, then the functions with the largest cumulative and own times.

Targets of the issue: fit / reference <= 1.2 at batch size 100 and <= 1.05 at batch
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
from pyro.infer import Trace_ELBO
from pyro.infer.util import is_validation_enabled
from torch import nn

from ppl_vae.build import ModelSpec, build_vae
from ppl_vae.data import load_dataset
from ppl_vae.optim import adam
from ppl_vae.params import claim_param_names
from ppl_vae.steps import Steps
from ppl_vae.training import fit, mean_elbo

SPEC = ModelSpec(
    data_shape=(784,), likelihood="bernoulli", latent_dim=50, hidden=(200, 200), activation="tanh"
)
MIN_SCALE = 1e-4  # MLPEncoder's default floor of the scale
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
WAYS = ("fit", "fit, pyro.optim.Adam", "differentiable_loss", "reference", "reference, fused Adam")


def plain_mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with tanh between them, none after the last (as ``models.networks.mlp``)."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


class Reference:
    """The plain-PyTorch VAE and its training loop, weights copied from a ppl_vae pair."""

    def __init__(self, model: nn.Module, guide: nn.Module, lr: float, fused: bool) -> None:
        d, h, k = 784, list(SPEC.hidden), SPEC.latent_dim
        self.encoder = plain_mlp([d, *h, 2 * k])
        self.decoder = plain_mlp([k, *h, d])
        self.encoder.load_state_dict(guide.encoder.net.state_dict())
        self.decoder.load_state_dict(model.decoder.net.state_dict())
        params = [*self.encoder.parameters(), *self.decoder.parameters()]
        self.optimizer = torch.optim.Adam(params, lr=lr, **({"fused": True} if fused else {}))

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
        claim_param_names(self.model, self.guide)  # the other pairs use the same names
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


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """``(wall seconds, CPU seconds of this process)`` of ``fn()``. With one torch thread the
    two agree on an idle machine; on a shared one the CPU time is the steadier measure."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def _copy_of(model: nn.Module, guide: nn.Module) -> tuple[nn.Module, nn.Module]:
    model_c, guide_c = build_vae(SPEC)
    model_c.load_state_dict(model.state_dict())
    guide_c.load_state_dict(guide.state_dict())
    return model_c, guide_c


def run_batch_size(x: torch.Tensor, batch_size: int, args: argparse.Namespace) -> dict:
    pyro.clear_param_store()
    torch.manual_seed(0)
    model, guide = build_vae(SPEC)
    model_l, guide_l = _copy_of(model, guide)
    model_d, guide_d = _copy_of(model, guide)
    reference = Reference(model, guide, args.lr, fused=False)
    fused = Reference(model, guide, args.lr, fused=True)
    plain = DifferentiableLoss(model_d, guide_d, args.lr)
    optimizers = {"fit": adam(args.lr), "fit, pyro.optim.Adam": pyro.optim.Adam({"lr": args.lr})}
    pairs = {"fit": (model, guide), "fit, pyro.optim.Adam": (model_l, guide_l)}
    setup: list[float] = []

    def fit_epoch(way: str, epoch: int) -> None:
        start = time.perf_counter()
        result = fit(
            *pairs[way],
            x,
            epochs=1,
            start_epoch=epoch,
            seed=0,
            progress=False,
            batch_size=batch_size,
            lr=args.lr,
            optimizer=optimizers[way],
        )
        if way == "fit":
            setup.append(time.perf_counter() - start - result.history[0].seconds)

    seconds: dict[str, list[float]] = {way: [] for way in WAYS}
    cpu: dict[str, list[float]] = {way: [] for way in WAYS}
    for epoch in range(args.warmup + args.repeats):
        # The same shuffle for the runs outside fit; fit shuffles with its own seed.
        order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(epoch))
        pyro.set_rng_seed(epoch)
        times = {
            "fit": timed(lambda: fit_epoch("fit", epoch)),  # noqa: B023
            "fit, pyro.optim.Adam": timed(lambda: fit_epoch("fit, pyro.optim.Adam", epoch)),  # noqa: B023
            "differentiable_loss": timed(lambda: plain.epoch(x, batch_size, order)),  # noqa: B023
            "reference": timed(lambda: reference.epoch(x, batch_size, order)),  # noqa: B023
            "reference, fused Adam": timed(lambda: fused.epoch(x, batch_size, order)),  # noqa: B023
        }
        if epoch >= args.warmup:
            for way, (wall, used) in times.items():
                seconds[way].append(wall)
                cpu[way].append(used)
    elbos = {
        "fit": final_elbo(model, guide, x),
        "fit, pyro.optim.Adam": final_elbo(model_l, guide_l, x),
        "differentiable_loss": final_elbo(model_d, guide_d, x),
        "reference": final_elbo(*reference.as_pyro(), x),
        "reference, fused Adam": final_elbo(*fused.as_pyro(), x),
    }

    def ratio(times: dict[str, list[float]], way: str, to: str) -> float:
        return statistics.median(a / b for a, b in zip(times[way], times[to], strict=True))

    return {
        "seconds": {way: statistics.median(times) for way, times in seconds.items()},
        "cpu": {way: statistics.median(times) for way, times in cpu.items()},
        "ratio": {way: ratio(seconds, way, "reference") for way in WAYS},
        "ratio_cpu": {way: ratio(cpu, way, "reference") for way in WAYS},
        "ratio_fused": {way: ratio(seconds, way, "reference, fused Adam") for way in WAYS},
        "ratio_fused_cpu": {way: ratio(cpu, way, "reference, fused Adam") for way in WAYS},
        "fit_setup": statistics.median(setup[args.warmup :]),
        "elbo": elbos,
        "epochs": args.warmup + args.repeats,
    }


#: Where a profiled step's time goes: (label, functions whose cumulative time it is).
_BREAKDOWN = (
    ("step (Steps.__call__)", ("steps.py", "__call__")),
    ("  loss: differentiable_loss (forward, Pyro)", ("trace_elbo.py", "differentiable_loss")),
    ("    model and guide run under traces", ("trace_messenger.py", "get_trace")),
    ("    log densities (compute_log_prob)", ("trace_struct.py", "compute_log_prob")),
    ("    score parts of the guide", ("trace_struct.py", "compute_score_parts")),
    ("    ELBO assembled from the traces", ("trace_elbo.py", "_differentiable_loss_particle")),
    ("  backward", ("_tensor.py", "backward")),
    ("  optimizer step", ("optim.py", "step")),
    ("  optimizer zero_grad", ("optim.py", "zero_grad")),
    ("PyroModule.__call__ (all calls, nested)", ("module.py", "__call__")),
    ("PyroModule.__getattr__ (incl. pyro.param)", ("module.py", "__getattr__")),
    ("torch linear kernels (forward)", ("~", "<built-in method torch._C._nn.linear>")),
)


def _breakdown(stats: pstats.Stats, steps: int) -> None:
    table = stats.stats  # (file, line, name) -> (calls, primitive, tottime, cumtime, callers)
    print("| part of a step | ms per step (cumulative, under cProfile) | calls per step |")
    print("|---|---|---|")
    for label, (file, name) in _BREAKDOWN:
        hits = [
            (v[1], v[3])
            for (f, _, n), v in table.items()
            if n == name and (f.endswith(file) or file == "~")
        ]
        if not hits:
            continue
        calls, cumulative = max(hits, key=lambda h: h[1])  # the outermost entry
        print(f"| {label} | {1000 * cumulative / steps:.2f} | {calls / steps:.1f} |")


def profile(x: torch.Tensor, batch_size: int, steps: int, lr: float) -> None:
    """cProfile over ``steps`` of fit's steps (validation off, as fit runs them)."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    model, guide = build_vae(SPEC)
    claim_param_names(model, guide)
    runner = Steps(Trace_ELBO(), adam(lr))
    runner.set_programs(model, guide)
    batches = [x[i % (x.shape[0] // batch_size) * batch_size :][:batch_size] for i in range(steps)]
    with pyro.validation_enabled(False):
        for batch in batches[:10]:  # warm-up; the first step collects the parameters
            runner((batch,), {})
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.enable()
        for batch in batches:
            runner((batch,), {})
        profiler.disable()
        seconds = time.perf_counter() - start
    print(f"{steps} fit steps at batch size {batch_size}: {1000 * seconds / steps:.2f} ms/step")
    print("(under cProfile, which inflates Python-heavy code more than kernels)")
    print()
    stats = pstats.Stats(profiler).strip_dirs()
    _breakdown(stats, steps)
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
        "| batch | way | s/epoch (wall) | s/epoch (CPU) | ratio to reference (wall / CPU) "
        "| ratio to reference, fused Adam (wall / CPU) | final ELBO |"
    )
    print("|---|---|---|---|---|---|---|")
    for batch_size, r in results.items():
        for way in WAYS:
            print(
                f"| {batch_size} | {way} | {r['seconds'][way]:.3f} | {r['cpu'][way]:.3f} "
                f"| {r['ratio'][way]:.2f} / {r['ratio_cpu'][way]:.2f} "
                f"| {r['ratio_fused'][way]:.2f} / {r['ratio_fused_cpu'][way]:.2f} "
                f"| {r['elbo'][way]:.2f} |"
            )
    print()
    setups = ", ".join(f"{r['fit_setup']:.3f} s at batch {b}" for b, r in results.items())
    print(f"fit's setup per call (input checks, within its time): {setups}")
    print(
        "Targets: ratio fit / reference <= 1.2 at batch 100, <= 1.05 at batch 1000. ELBO: mean "
        f"per datapoint over the training data after {results[args.batch_sizes[0]]['epochs']} "
        "epochs, by ppl_vae.training.mean_elbo (one draw per point, seed 0)."
    )


if __name__ == "__main__":
    main()
