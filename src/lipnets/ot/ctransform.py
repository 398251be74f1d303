"""The exact c-transform refinement of a critic on the samples (docs/reference/wasserstein.md).

With g the critic's values on the y_j: u_i = min_j g_j + d(x_i, y_j), then v_j = max_i u_i - d(x_i, y_j)
(Villani, "Optimal transport: old and new", Springer, 2009, Def. 5.2). Then u_i - v_j <= d(x_i, y_j) for
every pair whatever g is, so sum a_i u_i - sum b_j v_j is a feasible value of the discrete dual, never
above the empirical W1; and it is at least the critic's own value when g is 1-Lipschitz (u >= g on the
x_i, v <= g on the y_j). The cost is two passes over the n x m distances, in chunks of CHUNK rows.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..bounds import BoundedModule, lipschitz_bound
from ..norms import as_vector_norm
from .critic import scores_in_chunks
from .plans import UNIT, distance_error, distance_matrix

CHUNK = 2048
"""Rows of the distance matrix computed at once by the c-transform."""


class CTransformCritic(BoundedModule):
    """G(z) = max_i (u_i - ||z - x_i||_p): exactly 1-Lipschitz in l_p, as a max of distance cones.

    The critic that `c_transform` builds from anchors x_i and values u_i; it follows the bound
    protocol with the bound 1. Distances are computed in float64 without the matrix-product shortcut.
    """

    anchors: torch.Tensor
    values: torch.Tensor

    def __init__(self, anchors: torch.Tensor, values: torch.Tensor, norm: str) -> None:
        super().__init__()
        self.norm = as_vector_norm(norm)
        self.input_norm = self.output_norm = self.norm
        self.register_buffer("anchors", anchors.detach().to(torch.float64))
        self.register_buffer("values", values.detach().to(torch.float64))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        scores = torch.cat([(self.values - distance_matrix(chunk, self.anchors, self.norm)).amax(dim=1) for chunk in z.split(CHUNK)])
        return scores.to(z.dtype)[:, None]

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        """1: each cone u_i - ||z - x_i|| is 1-Lipschitz in l_p, and so is their max."""
        return 1.0

    def lipschitz_cap(self) -> float:
        """1 whatever the anchors and values."""
        return 1.0


@torch.no_grad()
def c_transform_values(
    g: torch.Tensor, x: torch.Tensor, y: torch.Tensor, weights_x: torch.Tensor, weights_y: torch.Tensor, norm: str
) -> tuple[float, torch.Tensor]:
    """The certified dual value of the c-transform pair built from any values g on the y_j; returns (value, u).

    u_i = min_j g_j + d(x_i, y_j), v_j = max_i u_i - d(x_i, y_j), all in float64; the value
    sum a_i u_i - sum b_j v_j is lowered by a proven bound on its rounding (the distances' relative
    error, the max and min being exact, and the two weighted sums), so it never exceeds the exact W1.
    """
    x64, y64, g = x.detach().double(), y.detach().double(), g.detach().double()
    u = torch.cat([(g + distance_matrix(chunk, y64, norm)).amin(dim=1) for chunk in x64.split(CHUNK)])
    v = torch.full_like(g, -torch.inf)
    largest = 0.0
    for start in range(0, len(x64), CHUNK):
        distances = distance_matrix(x64[start : start + CHUNK], y64, norm)
        largest = max(largest, float(distances.max()))
        v = torch.maximum(v, (u[start : start + CHUNK, None] - distances).amax(dim=0))
    value = float(weights_x.detach().double() @ u - weights_y.detach().double() @ v)
    # fl(u_i - d_ij) <= v_j exactly (a max), so u_i - v_j <= d_ij + eps_d d_ij + unit |u_i - d_ij|: shifting
    # u down by that restores feasibility; the sums add (n + m) roundings of terms <= max|u|, max|v|.
    top = float(u.abs().max()) + float(v.abs().max())
    error = distance_error(x.shape[1])
    feasibility = largest * (1 + error) * error + UNIT * (top + largest) * 2
    summation = (len(x) + len(y) + 4) * UNIT * top * 2
    return value - feasibility - summation, u


@torch.no_grad()
def c_transform(
    critic: nn.Module, x: torch.Tensor, y: torch.Tensor, weights_x: torch.Tensor, weights_y: torch.Tensor, norm: str
) -> tuple[float, CTransformCritic]:
    """Refine a critic on the samples by its c-transform; return (certified dual value, new critic).

    Starts from g = f / max(1, L) on the y_j (`c_transform_values`). The returned critic
    max_i u_i - d(z, x_i) takes the values u on x and at most v on y, and is exactly 1-Lipschitz.
    """
    norm = as_vector_norm(norm)
    twin = copy.deepcopy(critic).to(torch.float64).eval()
    g = scores_in_chunks(twin, y.detach().double()) / max(1.0, lipschitz_bound(twin))
    value, u = c_transform_values(g, x, y, weights_x, weights_y, norm)
    return value, CTransformCritic(x.detach().double(), u, norm)
