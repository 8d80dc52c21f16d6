/**
 * Parley client: a dependency-free ES module for browsers and Node 20+.
 *
 * It speaks protocol v1 (docs/protocol.md) and adds what every chat client
 * otherwise writes by hand: reconnecting with backoff, catching up after a
 * reconnect without gaps or duplicates, an outbox that survives reconnects,
 * a heartbeat that notices dead connections, and token refresh.
 *
 * @module @parley/client
 */

const DEFAULT_RECONNECT = Object.freeze({
  initialDelay: 500,
  maxDelay: 30000,
  factor: 2,
  jitter: 0.5,
  stableAfter: 10000,
});
const DEFAULT_HEARTBEAT = Object.freeze({ interval: 20000, timeout: 10000 });
const DEFAULT_TYPING_THROTTLE = 3000;
// At most one read frame per room per this many ms: a page marks a room read on every message it
// shows, and a busy room would otherwise pass the server's rate limit (PARLEY_RATE_LIMIT).
const DEFAULT_READ_THROTTLE = 1000;
/** The server's default PARLEY_MAX_FRAME; a larger frame closes the connection (1009). */
const DEFAULT_MAX_FRAME = 65536;

/** Error codes of a send that are worth retrying with the same cid. */
const TRANSIENT_SEND_CODES = new Set(['unavailable', 'not_stored', 'rate_limited']);

/** Refresh a provided token this long before it expires (or at 90 % of its life if shorter). */
const REFRESH_LEAD_MS = 60000;
/** Never refresh more often than this, whatever the provider returns. */
const REFRESH_MIN_MS = 1000;

const ROOM_RE = /^[A-Za-z0-9_.:-]{1,128}$/;
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f]/;
/** WebSocket.OPEN, as a number: injected implementations need not define the constant. */
const WS_OPEN = 1;
/** Close code the client uses when it gives up on a socket (heartbeat, handshake timeout). */
const CLOSE_DEAD = 4000;
/** The server closed every connection of this user on purpose (POST /api/users/{id}/disconnect). */
const CLOSE_DISCONNECTED = 4003;

const noop = () => {};
const utf8 = new TextEncoder();
const byteLength = (s) => utf8.encode(s).length;

/**
 * An error with a machine-readable `code`: a server error code (`forbidden`,
 * `too_large`, ...), an HTTP error body's `error`, or a local one (`closed`,
 * `unauthorized`, `token_expired`, `bad_request`, `network`, ...).
 */
export class ParleyError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {object} [extra] copied onto the error (status, cid, room, ...)
   */
  constructor(code, message, extra) {
    super(message);
    this.name = 'ParleyError';
    this.code = code;
    if (extra) Object.assign(this, extra);
  }
}

/**
 * The reconnect delay for a given attempt: `min(maxDelay, initialDelay * factor^attempt)`,
 * scaled by a random factor in `[1 - jitter, 1]`.
 * @param {number} attempt 0 for the first retry
 * @param {Partial<typeof DEFAULT_RECONNECT>} [options]
 * @param {() => number} [random] returns a number in [0, 1)
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, options = {}, random = Math.random) {
  const { initialDelay, maxDelay, factor, jitter } = { ...DEFAULT_RECONNECT, ...options };
  const base = Math.min(maxDelay, initialDelay * factor ** attempt);
  return base * (1 - jitter * random());
}

/**
 * The payload of a JWT, decoded without verifying it (the server verifies).
 * @param {string} token
 * @returns {Record<string, unknown> | null} null when the token is not a readable JWT
 */
export function decodeJwt(token) {
  if (typeof token !== 'string') return null;
  const part = token.split('.')[1];
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const payload = JSON.parse(new TextDecoder().decode(bytes));
    return payload && typeof payload === 'object' ? payload : null;
  } catch {
    return null;
  }
}

/** A token's `exp` in milliseconds, or null when it has none. */
function tokenExpiry(token) {
  const exp = decodeJwt(token)?.exp;
  return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : null;
}

/** The token goes on the upgrade URL: browsers cannot set headers on a WebSocket. */
function withToken(url, token) {
  return `${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}`;
}

/** The absolute ws(s):// URL and the http(s):// origin of the HTTP API. */
function resolveUrls(url, httpUrl) {
  if (typeof url !== 'string' || url === '') throw new TypeError('ParleyClient: options.url is required');
  const u = new URL(url, globalThis.location?.href);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') {
    throw new TypeError(`ParleyClient: url must be ws:// or wss://, not ${u.protocol}`);
  }
  const base = httpUrl ?? `${u.protocol === 'wss:' ? 'https:' : 'http:'}//${u.host}`;
  return { wsUrl: u.href, httpBase: base.replace(/\/+$/, '') };
}

/** A promise whose rejection, if the caller ignores it, is not reported as unhandled. */
function deferred() {
  let resolve, reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // Failures are also reported through 'error' events; fire-and-forget callers must not crash Node.
  promise.catch(noop);
  return { promise, resolve, reject };
}

function rejected(error) {
  const p = Promise.reject(error);
  p.catch(noop);
  return p;
}

function roomList(rooms) {
  const list = typeof rooms === 'string' ? [rooms] : Array.isArray(rooms) ? rooms : null;
  if (!list) return null;
  return [...new Set(list)];
}

const isDirectRoom = (room) => room.startsWith('dm:');

/**
 * A Parley connection that keeps itself alive. See docs/client.md.
 */
export class ParleyClient {
  // Configuration.
  #wsUrls;
  #urlTurn = 0; // connection attempts so far: the next one uses #wsUrls[#urlTurn % length]
  #httpBase;
  #WebSocket;
  #fetch;
  #provider;
  #reconnectOpts;
  #heartbeatOpts;
  #typingThrottle;
  #readThrottle;
  #maxFrame;
  #random;
  #now;
  #setTimeout;
  #clearTimeout;

  // Connection.
  #state = 'idle';
  #ws = null;
  #epoch = 0; // bumped by every (re)connect and by close(): async work of an older one is dropped
  #authenticated = false; // on the current socket
  #socketOpened = false; // the current socket got past the upgrade
  #socketError = null;
  #attempt = 0;
  #openedAt = 0;
  #quickNext = false; // the server announced its shutdown: reconnect from attempt 0
  #info = null;
  #connectWaiter = null;
  #reconnectTimer = null;
  #heartbeatTimer = null;
  #refreshTimer = null;

