"""The fit loop: reproducibility, early stopping, checkpoints, constraints after training, callbacks."""

import copy
import sys

import pytest
import torch
from sklearn.datasets import make_moons
from torch.utils.data import DataLoader, TensorDataset

import lipnets
from lipnets.io import CheckpointError, load_checkpoint
from lipnets.losses import HingeLoss, TauBCEWithLogitsLoss
from lipnets.norms import layer_operator_norm
from lipnets.training import History

fit_module = sys.modules["lipnets.training.fit"]


def moons(n: int = 256, seed: int = 0):
    x, y = make_moons(n, noise=0.1, random_state=seed)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def model(seed: int = 0, **options) -> lipnets.LipschitzMLP:
    torch.manual_seed(seed)
    return lipnets.LipschitzMLP(2, 1, (16, 16), **options)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[key], sb[key]) for key in sa)


TRAIN, VAL = moons(256, 0), moons(128, 1)


def test_same_seed_gives_identical_weights_and_history():
    runs = []
    for _ in range(2):
        net = model()
        history = lipnets.fit(net, HingeLoss(0.1), TRAIN, VAL, epochs=3, batch_size=32, seed=7, metrics=["accuracy"], progress=False)
        runs.append((net, history))
    (a, ha), (b, hb) = runs
    assert same_weights(a, b)
    assert dict(ha) == dict(hb) and ha.best_epoch == hb.best_epoch
    other = model()
    lipnets.fit(other, HingeLoss(0.1), TRAIN, VAL, epochs=3, batch_size=32, seed=8, progress=False)
    assert not same_weights(a, other)


def test_history_records_losses_and_metrics_per_epoch():
    history = lipnets.fit(model(), TauBCEWithLogitsLoss(16.0), TRAIN, VAL, epochs=4, batch_size=64, metrics=["accuracy"], progress=False)
    assert isinstance(history, History) and history.epochs == 4
    assert set(history) == {"loss", "lr", "val_loss", "val_accuracy"}
    assert all(len(values) == 4 for values in history.values())
    assert history["loss"][-1] < history["loss"][0]
    assert history.best_epoch == min(range(4), key=history["val_loss"].__getitem__)


def test_early_stopping_stops_on_patience_and_restores_the_best_weights():
    # Validation labels are the training labels flipped, so the validation loss rises as training
    # fits; the best epoch comes early and training stops `patience` epochs later.
    flipped = (VAL[0], 1 - VAL[1])
    snapshots = {}

    def snapshot(epoch, history, net):
        snapshots[epoch] = copy.deepcopy(net.state_dict())

    net = model()
    history = lipnets.fit(
        net, HingeLoss(0.5), TRAIN, flipped, epochs=30, lr=5e-3, batch_size=32, patience=2, callbacks=[snapshot], progress=False
    )
    assert history.stopped_early
    assert history.epochs == history.best_epoch + 3 < 30
    best = history["val_loss"][history.best_epoch]
    assert best == min(history["val_loss"]) and history["val_loss"][-1] > best
    restored = net.state_dict()
    assert all(torch.equal(restored[key], snapshots[history.best_epoch][key]) for key in restored)
    assert not all(torch.equal(restored[key], snapshots[history.epochs - 1][key]) for key in restored)


def test_monitoring_a_metric_keeps_the_epoch_with_the_highest_value():
    history = lipnets.fit(
        model(), HingeLoss(0.1), TRAIN, VAL, epochs=5, batch_size=32, metrics=["accuracy"], monitor="val_accuracy", progress=False
    )
    assert history["val_accuracy"][history.best_epoch] == max(history["val_accuracy"])


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    path = tmp_path / "run" / "fit.pt"
    net = model()
    lipnets.fit(net, HingeLoss(0.1), TRAIN, epochs=2, batch_size=64, checkpoint=path, progress=False)
    content = torch.load(path, weights_only=True)  # plain tensors and Python values only
    assert content["metadata"]["epoch"] == 1 and len(content["metadata"]["history"]["loss"]) == 2
    fresh = model(seed=1)
    assert not same_weights(fresh, net)
    metadata = load_checkpoint(path, fresh)
    assert same_weights(fresh, net) and metadata["seed"] == 0
    x = TRAIN[0][:16]
    assert torch.equal(fresh(x), net(x))
    assert lipnets.lipschitz_bound(fresh) == lipnets.lipschitz_bound(net)


