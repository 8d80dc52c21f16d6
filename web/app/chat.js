// The chat: one ParleyClient (one WebSocket) for the page, every room subscribed at start so
// unread counts stay live, one conversation on screen at a time.
import { ParleyClient } from '../parley.js';
import { $, h, avatar, nameList } from './dom.js';
import { saved, userIdProblem, DEV_OFF_MESSAGE } from './session.js';
import { Timeline } from './timeline.js';

const ROOM_RE = /^[A-Za-z0-9_.:-]{1,128}$/;
const PAGE = 50; // history page size
const HOLE_FILL_MAX = 200; // a hole this small is filled from history; a larger one is paged on demand
const TYPING_TTL_MS = 6000;
const ONLINE_REFRESH_MS = 30000;
const DEFAULT_ROOM = 'lobby';

/** A room or a direct conversation, with the messages this page has of it. */
class Conversation {
  constructor(kind, room, peer = null) {
    this.kind = kind; // 'room' | 'dm'
    this.room = room; // null for a direct conversation whose first message has not come back yet
    this.peer = peer; // dm: the other user
    this.msgs = new Map(); // seq -> message frame
    this.cids = new Map(); // cid -> seq, to match pending sends
    this.latest = 0; // the greatest seq known (also from subscribed and myRooms)
    this.top = 0; // the greatest seq among the messages here
    this.read = 0; // this user's read position
    this.joined = kind === 'dm'; // rooms: subscribed (a member), so the history may be read
    this.history = room ? 'none' : 'loaded'; // 'none' | 'loading' | 'loaded'
    this.historyError = false;
    this.hasMore = !!room;
    this.loadingOlder = false;
    this.receipts = new Map(); // other user -> read seq (live read_receipt events)
    this.typing = new Map(); // user -> expiry timer
    this.members = null; // [user] once loaded
    this.newFrom = 0; // the first unread seq when the conversation was opened (the "new" divider)
    this.repairing = false;
  }

  get key() {
    return this.room ?? `@${this.peer}`;
  }

  get name() {
    return this.kind === 'dm' ? this.peer : this.room;
  }

  get unread() {
    return Math.max(0, this.latest - this.read);
  }

  /** Adds a message; false if this seq is already here. */
  add(m) {
    if (!Number.isInteger(m.seq) || this.msgs.has(m.seq)) return false;
    this.msgs.set(m.seq, m);
    if (m.cid !== undefined) this.cids.set(m.cid, m.seq);
    if (m.seq > this.latest) this.latest = m.seq;
    if (m.seq > this.top) this.top = m.seq;
    return true;
  }

  sorted() {
    return [...this.msgs.values()].sort((a, b) => a.seq - b.seq);
  }

  minSeq() {
    let min = Infinity;
    for (const s of this.msgs.keys()) if (s < min) min = s;
    return min;
  }
}

export class ChatApp {
  constructor({ user, tokens, servers, onSignOut }) {
    this.me = user;
    this.tokens = tokens;
    this.onSignOut = onSignOut;
    this.convs = new Map(); // key -> Conversation
    this.current = null;
    this.online = new Set();
    this.outbox = [];
    this.state = 'idle';
    this.everOpen = false;
    this.trouble = false; // the connection was lost since it was last open
    this.reconnectAt = 0;
    this.dmReads = saved.reads(user);
    this.peopleOpen = false;
    this.sidebarOpen = false;
    this.navItems = new WeakMap();
    this.membersTimer = null;

    this.client = new ParleyClient({
      url: servers,
      tokenProvider: tokens.provider,
      // HTTP stays on this page's origin (the page's Content-Security-Policy allows no other).
      httpUrl: location.origin,
    });

    this.el = {
      view: $('chat-view'),
      sidebar: $('sidebar'),
      menuBtn: $('menu-btn'),
      menuBadge: $('menu-badge'),
      roomList: $('room-list'),
      dmList: $('dm-list'),
      roomsEmpty: $('rooms-empty'),
      dmsEmpty: $('dms-empty'),
      joinForm: $('join-form'),
      joinInput: $('join-room'),
      joinError: $('join-error'),
      conversation: $('conversation'),
      title: $('conv-title'),
      sub: $('conv-sub'),
      peopleBtn: $('people-btn'),
      leaveBtn: $('leave-btn'),
      banner: $('conn-banner'),
      bannerText: $('conn-text'),
      bannerRetry: $('conn-retry'),
      typing: $('typing'),
      composer: $('composer'),
      input: $('composer-input'),
      composerLabel: $('composer-label'),
      sendBtn: $('send-btn'),
      people: $('people'),
      peopleClose: $('people-close'),
      memberList: $('member-list'),
      membersHeading: $('members-heading'),
      onlineList: $('online-list'),
      onlineEmpty: $('online-empty'),
      scrim: $('scrim'),
      toasts: $('toasts'),
      dmDialog: $('dm-dialog'),
      dmForm: $('dm-form'),
      dmUser: $('dm-user'),
      dmError: $('dm-error'),
      dmSuggestions: $('dm-suggestions'),
      leaveDialog: $('leave-dialog'),
      leaveText: $('leave-dialog-text'),
    };

    this.timeline = new Timeline({
      log: $('message-log'),
      top: $('history-top'),
      list: $('messages'),
      pendingList: $('pending-messages'),
      jump: $('jump-btn'),
      me: user,
      onNearTop: (conv) => this.loadOlder(conv),
      onRetryHistory: (conv) => this.loadHistory(conv),
    });

    this.wide = matchMedia('(min-width: 1100px)');
    this.narrow = matchMedia('(max-width: 719px)');
  }

