"""The orthogonal constraint at the worst case: exact singular values (SVD in float64 of the effective
weight) never exceed lambda after training steps, after load_state_dict, in train and eval mode, and in
eval mode and at export they equal lambda to a stated tolerance."""

import pytest
import torch
from torch import nn

import lipnets
from helpers import train_steps
from lipnets import LipschitzLinear
from lipnets.constraints import Orthogonal
from lipnets.constraints.orthogonal import bjorck, bjorck_converged

ROUNDING = 1e-5
"""Float32 rounding allowed above lambda: Björck keeps every singular value <= 1 in exact arithmetic."""

ORTHOGONALITY = 1e-5
"""Stated tolerance of eval mode and export: max |sigma_i / lambda - 1|."""

SHAPES = [(16, 16), (24, 10), (10, 24)]


def singular_values(weight: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(weight.detach().double())


def adam_steps(layer: nn.Module, steps: int = 10, lr: float = 0.05) -> None:
    """Adam steps on a regression towards a steep random map: each step moves the weight far from orthogonal."""
    dtype = layer.weight.dtype
    x = torch.randn(64, layer.in_features, dtype=dtype)
    train_steps(layer, x, 5.0 * x @ torch.randn(layer.in_features, layer.out_features, dtype=dtype), steps, lr)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
@pytest.mark.parametrize("shape", SHAPES)
def test_bjorck_never_exceeds_one_from_any_start(shape: tuple[int, int], scale: float) -> None:
    starts = [
        scale * torch.randn(shape),  # cold, any scale
        scale * (torch.randn(shape[0], 3) @ torch.randn(3, shape[1])),  # rank deficient
        torch.linalg.qr(torch.randn(max(shape), max(shape)))[0][: shape[0], : shape[1]] + 0.3 * torch.randn(shape),  # warm
    ]
    for start in starts:
        for iterations in (1, 2, 6):
            assert singular_values(bjorck(start, iterations)).max() <= 1 + ROUNDING
        assert singular_values(bjorck_converged(start)).max() <= 1 + ROUNDING


@pytest.mark.parametrize("shape", SHAPES)
def test_converged_bjorck_is_the_polar_factor(shape: tuple[int, int]) -> None:
    weight = torch.randn(shape, dtype=torch.float64)
    u, _, vh = torch.linalg.svd(weight, full_matrices=False)
    q = bjorck_converged(weight, tol=1e-12)
    torch.testing.assert_close(q, u @ vh, atol=1e-9, rtol=0)
    gram = q.mT @ q if shape[0] >= shape[1] else q @ q.mT
    assert torch.linalg.matrix_norm(gram - torch.eye(min(shape), dtype=torch.float64), ord=2) <= 1e-12


def assert_orthogonal_layer(layer: LipschitzLinear, constant: float) -> None:
    """<= lambda in train mode; in eval mode and after export every singular value equal within
    ORTHOGONALITY, within 1% of lambda, and none above the largest of train mode: entering eval or
    exporting never raises the bound reported in training."""
    layer.train()
    trained = float(singular_values(layer.weight).max())
    assert trained <= constant * (1 + ROUNDING)
    layer.eval()
    for values in (singular_values(layer.weight), singular_values(lipnets.export.to_plain(layer).weight)):
        assert float(values.max()) <= trained
        assert (values / values.max() - 1).abs().max() <= ORTHOGONALITY
        assert float(values.min()) >= 0.99 * constant
    assert layer.lipschitz_bound() == pytest.approx(float(singular_values(layer.weight).max()), rel=1e-9)


@pytest.mark.parametrize("mode", ["reparam", "project"])
@pytest.mark.parametrize("shape", SHAPES)
def test_layer_after_steps_reload_train_and_eval(shape: tuple[int, int], mode: str) -> None:
    layer = LipschitzLinear(shape[1], shape[0], norm="orthogonal", lipschitz=0.7, mode=mode)
    adam_steps(layer)
    assert_orthogonal_layer(layer, 0.7)
    reloaded = LipschitzLinear(shape[1], shape[0], norm="orthogonal", lipschitz=0.7, mode=mode)
    reloaded.load_state_dict(layer.state_dict())
    assert_orthogonal_layer(reloaded, 0.7)
    x = torch.randn(8, shape[1])
    torch.testing.assert_close(reloaded.eval()(x), layer.eval()(x))


@pytest.mark.parametrize("lipschitz", [0.3, 0.5, 2.0, 10.0])
def test_projection_never_erases_a_uniformly_scaled_weight(lipschitz: float) -> None:
    """A projection from G = c I (a constant that is not 1, a weight scaled by an edit) once put every
    singular value at sqrt(3), where Björck's step maps them to 0: a layer with lambda = 0.5 started
    with singular values 1e-6. Now they start at lambda and a scaled weight keeps most of them."""
    layer = LipschitzLinear(6, 24, norm="orthogonal", lipschitz=lipschitz, mode="project")
    assert (singular_values(layer.weight) / lipschitz - 1).abs().max() <= 0.05
    for scale in (4.0, 1e4):
        edited = {**layer.state_dict(), "weight": layer.weight.detach() * scale}
        layer.load_state_dict(edited)  # train mode: one warm projection
        values = singular_values(layer.weight)
        assert values.max() <= lipschitz * (1 + ROUNDING) and values.min() >= 0.9 * lipschitz


def test_project_mode_stays_near_orthogonal_during_training() -> None:
    """One warm Björck step per optimizer step keeps the stored weight <= lambda and close to orthogonal,
    and entering eval mode converges it at the scale of its largest singular value, so training resumes
    from an orthogonal weight and the bound does not rise."""
    layer = LipschitzLinear(32, 32, norm="orthogonal", lipschitz=2.0, mode="project")
    adam_steps(layer, steps=20, lr=1e-3)
    values = singular_values(layer.weight)
    assert values.max() <= 2.0 * (1 + ROUNDING)
    assert (values / 2.0 - 1).abs().max() <= 0.05
    layer.eval()
    refined = singular_values(layer.weight)
    assert refined.max() <= values.max() and (refined / refined.max() - 1).abs().max() <= ORTHOGONALITY
    assert (refined / 2.0 - 1).abs().max() <= 0.05


@pytest.mark.parametrize("lipschitz", [0.5, 2.0])
@pytest.mark.parametrize("shape", SHAPES)
def test_project_mode_trains_on_the_tangent_part_of_the_gradient(shape: tuple[int, int], lipschitz: float) -> None:
    """A mode="project" training forward multiplies by the stored weight W = c Q itself (bit for bit), and
    the gradient that reaches W is the plain gradient G minus its normal part W sym(WᵀG) / c² (tall W;
    sym(G Wᵀ) W / c² for wide W), computed here in float64 from the plain layer's own gradient."""
    out_features, in_features = shape
    layer = LipschitzLinear(in_features, out_features, norm="orthogonal", lipschitz=lipschitz, mode="project", bias=False)
    x, probe = torch.randn(32, in_features), torch.randn(32, out_features)
    (layer(x) * probe).sum().backward()
    stored = layer.weight.detach()
    plain = stored.clone().requires_grad_()
    assert torch.equal(layer(x), nn.functional.linear(x, plain))
    (nn.functional.linear(x, plain) * probe).sum().backward()
    g, w, scale = plain.grad.double(), stored.double(), lipschitz
    if out_features >= in_features:
        inner = w.mT @ g
        expected = g - w @ (inner + inner.mT) / (2 * scale**2)
        normal_part = w.mT @ layer.weight.grad.double()
    else:
        inner = g @ w.mT
        expected = g - (inner + inner.mT) @ w / (2 * scale**2)
        normal_part = layer.weight.grad.double() @ w.mT
    torch.testing.assert_close(layer.weight.grad.double(), expected, rtol=1e-5, atol=1e-5 * float(g.abs().max()))
    assert float((normal_part + normal_part.mT).abs().max()) <= 1e-4 * float(g.abs().max()) * lipschitz
    layer.eval()
    layer.weight.grad = None
    (layer(x) * probe).sum().backward()  # eval mode: the plain gradient
    torch.testing.assert_close(layer.weight.grad, plain.grad)


@pytest.mark.parametrize("state", ["fresh", "trained", "tiny", "rescaled"])
@pytest.mark.parametrize("shape", [*SHAPES[:2], (4, 9)])
def test_the_tangent_gradient_never_lengthens_a_gradient(shape: tuple[int, int], state: str) -> None:
    """The map from the gradient at the weight to the gradient the weight receives, as a matrix from unit
    impulses, has operator norm <= 1 in every state of a feasible weight (fresh, after Adam steps, loaded
    tiny or rescaled), so bounds on per-sample gradients (private training) hold through it."""
    out_features, in_features = shape
    layer = LipschitzLinear(in_features, out_features, norm="orthogonal", lipschitz=0.7, mode="project", dtype=torch.float64)
    if state == "trained":
        adam_steps(layer)
    elif state in ("tiny", "rescaled"):
        layer.load_state_dict({**layer.state_dict(), "weight": layer.weight.detach() * (1e-4 if state == "tiny" else 0.9)})
    weight = layer.weight.detach().clone().requires_grad_()
    used = layer.weight_constraint().trained(weight)
    size = weight.numel()
    columns = [
        torch.autograd.grad(used, weight, impulse.reshape(shape), retain_graph=True)[0].flatten()
        for impulse in torch.eye(size, dtype=torch.float64)
    ]
    operator = torch.stack(columns, dim=1)
    assert float(torch.linalg.matrix_norm(operator, ord=2)) <= 1 + 1e-12
    assert float(torch.linalg.matrix_norm(operator, ord=2)) >= 1 - 1e-12  # the tangent directions pass unchanged


def test_gradient_norm_preserved_in_eval() -> None:
    layer = LipschitzLinear(12, 12, norm="orthogonal", lipschitz=1.5, bias=False)
    adam_steps(layer)
    layer.eval()
    x = torch.randn(32, 12)
    ratios = torch.linalg.vector_norm(layer(x), dim=1) / torch.linalg.vector_norm(x, dim=1)
    torch.testing.assert_close(ratios, torch.full_like(ratios, 1.5), atol=1.5 * ORTHOGONALITY, rtol=0)


@pytest.mark.parametrize("mode", ["reparam", "project"])
def test_float64_layer_reaches_float64_precision(mode: str) -> None:
    layer = LipschitzLinear(9, 6, norm="orthogonal", dtype=torch.float64, mode=mode)
    adam_steps(layer)
    trained = float(singular_values(layer.weight).max())
    layer.eval()
    values = singular_values(layer.weight)
    # orthogonal to float64 precision; reparam: a float32 rounding margin (about 1e-6) below the cap;
    # project: at most the largest singular value of the trained weight, and within 1% of the cap
    assert values.max() - values.min() <= 1e-12
    assert values.max() <= 1 and values.max() <= trained
    assert values.min() > (1 - 2e-6 if mode == "reparam" else 0.99)


@pytest.mark.parametrize("options", [{"iterations": 0}, {"step_iterations": 1.5}, {"tol": -1.0}, {"tol": float("nan")}])
def test_bad_options_are_refused(options: dict) -> None:
    with pytest.raises(ValueError, match=r"iterations|tol"):
        Orthogonal(1.0, **options)


def test_eval_cache_follows_in_place_updates() -> None:
    """The eval fast path (cached weight, no parametrize) sees optimizer steps and load_state_dict."""
    layer = LipschitzLinear(8, 8, norm="orthogonal", bias=False, mode="reparam").eval()
    x = torch.randn(4, 8)
    before = layer(x).detach()
    with torch.no_grad():
        layer.parametrizations.weight.original.add_(torch.randn(8, 8))
    after = layer(x)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(
        after, x @ layer.weight_constraint().refine(layer.weight_constraint().normalize(layer.parametrizations.weight.original.detach())).T
    )
    other = LipschitzLinear(8, 8, norm="orthogonal", bias=False, mode="reparam")
    layer.load_state_dict(other.state_dict())
    torch.testing.assert_close(layer(x), other.eval()(x))


def test_warm_projection_lands_near_orthogonal() -> None:
    """One warm Björck step after a step of spectral size 0.2 stays <= lambda and within 7% of it: the
    warm start is not shrunk by the loose bounds that scale a cold one."""
    generator = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(32, 32, dtype=torch.float64, generator=generator))[0]
    step = torch.randn(32, 32, dtype=torch.float64, generator=generator)
    moved = 0.5 * (q + 0.2 * step / torch.linalg.matrix_norm(step, ord=2))
    values = singular_values(Orthogonal(0.5).project(moved))
    assert values.max() <= 0.5 * (1 + ROUNDING)
    assert values.min() >= 0.5 * 0.93
