// The limits (docs/security.md, Limits): a token bucket per connection for messages, typing and
// reads (error rate_limited with the frame's cid and retry_after_ms, nothing published; a flood
// past the refusals closes with 1008), subscribe churn, WebSockets per client address (the
// X-Forwarded-For address only from a trusted proxy) and per instance (HTTP 503 before the
// upgrade), the Origin allowlist (403), HTTP header and body sizes (431, 413). Each: the refused
// request gets its code, another client of the same instance still gets its pong, the connection
// or instance works afterwards, and /metrics counts it (and still passes promtool).
import {
  test, startRedis, startParleyd, connect, connectAuthed, mintToken, newUser, httpRequest,
  rawExchange, runCmd, eq, assert, until, sleep, PARLEYD, WebSocket,
} from './lib.mjs';
import { ParleyClient } from '../../web/parley.js';
import net from 'node:net';

async function metrics(port, { check = false } = {}) {
  const r = await httpRequest(port, 'GET', '/metrics');
  eq(r.status, 200, 'GET /metrics');
  if (check) {
    const p = await runCmd('promtool', ['check', 'metrics'], { input: r.text, timeout: 20000 });
    const out = (p.stdout + p.stderr).trim();
    assert(p.code === 0 && out === '', `promtool check metrics: exit ${p.code}: ${out}`);
  }
  const m = new Map();
  for (const line of r.text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    m.set(line.slice(0, sp), Number(line.slice(sp + 1)));
  }
  return m;
}
const sum = (m, name) => [...m].filter(([k]) => k === name || k.startsWith(name + '{')).reduce((a, [, v]) => a + v, 0);

// A client from source address `ip` (127.A.B.C), optionally with more upgrade headers.
const from = (srv, ip, headers = {}) => connect(srv, { token: mintToken(newUser('lim')), headers, wsOptions: { localAddress: ip } });

async function refusedWith(p, status, what) {
  try { await p; } catch (e) {
    eq(e.statusCode, status, `${what}: HTTP status (${e.message} ${e.body || ''})`);
    return e.body ? JSON.parse(e.body) : null;
  }
  throw new Error(`${what}: the upgrade was accepted, expected HTTP ${status}`);
}

test('limits rate: past PARLEY_RATE_BURST a message gets rate_limited with its cid and retry_after_ms, is not published, others are not held up, and after retry_after_ms it passes', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis, env: { PARLEY_RATE_LIMIT: 5, PARLEY_RATE_BURST: 10 } });
  const room = `lim-${process.pid}`;
  const a = await connectAuthed(srv), b = await connectAuthed(srv), other = await connectAuthed(srv);
  await a.subscribe([room]);
  await b.subscribe([room]);
  const N = 16;
  for (let i = 0; i < N; i++) a.send({ type: 'message', room, text: `m${i}`, cid: `c${i}` });
  // Each frame is answered: its own message back (published), or an error naming its cid.
  const accepted = [], refused = [];
  for (let k = 0; k < N; k++) {
    const j = await a.nextJson((x) => (x.type === 'message' && x.from === a.user) || x.type === 'error', 5000, 'each frame answered');
    if (j.type === 'message') { accepted.push(j.cid); continue; }
    eq(j.code, 'rate_limited', `error code (${JSON.stringify(j)})`);
    assert(/^c\d+$/.test(j.cid), `the refused frame's cid echoed: ${JSON.stringify(j)}`);
    assert(Number.isInteger(j.retry_after_ms) && j.retry_after_ms > 0 && j.retry_after_ms <= 200, `retry_after_ms at 5/s is in (0, 200]: ${JSON.stringify(j)}`);
    refused.push(j.cid);
  }
  assert(accepted.length >= 10, `the burst (10) passes: accepted ${accepted}`);
  assert(refused.length >= 1, `past the burst some are refused: accepted ${accepted.length}`);
  // Another client of the instance is answered meanwhile.
  await other.ping();
  // Typing and reads draw on the same bucket.
  a.send({ type: 'typing_start', room, cid: 't1' });
  const t = await a.expectError('rate_limited', 5000, 't1');
  // After retry_after_ms the connection sends again (bounded: a few waits at most).
  let ok = null;
  for (let i = 0; i < 20 && !ok; i++) {
    await sleep(t.retry_after_ms + 20);
    a.send({ type: 'message', room, text: 'after', cid: `after${i}` });
    const j = await a.nextJson((x) => (x.type === 'message' && x.from === a.user) || x.type === 'error', 5000, 'the retry answered');
    if (j.type === 'message') ok = j;
    else eq(j.code, 'rate_limited', 'a retry too early is refused the same way');
  }
  assert(ok, 'a message after retry_after_ms is accepted');
  // B got exactly the accepted ones, in order, and none of the refused: they were not published.
  const seen = [];
  for (;;) {
    const j = await b.nextJson((x) => x.type === 'message', 5000, 'messages at b');
    if (j.cid === ok.cid) break;
    seen.push(j.cid);
  }
  eq(seen.join(','), accepted.join(','), 'b received the accepted messages only');
  eq(a.open, true, 'the limited connection is still open');
  const m = await metrics(srv.port, { check: true });
  eq(m.get('parley_rate_limited_total{kind="frame"}') >= refused.length + 1, true, 'parley_rate_limited_total{kind="frame"} counts the refusals');
  eq(m.get('parley_errors_sent_total{code="rate_limited"}') >= refused.length + 1, true, 'errors_sent counts rate_limited');
  eq(sum(m, 'parley_messages_published_total'), accepted.length + 1, 'published: the accepted only');
});

