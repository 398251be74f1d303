"""Train a 1-Lipschitz classifier on two moons with DistributedDataParallel.

    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node=2 examples/train_ddp.py [OUT_DIR]

Each process is one rank: gloo on CPU, NCCL when every rank has a GPU. lipnets.fit notices the
initialised process group, shards the batches (batch_size is the global batch), keeps buffers in
sync, and lets only rank 0 print progress and write the checkpoint.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from sklearn.datasets import make_moons

import lipnets
from lipnets.losses import HingeLoss


def moons(samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = make_moons(samples, noise=0.05, random_state=seed)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def main(out: Path) -> None:
    use_cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{os.environ['LOCAL_RANK']}") if use_cuda else torch.device("cpu")
    torch.manual_seed(0)  # every rank builds the same initial model
    model = lipnets.LipschitzMLP(2, 1, (64, 64), input_norm="2").to(device)
    history = lipnets.fit(
        model,
        HingeLoss(0.1),
        moons(2000, 0),
        moons(500, 1),
        epochs=30,
        lr=1e-2,
        batch_size=256,
        metrics=["accuracy"],
        checkpoint=out / "two_moons.pt",
        seed=0,
        progress=False,
    )
    if dist.get_rank() == 0:
        bound = lipnets.lipschitz_bound(model)
        print(
            f"| ranks | val accuracy | lipschitz bound |\n|---|---|---|\n| {dist.get_world_size()} | {history['val_accuracy'][-1]:.3f} | {bound:.6f} |"
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("lipnets-output")
    target.mkdir(parents=True, exist_ok=True)
    main(target)
