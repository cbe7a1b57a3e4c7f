"""Temperature scaling (Guo et al. 2017): one scalar ``T > 0`` that divides a model's logits before the softmax.

``T`` is fitted by minimising the negative log-likelihood of ``softmax(logits / T)`` on the VALIDATION split's
logits, never on the test set; the evaluate stage then reports the expected calibration error on the test set with
and without it (:func:`calibration_summary`), and the export stage records it in the bundle's metadata, where the
server applies it. Dividing every logit by the same positive ``T`` never changes a prediction's argmax: accuracy is
unchanged, only the confidences move (``T > 1`` softens an over-confident model, ``T < 1`` sharpens an
under-confident one).

Plain functions on numpy arrays; the calibration error is the evaluate stage's own
:func:`textclf.evaluate.evaluate.expected_calibration_error`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from textclf.errors import ConfigError, DataValidationError
from textclf.evaluate.evaluate import expected_calibration_error, softmax
from textclf.serving.contract import temperature_problem

log = logging.getLogger(__name__)

#: The interval :func:`fit_temperature` searches (a fitted value at either end is logged as a warning: the model's
#: validation logits are then unusually separable, or nearly constant).
MIN_TEMPERATURE = 0.05
MAX_TEMPERATURE = 20.0


def check_temperature(temperature: float) -> float:
    """``temperature`` as a float, if it is a usable temperature.

    Raises:
        ConfigError: Not a finite number > 0 (``T <= 0`` would flip or zero the logits).
    """
    problem = temperature_problem(temperature)
    if problem:
        raise ConfigError(f"temperature {problem}")
    return float(temperature)


def _checked(logits: Any, labels: Any | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``logits`` as float64 ``[n, k]`` (n >= 1, k >= 2, finite) and ``labels`` as int ``[n]`` in ``0..k-1``.

    Raises:
        DataValidationError: Empty input, wrong dimensions, non-finite logits, labels of another length, or label
            ids outside ``0..k-1``.
    """
    array = np.asarray(logits, dtype=np.float64)
    if array.ndim != 2:
        raise DataValidationError(f"logits must be a 2-D array [rows, classes], got shape {array.shape}")
    if array.shape[0] == 0:
        raise DataValidationError("logits are empty: no rows to calibrate on")
    if array.shape[1] < 2:
        raise DataValidationError(f"logits need at least 2 classes, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise DataValidationError(f"logits hold {int((~np.isfinite(array)).sum())} non-finite values")
    if labels is None:
        return array, None
    ids = np.asarray(labels)
    if ids.ndim != 1 or len(ids) != len(array):
        raise DataValidationError(
            f"labels must be one id per logits row: {len(array)} rows of logits, labels of shape {ids.shape}"
        )
    if not np.issubdtype(ids.dtype, np.integer):
        raise DataValidationError(f"labels must be integer class ids, got dtype {ids.dtype}")
    outside = ids[(ids < 0) | (ids >= array.shape[1])]
    if len(outside):
        raise DataValidationError(f"label id {int(outside[0])} outside 0..{array.shape[1] - 1}")
    return array, ids.astype(np.int64)


def calibrated_probabilities(logits: Any, temperature: float) -> np.ndarray:
    """``softmax(logits / temperature)``, row-wise.

    Args:
        logits: ``[n, k]``.
        temperature: ``T > 0``.

    Returns:
        float64 ``[n, k]`` probabilities.

    Raises:
        ConfigError: ``temperature`` is not a finite number > 0.
        DataValidationError: ``logits`` is empty, not 2-D or not finite.
    """
    value = check_temperature(temperature)
    array, _ = _checked(logits)
    return softmax(array / value)


def negative_log_likelihood(logits: Any, labels: Any, temperature: float = 1.0) -> float:
    """Mean ``-log softmax(logits / T)[label]`` (the quantity :func:`fit_temperature` minimises).

    Raises:
        ConfigError: ``temperature`` is not a finite number > 0.
        DataValidationError: See :func:`fit_temperature`.
    """
    value = check_temperature(temperature)
    array, ids = _checked(logits, labels)
    return _nll(array, ids, value)


def _nll(logits: np.ndarray, ids: np.ndarray, temperature: float) -> float:
    from scipy.special import log_softmax

    return float(-log_softmax(logits / temperature, axis=-1)[np.arange(len(ids)), ids].mean())


def fit_temperature(logits: Any, labels: Any) -> float:
    """The temperature that minimises the NLL of ``softmax(logits / T)`` on these rows: fit it on VALIDATION logits.

    The NLL is a convex function of ``1 / T``, so it has one minimum; it is found by bounded Brent search over
    ``log T`` in [:data:`MIN_TEMPERATURE`, :data:`MAX_TEMPERATURE`] (``scipy.optimize.minimize_scalar``), which
    keeps ``T > 0`` by construction.

    Args:
        logits: ``[n, k]`` logits of the validation rows.
        labels: ``[n]`` integer class ids of the same rows.

    Returns:
        ``T`` (a float in the search interval).

    Raises:
        DataValidationError: Empty input, ``logits`` not 2-D with at least two classes, non-finite logits,
            ``labels`` not one integer id per row, or an id outside ``0..k-1``.
    """
    from scipy.optimize import minimize_scalar

    array, ids = _checked(logits, labels)
    assert ids is not None
    low, high = math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)
    result = minimize_scalar(lambda log_t: _nll(array, ids, math.exp(log_t)), bounds=(low, high),
                             method="bounded", options={"xatol": 1e-6})
    if not result.success:  # pragma: no cover - bounded Brent on a finite, smooth function converges
        raise DataValidationError(f"temperature fit did not converge: {result.message}")
    fitted = math.exp(float(result.x))
    # Brent never evaluates the interval's ends; compare them, and T = 1, so the result is never worse than those.
    candidates = (fitted, 1.0, MIN_TEMPERATURE, MAX_TEMPERATURE)
    temperature = min(candidates, key=lambda value: _nll(array, ids, value))
    if not MIN_TEMPERATURE * 1.001 < temperature < MAX_TEMPERATURE * 0.999:
        log.warning("fitted temperature %.4g is at the end of the search interval [%g, %g]", temperature,
                    MIN_TEMPERATURE, MAX_TEMPERATURE)
    return temperature


