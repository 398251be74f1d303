"""The fit loop: seeded, checkpointed, early-stopped training that keeps every constraint, DDP-aware.

`fit` trains in place and returns a `History`. Under `torchrun` (torch.distributed initialised) it
wraps the model in DistributedDataParallel and shards each global batch across the ranks, so a run on
W processes follows the same trajectory as a single process with the same `batch_size`.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..io.checkpoints import load_checkpoint, save_checkpoint
from ..layers import project_
from ..privacy import Budget, PrivateTraining
from ..validation import check_finite

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}

Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor | float]
Callback = Callable[[int, "History", nn.Module], bool | None]


class History(dict):
    """Per-epoch values by name: "loss" (training), "val_loss", "val_<metric>".

    `best_epoch` is the 0-based epoch with the best monitored value (None without one); `stopped_early`
    says whether patience or a callback ended training before `epochs`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.best_epoch: int | None = None
        self.stopped_early = False

    @property
    def epochs(self) -> int:
        """The number of epochs recorded."""
        return len(self.get("loss", []))


def accuracy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Share of correct predictions: sign of one score per sample (labels {0,1} or {-1,+1}), else argmax.

    A binary target packed as (label, margin) columns (DynamicHingeLoss) is read from its first column.
    """
    if output.dim() == 2 and output.shape[1] > 1:
        return (output.argmax(dim=1) == target.reshape(-1).to(output.device)).float().mean()
    target = target[:, 0] if target.dim() == 2 else target
    return ((output.reshape(-1) > 0) == (target.reshape(-1).to(output.device) > 0)).float().mean()


BUILTIN_METRICS: dict[str, Metric] = {"accuracy": accuracy}


# --------------------------------------------------------------------------------------------------
# data


def _world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


Split = DataLoader | tuple[torch.Tensor, torch.Tensor]
"""A data split: a DataLoader, or (X, y) tensors."""


def _check_split(data: Any, name: str) -> Split:
    if isinstance(data, DataLoader):
        return data
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{name} must be an (X, y) pair of tensors or a DataLoader, got {type(data).__name__}")
    x, y = (torch.as_tensor(part) for part in data)
    check_finite(x, f"{name} X")
    check_finite(y, f"{name} y")
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"{name} X and y must be non-empty with equal lengths, got {len(x)} and {len(y)}")
    return x, y


def _batches(data: Split, batch_size: int, epoch: int, seed: int, shuffle: bool) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's batches: DistributedSampler order, each global batch of `batch_size` split across ranks."""
    if isinstance(data, DataLoader):
        if isinstance(data.sampler, DistributedSampler):
            data.sampler.set_epoch(epoch)
        yield from data
        return
    x, y = data
    rank, world = _world()
    if shuffle:
        sampler: DistributedSampler = DistributedSampler(cast(Any, range(len(x))), num_replicas=world, rank=rank, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        indices = torch.tensor(list(sampler), dtype=torch.long)
    else:
        indices = torch.arange(len(x))
    local = batch_size // world if shuffle else batch_size
    for start in range(0, len(indices), local):
        chosen = indices[start : start + local].to(x.device)
        yield x[chosen], y[chosen]


def _check_distributed_loaders(train: Split, val: Split | None) -> None:
    """Training batches must be sharded; validation runs whole on every rank so that all ranks agree."""
    if _world()[1] == 1:
        return
    if isinstance(train, DataLoader) and not isinstance(train.sampler, DistributedSampler):
        raise ValueError(
            "under torch.distributed the train DataLoader must use a DistributedSampler; or pass (X, y) tensors and fit shards them"
        )
    if isinstance(val, DataLoader) and isinstance(val.sampler, DistributedSampler):
        raise ValueError(
            "under torch.distributed every rank evaluates the whole validation split: give val a plain DataLoader or (X, y) tensors"
        )


# --------------------------------------------------------------------------------------------------
# the loop


def _make_optimizer(optimizer: str | Callable[..., torch.optim.Optimizer], model: nn.Module, lr: float) -> torch.optim.Optimizer:
    if callable(optimizer) and not isinstance(optimizer, str):
        return optimizer(model.parameters(), lr)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}: choose {', '.join(OPTIMIZERS)} or pass a callable (params, lr) -> Optimizer")
    return OPTIMIZERS[optimizer](model.parameters(), lr=lr)


