"""Semi-supervised classification with M2 (Kingma et al. 2014) against the same classifier
trained on the labelled data alone, for several numbers of labels; prints a markdown table.

Fashion-MNIST with 100 / 600 / 3000 labels (the numbers of Kingma et al.'s MNIST table and
Pyro's SS-VAE tutorial), and the 8x8 digits with proportionally fewer (1258 training digits
against 50,000 images: 20 / 50 / 100 labels; the README's table, 10 label draws)::

    OMP_NUM_THREADS=1 python benchmarks/semi_supervised.py --dataset digits \\
        --labels 20,50,100 --seeds 0,1,2,3,4,5,6,7,8,9 --epochs 100 --baseline-epochs 200 \\
        --alpha 500 --latent-dim 8 --hidden 128 --activation relu --lr 5e-3 --batch-size 128
    OMP_NUM_THREADS=1 python benchmarks/semi_supervised.py --dataset fashion_mnist \\
        --data-dir /usr/share/datasets/fashion-mnist --labels 100,600,3000 --epochs 10

Labelled datapoints are chosen balanced across classes from the training split
(:func:`ppl_vae.semi_supervised.balanced_labelled_split`, seeded), the rest of the training
split is the unlabelled data, the validation split picks the reported epoch ("test accuracy
at the best validation accuracy", as Pyro's example reports), and the test split is scored.
The baseline is the M2 classifier's network, trained by cross-entropy on the labelled data
alone with the same optimizer and picked by the same rule. ``--seeds 0,1,2`` repeats every
label count with one label draw per seed (the seed also initializes and drives training);
the table gives the mean ± standard error over the seeds, and the difference M2 − baseline
paired by seed (same labels for both).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from guides.classifier import Classifier
from ppl_vae import ModelSpec, load_dataset
from ppl_vae.semi_supervised import (
    balanced_labelled_split,
    build_m2,
    default_alpha,
    fit_classifier,
    fit_semi_supervised,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--binarize", default=None, choices=["static"])
    parser.add_argument("--likelihood", default=None, help="default: the dataset's own")
    parser.add_argument("--labels", default="20,60,180", help="comma-separated label counts")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--baseline-epochs", type=int, default=None, help="default: --epochs")
    parser.add_argument("--latent-dim", type=int, default=8)
    parser.add_argument("--hidden", default="256", help="comma-separated hidden sizes")
    parser.add_argument("--activation", default="softplus")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--alpha",
        default="paper",
        help="weight of sum log q(y|x) over labelled data: a number, or 'paper' for "
        "0.1 N / N_labelled (Kingma et al.)",
    )
    parser.add_argument(
        "--seeds",
        default="0",
        help="comma-separated seeds: one label draw (and one training run) per seed",
    )
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--no-baseline", action="store_true")
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(message, flush=True)


def run_one(args: argparse.Namespace, data, num_labelled: int, seed: int) -> dict:
    labelled, unlabelled = balanced_labelled_split(data.train_labels, num_labelled, seed=seed)
    x_l, y_l = data.train[labelled], data.train_labels[labelled]
    x_u = data.train[unlabelled]
    valid, test = (data.valid, data.valid_labels), (data.test, data.test_labels)
    num_classes = int(data.train_labels.max()) + 1
    hidden = tuple(int(h) for h in args.hidden.split(","))
    spec = ModelSpec.for_dataset(
        data,
        likelihood=args.likelihood,
        num_classes=num_classes,
        latent_dim=args.latent_dim,
        hidden=hidden,
        activation=args.activation,
    )
    alpha = (
        default_alpha(num_labelled, x_u.shape[0]) if args.alpha == "paper" else float(args.alpha)
    )
    torch.manual_seed(seed)
    model, guide = build_m2(spec)

    def report(record, _optimizer) -> None:
        log(
            f"  [{num_labelled} labels, seed {seed}] epoch {record.epoch}: unlabelled ELBO "
            f"{record.unlabelled_elbo:.2f}, labelled ELBO {record.labelled_elbo:.2f}, "
            f"-log q(y|x) {record.classification_loss:.3f}, valid {record.valid_accuracy:.4f}, "
            f"test {record.test_accuracy:.4f} ({record.seconds:.1f} s)"
        )

    fit = fit_semi_supervised(
        model,
        guide,
        x_u,
        x_l,
        y_l,
        valid=valid,
        test=test,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        alpha=alpha,
        seed=seed,
        progress=False,
        on_epoch_end=report,
    )
    row = {
        "labels": num_labelled,
        "seed": seed,
        "unlabelled": x_u.shape[0],
        "alpha": alpha,
        "epochs": args.epochs,
        "seconds": fit.seconds,
        "seconds_per_epoch": fit.seconds / max(args.epochs, 1),
        "m2_best_epoch": fit.best.epoch,
        "m2_valid_accuracy": fit.best.valid_accuracy,
        "m2_test_accuracy": fit.best.test_accuracy,
        "m2_last_test_accuracy": fit.history[-1].test_accuracy,
        "history": fit.as_dict()["history"],
    }
    if not args.no_baseline:
        torch.manual_seed(seed)
        classifier = Classifier.build(
            data.data_shape,
            num_classes,
            hidden=hidden,
            activation=args.activation,
            input_scale=spec.input_scale,
        )
        baseline = fit_classifier(
            classifier,
            x_l,
            y_l,
            valid=valid,
            test=test,
            epochs=args.baseline_epochs or args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=seed,
        )
        row.update(
            baseline_best_epoch=baseline.best.epoch,
            baseline_test_accuracy=baseline.best.test_accuracy,
            baseline_last_test_accuracy=baseline.history[-1].test_accuracy,
            baseline_seconds=baseline.seconds,
        )
    return row


def _mean_se(values: list[float]) -> str:
    """``mean ± standard error`` over seeds (the mean alone for one seed)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return f"{mean:.3f}"
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return f"{mean:.3f} ± {math.sqrt(var / len(values)):.3f}"