def calibration_summary(
    validation_logits: Any, validation_labels: Any, test_logits: Any, test_labels: Any, bins: int
) -> dict[str, float | int]:
    """Fit ``T`` on the validation rows; the calibration error on the test rows before and after it.

    Args:
        validation_logits: ``[n, k]``: the rows ``T`` is fitted on.
        validation_labels: ``[n]`` class ids.
        test_logits: ``[m, k]``: the rows the calibration error is reported on (the evaluate stage's test set).
        test_labels: ``[m]`` class ids.
        bins: Equal-width confidence bins of the expected calibration error (``EvaluateConfig.calibration_bins``).

    Returns:
        ``temperature``, ``validation_nll_before`` / ``_after``, ``test_nll_before`` / ``_after``,
        ``test_ece_before`` / ``_after``, ``bins``, ``validation_rows``, ``test_rows``.

    Raises:
        DataValidationError: Bad logits or labels (see :func:`fit_temperature`), or validation and test logits with
            different numbers of classes.
        ConfigError: ``bins`` < 1.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ConfigError(f"bins must be an integer >= 1, got {bins!r}")
    validation, validation_ids = _checked(validation_logits, validation_labels)
    test, test_ids = _checked(test_logits, test_labels)
    assert validation_ids is not None and test_ids is not None
    if validation.shape[1] != test.shape[1]:
        raise DataValidationError(
            f"validation logits have {validation.shape[1]} classes, test logits {test.shape[1]}"
        )
    temperature = fit_temperature(validation, validation_ids)
    return {
        "temperature": temperature,
        "validation_nll_before": _nll(validation, validation_ids, 1.0),
        "validation_nll_after": _nll(validation, validation_ids, temperature),
        "test_nll_before": _nll(test, test_ids, 1.0),
        "test_nll_after": _nll(test, test_ids, temperature),
        "test_ece_before": expected_calibration_error(softmax(test), test_ids, bins),
        "test_ece_after": expected_calibration_error(softmax(test / temperature), test_ids, bins),
        "bins": bins,
        "validation_rows": len(validation),
        "test_rows": len(test),
    }
