// A small markdown renderer for teacher answers and the run report. It escapes the whole text
// first and only then adds tags of its own (headings, lists, tables, quotes, code fences, inline
// code, bold, italic), so nothing a teacher writes can become markup. Links stay text; images
// render only where the caller maps their source to a known figure.
(function () {
  "use strict";

  function escapeHtml(text) {
    return String(text)
      .replace(/&/g, "&amp;")
      .replace(/</g, "&lt;")
      .replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;")
      .replace(/'/g, "&#39;");
  }

  // `text` is escaped already.
  function inline(text, opts) {
    var codes = [];
    var out = text.replace(/`([^`\n]+)`/g, function (_, code) {
      codes.push(code);
      return "\u0000" + (codes.length - 1) + "\u0000";
    });
    if (opts.image) {
      out = out.replace(/!\[([^\]]*)\]\(([^)\s]+)\)/g, function (whole, alt, src) {
        var url = opts.image(src.replace(/&amp;/g, "&"));
        return url ? '<img alt="' + alt + '" src="' + escapeHtml(url) + '">' : whole;
      });
    }
    out = out
      .replace(/\*\*(?=\S)([^*\n]*\S)\*\*/g, "<strong>$1</strong>")
      .replace(/(^|[^\w])__(?=\S)([^_\n]*\S)__(?!\w)/g, "$1<strong>$2</strong>")
      .replace(/(^|[^*\w])\*(?=[^\s*])([^*\n]*[^\s*])\*(?!\*)/g, "$1<em>$2</em>")
      .replace(/(^|[^\w])_(?=[^\s_])([^_\n]*[^\s_])_(?!\w)/g, "$1<em>$2</em>");
    return out.replace(/\u0000(\d+)\u0000/g, function (_, i) {
      return "<code>" + codes[Number(i)] + "</code>";
    });
  }

  var FENCE = /^\s*(```|~~~)\s*([\w+-]*)/;
  var HEADING = /^(#{1,6})\s+(.*?)\s*#*\s*$/;
  var BULLET = /^\s*[-*+]\s+(.*)$/;
  var NUMBERED = /^\s*(\d{1,9})[.)]\s+(.*)$/;
  var RULE = /^\s*([-*_])(\s*\1){2,}\s*$/;
  var TABLE_SEP = /^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$/;

  function cells(line) {
    return line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map(function (c) {
      return c.trim();
    });
  }

  function startsBlock(lines, i) {
    var line = lines[i];
    return (
      FENCE.test(line) || HEADING.test(line) || BULLET.test(line) || NUMBERED.test(line) ||
      RULE.test(line) || /^\s*&gt;/.test(line) ||
      (line.trim().charAt(0) === "|" && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1]))
    );
  }

  function render(source, options) {
    var opts = options || {};
    var lines = escapeHtml(String(source == null ? "" : source).replace(/\u0000/g, "").replace(/\r\n?/g, "\n")).split("\n");
    var html = [];
    var i = 0;
    while (i < lines.length) {
      var line = lines[i];
      var m;
      if (!line.trim()) {
        i++;
      } else if ((m = FENCE.exec(line))) {
        var body = [];
        i++;
        while (i < lines.length && !new RegExp("^\\s*" + m[1] + "\\s*$").test(lines[i])) body.push(lines[i++]);
        i++; // the closing fence (or the end: an unclosed fence runs to the end, as in CommonMark)
        var lang = m[2] ? ' class="language-' + m[2] + '"' : "";
        html.push("<pre><code" + lang + ">" + body.join("\n") + "</code></pre>");
      } else if ((m = HEADING.exec(line))) {
        var level = m[1].length;
        html.push("<h" + level + ">" + inline(m[2], opts) + "</h" + level + ">");
        i++;
      } else if (RULE.test(line)) {
        html.push("<hr>");
        i++;
      } else if (line.trim().charAt(0) === "|" && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1])) {
        var head = cells(line);
        i += 2;
        var rows = [];
        while (i < lines.length && lines[i].trim().charAt(0) === "|") rows.push(cells(lines[i++]));
        html.push(
          "<table><thead><tr>" + head.map(function (c) { return "<th>" + inline(c, opts) + "</th>"; }).join("") +
          "</tr></thead><tbody>" + rows.map(function (r) {
            return "<tr>" + r.map(function (c) { return "<td>" + inline(c, opts) + "</td>"; }).join("") + "</tr>";
          }).join("") + "</tbody></table>"
        );
      } else if (/^\s*&gt;/.test(line)) {
        var quoted = [];
        while (i < lines.length && /^\s*&gt;/.test(lines[i])) quoted.push(lines[i++].replace(/^\s*&gt;\s?/, ""));
        html.push("<blockquote>" + inline(quoted.join("<br>"), opts) + "</blockquote>");
      } else if (BULLET.test(line) || NUMBERED.test(line)) {
        var ordered = !BULLET.test(line);
        var pattern = ordered ? NUMBERED : BULLET;
        var items = [];
        var start = ordered ? Number(NUMBERED.exec(line)[1]) : 1;
        while (i < lines.length && pattern.test(lines[i])) {
          var item = pattern.exec(lines[i]);
          items.push(inline(ordered ? item[2] : item[1], opts));
          i++;
        }
        var tag = ordered ? "ol" : "ul";
        var attr = ordered && start !== 1 ? ' start="' + start + '"' : "";
        html.push("<" + tag + attr + ">" + items.map(function (t) { return "<li>" + t + "</li>"; }).join("") + "</" + tag + ">");
      } else {
        var para = [];
        while (i < lines.length && lines[i].trim() && (para.length === 0 || !startsBlock(lines, i))) para.push(lines[i++]);
        html.push("<p>" + inline(para.join("<br>"), opts) + "</p>");
      }
    }
    return html.join("\n");
  }

  window.ArbitrageMarkdown = { render: render, escapeHtml: escapeHtml };
})();
