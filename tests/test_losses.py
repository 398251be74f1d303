"""Each loss against a value computed by hand, the dynamic margins against brute force, and bad input."""

import math

import pytest
import torch

from lipnets import losses as L

SCORES = torch.tensor([0.5, -0.2, 2.0])
LABELS01 = torch.tensor([1, 0, 0])
LABELS_PM = torch.tensor([1.0, -1.0, -1.0])
LOGITS = torch.tensor([[1.0, 0.2, -0.5], [0.0, 0.3, 0.1]])
CLASSES = torch.tensor([0, 2])


def softplus(value: float) -> float:
    return math.log1p(math.exp(value))


def test_tau_bce_matches_eq_5_1_by_hand():
    # BCE(y, tau f) = softplus(-tau f) for y = 1 and softplus(tau f) for y = 0, tau = 2
    expected = (softplus(-1.0) + softplus(-0.4) + softplus(4.0)) / 3
    for labels in (LABELS01, LABELS_PM, LABELS01[:, None]):
        assert float(L.TauBCEWithLogitsLoss(tau=2.0)(SCORES, labels)) == pytest.approx(expected, rel=1e-6)
    assert float(L.tau_bce_with_logits(SCORES[:, None], LABELS01, tau=2.0, reduction="sum")) == pytest.approx(3 * expected, rel=1e-6)


def test_tau_cross_entropy_by_hand():
    # row 0: label 0, tau-logits (2, 0.4, -1); row 1: label 2, tau-logits (0, 0.6, 0.2)
    row0 = -2.0 + math.log(math.exp(2.0) + math.exp(0.4) + math.exp(-1.0))
    row1 = -0.2 + math.log(1.0 + math.exp(0.6) + math.exp(0.2))
    values = L.TauCrossEntropyLoss(tau=2.0, reduction="none")(LOGITS, CLASSES)
    assert values.tolist() == pytest.approx([row0, row1], rel=1e-6)


def test_hinge_matches_eq_5_4_by_hand():
    # y f = (0.5, 0.2, -2.0); max(0, 1 - y f) = (0.5, 0.8, 3.0)
    assert L.HingeLoss(margin=1.0, reduction="none")(SCORES, LABELS01).tolist() == pytest.approx([0.5, 0.8, 3.0])
    # margin 0.1: (0, 0, 2.1)
    assert float(L.HingeLoss(margin=0.1)(SCORES, LABELS_PM)) == pytest.approx(2.1 / 3)


def test_multiclass_hinge_on_the_top1_margin_by_hand():
    # row 0: 1 - (1.0 - 0.2) = 0.2; row 1: 1 - (0.1 - 0.3) = 1.2
    assert L.MulticlassHingeLoss(margin=1.0, reduction="none")(LOGITS, CLASSES).tolist() == pytest.approx([0.2, 1.2])


def test_kr_is_the_class_balanced_dual_by_hand():
    # -(mean f on positives - mean f on negatives) = -(0.5 - 0.9) = 0.4
    assert float(L.KRLoss()(SCORES, LABELS01)) == pytest.approx(0.4)
    # multiclass one-vs-rest: class 0: -(1.0 - 0.0); class 1: -(0 - 0.25), absent positives count 0;
    # class 2: -(0.1 - (-0.5)); averaged over classes
    expected = (-1.0 + 0.25 - 0.6) / 3
    assert float(L.KRLoss()(LOGITS, CLASSES)) == pytest.approx(expected)


def test_hkr_binary_and_multiclass_by_hand():
    # binary: KR 0.4 + alpha 2 * mean hinge (0.5 + 0.8 + 3.0) / 3
    assert float(L.HKRLoss(alpha=2.0, margin=1.0)(SCORES, LABELS01)) == pytest.approx(0.4 + 2 * 4.3 / 3)
    expected = (-1.0 + 0.25 - 0.6) / 3 + 3.0 * (0.2 + 1.2) / 2
    assert float(L.HKRLoss(alpha=3.0, margin=1.0)(LOGITS, CLASSES)) == pytest.approx(expected)


def test_dynamic_hinge_matches_eq_5_3_by_hand():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    loss = L.DynamicHingeLoss()
    target = loss.targets(x, LABELS01)
    # margins: half the l2 distance to the nearest point of the other class
    assert target[:, 1].tolist() == pytest.approx([0.5, 2.5, 0.5])
    # y f = (0.5, 0.2, -2.0): max(0, 0.5 - 0.5), max(0, 2.5 - 0.2), max(0, 0.5 + 2.0)
    assert float(loss(SCORES, target)) == pytest.approx((0.0 + 2.3 + 2.5) / 3)
    # l1 and l-inf: (3, 4) is at l1 distance 7 and l-inf distance 4 from (0, 0)
    assert L.dynamic_margins(x, LABELS01, norm="1").tolist() == pytest.approx([0.5, 3.5, 0.5])
    assert L.dynamic_margins(x, LABELS01, norm="inf").tolist() == pytest.approx([0.5, 2.0, 0.5])


