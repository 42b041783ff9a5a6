"""Data-parallel training (:mod:`ppl_vae.distributed`): two CPU processes with the gloo
backend train to the parameters of one process that computes the same shards with the same
seeds and sums their losses; ``torchrun -m ppl_vae.cli train`` writes one run directory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyro
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ppl_vae.build import ModelSpec, build_vae
from ppl_vae.distributed import launch_from_env, shard, step_seed
from ppl_vae.errors import ConfigError
from ppl_vae.objectives import build_objective
from ppl_vae.optim import adam
from ppl_vae.params import claim_param_names, store_names
from ppl_vae.run import _load_data, load_run
from ppl_vae.seeding import derive_seed
from ppl_vae.steps import uses_differentiable_loss
from ppl_vae.training import fit

WORLD_SIZE = 2
#: 41 points in minibatches of 8: the last one has a single row, so rank 1's share is empty.
NUM_DATA, BATCH_SIZE, EPOCHS, SEED, LR = 41, 8, 2, 3, 0.05
#: trace_elbo goes through DistributedDataParallel; iwae (Pyro's RenyiELBO has no
#: differentiable_loss) through the explicit gradient all-reduce.
OBJECTIVES = {"trace_elbo": {}, "iwae": {"num_particles": 2}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _data() -> torch.Tensor:
    return torch.randint(0, 2, (NUM_DATA, 5), generator=torch.Generator().manual_seed(0)).to(
        torch.get_default_dtype()
    )


def _pair():
    pyro.clear_param_store()
    torch.manual_seed(0)
    return build_vae(ModelSpec(data_shape=(5,), latent_dim=2, hidden=(4,)))


def _params(model, guide) -> dict[str, torch.Tensor]:
    return {
        **{f"model.{k}": v.detach().clone() for k, v in model.named_parameters()},
        **{f"guide.{k}": v.detach().clone() for k, v in guide.named_parameters()},
    }


def _worker(rank: int, port: int, out: str) -> None:
    """One rank: fit each objective data-parallel; rank 0 saves parameters and history."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        results = {}
        for name, options in OBJECTIVES.items():
            model, guide = _pair()
            result = fit(
                model,
                guide,
                _data(),
                elbo=build_objective(name, **options),
                epochs=EPOCHS,
                batch_size=BATCH_SIZE,
                lr=LR,
                seed=SEED,
                progress=False,
            )
            results[name] = (_params(model, guide), result.train_objective)
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


def _single_process(name: str) -> tuple[dict[str, torch.Tensor], list[float]]:
    """The reference: per step, the loss of each rank's shard with that rank's seed,
    their gradients summed, one Adam step (fit's optimizer: fused Adam over all)."""
    elbo = build_objective(name, **OBJECTIVES[name])
    model, guide = _pair()
    claim_param_names(model, guide)
    optimizer = adam(LR)  # fit's default
    optimizer.add({**store_names(model), **store_names(guide)})
    x = _data()
    objectives = []
    for epoch in range(1, EPOCHS + 1):
        order = torch.randperm(
            NUM_DATA, generator=torch.Generator().manual_seed(derive_seed(SEED, epoch, 1))
        )
        total = 0.0
        for step, begin in enumerate(range(0, NUM_DATA, BATCH_SIZE), start=1):
            rows = order[begin : begin + BATCH_SIZE]
            for rank in range(WORLD_SIZE):
                mine = shard(rows, rank, WORLD_SIZE)
                if mine.numel() == 0:
                    continue
                pyro.set_rng_seed(step_seed(SEED, epoch, step, rank))
                if uses_differentiable_loss(elbo):
                    loss = elbo.differentiable_loss(model, guide, x[mine])
                    loss.backward()  # accumulates: the gradient of the summed losses
                    total += loss.item()
                else:
                    total += elbo.loss_and_grads(model, guide, x[mine])
            optimizer.step()
            optimizer.zero_grad()
        objectives.append(-total / NUM_DATA)
    return _params(model, guide), objectives


def test_two_processes_equal_one_process_summing_the_shards(tmp_path: Path, float64) -> None:
    out = tmp_path / "ranks.pt"
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD_SIZE, join=True)
    results = torch.load(out, weights_only=True)
    for name in OBJECTIVES:
        got, got_objectives = results[name]
        want, want_objectives = _single_process(name)
        assert got.keys() == want.keys()
        for param in want:
            assert not torch.equal(want[param], _params(*_pair())[param]), "it trained"
            torch.testing.assert_close(got[param], want[param], rtol=1e-9, atol=1e-12)
        assert got_objectives == pytest.approx(want_objectives, rel=1e-12)


def test_launch_is_read_from_torchruns_environment() -> None:
    assert launch_from_env({}) is None
    assert launch_from_env({"WORLD_SIZE": "1", "RANK": "0"}) is None
    launch = launch_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (launch.world_size, launch.rank, launch.local_rank) == (4, 3, 1)
    with pytest.raises(ConfigError, match="RANK=4"):
        launch_from_env({"WORLD_SIZE": "4", "RANK": "4"})


def test_distributed_fit_needs_a_process_group() -> None:
    model, guide = _pair()
    with pytest.raises(ConfigError, match="torchrun"):
        fit(model, guide, _data(), epochs=1, progress=False, distributed=True)


def test_torchrun_cli_writes_one_run_directory(tmp_path: Path) -> None:
    """``torchrun --nproc-per-node 2 -m ppl_vae.cli train``: rank 0 alone writes the run
    and prints; its parameters are those of one process summing the two shards' losses
    (float32, so to rounding)."""
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={WORLD_SIZE}", "-m", "ppl_vae.cli", "train",
        "--epochs", "2", "--hidden", "8", "--latent-dim", "2", "--num-samples", "2",
        "--batch-size", "500", "--lr", "0.01", "--no-progress", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.pt",
        "config.json",
        "metrics.json",
        "plots",
    ]
    assert done.stdout.count("run directory:") == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics["training"]["history"]] == [1, 2]
    assert "test" in metrics

    config, model, guide, _ = load_run(out)
    got = _params(model, guide)
    x = _load_data(config).train.to(torch.float32)
    pyro.clear_param_store()
    torch.manual_seed(config.seed)
    model, guide = build_vae(config.model)
    elbo = build_objective(config.objective)
    optimizer = adam(config.lr)
    optimizer.add({**store_names(model), **store_names(guide)})
    for epoch in range(1, config.epochs + 1):
        generator = torch.Generator().manual_seed(derive_seed(config.seed, epoch, 1))
        order = torch.randperm(x.shape[0], generator=generator)
        for step, begin in enumerate(range(0, x.shape[0], config.batch_size), start=1):
            rows = order[begin : begin + config.batch_size]
            for rank in range(WORLD_SIZE):
                pyro.set_rng_seed(step_seed(config.seed, epoch, step, rank))
                elbo.differentiable_loss(model, guide, x[shard(rows, rank, WORLD_SIZE)]).backward()
            optimizer.step()
            optimizer.zero_grad()
    want = _params(model, guide)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, msg=name)
