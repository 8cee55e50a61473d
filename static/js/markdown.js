/*
 * A small, safe Markdown renderer for model answers in the playground.
 *
 * window.portal.renderMarkdown(text) -> DocumentFragment. It builds DOM nodes with
 * createElement and textContent only, never innerHTML, so nothing in a model's answer can
 * become markup: "<script>" stays the text "<script>". Supported: fenced code blocks (with a
 * Copy button; an unclosed fence while streaming is still a code block), inline `code`,
 * **bold**, *italic* / _italic_, [links](https://…) (http and https only), headings (shown as
 * bold lines), bulleted and numbered lists, block quotes and paragraphs.
 */
(function () {
  "use strict";

  var counter = 0;

  function node(tag, className, text) {
    var el = document.createElement(tag);
    if (className) { el.className = className; }
    if (text !== undefined) { el.textContent = text; }
    return el;
  }

  var INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*([^*]+)\*\*|__([^_]+)__|\*([^*\s][^*]*)\*|(^|[^\w])_([^_\s][^_]*)_(?!\w)|\[([^\]]+)\]\(([^)\s]+)\)/;

  function inline(text, parent) {
    var rest = text;
    while (rest) {
      var m = INLINE.exec(rest);
      if (!m) { parent.appendChild(document.createTextNode(rest)); break; }
      var before = rest.slice(0, m.index);
      if (m[6] !== undefined) { before += m[6]; } // the character before an _italic_
      if (before) { parent.appendChild(document.createTextNode(before)); }
      if (m[1] !== undefined) {
        parent.appendChild(node("code", "", m[2].replace(/^ (.*) $/, "$1")));
      } else if (m[3] !== undefined || m[4] !== undefined) {
        var strong = node("strong");
        inline(m[3] !== undefined ? m[3] : m[4], strong);
        parent.appendChild(strong);
      } else if (m[5] !== undefined || m[7] !== undefined) {
        var em = node("em");
        inline(m[5] !== undefined ? m[5] : m[7], em);
        parent.appendChild(em);
      } else if (m[8] !== undefined) {
        if (/^https?:\/\//i.test(m[9])) {
          var a = node("a");
          a.href = m[9];
          a.rel = "noopener noreferrer nofollow";
          a.target = "_blank";
          inline(m[8], a);
          parent.appendChild(a);
        } else {
          parent.appendChild(document.createTextNode(m[0]));
        }
      }
      rest = rest.slice(m.index + m[0].length);
    }
    return parent;
  }

  function codeBlock(lines, lang) {
    var box = node("div", "codeblock");
    var pre = node("pre");
    pre.id = "md-code-" + (++counter);
    var code = node("code", "", lines.join("\n"));
    if (lang) { code.setAttribute("data-lang", lang); pre.setAttribute("aria-label", lang + " code"); }
    pre.appendChild(code);
    var copy = node("button", "", "Copy");
    copy.type = "button";
    copy.setAttribute("data-copy", "#" + pre.id);
    box.appendChild(pre);
    box.appendChild(copy);
    return box;
  }

  function render(text) {
    var out = document.createDocumentFragment();
    var lines = String(text || "").replace(/\r\n?/g, "\n").split("\n");
    var i = 0;
    var paragraph = [];
    var list = null;

    function flushParagraph() {
      if (paragraph.length) { out.appendChild(inline(paragraph.join("\n"), node("p"))); }
      paragraph = [];
    }
    function closeList() { list = null; }

    while (i < lines.length) {
      var line = lines[i];
      var fence = /^\s*(```+|~~~+)\s*([\w+#.-]*)\s*$/.exec(line);
      if (fence) {
        flushParagraph(); closeList();
        var body = [];
        i++;
        while (i < lines.length && lines[i].trim().indexOf(fence[1]) !== 0) { body.push(lines[i]); i++; }
        i++; // the closing fence (or the end while still streaming)
        out.appendChild(codeBlock(body, fence[2]));
        continue;
      }
      if (!line.trim()) { flushParagraph(); closeList(); i++; continue; }
      var heading = /^(#{1,6})\s+(.*)$/.exec(line);
      if (heading) {
        flushParagraph(); closeList();
        var h = node("p", "md-heading");
        h.appendChild(inline(heading[2], node("strong")));
        out.appendChild(h);
        i++; continue;
      }
      var item = /^\s*([-*+]|\d+[.)])\s+(.*)$/.exec(line);
      if (item) {
        flushParagraph();
        var ordered = /\d/.test(item[1]);
        if (!list || (list.tagName === "OL") !== ordered) {
          list = node(ordered ? "ol" : "ul");
          if (ordered && parseInt(item[1], 10) !== 1) { list.start = parseInt(item[1], 10); }
          out.appendChild(list);
        }
        list.appendChild(inline(item[2], node("li")));
        i++; continue;
      }
      var quote = /^>\s?(.*)$/.exec(line);
      if (quote) {
        flushParagraph(); closeList();
        out.appendChild(inline(quote[1], node("blockquote")));
        i++; continue;
      }
      closeList();
      paragraph.push(line);
      i++;
    }
    flushParagraph();
    return out;
  }

  window.portal = window.portal || {};
  window.portal.renderMarkdown = render;
})();
