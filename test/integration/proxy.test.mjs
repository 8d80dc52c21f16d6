// Behind a proxy (issue 10): deploy/nginx.conf as shipped, HTTP keep-alive
// that outlasts nginx's upstream pool, the WebSocket URL a token response
// names, HTTP request and idle timeouts.
import net from 'node:net';
import {
  test, startRedis, startParleyd, startNginx, connect, connectAuthed, mintToken, newUser, httpRequest, until,
  sleep, eq, assert, API_KEY,
} from './lib.mjs';

const mint = (port, headers = {}) => httpRequest(port, 'POST', '/api/websocket/token', {
  headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json', Connection: 'keep-alive', ...headers },
  body: { user_id: newUser('px') },
});

test('proxy: deploy/nginx.conf passes nginx -t; through it, API calls after a quiet spell get no 502, WebSockets work, the token names nginx\'s port', async () => {
  const redis = await startRedis();
  const env = { PARLEY_TRUSTED_PROXIES: '127.0.0.1' };
  const A = await startParleyd({ redis, env }), B = await startParleyd({ redis, env });
  const ng = await startNginx([A, B]);
  // nginx pools its upstream connections (keepalive 64) and reuses one for up to its
  // keepalive_timeout; parleyd must not close them first (it did after 10 s: 502s).
  const burst = async (what) => {
    const rs = await Promise.all(Array.from({ length: 16 }, () => mint(ng.port)));
    const codes = rs.map((r) => r.status);
    assert(codes.every((c) => c === 200), `${what}: statuses ${JSON.stringify(codes)}`);
    return rs[0];
  };
  // nginx's pooled connections to parleyd, counted on parleyd's side (less the asking one).
  const pooled = async () => {
    let n = 0;
    for (const s of [A, B]) n += (await httpRequest(s.port, 'GET', '/api/websocket/status')).json.connections.total - 1;
    return n;
  };
  const first = await burst('first burst');
  eq(first.json.websocket_url, `ws://127.0.0.1:${ng.port}/ws`, 'websocket_url through nginx');
  const before = await pooled();
  assert(before >= 1, `no pooled upstream connection after the burst (${before})`);
  await sleep(12000); // longer than parleyd's old idle close (10 s), shorter than nginx's pool (60 s)
  const after = await pooled();
  assert(after >= before, `parleyd closed ${before - after} of nginx's ${before} pooled connections while nginx still holds them for reuse`);
  await burst('after 12 s');
  await sleep(3000);
  await burst('after 15 s');
  // A WebSocket through nginx, with the URL the token response gave.
  const c = await connect(first.json.websocket_url, { token: first.json.token });
  await c.nextJson('authenticated', 5000);
  await c.subscribe(['via-nginx']);
  c.send({ type: 'message', room: 'via-nginx', text: 'through the proxy' });
  eq((await c.nextJson('message', 5000)).text, 'through the proxy', 'message through nginx');
  // The web app is nginx's own (the instances have no PARLEY_WEB_ROOT); the API is not a file.
  const page = await httpRequest(ng.port, 'GET', '/');
  eq(page.status, 200, 'the web app through nginx');
  assert(/<html/i.test(page.text) && /text\/html/.test(page.headers['content-type']), `the page: ${page.text.slice(0, 80)}`);
  eq((await httpRequest(ng.port, 'GET', '/parley.js')).headers['content-type'], 'application/javascript', 'the client library');
  eq((await httpRequest(ng.port, 'GET', '/api/nope')).json.error, 'not_found', '/api/ goes to parleyd');
  eq((await httpRequest(ng.port, 'GET', '/health')).json.status, 'healthy', '/health goes to parleyd');
}, { timeout: 60000 });

test('proxy: websocket_url from PARLEY_PUBLIC_URL, from a trusted proxy\'s X-Forwarded-Proto/-Host, never from anyone else', async () => {
  const redis = await startRedis();
  const fwd = { 'X-Forwarded-Proto': 'https', 'X-Forwarded-Host': 'chat.example.com' };
  const plain = await startParleyd({ redis });
  eq((await mint(plain.port, fwd)).json.websocket_url, `ws://127.0.0.1:${plain.port}/ws`, 'untrusted forwarded headers');
  eq((await mint(plain.port, { Host: 'h.example:8443' })).json.websocket_url, 'ws://h.example:8443/ws', 'the Host header, port kept');
  eq((await mint(plain.port, { Host: 'bad host"/x' })).json.websocket_url, 'ws://127.0.0.1/ws', 'a Host that is no host');
  const trusting = await startParleyd({ redis, env: { PARLEY_TRUSTED_PROXIES: '10.0.0.0/8, 127.0.0.0/8' } });
  eq((await mint(trusting.port, fwd)).json.websocket_url, 'wss://chat.example.com/ws', 'trusted forwarded headers');
  eq((await mint(trusting.port, { 'X-Forwarded-Proto': 'https, http' })).json.websocket_url, `wss://127.0.0.1:${trusting.port}/ws`, 'first of a list');
  const elsewhere = await startParleyd({ redis, env: { PARLEY_TRUSTED_PROXIES: '10.0.0.1' } });
  eq((await mint(elsewhere.port, fwd)).json.websocket_url, `ws://127.0.0.1:${elsewhere.port}/ws`, 'a proxy list without us');
  const pub = await startParleyd({ redis, env: { PARLEY_PUBLIC_URL: 'https://chat.example.org/parley' } });
  eq((await mint(pub.port, fwd)).json.websocket_url, 'wss://chat.example.org/parley/ws', 'PARLEY_PUBLIC_URL');
});

