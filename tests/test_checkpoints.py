"""Checkpoints load with weights_only=True; a corrupt or foreign one is refused and changes nothing."""

import os
import pickle

import pytest
import torch

import lipnets
from lipnets import CheckpointError, LipschitzMLP, load_weights, save_weights


def snapshot(model: torch.nn.Module) -> dict:
    return {key: value.clone() for key, value in model.state_dict().items()}


def assert_unchanged(model: torch.nn.Module, before: dict) -> None:
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_round_trip_keeps_function_and_metadata(tmp_path) -> None:
    model = LipschitzMLP(4, 2, (8,), lipschitz=2.0)
    save_weights(model, tmp_path / "m.pt", {"epoch": 3})
    other = LipschitzMLP(4, 2, (8,), lipschitz=2.0)
    assert load_weights(other, tmp_path / "m.pt") == {"epoch": 3}
    x = torch.randn(5, 4)
    torch.testing.assert_close(other.eval()(x), model.eval()(x))
    assert lipnets.lipschitz_bound(other) == pytest.approx(lipnets.lipschitz_bound(model))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "pickle", "missing"])
def test_corrupt_checkpoints_are_refused(tmp_path, damage: str) -> None:
    model = LipschitzMLP(4, 2, (8,))
    path = tmp_path / "m.pt"
    save_weights(model, path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    elif damage == "pickle":  # a pickle that would run code: weights_only=True must refuse it
        path.write_bytes(pickle.dumps({"state_dict": {}, "payload": os.system}, protocol=2))
    else:
        path.unlink()
    before = snapshot(model)
    with pytest.raises(CheckpointError):
        load_weights(model, path)
    assert_unchanged(model, before)


def test_checkpoint_from_another_architecture_changes_nothing(tmp_path) -> None:
    save_weights(LipschitzMLP(4, 2, (16,)), tmp_path / "wide.pt")
    model = LipschitzMLP(4, 2, (8,))
    before = snapshot(model)
    with pytest.raises(CheckpointError, match=r"another architecture: wrong shapes"):
        load_weights(model, tmp_path / "wide.pt")
    assert_unchanged(model, before)
    save_weights(LipschitzMLP(4, 2, (8, 8)), tmp_path / "deep.pt")
    with pytest.raises(CheckpointError, match=r"unexpected"):
        load_weights(model, tmp_path / "deep.pt")
    assert_unchanged(model, before)


def test_non_finite_weights_are_refused(tmp_path) -> None:
    source = LipschitzMLP(4, 2, (8,))
    with torch.no_grad():
        source[0].parametrizations.weight.original[0, 0] = float("nan")
    save_weights(source, tmp_path / "nan.pt")
    model = LipschitzMLP(4, 2, (8,))
    with pytest.raises(CheckpointError, match=r"NaN"):
        load_weights(model, tmp_path / "nan.pt")
