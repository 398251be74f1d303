"""The C++ header: compiled with the system compiler, it computes what PyTorch computes and keeps the certificate.

Outputs are compared on a large batch with inputs up to 1e30, with the tolerance the rounding analysis
gives for two float32 evaluations (`Program.error_bound`), never one derived from the outputs' size.
"""

from __future__ import annotations

import functools
import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import lipnets
from helpers import train_steps
from lipnets.export import ProgramError, compile_header, dense_pairs, sorting_network, to_cpp, to_low_precision, to_plain
from lipnets.export.precision import promised_signs
from lipnets.sklearn import MonotonicRegressor

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("clang++") is None, reason="needs a C++ compiler")

FLAGS = ("-O2", "-std=c++11", "-pedantic")


@functools.cache
def _trigger_model() -> torch.nn.Module:
    """The paper's trigger network: 4 inputs, 3 layers of width 20, all outputs sorted, lambda = 2, monotone in three."""
    torch.manual_seed(0)
    model = lipnets.MonotonicMLP(4, [1, 1, 0, -1], (20, 20), lipschitz=2.0, activation="fullsort", feature_scale=[1.0, 0.5, 2.0, 1.0])
    x = torch.randn(256, 4)
    train_steps(model, x, (x[:, :1] + x[:, 1:2] - x[:, 3:4] > 0).float() * 4 + torch.sin(3 * x[:, 2:3]), steps=40, lr=0.03)
    return model.eval()


def _rows(count: int, features: int = 4) -> torch.Tensor:
    generator = torch.Generator().manual_seed(2)
    typical = torch.randn(count, features, generator=generator) * 2
    scales = torch.tensor([1e3, 1e6, 1e12, 1e30]).repeat_interleave(64)[:, None]
    extreme = torch.randn(len(scales), features, generator=generator) * scales
    return torch.cat([typical, extreme, torch.zeros(1, features), torch.full((1, features), 3.0e38)])


@pytest.mark.parametrize("size", range(1, 21))
def test_sorting_networks_sort_every_zero_one_input(size: int) -> None:
    """The 0-1 principle (Knuth, Vol. 3, 5.3.4): a comparator network that sorts every 0-1 sequence sorts everything."""
    network = sorting_network(size)
    generator = np.random.default_rng(size)
    exhaustive = size <= 12  # every 0-1 input up to 12 elements, 3000 random ones above
    inputs = itertools.product((0, 1), repeat=size) if exhaustive else (tuple(row) for row in generator.integers(0, 2, (3000, size)))
    for bits in inputs:
        values = list(bits)
        for low, high in network:
            if values[high] < values[low]:
                values[low], values[high] = values[high], values[low]
        assert values == sorted(bits)


@pytest.mark.slow
def test_compiled_header_matches_pytorch_and_keeps_the_certificate(tmp_path: Path) -> None:
    model = _trigger_model()
    export = to_cpp(model, tmp_path / "trigger.h", name="trigger_score")
    run = compile_header(tmp_path / "trigger.h", "trigger_score", flags=FLAGS, folder=tmp_path)
    rows = _rows(100_000)
    finite = (rows.abs() < 1e31).all(dim=1)
    compiled = torch.from_numpy(run(rows.numpy())).double()
    with torch.no_grad():
        reference = to_plain(model)(rows).double()
    program = export.program
    exact = program(rows[finite].double())
    bound = program.error_bound(rows[finite].double(), torch.float32)
    assert torch.isfinite(bound).all()
    assert ((compiled[finite] - exact).abs() <= bound).all()
    assert ((compiled[finite] - reference[finite]).abs() <= 2 * bound).all()
    # beyond float32's range both overflow the same way
    assert torch.equal(torch.isfinite(compiled[~finite]), torch.isfinite(reference[~finite]))
    # any batch size: one row, a partial block, none
    for count in (1, 31, 33, 0):
        assert np.array_equal(run(rows[:count].numpy()), compiled[:count].float().numpy())
    # the compiled function itself is monotone along the promised features, beyond its rounding
    signs = promised_signs(model, program)
    pairs = dense_pairs(lambda x: torch.from_numpy(run(x.numpy())), program, rows[:2000].double(), signs)
    assert pairs.ok and pairs.pairs > 0
    assert export.report.lost == () and export.report.bound_after <= lipnets.lipschitz_bound(model)
    text = (tmp_path / "trigger.h").read_text()
    assert "void trigger_score(const float* x, float* y, long n)" in text and "#include" not in text


def test_float64_estimator_and_half_precision_weights_compile_to_their_rounded_programs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1000, size=(300, 3))
    y = x[:, 0] / 100 - np.sin(x[:, 1] / 200)
    estimator = MonotonicRegressor([1, 0, 0], hidden=(8, 8), max_iter=3, n_estimators=1, random_state=0).fit(x, y)
    half = to_low_precision(estimator.model_, torch.float16, check_input=torch.tensor(x[:64]))
    for source, name in ((estimator.model_, "estimator_f32"), (half, "estimator_f16")):
        export = to_cpp(source, tmp_path / f"{name}.h", name=name)
        run = compile_header(tmp_path / f"{name}.h", name, flags=FLAGS, folder=tmp_path)
        rows = torch.tensor(x, dtype=torch.float32)
        exact = export.program(rows.double())
        computed = torch.from_numpy(run(rows.numpy())).double()
        assert ((computed - exact).abs() <= export.program.error_bound(rows.double(), torch.float32)).all()
        assert export.report.lost == ()
    assert torch.equal(
        export.program.get_buffer(export.program.affine_steps()[0].constant),
        half.program.get_buffer(half.program.affine_steps()[0].constant),
    )


def test_bad_names_and_models_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    model = lipnets.LipschitzMLP(3, 1, (4,))
    for name in ("1abc", "my-model", "int", "", "for"):
        with pytest.raises(ValueError, match="C\\+\\+ identifier"):
            to_cpp(model, tmp_path / "bad.h", name=name)
    convolutional = torch.nn.Sequential(lipnets.LipschitzConv2d(1, 2, 3), torch.nn.Flatten(), lipnets.LipschitzLinear(8, 1))
    with pytest.raises((ProgramError, TypeError, ValueError)):
        to_cpp(convolutional, tmp_path / "conv.h")
    assert list(tmp_path.iterdir()) == []
