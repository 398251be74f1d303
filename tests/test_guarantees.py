"""Guarantees that cannot drift from the function that runs (issue 11): the bound is the bound of the
weight the forward multiplies by in every state, user modules are bounded from what they compute,
tolerances only make guarantees stricter, an infeasible state is projected or refused wherever a
guarantee is reported or shipped, and bad input gets a clear error. Every test is written from the
description of the failure, over several layers, scales and precisions, not one tuned input."""

import math

import pytest
import torch
from torch import nn

import lipnets
from helpers import impulse_jacobian, jacobian_at, matmul_weights, matrix_norm, train_steps
from lipnets import GroupSort, GuaranteeError, LipschitzLinear, MonotonicityError, UntrackedModuleError
from lipnets.export import to_onnx, to_plain
from lipnets.io import CheckpointError, load_weights, save_weights

NORMS = ["1", "inf", "1-inf", "2-inf", "2", "orthogonal"]


def exact_layer_norm(layer: LipschitzLinear, weight: torch.Tensor) -> float:
    return matrix_norm(weight.double(), str(layer.input_norm), str(layer.output_norm))


# -- break 1: one weight in every state ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["reparam", "project"])
@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e4])
@pytest.mark.parametrize("norm", ["orthogonal", "2", "inf"])
def test_bound_is_the_norm_of_the_weight_the_forward_uses_in_every_state(norm: str, scale: float, mode: str) -> None:
    """Tiny and huge raw weights loaded through a state dict: in train and eval mode, with gradients on
    and off, the weight the matmul multiplies by has exactly the reported norm, and the export (an eval
    copy, refined in mode="project") is never above it."""
    layer = LipschitzLinear(8, 6, norm=norm, mode=mode)
    layer.load_state_dict({key: value * scale for key, value in layer.state_dict().items()})
    x = torch.randn(4, 8)
    for training in (True, False):
        layer.train(training)
        for grad in (True, False):
            with torch.set_grad_enabled(grad):
                bound = lipnets.lipschitz_bound(layer)
                _, weights = matmul_weights(layer, x)
            exact = exact_layer_norm(layer, weights[layer])
            assert exact <= bound <= exact * (1 + 1e-12), (training, grad)
        plain = to_plain(layer)
        assert exact_layer_norm(layer, impulse_jacobian(plain.double(), (8,))) <= bound


@pytest.mark.parametrize("scale", [1e-4, 0.5, 1e4])
def test_an_orthogonal_convolution_never_exports_above_the_bound_it_reported(scale: float) -> None:
    """The reported failure: a projected orthogonal convolution (the default) loaded with weights scaled by
    1e-4 reported 5.9e-5 in train mode, and its export, refined to lambda, was 0.33 on the same input. The
    bound reported in either mode covers the exported function (exact, from unit impulses), and eval's
    bound never exceeds train's."""
    layer = lipnets.LipschitzConv2d(2, 3, 3, padding=1, norm="orthogonal")
    layer.load_state_dict({key: value * scale for key, value in layer.state_dict().items()})
    bounds = []
    for training in (True, False):
        layer.train(training)
        bounds.append(lipnets.lipschitz_bound(layer, (2, 5, 5)))
        exported = impulse_jacobian(to_plain(layer).double(), (2, 5, 5))
        assert float(torch.linalg.matrix_norm(exported, ord=2)) <= bounds[-1]
    assert bounds[1] <= bounds[0]


