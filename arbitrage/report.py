"""The run report: `report.md` and PNG figures, built from a finished run folder alone.

Every run writes it at the end; `arbitrage report RUN_DIR` rebuilds it (after `eval-router`, or
with `--reference ALL_RUN` to measure a one-call router's regret against an `all` run of the same
prompts). It shows what arbitrage rests on (arXiv 2408.14960): which teacher wins, overall and per
language and task, and how much the best answer per prompt gains over the best single teacher.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from arbitrage import scoretable
from arbitrage.dataset import markdown_table, quality_section
from arbitrage.errors import ConfigError
from arbitrage.scoretable import ScoreTable

TIE = "tie"
TIE_COLOUR = "#b0b0b0"


def write(run_dir: Path | str, reference: Path | str | None = None) -> Path:
    """Write RUN_DIR/report.md and its figures; returns the report's path."""
    run_dir = Path(run_dir)
    path = run_dir / "report.md"
    if not scoretable.read_config(run_dir, "candidates"):  # e.g. the prompt filters dropped every prompt
        path.write_text(f"# Run report: {run_dir.name}\n\nNo teacher answered any prompt: nothing to report.\n")
        return path
    table = scoretable.load(run_dir)
    ref = _reference(table, Path(reference)) if reference else None
    evaluation = _read_json(run_dir / "router_eval.json")
    summary = _read_json(run_dir / "summary.json") or {}
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
    min_margin = ((config or {}).get("output") or {}).get("min_margin")

    labels = winners(table)
    figures = {
        "win_rate.png": _plot_wins(table, labels),
        "rewards.png": _plot_rewards(table),
        "margins.png": _plot_margins(table, min_margin),
        "cost.png": _plot_cost(table),
    }
    if not table.complete or evaluation or ref is not None:
        figures["routing.png"] = _plot_routing(table, ref, evaluation)
    for name, fig in figures.items():
        if fig is not None:
            fig.savefig(run_dir / name, dpi=110, bbox_inches="tight")
    text = _markdown(run_dir, table, labels, summary, ref, evaluation, min_margin, {n for n, f in figures.items() if f})
    path.write_text(text, encoding="utf-8")
    return path


def _reference(table: ScoreTable, reference: Path) -> tuple[ScoreTable, ScoreTable]:
    """This run and the `all` run, cut to the prompts they share, row for row."""
    ref = scoretable.load(reference)
    if not ref.complete:
        raise ConfigError(f"--reference {reference} is not an `all` run — give a run made with router=all")
    ref = ref.subset([p.prompt_id for p in table.prompts])
    if not ref.prompts:
        raise ConfigError(
            f"{table.run_dir} and {reference} share no prompt — use the same personas, seed and n_prompts ≤ the reference's"
        )
    return table.subset([p.prompt_id for p in ref.prompts]), ref


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def winners(table: ScoreTable) -> list[str]:
    """Per prompt: the teacher with the strictly best reward, `tie` when several share it, or the
    only teacher called (a one-call router's choice)."""
    out = []
    for row in table.reward:
        called = ~np.isnan(row)
        best = np.flatnonzero(called & (row >= np.nanmax(row) - 1e-9))
        out.append(table.teachers[best[0]] if len(best) == 1 else TIE)
    return out


def _shares(labels: list[str], keys: list[str]) -> dict[str, float]:
    n = max(1, len(labels))
    return {k: labels.count(k) / n for k in keys}


def _groups(table: ScoreTable, labels: list[str], attr: str) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for p, label in zip(table.prompts, labels, strict=True):
        groups.setdefault(getattr(p, attr), []).append(label)
    return dict(sorted(groups.items()))


def _margins(table: ScoreTable) -> np.ndarray:
    """Best − worst reward per prompt with two or more answers: what a `worst` DPO pair would get."""
    several = (~np.isnan(table.reward)).sum(axis=1) >= 2
    rows = table.reward[several]
    return np.nanmax(rows, axis=1) - np.nanmin(rows, axis=1) if len(rows) else np.zeros(0)