test('limits rate: a client flooding past its refusals is closed with 1008, counted; others and a new connection of the same user are fine', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis, env: { PARLEY_RATE_LIMIT: 2, PARLEY_RATE_BURST: 4 } });
  const room = `flood-${process.pid}`;
  const a = await connectAuthed(srv), other = await connectAuthed(srv);
  await a.subscribe([room]);
  // 4 pass, then 2 x 4 refusals are allowed; a few hundred at once are far past that.
  for (let i = 0; i < 300; i++) a.send({ type: 'read', room, seq: i + 1 });
  const closed = await a.waitClose(5000);
  eq(closed.code, 1008, `close code (${closed.reason})`);
  await other.ping();
  const again = await connectAuthed(srv, a.user);
  await again.subscribe([room]);
  again.send({ type: 'message', room, text: 'back', cid: 'back' });
  await again.nextJson((x) => x.type === 'message' && x.cid === 'back', 5000, 'own message after reconnecting');
  const m = await metrics(srv.port, { check: true });
  eq(m.get('parley_rate_limit_disconnects_total'), 1, 'parley_rate_limit_disconnects_total');
});

test('limits subscribe: churn past PARLEY_SUBSCRIBE_RATE (after PARLEY_MAX_ROOMS at once) gets rate_limited, the rooms unchanged; later it passes', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis, env: { PARLEY_SUBSCRIBE_RATE: 2, PARLEY_MAX_ROOMS: 4 } });
  const rooms = [1, 2, 3, 4].map((i) => `churn-${process.pid}-${i}`);
  const a = await connectAuthed(srv), other = await connectAuthed(srv);
  await a.subscribe(rooms); // a whole allowance at once
  a.send({ type: 'unsubscribe', rooms: rooms.slice(0, 2), cid: 'u1' });
  const e = await a.expectError('rate_limited', 5000, 'u1');
  assert(e.retry_after_ms > 0 && e.retry_after_ms <= 1000, `retry_after_ms for 2 rooms at 2/s: ${JSON.stringify(e)}`);
  await other.ping();
  // Still subscribed to all four: a message to the first is delivered.
  a.send({ type: 'message', room: rooms[0], text: 'still', cid: 's1' });
  await a.nextJson((x) => x.type === 'message' && x.cid === 's1', 5000, 'still subscribed');
  let done = false;
  for (let i = 0; i < 20 && !done; i++) {
    await sleep(e.retry_after_ms + 20);
    a.send({ type: 'unsubscribe', rooms: rooms.slice(0, 2), cid: `u${i + 2}` });
    const j = await a.nextJson((x) => x.type === 'unsubscribed' || x.type === 'error', 5000, 'unsubscribe answered');
    if (j.type === 'unsubscribed') done = true;
    else eq(j.code, 'rate_limited', 'a retry too early is refused the same way');
  }
  assert(done, 'the unsubscribe passes after retry_after_ms');
  const m = await metrics(srv.port);
  assert(m.get('parley_rate_limited_total{kind="subscribe"}') >= 1, 'parley_rate_limited_total{kind="subscribe"}');
});

