"""`arbitrage view` on a multi-turn run (conversation.turns=3): the list is of conversations (its
length, the teachers chosen per turn), and a conversation's page shows it turn by turn — each user
message, every teacher's answers at that turn, the chosen one and the rejected side of that turn's
DPO pair, and why the turn that ended it failed. The run is a real CLI run on our fake server."""

from __future__ import annotations

import json
import threading

import datasets
import pytest
from browser import Chromium, artifacts_dir
from fake_openai import FakeOpenAI, Script
from test_cli import api_args, arbitrage
from test_view import _browser_or_skip, set_select

from arbitrage.view.export import export
from arbitrage.view.folder import RunView
from arbitrage.view.pager import Query, RunData
from arbitrage.view.server import make_server, url_of

TEACHERS = ("api", "openai_compat")  # the candidates' order in a turn (teacher, then sample)
LOWER = {"type": "change_case:english_lowercase"}  # "good" (openai_compat) answers in lowercase
COMMA = {"type": "keywords:existence", "keywords": ["comma"]}  # "chatty" (api) says "with a comma"
# conv0: kept, 3 turns, the winner changes per turn; conv1: turn 2 refused by both (HTTP 400), 1 turn
# kept < min_turns 2: rejected at turn 2; conv2: turn 3 refused, kept to turn 2 (its turn 3 a rejected row).
CONVERSATIONS = {
    "conv0": [("question 0 turn 1", LOWER), ("question 0 turn 2", COMMA), ("question 0 turn 3", LOWER)],
    "conv1": [("question 1 turn 1", COMMA), ("REFUSE question 1 turn 2", LOWER), ("question 1 turn 3", LOWER)],
    "conv2": [("question 2 turn 1", LOWER), ("question 2 turn 2", LOWER), ("REFUSE question 2 turn 3", LOWER)],
}


