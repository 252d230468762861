"""The run report's figures as small self-contained SVG files, drawn with arbitrage/analysis/svg.py.

Every plot_* function returns the SVG text, or None when there is nothing to draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from arbitrage.analysis.scoretable import TIE, ScoreTable, groups, margins, routed_reward, shares, winners
from arbitrage.analysis.svg import (
    INK,
    MARK,
    MUTED,
    NEUTRAL,
    PALETTE,
    PANEL_H,
    PANEL_W,
    SMALL,
    TIE_COLOUR,
    Axes,
    Box,
    Draw,
    Svg,
    compose,
    nice,
    percent,
    text_width,
)

# ---- marks ----


def stacked(ax: Axes, at: float, width: float, parts: Sequence[tuple[float, str, str]], **style) -> None:
    """One bar of stacked segments (value, colour, tooltip) from 0 up, centred on x = at."""
    bottom = 0.0
    for value, colour, tip in parts:
        if value > 0:
            ax.box(
                at - width / 2, at + width / 2, bottom, bottom + value, colour, tip, stroke="#ffffff", stroke_width=0.75, **style
            )
            bottom += value


def grouped(ax: Axes, at: float, width: float, bars: Sequence[tuple[float, str, str]]) -> None:
    """Bars side by side (value, colour, tooltip) sharing `width` around x = at."""
    each = width / max(1, len(bars))
    for k, (value, colour, tip) in enumerate(bars):
        left = at - width / 2 + k * each
        if math.isfinite(value):
            ax.box(left + each * 0.04, left + each * 0.96, 0.0, value, colour, tip)


def histogram(ax: Axes, edges: np.ndarray, series: Sequence[tuple[np.ndarray, str, str]]) -> None:
    """Counts per bin for one or more series (counts, colour, name), side by side in each bin."""
    for b in range(len(edges) - 1):
        lo, hi = float(edges[b]), float(edges[b + 1])
        bars = [(float(c[b]), colour, f"{name}: {int(c[b])} in [{lo:.3g}, {hi:.3g})") for c, colour, name in series]
        grouped(ax, (lo + hi) / 2, (hi - lo) * 0.9, bars)


def boxplot(ax: Axes, at: float, values: np.ndarray, colour: str, name: str) -> None:
    """Quartile box, median and whiskers to the furthest point within 1.5 IQR (outliers not drawn)."""
    if not len(values):
        return
    lo, q1, med, q3, hi = whiskers(values)
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


def whiskers(values: np.ndarray) -> tuple[float, float, float, float, float]:
    """Low whisker, quartiles, median, high whisker: the extremes within 1.5 IQR of the box."""
    q1, med, q3 = (float(v) for v in np.percentile(values, [25, 50, 75]))
    iqr = q3 - q1
    return float(values[values >= q1 - 1.5 * iqr].min()), q1, med, q3, float(values[values <= q3 + 1.5 * iqr].max())


def line(ax: Axes, ys: np.ndarray, colour: str, width: float, dash: str | None, tip: str) -> None:
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
        for k, (caption, groups_of) in enumerate(sections):
            if k:
                cats.append(None)  # a gap between the sections
            start = len(cats)
            for g, group in groups_of.items():
                bars.append((len(cats), g, group))
                cats.append((g, f"n={len(group)}"))
            captions.append((caption, start, len(cats)))

        def draw(svg: Svg, box: Box) -> None:
            entries = [(k, colours[k], "box") for k in keys] if legend else []
            ax = Axes(svg, box, title="", legend=entries, xcats=cats, ylabel=what, yfmt=percent, captions=captions)
            for _, start, _ in captions[1:]:  # a dotted line in each gap
                svg.line(ax.px(start - 0.5), ax.y0, ax.px(start - 0.5), ax.y1, "#bbbbbb", 1.0, "3 3")
            for i, g, group in bars:
                share = shares(group, keys)
                parts = [(share[k], colours[k], f"{g}: {k} {share[k]:.0%} of {len(group)} prompts") for k in keys]
                stacked(ax, i + 0.5, 0.72, parts)

        slot = 56 if 110 + 56 * len(cats) <= 1000 else 42  # narrower slots turn the labels
        return max(PANEL_W, 110 + slot * len(cats)), PANEL_H, draw

    one = panel(sections, legend=True)
    rows = [[one]] if one[0] <= 1000 else [[panel(sections[:2], legend=True)], [panel(sections[2:], legend=False)]]
    return compose(f"{table.run_dir.name}: {title} (n: prompts per bar)", rows)


def plot_turns(table: ScoreTable) -> str | None:
    """Conversations: which teacher's answer was kept at each turn (shares of the turns kept there)."""
    kept = [t for t in table.turns if t.kept]
    if not kept:
        return None
    colours = _colours(table)
    cats = [(f"turn {t.turn}", f"n={t.kept}") for t in kept]

    def draw(svg: Svg, box: Box) -> None:
        legend = [(name, colours[name], "box") for name in table.teachers]
        ax = Axes(svg, box, title="", legend=legend, xcats=cats, ylabel="win share of the turns kept", yfmt=percent)
        for i, t in enumerate(kept):
            parts = [
                (t.share(name), colours[name], f"turn {t.turn}: {name} {t.share(name):.0%} of {t.kept} turns kept")
                for name in table.teachers
            ]
            stacked(ax, i + 0.5, 0.6, parts)

    width = max(PANEL_W, 110 + 70 * len(cats))
    return compose(
        f"{table.run_dir.name}: whose answer each conversation kept, per turn (n: turns kept)", [[(width, PANEL_H, draw)]]
    )


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

    def draw(svg: Svg, box: Box) -> None:
        ax = Axes(
            svg,
            box,
            title="",
            legend=legend,
            xlim=(lo, hi),
            ylim=nice(0, top),
            xlabel="reward (a failed or filtered answer counts 0)",
            ylabel="answers",
        )
        histogram(ax, edges, series)

    return compose(f"{table.run_dir.name}: reward distribution per teacher", [[(PANEL_W, PANEL_H, draw)]])