test('limits subscribe: the JavaScript client sends a refused unsubscribe again after retry_after_ms; its promise resolves once the server confirms', async () => {
  const redis = await startRedis();
  // Plain ws: the library test is about the client's handling, not the transport (the raw
  // churn test above runs over TLS in the TLS suite).
  const srv = await startParleyd({ redis, env: { PARLEY_SUBSCRIBE_RATE: 2, PARLEY_MAX_ROOMS: 4, PARLEY_OPEN_ROOMS: 1 }, tls: false });
  const user = newUser('lib');
  const client = new ParleyClient({ url: srv.wsUrl, WebSocket, tokenProvider: async () => mintToken(user) });
  const errors = [];
  client.on('error', (e) => errors.push(e));
  try {
    await Promise.race([client.connect(), sleep(10000).then(() => { throw new Error('connect() did not resolve within 10 s'); })]);
    const rooms = [1, 2, 3, 4].map((i) => `libchurn-${process.pid}-${i}`);
    await client.subscribe(rooms); // the whole allowance at once
    const t0 = Date.now();
    await Promise.race([client.unsubscribe(rooms.slice(0, 2)),
      sleep(5000).then(() => { throw new Error(`unsubscribe not resolved within 5 s (errors: ${JSON.stringify(errors)})`); })]);
    assert(errors.some((e) => e.code === 'rate_limited'), `the first unsubscribe was refused: ${JSON.stringify(errors)}`);
    const ms = Date.now() - t0;
    assert(ms >= 200, `resolved after ${ms} ms: too soon to have waited for retry_after_ms`);
    eq(client.state, 'open', 'state');
  } finally {
    client.close();
  }
});

test('limits conns per ip: past PARLEY_MAX_CONNS_PER_IP an address gets 503 before the upgrade, other addresses do not; closes and aborts give the places back; X-Forwarded-For only from a trusted proxy', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis, env: { PARLEY_MAX_CONNS_PER_IP: 2, PARLEY_TRUSTED_PROXIES: '127.0.0.1' } });
  const other = await from(srv, '127.0.9.9');
  const a1 = await from(srv, '127.0.3.1'), a2 = await from(srv, '127.0.3.1');
  const body = await refusedWith(from(srv, '127.0.3.1'), 503, 'a third from 127.0.3.1');
  eq(body.error, 'too_many_connections', `503 body (${JSON.stringify(body)})`);
  await other.ping();
  const b1 = await from(srv, '127.0.3.2'); // another address is not affected
  // A clean close and an abort (no close frame) each give a place back.
  a1.close();
  await a1.waitClose(5000);
  const a3 = await until(() => from(srv, '127.0.3.1').catch(() => null), 5000, 'a place after a close');
  a2.ws.terminate();
  await a2.waitClose(5000);
  const a4 = await until(() => from(srv, '127.0.3.1').catch(() => null), 5000, 'a place after an abort');
  await refusedWith(from(srv, '127.0.3.1'), 503, 'full again');
  // Behind the trusted proxy (127.0.0.1) the forwarded address counts...
  const xff = (addr) => ({ 'X-Forwarded-For': addr });
  await from(srv, '127.0.0.1', xff('10.7.7.7'));
  await from(srv, '127.0.0.1', xff('10.7.7.7'));
  await refusedWith(from(srv, '127.0.0.1', xff('10.7.7.7')), 503, 'a third forwarded for 10.7.7.7');
  await from(srv, '127.0.0.1', xff('10.7.7.8'));
  // ...and from anyone else it is ignored: 127.0.3.1 is full whatever it claims.
  await refusedWith(from(srv, '127.0.3.1', xff('10.7.7.9')), 503, 'an untrusted X-Forwarded-For');
  for (const c of [b1, a3, a4]) assert(c.open, 'the admitted clients are open');
  const m = await metrics(srv.port, { check: true });
  // 4 refusals above, and perhaps a few more while the abort was reaching the server.
  assert(m.get('parley_connections_refused_total{reason="per_ip"}') >= 4, 'refused per_ip');
});

