"""Typed settings of a canary rollout (:class:`RolloutConfig`) and the rollout's error type.

The retraining pipeline's rollout parameters take their defaults from these fields, and
:func:`textclf.pipelines.parameters.check_pipeline_arguments` validates a run's values through them.
"""

from __future__ import annotations

from dataclasses import dataclass

from textclf.errors import ConfigError, TextclfError

#: ``rollout_mode`` values: ``registry`` moves the production pointer at once and renders the InferenceService
#: (no cluster needed: local runs, ``make loop``); ``kserve`` runs the canary on the cluster through the Kubernetes
#: API and moves the pointer only after the A/B window.
ROLLOUT_MODES = ("registry", "kserve")


class RolloutError(TextclfError, RuntimeError):
    """A rollout step failed; the message says what was changed (if anything) and what was left as it was."""


@dataclass(frozen=True)
class RolloutConfig:
    """How the candidate is rolled out.

    Attributes:
        rollout_mode: ``registry`` or ``kserve`` (see :data:`ROLLOUT_MODES`).
        canary_traffic_percent: Share (1-99) of the requests the candidate's revision gets during the A/B window.
        ab_window_seconds: How long the canary runs before the rollout decides with whatever evidence there is.
        ab_poll_seconds: Seconds between two looks at the A/B evidence during the window.
        ready_timeout_seconds: How long the canary revision may take to become ready before it is rolled back.
    """

    rollout_mode: str = "registry"
    canary_traffic_percent: int = 10
    ab_window_seconds: int = 3600
    ab_poll_seconds: int = 60
    ready_timeout_seconds: int = 600

    def __post_init__(self) -> None:
        if self.rollout_mode not in ROLLOUT_MODES:
            raise ConfigError(f"rollout_mode must be one of {list(ROLLOUT_MODES)}, got {self.rollout_mode!r}")
        percent = self.canary_traffic_percent
        if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 99:
            raise ConfigError(f"canary_traffic_percent must be an integer in [1, 99] for a canary, got {percent!r}")
        for name in ("ab_window_seconds", "ab_poll_seconds", "ready_timeout_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        if self.ab_poll_seconds == 0 and self.ab_window_seconds > 0:
            raise ConfigError("ab_poll_seconds must be > 0 when ab_window_seconds is > 0")