def test_onnx_export_of_tiny_orthogonal_weights_keeps_the_bound(tmp_path) -> None:
    """The reported failure: raw weights scaled by 1e-4, bound 1e-4 while the exported function was 1-Lipschitz."""
    layer = LipschitzLinear(6, 6, norm="orthogonal")
    layer.load_state_dict({key: value * 1e-4 for key, value in layer.state_dict().items()})
    bound = lipnets.lipschitz_bound(layer)
    import onnxruntime

    path = to_onnx(layer, tmp_path / "tiny.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = torch.cat([torch.zeros(1, 6), torch.eye(6)]).numpy()
    outputs = torch.from_numpy(session.run(None, {"input": inputs})[0]).double()
    exact = matrix_norm((outputs[1:] - outputs[:1]).T, "2", "2")
    assert exact <= bound * (1 + 1e-6)  # onnxruntime's float32 arithmetic, not the weights, rounds here


# -- break 2 and user modules: bounded from what they compute --------------------------------------------


class Residual(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


class Scaled(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 3.0 * super().forward(x) - x / 2


class Concatenated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = LipschitzLinear(5, 5, norm="orthogonal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.layer(x), x], dim=1).flatten(1)


class Rejoined(nn.Module):
    """The halves of a layer's output, concatenated again and summed with a dropped-out copy."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = LipschitzLinear(5, 6, norm="orthogonal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.layer(x)
        return torch.cat(hidden.chunk(2, 1), dim=1) + nn.functional.dropout(hidden, 1.0)  # dropout(p=1): zero


@pytest.mark.parametrize(
    "build, expected",
    [
        (lambda: Residual(LipschitzLinear(5, 5, norm="orthogonal")), 2.0),
        (lambda: Scaled(LipschitzLinear(5, 5, norm="orthogonal")), 3.5),
        (Concatenated, math.sqrt(2.0)),
    ],
)
def test_user_modules_are_bounded_from_what_they_compute(build, expected: float) -> None:
    """Affine user modules: the impulse Jacobian is the exact constant; the composed bound dominates it,
    is tight for these, and exceeds the children-only bound that used to be reported."""
    model = build()
    bound = lipnets.lipschitz_bound(model)
    exact = matrix_norm(impulse_jacobian(to_plain(model).double(), (5,)), "2", "2")
    assert exact <= bound <= expected * (1 + 1e-12)
    assert bound > 1.05


def test_split_pieces_and_zero_terms_are_bounded() -> None:
    """torch.cat of a chunk tuple is bounded (each piece by the whole, so sqrt 2 for two halves in l2), and
    a term that is identically zero (dropout with p=1 in training) adds nothing; both used to crash."""
    model = Rejoined()
    bound = lipnets.lipschitz_bound(model)
    exact = matrix_norm(impulse_jacobian(to_plain(model).double(), (5,)), "2", "2")
    assert exact <= bound <= math.sqrt(2.0) * (1 + 1e-12)


def test_norm_tracking_of_branches_in_different_norms() -> None:
    """f(x) + g(x) with f l2 -> l2 and g l1 -> l_inf: both hold from l1 to l_inf for free, and the sum's
    bound in those norms dominates the exact l1 -> l_inf Jacobian norm (its largest entry)."""

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l2 = nn.Sequential(LipschitzLinear(6, 6, norm="orthogonal", lipschitz=2.0), GroupSort())
            self.l1 = LipschitzLinear(6, 6, norm="1-inf", lipschitz=3.0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.l2(x) + self.l1(x)

    model = Mixed()
    train_steps(model, torch.randn(32, 6), 10 * torch.randn(32, 6), 10)
    assert lipnets.tracked_norms(model) == ("1", "inf")
    bound = lipnets.lipschitz_bound(model)
    assert bound <= 5.0
    twin = lipnets.layers.plain_twin(model, torch.float64)
    for point in torch.randn(20, 6, dtype=torch.float64) * 3:
        assert matrix_norm(jacobian_at(twin, point), "1", "inf") <= bound


class Branching(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = LipschitzLinear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x) if x.sum() > 0 else -x


class Exponential(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = LipschitzLinear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.layer(x))


class Product(Exponential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x) * x


class Repeated(Exponential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x) + x[:, :1]


class BatchMixing(Exponential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x) - x.mean(0, keepdim=True)


class Overwritten(Exponential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.layer(x)
        out = hidden.mul_(5.0)
        return out + hidden


class WithSortIndices(Exponential):
    """[f(x), argsort f(x)]: the indices jump with the input, so no finite bound holds."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.layer(x), self.layer(x).sort(1).indices], dim=1)


class MaxIndices(Exponential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x).max(1)[1]


class TupleArithmetic(Exponential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.layer(x).chunk(2, 1) * 2, dim=1)


class PlainLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.inner(x)


@pytest.mark.parametrize(
    "model, message",
    [
        (Branching(), r"torch.fx cannot trace.*control flow"),
        (Exponential(), r"node 'exp' .*torch.exp"),
        (Product(), r"node 'mul'.*product of two input-dependent"),
        (Repeated(), r"node 'add'.*broadcasting repeats"),
        (BatchMixing(), r"node 'mean'.*batch"),
        (Overwritten(), r"node 'mul_'.*in-place"),
        (WithSortIndices(), r"node 'cat'.*indices of a sort or max"),
        (MaxIndices(), r"node 'output'.*indices of a sort or max"),
        (TupleArithmetic(), r"node 'mul'.*tuple of tensors"),
        (PlainLinear(), r"'inner' \(Linear\) has no tracked Lipschitz norm"),
    ],
)
def test_what_cannot_be_bounded_is_refused_with_the_node_named(model: nn.Module, message: str) -> None:
    with pytest.raises(UntrackedModuleError, match=message):
        lipnets.lipschitz_bound(model, (4,))


# -- break 3: mixed precision ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mode", ["reparam", "project"])
@pytest.mark.parametrize("norm", NORMS)
def test_bound_covers_the_weight_autocast_multiplies_by(norm: str, mode: str, dtype: torch.dtype) -> None:
    """The weight the low-precision matmul receives (captured below autocast) has an exact operator norm
    at most the bound reported outside autocast, and stays within the constraint."""
    layer = LipschitzLinear(64, 48, norm=norm, lipschitz=0.9, mode=mode)
    train_steps(layer, torch.randn(64, 64), 5 * torch.randn(64, 48), 5, lr=0.1)
    for training in (True, False):
        layer.train(training)  # entering eval refines a project-mode weight: the bound follows
        bound = lipnets.lipschitz_bound(layer)
        _, weights = matmul_weights(layer, torch.randn(4, 64), autocast=dtype)
        low = weights[layer]
        assert low.dtype == dtype
        assert exact_layer_norm(layer, low) <= bound <= 0.9
        if norm not in ("2", "orthogonal"):  # rounding toward zero: never an entry larger than in float32
            assert bool((low.double().abs() <= layer.effective_weight(torch.float32).double().abs()).all())


# -- break 4: tolerances only make a guarantee stricter --------------------------------------------------


@pytest.mark.parametrize("excess", [0.9e-5, 1e-9, 2**-52])
def test_an_inner_network_above_the_residual_slope_is_refused(excess: float) -> None:
    """The reported failure: inner bound lambda (1 + 0.9e-5) was accepted, and the model decreased."""
    for lipschitz in (1.0, 0.3, 7.0):
        inner = LipschitzLinear(2, 1, bias=False, norm="inf", lipschitz=lipschitz * (1 + excess))
        with pytest.raises(MonotonicityError, match="not bounded by the residual slope"):
            lipnets.MonotonicWrapper(inner, lipschitz, [1, 0])
        lipnets.MonotonicWrapper(LipschitzLinear(2, 1, bias=False, norm="inf", lipschitz=lipschitz), lipschitz, [1, 0])


@pytest.mark.parametrize("depth", [1, 2, 4])
@pytest.mark.parametrize("lipschitz", [0.1, 1.0, 3.7])
def test_monotonic_inner_network_is_exactly_within_the_slope(depth: int, lipschitz: float) -> None:
    """After steps that push every layer to its constraint, the product of the layers' exact float64
    norms is at most lambda with no tolerance (the constraints sit a rounding margin below)."""
    model = lipnets.MonotonicMLP(5, [1, -1, 0, 1, 0], [8] * (depth - 1), lipschitz=lipschitz)
    train_steps(model, torch.randn(64, 5), 50 * torch.randn(64, 1), 10, lr=0.2)
    model.eval()
    product = 1.0
    for layer in model.module:
        if isinstance(layer, LipschitzLinear):
            product *= matrix_norm(layer.effective_weight().double(), str(layer.input_norm), str(layer.output_norm))
    assert product <= lipschitz
    assert model.inner_bound() <= lipschitz


# -- break 5: monotonicity checks see decreases however large |f| is ------------------------------------


class Offset(nn.Module):
    """f(x) = c + direction * x_0, in float32."""

    def __init__(self, offset: float, direction: float) -> None:
        super().__init__()
        self.register_buffer("offset", torch.tensor([offset]))
        self.direction = direction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.offset + self.direction * x[:, :1]


@pytest.mark.parametrize("offset", [0.0, 1e3, 1e7, 1e12])
def test_check_monotonic_sees_decreases_small_relative_to_f(offset: float) -> None:
    x = torch.rand(200, 2) * 100
    decreasing = lipnets.check_monotonic(Offset(offset, -1.0), x, [1, 0])
    assert decreasing.violations == decreasing.pairs == 1400
    largest_step = float((x.amax(0) - x.amin(0)).max())  # the default steps run up to the spread of x
    assert decreasing.worst_decrease == pytest.approx(largest_step, rel=1e-3)
    assert decreasing.worst_slope == pytest.approx(-1.0, rel=1e-2)
    increasing = lipnets.check_monotonic(Offset(offset, 1.0), x, [1, 0])
    assert increasing.ok and increasing.worst_decrease == 0.0
    assert lipnets.check_monotonic(lambda z: offset - z[:, :1], x.double(), [1, 0]).violations == 1400


# -- break 6: a model whose constraints no longer hold -----------------------------------------------------


def forgotten_projection() -> lipnets.MonotonicMLP:
    """A project-mode monotonic model after optimizer steps without lipnets.project_ (each training forward
    projects the previous step's change; the last step's is left in the stored weight)."""
    torch.manual_seed(0)
    model = lipnets.MonotonicMLP(3, [1, 0, -1], (16, 16), mode="project")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        x = torch.rand(64, 3) * 4 - 2
        nn.functional.mse_loss(model(x), -10 * x[:, :1]).backward()  # against the increasing feature
        optimizer.step()
    first = model.module[0]
    assert first.constraint.certify(first.weight) > 1.2 * first.lipschitz  # the last step really left the feasible set
    return model


def test_a_forgotten_projection_is_made_where_a_guarantee_is_reported(tmp_path) -> None:
    """A bound, a save or a certificate after an optimizer step without project_ projects first, as the
    next forward would: what is reported (and saved) is the function that runs from then on."""
    grid = torch.cartesian_prod(*[torch.linspace(-3, 3, 12)] * 3)
    models = []
    for report in (
        lambda model: save_weights(model, tmp_path / "w.pt"),
        lambda model: lipnets.lipschitz_bound(model),
        lambda model: lipnets.certified_radius(model, grid[:8]),
    ):
        model = forgotten_projection()
        models.append(model)
        first = model.module[0]
        report(model)
        assert first.constraint.certify(first.weight) <= first.lipschitz
        stored = first.weight.detach().clone()
        with torch.no_grad():
            model(grid)  # the training forward finds nothing left to project
        assert torch.equal(first.weight, stored)
        assert lipnets.check_monotonic(model, grid, [1, 0, -1]).ok
    loaded = lipnets.MonotonicMLP(3, [1, 0, -1], (16, 16), mode="project")
    load_weights(loaded, tmp_path / "w.pt")
    assert torch.equal(loaded(grid), models[0](grid))  # the projected weights were saved


def test_functional_call_with_other_weights_writes_to_neither_them_nor_the_layer() -> None:
    """torch.func.functional_call runs a project-mode layer on the caller's weights as given: the
    projection of a stepped weight never touches another tensor, and the layer's own function stays."""
    torch.manual_seed(0)
    x = torch.randn(5, 4)
    for training in (True, False):
        layer = LipschitzLinear(4, 4, norm="orthogonal").train(training)
        stored, reference = layer.weight.detach().clone(), layer(x).detach()
        params = {key: value.detach().clone() for key, value in layer.named_parameters()}
        params["weight"] = 2.0 * params["weight"]
        given = params["weight"].clone()
        out = torch.func.functional_call(layer, params, (x,))
        assert torch.equal(params["weight"], given)
        torch.testing.assert_close(out, x @ given.T + params["bias"])
        assert torch.equal(layer.weight, stored) and torch.equal(layer(x), reference)


def test_forgotten_projection_is_projected_where_the_model_is_served() -> None:
    """eval() and export project the stepped weights: the exported model is monotone on a dense grid
    (the reported export had 3295 of 3584 pairs violating) and its bound is sound."""
    grid = torch.cartesian_prod(*[torch.linspace(-3, 3, 12)] * 3)
    plain = to_plain(forgotten_projection())
    assert lipnets.check_monotonic(plain, grid, [1, 0, -1]).ok
    model = forgotten_projection().eval()
    assert lipnets.check_monotonic(model, grid, [1, 0, -1]).ok
    assert model.inner_bound() <= 1.0
    with torch.no_grad():
        model.module[0].weight.data.mul_(50.0)  # tampering that no version counter sees
    for action in (lambda: lipnets.lipschitz_bound(model), lambda: to_plain(model)):
        with pytest.raises(GuaranteeError):
            action()


@pytest.mark.parametrize("norm", ["orthogonal", "inf", "2"])
def test_a_training_loop_without_project_multiplies_by_feasible_weights(norm: str) -> None:
    """A user's loop that never calls lipnets.project_: every training forward projects the weight the
    optimizer changed before multiplying by it (exact norm of the captured matmul weight <= lambda),
    and the next step starts from the projected weight."""
    torch.manual_seed(0)
    model = nn.Sequential(LipschitzLinear(6, 24, norm=norm, lipschitz=0.5, mode="project"), GroupSort(2))
    model.append(LipschitzLinear(24, 1, norm=norm, lipschitz=0.5, mode="project"))
    optimizer = torch.optim.SGD(model.parameters(), lr=5.0)
    p_in, p_out = ("2", "2") if norm in ("orthogonal", "2") else ("inf", "inf")
    left = []
    for _ in range(6):
        x = torch.randn(32, 6)
        optimizer.zero_grad()
        output, weights = matmul_weights(model, x)
        assert set(weights) == {model[0], model[2]}
        for weight in weights.values():
            assert matrix_norm(weight.double(), p_in, p_out) <= 0.5
        (-output.square().mean()).backward()  # drives the weights out of the feasible set
        optimizer.step()
        left.append(matrix_norm(model[0].weight.detach().double(), p_in, p_out) > 0.5)
    assert any(left)  # a step really left the feasible set, and the next forward projected it
    model.eval()
    assert lipnets.lipschitz_bound(model) <= 0.25


# -- break 8: float32 export at extreme inputs ---------------------------------------------------------------


def test_export_parity_is_checked_far_outside_the_data() -> None:
    """A twin that agrees near the data but not at large inputs (a clamp) passes a check at the data's
    scale only; the extreme-input check catches it. A correct float32 export of a float64 model passes,
    and its rounded weights are covered by the float64 model's bound."""
    model = lipnets.MonotonicMLP(3, [1, 0, -1], (8, 8), lipschitz=2.0).double().eval()
    x = torch.randn(16, 3, dtype=torch.float64)
    plain32 = to_plain(model, dtype=torch.float32, check_input=x)
    for layer, exported in zip(
        [m for m in model.modules() if isinstance(m, LipschitzLinear)], [m for m in plain32.modules() if isinstance(m, nn.Linear)]
    ):
        assert exact_layer_norm(layer, exported.weight) <= layer.lipschitz_bound()
    first = model.module[0]
    first.to_plain = lambda dtype=None: nn.Sequential(LipschitzLinear.to_plain(first, dtype), nn.Hardtanh(-50.0, 50.0))
    with pytest.raises(RuntimeError, match=r"differs from the original"):
        to_plain(model, check_input=x)


# -- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"hello world", b"", bytes(range(256)) * 4, b"PK\x03\x04garbage"])
def test_garbage_checkpoints_raise_checkpoint_error(tmp_path, content: bytes) -> None:
    model = lipnets.LipschitzMLP(3, 2, (4,))
    before = {key: value.clone() for key, value in model.state_dict().items()}
    path = tmp_path / "garbage.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"corrupt or not a lipnets checkpoint"):
        load_weights(model, path)
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())


def test_dropout_with_p_one_is_bounded() -> None:
    """Dropout(p=1) zeroes everything in training (bound 0) and is the identity in eval; no ZeroDivisionError."""
    model = nn.Sequential(LipschitzLinear(3, 4), nn.Dropout(p=1.0), LipschitzLinear(4, 2))
    assert lipnets.lipschitz_bound(model.train()) == 0.0
    assert lipnets.lipschitz_bound(model.eval()) == pytest.approx(model[0].lipschitz_bound() * model[2].lipschitz_bound(), rel=1e-15)


def test_certify_refuses_a_wrong_width_and_a_nan_label() -> None:
    model = lipnets.LipschitzMLP(4, 3, (8,)).eval()
    with pytest.raises(ValueError, match=r"shape \(5, 6\).*takes 4 features"):
        lipnets.certified_radius(model, torch.randn(5, 6))
    with pytest.raises(ValueError, match=r"^y contains 1 NaN"):
        lipnets.certified_accuracy(model, torch.randn(5, 4), torch.tensor([0.0, 1.0, float("nan"), 1.0, 2.0]), 0.1)


def test_a_nan_bias_is_refused_at_load_and_at_certification() -> None:
    model = lipnets.LipschitzMLP(4, 3, (8,)).eval()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    state = {key: value.clone() for key, value in before.items()}
    state["2.bias"][1] = float("nan")
    with pytest.raises(ValueError, match=r"'2.bias' holds 1 NaN"):
        model.load_state_dict(state)
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())
    model[2].bias.data[1] = float("nan")  # forced past load_state_dict
    with pytest.raises(ValueError, match=r"returned NaN or inf"):
        lipnets.certified_radius(model, torch.randn(6, 4))
    with pytest.raises(GuaranteeError, match=r"NaN or inf in its parameter 'bias'"):
        lipnets.lipschitz_bound(model)