  // ---------------------------------------------------------------- start-up

  async start() {
    this.#wireClient();
    this.#wireUi();
    $('me-name').textContent = this.me;
    const meAvatar = $('me-avatar');
    meAvatar.replaceWith(avatar(this.me, 'avatar-sm'));
    this.el.view.hidden = false;
    this.setPeople(this.wide.matches);
    this.renderBanner();
    this.renderConversation();

    this.client.connect().catch(() => {}); // failures show in the banner; it keeps trying
    this.loadOnline();
    this.onlineTimer = setInterval(() => this.loadOnline(), ONLINE_REFRESH_MS);

    const mine = await this.#myRooms();
    const rooms = [];
    for (const r of mine?.rooms ?? []) {
      if (r.room.startsWith('dm:')) {
        if (typeof r.with !== 'string') continue;
        const conv = this.#dm(r.with, r.room);
        conv.latest = Math.max(conv.latest, r.seq);
        conv.read = Math.max(conv.read, r.read ?? 0, this.dmReads[r.room] ?? 0);
      } else {
        const conv = this.#room(r.room);
        conv.joined = true;
        conv.latest = Math.max(conv.latest, r.seq);
        conv.read = Math.max(conv.read, r.read ?? 0);
        rooms.push(r.room);
      }
    }
    // A newcomer starts in the lobby, like #general elsewhere.
    if (mine && !rooms.length && !saved.room) {
      this.#room(DEFAULT_ROOM);
      rooms.push(DEFAULT_ROOM);
    }
    // Sends left unacknowledged by a reload go again with their cids: never twice on the server.
    const left = saved.outbox;
    for (const e of left) {
      if (e.room && !rooms.includes(e.room) && ROOM_RE.test(e.room) && !e.room.startsWith('dm:')) {
        this.#room(e.room);
        rooms.push(e.room);
      }
    }
    if (rooms.length) this.#subscribe(rooms);
    for (const e of left) {
      if (e.room) this.client.send(e.room, e.text, { cid: e.cid }).catch((err) => this.#sendFailed(err, e.text));
      else if (e.to) this.client.sendDirect(e.to, e.text, { cid: e.cid }).catch((err) => this.#sendFailed(err, e.text));
    }

    const want = saved.room;
    const first = (want && this.convs.get(want)) || this.#ordered('room')[0] || this.#ordered('dm')[0] || null;
    this.renderSidebar();
    if (first) this.open(first, { focus: !this.narrow.matches });
  }

  async #myRooms() {
    for (let attempt = 0; attempt < 6; attempt++) {
      try {
        return await this.client.myRooms();
      } catch (err) {
        if (err.code === 'dev_off') {
          this.toast(DEV_OFF_MESSAGE, 'error');
          return null;
        }
        if (attempt === 2) this.toast('Could not load your rooms yet; still trying…', 'error');
        await new Promise((r) => setTimeout(r, 500 * 2 ** attempt));
      }
    }
    this.toast('Could not load your rooms. Join one by name, or reload later.', 'error');
    return null;
  }

  /** Subscribes rooms; a refused one leaves the list (saying so, unless `quiet`: the caller will). */
  #subscribe(rooms, { quiet = false } = {}) {
    const p = this.client.subscribe(rooms);
    p.then((infos) => {
      for (const info of infos) {
        const conv = this.convs.get(info.room);
        if (conv) conv.joined = true;
      }
    }).catch((err) => {
      if (err.room) this.#dropRoom(err.room, quiet ? null : `Could not join #${err.room}: ${err.message}`);
    });
    return p;
  }

  #dropRoom(room, why) {
    const conv = this.convs.get(room);
    if (!conv) return;
    this.convs.delete(room);
    if (why) this.toast(why, 'error');
    if (this.current === conv) this.open(this.#ordered('room')[0] ?? this.#ordered('dm')[0] ?? null);
    this.renderSidebar();
  }

