"""A simulated LHCb inclusive heavy-flavour trigger (Kitouni, Nolte and Williams 2023, Section 4, Figs. 4-6).

The candidates are two-track displaced vertices from `lipnets.datasets.trigger`: signal from fourteen b- and
c-hadron decays with their lifetimes, and three backgrounds (prompt combinations with resolution tails,
material interactions at large displacement and low pT, fake tracks at large pT); that module documents
every distribution. The models see log10 of the four features the paper names (sum pT, min chi2_IP,
vertex chi2, flight-distance significance), an increasing change of variables.

Models, as in the paper's "Experiment details": an unconstrained network (3 layers of width 20, all
outputs sorted, no constraint and no residual), the monotonic Lipschitz network (the same layers, Eq. 2.8
normalisation, lambda = 2, increasing in sum pT and in both displacement features), and LightGBM with
1000 trees of at most 25 leaves, with the same monotone constraints (and without, for reference). The
working point keeps a fixed share of background (the trigger's output bandwidth).

The script reproduces Fig. 4 (response maps of two-feature models with their decision boundary),
Fig. 5 (efficiency against proper lifetime), a Fig. 6-like comparison of the four-feature models decay by
decay, the certified systematic band of the monotonic network's efficiency and output rate under stated
calibration uncertainties, and a diagnosis of what the monotone constraint costs: the background
composition, lambda, capacity and the loss temperature (self-calibrated, Béthune's Algorithm 4).

Run: `OMP_NUM_THREADS=1 python examples/trigger.py [--quick]` (about 15 minutes on one core; --quick is a
smoke test in seconds, not a result). Writes benchmarks/results/trigger.md and PNG figures to --out.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import lightgbm as lgb
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

import lipnets
from lipnets.datasets import trigger
from lipnets.io.report import benchmark_record, format_table
from lipnets.losses import TauBCEWithLogitsLoss
from lipnets.sklearn import ScaledNetwork
from lipnets.training import self_calibrate

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "trigger.md"
OUTPUT_RATE = 0.01
"""Share of (pre-selected) background the trigger keeps: the output bandwidth that sets each model's threshold."""
TWO = [0, 1]
"""The two most powerful features, sum pT and min chi2_IP: the paper's Figs. 4 and 5."""
SYSTEMATICS = {
    "sum pT scale +-0.5%": np.log10(1.005),
    "chi2_IP scale +-10% (IP resolution known to 5%)": np.log10(1.10),
    "vertex chi2 scale +-10%": np.log10(1.10),
    "FD significance scale +-5%": np.log10(1.05),
}
"""Calibration uncertainties, each a scale factor: in log10 units a shift of at most log10(1 + eps) per feature."""
LIFETIME_BINS = np.arange(0.0, 16.0, 1.0)


class Standardised(nn.Module):
    """The unconstrained network on standardised inputs (the same scaling as the Lipschitz model)."""

    def __init__(self, network: nn.Module, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network((x - self.mean) / self.scale)


class Booster(nn.Module):
    """LightGBM's raw score as a torch module, so that the working point and plots treat every model alike."""

    def __init__(self, booster: lgb.LGBMClassifier) -> None:
        super().__init__()
        self.booster = booster

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.booster.predict(x.numpy(), raw_score=True, num_threads=1))[:, None]


