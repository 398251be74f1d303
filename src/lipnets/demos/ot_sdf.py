"""Signed distance functions and Wasserstein-1 critics in 2-D (Béthune's thesis, 2024, ch. 5; NEEMo).

Three figures: the one-class SDF (OCSDF) of two moons and of an annulus, drawn as contour plots with
their zero level and the complementary samples of Algorithm 6; and a W1 estimate between two point
clouds with its critic as a heatmap and the certified interval [lower, upper] around the exact W1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.datasets import make_moons

from ..ot import wasserstein1
from ..sdf import OneClassSDF

GRID = 120
RING = (0.6, 1.2)
"""Inner and outer radii of the annulus whose exact SDF is min(r - 0.6, 1.2 - r)."""


def _grid(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs, ys = np.linspace(low[0], high[0], GRID), np.linspace(low[1], high[1], GRID)
    xx, yy = np.meshgrid(xs, ys)
    return xx, yy, np.stack([xx.ravel(), yy.ravel()], axis=1)


def _save(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=110, bbox_inches="tight")


def _sdf_figure(model: OneClassSDF, x: np.ndarray, title: str, path: Path) -> None:
    low, high = x.min(0) - 0.8, x.max(0) + 0.8
    xx, yy, points = _grid(low, high)
    scores = model.score_samples(points).reshape(xx.shape)
    negatives = model.sample_negatives(300)
    figure = Figure(figsize=(6, 4.5))
    axes = figure.add_subplot()
    filled = axes.contourf(xx, yy, scores, levels=20, cmap="RdBu")
    axes.contour(xx, yy, scores, levels=[0.0], colors="k", linewidths=1.5)
    axes.scatter(x[:, 0], x[:, 1], s=3, c="gold", label="data")
    axes.scatter(negatives[:, 0], negatives[:, 1], s=3, c="k", marker="x", label="Algorithm 6 negatives")
    axes.set_xlim(low[0], high[0])
    axes.set_ylim(low[1], high[1])
    axes.set_title(title)
    axes.legend(loc="lower left", fontsize=7)
    figure.colorbar(filled, ax=axes, label="f(x) (black: f = 0)")
    _save(figure, path)


def _annulus(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    radius = np.sqrt(rng.uniform(RING[0] ** 2, RING[1] ** 2, n))
    angle = rng.uniform(0, 2 * np.pi, n)
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)


def _annulus_sdf(points: np.ndarray) -> np.ndarray:
    radius = np.linalg.norm(points, axis=1)
    return np.minimum(radius - RING[0], RING[1] - radius)


def _sdf_rows(out_dir: Path, quick: bool) -> list[dict]:
    options: dict[str, Any] = dict(hidden=(32, 32, 32), iterations=25 if quick else 120, inner_steps=3, batch_size=128, random_state=0)
    rows = []
    moons, _ = make_moons(200 if quick else 800, noise=0.05, random_state=0)
    model = OneClassSDF(**options).fit(moons)
    _sdf_figure(model, moons, "OCSDF of two moons", out_dir / "sdf_moons.png")
    rows.append(_row("two moons", model, moons))
    ring = _annulus(200 if quick else 800, 0)
    model = OneClassSDF(**options).fit(ring)
    _sdf_figure(model, ring, "OCSDF of an annulus", out_dir / "sdf_annulus.png")
    _, _, probes = _grid(np.array([-2.0, -2.0]), np.array([2.0, 2.0]))
    near = probes[np.abs(_annulus_sdf(probes)) < 0.5]
    error = np.abs(model.score_samples(near) - model.eps_ - _annulus_sdf(near)).mean()
    rows.append(_row("annulus", model, ring) | {"mean abs(f - eps - SDF), 0.5 around the ring": round(float(error), 3)})
    return rows


def _row(name: str, model: OneClassSDF, x: np.ndarray) -> dict:
    return {
        "figure": name,
        "eps": round(model.eps_, 3),
        "training points inside (f >= 0)": round(float((model.predict(x) == 1).mean()), 3),
        "lipschitz_bound": round(model.lipschitz_, 6),
    }


def _w1_row(out_dir: Path, quick: bool) -> dict:
    rng = np.random.default_rng(0)
    n = 200 if quick else 500
    x = rng.normal(size=(n, 2)) * [1.0, 0.5]
    centers = np.array([[2.5, 1.0], [2.5, -1.5]])
    y = centers[rng.integers(0, 2, n)] + 0.4 * rng.normal(size=(n, 2))
    result = wasserstein1(x, y, max_steps=100 if quick else 2000, refine=False)
    low, high = np.minimum(x.min(0), y.min(0)) - 0.5, np.maximum(x.max(0), y.max(0)) + 0.5
    xx, yy, points = _grid(low, high)
    with torch.no_grad():
        values = result.critic(torch.as_tensor(points, dtype=torch.float32))[:, 0].numpy().reshape(xx.shape)
    figure = Figure(figsize=(6, 4.5))
    axes = figure.add_subplot()
    image = axes.pcolormesh(xx, yy, values, cmap="viridis", shading="auto")
    axes.scatter(x[:, 0], x[:, 1], s=3, c="w", label="P")
    axes.scatter(y[:, 0], y[:, 1], s=3, c="r", label="Q")
    axes.set_title(f"critic: W1 in [{result.lower:.4f}, {result.upper:.4f}], critic {result.critic_lower:.4f}")
    axes.legend(loc="lower left", fontsize=7)
    figure.colorbar(image, ax=axes, label="f(x)")
    _save(figure, out_dir / "w1_critic.png")
    return {
        "figure": "W1 critic",
        "lower": round(result.lower, 4),
        "upper": round(result.upper, 4),
        "critic (certified)": round(result.critic_lower, 4),
        "critic error vs upper": round((result.upper - result.critic_lower) / result.upper, 4),
    }


def run(out_dir: Path, quick: bool) -> list[dict]:
    """Fit the two SDFs and the W1 critic, write sdf_moons.png, sdf_annulus.png and w1_critic.png."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [*_sdf_rows(out_dir, quick), _w1_row(out_dir, quick)]