  #room(room) {
    let conv = this.convs.get(room);
    if (!conv) {
      conv = new Conversation('room', room);
      this.convs.set(room, conv);
    }
    return conv;
  }

  /** The direct conversation with `peer` (created if new); `room` once known. */
  #dm(peer, room = null) {
    let conv = null;
    for (const c of this.convs.values()) if (c.kind === 'dm' && c.peer === peer) conv = c;
    if (!conv) {
      conv = new Conversation('dm', room, peer);
      this.convs.set(conv.key, conv);
    } else if (room && !conv.room) {
      // The first message of a new conversation came back: from now on it has its room id.
      this.convs.delete(conv.key);
      conv.room = room;
      this.convs.set(room, conv);
      if (this.current === conv) saved.room = room;
    }
    return conv;
  }

  #ordered(kind) {
    return [...this.convs.values()]
      .filter((c) => c.kind === kind)
      .sort((a, b) => a.name.localeCompare(b.name, undefined, { sensitivity: 'base' }) || (a.name < b.name ? -1 : 1));
  }

  // ---------------------------------------------------------------- client events

  #wireClient() {
    const c = this.client;
    c.on('state', (ev) => this.#onState(ev));
    c.on('message', (m) => this.#onMessage(m));
    c.on('subscribed', (info) => {
      const conv = this.convs.get(info.room);
      if (!conv) return;
      conv.joined = true;
      conv.latest = Math.max(conv.latest, info.seq);
      if (typeof info.read === 'number') conv.read = Math.max(conv.read, info.read);
      if (this.current === conv) {
        if (conv.history === 'none') this.loadHistory(conv);
        if (!conv.members) this.loadMembers(conv);
        this.maybeMarkRead();
      }
      this.renderSidebar();
    });
    c.on('outbox', (list) => {
      this.outbox = list;
      saved.outbox = list.map(({ cid, room, to, text }) => ({ cid, room, to, text }));
      this.timeline.renderPending(this.#pending());
    });
    c.on('presence', ({ user, status }) => {
      if (status === 'online') this.online.add(user);
      else if (status === 'offline') this.online.delete(user);
      // Someone came online in a room of ours: maybe a new member of the one on screen.
      const conv = this.current;
      if (status === 'online' && conv?.kind === 'room' && conv.members && !conv.members.includes(user)) {
        clearTimeout(this.membersTimer);
        this.membersTimer = setTimeout(() => this.loadMembers(conv), 300);
      }
      this.renderPresence();
    });
    c.on('typing', ({ room, user, active }) => {
      const conv = this.convs.get(room);
      if (!conv || user === this.me) return;
      clearTimeout(conv.typing.get(user));
      if (active) {
        conv.typing.set(user, setTimeout(() => {
          conv.typing.delete(user);
          if (conv === this.current) this.renderTyping();
        }, TYPING_TTL_MS));
      } else {
        conv.typing.delete(user);
      }
      if (conv === this.current) this.renderTyping();
    });
    c.on('read_receipt', ({ room, user, seq }) => {
      const conv = this.convs.get(room);
      if (!conv || !Number.isInteger(seq)) return;
      if (user === this.me) {
        // Read in another tab or on another device.
        if (seq > conv.read) {
          conv.read = seq;
          this.renderSidebar();
        }
        return;
      }
      if (seq > (conv.receipts.get(user) ?? 0)) conv.receipts.set(user, seq);
      if (conv === this.current) this.timeline.renderSeen();
    });
    c.on('server_notice', (n) => {
      if (n.code === 'shutdown' || n.code === 'reconnect') this.toast('Moving you to another server…');
      else if (n.code === 'token_expiring') return; // the client renews its token by itself
      else if (n.code === 'disconnected') this.toast(`Signed out by the server: ${n.message}`, 'error');
      else if (n.message) this.toast(n.message);
    });
    // The server ended a subscription: removed from the room (or left it in another tab).
    c.on('unsubscribed', ({ room, reason }) => {
      const conv = this.convs.get(room);
      if (conv) conv.joined = false;
      this.toast(reason === 'left' ? `You left #${room}` : `You were removed from #${room}`);
      this.renderSidebar();
    });
    c.on('authenticated', (info) => console.info(`[parley] authenticated as ${info.user} on ${info.server}`));
    c.on('error', (e) => {
      console.warn(`[parley] error ${e.code}: ${e.message}`);
      if (e.local && e.code === 'token_provider' && e.cause?.code === 'dev_off') this.toast(DEV_OFF_MESSAGE, 'error');
      else if (e.local && e.code === 'token_provider' && e.cause?.code === 'bad_name') this.toast(e.cause.message, 'error');
    });
  }

  #onState(ev) {
    // A line per change in the console: what a bug report (or a failed browser test) needs.
    const why = ev.state === 'reconnecting' ? ` after close ${ev.code ?? '?'}${ev.reason ? ` (${ev.reason})` : ''}, next attempt in ${Math.round(ev.delay ?? 0)} ms` : '';
    console.info(`[parley] ${ev.previous} -> ${ev.state}${why}`);
    this.state = ev.state;
    if (ev.state === 'reconnecting') {
      this.trouble = true;
      this.reconnectAt = Date.now() + (ev.delay ?? 0);
    }
    if (ev.state === 'open') {
      this.everOpen = true;
      if (this.trouble) {
        // Back: refresh what may have changed meanwhile.
        this.loadOnline();
        if (this.current?.kind === 'room' && this.current.joined) this.loadMembers(this.current);
        for (const conv of this.convs.values()) if (conv.history === 'loaded') this.#scheduleRepair(conv);
      }
    }
    this.renderBanner();
    this.timeline.renderPending(this.#pending());
    this.el.sendBtn.title = ev.state === 'open' ? '' : 'Messages wait and go out when the connection is back';
  }

  #onMessage(m) {
    let conv;
    if (m.room.startsWith('dm:') || m.to !== undefined) {
      const peer = m.from === this.me ? m.to : m.from;
      if (typeof peer !== 'string') return;
      conv = this.#dm(peer, m.room);
    } else {
      conv = this.convs.get(m.room);
      if (!conv) return;
    }
    const before = conv.top;
    if (!conv.add(m)) return;
    // Whoever sent a message has stopped typing it.
    if (conv.typing.has(m.from)) {
      clearTimeout(conv.typing.get(m.from));
      conv.typing.delete(m.from);
      if (conv === this.current) this.renderTyping();
    }
    if (m.from === this.me && conv.read >= m.seq - 1) this.#setRead(conv, m.seq); // my own words are read
    if (conv === this.current) {
      this.timeline.insert([m], this.#pending(), { mine: m.from === this.me });
      this.maybeMarkRead();
    }
    // A jump in seq (a truncated catch-up, a missed direct message, a race with history): fill it.
    if (conv.history === 'loaded' && before > 0 && m.seq > before + 1) this.#scheduleRepair(conv);
    this.renderSidebar();
  }

  /** Pending sends, and how to show one: 'waiting' while not connected, else 'sending'. */
  #pending() {
    const cids = new Set(this.outbox.map((e) => e.cid));
    const state = this.state === 'open' ? 'sending' : 'waiting';
    return { entries: this.outbox, stateOf: (cid) => (cid !== undefined && cids.has(cid) ? state : null) };
  }

  #sendFailed(err, text) {
    const why = {
      too_large: 'it is too long',
      not_subscribed: 'you are not in that room any more',
      forbidden: 'you may not write there',
      bad_request: 'the server refused it',
    }[err?.code] ?? (err?.message || 'unknown error');
    this.toast(`Message not sent: ${why}.`, 'error');
    if (text && !this.el.input.value) {
      this.el.input.value = text;
      this.#autosize();
    }
  }

  // ---------------------------------------------------------------- history

  async loadHistory(conv) {
    if (!conv.room || !conv.joined || conv.history === 'loading') return;
    conv.history = 'loading';
    conv.historyError = false;
    if (conv === this.current) this.timeline.renderTop();
    try {
      const page = await this.client.history(conv.room, { limit: PAGE });
      if (this.convs.get(conv.room) !== conv) return; // left meanwhile
      conv.history = 'loaded';
      const added = page.messages.filter((m) => conv.add(m));
      conv.hasMore = !!page.has_more && page.messages.length > 0;
      if (conv === this.current) {
        this.timeline.insert(added, this.#pending(), { older: true });
        this.timeline.renderTop();
        this.timeline.settle();
        this.maybeMarkRead();
        this.#fillViewport(conv);
      }
      this.#scheduleRepair(conv);
    } catch (err) {
      conv.history = 'none';
      conv.historyError = true;
      if (conv === this.current) this.timeline.renderTop();
      if (err.status === 403 && conv.kind === 'room') this.toast(`You are not a member of #${conv.room}.`, 'error');
    }
  }

  /** Older messages, when the user scrolls to the top. */
  async loadOlder(conv) {
    if (conv.history !== 'loaded' || !conv.hasMore || conv.loadingOlder || !conv.room) return;
    const before = conv.minSeq();
    if (!(before > 1)) {
      conv.hasMore = false;
      if (conv === this.current) this.timeline.renderTop();
      return;
    }
    conv.loadingOlder = true;
    if (conv === this.current) this.timeline.renderTop();
    try {
      const page = await this.client.history(conv.room, { before, limit: PAGE });
      const added = page.messages.filter((m) => conv.add(m));
      conv.hasMore = !!page.has_more && page.messages.length > 0;
      conv.loadingOlder = false;
      if (conv === this.current) {
        this.timeline.renderTop();
        this.timeline.insert(added, this.#pending(), { older: true });
        this.#fillViewport(conv);
      }
    } catch {
      conv.loadingOlder = false;
      if (conv === this.current) this.timeline.renderTop();
      this.toast('Could not load earlier messages.', 'error');
    }
  }

  /** Until the list can scroll, there is no "top" to scroll to: load more right away. */
  #fillViewport(conv) {
    requestAnimationFrame(() => {
      if (conv === this.current && conv.hasMore && !this.timeline.scrollable()) this.loadOlder(conv);
    });
  }

  #scheduleRepair(conv) {
    clearTimeout(conv.repairTimer);
    conv.repairTimer = setTimeout(() => this.#repair(conv), 250);
  }

  /**
   * Holes in the seqs of a conversation (more was missed than the server replays, a direct message
   * that reached another tab, a message not yet stored when the history was read): a small one is
   * filled from the history; above a large one the older messages are dropped and paged in again
   * when the user scrolls up.
   */
  async #repair(conv, round = 0) {
    if (conv.repairing || !conv.room || conv.history !== 'loaded') return;
    const seqs = [...conv.msgs.keys()].sort((a, b) => a - b);
    let hole = null;
    for (let i = seqs.length - 1; i > 0; i--) {
      if (seqs[i] > seqs[i - 1] + 1) {
        hole = { from: seqs[i - 1] + 1, to: seqs[i] - 1 };
        break;
      }
    }
    if (!hole) return;
    if (hole.to - hole.from + 1 > HOLE_FILL_MAX) {
      for (const s of seqs) if (s < hole.from) conv.msgs.delete(s);
      conv.hasMore = true;
      if (conv === this.current) this.timeline.show(conv, this.#pending());
      return;
    }
    conv.repairing = true;
    let filled = 0;
    try {
      let before = hole.to + 1;
      while (before > hole.from) {
        const page = await this.client.history(conv.room, { before, limit: 100 });
        const added = page.messages.filter((m) => m.seq >= hole.from && conv.add(m));
        filled += added.length;
        if (conv === this.current) this.timeline.insert(added, this.#pending(), { older: true });
        if (!page.has_more || !page.messages.length) break;
        before = page.next_before ?? Math.min(...page.messages.map((m) => m.seq));
      }
    } catch {
      // The history is unreachable for now: try again later.
    } finally {
      conv.repairing = false;
    }
    // A message not yet stored is not in the history yet: look again a little later (a few times).
    if (round < 5) setTimeout(() => this.#repair(conv, filled ? round : round + 1), filled ? 0 : 1000);
  }

  // ---------------------------------------------------------------- people

  async loadMembers(conv) {
    if (conv.kind !== 'room' || !conv.joined) return;
    try {
      const r = await this.client.members(conv.room);
      conv.members = r.members.map((m) => m.user);
      conv.memberCount = r.count ?? r.members.length;
      for (const m of r.members) {
        if (m.online) this.online.add(m.user);
        else this.online.delete(m.user);
      }
      this.renderPresence();
    } catch {
      // Shown as not loaded; a presence event or the next visit tries again.
    }
  }

  async loadOnline() {
    try {
      const token = await this.tokens.token();
      const res = await fetch('/api/websocket/users/online?limit=1000', {
        headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
        cache: 'no-store',
      });
      if (!res.ok) return;
      const body = await res.json();
      if (!Array.isArray(body.users)) return;
      this.online = new Set(body.users);
      if (this.state === 'open') this.online.add(this.me);
      this.renderPresence();
    } catch {
      // The page's own server may be down while the WebSocket went elsewhere: presence events go on.
    }
  }

  /** Starts (or opens) the direct conversation with `user`. */
  startDm(user) {
    if (user === this.me) return;
    const conv = this.#dm(user);
    this.renderSidebar();
    this.open(conv, { focus: true });
  }

  // ---------------------------------------------------------------- opening, joining, leaving

  open(conv, { focus = false } = {}) {
    const prev = this.current;
    if (prev && prev !== conv && prev.kind === 'room' && prev.room) this.client.typing(prev.room, false);
    if (prev !== conv) {
      this.current = conv;
      saved.room = conv?.key ?? null;
      if (conv) conv.newFrom = conv.unread > 0 && conv.read > 0 ? conv.read + 1 : 0;
      this.timeline.show(conv, this.#pending());
      this.renderConversation();
      if (conv) {
        if (conv.history === 'none') this.loadHistory(conv);
        else this.#fillViewport(conv);
        if (conv.kind === 'room') this.loadMembers(conv);
      }
    }
    this.maybeMarkRead();
    this.renderSidebar();
    this.setSidebar(false);
    if (focus && conv) this.el.input.focus();
  }

  /** Marks the conversation on screen read, when the user can see it. */
  maybeMarkRead() {
    const conv = this.current;
    if (!conv || document.visibilityState !== 'visible' || !document.hasFocus()) return;
    if (conv.latest > conv.read) {
      this.#setRead(conv, conv.latest);
      this.renderSidebar();
    }
  }

  #setRead(conv, seq) {
    if (seq <= conv.read) return;
    conv.read = seq;
    if (conv.kind === 'room') {
      this.client.markRead(conv.room, seq);
    } else if (conv.room) {
      // The server keeps read positions for rooms only: direct conversations remember here.
      this.dmReads[conv.room] = seq;
      saved.saveReads(this.me, this.dmReads);
    }
  }

  async join(raw) {
    const name = raw.trim().replace(/^#/, '');
    this.el.joinError.textContent = '';
    if (!name) {
      this.el.joinError.textContent = 'Enter a room name.';
      return false;
    }
    if (!ROOM_RE.test(name) || name.startsWith('dm:')) {
      this.el.joinError.textContent = 'Room names are 1–128 letters, digits and . _ : - (not starting with dm:).';
      return false;
    }
    const existing = this.convs.get(name);
    if (existing) {
      this.open(existing, { focus: true });
      return true;
    }
    const conv = this.#room(name);
    this.renderSidebar();
    this.open(conv, { focus: true });
    try {
      await this.#subscribe([name], { quiet: true });
    } catch (err) {
      this.el.joinError.textContent = err.code === 'forbidden'
        ? `You cannot join #${name}: rooms on this server are by invitation.`
        : `Could not join #${name}: ${err.message}`;
      return false;
    }
    return true;
  }

  async leave(conv) {
    if (!conv || conv.kind !== 'room') return;
    this.el.leaveText.textContent = `You will stop getting messages from #${conv.room}. You can join it again any time.`;
    const choice = await this.#ask(this.el.leaveDialog);
    if (choice !== 'leave') return;
    try {
      await this.client.leave(conv.room);
    } catch (err) {
      this.toast(`Could not leave #${conv.room}: ${err.message}`, 'error');
    }
    for (const t of conv.typing.values()) clearTimeout(t);
    this.convs.delete(conv.room);
    if (this.current === conv) this.open(this.#ordered('room')[0] ?? this.#ordered('dm')[0] ?? null);
    this.renderSidebar();
    this.toast(`You left #${conv.room}.`);
  }

  /** Opens a dialog and resolves with its returnValue when it closes (Escape: ''). */
  #ask(dialog) {
    return new Promise((resolve) => {
      dialog.returnValue = '';
      dialog.addEventListener('close', () => resolve(dialog.returnValue), { once: true });
      dialog.showModal();
    });
  }

  send() {
    const conv = this.current;
    const text = this.el.input.value.replace(/\s+$/, '');
    if (!conv || !text.trim()) return;
    const p = conv.kind === 'dm' ? this.client.sendDirect(conv.peer, text) : this.client.send(conv.room, text);
    p.catch((err) => this.#sendFailed(err, text));
    if (conv.kind === 'room') this.client.typing(conv.room, false);
    this.el.input.value = '';
    this.#autosize();
    this.timeline.scrollToBottom();
  }

  signOut() {
    clearInterval(this.onlineTimer);
    this.client.close();
    saved.clear();
    this.onSignOut();
  }

  // ---------------------------------------------------------------- rendering

  renderConversation() {
    const conv = this.current;
    const { title, input, composerLabel, leaveBtn, peopleBtn } = this.el;
    title.replaceChildren();
    if (!conv) {
      title.textContent = 'Welcome';
      this.el.sub.textContent = `Signed in as ${this.me}`;
      input.disabled = true;
      this.el.sendBtn.disabled = true;
      input.placeholder = 'Join a room to start chatting';
      composerLabel.textContent = 'Message';
      leaveBtn.hidden = true;
      peopleBtn.hidden = false;
      this.renderTyping();
      this.renderPeople();
      return;
    }
    if (conv.kind === 'room') {
      title.append(h('span', { class: 'title-hash', 'aria-hidden': 'true' }, '#'), conv.room);
      input.placeholder = `Message #${conv.room}`;
      composerLabel.textContent = `Message #${conv.room}`;
    } else {
      title.append(conv.peer);
      input.placeholder = `Message ${conv.peer}`;
      composerLabel.textContent = `Message ${conv.peer}`;
    }
    input.disabled = false;
    this.el.sendBtn.disabled = false;
    leaveBtn.hidden = conv.kind !== 'room';
    document.title = this.#title();
    this.renderSub();
    this.renderTyping();
    this.renderPeople();
  }

  renderSub() {
    const conv = this.current;
    const sub = this.el.sub;
    sub.replaceChildren();
    if (!conv) return;
    if (conv.kind === 'dm') {
      const on = this.online.has(conv.peer);
      sub.append(h('span', { class: `dot ${on ? 'on' : ''}`, 'aria-hidden': 'true' }), on ? 'Online' : 'Offline', ' · direct message');
    } else if (conv.members) {
      const on = conv.members.filter((u) => this.online.has(u)).length;
      const n = conv.memberCount ?? conv.members.length;
      sub.append(`${n} ${n === 1 ? 'member' : 'members'} · ${on} online`);
    } else {
      sub.append('Room');
    }
  }

  renderTyping() {
    const conv = this.current;
    const users = conv ? [...conv.typing.keys()].sort() : [];
    const el = this.el.typing;
    el.replaceChildren();
    if (!users.length) return;
    const who = users.length > 3 ? 'Several people are' : `${nameList(users)} ${users.length === 1 ? 'is' : 'are'}`;
    el.append(h('span', { class: 'typing-dots', 'aria-hidden': 'true' }, h('span'), h('span'), h('span')), `${who} typing…`);
  }

  renderPresence() {
    this.renderPeople();
    this.renderSub();
    this.renderSidebar();
  }

  renderPeople() {
    const conv = this.current;
    const { memberList, onlineList, onlineEmpty, membersHeading } = this.el;
    const entry = (user) => {
      const on = this.online.has(user);
      const li = h('li', { 'data-testid': 'user', 'data-user': user, 'data-online': on ? 'true' : 'false' });
      const face = h('span', { class: 'face' }, avatar(user, 'avatar-sm'), h('span', { class: `dot ${on ? 'on' : ''}`, 'aria-hidden': 'true' }));
      const state = h('span', { class: 'user-state' }, on ? 'online' : 'offline');
      if (user === this.me) {
        li.append(h('div', { class: 'user-item self' }, face, h('span', { class: 'user-name' }, user, h('span', { class: 'muted' }, ' (you)')), state));
      } else {
        li.append(h('button', { type: 'button', class: 'user-item', title: `Message ${user}`, onclick: () => this.startDm(user) },
          face, h('span', { class: 'user-name' }, user), state, h('span', { class: 'sr-only' }, `, send a direct message`)));
      }
      return li;
    };
    const byPresence = (a, b) => (this.online.has(b) - this.online.has(a)) || a.localeCompare(b);
    const focused = this.el.people.contains(document.activeElement) ? document.activeElement.closest('[data-user]')?.dataset.user : null;
    memberList.replaceChildren();
    let shown = new Set();
    if (conv?.kind === 'room') {
      membersHeading.textContent = `In #${conv.room}`;
      const members = conv.members ?? [];
      if (!conv.members) memberList.append(h('li', { class: 'nav-empty' }, 'Loading members…'));
      for (const u of [...members].sort(byPresence)) memberList.append(entry(u));
      shown = new Set(members);
    } else if (conv?.kind === 'dm') {
      membersHeading.textContent = 'In this conversation';
      for (const u of [conv.peer, this.me]) memberList.append(entry(u));
      shown = new Set([conv.peer, this.me]);
    } else {
      membersHeading.textContent = 'In this room';
    }
    const others = [...this.online].filter((u) => u !== this.me && !shown.has(u)).sort((a, b) => a.localeCompare(b));
    onlineList.replaceChildren(...others.slice(0, 200).map(entry));
    onlineEmpty.hidden = others.length > 0;
    const onlineHere = [...shown].filter((u) => u !== this.me && this.online.has(u)).length;
    onlineEmpty.textContent = onlineHere ? 'Everyone else online is listed above.' : 'Nobody else is online right now.';
    // Suggestions for the new-message dialog.
    const known = new Set([...this.online, ...(conv?.members ?? [])]);
    known.delete(this.me);
    this.el.dmSuggestions.replaceChildren(...[...known].sort().slice(0, 200).map((u) => h('option', { value: u })));
    if (focused != null) {
      const again = [...this.el.people.querySelectorAll('[data-user]')].find((li) => li.dataset.user === focused);
      again?.querySelector('button')?.focus();
    }
  }

  /** The room and direct-message lists, updated in place (focus stays where it is). */
  renderSidebar() {
    const fill = (list, convs) => {
      const items = convs.map((conv) => this.#navItem(conv));
      const same = items.length === list.children.length && items.every((li, i) => list.children[i] === li);
      if (!same) {
        const active = document.activeElement;
        list.replaceChildren(...items);
        if (active && list.contains(active) && document.activeElement !== active) active.focus();
      }
    };
    const rooms = this.#ordered('room');
    const dms = this.#ordered('dm');
    fill(this.el.roomList, rooms);
    fill(this.el.dmList, dms);
    this.el.roomsEmpty.hidden = rooms.length > 0;
    this.el.dmsEmpty.hidden = dms.length > 0;
    const elsewhere = [...this.convs.values()].filter((c) => c !== this.current).reduce((n, c) => n + c.unread, 0);
    this.el.menuBadge.hidden = elsewhere === 0;
    this.el.menuBadge.textContent = elsewhere > 99 ? '99+' : String(elsewhere);
    document.title = this.#title();
  }

  #navItem(conv) {
    let item = this.navItems.get(conv);
    if (!item) {
      const name = h('span', { class: 'conv-name' });
      const badge = h('span', { class: 'badge', 'data-testid': 'unread' });
      const unreadSr = h('span', { class: 'sr-only' });
      const icon = conv.kind === 'room'
        ? h('span', { class: 'conv-icon', 'aria-hidden': 'true' }, '#')
        : h('span', { class: 'face' }, avatar(conv.peer, 'avatar-xs'), h('span', { class: 'dot', 'aria-hidden': 'true' }));
      const btn = h('button', { type: 'button', class: 'conv-item', onclick: () => this.open(conv, { focus: !this.narrow.matches }) }, icon, name, unreadSr, badge);
      const li = h('li', {}, btn);
      item = { li, btn, name, badge, unreadSr, icon };
      this.navItems.set(conv, item);
    }
    const { li, btn, name, badge, unreadSr, icon } = item;
    btn.dataset.testid = conv.kind === 'room' ? 'room' : 'dm';
    btn.dataset.room = conv.room ?? '';
    if (conv.kind === 'dm') {
      btn.dataset.user = conv.peer;
      const on = this.online.has(conv.peer);
      icon.querySelector('.dot').classList.toggle('on', on);
      btn.dataset.online = on ? 'true' : 'false';
    }
    name.textContent = conv.name;
    const n = conv === this.current ? 0 : conv.unread;
    badge.textContent = n > 99 ? '99+' : String(n);
    badge.hidden = n === 0;
    btn.dataset.unread = String(n);
    unreadSr.textContent = n ? `, ${n} unread` : '';
    btn.classList.toggle('has-unread', n > 0);
    if (conv === this.current) btn.setAttribute('aria-current', 'page');
    else btn.removeAttribute('aria-current');
    return li;
  }

  #title() {
    const n = [...this.convs.values()].filter((c) => c !== this.current).reduce((s, c) => s + c.unread, 0);
    const where = this.current ? (this.current.kind === 'room' ? `#${this.current.room}` : this.current.peer) : null;
    return `${n ? `(${n}) ` : ''}${where ? `${where} · ` : ''}Parley`;
  }

  renderBanner() {
    const { banner, bannerText, bannerRetry } = this.el;
    clearTimeout(this.bannerTimer);
    const s = this.state;
    banner.dataset.state = s;
    banner.classList.remove('quiet');
    bannerRetry.hidden = s !== 'closed';
    let text;
    if (s === 'open') {
      text = 'Connected';
      if (this.trouble) {
        // Say so for a moment, then get out of the way.
        this.trouble = false;
        this.bannerTimer = setTimeout(() => banner.classList.add('quiet'), 2500);
      } else {
        banner.classList.add('quiet');
      }
    } else if (s === 'reconnecting') {
      const secs = Math.ceil((this.reconnectAt - Date.now()) / 1000);
      text = secs >= 1 ? `Connection lost. Reconnecting in ${secs} s…` : 'Connection lost. Reconnecting…';
      if (secs > 1) this.bannerTimer = setTimeout(() => this.renderBanner(), 1000);
    } else if (s === 'connecting' || s === 'idle') {
      text = this.everOpen ? 'Reconnecting…' : 'Connecting…';
    } else {
      text = 'Disconnected.';
    }
    if (bannerText.textContent !== text) bannerText.textContent = text;
  }

  toast(text, kind = 'info') {
    const el = h('div', { class: `toast toast-${kind}` }, text);
    this.el.toasts.append(el);
    while (this.el.toasts.children.length > 3) this.el.toasts.firstElementChild.remove();
    setTimeout(() => el.remove(), kind === 'error' ? 9000 : 5000);
  }

  // ---------------------------------------------------------------- UI wiring

  setSidebar(open) {
    this.sidebarOpen = open && this.narrow.matches;
    this.el.view.classList.toggle('sidebar-open', this.sidebarOpen);
    this.el.menuBtn.setAttribute('aria-expanded', String(this.sidebarOpen));
    this.#overlay();
  }

  setPeople(open) {
    this.peopleOpen = open;
    this.el.view.classList.toggle('people-open', open);
    this.el.peopleBtn.setAttribute('aria-expanded', String(open));
    this.#overlay();
    if (open) this.loadOnline();
  }

  /** A drawer over the conversation (narrow screens): a scrim, and the rest inert. */
  #overlay() {
    const peopleOver = this.peopleOpen && !this.wide.matches;
    const any = this.sidebarOpen || peopleOver;
    this.el.scrim.hidden = !any;
    this.el.conversation.inert = any;
    this.el.sidebar.inert = peopleOver || (this.narrow.matches && !this.sidebarOpen);
    this.el.people.inert = this.sidebarOpen || (!this.wide.matches && !this.peopleOpen);
  }

  #autosize() {
    const ta = this.el.input;
    ta.style.height = 'auto';
    ta.style.height = `${Math.min(ta.scrollHeight, 200)}px`;
  }

  #wireUi() {
    const e = this.el;
    e.composer.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.send();
      e.input.focus();
    });
    e.input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing && !ev.altKey && !ev.ctrlKey && !ev.metaKey) {
        ev.preventDefault();
        this.send();
      }
    });
    e.input.addEventListener('input', () => {
      this.#autosize();
      const conv = this.current;
      if (conv?.kind !== 'room') return;
      if (e.input.value.trim()) this.client.typing(conv.room);
      else this.client.typing(conv.room, false);
    });
    e.input.addEventListener('blur', () => {
      if (this.current?.kind === 'room') this.client.typing(this.current.room, false);
    });

    e.joinForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      if (await this.join(e.joinInput.value)) e.joinInput.value = '';
    });
    e.joinInput.addEventListener('input', () => {
      e.joinError.textContent = '';
    });

    e.menuBtn.addEventListener('click', () => {
      this.setSidebar(!this.sidebarOpen);
      if (this.sidebarOpen) (e.sidebar.querySelector('[aria-current="page"]') ?? e.sidebar.querySelector('.conv-item') ?? $('sidebar-close')).focus();
    });
    $('sidebar-close').addEventListener('click', () => {
      this.setSidebar(false);
      e.menuBtn.focus();
    });
    e.peopleBtn.addEventListener('click', () => {
      this.setPeople(!this.peopleOpen);
      if (this.peopleOpen && !this.wide.matches) e.peopleClose.focus();
    });
    e.peopleClose.addEventListener('click', () => {
      this.setPeople(false);
      e.peopleBtn.focus();
    });
    e.scrim.addEventListener('click', () => {
      this.setSidebar(false);
      if (!this.wide.matches) this.setPeople(false);
    });
    e.leaveBtn.addEventListener('click', () => this.leave(this.current));
    $('signout-btn').addEventListener('click', () => this.signOut());
    e.bannerRetry.addEventListener('click', () => this.client.connect().catch(() => {}));

    $('new-dm-btn').addEventListener('click', () => {
      e.dmUser.value = '';
      e.dmError.textContent = '';
      e.dmDialog.showModal();
      e.dmUser.focus();
    });
    $('dm-cancel').addEventListener('click', () => e.dmDialog.close());
    e.dmForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const user = e.dmUser.value.trim();
      const problem = userIdProblem(user) ?? (user === this.me ? 'That is you: pick someone else.' : null);
      if (problem) {
        e.dmError.textContent = problem;
        e.dmUser.focus();
        return;
      }
      e.dmDialog.close();
      this.startDm(user);
    });

    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape') {
        if (document.querySelector('dialog[open]')) return; // the dialog closes itself
        if (this.sidebarOpen) {
          this.setSidebar(false);
          e.menuBtn.focus();
          ev.preventDefault();
        } else if (this.peopleOpen && !this.wide.matches) {
          this.setPeople(false);
          e.peopleBtn.focus();
          ev.preventDefault();
        }
      } else if (ev.altKey && (ev.key === 'ArrowUp' || ev.key === 'ArrowDown')) {
        // Alt+Up / Alt+Down: the previous / next conversation.
        const all = [...this.#ordered('room'), ...this.#ordered('dm')];
        if (!all.length) return;
        const i = all.indexOf(this.current);
        const next = all[(i + (ev.key === 'ArrowUp' ? -1 : 1) + all.length) % all.length];
        ev.preventDefault();
        this.open(next, { focus: true });
      }
    });

    window.addEventListener('focus', () => this.maybeMarkRead());
    document.addEventListener('visibilitychange', () => this.maybeMarkRead());

    // Crossing a breakpoint: the people column is open by default on wide screens, a closed
    // drawer below; the conversations drawer exists on narrow screens only.
    this.wide.addEventListener('change', () => this.setPeople(this.wide.matches));
    this.narrow.addEventListener('change', () => this.setSidebar(false));
  }
}
