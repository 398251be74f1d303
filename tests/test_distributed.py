"""fit under torchrun: 2 CPU processes with gloo against a single process with the same global batch.

This file is also the worker: the test launches

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/test_distributed.py OUT

(`torchrun --standalone --nproc_per_node=2 ...` is the same command), and each rank, started with a
different initial model, trains every configuration below and saves its final state dict under OUT.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sklearn.datasets import make_moons
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

import lipnets
from lipnets.losses import HingeLoss
from lipnets.norms import layer_operator_norm

pytestmark = pytest.mark.slow  # starts two processes that train

GLOBAL_BATCH = 32
EPOCHS = 3
CONFIGS = ("direct-reparam", "spectral-project", "power-iteration-buffers")
TOLERANCE = 1e-5
"""Largest absolute weight difference allowed between the 2-process and the 1-process run: the
gradients agree up to float32 summation order (mean of two half-batch means vs one mean)."""


def data(seed: int):
    x, y = make_moons(256, noise=0.1, random_state=seed)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def build(config: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if config == "direct-reparam":
        return lipnets.LipschitzMLP(2, 1, (16, 16), input_norm="1", mode="reparam")
    if config == "spectral-project":
        return lipnets.LipschitzMLP(2, 1, (16, 16), input_norm="2", hidden_norm="2", mode="project", lipschitz=2.0)
    # torch's spectral_norm keeps power-iteration vectors as buffers, updated in every training forward
    return nn.Sequential(spectral_norm(nn.Linear(2, 16)), nn.ReLU(), spectral_norm(nn.Linear(16, 1)))


def train(net: nn.Module, checkpoint: Path | None = None) -> lipnets.training.History:
    return lipnets.fit(
        net,
        HingeLoss(0.1),
        data(0),
        data(1),
        epochs=EPOCHS,
        lr=1e-2,
        batch_size=GLOBAL_BATCH,
        metrics=["accuracy"],
        checkpoint=checkpoint,
        seed=3,
        progress=True,
    )


def worker(out: Path) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    for config in CONFIGS:
        net = build(config, seed=100 + rank)  # different on each rank: DDP must start from rank 0's
        history = train(net, checkpoint=out / f"{config}-checkpoint-rank{rank}.pt")
        torch.save({"state": net.state_dict(), "history": dict(history)}, out / f"{config}-rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def distributed_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__, str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def load(out: Path, config: str, rank: int) -> dict:
    return torch.load(out / f"{config}-rank{rank}.pt", weights_only=True)


@pytest.mark.parametrize("config", CONFIGS)
def test_both_ranks_end_with_identical_weights_and_buffers(distributed_run, config):
    first, second = load(distributed_run, config, 0), load(distributed_run, config, 1)
    assert first["state"].keys() == second["state"].keys()
    for key in first["state"]:
        assert torch.equal(first["state"][key], second["state"][key]), key
    assert first["history"] == second["history"]
    if config == "power-iteration-buffers":
        assert any(key.endswith("_u") for key in first["state"])


@pytest.mark.parametrize("config", ["direct-reparam", "spectral-project"])
def test_the_guarantee_holds_after_distributed_training(distributed_run, config):
    net = build(config, seed=0)
    net.load_state_dict(load(distributed_run, config, 0)["state"])
    for mode in ("train", "eval"):
        getattr(net, mode)()
        for layer in (m for m in net if isinstance(m, lipnets.LipschitzLinear)):
            assert layer_operator_norm(layer.weight.detach().double(), layer.norm) <= layer.lipschitz * (1 + 1e-6)
        assert lipnets.lipschitz_bound(net) <= net.lipschitz * (1 + 1e-6)


@pytest.mark.parametrize("config", CONFIGS)
def test_two_processes_match_one_process_with_the_same_global_batch(distributed_run, config):
    single = build(config, seed=100)  # rank 0's initial model
    history = train(single)
    distributed = load(distributed_run, config, 0)
    for key, value in single.state_dict().items():
        assert torch.allclose(distributed["state"][key], value, rtol=0, atol=TOLERANCE), key
    for name, values in history.items():
        assert distributed["history"][name] == pytest.approx(values, abs=1e-4), name


def test_only_rank_zero_writes_checkpoints(distributed_run):
    for config in CONFIGS:
        assert (distributed_run / f"{config}-checkpoint-rank0.pt").is_file()
        assert not (distributed_run / f"{config}-checkpoint-rank1.pt").exists()


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
