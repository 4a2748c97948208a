"""How honest the Insights page's numbers are: over many simulated rooms (seeds) and window lengths, how often
the interval of a constant shown as a number holds the simulator's true value, and how often the window was
judged too short ("not enough data").

Each seed's thermostats are stepped in-process (``tests.simhistory.direct_history``: the simulator's own device,
thermal model and schedule), then fitted on windows of several lengths ending at the same moment, as the Insights
page would. ``python -m bench.insights_coverage [--seeds N] [--windows 0.25,1,3,7]`` prints the figures.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from dataclasses import dataclass, field

import polars as pl

from simulator.model import DeviceParams
from tests.simhistory import direct_history
from thermolog.analytics.data import InsufficientData, prepare
from thermolog.analytics.uncertainty import CONSTANTS, fit_with_uncertainty

DEVICES = ("sim-01", "sim-02", "sim-03")
WINDOWS_D = (0.25, 1.0, 3.0, 7.0)
INTERVAL_S = 60.0
T0 = 1_790_000_000.0


def truth(params: DeviceParams) -> dict[str, float]:
    """The simulator's value of each constant the fit reports."""
    return {
        "tau_h": params.tau_s / 3600.0,
        "gain_c_per_h": params.heater_gain_c_per_h,
        "heater_lift_c": params.heater_gain_c_per_h * params.tau_s / 3600.0,
        "ambient_mean_c": params.outdoor_mean_c,
        "ambient_amplitude_c": params.outdoor_amplitude_c,
    }


@dataclass
class Tally:
    """Fits tried, constants shown as numbers, and shown numbers whose interval holds the truth."""

    fits: Counter = field(default_factory=Counter)
    shown: Counter = field(default_factory=Counter)
    covered: Counter = field(default_factory=Counter)
    misses: list[str] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        """Share of shown numbers whose interval holds the truth (pooled over constants); 1 when none shown."""
        shown = sum(self.shown.values())
        return sum(self.covered.values()) / shown if shown else 1.0

    def shown_share(self, window_d: float) -> float:
        """Share of the constants shown as numbers for windows of ``window_d`` days."""
        fits = self.fits[window_d] * len(CONSTANTS)
        return sum(n for (w, _c), n in self.shown.items() if w == window_d) / fits if fits else 0.0


def study(seeds: range | list[int], windows_d: tuple[float, ...] = WINDOWS_D, interval_s: float = INTERVAL_S,
          devices: tuple[str, ...] = DEVICES) -> Tally:
    """Simulate ``max(windows_d)`` days per seed and fit every device on every window ending at its end."""
    tally = Tally()
    days = max(windows_d)
    for seed in seeds:
        frame, sims = direct_history(list(devices), seed=seed, days=days, interval_s=interval_s, t0=T0)
        end = frame["ts"].max()
        for sim in sims:
            own = frame.filter(pl.col("device_id") == sim.params.device_id)
            true = truth(sim.params)
            for window_d in windows_d:
                window = prepare(own.filter(pl.col("ts") > end - pl.duration(seconds=int(window_d * 86_400))))
                tally.fits[window_d] += 1
                try:
                    fit = fit_with_uncertainty(window)
                except InsufficientData:
                    continue
                for name, estimate in fit.estimates.items():
                    if not estimate.identified:
                        continue
                    tally.shown[(window_d, name)] += 1
                    if estimate.covers(true[name]):
                        tally.covered[(window_d, name)] += 1
                    else:
                        tally.misses.append(f"seed {seed} {sim.params.device_id} {window_d:g} d {name}: "
                                            f"{estimate.value:.2f} [{estimate.low:.2f}, {estimate.high:.2f}], "
                                            f"truth {true[name]:.2f}")
    return tally


def report(tally: Tally, windows_d: tuple[float, ...]) -> str:
    """Coverage per constant and window, the shown share per window, and the pooled figure."""
    lines = [f"{'constant':<22}" + "".join(f"{w:>12g} d" for w in windows_d)]
    for name in CONSTANTS:
        cells = []
        for w in windows_d:
            shown, covered = tally.shown[(w, name)], tally.covered[(w, name)]
            cells.append(f"{covered:>5}/{shown:<4}" + ("  " if shown else " -") if shown else f"{'-':>14}")
        lines.append(f"{name:<22}" + "".join(f"{c:>14}" for c in cells))
    lines.append(f"{'shown as numbers':<22}" + "".join(f"{tally.shown_share(w):>13.0%} " for w in windows_d))
    shown = sum(tally.shown.values())
    lines.append(f"coverage of shown numbers: {tally.coverage:.1%} ({sum(tally.covered.values())} of {shown}); "
                 f"fits: {sum(tally.fits.values())}")
    return "\n".join(lines)


def main() -> None:
    """Run the study and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--seeds", type=int, default=10, help="simulated seeds (3 rooms each)")
    parser.add_argument("--first-seed", type=int, default=100)
    parser.add_argument("--windows", default=",".join(f"{w:g}" for w in WINDOWS_D), help="window lengths (days)")
    parser.add_argument("--misses", action="store_true", help="list every shown number whose interval missed")
    args = parser.parse_args()
    windows = tuple(float(w) for w in args.windows.split(","))
    started = time.perf_counter()
    tally = study(range(args.first_seed, args.first_seed + args.seeds), windows)
    print(report(tally, windows))
    if args.misses:
        print("\n".join(tally.misses))
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
