"""Projected gradient attacks in l1, l2 and l_inf, used to test that certificates hold.

The attack maximises a margin loss (the best other logit minus the true one; -s f for a binary score
with s = +1 for class 1 and -1 for class 0), so it succeeds exactly when the decision flips. Each step
is the steepest ascent direction of the norm, followed by the exact projection onto the ball.
Labels follow lipnets.certify: binary {0, 1} or {-1, +1}, multiclass class indices.
"""

from __future__ import annotations

import torch
from torch import nn

from ..norms import as_vector_norm
from ..validation import ArrayLike
from .certify import check_labels, logits_of


def project_l1_ball(v: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of `v` onto the l1 ball of its `radius` (Duchi et al., 2008, Fig. 1).

    Sort |v| in decreasing order, find rho = max{j : u_j > (sum_{i<=j} u_i - z) / j}, shrink every
    entry by theta = (sum_{i<=rho} u_i - z) / rho and keep its sign. Rows already inside are unchanged.
    """
    radius = torch.as_tensor(radius, dtype=v.dtype, device=v.device).expand(len(v))
    magnitude = v.abs()
    u = magnitude.sort(dim=1, descending=True).values
    cumulative = u.cumsum(dim=1) - radius[:, None]
    index = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=v.dtype)
    rho = ((u - cumulative / index) > 0).sum(dim=1).clamp(min=1)
    theta = (cumulative.gather(1, (rho - 1)[:, None]) / rho[:, None].to(v.dtype)).clamp(min=0)
    projected = v.sign() * (magnitude - theta).clamp(min=0)
    inside = magnitude.sum(dim=1) <= radius
    return torch.where(inside[:, None], v, torch.where(radius[:, None] > 0, projected, torch.zeros_like(v)))


def _project(delta: torch.Tensor, eps: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "inf":
        return torch.maximum(torch.minimum(delta, eps[:, None]), -eps[:, None])
    if norm == "1":
        return project_l1_ball(delta, eps)
    size = torch.linalg.vector_norm(delta, dim=1)
    return delta * (eps / size.clamp(min=torch.finfo(delta.dtype).tiny)).clamp(max=1.0)[:, None]


def _steepest_ascent(gradient: torch.Tensor, norm: str) -> torch.Tensor:
    """argmax over ||d|| <= 1 of <gradient, d>: sign(g) for l_inf, g/||g||_2 for l2, a signed basis vector for l1."""
    if norm == "inf":
        return gradient.sign()
    if norm == "2":
        return gradient / torch.linalg.vector_norm(gradient, dim=1, keepdim=True).clamp(min=torch.finfo(gradient.dtype).tiny)
    largest = gradient.abs().argmax(dim=1, keepdim=True)
    return torch.zeros_like(gradient).scatter_(1, largest, gradient.gather(1, largest).sign())


def _random_start(shape: torch.Size, eps: torch.Tensor, norm: str, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """A random point of each ball: uniform in the box for l_inf, a random direction and radius for l1 and l2."""
    if norm == "inf":
        noise = torch.rand(shape, generator=generator, dtype=like.dtype) * 2 - 1
        return noise.to(like.device) * eps[:, None]
    direction = torch.randn(shape, generator=generator, dtype=like.dtype)
    if norm == "1":
        direction = direction.sign() * torch.empty(shape, dtype=like.dtype).exponential_(generator=generator)
    direction = direction / torch.linalg.vector_norm(direction, ord=float(norm), dim=1, keepdim=True)
    scale = torch.rand(shape[0], 1, generator=generator, dtype=like.dtype)
    return (direction * scale).to(like.device) * eps[:, None]


def margin_loss(logits: torch.Tensor, labels: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Per input: max_{j != y} f_j - f_y (multiclass) or -s f with s = +1 for class 1 (binary); > 0 means misclassified.

    With `target` (multiclass only), f_target - f_y instead: the margin towards one chosen class.
    """
    if logits.shape[1] == 1:
        return -(2 * labels - 1).to(logits.dtype) * logits[:, 0]
    true = logits.gather(1, labels[:, None])[:, 0]
    if target is not None:
        return logits.gather(1, target[:, None])[:, 0] - true
    others = logits.scatter(1, labels[:, None], -torch.inf)
    return others.max(dim=1).values - true


def _runner_up(logits: torch.Tensor, labels: torch.Tensor, rank: int) -> torch.Tensor | None:
    """The class with the rank-th largest logit other than the label (rank 0: the best other class); None if binary."""
    if logits.shape[1] == 1:
        return None
    others = logits.scatter(1, labels[:, None], -torch.inf)
    return others.argsort(dim=1, descending=True)[:, rank % (logits.shape[1] - 1)]


def _per_point(value: ArrayLike, batch: int, like: torch.Tensor, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if tensor.dim() == 0:
        tensor = tensor.expand(batch)
    if tensor.shape != (batch,) or not torch.isfinite(tensor).all() or (tensor < 0).any():
        raise ValueError(f"{name} must be a finite number >= 0 or one per input ({batch}), got shape {tuple(tensor.shape)}")
    return tensor


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: ArrayLike,
    eps: float | torch.Tensor,
    norm: str | int | float,
    *,
    steps: int = 50,
    restarts: int = 1,
    step_size: float | torch.Tensor | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Untargeted projected gradient ascent on the margin loss inside the `norm` ball of radius `eps` around x.

    eps and step_size are one number or one per input; step_size defaults to 2.5 eps / steps (Madry
    et al., ICLR 2018). The first restart starts at x and ascends the untargeted margin; restart i >= 1 starts at a
    random point of the ball and, for a multiclass model, ascends the margin towards the i-th best other
    class of the clean input (the max over classes can lock onto a class that is not the easiest to
    reach). Success is always judged by the untargeted margin loss. Returns, per input,
    the point with the largest margin loss seen over all steps and restarts; it lies in the ball up to
    float rounding. The model's parameters and gradients are left untouched.
    """
    norm = as_vector_norm(norm)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"restarts must be a positive integer, got {restarts!r}")
    x = x.detach()
    with torch.no_grad():
        clean = logits_of(model, x)
        labels = check_labels(y, clean)
    flat = x.flatten(1)
    radius = _per_point(eps, len(x), flat, "eps")
    stride = 2.5 * radius / steps if step_size is None else _per_point(step_size, len(x), flat, "step_size")
    generator = torch.Generator().manual_seed(seed)
    best_delta, best_loss = torch.zeros_like(flat), torch.full((len(x),), -torch.inf, dtype=flat.dtype, device=x.device)

    def keep_best(delta: torch.Tensor, loss: torch.Tensor) -> None:
        better = loss > best_loss
        best_delta[better], best_loss[better] = delta[better], loss[better]

    for restart in range(restarts):
        delta = torch.zeros_like(flat) if restart == 0 else _random_start(flat.shape, radius, norm, generator, flat)
        target = None if restart == 0 else _runner_up(clean, labels, restart - 1)
        for _ in range(steps):
            delta.requires_grad_(True)
            with torch.enable_grad():
                logits = logits_of(model, (flat + delta).view_as(x))
                (gradient,) = torch.autograd.grad(margin_loss(logits, labels, target).sum(), delta)
            delta = delta.detach()
            keep_best(delta, margin_loss(logits.detach(), labels))
            delta = _project(delta + stride[:, None] * _steepest_ascent(gradient, norm), radius, norm)
        with torch.no_grad():
            keep_best(delta, margin_loss(logits_of(model, (flat + delta).view_as(x)), labels))
    return (flat + best_delta).view_as(x)
