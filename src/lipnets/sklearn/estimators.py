"""scikit-learn estimators: monotonic and Lipschitz networks for real tables, with guarantees in original units.

Columns are encoded inside the estimator (`lipnets.sklearn.columns`: categories one-hot, ordered
categories as codes, missing values imputed with a missing flag), then standardised (x' = (x - mu) /
sigma; one-hot and flag columns are centred only, and for regression the target is standardised too).
`lipschitz` is the constant lambda of each network in those standardised units, the scale-free knob of
Kitouni et al., "Robust and Provably Monotonic Networks", Machine Learning: Science and Technology 2023
(Eq. 2.6). The guarantees are reported in the user's units, computed soundly in float64 from the weights
that run (docs/reference/monotonic.md, "Standardisation"):

- `lipschitz_bound_`: the l1 -> output bound over the encoded columns in original units;
- `feature_lipschitz_`: per input column, how far the output can move per unit of that column (per step
  of an ordered category; for an unordered category, when it changes to any other category);
- `verify_monotonic(X)` checks the constraints over dense pairs, in original units.

`monotone_constraints` follows LightGBM: a list of -1 (decreasing), 0 (free), +1 (increasing) per
column, or a dict {column name: sign} for DataFrames (unnamed columns are free). For a multiclass
classifier, constraints are per class: a (n_classes, n_features) matrix, or a dict of per-class lists;
class k's logit then moves in the given direction. For two classes the sign is that of the probability
of `classes_[1]` (the larger label).

Training scales with the table: `batch_size`, `n_estimators` and the validation rhythm adapt to the
number of rows (see `_NetworkEstimator`), networks train in float32 and serve in float64, and the fit
stops when the validation loss stops improving (`early_stopping`, `n_iter_no_change`), after `max_iter`
epochs, or after `max_time` seconds, keeping the best weights; Ctrl-C does the same.

`privacy=(epsilon, delta)` trains with Clipless DP-SGD (lipnets.privacy; docs/guides/privacy.md) and sets
`epsilon_`, the epsilon spent. Nothing computed from the data may then shape the model: no standardisation
(scale the columns by public constants beforehand), each feature clamped to [-3, 3] inside the model (a
monotone clamp, so monotonicity holds), one network, no validation split or early stopping, a regression
target clamped to [-3, 3] with the squared error. The layers are projected (mode="project") after every
step. Column encodings learned from the data would leak too, so every column must be numeric without
missing values (encode categories by public rules beforehand), and sample or class weights, warm_start
and partial_fit are refused: each fit spends its budget on one run from scratch.
"""

from __future__ import annotations

import inspect
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..guarantees import MonotonicityReport, SystematicBand
    from ..privacy import Budget
    from ..validation import ArrayLike

REGRESSION_LOSSES = ("squared_error", "absolute_error", "huber")
CLASSIFICATION_LOSSES = ("log_loss", "hinge")
AUTO_EPOCHS = 150
AUTO_STEPS = 2_000
AUTO_ROWS = 1 << 18
"""max_iter="auto": 150 epochs; without early stopping, also no more epochs than make 2,000 steps or show a
network 2^18 rows (counting repeats), whichever comes first."""
BATCH_FRACTION = 16
"""batch_size="auto": about a sixteenth of the table (a power of two in [32, 4096]), so an epoch is about 16
steps on mid-sized tables: a step costs about as much at 256 rows as at 32 on CPU (the overhead of a small
network's step dominates), so larger batches on larger tables cut the fit time at the same accuracy."""
AUTO_EARLY_STOPPING = 10_000
"""early_stopping="auto" holds out a validation split above this many rows (HistGradientBoosting's rule)."""
ROWS_PER_EPOCH = 1 << 18
"""Rows per epoch on large tables (validation, patience and max_iter count epochs of at most this many rows)."""
MAX_VALIDATION_ROWS = 1 << 17
"""The held-out part is at most this many rows: enough to tell epochs apart, cheap to score after each one."""
PREDICT_ROWS = 1 << 16
MIN_DELTA = 1e-3
"""Early stopping counts an epoch as progress when it lowers the best validation loss by more than 0.1%."""
PRIVATE_INPUT_BOUND = 3.0
"""With privacy, each feature (and a regression target) is clamped to [-3, 3] in the user's units: no
statistic of the private data may scale it, so scale the columns by public constants beforehand."""


def _positive_int(value: Any) -> bool:
    return bool(isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1)


