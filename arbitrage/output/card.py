"""The dataset card (README.md): `configs:` front matter that `load_dataset(out, "sft"|"dpo")`
reads, then what a user needs to trust the data. Everything in it comes from the `RunSummary`."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from arbitrage.markdown import markdown_table, usd
from arbitrage.output.dataset import SCHEMAS
from arbitrage.stats import RunSummary


def front_matter(paths: dict[str, str], languages: list[str]) -> dict:
    return {
        "configs": [
            {
                "config_name": name,
                **({"default": True} if name == next(iter(paths)) else {}),
                "data_files": [{"split": "train", "path": paths[name]}],
            }
            for name in paths
        ],
        "language": languages,
        "tags": ["synthetic", "arbitrage", "sft", "dpo", "persona"],
    }


def _schemas(out_dir, paths: dict[str, str]) -> str:
    """As written (output.reasoning decides whether messages carry `reasoning_content`)."""

    def schema(name: str):
        path = Path(out_dir) / paths[name]
        return pq.read_schema(path) if path.exists() else SCHEMAS[name]

    return "\n".join(f"- `{name}`: " + ", ".join(f"`{f.name}` {f.type}" for f in schema(name)) for name in paths)


def quality_section(quality: dict | None) -> str:
    if not quality:
        return ""
    dropped = ", ".join(f"{name} {n}" for name, n in quality["dropped"].items()) or "no filters"
    keys = ["n", "distinct_1", "distinct_2", "embedding_spread"]
    body = [
        [label, *(quality[key].get(k, "—") for k in keys)]
        for label, key in [
            ("prompts, synthesised", "prompts_before"),
            ("prompts, kept", "prompts_after"),
            ("answers, best before filters", "answers_before"),
            ("answers, kept", "answers_after"),
        ]
    ]
    coverage = [
        [facet, quality["prompts_before"]["coverage"][facet], quality["prompts_after"]["coverage"][facet]]
        for facet in quality["prompts_before"]["coverage"]
    ]
    return (
        "## Quality stage\n"
        f"Dropped (count per filter; reasons in `rejected_rows` and the candidates' `filtered` column): {dropped}.\n\n"
        + markdown_table(["", *keys], body)
        + "\n\n"
        + markdown_table(["distinct", "synthesised", "kept"], coverage)
        + "\n"
    )


def _check_rates(checks: dict) -> str:
    """Pass rate of each verifiable check per teacher, when the reward recorded checks."""
    if not checks:
        return ""
    teachers = sorted({t for by_teacher in checks.values() for t in by_teacher})
    body = [
        [check, *(f"{v[0] / v[1]:.0%} of {v[1]}" if (v := checks[check].get(t)) else "—" for t in teachers)]
        for check in sorted(checks)
    ]
    return "## Verifiable checks passed\n" + markdown_table(["check", *teachers], body) + "\n"


def _gates(summary: RunSummary, config: dict) -> str:
    """What selection asked of a chosen answer, the prompts each gate dropped, and what the sft rows
    still fail (issue 23: a row that fails its known answer is no training target)."""
    selection = config.get("selection") or {}
    require = selection.get("require", "gates")
    rules = []
    if selection.get("gates", True) not in (False, "off"):
        rules = ["pass every gate of its prompt"]
        rules += {"all_checks": ["every other check too"], "min_reward": [f"reach reward {selection.get('min_reward')}"]}.get(
            require, []
        )
    rule = "must " + " and ".join(rules) if rules else "needs no gate passed (`selection.gates=off`): the reward alone ranks"
    failing = summary.sft_failing or {}
    dropped = ", ".join(f"`{g}` {n}" for g, n in sorted(summary.gates_dropped.items())) or "none"
    return (
        "## Gates\n"
        f"A chosen answer {rule} (`selection.require={require}`). A gate says whether an answer is "
        "correct (a known final answer, checked by math-verify; its tests); the other checks are "
        "preferences the reward ranks by.\n\n"
        f"Prompts dropped because no answer passed a gate: {dropped}. "
        f"Sft rows whose answer fails a gate: {failing.get('a gate', 0)}, fails any check: {failing.get('a check', 0)}, "
        f"scores 0: {failing.get('reward 0', 0)}.\n"
    )


def _best_of(best_of: dict) -> str:
    """More samples against more teachers, for runs with n > 1 samples per teacher."""
    if not best_of:
        return ""
    body = [[label, f"{mean:.3f}", f"{passed:.2f}", prompts] for label, (mean, passed, prompts) in best_of.items()]
    return (
        "\n## More samples against more teachers\nWhat the dataset would keep from each teacher's first sample, from the best of "
        "its samples, and from every teacher (a failed or filtered answer counts 0).\n\n"
        + markdown_table(["answers kept", "mean reward", "all checks passed", "prompts"], body)
        + "\n"
    )


def _conversational(summary: RunSummary, config: dict) -> bool:
    return (config.get("conversation") or {}).get("turns", 1) > 1 or len(summary.wins_by_turn) > 1


def _configs(summary: RunSummary, config: dict) -> str:
    rows = summary.rows
    if _conversational(summary, config):
        dpo_turns = (config.get("output") or {}).get("dpo_turns", "all")
        which = "every turn" if dpo_turns == "all" else "the last turn kept"
        sft = "`messages`: a whole conversation, each assistant turn the answer chosen at that turn"
        dpo = (
            f"one pair per turn, of {which} (`output.dpo_turns={dpo_turns}`): `prompt` the conversation so far, "
            "`chosen` / `rejected` that turn's answers (conversational), `score_chosen`, `score_rejected`"
        )
        candidates = "every teacher answer to every turn, with score, latency, tokens, error, `conversation_id`, `turn`"
        rejected = "conversations with too few turns kept (`conversation.min_turns`): the failing turn's prompt, and why"
    else:
        sft = "`messages`: the prompt and the best answer"
        dpo = "`prompt` / `chosen` / `rejected` (conversational), `score_chosen`, `score_rejected`"
        candidates = "every teacher answer with score, latency, tokens, error"
        rejected = "prompts with no usable answer, and why"
    return markdown_table(
        ["config", "rows", "what"],
        [
            ["`sft`", rows.get("sft", 0), sft],
            ["`dpo`", rows.get("dpo", 0), dpo],
            ["`candidates`", rows.get("candidates", 0), candidates],
            ["`rejected_rows`", rows.get("rejected_rows", 0), rejected],
        ],
    )


def _conversation_columns(summary: RunSummary, config: dict) -> str:
    if not _conversational(summary, config):
        return ""
    return (
        "\nConversations add `conversation_id` (its first turn's prompt_id), `turn` (sft: the assistant turns the row "
        "holds; dpo: the turn the pair answers) and, for each turn so far, `turn_teachers` (the teacher chosen), "
        "`turn_scores` (its score) and `turn_constraints` (that turn's checks, JSON). On an sft row the other columns "
        "(prompt_id, teacher_chosen, scores, constraints, score_details) are its last turn's; on a dpo row, its pair's "
        "turn's."
    )


def _turns(summary: RunSummary) -> str:
    """Conversations: whose answer was kept at each turn, and how long the conversations kept are."""
    if len(summary.wins_by_turn) < 2:
        return ""
    teachers = list(summary.teachers) or sorted({t for wins in summary.wins_by_turn.values() for t in wins})
    body = []
    for turn, wins in sorted(summary.wins_by_turn.items(), key=lambda kv: int(kv[0])):
        kept = sum(wins.values())
        body.append([turn, kept, *(f"{wins.get(t, 0) / kept:.0%} ({wins.get(t, 0)})" if kept else "—" for t in teachers)])
    lengths = [[n, k] for n, k in sorted(summary.turns_kept.items(), key=lambda kv: int(kv[0]))]
    return (
        "## Per turn\n"
        "Each turn of a conversation was routed, scored and chosen like a prompt; `turn_teachers` in the sft and dpo rows "
        "names the teacher chosen at each turn. Win share: of the turns kept at that turn, those whose chosen answer "
        "is the teacher's.\n\n"
        + markdown_table(["turn", "turns kept", *teachers], body)
        + "\n\n"
        + markdown_table(["assistant turns", "conversations kept"], lengths)
        + "\n\n"
        + _ended_early(summary)
    )


def _ended_early(summary: RunSummary) -> str:
    if not summary.ended_early:
        return ""
    body = [[why, n] for why, n in sorted(summary.ended_early.items())]
    return (
        "Conversations kept that ended before their last turn with no turn failing (no `rejected_rows` row says why):\n\n"
        + markdown_table(["ended at", "conversations"], body)
        + "\n\n"
    )


def _stopped_note(summary: RunSummary) -> str:
    if not summary.stopped:
        return ""
    return (
        f" — **partial**: the run stopped ({summary.stopped}) with at most {summary.prompts_unfinished} prompts "
        "unfinished; rerunning the same command finishes them"
    )


def render(out_dir, paths: dict[str, str], summary: RunSummary, config: dict, sample: dict | None) -> str:
    # Every sft row has one chosen answer per assistant turn: a teacher's win share is of the answers
    # kept (the sft rows' count on a single-turn run).
    answers_kept = sum(t.wins for t in summary.teachers.values())
    teacher_rows = [
        [
            name,
            t.calls,
            t.failed,
            t.wins,
            f"{t.wins / max(1, answers_kept):.0%}",
            "—" if t.mean_score is None else f"{t.mean_score:.3f}",
            t.tokens_in,
            t.tokens_out,
            usd(t.usd),
        ]
        for name, t in summary.teachers.items()
    ]
    out = out_dir.as_posix()
    body = f"""# Arbitrage dataset: {out_dir.name}

