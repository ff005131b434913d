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


# -- line chart and column chart (capacity planner) -----------------------------------------
# Lines differ by marker shape and dash as well as colour, so no series is told by colour
# alone; every point carries its value in a <title>.

import math  # noqa: E402 - this appended section's own imports
from datetime import datetime  # noqa: E402

LINE_WIDTH, LINE_HEIGHT = 640, 280
#: the plot area inside the SVG: left, top, right, bottom margins (room for the axes' labels)
LINE_MARGIN = (64, 16, 16, 56)
#: dash pattern per series ("" solid), in the order series are given
DASHES = ("", "8 4", "2 3", "12 3 2 3")
X_TICKS, Y_TICKS = 5, 5


@dataclass(frozen=True)
class LineChart:
    title: str
    unit: str
    x_label: str
    #: the series' names, in drawing order
    series: list[str]
    #: one row per point: its x as text and each series' value
    rows: list[tuple[str, list[float]]]
    #: per series: its name and a small SVG of its line and marker, for the legend
    legend: list[tuple[str, Markup]]
    summary: str
    svg: Markup


def line_chart(title: str, unit: str, x_label: str, series: Sequence[str],
               points: Sequence[tuple[datetime, Sequence[float]]],
               y_max: float | None = None) -> LineChart:
    """Lines over time: ``points`` are (when, one value per series), oldest first. The y
    axis runs from 0 to ``y_max`` (default: the largest value)."""
    top = y_max if y_max is not None else nice_top(
        max((max(v, default=0.0) for _, v in points), default=0.0))
    summary = _line_summary(title, unit, series, points)
    body = Markup("").join([_line_axes(unit, x_label, points, top),
                            *(_series(i, name, unit, points, top)
                              for i, name in enumerate(series))])
    if not points:
        body += Markup('<text x="{}" y="{}" text-anchor="middle">no data yet</text>').format(
            LINE_WIDTH / 2, LINE_HEIGHT / 2)
    svg = Markup('<svg class="chart line" role="img" viewBox="0 0 {w} {h}" width="{w}" '
                 'height="{h}" aria-label="{label}">{body}</svg>').format(
        w=LINE_WIDTH, h=LINE_HEIGHT, label=summary, body=body)
    rows = [(_when(when), [float(v) for v in values]) for when, values in points]
    legend = [(name, _legend_sample(i)) for i, name in enumerate(series)]
    return LineChart(title, unit, x_label, list(series), rows, legend, summary, svg)


def nice_top(value: float) -> float:
    """The axis' top: the smallest of 1, 2, 2.5, 5 times a power of ten that is at least
    ``value`` and splits into Y_TICKS round ticks (a count of 3 gets 0..5, not 0..3)."""
    if value <= 0:
        return float(Y_TICKS)
    scale = 10 ** math.floor(math.log10(value / Y_TICKS))
    return next(Y_TICKS * step * scale for step in (1, 2, 2.5, 5, 10)
                if Y_TICKS * step * scale >= value)


def _plot_box() -> tuple[float, float, float, float]:
    left, top, right, bottom = LINE_MARGIN
    return left, top, LINE_WIDTH - right, LINE_HEIGHT - bottom


def _x_of(points: Sequence[tuple[datetime, Sequence[float]]]) -> list[float]:
    """Each point's x: in proportion to its time (one point, or all at one time: centred)."""
    x0, _, x1, _ = _plot_box()
    if not points:
        return []
    first, last = points[0][0], points[-1][0]
    span = (last - first).total_seconds()
    if span <= 0:
        return [(x0 + x1) / 2] * len(points)
    return [x0 + (x1 - x0) * (when - first).total_seconds() / span for when, _ in points]


def _y_of(value: float, top: float) -> float:
    _, y0, _, y1 = _plot_box()
    return y1 - (y1 - y0) * max(0.0, min(float(value), top)) / top


