"""`arbitrage view`: the pager and filters over a run folder's parquet, the live journal view, the
server, the export, and the page itself in headless Chromium (Debian's package)."""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from dataclasses import asdict

import pytest
from browser import Chromium, artifacts_dir, executable
from test_cli import arbitrage

from arbitrage.analysis import report
from arbitrage.cost import LOCAL_PRICE
from arbitrage.engine.journal import Journal
from arbitrage.output import card, dataset
from arbitrage.routers import Route
from arbitrage.rows import Candidate, Prompt, Scored
from arbitrage.select import SelectionSpec, select
from arbitrage.stats import RunStats, RunSummary
from arbitrage.view import assets
from arbitrage.view.export import export
from arbitrage.view.folder import RunView
from arbitrage.view.pager import Query, RunData
from arbitrage.view.server import make_server, url_of

XSS = '<script>alert(1)</script> and </script><img src=x onerror="window.__pwned=1"> the answer is 12'
MARKDOWN = "## Result\n\nThe **answer** is `299`:\n\n```python\nprint(299)\n```\n\n- first\n- second"
CONSTRAINTS = (
    {"type": "punctuation:no_comma"},
    {"type": "keywords:frequency", "keyword": "data", "frequency": 2, "relation": "at least"},
)
# prompt id, language, task, [(teacher, text, score, filtered, error)]
PROMPTS = [
    ("p0", "en", "math", [("a", MARKDOWN, 1.0, None, None), ("b", XSS, 0.0, None, None)]),
    ("p1", "de", "explain", [("a", "Eine Antwort.", 0.5, None, None), ("b", "Noch eine Antwort.", 0.5, None, None)]),
    (
        "p2",
        "es",
        "write",
        [("a", "cut off", 1.0, "truncated: cut off at max_tokens", None), ("b", "Una respuesta.", 0.5, None, None)],
    ),
    ("p3", "fr", "code", [("a", None, None, None, "HTTP 500"), ("b", None, None, None, "HTTP 500")]),
    ("p4", "en", "email", [("a", "Dear colleague", 1.0, None, None), ("b", "Hola", 0.0, "wrong_language: answer is 'es'", None)]),
    ("p5", "it", "math", [("a", "Il risultato è 42", 2 / 3, None, None), ("b", "Zanzibar 41", 1 / 3, None, None)]),
]


def write_run(out, flush_rows=4096):
    """A run folder written by the real writer, card, stats and report (two teachers, six prompts)."""
    selections = []
    for pid, language, task, answers in PROMPTS:
        messages = ({"role": "user", "content": f"Question {pid} in {language}: what is 28 × 3 + 215?"},)
        p = Prompt(pid, f"{language}-test-01", language, "science", task, "t", messages, CONSTRAINTS)
        scored = []
        for teacher, text, score, filtered, error in answers:
            c = Candidate(f"{pid}-{teacher}", pid, teacher, text, "stop", 11, 22, 0.25, 1, error, 500 if error else None)
            checks = {"punctuation:no_comma": bool(score and score > 0.6), "keywords:frequency": score == 1.0}
            breakdown = {} if error else {"checks": checks, "loose": {**checks, "keywords:frequency": True}}
            scored.append(Scored(c, score, breakdown, filtered))
        selections.append(select(p, Route(("a", "b"), "all"), scored, SelectionSpec()))
    writer, stats = dataset.DatasetWriter(out, flush_rows=flush_rows), RunStats(["a", "b"])
    for s in selections:  # one at a time, so small flush_rows makes several row groups
        writer.add([s])
        stats.add([s])
    summary = RunSummary(str(out), router="all", reward="verifiable", timings_s={"total_s": 1.0}, **stats.coverage())
    config = {"output": {"min_margin": 0.01, "pairs": "worst"}}
    writer.commit(lambda paths: card.render(out, paths, summary, config, writer.samples.get("sft")))
    summary.save(out / "summary.json")
    # What the run records of its teachers (pipeline.run_facts): a is local and free, b unpriced.
    teachers = {"a": {"kind": "VLLMTeacher", "price": asdict(LOCAL_PRICE)}, "b": {"kind": "OpenAICompatTeacher", "price": None}}
    facts = {"teachers": teachers, "selection": asdict(SelectionSpec()), "source": {"kind": "personas", "files": []}}
    (out / "run.json").write_text(json.dumps({"facts": facts}))
    report.write(out)
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("view") / "run", flush_rows=2)


