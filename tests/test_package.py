"""The package as users and maintainers meet it: the public namespace, the floors, the core-only install."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import lipnets

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "lipnets"


def test_every_public_name_and_subpackage_resolves() -> None:
    missing = [name for name in [*lipnets.__all__, *lipnets._NAMES, *lipnets.SUBPACKAGES] if not hasattr(lipnets, name)]
    assert not missing
    assert lipnets.losses.HingeLoss is not None and lipnets.ot.wasserstein1 is not None


def test_star_import_works() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from lipnets import *; print(LipschitzLinear.__name__, fit.__name__)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["LipschitzLinear", "fit"]


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        lipnets.no_such_name


def _imports_of_the_root(path: Path) -> list[str]:
    """The import statements of a module that name the package root (`import lipnets`, `from .. import x`, ...)."""
    package_depth = len(path.relative_to(SOURCE).parts) - 1  # 0 for lipnets/x.py, 1 for lipnets/sub/x.py
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import) and any(alias.name == "lipnets" for alias in node.names):
            found.append(f"{path.name}:{node.lineno}")
        if isinstance(node, ast.ImportFrom):
            absolute_root = node.level == 0 and node.module == "lipnets"
            relative_root = node.level == package_depth + 1 and node.module is None
            if absolute_root or relative_root:
                found.append(f"{path.relative_to(SOURCE)}:{node.lineno}")
    return found


def test_nothing_imports_from_the_package_root() -> None:
    """The root only re-exports; importing from it would hide which floor a name comes from (and cycle)."""
    offenders = [
        hit for path in SOURCE.rglob("*.py") if path.name != "__init__.py" or path.parent != SOURCE for hit in _imports_of_the_root(path)
    ]
    assert not offenders, offenders


def test_the_version_is_written_in_one_place() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'attr = "lipnets._version.__version__"' in pyproject
    assert lipnets.__version__ == lipnets._version.__version__  # type: ignore[attr-defined]


CORE_SCRIPT = """
import sys, torch, lipnets
for heavy in ("sklearn", "pandas", "onnx", "onnxruntime", "matplotlib", "tqdm", "pyarrow"):
    try:
        __import__(heavy)
    except ImportError:
        continue
    sys.exit(f"{heavy} is importable in the core-only environment")
torch.manual_seed(0)
x = torch.rand(256, 3)
y = x[:, :1] - torch.sin(3 * x[:, 1:2])
model = lipnets.MonotonicMLP(3, [1, 0, -1], hidden=(16, 16), lipschitz=2.0)
lipnets.fit(model, torch.nn.MSELoss(), (x, y), epochs=3, batch_size=64, lr=1e-2)
model.eval()
bound = lipnets.lipschitz_bound(model)
assert bound <= 4.0 + 1e-9, bound
assert lipnets.check_monotonic(model, x, [1, 0, -1]).violations == 0
plain = lipnets.export.to_plain(model, check_input=x)
assert torch.allclose(plain(x), model(x), atol=1e-6)
try:
    lipnets.export.to_onnx(model, "model.onnx")
except ImportError as error:
    assert "lipnets[onnx]" in str(error), error
else:
    sys.exit("to_onnx worked without onnxruntime")
print("core ok", round(bound, 4))
"""


@pytest.mark.slow
def test_core_install_builds_trains_bounds_and_exports(tmp_path: Path) -> None:
    """A fresh environment with torch, numpy and lipnets alone (no extras) trains, bounds and exports a model."""
    environment = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(environment)
    python = environment / "bin" / "python"
    quiet = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    install = [str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / ".ci" / "constraints.txt")]
    subprocess.run([*install, "torch", "numpy"], check=True, env=quiet, timeout=900)
    source = tmp_path / "source"  # a copy, so that the build leaves nothing in the checkout
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__", "docs", "benchmarks")
    )
    subprocess.run([*install, "--no-deps", str(source)], check=True, env=quiet, timeout=900)
    clean = {key: value for key, value in quiet.items() if key != "PYTHONPATH"}
    result = subprocess.run([str(python), "-c", CORE_SCRIPT], cwd=tmp_path, capture_output=True, text=True, env=clean, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("core ok")
