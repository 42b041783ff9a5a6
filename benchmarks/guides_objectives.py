"""Guides and objectives on statically binarized MNIST at one training budget.

Trains each preset with ``ppl_vae.run.train_run`` (the code path of ``ppl-vae train``:
checkpoint every epoch, ``config.json``, ``metrics.json``), then re-estimates the test
ELBO and log p(x) with K importance samples on evenly spaced test points
(``evaluate_run(..., num_data=...)``; the test rows are sorted by digit, so the spacing keeps
every digit). Prints a markdown table with the published anchors of DESIGN.md section 6.

    python benchmarks/guides_objectives.py --data-dir ../shared/data --out bench/guides
    python benchmarks/guides_objectives.py ... --only normal-elbo iaf-elbo   # a subset

A preset whose run directory already holds a finished run (checkpoint at the last epoch and
metrics) is evaluated without retraining, so presets can be run in separate processes and
the table printed at the end with ``--table-only``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ppl_vae.run import CHECKPOINT, METRICS, RunConfig, evaluate_run, train_run

#: The network of Burda et al. (2016): 784-200-200-50, Bernoulli likelihood.
BASE = RunConfig(
    dataset="binarized_mnist",
    latent_dim=50,
    hidden=(200, 200),
    activation="tanh",
    batch_size=100,
    lr=1e-3,
    num_samples=1,  # the training run's own test pass; the table's estimate comes after
)

PRESETS: dict[str, dict[str, Any]] = {
    "normal-elbo": {},
    "iaf-elbo": {"guide": "iaf"},
    "sylvester-elbo": {"guide": "sylvester"},
    "normal-iwae": {"objective": "iwae", "objective_options": {"num_particles": 5}},
    "iaf-iwae": {"guide": "iaf", "objective": "iwae", "objective_options": {"num_particles": 5}},
    "hvae-iaf-iwae": {
        "architecture": "hierarchical",
        "guide": "iaf",
        "objective": "iwae",
        "objective_options": {"num_particles": 5},
    },
}

#: Test NLL (nats) reported in the literature for this network (DESIGN.md section 6).
ANCHORS = {"normal-elbo": "88.71 (VAE, Burda et al. 2016)", "normal-iwae": "87.10 (IWAE k=50)"}


def finished(run_dir: Path, epochs: int) -> bool:
    if not (run_dir / METRICS).is_file() or not (run_dir / CHECKPOINT).is_file():
        return False
    metrics = json.loads((run_dir / METRICS).read_text())
    history = metrics["training"]["history"]  # written after every epoch, "test" at the end
    return "test" in metrics and bool(history) and history[-1]["epoch"] == epochs


def run_preset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    run_dir = Path(args.out) / name
    config = replace(BASE, data_dir=args.data_dir, epochs=args.epochs, **PRESETS[name])
    if not finished(run_dir, args.epochs):
        start = time.perf_counter()
        train_run(config, run_dir, progress=args.progress)
        print(f"{name}: trained in {time.perf_counter() - start:.0f} s", flush=True)
    metrics = json.loads((run_dir / METRICS).read_text())
    wanted = {"num_samples": args.num_samples, "num_data": args.num_data, "split": "test"}
    for summary in metrics.get("evaluations", []):
        if all(summary.get(key) == value for key, value in wanted.items()):
            return {"training": metrics["training"], "test": summary}
    start = time.perf_counter()
    summary = evaluate_run(run_dir, num_samples=args.num_samples, num_data=args.num_data, seed=0)
    print(f"{name}: evaluated in {time.perf_counter() - start:.0f} s", flush=True)
    return {"training": metrics["training"], "test": summary}


def table(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"| preset | test ELBO | test log p(x) (K = {args.num_samples}) | gap | train time | "
        "published NLL |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        test = result["test"]
        lines.append(
            f"| {name} | {test['elbo']:.2f} | {test['log_likelihood']:.2f} ± "
            f"{test['log_likelihood_stderr']:.2f} | {test['gap']:.2f} | "
            f"{result['training']['seconds'] / 60:.0f} min | {ANCHORS.get(name, '')} |"
        )
    lines.append(
        f"\n{args.epochs} epochs, batch 100, Adam 1e-3, 784-200-200-50 tanh; test estimates on "
        f"{args.num_data} evenly spaced test points; {platform.processor() or platform.machine()}"
        f", torch {torch.__version__}, {torch.get_num_threads()} threads."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="bench/guides_objectives")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--num-data", type=int, default=2000)
    parser.add_argument("--only", nargs="*", choices=sorted(PRESETS), default=None)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    names = args.only or list(PRESETS)
    results = {name: run_preset(name, args) for name in names}
    print(table(results, args))


if __name__ == "__main__":
    main()