def ids(page):
    return [r["prompt_id"] for r in page["rows"]]


# ---- pager, index and filters (no browser) ----


def test_index_lists_sft_then_rejected_rows_with_facets(run_dir):
    data = RunData(run_dir, background=False)
    assert data.tables["sft"].file.num_row_groups > 1  # the pager really crosses row groups
    page = data.query(Query(), 0, 50)
    assert ids(page) == ["p0", "p1", "p2", "p4", "p5", "p3"] and page["total"] == 6 and page["next"] is None
    meta = data.meta()
    assert meta["facets"]["language"] == {"en": 2, "de": 1, "es": 1, "fr": 1, "it": 1}
    assert meta["facets"]["status"] == {"pair": 3, "no_pair": 2, "rejected": 1, "tie": 1}
    assert meta["facets"]["filtered"] == {"truncated": 1, "wrong_language": 1}
    assert meta["facets"]["reason"] == {"no usable candidate": 1}
    first = data.query(Query(), 0, 2)
    assert ids(first) == ["p0", "p1"] and first["next"] == 2
    assert ids(data.query(Query(), first["next"], 2)) == ["p2", "p4"]


@pytest.mark.parametrize(
    "facets, expected",
    [
        ({"language": "en"}, ["p0", "p4"]),
        ({"winner": "b"}, ["p1", "p2"]),  # p1: the tie-break draw picked b
        ({"status": "tie"}, ["p1"]),
        ({"status": "rejected"}, ["p3"]),
        ({"status": "pair"}, ["p0", "p4", "p5"]),
        ({"filtered": "truncated"}, ["p2"]),
        ({"reason": "no usable candidate"}, ["p3"]),
        ({"language": "en", "task": "email"}, ["p4"]),
        ({"language": "xx"}, []),
    ],
)
def test_facet_filters(run_dir, facets, expected):
    page = RunData(run_dir, background=False).query(Query(facets), 0, 50)
    assert ids(page) == expected and page["total"] == len(expected)


@pytest.mark.parametrize(
    "query, expected",
    [
        (Query(text="zanzibar"), ["p5"]),  # a rejected answer's text
        (Query(text="QUESTION P4"), ["p4"]),  # prompt text, case-insensitive
        (Query(text="p3"), ["p3"]),  # a prompt id
        (Query(text="</script>"), ["p0"]),
        (Query(check="punctuation:no_comma", verdict="fail"), ["p1", "p2"]),  # the chosen answer's verdict
        (Query(check="punctuation:no_comma", verdict="fail", on="any"), ["p0", "p1", "p2", "p4", "p5"]),
        (Query({"language": "en"}, check="keywords:frequency", verdict="pass"), ["p0", "p4"]),
    ],
)
def test_scanned_filters(run_dir, query, expected):
    data = RunData(run_dir, background=False)
    page = data.query(query, 0, 50)
    assert ids(page) == expected and page["next"] is None and page["scanned"] == data.n


def test_a_scan_pages_from_its_cursor_and_resumes_after_its_time_budget(run_dir):
    data = RunData(run_dir, background=False)
    query = Query(check="punctuation:no_comma", verdict="fail", on="any")
    seen, cursor, calls = [], 0, 0
    while cursor is not None:
        page = data.query(query, cursor, 2, budget_s=0.0)  # stops after each row group
        seen += ids(page)
        cursor, calls = page["next"], calls + 1
        assert page["total"] is None
    assert seen == ["p0", "p1", "p2", "p4", "p5"] and calls > 3