def _line_axes(unit: str, x_label: str, points: Sequence[tuple[datetime, Sequence[float]]],
               top: float) -> Markup:
    x0, y0, x1, y1 = _plot_box()
    parts = [Markup('<line x1="{x0}" y1="{y1}" x2="{x1}" y2="{y1}" stroke="#4a4a4a"/>'
                    '<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#4a4a4a"/>').format(
        x0=x0, y0=y0, x1=x1, y1=y1)]
    for i in range(Y_TICKS + 1):
        value = top * i / Y_TICKS
        y = _y_of(value, top)
        parts.append(Markup('<line x1="{}" y1="{:.1f}" x2="{}" y2="{:.1f}" stroke="#dddddd"/>'
                            '<text x="{}" y="{:.1f}" text-anchor="end" font-size="12" '
                            'fill="#1b1b1b">{}</text>').format(
            x0, y, x1, y, x0 - 6, y + 4, compact(value)))
    parts.extend(_time_ticks(points, y1 + 18))
    parts.append(Markup('<text x="{:.1f}" y="{}" text-anchor="middle" font-size="13" '
                        'fill="#1b1b1b">{}</text>').format((x0 + x1) / 2, LINE_HEIGHT - 8,
                                                            _axis_title(x_label, points)))
    parts.append(Markup('<text transform="translate(14 {:.1f}) rotate(-90)" '
                        'text-anchor="middle" font-size="13" fill="#1b1b1b">{}</text>').format(
        (y0 + y1) / 2, unit))
    return Markup("").join(parts)


def _time_ticks(points: Sequence[tuple[datetime, Sequence[float]]], y: float) -> list[Markup]:
    """Times under the axis: X_TICKS evenly spread over the span (the ends anchored inside
    the chart), as precise as the span needs; the date is in the axis' title."""
    if not points:
        return []
    x0, _, x1, _ = _plot_box()
    first, last = points[0][0], points[-1][0]
    span = last - first
    if span.total_seconds() <= 0:
        return [Markup('<text x="{:.1f}" y="{}" text-anchor="middle" font-size="12" '
                       'fill="#1b1b1b">{}</text>').format((x0 + x1) / 2, y, _when(first))]
    shape = ("%H:%M:%S" if span.total_seconds() < 600 else
             "%H:%M" if first.date() == last.date() else
             "%m-%d %H:%M" if span.days < 3 else "%m-%d")
    ticks = []
    for i in range(X_TICKS):
        anchor = "start" if i == 0 else "end" if i == X_TICKS - 1 else "middle"
        ticks.append(Markup('<text x="{:.1f}" y="{}" text-anchor="{}" font-size="12" '
                            'fill="#1b1b1b">{}</text>').format(
            x0 + (x1 - x0) * i / (X_TICKS - 1), y, anchor,
            (first + span * i / (X_TICKS - 1)).strftime(shape)))
    return ticks


def _axis_title(x_label: str, points: Sequence[tuple[datetime, Sequence[float]]]) -> str:
    if not points:
        return x_label
    first, last = points[0][0].date(), points[-1][0].date()
    return f"{x_label}, {first}" + ("" if first == last else f" to {last}")


def _series(index: int, name: str, unit: str,
            points: Sequence[tuple[datetime, Sequence[float]]], top: float) -> Markup:
    # plain strings with the two texts escaped once: Markup.format per point costs a
    # millisecond a point on a month of history
    colour = PALETTE[index % len(PALETTE)]
    label, units = escape(name), escape(unit)
    coords = [(x, _y_of(values[index], top), when, values[index])
              for x, (when, values) in zip(_x_of(points), points, strict=True)]
    line = ""
    if len(coords) > 1:
        line = (f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                f'stroke-dasharray="{DASHES[index % len(DASHES)]}" points="'
                + " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in coords) + '"/>')
    marks = "".join(
        _marker(index, x, y, f"<title>{label}: {_tick(value)} {units} at {_when(when)}</title>")
        for x, y, when, value in coords)
    return Markup(f'<g class="series">{line}{marks}</g>')


def _marker(index: int, x: float, y: float, title: str = "") -> str:
    """A point's mark: circle, square, triangle, diamond by series (``title``: markup)."""
    colour, shape = PALETTE[index % len(PALETTE)], index % 4
    if shape == 0:
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}">{title}</circle>'
    if shape == 1:
        return (f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" '
                f'fill="{colour}">{title}</rect>')
    corners = ([(0, -5), (5, 4), (-5, 4)] if shape == 2 else
               [(0, -5), (5, 0), (0, 5), (-5, 0)])
    spots = " ".join(f"{x + dx:.1f},{y + dy:.1f}" for dx, dy in corners)
    return f'<polygon points="{spots}" fill="{colour}">{title}</polygon>'


def _legend_sample(index: int) -> Markup:
    colour = PALETTE[index % len(PALETTE)]
    return Markup('<svg class="legend-sample" aria-hidden="true" viewBox="0 0 36 12" '
                  'width="36" height="12"><line x1="0" y1="6" x2="36" y2="6" stroke="{}" '
                  'stroke-width="2" stroke-dasharray="{}"/>{}</svg>').format(
        colour, DASHES[index % len(DASHES)], Markup(_marker(index, 18, 6)))


