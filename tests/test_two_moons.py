"""The two-moons study (Kitouni et al. 2023, Fig. 7, and Kitouni's blog post): the loss, not the Lipschitz constraint, limits accuracy."""

import pytest

from lipnets.demos import DEMOS, load
from lipnets.demos.two_moons import FULL, LOSSES, train_with

pytestmark = pytest.mark.slow  # trains six models on two moons


@pytest.fixture(scope="module")
def trained() -> dict:
    return {name: train_with(name, FULL, seed=0)[1] for name in ("BCE", "hinge m=0.1", "dynamic hinge")}


def test_hinge_reaches_99_percent_where_bce_at_tau_1_does_not(trained):
    # The claim of Kitouni et al. (2023, Section 5) and the blog post: same 1-Lipschitz network, same data and seed.
    assert trained["hinge m=0.1"]["val accuracy"] >= 0.99
    assert trained["dynamic hinge"]["val accuracy"] >= 0.99
    assert trained["BCE"]["val accuracy"] < 0.99
    for row in trained.values():
        assert row["lipschitz bound"] <= 1.0 + 1e-6


def test_dynamic_hinge_gives_larger_margins_than_a_small_fixed_margin(trained):
    # Fig. 7: among the accurate classifiers, the dynamic margin (Eq. 5.3) has the largest mean |f|.
    assert trained["dynamic hinge"]["mean margin"] > 1.5 * trained["hinge m=0.1"]["mean margin"]


def test_quick_demo_writes_the_heatmap_grid_and_one_row_per_loss(tmp_path):
    assert DEMOS["two-moons"] == "lipnets.demos.two_moons"
    rows = load("two-moons")(tmp_path, True)
    assert [row["loss"] for row in rows] == list(LOSSES)
    assert all(0.0 <= row["val accuracy"] <= 1.0 and row["mean margin"] > 0.0 for row in rows)
    image = tmp_path / "two_moons_losses.png"
    assert image.is_file() and image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_loss_name_is_refused():
    with pytest.raises(ValueError, match=r"unknown loss"):
        train_with("cross entropy", FULL)