def simulate(n: int, seed: int, mix: dict[str, float] | None = None) -> dict:
    """Training rows (a cocktail of all decays against background), and test samples."""
    decays = list(trigger.DECAYS)
    signal = [trigger.signal(max(n // len(decays), 1), decay, seed=seed * 1000 + index) for index, decay in enumerate(decays)]
    train_signal = np.concatenate([part.features for part in signal])
    train_background = trigger.background(len(train_signal), seed=seed * 1000 + 100, mix=mix).features
    X = trigger.log_features(np.concatenate([train_signal, train_background]))
    y = np.r_[np.ones(len(train_signal)), np.zeros(len(train_background))].astype(np.float32)
    tests = {
        decay: trigger.log_features(trigger.signal(n // 4, decay, seed=seed * 1000 + 200 + i).features) for i, decay in enumerate(decays)
    }
    # every decay's kinematics with lifetimes flat in 0-15 ps: the paper's Fig. 5, and long-lived particles it never saw
    flat = [
        trigger.signal(n // len(decays), decay, seed=seed * 1000 + 300 + i, lifetime=(0.0, float(LIFETIME_BINS[-1])))
        for i, decay in enumerate(decays)
    ]
    background = trigger.background(5 * n, seed=seed * 1000 + 400, mix=mix)
    return {
        "X": X,
        "y": y,
        "background": trigger.log_features(background.features),
        "background_kind": background.kind,
        "tests": tests,
        "flat": trigger.log_features(np.concatenate([part.features for part in flat])),
        "flat_lifetime": np.concatenate([part.lifetime for part in flat]),
    }


def _split(X: np.ndarray, y: np.ndarray, seed: int) -> tuple:
    rows = np.random.default_rng(seed).permutation(len(X))
    val, train = rows[: len(X) // 10], rows[len(X) // 10 :]
    inputs, targets = torch.tensor(X), torch.tensor(y)
    return (inputs[train], targets[train]), (inputs[val], targets[val])


def train_network(model: nn.Module, X: np.ndarray, y: np.ndarray, epochs: int, seed: int, tau: float = 1.0) -> nn.Module:
    train, val = _split(X, y, seed)
    lipnets.fit(model, TauBCEWithLogitsLoss(tau), train, val, epochs=epochs, lr=3e-3, batch_size=512, patience=6, seed=seed, progress=False)
    return model.eval()


def unconstrained(X: np.ndarray, width: int = 20) -> nn.Module:
    """Kitouni et al.: the same depth, width and sorting activation, without weight constraints or residual."""
    d = X.shape[1]
    network = nn.Sequential(nn.Linear(d, width), lipnets.FullSort(), nn.Linear(width, width), lipnets.FullSort(), nn.Linear(width, 1))
    return Standardised(network, torch.tensor(X.mean(0)), torch.tensor(X.std(0)))


def monotonic(X: np.ndarray, monotone: list[int], lipschitz: float = 2.0, width: int = 20) -> ScaledNetwork:
    """The paper's network: Eq. 2.8 normalisation, all outputs sorted, lambda, on standardised inputs."""
    d = X.shape[1]
    model = ScaledNetwork(lipnets.MonotonicMLP(d, monotone, (width, width), lipschitz=lipschitz, activation="fullsort"), d, 1)
    model.set_scaling(torch.tensor(X.mean(0)), torch.tensor(X.std(0)))
    return model


def lightgbm(X: np.ndarray, y: np.ndarray, monotone: list[int] | None, trees: int) -> Booster:
    booster = lgb.LGBMClassifier(n_estimators=trees, num_leaves=25, learning_rate=0.05, monotone_constraints=monotone, verbose=-1, n_jobs=1)
    return Booster(booster.fit(X, y))


def scores(model: nn.Module, X: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(X)).reshape(-1).double().numpy()


def evaluate(model: nn.Module, data: dict, columns: list[int]) -> dict:
    """Threshold at OUTPUT_RATE of the test background, efficiency per decay and against lifetime."""
    threshold = lipnets.threshold_for_rate(model, torch.tensor(data["background"][:, columns]), OUTPUT_RATE)
    per_decay = {decay: float((scores(model, x[:, columns]) > threshold).mean()) for decay, x in data["tests"].items()}
    passed = scores(model, data["flat"][:, columns]) > threshold
    lifetime = data["flat_lifetime"]
    curve = np.array([passed[(lifetime >= lo) & (lifetime < hi)].mean() for lo, hi in itertools.pairwise(LIFETIME_BINS)])
    kept = scores(model, data["background"][:, columns]) > threshold
    composition = {kind: float((data["background_kind"][kept] == kind).mean()) for kind in trigger.BACKGROUND_MIX}
    return {"threshold": threshold, "per_decay": per_decay, "curve": curve, "kept": composition}


def family_mean(result: dict, family: str | None = None) -> float:
    values = [e for decay, e in result["per_decay"].items() if family is None or trigger.DECAYS[decay].family == family]
    return float(np.mean(values))


def violations(model: nn.Module, columns: list[int], monotone: list[int]) -> str:
    """Dense pairs on a grid over the data's range and beyond it, along every monotone feature."""
    lows, highs = np.array([-0.3, 0.3, -1.0, -1.0])[columns], np.array([2.3, 7.0, 1.5, 4.0])[columns]
    axes = [np.linspace(lo, hi, 9 if len(columns) > 2 else 40) for lo, hi in zip(lows, highs)]
    grid = torch.tensor(np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(columns)), dtype=torch.float32)
    report = lipnets.check_monotonic(model, grid, monotone, steps=torch.logspace(-3, 0.5, 6))
    return f"{report.violations} / {report.pairs}"


def figure_response(models: dict, results: dict, data: dict, path: Path) -> None:
    """Fig. 4: the response of each two-feature model over the plane, with its decision boundary."""
    pt, chi2 = np.meshgrid(np.linspace(-0.2, 1.8, 160), np.linspace(0.5, 7.0, 160))
    grid = np.stack([pt.ravel(), chi2.ravel()], axis=1).astype(np.float32)
    figure, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4.2), constrained_layout=True)
    for axis, (name, model) in zip(axes, models.items()):
        response = scores(model, grid).reshape(pt.shape)
        image = axis.pcolormesh(pt, chi2, 1 / (1 + np.exp(-response)), cmap="RdBu", vmin=0, vmax=1, shading="auto")
        axis.contour(pt, chi2, response, levels=[results[name]["threshold"]], colors="black", linewidths=2)
        axis.set(title=name, xlabel="log10 sum pT [GeV]", ylabel="log10 min chi2_IP")
    figure.colorbar(image, ax=axes, label="signal probability")
    figure.savefig(path, dpi=110)


def figure_lifetime(results: dict, path: Path) -> None:
    """Fig. 5: efficiency at the working point against proper lifetime."""
    figure, axis = plt.subplots(figsize=(6, 4.2), constrained_layout=True)
    centres = 0.5 * (LIFETIME_BINS[1:] + LIFETIME_BINS[:-1])
    for name, result in results.items():
        axis.plot(centres, result["curve"], marker="o", label=name)
    axis.set(
        xlabel="proper lifetime [ps] (all decays, lifetimes flat)",
        ylabel=f"efficiency at {OUTPUT_RATE:.0%} background rate",
        ylim=(0, 1.02),
    )
    axis.legend()
    figure.savefig(path, dpi=110)


def figure_decays(results: dict, reference: str, path: Path) -> None:
    """Fig. 6-like: each decay's efficiency minus the unconstrained network's, beauty and charm, with medians."""
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.2), constrained_layout=True, sharey=True)
    others = [name for name in results if name != reference]
    for axis, family in zip(axes, ("beauty", "charm")):
        decays = [decay for decay in trigger.DECAYS if trigger.DECAYS[decay].family == family]
        for position, name in enumerate(others):
            delta = [results[name]["per_decay"][d] - results[reference]["per_decay"][d] for d in decays]
            axis.scatter(np.full(len(delta), position) + np.linspace(-0.15, 0.15, len(delta)), delta, s=18)
            axis.scatter([position], [np.median(delta)], color="white", edgecolor="black", s=60, zorder=3)
        axis.axhline(0, color="gray", lw=0.8)
        axis.set_xticks(range(len(others)), others, rotation=15)
        axis.set(title=f"{family} ({len(decays)} decays)", ylabel=f"efficiency - {reference}")
    figure.savefig(path, dpi=110)


def systematic_rows(model: nn.Module, data: dict) -> list[dict]:
    """The certified band of the efficiency and of the output rate under SYSTEMATICS, at the working point."""
    tolerances = torch.tensor(list(SYSTEMATICS.values()), dtype=torch.float32)
    threshold = lipnets.threshold_for_rate(model, torch.tensor(data["background"]), OUTPUT_RATE)
    rows = []
    signal = np.concatenate(list(data["tests"].values()))
    for sample, values in (("signal efficiency (all decays)", signal), ("output rate (background)", data["background"])):
        band = lipnets.systematic_band(model, torch.tensor(values), tolerances, threshold)
        rows.append(
            {
                "quantity": sample,
                "nominal": band.nominal,
                "certified low": band.low,
                "certified high": band.high,
                "width": band.width,
                "rows that can flip": f"{float(band.flippable.double().mean()):.3%}",
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Simulated LHCb inclusive trigger (Kitouni et al. 2023, Figs. 4-6).")
    parser.add_argument("--out", default="trigger-output", help="folder for the PNG figures (default trigger-output)")
    parser.add_argument("--quick", action="store_true", help="few events, epochs and trees: a smoke test, not a result")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/trigger.md")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    n, epochs, trees = (1400, 2, 20) if args.quick else (28000, 40, 1000)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = simulate(n, args.seed)
    X, y = data["X"], data["y"]
    four = list(trigger.MONOTONE)
    sections = []

    # Figs. 4 and 5: two features
    two = {
        "unconstrained NN": train_network(unconstrained(X[:, TWO]), X[:, TWO], y, epochs, args.seed),
        "LightGBM monotone": lightgbm(X[:, TWO], y, [1, 1], trees),
        "monotonic Lipschitz NN": train_network(monotonic(X[:, TWO], [1, 1]), X[:, TWO], y, epochs, args.seed),
    }
    two_results = {name: evaluate(model, data, TWO) for name, model in two.items()}
    figure_response(two, two_results, data, out / "trigger_response.png")
    figure_lifetime(two_results, out / "trigger_efficiency.png")
    rows = [
        {
            "model (sum pT, min chi2_IP)": name,
            "efficiency, all decays": family_mean(result),
            "lifetime 1-3 ps": float(result["curve"][1:3].mean()),
            "lifetime 10-15 ps": float(result["curve"][10:].mean()),
            "monotonicity violations": violations(two[name], TWO, [1, 1]),
        }
        for name, result in two_results.items()
    ]
    sections.append(format_table(rows, title=f"Figs. 4-5: two features, {OUTPUT_RATE:.0%} background rate"))
    print(sections[-1], flush=True)  # each section as soon as it is ready: a long run shows its progress

    # Fig. 6: four features, decay by decay
    models = {
        "unconstrained NN": train_network(unconstrained(X), X, y, epochs, args.seed),
        "monotonic Lipschitz NN": train_network(monotonic(X, four), X, y, epochs, args.seed),
        "LightGBM monotone": lightgbm(X, y, four, trees),
        "LightGBM (no constraint)": lightgbm(X, y, None, trees),
    }
    results = {name: evaluate(model, data, [0, 1, 2, 3]) for name, model in models.items()}
    figure_decays(results, "unconstrained NN", out / "trigger_decays.png")
    rows = [
        {
            "model (four features)": name,
            "all decays": family_mean(result),
            "beauty": family_mean(result, "beauty"),
            "charm": family_mean(result, "charm"),
            "median change vs unconstrained NN": float(
                np.median([result["per_decay"][d] - results["unconstrained NN"]["per_decay"][d] for d in trigger.DECAYS])
            ),
            "kept background: prompt / material / fake": " / ".join(f"{result['kept'][kind]:.0%}" for kind in trigger.BACKGROUND_MIX),
            "monotonicity violations": violations(models[name], [0, 1, 2, 3], four),
        }
        for name, result in results.items()
    ]
    sections.append(format_table(rows, title=f"Fig. 6-like: four features, {OUTPUT_RATE:.0%} background rate"))
    per_decay = [
        {
            "decay": decay,
            "tau [ps]": trigger.DECAYS[decay].lifetime,
            **{name: result["per_decay"][decay] for name, result in results.items()},
        }
        for decay in trigger.DECAYS
    ]
    sections.append(format_table(per_decay, title="Efficiency per decay (four features)"))
    print(sections[-2], sections[-1], sep="\n\n", flush=True)

    # Certified systematic band of the monotonic network
    bound = lipnets.lipschitz_bound(models["monotonic Lipschitz NN"])
    sections.append(
        format_table(
            systematic_rows(models["monotonic Lipschitz NN"], data), title="Certified band of the monotonic NN under the systematics"
        )
        + "\n\nSystematics (each a scale factor, a shift of log10(1 + eps) in the model's log10 inputs): "
        + "; ".join(SYSTEMATICS)
        + f". Sound Lipschitz bound of the monotonic network (l1 in log10 units -> logit): {bound:.4g}."
    )
    print(sections[-1], flush=True)

    # Diagnosis: what does the monotone constraint cost, and why?
    sections.append(diagnose(data, args, epochs, trees, n))
    elapsed = time.perf_counter() - started
    body = "\n\n".join(
        [
            f"Training: {len(y) // 2} signal candidates (equal shares of {len(trigger.DECAYS)} decays, Exp(tau) lifetimes) and as many "
            f"background candidates ({', '.join(f'{k} {v:.0%}' for k, v in trigger.BACKGROUND_MIX.items())}, after the pre-selection). "
            f"Working point: each model keeps {OUTPUT_RATE:.0%} of {len(data['background'])} fresh background candidates. "
            f"Monotonicity: dense pairs on a grid reaching beyond the data. Total {elapsed:.0f} s.",
            *sections,
            f"Figures: {out / 'trigger_response.png'} (Fig. 4), {out / 'trigger_efficiency.png'} (Fig. 5), {out / 'trigger_decays.png'} (Fig. 6-like).",
        ]
    )
    argv_used = list(argv if argv is not None else sys.argv[1:])
    text = benchmark_record(
        "Simulated LHCb trigger (Kitouni, Nolte and Williams 2023, Section 4, Figs. 4-6)",
        "examples/trigger.py",
        argv_used,
        body,
        f"lightgbm {lgb.__version__}",
    )
    print(text)
    plt.close("all")
    if not args.no_write and not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)
        print(f"written to {RESULTS}")
    return 0


def diagnose(data: dict, args: argparse.Namespace, epochs: int, trees: int, n: int) -> str:
    """The monotone model's loss against the unconstrained one: the data (background composition) or the model?"""
    four = list(trigger.MONOTONE)
    rows = []
    mixes = (
        {"default": None}
        if args.quick
        else {
            "no fakes": {"prompt": 0.9, "material": 0.1, "fake": 0.0},
            "no material": {"prompt": 0.9, "material": 0.0, "fake": 0.1},
            "material 1%, fakes 1%": {"prompt": 0.98, "material": 0.01, "fake": 0.01},
            "prompt only": {"prompt": 1.0},
        }
    )
    for label, mix in mixes.items():
        sample = data if mix is None else simulate(n, args.seed + 1, mix)
        X, y = sample["X"], sample["y"]
        free = family_mean(evaluate(train_network(unconstrained(X), X, y, epochs, args.seed), sample, [0, 1, 2, 3]))
        mono = family_mean(evaluate(train_network(monotonic(X, four), X, y, epochs, args.seed), sample, [0, 1, 2, 3]))
        bdt = family_mean(evaluate(lightgbm(X, y, four, trees), sample, [0, 1, 2, 3]))
        rows.append(
            {
                "background (after pre-selection)": label if mix is None else ", ".join(f"{k} {v:.0%}" for k, v in mix.items() if v),
                "unconstrained NN": free,
                "monotonic NN": mono,
                "LightGBM monotone": bdt,
                "monotonic NN / unconstrained": mono / free if free > 0 else float("nan"),
            }
        )
    text = [format_table(rows, title="Diagnosis 1: the monotone cost against the background composition (four features)")]
    print(text[-1], flush=True)
    X, y = data["X"], data["y"]
    model_rows = []
    variants = (
        {"lambda = 2, width 20 (paper)": (2.0, 20)}
        if args.quick
        else {f"lambda = {lam:g}, width {w}": (lam, w) for lam, w in ((1.0, 20), (4.0, 20), (8.0, 20), (2.0, 64))}
    )
    for label, (lam, width) in variants.items():
        model = train_network(monotonic(X, four, lipschitz=lam, width=width), X, y, epochs, args.seed)
        model_rows.append({"monotonic NN variant": label, "efficiency, all decays": family_mean(evaluate(model, data, [0, 1, 2, 3]))})
    calibration_rows = np.random.default_rng(args.seed + 7).permutation(len(X))[: len(X) // 5]
    model = monotonic(X, four)
    train, _ = _split(X, y, args.seed)
    calibrated = self_calibrate(
        model,
        train,
        (torch.tensor(X[calibration_rows]), torch.tensor(y[calibration_rows])),
        rounds=1 if args.quick else 3,
        epochs=epochs,
        lr=3e-3,
        batch_size=512,
        seed=args.seed,
        progress=False,
    )
    model.eval()
    model_rows.append(
        {
            "monotonic NN variant": f"lambda = 2, tau self-calibrated (Algorithm 4): taus {', '.join(f'{t:.3g}' for t in calibrated.taus)}",
            "efficiency, all decays": family_mean(evaluate(model, data, [0, 1, 2, 3])),
        }
    )
    text.append(format_table(model_rows, title="Diagnosis 2: the model (default background)"))
    return "\n\n".join(text)


if __name__ == "__main__":
    sys.exit(main())
