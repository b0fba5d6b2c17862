"""Charts of bench sweeps and tune trials, as PNG or SVG (matplotlib, the `charts` extra).

People compare layouts by looking: a sweep is drawn as pairs/s (left axis, bars of the
achieved rate) and p50/p95 latency (right axis) against the number of callers; tune's trials
as one bar of pairs/s per setting with its p95 beside it, the best one marked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from xrerank.errors import BadInput

if TYPE_CHECKING:
    from xrerank.perf.bench import BenchResult
    from xrerank.perf.tune import Tuning

FORMATS = (".png", ".svg")


def check_chart_path(path: Path) -> Path:
    """A path to write a chart to: .png or .svg, in a directory that exists. Checked before any load."""
    if path.suffix.lower() not in FORMATS:
        raise BadInput(f"--chart {path}: give a file ending in .png or .svg")
    if not path.parent.is_dir():
        raise BadInput(f"--chart {path}: the directory {path.parent} does not exist")
    if path.is_dir():
        raise BadInput(f"--chart {path} is a directory; give a file name")
    _pyplot()  # a missing extra is refused before the load, not after it
    return path


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise BadInput("charts need matplotlib: pip install 'xrerank[charts]'") from None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _ms(value: float | None) -> float:
    return float("nan") if value is None else value * 1000


def sweep_chart(results: Sequence[BenchResult], path: Path, title: str) -> Path:
    """pairs/s and p50/p95 (ms) against callers, one point per level of the sweep."""
    plt = _pyplot()
    callers = [result.workload.concurrency for result in results]
    positions = range(len(callers))
    figure, rate_axis = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    bars = rate_axis.bar(positions, [r.pairs_per_second for r in results], color="#4c78a8", width=0.55,
                         label="pairs/s")  # fmt: skip
    rate_axis.bar_label(bars, fmt="%.0f", fontsize=8)
    rate_axis.set_xticks(list(positions), [str(n) for n in callers])
    rate_axis.set_xlabel("callers at once")
    rate_axis.set_ylabel("pairs/s (bars)")
    latency_axis = rate_axis.twinx()
    for fraction, style, label in ((0.5, "o-", "p50"), (0.95, "s--", "p95")):
        latency_axis.plot(positions, [_ms(r.percentile(fraction)) for r in results], style, color="#e45756",
                          label=f"{label} ms")  # fmt: skip
    drawn = [value for line in latency_axis.get_lines() for value in line.get_ydata() if value == value and value > 0]
    if drawn and max(drawn) / min(drawn) > 10:  # 30 ms at one caller and 2 s at 48 both stay readable
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        latency_axis.set_yscale("log")
        latency_axis.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        latency_axis.yaxis.set_major_formatter(FuncFormatter(lambda value, position: f"{value:g}"))
        latency_axis.yaxis.set_minor_formatter(NullFormatter())
        latency_axis.set_ylabel("latency, ms (lines, log scale)")
        low, high = latency_axis.get_ylim()
        latency_axis.set_ylim(low, high * 1.6)  # room above the lines for the bars' labels
    else:
        latency_axis.set_ylabel("latency, ms (lines)")
        latency_axis.set_ylim(0, max(drawn, default=1.0) * 1.25)
    handles = [bars, *latency_axis.get_lines()]
    rate_axis.legend(handles, [h.get_label() for h in handles], loc="upper left", fontsize=8)
    rate_axis.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def tune_chart(tuning: Tuning, path: Path, title: str) -> Path:
    """One bar of pairs/s per trial (failed trials at zero, hatched), p95 beside each, the best one dark."""
    plt = _pyplot()
    trials = tuning.trials
    labels = [_short(trial.setting) for trial in trials]
    rates = [trial.result.pairs_per_second if trial.usable and trial.result else 0.0 for trial in trials]
    figure, axis = plt.subplots(figsize=(8, 1.2 + 0.45 * max(1, len(trials))), dpi=120)
    colours = ["#1f4e79" if trial is tuning.best else "#9ecae9" for trial in trials]
    bars = axis.barh(range(len(trials)), rates, color=colours, hatch=["" if t.usable else "//" for t in trials])
    notes = [
        f"{trial.result.pairs_per_second:.0f} pairs/s, p50 {_ms(trial.result.percentile(0.5)):.0f} / "
        f"p95 {_ms(trial.result.percentile(0.95)):.0f} ms"
        if trial.usable and trial.result
        else "failed"
        for trial in trials
    ]
    axis.bar_label(bars, labels=notes, fontsize=8, padding=3)
    axis.set_yticks(range(len(trials)), labels, fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("pairs/s")
    axis.set_xlim(0, max(rates, default=1.0) * 1.45 or 1.0)
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def _short(setting) -> str:
    replicas, threads, size, interval, per_gpu, chunk = setting.columns()
    where = f"{per_gpu}/GPU" if setting.gpus else f"x{threads}t"
    extra = "" if size == "-" and interval == "-" else f" b{size} i{interval}"
    return f"{replicas}r {where}{extra}" + (f" c{chunk}" if chunk != "-" else "")