# ---- figures (matplotlib's object API: no pyplot, no global backend state) ----


def _figure(width: float, height: float, ncols: int = 1, **kw):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")  # "outside" legends need it
    axes = fig.subplots(1, ncols, squeeze=False, **kw)[0]
    return fig, axes


def _colours(table: ScoreTable) -> dict[str, str]:
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    return {t: palette[i % 10] for i, t in enumerate(table.teachers)} | {TIE: TIE_COLOUR}


def _stacked(ax, groups: dict[str, list[str]], keys: list[str], colours: dict, title: str) -> None:
    names = list(groups)
    bottom = np.zeros(len(names))
    for key in keys:
        values = np.array([_shares(groups[g], [key])[key] for g in names])
        ax.bar(range(len(names)), values, bottom=bottom, color=colours[key], label=key, edgecolor="white", linewidth=0.5)
        bottom += values
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0, 1)
    ax.set_xticks(range(len(names)), [f"{g}\n{len(groups[g])}" for g in names], fontsize=8)


def _plot_wins(table: ScoreTable, labels: list[str]):
    keys = [*table.teachers, TIE] if table.complete else table.teachers
    colours = _colours(table)
    languages, tasks = _groups(table, labels, "language"), _groups(table, labels, "task")
    fig, (overall, by_lang, by_task) = _figure(13, 3.8, 3, width_ratios=[1.2, max(2, len(languages)), max(2, len(tasks))])
    what = "win share" if table.complete else "share of prompts routed"
    _stacked(overall, {"all": labels}, keys, colours, "overall")
    overall.set_ylabel(what)
    _stacked(by_lang, languages, keys, colours, "per language")
    _stacked(by_task, tasks, keys, colours, "per task")
    handles, names = overall.get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right center", fontsize=9)
    title = "which teacher gave the best answer" if table.complete else "which teacher the router called"
    fig.suptitle(f"{table.run_dir.name}: {title} (bars labelled with their prompt counts)", fontsize=11)
    return fig