def test_detail_shows_answers_checks_and_why(run_dir):
    folder = RunView(run_dir, background_index=False)
    d = folder.prompt("p0")
    assert d["status"] == "pair" and [c["id"] for c in d["constraints"]] == ["punctuation:no_comma", "keywords:frequency"]
    assert d["constraints"][1]["args"] == {"keyword": "data", "frequency": 2, "relation": "at least"}
    a, b = d["candidates"]
    assert a["chosen"] and not a["rejected"] and b["rejected"] and b["response"] == XSS
    assert {c["id"]: c["ok"] for c in a["checks"]} == {"punctuation:no_comma": True, "keywords:frequency": True}
    assert a["tokens_in"] == 11 and a["latency_s"] == 0.25 and a["usd"] == 0.0  # teacher a is local: free
    assert b["usd"] is None  # no price known for b
    assert any(line.startswith("Chosen: a#0") for line in d["explain"]) and any("margin 1.000" in line for line in d["explain"])
    tie = folder.prompt("p1")
    assert tie["tie"] and any(line.startswith("Tie: a#0, b#0") for line in tie["explain"])
    assert any("all candidates tie" in line for line in tie["explain"])
    filtered = folder.prompt("p2")
    assert any("scored higher (1.000) but was kept from being chosen: truncated" in line for line in filtered["explain"])
    rejected = folder.prompt("p3")
    assert rejected["status"] == "rejected" and "no usable candidate" in rejected["explain"][0]
    assert all(c["error"] == "HTTP 500" and c["last_status"] == 500 for c in rejected["candidates"])


def test_live_run_without_a_dataset_shows_the_journal(tmp_path):
    run = tmp_path / "live"
    journal = Journal(run / "journal")
    journal.append([Candidate(f"c{i}", f"q{i // 2}", "ab"[i % 2], f"answer {i}", "stop", 5, 7, 0.5, 1) for i in range(5)])
    journal.close()
    folder = RunView(run)
    meta = folder.meta()
    assert meta["mode"] == "journal" and meta["n"] == 3 and meta["live"]["running"] and meta["live"]["calls"] == 5
    page = folder.prompts({"limit": "2"})
    assert ids(page) == ["q0", "q1"] and page["next"] == 2 and page["rows"][0]["n_candidates"] == 2
    d = folder.prompt("q1")
    assert [c["response"] for c in d["candidates"]] == ["answer 2", "answer 3"]
    with (run / "journal" / "calls.jsonl").open("a") as f:  # a line being written is not read yet
        f.write(json.dumps(vars(Candidate("c9", "q9", "a", "late", "stop", 1, 1, 0.1, 1))) + "\n" + '{"call_id": "torn')
    assert folder.meta()["n"] == 4 and folder.live()["teachers"]["a"]["calls"] == 4


def test_a_rerun_swapping_the_dataset_is_picked_up(tmp_path):
    run = write_run(tmp_path / "run")
    folder = RunView(run, background_index=False)
    assert folder.meta()["n"] == 6 and not folder.live()["running"]
    before = folder.data()
    card_text = (run / "README.md").read_text()
    (run / "README.md").write_text(card_text + "\n")  # what a commit's rename of the card looks like
    assert folder.data() is not before


