"""Train named run presets to a fixed epoch budget and tabulate their test estimates.

Shared by the fit-quality benchmarks (``quality.py``, ``guides_objectives.py``). A preset is
a :class:`~ppl_vae.run.RunConfig`; each trains in its own run directory through
``ppl_vae.run.train_run`` (the code path of ``ppl-vae train``: a checkpoint after every
epoch, ``config.json``, ``metrics.json``). A run that was interrupted, or that has trained
fewer epochs than asked, is continued with ``resume_run`` (optimizer state included, equal to
an uninterrupted run), so hours-long presets survive being stopped and can be extended. The
test ELBO and log p(x) are then re-estimated with K importance samples on evenly spaced test
points (``evaluate_run(..., num_data=...)``); an evaluation already in ``metrics.json`` with
the same settings is reused.
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

from ppl_vae.run import CHECKPOINT, METRICS, RunConfig, evaluate_run, resume_run, train_run


def trained_epochs(run_dir: Path) -> tuple[int, bool]:
    """(epochs in the run's last checkpoint, whether its test evaluation ran); (0, False)
    when the directory holds no run yet."""
    if not (run_dir / METRICS).is_file() or not (run_dir / CHECKPOINT).is_file():
        return 0, False
    metrics = json.loads((run_dir / METRICS).read_text())
    history = metrics["training"]["history"]  # written after every epoch, "test" at the end
    return (history[-1]["epoch"] if history else 0), "test" in metrics


def train_preset(config: RunConfig, run_dir: Path, *, progress: bool = False) -> None:
    """Bring ``run_dir`` to ``config.epochs`` trained epochs: train from scratch, resume an
    interrupted run or extend a finished one; nothing when it is already there."""
    done, tested = trained_epochs(run_dir)
    if done == config.epochs and tested:
        return
    start = time.perf_counter()
    if done == 0:
        train_run(config, run_dir, progress=progress)
    else:
        resume_run(run_dir, epochs=config.epochs, progress=progress, data_dir=config.data_dir)
    print(
        f"{run_dir.name}: epochs {done + 1}..{config.epochs} in "
        f"{time.perf_counter() - start:.0f} s",
        flush=True,
    )


def evaluate_preset(run_dir: Path, *, num_samples: int, num_data: int) -> dict[str, Any]:
    """The run's training record and its test estimate with ``num_samples`` draws on
    ``num_data`` evenly spaced test points (reused when ``metrics.json`` already holds one
    of the same settings made after the same epoch)."""
    metrics = json.loads((run_dir / METRICS).read_text())
    epoch, _ = trained_epochs(run_dir)
    wanted = {"num_samples": num_samples, "num_data": num_data, "split": "test", "epoch": epoch}
    for summary in metrics.get("evaluations", []):
        if all(summary.get(key) == value for key, value in wanted.items()):
            return {"training": metrics["training"], "test": summary}
    start = time.perf_counter()
    summary = evaluate_run(run_dir, num_samples=num_samples, num_data=num_data, seed=0)
    print(f"{run_dir.name}: evaluated in {time.perf_counter() - start:.0f} s", flush=True)
    return {"training": metrics["training"], "test": summary}


def run_presets(
    presets: dict[str, RunConfig], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Train (or continue) and evaluate every preset in ``presets`` under ``args.out``."""
    results = {}
    for name, config in presets.items():
        run_dir = Path(args.out) / name
        train_preset(replace(config, data_dir=args.data_dir), run_dir, progress=args.progress)
        results[name] = evaluate_preset(
            run_dir, num_samples=args.num_samples, num_data=args.num_data
        )
    return results


def markdown_table(
    results: dict[str, dict[str, Any]], anchors: dict[str, str], *, num_samples: int
) -> str:
    """One row per preset: epochs, test ELBO, log p(x) ± standard error, gap, training
    time and the published anchor."""
    lines = [
        f"| preset | epochs | test ELBO | test log p(x) (K = {num_samples}) | gap | "
        "train time | published NLL |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        test, training = result["test"], result["training"]
        epochs = training["history"][-1]["epoch"] if training["history"] else 0
        lines.append(
            f"| {name} | {epochs} | {test['elbo']:.2f} | {test['log_likelihood']:.2f} ± "
            f"{test['log_likelihood_stderr']:.2f} | {test['gap']:.2f} | "
            f"{training['seconds'] / 60:.0f} min | {anchors.get(name, '')} |"
        )
    return "\n".join(lines)


def machine() -> str:
    """The processor, torch version and thread count, for the table's footnote."""
    return (
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )


def add_common_arguments(parser: argparse.ArgumentParser, *, out: str, epochs: int) -> None:
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=out)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--num-data", type=int, default=2000)
    parser.add_argument("--progress", action="store_true")
