"""scikit-learn estimators: monotonic and Lipschitz networks for tables, with guarantees in original units.

Inputs are standardised inside the estimator (x' = (x - mu) / sigma, and for regression the target too),
so `lipschitz` is the constant lambda of the network in standardised units, the scale-free knob of
Kitouni, Nolte and Williams (2023, Eq. 2.6). The guarantee is reported in the user's units: by docs/reference/monotonic.md
"Standardisation", the l1 -> output bound is multiplied by max_i 1/sigma_i (and by the target's scale for a
regressor). `lipschitz_bound_` is that sound number, computed from the trained weights, and
`verify_monotonic(X)` checks the monotone constraints over dense pairs in the original units.

`monotone_constraints` follows LightGBM: a list of -1 (decreasing), 0 (free), +1 (increasing) per
column, or a dict {column name: sign} for DataFrames (unnamed columns are free). For a multiclass
classifier, constraints are per class: a (n_classes, n_features) matrix, or a dict of per-class lists;
class k's logit then moves in the given direction, so the log-odds of class k against class j are
monotone wherever their signs are opposite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from ..bounds import lipschitz_bound
from ..constraints import check_lipschitz
from ..datasets.tables import check_numeric
from ..guarantees import MonotonicityReport, certified_radius, check_monotonic
from ..losses import HingeLoss, MulticlassHingeLoss, TauBCEWithLogitsLoss, TauCrossEntropyLoss
from ..validation import ArrayLike
from .network import build_network

REGRESSION_LOSSES = {"squared_error": nn.MSELoss, "absolute_error": nn.L1Loss, "huber": nn.HuberLoss}
BINARY_LOSSES = {"log_loss": TauBCEWithLogitsLoss, "hinge": HingeLoss}
MULTICLASS_LOSSES = {"log_loss": TauCrossEntropyLoss, "hinge": MulticlassHingeLoss}


def _check_frame(X: ArrayLike) -> None:
    """DataFrame input: name the first non-numeric column and every column with NaN or inf."""
    if isinstance(X, pd.DataFrame):
        check_numeric(X, "feature")


def _scaling(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = values.mean(axis=0)
    scale = values.std(axis=0)
    return mean, np.where(scale > 1e-12 * np.maximum(1.0, np.abs(mean)), scale, 1.0)


class _NetworkEstimator(BaseEstimator):
    """Shared fit/predict machinery; the task mixins provide _encode_target, _loss_module and _target_scaling."""

    def __init__(
        self,
        *,
        lipschitz: float = 1.0,
        hidden: Sequence[int] = (32, 32),
        epochs: int = 200,
        batch_size: int = 64,
        learning_rate: float = 3e-3,
        loss: str | nn.Module | None = None,
        validation_fraction: float = 0.1,
        patience: int | None = 30,
        random_state: int | np.random.RandomState | None = None,
        verbose: bool = False,
    ) -> None:
        self.lipschitz = lipschitz
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.loss = loss
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.random_state = random_state
        self.verbose = verbose

    # -- validation -----------------------------------------------------------------------------------
    def _check_params(self) -> None:
        check_lipschitz(self.lipschitz)
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate!r}")
        if not (isinstance(self.validation_fraction, (int, float)) and 0 <= self.validation_fraction < 1):
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction!r}")
        if self.patience is not None and (not isinstance(self.patience, (int, np.integer)) or self.patience < 1):
            raise ValueError(f"patience must be a positive integer or None, got {self.patience!r}")
        hidden = self.hidden
        if isinstance(hidden, (int, np.integer)) or not hidden or any(int(w) < 2 or int(w) % 2 for w in hidden):
            raise ValueError(f"hidden must be a non-empty sequence of even layer widths (GroupSort sorts pairs), got {hidden!r}")

    def _monotone_spec(self, n_features: int, outputs: int) -> np.ndarray:
        """The constraints as an int array: (n_features,), or (outputs, n_features) per class."""
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

    # -- fitting --------------------------------------------------------------------------------------
    def fit(self, X: ArrayLike, y: ArrayLike) -> _NetworkEstimator:
        """Standardise X (and y for regression), train the network with lipnets.fit, record the sound bound.

        A fit that raises leaves the estimator as it was (a fitted model stays usable).
        """
        before = dict(self.__dict__)
        try:
            return self._fit(X, y)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

    def _fit(self, X: ArrayLike, y: ArrayLike) -> _NetworkEstimator:
        from ..training import fit as train

        self._check_params()
        _check_frame(X)
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=not isinstance(self, ClassifierMixin))
        target, outputs = self._encode_target(y)
        monotone = self._monotone_spec(X.shape[1], outputs)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        mean, scale = _scaling(X)
        inputs = torch.from_numpy((X - mean) / scale)
        architecture = {
            "in_features": X.shape[1],
            "out_features": outputs,
            "hidden": [int(w) for w in self.hidden],
            "lipschitz": float(self.lipschitz),
            "monotone": monotone.tolist(),
        }
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_network(architecture)
            train_rows, val_rows = self._split(len(X), seed)
            val = (inputs[val_rows], target[val_rows]) if len(val_rows) else None
            history = train(
                model.network,
                self._loss_module(outputs),
                (inputs[train_rows], target[train_rows]),
                val,
                epochs=int(self.epochs),
                lr=float(self.learning_rate),
                batch_size=int(self.batch_size),
                patience=int(self.patience) if val is not None and self.patience is not None else None,
                seed=seed,
                progress=bool(self.verbose),
            )
        model.set_scaling(mean, scale, *self._target_scaling)
        self.model_ = model.eval()
        self.architecture_ = architecture
        self.monotone_constraints_ = monotone
        self.loss_curve_ = [float(v) for v in history["loss"]]
        self.n_iter_ = len(self.loss_curve_)
        self.lipschitz_bound_ = lipschitz_bound(self.model_)
        return self

    def _split(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Random train / validation rows; no validation part when it would leave fewer than 2 rows on a side."""
        order = np.random.default_rng(seed).permutation(n)
        held = round(self.validation_fraction * n)
        if held < 2 or n - held < 2:
            return order, order[:0]
        return order[held:], order[:held]

    # -- prediction -----------------------------------------------------------------------------------
    def _outputs(self, X: ArrayLike) -> np.ndarray:
        check_is_fitted(self, "model_")
        _check_frame(X)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        with torch.no_grad():
            return self.model_(torch.tensor(X)).numpy()

    def verify_monotonic(self, X: ArrayLike, *, steps: int = 9) -> MonotonicityReport:
        """Check the constraints over dense pairs in original units: f(x) against f(x + t e_i) for each row.

        For each constrained column i, t runs geometrically from 1e-3 sigma_i to the column's range, and the
        check uses `lipnets.check_monotonic` on the model with its scaling, so it tests what predict returns.
        """
        check_is_fitted(self, "model_")
        _check_frame(X)
        X = torch.tensor(validate_data(self, X, dtype=np.float64, reset=False))
        spec = np.atleast_2d(self.monotone_constraints_)
        pairs, violations, worst = 0, 0, float("inf")
        for column in np.flatnonzero(spec.any(axis=0)):
            single = np.zeros_like(self.monotone_constraints_)
            single[..., column] = self.monotone_constraints_[..., column]
            sigma = float(self.model_.scale[column])
            spread = max(float(X[:, column].max() - X[:, column].min()), sigma)
            grid = torch.logspace(np.log10(1e-3 * sigma), np.log10(spread), steps, dtype=torch.float64)
            report = check_monotonic(self.model_, X, torch.as_tensor(single), steps=grid)
            pairs, violations, worst = pairs + report.pairs, violations + report.violations, min(worst, report.worst_slope)
        return MonotonicityReport(pairs=pairs, violations=violations, worst_slope=worst)

    def __getstate__(self) -> dict:
        """Parametrized torch modules do not pickle, so the model travels as its state dict."""
        state = dict(super().__getstate__())
        if "model_" in state:
            state["model_"] = {key: value.clone() for key, value in self.model_.state_dict().items()}
        return state

    def __setstate__(self, state: dict) -> None:
        if "model_" in state:
            model = build_network(state["architecture_"])
            model.load_state_dict(state["model_"])
            state = {**state, "model_": model.eval()}
        super().__setstate__(state)