  // Token.
  #token = null;
  #tokenExp = null;
  #tokenFetch = null; // a provider call in flight, shared by its callers

  // Rooms: name -> record (see #room()); dm: rooms are kept for their seq only.
  #rooms = new Map();
  #reads = new Map(); // room -> the greatest seq given to markRead
  #subscribeCids = new Map(); // cid of a subscribe frame on this socket -> its rooms
  #unsubscribeWaiters = new Map(); // room -> [{ resolve, reject }] of unsubscribe() calls
  #unsubscribeCids = new Map(); // cid of an unsubscribe frame on this socket -> its rooms
  #unsubscribeTimers = new Set(); // unsubscribes refused as rate_limited, to send again

  // Outbox.
  #outbox = [];
  #cidCounter = 0;

  #listeners = new Map();

  /**
   * @param {object} options see docs/client.md and parley.d.ts (ParleyClientOptions)
   */
  constructor(options = {}) {
    // An array names several instances: each connection attempt takes the next one in turn.
    const urls = Array.isArray(options.url) ? options.url : [options.url];
    if (!urls.length) throw new TypeError('ParleyClient: options.url is required');
    const resolved = urls.map((u) => resolveUrls(u, options.httpUrl));
    this.#wsUrls = resolved.map((r) => r.wsUrl);
    this.#httpBase = resolved[0].httpBase;
    if (options.token == null && typeof options.tokenProvider !== 'function') {
      throw new TypeError('ParleyClient: options.token or options.tokenProvider is required');
    }
    this.#provider = typeof options.tokenProvider === 'function' ? options.tokenProvider : null;
    if (options.token != null) this.#adoptToken(String(options.token));
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    // Called detached: browsers throw "Illegal invocation" when fetch or setTimeout get another `this`.
    const fetchImpl = options.fetch ?? globalThis.fetch;
    this.#fetch = typeof fetchImpl === 'function' ? (...args) => fetchImpl(...args) : null;
    const st = options.setTimeout ?? globalThis.setTimeout;
    const ct = options.clearTimeout ?? globalThis.clearTimeout;
    this.#setTimeout = (fn, ms) => st(fn, ms);
    this.#clearTimeout = (id) => ct(id);
    const random = options.random ?? Math.random;
    const now = options.now ?? Date.now;
    this.#random = () => random();
    this.#now = () => now();
    this.#reconnectOpts = { ...DEFAULT_RECONNECT, ...options.reconnect };
    this.#heartbeatOpts = { ...DEFAULT_HEARTBEAT, ...options.heartbeat };
    this.#typingThrottle = options.typingThrottle ?? DEFAULT_TYPING_THROTTLE;
    this.#readThrottle = options.readThrottle ?? DEFAULT_READ_THROTTLE;
    this.#maxFrame = options.maxFrame ?? DEFAULT_MAX_FRAME;
  }

  // ---- public state ----

  /** @returns {'idle'|'connecting'|'open'|'reconnecting'|'closed'} */
  get state() {
    return this.#state;
  }

  /** @returns {string|null} the authenticated user id (null before the first `authenticated`) */
  get user() {
    return this.#info?.user ?? null;
  }

