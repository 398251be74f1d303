"""Clipless DP-SGD (Algorithm 9 of Béthune's thesis, 2024; Béthune et al., ICLR 2024): the private step.

A step samples a batch by Poisson sampling (each record independently with probability q), sums the
per-sample gradients (no per-sample gradient is ever formed), adds Gaussian noise scaled to the
sensitivities that `SensitivityPlan` computes from the current weights, divides by the expected batch
size q N and lets the optimizer step; `lipnets.fit` then projects every mode="project" layer back into
its feasible set, a post-processing that costs no privacy. Under the add-or-remove-one relation the
sum's sensitivity is one sample's gradient bound, so every step is a sampled Gaussian mechanism of the
calibrated multiplier, which `lipnets.privacy.accounting` composes.

Noise and sampling come from generators seeded with operating-system entropy, never from `fit`'s seed:
noise that an observer can regenerate protects nothing, and amplification by subsampling assumes the
batches are secret. (torch's generators are not cryptographically secure; Opacus makes the same choice
outside its secure mode.)
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator

import torch
from torch import nn

from .accounting import Budget, calibrate_noise, epsilon_spent
from .losses import per_sample
from .sensitivity import SensitivityPlan


def secret_generator(device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on `device` seeded from operating-system entropy."""
    return torch.Generator(device=device).manual_seed(secrets.randbits(63))


class PrivateStep:
    """One Clipless DP-SGD step on a Poisson-sampled batch: summed gradient + calibrated noise, over q N.

    noise_multiplier sigma and strategy ("global" or "per-layer", see `Budget`) fix the noise;
    `expected_batch_size` is q N, the divisor that keeps the sensitivity independent of the batch actually
    drawn. The sensitivities are recomputed from the current weights at every step.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        *,
        noise_multiplier: float,
        expected_batch_size: float,
        strategy: str = "global",
        input_bound: float | None = None,
        input_shape: tuple[int, ...] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
            raise ValueError(f"noise_multiplier must be a finite number > 0, got {noise_multiplier!r}")
        if not (math.isfinite(expected_batch_size) and expected_batch_size > 0):
            raise ValueError(f"expected_batch_size must be a finite number > 0, got {expected_batch_size!r}")
        Budget(1.0, 0.5, strategy)  # validates the strategy name
        self.plan = SensitivityPlan(model, loss, input_bound, input_shape)
        self.model, self.loss = model, per_sample(loss)
        self.noise_multiplier, self.expected_batch_size, self.strategy = float(noise_multiplier), float(expected_batch_size), strategy
        device = next(iter(self.plan.parameters.values())).device
        self.generator = generator if generator is not None else secret_generator(device)

    def noise_scales(self) -> dict[str, float]:
        """Per parameter name, the standard deviation of the noise added to its summed gradient."""
        bounds = self.plan.bounds()
        if self.strategy == "global":
            total = math.sqrt(sum(value**2 for value in bounds.values()))
            return dict.fromkeys(bounds, self.noise_multiplier * total)
        groups = math.sqrt(len(bounds))
        return {name: self.noise_multiplier * groups * value for name, value in bounds.items()}

    def __call__(self, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """Take the step on the sampled batch (x, y); returns the batch's mean loss (0 for an empty batch)."""
        scales = self.noise_scales()  # from the weights this step's gradients are computed with
        optimizer.zero_grad(set_to_none=True)
        mean = torch.zeros((), device=x.device)
        if len(x):
            values = self.loss(self.model(x), y)
            values.sum().backward()
            mean = values.detach().mean()
        for name, parameter in self.plan.parameters.items():  # in place: one noise tensor alive at a time
            noise = torch.randn(parameter.shape, generator=self.generator, device=parameter.device, dtype=parameter.dtype)
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            parameter.grad.add_(noise, alpha=scales[name]).div_(self.expected_batch_size)
        optimizer.step()
        return mean


class PrivateTraining:
    """The private side of `lipnets.fit`: noise calibrated to a Budget, Poisson batches, the epsilon spent.

    The noise multiplier is calibrated so that epochs * round(N / batch_size) sampled steps at rate
    q = batch_size / N spend exactly the budget; `spent` turns True after the last of them, and
    `epsilon()` is the accountant's epsilon after the steps taken so far.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        budget: Budget,
        records: int,
        input_shape: tuple[int, ...],
        *,
        epochs: int,
        batch_size: int,
        start_epoch: int = 0,
    ) -> None:
        if not isinstance(budget, Budget):
            raise TypeError(f"privacy must be a lipnets.privacy.Budget(epsilon, delta), got {type(budget).__name__}")
        if batch_size > records:
            raise ValueError(f"batch_size={batch_size} exceeds the {records} training records: the sampling rate must be at most 1")
        self.budget, self.records = budget, records
        self.sample_rate = batch_size / records
        self.steps_per_epoch = max(1, round(records / batch_size))
        self.total_steps = epochs * self.steps_per_epoch
        # the model and loss are checked (and refused) before the noise is calibrated, which takes seconds
        self.step = PrivateStep(
            model, loss, noise_multiplier=1.0, expected_batch_size=batch_size, strategy=budget.strategy, input_shape=input_shape
        )
        self.noise_multiplier = calibrate_noise(budget.epsilon, budget.delta, self.sample_rate, self.total_steps, budget.accountant)
        self.step.noise_multiplier = self.noise_multiplier
        self.sampler = secret_generator()
        self.steps_taken = min(start_epoch * self.steps_per_epoch, self.total_steps)

    @property
    def spent(self) -> bool:
        """Whether every step the budget pays for has been taken."""
        return self.steps_taken >= self.total_steps

    def batches(self, x: torch.Tensor, y: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of Poisson-sampled batches, each record kept with probability q; none once spent."""
        for _ in range(self.steps_per_epoch):
            if self.spent:
                return
            chosen = (torch.rand(self.records, generator=self.sampler) < self.sample_rate).nonzero()[:, 0].to(x.device)
            self.steps_taken += 1
            yield x[chosen], y[chosen]

    def epsilon(self) -> float:
        """The epsilon spent by the steps taken so far, at the budget's delta."""
        return epsilon_spent(self.noise_multiplier, self.sample_rate, self.steps_taken, self.budget.delta, self.budget.accountant)
