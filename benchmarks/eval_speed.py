r"""Importance-sampled log p(x): ppl_vae's ``log_likelihood`` against a plain-PyTorch reference.

The same estimator, on the same network and the same binarized-MNIST test points, two ways:

- **ppl_vae**: :func:`ppl_vae.estimators.log_likelihood` (``num_samples=K``, ``seed=0``,
  ``chunk_size``) on the model/guide of ``build_vae(ModelSpec(data_shape=(784,),
  likelihood="bernoulli", latent_dim=50, hidden=(200, 200), activation="tanh"))``, with
  the weights of a trained run (``--run-dir``, loaded by :func:`ppl_vae.run.load_run`) or
  of a fresh initialisation. The timed call is the whole public function: input checks,
  Pyro tracing of guide and model per chunk, per-datapoint seeded draws, and the
  per-datapoint statistics it returns besides log p(x) (standard error, ESS, ELBO).
- **reference**: a hand-written PyTorch loop over the identical network: the encoder
  784-200-200-100 (tanh) once per datapoint, ``loc`` and ``softplus(.) + 1e-4`` scale,
  K reparameterised draws :math:`z = \mu + \sigma \epsilon` from one generator,
  :math:`\log w = \log p(z) + \log p(x \mid z) - \log q(z \mid x)` with the decoder
  50-200-200-784 (tanh) giving Bernoulli logits, and
  :math:`\widehat{\log p}(x) = \mathrm{logsumexp}_k \log w_k - \log K`. It is chunked the
  way ppl_vae is (:func:`ppl_vae.importance.plan_chunks`): each vectorized pass holds at most
  ``chunk_size`` (particle, datapoint) pairs, all K particles of a datapoint in one pass
  when ``K <= chunk_size``.

Timings are interleaved in one process after one warm-up call of each: every repeat goes
over all points in slices of ``--slice-size`` points (default 100, about 17 blocks of
6 points), each slice estimated by both in alternating order (ppl_vae then reference, then
reference then ppl_vae, ...), so the load of a shared machine, which drifts on the scale of
seconds, hits both alike. Wall and CPU seconds are summed over the slices of a repeat; the
table shows their medians over repeats, the median per-repeat ratio of the totals and the
median per-slice ratio (the steadiest figure on a loaded machine). Slicing costs ppl_vae
its per-call input checks once per slice rather than once. The two estimates of the mean
log p(x) use independent draws (slice seeds :func:`ppl_vae.seeding.derive_seed` of the
repeat and the slice), so they agree only statistically: the script prints both and the
paired difference over datapoints with its standard error.

Peak memory is measured separately, each estimator in a fresh subprocess at each
``--memory-chunk-sizes`` value: the peak resident set during the estimate (``VmHWM``, reset
just before it through ``/proc/self/clear_refs``, so the larger transient peak of loading the
data set does not hide it) minus the resident set just before it, next to the bound::

    increase <= 4 B * pairs * (5 * D + L) + TRIM_SLACK (64 MiB),
    pairs = particle_chunk * data_chunk <= chunk_size   (ppl_vae.importance.plan_chunks)

with D = 784 pixels and L = 50 latents in float32. Where it comes from, measured: a
vectorized pass peaks in the likelihood, next to the pass's draws ``(pairs, L)`` (the
200-unit hidden layers are freed by then): the reference's
``binary_cross_entropy_with_logits`` holds about four ``(pairs, D)`` tensors at once (the
decoder's logits, a contiguous copy of the data broadcast to the particles, the log-sigmoid
and its work buffer), ppl_vae's ``-softplus((1 - 2x) l)`` about three. One block of 30,000
pairs raises ppl_vae's resident set by 351 MiB (378 MiB with the cross entropy). Over many
blocks the heap fragments a little further, and :data:`ppl_vae.memory.TRIM_SLACK` is the
growth that ppl_vae tolerates before it returns free pages to the OS: 392-485 MiB over 34
to 334 blocks of 30,000 pairs, 89-94 MiB over 1000 blocks of 5000, not growing with N
(2026-12-04). The coefficient 5 D covers that drift: it is a measured bound, not a derived
one. When K exceeds ``chunk_size`` the guide's K draws of a row, ``4 B * K * L``, come on
top. Commands::

    OMP_NUM_THREADS=1 python benchmarks/eval_speed.py --data-dir ../shared/data \
        --repeats 2                                       # the issue: N 1000, K 5000
    OMP_NUM_THREADS=1 python benchmarks/eval_speed.py --data-dir ../shared/data \
        --num-data 60 --num-samples 1000 --repeats 2      # a quick look
    OMP_NUM_THREADS=1 python benchmarks/eval_speed.py --data-dir ../shared/data \
        --num-data 30 --profile                           # cProfile + torch.profiler of ppl_vae

Target of the issue: ppl_vae / reference <= 1.15 at K = 5000 on 1000 points. Timings depend
on the machine and its load; this script is a measurement, never part of the test suite.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import json
import math
import platform
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import pyro
import torch
import torch.nn.functional as F
from pyro.infer.util import is_validation_enabled
from torch import nn

from ppl_vae.build import ModelSpec, build_vae
from ppl_vae.data import load_dataset
from ppl_vae.estimators import log_likelihood
from ppl_vae.importance import DEFAULT_CHUNK_SIZE, plan_chunks
from ppl_vae.memory import TRIM_SLACK, release_free_memory
from ppl_vae.run import load_run
from ppl_vae.seeding import derive_seed

SPEC = ModelSpec(
    data_shape=(784,), likelihood="bernoulli", latent_dim=50, hidden=(200, 200), activation="tanh"
)
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
#: The part of the bound that does not grow with the chunk size: the heap growth ppl_vae
#: tolerates between trims (the other fixed costs are inside the per-pair coefficient).
FIXED_MIB = TRIM_SLACK / 2**20


def plain_mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with tanh between them, none after the last (as ``models.networks.mlp``)."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


class Reference:
    """The plain-PyTorch importance-sampling estimator, weights copied from a ppl_vae pair."""

    def __init__(self, model: nn.Module, guide: nn.Module) -> None:
        encoder, decoder = guide.encoder, model.decoder
        self.latent_dim = encoder.latent_dim
        self.min_scale = encoder.min_scale
        self.input_scale = float(encoder.input_scale)
        hidden = [m.out_features for m in decoder.net if isinstance(m, nn.Linear)][:-1]
        self.encoder = plain_mlp([784, *hidden, 2 * self.latent_dim])
        self.decoder = plain_mlp([self.latent_dim, *hidden, 784])
        self.encoder.load_state_dict(encoder.net.state_dict())
        self.decoder.load_state_dict(decoder.net.state_dict())

    def log_weights(
        self, x: torch.Tensor, num_samples: int, generator: torch.Generator
    ) -> torch.Tensor:
        """``(num_samples, n)`` log weights for the rows of ``x``, in one vectorized pass."""
        loc, raw_scale = self.encoder(x * self.input_scale).chunk(2, dim=-1)
        scale = F.softplus(raw_scale) + self.min_scale
        eps = torch.randn((num_samples, *loc.shape), generator=generator)
        z = loc + scale * eps
        logits = self.decoder(z)
        log_px = -F.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none"
        ).sum(-1)
        log_pz = (-0.5 * z.square() - HALF_LOG_2PI).sum(-1)
        log_qz = (-0.5 * eps.square() - scale.log() - HALF_LOG_2PI).sum(-1)
        return log_px + log_pz - log_qz

    @torch.no_grad()
    def log_likelihood(
        self, x: torch.Tensor, *, num_samples: int, seed: int, chunk_size: int
    ) -> torch.Tensor:
        """Per-datapoint :math:`\\log \\frac1K \\sum_k w_k` (float64), ``chunk_size`` pairs
        per pass at most, as :func:`ppl_vae.importance.plan_chunks` splits the work."""
        generator = torch.Generator().manual_seed(seed)
        particle_chunk, data_chunk = plan_chunks(num_samples, x.shape[0], chunk_size)
        out = []
        for begin in range(0, x.shape[0], data_chunk):
            rows = x[begin : begin + data_chunk]
            log_w = torch.cat(
                [
                    self.log_weights(rows, min(particle_chunk, num_samples - k), generator)
                    for k in range(0, num_samples, particle_chunk)
                ]
            )
            out.append(torch.logsumexp(log_w.double(), dim=0) - math.log(num_samples))
        return torch.cat(out)


def load_pair(run_dir: str | None) -> tuple[nn.Module, nn.Module]:
    if run_dir:
        config, model, guide, _ = load_run(run_dir)
        if dataclasses.replace(config.model, image_shape=None) != SPEC:
            print(f"note: {run_dir} holds {config.model}, not the issue's {SPEC}", file=sys.stderr)
        return model, guide
    pyro.clear_param_store()
    torch.manual_seed(0)
    return build_vae(SPEC)


def test_points(args: argparse.Namespace) -> torch.Tensor:
    x = load_dataset("binarized_mnist", data_dir=args.data_dir).test
    if args.num_data < x.shape[0]:  # evenly spaced: the test rows are sorted by digit
        x = x[torch.linspace(0, x.shape[0] - 1, args.num_data).round().long()]
    return x.reshape(x.shape[0], -1).contiguous()


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """``(wall seconds, CPU seconds of this process, result)`` of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def pairs_per_pass(num_samples: int, num_data: int, chunk_size: int) -> int:
    particle_chunk, data_chunk = plan_chunks(num_samples, num_data, chunk_size)
    return particle_chunk * data_chunk


