"""Plotly figures of the analytics, shared by the notebooks and the Insights page.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from thermolog.analytics.thermal import ThermalModel

COLORWAY = qualitative.Plotly


def fig_temperature(frame: pl.DataFrame, device_id: str, model: ThermalModel | None = None) -> go.Figure:
    """Temperature, target and heater state of one device; with ``model``, its simulated temperature too."""
    dev = frame.filter(pl.col("device_id") == device_id)
    fig = go.Figure()
    fig.add_scatter(x=dev["ts"], y=dev["temperature"], name="temperature", mode="lines")
    fig.add_scatter(x=dev["ts"], y=dev["target_temp"], name="target", mode="lines", line={"shape": "hv",
                                                                                             "dash": "dot"})
    fig.add_scatter(x=dev["ts"], y=dev["u"], name="heating", mode="lines", line={"shape": "hv", "width": 0.5},
                    fill="tozeroy", yaxis="y2", opacity=0.3)
    if model is not None:
        sim = []
        for _, seg in dev.group_by("segment", maintain_order=True):
            sim.append(model.simulate(seg["t"].to_numpy(), seg["u"].to_numpy(), float(seg["temperature"][0])))
        fig.add_scatter(x=dev["ts"], y=np.concatenate(sim) if sim else [], name="model", mode="lines")
        fig.add_scatter(x=dev["ts"], y=model.ambient_at(dev["t"].to_numpy()), name="outdoor (model)", mode="lines")
    fig.update_layout(title=f"{device_id}: temperature and heating", yaxis_title="°C",
                      yaxis2={"overlaying": "y", "side": "right", "range": [0, 4], "showticklabels": False},
                      hovermode="x unified")
    return fig


def fig_duty_cycle(duty: pl.DataFrame) -> go.Figure:
    """Duty cycle per bucket (output of :func:`duty_cycle`), one bar series per device."""
    fig = go.Figure()
    for device_id in sorted(duty["device_id"].unique().to_list()):
        dev = duty.filter(pl.col("device_id") == device_id)
        fig.add_bar(x=dev["bucket"], y=dev["duty"] * 100.0, name=device_id)
    fig.update_layout(title="Heater duty cycle", yaxis_title="% of time on", barmode="group")
    return fig


def fig_daily_profile(profile: pl.DataFrame) -> go.Figure:
    """Mean duty cycle by hour of day per device (output of :func:`daily_profile`)."""
    fig = go.Figure()
    for device_id in sorted(profile["device_id"].unique().to_list()):
        dev = profile.filter(pl.col("device_id") == device_id)
        fig.add_scatter(x=dev["hour"], y=dev["duty"] * 100.0, name=f"{device_id} duty", mode="lines+markers")
    fig.update_layout(title="Average day", xaxis_title="hour of day", yaxis_title="% of time on")
    return fig


def fig_duty_overview(duty: pl.DataFrame, profile: pl.DataFrame) -> go.Figure:
    """:func:`fig_duty_cycle` and :func:`fig_daily_profile` side by side in one figure on a shared % axis, each
    device in one colour and one legend entry (one plot for a browser to build instead of two)."""
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, column_widths=[0.62, 0.38], horizontal_spacing=0.05,
                        subplot_titles=("Heater duty cycle", "Average day"))
    devices = sorted({*duty["device_id"].unique().to_list(), *profile["device_id"].unique().to_list()})
    colors = {device: COLORWAY[index % len(COLORWAY)] for index, device in enumerate(devices)}
    for col, source in ((1, fig_duty_cycle(duty)), (2, fig_daily_profile(profile))):
        for trace in source.data:
            device = trace.name.removesuffix(" duty")
            trace.update(legendgroup=device, showlegend=col == 1, marker_color=colors[device])
            if trace.type == "scatter":  # its line would take the colorway's next colour, not the marker's
                trace.update(line_color=colors[device])
            fig.add_trace(trace, row=1, col=col)
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text="% of time on", row=1, col=1)
    fig.update_xaxes(title_text="hour of day", row=1, col=2)
    return fig


def fig_cycles(cycles: pl.DataFrame) -> go.Figure:
    """Heating cycles: duration against temperature rise, short cycles marked."""
    fig = go.Figure()
    for device_id in sorted(cycles["device_id"].unique().to_list()):
        dev = cycles.filter(pl.col("device_id") == device_id)
        fig.add_scatter(x=dev["duration_s"] / 60.0, y=dev["temp_rise"], mode="markers", name=device_id,
                        marker={"symbol": ["x" if s else "circle" for s in dev["short"]]})
    fig.update_layout(title="Heating cycles", xaxis_title="duration (min)", yaxis_title="temperature rise (°C)")
    return fig


def fig_time_to_target(validation: pl.DataFrame) -> go.Figure:
    """Predicted against observed time to target (output of :func:`validate_time_to_target`)."""
    ok = validation.filter(pl.col("observed_s").is_not_null() & pl.col("predicted_s").is_not_null())
    fig = go.Figure()
    for device_id in sorted(ok["device_id"].unique().to_list()):
        dev = ok.filter(pl.col("device_id") == device_id)
        fig.add_scatter(x=dev["observed_s"] / 60.0, y=dev["predicted_s"] / 60.0, mode="markers", name=device_id)
    top = float(max(ok["observed_s"].max() or 0, ok["predicted_s"].max() or 0)) / 60.0  # type: ignore[arg-type]
    fig.add_scatter(x=[0, top], y=[0, top], mode="lines", name="perfect", line={"dash": "dash"})
    fig.update_layout(title="Time to target: predicted vs observed", xaxis_title="observed (min)",
                      yaxis_title="predicted (min)")
    return fig
