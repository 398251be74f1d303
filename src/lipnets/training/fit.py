"""The fit loop: seeded, checkpointed, early-stopped training that keeps every constraint, DDP-aware.

`fit` trains in place and returns a `History`. Under `torchrun` (torch.distributed initialised) it
wraps the model in DistributedDataParallel and shards each global batch across the ranks, so a run on
W processes follows the same trajectory as a single process with the same `batch_size`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..io.checkpoints import load_checkpoint, save_checkpoint
from ..layers import ConstrainedWeight
from ..privacy import Budget, PrivateTraining
from ..validation import check_finite

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
SCHEDULES = ("constant", "plateau", "cosine")
LOG_EVERY = 10.0
"""Seconds between progress lines in the log when stderr is not a terminal (the first and last epochs always log)."""

log = logging.getLogger("lipnets.fit")

Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor | float]
Callback = Callable[[int, "History", nn.Module], bool | None]


class History(dict):
    """Per-epoch values by name: "loss" (training), "val_loss", "val_<metric>", "lr".

    `best_epoch` is the 0-based epoch with the best monitored value (None without one); `stopped_early`
    says whether patience or a callback ended training before `epochs`; `interrupted` whether Ctrl-C
    (KeyboardInterrupt) did, in which case the best weights seen so far were kept.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.best_epoch: int | None = None
        self.stopped_early = False
        self.interrupted = False

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


Split = DataLoader | tuple[torch.Tensor, ...]
"""A data split: a DataLoader, or (X, y) or (X, y, sample_weight) tensors."""


def _check_split(data: Any, name: str) -> Split:
    """(X, y[, w]) as finite tensors of one length (w non-negative, normalised to mean 1), or a DataLoader."""
    if isinstance(data, DataLoader):
        return data
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
        raise TypeError(f"{name} must be an (X, y) pair or (X, y, sample_weight) of tensors, or a DataLoader, got {type(data).__name__}")
    parts = [torch.as_tensor(part) for part in data]
    for part, role in zip(parts, ("X", "y", "sample_weight")):
        check_finite(part, f"{name} {role}")
    if len(parts[0]) == 0 or any(len(part) != len(parts[0]) for part in parts):
        raise ValueError(f"{name} X, y (and sample_weight) must be non-empty with equal lengths, got {[len(part) for part in parts]}")
    if len(parts) == 3:
        weight = parts[2].reshape(-1)
        if len(weight) != len(parts[0]) or (weight < 0).any() or not weight.sum() > 0:
            raise ValueError(f"{name} sample_weight must hold one non-negative number per row, not all zero")
        parts[2] = weight / weight.double().mean().to(weight.dtype)
    return tuple(parts)


def _order(n: int, seed: int, epoch: int, rank: int, world: int) -> torch.Tensor:
    """This rank's indices for one pass: DistributedSampler's order (seed + epoch), computed with tensors."""
    generator = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=generator)
    total = math.ceil(n / world) * world
    if total > n:
        order = torch.cat([order, order[: total - n]])
    return order[rank:total:world]


def _batches(
    data: Split, batch_size: int, epoch: int, seed: int, shuffle: bool, steps: int | None = None
) -> Iterator[tuple[torch.Tensor, ...]]:
    """This rank's batches: DistributedSampler order, each global batch of `batch_size` split across ranks.

    With `steps`, an epoch is that many batches of a stream that continues across epochs (passes over
    the data follow one another), so epochs can be shorter than a pass over a large table.
    """
    if isinstance(data, DataLoader):
        if isinstance(data.sampler, DistributedSampler):
            data.sampler.set_epoch(epoch)
        yield from data
        return
    rank, world = _world()
    n = len(data[0])
    local = batch_size // world if shuffle else batch_size
    if not shuffle:
        for start in range(0, n, local):
            yield tuple(part[start : start + local] for part in data)
        return
    per_pass = math.ceil(math.ceil(n / world) / local)
    first = 0 if steps is None else epoch * steps
    count = per_pass if steps is None else steps
    for step in range(first, first + count):
        passes, offset = divmod(step, per_pass)
        if step == first or offset == 0:
            order = _order(n, seed, epoch if steps is None else passes, rank, world)
        chosen = order[offset * local : (offset + 1) * local].to(data[0].device)
        yield tuple(part[chosen] for part in data)


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
# losses with sample weights


