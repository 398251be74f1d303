"""Exports in lower weight precision that re-certify what they ship, and refuse to lose a guarantee.

The model is lowered to a `Program`; its weights are rounded to the shipped precision (float32, float16,
bfloat16, or int8 through onnxruntime); the rounded program is certified from the rounded values
(`Program.certificate`: its Lipschitz bound and the certified slope of every monotone feature) and
compared with what the model promised. The exported function itself is then checked on dense pairs of
inputs along each monotone feature, with a tolerance derived from the rounding of its float32 evaluation
(`Program.error_bound`), never from the size of its outputs. See docs/reference/export.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..bounds import lipschitz_bound, monotone_signs
from ..validation import check_features
from .program import ROUNDINGS, Program, trace_program

WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ExportGuaranteeError(ValueError):
    """The exported weights would lose a guarantee the model has; the message gives the measured loss."""


@dataclass(frozen=True)
class PairCheck:
    """Dense pairs (x, x + t e_i) along the monotone features, evaluated by the exported function itself.

    A violation is a decrease (against the feature's direction) beyond what the rounding of both
    evaluations can explain. `worst_decrease` is the largest decrease seen, within rounding or not;
    `rounding` the largest evaluation error bound of the rows checked.
    """

    pairs: int
    violations: int
    worst_decrease: float
    rounding: float

    @property
    def ok(self) -> bool:
        return self.violations == 0


@dataclass(frozen=True)
class GuaranteeReport:
    """What an export ships and what it still guarantees, measured on the rounded weights.

    `bound_before` is the model's own bound (or its program's certificate when it reports none),
    `bound_after` the certificate of the shipped weights, both from `norms[0]` to `norms[1]`. `signs`
    are the monotone directions the model promises (per input; 0: none), `slope_before` /
    `slope_after` the certified smallest slope along each (inf where no direction is promised;
    negative means not provably monotone). `max_change` is the largest |shipped - model| on the check
    rows (exact arithmetic), `error_bound` the largest float32 evaluation error bound there (both
    grow with the inputs' size; the dense pairs also run on rows up to 1e6). `lost`
    names every guarantee the rounding lost (empty: none).
    """

    weights: str
    rounding: str
    norms: tuple[str, str]
    bound_before: float
    bound_after: float
    signs: torch.Tensor
    slope_before: torch.Tensor
    slope_after: torch.Tensor
    max_change: float
    error_bound: float
    pairs: PairCheck | None = None
    lost: tuple[str, ...] = field(default=())

    def summary(self) -> list[dict]:
        """Rows for `lipnets.io.report.format_table`."""
        monotone = self.signs != 0
        rows = [
            {
                "quantity": f"Lipschitz bound (l{self.norms[0]} -> l{self.norms[1]})",
                "model": self.bound_before,
                "shipped": self.bound_after,
            },
            {"quantity": "max |shipped - model| on the check rows", "model": 0.0, "shipped": self.max_change},
            {"quantity": "float32 evaluation error bound", "model": "-", "shipped": self.error_bound},
        ]
        if bool(monotone.any()):
            rows.append(
                {
                    "quantity": "smallest certified monotone slope",
                    "model": float(self.slope_before[monotone].min()),
                    "shipped": float(self.slope_after[monotone].min()),
                }
            )
        if self.pairs is not None:
            rows.append(
                {
                    "quantity": "dense pairs: violations beyond rounding",
                    "model": "-",
                    "shipped": f"{self.pairs.violations} / {self.pairs.pairs}",
                }
            )
        return rows


@dataclass(frozen=True)
class Export:
    """A program holding the shipped weights, and its `GuaranteeReport` (see `to_low_precision`)."""

    program: Program
    report: GuaranteeReport


def promised_signs(model: nn.Module, program: Program) -> torch.Tensor:
    """The monotone directions (per input) the model promises for its single output, or that its program certifies.

    All zero for models with several outputs (the checks here are about one score).
    """
    if program.out_features != 1:
        return torch.zeros(program.in_features, dtype=torch.float64)
    promised = monotone_signs(model, (program.in_features,))
    signs = (
        program.certificate().monotone_signs()[0] if promised is None else promised.to(torch.float64).reshape(-1, program.in_features)[0]
    )
    return signs.to(torch.float64)


def _promised_bound(model: nn.Module, program: Program) -> float:
    """The model's own bound in its tracked norms, or its program's certificate when it reports none."""
    if isinstance(model, Program):
        return program.lipschitz_bound()
    try:
        return lipschitz_bound(model)
    except (TypeError, ValueError):
        return program.lipschitz_bound()


def certify_export(
    model: nn.Module,
    original: Program,
    shipped: Program,
    *,
    weights: str,
    rounding: str,
    rows: torch.Tensor,
    pairs: PairCheck | None = None,
) -> GuaranteeReport:
    """Compare the certificate of `shipped` (rounded weights) with what `model` and its program `original` guarantee."""
    norms = original.norms
    signs = promised_signs(model, original)
    before, after = original.certificate().slope(signs)[0], shipped.certificate().slope(signs)[0]
    bound_before, bound_after = _promised_bound(model, original), shipped.lipschitz_bound()
    with torch.no_grad():
        change = float((shipped(rows.double()) - original(rows.double())).abs().max())
    error = float(shipped.error_bound(rows, torch.float32).max())
    lost = []
    if bound_after > bound_before:
        lost.append(
            f"the Lipschitz bound (l{norms[0]} -> l{norms[1]}) rises from {bound_before:.7g} to {bound_after:.7g} "
            f"(+{(bound_after - bound_before) / bound_before:.3g} relative)"
        )
    for feature in torch.nonzero(signs).flatten().tolist():
        allowed = min(float(before[feature]), 0.0)
        if float(after[feature]) < allowed:
            direction = "increasing" if signs[feature] > 0 else "decreasing"
            lost.append(
                f"feature {feature} is no longer certified {direction}: its smallest certified slope falls from "
                f"{float(before[feature]):.4g} to {float(after[feature]):.4g}"
            )
    if pairs is not None and not pairs.ok:
        lost.append(
            f"the exported function decreases along a monotone feature beyond rounding on {pairs.violations} of {pairs.pairs} pairs"
        )
    return GuaranteeReport(weights, rounding, norms, bound_before, bound_after, signs, before, after, change, error, pairs, tuple(lost))


def dense_pairs(
    evaluate: Callable[[torch.Tensor], torch.Tensor], program: Program, rows: torch.Tensor, signs: torch.Tensor, *, steps: int = 7
) -> PairCheck:
    """Check `evaluate` (the exported function, float32 rows -> outputs) on pairs along each monotone feature.

    For every row, feature i with sign s != 0 and step t (geometric from 1e-3 to the rows' spread),
    s (f(x + t e_i) - f(x)) may be negative only within the rounding bound of both evaluations, plus
    the certified worst slope times t where the certificate allows a (tiny) decrease.
    """
    rows = check_features(rows, program.in_features).to(torch.float32)
    spread = float((rows.amax(0) - rows.amin(0)).max()) if len(rows) > 1 else 1.0
    sizes = torch.logspace(-3, 0, steps, dtype=torch.float64) * max(spread, 1e-3)
    slopes = program.certificate().slope(signs)[0]
    base = evaluate(rows).to(torch.float64).reshape(len(rows), -1)[:, 0]
    base_error = program.error_bound(rows, torch.float32)[:, 0]
    pairs = violations = 0
    worst, rounding = 0.0, float(base_error.max())
    for feature in torch.nonzero(signs).flatten().tolist():
        for size in sizes:
            moved = rows.clone()
            moved[:, feature] += float(size)
            exact_step = (moved[:, feature].double() - rows[:, feature].double()).abs()
            value = evaluate(moved).to(torch.float64).reshape(len(rows), -1)[:, 0]
            error = program.error_bound(moved, torch.float32)[:, 0]
            decrease = -float(signs[feature]) * (value - base)
            allowed = base_error + error + max(-float(slopes[feature]), 0.0) * exact_step
            pairs += len(rows)
            violations += int((decrease > allowed).sum())
            worst = max(worst, float(decrease.max()))
            rounding = max(rounding, float(error.max()))
    return PairCheck(pairs, violations, max(worst, 0.0), rounding)


def check_rows(program: Program, check_input: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(typical, probe): `check_input` (default: standard normal rows) and, added to probe, rows up to 1e6.

    Both hold float32-representable values (every export computes in float32). Reports measure changes
    on the typical rows; parity and dense pairs also run far outside the data's scale.
    """
    generator = torch.Generator().manual_seed(0)
    if check_input is None:
        check_input = torch.randn(256, program.in_features, generator=generator, dtype=torch.float64)
    typical = check_features(check_input, program.in_features).to(torch.float32).to(torch.float64)
    scales = torch.tensor([1e2, 1e4, 1e6], dtype=torch.float64).repeat_interleave(4)[:, None]
    extreme = torch.randn(len(scales), program.in_features, generator=generator, dtype=torch.float64) * scales
    return typical, torch.cat([typical, extreme.to(torch.float32).to(torch.float64)])


def _weights_name(dtype: torch.dtype | str) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in WEIGHT_DTYPES:
        raise ValueError(f"unsupported weight precision {dtype!r}: choose float32, float16 or bfloat16 (int8: to_onnx_int8)")
    return name


def to_low_precision(
    model: nn.Module,
    dtype: torch.dtype | str = torch.float16,
    *,
    rounding: str = "toward_zero",
    check_input: torch.Tensor | None = None,
) -> Export:
    """The model's program with weights in `dtype` (float32, float16, bfloat16), certified again from them.

    The shipped program computes in float32 with its weights stored in `dtype` (`program.forward`).
    Its bound and monotone slopes are recomputed from the rounded weights, and it is checked on dense
    pairs of `check_input` rows (default: standard normal rows, plus rows up to 1e6) in float32. Raises
    ExportGuaranteeError with the measured loss when the rounded weights would raise the model's bound,
    lose a monotone direction, or decrease beyond rounding; rounding="toward_zero" (the default)
    never increases a weight's magnitude, which keeps the l1 / l_inf constraints of Kitouni et al.
    """
    name = _weights_name(dtype)
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}: choose 'toward_zero' or 'nearest'")
    original = model if isinstance(model, Program) else trace_program(model, check_input=check_input)
    shipped = original.rounded(WEIGHT_DTYPES[name], rounding)
    typical, probe = check_rows(original, check_input)
    with torch.no_grad():
        pairs = dense_pairs(shipped, shipped, probe, promised_signs(model, original))
    report = certify_export(model, original, shipped, weights=name, rounding=rounding, rows=typical, pairs=pairs)
    raise_if_lost(report)
    return Export(shipped, report)


def raise_if_lost(report: GuaranteeReport) -> None:
    """Raise ExportGuaranteeError naming each guarantee the export would lose, with its measured loss."""
    if report.lost:
        advice = " Use rounding='toward_zero'," if report.rounding == "nearest" else ""
        raise ExportGuaranteeError(
            f"refusing the {report.weights} export ({report.rounding} rounding): "
            + "; ".join(report.lost)
            + "."
            + f"{advice} Keep higher-precision weights, or retrain with a smaller Lipschitz constant to leave a margin."
        )