class _RegressorTask(RegressorMixin):
    """One standardised output trained with a regression loss; predictions in the target's units."""

    def _encode_target(self, y: np.ndarray) -> tuple[torch.Tensor, int]:
        mean, scale = _scaling(y[:, None])
        self._target_scaling = (mean, scale)
        return torch.from_numpy((y[:, None] - mean) / scale), 1

    def _loss_module(self, outputs: int) -> nn.Module:
        loss = self.loss or "squared_error"
        if isinstance(loss, nn.Module):
            return loss
        if loss not in REGRESSION_LOSSES:
            raise ValueError(f"unknown loss {loss!r}: choose one of {', '.join(REGRESSION_LOSSES)} or pass an nn.Module")
        return REGRESSION_LOSSES[loss]()

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predicted target values, in the target's units."""
        return self._outputs(X)[:, 0]

    def certified_radius(self, X: ArrayLike, threshold: float) -> np.ndarray:
        """Per row, the l1 radius (original units) within which the prediction stays on its side of `threshold`.

        |f(x) - threshold| / lipschitz_bound_: a decision "predict above threshold" cannot flip closer than that.
        """
        if not np.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number, got {threshold!r}")
        return np.abs(self.predict(X) - threshold) / self.lipschitz_bound_


class _ClassifierTask(ClassifierMixin):
    """Logits (one score for two classes, one per class otherwise) trained with log-loss or hinge."""

    _target_scaling = (0.0, 1.0)

    def _encode_target(self, y: np.ndarray) -> tuple[torch.Tensor, int]:
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y has only 1 class ({self.classes_[0]!r}): a classifier needs samples of at least two classes")
        return torch.from_numpy(encoded.astype(np.int64)), 1 if len(self.classes_) == 2 else len(self.classes_)

    def _loss_module(self, outputs: int) -> nn.Module:
        loss = self.loss or "log_loss"
        if isinstance(loss, nn.Module):
            return loss
        losses = BINARY_LOSSES if outputs == 1 else MULTICLASS_LOSSES
        if loss not in losses:
            raise ValueError(f"unknown loss {loss!r}: choose one of {', '.join(losses)} or pass an nn.Module")
        return losses[loss]()

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Logits: shape (n,) for two classes (positive means classes_[1]), (n, n_classes) otherwise."""
        scores = self._outputs(X)
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities: the sigmoid of the score for two classes, the softmax of the logits otherwise."""
        scores = torch.from_numpy(self._outputs(X))
        if scores.shape[1] == 1:
            positive = torch.sigmoid(scores)
            return torch.cat([1.0 - positive, positive], dim=1).numpy()
        return torch.softmax(scores, dim=1).numpy()

    def certified_radius(self, X: ArrayLike) -> np.ndarray:
        """Per row, the l1 radius (original units) within which the predicted class cannot change.

        `lipnets.certified_radius` on the model with its scaling: |f(x)| / L for two classes, the top-1 margin
        over the constant of a logit difference otherwise (docs/reference/certificates.md).
        """
        check_is_fitted(self, "model_")
        _check_frame(X)
        X = torch.tensor(validate_data(self, X, dtype=np.float64, reset=False))
        return certified_radius(self.model_, X).numpy()

    def predict(self, X: ArrayLike) -> np.ndarray:
        """The most probable class label."""
        scores = self._outputs(X)
        index = (scores[:, 0] > 0).astype(np.int64) if scores.shape[1] == 1 else scores.argmax(axis=1)
        return self.classes_[index]