def _metrics(metrics: Sequence[str] | Mapping[str, Metric] | None) -> dict[str, Metric]:
    if metrics is None:
        return {}
    if isinstance(metrics, Mapping):
        return dict(metrics)
    chosen = {}
    for name in metrics:
        if name not in BUILTIN_METRICS:
            raise ValueError(
                f"unknown metric {name!r}: choose {', '.join(BUILTIN_METRICS)} or pass a dict name -> callable(output, target)"
            )
        chosen[name] = BUILTIN_METRICS[name]
    return chosen


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    data: Any,
    *,
    batch_size: int = 1024,
    metrics: Sequence[str] | Mapping[str, Metric] | None = None,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Loss and metrics of `model` on a whole split (eval mode, no gradient), as plain floats."""
    device = torch.device(device) if device is not None else _model_device(model)
    chosen = _metrics(metrics)
    data = _check_split(data, "data")
    was_training = model.training
    model.eval()
    outputs, targets = [], []
    batches = data if isinstance(data, DataLoader) else _batches(data, batch_size, 0, 0, shuffle=False)
    for x, y in batches:
        outputs.append(model(_inputs(x, model, device)))
        targets.append(y.to(device))
    model.train(was_training)
    output, target = torch.cat(outputs), torch.cat(targets)
    result = {"loss": float(loss(output, target))}
    result.update({name: float(metric(output, target)) for name, metric in chosen.items()})
    return result


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _inputs(x: torch.Tensor, model: nn.Module, device: torch.device) -> torch.Tensor:
    """x on `device`, floating inputs in the model's floating dtype (float64 models take float32 data)."""
    parameter = next(model.parameters(), None)
    dtype = parameter.dtype if parameter is not None and x.is_floating_point() and parameter.is_floating_point() else None
    return x.to(device=device, dtype=dtype, non_blocking=True)


def _improved(value: float, best: float | None, monitor: str) -> bool:
    if best is None:
        return True
    return value < best if monitor.endswith("loss") else value > best


class _NoProgress(contextlib.nullcontext):
    """Stands in for a tqdm bar when progress is off or tqdm is not installed."""

    def update(self, steps: int = 1) -> None:
        """Nothing to show."""

    def set_postfix(self, values: Mapping[str, str], refresh: bool = False) -> None:
        """Nothing to show."""