test('limits conns instance: past PARLEY_MAX_CONNS upgrades get 503 while HTTP and the open clients carry on; a close makes room', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis, env: { PARLEY_MAX_CONNS: 3 } });
  const cs = [await connectAuthed(srv), await connectAuthed(srv), await connectAuthed(srv)];
  const body = await refusedWith(connect(srv, { token: mintToken(newUser()) }), 503, 'a fourth WebSocket');
  eq(body.error, 'unavailable', `503 body (${JSON.stringify(body)})`);
  eq((await httpRequest(srv.port, 'GET', '/health')).status, 200, '/health while full');
  await cs[0].ping();
  cs[1].close();
  await cs[1].waitClose(5000);
  const d = await until(() => connectAuthed(srv).catch(() => null), 5000, 'a place after a close');
  await d.ping();
  const m = await metrics(srv.port, { check: true });
  eq(m.get('parley_connections_refused_total{reason="instance"}'), 1, 'refused instance');
  eq(m.get('parley_websockets_limit'), 3, 'parley_websockets_limit');
  eq(m.get('parley_websockets'), 3, 'parley_websockets');
});

test('limits open files: out of descriptors, accept pauses (a line a second per shard, no spinning); open clients carry on; once descriptors are free the waiting connections are served', async () => {
  const redis = await startRedis();
  // PARLEY_MAX_CONNS above what 160 descriptors hold, so that accept(2) runs out first.
  const srv = await startParleyd({ redis, nofile: 160, env: { PARLEY_MAX_CONNS: 1000, PARLEY_MAX_CONNS_PER_IP: 0 } });
  assert(/open files limit 160 \(at most ~80 connections/.test(srv.log()), `the limit in the log: ${srv.logTail(10)}`);
  assert(/PARLEY_MAX_CONNS=1000 is more than the open-files limit/.test(srv.log()), 'the warning about PARLEY_MAX_CONNS');
  const c = await connectAuthed(srv);
  const room = `fd-${newUser()}`;
  await c.subscribe([room]);
  // Bare TCP connections hold a descriptor each until they send a request or time out.
  const socks = [];
  const closed = () => socks.forEach((s) => s.destroy());
  try {
    for (let i = 0; i < 200; i++) {
      const s = net.connect({ port: srv.port, host: '127.0.0.1', localAddress: `127.0.${1 + (i % 50)}.${1 + (i >> 4)}` });
      s.on('error', () => {});
      socks.push(s);
    }
    await until(() => /accept: Too many open files; not accepting for a second/.test(srv.log()), 10000, 'the pause in the log');
    const t0 = Date.now();
    // The instance still serves who it holds: a pong, and a message through Redis and back.
    await c.ping();
    c.send({ type: 'message', room, text: 'while out of descriptors', cid: 'fd-1' });
    const j = await c.nextJson((x) => x.type === 'message' && x.cid === 'fd-1' || x.type === 'error', 5000, 'the message while out of descriptors');
    eq(j.text, 'while out of descriptors', `the message: ${JSON.stringify(j)}`);
    await sleep(3000);
    const pauses = (srv.log().match(/not accepting for a second/g) || []).length;
    const secs = (Date.now() - t0) / 1000;
    // One line per shard per paused second at most (two shards), where a busy loop on the
    // readable listener would log thousands.
    assert(pauses <= 2 * (Math.ceil(secs) + 2), `${pauses} pause lines in ${secs.toFixed(1)} s`);
  } finally {
    closed();
  }
  // With the descriptors back, the backlog and new clients are served.
  const d = await until(() => connectAuthed(srv).catch(() => null), 10000, 'a connection once descriptors are free');
  await d.ping();
  eq((await httpRequest(srv.port, 'GET', '/health')).status, 200, '/health afterwards');
  await c.ping();
  const m = await metrics(srv.port, { check: true });
  assert(m.get('parley_websockets') >= 2, `parley_websockets ${m.get('parley_websockets')}`);
});

test('limits origin: PARLEY_ALLOWED_ORIGINS admits its origins and non-browser clients (no Origin), refuses another origin with 403; unset or * admits any', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis, env: { PARLEY_ALLOWED_ORIGINS: 'https://chat.example.com, http://127.0.0.1:8080' } });
  const good = await connect(srv, { token: mintToken(newUser()), wsOptions: { origin: 'https://chat.example.com' } });
  const good2 = await connect(srv, { token: mintToken(newUser()), wsOptions: { origin: 'http://127.0.0.1:8080' } });
  const none = await connect(srv, { token: mintToken(newUser()) }); // a non-browser client: no Origin
  const body = await refusedWith(connect(srv, { token: mintToken(newUser()), wsOptions: { origin: 'https://evil.example' } }), 403, 'another origin');
  eq(body.error, 'forbidden_origin', `403 body (${JSON.stringify(body)})`);
  await refusedWith(connect(srv, { token: mintToken(newUser()), wsOptions: { origin: 'https://chat.example.com.evil.example' } }), 403, 'a longer origin');
  for (const c of [good, good2, none]) await c.ping();
  const m = await metrics(srv.port, { check: true });
  eq(m.get('parley_connections_refused_total{reason="origin"}'), 2, 'refused origin');
  const any = await startParleyd({ redis, env: { PARLEY_ALLOWED_ORIGINS: '*' } });
  await (await connect(any, { token: mintToken(newUser()), wsOptions: { origin: 'https://evil.example' } })).ping();
  const unset = await startParleyd({ redis });
  await (await connect(unset, { token: mintToken(newUser()), wsOptions: { origin: 'https://evil.example' } })).ping();
  const bad = await runCmd(PARLEYD, [], { env: { ...srv.env, PARLEY_ALLOWED_ORIGINS: 'chat.example.com/x' } });
  assert(bad.code !== 0 && /PARLEY_ALLOWED_ORIGINS/.test(bad.stderr + bad.stdout), `a malformed origin list is refused at start: ${bad.stderr}`);
});

