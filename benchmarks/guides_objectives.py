"""Guides and objectives on statically binarized MNIST at one training budget.

Trains each preset with ``ppl_vae.run.train_run`` (the code path of ``ppl-vae train``:
checkpoint every epoch, ``config.json``, ``metrics.json``), then re-estimates the test
ELBO and log p(x) with K importance samples on evenly spaced test points
(``evaluate_run(..., num_data=...)``; the test rows are sorted by digit, so the spacing keeps
every digit). Prints a markdown table with the published anchors of DESIGN.md section 6.

    python benchmarks/guides_objectives.py --data-dir ../shared/data --out bench/guides
    python benchmarks/guides_objectives.py ... --only normal-elbo iaf-elbo   # a subset

Runs are checkpointed every epoch and continued when interrupted or extended to a larger
``--epochs`` (``presets.py``); a finished run is evaluated without retraining, so presets can
run in separate processes and the table be printed at the end.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from presets import add_common_arguments, machine, markdown_table, run_presets

from ppl_vae.run import RunConfig

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, out="bench/guides_objectives", epochs=40)
    parser.add_argument("--only", nargs="*", choices=sorted(PRESETS), default=None)
    args = parser.parse_args()
    chosen = {
        name: replace(BASE, epochs=args.epochs, **PRESETS[name]) for name in args.only or PRESETS
    }
    results = run_presets(chosen, args)
    print(markdown_table(results, ANCHORS, num_samples=args.num_samples))
    print(
        f"\nBatch 100, Adam 1e-3, 784-200-200-50 tanh; test estimates on {args.num_data} "
        f"evenly spaced test points; {machine()}."
    )


if __name__ == "__main__":
    main()
