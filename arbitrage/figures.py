"""The run report's figures as small self-contained SVG files: the standard library and numpy only.

Every plot_* function returns the SVG text, or None when there is nothing to draw. The figures are
composed from a few primitives below (a canvas, axes with ticks and labels, a legend, bars, stacked
bars, histograms, box plots, lines). Every label is escaped: teacher names and languages come from
user config. The SVGs use no ids, scripts or external styles, so a page can also inline them as is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from xml.sax.saxutils import escape

import numpy as np

from arbitrage.scoretable import TIE, ScoreTable, groups, margins, routed_reward, shares, winners

# Okabe & Ito's colour-blind-safe palette (yellow and black last: the weakest on white, the heaviest). Teacher i of a run
# gets colour i in every figure; ties are grey.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
TIE_COLOUR = "#b0b0b0"
NEUTRAL = "#52677d"  # a series that is no teacher's: margins, router scores
MARK = "#222222"  # reference lines: output.min_margin, the best router, this run's regret
INK, MUTED, GRID = "#222222", "#666666", "#e4e4e4"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
SMALL, TEXT, HEAD = 11, 12, 13  # px: ticks and legends, panel titles, figure titles
PANEL_W, PANEL_H = 700, 350

Box = tuple[float, float, float, float]  # x, y, width, height in px
Draw = Callable[["_Svg", Box], None]


# ---- primitives: canvas, text, axes, legend ----


def _n(v: float) -> str:
    """A coordinate: one decimal at most."""
    s = f"{v:.1f}"
    return s[:-2] if s.endswith(".0") else s


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")  # not allowed in XML even escaped


def _esc(s: object) -> str:
    return escape(_CONTROL.sub("", str(s)))


def _width(s: str, size: float) -> float:
    """A conservative estimate of a label's width in a sans-serif font (no font metrics here)."""
    w = 0.0
    for c in s:
        if ord(c) >= 0x2E80:  # CJK and other wide scripts
            w += 1.0
        elif c in "iljft.,:;|!'()[] ":
            w += 0.36
        elif c.isupper() or c in "mw%@—":
            w += 0.78
        else:
            w += 0.62
    return w * size


def _clip(s: str, chars: int = 28) -> str:
    return s if len(s) <= chars else s[: chars - 1] + "…"


def _wrap(s: str, size: float, width: float, bold: bool = True) -> list[str]:
    lines, line = [], ""
    for word in s.split(" "):
        if line and _width(f"{line} {word}", size) * (1.1 if bold else 1.0) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line]


class _Svg:
    """A canvas that collects SVG elements; numbers are px, strings are escaped here."""

    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = []

    def _el(self, tag: str, attrs: dict, tip: str | None = None) -> None:
        a = " ".join(f'{k.replace("_", "-")}="{_n(v) if isinstance(v, float) else v}"' for k, v in attrs.items() if v is not None)
        self.parts.append(f"<{tag} {a}><title>{_esc(tip)}</title></{tag}>" if tip else f"<{tag} {a}/>")

    def rect(self, x, y, w, h, fill, tip=None, **style) -> None:
        if all(math.isfinite(v) for v in (x, y, w, h)) and w > 0 and h > 0:
            self._el("rect", {"x": float(x), "y": float(y), "width": float(w), "height": float(h), "fill": fill, **style}, tip)

    def line(self, x1, y1, x2, y2, stroke=INK, width=1.0, dash=None) -> None:
        attrs = {"x1": float(x1), "y1": float(y1), "x2": float(x2), "y2": float(y2), "stroke": stroke, "stroke_width": width}
        self._el("line", {**attrs, "stroke_dasharray": dash})

    def path(self, points: Sequence[tuple[float, float]], stroke, width=1.5, dash=None, tip=None) -> None:
        d = " ".join(f"{'M' if k == 0 else 'L'}{_n(x)},{_n(y)}" for k, (x, y) in enumerate(points))
        attrs = {"d": d, "fill": "none", "stroke": stroke, "stroke_width": width, "stroke_dasharray": dash}
        self._el("path", {**attrs, "stroke_linejoin": "round"}, tip)

    def text(self, x, y, s, size=SMALL, anchor="start", weight=None, fill=INK, rotate=None, halo=False) -> None:
        """A label; `halo`: on a white patch, to stay readable across lines."""
        transform = f"rotate({rotate} {_n(x)} {_n(y)})" if rotate else None
        attrs = {"x": float(x), "y": float(y), "font_size": size, "text_anchor": anchor, "font_weight": weight}
        if halo:
            left = {"start": 0.0, "middle": 0.5, "end": 1.0}[anchor] * _width(str(s), size)
            self.rect(x - left - 2, y - size * 0.95, _width(str(s), size) + 4, size * 1.3, "#ffffff")
        a = " ".join(f'{k.replace("_", "-")}="{_n(v) if isinstance(v, float) else v}"' for k, v in attrs.items() if v is not None)
        fill_attr = f' fill="{fill}"' if fill != INK else ""
        transform_attr = f' transform="{transform}"' if transform else ""
        self.parts.append(f"<text {a}{fill_attr}{transform_attr}>{_esc(s)}</text>")

    def render(self, width: float, height: float) -> str:
        w, h = _n(width), _n(height)
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
            f'font-family="{FONT}" font-size="{SMALL}" fill="{INK}">'
            f"<title>{_esc(self.title)}</title>"
            f'<rect width="{w}" height="{h}" fill="#ffffff"/>'
        )
        return head + "\n" + "\n".join(self.parts) + "\n</svg>\n"


