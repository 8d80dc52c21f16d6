// k6 load test for Parley: virtual users ramp up, each gets a token from the HTTP API, connects
// over WebSocket (through nginx), authenticates, joins a shared room, sends messages and checks
// that every message reaches it: its own (echoed, then acked once stored) and everyone else's
// (a room's seq has no gaps, so a gap in what a subscriber sees is a lost message). The run
// fails (k6 exits 99) on any loss, duplicate, unacked message, error frame or failed connection.
//
//   k6 run -e PARLEY_URL=http://127.0.0.1:8080 -e PARLEY_API_KEY=... bench/k6/chat.js
//
// Settings (-e NAME=value): PARLEY_URL (the HTTP base, nginx's; default http://127.0.0.1:8080),
// PARLEY_WS_URL (default: the websocket_url of the token response; PARLEY_WS_URLS, comma-separated,
// spreads the VUs over several), PARLEY_API_KEY (required),
// VUS (peak virtual users, 50), RAMP (30s), HOLD (1m), RAMP_DOWN (10s), ROOMS (rooms the users share, 5),
// MSGS (messages per iteration, 20), INTERVAL_MS (between a user's sends, 250), SETTLE_MS
// (how long to wait for the last deliveries before closing, 2000), EXPECT_ACKS (1: parleyd has
// a database; 0: it has none and sends no acks), P95_MS (delivery latency threshold, 1000).
//
// The server must let the users into the rooms: PARLEY_OPEN_ROOMS=1, or make the users
// (k6-<run>-<VU>) members over the API first. Written against k6's documented API (k6, k6/http,
// k6/ws, k6/metrics), but NOT yet run under real k6: the project's machines cannot install it.
// `make test` runs it, small, under a stand-in built on Node (test/k6-standin/, bench/README).
import http from 'k6/http';
import ws from 'k6/ws';
import { check, sleep } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';

const BASE = (__ENV.PARLEY_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const API_KEY = __ENV.PARLEY_API_KEY || '';
const VUS = Number(__ENV.VUS || 50);
const ROOMS = Number(__ENV.ROOMS || 5);
const MSGS = Number(__ENV.MSGS || 20);
const INTERVAL_MS = Number(__ENV.INTERVAL_MS || 250);
const SETTLE_MS = Number(__ENV.SETTLE_MS || 2000);
const EXPECT_ACKS = (__ENV.EXPECT_ACKS || '1') !== '0';

// Milliseconds from a send to its arrival at a subscriber (the sender's copy included); the
// send time travels in the message text, so both ends read the same clock (this k6 process).
const deliveryMs = new Trend('parley_delivery_ms', true);
const ackMs = new Trend('parley_ack_ms', true);
const sent = new Counter('parley_sent');
const delivered = new Counter('parley_delivered');          // every copy received, own and others'
const deliveredOthers = new Counter('parley_delivered_others');
const lost = new Counter('parley_lost');                    // own messages not echoed + seq gaps
const duplicates = new Counter('parley_duplicates');
const unacked = new Counter('parley_unacked');
const errors = new Counter('parley_error_frames');
const connected = new Rate('parley_connected');             // upgraded and authenticated

export const options = {
  scenarios: {
    chat: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: __ENV.RAMP || '30s', target: VUS },
        { duration: __ENV.HOLD || '1m', target: VUS },
        { duration: __ENV.RAMP_DOWN || '10s', target: 0 },
      ],
      gracefulRampDown: '30s',
    },
  },
  thresholds: {
    parley_lost: ['count==0'],
    parley_duplicates: ['count==0'],
    parley_unacked: ['count==0'],
    parley_error_frames: ['count==0'],
    parley_connected: ['rate==1'],
    parley_delivered_others: ['count>0'],
    parley_delivery_ms: [`p(95)<${Number(__ENV.P95_MS || 1000)}`],
    checks: ['rate==1'],
  },
};

// One run id for every VU (the init code runs once per VU; setup() once per run).
export function setup() {
  if (!API_KEY) throw new Error('set PARLEY_API_KEY (-e PARLEY_API_KEY=...): the token endpoint needs it');
  return { run: Date.now().toString(36) };
}