  /**
   * The outbox: sends not acknowledged yet, oldest first. A fresh copy on every read.
   * `delivered` (with `id` and `seq`) is set once the server has delivered the message but not yet
   * stored it: a server without a database delivers and never acks.
   * @returns {Array<{cid: string, room?: string, to?: string, text: string, ts: number,
   *   delivered?: boolean, id?: string, seq?: number}>}
   */
  get pending() {
    return this.#outbox.map((e) => {
      const item = { cid: e.cid };
      if (e.room !== undefined) item.room = e.room;
      if (e.to !== undefined) item.to = e.to;
      item.text = e.text;
      item.ts = e.ts;
      if (e.delivered) Object.assign(item, { delivered: true, id: e.id, seq: e.seq });
      return item;
    });
  }

  // ---- events ----

  /**
   * Adds a listener. Events: state, authenticated, subscribed, truncated, gap, message, ack,
   * presence, typing, read_receipt, error, server_notice, outbox.
   * @param {string} event
   * @param {(payload: any) => void} fn
   * @returns {this}
   */
  on(event, fn) {
    return this.#listen(event, fn, false);
  }

  /**
   * Adds a listener called at most once.
   * @param {string} event
   * @param {(payload: any) => void} fn
   * @returns {this}
   */
  once(event, fn) {
    return this.#listen(event, fn, true);
  }

  /**
   * Removes a listener added with on() or once().
   * @param {string} event
   * @param {(payload: any) => void} fn
   * @returns {this}
   */
  off(event, fn) {
    const list = this.#listeners.get(event);
    if (list) this.#listeners.set(event, list.filter((l) => l.fn !== fn));
    return this;
  }

  #listen(event, fn, once) {
    if (typeof fn !== 'function') throw new TypeError('listener must be a function');
    const list = this.#listeners.get(event) ?? [];
    if (!list.some((l) => l.fn === fn)) list.push({ fn, once });
    this.#listeners.set(event, list);
    return this;
  }

  #emit(event, payload) {
    const list = this.#listeners.get(event);
    if (!list?.length) return;
    for (const l of [...list]) {
      if (l.once) this.off(event, l.fn);
      try {
        l.fn(payload);
      } catch (err) {
        // A listener's bug must not break the connection's bookkeeping; report it as uncaught.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  #localError(code, message, extra) {
    this.#emit('error', { code, message, local: true, ...extra });
  }

  // ---- connection ----

  /**
   * Connects (from 'idle' or 'closed') and keeps reconnecting until close() or a disconnect by
   * the server (4003: the client goes 'closed', error `disconnected`).
   * Resolves on the first `authenticated`; rejects (ParleyError) if close() comes first, when a
   * static token is refused (code `unauthorized`) or has expired (`token_expired`), or when the
   * server disconnects the user first (`disconnected`).
   * Calling it again while connecting or connected returns the same promise.
   * @returns {Promise<{user: string, server: string, session: string}>}
   */
  connect() {
    if (typeof this.#WebSocket !== 'function') {
      throw new TypeError('ParleyClient: no WebSocket implementation; pass one as options.WebSocket (e.g. from the ws package)');
    }
    if (this.#state !== 'idle' && this.#state !== 'closed') {
      return this.#connectWaiter?.promise ?? Promise.resolve({ ...this.#info });
    }
    this.#connectWaiter = deferred();
    const waiter = this.#connectWaiter;
    this.#attempt = 0;
    this.#quickNext = false;
    this.#open();
    return waiter.promise;
  }

  /**
   * Closes the connection for good (state 'closed'; no reconnect) and clears every timer, so a
   * Node process can exit. Rooms, seqs and the outbox are kept: a later connect() resumes.
   */
  close() {
    if (this.#state === 'closed') return;
    this.#stop();
    this.#setState('closed', {});
    this.#connectWaiter?.reject(new ParleyError('closed', 'the client was closed'));
    this.#connectWaiter = null;
  }

  /** Everything close() and a fatal error share: no socket, no timer, no reconnect. */
  #stop() {
    this.#epoch++;
    this.#teardown(1000, 'client closed');
    this.#reconnectTimer = this.#cancel(this.#reconnectTimer);
    this.#refreshTimer = this.#cancel(this.#refreshTimer);
  }

  /** A fatal error: closed, reported, and the pending connect() rejected. */
  #fail(code, message) {
    this.#stop();
    this.#setState('closed', { code });
    this.#localError(code, message);
    this.#connectWaiter?.reject(new ParleyError(code, message));
    this.#connectWaiter = null;
  }

  /** Clears a timer if set; returns null for the field that held it. */
  #cancel(id) {
    if (id != null) this.#clearTimeout(id);
    return null;
  }

  #setState(state, extra) {
    const previous = this.#state;
    this.#state = state;
    this.#emit('state', { state, previous, attempt: this.#attempt, ...extra });
  }

  async #open() {
    const epoch = ++this.#epoch;
    this.#setState('connecting', {});
    let token = this.#token;
    if (this.#provider) {
      try {
        token = await this.#fetchToken();
      } catch (err) {
        if (epoch !== this.#epoch) return;
        this.#localError('token_provider', `tokenProvider failed: ${err?.message ?? err}`, { cause: err });
        this.#scheduleReconnect({ reason: 'token provider failed' });
        return;
      }
      if (epoch !== this.#epoch) return; // closed (or restarted) while the provider ran
    }
    let ws;
    try {
      const url = this.#wsUrls[this.#urlTurn++ % this.#wsUrls.length];
      ws = new this.#WebSocket(withToken(url, token));
    } catch (err) {
      this.#localError('connect', `could not open a WebSocket: ${err?.message ?? err}`, { cause: err });
      this.#scheduleReconnect({ reason: 'WebSocket constructor failed' });
      return;
    }
    this.#ws = ws;
    this.#authenticated = false;
    this.#socketOpened = false;
    this.#socketError = null;
    ws.onopen = () => {
      if (ws !== this.#ws) return;
      this.#socketOpened = true;
      this.#armHeartbeat();
    };
    ws.onmessage = (ev) => {
      if (ws === this.#ws) this.#onData(ev.data);
    };
    ws.onerror = (ev) => {
      // A close event follows; keep the error to tell an HTTP 401 apart where the platform says so.
      if (ws === this.#ws) this.#socketError = ev;
    };
    ws.onclose = (ev) => {
      if (ws === this.#ws) this.#lost(ev?.code ?? 1006, ev?.reason ?? '');
    };
    this.#armHeartbeat();
  }

  /**
   * Forgets the current socket: handlers silenced, socket closed, per-connection state reset.
   * Outbox entries and wanted rooms stay; they go out again on the next connection.
   */
  #teardown(code, reason) {
    const ws = this.#ws;
    this.#ws = null;
    this.#authenticated = false;
    this.#heartbeatTimer = this.#cancel(this.#heartbeatTimer);
    if (ws) {
      // No-op handlers rather than null: the ws package throws on an 'error' with no listener.
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = noop;
      try {
        ws.close(code, reason);
      } catch {
        // Already closed or never opened: nothing to do.
      }
    }
    for (const e of this.#outbox) e.retryTimer = this.#cancel(e.retryTimer);
    for (const rec of this.#rooms.values()) {
      rec.live = false;
      rec.inflight = false;
      rec.sinceSent = null;
      rec.typing = false;
      rec.typingAt = -Infinity;
      rec.subTimer = this.#cancel(rec.subTimer);
      rec.readTimer = this.#cancel(rec.readTimer);
    }
    this.#subscribeCids.clear();
    // The server forgets a closed connection's subscriptions: those unsubscribes are done.
    this.#unsubscribeCids.clear();
    for (const id of this.#unsubscribeTimers) this.#cancel(id);
    this.#unsubscribeTimers.clear();
    for (const room of [...this.#unsubscribeWaiters.keys()]) this.#settleUnsubscribe(room);
  }

  /** The socket closed or was given up on: decide between reconnecting and giving up. */
  #lost(code, reason) {
    const wasAuthenticated = this.#authenticated;
    const opened = this.#socketOpened;
    const socketError = this.#socketError;
    this.#teardown(CLOSE_DEAD, reason || 'lost');
    if (wasAuthenticated && this.#now() - this.#openedAt >= this.#reconnectOpts.stableAfter) this.#attempt = 0;
    if (this.#quickNext) {
      this.#quickNext = false;
      this.#attempt = 0;
    }
    // 4003: the application disconnected this user (a ban, a password change): reconnecting
    // would only be disconnected again, or worse, succeed against the application's intent.
    if (code === CLOSE_DISCONNECTED) return this.#fail('disconnected', reason || 'disconnected by the server (4003)');
    if (!this.#provider) {
      // A static token cannot get better by retrying. Browsers hide the upgrade's HTTP 401 (it is a
      // plain 1006), so an expired exp stands in for it; the ws package names the status.
      if (code === 4001 && reason === 'token expired') {
        return this.#fail('token_expired', 'the token has expired; pass a tokenProvider to renew it');
      }
      if (code === 4001) return this.#fail('unauthorized', reason || 'the server refused the token (4001)');
      if (!opened && /\b401\b/.test(String(socketError?.message ?? socketError?.error?.message ?? ''))) {
        return this.#fail('unauthorized', 'the server refused the token (HTTP 401)');
      }
      if (!opened && this.#tokenExp != null && this.#tokenExp <= this.#now()) {
        return this.#fail('token_expired', 'the token has expired; pass a tokenProvider to renew it');
      }
    }
    this.#scheduleReconnect({ code, reason });
  }

  #scheduleReconnect(why) {
    const delay = backoffDelay(this.#attempt, this.#reconnectOpts, this.#random);
    this.#attempt++;
    this.#setState('reconnecting', { delay, ...why });
    this.#reconnectTimer = this.#setTimeout(() => {
      this.#reconnectTimer = null;
      this.#open();
    }, delay);
  }

  // ---- heartbeat ----

  /**
   * Re-armed by every frame from the server. Before authentication the socket gets
   * interval + timeout to open and authenticate; afterwards silence for `interval` sends a ping
   * and `timeout` more without any frame gives the connection up.
   */
  #armHeartbeat() {
    this.#heartbeatTimer = this.#cancel(this.#heartbeatTimer);
    const { interval, timeout } = this.#heartbeatOpts;
    const dead = () => {
      this.#heartbeatTimer = null;
      this.#lost(CLOSE_DEAD, 'heartbeat timeout');
    };
    if (!this.#authenticated) {
      this.#heartbeatTimer = this.#setTimeout(dead, interval + timeout);
      return;
    }
    this.#heartbeatTimer = this.#setTimeout(() => {
      // Armed before sending: the pong re-arms the heartbeat, even if it arrives inside send().
      this.#heartbeatTimer = this.#setTimeout(dead, timeout);
      this.#sendFrame({ type: 'ping' });
    }, interval);
  }

  // ---- tokens ----

  #adoptToken(token) {
    this.#token = token;
    this.#tokenExp = tokenExpiry(token);
  }

  /** Calls the provider (one call at a time), keeps the token and schedules its refresh. */
  #fetchToken() {
    if (!this.#tokenFetch) {
      this.#tokenFetch = (async () => {
        try {
          const token = await this.#provider();
          if (typeof token !== 'string' || token === '') throw new TypeError('tokenProvider returned no token');
          this.#adoptToken(token);
          // An open connection moves to the new token too: the server closes a connection when
          // its token expires (4001) unless it is given a fresh one for the same user.
          if (this.#authenticated) this.#sendFrame({ type: 'authenticate', token, cid: `auth-${++this.#cidCounter}` });
          // Refresh only while connected or trying to be: an idle or closed client holds no timer.
          if (this.#state !== 'closed' && this.#state !== 'idle') this.#scheduleRefresh();
          return token;
        } finally {
          this.#tokenFetch = null;
        }
      })();
    }
    return this.#tokenFetch;
  }

  /**
   * With a provider, a new token is fetched shortly before the current one expires, so the next
   * reconnect and HTTP call have a valid one.
   */
  #scheduleRefresh() {
    this.#refreshTimer = this.#cancel(this.#refreshTimer);
    if (!this.#provider || this.#tokenExp == null) return;
    const remaining = this.#tokenExp - this.#now();
    if (remaining <= REFRESH_MIN_MS) return; // the next connect or HTTP call fetches a new one
    const delay = Math.max(REFRESH_MIN_MS, remaining - Math.min(REFRESH_LEAD_MS, remaining * 0.1));
    this.#refreshTimer = this.#setTimeout(() => {
      this.#refreshTimer = null;
      const epoch = this.#epoch;
      this.#fetchToken().catch((err) => {
        if (this.#state === 'closed' || epoch !== this.#epoch) return;
        this.#localError('token_provider', `token refresh failed: ${err?.message ?? err}`, { cause: err });
        // The old token's remaining life shrinks, so retries come sooner and stop at expiry.
        this.#scheduleRefresh();
      });
    }, delay);
  }

  /** Fetches a new token now (the server's expiry notice); it goes to the open connection. */
  #renewNow() {
    const epoch = this.#epoch;
    this.#fetchToken().catch((err) => {
      if (this.#state === 'closed' || epoch !== this.#epoch) return;
      this.#localError('token_provider', `token refresh failed: ${err?.message ?? err}`, { cause: err });
    });
  }

  /** A token for an HTTP call: the current one unless it has expired and can be renewed. */
  async #httpToken() {
    const expired = this.#tokenExp != null && this.#tokenExp <= this.#now();
    if (this.#provider && (this.#token == null || expired)) return this.#fetchToken();
    return this.#token;
  }

  // ---- frames in ----

  #onData(data) {
    this.#armHeartbeat(); // any frame proves the connection alive
    if (typeof data !== 'string') return; // the server sends text frames only
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      this.#localError('bad_json', 'the server sent a frame that is not JSON');
      return;
    }
    if (!frame || typeof frame.type !== 'string') return;
    switch (frame.type) {
      case 'authenticated':
        return this.#onAuthenticated(frame);
      case 'subscribed':
        return this.#onSubscribed(frame);
      case 'unsubscribed':
        return this.#onUnsubscribed(frame);
      case 'message':
        return this.#onMessage(frame);
      case 'ack':
        return this.#onAck(frame);
      case 'error':
        return this.#onError(frame);
      case 'typing_start':
      case 'typing_stop':
        return this.#emit('typing', { room: frame.room, user: frame.user, active: frame.type === 'typing_start' });
      case 'presence':
      case 'read_receipt':
        return this.#emit(frame.type, frame);
      case 'server_notice':
        // A shutdown (drain) or a rebalance is the server's doing, not a sign of trouble:
        // reconnect without backing off (the server spreads these closes over time).
        if (frame.code === 'shutdown' || frame.code === 'reconnect') this.#quickNext = true;
        // The token runs out soon: renew it on this connection (with a provider; a static token
        // cannot be renewed, and the connection closes with 4001 at its exp).
        if (frame.code === 'token_expiring' && this.#provider) this.#renewNow();
        return this.#emit('server_notice', frame);
      case 'reauthenticated':
        return this.#emit('reauthenticated', { user: frame.user, exp: frame.exp });
      default:
        // pong, and frame types added later: nothing to do beyond the heartbeat.
        return undefined;
    }
  }

  #onAuthenticated(frame) {
    if (this.#authenticated) return;
    this.#authenticated = true;
    this.#openedAt = this.#now();
    this.#info = { user: frame.user, server: frame.server, session: frame.session };
    // Subscriptions first: the server publishes sends that precede `subscribed` right after it,
    // while a send before the subscribe frame would be refused as not_subscribed.
    this.#resubscribe();
    for (const e of this.#outbox) this.#transmit(e);
    this.#armHeartbeat();
    this.#setState('open', {});
    this.#emit('authenticated', { ...this.#info });
    this.#connectWaiter?.resolve({ ...this.#info });
    this.#connectWaiter = null;
  }

  #onSubscribed(frame) {
    const rec = this.#rooms.get(frame.room);
    if (!rec?.wanted || typeof frame.seq !== 'number') return; // unsubscribed meanwhile
    const since = rec.sinceSent;
    rec.live = true;
    rec.inflight = false;
    rec.sinceSent = null;
    rec.subAttempts = 0;
    if (since == null) {
      // A fresh subscription delivers everything after frame.seq: that is where this client stands.
      rec.seq = rec.known ? Math.max(rec.seq, frame.seq) : frame.seq;
      rec.known = true;
    } else if (frame.truncated && typeof frame.recovered === 'number') {
      // Only the newest `recovered` follow; start there so the jump is not mistaken for a gap.
      rec.seq = Math.max(rec.seq, frame.seq - frame.recovered);
    }
    this.#syncRead(rec, frame);
    // Taken before the listeners run: one of them may subscribe again, and wait for the next answer.
    const waiters = [...rec.waiters];
    rec.waiters.clear();
    const { type, ...info } = frame;
    this.#emit('subscribed', info);
    if (frame.truncated) {
      this.#emit('truncated', { room: frame.room, seq: frame.seq, since: since ?? 0, recovered: frame.recovered ?? 0 });
    }
    for (const req of waiters) {
      req.results.set(frame.room, info);
      req.remaining.delete(frame.room);
      if (!req.remaining.size) req.resolve(req.rooms.map((r) => req.results.get(r)));
    }
  }

  /**
   * The server's read position wins when it is ahead (another device read further); ours is sent
   * again when it is ahead (it may have been lost with the previous connection).
   */
  #syncRead(rec, frame) {
    const mine = this.#reads.get(rec.room) ?? 0;
    const theirs = typeof frame.read === 'number' ? frame.read : 0;
    if (theirs > mine) this.#reads.set(rec.room, theirs);
    else if (mine > theirs && mine <= frame.seq) this.#sendFrame({ type: 'read', room: rec.room, seq: mine });
  }

  #onUnsubscribed(frame) {
    if (typeof frame.reason === 'string' && typeof frame.room === 'string') {
      // The server ended the subscription (the membership was removed, or the user left on
      // another device): forget the room, so it is not resubscribed on reconnect.
      const rec = this.#rooms.get(frame.room);
      if (rec && !isDirectRoom(frame.room)) {
        this.#rejectWaiters(rec, new ParleyError('forbidden', `${frame.room}: ${frame.reason}`, { room: frame.room }));
        this.#forget(rec);
        this.#reads.delete(frame.room);
      }
      this.#emit('unsubscribed', { room: frame.room, reason: frame.reason });
    }
    this.#settleUnsubscribe(frame.room);
  }

  /** The unsubscribe() calls waiting for `room` are over: done, or refused with `err`. */
  #settleUnsubscribe(room, err) {
    const waiters = this.#unsubscribeWaiters.get(room);
    if (!waiters) return;
    this.#unsubscribeWaiters.delete(room);
    for (const w of waiters) {
      if (err) w.reject(err);
      else w.resolve();
    }
  }

  /** An unsubscribe frame for `rooms`, with a cid its refusal names. False if not sent. */
  #sendUnsubscribe(rooms) {
    const cid = this.#newCid('u');
    if (!this.#authenticated || !this.#sendFrame({ type: 'unsubscribe', rooms, cid })) return false;
    this.#unsubscribeCids.set(cid, rooms);
    return true;
  }

  /**
   * The server refused an unsubscribe of `rooms`: it still holds those subscriptions. Rooms
   * subscribed to again meanwhile are settled (nothing to leave). rate_limited and unavailable
   * are sent again (after retry_after_ms, or a backoff); anything else rejects the waiting
   * unsubscribe() calls.
   */
  #unsubscribeFailed(rooms, frame) {
    const still = rooms.filter((room) => !this.#rooms.get(room)?.wanted);
    for (const room of rooms) if (!still.includes(room)) this.#settleUnsubscribe(room);
    if (!still.length) return;
    if (frame.code === 'rate_limited' || frame.code === 'unavailable') {
      const ms = Number.isFinite(frame.retry_after_ms)
        ? frame.retry_after_ms
        : backoffDelay(0, this.#reconnectOpts, this.#random);
      const id = this.#setTimeout(() => {
        this.#unsubscribeTimers.delete(id);
        const again = still.filter((room) => !this.#rooms.get(room)?.wanted);
        for (const room of still) if (!again.includes(room)) this.#settleUnsubscribe(room);
        // Not sent (not connected): the server dropped them with the connection.
        if (again.length && !this.#sendUnsubscribe(again)) again.forEach((room) => this.#settleUnsubscribe(room));
      }, ms);
      this.#unsubscribeTimers.add(id);
      return;
    }
    const err = new ParleyError(frame.code, frame.message ?? frame.code, { rooms: still });
    for (const room of still) this.#settleUnsubscribe(room, err);
  }

  #onMessage(frame) {
    if (typeof frame.room !== 'string') return;
    const direct = isDirectRoom(frame.room) || frame.to !== undefined;
    let rec = this.#rooms.get(frame.room);
    if (!rec) {
      if (!direct) return; // a room unsubscribed from: its last frames are not wanted
      rec = this.#room(frame.room);
    } else if (!rec.wanted && !direct) {
      return;
    }
    if (Number.isInteger(frame.seq)) {
      if (rec.known && frame.seq <= rec.seq) return; // already delivered: the catch-up overlapped live ones
      if (rec.known && frame.seq > rec.seq + 1) {
        // dm: rooms cannot be caught up by subscribing; the app can page history for the hole.
        this.#emit('gap', { room: frame.room, after: rec.seq, seq: frame.seq });
      }
      rec.seq = frame.seq;
      rec.known = true;
    }
    this.#markDelivered(frame);
    this.#emit('message', frame);
  }

  /** Our own message came back: it is delivered, its ack (storage) may take longer. */
  #markDelivered(frame) {
    if (frame.cid === undefined || frame.from !== this.#info?.user) return;
    const e = this.#outbox.find((x) => x.cid === frame.cid);
    if (!e || e.delivered) return;
    Object.assign(e, { delivered: true, id: frame.id, seq: frame.seq });
    this.#emit('outbox', this.pending);
  }

  #onAck(frame) {
    const i = this.#outbox.findIndex((e) => e.cid === frame.cid);
    if (i < 0) return; // a second ack for a resend that crossed the first one
    const [e] = this.#outbox.splice(i, 1);
    e.retryTimer = this.#cancel(e.retryTimer);
    const ack = { cid: frame.cid, id: frame.id, seq: frame.seq };
    e.resolve(ack);
    this.#emit('ack', ack);
    this.#emit('outbox', this.pending);
  }

  #onError(frame) {
    if (frame.cid !== undefined) {
      const e = this.#outbox.find((x) => x.cid === frame.cid);
      if (e) this.#sendFailed(e, frame);
      const rooms = this.#subscribeCids.get(frame.cid);
      if (rooms) {
        this.#subscribeCids.delete(frame.cid);
        this.#subscribeFailed(rooms, frame, true);
      }
      const left = this.#unsubscribeCids.get(frame.cid);
      if (left) {
        this.#unsubscribeCids.delete(frame.cid);
        this.#unsubscribeFailed(left, frame);
      }
    } else if (frame.code === 'forbidden' || frame.code === 'unavailable') {
      const room = typeof frame.room === 'string' ? frame.room : this.#roomNamedIn(frame.message);
      if (room) this.#subscribeFailed([room], frame, false);
    }
    this.#emit('error', frame);
  }

  /**
   * The room a per-room subscribe error is about. The server names it only in the message text
   * ("r1 : not a member of this room", "could not subscribe to r1: ...; retry"), so match it
   * against the rooms waiting for `subscribed`, longest first.
   */
  #roomNamedIn(message) {
    if (typeof message !== 'string') return null;
    const waiting = [...this.#rooms.values()].filter((r) => r.inflight).map((r) => r.room);
    waiting.sort((a, b) => b.length - a.length);
    return (
      waiting.find(
        (room) => message.startsWith(`${room} `) || message.startsWith(`${room}:`) || message.includes(` ${room}:`),
      ) ?? null
    );
  }

  /**
   * A subscribe failed for `rooms`. `unavailable` is retried after a backoff; anything else is
   * final: the rooms are forgotten (unless a whole-frame error left an existing subscription
   * alone) and the subscribe() promises waiting for them reject.
   */
  #subscribeFailed(rooms, frame, wholeFrame) {
    for (const room of rooms) {
      const rec = this.#rooms.get(room);
      if (!rec?.wanted) continue;
      rec.inflight = false;
      rec.sinceSent = null;
      if (frame.code === 'unavailable' || frame.code === 'rate_limited') {
        if (!wholeFrame) rec.live = false; // the server dropped the subscription
        this.#retrySubscribe(rec);
        continue;
      }
      const err = new ParleyError(frame.code, frame.message ?? frame.code, { room });
      this.#rejectWaiters(rec, err);
      if (!wholeFrame || !rec.live) this.#forget(rec);
    }
  }

  #retrySubscribe(rec) {
    const delay = backoffDelay(rec.subAttempts++, this.#reconnectOpts, this.#random);
    rec.subTimer = this.#setTimeout(() => {
      rec.subTimer = null;
      if (this.#authenticated && rec.wanted && !rec.live && !rec.inflight) this.#sendSubscribe([rec]);
    }, delay);
  }

  #rejectWaiters(rec, err) {
    for (const req of rec.waiters) req.reject(err);
    rec.waiters.clear();
  }

  #forget(rec) {
    rec.wanted = false;
    rec.live = false;
    rec.subTimer = this.#cancel(rec.subTimer);
    rec.readTimer = this.#cancel(rec.readTimer);
    if (!isDirectRoom(rec.room)) this.#rooms.delete(rec.room);
  }

  // ---- frames out ----

  #sendFrame(frame) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== WS_OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  #transmit(entry) {
    if (!this.#authenticated) return;
    this.#sendFrame(entry.frame);
  }

  /** Every wanted room, with `since` where this client has a position. */
  #resubscribe() {
    const recs = [...this.#rooms.values()].filter((r) => r.wanted);
    if (recs.length) this.#sendSubscribe(recs);
  }

  /** Subscribe frames for `recs`, split to stay under the server's frame limit. */
  #sendSubscribe(recs) {
    const budget = this.#maxFrame - 200;
    let batch = [];
    let size = 0;
    const flush = () => {
      if (!batch.length) return;
      const cid = this.#newCid('s');
      const frame = { type: 'subscribe', rooms: batch.map((r) => r.room) };
      const since = {};
      for (const r of batch) if (r.sinceSent != null) since[r.room] = r.sinceSent;
      if (Object.keys(since).length) frame.since = since;
      frame.cid = cid; // echoed by errors about the whole frame (too_large, bad_request)
      this.#subscribeCids.set(cid, frame.rooms);
      this.#sendFrame(frame);
      batch = [];
      size = 0;
    };
    for (const rec of recs) {
      rec.inflight = true;
      // Rooms never seen get no since: the server then starts at its current seq.
      rec.sinceSent = rec.known ? rec.seq : null;
      const cost = 2 * rec.room.length + 32; // the name in rooms and in since, and a seq
      if (size + cost > budget) flush();
      batch.push(rec);
      size += cost;
    }
    flush();
  }

  #newCid(prefix) {
    const rand = Math.floor(this.#random() * 2 ** 32).toString(36);
    return `${prefix}-${this.#now().toString(36)}-${rand}-${(++this.#cidCounter).toString(36)}`;
  }

  #room(room) {
    let rec = this.#rooms.get(room);
    if (!rec) {
      rec = {
        room,
        wanted: false, // subscribed by the app: resubscribed on every connection
        known: false, // `seq` is a real position (from a subscribed or a message)
        seq: 0, // the last seq delivered to the app (or the room's seq when first subscribed)
        live: false, // subscribed on the current socket
        inflight: false, // a subscribe frame awaits its answer on the current socket
        sinceSent: null,
        subAttempts: 0,
        subTimer: null,
        readAt: -Infinity, // when the last read frame went out
        readTimer: null, // sends the newest read position at the end of the throttle window
        waiters: new Set(),
        typing: false,
        typingAt: -Infinity,
      };
      this.#rooms.set(room, rec);
    }
    return rec;
  }

  // ---- rooms ----

  /**
   * Subscribes to rooms, now and after every reconnect (with `since`, so nothing is missed).
   * Resolves with each room's `subscribed` fields, in the order given. Rejects (ParleyError with
   * .code and .room) on `forbidden`, `too_large`, `bad_request`; `unavailable` is retried.
   * @param {string | string[]} rooms
   * @returns {Promise<Array<{room: string, seq: number, read?: number, unread?: number,
   *   recovered?: number, truncated?: boolean}>>}
   */
  subscribe(rooms) {
    const list = roomList(rooms);
    if (!list) return rejected(new ParleyError('bad_request', 'rooms must be a string or an array of strings'));
    const bad = list.find((r) => typeof r !== 'string' || !ROOM_RE.test(r));
    if (bad !== undefined) return rejected(new ParleyError('bad_request', `invalid room id: ${bad}`, { room: bad }));
    const dm = list.find(isDirectRoom);
    if (dm) {
      return rejected(new ParleyError('forbidden', `${dm}: direct conversations come without subscribing`, { room: dm }));
    }
    if (!list.length) return Promise.resolve([]);
    const d = deferred();
    const req = { rooms: list, remaining: new Set(list), results: new Map(), resolve: d.resolve, reject: d.reject };
    const toSend = [];
    for (const room of list) {
      const rec = this.#room(room);
      rec.wanted = true;
      rec.waiters.add(req);
      // One fresh subscribe at a time per room: a second one racing it could move the start seq.
      if (!rec.inflight) toSend.push(rec);
    }
    if (this.#authenticated && toSend.length) this.#sendSubscribe(toSend);
    return d.promise;
  }

  /**
   * Unsubscribes and forgets rooms (their seqs too): they are not resubscribed on reconnect.
   * Resolves when the server confirms, or at once while not connected. A refusal for the
   * connection's rate (rate_limited) is sent again after retry_after_ms; any other refusal
   * rejects with a ParleyError naming the rooms (the server still holds them).
   * @param {string | string[]} rooms
   * @returns {Promise<void>}
   */
  unsubscribe(rooms) {
    const list = roomList(rooms);
    if (!list) return rejected(new ParleyError('bad_request', 'rooms must be a string or an array of strings'));
    const bad = list.find((r) => typeof r !== 'string' || !ROOM_RE.test(r));
    if (bad !== undefined) return rejected(new ParleyError('bad_request', `invalid room id: ${bad}`, { room: bad }));
    // dm: rooms are not subscribed to, so there is nothing to leave (and their seq stays for dedupe).
    const rest = list.filter((r) => !isDirectRoom(r));
    for (const room of rest) {
      const rec = this.#rooms.get(room);
      if (!rec) continue;
      this.#rejectWaiters(rec, new ParleyError('unsubscribed', `${room}: unsubscribed before subscribed`, { room }));
      this.#forget(rec);
      this.#reads.delete(room);
    }
    if (!rest.length || !this.#sendUnsubscribe(rest)) return Promise.resolve();
    return Promise.all(
      rest.map(
        (room) =>
          new Promise((resolve, reject) => {
            const waiters = this.#unsubscribeWaiters.get(room) ?? [];
            waiters.push({ resolve, reject });
            this.#unsubscribeWaiters.set(room, waiters);
          }),
      ),
    ).then(noop);
  }

  /**
   * The last seq this client has for a room: of the last message delivered to the app, or the
   * room's seq when it was first subscribed if that is later. 0 if none.
   * @param {string} room
   * @returns {number}
   */
  lastSeq(room) {
    return this.#rooms.get(room)?.seq ?? 0;
  }

  // ---- messages ----

  /**
   * Sends a message to a subscribed room. It stays in `pending` until acknowledged, survives
   * reconnects (resent with the same cid, which the server never delivers twice) and is queued
   * while not connected. Resolves on the `ack`; rejects (ParleyError with .code and .cid) on a
   * final error. `unavailable` and `not_stored` are retried.
   * @param {string} room
   * @param {string} text
   * @param {{cid?: string}} [options] a cid of your own, e.g. to resend a message saved earlier
   * @returns {Promise<{cid: string, id: string, seq: number}>}
   */
  send(room, text, options = {}) {
    if (typeof room !== 'string' || !ROOM_RE.test(room)) {
      return rejected(new ParleyError('bad_request', `invalid room id: ${room}`, { room }));
    }
    return this.#enqueue({ room }, text, options.cid);
  }

  /**
   * Sends a direct message to a user; otherwise like send(). The message event that follows
   * carries the conversation's `dm:` room and `to`.
   * @param {string} user
   * @param {string} text
   * @param {{cid?: string}} [options]
   * @returns {Promise<{cid: string, id: string, seq: number}>}
   */
  sendDirect(user, text, options = {}) {
    if (typeof user !== 'string' || user === '' || byteLength(user) > 128 || CONTROL_RE.test(user)) {
      return rejected(new ParleyError('bad_request', 'a user id is 1-128 bytes without control characters'));
    }
    return this.#enqueue({ to: user }, text, options.cid);
  }

  #enqueue(target, text, cid) {
    if (typeof text !== 'string' || text === '') {
      return rejected(new ParleyError('bad_request', 'text must be a non-empty string'));
    }
    if (cid === undefined) cid = this.#newCid('c');
    if (typeof cid !== 'string' || cid === '' || byteLength(cid) > 128) {
      return rejected(new ParleyError('bad_request', 'cid must be a string of 1-128 bytes'));
    }
    const same = this.#outbox.find((e) => e.cid === cid);
    if (same) return same.promise; // already on its way: a cid names one message
    const frame = { type: 'message', ...target, text, cid };
    // The server closes the connection (1009) on an oversized frame; resending would loop.
    if (byteLength(JSON.stringify(frame)) > this.#maxFrame) {
      return rejected(new ParleyError('too_large', 'the message is larger than the frame limit', { cid }));
    }
    const d = deferred();
    const entry = { cid, ...target, text, ts: this.#now(), frame, attempts: 0, retryTimer: null, ...d };
    this.#outbox.push(entry);
    this.#emit('outbox', this.pending);
    this.#transmit(entry);
    return d.promise;
  }

  #sendFailed(entry, frame) {
    if (TRANSIENT_SEND_CODES.has(frame.code)) {
      // Same cid again later: the server stores it once and delivers it once. Refused for the
      // rate, not before the server said it could pass (and spread by the backoff's jitter).
      this.#cancel(entry.retryTimer);
      const backoff = backoffDelay(entry.attempts++, this.#reconnectOpts, this.#random);
      const delay = Math.max(backoff, Number.isFinite(frame.retry_after_ms) ? frame.retry_after_ms : 0);
      entry.retryTimer = this.#setTimeout(() => {
        entry.retryTimer = null;
        if (this.#outbox.includes(entry)) this.#transmit(entry);
      }, delay);
      return;
    }
    this.#outbox.splice(this.#outbox.indexOf(entry), 1);
    entry.retryTimer = this.#cancel(entry.retryTimer);
    const { room, to } = entry;
    entry.reject(new ParleyError(frame.code, frame.message ?? frame.code, { cid: entry.cid, room, to }));
    this.#emit('outbox', this.pending);
  }

  /**
   * Tells the room (and the server) this user has read up to `seq`. Ignored unless `seq` is
   * greater than the last one given for the room; sent once the room is subscribed.
   * @param {string} room
   * @param {number} seq
   */
  markRead(room, seq) {
    if (!Number.isInteger(seq) || seq <= (this.#reads.get(room) ?? 0)) return;
    this.#reads.set(room, seq);
    // Otherwise #syncRead sends it with the room's next `subscribed`.
    const rec = this.#rooms.get(room);
    if (rec?.live) this.#sendRead(rec);
  }

  /** The room's newest read position, at most once per readThrottle ms; the last position given
   *  within a window goes out at its end. */
  #sendRead(rec) {
    if (rec.readTimer) return; // the one scheduled sends the newest position
    const wait = rec.readAt + this.#readThrottle - this.#now();
    if (wait > 0) {
      rec.readTimer = this.#setTimeout(() => {
        rec.readTimer = null;
        if (rec.live) this.#sendRead(rec);
      }, wait);
      return;
    }
    rec.readAt = this.#now();
    this.#sendFrame({ type: 'read', room: rec.room, seq: this.#reads.get(rec.room) });
  }

  /**
   * Typing indicator: `typing_start` at most once per typingThrottle ms per room (call it on
   * every keystroke), `typing_stop` when `active` is false and a start was sent. Dropped while
   * not connected.
   * @param {string} room
   * @param {boolean} [active=true]
   */
  typing(room, active = true) {
    const rec = this.#rooms.get(room);
    if (!rec?.live) return;
    if (active) {
      const now = this.#now();
      if (now - rec.typingAt < this.#typingThrottle) return;
      if (this.#sendFrame({ type: 'typing_start', room })) {
        rec.typingAt = now;
        rec.typing = true;
      }
    } else if (rec.typing) {
      this.#sendFrame({ type: 'typing_stop', room });
      rec.typing = false;
      rec.typingAt = -Infinity;
    }
  }

  // ---- HTTP ----

  /**
   * A page of a room's history, newest first, as the server sends it.
   * @param {string} room
   * @param {{before?: number, limit?: number}} [options] `before`: a seq (next_before of the
   *   previous page); `limit`: 1..100
   * @returns {Promise<{room: string, messages: object[], has_more: boolean, next_before?: number}>}
   */
  history(room, options = {}) {
    const query = new URLSearchParams();
    if (options.before != null) query.set('before', String(options.before));
    if (options.limit != null) query.set('limit', String(options.limit));
    const qs = query.toString();
    return this.#request('GET', `/api/rooms/${encodeURIComponent(room)}/messages${qs ? `?${qs}` : ''}`);
  }

  /**
   * The user's rooms with their seq and read position.
   * @returns {Promise<{user: string, rooms: Array<{room: string, seq: number, read: number, unread: number}>}>}
   */
  myRooms() {
    return this.#request('GET', '/api/users/me/rooms');
  }

  /**
   * A room's members and whether they are online.
   * @param {string} room
   * @returns {Promise<{room: string, members: Array<{user: string, online: boolean}>}>}
   */
  members(room) {
    return this.#request('GET', `/api/rooms/${encodeURIComponent(room)}/members`);
  }

  /**
   * Leaves a room: unsubscribes, then removes this user's membership.
   * @param {string} room
   * @returns {Promise<void>}
   */
  async leave(room) {
    await this.unsubscribe(room);
    const user = this.#info?.user ?? decodeJwt(await this.#httpToken())?.sub;
    if (typeof user !== 'string') throw new ParleyError('unauthorized', 'the user id is unknown: connect first');
    await this.#request('DELETE', `/api/rooms/${encodeURIComponent(room)}/members/${encodeURIComponent(user)}`);
  }

  /** An authorized JSON request; a 401 with a provider is retried once with a fresh token. */
  async #request(method, path, retried = false) {
    if (!this.#fetch) throw new TypeError('ParleyClient: no fetch; pass one as options.fetch');
    const token = await this.#httpToken();
    let res;
    try {
      res = await this.#fetch(`${this.#httpBase}${path}`, {
        method,
        headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
      });
    } catch (err) {
      throw new ParleyError('network', `${method} ${path}: ${err?.message ?? err}`, { status: 0, cause: err });
    }
    if (res.status === 401 && this.#provider && !retried) {
      await this.#fetchToken();
      return this.#request(method, path, true);
    }
    let body = null;
    try {
      body = await res.json();
    } catch {
      // A body that is not JSON: the status says enough.
    }
    if (!res.ok) {
      const code = typeof body?.error === 'string' ? body.error : `http_${res.status}`;
      throw new ParleyError(code, body?.message ?? `${method} ${path}: HTTP ${res.status}`, { status: res.status });
    }
    return body;
  }
}

export default ParleyClient;
