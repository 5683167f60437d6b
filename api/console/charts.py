"""Inline SVG bar charts for the dashboard, drawn on the server from the numbers the page already
has (GET /v1/admin/stats's): no JavaScript, no chart library, nothing fetched from elsewhere.
Each bar carries its label and value as data attributes, so what it shows can be checked."""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup, escape

LABEL_WIDTH = 260  # px for the bar's name
BAR_AREA = 360  # px the longest bar takes
VALUE_WIDTH = 140  # px for the number after the bar
ROW = 22  # px per bar


@dataclass(frozen=True)
class Bar:
    label: str
    value: float  # what the bar's length stands for (written in full in data-value: `:g` kept 6 digits)
    shown: str  # the number as written next to it (e.g. a decimal volume with its asset)


def bar_length(value: float, largest: float) -> float:
    """Proportional to the largest bar; one decimal, so the markup is stable."""
    return round(BAR_AREA * value / largest, 1) if largest > 0 else 0.0


def bar_chart(chart_id: str, title: str, bars: list[Bar]) -> Markup:
    """A horizontal bar chart; an empty list draws a chart that says so."""
    height = max(len(bars), 1) * ROW + 8
    width = LABEL_WIDTH + BAR_AREA + VALUE_WIDTH
    largest = max((b.value for b in bars), default=0.0)
    parts = [
        f'<svg id="{escape(chart_id)}" class="chart" role="img" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}"><title>{escape(title)}</title>'
    ]
    if not bars:
        parts.append(f'<text x="0" y="{ROW - 6}" class="chart-empty">nothing to show</text>')
    for i, bar in enumerate(bars):
        y = i * ROW + 4
        length = bar_length(bar.value, largest)
        parts.append(
            f'<g class="bar" data-label="{escape(bar.label)}" data-value="{float(bar.value)!r}">'
            f'<text x="{LABEL_WIDTH - 8}" y="{y + 14}" text-anchor="end">{escape(bar.label)}</text>'
            f'<rect x="{LABEL_WIDTH}" y="{y}" width="{length}" height="{ROW - 6}" fill="#4a78b5"></rect>'
            f'<text x="{LABEL_WIDTH + length + 6}" y="{y + 14}">{escape(bar.shown)}</text></g>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def dashboard_charts(stats) -> dict[str, Markup]:  # type: ignore[no-untyped-def]
    """Counts per chain and status, volumes per chain, asset and status (an asset's own unit:
    volumes of different assets are never added up), and the failure reasons."""
    counts: dict[str, int] = {}
    for s in stats.by_status:
        counts[f"{s.chain} {s.status}"] = counts.get(f"{s.chain} {s.status}", 0) + s.count
    volumes = [Bar(f"{s.chain} {s.asset} {s.status}", float(s.volume), f"{s.volume} {s.asset}") for s in stats.by_status]
    return {
        "counts": bar_chart("chart-counts", "Withdrawals per chain and status", [Bar(k, v, str(v)) for k, v in counts.items()]),
        "volumes": bar_chart("chart-volumes", "Volume per chain, asset and status", volumes),
        "failures": bar_chart("chart-failures", "Failure reasons", [Bar(r.error_code, r.count, str(r.count)) for r in stats.failure_reasons]),
    }
