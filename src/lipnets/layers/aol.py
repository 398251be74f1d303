"""AOLLinear: a dense layer made l2-Lipschitz by the almost-orthogonal column rescaling."""

from __future__ import annotations

import torch

from ..constraints.aol import DenseAOL
from .linear import LipschitzLinear


class AOLLinear(LipschitzLinear):
    """y = lambda W diag(d) x + b with d_j = (sum_i |W^T W|_ij)^(-1/2) (Prach and Lampert, ECCV 2022).

    No iteration and no estimate: the rescaling makes the layer lambda-Lipschitz in l2 for every W, and
    close to orthogonal where W^T W is close to diagonal. The bound it reports is the exact largest
    singular value of the rescaled weight (an SVD in float64), as for every l2 `LipschitzLinear`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        lipschitz: float = 1.0,
        mode: str = "reparam",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        # skips LipschitzLinear's constraint choice: the weight gets the AOL rescaling instead
        super(LipschitzLinear, self).__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.norm = "2"
        self.input_norm, self.output_norm = "2", "2"
        self._setup_constraint(DenseAOL(lipschitz), mode)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, aol, lipschitz={self.lipschitz:g}, mode={self.mode!r}"
