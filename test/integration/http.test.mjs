import {
  test, startRedis, startParleyd, httpRequest, rawExchange, connect, connectAuthed, eq, assert,
  verifyToken, API_KEY, until,
} from './lib.mjs';

async function setup(env = {}) {
  const redis = await startRedis();
  const srv = await startParleyd({ redis, env });
  return { redis, srv };
}

test('http: GET /health is 200 healthy with server_id and timestamp', async () => {
  const { srv } = await setup();
  const r = await httpRequest(srv.port, 'GET', '/health');
  eq(r.status, 200, 'status');
  assert(r.json, `body is not JSON: ${r.text}`);
  assert(/application\/json/.test(r.headers['content-type'] || ''), `content-type: ${r.headers['content-type']}`);
  eq(r.json.status, 'healthy', 'status member');
  eq(r.json.server_id, srv.serverId, 'server_id');
  assert(Number.isInteger(r.json.timestamp) && Math.abs(r.json.timestamp - Date.now()) < 60000,
    `timestamp must be unix ms near now: ${r.json.timestamp}`);
});

// Finds the per-shard counts wherever the status puts them: an array of
// numbers, or of objects with a numeric count, under `connections`.
function perShard(conn) {
  for (const v of Object.values(conn)) {
    if (Array.isArray(v) && v.length) {
      const nums = v.map((x) => (typeof x === 'number' ? x
        : x && typeof x === 'object' ? (x.connections ?? x.count ?? x.total) : undefined));
      if (nums.every((n) => Number.isInteger(n))) return nums;
    }
  }
  return null;
}

test('http: GET /api/websocket/status reports connections total and per shard', async () => {
  const { srv } = await setup();
  const r0 = await httpRequest(srv.port, 'GET', '/api/websocket/status');
  eq(r0.status, 200, 'status');
  assert(r0.json && typeof r0.json === 'object', `body is not JSON: ${r0.text}`);
  const c = r0.json.connections;
  assert(c && typeof c === 'object', `no connections object: ${r0.text}`);
  assert(Number.isInteger(c.total), `connections.total missing: ${r0.text}`);
  const shards = perShard(c);
  assert(shards, `no per-shard connection counts under connections: ${r0.text}`);
  eq(shards.length, 2, `per-shard count entries with PARLEY_SHARDS=2 (${r0.text})`);
  assert(r0.text.includes(srv.serverId), `status does not name the server id: ${r0.text}`);
  // connections counts every socket: an earlier request's too while its close lingers (the
  // server reads until the client's EOF, at most 2 s: net/sock.c), and start-up's /health polls
  // can still be lingering in r0's total, so it is compared with the sockets known to be open
  // (6 WebSockets and the status request itself); sessions counts the WebSockets exactly.
  const sessions0 = r0.json.sessions;
  const clients = [];
  for (let i = 0; i < 6; i++) clients.push(await connectAuthed(srv));
  const r1 = await until(async () => {
    const r = await httpRequest(srv.port, 'GET', '/api/websocket/status');
    if (r.json && r.json.sessions === sessions0 + 6 && r.json.connections.total >= 7) return r;
    throw new Error(r.text); // until reports the last one
  }, 5000, 'sessions to grow by 6, connections.total to reach at least 7');
  const s1 = perShard(r1.json.connections);
  eq(s1.reduce((a, b) => a + b, 0), r1.json.connections.total, `per-shard counts sum to total (${r1.text})`);
  for (const x of clients) x.close();
  // Once lingering closes are over, the status request is the only socket left.
  await until(async () => {
    const r = await httpRequest(srv.port, 'GET', '/api/websocket/status');
    if (r.json.sessions === sessions0 && r.json.connections.total === 1) return true;
    throw new Error(r.text);
  }, 8000, 'sessions and connections.total to drop back after close');
});

