"""The soundness fuzzer's fixed-seed run in CI (the fuzzer is tests/fuzz.py; `make fuzz` runs a long one
with a fresh seed): random layers and models from every family, in every state, precision and mode,
each bound checked against the exact constant with no tolerance beyond float64's own evaluation error."""

import pytest

import fuzz

SEED = 20240611
CONFIGURATIONS = 160


@pytest.mark.slow
def test_fixed_seed_run_finds_every_bound_sound() -> None:
    stats = fuzz.run(SEED, CONFIGURATIONS)  # raises AssertionError naming the first unsound configuration
    covered = set(stats.covered)
    assert set(fuzz.FAMILIES) <= covered and set(fuzz.STATES) <= covered
    assert {"float32", "float64", "bfloat16", "autocast-bfloat16", "autocast-float16", "train", "eval"} <= covered
    assert stats.checks["refusal justified"] > 0  # forgotten projections were met and refused
    assert stats.worst_layer_ratio > 0.999  # the layer bounds are exact norms, not loose estimates