def test_resuming_from_a_checkpoint_continues_the_same_run(tmp_path):
    path = tmp_path / "fit.pt"
    straight = model()
    lipnets.fit(straight, HingeLoss(0.1), TRAIN, epochs=4, batch_size=32, progress=False)
    resumed = model()
    lipnets.fit(resumed, HingeLoss(0.1), TRAIN, epochs=2, batch_size=32, checkpoint=path, progress=False)
    history = lipnets.fit(resumed, HingeLoss(0.1), TRAIN, epochs=4, batch_size=32, checkpoint=path, resume=True, progress=False)
    assert history.epochs == 4
    for key, value in straight.state_dict().items():
        assert torch.allclose(resumed.state_dict()[key], value, atol=1e-6), key


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated zip"])
def test_corrupt_checkpoint_raises_and_changes_nothing(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    net = model()
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(CheckpointError):
        load_checkpoint(path, net)
    with pytest.raises(CheckpointError):
        lipnets.fit(net, HingeLoss(0.1), TRAIN, epochs=1, checkpoint=path, resume=True, progress=False)
    assert all(torch.equal(net.state_dict()[key], before[key]) for key in before)


def test_checkpoint_of_another_architecture_raises_and_changes_nothing(tmp_path):
    path = tmp_path / "wide.pt"
    lipnets.fit(lipnets.LipschitzMLP(2, 1, (32, 32)), HingeLoss(0.1), TRAIN, epochs=1, checkpoint=path, progress=False)
    net = model()
    optimizer = torch.optim.Adam(net.parameters())
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(CheckpointError, match=r"another architecture"):
        load_checkpoint(path, net, optimizer)
    assert all(torch.equal(net.state_dict()[key], before[key]) for key in before)
    assert optimizer.state_dict()["state"] == {}


@pytest.mark.parametrize("input_norm, hidden_norm", [("1", None), ("inf", None), ("2", "2")])
def test_project_mode_keeps_exact_per_layer_norms_after_training(input_norm, hidden_norm):
    # A large learning rate pushes the weights far outside the constraint at every step; fit must
    # project them back, so each layer's exact operator norm ends within its cap and some reach it.
    net = model(input_norm=input_norm, hidden_norm=hidden_norm, mode="project", lipschitz=2.0)
    lipnets.fit(net, HingeLoss(1.0), TRAIN, epochs=3, lr=0.5, batch_size=32, progress=False)
    layers = [m for m in net if isinstance(m, lipnets.LipschitzLinear)]
    for mode in ("train", "eval"):
        getattr(net, mode)()
        norms = [layer_operator_norm(layer.weight.detach().double(), layer.norm) for layer in layers]
        caps = [layer.lipschitz for layer in layers]
        assert all(norm <= cap * (1 + 1e-6) for norm, cap in zip(norms, caps)), (norms, caps)
        assert any(norm >= cap * (1 - 1e-4) for norm, cap in zip(norms, caps)), (norms, caps)
        assert lipnets.lipschitz_bound(net) <= 2.0 * (1 + 1e-6)


def test_callbacks_see_each_epoch_and_can_stop_training():
    seen = []

    def watch(epoch, history, net):
        seen.append((epoch, history.epochs, isinstance(net, lipnets.LipschitzMLP)))
        return epoch == 2

    history = lipnets.fit(model(), HingeLoss(0.1), TRAIN, epochs=10, batch_size=64, callbacks=[watch], progress=False)
    assert seen == [(0, 1, True), (1, 2, True), (2, 3, True)]
    assert history.epochs == 3 and history.stopped_early


def test_dataloaders_are_accepted():
    train = DataLoader(TensorDataset(*TRAIN), batch_size=32, shuffle=True)
    val = DataLoader(TensorDataset(*VAL), batch_size=50)
    history = lipnets.fit(model(), HingeLoss(0.1), train, val, epochs=2, metrics=["accuracy"], progress=False)
    assert history.epochs == 2 and len(history["val_accuracy"]) == 2


def test_a_diverging_loss_raises():
    with pytest.raises(FloatingPointError, match=r"lower lr"):
        lipnets.fit(model(), lambda output, target: output.sum() * float("nan"), TRAIN, epochs=1, progress=False)


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"train": (TRAIN[0], TRAIN[1][:10])}, ValueError, "equal lengths"),
        ({"train": (torch.full((4, 2), float("nan")), torch.ones(4))}, ValueError, "NaN"),
        ({"train": TRAIN[0]}, TypeError, r"\(X, y\) pair"),
        ({"epochs": 0}, ValueError, "epochs must be a positive integer"),
        ({"batch_size": 2.5}, ValueError, "batch_size must be a positive integer"),
        ({"lr": -1.0}, ValueError, "lr must be"),
        ({"optimizer": "lbfgs"}, ValueError, "unknown optimizer"),
        ({"metrics": ["f1"]}, ValueError, "unknown metric"),
        ({"monitor": "val_auc", "val": VAL}, ValueError, "cannot monitor"),
        ({"patience": 3}, ValueError, "needs a validation split"),
    ],
)
def test_bad_arguments_are_refused_before_training(options, error, message):
    net = model()
    before = copy.deepcopy(net.state_dict())
    arguments = {"train": TRAIN, "epochs": 1, "progress": False, **options}
    train = arguments.pop("train")
    with pytest.raises(error, match=message):
        lipnets.fit(net, HingeLoss(0.1), train, **arguments)
    assert all(torch.equal(net.state_dict()[key], before[key]) for key in before)


