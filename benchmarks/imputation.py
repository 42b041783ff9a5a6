"""Imputation of missing pixels against mean imputation, on trained runs.

For every run and missing-data pattern, hides pixels of test images
(:func:`ppl_vae.imputation.hide`), imputes them by importance resampling from the VAE
(:func:`ppl_vae.imputation.impute`) and prints one markdown table of errors on the held-out
pixels only: RMSE and MAE for count data (digits, 0..16); for binary data (binarized MNIST)
the mean absolute error of the conditional mean (probabilities), the mean Bernoulli log
probability of the true pixels, and the accuracy of thresholded imputations. Three methods:

* mean imputation: every hole gets the per-pixel training mean;
* the VAE with the run's own guide, trained on complete data (its encoder sees zeros in the
  holes, then ``--refine`` passes that fill them with the conditional mean): exactly what
  ``ppl-vae impute RUN_DIR`` does;
* the VAE with its guide fine-tuned for holes: the model frozen, the encoder trained by
  ``fit(..., train_mask=...)`` on the training images with random holes (a pattern and a
  fraction in [0.25, 0.75] drawn per group of ``batch_size`` images, new holes every epoch,
  zeros in the holes) on the IWAE bound of log p(x_obs) (Mattei & Frellsen 2019, MIWAE;
  here only the encoder sees holes). Same generative model, better proposal.

Pictures and ``imputation.json`` go to ``OUT/<data>-<pattern>-<method>/``. The digits run is
trained here (the defaults of ``ppl-vae train``) unless ``--digits-run`` names one; a
binarized MNIST run is used when ``--mnist-run`` names one (e.g. ``bench/quality/vae`` from
``benchmarks/quality.py``).

    OMP_NUM_THREADS=1 python benchmarks/imputation.py --out bench/imputation \\
        --mnist-run bench/quality/vae --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import platform
import random
import time
from pathlib import Path

import torch

from ppl_vae.imputation import PATTERNS, hide
from ppl_vae.imputation_run import plot_imputations, score_imputation, value_range_of
from ppl_vae.objectives import build_objective
from ppl_vae.optim import TorchOptim
from ppl_vae.run import RunConfig, load_run, run_split, train_run
from ppl_vae.seeding import derive_seed
from ppl_vae.training import fit


def _digits_run(out: Path, epochs: int) -> Path:
    run = out / "digits-run"
    if not (run / "checkpoint.pt").is_file():
        train_run(RunConfig(dataset="digits", epochs=epochs, seed=0), run, progress=False)
    return run


def random_holes(shape, image_shape, *, group: int, seed: int, rng: random.Random) -> torch.Tensor:
    """A mask of ``shape`` in which every group of ``group`` datapoints (in an order drawn
    from ``seed``) has its own pattern and a fraction in [0.25, 0.75] drawn from ``rng``."""
    num = shape[0]
    order = torch.randperm(num, generator=torch.Generator().manual_seed(seed))
    mask = torch.empty(shape, dtype=torch.bool)
    for index, begin in enumerate(range(0, num, group)):
        rows = order[begin : begin + group]
        pattern, fraction = rng.choice(PATTERNS), rng.uniform(0.25, 0.75)
        mask[rows] = hide(
            (rows.numel(), *shape[1:]),
            pattern,
            fraction=fraction,
            image_shape=image_shape,
            seed=derive_seed(seed, index),
        )
    return mask


def finetune_guide_for_holes(
    model,
    guide,
    train: torch.Tensor,
    image_shape,
    *,
    epochs: int,
    batch_size: int,
    lr: float = 1e-3,
    num_particles: int = 5,
    seed: int = 0,
) -> list[float]:
    """Train ``guide`` (in place) on the IWAE bound of log p(x_obs) for ``train`` with random
    holes (:func:`random_holes`, new ones every epoch), ``model`` frozen, by
    :func:`ppl_vae.training.fit` with ``train_mask``; returns minus the mean objective of
    every epoch (the loss per datapoint)."""
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    guide.fill_value = 0.0
    objective = build_objective("iwae", num_particles=num_particles)
    optimizer = TorchOptim.wrap(torch.optim.Adam(guide.parameters(), lr=lr))
    rng = random.Random(seed)
    losses = []
    try:
        for epoch in range(epochs):
            mask = random_holes(
                train.shape, image_shape, group=batch_size, seed=derive_seed(seed, epoch), rng=rng
            )
            result = fit(
                model,
                guide,
                train,
                train_mask=mask,
                elbo=objective,
                epochs=1,
                start_epoch=epoch,
                batch_size=batch_size,
                seed=seed,
                optimizer=optimizer,
                progress=False,
            )
            losses.append(-result.history[-1].train_objective)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return losses


def _row(data: str, pattern: str, method: str, summary: dict, key: str) -> str:
    errors = summary["errors"]
    ours, draw = errors["vae_mean"], errors["vae_sample"]
    missing = f"{100 * summary['missing_fraction']:.0f}%"
    if key == "mean_imputation":
        base = errors["mean_imputation"]
        if "accuracy" in base:
            cells = [f"{base['mae']:.3f}", f"{base['bernoulli_log_lik']:.3f}"]
            cells += [f"{100 * base['accuracy']:.1f}%", "", "", ""]
        else:
            cells = [f"{base['rmse']:.2f}", f"{base['mae']:.2f}", "", "", ""]
        return f"| {data} | {pattern} | {missing} | {method} | " + " | ".join(cells) + " |"
    ess = f"{summary['ess_median']:.0f}"
    logp = f"{summary['log_p_observed']:.1f}"
    if "accuracy" in ours:
        cells = [f"{ours['mae']:.3f}", f"{ours['bernoulli_log_lik']:.3f}"]
        cells += [f"{100 * ours['accuracy']:.1f}%", f"{100 * draw['accuracy']:.1f}%", ess, logp]
    else:
        cells = [f"{ours['rmse']:.2f}", f"{ours['mae']:.2f}", f"{draw['rmse']:.2f}", ess, logp]
    return f"| {data} | {pattern} | {missing} | {method} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench/imputation")
    parser.add_argument("--digits-run", default=None, help="a trained digits run (else train)")
    parser.add_argument("--digits-epochs", type=int, default=150)
    parser.add_argument("--mnist-run", default=None, help="a trained binarized_mnist run")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--patterns", default=",".join(PATTERNS))
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--num-data", type=int, default=1000)
    parser.add_argument("--num-particles", type=int, default=1000)
    parser.add_argument("--num-samples", type=int, default=3)
    parser.add_argument("--refine", type=int, default=2)
    parser.add_argument("--finetune-steps", type=int, default=2500, help="0: skip")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    runs = {"digits": Path(args.digits_run) if args.digits_run else None}
    if runs["digits"] is None:
        runs["digits"] = _digits_run(out, args.digits_epochs)
        print(f"digits run ready after {time.perf_counter() - started:.0f} s: {runs['digits']}")
    if args.mnist_run:
        runs["binarized_mnist"] = Path(args.mnist_run)
    tables: dict[str, list[str]] = {"count": [], "binary": []}
    for label, run in runs.items():
        config, model, guide, _ = load_run(run)
        name, data, labels, _ = run_split(
            config, "test", data_dir=args.data_dir, seed=args.seed, num_data=args.num_data
        )
        train = run_split(config, "train", data_dir=args.data_dir, seed=args.seed).data
        image_shape = config.model.image_shape
        guides = {f"VAE, guide trained on complete data (refine {args.refine})": (guide, 0)}
        if args.finetune_steps:
            _, _, tuned, _ = load_run(run)
            batch = config.batch_size
            epochs = max(1, round(args.finetune_steps * batch / train.shape[0]))
            tic = time.perf_counter()
            losses = finetune_guide_for_holes(
                model, tuned, train, image_shape, epochs=epochs, batch_size=batch, seed=args.seed
            )
            print(
                f"{label}: guide fine-tuned for holes, {epochs} epochs in "
                f"{time.perf_counter() - tic:.0f} s, IWAE loss {losses[0]:.2f} -> {losses[-1]:.2f}",
                flush=True,
            )
            guides["VAE, guide fine-tuned with holes"] = (tuned, 1)
        guide.fill_value = 0.0
        for pattern in args.patterns.split(","):
            mask = hide(
                data.shape, pattern, fraction=args.fraction, image_shape=image_shape, seed=args.seed
            )
            rows = []
            for method, (program_guide, tag) in guides.items():
                tic = time.perf_counter()
                summary, result = score_imputation(
                    model,
                    program_guide,
                    data,
                    mask,
                    train,
                    labels=labels,
                    num_particles=args.num_particles,
                    num_samples=args.num_samples,
                    seed=args.seed,
                    refine=0 if tag else args.refine,
                    chunk_size=config.chunk_size,
                )
                kind = "binary" if "accuracy" in summary["errors"]["vae_mean"] else "count"
                if not rows:
                    rows.append(_row(name, pattern, "mean imputation", summary, "mean_imputation"))
                rows.append(_row(name, pattern, method, summary, "vae"))
                directory = out / f"{label}-{pattern}-{'tuned' if tag else 'complete'}"
                directory.mkdir(parents=True, exist_ok=True)
                plot_imputations(
                    directory / "imputation.png",
                    data,
                    result,
                    image_shape=image_shape,
                    value_range=value_range_of(train),
                    title=f"{name}: {pattern} holes, {method}",
                )
                print(
                    f"{label} {pattern} {method}: {time.perf_counter() - tic:.0f} s, "
                    f"ESS median {summary['ess_median']:.1f}",
                    flush=True,
                )
            tables[kind].extend(rows)
    print()
    if tables["count"]:
        print(
            f"| data | pattern | missing | method | RMSE | MAE | RMSE of one draw | ESS (median "
            f"of K = {args.num_particles}) | log p(x_obs) |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        print("\n".join(tables["count"]) + "\n")
    if tables["binary"]:
        print(
            "| data | pattern | missing | method | MAE | log p per pixel | accuracy | accuracy "
            f"of one draw | ESS (median of K = {args.num_particles}) | log p(x_obs) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        print("\n".join(tables["binary"]) + "\n")
    print(
        f"{args.num_data} test points (evenly spaced), fraction {args.fraction}, seed "
        f"{args.seed}; {platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {time.perf_counter() - started:.0f} s in all."
    )


if __name__ == "__main__":
    main()
