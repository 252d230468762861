"""SVG primitives for the run report's figures: a canvas, axes with ticks and labels, a legend,
bars, stacked bars, histograms, box plots and lines — the standard library and numpy only.

Every label is escaped: teacher names and languages come from user config. The SVGs use no ids,
scripts or external styles, so a page can also inline them as is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from xml.sax.saxutils import escape

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
Draw = Callable[["Svg", Box], None]


# ---- primitives: canvas, text, axes, legend ----


def num(v: float) -> str:
    """A coordinate: one decimal at most."""
    s = f"{v:.1f}"
    return s[:-2] if s.endswith(".0") else s


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")  # not allowed in XML even escaped


def esc(s: object) -> str:
    return escape(_CONTROL.sub("", str(s)))


def text_width(s: str, size: float) -> float:
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


def clip(s: str, chars: int = 28) -> str:
    return s if len(s) <= chars else s[: chars - 1] + "…"


def wrap(s: str, size: float, width: float, bold: bool = True) -> list[str]:
    lines, line = [], ""
    for word in s.split(" "):
        if line and text_width(f"{line} {word}", size) * (1.1 if bold else 1.0) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line]


class Svg:
    """A canvas that collects SVG elements; numbers are px, strings are escaped here."""

    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = []

    def _el(self, tag: str, attrs: dict, tip: str | None = None) -> None:
        a = " ".join(
            f'{k.replace("_", "-")}="{num(v) if isinstance(v, float) else v}"' for k, v in attrs.items() if v is not None
        )
        self.parts.append(f"<{tag} {a}><title>{esc(tip)}</title></{tag}>" if tip else f"<{tag} {a}/>")

    def rect(self, x, y, w, h, fill, tip=None, **style) -> None:
        if all(math.isfinite(v) for v in (x, y, w, h)) and w > 0 and h > 0:
            self._el("rect", {"x": float(x), "y": float(y), "width": float(w), "height": float(h), "fill": fill, **style}, tip)

    def line(self, x1, y1, x2, y2, stroke=INK, width=1.0, dash=None) -> None:
        attrs = {"x1": float(x1), "y1": float(y1), "x2": float(x2), "y2": float(y2), "stroke": stroke, "stroke_width": width}
        self._el("line", {**attrs, "stroke_dasharray": dash})

    def path(self, points: Sequence[tuple[float, float]], stroke, width=1.5, dash=None, tip=None) -> None:
        d = " ".join(f"{'M' if k == 0 else 'L'}{num(x)},{num(y)}" for k, (x, y) in enumerate(points))
        attrs = {"d": d, "fill": "none", "stroke": stroke, "stroke_width": width, "stroke_dasharray": dash}
        self._el("path", {**attrs, "stroke_linejoin": "round"}, tip)

    def text(self, x, y, s, size=SMALL, anchor="start", weight=None, fill=INK, rotate=None, halo=False) -> None:
        """A label; `halo`: on a white patch, to stay readable across lines."""
        transform = f"rotate({rotate} {num(x)} {num(y)})" if rotate else None
        attrs = {"x": float(x), "y": float(y), "font_size": size, "text_anchor": anchor, "font_weight": weight}
        if halo:
            left = {"start": 0.0, "middle": 0.5, "end": 1.0}[anchor] * text_width(str(s), size)
            self.rect(x - left - 2, y - size * 0.95, text_width(str(s), size) + 4, size * 1.3, "#ffffff")
        a = " ".join(
            f'{k.replace("_", "-")}="{num(v) if isinstance(v, float) else v}"' for k, v in attrs.items() if v is not None
        )
        fill_attr = f' fill="{fill}"' if fill != INK else ""
        transform_attr = f' transform="{transform}"' if transform else ""
        self.parts.append(f"<text {a}{fill_attr}{transform_attr}>{esc(s)}</text>")

    def render(self, width: float, height: float) -> str:
        w, h = num(width), num(height)
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
            f'font-family="{FONT}" font-size="{SMALL}" fill="{INK}">'
            f"<title>{esc(self.title)}</title>"
            f'<rect width="{w}" height="{h}" fill="#ffffff"/>'
        )
        return head + "\n" + "\n".join(self.parts) + "\n</svg>\n"


def compose(title: str, rows: list[list[tuple[float, float, Draw]]]) -> str:
    """A figure: its title, then rows of panels (each row centred), drawn top down."""
    width = max(sum(w for w, _, _ in row) for row in rows)
    svg = Svg(title)
    lines = wrap(title, HEAD, width - 24)
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


def ticks(lo: float, hi: float, n: int = 5) -> tuple[list[float], float]:
    """Round tick values covering [lo, hi], and their step."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo], 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    first = math.ceil(lo / step - 1e-9)
    count = math.floor(hi / step + 1e-9) - first + 1
    return [round((first + k) * step, 12) for k in range(count)], step


def nice(lo: float, hi: float) -> tuple[float, float]:
    """[lo, hi] widened to whole tick steps, never empty."""
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0
    if hi - lo < 1e-12:
        lo, hi = (lo - 0.5, hi + 0.5) if lo else (0.0, 1.0)
    _, step = ticks(lo, hi)
    return math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step


def number_format(step: float) -> Callable[[float], str]:
    digits = next((d for d in range(7) if abs(round(step, d) - step) < 1e-9 * max(1.0, step)), 6)
    return lambda v: f"{v:,.{digits}f}" if abs(v) >= 10000 else f"{v:.{digits}f}"


def percent(v: float) -> str:
    return f"{v:.0%}"


Legend = Sequence[tuple[str, str, str]]  # (label, colour, kind): kind is "box", "pale", "line" or "dash"


class Axes:
    """A plot area inside a panel box: the panel's title, legend, grid, ticks and axis labels.

    x and y are numeric (xlim, ylim) or categorical (xcats, ycats: category i sits at i + 0.5).
    An x category is a label, a (label, smaller second line) pair, or None for a gap.
    """

    def __init__(
        self,
        svg: Svg,
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
        yticks, ystep = ([], 1.0) if ycats is not None else ticks(*ylim)
        yfmt = yfmt or number_format(ystep)

        # left: y tick labels (or category names) and the y label
        if ycats is not None:
            ycats = [clip(c, 34) for c in ycats]
            left = 12 + max((text_width(c, SMALL) for c in ycats), default=0) + 8
        else:
            left = 10 + (20 if ylabel else 0) + max((text_width(yfmt(v), SMALL) for v in yticks), default=0) + 6
        self.x0, self.x1 = bx + left, bx + bw - 24
        pw = self.x1 - self.x0

        # bottom: x tick labels (turned when they do not fit their slot) and the x label
        rotate = False
        if xcats is not None:
            slot = pw / max(1, len(xcats))
            names = [(clip(c), "") if isinstance(c, str) else (clip(c[0]), c[1]) for c in xcats if c is not None]
            need = max((max(text_width(a, SMALL), text_width(b, SMALL - 1)) for a, b in names), default=0)
            rotate = need > slot - 6
            if rotate:
                turned = [text_width(f"{a} ({b})" if b else a, SMALL) for a, b in names]
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
        title_lines = wrap(title, TEXT, bw - 16) if title else []
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
            xticks, xstep = ticks(*self.xlim)
            xfmt = number_format(xstep)
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
                a, b = (clip(c), "") if isinstance(c, str) else (clip(c[0]), c[1])
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
            label = clip(label, 60)
            w = (22 if kind in ("line", "dash") else 13) + 5 + text_width(label, SMALL) + 16
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
