import {
  test, startRedis, startParleyd, connect, connectAuthed, mintToken, newUser, eq, assert, SECRET,
  rawUpgrade, sleep,
} from './lib.mjs';

async function setup(env = {}) {
  const redis = await startRedis();
  const srv = await startParleyd({ redis, env });
  return { redis, srv };
}

function checkAuthenticated(f, user, srv) {
  assert(f.raw.startsWith('{"type":"authenticated"'), `authenticated frame must start with {"type":"authenticated": ${f.raw}`);
  eq(f.json.user, user, 'authenticated.user');
  eq(f.json.server, srv.serverId, 'authenticated.server');
  assert(typeof f.json.session === 'string' && f.json.session.length > 0, `authenticated.session must be a non-empty string: ${f.raw}`);
  return f.json.session;
}

test('auth: token in Authorization header, in ?token= and in an authenticate frame', async () => {
  const { srv } = await setup();
  const sessions = new Set();

  const u1 = newUser('hdr');
  const c1 = await connect(srv, { token: mintToken(u1), tokenIn: 'header' });
  sessions.add(checkAuthenticated(await c1.next('authenticated'), u1, srv));
  await c1.ping();

  const u2 = newUser('qry');
  const c2 = await connect(srv, { token: mintToken(u2), tokenIn: 'query' });
  sessions.add(checkAuthenticated(await c2.next('authenticated'), u2, srv));
  await c2.ping();

  const u3 = newUser('frm');
  const c3 = await connect(srv, { tokenIn: 'none' });
  c3.send({ type: 'authenticate', token: mintToken(u3) });
  sessions.add(checkAuthenticated(await c3.next('authenticated'), u3, srv));
  await c3.ping();

  // same user twice: still distinct sessions
  const c4 = await connect(srv, { token: mintToken(u1) });
  sessions.add(checkAuthenticated(await c4.next('authenticated'), u1, srv));
  eq(sessions.size, 4, 'number of distinct session ids over 4 connections');

  // a token without exp is accepted (exp honoured only when present)
  const u5 = newUser('noexp');
  const c5 = await connect(srv, { token: mintToken(u5, { exp: null }) });
  checkAuthenticated(await c5.next('authenticated'), u5, srv);
});

test('auth: raw upgrade answers 101 with a correct Sec-WebSocket-Accept', async () => {
  const { srv } = await setup();
  const { sock, head, acceptOk } = await rawUpgrade(srv.port, { token: mintToken(newUser()) });
  sock.destroy();
  assert(/^HTTP\/1\.1 101/.test(head), `expected HTTP/1.1 101, got: ${head.split('\r\n')[0]}`);
  assert(acceptOk, `Sec-WebSocket-Accept missing or wrong in:\n${head}`);
  assert(!/sec-websocket-extensions/i.test(head), 'no extension may be negotiated');
});

test('auth: bad or expired token on the upgrade gets HTTP 401', async () => {
  const { srv } = await setup();
  const now = Math.floor(Date.now() / 1000);
  const bad = {
    'wrong secret': mintToken('mallory', { secret: SECRET + 'x' }),
    'expired': mintToken('alice', { exp: now - 60 }),
    'garbage': 'not.a.jwt',
    'alg none': mintToken('alice').split('.').slice(0, 2).join('.') + '.',
    'no sub': mintToken(undefined),
  };
  for (const tokenIn of ['header', 'query']) {
    for (const [what, token] of Object.entries(bad)) {
      let err = null;
      try { const c = await connect(srv, { token, tokenIn }); c.close(); } catch (e) { err = e; }
      assert(err, `${what} token in ${tokenIn}: upgrade was accepted`);
      eq(err.statusCode, 401, `${what} token in ${tokenIn}: HTTP status (${err.message})`);
    }
  }
  // the server still works
  await (await connectAuthed(srv)).ping();
});

test('auth: bad or expired token in an authenticate frame closes with 4001', async () => {
  const { srv } = await setup();
  const now = Math.floor(Date.now() / 1000);
  for (const [what, token] of [['wrong secret', mintToken('m', { secret: 'nope' })],
                               ['expired', mintToken('a', { exp: now - 5 })],
                               ['garbage', 'xyz']]) {
    const c = await connect(srv, { tokenIn: 'none' });
    c.send({ type: 'authenticate', token });
    const { code } = await c.waitClose(5000);
    eq(code, 4001, `close code after ${what} token in authenticate frame`);
    assert(!c.frames.some((f) => f.json && f.json.type === 'authenticated'), `${what}: got authenticated`);
  }
});

test('auth: a client that never authenticates is closed with 4001 after PARLEY_AUTH_TIMEOUT', async () => {
  const { srv } = await setup({ PARLEY_AUTH_TIMEOUT: 1 });
  const t0 = Date.now();
  const c = await connect(srv, { tokenIn: 'none' });
  const { code, reason, at } = await c.waitClose(6000);
  const ms = at - t0;
  eq(code, 4001, 'close code');
  eq(reason, 'authentication timeout', 'close reason');
  assert(ms >= 800 && ms <= 4000, `closed after ${ms} ms, expected about 1000 ms`);
  // an authenticated client on the same server is not affected by the deadline
  const a = await connectAuthed(srv);
  await sleep(2000);
  assert(a.open, 'authenticated client was closed by the auth deadline');
  await a.ping();
});

test('auth: a frame other than authenticate before auth gets error unauthorized, connection stays', async () => {
  const { srv } = await setup();
  const c = await connect(srv, { tokenIn: 'none' });
  c.send({ type: 'ping' });
  await c.expectError('unauthorized');
  c.send({ type: 'subscribe', rooms: ['r1'] });
  await c.expectError('unauthorized');
  c.send({ type: 'message', room: 'r1', text: 'hi', cid: 'c-9' });
  await c.expectError('unauthorized', 5000, 'c-9');
  assert(c.open, 'connection closed after unauthorized');
  const u = newUser();
  c.send({ type: 'authenticate', token: mintToken(u) });
  eq((await c.nextJson('authenticated')).user, u, 'user after late authenticate');
  await c.ping();
});

test('auth: authenticate on an authenticated connection renews the same user, refuses another', async () => {
  const { srv } = await setup();
  const c = await connectAuthed(srv);
  c.send({ type: 'authenticate', token: mintToken(newUser()) });
  await c.expectError('forbidden');
  c.send({ type: 'authenticate', token: 'garbage' });
  await c.expectError('unauthorized');
  const exp = Math.floor(Date.now() / 1000) + 7200;
  c.send({ type: 'authenticate', token: mintToken(c.user, { exp }) });
  const r = await c.nextJson('reauthenticated');
  eq(r.user, c.user, 'reauthenticated.user');
  eq(r.exp, exp, 'reauthenticated.exp');
  await c.ping();
});
