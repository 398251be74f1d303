"""The public namespace: every advertised name resolves, and `from lipnets import *` works."""

import subprocess
import sys

import lipnets


def test_every_public_name_resolves() -> None:
    missing = [name for name in lipnets.__all__ if not hasattr(lipnets, name)]
    assert not missing


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
    try:
        lipnets.no_such_name
    except AttributeError as error:
        assert "no_such_name" in str(error)
    else:
        raise AssertionError("lipnets.no_such_name did not raise")
