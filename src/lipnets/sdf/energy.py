"""Lipschitz energy-based models (Béthune's thesis, "Deep learning with Lipschitz constraints", 2024, Sec. 5.6).

The density p(x) ∝ exp(-E(x)) on a box B, with E = f / temperature and f a 1-Lipschitz (orthogonal,
GroupSort) network: log p is (1 / temperature)-Lipschitz in l2, so the density ratio between two points
at distance r is at most exp(r / temperature), a certificate that no other density model offers.
Training follows Eq. 5.19 (Du and Mordatch, "Implicit generation and modeling with energy based models",
NeurIPS 2019): the gradient of the negative log-likelihood is E_data grad E - E_{p_theta} grad E, with the
model's samples drawn by persistent Metropolis-adjusted Langevin chains (sampling.langevin).

Composition (Remark 5.6; Du, Li and Mordatch, "Compositional visual generation with energy based
models", NeurIPS 2020): `energy_union` -logsumexp(-E_i) (a mixture), `energy_intersection` sum E_i (a
product of experts), `energy_difference` E_a - alpha E_b; each is a module with a sound Lipschitz bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ..bounds import bound_of, lipschitz_bound
from ..layers import project_
from ..models import LipschitzMLP
from ..training.seeding import seeded
from ..validation import ArrayLike, as_samples, positive_int, scores_of
from .combine import Combination
from .sampling import default_domain, langevin


class ScaledEnergy(Combination):
    """E(x) = f(x) / temperature: a network's score read as an energy, with the bound L(f) / temperature."""

    def __init__(self, network: nn.Module, temperature: float) -> None:
        super().__init__(network)
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._stacked(x)[..., 0][:, None] / self.temperature

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        """L(f) / temperature."""
        return lipschitz_bound(self.parts[0]) / self.temperature

    def lipschitz_cap(self) -> float:
        """The network's cap over the temperature."""
        return bound_of(self.parts[0]).cap / self.temperature


class EnergySum(Combination):
    """sum_i c_i E_i: product of experts (all c_i = 1) or difference (c = (1, -alpha)); bound sum |c_i| L_i."""

    def __init__(self, parts: Sequence[nn.Module], coefficients: Sequence[float]) -> None:
        super().__init__(*parts)
        if len(coefficients) != len(parts) or not all(math.isfinite(c) for c in coefficients):
            raise ValueError(f"one finite coefficient per energy is needed, got {list(coefficients)!r}")
        self.coefficients = [float(c) for c in coefficients]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stacked = self._stacked(x)
        return (stacked * stacked.new_tensor(self.coefficients)).sum(dim=-1, keepdim=True)

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        """sum_i |c_i| L_i."""
        return sum(abs(c) * lipschitz_bound(part) for c, part in zip(self.coefficients, self.parts))

    def lipschitz_cap(self) -> float:
        """The bound itself: the parts' caps are not tracked through temperatures."""
        return self.lipschitz_bound()


class EnergyUnion(Combination):
    """-logsumexp_i(-E_i): the (unnormalised) mixture of the parts; bound max_i L_i."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.logsumexp(-self._stacked(x), dim=-1, keepdim=True)

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        """max_i L_i: softmin is 1-Lipschitz from l_inf, and its gradient is a convex combination."""
        return max(lipschitz_bound(part) for part in self.parts)

    def lipschitz_cap(self) -> float:
        """The bound itself."""
        return self.lipschitz_bound()


def energy_union(*energies: nn.Module) -> EnergyUnion:
    """The energy of the mixture of the parts' distributions: -logsumexp(-E_i) (weights set by their normalisers)."""
    return EnergyUnion(*energies)


def energy_intersection(*energies: nn.Module) -> EnergySum:
    """The energy of the product of the parts' densities: sum E_i."""
    return EnergySum(energies, [1.0] * len(energies))


def energy_difference(a: nn.Module, b: nn.Module, alpha: float = 0.5) -> EnergySum:
    """The energy of p_a / p_b^alpha, mass of a away from b: E_a - alpha E_b (alpha < 1 keeps it normalisable on a box)."""
    return EnergySum([a, b], [1.0, -float(alpha)])