def _compose(title: str, rows: list[list[tuple[float, float, Draw]]]) -> str:
    """A figure: its title, then rows of panels (each row centred), drawn top down."""
    width = max(sum(w for w, _, _ in row) for row in rows)
    svg = _Svg(title)
    lines = _wrap(title, HEAD, width - 24)
    for k, line in enumerate(lines):
        svg.text(width / 2, 21 + 17 * k, line, size=HEAD, anchor="middle", weight="600")
    y = 12 + 17 * len(lines)
    for row in rows:
        x = (width - sum(w for w, _, _ in row)) / 2
        for w, h, draw in row:
            draw(svg, (x, y, w, h))
            x += w
        y += max(h for _, h, _ in row)
    return svg.render(width, y + 4)


def _ticks(lo: float, hi: float, n: int = 5) -> tuple[list[float], float]:
    """Round tick values covering [lo, hi], and their step."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo], 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    first = math.ceil(lo / step - 1e-9)
    count = math.floor(hi / step + 1e-9) - first + 1
    return [round((first + k) * step, 12) for k in range(count)], step


def _nice(lo: float, hi: float) -> tuple[float, float]:
    """[lo, hi] widened to whole tick steps, never empty."""
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0
    if hi - lo < 1e-12:
        lo, hi = (lo - 0.5, hi + 0.5) if lo else (0.0, 1.0)
    _, step = _ticks(lo, hi)
    return math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step


def _number(step: float) -> Callable[[float], str]:
    digits = next((d for d in range(7) if abs(round(step, d) - step) < 1e-9 * max(1.0, step)), 6)
    return lambda v: f"{v:,.{digits}f}" if abs(v) >= 10000 else f"{v:.{digits}f}"


def _percent(v: float) -> str:
    return f"{v:.0%}"


Legend = Sequence[tuple[str, str, str]]  # (label, colour, kind): kind is "box", "pale", "line" or "dash"


class _Axes:
    """A plot area inside a panel box: the panel's title, legend, grid, ticks and axis labels.

    x and y are numeric (xlim, ylim) or categorical (xcats, ycats: category i sits at i + 0.5).
    An x category is a label, a (label, smaller second line) pair, or None for a gap.
    """

    def __init__(
        self,
        svg: _Svg,
        box: Box,
        *,
        title: str,
        legend: Legend = (),
        xlim: tuple[float, float] = (0.0, 1.0),
        ylim: tuple[float, float] = (0.0, 1.0),
        xcats: Sequence[str | tuple[str, str] | None] | None = None,
        ycats: Sequence[str] | None = None,
        xlabel: str = "",
        ylabel: str = "",
        yfmt: Callable[[float], str] | None = None,
        captions: Sequence[tuple[str, int, int]] = (),
        headroom: float = 0.0,
    ):
        bx, by, bw, bh = box
        self.svg = svg
        self.xlim = (0.0, float(len(xcats))) if xcats is not None else xlim
        self.ylim = (float(len(ycats)), 0.0) if ycats is not None else ylim
        yticks, ystep = ([], 1.0) if ycats is not None else _ticks(*ylim)
        yfmt = yfmt or _number(ystep)

        # left: y tick labels (or category names) and the y label
        if ycats is not None:
            ycats = [_clip(c, 34) for c in ycats]
            left = 12 + max((_width(c, SMALL) for c in ycats), default=0) + 8
        else:
            left = 10 + (20 if ylabel else 0) + max((_width(yfmt(v), SMALL) for v in yticks), default=0) + 6
        self.x0, self.x1 = bx + left, bx + bw - 24
        pw = self.x1 - self.x0

        # bottom: x tick labels (turned when they do not fit their slot) and the x label
        rotate = False
        if xcats is not None:
            slot = pw / max(1, len(xcats))
            names = [(_clip(c), "") if isinstance(c, str) else (_clip(c[0]), c[1]) for c in xcats if c is not None]
            need = max((max(_width(a, SMALL), _width(b, SMALL - 1)) for a, b in names), default=0)
            rotate = need > slot - 6
            if rotate:
                turned = [_width(f"{a} ({b})" if b else a, SMALL) for a, b in names]
                tick_h = 10 + 0.58 * max(turned, default=0) + 8
                first = next(i for i, c in enumerate(xcats) if c is not None)
                overflow = bx + 4 - (self.x0 + (first + 0.5) * slot + 4 - 0.82 * turned[0])
                if overflow > 0:  # the first label, turned, would leave the panel on the left
                    self.x0 += overflow
                    pw = self.x1 - self.x0
            else:
                tick_h = 8 + 13 * (2 if any(b for _, b in names) else 1)
        else:
            tick_h = 22
        self.y1 = by + bh - tick_h - (18 if xlabel else 0) - 6

        # top: title, legend rows, group captions
        top = by + 8
        title_lines = _wrap(title, TEXT, bw - 16) if title else []
        for line in title_lines:
            top += 15
            svg.text(bx + bw / 2, top, line, size=TEXT, anchor="middle", weight="600")
        top += 6
        top = self._legend(legend, top, pw)
        self.y0 = top + 6 + (15 if captions else 0) + headroom
        ph = self.y1 - self.y0

        # grid and tick labels
        if ycats is None:
            for v in yticks:
                y = self.py(v)
                svg.line(self.x0, y, self.x1, y, GRID)
                svg.text(self.x0 - 6, y + 4, yfmt(v), anchor="end")
        else:
            for i, c in enumerate(ycats):
                svg.text(self.x0 - 8, self.py(i + 0.5) + 4, c, anchor="end")
        if xcats is None:
            xticks, xstep = _ticks(*self.xlim)
            xfmt = _number(xstep)
            for v in xticks:
                x = self.px(v)
                if ycats is not None:
                    svg.line(x, self.y0, x, self.y1, GRID)
                svg.line(x, self.y1, x, self.y1 + 4, INK)
                svg.text(x, self.y1 + 17, xfmt(v), anchor="middle")
        else:
            for i, c in enumerate(xcats):
                if c is None:
                    continue
                a, b = (_clip(c), "") if isinstance(c, str) else (_clip(c[0]), c[1])
                x = self.px(i + 0.5)
                if rotate:
                    svg.text(x + 4, self.y1 + 14, f"{a} ({b})" if b else a, anchor="end", rotate=-35)
                else:
                    svg.text(x, self.y1 + 16, a, anchor="middle")
                    if b:
                        svg.text(x, self.y1 + 29, b, size=SMALL - 1, anchor="middle", fill=MUTED)
            for caption, start, stop in captions:
                mid = self.px((start + stop) / 2)
                svg.text(mid, self.y0 - 8, caption, anchor="middle", fill=MUTED)
        svg.line(self.x0, self.y0, self.x0, self.y1, "#888888")
        svg.line(self.x0, self.y1, self.x1, self.y1, "#888888")
        if xlabel:
            svg.text((self.x0 + self.x1) / 2, by + bh - 8, xlabel, anchor="middle")
        if ylabel:
            cx, cy = bx + 14, (self.y0 + self.y1) / 2
            svg.text(cx, cy, ylabel, anchor="middle", rotate=-90)
        assert pw > 0 and ph > 0

    def _legend(self, items: Legend, top: float, width: float) -> float:
        """Legend entries in centred rows above the plot; returns the y below them."""
        rows: list[list[tuple[str, str, str, float]]] = [[]]
        used = 0.0
        for label, colour, kind in items:
            label = _clip(label, 60)
            w = (22 if kind in ("line", "dash") else 13) + 5 + _width(label, SMALL) + 16
            if rows[-1] and used + w > width:
                rows.append([])
                used = 0.0
            rows[-1].append((label, colour, kind, w))
            used += w
        for row in rows:
            if not row:
                continue
            top += 17
            x = (self.x0 + self.x1) / 2 - (sum(w for *_, w in row) - 16) / 2
            for label, colour, kind, w in row:
                if kind in ("line", "dash"):
                    self.svg.line(x, top - 4, x + 22, top - 4, colour, 2.0, "5 3" if kind == "dash" else None)
                    tx = x + 27
                else:
                    opacity = 0.45 if kind == "pale" else None
                    self.svg.rect(x, top - 11, 13, 13, colour, fill_opacity=opacity)
                    tx = x + 18
                self.svg.text(tx, top, label)
                x += w
        return top + (4 if any(rows) else 0)

    def px(self, v: float) -> float:
        lo, hi = self.xlim
        return self.x0 + (v - lo) / (hi - lo) * (self.x1 - self.x0)

    def py(self, v: float) -> float:
        lo, hi = self.ylim
        return self.y1 - (v - lo) / (hi - lo) * (self.y1 - self.y0)

    def slot(self) -> float:
        """Width in px of one x category (or one unit of x)."""
        return self.px(1) - self.px(0)

    def box(self, x0: float, x1: float, y0: float, y1: float, fill: str, tip: str | None = None, **style) -> None:
        """A rectangle between two data points (a bar, a bin, a segment)."""
        xs, ys = sorted((self.px(x0), self.px(x1))), sorted((self.py(y0), self.py(y1)))
        self.svg.rect(xs[0], ys[0], xs[1] - xs[0], ys[1] - ys[0], fill, tip, **style)

    def vline(self, x: float, colour: str = MARK, dash: str | None = "6 4", width: float = 1.5) -> None:
        if self.xlim[0] <= x <= self.xlim[1]:
            self.svg.line(self.px(x), self.y0, self.px(x), self.y1, colour, width, dash)

    def note(self, text: str) -> None:
        """A grey line of text in the middle of an empty plot."""
        self.svg.text((self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2, text, anchor="middle", fill=MUTED)


# ---- composite marks: stacked bars, grouped bars, histograms, box plots, lines ----


def _stacked(ax: _Axes, at: float, width: float, parts: Sequence[tuple[float, str, str]], **style) -> None:
    """One bar of stacked segments (value, colour, tooltip) from 0 up, centred on x = at."""
    bottom = 0.0
    for value, colour, tip in parts:
        if value > 0:
            ax.box(
                at - width / 2, at + width / 2, bottom, bottom + value, colour, tip, stroke="#ffffff", stroke_width=0.75, **style
            )
            bottom += value


def _grouped(ax: _Axes, at: float, width: float, bars: Sequence[tuple[float, str, str]]) -> None:
    """Bars side by side (value, colour, tooltip) sharing `width` around x = at."""
    each = width / max(1, len(bars))
    for k, (value, colour, tip) in enumerate(bars):
        left = at - width / 2 + k * each
        if math.isfinite(value):
            ax.box(left + each * 0.04, left + each * 0.96, 0.0, value, colour, tip)


def _histogram(ax: _Axes, edges: np.ndarray, series: Sequence[tuple[np.ndarray, str, str]]) -> None:
    """Counts per bin for one or more series (counts, colour, name), side by side in each bin."""
    for b in range(len(edges) - 1):
        lo, hi = float(edges[b]), float(edges[b + 1])
        bars = [(float(c[b]), colour, f"{name}: {int(c[b])} in [{lo:.3g}, {hi:.3g})") for c, colour, name in series]
        _grouped(ax, (lo + hi) / 2, (hi - lo) * 0.9, bars)


def _boxplot(ax: _Axes, at: float, values: np.ndarray, colour: str, name: str) -> None:
    """Quartile box, median and whiskers to the furthest point within 1.5 IQR (outliers not drawn)."""
    if not len(values):
        return
    lo, q1, med, q3, hi = _whiskers(values)
    tip = f"{name}: median {med:.3g}, quartiles {q1:.3g}–{q3:.3g}, whiskers {lo:.3g}–{hi:.3g}, n={len(values)}"
    svg, x = ax.svg, ax.px(at)
    half = ax.slot() * 0.22
    svg.line(x, ax.py(lo), x, ax.py(q1), colour, 1.5)
    svg.line(x, ax.py(q3), x, ax.py(hi), colour, 1.5)
    for y in (lo, hi):
        svg.line(x - half / 2, ax.py(y), x + half / 2, ax.py(y), colour, 1.5)
    top, bottom = ax.py(q3), ax.py(q1)
    svg.rect(x - half, top, 2 * half, max(bottom - top, 1.0), colour, tip, fill_opacity=0.35, stroke=colour, stroke_width=1.5)
    svg.line(x - half, ax.py(med), x + half, ax.py(med), "#ffffff" if colour == "#000000" else INK, 2.0)


def _whiskers(values: np.ndarray) -> tuple[float, float, float, float, float]:
    """Low whisker, quartiles, median, high whisker: the extremes within 1.5 IQR of the box."""
    q1, med, q3 = (float(v) for v in np.percentile(values, [25, 50, 75]))
    iqr = q3 - q1
    return float(values[values >= q1 - 1.5 * iqr].min()), q1, med, q3, float(values[values <= q3 + 1.5 * iqr].max())


def _line(ax: _Axes, ys: np.ndarray, colour: str, width: float, dash: str | None, tip: str) -> None:
    """y against x = 0, 1, 2…, thinned to at most ~600 points (the last always kept)."""
    step = max(1, len(ys) // 600)
    idx = [*range(0, len(ys), step)]
    if idx and idx[-1] != len(ys) - 1:
        idx.append(len(ys) - 1)
    ax.svg.path([(ax.px(i), ax.py(float(ys[i]))) for i in idx], colour, width, dash, tip)


def _colours(table: ScoreTable) -> dict[str, str]:
    return {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(table.teachers)} | {TIE: TIE_COLOUR}


def _column(data: np.ndarray, j: int) -> np.ndarray:
    return data[:, j][~np.isnan(data[:, j])]


# ---- the figures ----


def plot_wins(table: ScoreTable, labels: list[str]) -> str:
    keys = [*table.teachers, TIE] if table.complete else table.teachers
    colours = _colours(table)
    sections = [
        ("overall", {"all": labels}),
        ("per language", groups(table, labels, "language")),
        ("per task", groups(table, labels, "task")),
    ]
    what = "win share" if table.complete else "share of prompts routed"
    title = "which teacher gave the best answer" if table.complete else "which teacher the router called"

    def panel(sections: list[tuple[str, dict[str, list[str]]]], legend: bool) -> tuple[float, float, Draw]:
        cats: list[tuple[str, str] | None] = []
        bars: list[tuple[int, str, list[str]]] = []
        captions = []
        for k, (caption, grouped) in enumerate(sections):
            if k:
                cats.append(None)  # a gap between the sections
            start = len(cats)
            for g, group in grouped.items():
                bars.append((len(cats), g, group))
                cats.append((g, f"n={len(group)}"))
            captions.append((caption, start, len(cats)))

        def draw(svg: _Svg, box: Box) -> None:
            entries = [(k, colours[k], "box") for k in keys] if legend else []
            ax = _Axes(svg, box, title="", legend=entries, xcats=cats, ylabel=what, yfmt=_percent, captions=captions)
            for _, start, _ in captions[1:]:  # a dotted line in each gap
                svg.line(ax.px(start - 0.5), ax.y0, ax.px(start - 0.5), ax.y1, "#bbbbbb", 1.0, "3 3")
            for i, g, group in bars:
                share = shares(group, keys)
                parts = [(share[k], colours[k], f"{g}: {k} {share[k]:.0%} of {len(group)} prompts") for k in keys]
                _stacked(ax, i + 0.5, 0.72, parts)

        slot = 56 if 110 + 56 * len(cats) <= 1000 else 42  # narrower slots turn the labels
        return max(PANEL_W, 110 + slot * len(cats)), PANEL_H, draw

    one = panel(sections, legend=True)
    rows = [[one]] if one[0] <= 1000 else [[panel(sections[:2], legend=True)], [panel(sections[2:], legend=False)]]
    return _compose(f"{table.run_dir.name}: {title} (n: prompts per bar)", rows)


def plot_rewards(table: ScoreTable) -> str | None:
    values = [_column(table.reward, j) for j in range(len(table.teachers))]
    flat = np.concatenate(values) if values else np.zeros(0)
    if not len(flat):
        return None
    lo, hi = (0.0, 1.0) if flat.min() >= 0 and flat.max() <= 1 else (float(flat.min()), float(flat.max()))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi + 1e-9, 11)
    colours = _colours(table)
    series = [(np.histogram(v, bins=edges)[0], colours[t], t) for t, v in zip(table.teachers, values, strict=True)]
    legend = [
        (f"{t} (mean {v.mean():.3f}, n={len(v)})" if len(v) else t, colours[t], "box")
        for t, v in zip(table.teachers, values, strict=True)
    ]
    top = max(float(c.max()) for c, _, _ in series)

    def draw(svg: _Svg, box: Box) -> None:
        ax = _Axes(
            svg,
            box,
            title="",
            legend=legend,
            xlim=(lo, hi),
            ylim=_nice(0, top),
            xlabel="reward (a failed or filtered answer counts 0)",
            ylabel="answers",
        )
        _histogram(ax, edges, series)

    return _compose(f"{table.run_dir.name}: reward distribution per teacher", [[(PANEL_W, PANEL_H, draw)]])


def plot_margins(table: ScoreTable, min_margin) -> str | None:
    gaps = margins(table)
    if not len(gaps):
        return None
    top = max(1.0, float(gaps.max()))
    edges = np.linspace(0, top + 1e-9, 21)
    counts = np.histogram(gaps, bins=edges)[0]
    ties = int(np.sum(gaps < 1e-9))
    legend = [(f"output.min_margin = {min_margin}", MARK, "dash")] if min_margin is not None else []

    def draw(svg: _Svg, box: Box) -> None:
        ax = _Axes(
            svg, box, title="", legend=legend, xlim=(0.0, top), ylim=_nice(0, counts.max()), xlabel="margin", ylabel="prompts"
        )
        _histogram(ax, edges, [(counts, NEUTRAL, "prompts")])
        if min_margin is not None:
            ax.vline(float(min_margin))

    title = f"{table.run_dir.name}: best − worst reward per prompt ({len(gaps)} prompts, {ties} ties)"
    return _compose(title, [[(PANEL_W, PANEL_H, draw)]])


def plot_cost(table: ScoreTable) -> str:
    colours = _colours(table)

    def panel(data: np.ndarray, title: str) -> Draw:
        columns = [_column(data, j) for j in range(len(table.teachers))]
        known = np.array([v for c in columns if len(c) for v in (_whiskers(c)[0], _whiskers(c)[-1])])  # outliers not drawn

        def draw(svg: _Svg, box: Box) -> None:
            ylim = _nice(min(0.0, float(known.min())), float(known.max()) * 1.05) if len(known) else (0.0, 1.0)
            ax = _Axes(svg, box, title=title, xcats=table.teachers, ylim=ylim)
            if not len(known):
                ax.note("no calls")
            for i, (t, values) in enumerate(zip(table.teachers, columns, strict=True)):
                _boxplot(ax, i + 0.5, values, colours[t], t)

        return draw

    width = max(PANEL_W // 2, 120 + 90 * len(table.teachers))
    latency = (width, PANEL_H, panel(table.latency_s, "latency per call (s)"))
    tokens = (width, PANEL_H, panel(table.tokens_out, "tokens out per call"))
    rows = [[latency, tokens]] if 2 * width <= 1000 else [[latency], [tokens]]  # side by side, or one above the other
    title = "cost per teacher: quartiles, median, whiskers to 1.5 IQR (local engines batch calls: latency is the batch's)"
    return _compose(f"{table.run_dir.name}: {title}", rows)


def plot_routing(table: ScoreTable, ref: tuple[ScoreTable, ScoreTable] | None, evaluation: dict | None) -> str | None:
    colours = _colours(table)
    rows: list[list[tuple[float, float, Draw]]] = []
    if not table.complete:  # a one-call router: what it chose per language, beside the oracle when known
        mine, oracle = (ref[0], winners(ref[1])) if ref is not None else (table, None)
        rows.append([_paired_bars(mine, winners(mine), oracle, colours)])
    if ref is not None:
        rows.append([_plot_regret(*ref, colours)])
    if evaluation:
        rows.append([_plot_evaluation(evaluation)])
        rows.append([_plot_evaluation_by_language(table, evaluation, colours)])
    if not rows:
        return None
    return _compose(f"{table.run_dir.name}: router choices vs oracle", rows)


def _paired_bars(table: ScoreTable, routed: list[str], oracle: list[str] | None, colours) -> tuple[float, float, Draw]:
    languages = sorted({p.language for p in table.prompts})
    keys = [*table.teachers, TIE]
    pairs = [("router", routed, 0.0, None)] if oracle is None else [("router", routed, -0.2, None), ("oracle", oracle, 0.2, 0.45)]
    used = {lab for _, labels, _, _ in pairs for lab in labels}
    width = max(PANEL_W, 110 + (110 if oracle else 56) * len(languages))

    def draw(svg: _Svg, box: Box) -> None:
        title = "teacher chosen per language" + (" (left: router, right: oracle, paler)" if oracle else "")
        legend = [(k, colours[k], "box") for k in keys if k in used]
        bar = 0.36 if oracle else 0.7
        named = oracle is not None and (box[2] - 130) / len(languages) * bar >= _width("oracle", SMALL - 1) + 2
        ax = _Axes(
            svg, box, title=title, legend=legend, xcats=languages, ylabel="share of prompts", yfmt=_percent, headroom=14 * named
        )
        for i, g in enumerate(languages):
            for who, labels, offset, opacity in pairs:
                group = [lab for p, lab in zip(table.prompts, labels, strict=True) if p.language == g]
                share = shares(group, keys)
                parts = [(share[k], colours[k], f"{g}, {who}: {k} {share[k]:.0%} of {len(group)}") for k in keys]
                _stacked(ax, i + 0.5 + offset, bar, parts, fill_opacity=opacity)
                if named:
                    svg.text(ax.px(i + 0.5 + offset), ax.y0 - 5, who, size=SMALL - 1, anchor="middle", fill=MUTED)

    return width, PANEL_H, draw


def _plot_regret(table: ScoreTable, ref: ScoreTable, colours) -> tuple[float, float, Draw]:
    """Cumulative regret against the reference run's best answer, for this router and each fixed teacher."""
    col = {t: j for j, t in enumerate(ref.teachers)}
    oracle = ref.oracle()
    lines = [("this run's choices", np.cumsum(oracle - routed_reward(table, ref)), MARK, 2.5, None)]
    lines += [
        (f"fixed: {t}", np.cumsum(oracle - ref.reward[:, col[t]]), colours.get(t, "#999999"), 1.75, "6 3") for t in ref.teachers
    ]
    top = max(float(ys.max()) if len(ys) else 0.0 for _, ys, *_ in lines)

    def draw(svg: _Svg, box: Box) -> None:
        legend = [(name, colour, "dash" if dash else "line") for name, _, colour, _, dash in lines]
        ax = _Axes(
            svg,
            box,
            title="regret against the `all` run on the same prompts",
            legend=legend,
            xlim=(0.0, float(max(1, len(oracle) - 1))),
            ylim=_nice(0, top),
            xlabel="prompt (run order)",
            ylabel="cumulative regret vs all",
        )
        for name, ys, colour, width, dash in lines:  # the dashed lines over this run's, which may follow one
            _line(ax, ys, colour, width, dash, f"{name}: {float(ys[-1]):.3g} after {len(ys)} prompts" if len(ys) else name)

    return PANEL_W, PANEL_H, draw


