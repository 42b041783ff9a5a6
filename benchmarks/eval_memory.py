"""Peak memory and time of importance-sampled log p(x) on binarized MNIST.

Checks the foundation's bound: K = 5000 importance samples over the 10,000 test points
must run in well under 4 GiB. Memory is bounded by ``--chunk-size`` (particle, datapoint)
pairs per vectorized pass, not by K or N; the weights are reduced per block of rows, so only
O(N) results are kept.

    python benchmarks/eval_memory.py --data-dir ../shared/data            # all 10,000 points
    python benchmarks/eval_memory.py --data-dir ../shared/data --num-data 200

With ``--run-dir`` it evaluates a trained ``ppl-vae train --dataset binarized_mnist`` run;
otherwise an untrained 784-200-200-50 Bernoulli VAE (memory and time do not depend on the
weights). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import torch

from ppl_vae.build import ModelSpec, build_vae
from ppl_vae.data import load_dataset
from ppl_vae.estimators import log_likelihood
from ppl_vae.importance import DEFAULT_CHUNK_SIZE
from ppl_vae.run import load_run


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--num-data", type=int, default=10_000)
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--run-dir", default=None)
    args = parser.parse_args()

    torch.manual_seed(0)
    data = load_dataset("binarized_mnist", data_dir=args.data_dir).test[: args.num_data]
    if args.run_dir:
        _, model, guide, _ = load_run(args.run_dir)
    else:
        spec = ModelSpec(
            data_shape=(784,), likelihood="bernoulli", latent_dim=50, hidden=(200, 200)
        )
        model, guide = build_vae(spec)
    before = peak_rss_mib()
    start = time.perf_counter()
    estimate = log_likelihood(
        model, guide, data, num_samples=args.num_samples, seed=0, chunk_size=args.chunk_size
    )
    seconds = time.perf_counter() - start
    summary = estimate.summary()
    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )
    print(
        "| N | K | chunk size | seconds | ms / datapoint | peak RSS before (MiB) "
        "| peak RSS after (MiB) | mean log p(x) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {len(data)} | {args.num_samples} | {args.chunk_size} | {seconds:.1f} "
        f"| {1000 * seconds / len(data):.1f} | {before:.0f} | {peak_rss_mib():.0f} "
        f"| {summary['log_likelihood']:.2f} ± {summary['log_likelihood_stderr']:.2f} |"
    )


if __name__ == "__main__":
    main()