test('limits http: a head over PARLEY_HTTP_MAX_HEADER gets 431, a body over PARLEY_HTTP_MAX_BODY 413, each closed and counted; the instance answers on', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis, env: { PARLEY_HTTP_MAX_HEADER: 1024, PARLEY_HTTP_MAX_BODY: 64 } });
  const ws = await connectAuthed(srv);
  const big = await rawExchange(srv.port, `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(1100)}\r\n\r\n`);
  assert(/^HTTP\/1\.1 431/.test(big.data.toString()), `431 for a big head: ${big.data.toString().slice(0, 80)}`);
  assert(big.closed, 'closed after 431');
  const body = JSON.stringify({ user_id: 'x'.repeat(100) });
  const r = await rawExchange(srv.port, `POST /api/websocket/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  assert(/^HTTP\/1\.1 413/.test(r.data.toString()), `413 for a big body: ${r.data.toString().slice(0, 80)}`);
  const small = await rawExchange(srv.port, `GET /health HTTP/1.1\r\nHost: x\r\nX-Small: ${'a'.repeat(800)}\r\nConnection: close\r\n\r\n`);
  assert(/^HTTP\/1\.1 200/.test(small.data.toString()), `200 under the limit: ${small.data.toString().slice(0, 80)}`);
  await ws.ping();
  const m = await metrics(srv.port, { check: true });
  eq(m.get('parley_http_refused_total{status="431"}'), 1, 'refused 431');
  eq(m.get('parley_http_refused_total{status="413"}'), 1, 'refused 413');
});
