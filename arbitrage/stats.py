"""Run statistics: `RunStats` watches selections stream past (flat in the number of prompts) and
builds the typed `RunSummary` that the CLI's table, the dataset card and the report all read."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from arbitrage.markdown import markdown_table, usd
from arbitrage.quality import diversity
from arbitrage.rows import Scored
from arbitrage.select import NO_CANDIDATE, Conversation, Selection

FACETS = ("language", "task", "domain", "persona_id")
SAMPLES = ("prompts_before", "prompts_after", "answers_before", "answers_after")
# The embedding spread reads EMBEDDED_SAMPLE texts per set, the first EMBEDDED_TOKENS tokens of each:
# MiniLM costs ~0.35 ms a token on 2 cores (compute bound), so this is ~3 s whatever the run's size.
EMBEDDED_SAMPLE = 48
EMBEDDED_TOKENS = 40


class Reservoir:
    """A uniform sample of at most `size` texts from a stream (Algorithm R), plus the count seen.
    The sample's word 1- and 2-grams are counted as texts come and go, so its distinct-n is ready
    when the run ends: the work happens while the run waits on its teachers, not after it."""

    def __init__(self, size: int, seed: int = 0):
        self.size, self.seen, self.items = size, 0, []
        self.grams = diversity.GramCounts()
        self._rng = random.Random(seed)

    def add(self, text: str) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(text)
            self.grams.add(text)
        elif (j := self._rng.randrange(self.seen)) < self.size:
            self.grams.remove(self.items[j])
            self.items[j] = text
            self.grams.add(text)


@dataclass
class TeacherSummary:
    calls: int = 0  # candidates in the dataset (resumed ones included)
    failed: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    usd: float | None = None  # what the dataset's answers cost; None: no price known
    wins: int = 0
    mean_score: float | None = None
    requests_sent: int = 0  # this run, retries included
    retries: int = 0
    resumed: int = 0  # read back from the journal
    unsent: int = 0  # left for a rerun by a stop
    failures: dict = field(default_factory=dict)  # reason → count, this run
    tok_per_s: float | None = None
    load_s: float | None = None
    generate_s: float | None = None


@dataclass
class RunSummary:
    out_dir: str
    run_id: str = ""
    router: str = ""
    reward: str = ""
    prompts: int = 0  # drawn from the source
    prompts_finished: int = 0  # written: chosen, or in rejected_rows with a reason
    prompts_unfinished: int = 0  # at most this many are left for a rerun
    stopped: str | None = None
    signal: str | None = None  # the first Ctrl-C / SIGTERM the run got: the CLI exits 128 + its number
    error: str | None = None
    budget_usd: float | None = None
    spent_usd: float = 0.0  # the run folder's spend, earlier runs included
    rows: dict = field(default_factory=dict)  # config → rows
    teachers: dict[str, TeacherSummary] = field(default_factory=dict)
    pairs_dropped: dict = field(default_factory=dict)
    requests_per_s: float | None = None
    timings_s: dict = field(default_factory=dict)
    languages: list = field(default_factory=list)
    by_language: dict = field(default_factory=dict)  # sft rows
    by_task: dict = field(default_factory=dict)
    rejected_reasons: dict = field(default_factory=dict)
    gates_dropped: dict = field(default_factory=dict)  # gate → prompts dropped because no answer passed it
    sft_failing: dict = field(default_factory=dict)  # sft rows whose answer fails a gate / a check / scores 0
    checks: dict = field(default_factory=dict)  # check → teacher → [passed, seen]
    best_of: dict = field(default_factory=dict)  # n > 1: label → [mean reward, share with all checks passed, prompts]
    # Conversations (conversation.turns > 1): turn → teacher → wins (the chosen answer at that turn of a
    # conversation kept), and assistant turns → conversations kept with that many.
    wins_by_turn: dict = field(default_factory=dict)
    turns_kept: dict = field(default_factory=dict)
    # Conversations kept that ended before conversation.turns with no turn failing (no rejected row
    # says why): "turn k: why" → conversations, e.g. the user simulator wrote no follow-up.
    ended_early: dict = field(default_factory=dict)
    quality: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def from_dict(cls, data: dict) -> RunSummary:
        known = {f.name for f in fields(cls)}
        summary = cls(**{k: v for k, v in data.items() if k in known})
        summary.teachers = {
            name: TeacherSummary(**{k: v for k, v in t.items() if k in TeacherSummary.__dataclass_fields__})
            for name, t in (data.get("teachers") or {}).items()
        }
        return summary

    @classmethod
    def load(cls, path: Path) -> RunSummary | None:
        return cls.from_dict(json.loads(path.read_text())) if path.exists() else None

    def text(self) -> str:
        """What the CLI prints when a run ends: rows, a table per teacher, failures, time, stops."""
        rows = self.rows
        lines = [
            f"\nwrote {self.out_dir}: "
            + " ".join(f"{name}={rows.get(name, 0)}" for name in ("sft", "dpo", "candidates", "rejected_rows"))
        ]
        header = [
            "teacher",
            "calls",
            "failed",
            "retries",
            "resumed",
            "wins",
            "mean score",
            "tokens in",
            "tokens out",
            "$",
            "tok/s",
        ]
        body = [
            [name, t.calls, t.failed, t.retries, t.resumed, t.wins, "—" if t.mean_score is None else f"{t.mean_score:.3f}",
             t.tokens_in, t.tokens_out, usd(t.usd), t.tok_per_s or "—"]
            for name, t in self.teachers.items()
        ]  # fmt: skip
        lines.append(markdown_table(header, body))
        failures = {f"{name}: {why}": n for name, t in self.teachers.items() for why, n in t.failures.items()}
        if failures:
            lines.append("failures by reason: " + ", ".join(f"{k} ×{n}" for k, n in sorted(failures.items())))
        if len(self.wins_by_turn) > 1:
            lines.append(self._turns_line())
        budget = f" of budget {usd(self.budget_usd)}" if self.budget_usd else ""
        lines.append(
            f"wall {self.timings_s.get('total_s')} s · {self.requests_per_s or '—'} requests/s · spent {usd(self.spent_usd)}{budget}"
        )
        lines.append("time (s): " + ", ".join(f"{k.removesuffix('_s')}={v}" for k, v in self.timings_s.items()))
        lines += [f"no {name} rows: {hint}" for name, hint in EMPTY_HINTS.items() if not rows.get(name)]
        if self.stopped == "budget":
            lines.append(
                f"stopped: budget_usd reached with {self.prompts_unfinished} prompts unfinished — rerun with a higher budget_usd= to continue"
            )
        elif self.stopped and not self.error:
            lines.append(
                f"stopped ({self.stopped}) with {self.prompts_unfinished} prompts unfinished — rerun the same command to finish them"
            )
        return "\n".join(lines)

    def _turns_line(self) -> str:
        """Conversations: each teacher's share of the answers kept at each turn, then the lengths kept."""
        by_turn = sorted(self.wins_by_turn.items(), key=lambda kv: int(kv[0]))
        teachers = list(self.teachers) or sorted({t for _, wins in by_turn for t in wins})
        turns = []
        for turn, wins in by_turn:
            kept = sum(wins.values())
            turns.append(f"{turn}: " + " ".join(f"{t} {wins.get(t, 0) / kept:.0%}" for t in teachers) if kept else f"{turn}: —")
        by_length = sorted(self.turns_kept.items(), key=lambda kv: int(kv[0]))
        lengths = ", ".join(f"{n} turn{'s' if int(n) > 1 else ''} ×{k}" for n, k in by_length)
        line = "wins per turn: " + " · ".join(turns) + f" (conversations kept: {lengths or 'none'})"
        if self.ended_early:
            line += "\nconversations ended early: " + ", ".join(f"{why} ×{n}" for why, n in sorted(self.ended_early.items()))
        return line

    def why_nothing(self) -> str:
        """The commonest reasons the run has no sft row: why its prompts were rejected (one reason
        per prompt, so a filter that dropped everything is named), else the teachers' failures."""
        failures = Counter()
        for name, t in self.teachers.items():
            for why, n in t.failures.items():
                failures[f"{name}: {why}"] += n
        reasons = Counter(self.rejected_reasons)
        if failures:  # prompts with no usable candidate: say why their calls failed
            reasons.pop(NO_CANDIDATE, None)
            reasons.update(failures)
        return ", ".join(f"{why} ×{n}" for why, n in reasons.most_common(3)) or f"{self.prompts} prompts, 0 sft rows"


