"""Heating-behaviour analytics for the notebooks and the Insights page, split by topic: ``data`` (loading and
preparing telemetry frames), ``cycles`` (heating cycles, duty cycle, overshoot, profiles, anomalies), ``thermal``
(the fitted first-order thermal model, rates), ``uncertainty`` (intervals for its constants and whether a window
identifies them), ``time_to_target`` and ``figures``. The public names of each are
available here, so ``from thermolog import analytics; analytics.prepare(...)`` keeps working."""

from thermolog.analytics.cycles import (
    MAX_CYCLES_PER_HOUR,
    SHORT_CYCLE_S,
    daily_profile,
    duty_cycle,
    heater_anomalies,
    heating_cycles,
    overshoot,
    overshoot_summary,
    runs,
    short_cycling,
)
from thermolog.analytics.data import (
    DAY_S,
    MAX_GAP_FACTOR,
    InsufficientData,
    load_telemetry,
    prepare,
    read_export,
    usual_interval_s,
)
from thermolog.analytics.figures import (
    fig_cycles,
    fig_daily_profile,
    fig_duty_cycle,
    fig_duty_overview,
    fig_temperature,
    fig_time_to_target,
)
from thermolog.analytics.thermal import (
    FIT_CHUNK_S,
    OMEGA,
    ThermalModel,
    cooling_time_constant,
    fit_thermal_model,
    fit_thermal_models,
    model_for_device,
    models_table,
    rates,
)
from thermolog.analytics.time_to_target import (
    describe_time_to_target,
    observed_time_to_target,
    setpoint_changes,
    temperature_before,
    validate_time_to_target,
)
from thermolog.analytics.uncertainty import (
    Estimate,
    UncertainFit,
    fit_with_uncertainty,
    fit_with_uncertainty_for_device,
    identifies_time_to_target,
    uncertainty_table,
)

__all__ = [
    "DAY_S", "Estimate", "FIT_CHUNK_S", "UncertainFit", "fit_with_uncertainty", "fit_with_uncertainty_for_device",
    "identifies_time_to_target", "uncertainty_table", "InsufficientData", "MAX_CYCLES_PER_HOUR", "MAX_GAP_FACTOR",
    "OMEGA", "SHORT_CYCLE_S",
    "ThermalModel", "cooling_time_constant", "daily_profile", "describe_time_to_target", "duty_cycle", "fig_cycles",
    "fig_daily_profile", "fig_duty_cycle", "fig_duty_overview", "fig_temperature", "fig_time_to_target",
    "fit_thermal_model",
    "fit_thermal_models", "heater_anomalies", "heating_cycles", "load_telemetry", "model_for_device", "models_table",
    "observed_time_to_target", "overshoot", "overshoot_summary", "prepare", "rates", "read_export", "runs",
    "setpoint_changes", "short_cycling", "temperature_before", "usual_interval_s", "validate_time_to_target",
]
