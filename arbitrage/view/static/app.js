// arbitrage view: the prompt list with filters and search, one prompt at a time (every teacher's
// answers, checks, costs, and why one was chosen), and the run's summary. A multi-turn run lists
// conversations, and shows one turn by turn (each user message, then every teacher's answers). Data comes from the
// local server's JSON endpoints, or from the JSON embedded in an exported file (no server).
// Every piece of text from the run goes into the page as a text node, or through the markdown
// renderer, which escapes it first.
(function () {
  "use strict";

  var md = window.ArbitrageMarkdown;
  var FACET_LABELS = {
    language: "language", task: "task", domain: "domain", persona_id: "persona", winner: "winning teacher",
    decision: "router decision", status: "status", filtered: "answer filtered by", reason: "rejected because",
    turns: "turns kept", teachers: "teachers per turn",
  };
  var TURN_STATUS = { pair: "chosen + rejected (DPO pair)", no_pair: "chosen, no pair", failed: "no answer chosen" };
  var STATUS_LABELS = { pair: "chosen + rejected (DPO pair)", no_pair: "chosen, no pair", rejected: "rejected row (no answer chosen)", tie: "tie at the top" };
  var PAGE = 50;

  // ---- DOM helpers: text is always a text node ----
  function h(tag, attrs) {
    var el = document.createElement(tag);
    var a = attrs || {};
    Object.keys(a).forEach(function (k) {
      var v = a[k];
      if (v === null || v === undefined || v === false) return;
      if (k === "text") el.textContent = String(v);
      else if (k.slice(0, 2) === "on") el.addEventListener(k.slice(2), v);
      else if (k === "html") el.innerHTML = v; // only ever the markdown renderer's output
      else el.setAttribute(k, v === true ? "" : String(v));
    });
    for (var i = 2; i < arguments.length; i++) append(el, arguments[i]);
    return el;
  }
  function append(el, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) child.forEach(function (c) { append(el, c); });
    else el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }
  function fmt(x, digits) { return x === null || x === undefined ? "—" : Number(x).toFixed(digits === undefined ? 3 : digits); }
  function usd(x) { return x === null || x === undefined ? "—" : "$" + Number(x).toFixed(x && x < 0.01 ? 6 : 4); }

  var kind = window.ArbitrageSources.kind;
  var embedded = document.getElementById("arbitrage-data");
  var source = embedded ? window.ArbitrageSources.embedded(JSON.parse(embedded.textContent)) : window.ArbitrageSources.http();

  // ---- state and URL: #/p/<prompt_id>?filters or #/summary?filters ----
  var state = { meta: null, query: {}, rows: [], next: null, total: null, scanned: 0, selected: -1, detail: null, raw: false, tab: "prompts", loading: false, seq: 0, openSeq: 0 };

  function readHash() {
    var hash = location.hash.replace(/^#/, "");
    var parts = hash.split("?");
    var route = parts[0] || "/";
    var query = {};
    new URLSearchParams(parts[1] || "").forEach(function (v, k) { if (v) query[k] = v; });
    var m = /^\/p\/(.+)$/.exec(route);
    return { tab: route === "/summary" ? "summary" : "prompts", prompt: m ? decodeURIComponent(m[1]) : null, query: query };
  }
  function writeHash(promptId) {
    var q = new URLSearchParams(state.query).toString();
    var route = state.tab === "summary" ? "/summary" : promptId ? "/p/" + encodeURIComponent(promptId) : "/";
    var hash = "#" + route + (q ? "?" + q : "");
    if (location.hash !== hash) history.replaceState(null, "", hash);
  }

  // ---- layout ----
  var app = document.getElementById("app");
  var ui = {};
  function layout() {
    clear(app);
    ui.tabs = h("nav", { class: "tabs" },
      h("button", { id: "tab-prompts", onclick: function () { switchTab("prompts"); } }, "Prompts"),
      h("button", { id: "tab-summary", onclick: function () { switchTab("summary"); } }, "Summary"));
    ui.badge = h("span", { class: "badges" });
    ui.header = h("header", {}, h("h1", { text: state.meta.name }), ui.badge, ui.tabs,
      h("span", { class: "keys", text: "j/k next/previous · / search · r raw · s summary" }));
    ui.filters = h("div", { class: "filters", id: "filters" });
    ui.count = h("div", { id: "count", class: "count" });
    ui.list = h("ol", { id: "list", class: "list" });
    ui.more = h("button", { id: "more", class: "more", onclick: function () { load(false); } }, "Load more");
    ui.detail = h("section", { id: "detail", class: "detail" }, h("p", { class: "hint", text: "Pick a prompt on the left (or press j)." }));
    ui.prompts = h("div", { id: "prompts", class: "split" }, h("div", { class: "side" }, ui.count, ui.list, ui.more), ui.detail);
    ui.summary = h("section", { id: "summary", class: "summary", hidden: true });
    append(app, [ui.header, ui.filters, ui.prompts, ui.summary]);
  }

  function renderBadges() {
    var meta = state.meta;
    var entries = meta.conversations ? " conversations" : " prompts";
    var badges = [h("span", { class: "badge", text: meta.mode === "journal" ? "live: answers from the journal" : (meta.n + entries) })];
    if (meta.live && meta.live.running) badges.push(h("span", { class: "badge live", id: "live", text: "run going · " + meta.live.calls + " calls journaled" }));
    if (!meta.indexed) badges.push(h("span", { class: "badge", text: "indexing…" }));
    if (meta.index_error) badges.push(h("span", { class: "badge bad", text: "index: " + meta.index_error }));
    if (meta.exported) badges.push(h("span", { class: "badge", text: "export: first " + meta.n + " of " + meta.run_n + entries }));
    clear(ui.badge);
    append(ui.badge, badges);
  }

  function renderFilters() {
    var facets = state.meta.facets || {};
    clear(ui.filters);
    function select(name, values, labels) {
      var label = name === "winner" && state.meta.conversations ? "last turn's winner" : FACET_LABELS[name] || name;
      var sel = h("select", { name: name, id: "f-" + name, "aria-label": label, onchange: function () { setQuery(name, sel.value); } },
        h("option", { value: "" }, label + ": any"));
      Object.keys(values || {}).forEach(function (v) {
        append(sel, h("option", { value: v, selected: state.query[name] === v }, (labels && labels[v] ? labels[v] : v) + " (" + values[v] + ")"));
      });
      return sel;
    }
    var names = ["language", "task", "domain", "winner", "decision", "persona_id", "status", "filtered", "reason"];
    if (state.meta.conversations) names = names.concat(["turns", "teachers"]);
    names.forEach(function (name) {
      var values = facets[name];
      if (values && Object.keys(values).length) append(ui.filters, select(name, values, name === "status" ? STATUS_LABELS : null));
    });
    var checks = state.meta.checks || collectChecks();
    if (checks.length) {
      var check = h("select", { id: "f-check", "aria-label": "check", onchange: function () { setQuery("check", check.value); } }, h("option", { value: "" }, "check: any"));
      checks.forEach(function (c) { append(check, h("option", { value: c, selected: state.query.check === c }, c)); });
      var verdict = h("select", { id: "f-verdict", onchange: function () { setQuery("verdict", verdict.value); } },
        h("option", { value: "fail", selected: state.query.verdict !== "pass" }, "✗ failed"),
        h("option", { value: "pass", selected: state.query.verdict === "pass" }, "✓ passed"));
      var on = h("select", { id: "f-on", onchange: function () { setQuery("on", on.value); } },
        h("option", { value: "chosen", selected: state.query.on !== "any" }, "by the chosen answer"),
        h("option", { value: "any", selected: state.query.on === "any" }, "by any answer"));
      append(ui.filters, h("span", { class: "group" }, check, verdict, on));
    }
    ui.search = h("input", { id: "search", type: "search", placeholder: "search prompts and answers  ( / )", value: state.query.q || "" });
    ui.search.addEventListener("keydown", function (e) {
      if (e.key === "Enter") setQuery("q", ui.search.value.trim());
      if (e.key === "Escape") ui.search.blur();
    });
    append(ui.filters, [ui.search, h("button", { id: "clear", onclick: function () { state.query = {}; renderFilters(); load(true); } }, "Clear")]);
  }

  function collectChecks() {
    var summary = state.summary && state.summary.summary;
    return summary && summary.checks ? Object.keys(summary.checks).sort() : [];
  }

  function setQuery(name, value) {
    if (value) state.query[name] = value; else delete state.query[name];
    if (name === "verdict" || name === "on") { if (!state.query.check) { writeHash(); return; } }
    load(true);
  }

  // ---- the list ----
  function load(reset) {
    var seq = ++state.seq;
    if (reset) { state.rows = []; state.next = 0; state.selected = -1; clear(ui.list); }
    if (state.next === null) return Promise.resolve();
    state.loading = true;
    ui.count.textContent = "Loading…";
    writeHash(state.detail && state.detail.prompt_id);
    return source.prompts(state.query, state.next, PAGE).then(function (page) {
      if (seq !== state.seq) return;
      state.loading = false;
      page.rows.forEach(function (row) { state.rows.push(row); append(ui.list, listItem(row, state.rows.length - 1)); });
      state.next = page.next;
      state.total = page.total;
      state.scanned = page.scanned;
      renderCount(page);
      // A scanned filter returns after its time budget: keep scanning until a page shows.
      if (state.rows.length < PAGE && page.next !== null && page.total === null) return load(false);
    }).catch(function (err) { ui.count.textContent = "Error: " + err.message; });
  }

  function renderCount(page) {
    var shown = state.rows.length;
    var text;
    var entries = state.meta && state.meta.conversations ? " conversations" : " prompts";
    if (page.total !== null && page.total !== undefined) text = shown + " of " + page.total + entries;
    else text = shown + " matches · searched " + Math.round((100 * (page.scanned || 0)) / Math.max(1, page.n)) + "% of " + page.n;
    ui.count.textContent = text;
    ui.more.hidden = page.next === null;
  }

  function isConversation(row) { return (row.turns || 0) > 1 || (row.answered || 0) > 1; }

  function listItem(row, i) {
    var tags = [row.language, row.task, row.domain].filter(Boolean).map(function (t) { return h("span", { class: "tag", text: t }); });
    if (isConversation(row)) tags.push(h("span", { class: "tag turns", title: "turns kept" + (row.answered ? " (of " + row.answered + " answered)" : ""), text: row.turns + (row.turns === 1 ? " turn" : " turns") }));
    var outcome = row.winner && isConversation(row) ? h("span", { class: "winner", title: "teacher chosen per turn", text: "★ " + (row.turn_teachers || []).join(" → ") })
      : row.winner ? h("span", { class: "winner", text: "★ " + row.winner + (row.score !== null && row.score !== undefined ? " " + fmt(row.score, 2) : "") })
      : row.reason ? h("span", { class: "rejected", title: row.reason, text: "✗ " + (isConversation(row) ? String(row.reason).replace(/\s*\([\s\S]*$/, "") : kind(row.reason)) }) : h("span", { class: "winner", text: (row.n_candidates || 0) + " answers so far" });
    var flags = [row.pair ? h("span", { class: "flag", title: "DPO pair", text: "pair" }) : null, row.tie ? h("span", { class: "flag", title: "tie at the top", text: "tie" }) : null];
    return h("li", { class: "prompt-row", "data-id": row.prompt_id, "data-i": i, tabindex: "0",
      onclick: function () { select(i); } },
      h("div", { class: "row-head" }, h("code", { text: isConversation(row) ? row.conversation_id : row.prompt_id }), tags, flags, outcome),
      h("div", { class: "snippet", text: row.text || "" }));
  }

  function select(i) {
    if (i < 0 || i >= state.rows.length) return;
    state.selected = i;
    Array.prototype.forEach.call(ui.list.children, function (li) { li.classList.toggle("selected", Number(li.getAttribute("data-i")) === i); });
    var li = ui.list.children[i];
    if (li && li.scrollIntoView) li.scrollIntoView({ block: "nearest" });
    open(state.rows[i].prompt_id);
    if (i >= state.rows.length - 3 && state.next !== null && !state.loading) load(false);
  }

  function open(id) {
    var seq = ++state.openSeq;
    return source.prompt(id).then(function (d) {
      if (seq !== state.openSeq) return;
      state.detail = d;
      writeHash(d.prompt_id);
      renderDetail();
    }).catch(function (err) { clear(ui.detail); append(ui.detail, h("p", { class: "error", text: "Could not open " + id + ": " + err.message })); });
  }

  // ---- one prompt ----
  function renderDetail() {
    var d = state.detail;
    clear(ui.detail);
    if (d.turns && d.turns.length > 1) return renderConversation(d);
    var argsOf = {};
    (d.constraints || []).forEach(function (c) { argsOf[c.id] = c.args; });
    var head = h("div", { class: "detail-head" },
      h("h2", {}, h("code", { text: d.prompt_id }), " ", h("span", { class: "status " + d.status, text: STATUS_LABELS[d.status] || d.status })),
      h("button", { id: "raw", class: "toggle", "aria-pressed": String(state.raw), onclick: toggleRaw }, state.raw ? "rendered" : "raw"),
      h("div", { class: "tags" }, [d.language, d.task, d.domain, d.decision && "router: " + d.decision].filter(Boolean).map(function (t) { return h("span", { class: "tag", text: t }); })));
    var persona = d.persona_id ? h("p", { class: "persona" }, h("strong", { text: "Persona " + d.persona_id }), d.persona ? " — " + d.persona : "") : null;
    var messages = (d.messages || []).map(function (m) {
      return h("div", { class: "message " + m.role }, h("div", { class: "role", text: m.role }), text(m.content));
    });
    var constraints = d.constraints && d.constraints.length ? h("ul", { class: "constraints" }, d.constraints.map(function (c) {
      return h("li", {}, h("code", { text: c.id }), Object.keys(c.args || {}).length ? " " + JSON.stringify(c.args) : "");
    })) : null;
    var why = h("ul", { class: "explain", id: "explain" }, (d.explain || []).map(function (line) { return h("li", { text: line }); }));
    var cards = h("div", { class: "candidates", id: "candidates" }, (d.candidates || []).map(function (c) { return card(c, argsOf); }));
    append(ui.detail, [head, persona, h("h3", { text: "Prompt" }), messages, constraints ? [h("h3", { text: "Constraints" }), constraints] : null,
      h("h3", { text: "Selection" }), why, h("h3", { text: "Answers (" + (d.candidates || []).length + ")" }), cards]);
  }

  // ---- one conversation, turn by turn ----
  function renderConversation(d) {
    var head = h("div", { class: "detail-head" },
      h("h2", {}, "conversation ", h("code", { text: d.conversation_id }), " ", h("span", { class: "status " + d.status, text: STATUS_LABELS[d.status] || d.status })),
      h("button", { id: "raw", class: "toggle", "aria-pressed": String(state.raw), onclick: toggleRaw }, state.raw ? "rendered" : "raw"),
      h("div", { class: "tags" }, [d.language, d.task, d.domain, d.decision && "router: " + d.decision, d.kept + " of " + d.answered + " turns kept"].filter(Boolean).map(function (t) { return h("span", { class: "tag", text: t }); })));
    var persona = d.persona_id ? h("p", { class: "persona" }, h("strong", { text: "Persona " + d.persona_id }), d.persona ? " — " + d.persona : "") : null;
    var why = h("ul", { class: "explain", id: "explain" }, (d.explain || []).map(function (line) { return h("li", { text: line }); }));
    var turns = h("ol", { class: "turns", id: "turns" }, d.turns.map(function (t) { return turnSection(t, d); }));
    append(ui.detail, [head, persona, h("h3", { text: "Conversation" }), why, turns]);
  }

  function turnSection(t, d) {
    var argsOf = {};
    (t.constraints || []).forEach(function (c) { argsOf[c.id] = c.args; });
    var answers = (d.candidates || []).filter(function (c) { return c.turn === t.turn; });
    var messages = t.messages ? t.messages.map(function (m) {
      return h("div", { class: "message " + m.role }, h("div", { class: "role", text: m.role }), text(m.content));
    }) : h("p", { class: "hint", text: "This turn's user message is in no row of the dataset: the conversation was kept to turn " + d.kept + ". Its answers are below." });
    var constraints = t.constraints && t.constraints.length ? h("div", { class: "turn-checks" }, h("span", { class: "muted", text: "Checks asked at this turn:" }),
      h("ul", { class: "constraints" }, t.constraints.map(function (c) {
        return h("li", {}, h("code", { text: c.id }), Object.keys(c.args || {}).length ? " " + JSON.stringify(c.args) : "");
      }))) : null;
    var outcome = t.chosen ? h("span", { class: "winner", text: "★ " + t.chosen }) : h("span", { class: "rejected", text: "✗ no answer chosen" });
    return h("li", { class: "turn turn-" + t.status, "data-turn": t.turn, "data-prompt-id": t.prompt_id || "" },
      h("div", { class: "turn-head" }, h("h3", { text: "Turn " + t.turn }), h("span", { class: "status " + t.status, text: TURN_STATUS[t.status] || t.status }),
        t.tie ? h("span", { class: "flag", text: "tie" }) : null, t.prompt_id ? h("code", { class: "muted", text: t.prompt_id }) : null, outcome),
      messages, constraints,
      h("div", { class: "muted", text: "Selection:" }),
      h("ul", { class: "explain turn-explain" }, (t.explain || []).map(function (line) { return h("li", { text: line }); })),
      h("div", { class: "candidates" }, answers.map(function (c) { return card(c, argsOf); })));
  }

  function text(content) {
    if (state.raw) return h("pre", { class: "raw", text: content || "" });
    return h("div", { class: "md", html: md.render(content || "") });
  }

  function card(c, argsOf) {
    var roles = [c.chosen ? h("span", { class: "role-chosen", text: "chosen" }) : null, c.rejected ? h("span", { class: "role-rejected", text: "rejected" }) : null];
    var problems = [c.filtered ? h("div", { class: "filtered", text: "filtered: " + c.filtered }) : null,
      c.error ? h("div", { class: "error", text: "error: " + c.error + (c.last_status ? " (HTTP " + c.last_status + ")" : "") }) : null];
    var checks = (c.checks || []).length ? h("ul", { class: "checks" }, c.checks.map(function (x) {
      var args = argsOf[x.id];
      var loose = x.loose !== null && x.loose !== undefined && x.loose !== x.ok ? " (loose " + (x.loose ? "✓" : "✗") + ")" : "";
      return h("li", { class: "check " + (x.ok ? "ok" : "fail"), "data-check": x.id },
        h("span", { class: "mark", text: x.ok ? "✓" : "✗" }), " ", h("code", { text: x.id }), x.gate ? h("span", { class: "gate", text: " gate" }) : null,
        args && Object.keys(args).length ? h("span", { class: "args", text: " " + JSON.stringify(args) }) : null, loose);
    })) : null;
    var scorer = c.scorer && Object.keys(c.scorer).length ? h("pre", { class: "scorer", text: JSON.stringify(c.scorer, null, 1) }) : null;
    var meta = h("div", { class: "meta" },
      "latency " + fmt(c.latency_s, 2) + " s · tokens " + (c.tokens_in || 0) + " → " + (c.tokens_out || 0) + " · cost " + usd(c.usd) +
      " · finish " + (c.finish_reason || "—") + (c.attempts > 1 ? " · " + c.attempts + " attempts" : ""));
    return h("article", { class: "candidate" + (c.chosen ? " is-chosen" : "") + (c.rejected ? " is-rejected" : ""), "data-teacher": c.teacher, "data-sample": c.sample },
      h("header", {}, h("strong", { text: c.teacher + (c.sample ? " #" + c.sample : "") }), roles,
        h("span", { class: "score", text: "score " + fmt(c.score) })),
      problems, checks, meta, scorer, h("div", { class: "answer" }, text(c.response)));
  }

  function toggleRaw() { state.raw = !state.raw; if (state.detail) renderDetail(); }

  // ---- the run's summary ----
  function renderSummary() {
    return source.summary().then(function (s) {
      state.summary = s;
      clear(ui.summary);
      var live = s.live || {};
      if (live.running) {
        var rows = Object.keys(live.teachers || {}).map(function (t) {
          var x = live.teachers[t];
          return h("tr", {}, [t, x.calls, x.failed, x.tokens_in, x.tokens_out, fmt(x.mean_latency_s, 2)].map(function (v) { return h("td", { text: v }); }));
        });
        append(ui.summary, h("div", { class: "live-panel", id: "live-panel" },
          h("h2", { text: "Run going: " + live.calls + " calls journaled for " + live.prompts + " prompts" }),
          h("table", {}, h("thead", {}, h("tr", {}, ["teacher", "calls", "failed", "tokens in", "tokens out", "mean latency (s)"].map(function (v) { return h("th", { text: v }); }))), h("tbody", {}, rows))));
      }
      var sm = s.summary;
      if (sm && sm.teachers && Object.keys(sm.teachers).length) {
        var trs = Object.keys(sm.teachers).map(function (t) {
          var x = sm.teachers[t];
          return h("tr", {}, [t, x.calls, x.failed, x.wins, fmt(x.mean_score), x.tokens_in, x.tokens_out, usd(x.usd)].map(function (v) { return h("td", { text: v }); }));
        });
        append(ui.summary, [h("h2", { text: "Calls, tokens and cost (summary.json)" }), h("table", { class: "teachers" },
          h("thead", {}, h("tr", {}, ["teacher", "calls", "failed", "wins", "mean score", "tokens in", "tokens out", "cost"].map(function (v) { return h("th", { text: v }); }))),
          h("tbody", {}, trs)), h("p", { text: "Spent " + usd(sm.spent_usd) + " · rows: " + Object.keys(sm.rows || {}).map(function (k) { return k + " " + sm.rows[k]; }).join(", ") })]);
      }
      if (s.report) {
        append(ui.summary, h("div", { class: "md report", id: "report", html: md.render(s.report, { image: function (src) {
          return (s.figures || []).indexOf(src) >= 0 ? source.figure(src) : null;
        } }) }));
      } else if (!live.running) {
        append(ui.summary, h("p", { text: "No report.md in this folder yet: `arbitrage report RUN_DIR` builds it." }));
      }
    });
  }

  function switchTab(tab) {
    state.tab = tab;
    ui.prompts.hidden = tab !== "prompts";
    ui.filters.hidden = tab !== "prompts";
    ui.summary.hidden = tab !== "summary";
    document.getElementById("tab-prompts").classList.toggle("active", tab === "prompts");
    document.getElementById("tab-summary").classList.toggle("active", tab === "summary");
    writeHash(state.detail && state.detail.prompt_id);
    if (tab === "summary") renderSummary();
  }

  // ---- keyboard ----
  document.addEventListener("keydown", function (e) {
    var typing = e.target && (e.target.tagName === "INPUT" || e.target.tagName === "SELECT" || e.target.tagName === "TEXTAREA");
    if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "j") { select(state.selected + 1); e.preventDefault(); }
    else if (e.key === "k") { select(Math.max(0, state.selected - 1)); e.preventDefault(); }
    else if (e.key === "/") { if (state.tab !== "prompts") switchTab("prompts"); ui.search.focus(); e.preventDefault(); }
    else if (e.key === "r") toggleRaw();
    else if (e.key === "s") switchTab(state.tab === "summary" ? "prompts" : "summary");
  });

  // A link pasted into this tab's address bar (replaceState above fires no hashchange).
  window.addEventListener("hashchange", function () {
    var target = readHash();
    if (target.tab !== state.tab) switchTab(target.tab);
    if (target.prompt && (!state.detail || state.detail.prompt_id !== target.prompt)) open(target.prompt);
  });

  // ---- start ----
  function refreshMeta() {
    return source.meta().then(function (meta) {
      var wasIndexed = state.meta && state.meta.indexed;
      state.meta = meta;
      renderBadges();
      if (meta.indexed && !wasIndexed) {
        renderFilters();
        // A first page before the index counts every row; a kept conversation's last turn is no entry.
        if (!Object.keys(state.query).length && state.total !== null && state.total !== undefined) {
          state.total = meta.n;
          renderCount({ total: meta.n, next: state.next, scanned: state.scanned, n: meta.n });
        }
      }
      var again = !meta.indexed ? 500 : (source.live && meta.live && meta.live.running ? 3000 : 0);
      if (again) setTimeout(function () {
        refreshMeta().then(function () { if (state.tab === "summary" && meta.live && meta.live.running) renderSummary(); });
      }, again);
    });
  }

  var start = readHash();
  state.query = start.query;
  source.meta().then(function (meta) {
    state.meta = meta;
    layout();
    renderBadges();
    renderFilters();
    switchTab(start.tab);
    if (!meta.indexed) setTimeout(refreshMeta, 500);
    else if (source.live && meta.live && meta.live.running) setTimeout(refreshMeta, 3000);
    // The checks for the check filter come from summary.json.
    source.summary().then(function (s) { state.summary = s; if (meta.indexed) renderFilters(); }).catch(function () {});
    return load(true).then(function () {
      if (start.prompt) {
        var i = state.rows.map(function (r) { return r.prompt_id; }).indexOf(start.prompt);
        if (i >= 0) select(i); else open(start.prompt);
      }
      document.body.setAttribute("data-ready", "1");
    });
  }).catch(function (err) {
    clear(app);
    append(app, h("p", { class: "error", text: "Could not read the run: " + err.message }));
  });
})();
