"""Whole-model guarantees: empirical lower bound <= sound bound <= requested constant, for every
chain of norms and both modes, after training, after reload, in train and eval mode."""

import pytest
import torch
from torch import nn

import lipnets
from helpers import largest_jacobian_norm, train_steps
from lipnets import GroupSort, LipschitzLinear, LipschitzMLP, NormChainError, UntrackedModuleError

CONFIGS = [
    {"input_norm": "1"},
    {"input_norm": "inf"},
    {"input_norm": "2"},
    {"input_norm": "2", "hidden_norm": "2"},
    {"input_norm": "2", "hidden_norm": "2-inf"},
    {"input_norm": "1", "distribute": "output"},
    {"input_norm": "1", "activation": "fullsort"},
    {"input_norm": "2", "activation": "maxmin"},
    {"input_norm": "inf", "activation": "abs"},
]


@pytest.mark.parametrize("mode", ["reparam", "project"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_empirical_below_bound_below_request(config: dict, mode: str) -> None:
    model = LipschitzMLP(6, 3, (16, 16), lipschitz=2.5, mode=mode, **config)
    x = torch.randn(128, 6)
    y = 10 * torch.sin(3 * x[:, :3]) + 5 * x[:, 3:]  # steeper than the constant allows
    train_steps(model, x, y, steps=30)
    p_in, p_out = lipnets.tracked_norms(model)
    reloaded = LipschitzMLP(6, 3, (16, 16), lipschitz=2.5, mode=mode, **config)
    reloaded.load_state_dict(model.state_dict())
    for candidate in (model, reloaded):
        for training in (True, False):
            candidate.train(training)
            bound = lipnets.lipschitz_bound(candidate)
            assert bound <= 2.5 * (1 + 1e-5)
            assert lipnets.empirical_lipschitz(candidate, x[:32], steps=40) <= bound * (1 + 1e-6)
            assert largest_jacobian_norm(candidate, x[:16], p_in, p_out) <= bound * (1 + 1e-6)


def test_bound_is_the_product_of_exact_layer_norms() -> None:
    model = LipschitzMLP(5, 2, (8, 8), lipschitz=3.0, input_norm="1")
    layers = [m for m in model if isinstance(m, LipschitzLinear)]
    product = 1.0
    for layer in layers:
        product *= layer.lipschitz_bound()
    assert lipnets.lipschitz_bound(model) == pytest.approx(product, rel=1e-12)
    assert [layer.norm for layer in layers] == ["1-inf", "inf", "inf"]


def test_layer_constants_split_as_requested() -> None:
    per_layer = LipschitzMLP(3, 1, (4, 4), lipschitz=8.0)
    output = LipschitzMLP(3, 1, (4, 4), lipschitz=8.0, distribute="output")
    assert [m.lipschitz for m in per_layer if isinstance(m, LipschitzLinear)] == pytest.approx([2.0, 2.0, 2.0])
    assert [m.lipschitz for m in output if isinstance(m, LipschitzLinear)] == pytest.approx([1.0, 1.0, 8.0])


def test_gnp_network_reaches_its_bound() -> None:
    """With square orthogonal layers and GroupSort the Jacobian norm equals the bound everywhere
    (gradient norm preservation), so the bound is tight, not just sound."""
    model = LipschitzMLP(4, 1, (4, 4), input_norm="2", activation="groupsort")
    x = torch.randn(4, 4)
    assert largest_jacobian_norm(model, x, "2", "2") == pytest.approx(lipnets.lipschitz_bound(model), rel=1e-3)


def test_chain_mismatch_names_both_layers() -> None:
    """An l_inf output cannot feed an l2 input without a dimension factor: refused, naming both layers.
    The other direction is free (||y||_inf <= ||y||_2), so l2 then l_inf composes into a 2 -> inf bound."""
    model = nn.Sequential(LipschitzLinear(4, 8, norm="inf"), GroupSort(), LipschitzLinear(8, 1, norm="2"))
    with pytest.raises(NormChainError, match=r"layer '0' outputs in the linf norm but the next layer '2'"):
        lipnets.lipschitz_bound(model)
    free = nn.Sequential(LipschitzLinear(4, 8, norm="2"), GroupSort(), LipschitzLinear(8, 1, norm="inf"))
    assert lipnets.tracked_norms(free) == ("2", "inf")
    assert lipnets.lipschitz_bound(free) <= free[0].lipschitz_bound() * free[2].lipschitz_bound() * (1 + 1e-15)


def test_untracked_module_is_refused() -> None:
    with pytest.raises(UntrackedModuleError, match=r"nn.Linear|Linear"):
        lipnets.lipschitz_bound(nn.Sequential(nn.Linear(3, 3), nn.ReLU()))


def test_group_size_must_divide_the_width() -> None:
    with pytest.raises(ValueError, match=r"group_size=4 does not divide the hidden width 6"):
        LipschitzMLP(3, 1, (6,), group_size=4)
    with pytest.raises(ValueError, match=r"divisible by 3"):
        GroupSort(3)(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"positive integer"):
        GroupSort(0)


def test_activations_sort_as_documented() -> None:
    x = torch.tensor([[3.0, 1.0, -2.0, 5.0]])
    torch.testing.assert_close(GroupSort(2)(x), torch.tensor([[1.0, 3.0, -2.0, 5.0]]))
    torch.testing.assert_close(GroupSort(4)(x), torch.tensor([[-2.0, 1.0, 3.0, 5.0]]))
    torch.testing.assert_close(lipnets.MaxMin()(x), torch.tensor([[3.0, 5.0, -2.0, 1.0]]))
    torch.testing.assert_close(lipnets.FullSort()(x), torch.tensor([[-2.0, 1.0, 3.0, 5.0]]))
    torch.testing.assert_close(lipnets.Abs()(x), x.abs())
    images = torch.randn(2, 6, 3, 3)
    torch.testing.assert_close(GroupSort(3, dim=1)(images), images.unflatten(1, (2, 3)).sort(2).values.flatten(1, 2))


@pytest.mark.parametrize("activation", [GroupSort(2), GroupSort(2, dim=1), lipnets.MaxMin(), lipnets.MaxMin(dim=1)])
def test_pair_sorts_train_and_infer_alike(activation: nn.Module) -> None:
    """With a gradient to track the pairs are permuted by gather: the same values as the inference path,
    ties included, and a gradient that is a permutation of the incoming one (gradient norm preserving)."""
    x = torch.randn(3, 6, 4, 4)
    x[:, 1] = x[:, 0]  # ties
    inputs = x.clone().requires_grad_(True)
    output = activation(inputs)
    with torch.no_grad():
        torch.testing.assert_close(output, activation(x), atol=0, rtol=0)
    upstream = torch.arange(output.numel(), dtype=torch.float32).reshape(output.shape)
    output.backward(upstream)
    assert torch.equal(inputs.grad.flatten().sort().values, upstream.flatten())