Synthetic SFT and preference data made by *arbitrage between teachers* (Multilingual Arbitrage,
arXiv 2408.14960): persona-driven prompts (PersonaHub / Tulu 3 style) were routed to teachers
(router `{summary.router}`), every answer was scored (reward `{summary.reward}`), and
the best answer was kept. Lower-scored answers become the `rejected` side of DPO pairs.
Run id `{summary.run_id or "?"}`{_stopped_note(summary)}.

## Configs
A config with 0 rows is left out of `configs:` (datasets cannot load an empty split).

{_configs(summary, config)}

Provenance columns on `sft` and `dpo`: prompt_id, persona_id, language, domain, task,
teacher_chosen, teacher_rejected, score_chosen, score_rejected, margin, n_candidates,
router_decision, constraints (JSON), instruction_id_list and kwargs (the same checks in IFEval /
Tulu 3 form, kwargs as JSON), score_details (JSON: the strict verdict per check under `checks`,
the checks that are gates under `gates`, IFEval's loose verdicts under `loose`).{_conversation_columns(summary, config)}

## Teachers
{markdown_table(["teacher", "calls", "failed", "wins", "win share", "mean score", "tokens in", "tokens out", "$"], teacher_rows)}

{_turns(summary)}{_check_rates(summary.checks)}{_gates(summary, config)}{_best_of(summary.best_of)}
{quality_section(summary.quality)}
## Coverage
{markdown_table(["language", "sft rows"], sorted(summary.by_language.items()))}

{markdown_table(["task", "sft rows"], sorted(summary.by_task.items()))}

Prompts without a chosen answer: {summary.rejected_reasons or "none"}. DPO pairs dropped: {summary.pairs_dropped or "none"}.

## Report
Per-language and per-task win rates, reward and margin distributions, latency and tokens per
teacher: [report.md](report.md) (`arbitrage report {out}` rebuilds it from this folder).

![win rate per teacher](win_rate.svg)
![reward per teacher](rewards.svg)

## Schema
{_schemas(out_dir, paths)}

## Load and train
```python
from datasets import load_dataset
sft = load_dataset("{out}", "sft", split="train")
dpo = load_dataset("{out}", "dpo", split="train")

from trl import SFTConfig, SFTTrainer  # on CPU add bf16=False to the config
SFTTrainer(model="HuggingFaceTB/SmolLM2-135M-Instruct", args=SFTConfig(output_dir="sft-out"), train_dataset=sft).train()
```
```bash
trl sft --model_name_or_path <model> --dataset_name {out} --dataset_config sft --output_dir sft-out
trl dpo --model_name_or_path <model> --dataset_name {out} --dataset_config dpo --output_dir dpo-out
```

## Sample row
```json
{json.dumps(sample, ensure_ascii=False, indent=2) if sample else "{}"}
```

## Resolved configuration
API keys are never recorded: teachers name the environment variable that holds theirs.
```yaml
{yaml.safe_dump(config, sort_keys=False, allow_unicode=True).strip()}
```
"""
    return "---\n" + yaml.safe_dump(front_matter(paths, summary.languages), sort_keys=False) + "---\n\n" + body