def test_errors_name_the_fix(tmp_path):
    missing = arbitrage("view", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "is not a folder" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    empty = arbitrage("view", str(tmp_path / "empty"), "--export", str(tmp_path / "x.html"))
    assert empty.returncode == 2 and "holds no arbitrage run" in empty.stderr
    with pytest.raises(ValueError, match="unknown filter"):
        Query({"colour": "red"})


# ---- server and export ----


@pytest.fixture(scope="module")
def served(run_dir):
    server = make_server(RunView(run_dir), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield url_of(server)
    server.shutdown()
    server.server_close()


def get(url, host=None):
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_server_answers_json_and_refuses_what_it_should(served):
    status, headers, body = get(served)
    assert status == 200 and "script-src 'self'" in headers["Content-Security-Policy"] and b"static/app.js" in body
    assert b"http" not in body.replace(b"http-equiv", b"")  # nothing from outside: no URL in the page
    status, _, body = get(served + "api/prompts?language=de")
    assert status == 200 and ids(json.loads(body)) == ["p1"]
    assert get(served + "api/prompts?status=nope")[0] == 400
    assert get(served + "api/prompt/nope")[0] == 404
    assert get(served + "figure/win_rate.svg")[0] == 200
    assert get(served + "figure/..%2Fconfig.yaml")[0] == 404
    assert get(served + "api/meta", host="attacker.example")[0] == 403  # DNS rebinding


def test_export_embeds_data_that_cannot_break_out_of_its_script(run_dir, tmp_path):
    data = {"text": "</script><script>alert(1)</script><!-- \u2028"}
    text = assets.script_json(data)
    assert "<" not in text and ">" not in text and json.loads(text) == data
    out = export(run_dir, tmp_path / "view.html", limit=4)
    html = out.read_text()
    body = html.split('id="arbitrage-data">', 1)[1].split("</script>", 1)[0]
    embedded = json.loads(body)
    assert [r["prompt_id"] for r in embedded["prompts"]] == ["p0", "p1", "p2", "p4"]
    assert embedded["details"]["p0"]["candidates"][1]["response"] == XSS
    assert embedded["summary"]["figure_data"]["win_rate.svg"].startswith("data:image/svg+xml;base64,")
    assert html.count("<script") == 4 and "http://" not in html and "https://" not in html
    cli = arbitrage("view", str(run_dir), "--export", str(tmp_path / "cli.html"), "--limit", "2")
    assert cli.returncode == 0 and "wrote" in cli.stdout and (tmp_path / "cli.html").exists()


# ---- the page in a real browser ----


def _browser_or_skip():
    if executable():
        return
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.fail("chromium is missing: `make install` installs Debian's package as root (apt-get install -y chromium)")
    pytest.skip(
        "chromium is not installed and this user cannot install it: run `make install` as root (apt-get install -y chromium)"
    )


@pytest.fixture
def browser(tmp_path):
    _browser_or_skip()
    chrome = Chromium(tmp_path / "profile")
    yield chrome
    chrome.close()


ROWS = "document.querySelectorAll('#list .prompt-row').length"


def set_select(browser, selector, value):
    browser.eval(
        f"(() => {{ const s = document.querySelector({json.dumps(selector)}); s.value = {json.dumps(value)};"
        " s.dispatchEvent(new Event('change')); })()"
    )


def test_page_filters_searches_opens_prompts_and_escapes_answers(browser, served, tmp_path):
    browser.goto(served)
    browser.wait("document.body.dataset.ready === '1'")
    assert browser.eval(ROWS) == 6
    browser.wait("!!document.querySelector('#f-language')")
    set_select(browser, "#f-language", "en")
    browser.wait(f"{ROWS} === 2")
    assert browser.eval("location.hash").endswith("language=en")
    browser.eval("document.querySelector('#clear').click()")
    browser.wait(f"{ROWS} === 6")

    browser.press("/")
    assert browser.eval("document.activeElement.id") == "search"
    browser.type("zanzibar")
    browser.press("Enter")
    browser.wait(f"{ROWS} === 1 && document.querySelector('#list .prompt-row').dataset.id === 'p5'")
    browser.eval("document.querySelector('#clear').click()")
    browser.wait(f"{ROWS} === 6")
    browser.eval("document.activeElement.blur()")

    browser.press("j")  # the first prompt: p0, markdown answer and the hostile one side by side
    browser.wait("document.querySelectorAll('#candidates .candidate').length === 2")
    assert browser.eval("location.hash").startswith("#/p/p0")
    chosen = "#candidates .candidate.is-chosen"
    assert browser.eval(f"document.querySelector('{chosen}').dataset.teacher") == "a"
    assert browser.eval(f"document.querySelectorAll('{chosen} .check.ok').length") == 2
    assert browser.eval("document.querySelectorAll('#candidates .is-rejected .check.fail').length") == 2
    assert browser.eval(f"!!document.querySelector('{chosen} .md pre code.language-python')")
    assert browser.eval(f"document.querySelector('{chosen} .md h2').textContent") == "Result"
    hostile = "#candidates .is-rejected .answer"
    assert browser.eval(f"document.querySelector('{hostile}').textContent") == XSS
    assert browser.eval("document.querySelectorAll('#detail script, #detail img').length") == 0
    assert browser.eval("window.__pwned === undefined") and browser.dialogs == []
    browser.press("r")  # raw text
    browser.wait(
        f"document.querySelector('{hostile} pre.raw') && document.querySelector('{hostile} pre.raw').textContent === {json.dumps(XSS)}"
    )
    browser.press("r")
    browser.press("j")
    browser.wait("location.hash.startsWith('#/p/p1')")
    assert "Tie: a#0, b#0" in browser.eval("document.querySelector('#explain').textContent")
    browser.screenshot(artifacts_dir(tmp_path) / "view-prompt.png")

    browser.press("s")  # the run's summary: the report's tables and figures
    browser.wait("!!document.querySelector('#report img')")
    assert browser.eval("document.querySelector('#report img').getAttribute('src')").startswith("figure/")
    browser.wait("document.querySelector('#report img').complete && document.querySelector('#report img').naturalWidth > 0")
    shot = browser.screenshot(artifacts_dir(tmp_path) / "view-summary.png")
    assert shot.stat().st_size > 10_000

    browser.goto(served + "#/p/p4")  # a shared link opens its prompt
    browser.wait("document.querySelector('#detail code') && document.querySelector('#detail code').textContent === 'p4'")
    assert browser.errors() == [] and browser.dialogs == []


def test_export_opens_from_file_without_a_server(browser, run_dir, tmp_path):
    out = export(run_dir, tmp_path / "view.html", limit=5)
    browser.goto(out.as_uri())
    browser.wait("document.body.dataset.ready === '1'")
    assert browser.eval(ROWS) == 5
    set_select(browser, "#f-status", "pair")
    browser.wait(f"{ROWS} === 3")
    browser.goto(out.as_uri() + "#/p/p0")
    browser.wait("document.querySelectorAll('#candidates .candidate').length === 2")
    assert browser.eval("document.querySelector('#candidates .is-rejected .answer').textContent") == XSS
    assert browser.eval("window.__pwned === undefined") and browser.dialogs == []
    assert browser.errors() == []
    browser.screenshot(artifacts_dir(tmp_path) / "view-export.png")


@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_the_viewer_binds_an_ipv6_loopback(run_dir, host):
    server = make_server(RunView(run_dir), host, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = url_of(server)
        assert url.startswith("http://[::1]:")
        status, _, body = get(url + "api/meta")
        assert status == 200 and json.loads(body)
    finally:
        server.shutdown()
        server.server_close()


def test_gates_in_the_detail_view_and_rows_from_before_typed_verdicts():
    """A gate-failing answer that scored higher is explained, and is the correct-vs-wrong pair's
    rejected side; rows written before typed verdicts (checks under a `verifiable` part) still read."""
    from arbitrage.view import detail

    def row(teacher, score, checks, gates=(), chosen=False):
        base = {"teacher": teacher, "sample": 0, "response": f"answer {teacher}", "tokens_in": 1, "tokens_out": 1}
        details = {"checks": checks, "gates": list(gates), "loose": checks}
        return {**base, "score": score, "score_details": json.dumps(details), "chosen": chosen, "filtered": None}

    right = detail.candidate(
        row("a", 0.5, {"arbitrage:final_number": True, "punctuation:no_comma": False}, ["arbitrage:final_number"], True), None
    )
    wrong = detail.candidate(
        row("b", 1.0, {"arbitrage:final_number": False, "punctuation:no_comma": True}, ["arbitrage:final_number"]), None
    )
    assert right["checks"][0] == {"id": "arbitrage:final_number", "ok": True, "loose": True, "gate": True}
    assert wrong["failed_gates"] == ["arbitrage:final_number"] and "gates" not in wrong["scorer"]
    wrong["rejected"] = True
    dpo = {"teacher_rejected": "b", "score_rejected": 1.0, "margin": -0.5}
    lines = detail.explain([right, wrong], dpo, {"gates": True}, None)
    assert lines[0].startswith("Chosen: a#0, the best score among 1 answer(s)")
    assert "b#0 scored higher (1.000) but was kept from being chosen: fails the gate arbitrage:final_number." in lines
    assert lines[-1].startswith("Rejected: b (1.000), an answer that fails the gate arbitrage:final_number")

    old = {"verifiable": {"score": 1.0, "checks": {"punctuation:no_comma": True}, "loose": {"punctuation:no_comma": True}}}
    before = detail.candidate(
        {"teacher": "a", "score": 1.0, "score_details": json.dumps(old), "tokens_in": 1, "tokens_out": 1}, None
    )
    assert before["checks"] == [{"id": "punctuation:no_comma", "ok": True, "loose": True, "gate": False}]