def _plot_evaluation(evaluation: dict) -> tuple[float, float, Draw]:
    results = evaluation["results"]
    names = [r["router"] for r in results]
    means = [float(r["mean_reward"]) for r in results]
    lo, hi = min(0.0, *means), max(0.0, *means)
    xlim = _nice(lo, hi + (hi - lo) * 0.45 if hi > lo else 1.0)  # room for the labels after the bars
    height = max(PANEL_H, 110 + 24 * len(names))

    def draw(svg: _Svg, box: Box) -> None:
        ax = _Axes(
            svg,
            box,
            title="routers replayed on this run (eval-router)",
            legend=[("best mean reward", MARK, "dash")],
            ycats=names,
            xlim=xlim,
            xlabel="mean reward of the chosen answer",
        )
        ax.vline(max(means))
        for i, (r, mean) in enumerate(zip(results, means, strict=True)):
            tip = f"{r['router']}: mean reward {mean:.3f}, {r['calls_per_prompt']:.2f} calls per prompt"
            ax.box(0.0, mean, i + 0.15, i + 0.85, NEUTRAL, tip)
            x = ax.px(max(mean, 0.0)) + 5
            svg.text(
                x, ax.py(i + 0.5) + 4, f"{mean:.3f} · {r['calls_per_prompt']:.1f} calls", size=SMALL - 1, fill=MUTED, halo=True
            )

    return PANEL_W, height, draw