def _progress(total: int, show: bool) -> Any:
    """A tqdm bar of `total` steps when `show` and tqdm is installed (it comes with lipnets[sklearn])."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoProgress()
    return tqdm(total=total, disable=None if show else True, unit="step", leave=False, desc="fit")


def fit(
    model: nn.Module,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    train: DataLoader | tuple[torch.Tensor, torch.Tensor],
    val: DataLoader | tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 256,
    optimizer: str | Callable = "adam",
    patience: int | None = None,
    monitor: str | None = None,
    metrics: Sequence[str] | Mapping[str, Metric] | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    seed: int = 0,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    device: torch.device | str | None = None,
    privacy: Budget | None = None,
) -> History:
    """Train `model` in place on `train` and return its History.

    train / val: (X, y) tensors or DataLoaders. batch_size is the global batch: under torch.distributed
    (launched with torchrun) the model is wrapped in DistributedDataParallel and each of the W ranks
    takes batch_size / W samples of every global batch (W must divide it), in DistributedSampler order;
    with len(X) divisible by W the run follows the single-process run with the same batch_size.
    Parametrization buffers (power-iteration vectors, warm starts) are broadcast from rank 0 at every
    forward, every rank evaluates the whole validation split, and only rank 0 writes the checkpoint
    and shows progress.

    optimizer: "adam", "adamw", "sgd" or a callable (params, lr) -> Optimizer. `lipnets.project_` runs
    after every step, so mode="project" layers stay feasible. With `val`, the monitored value (default "val_loss"; also
    "val_<metric>", larger is better) selects the best epoch, whose weights are restored at the end;
    `patience` stops after that many epochs without improvement. `checkpoint` is written (rank 0 only)
    after every epoch; `resume=True` continues from it. `seed` fixes shuffling and any randomness in the
    model (dropout) without touching the caller's RNG: the same seed and initial weights give identical
    weights. Each callback is called as callback(epoch, history, model) after every epoch and stops
    training by returning True. device=None trains on the model's device. The progress bar (steps, with
    the latest epoch's losses and metrics) shows on rank 0 when `progress` and stderr is a terminal.

    privacy=lipnets.privacy.Budget(epsilon, delta) trains with Clipless DP-SGD (docs/guides/privacy.md):
    Poisson-sampled batches of expected size batch_size, noise calibrated so that the `epochs` epochs
    spend exactly the budget, history["epsilon"] the epsilon spent after each epoch. It needs (X, y)
    tensors, a single process, a model whose every trainable layer is in mode="project" and whose input
    is bounded (an InputClip first), and a loss with a known Lipschitz constant; `seed` does not fix the
    noise or the batches, which come from operating-system entropy.
    """
    epochs = _positive_int(epochs, "epochs")
    batch_size = _positive_int(batch_size, "batch_size")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if patience is not None:
        patience = _positive_int(patience, "patience")
    rank, world = _world()
    if batch_size % world:
        raise ValueError(f"batch_size={batch_size} is the global batch and must be divisible by the {world} ranks")
    train = _check_split(train, "train")
    val = _check_split(val, "val") if val is not None else None
    _check_distributed_loaders(train, val)
    chosen = _metrics(metrics)
    monitor = monitor or ("val_loss" if val is not None else "loss")
    known = ["loss"] + (["val_loss"] + [f"val_{name}" for name in chosen] if val is not None else [])
    if monitor not in known:
        raise ValueError(
            f"cannot monitor {monitor!r}: available are {known}" + ("" if val is not None else " (pass val= for validation metrics)")
        )
    if patience is not None and val is None:
        raise ValueError("early stopping (patience) needs a validation split: pass val=(X, y)")
    device = torch.device(device) if device is not None else _model_device(model)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if world > 1 and dist.get_backend() == "nccl" and device.type != "cuda":
        raise ValueError("the NCCL backend needs the model on cuda:LOCAL_RANK; move it there or pass device=")
    model.to(device)
    opt = _make_optimizer(optimizer, model, lr)

    history, start, best_value, best_state = History(), 0, None, None
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        meta = load_checkpoint(checkpoint, model, opt)
        history.update({key: list(values) for key, values in meta["history"].items()})
        history.best_epoch, best_value, start = meta["best_epoch"], meta["best_value"], meta["epoch"] + 1
        best_state = meta["best_model"]
    private = _private_training(model, loss, train, privacy, world, epochs=epochs, batch_size=batch_size, start=start)

    net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    devices = [device] if device.type == "cuda" else []
    was_training = model.training
    steps = _steps_per_epoch(train, batch_size, world)
    bar = _progress(steps * (epochs - start), progress and rank == 0)
    with bar, torch.random.fork_rng(devices=devices):
        for epoch in range(start, epochs):
            torch.manual_seed(seed * 1_000_003 + epoch)
            net.train()
            total = torch.zeros((), dtype=torch.float64, device=device)
            count = torch.zeros((), dtype=torch.float64, device=device)
            batches = private.batches(*cast(tuple, train)) if private else _batches(train, batch_size, epoch, seed, shuffle=True)
            for x, y in batches:
                x, y = _inputs(x, model, device), y.to(device, non_blocking=True)
                if private:
                    value = private.step(x, y, opt)
                else:
                    value = loss(net(x), y)
                    opt.zero_grad(set_to_none=True)
                    value.backward()
                    opt.step()
                project_(model)
                total += value.detach().double() * len(x)
                count += len(x)
                bar.update(1)
            if world > 1:
                dist.all_reduce(total)
                dist.all_reduce(count)
            epoch_loss = float(total / count.clamp(min=1))
            if not math.isfinite(epoch_loss):
                raise FloatingPointError(f"the training loss became {epoch_loss} in epoch {epoch}: lower lr or check the data and loss")
            history.setdefault("loss", []).append(epoch_loss)
            if private:
                history.setdefault("epsilon", []).append(private.epsilon())
            if val is not None:
                scores = evaluate(model, loss, val, batch_size=max(batch_size, 1024), metrics=chosen, device=device)
                for name, score in scores.items():
                    history.setdefault(f"val_{name}", []).append(score)
            current = history[monitor][-1]
            if _improved(current, best_value, monitor):
                best_value, history.best_epoch = current, epoch
                if val is not None:
                    best_state = {key: value.detach().clone() for key, value in model.state_dict().items()}
            bar.set_postfix({name: f"{values[-1]:.4g}" for name, values in history.items()}, refresh=False)
            answers = [bool(callback(epoch, history, model)) for callback in callbacks]  # every callback runs
            stop = any(answers)
            if patience is not None and history.best_epoch is not None and epoch - history.best_epoch >= patience:
                stop = True
            stop = stop or (private is not None and private.spent)
            stop = _agree(stop, device, world)
            if checkpoint is not None and rank == 0:
                save_checkpoint(
                    checkpoint,
                    model,
                    opt,
                    epoch=epoch,
                    history=dict(history),
                    best_epoch=history.best_epoch,
                    best_value=best_value,
                    best_model=best_state,
                    seed=seed,
                )
            if stop:
                history.stopped_early = epoch < epochs - 1
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.train(was_training)
    return history


def _private_training(
    model: nn.Module, loss: Callable, train: Split, privacy: Budget | None, world: int, *, epochs: int, batch_size: int, start: int
) -> PrivateTraining | None:
    """The private side of the loop (lipnets.privacy), or None without a budget."""
    if privacy is None:
        return None
    if world > 1 or isinstance(train, DataLoader):
        raise ValueError("private training needs (X, y) tensors in a single process: it draws its own Poisson-sampled batches")
    x = train[0]
    return PrivateTraining(
        model, cast(nn.Module, loss), privacy, len(x), tuple(x.shape[1:]), epochs=epochs, batch_size=batch_size, start_epoch=start
    )


def _agree(stop: bool, device: torch.device, world: int) -> bool:
    """Stop on every rank as soon as one rank wants to, so that no rank waits forever in a collective."""
    if world == 1:
        return stop
    flag = torch.tensor([float(stop)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _steps_per_epoch(train: Split, batch_size: int, world: int) -> int:
    if isinstance(train, DataLoader):
        return len(train)
    per_rank = math.ceil(len(train[0]) / world)
    return math.ceil(per_rank / (batch_size // world))


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value
