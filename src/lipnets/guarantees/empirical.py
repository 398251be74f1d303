"""Empirical lower bounds on the Lipschitz constant, from adversarial pairs of inputs."""

from __future__ import annotations

import torch
from torch import nn

from ..bounds import tracked_norms
from ..norms import order
from ..validation import check_finite


def _ratio(model: nn.Module, x: torch.Tensor, y: torch.Tensor, p_in: float, p_out: float) -> torch.Tensor:
    distance = torch.linalg.vector_norm((x - y).flatten(1), ord=p_in, dim=1)
    change = torch.linalg.vector_norm((model(x) - model(y)).flatten(1), ord=p_out, dim=1)
    return change / distance.clamp(min=1e-12)


def empirical_lipschitz(
    model: nn.Module,
    x: torch.Tensor,
    *,
    input_norm: str | None = None,
    output_norm: str | None = None,
    steps: int = 100,
    lr: float = 0.01,
    seed: int = 0,
) -> float:
    """A lower bound on the Lipschitz constant: the largest ratio found by gradient ascent over pairs.

    Pairs start at (x, x + small noise) and (x, a shuffled x); both ends are optimised with Adam to
    maximise ||f(a) - f(b)||_q / ||a - b||_p. Every reported ratio is realised by an evaluated pair,
    so the result never exceeds the true constant. Norms default to the model's tracked norms.
    """
    x = check_finite(x).detach()
    if input_norm is None or output_norm is None:
        tracked = tracked_norms(model, tuple(x.shape[1:]))
        input_norm, output_norm = input_norm or tracked[0], output_norm or tracked[1]
    p_in, p_out = order(input_norm), order(output_norm)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    shuffled = x[torch.randperm(len(x), generator=generator).to(x.device)]
    a = torch.cat([x, x]).clone().requires_grad_(True)
    b = torch.cat([x + 1e-3 * noise * (x.abs().mean() + 1e-3), shuffled]).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([a, b], lr=lr)
    best = 0.0
    for _ in range(max(1, steps)):
        ratios = _ratio(model, a, b, p_in, p_out)
        best = max(best, float(ratios.detach().max()))
        optimizer.zero_grad()
        (-ratios.sum()).backward()
        optimizer.step()
    with torch.no_grad():
        best = max(best, float(_ratio(model, a, b, p_in, p_out).max()))
    return best
