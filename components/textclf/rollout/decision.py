"""The canary's verdict: promote, roll back or wait, from the monitor's A/B report and the guards.

:func:`decide` is pure: the same report, error rates, guards and deadline flag give the same decision. It reads
the per-variant counts of the report (``variants.<name>.labelled`` / ``correct`` / ``latency_ms``), not the
monitor's own verdict, and recomputes the two-proportion test
(:func:`textclf.monitor.abtest.two_proportion_test`) with the guards' ``alpha``, so the rollout's thresholds are
the pipeline's and not whatever the monitor was started with.

Rules, in order:

1. **Hard guards** (need no labels): the treatment's p99 latency over the control's above
   ``max_p99_latency_ratio`` (both variants with at least ``min_latency_samples`` timed requests), or the canary
   revision's error share (Prometheus) above ``max_error_rate`` -> **rollback**, at once.
2. **Enough data**: both variants need ``min_labelled`` labelled requests. Until then -> **wait**; at the
   deadline (the end of the A/B window) with too little data -> **rollback**: a model that could not be shown to
   be as good as the one in production is not promoted (the safe default; lengthen ``ab_window_seconds`` or lower
   ``min_labelled`` when labels arrive slowly).
3. **Worse**: the treatment significantly less accurate (two-sided test, p < ``alpha``), or its accuracy more
   than ``max_accuracy_drop`` below the control's (point estimate) -> **rollback**.
4. **Non-inferiority shown**: the lower end of the difference's 95% interval at or above ``-max_accuracy_drop``
   -> **promote** before the deadline. Promoting early only on "not significantly worse" would peek at the test
   at every poll, and an underpowered test is almost never significant.
5. Otherwise -> **wait**; at the deadline -> **promote** (enough data, not significantly worse, within the
   margin, every guard that could be checked passed): the decision made with what there is.

An error rate that is not configured (no ``prometheus_url``) or has no samples yet is recorded as
``not_checked``, never as a pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from textclf.errors import ConfigError

PROMOTE, ROLLBACK, WAIT = "promote", "rollback", "wait"
ACTIONS = (PROMOTE, ROLLBACK, WAIT)
#: Statuses of one :class:`GuardCheck`.
PASS, FAIL, PENDING, NOT_CHECKED = "pass", "fail", "pending", "not_checked"


@dataclass(frozen=True)
class RolloutGuards:
    """Thresholds of :func:`decide`.

    Attributes:
        min_labelled: Labelled requests needed in *each* variant before accuracy is judged.
        alpha: Significance level of the two-sided two-proportion test (treatment vs control accuracy).
        max_accuracy_drop: Non-inferiority margin: how far (absolute, 0.01 = 1 point) the treatment's accuracy may
            be below the control's.
        max_p99_latency_ratio: Largest allowed p99 latency of the treatment over the control's.
        max_error_rate: Largest allowed share of the canary revision's requests with outcome ``error``.
        min_latency_samples: Timed requests needed in each variant before the latency guard is applied.
    """

    min_labelled: int = 100
    alpha: float = 0.05
    max_accuracy_drop: float = 0.02
    max_p99_latency_ratio: float = 1.5
    max_error_rate: float = 0.01
    min_latency_samples: int = 50

    def __post_init__(self) -> None:
        for name in ("min_labelled", "min_latency_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if not 0.0 < float(self.alpha) < 1.0:
            raise ConfigError(f"alpha must be in (0, 1), got {self.alpha!r}")
        if not 0.0 <= float(self.max_accuracy_drop) < 1.0:
            raise ConfigError(f"max_accuracy_drop must be in [0, 1), got {self.max_accuracy_drop!r}")
        if not float(self.max_p99_latency_ratio) > 0.0 or math.isinf(float(self.max_p99_latency_ratio)):
            raise ConfigError(f"max_p99_latency_ratio must be a finite number > 0, got {self.max_p99_latency_ratio!r}")
        if not 0.0 <= float(self.max_error_rate) <= 1.0:
            raise ConfigError(f"max_error_rate must be in [0, 1], got {self.max_error_rate!r}")


@dataclass(frozen=True)
class ErrorRates:
    """Share of requests with outcome ``error`` per variant (None: no requests counted yet), and the queries."""

    treatment: float | None
    control: float | None = None
    queries: tuple[str, ...] = ()


@dataclass(frozen=True)
class GuardCheck:
    """One check of a decision: ``status`` is one of pass, fail, pending (not enough data yet), not_checked."""

    name: str
    status: str
    value: float | None = None
    threshold: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class RolloutDecision:
    """What to do with the canary, why, and every check behind it."""

    action: str
    reason: str
    checks: tuple[GuardCheck, ...] = field(default_factory=tuple)
    at_deadline: bool = False

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ConfigError(f"action must be one of {list(ACTIONS)}, got {self.action!r}")

    def check(self, name: str) -> GuardCheck:
        """The check called ``name``."""
        return next(check for check in self.checks if check.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "reason": self.reason, "at_deadline": self.at_deadline,
                "checks": [asdict(check) for check in self.checks]}


def _variant(report: Mapping[str, Any], role: str) -> Mapping[str, Any] | None:
    name = (report.get("comparison") or {}).get(role) or role
    return (report.get("variants") or {}).get(name)


def _latency_check(control: Mapping[str, Any] | None, treatment: Mapping[str, Any] | None,
                   guards: RolloutGuards) -> GuardCheck:
    name, limit = "latency_p99_ratio", float(guards.max_p99_latency_ratio)
    if control is None or treatment is None:
        return GuardCheck(name, PENDING, None, limit, "a variant has no requests yet")
    lat_c, lat_t = control.get("latency_ms") or {}, treatment.get("latency_ms") or {}
    counts = (int(lat_c.get("count", 0)), int(lat_t.get("count", 0)))
    if min(counts) < guards.min_latency_samples:
        return GuardCheck(name, PENDING, None, limit,
                          f"timed requests control/treatment {counts[0]}/{counts[1]} < {guards.min_latency_samples}")
    p99_c, p99_t = lat_c.get("p99"), lat_t.get("p99")
    if p99_c is None or p99_t is None:
        return GuardCheck(name, NOT_CHECKED, None, limit, "the A/B report has no p99 latency")
    ratio = float(p99_t) / float(p99_c) if float(p99_c) > 0 else (1.0 if float(p99_t) == 0 else math.inf)
    detail = f"p99 treatment {float(p99_t):.1f} ms / control {float(p99_c):.1f} ms = {ratio:.2f} (max {limit:g})"
    return GuardCheck(name, FAIL if ratio > limit else PASS, ratio, limit, detail)


def _error_check(error_rates: ErrorRates | None, guards: RolloutGuards) -> GuardCheck:
    name, limit = "error_rate", float(guards.max_error_rate)
    if error_rates is None:
        return GuardCheck(name, NOT_CHECKED, None, limit, "no prometheus_url: the error rate was not checked")
    if error_rates.treatment is None:
        return GuardCheck(name, NOT_CHECKED, None, limit, "Prometheus has no request counts for the canary yet")
    rate = float(error_rates.treatment)
    control = "" if error_rates.control is None else f" (control {error_rates.control:.4f})"
    detail = f"canary error share {rate:.4f}{control}, max {limit:g}"
    return GuardCheck(name, FAIL if rate > limit else PASS, rate, limit, detail)


def decide(report: Mapping[str, Any], guards: RolloutGuards | None = None, *,
           error_rates: ErrorRates | None = None, at_deadline: bool = False) -> RolloutDecision:
    """Promote, roll back or wait (see the module docstring for the rules).

    Args:
        report: The monitor's A/B report (:func:`textclf.monitor.abtest.analyse_ab_log`'s dict).
        guards: Thresholds; default :class:`RolloutGuards()`.
        error_rates: The canary's error share from Prometheus; None: not configured (recorded as not checked).
        at_deadline: The A/B window is over: decide with the evidence there is (never ``wait``).

    Returns:
        The decision with every check.
    """
    from textclf.monitor.abtest import two_proportion_test

    guards = guards or RolloutGuards()
    control, treatment = _variant(report, "control"), _variant(report, "treatment")
    latency, errors = _latency_check(control, treatment, guards), _error_check(error_rates, guards)
    checks = [latency, errors]

    def result(action: str, reason: str) -> RolloutDecision:
        return RolloutDecision(action, reason, tuple(checks), at_deadline)

    failed = [check for check in (latency, errors) if check.status == FAIL]
    if failed:
        return result(ROLLBACK, "guard failed: " + "; ".join(f"{c.name}: {c.detail}" for c in failed))

    n_c = int(control.get("labelled", 0)) if control else 0
    n_t = int(treatment.get("labelled", 0)) if treatment else 0
    data_detail = f"labelled control/treatment {n_c}/{n_t}, need {guards.min_labelled} each"
    if control is None or treatment is None or min(n_c, n_t) < guards.min_labelled:
        missing = [role for role, stats in (("control", control), ("treatment", treatment)) if stats is None]
        if missing:
            data_detail = f"no requests of the {' and '.join(missing)} variant yet; {data_detail}"
        checks.append(GuardCheck("data", PENDING, float(min(n_c, n_t)), float(guards.min_labelled), data_detail))
        if at_deadline:
            return result(ROLLBACK, f"A/B window over with too little evidence ({data_detail}): rolled back, the "
                                    "safe default")
        return result(WAIT, f"waiting for labelled requests ({data_detail})")
    checks.append(GuardCheck("data", PASS, float(min(n_c, n_t)), float(guards.min_labelled), data_detail))

    correct_c, correct_t = int(control["correct"]), int(treatment["correct"])
    test = two_proportion_test(correct_t, n_t, correct_c, n_c)
    diff, p_value, (low, _high) = test["difference"], test["p_value"], test["difference_ci95"]
    accuracy = (f"accuracy treatment {correct_t / n_t:.4f} (n={n_t}) vs control {correct_c / n_c:.4f} (n={n_c}), "
                f"difference {diff * 100:+.2f} points, p={p_value:.4g}, 95% CI [{low:+.4f}, {_high:+.4f}]")
    worse = p_value < guards.alpha and diff < 0
    checks.append(GuardCheck("accuracy_significance", FAIL if worse else PASS, p_value, float(guards.alpha),
                             accuracy))
    margin = -float(guards.max_accuracy_drop)
    beyond = diff < margin
    checks.append(GuardCheck("accuracy_margin", FAIL if beyond else PASS, diff, margin,
                             f"difference {diff:+.4f} vs margin {margin:+.4f}"))
    if worse:
        return result(ROLLBACK, f"treatment is significantly less accurate: {accuracy}")
    if beyond:
        return result(ROLLBACK, f"treatment's accuracy is more than {guards.max_accuracy_drop:g} below the "
                                f"control's: {accuracy}")
    shown = low >= margin
    checks.append(GuardCheck("non_inferiority", PASS if shown else PENDING, low, margin,
                             f"CI lower bound {low:+.4f} vs margin {margin:+.4f}"))
    unchecked = [c.name for c in (latency, errors) if c.status in (NOT_CHECKED, PENDING)]
    note = f" (not checked: {', '.join(unchecked)})" if unchecked else ""
    if shown:
        return result(PROMOTE, f"non-inferiority shown within {guards.max_accuracy_drop:g}: {accuracy}{note}")
    if at_deadline:
        return result(PROMOTE, f"A/B window over: not significantly worse and within the "
                               f"{guards.max_accuracy_drop:g} margin: {accuracy}{note}")
    return result(WAIT, f"not worse so far, non-inferiority not shown yet: {accuracy}")
