// Small DOM helpers shared by the console's two views. Everything a peer or
// the API sent is put in the page as text (textContent), never as HTML.

/** An element: `el('td', {class: 'x'}, 'text', child)`. */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

/** `document.getElementById`, failing loudly on a missing id. */
export function $(id) {
  const e = document.getElementById(id);
  if (!e) throw new Error(`console page has no #${id}`);
  return e;
}

/** hh:mm:ss.mmm of a time in ms (local time). */
export function clock(ms = Date.now()) {
  const d = new Date(ms);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** A JSON value as one line of text (strings as they are). */
export function show(v) {
  if (typeof v === 'string') return v;
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
}

/** What a text field holds as a message content: JSON when it is an object
 * or array that parses, else the text itself. */
export function content(text) {
  const t = text.trim();
  if (t.startsWith('{') || t.startsWith('[')) {
    try {
      return JSON.parse(t);
    } catch {
      // Not JSON: the text as typed.
    }
  }
  return text;
}

/** A comma list as trimmed, non-empty items. */
export function list(text) {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** A list (`<ol>`/`<tbody>`) that keeps its newest `max` rows, newest first. */
export class Log {
  constructor(container, max = 500) {
    this.container = container;
    this.max = max;
  }

  add(row) {
    this.container.prepend(row);
    while (this.container.childElementCount > this.max) this.container.lastElementChild?.remove();
    return row;
  }

  clear() {
    this.container.replaceChildren();
  }
}

/** Reads the query string's `name`, or `fallback`. */
export function param(name, fallback = '') {
  return new URLSearchParams(location.search).get(name) ?? fallback;
}