export default function (data) {
  const user = `k6-${data.run}-${__VU}`;
  const room = `k6-${data.run}-${__VU % ROOMS}`;
  const res = http.post(`${BASE}/api/websocket/token`, JSON.stringify({ user_id: user }), {
    headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' },
  });
  if (!check(res, { 'token: 200': (r) => r.status === 200 })) { connected.add(false); sleep(1); return; }
  const token = res.json('token');
  // PARLEY_WS_URLS spreads the VUs over several URLs (nginx's ip_hash puts every connection from
  // one load machine on one instance; list the instances to load them all).
  const urls = (__ENV.PARLEY_WS_URLS || '').split(',').filter(Boolean);
  const url = urls.length ? urls[__VU % urls.length] : __ENV.PARLEY_WS_URL || res.json('websocket_url');

  const s = { user, room, prefix: `${__VU}-${__ITER}`, mine: {}, lastSeq: {}, authed: false, subscribed: false, n: 0 };
  let wsRes = null;
  try {
    wsRes = ws.connect(url, { headers: { Authorization: `Bearer ${token}` } }, (socket) => session(socket, s));
  } catch (e) {
    console.error(`${user}: ws.connect: ${e}`); // a refused upgrade or a dial error: k6 throws
  }
  check(wsRes, { 'ws: 101': (r) => r !== null && r.status === 101 });
  if (!s.authed) connected.add(false);

  for (const cid of Object.keys(s.mine)) {
    const m = s.mine[cid];
    if (m.echoed === 0) lost.add(1);
    if (m.echoed > 1) duplicates.add(m.echoed - 1);
    if (EXPECT_ACKS && !m.acked) unacked.add(1);
  }
  check(s, { 'every message sent': (x) => x.n === MSGS });
  sleep(Math.random());
}

// One connection: authenticate (the token is on the upgrade), join the room, send MSGS messages
// INTERVAL_MS apart, then wait SETTLE_MS for the last deliveries and acks, and close.
function session(socket, s) {
  socket.on('message', (raw) => {
    const now = Date.now();
    let f;
    try { f = JSON.parse(raw); } catch (e) { errors.add(1); return; }
    if (f.type === 'authenticated') {
      s.authed = true;
      connected.add(true);
      socket.send(JSON.stringify({ type: 'subscribe', rooms: [s.room] }));
    } else if (f.type === 'subscribed') {
      s.subscribed = true;
      s.lastSeq[f.room] = f.seq; // every message after it comes exactly once, in seq order
      socket.setInterval(() => {
        if (s.n >= MSGS) return;
        const cid = `${s.prefix}-${s.n++}`;
        s.mine[cid] = { at: Date.now(), echoed: 0, acked: false };
        socket.send(JSON.stringify({ type: 'message', room: s.room, cid, text: JSON.stringify({ t: s.mine[cid].at, from: s.user }) }));
        sent.add(1);
        if (s.n === MSGS) socket.setTimeout(() => socket.close(1000), SETTLE_MS);
      }, INTERVAL_MS);
    } else if (f.type === 'message') {
      const last = s.lastSeq[f.room];
      if (last !== undefined && f.seq <= last) { duplicates.add(1); return; }
      if (last !== undefined && f.seq > last + 1) lost.add(f.seq - last - 1);
      s.lastSeq[f.room] = f.seq;
      delivered.add(1);
      let body = null;
      try { body = JSON.parse(f.text); } catch (e) { /* not one of ours */ }
      if (body && body.t) deliveryMs.add(now - body.t);
      if (f.from === s.user && s.mine[f.cid]) s.mine[f.cid].echoed++;
      else deliveredOthers.add(1);
    } else if (f.type === 'ack') {
      const m = s.mine[f.cid];
      if (m && !m.acked) { m.acked = true; ackMs.add(now - m.at); }
    } else if (f.type === 'error') {
      errors.add(1);
      console.error(`${s.user}: error frame ${raw}`);
    }
  });
  socket.on('error', (e) => { console.error(`${s.user}: ${e && e.error ? e.error() : e}`); });
  // A connection that never gets going must not hold the VU for ever.
  socket.setTimeout(() => { if (!s.subscribed) socket.close(); }, 10000);
}
