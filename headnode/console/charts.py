"""Charts as SVG drawn on the server: no script and no asset from elsewhere, and each chart
comes with its numbers (a caption and a table), so a screen reader reads what is drawn."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

#: one colour per part, in the order parts are given (enough contrast on white, WCAG AA)
PALETTE = ("#1f5f99", "#b35900", "#2e7d32", "#6a1b9a", "#ad1457", "#37474f")
BAR_WIDTH, BAR_HEIGHT = 480, 28


@dataclass(frozen=True)
class Chart:
    title: str
    unit: str
    rows: list[tuple[str, float]]
    svg: Markup


def stacked_bar(title: str, unit: str, parts: Sequence[tuple[str, float]]) -> Chart:
    """One horizontal bar split into ``parts`` (name, amount), widths in proportion."""
    total = sum(max(0.0, float(v)) for _, v in parts)
    x, rects = 0.0, []
    for i, (name, value) in enumerate(parts):
        width = BAR_WIDTH * max(0.0, float(value)) / total if total else 0.0
        share = f"{100 * float(value) / total:.0f} %" if total else "0 %"
        rects.append(Markup('<rect x="{:.1f}" y="0" width="{:.1f}" height="{}" fill="{}">'
                            '<title>{}: {} {} ({})</title></rect>').format(
            x, width, BAR_HEIGHT, PALETTE[i % len(PALETTE)], name, _number(value), unit,
            share))
        x += width
    svg = Markup('<svg class="chart" role="img" viewBox="0 0 {} {}" width="{}" height="{}" '
                 'aria-label="{}"><rect x="0" y="0" width="{}" height="{}" fill="#eceff1"/>'
                 '{}</svg>').format(BAR_WIDTH, BAR_HEIGHT, BAR_WIDTH, BAR_HEIGHT,
                                    _summary(title, unit, parts), BAR_WIDTH, BAR_HEIGHT,
                                    Markup("").join(rects))
    return Chart(title, unit, [(n, float(v)) for n, v in parts], svg)


def _summary(title: str, unit: str, parts: Sequence[tuple[str, float]]) -> str:
    return f"{title}: " + ", ".join(f"{n} {_number(v)} {unit}" for n, v in parts)


def _number(value: float) -> str:
    return f"{value:,.0f}"


def legend_colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


__all__ = ["Chart", "stacked_bar", "legend_colour", "escape"]


def meter(title: str, used: float, total: float, unit: str) -> Markup:
    """A small bar of how much of ``total`` is used (the servers' table); its label says the
    numbers, and the page prints the share beside it, so no one needs the colour."""
    share = max(0.0, min(1.0, float(used) / total)) if total else 0.0
    return Markup('<svg class="meter" role="img" viewBox="0 0 100 10" width="100" height="10" '
                  'aria-label="{}"><rect x="0" y="0" width="100" height="10" fill="#eceff1" '
                  'stroke="#4a4a4a" stroke-width="0.5"/><rect x="0" y="0" width="{:.1f}" '
                  'height="10" fill="{}"/></svg>').format(
        f"{title}: {100 * share:.0f} % used ({_number(used)} of {_number(total)} {unit})",
        100 * share, PALETTE[0])