def plot_margins(table: ScoreTable, min_margin) -> str | None:
    gaps = margins(table)
    if not len(gaps):
        return None
    top = max(1.0, float(gaps.max()))
    edges = np.linspace(0, top + 1e-9, 21)
    counts = np.histogram(gaps, bins=edges)[0]
    ties = int(np.sum(gaps < 1e-9))
    legend = [(f"output.min_margin = {min_margin}", MARK, "dash")] if min_margin is not None else []

    def draw(svg: Svg, box: Box) -> None:
        ax = Axes(
            svg, box, title="", legend=legend, xlim=(0.0, top), ylim=nice(0, counts.max()), xlabel="margin", ylabel="prompts"
        )
        histogram(ax, edges, [(counts, NEUTRAL, "prompts")])
        if min_margin is not None:
            ax.vline(float(min_margin))

    title = f"{table.run_dir.name}: best − worst reward per prompt ({len(gaps)} prompts, {ties} ties)"
    return compose(title, [[(PANEL_W, PANEL_H, draw)]])


def plot_cost(table: ScoreTable) -> str:
    colours = _colours(table)

    def panel(data: np.ndarray, title: str) -> Draw:
        columns = [_column(data, j) for j in range(len(table.teachers))]
        known = np.array([v for c in columns if len(c) for v in (whiskers(c)[0], whiskers(c)[-1])])  # outliers not drawn

        def draw(svg: Svg, box: Box) -> None:
            ylim = nice(min(0.0, float(known.min())), float(known.max()) * 1.05) if len(known) else (0.0, 1.0)
            ax = Axes(svg, box, title=title, xcats=table.teachers, ylim=ylim)
            if not len(known):
                ax.note("no calls")
            for i, (t, values) in enumerate(zip(table.teachers, columns, strict=True)):
                boxplot(ax, i + 0.5, values, colours[t], t)

        return draw

    width = max(PANEL_W // 2, 120 + 90 * len(table.teachers))
    latency = (width, PANEL_H, panel(table.latency_s, "latency per call (s)"))
    tokens = (width, PANEL_H, panel(table.tokens_out, "tokens out per call"))
    rows = [[latency, tokens]] if 2 * width <= 1000 else [[latency], [tokens]]  # side by side, or one above the other
    title = "cost per teacher: quartiles, median, whiskers to 1.5 IQR (local engines batch calls: latency is the batch's)"
    return compose(f"{table.run_dir.name}: {title}", rows)


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
    return compose(f"{table.run_dir.name}: router choices vs oracle", rows)


def _paired_bars(table: ScoreTable, routed: list[str], oracle: list[str] | None, colours) -> tuple[float, float, Draw]:
    languages = sorted({p.language for p in table.prompts})
    keys = [*table.teachers, TIE]
    pairs = [("router", routed, 0.0, None)] if oracle is None else [("router", routed, -0.2, None), ("oracle", oracle, 0.2, 0.45)]
    used = {lab for _, labels, _, _ in pairs for lab in labels}
    width = max(PANEL_W, 110 + (110 if oracle else 56) * len(languages))

    def draw(svg: Svg, box: Box) -> None:
        title = "teacher chosen per language" + (" (left: router, right: oracle, paler)" if oracle else "")
        legend = [(k, colours[k], "box") for k in keys if k in used]
        bar = 0.36 if oracle else 0.7
        named = oracle is not None and (box[2] - 130) / len(languages) * bar >= text_width("oracle", SMALL - 1) + 2
        ax = Axes(
            svg, box, title=title, legend=legend, xcats=languages, ylabel="share of prompts", yfmt=percent, headroom=14 * named
        )
        for i, g in enumerate(languages):
            for who, labels, offset, opacity in pairs:
                group = [lab for p, lab in zip(table.prompts, labels, strict=True) if p.language == g]
                share = shares(group, keys)
                parts = [(share[k], colours[k], f"{g}, {who}: {k} {share[k]:.0%} of {len(group)}") for k in keys]
                stacked(ax, i + 0.5 + offset, bar, parts, fill_opacity=opacity)
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

    def draw(svg: Svg, box: Box) -> None:
        legend = [(name, colour, "dash" if dash else "line") for name, _, colour, _, dash in lines]
        ax = Axes(
            svg,
            box,
            title="regret against the `all` run on the same prompts",
            legend=legend,
            xlim=(0.0, float(max(1, len(oracle) - 1))),
            ylim=nice(0, top),
            xlabel="prompt (run order)",
            ylabel="cumulative regret vs all",
        )
        for name, ys, colour, width, dash in lines:  # the dashed lines over this run's, which may follow one
            line(ax, ys, colour, width, dash, f"{name}: {float(ys[-1]):.3g} after {len(ys)} prompts" if len(ys) else name)

    return PANEL_W, PANEL_H, draw


def _plot_evaluation(evaluation: dict) -> tuple[float, float, Draw]:
    results = evaluation["results"]
    names = [r["router"] for r in results]
    means = [float(r["mean_reward"]) for r in results]
    lo, hi = min(0.0, *means), max(0.0, *means)
    xlim = nice(lo, hi + (hi - lo) * 0.45 if hi > lo else 1.0)  # room for the labels after the bars
    height = max(PANEL_H, 110 + 24 * len(names))

    def draw(svg: Svg, box: Box) -> None:
        ax = Axes(
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

    def draw(svg: Svg, box: Box) -> None:
        ax = Axes(
            svg,
            box,
            title="mean reward per language",
            legend=[(name, series[name], "box") for name in shown],
            xcats=languages,
            ylim=nice(min(0.0, *flat), max(0.0, *flat)) if flat else (0.0, 1.0),
            ylabel="mean reward of the chosen answer",
        )
        for i, g in enumerate(languages):
            bars = [(values[name][i], series[name], f"{g}: {name} {values[name][i]:.3f}") for name in shown]
            grouped(ax, i + 0.5, 0.8, bars)

    return width, PANEL_H, draw