@pytest.mark.parametrize("norm, p", [("1", 1.0), ("2", 2.0), ("inf", float("inf"))])
def test_chunked_margins_equal_brute_force(norm, p):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(700, 3, generator=generator, dtype=torch.float64)
    y = (torch.rand(700, generator=generator) > 0.3).long()
    distances = torch.cdist(x, x, p=p)
    other = y[:, None] != y[None, :]
    expected = distances.masked_fill(~other, float("inf")).amin(dim=1) / 2
    # blocks much smaller than the problem, and of sizes that do not divide it
    got = L.dynamic_margins(x, y, norm=norm, max_elements=997)
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_dynamic_margins_scale_to_1e5_points_in_bounded_blocks(monkeypatch):
    # 10^5 points: every distance block stays within max_elements pairs (no N x N matrix).
    sizes = []
    original = torch.cdist

    def recording_cdist(a, b, **kwargs):
        sizes.append(a.shape[0] * b.shape[0])
        return original(a, b, **kwargs)

    monkeypatch.setattr(torch, "cdist", recording_cdist)
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(100_000, 2, generator=generator)
    y = torch.zeros(100_000, dtype=torch.long)
    y[:200] = 1  # a small class keeps the brute-force cost low; the 10^5 queries are still blocked
    x[:200] += 2.0
    margins = L.dynamic_margins(x, y, max_elements=2**18)
    assert max(sizes) <= 2**18
    assert margins.shape == (100_000,) and torch.isfinite(margins).all() and (margins > 0).all()
    # spot-check against brute force
    for index in (0, 150, 5_000, 99_999):
        others = x[y != y[index]]
        assert float(margins[index]) == pytest.approx(float(torch.linalg.vector_norm(others - x[index], dim=1).min()) / 2, rel=1e-6)


def test_gradients_flow_and_modules_match_functional_twins():
    scores = SCORES.clone().requires_grad_(True)
    pairs = [
        (L.TauBCEWithLogitsLoss(3.0), L.tau_bce_with_logits, {"tau": 3.0}),
        (L.HingeLoss(0.3), L.hinge, {"margin": 0.3}),
        (L.KRLoss(), L.kr, {}),
        (L.HKRLoss(5.0, 0.2), L.hkr, {"alpha": 5.0, "margin": 0.2}),
    ]
    for module, function, options in pairs:
        value = module(scores, LABELS01)
        assert torch.equal(value, function(scores, LABELS01, **options))
        (grad,) = torch.autograd.grad(value, scores)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: L.HingeLoss()(torch.zeros(3, 2), LABELS01), "one score per sample"),
        (lambda: L.TauBCEWithLogitsLoss()(SCORES, torch.tensor([0, 1, 2])), "binary labels"),
        (lambda: L.HKRLoss()(SCORES, torch.tensor([0.0, 0.5, 1.0])), "binary labels"),
        (lambda: L.HingeLoss()(SCORES, torch.tensor([0, 1])), "3 labels"),
        (lambda: L.MulticlassHingeLoss()(LOGITS, torch.tensor([0, 3])), r"labels in \[0, 3\)"),
        (lambda: L.TauCrossEntropyLoss()(LOGITS, torch.tensor([-1, 0])), r"labels in \[0, 3\)"),
        (lambda: L.TauCrossEntropyLoss()(LOGITS, torch.tensor([0.5, 1.0])), "integer class labels"),
        (lambda: L.TauCrossEntropyLoss()(SCORES, LABELS01), r"shape \(N, K\)"),
        (lambda: L.MulticlassHingeLoss()(LOGITS, CLASSES[:1]), "2 integer labels"),
        (lambda: L.DynamicHingeLoss()(SCORES, LABELS01), r"shape \(N, 2\)"),
        (lambda: L.DynamicHingeLoss()(SCORES, torch.tensor([[1.0, -0.5], [0.0, 1.0], [0.0, 1.0]])), ">= 0"),
        (lambda: L.dynamic_margins(torch.zeros(3, 2), torch.ones(3)), "both classes"),
        (lambda: L.dynamic_margins(torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), torch.tensor([0, 1])), "NaN"),
        (lambda: L.TauBCEWithLogitsLoss(tau=0.0), "tau must be finite and > 0"),
        (lambda: L.HingeLoss(margin=-1.0), "margin must be finite and > 0"),
        (lambda: L.HKRLoss(alpha=float("nan")), "alpha must be finite and > 0"),
        (lambda: L.HingeLoss(reduction="average"), "unknown reduction"),
        (lambda: L.DynamicHingeLoss(norm="3"), "norm"),
    ],
)
def test_bad_input_is_refused_clearly(call, message):
    with pytest.raises(ValueError, match=message):
        call()