// A raw keep-alive connection: send(text) resolves the next response's head; `closed` when the
// server closes.
function rawHttp(port) {
  const s = net.connect(port, '127.0.0.1');
  const st = { s, buf: '', closed: false, closedAt: 0 };
  s.on('data', (d) => { st.buf += d; });
  s.on('close', () => { st.closed = true; st.closedAt = Date.now(); });
  s.on('error', () => {});
  return new Promise((resolve) => s.on('connect', () => resolve(st)));
}

test('proxy: PARLEY_HTTP_IDLE_TIMEOUT closes idle keep-alive connections; PARLEY_HTTP_REQUEST_TIMEOUT answers a stalled request 408', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis, env: { PARLEY_HTTP_IDLE_TIMEOUT: 3, PARLEY_HTTP_REQUEST_TIMEOUT: 2 } });
  const req = 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n';
  const k = await rawHttp(srv.port);
  k.s.write(req);
  await until(() => (k.buf.match(/HTTP\/1\.1 200/g) || []).length === 1, 3000, 'the first answer');
  await sleep(1500); // idle, but less than 3 s: still open
  assert(!k.closed, 'closed after 1.5 s idle');
  k.s.write(req);
  await until(() => (k.buf.match(/HTTP\/1\.1 200/g) || []).length === 2, 3000, 'the second answer on the same connection');
  const idleFrom = Date.now();
  await until(() => k.closed, 6000, 'the idle close');
  const idled = k.closedAt - idleFrom;
  assert(idled >= 2500, `closed after ${idled} ms idle, below PARLEY_HTTP_IDLE_TIMEOUT`);
  // A request that stalls halfway: 408, then closed.
  const p = await rawHttp(srv.port);
  p.s.write('GET /health HTTP/1.1\r\nHost: x\r\n');
  await until(() => p.closed, 6000, 'the stalled request to be closed');
  assert(/^HTTP\/1\.1 408 /.test(p.buf), `answer to a stalled request: ${JSON.stringify(p.buf.slice(0, 80))}`);
  // A new connection that sends nothing: closed after the request timeout, not the idle one.
  const q = await rawHttp(srv.port);
  const t0 = Date.now();
  await until(() => q.closed, 6000, 'a silent new connection to be closed');
  assert(Date.now() - t0 < 3500, `a silent new connection lived ${Date.now() - t0} ms`);
}, { timeout: 30000 });

test('proxy: X-Forwarded-For names the client (in logs) only from PARLEY_TRUSTED_PROXIES, read from the right past trusted hops', async () => {
  const redis = await startRedis();
  const env = { PARLEY_LOG_LEVEL: 'debug' };
  const trusting = await startParleyd({ redis, env: { ...env, PARLEY_TRUSTED_PROXIES: '127.0.0.1,127.0.0.5' } });
  const other = await startParleyd({ redis, env });
  const seen = async (srv, xff) => {
    const before = srv.log().length;
    const c = await connectAuthed(srv, newUser('xff'), { headers: { 'X-Forwarded-For': xff } });
    let line;
    await until(async () => (line = srv.log().slice(before).split('\n').find((l) => l.includes('websocket from '))), 3000, 'the upgrade logged');
    c.close();
    return line.match(/websocket from (\S+)/)[1];
  };
  eq(await seen(trusting, '203.0.113.9'), '203.0.113.9', 'one hop');
  eq(await seen(trusting, '6.6.6.6, 203.0.113.9'), '203.0.113.9', 'what the client wrote left of it is not believed');
  eq(await seen(trusting, '203.0.113.9, 127.0.0.5'), '203.0.113.9', 'past a trusted proxy hop');
  eq(await seen(trusting, '2001:db8::7'), '2001:db8::7', 'IPv6');
  eq(await seen(trusting, 'not-an-address'), '127.0.0.1', 'garbage: the proxy itself');
  eq(await seen(other, '203.0.113.9'), '127.0.0.1', 'not from a trusted proxy: ignored');
  const r = await httpRequest(trusting.port, 'POST', '/api/admin/rebalance', { headers: { Authorization: `Bearer ${API_KEY}`, 'X-Forwarded-For': '198.51.100.4' }, body: { share: 0.1, seconds: 0 } });
  eq(r.status, 202, 'rebalance');
  await until(async () => /rebalance asked over the API by 198\.51\.100\.4/.test(trusting.log()), 3000, 'the admin call logged with the client address');
});
