// Small DOM and formatting helpers. Text from users only ever reaches the page as text nodes
// (append(string), textContent): never as HTML.

/**
 * Creates an element. props: `class`, `text`, `dataset`, `on<event>` listeners, and attributes
 * (true: present and empty; null/undefined/false: absent). Children: nodes or strings (as text).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value == null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export const $ = (id) => document.getElementById(id);

/** Shows or hides with the hidden attribute. */
export function show(el, visible) {
  el.hidden = !visible;
}

// ---- names and avatars ----

/** A stable hue (0-359) for a name: the same person gets the same colour everywhere. */
export function hueOf(name) {
  let x = 2166136261;
  for (let i = 0; i < name.length; i++) {
    x ^= name.charCodeAt(i);
    x = Math.imul(x, 16777619);
  }
  return (x >>> 0) % 360;
}

/** The first letter (or symbol) of a name, upper case, for an avatar. */
export function initialOf(name) {
  const first = [...name.trim()][0] ?? '?';
  return first.toLocaleUpperCase();
}

/** An avatar circle (decorative: the name is always written next to it). */
export function avatar(name, extraClass = '') {
  const el = h('span', { class: `avatar ${extraClass}`.trim(), 'aria-hidden': 'true' }, initialOf(name));
  el.style.setProperty('--hue', String(hueOf(name)));
  return el;
}

/** "alice", "alice and bob", "alice, bob and carol", "alice, bob and 3 others". */
export function nameList(names, max = 3) {
  if (names.length <= 1) return names.join('');
  if (names.length <= max) return `${names.slice(0, -1).join(', ')} and ${names.at(-1)}`;
  const rest = names.length - (max - 1);
  return `${names.slice(0, max - 1).join(', ')} and ${rest} others`;
}

// ---- text ----

const URL_RE = /\bhttps?:\/\/[^\s<>"'`]+/gi;

/**
 * A message's text as nodes: text, with http(s) links made clickable. The link's text and href
 * are the URL itself (checked by the URL parser), so nothing but http and https can be linked.
 */
export function richText(text) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(URL_RE)) {
    const raw = m[0].replace(/[.,;:!?)\]}>]+$/, '');
    let href = null;
    try {
      const u = new URL(raw);
      if (u.protocol === 'http:' || u.protocol === 'https:') href = u.href;
    } catch {
      href = null;
    }
    if (!href) continue;
    if (m.index > last) out.push(text.slice(last, m.index));
    out.push(h('a', { href, target: '_blank', rel: 'noopener noreferrer' }, raw));
    last = m.index + raw.length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

// ---- time ----

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'short' });
const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'long', month: 'long', day: 'numeric' });
const yearDayFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'long' });

export const formatTime = (ts) => timeFmt.format(new Date(ts));
export const formatFull = (ts) => fullFmt.format(new Date(ts));

/** A local calendar day, for grouping. */
export function dayKey(ts) {
  const d = new Date(ts);
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}

/** "Today", "Yesterday", "Monday, March 3", or with the year when it is not this year. */
export function dayLabel(ts) {
  const d = new Date(ts);
  const today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (dayKey(d) === dayKey(today)) return 'Today';
  if (dayKey(d) === dayKey(yesterday)) return 'Yesterday';
  return d.getFullYear() === today.getFullYear() ? dayFmt.format(d) : yearDayFmt.format(d);
}

/** The index of the first element of a sorted number array greater than x. */
export function upperBound(sorted, x) {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid] <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
