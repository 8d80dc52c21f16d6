// The message list of the open conversation: messages in seq order (each seq once), the pending
// sends of the outbox below them, "Seen by" lines, day dividers, the "new" divider, and the top of
// the history (load older / beginning of the conversation). Scrolling to the top asks for older
// messages; the scroll position stays put when they are inserted above.
import { h, avatar, richText, formatTime, formatFull, dayKey, dayLabel, nameList, upperBound } from './dom.js';

const GROUP_MS = 5 * 60 * 1000; // consecutive messages of one person within this are grouped
const NEAR_TOP_PX = 160;
const NEAR_BOTTOM_PX = 80;

/** One message's element. Pending sends (no seq yet) get data-pending and no data-seq. */
function messageEl(m, pendingState) {
  const el = h('div', {
    class: 'msg',
    'data-testid': 'message',
    'data-seq': m.seq,
    'data-room': m.room ?? '',
    'data-cid': m.cid,
    'data-from': m.from,
  });
  const ts = m.ts ?? Date.now();
  el.append(
    avatar(m.from, 'msg-avatar'),
    h(
      'div',
      { class: 'msg-body' },
      h(
        'div',
        { class: 'msg-meta' },
        h('span', { class: 'msg-from' }, m.from),
        h('time', { datetime: new Date(ts).toISOString(), title: formatFull(ts) }, formatTime(ts)),
      ),
      h('div', { class: 'msg-text', 'data-testid': 'message-text' }, richText(m.text)),
      h('div', { class: 'msg-status' }),
    ),
  );
  setPending(el, pendingState);
  return el;
}

const PENDING_LABEL = { sending: 'Sending…', waiting: 'Waiting for connection…' };

/** pendingState: null (acknowledged), 'sending' or 'waiting'. */
function setPending(el, pendingState) {
  const status = el.querySelector('.msg-status');
  if (pendingState) {
    el.dataset.pending = pendingState;
    status.textContent = PENDING_LABEL[pendingState];
  } else if ('pending' in el.dataset) {
    delete el.dataset.pending;
    status.textContent = '';
  }
}

export class Timeline {
  /**
   * @param {object} o
   * @param {HTMLElement} o.log the scrolling role=log element
   * @param {HTMLElement} o.top history top (button / marker)
   * @param {HTMLElement} o.list confirmed messages
   * @param {HTMLElement} o.pendingList sends not yet delivered
   * @param {HTMLElement} o.jump "new messages" button
   * @param {string} o.me
   * @param {(conv: object) => void} o.onNearTop
   * @param {(conv: object) => void} o.onRetryHistory
   */
  constructor(o) {
    Object.assign(this, o);
    this.conv = null;
    this.seqs = []; // rendered seqs, ascending
    this.els = new Map(); // seq -> element
    this.stuck = true; // the user is at the bottom: new messages and layout changes keep them there
    this.log.addEventListener('scroll', () => this.#onScroll(), { passive: true });
    // The banner, the typing line or a taller composer shrink the list: stay at the bottom.
    new ResizeObserver(() => {
      if (this.stuck) this.log.scrollTop = this.log.scrollHeight;
    }).observe(this.log);
    this.jump.addEventListener('click', () => {
      this.scrollToBottom();
      this.log.focus({ preventScroll: true });
    });
  }

  #onScroll() {
    if (!this.conv) return;
    if (this.log.scrollTop < NEAR_TOP_PX) this.onNearTop(this.conv);
    this.stuck = this.atBottom();
    if (this.stuck) this.jump.hidden = true;
  }

  atBottom() {
    const l = this.log;
    return l.scrollHeight - l.scrollTop - l.clientHeight < NEAR_BOTTOM_PX;
  }

  scrollToBottom() {
    this.log.scrollTop = this.log.scrollHeight;
    this.stuck = true;
    this.jump.hidden = true;
  }

  /** The content is taller than the view: the user can scroll up for more. */
  scrollable() {
    return this.log.scrollHeight > this.log.clientHeight + 4;
  }