test('http: POST /api/websocket/token mints a token that authenticates', async () => {
  const { srv } = await setup();
  const r = await httpRequest(srv.port, 'POST', '/api/websocket/token', {
    headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' },
    body: { user_id: 'alice' },
  });
  eq(r.status, 200, `status (${r.text})`);
  assert(r.json && typeof r.json.token === 'string', `no token: ${r.text}`);
  eq(r.json.websocket_url, `ws://127.0.0.1:${srv.port}/ws`, 'websocket_url');
  eq(r.json.expires_in, 3600, 'expires_in');
  const v = verifyToken(r.json.token);
  assert(v, `token is not an HS256 JWT signed with the secret: ${r.json.token}`);
  eq(v.header.alg, 'HS256', 'JWT alg');
  eq(v.claims.sub, 'alice', 'JWT sub');
  const now = Math.floor(Date.now() / 1000);
  assert(Math.abs(v.claims.exp - (now + 3600)) < 60, `JWT exp should be about now+3600: ${v.claims.exp}`);
  const c = await connect(srv, { token: r.json.token });
  eq((await c.nextJson('authenticated')).user, 'alice', 'authenticated.user');
});

test('http: token endpoint with a wrong or missing key is 401, a bad body is 400', async () => {
  const { srv } = await setup();
  const post = (headers, body) => httpRequest(srv.port, 'POST', '/api/websocket/token', { headers, body });
  const good = { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' };
  for (const [what, h] of [['missing key', { 'Content-Type': 'application/json' }],
                           ['wrong key', { ...good, Authorization: `Bearer ${API_KEY}x` }],
                           ['not bearer', { ...good, Authorization: API_KEY }]]) {
    const r = await post(h, { user_id: 'alice' });
    eq(r.status, 401, `${what}: status (${r.text})`);
    assert(r.json && typeof r.json.error === 'string', `${what}: error body must be JSON with error: ${r.text}`);
    assert(!r.text.includes('token"'), `${what}: must not return a token`);
  }
  for (const [what, body] of [['not JSON', '{user_id:'], ['no user_id', { user: 'x' }],
                              ['user_id not a string', { user_id: 5 }], ['empty user_id', { user_id: '' }],
                              ['user_id too long', { user_id: 'u'.repeat(129) }], ['JSON array', '[]'],
                              ['empty body', '']]) {
    const r = await post(good, body);
    eq(r.status, 400, `${what}: status (${r.text})`);
    assert(r.json && typeof r.json.error === 'string', `${what}: error body must be JSON: ${r.text}`);
  }
});

test('http: unknown path is 404 JSON, plain GET /ws is 400, malformed HTTP is 400 and closed', async () => {
  const { srv } = await setup();
  for (const [m, p] of [['GET', '/nope'], ['GET', '/api/websocket/nope'], ['POST', '/health/x']]) {
    const r = await httpRequest(srv.port, m, p);
    eq(r.status, 404, `${m} ${p}: status`);
    assert(r.json, `${m} ${p}: body is not JSON: ${r.text}`);
    eq(r.json.error, 'not_found', `${m} ${p}: error`);
  }
  const ws = await httpRequest(srv.port, 'GET', '/ws');
  eq(ws.status, 400, 'plain GET /ws without upgrade headers');
  for (const junk of ['THIS IS NOT HTTP\r\n\r\n', 'GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n',
                      'GET /health HTTP/9\x00\r\n\r\n']) {
    const r = await rawExchange(srv.port, junk, 3000);
    const text = r.data.toString('latin1');
    assert(/^HTTP\/1\.[01] 400/.test(text), `malformed request ${JSON.stringify(junk)}: expected 400, got ${JSON.stringify(text.slice(0, 80))}`);
    assert(r.closed, `malformed request ${JSON.stringify(junk)}: connection not closed within 3 s`);
  }
  // and the server still serves
  eq((await httpRequest(srv.port, 'GET', '/health')).status, 200, '/health after malformed requests');
});
