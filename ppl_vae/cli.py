"""The ``ppl-vae`` command line: ``train``, ``evaluate`` and ``diagnose``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from guides import ENCODERS, GUIDES
from models import ACTIVATIONS, DECODERS, LIKELIHOODS, PRIORS
from ppl_vae import distributed
from ppl_vae.build import ARCHITECTURES
from ppl_vae.config_file import parse_option, read_config_file
from ppl_vae.data import DATASETS, default_data_dir
from ppl_vae.device import DEFAULT_DEVICE
from ppl_vae.diagnostics.report import DiagnoseSettings, diagnose_run
from ppl_vae.errors import ConfigError, PplVaeError
from ppl_vae.imputation import PATTERNS
from ppl_vae.imputation_run import FILLS, imputation_report, impute_run
from ppl_vae.objectives import OBJECTIVES
from ppl_vae.plots.run_plots import RunFigures, run_figures
from ppl_vae.run import RunConfig, evaluate_run, resume_run, train_run
from ppl_vae.semi_supervised_run import semi_supervised_report

__all__ = ["build_parser", "main", "settings_from_args"]

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


def _non_negative_float(text: str) -> float:
    """An argparse type for finite numbers >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


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


def _add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default=None,
        metavar="DEVICE",
        help="where model, guide and data go: cpu, cuda, cuda:N or auto (cuda when "
        f"available, else cpu) (default: {DEFAULT_DEVICE}); a runtime choice, not stored in "
        "the run, so a run trained on one device resumes, evaluates and diagnoses on any",
    )


def _column(text: str) -> str | int:
    try:
        return int(text)  # an index; negative ones count from the end
    except ValueError:
        return text


def _default(name: str) -> str:
    value = _DEFAULTS[name]
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