def _plot_rewards(table: ScoreTable):
    values = [table.reward[:, j][~np.isnan(table.reward[:, j])] for j in range(len(table.teachers))]
    flat = np.concatenate(values) if values else np.zeros(0)
    if not len(flat):
        return None
    lo, hi = (0.0, 1.0) if flat.min() >= 0 and flat.max() <= 1 else (float(flat.min()), float(flat.max()))
    fig, (ax,) = _figure(7, 3.8)
    colours = _colours(table)
    ax.hist(
        values,
        bins=np.linspace(lo, hi + 1e-9, 11),
        color=[colours[t] for t in table.teachers],
        label=[f"{t} (mean {v.mean():.3f}, n={len(v)})" if len(v) else t for t, v in zip(table.teachers, values, strict=True)],
    )
    ax.set_xlabel("reward (a failed or filtered answer counts 0)")
    ax.set_ylabel("answers")
    ax.set_title("reward distribution per teacher", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def _plot_margins(table: ScoreTable, min_margin):
    margins = _margins(table)
    if not len(margins):
        return None
    fig, (ax,) = _figure(7, 3.5)
    top = max(1.0, float(margins.max()))
    ax.hist(margins, bins=np.linspace(0, top + 1e-9, 21), color="#4c72b0")
    if min_margin is not None:
        ax.axvline(float(min_margin), color="#c44e52", linestyle="--", label=f"output.min_margin = {min_margin}")
        ax.legend(fontsize=8)
    ties = int(np.sum(margins < 1e-9))
    ax.set_title(f"best − worst reward per prompt ({len(margins)} prompts, {ties} ties)", fontsize=10)
    ax.set_xlabel("margin")
    ax.set_ylabel("prompts")
    return fig


def _plot_cost(table: ScoreTable):
    fig, (lat, tok) = _figure(10, 3.6, 2)
    for ax, data, label in ((lat, table.latency_s, "latency per call (s)"), (tok, table.tokens_out, "tokens out per call")):
        columns = [data[:, j][~np.isnan(data[:, j])] for j in range(len(table.teachers))]
        ax.boxplot(columns, tick_labels=table.teachers, showfliers=False)
        ax.set_title(label, fontsize=10)
    fig.suptitle("cost per teacher (local engines batch calls: latency is the batch's time)", fontsize=10)
    return fig


def _plot_routing(table: ScoreTable, ref: tuple[ScoreTable, ScoreTable] | None, evaluation: dict | None):
    panels = (1 if not table.complete else 0) + (1 if ref is not None else 0) + (2 if evaluation else 0)
    fig, axes = _figure(6.5 * panels, 4.2, panels)
    axes = list(axes)
    colours = _colours(table)
    if not table.complete:  # a one-call router: what it chose per language, beside the oracle when known
        mine, oracle = (ref[0], winners(ref[1])) if ref is not None else (table, None)
        _paired_bars(axes.pop(0), mine, winners(mine), oracle, colours)
    if ref is not None:
        _plot_regret(axes.pop(0), *ref, colours)
    if evaluation:
        _plot_evaluation(axes.pop(0), evaluation)
        _plot_evaluation_by_language(axes.pop(0), table, evaluation)
    fig.suptitle(f"{table.run_dir.name}: router choices vs oracle", fontsize=11)
    return fig


def _paired_bars(ax, table, routed, oracle, colours) -> None:
    languages = sorted({p.language for p in table.prompts})
    keys = [*table.teachers, TIE]
    width = 0.38 if oracle else 0.7
    for offset, labels, hatch, who in ((-0.2 if oracle else 0.0, routed, "", "router"), (0.2, oracle, "//", "oracle")):
        if labels is None:
            continue
        bottom = np.zeros(len(languages))
        for key in keys:
            values = np.array(
                [
                    _shares([lab for p, lab in zip(table.prompts, labels, strict=True) if p.language == g], [key])[key]
                    for g in languages
                ]
            )
            ax.bar(
                np.arange(len(languages)) + offset,
                values,
                width,
                bottom=bottom,
                color=colours[key],
                hatch=hatch,
                edgecolor="white",
                label=f"{key} ({who})" if values.any() else None,
            )
            bottom += values
    ax.set_xticks(np.arange(len(languages)), languages)
    ax.set_ylim(0, 1)
    ax.set_title("teacher chosen per language" + (" (left: router, right: oracle)" if oracle else ""), fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3)


def _plot_regret(ax, table: ScoreTable, ref: ScoreTable, colours) -> None:
    """Cumulative regret against the reference run's best answer, for this router and each fixed teacher."""
    col = {t: j for j, t in enumerate(ref.teachers)}
    oracle = ref.oracle()
    chosen = _routed_reward(table, ref)
    ax.plot(np.cumsum(oracle - chosen), color="black", linewidth=2, label="this run's choices")
    for t in ref.teachers:
        ax.plot(np.cumsum(oracle - ref.reward[:, col[t]]), color=colours.get(t, "#999"), linestyle="--", label=f"fixed: {t}")
    ax.set_xlabel("prompt (run order)")
    ax.set_ylabel("cumulative regret vs all")
    ax.set_title("regret against the `all` run on the same prompts", fontsize=10)
    ax.legend(fontsize=8)


def _routed_reward(table: ScoreTable, ref: ScoreTable) -> np.ndarray:
    """The reference run's reward for the teacher this run called (same call id: same answer)."""
    col = {t: j for j, t in enumerate(ref.teachers)}
    out = []
    for i, row in enumerate(table.reward):
        called = [table.teachers[j] for j in np.flatnonzero(~np.isnan(row))]
        out.append(max(ref.reward[i, col[t]] for t in called))
    return np.array(out)


def _plot_evaluation(ax, evaluation: dict) -> None:
    results = evaluation["results"]
    names = [r["router"] for r in results]
    means = [r["mean_reward"] for r in results]
    bars = ax.barh(names[::-1], means[::-1], color="#4c72b0")
    for bar, r in zip(bars, results[::-1], strict=True):
        ax.text(
            bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {r['calls_per_prompt']:.1f} calls", va="center", fontsize=7
        )
    ax.axvline(max(means), color="#c44e52", linestyle="--", linewidth=1)
    ax.set_xlim(0, max(means) * 1.3)  # room for the call counts
    ax.set_xlabel("mean reward of the chosen answer")
    ax.set_title("routers replayed on this run (eval-router)", fontsize=10)
    ax.tick_params(axis="y", labelsize=7)


def _plot_evaluation_by_language(ax, table: ScoreTable, evaluation: dict) -> None:
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
    width = 0.8 / max(1, len(shown))
    for k, name in enumerate(shown):
        got: dict[str, list[float]] = {g: [] for g in languages}
        for pid, choice in zip(evaluation["prompts"], results[name]["choices"], strict=True):
            i = row.get(pid)
            if i is not None:
                reward = table.reward[i].max() if choice == "all" else table.reward[i, col[choice]]
                got[table.prompts[i].language].append(reward)
        values = [np.mean(got[g]) if got[g] else 0.0 for g in languages]
        ax.bar(np.arange(len(languages)) + (k - (len(shown) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(np.arange(len(languages)), languages)
    ax.set_ylabel("mean reward of the chosen answer")
    ax.set_title("per language", fontsize=10)
    ax.legend(fontsize=7)


# ---- report.md ----


def _share_table(table: ScoreTable, labels: list[str], attr: str, keys: list[str]) -> str:
    rows = [
        [g, len(group), *(f"{_shares(group, keys)[k]:.0%}" for k in keys)] for g, group in _groups(table, labels, attr).items()
    ]
    return markdown_table([attr, "prompts", *keys], rows)


def _markdown(run_dir, table, labels, summary, ref, evaluation, min_margin, figures) -> str:
    keys = [*table.teachers, TIE] if table.complete else table.teachers
    means = np.nanmean(table.reward, axis=0)
    lines = [
        f"# Run report: {run_dir.name}",
        "",
        f"{len(table.prompts)} prompts · teachers {', '.join(table.teachers)} · router `{summary.get('router', '?')}` · "
        f"reward `{summary.get('reward', '?')}`. Rebuild with `arbitrage report {run_dir}`.",
        "",
    ]
    if table.complete:
        oracle, best = float(table.oracle().mean()), int(np.argmax(means))
        gain = oracle - means[best]
        lines += [
            "## Arbitrage gain",
            "Every teacher answered every prompt, so picking the best answer per prompt (what `router=all` keeps) "
            "can be set against always calling one teacher.",
            "",
            markdown_table(
                ["", "mean reward"],
                [
                    ["best answer per prompt (arbitrage)", f"{oracle:.3f}"],
                    *([f"always {t}", f"{means[j]:.3f}"] for j, t in enumerate(table.teachers)),
                    [
                        f"gain over the best single teacher ({table.teachers[best]})",
                        f"{gain:+.3f} ({gain / means[best]:+.0%})" if means[best] else f"{gain:+.3f}",
                    ],
                ],
            ),
            "",
        ]
    teacher_rows = []
    for j, t in enumerate(table.teachers):
        called = ~np.isnan(table.reward[:, j])
        teacher_rows.append(
            [
                t,
                int(called.sum()),
                int(table.failed[:, j].sum()),
                int(table.filtered[:, j].sum()),
                f"{means[j]:.3f}",
                labels.count(t),
                f"{labels.count(t) / max(1, len(labels)):.0%}",
                f"{np.nanmean(table.latency_s[:, j]):.2f}",
                f"{np.nanmean(table.tokens_out[:, j]):.0f}",
            ]
        )
    what = "outright wins" if table.complete else "prompts routed"
    lines += [
        "## Teachers",
        markdown_table(
            ["teacher", "calls", "failed", "filtered", "mean reward", what, "share", "mean latency (s)", "mean tokens out"],
            teacher_rows,
        ),
        "",
        f"Ties (several teachers share the best reward): {labels.count(TIE)} of {len(labels)} prompts; "
        "the dataset breaks them with a draw seeded by the prompt id."
        if table.complete
        else "",
        "",
        "![win share per teacher, language and task](win_rate.png)" if "win_rate.png" in figures else "",
        "",
        "## Per language",
        _share_table(table, labels, "language", keys),
        "",
        "## Per task",
        _share_table(table, labels, "task", keys),
        "",
        "## Rewards and margins",
        "![reward distribution per teacher](rewards.png)" if "rewards.png" in figures else "",
        "",
    ]
    margins = _margins(table)
    if len(margins):
        kept = int(np.sum(margins >= (min_margin or 0.0) - 1e-12)) if min_margin is not None else len(margins)
        lines += [
            f"Best − worst margin over {len(margins)} prompts with two or more answers: mean {margins.mean():.3f}, "
            f"{int(np.sum(margins < 1e-9))} ties; {kept} reach output.min_margin = {min_margin} (DPO pairs need it).",
            "",
            "![margin histogram](margins.png)" if "margins.png" in figures else "",
            "",
        ]
    lines += [
        "## Latency and tokens",
        "Local teachers answer in batches, so a call's latency is its batch's wall time. "
        "Timings of the whole run: " + ", ".join(f"{k.removesuffix('_s')} {v}s" for k, v in summary.get("timings_s", {}).items()),
        "",
        "![latency and tokens per teacher](cost.png)",
        "",
    ]
    if summary.get("quality"):
        lines += [quality_section(summary["quality"]), ""]
    lines += _routing_section(run_dir, table, ref, evaluation, figures)
    squeezed = [line for i, line in enumerate(lines) if line or (i and lines[i - 1])]  # no runs of blank lines
    return "\n".join(squeezed) + "\n"


def _routing_section(run_dir, table, ref, evaluation, figures) -> list[str]:
    lines = ["## Routing"]
    if ref is not None:
        mine, ref = ref
        chosen = _routed_reward(mine, ref)
        oracle = ref.oracle()
        means = ref.reward.mean(axis=0)
        best = int(np.argmax(means))
        lines += [
            f"Against the `all` run `{ref.run_dir}` on the {len(ref.prompts)} shared prompts (its reward for the teacher "
            "this run called; the same call id gives the same answer):",
            "",
            markdown_table(
                ["", "mean reward"],
                [
                    ["this run's choices", f"{chosen.mean():.3f}"],
                    ["oracle (best answer per prompt)", f"{oracle.mean():.3f}"],
                    [f"best single teacher ({ref.teachers[best]})", f"{means[best]:.3f}"],
                    ["regret per prompt vs all", f"{(oracle - chosen).mean():.3f}"],
                    ["win rate vs oracle", f"{np.mean(chosen >= oracle - 1e-9):.0%}"],
                ],
            ),
            "",
        ]
    if evaluation:
        text = (run_dir / "router_eval.md").read_text() if (run_dir / "router_eval.md").exists() else ""
        lines += ["`arbitrage eval-router` replayed these routers on this run:", "", text.strip(), ""]
    elif table.complete:
        lines += [f"Run `arbitrage eval-router {run_dir}` to replay the routers on this run and add them here.", ""]
    if "routing.png" in figures:
        lines += ["![router choices vs oracle](routing.png)", ""]
    return lines if len(lines) > 1 else []