def _number(low: float, high: float = math.inf, *, closed_low: bool = False) -> Any:
    def check(value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
            return False
        return bool((value >= low if closed_low else value > low) and value < high)

    return check


def _auto_or(check: Any) -> Any:
    return lambda value: value == "auto" or check(value)


# Each parameter's check and what it accepts: one table, so that a new parameter is one more entry.
PARAMETERS: dict[str, tuple[Any, str]] = {
    "lipschitz": (_number(0.0), "a finite number > 0"),
    "hidden": (
        lambda v: not isinstance(v, (str, int, np.integer)) and len(v) > 0 and all(_positive_int(w) and w % 2 == 0 for w in v),
        "a non-empty sequence of even layer widths (GroupSort sorts pairs)",
    ),
    "n_estimators": (_auto_or(_positive_int), "'auto' or a positive integer"),
    "max_iter": (_auto_or(_positive_int), "'auto' or a positive integer (epochs)"),
    "batch_size": (_auto_or(_positive_int), "'auto' or a positive integer"),
    "learning_rate": (_auto_or(_number(0.0)), "'auto' or a finite number > 0"),
    "early_stopping": (lambda v: v == "auto" or isinstance(v, (bool, np.bool_)), "'auto', True or False"),
    "validation_fraction": (_number(0.0, 1.0), "a number in (0, 1)"),
    "n_iter_no_change": (_positive_int, "a positive integer (epochs)"),
    "max_time": (lambda v: v is None or _number(0.0)(v), "None or a number of seconds > 0"),
    "warm_start": (lambda v: isinstance(v, (bool, np.bool_)), "True or False"),
    "verbose": (lambda v: isinstance(v, (bool, np.bool_, int, np.integer)), "True or False"),
    "privacy": (lambda v: v is None or (isinstance(v, (tuple, list)) and len(v) == 2), "None or (epsilon, delta)"),
}


def auto_settings(rows: int) -> dict[str, int]:
    """What the "auto" parameters become for a table of `rows` training rows.

    batch_size: 32 up to about 700 rows, then about rows / 16 (a power of two) up to 4096 from about 46k
    rows, so an epoch is at most 23 steps until the batch stops growing; n_estimators: 5 networks averaged up
    to 2,000 rows (variance dominates there), fewer as the table grows, 1 from about 7,000 rows; an
    epoch: the whole table, or 2^18 rows of a continuing shuffle on larger ones.
    """
    batch = int(np.clip(2 ** round(math.log2(max(rows, 1) / BATCH_FRACTION)), 32, 4096))
    members = int(np.clip(round(10_000 / max(rows, 1)), 1, 5))
    steps = math.ceil(min(rows, ROWS_PER_EPOCH) / batch)
    return {"batch_size": batch, "n_estimators": members, "steps_per_epoch": steps}


def _scaling(values: np.ndarray, weight: np.ndarray | None, centre_only: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations (weighted), in float64; one-hot and flag columns keep scale 1."""
    mean = np.zeros(values.shape[1])
    scale = np.ones(values.shape[1])
    for column in range(values.shape[1]):
        data = values[:, column].astype(np.float64)
        mean[column] = np.average(data, weights=weight)
        spread = math.sqrt(np.average((data - mean[column]) ** 2, weights=weight))
        if not centre_only[column] and spread > 1e-12 * max(1.0, abs(mean[column])):
            scale[column] = spread
    return mean, scale


def _check_sample_weight(sample_weight: ArrayLike | None, rows: int) -> np.ndarray | None:
    """Finite non-negative weights, one per row, not all zero; None when absent or all equal (the same fit)."""
    if sample_weight is None:
        return None
    weight = np.asarray(sample_weight, dtype=np.float64)
    if weight.ndim == 0:
        weight = np.full(rows, float(weight))
    if weight.shape != (rows,):
        raise ValueError(f"sample_weight must hold one weight per row: got shape {weight.shape} for {rows} rows")
    if not np.isfinite(weight).all() or (weight < 0).any() or not weight.sum() > 0:
        raise ValueError("sample_weight must be finite and non-negative, and not all zero")
    return None if np.all(weight == weight[0]) else weight


def _member_splits(data: tuple, index: int, held: int) -> tuple[tuple, tuple | None]:
    """Member `index` holds out rows [index * held, (index + 1) * held) (wrapping) and trains on the rest.

    The rows are already shuffled; member 0's parts are views, the others' copies.
    """
    data = tuple(part for part in data if part is not None)
    rows = len(data[0])
    if not held:
        return data, None
    start = (index * held) % rows
    if start + held <= rows:
        val = tuple(part[start : start + held] for part in data)
        train = tuple(part[start + held :] if start == 0 else _cat(part[:start], part[start + held :]) for part in data)
    else:
        wrap = start + held - rows
        val = tuple(_cat(part[start:], part[:wrap]) for part in data)
        train = tuple(part[wrap:start] for part in data)
    return train, val


def _epochs(max_iter: int | str, held: int, steps_per_epoch: int, rows: int) -> int:
    """max_iter, or for "auto" 150 epochs with early stopping; without it at most 150 epochs, 2,000 steps
    and 2^18 rows seen (each network), whichever is reached first."""
    if max_iter != "auto":
        return int(max_iter)
    if held:
        return AUTO_EPOCHS
    return int(np.clip(min(math.ceil(AUTO_STEPS / steps_per_epoch), math.ceil(AUTO_ROWS / max(rows, 1))), 1, AUTO_EPOCHS))


def _members(model: Any) -> Any:
    """The ModuleList of networks averaged inside an estimator's ScaledNetwork."""
    return model.network.members


def _cat(first: Any, second: Any) -> Any:
    import torch

    return torch.cat([first, second])


def _keep(optimizers: list, index: int) -> Any:
    """An optimizer factory for lipnets.fit that creates member `index`'s Adam once and reuses it (partial_fit)."""

    def make(parameters: Any, lr: float) -> Any:
        import torch

        if optimizers[index] is None:
            optimizers[index] = torch.optim.Adam(parameters, lr=lr, fused=True)
        return optimizers[index]

    return make


class _NetworkEstimator(BaseEstimator):
    """Shared fit/predict machinery; the task mixins provide the target encoding, the loss and the output scaling.

    Parameters (HistGradientBoosting's names where they exist):

    - lipschitz: lambda of each network, in standardised units: how far the (standardised) prediction or the
      logit may move per standard deviation of a column. Default 1 for regression (a standardised target)
      and 4 for classification (a logit of 4 is a probability of 98%; real class boundaries are that steep).
    - hidden: hidden layer widths (default (32, 32)).
    - n_estimators: networks averaged; "auto" (default) picks 5 on small tables down to 1 from 7k rows
      (see `auto_settings`; 1 under privacy). Averaging keeps monotonicity and the bound is the mean of the bounds.
    - max_iter: the most epochs each network trains; "auto" (default) is 150 with early stopping, and
      without it at most 150 epochs, 2,000 steps and 2^18 rows seen (repeats counted), whichever comes
      first (a 300-row table trains 150 epochs, a 4,000-row one 66, a 10,000-row one 27). An epoch is the whole table or,
      on large tables, 2^18 rows of a continuing shuffle. Without early stopping the rate decays to 0
      along a cosine over all the epochs, and the final weights are kept.
    - batch_size, learning_rate: "auto" (default) grows the batch with the table (about rows / 16, a
      power of two in [32, 4096]; see `auto_settings`); the Adam rate is 0.01
      with batches of 32, scaled by the square root of the batch ratio up to 0.05. The rate halves
      when the validation loss stalls.
    - early_stopping: "auto" (default) holds out `validation_fraction` of the rows (at most 131,072; a
      different part for each network) when the table has more than 10,000 rows (below that a held-out part is too small to
      choose an epoch reliably), and stops each network after `n_iter_no_change` epochs without
      improving its validation loss by more than 0.1%, restoring its best epoch; the rate halves when it stalls.
    - max_time: a budget in seconds for the whole fit (None: no limit).
    - warm_start: fit continues from the fitted networks (same columns and classes) instead of anew.
    - random_state, verbose: reproducibility; progress (a bar on a terminal, else the "lipnets.fit" log).
    - privacy: None, or (epsilon, delta) to train with differential privacy (see the module docstring):
      numeric columns without gaps only, one network, no early stopping, no weights, no warm start.
    """

    model_: Any  # set by fit: the ScaledNetwork that predicts

    def __init__(
        self,
        *,
        lipschitz: float = 1.0,
        hidden: Sequence[int] = (32, 32),
        n_estimators: int | str = "auto",
        max_iter: int | str = "auto",
        batch_size: int | str = "auto",
        learning_rate: float | str = "auto",
        loss: str | nn.Module | None = None,
        early_stopping: bool | str = "auto",
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        max_time: float | None = None,
        categorical_features: str | Sequence[Any] = "from_dtype",
        warm_start: bool = False,
        random_state: int | np.random.RandomState | None = None,
        verbose: bool = False,
        privacy: tuple[float, float] | None = None,
    ) -> None:
        self.lipschitz = lipschitz
        self.hidden = hidden
        self.n_estimators = n_estimators
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.loss = loss
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.max_time = max_time
        self.categorical_features = categorical_features
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose
        self.privacy = privacy

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.categorical = True
        tags.input_tags.string = True
        tags.input_tags.sparse = True
        tags.non_deterministic = False
        return tags

    # -- validation -----------------------------------------------------------------------------------
    def _check_params(self) -> None:
        for name, (check, accepted) in PARAMETERS.items():
            value = getattr(self, name)
            try:
                ok = bool(check(value))
            except TypeError:
                ok = False
            if not ok:
                raise ValueError(f"{name} must be {accepted}, got {value!r}")

    def _budget(self) -> Budget | None:
        """privacy=(epsilon, delta) as a lipnets.privacy.Budget (which checks the values), or None."""
        if self.privacy is None:
            return None
        from ..privacy import Budget

        return Budget(float(self.privacy[0]), float(self.privacy[1]))

    def _refuse_under_privacy(self, *, partial: bool, weight: np.ndarray | None) -> None:
        """What a private fit cannot do honestly, refused before the data shapes anything."""
        problems = []
        if partial or self.warm_start:
            problems.append(
                "warm_start and partial_fit continue a fit, and every fit spends the whole budget: refit from scratch (warm_start=False)"
            )
        if self.n_estimators not in ("auto", 1):
            problems.append(f"n_estimators={self.n_estimators!r}: each network would spend the budget again; use 1 (or 'auto')")
        if self.early_stopping is True or self.early_stopping is np.True_:
            problems.append("early_stopping=True: a validation split of the private rows is not protected; use 'auto' or False")
        if weight is not None or getattr(self, "class_weight", None) is not None:
            problems.append("sample_weight and class_weight change each row's sensitivity: leave them out")
        if problems:
            raise ValueError("privacy=(epsilon, delta) cannot be used with " + "; ".join(problems))

    def _monotone_spec(self, n_features: int, outputs: int) -> np.ndarray:
        """The constraints per input column as an int array: (n_features,), or (outputs, n_features) per class."""
        spec = getattr(self, "monotone_constraints", None)
        names = [str(name) for name in getattr(self, "feature_names_in_", [])]
        label = (lambda i: repr(names[i])) if names else (lambda i: f"column {i}")
        if spec is None:
            matrix = np.zeros(n_features, dtype=np.int64)
        elif isinstance(spec, Mapping):
            if not names:
                raise ValueError("monotone_constraints is a dict by column name, but X has no column names: pass a DataFrame or a list")
            unknown = [key for key in spec if str(key) not in names]
            if unknown:
                raise ValueError(
                    f"monotone_constraints names unknown column(s) {', '.join(map(repr, unknown))}; the columns are {', '.join(names)}"
                )
            rows = {names.index(str(key)): value for key, value in spec.items()}
            shape = (outputs, n_features) if any(np.ndim(v) == 1 for v in rows.values()) else (n_features,)
            matrix = np.zeros(shape, dtype=object)
            for index, value in rows.items():
                matrix[..., index] = value
        else:
            matrix = np.asarray(spec, dtype=object)
            if matrix.ndim not in (1, 2) or matrix.shape[-1] != n_features:
                raise ValueError(
                    f"monotone_constraints has shape {matrix.shape} but X has {n_features} feature(s): give one -1/0/+1 per column"
                    + (f" (or a ({outputs}, {n_features}) matrix, one row per class)" if outputs > 1 else "")
                )
        for position, value in np.ndenumerate(matrix):
            if isinstance(value, (bool, str)) or value not in (-1, 0, 1):
                raise ValueError(
                    f"monotone_constraints for {label(position[-1])} is {value!r}: use -1 (decreasing), 0 (free) or +1 (increasing)"
                )
        matrix = matrix.astype(np.int64)
        if matrix.ndim == 2 and matrix.shape[0] != outputs:
            raise ValueError(
                f"monotone_constraints has {matrix.shape[0]} rows but the model has {outputs} output(s): give one row per class"
            )
        if outputs > 1 and matrix.ndim == 1 and matrix.any():
            raise ValueError(
                "a multiclass model needs per-class constraints: a (n_classes, n_features) matrix or a dict of per-class "
                "lists, since raising every logit together changes no probability"
            )
        return matrix

    # -- inputs ---------------------------------------------------------------------------------------
    def _frame(self, X: ArrayLike, reset: bool) -> Any:
        """X as a DataFrame after scikit-learn's checks of the column names and count."""
        from .columns import as_frame

        if X is None:
            raise ValueError(f"{type(self).__name__} needs X: a DataFrame or a 2-D array")
        frame = as_frame(X)
        validate_data(self, frame if not hasattr(X, "columns") else X, skip_check_array=True, reset=reset)
        for size, what in ((frame.shape[0], "sample"), (frame.shape[1], "feature")):
            if size == 0:
                raise ValueError(f"Found array with 0 {what}(s) (shape={frame.shape}) while a minimum of 1 is required.")
        if any(dtype.kind == "c" for dtype in frame.dtypes):
            raise ValueError("Complex data not supported: give real numbers")
        return frame

    def _encode(self, X: ArrayLike, dtype: Any = np.float64) -> np.ndarray:
        check_is_fitted(self, "model_")
        return self.encoder_.transform(self._frame(X, reset=False), dtype)

    # -- fitting --------------------------------------------------------------------------------------
    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> _NetworkEstimator:
        """Encode and standardise X (and y for regression), train the networks, record the sound bounds.

        sample_weight: one non-negative weight per row (each row's loss is weighted; medians and scalings
        are weighted too). A fit that raises leaves the estimator as it was (a fitted model stays usable).
        """
        return self._transactional(self._fit, X, y, sample_weight, warm=bool(self.warm_start), epochs=None)

    def partial_fit(
        self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None, classes: ArrayLike | None = None
    ) -> _NetworkEstimator:
        """One epoch over the chunk (X, y): for tables streamed in chunks that do not fit in memory.

        The first call learns the column encoding and the scalings from its chunk (make it representative)
        and, for classifiers, needs `classes` (every label the stream will contain). Later calls continue
        the same networks and optimizer; there is no early stopping.
        """
        fitted = hasattr(self, "model_")
        if not fitted and isinstance(self, ClassifierMixin) and classes is None:
            raise ValueError("the first call to partial_fit needs classes=: every label the stream will contain")
        return self._transactional(self._fit, X, y, sample_weight, warm=fitted, epochs=1, classes=classes)

    def _transactional(self, method: Any, *args: Any, **kwargs: Any) -> _NetworkEstimator:
        before = dict(self.__dict__)
        try:
            return method(*args, **kwargs)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            self.__dict__.pop("_trainer", None)  # its networks may be half-trained: partial_fit restarts from model_
            raise

    def _fit(
        self,
        X: ArrayLike,
        y: ArrayLike,
        sample_weight: ArrayLike | None,
        *,
        warm: bool,
        epochs: int | None,
        classes: ArrayLike | None = None,
    ) -> _NetworkEstimator:
        import copy

        import torch

        from .columns import ColumnEncoder
        from .network import build_network

        self._check_params()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        warm = warm and hasattr(self, "model_")
        frame = self._frame(X, reset=not warm)
        y = self._check_y(y, len(frame))
        weight = self._class_weights(y, _check_sample_weight(sample_weight, len(frame)))
        budget = self._budget()
        if budget is not None:
            self._refuse_under_privacy(partial=epochs is not None, weight=weight)
        if weight is not None and (weight == 0).any():  # a zero weight is a row that is not there
            keep = weight > 0
            frame, y, weight = frame[keep], y[keep], weight[keep]
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        order = np.random.default_rng(seed).permutation(len(frame))
        if not warm:
            target, outputs = self._encode_target(y, refit=True, classes=classes)
            self.encoder_ = ColumnEncoder.fit(frame, self.categorical_features, sample_weight=weight, private=budget is not None)
            self.monotone_constraints_ = self._monotone_spec(frame.shape[1], outputs)
            inputs = self.encoder_.transform(frame, np.float32, order)
            members = int(self.n_estimators) if self.n_estimators != "auto" else 1 if budget else auto_settings(len(frame))["n_estimators"]
            self.architecture_ = {
                "in_features": inputs.shape[1],
                "out_features": outputs,
                "hidden": [int(w) for w in self.hidden],
                "lipschitz": float(self.lipschitz),
                "monotone": self.encoder_.constraints(self.monotone_constraints_).tolist(),
                "members": members,
                **({"input_clip": PRIVATE_INPUT_BOUND} if budget is not None else {}),
            }
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = build_network(self.architecture_, torch.float32)
            if budget is None:
                mean, scale = _scaling(inputs, None if weight is None else weight[order], self.encoder_.indicators())
                model.set_scaling(mean, scale, *self._target_scaling)
            self.__dict__.pop("_trainer", None)
        else:
            target, _ = self._encode_target(y, refit=False)
            inputs = self.encoder_.transform(frame, np.float32, order)
            trainer = getattr(self, "_trainer", None) if epochs is not None else None
            model = trainer[0] if trainer is not None else copy.deepcopy(self.model_).float()
        inputs -= model.mean.numpy()
        inputs /= model.scale.numpy()
        if epochs is None or not warm or getattr(self, "_trainer", None) is None:
            self._trainer = (model, [None] * len(_members(model)))
        self._train(
            torch.from_numpy(inputs),
            target[torch.from_numpy(order)],
            None if weight is None else torch.from_numpy(weight[order]),
            seed,
            epochs,
            budget,
        )
        return self

    def _train(
        self, inputs: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, seed: int, epochs: int | None, budget: Budget | None
    ) -> None:
        """Train each member (float32) on its split, then serve a float64 copy and record the bounds.

        With a budget the one member trains privately on every row: an epoch is then round(rows / batch)
        Poisson-sampled batches of the whole table, the rhythm lipnets.privacy accounts for.
        """
        import copy

        import torch

        from ..bounds import lipschitz_bound
        from ..training import fit as train

        rows = len(inputs)
        settings = auto_settings(rows)
        batch = settings["batch_size"] if self.batch_size == "auto" else int(self.batch_size)
        rate = min(0.01 * math.sqrt(batch / 32), 0.05) if self.learning_rate == "auto" else float(self.learning_rate)
        stop_early = (
            epochs is None
            and budget is None
            and (rows > AUTO_EARLY_STOPPING if self.early_stopping == "auto" else bool(self.early_stopping))
        )
        held = min(round(self.validation_fraction * rows), MAX_VALIDATION_ROWS) if stop_early else 0
        if stop_early and (held < 2 or rows - held < 2):
            raise ValueError(f"early_stopping needs at least 2 rows on each side of the validation split; {rows} rows are too few")
        model, optimizers = self._trainer
        members = _members(model)
        loss = self._loss_module(self.architecture_["out_features"]) if budget is None else self._private_loss()
        started, histories = time.perf_counter(), []
        for index, member in enumerate(members):
            train_split, val_split = _member_splits((inputs, target, weight), index, held)
            remaining = None if self.max_time is None else (self.max_time - (time.perf_counter() - started)) / (len(members) - index)
            deadline = None if remaining is None else time.perf_counter() + max(remaining, 0.0)
            trained = len(train_split[0])
            steps = max(1, round(trained / batch)) if budget is not None else math.ceil(min(trained, ROWS_PER_EPOCH) / batch)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + index)
                history = train(
                    member,
                    loss,
                    train_split,
                    val_split,
                    epochs=epochs or _epochs(self.max_iter, held, steps, trained),
                    lr=rate,
                    batch_size=batch,
                    optimizer=_keep(optimizers, index),
                    lr_schedule="plateau" if held else "cosine" if epochs is None else "constant",
                    steps_per_epoch=steps,
                    patience=int(self.n_iter_no_change) if held else None,
                    min_delta=MIN_DELTA,
                    seed=seed + index,
                    progress=bool(self.verbose),
                    callbacks=[] if deadline is None else [lambda *_, end=deadline: time.perf_counter() > end],
                    privacy=budget,
                )
            histories.append(history)
            if history.interrupted and index + 1 < len(members):
                warnings.warn(f"fit interrupted: keeping the {index + 1} network(s) trained so far", RuntimeWarning, stacklevel=4)
                del members[index + 1 :]
                del optimizers[index + 1 :]
                self.architecture_ = {**self.architecture_, "members": index + 1}
                break
        self.model_ = copy.deepcopy(model).double().eval()
        self.loss_curve_ = [float(v) for v in histories[0]["loss"]]
        self.validation_score_ = [-float(v) for v in histories[0].get("val_loss", [])]
        self.n_iter_ = max(history.epochs for history in histories)
        self.epsilon_ = histories[0]["epsilon"][-1] if budget is not None else None
        self.lipschitz_bound_ = lipschitz_bound(self.model_)
        self.feature_lipschitz_ = self._feature_lipschitz()

    def _private_loss(self) -> nn.Module:
        """The loss under privacy: the squared error on clamped targets for the default regression loss."""
        if isinstance(self, RegressorMixin) and self.loss in (None, "squared_error"):
            from ..privacy import BoundedSquaredError

            return BoundedSquaredError(PRIVATE_INPUT_BOUND)
        return self._loss_module(self.architecture_["out_features"])

    def _feature_lipschitz(self) -> np.ndarray:
        """Per input column, the sound bound in original units (see the module docstring)."""
        from ..bounds import feature_bounds

        encoded = feature_bounds(self.model_, (self.architecture_["in_features"],)).numpy()
        result = np.zeros(len(self.encoder_.columns))
        for index, (column, where) in enumerate(zip(self.encoder_.columns, self.encoder_.groups())):
            # a change of category moves two one-hot columns by 1 each (one if the new category is unseen)
            result[index] = np.sort(encoded[where])[::-1][:2].sum() if column.kind == "categorical" else encoded[where.start]
        return result

    # -- prediction -----------------------------------------------------------------------------------
    def _per_feature(self, margin: np.ndarray) -> np.ndarray:
        """margin / feature_lipschitz_ per row and input column (inf where a column cannot move the output)."""
        bounds = np.broadcast_to(self.feature_lipschitz_, (len(margin), len(self.feature_lipschitz_)))
        with np.errstate(divide="ignore"):
            return np.where(bounds > 0, margin[:, None] / bounds, np.inf)

    def _outputs(self, X: ArrayLike) -> np.ndarray:
        """The model's outputs, computed in blocks of rows so that memory does not grow with the table."""
        import torch

        inputs = torch.from_numpy(self._encode(X))
        with torch.no_grad():
            return torch.cat([self.model_(block) for block in inputs.split(PREDICT_ROWS)]).numpy()

    def verify_monotonic(self, X: ArrayLike, *, steps: int = 9) -> MonotonicityReport:
        """Check the constraints over dense pairs in original units: f(x) against f(x + t e_i) for each row.

        For each constrained column i, t runs geometrically from 1e-3 sigma_i to the column's range, and the
        check uses `lipnets.check_monotonic` on the model with its encoding and scaling, so it tests what
        predict returns.
        """
        import torch

        from ..guarantees import MonotonicityReport, check_monotonic

        x = torch.from_numpy(self._encode(X))
        spec = np.asarray(self.architecture_["monotone"], dtype=np.int64)
        pairs, violations, worst = 0, 0, float("inf")
        for column in np.flatnonzero(np.atleast_2d(spec).any(axis=0)):
            single = np.zeros_like(spec)
            single[..., column] = spec[..., column]
            sigma = float(self.model_.scale[column])
            spread = max(float(x[:, column].max() - x[:, column].min()), sigma)
            grid = torch.logspace(np.log10(1e-3 * sigma), np.log10(spread), steps, dtype=torch.float64)
            report = check_monotonic(self.model_, x, torch.as_tensor(single), steps=grid)
            pairs, violations, worst = pairs + report.pairs, violations + report.violations, min(worst, report.worst_slope)
        return MonotonicityReport(pairs=pairs, violations=violations, worst_slope=worst)

    def systematic_band(
        self, X: ArrayLike, tolerances: Mapping[Any, float] | Sequence[float], threshold: float | None = None
    ) -> SystematicBand:
        """The certified share of rows selected when each column may be off by up to its tolerance, in original units.

        tolerances: {column: shift >= 0} (columns not named are held fixed) or one shift per input column,
        in the column's units (steps for an ordered category; an unordered category cannot shift: 0).
        A row is selected when its score exceeds `threshold`: for a regressor the prediction (threshold
        required), for a binary classifier the probability of classes_[1] (threshold a probability,
        default 0.5, the one predict uses). Monotone columns are moved to the corners of the box and
        evaluated, which is exact; every other column adds its sound per-feature bound times its shift
        (`lipnets.systematic_band`). The result's `low` and `high` bound the selected share under every
        such shift, and `flippable` marks the rows whose decision some shift can change.
        """
        import torch

        from ..guarantees import systematic_band

        check_is_fitted(self, "model_")
        if self.architecture_["out_features"] != 1:
            raise ValueError("a systematic band needs one score per row: a regressor or a binary classifier, not a multiclass one")
        score = self._score_threshold(threshold)
        shifts = torch.from_numpy(self._encoded_tolerances(tolerances))
        return systematic_band(self.model_, torch.from_numpy(self._encode(X)), shifts, score)

    def _encoded_tolerances(self, tolerances: Mapping[Any, float] | Sequence[float]) -> np.ndarray:
        """Per-column tolerances as shifts of the encoded columns (missing flags and categories never shift)."""
        names = self.encoder_.names
        if isinstance(tolerances, Mapping):
            unknown = [name for name in tolerances if name not in names]
            if unknown:
                raise ValueError(f"tolerances name columns the model does not have: {unknown}; its columns are {names}")
            values = [tolerances.get(name, 0.0) for name in names]
        else:
            values = list(np.asarray(tolerances, dtype=object).reshape(-1))
            if len(values) != len(names):
                raise ValueError(f"tolerances has {len(values)} entries for {len(names)} columns {names}: give one per column, or a dict")
        per_column = []
        for name, value in zip(names, values):
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if not (math.isfinite(number) and number >= 0):
                raise ValueError(f"the tolerance of column {name!r} must be a finite number >= 0, got {value!r}")
            per_column.append(number)
        shifts = np.zeros(self.encoder_.width)
        for column, where, number in zip(self.encoder_.columns, self.encoder_.groups(), per_column):
            if number > 0 and column.kind == "categorical":
                raise ValueError(f"column {column.name!r} is categorical: a category cannot shift by a tolerance; give it 0")
            shifts[where.start] = number
        return shifts

    def __getstate__(self) -> dict:
        """Parametrized torch modules do not pickle, so the model travels as its state dict (optimizers stay behind)."""
        state = dict(super().__getstate__())
        state.pop("_trainer", None)
        if "model_" in state:
            state["model_"] = {key: value.clone() for key, value in self.model_.state_dict().items()}
        return state

    def __setstate__(self, state: dict) -> None:
        if "model_" in state:
            from .network import build_network

            model = build_network(state["architecture_"])
            model.load_state_dict(state["model_"])
            state = {**state, "model_": model.eval()}
        super().__setstate__(state)


def _check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not (isinstance(threshold, (int, float, np.number)) and np.isfinite(threshold)):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    return float(threshold)


class _RegressorTask(RegressorMixin):
    """One standardised output trained with a regression loss; predictions in the target's units."""

    def _check_y(self, y: ArrayLike, rows: int) -> np.ndarray:
        from sklearn.utils import check_array

        values = column_or_1d(check_array(y, ensure_2d=False, dtype=np.float64, input_name="y"), warn=True)
        if len(values) != rows:
            raise ValueError(f"X has {rows} rows but y has {len(values)}: give one target per row")
        return values

    def _class_weights(self, y: np.ndarray, weight: np.ndarray | None) -> np.ndarray | None:
        return weight

    def _encode_target(self, y: np.ndarray, *, refit: bool, classes: ArrayLike | None = None) -> tuple[torch.Tensor, int]:
        import torch

        if refit:  # under privacy no statistic of the target may scale it: the private loss clamps it instead
            public = self.privacy is None
            self._target_scaling = _scaling(y[:, None], None, np.zeros(1, dtype=bool)) if public else (np.zeros(1), np.ones(1))
        mean, scale = self._target_scaling
        return torch.from_numpy(((y[:, None] - mean) / scale).astype(np.float32)), 1

    def _loss_module(self, outputs: int) -> nn.Module:
        from torch import nn

        loss = self.loss or "squared_error"
        if isinstance(loss, nn.Module):
            return loss
        if loss not in REGRESSION_LOSSES:
            raise ValueError(f"unknown loss {loss!r}: choose one of {', '.join(REGRESSION_LOSSES)} or pass an nn.Module")
        return {"squared_error": nn.MSELoss, "absolute_error": nn.L1Loss, "huber": nn.HuberLoss}[loss]()

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predicted target values, in the target's units."""
        return self._outputs(X)[:, 0]

    def _score_threshold(self, threshold: float | None) -> float:
        """The decision threshold on the prediction: required, since a regressor has no natural one."""
        if threshold is None:
            raise ValueError("a regressor selects the rows whose prediction exceeds a threshold: pass threshold=")
        return _check_threshold(threshold)

    def certified_radius(self, X: ArrayLike, threshold: float) -> np.ndarray:
        """Per row, the l1 radius (original units) within which the prediction stays on its side of `threshold`.

        |f(x) - threshold| / lipschitz_bound_: a decision "predict above threshold" cannot flip closer than that.
        """
        return np.abs(self.predict(X) - _check_threshold(threshold)) / self.lipschitz_bound_

    def certified_feature_radius(self, X: ArrayLike, threshold: float) -> np.ndarray:
        """Per row and input column, how far that column alone can move before the prediction crosses `threshold`.

        |f(x) - threshold| / feature_lipschitz_[i], in the column's units (steps of an ordered category; for
        an unordered category, a value >= 1 means no change of category can cross the threshold).
        """
        return self._per_feature(np.abs(self.predict(X) - _check_threshold(threshold)))


class _ClassifierTask(ClassifierMixin):
    """Logits (one score for two classes, one per class otherwise) trained with log-loss or hinge."""

    _target_scaling = (0.0, 1.0)

    def _check_y(self, y: ArrayLike, rows: int) -> np.ndarray:
        from sklearn.utils import check_array

        values = column_or_1d(check_array(y, ensure_2d=False, dtype=None, input_name="y"), warn=True)
        check_classification_targets(values)
        if len(values) != rows:
            raise ValueError(f"X has {rows} rows but y has {len(values)}: give one label per row")
        return values

    def _class_weights(self, y: np.ndarray, weight: np.ndarray | None) -> np.ndarray | None:
        if self.class_weight is None:
            return weight
        from sklearn.utils.class_weight import compute_sample_weight

        if not (self.class_weight == "balanced" or isinstance(self.class_weight, Mapping)):
            raise ValueError(f"class_weight must be None, 'balanced' or a dict {{label: weight}}, got {self.class_weight!r}")
        per_row = compute_sample_weight(self.class_weight, y)
        combined = per_row if weight is None else per_row * weight
        return None if np.all(combined == combined[0]) else combined

    def _encode_target(self, y: np.ndarray, *, refit: bool, classes: ArrayLike | None = None) -> tuple[torch.Tensor, int]:
        import torch

        if refit:
            self.classes_ = np.unique(y if classes is None else np.asarray(classes))
            if len(self.classes_) < 2:
                raise ValueError(f"y has only 1 class ({self.classes_[0]!r}): a classifier needs samples of at least two classes")
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if len(unknown):
            raise ValueError(
                f"y holds label(s) {unknown.tolist()} that the fitted classes {self.classes_.tolist()} lack: refit without warm_start"
            )
        encoded = np.searchsorted(self.classes_, y)
        return torch.from_numpy(encoded.astype(np.int64)), 1 if len(self.classes_) == 2 else len(self.classes_)

    def _loss_module(self, outputs: int) -> nn.Module:
        from torch import nn

        from ..losses import HingeLoss, MulticlassHingeLoss, TauBCEWithLogitsLoss, TauCrossEntropyLoss

        loss = self.loss or "log_loss"
        if isinstance(loss, nn.Module):
            return loss
        if loss not in CLASSIFICATION_LOSSES:
            raise ValueError(f"unknown loss {loss!r}: choose one of {', '.join(CLASSIFICATION_LOSSES)} or pass an nn.Module")
        if outputs == 1:
            return TauBCEWithLogitsLoss() if loss == "log_loss" else HingeLoss()
        return TauCrossEntropyLoss() if loss == "log_loss" else MulticlassHingeLoss()

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Logits: shape (n,) for two classes (positive means classes_[1]), (n, n_classes) otherwise."""
        scores = self._outputs(X)
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities: the sigmoid of the score for two classes, the softmax of the logits otherwise."""
        import torch

        scores = torch.from_numpy(self._outputs(X))
        if scores.shape[1] == 1:
            positive = torch.sigmoid(scores)
            return torch.cat([1.0 - positive, positive], dim=1).numpy()
        return torch.softmax(scores, dim=1).numpy()

    def _score_threshold(self, threshold: float | None) -> float:
        """The logit of a probability threshold on classes_[1] (default 0.5: the logit 0 that predict uses)."""
        if threshold is None:
            return 0.0
        probability = _check_threshold(threshold)
        if not 0.0 < probability < 1.0:
            raise ValueError(f"a classifier's threshold is a probability of {self.classes_[1]!r} in (0, 1), got {threshold!r}")
        return math.log(probability) - math.log1p(-probability)

    def certified_radius(self, X: ArrayLike) -> np.ndarray:
        """Per row, the l1 radius (original units) within which the predicted class cannot change.

        `lipnets.certified_radius` on the model with its encoding and scaling: |f(x)| / L for two classes,
        the top-1 margin over the constant of a logit difference otherwise (docs/reference/certificates.md).
        """
        import torch

        from ..guarantees import certified_radius

        return certified_radius(self.model_, torch.from_numpy(self._encode(X))).numpy()

    def certified_feature_radius(self, X: ArrayLike) -> np.ndarray:
        """Per row and input column, how far that column alone can move before the predicted class can change.

        The logit margin over twice the column's bound (each logit moves at most feature_lipschitz_[i] per
        unit, so a difference at most twice that; one logit: |f| / feature_lipschitz_[i]), in the column's
        units (steps of an ordered category; for an unordered category, a value >= 1 means no change of
        category can change the class).
        """
        scores = self._outputs(X)
        if scores.shape[1] == 1:
            return self._per_feature(np.abs(scores[:, 0]))
        top = np.sort(scores, axis=1)
        return self._per_feature((top[:, -1] - top[:, -2]) / 2.0)

    def predict(self, X: ArrayLike) -> np.ndarray:
        """The most probable class label."""
        scores = self._outputs(X)
        index = (scores[:, 0] > 0).astype(np.int64) if scores.shape[1] == 1 else scores.argmax(axis=1)
        return self.classes_[index]


COMMON = tuple(inspect.signature(_NetworkEstimator).parameters)
"""The parameters every estimator shares; the public classes add theirs in front."""


class MonotonicRegressor(_RegressorTask, _NetworkEstimator):
    """A monotonic Lipschitz network regressor (Kitouni et al. Eq. 2.3) with LightGBM-style constraints.

    |df/dx'_i| <= 2 lambda for a constrained standardised column (lambda from g, lambda from the residual)
    and <= lambda for a free one; `lipschitz_bound_` is the sound l1 -> |.| bound in original units.
    """

    def __init__(
        self,
        monotone_constraints: ArrayLike | Mapping[str, Any] | None = None,
        *,
        lipschitz: float = 1.0,
        hidden: Sequence[int] = (32, 32),
        n_estimators: int | str = "auto",
        max_iter: int | str = "auto",
        batch_size: int | str = "auto",
        learning_rate: float | str = "auto",
        loss: str | nn.Module | None = None,
        early_stopping: bool | str = "auto",
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        max_time: float | None = None,
        categorical_features: str | Sequence[Any] = "from_dtype",
        warm_start: bool = False,
        random_state: int | np.random.RandomState | None = None,
        verbose: bool = False,
        privacy: tuple[float, float] | None = None,
    ) -> None:
        self.monotone_constraints = monotone_constraints
        params = locals()
        super().__init__(**{name: params[name] for name in COMMON})


class MonotonicClassifier(_ClassifierTask, _NetworkEstimator):
    """A monotonic Lipschitz network classifier, binary (one logit) or multiclass (per-class constraints).

    lipschitz defaults to 4: the logit may move by 4 per standard deviation of a column.
    class_weight: None, "balanced" or {label: weight}, multiplied into the sample weights.
    """

    def __init__(
        self,
        monotone_constraints: ArrayLike | Mapping[str, Any] | None = None,
        *,
        class_weight: str | Mapping[Any, float] | None = None,
        lipschitz: float = 4.0,
        hidden: Sequence[int] = (32, 32),
        n_estimators: int | str = "auto",
        max_iter: int | str = "auto",
        batch_size: int | str = "auto",
        learning_rate: float | str = "auto",
        loss: str | nn.Module | None = None,
        early_stopping: bool | str = "auto",
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        max_time: float | None = None,
        categorical_features: str | Sequence[Any] = "from_dtype",
        warm_start: bool = False,
        random_state: int | np.random.RandomState | None = None,
        verbose: bool = False,
        privacy: tuple[float, float] | None = None,
    ) -> None:
        self.monotone_constraints = monotone_constraints
        self.class_weight = class_weight
        params = locals()
        super().__init__(**{name: params[name] for name in COMMON})


class LipschitzRegressor(_RegressorTask, _NetworkEstimator):
    """A lambda-Lipschitz (l1, standardised units) network regressor without monotone constraints."""


class LipschitzClassifier(_ClassifierTask, _NetworkEstimator):
    """A lambda-Lipschitz (l1, standardised units) network classifier without monotone constraints.

    lipschitz defaults to 4: the logit may move by 4 per standard deviation of a column.
    class_weight: None, "balanced" or {label: weight}, multiplied into the sample weights.
    """

    def __init__(
        self,
        *,
        class_weight: str | Mapping[Any, float] | None = None,
        lipschitz: float = 4.0,
        hidden: Sequence[int] = (32, 32),
        n_estimators: int | str = "auto",
        max_iter: int | str = "auto",
        batch_size: int | str = "auto",
        learning_rate: float | str = "auto",
        loss: str | nn.Module | None = None,
        early_stopping: bool | str = "auto",
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        max_time: float | None = None,
        categorical_features: str | Sequence[Any] = "from_dtype",
        warm_start: bool = False,
        random_state: int | np.random.RandomState | None = None,
        verbose: bool = False,
        privacy: tuple[float, float] | None = None,
    ) -> None:
        self.class_weight = class_weight
        params = locals()
        super().__init__(**{name: params[name] for name in COMMON})
