// Who is signed in (for this tab), the tokens, and which parleyd instances to connect to.

const KEY_USER = 'parley.user';
const KEY_SERVERS = 'parley.servers';
const KEY_ROOM = 'parley.room';
const KEY_OUTBOX = 'parley.outbox';
const READS_PREFIX = 'parley.reads.'; // localStorage: read positions in direct conversations

// sessionStorage may be unavailable (privacy modes, sandboxed frames): the app then simply forgets.
function storage(kind) {
  try {
    const s = globalThis[kind];
    s.getItem('x');
    return s;
  } catch {
    return null;
  }
}
const session = storage('sessionStorage');
const local = storage('localStorage');

function get(store, key) {
  try {
    return store?.getItem(key) ?? null;
  } catch {
    return null;
  }
}
function set(store, key, value) {
  try {
    if (value == null) store?.removeItem(key);
    else store?.setItem(key, value);
  } catch {
    // Full or unavailable: not worth bothering the user.
  }
}

export const saved = {
  get user() {
    return get(session, KEY_USER);
  },
  set user(v) {
    set(session, KEY_USER, v);
  },
  get room() {
    return get(session, KEY_ROOM);
  },
  set room(v) {
    set(session, KEY_ROOM, v);
  },
  /** Unacknowledged sends, kept so a reload sends them again with their cids. */
  get outbox() {
    try {
      const list = JSON.parse(get(session, KEY_OUTBOX) ?? '[]');
      return Array.isArray(list) ? list : [];
    } catch {
      return [];
    }
  },
  set outbox(list) {
    set(session, KEY_OUTBOX, list.length ? JSON.stringify(list) : null);
  },
  /** Read positions in direct conversations: the server keeps them for rooms only. */
  reads(user) {
    try {
      return JSON.parse(get(local, READS_PREFIX + user) ?? '{}') ?? {};
    } catch {
      return {};
    }
  },
  saveReads(user, map) {
    set(local, READS_PREFIX + user, JSON.stringify(map));
  },
  clear() {
    try {
      session?.clear();
    } catch {
      // nothing to clear
    }
  },
};

/** The WebSocket URL of the instance that served this page. */
export function ownWebSocketUrl() {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
}

/**
 * The WebSocket URLs to connect to, in the order to try them: this page's own instance first, then
 * the others named by `?servers=ws://host:port/ws,ws://...` (remembered for the tab).
 *
 * In production one URL is enough: nginx in front of the instances (deploy/nginx.conf, ip_hash)
 * sends a reconnect to a live one. Without a balancer (development, the browser test) the list lets
 * a page whose instance dies come back through another: the client takes the next URL on every
 * reconnect attempt.
 */
export function serverList() {
  const own = ownWebSocketUrl();
  let extra = new URLSearchParams(location.search).get('servers');
  if (extra != null) set(session, KEY_SERVERS, extra);
  else extra = get(session, KEY_SERVERS) ?? '';
  const urls = [own];
  for (const item of extra.split(',')) {
    const s = item.trim();
    if (!s) continue;
    try {
      const u = new URL(s);
      if ((u.protocol === 'ws:' || u.protocol === 'wss:') && !urls.includes(u.href)) urls.push(u.href);
    } catch {
      // not a URL: ignored
    }
  }
  return urls;
}

const CONTROL_RE = /[\u0000-\u001f\u007f]/; // eslint-disable-line no-control-regex

/** A user id the server accepts: 1-128 bytes of UTF-8, no control characters. Null if fine. */
export function userIdProblem(name) {
  if (!name) return 'Enter a name.';
  if (new TextEncoder().encode(name).length > 128) return 'That name is too long (at most 128 bytes).';
  if (CONTROL_RE.test(name)) return 'A name cannot contain control characters.';
  return null;
}

export class TokenError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'TokenError';
    this.code = code;
  }
}

export const DEV_OFF_MESSAGE =
  'Signing in by name only works when the server runs with PARLEY_DEV=1 (development only). ' +
  'In a real deployment your application’s backend mints tokens with POST /api/websocket/token.';

/** POST /api/dev/token: a token for `user` (development servers only). */
export async function devToken(user, { timeout = 6000 } = {}) {
  let res;
  try {
    res = await fetch('/api/dev/token', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ user_id: user }),
      signal: AbortSignal.timeout(timeout),
      cache: 'no-store',
    });
  } catch {
    throw new TokenError('network', 'Cannot reach the server. Check that it is running, then try again.');
  }
  if (res.status === 404) throw new TokenError('dev_off', DEV_OFF_MESSAGE);
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (res.status === 400) throw new TokenError('bad_name', 'The server refused that name: use 1–128 bytes without control characters.');
  if (!res.ok || typeof body?.token !== 'string') {
    throw new TokenError('http', `The server could not sign you in (HTTP ${res.status}${body?.message ? `: ${body.message}` : ''}).`);
  }
  const ttl = Number(body.expires_in) > 0 ? Number(body.expires_in) : 3600;
  return { token: body.token, user: body.user_id ?? user, expires: Date.now() + ttl * 1000 };
}

/**
 * Tokens for one signed-in user. `provider` is the client's tokenProvider: a fresh token from the
 * server each time; if the server that served the page cannot be reached (it died, and the
 * WebSocket is moving to another instance), the last token while it is still valid.
 */
export class Tokens {
  #user;
  #current;

  constructor(user, first) {
    this.#user = user;
    this.#current = first ?? null;
  }

  provider = async () => {
    try {
      this.#current = await devToken(this.#user, { timeout: 4000 });
    } catch (err) {
      const cur = this.#current;
      if (err.code === 'network' && cur && cur.expires - Date.now() > 15000) return cur.token;
      throw err;
    }
    return this.#current.token;
  };

  /** A valid token for a direct fetch (the current one unless it is about to expire). */
  async token() {
    const cur = this.#current;
    if (cur && cur.expires - Date.now() > 30000) return cur.token;
    return this.provider();
  }
}