#: Flags of ``train`` that set a RunConfig field of the same name (dashes for underscores).
#: Their argparse default is None so that only flags actually given override a config file.
_TRAIN_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (
        ("--dataset",),
        {"choices": sorted(DATASETS), "help": f"named dataset (default: {_default('dataset')})"},
    ),
    (
        ("--data",),
        {
            "metavar": "PATH",
            "help": "your own data instead of --dataset: a .npy/.npz array, a "
            ".csv table or a folder of images (one subfolder per class)",
        },
    ),
    (("--channels",), {"choices": ["grey", "rgb"], "help": "for image folders (default: grey)"}),
    (
        ("--label-column",),
        {"type": _column, "help": "for .csv tables: the label column's name or 0-based index"},
    ),
    (
        ("--binarize",),
        {
            "choices": ["static", "dynamic"],
            "help": "binarize grey levels: once (static) or "
            "afresh for every minibatch (dynamic; valid/test stay static)",
        },
    ),
    (
        ("--likelihood",),
        {
            "choices": sorted(LIKELIHOODS),
            "help": "p(x|z) (default: the dataset's own, e.g. binomial for digits)",
        },
    ),
    (("--prior",), {"choices": sorted(PRIORS), "help": f"p(z) (default: {_default('prior')})"}),
    (
        ("--architecture",),
        {
            "choices": sorted(ARCHITECTURES),
            "help": "vae (z -> x), hierarchical (z2 -> z1 -> x), conditional (p(x|z,y), "
            "needs labels) or m2 (semi-supervised, Kingma et al. 2014: a few labels, with "
            f"--num-labelled) (default: {_default('architecture')})",
        },
    ),
    (
        ("--num-labelled",),
        {
            "type": _positive_int,
            "metavar": "N",
            "help": "m2: training datapoints that keep their labels, balanced across classes "
            "and chosen by --seed; the rest of the training split is unlabelled",
        },
    ),
    (
        ("--alpha",),
        {
            "type": _non_negative_float,
            "help": "m2: weight of sum log q(y|x) over the labelled data (default: "
            "0.1 N / N_labelled, Kingma et al.)",
        },
    ),
    (
        ("--latent-dim",),
        {
            "type": _positive_int,
            "help": "dimension of z, or of z1 when hierarchical "
            f"(default: {_default('latent_dim')})",
        },
    ),
    (
        ("--top-latent-dim",),
        {"type": _positive_int, "help": "dimension of z2 when hierarchical (default: latent-dim)"},
    ),
    (
        ("--hidden",),
        {
            "type": _hidden,
            "help": f"hidden layer sizes of encoder and decoder (default: {_default('hidden')})",
        },
    ),
    (
        ("--activation",),
        {
            "choices": sorted(ACTIVATIONS),
            "help": f"activation of encoder and decoder (default: {_default('activation')})",
        },
    ),
    (
        ("--encoder",),
        {"choices": sorted(ENCODERS), "help": f"encoder network (default: {_default('encoder')})"},
    ),
    (
        ("--decoder",),
        {"choices": sorted(DECODERS), "help": f"decoder network (default: {_default('decoder')})"},
    ),
    (
        ("--guide",),
        {
            "choices": sorted(GUIDES),
            "help": f"posterior family of q(z|x) (default: {_default('guide')})",
        },
    ),
    (
        ("--objective",),
        {
            "choices": sorted(OBJECTIVES),
            "help": f"training objective (default: {_default('objective')})",
        },
    ),
    (
        ("--beta",),
        {
            "type": float,
            "help": "scale of the latent sites (beta-VAE; reported ELBOs stay beta = 1) "
            f"(default: {_default('beta')})",
        },
    ),
    (
        ("--warmup-epochs",),
        {
            "type": _non_negative_int,
            "help": "KL warm-up: beta rises linearly from --warmup-start to --beta over these "
            f"epochs (default: {_default('warmup_epochs')})",
        },
    ),
    (
        ("--warmup-start",),
        {
            "type": float,
            "help": f"beta at epoch 1 of a warm-up (default: {_default('warmup_start')})",
        },
    ),
    (
        ("--epochs",),
        {
            "type": _non_negative_int,
            "help": f"passes over the training split (default: {_default('epochs')})",
        },
    ),
    (
        ("--batch-size",),
        {"type": _positive_int, "help": f"minibatch size (default: {_default('batch_size')})"},
    ),
    (("--lr",), {"type": float, "help": f"Adam learning rate (default: {_default('lr')})"}),
    (
        ("--seed",),
        {
            "type": int,
            "help": "seeds initialisation, shuffling, sampling, test estimate "
            f"(default: {_default('seed')})",
        },
    ),
    (
        ("--num-samples",),
        {
            "type": _positive_int,
            "help": "importance samples K per test datapoint for log p(x) "
            f"(default: {_default('num_samples')})",
        },
    ),
    (
        ("--chunk-size",),
        {
            "type": _positive_int,
            "help": "(particle, datapoint) pairs per vectorized pass; "
            f"bounds memory (default: {_default('chunk_size')})",
        },
    ),
    (
        ("--missing-pattern",),
        {
            "choices": PATTERNS,
            "help": "train, validate and test on partially observed data: hide elements of "
            "every split in this pattern (masks fixed by --seed); the test log p(x) is then "
            "log p(x_obs) (default: complete data)",
        },
    ),
    (
        ("--missing-fraction",),
        {
            "type": float,
            "help": "fraction of each datapoint hidden by --missing-pattern, in (0, 1) "
            "(default: 0.5)",
        },
    ),
]


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
        description="Train a VAE by SVI (Trace_ELBO unless --objective), checkpoint every "
        "epoch into the run directory, then print the test ELBO, the importance-sampled "
        "test log p(x) and the gap, in nats per datapoint. With no arguments: the digits "
        "data, Binomial(16) likelihood, under a minute on 2 cores. Settings come from the "
        "defaults, then --config FILE, then the flags given.",
    )
    train.add_argument(
        "--config", default=None, metavar="FILE", help="TOML file of run settings (see README)"
    )
    for flags, options in _TRAIN_OPTIONS:
        train.add_argument(*flags, default=None, **options)
    _add_data_options(train)
    train.add_argument(
        "--likelihood-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the likelihood, e.g. num_components=5 (repeatable)",
    )
    train.add_argument(
        "--prior-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the prior, e.g. num_components=10 (repeatable)",
    )
    train.add_argument(
        "--guide-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the guide family, e.g. num_flows=4 (repeatable)",
    )
    train.add_argument(
        "--objective-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the objective, e.g. alpha=0.5 (repeatable)",
    )
    train.add_argument(
        "--num-particles",
        type=_positive_int,
        default=None,
        help="particles K of the objective, e.g. --objective iwae --num-particles 50",
    )
    train.add_argument(
        "--total-count",
        type=_positive_int,
        default=None,
        help="Binomial total count (default: the dataset's maximum value)",
    )
    train.add_argument(
        "--out", default=None, help="run directory (default: runs/DATASET-YYYYmmdd-HHMMSS)"
    )
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.add_argument(
        "--no-plots",
        action="store_true",
        help="do not write the pictures into RUN_DIR/plots after training (see `plot`)",
    )
    _add_device_option(train)
    train.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue RUN_DIR from its last checkpointed epoch up to its epochs (or a new "
        "total given by --epochs); only --epochs, --no-progress, --no-plots, --data-dir, "
        "--download and --device go with it",
    )

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
    evaluate.add_argument(
        "--num-data",
        type=_positive_int,
        default=None,
        help="evaluate this many datapoints, evenly spaced through the split (default: all)",
    )
    _add_data_options(evaluate)
    _add_device_option(evaluate)

    diagnose = commands.add_parser(
        "diagnose",
        help="posterior diagnostics of a run: k-hat, gap decomposition, NUTS vs guide, PPC",
        description="Diagnose a run: Pareto k-hat of the importance weights per datapoint, "
        "the gap log p(x) - ELBO split into approximation and amortization gaps, the true "
        "posterior by NUTS against the guide (ArviZ InferenceData), posterior predictive "
        "checks and latent health. Writes report.json, netCDF files and PNG pictures into "
        "RUN_DIR/diagnostics (or --out).",
    )
    diagnose.add_argument("run_dir", metavar="RUN_DIR", help="directory written by train")
    diagnose.add_argument("--out", default=None, help="output directory")
    for item in fields(DiagnoseSettings):
        flag = "--" + item.name.replace("_", "-")
        if item.name == "split":
            diagnose.add_argument(flag, default=item.default, choices=["train", "valid", "test"])
        elif item.name == "gap_family":
            diagnose.add_argument(flag, default=None, choices=sorted(GUIDES))
        else:
            diagnose.add_argument(flag, type=int, default=item.default)
    _add_data_options(diagnose)
    _add_device_option(diagnose)

    plot = commands.add_parser(
        "plot",
        help="pictures of a run: samples, reconstructions, curves, latent space, paths",
        description="Write every picture that applies to a run into RUN_DIR/plots (or --out): "
        "training curves, samples from p(x) (decoder means and draws), reconstructions, the "
        "latent space coloured by label, the decoded manifold of a 2-D latent, linear and "
        "spherical interpolation, and latent arithmetic between two labels. `train` writes "
        "them too unless --no-plots.",
    )
    plot.add_argument("run_dir", metavar="RUN_DIR", help="directory written by train")
    plot.add_argument("--out", default=None, help="output directory (default: RUN_DIR/plots)")
    plot.add_argument(
        "--num",
        type=_int_at_least(2),
        default=64,
        help="cells of the sample grids; reconstructions show half as many inputs "
        "(default: %(default)s)",
    )
    plot.add_argument(
        "--num-data",
        type=_int_at_least(2),
        default=1000,
        help="datapoints of the latent-space scatter, evenly spaced (default: %(default)s)",
    )
    plot.add_argument(
        "--split",
        default="test",
        choices=["train", "valid", "test"],
        help="the split pictured (default: %(default)s)",
    )
    plot.add_argument("--seed", type=int, default=0, help="seed of every draw (default: 0)")
    plot.add_argument(
        "--data-dir", default=None, help="where the dataset files are now (default: the run's)"
    )

    impute = commands.add_parser(
        "impute",
        help="hide elements of a run's data and impute them from the posterior predictive",
        description="Hide elements of a split in a pattern, impute them by importance "
        "resampling from p(x_missing | x_observed) and write imputation.json (errors on the "
        "hidden elements against mean imputation) and imputation.png (input with holes, "
        "imputations, conditional mean, truth) into RUN_DIR/imputation (or --out).",
    )
    impute.add_argument("run_dir", metavar="RUN_DIR", help="directory written by train")
    impute.add_argument(
        "--pattern", default="random", choices=PATTERNS, help="which elements to hide"
    )
    impute.add_argument(
        "--fraction",
        type=float,
        default=0.5,
        help="fraction hidden by the random pattern (default: %(default)s)",
    )
    impute.add_argument("--num-data", type=_positive_int, default=100, help="datapoints")
    impute.add_argument(
        "--num-particles", type=_positive_int, default=1000, help="importance samples K"
    )
    impute.add_argument(
        "--num-samples", type=_positive_int, default=3, help="imputations per datapoint"
    )
    impute.add_argument(
        "--fill", default="zero", choices=FILLS, help="what the guide sees in the holes"
    )
    impute.add_argument(
        "--refine",
        type=_non_negative_int,
        default=2,
        help="passes that show the guide the holes filled by the imputation so far",
    )
    impute.add_argument("--seed", type=int, default=0, help="seed of every draw")
    impute.add_argument("--split", default="test", choices=["train", "valid", "test"])
    impute.add_argument("--out", default=None, help="output directory")
    _add_data_options(impute)
    _add_device_option(impute)
    return parser


