"""Samplers driven by a Lipschitz score: the adapted Newton-Raphson of OCSDF and Metropolis-adjusted Langevin.

`complementary_samples` draws the complementary distribution Q_t(f) of Béthune et al. (Béthune's thesis,
"Deep learning with Lipschitz constraints", 2024, Algorithm 6; Béthune et al., "Robust one-class
classification with signed distance function using 1-Lipschitz neural networks", ICML 2023) with
either sampler. sampler="newton": T projected Newton steps towards the level set f = -eps, with a
random rate per sample. sampler="langevin": the Langevin view of Remark 5.4, made exact by a
Metropolis adjustment (MALA, Roberts and Tweedie, "Exponential convergence of Langevin distributions
and their discrete approximations", Bernoulli, 1996): the chains target
p(z) ∝ 1{z in B, f(z) <= -eps} exp(-(f(z) + eps)^2 / (2 width^2)), a band of width `width` outside the
level set, never crossing it. `langevin` is the generic MALA on a box, also used by the energy-based
models (energy.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..validation import scores_of

SAMPLERS = ("newton", "langevin")


def default_domain(x: torch.Tensor, domain: tuple | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The box B = [low, high]: `domain` as (low, high) scalars or vectors, or None for mean +- 5
    standard deviations per feature (thesis Example 5.1; constant features get the mean deviation)."""
    center = x.mean(0)
    if domain is None:
        std = x.std(0, correction=0) if len(x) > 1 else torch.ones_like(center)
        floor = std[std > 0].mean() if (std > 0).any() else torch.ones((), dtype=x.dtype)
        half = 5.0 * torch.where(std > 0, std, floor)
        return center - half, center + half
    try:
        low, high = (torch.as_tensor(bound, dtype=x.dtype).expand(x.shape[1]).clone() for bound in domain)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"domain must be (low, high) scalars or vectors of length {x.shape[1]}, got {domain!r}") from error
    if not (torch.isfinite(low).all() and torch.isfinite(high).all() and (low < high).all()):
        raise ValueError(f"domain must have finite low < high in every feature, got {domain!r}")
    return low, high


def _uniform(n: int, low: torch.Tensor, high: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand((n, low.shape[-1]), generator=generator, dtype=low.dtype).to(low.device)


def _value_and_gradient(function: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        values = function(z)
        (gradient,) = torch.autograd.grad(values.sum(), z)
    return values.detach(), gradient


def langevin(
    log_density: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    steps: int,
    step_size: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, float]:
    """Metropolis-adjusted Langevin chains on the box [low, high]; returns (final states, acceptance rate).

    Proposal z' = z + s grad log p(z) + sqrt(2 s) xi; accepted with probability
    min(1, p(z') q(z | z') / (p(z) q(z' | z))). Proposals outside the box, or where `log_density` is
    -inf (a constraint), are rejected, so every state stays feasible. `start` must be feasible.
    """
    z = start.detach()
    log_p, gradient = _value_and_gradient(log_density, z)
    accepted = 0.0
    for _ in range(steps):
        noise = torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)
        mean = z + step_size * gradient
        proposal = mean + (2 * step_size) ** 0.5 * noise
        inside = ((proposal >= low) & (proposal <= high)).all(dim=1)
        proposal = torch.where(inside[:, None], proposal, z)
        log_q, gradient_q = _value_and_gradient(log_density, proposal)
        forward = -(noise**2).sum(1) / 2
        backward = -((z - proposal - step_size * gradient_q) ** 2).sum(1) / (4 * step_size)
        ratio = log_q - log_p + backward - forward
        uniform = torch.rand(len(z), generator=generator, dtype=z.dtype).to(z.device)
        accept = inside & torch.isfinite(log_q) & (torch.log(uniform) < ratio)
        z = torch.where(accept[:, None], proposal, z)
        log_p = torch.where(accept, log_q, log_p)
        gradient = torch.where(accept[:, None], gradient_q, gradient)
        accepted += float(accept.float().mean()) / max(steps, 1)
    return z.detach(), accepted


def complementary_samples(
    model: nn.Module,
    n: int,
    low: torch.Tensor,
    high: torch.Tensor,
    eps: float,
    steps: int = 8,
    generator: torch.Generator | None = None,
    *,
    sampler: str = "newton",
    width: float | None = None,
) -> torch.Tensor:
    """n samples of the complementary distribution Q_t(f) of a score f, positive inside (Algorithm 6).

    sampler="newton": z_0 ~ U(B) with B = [low, high]; each sample draws its own rate eta ~ U[0, 1] (so
    that Q covers the path to the boundary) and takes `steps` projected Newton steps
    z <- Pi_B(z - (eta / T) (f(z) + eps) grad f(z) / ||grad f(z)||) towards the level set f = -eps.
    sampler="langevin": `steps` MALA steps from the uniform points of B that satisfy f <= -eps (the
    others restart from those), targeting the band density of the module docstring with `width`
    (None: 4 eps) and step size (width / 4)^2.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}: choose 'newton' (Algorithm 6) or 'langevin' (Metropolis-adjusted Langevin)")
    z = _uniform(n, low, high, generator)
    if sampler == "langevin":
        band = 4.0 * eps if width is None else float(width)
        if not band > 0:
            raise ValueError(f"width must be > 0, got {width!r}")
        with torch.no_grad():
            outside = scores_of(model, z) <= -eps
        if not outside.any():
            raise ValueError("no point of the domain has f <= -eps: the complementary distribution is empty; widen the domain")
        pool = z[outside]
        z = torch.where(outside[:, None], z, pool[torch.randint(len(pool), (n,), generator=generator).to(z.device)])

        def log_density(points: torch.Tensor) -> torch.Tensor:
            values = scores_of(model, points) + eps
            return torch.where(values <= 0, -(values**2) / (2 * band**2), -torch.inf)

        return langevin(log_density, z, low, high, steps, (band / 4) ** 2, generator)[0]
    eta = torch.rand((n, 1), generator=generator, dtype=low.dtype).to(low.device)
    for _ in range(steps):
        values, gradient = _value_and_gradient(lambda points: scores_of(model, points), z)
        direction = gradient / torch.linalg.vector_norm(gradient, dim=1, keepdim=True).clamp(min=1e-12)
        z = z - (eta / steps) * (values + eps)[:, None] * direction
        z = torch.maximum(torch.minimum(z, high), low)
    return z.detach()
