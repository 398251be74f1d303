"""LInfDistanceNet: an l_inf-distance / SortNet network, 1-Lipschitz from l_inf to l_inf by construction."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import nn

from ..layers import LInfDistanceLinear, MeanShift, SortNetLinear


class LInfDistanceNet(nn.Sequential):
    """Flatten, then l_inf-distance layers with mean shift, and a negated distance layer giving the logits.

    The architecture of Zhang et al. (SortNet, NeurIPS 2022; the authors' SortMLPModel): the first layer
    is made of l_inf-distance neurons, every later one of SortNet neurons with geometric ratio `rho`
    (rho = 0 gives the l_inf-distance net of ICML 2021), hidden layers followed by MeanShift instead of
    a bias, and the output is minus the distance to each class's prototype, plus a bias. Every layer is
    1-Lipschitz in l_inf in eval mode, so `lipnets.certified_radius(net, x)` is the top-1 margin / 2 in
    l_inf. Train it with `lipnets.training.distance.fit_linf_distance` (the l_p relaxation schedule and
    the hinge loss).
    """

    def __init__(self, in_features: int, classes: int, hidden: Sequence[int] = (256, 256, 256), *, rho: float = 0.3) -> None:
        widths = [int(in_features), *map(int, hidden)]
        if min(*widths, classes) < 1 or not hidden:
            raise ValueError(f"in_features, classes and at least one hidden width must be positive, got {in_features}, {classes}, {hidden}")
        layers: list[nn.Module] = [nn.Flatten()]
        for index, (width_in, width_out) in enumerate(itertools.pairwise(widths)):
            neuron = (
                LInfDistanceLinear(width_in, width_out, bias=False)
                if index == 0
                else SortNetLinear(width_in, width_out, bias=False, rho=rho)
            )
            layers += [neuron, MeanShift(width_out)]
        layers.append(SortNetLinear(widths[-1], classes, rho=rho, negate=True))
        super().__init__(*layers)