def _plot_evaluation_by_language(table: ScoreTable, evaluation: dict, colours) -> tuple[float, float, Draw]:
    """Mean reward per language of the oracle, the best fixed teacher and the learning routers."""
    results = {r["router"]: r for r in evaluation["results"]}
    fixed = [r for name, r in results.items() if name.startswith("fixed: ")]
    shown = [
        name
        for name in results
        if name.startswith(("oracle", "learned (", "bandit ("))
        and "in-sample" not in name
        or (fixed and name == max(fixed, key=lambda r: r["mean_reward"])["router"])
    ]
    col = {t: j for j, t in enumerate(table.teachers)}
    row = {p.prompt_id: i for i, p in enumerate(table.prompts)}
    languages = sorted({p.language for p in table.prompts})
    values: dict[str, list[float]] = {}
    for name in shown:
        got: dict[str, list[float]] = {g: [] for g in languages}
        for pid, choice in zip(evaluation["prompts"], results[name]["choices"], strict=True):
            i = row.get(pid)
            if i is not None:
                reward = table.reward[i].max() if choice == "all" else table.reward[i, col[choice]]
                got[table.prompts[i].language].append(float(reward))
        values[name] = [float(np.mean(got[g])) if got[g] else 0.0 for g in languages]
    others = iter(PALETTE[(len(table.teachers) + k) % len(PALETTE)] for k in range(len(shown)))
    series = {}  # the oracle dark grey, a fixed teacher its own colour, the routers colours no teacher has
    for name in shown:
        fixed_teacher = colours.get(name.removeprefix("fixed: ")) if name.startswith("fixed: ") else None
        series[name] = "#444444" if name.startswith("oracle") else fixed_teacher or next(others)
    flat = [v for vs in values.values() for v in vs]
    width = max(PANEL_W, 110 + max(1, len(shown)) * 16 * len(languages))

    def draw(svg: _Svg, box: Box) -> None:
        ax = _Axes(
            svg,
            box,
            title="mean reward per language",
            legend=[(name, series[name], "box") for name in shown],
            xcats=languages,
            ylim=_nice(min(0.0, *flat), max(0.0, *flat)) if flat else (0.0, 1.0),
            ylabel="mean reward of the chosen answer",
        )
        for i, g in enumerate(languages):
            bars = [(values[name][i], series[name], f"{g}: {name} {values[name][i]:.3f}") for name in shown]
            _grouped(ax, i + 0.5, 0.8, bars)

    return width, PANEL_H, draw
