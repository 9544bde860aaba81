// A small Markdown subset for chat answers, built as DOM nodes (never as HTML, so a
// model cannot inject markup): paragraphs, headings, bullet and numbered lists, fenced
// code blocks (also while still open during streaming), `code`, **bold**, *italic*.

const FENCE = /^\s*```/;
const BULLET = /^\s*[-*+]\s+(.*)$/;
const NUMBERED = /^\s*(\d+)[.)]\s+(.*)$/;
const HEADING = /^\s*#{1,6}\s+(.*)$/;
const INLINE = /(`[^`\n]+`)|(\*\*[^*\n]+\*\*|__[^_\n]+__)|(\*[^*\s][^*\n]*\*|_[^_\s][^_\n]*_)/g;

/** Replaces the children of `el` with `text` rendered. */
export function renderMarkdown(el, text) {
  const blocks = [];
  const lines = text.split("\n");
  let para = [];
  let list = null; // {tag, items}

  const flushPara = () => {
    if (para.length) blocks.push(block("p", para.join("\n")));
    para = [];
  };
  const flushList = () => {
    if (!list) return;
    const node = document.createElement(list.tag);
    if (list.tag === "ol" && list.start !== 1) node.start = list.start;
    for (const item of list.items) node.append(block("li", item));
    blocks.push(node);
    list = null;
  };

  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (FENCE.test(line)) {
      flushPara();
      flushList();
      const code = [];
      for (i++; i < lines.length && !FENCE.test(lines[i]); i++) code.push(lines[i]);
      const pre = document.createElement("pre");
      const c = document.createElement("code");
      c.textContent = code.join("\n");
      pre.append(c);
      blocks.push(pre);
      continue;
    }
    const bullet = BULLET.exec(line);
    const numbered = bullet ? null : NUMBERED.exec(line);
    if (bullet || numbered) {
      flushPara();
      const tag = bullet ? "ul" : "ol";
      if (list && list.tag !== tag) flushList();
      list ??= { tag, items: [], start: numbered ? Number(numbered[1]) : 1 };
      list.items.push(bullet ? bullet[1] : numbered[2]);
      continue;
    }
    if (!line.trim()) {
      flushPara();
      flushList();
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      flushPara();
      flushList();
      blocks.push(block("h4", heading[1]));
      continue;
    }
    if (list) {
      // a line right after a list item continues it
      list.items[list.items.length - 1] += `\n${line.trim()}`;
      continue;
    }
    para.push(line);
  }
  flushPara();
  flushList();
  el.replaceChildren(...blocks);
}

function block(tag, text) {
  const node = document.createElement(tag);
  appendInline(node, text);
  return node;
}

function appendInline(node, text) {
  let at = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > at) node.append(text.slice(at, m.index));
    const s = m[0];
    const el = document.createElement(m[1] ? "code" : m[2] ? "strong" : "em");
    el.textContent = m[1] ? s.slice(1, -1) : m[2] ? s.slice(2, -2) : s.slice(1, -1);
    node.append(el);
    at = m.index + s.length;
  }
  if (at < text.length) node.append(text.slice(at));
}