  /** Renders a conversation from scratch (on switching to it). */
  show(conv, pending) {
    // The whole list is replaced: screen readers should not read it out as new messages.
    this.log.setAttribute('aria-busy', 'true');
    requestAnimationFrame(() => this.log.removeAttribute('aria-busy'));
    this.conv = conv;
    this.seqs = [];
    this.els = new Map();
    this.list.replaceChildren();
    this.jump.hidden = true;
    if (!conv) {
      this.pendingList.replaceChildren();
      this.renderTop();
      return;
    }
    const frag = document.createDocumentFragment();
    for (const m of conv.sorted()) {
      const el = messageEl(m, pending.stateOf(m.cid));
      frag.append(el);
      this.seqs.push(m.seq);
      this.els.set(m.seq, el);
    }
    this.list.append(frag);
    for (let i = 0; i < this.seqs.length; i++) this.#decorate(i);
    this.renderTop();
    this.renderPending(pending);
    this.renderSeen();
    this.settle();
  }

  /** Scrolls to the first unread message if there is one above the fold, else to the bottom. */
  settle() {
    const divider = this.list.querySelector('.divider-new');
    if (divider) divider.scrollIntoView({ block: 'center' });
    else this.scrollToBottom();
  }

  /**
   * Inserts messages of the shown conversation (already added to it). `older`: they are above
   * what is on screen; the view keeps its place. Otherwise a user at the bottom stays at the
   * bottom, and one reading further up gets the "new messages" button.
   */
  insert(msgs, pending, { older = false, mine = false } = {}) {
    if (!msgs.length) return;
    const wasAtBottom = this.atBottom();
    const fromBottom = this.log.scrollHeight - this.log.scrollTop;
    const touched = new Set();
    for (const m of msgs) {
      if (this.els.has(m.seq)) continue;
      const i = upperBound(this.seqs, m.seq);
      const el = messageEl(m, pending.stateOf(m.cid));
      const next = this.seqs[i];
      if (next === undefined) this.list.append(el);
      else this.list.insertBefore(el, this.els.get(next));
      this.seqs.splice(i, 0, m.seq);
      this.els.set(m.seq, el);
      touched.add(m.seq);
    }
    if (!touched.size) return;
    // Decorations (grouping, day dividers) depend on the previous message: redo the neighbours.
    for (const seq of touched) {
      const i = upperBound(this.seqs, seq) - 1;
      this.#decorate(i);
      this.#decorate(i + 1);
    }
    this.renderPending(pending); // a delivered send leaves the pending area
    this.renderSeen();
    if (older) {
      this.log.scrollTop = this.log.scrollHeight - fromBottom;
    } else if (wasAtBottom || mine) {
      this.scrollToBottom();
    } else {
      this.jump.hidden = false;
    }
  }

