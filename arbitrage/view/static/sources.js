// Where the viewer's data comes from: the local server's JSON endpoints, or the JSON embedded in an
// exported file (then the filters run here, over the exported prompts, with the server's meaning).
(function () {
  "use strict";

  function httpSource() {
    function get(url) {
      return fetch(url, { headers: { Accept: "application/json" } }).then(function (r) {
        return r.json().then(function (body) {
          if (!r.ok) throw new Error(body.error || r.statusText);
          return body;
        });
      });
    }
    return {
      live: true,
      meta: function () { return get("api/meta"); },
      prompts: function (query, cursor, limit) {
        var params = new URLSearchParams(query);
        params.set("cursor", cursor);
        params.set("limit", limit);
        return get("api/prompts?" + params.toString());
      },
      prompt: function (id) { return get("api/prompt/" + encodeURIComponent(id)); },
      summary: function () { return get("api/summary"); },
      figure: function (name) { return "figure/" + encodeURIComponent(name); },
    };
  }

  function embeddedSource(data) {
    // Filters run here over the exported prompts, with the same meaning as the server's.
    var rows = data.prompts;
    function matches(row, q) {
      var d = data.details[row.prompt_id] || { candidates: [] };
      for (var k in q) {
        var v = q[k];
        if (!v || ["q", "check", "verdict", "on"].indexOf(k) >= 0) continue;
        if (k === "status") { if (v === "tie" ? !d.tie : d.status !== v) return false; }
        else if (k === "filtered") { if (!d.candidates.some(function (c) { return c.filtered && kind(c.filtered) === v; })) return false; }
        else if (k === "reason") { if (!row.reason || kind(row.reason) !== v) return false; }
        else if (String(row[k]) !== v) return false;
      }
      if (q.check) {
        var want = q.verdict !== "pass";
        var pool = q.on === "any" ? d.candidates : d.candidates.filter(function (c) { return c.chosen; });
        if (!pool.some(function (c) { return c.checks.some(function (x) { return x.id === q.check && x.ok !== want; }); })) return false;
      }
      if (q.q) {
        var needle = q.q.toLowerCase();
        var texts = [row.prompt_id, row.conversation_id || row.prompt_id].concat((d.messages || []).map(function (m) { return m.content; }), d.candidates.map(function (c) { return c.response || ""; }));
        if (!texts.some(function (t) { return String(t).toLowerCase().indexOf(needle) >= 0; })) return false;
      }
      return true;
    }
    // A multi-turn run's list is of conversations: how many turns each kept, its teachers per turn.
    var plain = ["language", "task", "domain", "persona_id", "winner", "decision"].concat(data.meta.conversations ? ["turns", "teachers"] : []);
    function facets() {
      var out = {};
      plain.forEach(function (k) { out[k] = {}; });
      out.status = {}; out.filtered = {}; out.reason = {};
      rows.forEach(function (row) {
        var d = data.details[row.prompt_id] || { candidates: [] };
        plain.forEach(function (k) {
          if (row[k] || row[k] === 0) out[k][row[k]] = (out[k][row[k]] || 0) + 1;
        });
        out.status[d.status] = (out.status[d.status] || 0) + 1;
        if (d.tie) out.status.tie = (out.status.tie || 0) + 1;
        if (row.reason) out.reason[kind(row.reason)] = (out.reason[kind(row.reason)] || 0) + 1;
        var seen = {};
        d.candidates.forEach(function (c) { if (c.filtered) seen[kind(c.filtered)] = 1; });
        Object.keys(seen).forEach(function (k) { out.filtered[k] = (out.filtered[k] || 0) + 1; });
      });
      return out;
    }
    return {
      live: false,
      meta: function () {
        var meta = Object.assign({}, data.meta, { facets: facets(), indexed: true });
        return Promise.resolve(meta);
      },
      prompts: function (query, cursor, limit) {
        var hits = rows.filter(function (r) { return matches(r, query); });
        var page = hits.slice(cursor, cursor + limit);
        return Promise.resolve({ rows: page, next: cursor + limit < hits.length ? cursor + limit : null, total: hits.length, n: rows.length });
      },
      prompt: function (id) {
        return data.details[id] ? Promise.resolve(data.details[id]) : Promise.reject(new Error("not in this export: " + id));
      },
      summary: function () { return Promise.resolve(data.summary); },
      figure: function (name) { return (data.summary.figure_data || {})[name] || null; },
    };
  }

  function kind(reason) { return String(reason).replace(/\s*[:(][\s\S]*$/, ""); }

  window.ArbitrageSources = { http: httpSource, embedded: embeddedSource, kind: kind };
})();
