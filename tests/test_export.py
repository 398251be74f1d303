"""Export to plain PyTorch: same outputs to 1e-6, and the saved model loads without lipnets."""

import subprocess
import sys

import pytest
import torch
from torch import nn

import lipnets
from lipnets import LipschitzMLP, MonotonicMLP
from lipnets.export import to_plain

MODELS = {
    "mlp-l1": lambda: LipschitzMLP(5, 3, (8, 8), input_norm="1"),
    "mlp-orthogonal": lambda: LipschitzMLP(5, 3, (8, 8), input_norm="2", activation="maxmin"),
    "mlp-fullsort": lambda: LipschitzMLP(5, 3, (8, 8), input_norm="inf", activation="fullsort", mode="project"),
    "monotonic": lambda: MonotonicMLP(5, [1, 0, -1, 0, 1], (8, 8), lipschitz=2.0),
}


@pytest.mark.parametrize("name", MODELS)
def test_plain_model_matches_and_has_only_torch_modules(name: str) -> None:
    model = MODELS[name]()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    x = torch.randn(64, 5)
    for _ in range(5):
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
        lipnets.project_(model)
    plain = to_plain(model, check_input=x)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), model.eval()(x), atol=1e-6, rtol=0)
    assert all(type(m).__module__.startswith("torch.") for m in plain.modules())
    assert not any(p.requires_grad for p in plain.parameters())


def test_saved_plain_model_runs_without_lipnets(tmp_path) -> None:
    model = MonotonicMLP(4, [1, 0, -1, 0], (8, 8), lipschitz=1.5)
    x = torch.randn(10, 4)
    path = tmp_path / "plain.pt"
    torch.save({"model": to_plain(model), "x": x, "y": model.eval()(x).detach()}, path)
    script = (
        "import sys, torch; sys.modules['lipnets'] = None\n"  # importing lipnets now fails
        f"d = torch.load({str(path)!r}, weights_only=False)\n"
        "assert torch.allclose(d['model'](d['x']), d['y'], atol=1e-6), 'outputs differ'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_export_parity_check_catches_a_changed_function() -> None:
    class Shifted(nn.Module):
        """A module whose plain twin differs: the parity check must notice."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = LipschitzMLP(3, 1, (4,))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x)

    model = Shifted()
    model.inner[0].to_plain = lambda dtype=None: nn.Linear(3, 4)  # a wrong twin
    with pytest.raises(RuntimeError, match=r"differs from the original"):
        to_plain(model, check_input=torch.randn(8, 3))
