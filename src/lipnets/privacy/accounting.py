"""Privacy accounting for Poisson-sampled Gaussian steps, with Google's dp-accounting (lipnets[privacy]).

Each private step releases the sum of a Poisson-sampled batch's gradients plus Gaussian noise whose
standard deviation is `noise_multiplier` times the sensitivity (per parameter group, see
lipnets.privacy.training). Whatever the strategy, the step is one Gaussian mechanism of multiplier
sigma on the sensitivity-normalised gradient, amplified by Poisson subsampling at rate q (Béthune's
thesis, 2024, Fig. 6.3: the layers compose into one non-isotropic Gaussian, then subsampling applies).
`steps` of them compose; the accountant turns that into (epsilon, delta) under the add-or-remove-one
relation: RDP (Mironov, "Rényi differential privacy", CSF 2017; Mironov, Talwar and Zhang 2019) or the
privacy loss distribution ("pld", tighter, slower).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..validation import require_extra

ACCOUNTANTS = ("rdp", "pld")
STRATEGIES = ("global", "per-layer")


def _accounting() -> Any:
    return require_extra("dp_accounting", "privacy")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence dp-accounting's warnings about RDP orders it excludes (the epsilon stays a valid bound)."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_accountant(accountant: str) -> str:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant {accountant!r}: choose one of {', '.join(map(repr, ACCOUNTANTS))}")
    return accountant


INTEGER_ORDERS = (*range(2, 65), 80, 96, 128, 256, 512, 1024)
"""RDP orders whose sampled-Gaussian divergence has a closed form (a binomial sum): fast, and a valid
bound whatever the set. The default accountant adds fractional orders: tighter, about ten times slower."""


def _fresh(accountant: str, fast: bool = False) -> Any:
    dp = _accounting()
    if accountant == "pld":
        return dp.pld.PLDAccountant()
    return dp.rdp.RdpAccountant(orders=INTEGER_ORDERS) if fast else dp.rdp.RdpAccountant()


def _event(noise_multiplier: float, sample_rate: float, steps: int) -> Any:
    dp = _accounting()
    step = dp.PoissonSampledDpEvent(sample_rate, dp.GaussianDpEvent(noise_multiplier))
    return dp.SelfComposedDpEvent(step, steps)


def _check_rate(sample_rate: float) -> float:
    if not (isinstance(sample_rate, (int, float)) and 0.0 < sample_rate <= 1.0):
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    return float(sample_rate)


def epsilon_spent(noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = "rdp") -> float:
    """The epsilon of `steps` Poisson-sampled Gaussian steps (multiplier sigma, rate q) at `delta`."""
    _check_delta(delta)
    if steps == 0:
        return 0.0
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ValueError(f"noise_multiplier must be a finite number > 0, got {noise_multiplier!r}")
    account = _fresh(_check_accountant(accountant))
    with _quiet():
        account.compose(_event(noise_multiplier, _check_rate(sample_rate), int(steps)))
        return float(account.get_epsilon(delta))


def calibrate_noise(epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = "rdp") -> float:
    """The smallest noise multiplier (to 0.1%) whose `steps` sampled steps spend at most (epsilon, delta).

    A first search with RDP on the integer orders (fast, never below the answer) brackets the search
    with the chosen accountant (PLD is at most that much tighter in practice; a bracket reaching tiny
    multipliers would make its discretisation explode).
    """
    _check_epsilon(epsilon)
    _check_delta(delta)
    _check_rate(sample_rate)
    _check_accountant(accountant)
    dp = _accounting()

    def search(fast: bool, bracket: Any) -> float:
        return float(
            dp.calibrate_dp_mechanism(
                lambda: _fresh("rdp" if fast else accountant, fast),
                lambda value: _event(value, sample_rate, steps),
                epsilon,
                delta,
                bracket_interval=bracket,
                tol=1e-3,
            )
        )

    with _quiet():
        upper = search(True, dp.LowerEndpointAndGuess(1e-3, 1.0))
        lower = 0.8 * upper if accountant == "rdp" else 0.3 * upper
        sigma = search(False, dp.ExplicitBracketInterval(lower, upper * (1.0 + 1e-3)))
    while epsilon_spent(sigma, sample_rate, steps, delta, accountant) > epsilon:  # never trust a root finder's side
        sigma *= 1.0 + 1e-3
    return sigma


def _check_epsilon(epsilon: float) -> float:
    if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon!r}")
    return float(epsilon)


def _check_delta(delta: float) -> float:
    if not (isinstance(delta, (int, float)) and 0.0 < delta < 1.0):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}; a common choice is 1 / (number of training records)")
    return float(delta)


@dataclass(frozen=True)
class Budget:
    """A privacy target (epsilon, delta) for `lipnets.fit(..., privacy=Budget(...))`.

    strategy: how the noise is shared among parameter groups (Sec. 6.2 of Béthune's thesis, 2024):
    "global" adds noise sigma * sqrt(sum_p Delta_p^2) to every coordinate; "per-layer" adds
    sigma * sqrt(D) * Delta_p to parameter group p (D groups), less noise on the groups whose gradients
    are small. Both are one Gaussian mechanism of multiplier sigma on the normalised gradient, so the
    same accountant applies. accountant: "rdp" or "pld" (see lipnets.privacy.accounting).
    """

    epsilon: float
    delta: float
    strategy: str = "global"
    accountant: str = "rdp"

    def __post_init__(self) -> None:
        _check_epsilon(self.epsilon)
        _check_delta(self.delta)
        _check_accountant(self.accountant)
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}: choose one of {', '.join(map(repr, STRATEGIES))}")
