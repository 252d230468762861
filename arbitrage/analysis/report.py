"""The run report: `report.md` and SVG figures, built from a finished run folder alone.

Every run writes it at the end; `arbitrage report RUN_DIR` rebuilds it (after `eval-router`, or
with `--reference ALL_RUN` to measure a one-call router's regret against an `all` run of the same
prompts). It shows what arbitrage rests on (arXiv 2408.14960): which teacher wins, overall and per
language and task, and how much the best answer per prompt gains over the best single teacher.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from arbitrage.analysis import figures as plots
from arbitrage.analysis import scoretable
from arbitrage.analysis.scoretable import TIE, ScoreTable, groups, margins, routed_reward, shares, winners
from arbitrage.errors import ConfigError
from arbitrage.markdown import markdown_table
from arbitrage.output.card import quality_section
from arbitrage.runpaths import RunPaths
from arbitrage.stats import RunSummary


def write(run_dir: Path | str, reference: Path | str | None = None) -> Path:
    """Write RUN_DIR/report.md and its figures; returns the report's path."""
    run_dir = Path(run_dir)
    paths = RunPaths(run_dir)
    path = paths.report
    if not scoretable.read_config(run_dir, "candidates"):  # e.g. the prompt filters dropped every prompt
        path.write_text(f"# Run report: {run_dir.name}\n\nNo teacher answered any prompt: nothing to report.\n")
        return path
    table = scoretable.load(run_dir)
    ref = _reference(table, Path(reference)) if reference else None
    evaluation = _read_json(paths.router_eval_data)
    summary = RunSummary.load(paths.summary) or RunSummary(out_dir=str(run_dir))
    min_margin = (paths.facts().get("selection") or {}).get("min_margin")

    labels = winners(table)
    figures = {
        "win_rate.svg": plots.plot_wins(table, labels),
        "rewards.svg": plots.plot_rewards(table),
        "margins.svg": plots.plot_margins(table, min_margin),
        "cost.svg": plots.plot_cost(table),
        "turns.svg": plots.plot_turns(table),
    }
    if not table.complete or evaluation or ref is not None:
        figures["routing.svg"] = plots.plot_routing(table, ref, evaluation)
    for name, svg in figures.items():
        if svg is not None:
            (run_dir / name).write_text(svg, encoding="utf-8")
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


def _share_table(table: ScoreTable, labels: list[str], attr: str, keys: list[str]) -> str:
    rows = [[g, len(group), *(f"{shares(group, keys)[k]:.0%}" for k in keys)] for g, group in groups(table, labels, attr).items()]
    return markdown_table([attr, "prompts", *keys], rows)


def _markdown(run_dir, table, labels, summary, ref, evaluation, min_margin, figures) -> str:
    keys = [*table.teachers, TIE] if table.complete else table.teachers
    means = np.nanmean(table.reward, axis=0)
    lines = [
        f"# Run report: {run_dir.name}",
        "",
        f"{_prompts_line(table)} · teachers {', '.join(table.teachers)} · router `{summary.router or '?'}` · "
        f"reward `{summary.reward or '?'}`. Rebuild with `arbitrage report {run_dir}`.",
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
    if table.complete and table.samples > 1:
        lines += _samples_section(table)
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
        "![win share per teacher, language and task](win_rate.svg)" if "win_rate.svg" in figures else "",
        "",
        *_turns_section(table, figures),
        "## Per language",
        _share_table(table, labels, "language", keys),
        "",
        "## Per task",
        _share_table(table, labels, "task", keys),
        "",
        "## Rewards and margins",
        "![reward distribution per teacher](rewards.svg)" if "rewards.svg" in figures else "",
        "",
    ]
    gaps = margins(table)
    if len(gaps):
        kept = int(np.sum(gaps >= (min_margin or 0.0) - 1e-12)) if min_margin is not None else len(gaps)
        lines += [
            f"Best − worst margin over {len(gaps)} prompts with two or more answers: mean {gaps.mean():.3f}, "
            f"{int(np.sum(gaps < 1e-9))} ties; {kept} reach output.min_margin = {min_margin} (DPO pairs need it).",
            "",
            "![margin histogram](margins.svg)" if "margins.svg" in figures else "",
            "",
        ]
    lines += [
        "## Latency and tokens",
        "Local teachers answer in batches, so a call's latency is its batch's wall time. "
        "Timings of the whole run: " + ", ".join(f"{k.removesuffix('_s')} {v}s" for k, v in summary.timings_s.items()),
        "",
        "![latency and tokens per teacher](cost.svg)",
        "",
    ]
    if summary.quality:
        lines += [quality_section(summary.quality), ""]
    lines += _routing_section(run_dir, table, ref, evaluation, figures)
    squeezed = [line for i, line in enumerate(lines) if line or (i and lines[i - 1])]  # no runs of blank lines
    return "\n".join(squeezed) + "\n"


