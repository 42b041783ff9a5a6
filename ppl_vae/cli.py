"""The ``ppl-vae`` command line: ``train`` and ``evaluate``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from guides import GUIDES
from models import ACTIVATIONS, LIKELIHOODS, PRIORS
from ppl_vae.data import DATASETS, default_data_dir
from ppl_vae.errors import PplVaeError
from ppl_vae.run import RunConfig, evaluate_run, train_run

__all__ = ["build_parser", "main"]

_DEFAULTS = {f.name: f.default for f in fields(RunConfig) if not callable(f.default)}


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 256,256; got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"hidden sizes must be positive integers; got {text!r}")
    return sizes


def _int_at_least(minimum: int):
    """An argparse type for integers >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        default=None,
        help="where dataset files are looked for and downloaded "
        f"(default: $PPL_VAE_DATA, else {default_data_dir()})",
    )
    parser.add_argument(
        "--download", action="store_true", help="download missing dataset files (needs network)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppl-vae",
        description="Train variational autoencoders written as Pyro programs and measure the "
        "gap between the ELBO and the importance-sampled log p(x).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a VAE and report test ELBO, log p(x) and the gap",
        description="Train a VAE by SVI (Trace_ELBO), checkpoint every epoch into the run "
        "directory, then print the test ELBO, the importance-sampled test log p(x) and the "
        "gap, in nats per datapoint. With no arguments: the digits data, Binomial(16) "
        "likelihood, about a minute on 2 cores.",
    )
    train.add_argument(
        "--dataset",
        default=_DEFAULTS["dataset"],
        choices=sorted(DATASETS),
        help="named dataset (default: %(default)s)",
    )
    _add_data_options(train)
    train.add_argument(
        "--likelihood",
        default=None,
        choices=sorted(LIKELIHOODS),
        help="p(x|z) (default: the dataset's own, e.g. binomial for digits)",
    )
    train.add_argument(
        "--total-count",
        type=_positive_int,
        default=None,
        help="Binomial total count (default: the dataset's maximum value)",
    )
    train.add_argument(
        "--prior",
        default=_DEFAULTS["prior"],
        choices=sorted(PRIORS),
        help="p(z) (default: %(default)s)",
    )
    train.add_argument(
        "--latent-dim",
        type=_positive_int,
        default=_DEFAULTS["latent_dim"],
        help="dimension of z (default: %(default)s)",
    )
    train.add_argument(
        "--hidden",
        type=_hidden,
        default=_DEFAULTS["hidden"],
        help="hidden layer sizes of encoder and decoder (default: 256,256)",
    )
    train.add_argument(
        "--activation",
        default=_DEFAULTS["activation"],
        choices=sorted(ACTIVATIONS),
        help="activation of encoder and decoder (default: %(default)s)",
    )
    train.add_argument(
        "--guide",
        default=_DEFAULTS["guide"],
        choices=sorted(GUIDES),
        help="q(z|x) (default: %(default)s)",
    )
    train.add_argument(
        "--epochs",
        type=_non_negative_int,
        default=_DEFAULTS["epochs"],
        help="passes over the training split (default: %(default)s)",
    )
    train.add_argument(
        "--batch-size",
        type=_positive_int,
        default=_DEFAULTS["batch_size"],
        help="minibatch size (default: %(default)s)",
    )
    train.add_argument(
        "--lr",
        type=float,
        default=_DEFAULTS["lr"],
        help="Adam learning rate (default: %(default)s)",
    )
    train.add_argument(
        "--seed",
        type=int,
        default=_DEFAULTS["seed"],
        help="seeds initialisation, shuffling, sampling, test estimate (default: %(default)s)",
    )
    train.add_argument(
        "--num-samples",
        type=_positive_int,
        default=_DEFAULTS["num_samples"],
        help="importance samples K per test datapoint for log p(x) (default: %(default)s)",
    )
    train.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=_DEFAULTS["chunk_size"],
        help="(particle, datapoint) pairs per vectorized pass; bounds memory "
        "(default: %(default)s)",
    )
    train.add_argument(
        "--out", default=None, help="run directory (default: runs/DATASET-YYYYmmdd-HHMMSS)"
    )
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    evaluate = commands.add_parser(
        "evaluate",
        help="reload a run and re-estimate test log p(x)",
        description="Reload a run directory and re-estimate the ELBO, log p(x) and the gap on "
        "a split of its dataset (or of another dataset with the same data shape).",
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="directory written by train")
    evaluate.add_argument(
        "--num-samples",
        type=_positive_int,
        default=None,
        help="importance samples K per datapoint (default: the run's)",
    )
    evaluate.add_argument(
        "--seed", type=int, default=None, help="seed of the estimate (default: the run's)"
    )
    evaluate.add_argument(
        "--dataset",
        default=None,
        choices=sorted(DATASETS),
        help="evaluate on another dataset of the same data shape (default: the run's)",
    )
    evaluate.add_argument(
        "--split",
        default="test",
        choices=["train", "valid", "test"],
        help="which split to evaluate (default: %(default)s)",
    )
    _add_data_options(evaluate)
    return parser


def _report(summary: dict[str, Any]) -> str:
    rows = [
        ("test ELBO", f"{summary['elbo']:.3f}"),
        (
            f"test log p(x) (IS, K={summary['num_samples']})",
            f"{summary['log_likelihood']:.3f} ± {summary['log_likelihood_stderr']:.3f}",
        ),
        ("gap log p(x) - ELBO", f"{summary['gap']:.3f}"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    lines.append(f"(nats per datapoint, mean over {summary['num_data']} datapoints)")
    return "\n".join(lines)


def _train(args: argparse.Namespace) -> None:
    options = {} if args.total_count is None else {"total_count": args.total_count}
    config = RunConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        download=args.download,
        likelihood=args.likelihood,
        likelihood_options=options,
        prior=args.prior,
        latent_dim=args.latent_dim,
        hidden=args.hidden,
        activation=args.activation,
        guide=args.guide,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        num_samples=args.num_samples,
        chunk_size=args.chunk_size,
    )
    out = args.out or f"runs/{args.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    metrics = train_run(config, out, progress=not args.no_progress)
    print(_report(metrics["test"]))
    print(f"run directory: {out}")


def _evaluate(args: argparse.Namespace) -> None:
    summary = evaluate_run(
        args.run_dir,
        num_samples=args.num_samples,
        seed=args.seed,
        dataset=args.dataset,
        data_dir=args.data_dir,
        download=args.download,
        split=args.split,
    )
    print(_report(summary).replace("test ", f"{args.split} "))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        {"train": _train, "evaluate": _evaluate}[args.command](args)
    except PplVaeError as error:
        print(f"ppl-vae: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ppl-vae: interrupted; the last finished epoch is checkpointed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