  #decorate(i) {
    if (i < 0 || i >= this.seqs.length) return;
    const seq = this.seqs[i];
    const el = this.els.get(seq);
    const m = this.conv.msgs.get(seq);
    const prev = i > 0 ? this.conv.msgs.get(this.seqs[i - 1]) : null;
    const newDay = !prev || dayKey(prev.ts) !== dayKey(m.ts);
    const firstNew = this.conv.newFrom > 0 && m.seq === this.conv.newFrom;
    const grouped = !!prev && !newDay && !firstNew && prev.from === m.from && m.ts - prev.ts < GROUP_MS;
    el.classList.toggle('cont', grouped);
    for (const d of el.querySelectorAll(':scope > .divider')) d.remove();
    if (firstNew) el.prepend(h('div', { class: 'divider divider-new' }, h('span', {}, 'New messages')));
    if (newDay) el.prepend(h('div', { class: 'divider' }, h('span', {}, dayLabel(m.ts))));
  }

  /** The "new messages" divider goes once the conversation has been read. */
  clearNewDivider() {
    if (!this.conv?.newFrom) return;
    const seq = this.conv.newFrom;
    this.conv.newFrom = 0;
    const i = this.seqs.indexOf(seq);
    if (i >= 0) this.#decorate(i);
  }

  /** The top of the list: a button for older messages, a loading line, or where it all began. */
  renderTop() {
    // Whatever the top becomes, the messages below stay where they are on screen.
    const fromBottom = this.log.scrollHeight - this.log.scrollTop;
    this.#renderTop();
    this.log.scrollTop = this.log.scrollHeight - fromBottom;
  }

  #renderTop() {
    const conv = this.conv;
    const top = this.top;
    top.replaceChildren();
    if (!conv) {
      top.append(
        h('div', { class: 'empty-state' },
          h('p', { class: 'empty-title' }, 'No conversation open'),
          h('p', {}, 'Join or create a room, or start a direct message from the list of people.')),
      );
      return;
    }
    if (conv.historyError) {
      top.append(
        h('p', { class: 'history-note' }, 'Could not load earlier messages. '),
        h('button', { type: 'button', class: 'btn btn-small', onclick: () => this.onRetryHistory(conv) }, 'Try again'),
      );
    } else if (conv.history !== 'loaded' || conv.loadingOlder) {
      top.append(h('p', { class: 'history-note', 'data-testid': 'history-loading' }, 'Loading messages…'));
    } else if (conv.hasMore) {
      top.append(
        h('button', { type: 'button', class: 'btn btn-small btn-secondary', 'data-testid': 'load-older', onclick: () => this.onNearTop(conv) }, 'Load earlier messages'),
      );
    } else {
      const what = conv.kind === 'dm' ? `your conversation with ${conv.peer}` : `#${conv.room}`;
      top.append(
        h('div', { class: 'history-start', 'data-testid': 'history-start' },
          h('p', { class: 'history-start-title' }, conv.kind === 'dm' ? conv.peer : `#${conv.room}`),
          h('p', {}, `This is the very beginning of ${what}.`)),
      );
    }
  }

  /**
   * Pending sends: confirmed messages still waiting for their ack get the marker; sends the
   * server has not delivered yet are shown below, in order.
   */
  renderPending(pending) {
    for (const [, el] of this.els) {
      const cid = el.dataset.cid;
      if (cid !== undefined) setPending(el, pending.stateOf(cid));
    }
    this.pendingList.replaceChildren();
    const conv = this.conv;
    if (!conv) return;
    let prev = this.seqs.length ? conv.msgs.get(this.seqs.at(-1)) : null;
    for (const e of pending.entries) {
      if (e.delivered) continue;
      const mine = conv.kind === 'dm' ? e.to === conv.peer : e.room === conv.room;
      if (!mine || conv.cids.has(e.cid)) continue;
      const m = { room: conv.room ?? '', cid: e.cid, from: this.me, text: e.text, ts: e.ts };
      const el = messageEl(m, pending.stateOf(e.cid));
      if (prev && prev.from === m.from && dayKey(prev.ts) === dayKey(m.ts) && m.ts - prev.ts < GROUP_MS) el.classList.add('cont');
      this.pendingList.append(el);
      prev = m;
    }
  }

  /** "Seen by alice, carol" under the last message each other member has read. */
  renderSeen() {
    for (const el of this.list.querySelectorAll('.seen')) el.remove();
    const conv = this.conv;
    if (!conv || conv.kind !== 'room' || !this.seqs.length) return;
    const bySeq = new Map();
    for (const [user, seq] of conv.receipts) {
      if (user === this.me) continue;
      // The last message they have read that they did not write themselves.
      let i = upperBound(this.seqs, seq) - 1;
      while (i >= 0 && this.conv.msgs.get(this.seqs[i]).from === user) i--;
      if (i < 0) continue;
      const at = this.seqs[i];
      if (!bySeq.has(at)) bySeq.set(at, []);
      bySeq.get(at).push(user);
    }
    for (const [seq, users] of bySeq) {
      users.sort();
      const line = h('div', { class: 'seen', 'data-testid': 'seen-by', title: users.join(', ') }, `Seen by ${nameList(users)}`);
      this.els.get(seq).append(line);
    }
  }
}
