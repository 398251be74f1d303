"""The training recipe of l_inf-distance and SortNet networks: the l_p relaxation schedule and the hinge loss.

Zhang et al. (ICML 2021, Section 5.3; SortNet, NeurIPS 2022, the authors' scripts) train with
||x - w||_p in place of ||x - w||_inf, p held at 8 for the first few epochs, then grown exponentially
to 1000 and set to inf for the last epochs, with AdamW, a cosine learning rate and a hinge loss on the
top-1 margin. After training, the mean-shift statistics are recomputed at p = inf, the function that
is certified.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..layers import LInfDistanceLinear, MeanShift
from ..losses import MulticlassHingeLoss
from .fit import Callback, History, fit


def set_p(model: nn.Module, p: float) -> None:
    """Use the l_p distance (training forward) in every LInfDistanceLinear / SortNetLinear of `model`."""
    for module in model.modules():
        if isinstance(module, LInfDistanceLinear):
            module.p = p


class LpSchedule:
    """p per epoch: `start` for the first `hold` share of the epochs, then exponential growth to `end`
    at the `finish` share, then inf (the authors' 8 -> 1000 schedule, epochs 100, 1450 and 1500 of 1500).

    As a `lipnets.fit` callback it sets the next epoch's p on the model after each epoch.
    """

    def __init__(self, epochs: int, *, start: float = 8.0, end: float = 1000.0, hold: float = 1 / 15, finish: float = 29 / 30) -> None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
        if not (1.0 <= start <= end < math.inf):
            raise ValueError(f"need 1 <= start <= end < inf, got start={start!r}, end={end!r}")
        if not (0.0 <= hold <= finish <= 1.0):
            raise ValueError(f"need 0 <= hold <= finish <= 1, got hold={hold!r}, finish={finish!r}")
        self.epochs, self.start, self.end, self.hold, self.finish = epochs, float(start), float(end), float(hold), float(finish)

    def p(self, epoch: int) -> float:
        """The p of `epoch` (0-based)."""
        return self.at(epoch / self.epochs)

    def at(self, share: float) -> float:
        """The p once `share` (in [0, 1]) of the training is done: for budgets in time rather than epochs."""
        if share >= self.finish:
            return math.inf
        if share <= self.hold:
            return self.start
        return self.start * (self.end / self.start) ** ((share - self.hold) / (self.finish - self.hold))

    def __call__(self, epoch: int, history: History, model: nn.Module) -> None:
        set_p(model, self.p(epoch + 1))


def _inputs(data: DataLoader | tuple[torch.Tensor, torch.Tensor], batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(data, DataLoader):
        return (batch[0] for batch in data)
    return data[0].split(batch_size)


@torch.no_grad()
def recalibrate_mean_shift(model: nn.Module, data: DataLoader | tuple[torch.Tensor, torch.Tensor], batch_size: int = 512) -> None:
    """Set every MeanShift's running mean to the exact mean over `data` of the eval-mode network (p = inf).

    The running means were averaged during training under other p and random SortNet subsets; this
    replaces them, layer by layer, with the statistics of the function that is certified.
    """
    shifts = [module for module in model.modules() if isinstance(module, MeanShift)]
    model.eval()
    momenta = [shift.momentum for shift in shifts]
    try:
        for shift in shifts:
            shift.train()
        device = next(model.parameters()).device
        for count, x in enumerate(_inputs(data, batch_size)):
            for shift in shifts:
                shift.momentum = 1.0 / (count + 1)
            model(x.to(device))
    finally:
        for shift, momentum in zip(shifts, momenta):
            shift.momentum = momentum
        model.eval()


def fit_linf_distance(
    model: nn.Module,
    train: DataLoader | tuple[torch.Tensor, torch.Tensor],
    val: DataLoader | tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    epochs: int,
    margin: float,
    lr: float = 0.02,
    weight_decay: float = 0.02,
    batch_size: int = 512,
    schedule: LpSchedule | None = None,
    callbacks: Sequence[Callback] = (),
    seed: int = 0,
    **fit_options: Any,
) -> History:
    """Train an l_inf-distance / SortNet network with the authors' recipe and leave it in eval mode at p = inf.

    The multiclass hinge loss max(0, margin - (f_y - max_j f_j)) asks for an l_inf certified radius of
    margin / 2; AdamW (betas 0.9, 0.99, eps 1e-10) with a cosine learning rate; `schedule` defaults to
    LpSchedule(epochs). Other options go to `lipnets.fit` (val and patience select among epochs of
    different p, so the monitored value is only comparable once p = inf: leave them out unless needed).
    """
    schedule = LpSchedule(epochs) if schedule is None else schedule
    made: list[torch.optim.Optimizer] = []

    def optimizer(parameters: Iterable[nn.Parameter], rate: float) -> torch.optim.Optimizer:
        made.append(torch.optim.AdamW(parameters, lr=rate, betas=(0.9, 0.99), eps=1e-10, weight_decay=weight_decay))
        return made[-1]

    def cosine(epoch: int, history: History, model: nn.Module) -> None:
        for group in made[-1].param_groups:
            group["lr"] = 0.5 * lr * (1.0 + math.cos(math.pi * (epoch + 1) / epochs))

    steps: list[Callable[..., Any]] = [schedule, cosine, *callbacks]
    set_p(model, schedule.p(0))
    history = fit(
        model, MulticlassHingeLoss(margin), train, val, epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer, seed=seed,
        callbacks=steps, **fit_options,
    )  # fmt: skip
    set_p(model, math.inf)
    recalibrate_mean_shift(model, train, batch_size)
    return history