def _prompts_line(table: ScoreTable) -> str:
    if not table.turns:
        return f"{len(table.prompts)} prompts"
    return f"{len(table.prompts)} prompts (the turns of {table.turns[0].reached} conversations, each turn a row)"


def _turns_section(table: ScoreTable, figures) -> list[str]:
    """Conversations: per turn, whose answer the dataset kept (of the turns kept there), what each
    teacher's answers were worth, and how far the conversations got."""
    if not table.turns:
        return []
    header = ["turn", "conversations reached", "turns kept"]
    for t in table.teachers:
        header += [f"{t} win share", f"{t} mean reward"]
    rows = []
    for turn in table.turns:
        cells: list[object] = [turn.turn, turn.reached, turn.kept]
        for t in table.teachers:
            share = f"{turn.share(t):.0%} ({turn.wins[t]})" if turn.kept else "—"
            mean = turn.mean_reward[t]
            cells += [share, "—" if np.isnan(mean) else f"{mean:.3f}"]
        rows.append(cells)
    lengths = [[f"{n} turn{'s' if int(n) > 1 else ''}", k] for n, k in table.turns_kept.items()]
    unlisted = (
        f"{table.unlisted} of these turns came after the last turn their conversation kept (no answer good enough); "
        "no row holds their user message, so they count here but in no other table of this report."
        if table.unlisted
        else ""
    )
    return [
        "## Per turn",
        "Each turn of a conversation was routed, scored and chosen like a prompt. A turn is kept when its "
        "conversation's sft row holds it (its chosen answer is a training target); a teacher's win share is the "
        "share of the turns kept whose chosen answer is its (`turn_teachers` in the sft rows), its mean reward that "
        "of all its answers at the turn (a failed or filtered answer counts 0).",
        "",
        markdown_table(header, rows),
        "",
        unlisted,
        "",
        "![win share per turn](turns.svg)" if "turns.svg" in figures else "",
        "",
        "Conversation lengths kept (assistant turns per sft row):",
        "",
        markdown_table(["length", "conversations"], lengths) if lengths else "none kept",
        "",
    ]


def _samples_section(table: ScoreTable) -> list[str]:
    """More samples against more teachers: one answer per teacher, best of n, across teachers."""
    n, rows = table.samples, []

    def row(label: str, values: np.ndarray) -> list[str]:
        return [label, f"{np.mean(values):.3f}", f"{np.mean(values >= 1.0 - 1e-9):.2f}"]

    for j, t in enumerate(table.teachers):
        rows += [row(f"{t}, 1 sample", table.first[:, j]), row(f"{t}, best of {n}", table.reward[:, j])]
    rows += [
        row("all teachers, 1 sample each", np.max(table.first, axis=1)),
        row(f"all teachers, best of {n} each", table.oracle()),
    ]
    return [
        "## More samples against more teachers",
        f"Each teacher gave {n} samples per prompt; what the dataset would keep from one sample, from the best of {n}, "
        "and from every teacher.",
        "",
        markdown_table(["", "mean reward", "all checks passed"], rows),
        "",
    ]


def _routing_section(run_dir, table, ref, evaluation, figures) -> list[str]:
    lines = ["## Routing"]
    if ref is not None:
        mine, ref = ref
        chosen = routed_reward(mine, ref)
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
        eval_md = RunPaths(run_dir).router_eval
        text = eval_md.read_text() if eval_md.exists() else ""
        lines += ["`arbitrage eval-router` replayed these routers on this run:", "", text.strip(), ""]
    elif table.complete:
        lines += [f"Run `arbitrage eval-router {run_dir}` to replay the routers on this run and add them here.", ""]
    if "routing.svg" in figures:
        lines += ["![router choices vs oracle](routing.svg)", ""]
    return lines if len(lines) > 1 else []
