"""Implicit surfaces from 3-D point clouds (Béthune's thesis, "Deep learning with Lipschitz constraints", 2024, Sec. 5.3).

A OneClassSDF fitted on a point cloud is an implicit shape: its level set f = level is the surface.
`extract_surface` samples the score on a regular grid and runs Lewiner's marching cubes (scikit-image,
as in the thesis's Example 5.2); the default level is the first percentile of f over the cloud, the
thesis's choice, so that 99% of the points lie inside. Needs lipnets[surfaces].
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..validation import ArrayLike, as_samples, require_extra, scores_of


def extract_surface(
    sdf: nn.Module, points: ArrayLike, *, resolution: int = 64, level: float | None = None, margin: float = 0.1, chunk: int = 65536
) -> tuple[np.ndarray, np.ndarray, float]:
    """(vertices, faces, level) of the surface {f = level} of a scalar 3-D score, positive inside.

    The grid covers the cloud's bounding box enlarged by `margin` times its size on every side, with
    `resolution` points per axis. level None: the first percentile of f over `points`.
    """
    measure = require_extra("skimage.measure", "surfaces")
    cloud = as_samples(points, "points", dtype=torch.float32)
    if cloud.shape[1] != 3:
        raise ValueError(f"points must be a (n, 3) cloud, got {cloud.shape[1]} features")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise ValueError(f"resolution must be an integer >= 2, got {resolution!r}")
    parameter = next(sdf.parameters(), None)
    dtype = torch.float32 if parameter is None else parameter.dtype
    with torch.no_grad():
        if level is None:
            level = float(torch.quantile(scores_of(sdf, cloud.to(dtype)).double(), 0.01))
        size = cloud.amax(0) - cloud.amin(0)
        low, high = cloud.amin(0) - margin * size, cloud.amax(0) + margin * size
        axes = [torch.linspace(float(low[k]), float(high[k]), resolution) for k in range(3)]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3).to(dtype)
        values = torch.cat([scores_of(sdf, part) for part in grid.split(chunk)]).double().reshape(resolution, resolution, resolution)
    volume = values.numpy()
    if not (volume.min() < level < volume.max()):
        raise ValueError(f"the score never crosses level {level:g} on the grid: no surface to extract")
    spacing = tuple(float((high[k] - low[k]) / (resolution - 1)) for k in range(3))
    vertices, faces, _, _ = measure.marching_cubes(volume, level=level, spacing=spacing, method="lewiner")
    return vertices + low.double().numpy(), faces, float(level)