def sample_energy(
    energy: nn.Module, n: int, low: torch.Tensor, high: torch.Tensor, steps: int = 200, step_size: float | None = None, seed: int = 0
) -> torch.Tensor:
    """n samples of p ∝ exp(-E) on the box [low, high] by MALA chains started uniformly (any energy module)."""
    generator = torch.Generator().manual_seed(seed)
    start = low + (high - low) * torch.rand((n, low.shape[-1]), generator=generator, dtype=low.dtype)
    size = step_size if step_size is not None else (0.01 * float((high - low).min())) ** 2
    return langevin(lambda z: -scores_of(energy, z), start, low, high, steps, size, generator)[0]


class LipschitzEBM(BaseEstimator):
    """An energy-based density model with a Lipschitz log-density (Sec. 5.6), scikit-learn style.

    p(x) ∝ exp(-f(x) / temperature) on the box `domain` (None: mean +- 5 standard deviations per
    feature), f a 1-Lipschitz network. temperature None: 5% of the data's root-mean-square distance to
    its mean. Trained for `iterations` steps of Eq. 5.19 with `batch_size` data points against as many
    persistent MALA chains advanced `langevin_steps` each step. score_samples is the log-density up to
    its constant; lipschitz_ bounds its Lipschitz constant (sound, from the weights).
    """

    def __init__(
        self,
        *,
        temperature: float | None = None,
        hidden: Sequence[int] = (64, 64),
        iterations: int = 300,
        batch_size: int = 256,
        langevin_steps: int = 10,
        lr: float = 2e-3,
        domain: tuple | None = None,
        random_state: int = 0,
    ) -> None:
        self.temperature = temperature
        self.hidden = hidden
        self.iterations = iterations
        self.batch_size = batch_size
        self.langevin_steps = langevin_steps
        self.lr = lr
        self.domain = domain
        self.random_state = random_state

    def fit(self, X: ArrayLike, y: object = None) -> LipschitzEBM:
        """Fit the energy to the samples X (y is ignored)."""
        x = as_samples(X, "X", dtype=torch.float32)
        if x.shape[0] < 2:
            raise ValueError(f"LipschitzEBM needs at least 2 training samples, got {x.shape[0]}")
        for name in ("iterations", "batch_size", "langevin_steps"):
            positive_int(getattr(self, name), name)
        spread = float(torch.linalg.vector_norm(x - x.mean(0), dim=1).pow(2).mean().sqrt())
        temperature = 0.05 * spread if self.temperature is None else float(self.temperature)
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        low, high = default_domain(x, self.domain)
        network = seeded(self.random_state, LipschitzMLP, x.shape[1], 1, tuple(self.hidden), input_norm="2", hidden_norm="orthogonal")
        energy = ScaledEnergy(network, temperature)
        optimizer = torch.optim.Adam(network.parameters(), lr=self.lr)
        generator = torch.Generator().manual_seed(self.random_state)
        chains = low + (high - low) * torch.rand((self.batch_size, x.shape[1]), generator=generator)
        step_size = (0.5 * temperature) ** 2
        for _ in range(self.iterations):
            chains, _ = langevin(lambda z: -scores_of(energy, z), chains, low, high, self.langevin_steps, step_size, generator)
            index = torch.randint(len(x), (self.batch_size,), generator=generator)
            loss = scores_of(network, x[index]).mean() - scores_of(network, chains).mean()  # Eq. 5.19, times the temperature
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            project_(network)
        self.energy_ = energy.eval()
        self.temperature_, self.domain_ = temperature, (low.numpy(), high.numpy())
        self.n_features_in_ = x.shape[1]
        self.lipschitz_ = lipschitz_bound(energy)
        return self

    def score_samples(self, X: ArrayLike) -> np.ndarray:
        """-E(x): the log-density up to its normalising constant."""
        check_is_fitted(self, "energy_")
        x = as_samples(X, "X", dtype=torch.float32)
        if x.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {x.shape[1]} features but LipschitzEBM was fitted with {self.n_features_in_}")
        with torch.no_grad():
            return -scores_of(self.energy_, x).double().numpy()

    def sample(self, n: int, *, steps: int = 500, seed: int = 0) -> np.ndarray:
        """n samples of the fitted density by MALA chains started uniformly on the domain."""
        check_is_fitted(self, "energy_")
        low, high = (torch.as_tensor(bound) for bound in self.domain_)
        step_size = (0.5 * self.temperature_) ** 2
        return sample_energy(self.energy_, int(n), low, high, steps, step_size, seed).double().numpy()