def _per_sample(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A copy of `loss` returning one value per sample: weighted training needs an nn.Module loss with `reduction`."""
    if not hasattr(loss, "reduction"):
        raise TypeError(
            f"sample weights need a loss with a `reduction` attribute (every torch.nn and lipnets loss has one), got {type(loss).__name__}"
        )
    unreduced = copy.copy(loss)
    unreduced.reduction = "none"
    return unreduced


def _weighted(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """mean_i w_i l_i over the batch, each sample's loss averaged over its other dimensions."""
    return (values.reshape(len(weight), -1).mean(dim=1) * weight.to(values.dtype)).mean()


def _batch_loss(loss: Callable, unreduced: Callable | None, output: torch.Tensor, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    if len(batch) == 3:
        assert unreduced is not None
        return _weighted(unreduced(output, batch[1]), batch[2])
    return loss(output, batch[1])


# --------------------------------------------------------------------------------------------------
# the loop


def _make_optimizer(optimizer: str | Callable[..., torch.optim.Optimizer], model: nn.Module, lr: float) -> torch.optim.Optimizer:
    if callable(optimizer) and not isinstance(optimizer, str):
        return optimizer(model.parameters(), lr)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}: choose {', '.join(OPTIMIZERS)} or pass a callable (params, lr) -> Optimizer")
    return OPTIMIZERS[optimizer](model.parameters(), lr=lr)


def _make_schedule(
    schedule: str, opt: torch.optim.Optimizer, monitor: str, patience: int | None, total_steps: int, min_delta: float
) -> Any:
    """None for a constant rate; ReduceLROnPlateau (halve after patience // 3 epochs without progress); per-step cosine."""
    if schedule == "plateau":
        wait = max(1, (patience or 10) // 3)
        mode: Literal["min", "max"] = "min" if monitor.endswith("loss") else "max"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=mode, factor=0.5, patience=wait, threshold=max(min_delta, 1e-4))
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps))
    return None


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
    """Loss and metrics of `model` on a whole split (eval mode, no gradient), as plain floats.

    With (X, y, sample_weight) the loss is the weighted mean; metrics are unweighted.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    chosen = _metrics(metrics)
    data = _check_split(data, "data")
    was_training = model.training
    model.eval()
    outputs, targets, weights = [], [], []
    batches = data if isinstance(data, DataLoader) else _batches(data, batch_size, 0, 0, shuffle=False)
    for batch in batches:
        outputs.append(model(_inputs(batch[0], model, device)))
        targets.append(batch[1].to(device))
        weights += [batch[2].to(device)] if len(batch) == 3 else []
    model.train(was_training)
    output, target = torch.cat(outputs), torch.cat(targets)
    value = _weighted(_per_sample(loss)(output, target), torch.cat(weights)) if weights else loss(output, target)
    result = {"loss": float(value)}
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


def _improved(value: float, best: float | None, monitor: str, min_delta: float = 0.0) -> bool:
    """Whether `value` beats `best` by more than the relative margin `min_delta` (losses fall, metrics rise)."""
    if best is None:
        return True
    margin = min_delta * abs(best)
    return value < best - margin if monitor.endswith("loss") else value > best + margin


class _Progress:
    """A tqdm bar on a terminal; otherwise a line to the `lipnets.fit` log every LOG_EVERY seconds.

    With early stopping the bar's total is the epoch at which training stops if the monitored value
    does not improve again (best epoch + patience), so its ETA never assumes epochs that will not run.
    """

    def __init__(self, steps_per_epoch: int, epochs: int, start: int, patience: int | None, show: bool) -> None:
        self.steps, self.epochs, self.patience, self.start = steps_per_epoch, epochs, patience, start
        self.show, self.last_log, self.started = show, 0.0, time.perf_counter()
        self.bar: Any = None
        if show and sys.stderr.isatty():
            with contextlib.suppress(ImportError):
                from tqdm.auto import tqdm

                self.bar = tqdm(total=self._total(None), unit="step", leave=False, desc="fit")

    def _total(self, best_epoch: int | None) -> int:
        last = (
            self.epochs if self.patience is None else min(self.epochs, (best_epoch if best_epoch is not None else -1) + 1 + self.patience)
        )
        return self.steps * max(last - self.start, 1)

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def epoch(self, epoch: int, history: History) -> None:
        if not self.show:
            return
        values = {name: f"{values[-1]:.4g}" for name, values in history.items()}
        if self.bar is not None:
            self.bar.total = max(self._total(history.best_epoch), self.bar.n)
            self.bar.set_postfix(values, refresh=True)
            return
        now = time.perf_counter()
        if epoch == self.start or now - self.last_log >= LOG_EVERY:
            self.last_log = now
            shown = " ".join(f"{name}={value}" for name, value in values.items())
            log.info("epoch %d/%d (%.1f s): %s, best epoch %s", epoch + 1, self.epochs, now - self.started, shown, history.best_epoch)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def fit(
    model: nn.Module,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    train: DataLoader | tuple[torch.Tensor, ...],
    val: DataLoader | tuple[torch.Tensor, ...] | None = None,
    *,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 256,
    optimizer: str | Callable = "adam",
    lr_schedule: str = "constant",
    steps_per_epoch: int | None = None,
    patience: int | None = None,
    min_delta: float = 0.0,
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

    train / val: (X, y) or (X, y, sample_weight) tensors, or DataLoaders. Sample weights (non-negative,
    normalised to mean 1) weight each sample's loss, so the loss must be an nn.Module with a `reduction`
    attribute (every torch.nn and lipnets loss). batch_size is the global batch: under torch.distributed
    (launched with torchrun) the model is wrapped in DistributedDataParallel and each of the W ranks
    takes batch_size / W samples of every global batch (W must divide it), in DistributedSampler order;
    with len(X) divisible by W the run follows the single-process run with the same batch_size.
    Parametrization buffers (power-iteration vectors, warm starts) are broadcast from rank 0 at every
    forward, every rank evaluates the whole validation split, and only rank 0 writes the checkpoint
    and shows progress. `steps_per_epoch` (tensor data only) makes an epoch that many batches of a
    shuffled stream that runs on across epochs: validation, patience and checkpoints then come at
    that rhythm instead of once per pass over a large table.

    optimizer: "adam", "adamw", "sgd" or a callable (params, lr) -> Optimizer. lr_schedule: "constant",
    "plateau" (halve the rate after patience // 3 epochs without improvement of the monitored value) or
    "cosine" (decay to 0 over all steps). `lipnets.project_` runs after every step, so mode="project"
    layers stay feasible. With `val`, the monitored value (default "val_loss"; also "val_<metric>",
    larger is better) selects the best epoch, whose weights are restored at the end; `patience` stops
    after that many epochs without an improvement larger than `min_delta` (relative to the best value;
    0 counts any improvement), and the "plateau" schedule uses the same margin. `checkpoint` is written (rank 0 only) after every
    epoch; `resume=True` continues from it. `seed` fixes shuffling and any randomness in the model
    (dropout) without touching the caller's RNG: the same seed and initial weights give identical
    weights. Each callback is called as callback(epoch, history, model) after every epoch and stops
    training by returning True. device=None trains on the model's device.

    Ctrl-C (KeyboardInterrupt) after the first epoch ends training cleanly: the best weights so far are
    restored, a warning says so and `history.interrupted` is True. Progress (rank 0, when `progress`):
    a tqdm bar on a terminal, otherwise a line to the "lipnets.fit" logger every 10 seconds.

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
    if lr_schedule not in SCHEDULES:
        raise ValueError(f"unknown lr_schedule {lr_schedule!r}: choose {', '.join(SCHEDULES)}")
    if patience is not None:
        patience = _positive_int(patience, "patience")
    if steps_per_epoch is not None:
        steps_per_epoch = _positive_int(steps_per_epoch, "steps_per_epoch")
    rank, world = _world()
    if batch_size % world:
        raise ValueError(f"batch_size={batch_size} is the global batch and must be divisible by the {world} ranks")
    train = _check_split(train, "train")
    val = _check_split(val, "val") if val is not None else None
    if steps_per_epoch is not None and isinstance(train, DataLoader):
        raise ValueError("steps_per_epoch needs (X, y) tensors; a DataLoader's epoch is its own length")
    weighted = any(isinstance(split, tuple) and len(split) == 3 for split in (train, val))
    unreduced = _per_sample(loss) if weighted else None
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
    projected = [module for module in model.modules() if isinstance(module, ConstrainedWeight) and module.mode == "project"]
    steps = steps_per_epoch or _steps_per_epoch(train, batch_size, world)
    if not (isinstance(min_delta, (int, float)) and 0 <= min_delta < 1):
        raise ValueError(f"min_delta must be a number in [0, 1), got {min_delta!r}")
    schedule = _make_schedule(lr_schedule, opt, monitor, patience, steps * epochs, min_delta)

    history, start, best_value, best_state = History(), 0, None, None
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        meta = load_checkpoint(checkpoint, model, opt)
        history.update({key: list(values) for key, values in meta["history"].items()})
        history.best_epoch, best_value, start = meta["best_epoch"], meta["best_value"], meta["epoch"] + 1
        best_state = meta["best_model"]
        if schedule is not None and meta.get("schedule") is not None:
            schedule.load_state_dict(meta["schedule"])
    private = _private_training(model, loss, train, privacy, world, epochs=epochs, batch_size=batch_size, start=start)

    net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    devices = [device] if device.type == "cuda" else []
    was_training = model.training
    bar = _Progress(steps, epochs, start, patience if val is not None else None, progress and rank == 0)
    progress_value, progress_epoch = best_value, history.best_epoch if history.best_epoch is not None else start - 1
    epoch = start
    try:
        with torch.random.fork_rng(devices=devices):
            for epoch in range(start, epochs):
                torch.manual_seed(seed * 1_000_003 + epoch)
                net.train()
                total = torch.zeros((), dtype=torch.float64, device=device)
                count = torch.zeros((), dtype=torch.float64, device=device)
                batches = (
                    private.batches(*cast(tuple, train))
                    if private
                    else _batches(train, batch_size, epoch, seed, shuffle=True, steps=steps_per_epoch)
                )
                for batch in batches:
                    batch = (_inputs(batch[0], model, device), *(part.to(device, non_blocking=True) for part in batch[1:]))
                    if private:
                        value = private.step(batch[0], batch[1], opt)
                    else:
                        value = _batch_loss(loss, unreduced, net(batch[0]), batch)
                        opt.zero_grad(set_to_none=True)
                        value.backward()
                        opt.step()
                    if lr_schedule == "cosine":
                        schedule.step()
                    for module in projected:  # lipnets.project_, without walking the model at every step
                        module.project_()
                    total += value.detach().double() * len(batch[0])
                    count += len(batch[0])
                    bar.step()
                if world > 1:
                    dist.all_reduce(total)
                    dist.all_reduce(count)
                epoch_loss = float(total / count.clamp(min=1))
                if not math.isfinite(epoch_loss):
                    raise FloatingPointError(f"the training loss became {epoch_loss} in epoch {epoch}: lower lr or check the data and loss")
                history.setdefault("loss", []).append(epoch_loss)
                history.setdefault("lr", []).append(float(opt.param_groups[0]["lr"]))
                if private:
                    history.setdefault("epsilon", []).append(private.epsilon())
                if val is not None:
                    scores = evaluate(model, loss, val, batch_size=max(batch_size, 4096), metrics=chosen, device=device)
                    for name, score in scores.items():
                        history.setdefault(f"val_{name}", []).append(score)
                current = history[monitor][-1]
                if _improved(current, progress_value, monitor, min_delta):
                    progress_value, progress_epoch = current, epoch
                if _improved(current, best_value, monitor):
                    best_value, history.best_epoch = current, epoch
                    if val is not None:
                        best_state = {key: value.detach().clone() for key, value in model.state_dict().items()}
                if lr_schedule == "plateau":
                    schedule.step(current)
                bar.epoch(epoch, history)
                answers = [bool(callback(epoch, history, model)) for callback in callbacks]  # every callback runs
                stop = any(answers)
                if patience is not None and epoch - progress_epoch >= patience:
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
                        schedule=schedule.state_dict() if schedule is not None else None,
                        seed=seed,
                    )
                if stop:
                    history.stopped_early = epoch < epochs - 1
                    break
    except KeyboardInterrupt:
        if history.epochs == 0:
            raise
        history.interrupted = True
        best = history.best_epoch
        kept = (
            f"the weights of epoch {best + 1} (the best so far)" if best_state is not None and best is not None else "the current weights"
        )
        warnings.warn(f"training interrupted in epoch {epoch + 1} of {epochs}: keeping {kept}", RuntimeWarning, stacklevel=2)
    finally:
        bar.close()
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
    if world > 1 or isinstance(train, DataLoader) or len(train) != 2:
        raise ValueError(
            "private training needs (X, y) tensors, without sample weights, in a single process: it draws its own Poisson-sampled batches"
        )
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
