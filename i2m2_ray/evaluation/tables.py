"""One pipeline's comparison as files a person opens: ``comparison.csv`` (numbers, for a
spreadsheet or pandas) and ``comparison.md`` (the same, readable), a row per model, the
report's metrics with their bootstrap intervals, calibration and wall time."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence

EXTRA = ("ece", "brier", "wall_seconds")  # beside the report's metrics, where the summary has them


def comparison_columns(summary: Mapping[str, Mapping[str, float]], metrics: Sequence[str]) -> list[str]:
    """The columns: each report metric with its ``_ci_low`` / ``_ci_high`` (where the
    summary has them), then :data:`EXTRA`."""
    have = {k for m in summary.values() for k in m}
    out: list[str] = []
    for metric in metrics:
        out += [k for k in (metric, f"{metric}_ci_low", f"{metric}_ci_high") if k in have]
    return out + [k for k in EXTRA if k in have]


def comparison_csv(summary: Mapping[str, Mapping[str, float]], metrics: Sequence[str]) -> str:
    """A row per model (``summary``'s order), full precision; a missing value is empty."""
    columns = comparison_columns(summary, metrics)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["model", *columns])
    for name, m in summary.items():
        writer.writerow([name, *(_plain(m.get(c)) for c in columns)])
    return buf.getvalue()


def comparison_markdown(summary: Mapping[str, Mapping[str, float]], metrics: Sequence[str], title: str) -> str:
    """A Markdown table: each metric as ``value [low, high]`` (3 decimals), the best
    value of each report metric in bold (higher is better), then ECE, Brier and wall time."""
    shown = [m for m in metrics if any(m in s for s in summary.values())]
    extra = [k for k in EXTRA if any(k in s for s in summary.values())]
    best = {m: max((s[m] for s in summary.values() if _finite(s.get(m))), default=None) for m in shown}
    lines = [f"### {title}", "", "| model | " + " | ".join([*shown, *extra]) + " |"]
    lines.append("| --- " * (1 + len(shown) + len(extra)) + "|")
    for name, s in summary.items():
        cells = []
        for m in shown:
            value = s.get(m)
            if not _finite(value):
                cells.append("–")
                continue
            text = f"{value:.3f}"
            if _finite(s.get(f"{m}_ci_low")) and _finite(s.get(f"{m}_ci_high")):
                text += f" [{s[f'{m}_ci_low']:.3f}, {s[f'{m}_ci_high']:.3f}]"
            cells.append(f"**{text}**" if value == best[m] else text)
        for k in extra:
            value = s.get(k)
            cells.append("–" if not _finite(value) else f"{value:.0f}" if k == "wall_seconds" else f"{value:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Intervals: bootstrap 95% percentile intervals over the test set (stage 3)."]
    return "\n".join(lines) + "\n"


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(float(value))


def _plain(value: object) -> str:
    return repr(float(value)) if _finite(value) else ""  # type: ignore[arg-type]