def _line_summary(title: str, unit: str, series: Sequence[str],
                  points: Sequence[tuple[datetime, Sequence[float]]]) -> str:
    if not points:
        return f"{title}: no data yet"
    span = (f"1 point, at {_when(points[0][0])}" if len(points) == 1 else
            f"{len(points)} points from {_when(points[0][0])} to {_when(points[-1][0])}")
    lines = []
    for i, name in enumerate(series):
        values = [float(v[i]) for _, v in points]
        lines.append(f"{name} last {_tick(values[-1])} {unit} (lowest {_tick(min(values))}, "
                     f"highest {_tick(max(values))})")
    return f"{title}: {span}; " + "; ".join(lines)


def _when(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S")


def compact(value: float) -> str:
    """An axis label that fits beside the axis: 2.4 M, 143 k, 42, 0.5."""
    for size, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return _tick(value)


def _tick(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 or float(value).is_integer() else f"{value:.1f}"


COLUMN_WIDTH, COLUMN_HEIGHT = 240, 200
#: the plot area inside a column chart: left, top, right, bottom margins
COLUMN_MARGIN = (64, 24, 8, 36)


def column_chart(title: str, unit: str, parts: Sequence[tuple[str, float]]) -> Chart:
    """Columns side by side on one scale from 0 (e.g. before and after), each labelled
    under it and with its value over it; its numbers as a ``Chart``'s rows."""
    left, top_margin, right, bottom = COLUMN_MARGIN
    x0, y0, x1, y1 = left, top_margin, COLUMN_WIDTH - right, COLUMN_HEIGHT - bottom
    top = max((max(0.0, float(v)) for _, v in parts), default=0.0) or 1.0
    slot = (x1 - x0) / max(1, len(parts))
    shapes = [Markup('<line x1="{x0}" y1="{y1}" x2="{x1}" y2="{y1}" stroke="#4a4a4a"/>'
                     '<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#4a4a4a"/>'
                     '<text x="{x0m}" y="{y0t}" text-anchor="end" font-size="12" '
                     'fill="#1b1b1b">{top}</text><text x="{x0m}" y="{y1t}" text-anchor="end" '
                     'font-size="12" fill="#1b1b1b">0</text>').format(
        x0=x0, y0=y0, x1=x1, y1=y1, x0m=x0 - 6, y0t=y0 + 4, y1t=y1 + 4, top=compact(top)),
              Markup('<text transform="translate(14 {:.1f}) rotate(-90)" text-anchor="middle" '
                     'font-size="12" fill="#1b1b1b">{}</text>').format((y0 + y1) / 2, unit)]
    for i, (name, value) in enumerate(parts):
        height = (y1 - y0) * max(0.0, float(value)) / top
        x = x0 + slot * i + slot * 0.15
        shapes.append(Markup(
            '<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="{}">'
            '<title>{}: {} {}</title></rect>'
            '<text x="{:.1f}" y="{:.1f}" text-anchor="middle" font-size="12" '
            'fill="#1b1b1b">{}</text>'
            '<text x="{:.1f}" y="{}" text-anchor="middle" font-size="12" '
            'fill="#1b1b1b">{}</text>').format(
            x, y1 - height, slot * 0.7, height, PALETTE[i % len(PALETTE)], name,
            _number(value), unit, x + slot * 0.35, y1 - height - 4, compact(value),
            x + slot * 0.35, y1 + 16, name))
    svg = Markup('<svg class="chart columns" role="img" viewBox="0 0 {w} {h}" width="{w}" '
                 'height="{h}" aria-label="{label}">{body}</svg>').format(
        w=COLUMN_WIDTH, h=COLUMN_HEIGHT, label=_summary(title, unit, parts),
        body=Markup("").join(shapes))
    return Chart(title, unit, [(n, float(v)) for n, v in parts], svg)


# -- range chart (capacity forecast) ---------------------------------------------------------

RANGE_WIDTH, RANGE_ROW = 640, 30
#: left (room for the rows' names), top, right, bottom (the axis' ticks and title)
RANGE_MARGIN = (150, 8, 24, 44)
#: a row's name is cut to this many characters in the chart (whole in its <title>)
RANGE_NAME = 16


def range_chart(title: str, unit: str,
                rows: Sequence[tuple[str, float | None, float | None, float | None]]) -> Chart:
    """Per row (name, value, low, high): a bar to the value and a whisker from low to high
    (high None: open to the right, drawn as an arrow to the edge); value None: "no value".
    The rows' numbers go in the page's own table (the returned ``Chart.rows``: the values)."""
    left, top_margin, right, bottom = RANGE_MARGIN
    height = top_margin + RANGE_ROW * max(1, len(rows)) + bottom
    x0, x1, y1 = left, RANGE_WIDTH - right, height - bottom
    top = nice_top(max((v for _, *vs in rows for v in vs if v is not None), default=0.0))

    parts = [f'<line x1="{x0}" y1="{y1}" x2="{x1}" y2="{y1}" stroke="#4a4a4a"/>']
    for i in range(Y_TICKS + 1):
        x = x0 + (x1 - x0) * i / Y_TICKS
        parts.append(f'<line x1="{x:.1f}" y1="{top_margin}" x2="{x:.1f}" y2="{y1}" '
                     f'stroke="#dddddd"/><text x="{x:.1f}" y="{y1 + 16}" text-anchor="middle" '
                     f'font-size="12" fill="#1b1b1b">{compact(top * i / Y_TICKS)}</text>')
    parts.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{height - 8}" text-anchor="middle" '
                 f'font-size="13" fill="#1b1b1b">{escape(unit)}</text>')
    for i, (name, value, low, high) in enumerate(rows):
        parts.append(_range_row(i, name, unit, (value, low, high), (x0, x1, top)))
    summary = f"{title}: " + "; ".join(_range_words(n, v, lo, hi, unit) for n, v, lo, hi in rows)
    svg = Markup('<svg class="chart range" role="img" viewBox="0 0 {w} {h}" width="{w}" '
                 'height="{h}" aria-label="{label}">{body}</svg>').format(
        w=RANGE_WIDTH, h=height, label=summary if rows else f"{title}: no rows",
        body=Markup("".join(parts)))
    return Chart(title, unit, [(n, float(v)) for n, v, _, _ in rows if v is not None], svg)


def _range_row(i: int, name: str, unit: str,
               values: tuple[float | None, float | None, float | None],
               scale: tuple[float, float, float]) -> str:
    value, low, high = values
    left, right, top = scale

    def x_of(amount: float) -> float:
        return left + (right - left) * max(0.0, min(amount, top)) / top

    y = RANGE_MARGIN[1] + RANGE_ROW * i + RANGE_ROW / 2
    shown = name if len(name) <= RANGE_NAME else name[:RANGE_NAME - 1] + "…"
    row = [f'<text x="{RANGE_MARGIN[0] - 8}" y="{y + 4:.1f}" text-anchor="end" font-size="13" '
           f'fill="#1b1b1b">{escape(shown)}<title>{escape(name)}</title></text>']
    if value is None:
        row.append(f'<text x="{RANGE_MARGIN[0] + 6}" y="{y + 4:.1f}" font-size="12" '
                   f'fill="#4a4a4a">no date</text>')
        return "".join(row)
    colour = PALETTE[0]
    words = escape(_range_words(name, value, low, high, unit))
    row.append(f'<rect x="{RANGE_MARGIN[0]}" y="{y - 7:.1f}" '
               f'width="{x_of(value) - RANGE_MARGIN[0]:.1f}" height="14" fill="{colour}" '
               f'fill-opacity="0.35"><title>{words}</title></rect>')
    if low is not None:
        end = x_of(high) if high is not None else right
        row.append(f'<line x1="{x_of(low):.1f}" y1="{y:.1f}" x2="{end:.1f}" y2="{y:.1f}" '
                   f'stroke="#1b1b1b" stroke-width="2"/>'
                   f'<line x1="{x_of(low):.1f}" y1="{y - 6:.1f}" x2="{x_of(low):.1f}" '
                   f'y2="{y + 6:.1f}" stroke="#1b1b1b" stroke-width="2"/>')
        row.append(f'<line x1="{end:.1f}" y1="{y - 6:.1f}" x2="{end:.1f}" y2="{y + 6:.1f}" '
                   f'stroke="#1b1b1b" stroke-width="2"/>' if high is not None else
                   f'<polygon points="{end:.1f},{y:.1f} {end - 7:.1f},{y - 5:.1f} '
                   f'{end - 7:.1f},{y + 5:.1f}" fill="#1b1b1b"/>')
    row.append(f'<circle cx="{x_of(value):.1f}" cy="{y:.1f}" r="4" fill="{colour}"/>')
    return "".join(row)


def _range_words(name: str, value: float | None, low: float | None, high: float | None,
                 unit: str) -> str:
    if value is None:
        return f"{name} no date"
    spread = ("" if low is None else
              f" ({_tick(low)} to {_tick(high) if high is not None else 'no end'})")
    return f"{name} {_tick(value)} {unit}{spread}"