def test_float64_models_train_on_float32_data():
    net = model().double()
    history = lipnets.fit(net, HingeLoss(0.1), TRAIN, VAL, epochs=1, metrics=["accuracy"], progress=False)
    assert net[0].weight.dtype == torch.float64 and history.epochs == 1


def test_sample_weights_scale_the_loss_and_equal_weights_change_nothing():
    plain, weighted = model(), model()
    weights = torch.full((len(TRAIN[0]),), 3.0)
    lipnets.fit(plain, HingeLoss(0.1), TRAIN, epochs=2, batch_size=32, progress=False)
    lipnets.fit(weighted, HingeLoss(0.1), (*TRAIN, weights), epochs=2, batch_size=32, progress=False)
    assert same_weights(plain, weighted)  # weights are normalised to mean 1
    skewed = torch.where(VAL[1] == 1, 5.0, 1.0)
    with torch.no_grad():
        per_sample = HingeLoss(0.1, reduction="none")(plain(VAL[0]), VAL[1])
    expected = float((per_sample * skewed).sum() / skewed.sum())
    assert lipnets.training.evaluate(plain, HingeLoss(0.1), (*VAL, skewed))["loss"] == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match=r"sample_weight must hold one non-negative"):
        lipnets.fit(model(), HingeLoss(0.1), (*TRAIN, -weights), epochs=1, progress=False)
    with pytest.raises(TypeError, match=r"`reduction` attribute"):
        lipnets.fit(model(), lambda output, target: output.mean(), (*TRAIN, weights), epochs=1, progress=False)


def test_ctrl_c_keeps_the_best_weights_and_says_so():
    snapshots = {}

    def interrupt(epoch, history, net):
        snapshots[epoch] = copy.deepcopy(net.state_dict())
        if epoch == 3:
            raise KeyboardInterrupt

    net = model()
    with pytest.warns(RuntimeWarning, match=r"interrupted in epoch 4 of 20: keeping the weights of epoch"):
        history = lipnets.fit(net, HingeLoss(0.1), TRAIN, VAL, epochs=20, batch_size=32, callbacks=[interrupt], progress=False)
    assert history.interrupted and history.epochs == 4
    best = snapshots[history.best_epoch]
    assert all(torch.equal(net.state_dict()[key], best[key]) for key in best)
    with pytest.raises(KeyboardInterrupt):  # nothing trained yet: nothing to keep
        lipnets.fit(model(), HingeLoss(0.1), TRAIN, epochs=2, optimizer=lambda params, lr: _Raising(params), progress=False)


class _Raising(torch.optim.SGD):
    """An optimizer whose first step is interrupted, as by Ctrl-C during the first epoch."""

    def __init__(self, params):
        super().__init__(params, lr=0.1)

    def step(self, closure=None):
        raise KeyboardInterrupt


def test_progress_goes_to_the_log_when_stderr_is_not_a_terminal(caplog):
    with caplog.at_level("INFO", logger="lipnets.fit"):
        lipnets.fit(model(), HingeLoss(0.1), TRAIN, VAL, epochs=2, batch_size=64, progress=True)
    lines = [record.getMessage() for record in caplog.records if record.name == "lipnets.fit"]
    assert lines and lines[0].startswith("epoch 1/2") and "val_loss=" in lines[0]


def test_steps_per_epoch_streams_across_passes():
    history = lipnets.fit(model(), HingeLoss(0.1), TRAIN, epochs=3, batch_size=32, steps_per_epoch=3, progress=False)
    assert history.epochs == 3
    seen = []
    data = (torch.arange(10.0)[:, None], torch.zeros(10))
    for epoch in range(4):
        seen += [int(v) for batch in fit_module._batches(data, 4, epoch, 0, shuffle=True, steps=2) for v in batch[0][:, 0]]
    # 8 batches of 4 from passes of 10 rows (3 batches each, the last of 2): every row once per pass
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
