// Stand-in for `k6/ws` (the classic, blocking WebSocket API). ws.connect dials (the main thread
// holds the socket, with the npm `ws` package), throws if the upgrade fails (as k6 does), runs
// the set-up function with the socket, then runs the socket's event loop (messages, timers)
// until it is closed, and returns the upgrade response. Records ws_sessions, ws_msgs_sent,
// ws_msgs_received.
import { metric, nextId, post, waitFor } from '../runtime.mjs';

export function connect(url, params, fn) {
  if (typeof params === 'function') { fn = params; params = {}; }
  const id = nextId();
  post({ t: 'ws-open', id, url: String(url), headers: { ...((params && params.headers) || {}) } });
  const first = waitFor((m) => m.t === 'ws-event' && m.id === id && (m.ev === 'open' || m.ev === 'fail'));
  const res = { url: String(url), status: first.status, headers: first.headers || {}, body: first.body || '', error: first.error || '' };
  if (first.ev === 'fail') throw new Error(`websocket: ${first.error || `bad handshake (HTTP ${first.status})`}`);
  metric('ws_sessions', 'counter', 1);

  const handlers = {};
  const timers = [];
  let closed = false, closing = false;
  const emit = (ev, ...args) => { for (const h of handlers[ev] || []) h(...args); };
  const socket = {
    on(ev, h) { (handlers[ev] = handlers[ev] || []).push(h); },
    send(data) { if (closed || closing) return; post({ t: 'ws-send', id, data: String(data) }); metric('ws_msgs_sent', 'counter', 1); },
    ping() { if (!closed && !closing) post({ t: 'ws-ping', id }); },
    close(code) { if (closed || closing) return; closing = true; post({ t: 'ws-close', id, code }); },
    setTimeout(h, ms) { timers.push({ h, at: Date.now() + Number(ms), every: 0 }); },
    setInterval(h, ms) { if (!(ms > 0)) throw new Error('setInterval requires a positive interval'); timers.push({ h, at: Date.now() + Number(ms), every: Number(ms) }); },
  };
  fn(socket);
  emit('open');
  while (!closed) {
    timers.sort((a, b) => a.at - b.at);
    const wait = timers.length ? Math.max(0, timers[0].at - Date.now()) : 1000;
    const m = waitFor((x) => x.t === 'ws-event' && x.id === id, wait);
    if (m) {
      if (m.ev === 'message') { metric('ws_msgs_received', 'counter', 1); emit('message', m.data); }
      else if (m.ev === 'pong') emit('pong');
      else if (m.ev === 'ping') emit('ping');
      else if (m.ev === 'error') emit('error', { error: () => m.error });
      else if (m.ev === 'close') { closed = true; emit('close', m.code); }
      continue;
    }
    const now = Date.now();
    for (const t of timers.filter((x) => x.at <= now)) {
      if (t.every) t.at += t.every; else timers.splice(timers.indexOf(t), 1);
      if (!closed) t.h();
    }
  }
  return res;
}
export default { connect };
