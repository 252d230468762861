"""Multi-turn runs in the report, the dataset card and the run summary: real CLI runs on the fake
OpenAI server, then the per-turn win shares read back against the sft rows' `turn_teachers`."""

import json
import re
from collections import Counter

import datasets
import pytest
from test_cli import api_args, arbitrage
from test_report import check_svg

from arbitrage.analysis import scoretable

TURNS = ("conversation.turns=3", "conversation.user=openai_compat")


@pytest.fixture
def server():
    from fake_openai import FakeOpenAI, Script

    # "good" passes more checks than "chatty"; "good" also writes the simulated user's follow-ups
    with FakeOpenAI(Script(answers={"good": "a short plain answer {digest} without any {digest} punctuation marks"})) as fake:
        yield fake


def per_turn_rows(text: str) -> dict[int, list[str]]:
    """The report's or card's "Per turn" table (the section's first): turn → its cells."""
    section = text.split("## Per turn")[1].split("\n## ")[0]
    table = next(block for block in section.split("\n\n") if block.startswith("| turn |"))
    rows = [line.strip("|").split(" | ") for line in table.splitlines() if re.match(r"\| \d+ \|", line)]
    return {int(cells[0]): [c.strip() for c in cells] for cells in rows}


def test_a_conversation_run_reports_per_turn_win_shares_that_match_the_sft_rows(server, tmp_path):
    out = tmp_path / "talk"
    # selection.require=gates: a follow-up's answers may score 0 and still be kept, so conversations reach turn 3
    result = arbitrage(*api_args(server, out, "n_prompts=12", "selection.require=gates", *TURNS))
    assert result.returncode == 0, result.stderr[-2000:]

    sft = datasets.load_dataset(str(out), "sft", split="train")
    wins = {k: Counter() for k in (1, 2, 3)}
    for row in sft:
        assert len(row["turn_teachers"]) == row["turn"] == sum(m["role"] == "assistant" for m in row["messages"])
        for k, teacher in enumerate(row["turn_teachers"], 1):
            wins[k][teacher] += 1
    assert all(wins[k] for k in (1, 2, 3)), wins  # conversations were kept to turn 3
    teachers = ["openai_compat", "api"]

    table = scoretable.load(out)
    assert [t.turn for t in table.turns] == [1, 2, 3] and table.unlisted == 0
    text = (out / "report.md").read_text()
    rows = per_turn_rows(text)
    for t in table.turns:
        assert t.wins == {name: wins[t.turn][name] for name in teachers} and t.kept == sum(wins[t.turn].values())
        assert sum(t.share(name) for name in teachers) == pytest.approx(1.0)
        cells = rows[t.turn]
        assert cells[1:3] == [str(t.reached), str(t.kept)]
        shares = [cells[3 + 2 * j] for j in range(len(teachers))]
        assert shares == [f"{wins[t.turn][name] / t.kept:.0%} ({wins[t.turn][name]})" for name in teachers]
        assert sum(int(s.split("(")[1].rstrip(")")) for s in shares) == t.kept  # every turn kept has one winner
    # every turn of every conversation answered is a row: 12 conversations reached turn 1
    assert table.turns[0].reached == 12 and len(table.prompts) == sum(t.reached for t in table.turns)
    assert {p.turn for p in table.prompts} == {1, 2, 3}
    lengths = Counter(row["turn"] for row in sft)
    assert table.turns_kept == dict(lengths)
    assert all(f"| {n} turn{'s' if n > 1 else ''} | {k} |" in text for n, k in lengths.items())
    check_svg(out / "turns.svg", teachers)
    assert "![win share per turn](turns.svg)" in text

    summary = json.loads((out / "summary.json").read_text())
    assert summary["wins_by_turn"] == {str(k): dict(v) for k, v in wins.items()}  # the stats count what the rows hold
    card = (out / "README.md").read_text()
    card_rows = per_turn_rows(card)
    for k, won in wins.items():
        kept = sum(won.values())
        assert card_rows[k] == [str(k), str(kept), *(f"{won[name] / kept:.0%} ({won[name]})" for name in teachers)]
    assert "a whole conversation, each assistant turn the answer chosen at that turn" in card
    assert "`prompt` the conversation so far" in card and "`output.dpo_turns=all`" in card
    # the card's win share is of the answers kept (one per turn kept), not of the sft rows
    total = sum(sum(v.values()) for v in wins.values())
    for name in teachers:
        won = sum(v[name] for v in wins.values())
        assert f"| {name} | " in card and f" | {won} | {won / total:.0%} | " in card
    line = next(x for x in result.stdout.splitlines() if x.startswith("wins per turn: "))
    for k, won in wins.items():
        kept = sum(won.values())
        assert f"{k}: " + " ".join(f"{name} {won[name] / kept:.0%}" for name in teachers) in line


def test_a_turn_after_the_last_one_kept_counts_per_turn_and_the_report_is_written(server, tmp_path):
    """The default reward floor keeps turn 1 of some conversations and no answer of their turn 2: that
    turn is a rejected row (its prompt the conversation up to it, its reason why the conversation ended
    there), and the report (which used to fail on it) counts it per turn."""
    out = tmp_path / "floor"
    result = arbitrage(*api_args(server, out, "n_prompts=12", *TURNS))
    assert result.returncode == 0, result.stderr[-2000:]
    candidates = datasets.load_dataset(str(out), "candidates", split="train")
    sft = datasets.load_dataset(str(out), "sft", split="train")
    reached = {k: len({c["conversation_id"] for c in candidates if c["turn"] == k}) for k in (1, 2, 3)}
    kept = {k: sum(row["turn"] >= k for row in sft) for k in (1, 2, 3)}
    answered = {(c["conversation_id"], c["turn"]) for c in candidates}
    after_last = sum((row["conversation_id"], row["turn"] + 1) in answered for row in sft)
    assert reached[2] > kept[2] and after_last > 0  # this run has turns answered after their conversation's last kept turn

    rejected = datasets.load_dataset(str(out), "rejected_rows", split="train")
    ended = {(r["conversation_id"], r["turn"]): r["reason"] for r in rejected}
    for row in sft:
        if (row["conversation_id"], row["turn"] + 1) in answered:
            reason = ended[(row["conversation_id"], row["turn"] + 1)]
            assert reason.startswith(f"turn {row['turn'] + 1}: ") and reason.endswith(
                f"kept with {row['turn']} turn{'s' if row['turn'] > 1 else ''})"
            )

    table = scoretable.load(out)
    assert table.unlisted == 0  # every turn answered is in a row: the one it ended at is a rejected row
    assert {t.turn: (t.reached, t.kept) for t in table.turns} == {k: (reached[k], kept[k]) for k in reached if reached[k]}
    text = (out / "report.md").read_text()
    rows = per_turn_rows(text)
    assert rows[2][1:3] == [str(reached[2]), str(kept[2])]
    assert "came after the last turn their conversation kept" not in text


def test_a_single_turn_run_has_no_per_turn_section(server, tmp_path):
    out = tmp_path / "single"
    result = arbitrage(*api_args(server, out, "n_prompts=12"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert not scoretable.load(out).turns
    text, card = (out / "report.md").read_text(), (out / "README.md").read_text()
    assert "## Per turn" not in text and not (out / "turns.svg").exists()
    assert "## Per turn" not in card and "`messages`: the prompt and the best answer" in card
    assert "wins per turn" not in result.stdout and text.split("\n")[2].startswith("12 prompts · teachers")