def bound_mib(pairs: int) -> float:
    """The bound on the peak increase of one estimate (see the module docs), in MiB."""
    return 4 * pairs * (5 * 784 + SPEC.latent_dim) / 2**20 + FIXED_MIB


def rss_mib(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak) of this process, from /proc (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(args: argparse.Namespace) -> None:
    """One estimate in this (fresh) process; prints resident memory before it and the peak
    during it as JSON. The peak is reset first (``/proc/self/clear_refs``), so loading the
    data set, whose transient peak is larger than the estimate's, does not hide it."""
    model, guide = load_pair(args.run_dir)
    x = test_points(args)
    reference = Reference(model, guide)
    options = {"num_samples": args.num_samples, "seed": 0, "chunk_size": args.chunk_size}
    gc.collect()
    release_free_memory()
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to the current resident set
    before = rss_mib("VmRSS")
    if args.memory_child == "ppl_vae":
        wall, _, _ = timed(lambda: log_likelihood(model, guide, x, **options))
    else:
        wall, _, _ = timed(lambda: reference.log_likelihood(x, **options))
    print(json.dumps({"before": before, "peak": rss_mib("VmHWM"), "seconds": wall}))


def measure_memory(args: argparse.Namespace, which: str, chunk_size: int) -> dict:
    command = [
        sys.executable,
        __file__,
        "--memory-child",
        which,
        "--chunk-size",
        str(chunk_size),
        "--num-data",
        str(args.memory_num_data or args.num_data),
        "--num-samples",
        str(args.num_samples),
    ]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    if args.run_dir:
        command += ["--run-dir", args.run_dir]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def profile(model: nn.Module, guide: nn.Module, x: torch.Tensor, args: argparse.Namespace) -> None:
    """cProfile, then torch.profiler, of ppl_vae's ``log_likelihood`` on ``x``."""
    options = {"num_samples": args.num_samples, "seed": 0, "chunk_size": args.chunk_size}
    log_likelihood(model, guide, x[:2], **options)  # warm-up
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    log_likelihood(model, guide, x, **options)
    profiler.disable()
    print(f"ppl_vae under cProfile: {time.perf_counter() - start:.2f} s for {x.shape[0]} points")
    stats = pstats.Stats(profiler).strip_dirs()
    stats.sort_stats("cumulative").print_stats(35)
    stats.sort_stats("tottime").print_stats(20)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        log_likelihood(model, guide, x, **options)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    reference = Reference(model, guide)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        reference.log_likelihood(x, **options)
    print("reference:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--run-dir", default=None, help="a trained run; else random weights")
    parser.add_argument("--num-data", type=int, default=1000, help="evenly spaced test points")
    parser.add_argument("--num-samples", type=int, default=5000, help="K")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the points")
    parser.add_argument(
        "--slice-size", type=int, default=100, help="points per timed call (alternating)"
    )
    parser.add_argument(
        "--memory-chunk-sizes",
        type=int,
        nargs="*",
        default=[DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_SIZE // 4],
        help="chunk sizes of the peak-memory subprocesses (none: skip)",
    )
    parser.add_argument(
        "--memory-num-data", type=int, default=None, help="points in those (default --num-data)"
    )
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--memory-child", choices=["ppl_vae", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args)
        return

    model, guide = load_pair(args.run_dir)
    x = test_points(args)
    if args.profile:
        profile(model, guide, x, args)
        return
    reference = Reference(model, guide)
    options = {"num_samples": args.num_samples, "chunk_size": args.chunk_size}
    small = x[: min(6, x.shape[0])]
    log_likelihood(model, guide, small, seed=0, **options)  # warm-up
    reference.log_likelihood(small, seed=0, **options)

    # Per repeat: total seconds over the slices; per slice: the ratio of the two.
    wall: dict[str, list[float]] = {"ppl_vae": [], "reference": []}
    cpu: dict[str, list[float]] = {"ppl_vae": [], "reference": []}
    slice_ratios: dict[str, list[float]] = {"wall": [], "cpu": []}
    ours, theirs = [], []
    for repeat in range(args.repeats):
        totals = {(name, kind): 0.0 for name in wall for kind in ("wall", "cpu")}
        ours, theirs = [], []
        for begin in range(0, x.shape[0], args.slice_size):
            rows = x[begin : begin + args.slice_size]
            seed = derive_seed(repeat, begin)
            runs = {
                "ppl_vae": lambda: log_likelihood(model, guide, rows, seed=seed, **options),  # noqa: B023
                "reference": lambda: reference.log_likelihood(rows, seed=seed, **options),  # noqa: B023
            }
            order = list(runs) if (begin // args.slice_size) % 2 == 0 else list(runs)[::-1]
            times = {}
            for name in order:
                w, c, result = timed(runs[name])
                times[name] = (w, c)
                totals[name, "wall"] += w
                totals[name, "cpu"] += c
                (ours if name == "ppl_vae" else theirs).append(result)
            slice_ratios["wall"].append(times["ppl_vae"][0] / times["reference"][0])
            slice_ratios["cpu"].append(times["ppl_vae"][1] / times["reference"][1])
        for name in wall:
            wall[name].append(totals[name, "wall"])
            cpu[name].append(totals[name, "cpu"])
        print(
            f"repeat {repeat}: wall {wall['ppl_vae'][-1]:.1f} s vs {wall['reference'][-1]:.1f} s, "
            f"CPU {cpu['ppl_vae'][-1]:.1f} s vs {cpu['reference'][-1]:.1f} s",
            file=sys.stderr,
        )

    def ratio(times: dict[str, list[float]]) -> float:
        return statistics.median(a / b for a, b in zip(*times.values(), strict=True))

    ours_ll = torch.cat([estimate.log_likelihood for estimate in ours])
    ours_se = float(torch.cat([estimate.stderr for estimate in ours]).pow(2).sum().sqrt())
    theirs_ll = torch.cat(theirs)
    n = x.shape[0]
    ours_se /= n
    diff = ours_ll - theirs_ll
    diff_se = float(diff.std() / math.sqrt(n)) if n > 1 else math.nan
    memory_n = args.memory_num_data or n
    memory = {
        c: {w: measure_memory(args, w, c) for w in ("ppl_vae", "reference")}
        for c in args.memory_chunk_sizes
    }

    print(
        f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, pyro {pyro.__version__}, "
        f"torch.get_num_threads() = {torch.get_num_threads()}, "
        f"Pyro validation {'on' if is_validation_enabled() else 'off'} "
        "(the machine may be shared with other jobs)"
    )
    print(
        f"N = {n} evenly spaced binarized-MNIST test points, K = {args.num_samples}, chunk size "
        f"{args.chunk_size}, weights: {args.run_dir or 'random initialisation'}; "
        f"{args.repeats} repeats after one warm-up, each over all points in slices of "
        f"{args.slice_size} timed alternately (ppl_vae, reference, reference, ppl_vae, ...); "
        "seconds: median over repeats of the total; ratio: median over repeats of the ratio "
        "of totals; per-slice ratio: median over all slices"
    )
    print()
    print(
        "| estimator | wall (s) | CPU (s) | ms / datapoint (wall) | ratio to reference, wall "
        "| ratio, CPU | per-slice ratio, wall / CPU | mean log p(x) (last repeat) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, label in (("ppl_vae", "ppl_vae `log_likelihood`"), ("reference", "plain PyTorch")):
        if name == "ppl_vae":
            estimate = f"{float(ours_ll.mean()):.3f} ± {ours_se:.3f}"
            ratios = f"**{ratio(wall):.3f}** | {ratio(cpu):.3f}"
            per_slice = " / ".join(f"{statistics.median(r):.3f}" for r in slice_ratios.values())
        else:
            estimate, ratios, per_slice = f"{float(theirs_ll.mean()):.3f}", "1 | 1", "1"
        print(
            f"| {label} | {statistics.median(wall[name]):.1f} "
            f"| {statistics.median(cpu[name]):.1f} "
            f"| {1000 * statistics.median(wall[name]) / n:.1f} | {ratios} | {per_slice} "
            f"| {estimate} |"
        )
    print()
    print(
        f"Paired difference ppl_vae - reference over the {n} points (independent draws): "
        f"{float(diff.mean()):+.4f} ± {diff_se:.4f} nats, "
        f"{abs(float(diff.mean())) / diff_se:.1f} standard errors. Target: ratio <= 1.15."
    )
    if memory:
        print()
        print(
            f"Peak resident memory of one estimate, each in a fresh process (N = {memory_n}, "
            f"K = {args.num_samples}): increase = peak during the estimate minus resident "
            "before it; bound = 4 B x pairs x (5 x 784 + 50) + 64 MiB (trim slack)"
        )
        print()
        print(
            "| chunk size | pairs per pass | bound (MiB) | ppl_vae increase (MiB) "
            "| reference increase (MiB) | ppl_vae resident before (MiB) |"
        )
        print("|---|---|---|---|---|---|")
        for c, m in memory.items():
            pairs = pairs_per_pass(args.num_samples, memory_n, c)
            print(
                f"| {c} | {pairs} | {bound_mib(pairs):.0f} "
                f"| {m['ppl_vae']['peak'] - m['ppl_vae']['before']:.0f} "
                f"| {m['reference']['peak'] - m['reference']['before']:.0f} "
                f"| {m['ppl_vae']['before']:.0f} |"
            )


if __name__ == "__main__":
    main()