def _report(summary: dict[str, Any], metrics: dict[str, Any] | None = None) -> str:
    if "accuracy" in summary:  # an M2 run: q(y | x) scored, y drawn from it in log p(x)
        return semi_supervised_report(summary, metrics)
    estimand = summary.get("estimand", "log p(x)")  # log p(x_obs) for data with holes
    rows = [
        ("test ELBO", f"{summary['elbo']:.3f}"),
        (
            f"test {estimand} (IS, K={summary['num_samples']})",
            f"{summary['log_likelihood']:.3f} ± {summary['log_likelihood_stderr']:.3f}",
        ),
        (f"gap {estimand} - ELBO", f"{summary['gap']:.3f}"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    lines.append(f"(nats per datapoint, mean over {summary['num_data']} datapoints)")
    return "\n".join(lines)


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """RunConfig settings: the config file's, overridden by the flags actually given."""
    settings = read_config_file(args.config) if args.config else {}
    if "model" in settings:
        raise ConfigError(
            "'model' is written by ppl-vae into a run's config.json; set likelihood, prior, "
            "latent_dim, hidden, ... instead"
        )
    if "device" in settings:
        raise ConfigError(
            "'device' is not a run setting (a run is not tied to a device); remove it from "
            f"{args.config} and pass --device to train, evaluate or diagnose"
        )
    for flags, _ in _TRAIN_OPTIONS:
        name = flags[0].lstrip("-").replace("-", "_")
        value = getattr(args, name)
        if value is not None:
            settings[name] = value
    if args.data_dir is not None:
        settings["data_dir"] = args.data_dir
    if args.download:
        settings["download"] = True
    for key, texts in (
        ("likelihood_options", args.likelihood_option),
        ("prior_options", args.prior_option),
        ("guide_options", args.guide_option),
        ("objective_options", args.objective_option),
    ):
        options = settings.get(key, {})
        if not isinstance(options, dict):
            raise ConfigError(f"{key} must be a table of option = value, got {options!r}")
        options = dict(options)
        options.update(parse_option(text) for text in texts)
        settings[key] = options
    if args.total_count is not None:
        settings["likelihood_options"]["total_count"] = args.total_count
    if args.num_particles is not None:
        settings["objective_options"]["num_particles"] = args.num_particles
    return settings


#: Flags of ``train`` that may go with ``--resume``: the rest would change the run.
_RESUME_FLAGS = {
    "epochs",
    "no_progress",
    "no_plots",
    "data_dir",
    "download",
    "device",
    "resume",
    "command",
}


def _resume(args: argparse.Namespace) -> None:
    given = sorted(
        "--" + name.replace("_", "-")
        for name, value in vars(args).items()
        if name not in _RESUME_FLAGS and value not in (None, False, [])
    )
    if given:
        raise ConfigError(
            f"--resume continues a run with the settings in its config.json; {', '.join(given)} "
            "would change the run and cannot go with it (only --epochs, --no-progress, "
            "--no-plots, --data-dir, --download and --device can); start a new run with --out "
            "instead"
        )
    metrics = resume_run(
        args.resume,
        epochs=args.epochs,
        progress=not args.no_progress,
        data_dir=args.data_dir,
        download=args.download,
        device=args.device,
    )
    if distributed.is_main_process():
        print(_report(metrics["test"], metrics))
        _plots_after_training(args, args.resume)
        print(f"run directory: {args.resume}")


def _train(args: argparse.Namespace) -> None:
    # Under torchrun: join the process group; rank 0 alone writes, evaluates and prints.
    joined = distributed.init_from_env(args.device)
    try:
        _train_or_resume(args)
    finally:
        if joined is not None:
            distributed.shutdown()


def _train_or_resume(args: argparse.Namespace) -> None:
    if args.resume is not None:
        _resume(args)
        return
    config = RunConfig.from_settings(settings_from_args(args))
    name = Path(config.data).stem if config.data else config.dataset
    out = args.out or f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    metrics = train_run(config, out, progress=not args.no_progress, device=args.device)
    if distributed.is_main_process():
        print(_report(metrics["test"], metrics))
        _plots_after_training(args, out)
        print(f"run directory: {out}")


def _plots_after_training(args: argparse.Namespace, run_dir: str) -> None:
    if not args.no_plots:
        print(_figures(run_figures(run_dir, data_dir=args.data_dir)))


def _figures(figures: RunFigures) -> str:
    if figures.paths:
        folder = figures.paths[0].parent
        names = ", ".join(path.name for path in figures.paths)
        lines = [f"pictures in {folder}: {names}"]
    else:
        lines = ["no pictures apply to this run"]
    lines += [f"  skipped {name}: {reason}" for name, reason in figures.skipped.items()]
    return "\n".join(lines)


def _impute(args: argparse.Namespace) -> None:
    summary = impute_run(
        args.run_dir,
        pattern=args.pattern,
        fraction=args.fraction,
        num_data=args.num_data,
        num_particles=args.num_particles,
        num_samples=args.num_samples,
        seed=args.seed,
        out_dir=args.out,
        fill=args.fill,
        refine=args.refine,
        split=args.split,
        data_dir=args.data_dir,
        download=args.download,
        device=args.device,
    )
    print(imputation_report(summary))


def _plot(args: argparse.Namespace) -> None:
    figures = run_figures(
        args.run_dir,
        args.out,
        num=args.num,
        num_data=args.num_data,
        split=args.split,
        seed=args.seed,
        data_dir=args.data_dir,
    )
    print(_figures(figures))


def _evaluate(args: argparse.Namespace) -> None:
    summary = evaluate_run(
        args.run_dir,
        num_samples=args.num_samples,
        seed=args.seed,
        dataset=args.dataset,
        data_dir=args.data_dir,
        download=args.download,
        split=args.split,
        num_data=args.num_data,
        device=args.device,
    )
    print(_report(summary).replace("test ", f"{args.split} "))


def _diagnose(args: argparse.Namespace) -> None:
    settings = DiagnoseSettings(**{f.name: getattr(args, f.name) for f in fields(DiagnoseSettings)})
    report = diagnose_run(
        args.run_dir,
        out_dir=args.out,
        settings=settings,
        data_dir=args.data_dir,
        download=args.download,
        device=args.device,
    )
    print(_diagnosis(report))


def _diagnosis(report: dict[str, Any]) -> str:
    psis = report["psis"]
    bands = ", ".join(f"{band} {count}" for band, count in psis["bands"].items())
    lines = [
        f"{report['dataset']} {report['split']}: {psis['num_data']} datapoints, "
        f"K = {psis['num_samples']}",
        f"Pareto k-hat bands: {bands}",
        f"log p(x) {psis['log_likelihood']:.3f} (PSIS {psis['psis_log_likelihood']:.3f}), "
        f"ELBO {psis['elbo']:.3f}",
    ]
    if "gaps" in report:
        gaps = report["gaps"]
        lines.append(
            f"gap decomposition ({gaps['num_data']} datapoints): approximation "
            f"{gaps['approximation_gap']:.3f}, amortization {gaps['amortization_gap']:.3f} nats"
        )
    if "mcmc" in report:
        mcmc = report["mcmc"]
        lines.append(
            f"NUTS vs guide ({mcmc['num_data']} datapoints): max R-hat "
            f"{mcmc['max_r_hat']:.3f}, max MMD^2 {mcmc['mmd2_max']:.3f}, max |mean difference| "
            f"{mcmc['max_abs_mean_diff']:.2f} MCMC sd"
        )
    lines.append(f"active units: {report['latents']['active_units']['num_active']}")
    lines.append(f"report: {Path(report['files']['khat']).parent / 'report.json'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        commands = {
            "train": _train,
            "evaluate": _evaluate,
            "diagnose": _diagnose,
            "plot": _plot,
            "impute": _impute,
        }
        commands[args.command](args)
    except PplVaeError as error:
        print(f"ppl-vae: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ppl-vae: interrupted; the last finished epoch is checkpointed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
