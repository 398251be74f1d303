"""Small training loops shared by the core tests."""

import torch
from torch import nn

import lipnets


def train_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float = 0.05) -> None:
    """Adam on the MSE, projecting after each step as `mode="project"` layers require."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        lipnets.project_(model)