def table(rows: list[dict], dataset: str) -> str:
    """One line per label count: mean ± standard error over the seeds' rows."""
    lines = [
        f"| {dataset}: labels | seeds | M2, epoch by valid | M2, last epoch | "
        "classifier on the labels alone (epoch by valid) | M2 − classifier (paired) | "
        "alpha | epochs | time (M2, per seed) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for labels in dict.fromkeys(r["labels"] for r in rows):
        group = [r for r in rows if r["labels"] == labels]
        m2 = [r["m2_test_accuracy"] for r in group]
        first, last = min(r["m2_best_epoch"] for r in group), max(r["m2_best_epoch"] for r in group)
        epochs = f"{first}" if first == last else f"{first}–{last}"
        if "baseline_test_accuracy" in group[0]:
            base = [r["baseline_test_accuracy"] for r in group]
            baseline = _mean_se(base)
            difference = _mean_se([a - b for a, b in zip(m2, base, strict=True)])
        else:
            baseline = difference = "–"
        minutes = sum(r["seconds"] for r in group) / len(group) / 60
        lines.append(
            f"| {labels} | {len(group)} | {_mean_se(m2)} (epoch {epochs}) | "
            f"{_mean_se([r['m2_last_test_accuracy'] for r in group])} | {baseline} | "
            f"{difference} | {group[0]['alpha']:.3g} | {group[0]['epochs']} | "
            f"{minutes:.2f} min |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data = load_dataset(
        args.dataset,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        binarize=args.binarize,
    )
    log(f"{data!r}; {' '.join(sys.argv)}")
    rows = []
    started = time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]
    for num_labelled in (int(n) for n in args.labels.split(",")):
        for seed in seeds:
            rows.append(run_one(args, data, num_labelled, seed))
            if args.out:
                Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    log("")
    log(table(rows, args.dataset))
    total = time.perf_counter() - started
    log(f"\ntotal {total / 60:.1f} min; torch threads {torch.get_num_threads()}")
    if not all(math.isfinite(r["m2_test_accuracy"]) for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
