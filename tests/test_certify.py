"""Certificates hold against PGD, are nearly tight on a GNP network, and refuse bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import lipnets
from helpers_certify import NORMS, held_out, predict, trained_model
from lipnets import AbstainingClassifier, UntrackedModuleError, certified_accuracy, certified_radius
from lipnets.guarantees.attacks import margin_loss, pgd

STEPS, RESTARTS = 50, 4
GNP_FLIP_SHARE = 0.9
"""Share of points PGD flips at 1.05 x the radius on the GNP binary model (measured 0.99 on 300 points)."""


@pytest.mark.parametrize("classes", [2, 10])
@pytest.mark.parametrize("norm", NORMS)
def test_pgd_never_flips_a_prediction_inside_the_certified_radius(classes: int, norm: str) -> None:
    model = trained_model(classes, norm)
    x, _ = held_out(classes)
    prediction = predict(model, x)
    radius = certified_radius(model, x)
    assert len(x) >= 200 and (radius > 0).float().mean() > 0.9  # the test is not vacuous
    adversarial = pgd(model, x, prediction, 0.999 * radius, norm, steps=STEPS, restarts=RESTARTS)
    assert torch.equal(predict(model, adversarial), prediction)
    # The attack did its job: it moved (almost) every point towards the decision boundary.
    with torch.no_grad():
        before = margin_loss(model(x).reshape(len(x), -1), prediction)
        after = margin_loss(model(adversarial).reshape(len(x), -1), prediction)
    assert (after > before).float().mean() > 0.95


def test_certificate_is_nearly_tight_on_a_gradient_norm_preserving_model() -> None:
    model = trained_model(2, "2")  # orthogonal square layers, GroupSort, unit last row: |grad f| = 1
    x, _ = held_out(2)
    prediction = predict(model, x)
    radius = certified_radius(model, x)
    adversarial = pgd(model, x, prediction, 1.05 * radius, "2", steps=STEPS, restarts=RESTARTS)
    flipped = (predict(model, adversarial) != prediction).double().mean().item()
    assert flipped >= GNP_FLIP_SHARE


@pytest.mark.parametrize("norm", NORMS)
def test_last_layer_certificate_is_never_smaller_than_the_generic_one(norm: str) -> None:
    model = trained_model(10, norm)
    x, _ = held_out(10)
    last_layer = certified_radius(model, x, method="last-layer")
    generic = certified_radius(model, x, method="generic")
    assert torch.equal(certified_radius(model, x), last_layer)
    assert (last_layer >= generic * (1 - 1e-12)).all()
    if norm != "2":  # an orthogonal last layer has orthonormal rows: both certificates coincide
        assert (last_layer > generic * 1.001).float().mean() > 0.9
    else:
        assert torch.allclose(last_layer, generic, rtol=1e-5)


def test_generic_multiclass_factor_follows_the_output_norm() -> None:
    # f(x) = W x with W the identity: logits are x itself, L = 1 in every norm.
    torch.manual_seed(0)
    x = torch.randn(50, 3, dtype=torch.float64)
    top2 = x.topk(2, dim=1).values
    gap = top2[:, 0] - top2[:, 1]
    for layer_norm, factor in (("1", 1.0), ("2", math.sqrt(2.0)), ("inf", 2.0)):
        layer = lipnets.LipschitzLinear(3, 3, bias=False, norm=layer_norm, mode="project").double()
        with torch.no_grad():
            layer.weight.copy_(torch.eye(3, dtype=torch.float64))
        layer.project_()  # c I with c <= 1: a rounding margin below 1, or the Gram bound's slack for "2"
        scale = float(layer.effective_weight()[0, 0])
        bound = lipnets.lipschitz_bound(layer)
        assert 0.99 < scale <= bound <= 1.0 and torch.equal(layer.effective_weight(), scale * torch.eye(3, dtype=torch.float64))
        # logits c x: the margin scales by c, the bound is c's (to rounding): the radius is gap / factor
        torch.testing.assert_close(certified_radius(layer, x), scale * gap / (factor * bound), rtol=1e-12, atol=0.0)


def test_certified_accuracy_counts_correct_points_above_eps() -> None:
    model = trained_model(10, "2")
    x, y = held_out(10)
    radius = certified_radius(model, x)
    correct = predict(model, x) == y
    grid = [0.0, 0.1, 0.25, 0.5, 1.0]
    shares = certified_accuracy(model, x, y, grid)
    assert shares == [float((correct & (radius > eps)).double().mean()) for eps in grid]
    assert shares == sorted(shares, reverse=True) and 0 < shares[-2] < shares[0]
    assert certified_accuracy(model, x, y, 0.25) == shares[2]
    assert certified_accuracy(model, x, y, torch.tensor(grid)) == shares
    wrong = (predict(model, x) + 1) % 10  # every point misclassified: radius 0
    assert certified_accuracy(model, x, wrong, [0.0, 0.1]) == [0.0, 0.0]


def test_binary_labels_in_both_conventions_give_the_same_accuracy() -> None:
    model = trained_model(2, "2")
    x, y = held_out(2)
    signed = 2 * y - 1
    assert certified_accuracy(model, x, y, [0.0, 0.5]) == certified_accuracy(model, x, signed, [0.0, 0.5])
    with torch.no_grad():
        scores = model(x)[:, 0]
    radius = certified_radius(model, x)
    assert torch.allclose(radius, scores.abs() / lipnets.lipschitz_bound(model))


def test_radius_of_a_float32_model_and_no_side_effects() -> None:
    model = lipnets.LipschitzMLP(6, 4, hidden=(8,), input_norm="inf").train()
    x = torch.randn(20, 6)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    radius = certified_radius(model, x, method="generic")
    with torch.no_grad():
        top2 = model(x).double().topk(2, dim=1).values
    # l_inf logits: a logit difference is 2L-Lipschitz (docs/reference/certificates.md)
    expected = (top2[:, 0] - top2[:, 1]) / (2 * lipnets.lipschitz_bound(model))
    assert radius.dtype == torch.float64 and radius.shape == (20,)
    assert torch.allclose(radius, expected, rtol=1e-12, atol=0)
    assert model.training and all(torch.equal(before[name], value) for name, value in model.state_dict().items())


def test_abstaining_classifier_rejects_below_the_margin() -> None:
    model = trained_model(10, "2")
    x, y = held_out(10)
    radius = certified_radius(model, x)
    margin = float(radius.median())
    abstainer = AbstainingClassifier(model, margin)
    prediction = abstainer(x)
    accepted = radius >= margin
    assert torch.equal(prediction == -1, ~accepted)
    assert torch.equal(prediction[accepted], predict(model, x)[accepted])
    report = abstainer.evaluate(x, y)
    assert report.coverage == float(accepted.double().mean())
    assert report.accuracy == float((prediction[accepted] == y[accepted]).double().mean())
    everything = AbstainingClassifier(model, 0.0).evaluate(x, y)
    assert everything.coverage == 1.0 and everything.accuracy == float((predict(model, x) == y).double().mean())
    assert math.isnan(AbstainingClassifier(model, float(radius.max()) + 1).evaluate(x, y).accuracy)


@pytest.mark.parametrize("classes", [2, 10])
def test_abstaining_classifier_never_changes_an_accepted_label_within_the_margin(classes: int) -> None:
    # Global robustness with a reject class: near an accepted point the label stays or becomes "reject".
    model = trained_model(classes, "2")
    x, _ = held_out(classes)
    abstainer = AbstainingClassifier(model, 0.3, reject_label=-7)
    prediction = abstainer(x)
    accepted = prediction != -7
    assert accepted.sum() >= 50
    points, labels = x[accepted], prediction[accepted]
    adversarial = pgd(model, points, labels, 0.999 * 0.3, "2", steps=STEPS, restarts=2)
    moved = abstainer(adversarial)
    assert ((moved == labels) | (moved == -7)).all()


def test_bad_input_raises_clear_errors() -> None:
    model = trained_model(10, "inf")
    x, y = held_out(10)
    with pytest.raises(ValueError, match=r"eps"):
        certified_accuracy(model, x, y, -0.1)
    with pytest.raises(ValueError, match=r"eps"):
        certified_accuracy(model, x, y, [0.1, float("nan")])
    with pytest.raises(ValueError, match=r"class indices in 0..9"):
        certified_accuracy(model, x, torch.full_like(y, 10), 0.1)
    with pytest.raises(ValueError, match=r"one label per input"):
        certified_accuracy(model, x, y[:-1], 0.1)
    binary = trained_model(2, "inf")
    with pytest.raises(ValueError, match=r"\{0, 1\} or \{-1, \+1\}"):
        certified_accuracy(binary, x, torch.tensor([0, -1] * 150), 0.1)
    with pytest.raises(ValueError, match=r"NaN"):
        certified_radius(model, torch.full((2, 64), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match=r"unknown method"):
        certified_radius(model, x, method="tight")
    with pytest.raises(ValueError, match=r"last-layer"):
        certified_radius(lipnets.MonotonicMLP(3, [1, 0, 0], hidden=(8,), out_features=2), torch.zeros(2, 3), method="last-layer")
    with pytest.raises(UntrackedModuleError, match=r"lipnets layers"):
        certified_radius(nn.Sequential(nn.Linear(64, 10)), x.float())
    with pytest.raises(UntrackedModuleError, match=r"no layer with a tracked norm"):
        certified_radius(nn.Sequential(lipnets.GroupSort(2)), x)
    with pytest.raises(ValueError, match=r"margin"):
        AbstainingClassifier(model, -1.0)
    with pytest.raises(ValueError, match=r"negative integer"):
        AbstainingClassifier(model, 0.1, reject_label=3)