def rows(out, name):
    return list(datasets.load_dataset(str(out), name, split="train"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conversations")
    prompts = tmp / "prompts.jsonl"
    lines = [
        {"id": cid, "messages": [{"role": "user", "content": text, "constraints": [check]} for text, check in turns]}
        for cid, turns in CONVERSATIONS.items()
    ]
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp / "run"
    script = Script(answers={"good": "a plain answer {digest} in lowercase"}, always_fail_marker="REFUSE")
    with FakeOpenAI(script) as server:
        extra = ("source=jsonl", f"source.path={prompts}", "conversation.turns=3", "conversation.min_turns=2")
        result = arbitrage(*api_args(server, out, *extra, "engine.breaker=false", "report=false", "progress=false"))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def folder(run):
    return RunView(run, background_index=False)


def test_the_list_is_one_entry_per_conversation_with_its_length_and_teachers(run, folder):
    sft = {r["conversation_id"]: r for r in rows(run, "sft")}
    assert sorted(r["conversation_id"] for r in rows(run, "rejected_rows")) == ["conv1", "conv2"]  # conv2's last turn too
    page = folder.prompts({})
    listed = {r["conversation_id"]: r for r in page["rows"]}
    assert [r["conversation_id"] for r in page["rows"]] == [*sft, "conv1"] and page["total"] == 3  # sft, then rejected
    for cid, row in sft.items():
        assert listed[cid]["turns"] == row["turn"] and listed[cid]["turn_teachers"] == row["turn_teachers"]
        assert listed[cid]["text"] == CONVERSATIONS[cid][0][0]  # listed by how it opens
    assert sft["conv0"]["turn_teachers"] == ["openai_compat", "api", "openai_compat"]  # the winner changes per turn
    assert listed["conv0"]["answered"] == 3 and listed["conv2"]["turns"] == 2 and listed["conv2"]["answered"] == 3
    assert listed["conv1"]["turns"] == 1 and listed["conv1"]["answered"] == 2 and listed["conv1"]["reason"].startswith("turn 2:")
    meta = folder.meta()
    assert meta["n"] == 3 and meta["conversations"] and meta["facets"]["turns"] == {"1": 1, "2": 1, "3": 1}
    assert meta["facets"]["teachers"] == {"openai_compat → api → openai_compat": 1, "openai_compat → openai_compat": 1}
    assert meta["facets"]["status"]["pair"] == 2 and meta["facets"]["status"]["rejected"] == 1


def test_a_conversation_page_shows_every_turn_with_every_teachers_answers(run, folder):
    sft = {r["conversation_id"]: r for r in rows(run, "sft")}
    dpo = {(r["conversation_id"], r["turn"]): r for r in rows(run, "dpo")}
    candidates = rows(run, "candidates")
    for cid in ("conv0", "conv2"):
        d = folder.prompt(cid)  # a link may name the conversation (its row carries the last turn's prompt id)
        assert d == folder.prompt(sft[cid]["prompt_id"])
        assert [t["turn"] for t in d["turns"]] == [1, 2, 3]  # conv2's third turn failed: shown after the kept two
        for t in d["turns"]:
            answers = [c for c in d["candidates"] if c["turn"] == t["turn"]]
            assert tuple(c["teacher"] for c in answers) == TEACHERS  # every teacher's answer at every turn
            written = [c for c in candidates if c["conversation_id"] == cid and c["turn"] == t["turn"]]
            assert {c["response"] for c in answers} == {c["response"] for c in written}
            assert {c["prompt_id"] for c in written} == {t["prompt_id"]}
            if t["messages"] is not None:
                assert [m["content"] for m in t["messages"]] == [CONVERSATIONS[cid][t["turn"] - 1][0]]
            assert {x["id"] for c in answers for x in c["checks"] if x["id"] != "arbitrage:final_number"} <= {
                LOWER["type"],
                COMMA["type"],
            }
            pair = dpo.get((cid, t["turn"]))
            rejected = [c["teacher"] for c in answers if c["rejected"]]
            assert rejected == ([pair["teacher_rejected"]] if pair else [])
            assert t["status"] == ("pair" if pair else "no_pair" if t["chosen"] else "failed")
        chosen = [t["chosen"] for t in d["turns"] if t["chosen"]]
        marks = [c["teacher"] for c in d["candidates"] if c["chosen"]]
        assert chosen == marks == sft[cid]["turn_teachers"] == d["turn_teachers"]  # in turn order
    ending = next(r for r in rows(run, "rejected_rows") if r["conversation_id"] == "conv2")
    conv2 = folder.prompt(ending["prompt_id"])  # the turn it ended at opens the conversation
    assert conv2["conversation_id"] == "conv2" and conv2["ended"] == ending["reason"]
    last = conv2["turns"][2]
    assert last["status"] == "failed" and [m["content"] for m in last["messages"]] == ["REFUSE question 2 turn 3"]
    assert last["prompt_id"] == ending["prompt_id"] and "kept with 2 turns" in ending["reason"]
    assert last["explain"][0] == f"No answer could be chosen: {ending['reason'].removeprefix('turn 3: ')}."
    assert any(line.startswith("Turn 3 had no answer that could be chosen") for line in conv2["explain"])
    assert "DPO pairs at turn(s) 1, 2:" in conv2["explain"][-1]
    assert folder.prompt("conv0")["explain"][0] == (
        "Kept: 3 turn(s) in one sft row; the teacher chosen per turn: openai_compat → api → openai_compat."
    )


def test_a_conversation_rejected_at_turn_2_shows_turn_1_and_why_turn_2_failed(run, folder):
    row = next(r for r in rows(run, "rejected_rows") if r["conversation_id"] == "conv1")
    d = folder.prompt("conv1")
    assert d["status"] == "rejected" and d["kept"] == 1 and d["turn_teachers"] == ["api"]
    first, second = d["turns"]
    assert [m["content"] for m in first["messages"]] == ["question 1 turn 1"] and first["chosen"] == "api"
    assert [m["content"] for m in second["messages"]] == ["REFUSE question 1 turn 2"] and second["prompt_id"] == row["prompt_id"]
    assert second["status"] == "failed" and second["chosen"] is None
    assert all(c["error"].startswith("HTTP 400") for c in d["candidates"] if c["turn"] == 2)
    assert second["explain"] == [f"No answer could be chosen: {row['reason'].removeprefix('turn 2: ')}."]
    assert d["explain"][0] == f"Not kept: {row['reason']}." and "1 of min_turns 2 kept" in row["reason"]
    assert "not kept, so none of its turns gives a row" in first["explain"][-1]


@pytest.mark.parametrize(
    "query, expected",
    [
        (Query({"turns": "3"}), ["conv0"]),
        (Query({"teachers": "openai_compat → openai_compat"}), ["conv2"]),
        (Query({"status": "rejected"}), ["conv1"]),
        (Query({"status": "pair"}), ["conv0", "conv2"]),
        (Query(text="conv1"), ["conv1"]),  # a conversation id
        (Query(text="question 0 turn 2"), ["conv0"]),  # a later turn's user message
        # turn 2 of conv0 asks for "comma": only there does a chosen answer pass it (api's, the turn's winner)
        (Query(check=COMMA["type"], verdict="pass"), ["conv0", "conv1"]),  # conv1's turn 1 too, before it failed
        (Query(check=COMMA["type"], verdict="fail", on="any"), ["conv0", "conv1"]),
    ],
)
def test_filters_and_search_work_on_conversations(run, query, expected):
    data = RunData(run, background=False)
    page = data.query(query, 0, 50)
    assert [r["conversation_id"] for r in page["rows"]] == expected


# ---- the page in a real browser ----

TURNS = "document.querySelectorAll('#turns .turn')"


@pytest.fixture
def browser(tmp_path):
    _browser_or_skip()
    chrome = Chromium(tmp_path / "profile")
    yield chrome
    chrome.close()


@pytest.fixture(scope="module")
def served(folder):
    server = make_server(folder, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield url_of(server)
    server.shutdown()
    server.server_close()


def page_turns(browser) -> list[dict]:
    """Per turn section on the page: its number, its answers' teachers, the chosen and rejected marks."""
    return browser.eval(
        f"Array.from({TURNS}).map(t => ({{turn: Number(t.dataset.turn),"
        " teachers: Array.from(t.querySelectorAll('.candidate')).map(c => c.dataset.teacher),"
        " chosen: Array.from(t.querySelectorAll('.candidate.is-chosen')).map(c => c.dataset.teacher),"
        " rejected: Array.from(t.querySelectorAll('.candidate.is-rejected')).map(c => c.dataset.teacher),"
        " user: Array.from(t.querySelectorAll('.message.user')).map(m => m.textContent.replace(/^user/, '').trim())}))"
    )


def test_the_page_lists_conversations_and_shows_one_turn_by_turn(browser, served, run, tmp_path):
    sft = {r["conversation_id"]: r for r in rows(run, "sft")}
    dpo = {(r["conversation_id"], r["turn"]): r["teacher_rejected"] for r in rows(run, "dpo")}
    browser.goto(served)
    browser.wait("document.body.dataset.ready === '1'")
    listed = browser.eval("Array.from(document.querySelectorAll('#list .prompt-row .row-head')).map(r => r.textContent)")
    assert len(listed) == 3 and listed[0].startswith("conv0") and "3 turns" in listed[0]
    assert "★ openai_compat → api → openai_compat" in listed[0]
    browser.wait("!!document.querySelector('#f-turns')")  # the conversation facets are offered
    set_select(browser, "#f-turns", "2")
    browser.wait("document.querySelectorAll('#list .prompt-row').length === 1")
    browser.eval("document.querySelector('#clear').click()")

    browser.goto(served + "#/p/conv0")
    browser.wait(f"{TURNS}.length === 3")
    turns = page_turns(browser)
    assert [t["turn"] for t in turns] == [1, 2, 3]
    assert all(tuple(t["teachers"]) == TEACHERS for t in turns)
    assert [t["chosen"][0] for t in turns] == sft["conv0"]["turn_teachers"]
    assert [t["rejected"] for t in turns] == [[dpo[("conv0", k)]] for k in (1, 2, 3)]
    assert [t["user"] for t in turns] == [[text] for text, _ in CONVERSATIONS["conv0"]]
    browser.screenshot(artifacts_dir(tmp_path) / "view-conversation.png")

    browser.goto(served + "#/p/conv1")  # rejected at turn 2: turn 1 as it was, then why turn 2 failed
    browser.wait(f"{TURNS}.length === 2")
    turns = page_turns(browser)
    assert turns[0]["chosen"] == ["api"] and turns[1]["chosen"] == [] and turns[1]["user"] == ["REFUSE question 1 turn 2"]
    failed = browser.eval(f"{TURNS}[1].querySelector('.turn-explain').textContent")
    assert failed.startswith("No answer could be chosen: no usable candidate")
    assert browser.errors() == []


def test_the_export_shows_conversations_turn_by_turn(browser, run, tmp_path):
    out = export(run, tmp_path / "view.html")
    browser.goto(out.as_uri())
    browser.wait("document.body.dataset.ready === '1'")
    browser.wait("!!document.querySelector('#f-teachers')")
    set_select(browser, "#f-turns", "3")
    browser.wait("document.querySelectorAll('#list .prompt-row').length === 1")
    browser.eval("document.querySelector('#list .prompt-row').click()")
    browser.wait(f"{TURNS}.length === 3")
    assert [t["chosen"][0] for t in page_turns(browser)] == ["openai_compat", "api", "openai_compat"]
    assert browser.errors() == []


def test_a_simulated_user_conversation_shows_each_follow_up(tmp_path):
    """conversation.user=openai_compat on persona prompts: the follow-ups the simulator wrote are
    the turns' user messages, as the sft row holds them. (selection.require=gates: the fake's
    varied answers often score 0, which the default reward floor would keep from every turn.)"""
    out = tmp_path / "run"
    with FakeOpenAI(Script(varied=True)) as server:
        extra = ("n_prompts=6", "conversation.turns=3", "conversation.user=openai_compat", "selection.require=gates")
        result = arbitrage(*api_args(server, out, *extra, "report=false", "progress=false"))
    longer = [r for r in rows(out, "sft") if r["turn"] > 1]
    assert any(r["turn"] == 3 for r in longer), result.stderr[-3000:]
    folder = RunView(out, background_index=False)
    for row in longer:
        d = folder.prompt(row["conversation_id"])
        users = [m["content"] for m in row["messages"] if m["role"] == "user"]
        assert [m["content"] for t in d["turns"][: row["turn"]] for m in t["messages"] if m["role"] == "user"] == users
        assert len(set(users)) == len(users)  # each turn its own follow-up
        assert [t["chosen"] for t in d["turns"][: row["turn"]]] == row["turn_teachers"]
        assert all([c["teacher"] for c in d["candidates"] if c["turn"] == t["turn"]] == list(TEACHERS) for t in d["turns"])