EMPTY_HINTS = {
    "sft": "no prompt has a usable answer — see the rejected_rows config and summary.json",
    "dpo": "no two answers to a prompt differ by output.min_margin — add teachers, prompts, or lower it",
}


class RunStats:
    """The observer of a run's output: it watches the rows as they are written (counts, samples for
    diversity) and keeps the pipeline's timings. The stages' own counts (prompts drawn, filter drops)
    are theirs (stages.PromptFilter, stages.Chooser)."""

    def __init__(self, teachers: Sequence[str], sample_size: int = 2000, dpo_turns: str = "all"):
        self.teachers = list(teachers)
        self._dpo_turns = dpo_turns  # output.dpo_turns: which turns of a conversation give a pair
        self.finished = 0
        self.rows: Counter = Counter()
        self.calls, self.failed, self.wins = Counter(), Counter(), Counter()
        self.tokens_in, self.tokens_out = Counter(), Counter()
        self.score_sum, self.scored = Counter(), Counter()
        self.pairs_dropped: Counter = Counter()
        self.by_language, self.by_task, self.rejected_reasons = Counter(), Counter(), Counter()
        self.gates_dropped: Counter = Counter()  # gate → prompts no answer of which passed it
        self.sft_failing: Counter = Counter({"a gate": 0, "a check": 0, "reward 0": 0})  # sft rows whose answer does
        self.languages: set[str] = set()
        self.checks: dict[str, dict[str, list[int]]] = {}
        self.best_of: dict[str, list[float]] = {}  # n > 1 samples: "t, best of n" → [reward sum, full passes, prompts]
        self.facets = {when: {k: set() for k in FACETS} for when in ("before", "after")}
        self.samples = {k: Reservoir(sample_size, seed=i) for i, k in enumerate(SAMPLES)}
        self.cut_short = 0  # conversations a stop ended before their last turn, written as far as they got
        self.wins_by_turn: dict[int, Counter] = {}  # conversations: turn → teacher → wins
        self.turns_kept: dict[int, int] = {}  # conversations: assistant turns kept → conversations
        self.ended_early: Counter = Counter()  # conversations kept that ended with no turn failing: why
        self.timings: Counter = Counter()

    @contextmanager
    def timer(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[f"{name}_s"] += time.perf_counter() - started

    def add(self, items: Sequence[Selection | Conversation]) -> None:
        for item in items:
            if isinstance(item, Conversation):
                self._conversation(item)
                continue
            self.finished += 1
            self._prompt(item.prompt)
            self._answers(item)
            if item.chosen is None:
                self._rejected(item.reason, item.gates_failed)
                continue
            self._failing([item.chosen])
            self._chosen(item)
            self._pair(item)
            self.rows["sft"] += 1
            self._kept(item.prompt)

    def _conversation(self, c: Conversation) -> None:
        """A conversation is one prompt finished, one sft row (or one rejected row); every turn's
        answers count, and each turn kept counts its win and its pair."""
        if not c.finished or not c.turns:
            return  # a stop left it too short to keep: the rerun's (as an unfinished prompt is)
        self.finished += 1
        self.cut_short += c.stopped  # written, but a stop ended it early: the rerun extends it
        self._prompt(c.turns[0].prompt)
        for s in c.turns:
            self._answers(s)
        if c.failed is not None or not c.written:  # a rejected row at the turn it ended at
            self._rejected(c.reason, c.failed.gates_failed if c.failed else ())
        if not c.written:
            return
        kept = c.kept
        if c.failed is None and c.ended is not None:  # no row says why: the summary does
            why = f"{c.ended.code}: {c.ended.detail}" if c.ended.detail else c.ended.code
            self.ended_early[f"turn {len(kept) + 1}: {why}"[:160]] += 1
        self._failing([s.chosen for s in kept])  # the sft row fails a gate if any of its turns does
        for k, s in enumerate(kept, 1):
            self._chosen(s)
            self.wins_by_turn.setdefault(k, Counter())[s.chosen.candidate.teacher] += 1
            if self._dpo_turns == "all" or k == len(kept):
                self._pair(s)
        self.turns_kept[len(kept)] = self.turns_kept.get(len(kept), 0) + 1
        self.rows["sft"] += 1
        self._kept(kept[0].prompt)

    def _prompt(self, prompt) -> None:
        self.samples["prompts_before"].add(prompt.user_text)  # every prompt ends as a row: kept or dropped
        for k in FACETS:
            self.facets["before"][k].add(getattr(prompt, k))
        self.languages.add(prompt.language)

    def _answers(self, s: Selection) -> None:
        if s.first_choice is not None:
            self.samples["answers_before"].add(s.first_choice.candidate.text)
        self.rows["candidates"] += len(s.candidates)
        for scored in s.candidates:
            c, t = scored.candidate, scored.candidate.teacher
            self.calls[t] += 1
            self.failed[t] += not c.ok
            self.tokens_in[t] += c.tokens_in
            self.tokens_out[t] += c.tokens_out
            if scored.usable:
                self.score_sum[t] += scored.score
                self.scored[t] += 1
            for check, ok in scored.checks.items():
                tally = self.checks.setdefault(check, {}).setdefault(t, [0, 0])
                tally[0] += bool(ok)
                tally[1] += 1
        self._samples_against_teachers(s.candidates)

    def _rejected(self, reason, gates_failed) -> None:
        self.rows["rejected_rows"] += 1
        self.rejected_reasons[reason.code if reason else ""] += 1
        for gate in gates_failed:
            self.gates_dropped[gate] += 1

    def _chosen(self, s: Selection) -> None:
        """A chosen answer (each turn of a conversation has one): its win."""
        chosen = s.chosen
        self.wins[chosen.candidate.teacher] += 1
        self.samples["answers_after"].add(chosen.candidate.text)

    def _failing(self, answers: list[Scored]) -> None:
        """An sft row's chosen answers (a conversation's, one per turn): does any fail a gate, a check, score 0?"""
        self.sft_failing["a gate"] += any(a.failed_gates for a in answers)
        self.sft_failing["a check"] += any(not all(a.checks.values()) for a in answers)
        self.sft_failing["reward 0"] += any(a.score == 0 for a in answers)

    def _pair(self, s: Selection) -> None:
        if s.rejected is not None:
            self.rows["dpo"] += 1
        else:
            self.pairs_dropped[s.pair_reason.code if s.pair_reason else ""] += 1

    def _kept(self, prompt) -> None:
        self.by_language[prompt.language] += 1
        self.by_task[prompt.task] += 1
        self.samples["prompts_after"].add(prompt.user_text)
        for k in FACETS:
            self.facets["after"][k].add(getattr(prompt, k))

    def _samples_against_teachers(self, candidates: Sequence[Scored]) -> None:
        """With n samples per teacher: what one sample, the best of n and every teacher would keep
        (a failed or filtered answer is worth 0, as to the dataset); the card sets them side by side."""
        values: dict[str, dict[int, float]] = {}
        for scored in candidates:
            worth = scored.score if scored.usable and not scored.filtered else 0.0
            values.setdefault(scored.candidate.teacher, {})[scored.candidate.sample] = worth
        n = max((len(v) for v in values.values()), default=0)
        if n < 2:
            return
        first = {t: v.get(0, 0.0) for t, v in values.items()}
        best = {t: max(v.values()) for t, v in values.items()}
        rows = [(f"{t}, 1 sample", first[t]) for t in values] + [(f"{t}, best of {n}", best[t]) for t in values]
        if set(values) == set(self.teachers):
            rows += [
                ("all teachers, 1 sample each", max(first.values())),
                (f"all teachers, best of {n} each", max(best.values())),
            ]
        for label, worth in rows:
            tally = self.best_of.setdefault(label, [0.0, 0, 0])
            tally[0] += worth
            tally[1] += worth >= 1.0 - 1e-9
            tally[2] += 1

    def quality_summary(self, embed: Callable | None, dropped: dict[str, int]) -> dict:
        """What each filter dropped, and diversity before and after the quality stage, on uniform
        samples (`n` counts every text). The embedding spread reads at most EMBEDDED_SAMPLE texts per
        set, each text embedded once however many sets hold it: a bounded cost whatever the run's size."""
        embedded = {}
        if embed is not None:
            chosen = {k: random.Random(0).sample(s.items, min(len(s.items), EMBEDDED_SAMPLE)) for k, s in self.samples.items()}
            unique = list(dict.fromkeys(t for texts in chosen.values() for t in texts))
            vectors = dict(zip(unique, embed(unique, max_tokens=EMBEDDED_TOKENS), strict=True)) if unique else {}
            embedded = {k: [vectors[t] for t in texts] for k, texts in chosen.items()}

        def metrics(key: str, when: str | None) -> dict:
            sample = self.samples[key]
            result = {"n": len(sample.items), **sample.grams.distinct()}
            if embed is not None:
                result["embedding_spread"] = diversity.spread(embedded[key])
            result["n"] = sample.seen
            if sample.seen > len(sample.items):
                result["sample"] = len(sample.items)
            result["coverage"] = {k: len(v) for k, v in self.facets[when].items()} if when else {}
            return result

        return {
            "dropped": dict(dropped),
            "prompts_before": metrics("prompts_before", "before"),
            "prompts_after": metrics("prompts_after", "after"),
            "answers_before": metrics("answers_before", None),
            "answers_after": metrics("answers_after", None),
        }

    def teacher_summary(self, name: str, price, engine_stats, teacher_stats: dict) -> TeacherSummary:
        busy = teacher_stats.get("generate_s") or None
        return TeacherSummary(
            calls=self.calls[name],
            failed=self.failed[name],
            tokens_in=self.tokens_in[name],
            tokens_out=self.tokens_out[name],
            usd=None if price is None else round(price.cost(self.tokens_in[name], self.tokens_out[name]), 6),
            wins=self.wins[name],
            mean_score=round(self.score_sum[name] / self.scored[name], 4) if self.scored[name] else None,
            requests_sent=engine_stats.sent,
            retries=engine_stats.retries,
            resumed=engine_stats.resumed,
            unsent=engine_stats.unsent,
            failures=dict(engine_stats.failures),
            tok_per_s=round(self.tokens_out[name] / busy, 1) if busy else None,
            load_s=round(teacher_stats["load_s"], 2) if "load_s" in teacher_stats else None,
            generate_s=round(busy, 2) if busy else None,
        )

    def coverage(self) -> dict:
        return {
            "languages": sorted(self.languages),
            "by_language": dict(sorted(self.by_language.items())),
            "by_task": dict(sorted(self.by_task.items())),
            "rejected_reasons": dict(self.rejected_reasons),
            "gates_dropped": dict(self.gates_dropped),
            "sft_failing": dict(self.sft_failing),
            "checks": self.checks,
            "best_of": {
                label: [round(total / k, 4), round(passes / k, 4), k] for label, (total, passes, k) in self.best_of.items()
            },
            "pairs_dropped": dict(self.pairs_dropped),
            "wins_by_turn": {str(k): dict(v) for k, v in sorted(self.wins_by_turn.items())},
            "turns_kept": {str(k): n for k, n in sorted(self.turns_kept.items())},
            "ended_early": dict(sorted(self.ended_early.items())),
        }
