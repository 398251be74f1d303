"""Self-calibration of the cross-entropy temperature (Béthune, "Deep learning with Lipschitz constraints", PhD thesis, 2024, Algorithm 4).

For a Lipschitz network the temperature tau of the cross-entropy L(tau f(x), y) is the regulariser that
sets the accuracy-robustness trade-off (Section 4.4: 1/tau is the strength of an entropic penalty on the
predictions). Algorithm 4 alternates two fits until tau settles: the network with tau fixed on the
training set, then tau with the network fixed on a calibration set that stands for the data the model
will see. The second fit is convex in tau and one-dimensional: `fit_temperature` solves it by bisection
on the sign of its derivative. See docs/reference/losses.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..losses import TauBCEWithLogitsLoss, TauCrossEntropyLoss, binary_scores, binary_signs, class_labels
from ..validation import check_finite
from .fit import History, fit

TAU_RANGE = (1e-6, 1e6)
"""The temperatures `fit_temperature` searches; at an end of it the optimum is unbounded (separable or reversed scores)."""


def _derivative(scores: torch.Tensor, labels: torch.Tensor, tau: float) -> float:
    """d/dtau of the mean cross-entropy of tau * scores: increasing in tau (the loss is convex in tau)."""
    if scores.dim() == 1:
        margin = labels * scores
        return float((-margin * torch.sigmoid(-tau * margin)).mean())
    probabilities = torch.softmax(tau * scores, dim=1)
    return float(((probabilities * scores).sum(dim=1) - scores.gather(1, labels[:, None])[:, 0]).mean())


def fit_temperature(scores: torch.Tensor, labels: torch.Tensor, *, iterations: int = 200) -> float:
    """The tau > 0 minimising the mean cross-entropy of tau * scores (Algorithm 4, step 3).

    scores: one per sample (binary, labels in {0, 1} or {-1, +1}) or (N, K) logits (integer labels).
    Returns an end of TAU_RANGE when the optimum is unbounded (every sample already on its side).
    """
    scores = check_finite(torch.as_tensor(scores), "scores").detach().to(torch.float64)
    if scores.dim() == 2 and scores.shape[1] >= 2:
        target = class_labels(scores, torch.as_tensor(labels), "fit_temperature")
    else:
        scores = binary_scores(scores, "fit_temperature")
        target = binary_signs(torch.as_tensor(labels), len(scores), "fit_temperature").to(torch.float64)
    if len(scores) == 0:
        raise ValueError("fit_temperature needs at least one sample")
    low, high = math.log(TAU_RANGE[0]), math.log(TAU_RANGE[1])
    if _derivative(scores, target, TAU_RANGE[0]) >= 0:
        return TAU_RANGE[0]
    if _derivative(scores, target, TAU_RANGE[1]) <= 0:
        return TAU_RANGE[1]
    for _ in range(iterations):
        middle = (low + high) / 2
        if _derivative(scores, target, math.exp(middle)) > 0:
            high = middle
        else:
            low = middle
    return math.exp((low + high) / 2)


@dataclass
class TemperatureCalibration:
    """The result of `self_calibrate`: the final `tau`, the temperature after each round, the fits' histories."""

    tau: float
    taus: list[float] = field(default_factory=list)
    histories: list[History] = field(default_factory=list)
    converged: bool = False


def _loss(model_output: torch.Tensor, tau: float) -> nn.Module:
    return TauCrossEntropyLoss(tau) if model_output.dim() == 2 and model_output.shape[1] >= 2 else TauBCEWithLogitsLoss(tau)


def _scores(model: nn.Module, x: torch.Tensor, batch_size: int = 65536) -> torch.Tensor:
    parameter = next(model.parameters())
    was_training = model.training
    model.eval()
    with torch.no_grad():
        outputs = [model(x[start : start + batch_size].to(parameter.device, parameter.dtype)) for start in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(outputs)


def self_calibrate(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    calibration: tuple[torch.Tensor, torch.Tensor],
    *,
    tau: float = 1.0,
    rounds: int = 5,
    tolerance: float = 0.05,
    **fit_options: Any,
) -> TemperatureCalibration:
    """Algorithm 4 of Béthune's thesis: alternately fit `model` at temperature tau on `train`, and tau on `calibration`.

    Binary models (one score) train with `TauBCEWithLogitsLoss(tau)`, multiclass ones with
    `TauCrossEntropyLoss(tau)`; `fit_options` go to `lipnets.fit` (epochs is required) and each round
    continues from the previous weights. Stops when tau changes by less than `tolerance` (relative)
    or after `rounds` rounds; the model is left trained at the last tau used for training, and the
    returned `tau` is the calibrated one to train with next (equal to it when converged).
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    if not (math.isfinite(tolerance) and tolerance > 0):
        raise ValueError(f"tolerance must be a finite number > 0, got {tolerance!r}")
    x_calibration, y_calibration = (torch.as_tensor(part) for part in calibration)
    result = TemperatureCalibration(tau=float(tau))
    for _ in range(rounds):
        output = _scores(model, x_calibration[:2])
        result.histories.append(fit(model, _loss(output, result.tau), train, **fit_options))
        scores = _scores(model, x_calibration)
        new_tau = fit_temperature(scores if scores.dim() == 2 and scores.shape[1] >= 2 else scores.reshape(-1), y_calibration)
        result.taus.append(new_tau)
        change = abs(math.log(new_tau / result.tau))
        result.tau = new_tau
        if change < math.log1p(tolerance):
            result.converged = True
            break
    return result