class _Constrained:
    """Adds the LightGBM-style `monotone_constraints` parameter (see the module docstring)."""

    def __init__(
        self,
        monotone_constraints: ArrayLike | Mapping[str, Any] | None = None,
        *,
        lipschitz: float = 1.0,
        hidden: Sequence[int] = (32, 32),
        epochs: int = 200,
        batch_size: int = 64,
        learning_rate: float = 3e-3,
        loss: str | nn.Module | None = None,
        validation_fraction: float = 0.1,
        patience: int | None = 30,
        random_state: int | np.random.RandomState | None = None,
        verbose: bool = False,
    ) -> None:
        self.monotone_constraints = monotone_constraints
        _NetworkEstimator.__init__(
            cast(_NetworkEstimator, self),
            lipschitz=lipschitz,
            hidden=hidden,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            loss=loss,
            validation_fraction=validation_fraction,
            patience=patience,
            random_state=random_state,
            verbose=verbose,
        )


class MonotonicRegressor(_RegressorTask, _Constrained, _NetworkEstimator):
    """A monotonic Lipschitz network regressor (Kitouni, Nolte and Williams 2023, Eq. 2.3) with LightGBM-style constraints.

    |df/dx'_i| <= 2 lambda for a constrained standardised column (lambda from g, lambda from the residual)
    and <= lambda for a free one; `lipschitz_bound_` is the sound l1 -> |.| bound in original units.
    """


class MonotonicClassifier(_ClassifierTask, _Constrained, _NetworkEstimator):
    """A monotonic Lipschitz network classifier, binary (one logit) or multiclass (per-class constraints)."""


class LipschitzRegressor(_RegressorTask, _NetworkEstimator):
    """A lambda-Lipschitz (l1, standardised units) network regressor without monotone constraints."""


class LipschitzClassifier(_ClassifierTask, _NetworkEstimator):
    """A lambda-Lipschitz (l1, standardised units) network classifier without monotone constraints."""
