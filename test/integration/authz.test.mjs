// Authorization that follows changes: token expiry on live connections (with and without
// renewal), nbf/iss/aud, kid rotation, member removal and user disconnect across two instances,
// and secrets kept out of logs (parleyd's and nginx's).
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import {
  test, startRedis, startParleyd, startPostgres, startNginx, connect, connectAuthed, mintToken, verifyToken,
  newUser, eq, assert, until, httpRequest, setMember, getHistory, API_KEY, PARLEYD, WebSocket, sleep,
  redisCli, connCount, onlineInRedis,
} from './lib.mjs';
import { ParleyClient } from '../../web/parley.js';

const now = () => Math.floor(Date.now() / 1000);

// A connection authenticated with a token that expires `ttl` seconds from now.
async function connectExpiring(srv, user, ttl, opts = {}) {
  return connectAuthed(srv, user, { token: mintToken(user, { exp: now() + ttl, ...opts }) });
}


// Two instances sharing a Redis and a PostgreSQL (memberships are stored).
async function twoWithDatabase() {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = { PARLEY_DATABASE_URL: pg.url };
  return { redis, pg, a: await startParleyd({ redis, env }), b: await startParleyd({ redis, env }) };
}

test('authz: a live connection is closed with 4001 when its token expires, after a token_expiring notice', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis });
  const user = newUser('exp');
  const c = await connectExpiring(srv, user, 3);
  assert(typeof c.auth.exp === 'number' && c.auth.exp > now(), `authenticated.exp: ${JSON.stringify(c.auth)}`);
  const n = await c.nextJson((j) => j.type === 'server_notice', 5000, 'the expiry notice');
  eq(n.code, 'token_expiring', 'notice code');
  eq(n.exp, c.auth.exp, 'notice exp');
  const { code, reason } = await c.waitClose(8000);
  eq(code, 4001, 'close code at expiry');
  eq(reason, 'token expired', 'close reason');
  // a token without exp, on the same server, is not closed by the sweep
  const forever = await connect(srv, { token: mintToken(newUser('noexp'), { exp: null }) });
  const a = await forever.nextJson('authenticated');
  assert(a.exp === undefined, `a token without exp has no exp in authenticated: ${JSON.stringify(a)}`);
  await forever.ping();
});

test('authz: renewing with a fresh token for the same user keeps the connection past the old exp; another user\'s token is refused', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis, env: { PARLEY_OPEN_ROOMS: 1 } });
  const user = newUser('renew');
  const c = await connectExpiring(srv, user, 3);
  const room = `renew-${process.pid}`;
  await c.subscribe([room]);
  await c.nextJson((j) => j.type === 'server_notice' && j.code === 'token_expiring', 5000, 'the expiry notice');
  // another user's token: refused, and the connection still expires with its own token
  c.send({ type: 'authenticate', token: mintToken(newUser('other'), { exp: now() + 3600 }) });
  await c.expectError('forbidden');
  const fresh = now() + 3600;
  c.send({ type: 'authenticate', token: mintToken(user, { exp: fresh }) });
  const r = await c.nextJson('reauthenticated');
  eq(r.exp, fresh, 'reauthenticated.exp');
  // past the old exp (3 s) with a margin of two sweeps: still open, still subscribed
  await until(async () => now() > c.auth.exp + 2, 10000, 'the old exp to pass');
  assert(c.open, 'the renewed connection was closed');
  c.send({ type: 'message', room, text: 'still here', cid: 'r-1' });
  eq((await c.nextJson('message')).text, 'still here', 'message after renewal');

  // without renewal, a refused renewal does not save it
  const d = await connectExpiring(srv, newUser('refused'), 2);
  d.send({ type: 'authenticate', token: mintToken(user, { exp: now() + 3600 }) });
  await d.expectError('forbidden');
  eq((await d.waitClose(8000)).code, 4001, 'close code after a refused renewal');
  assert(c.open, 'the renewed connection was closed by another one\'s expiry');
});

test('authz: the JavaScript client renews 3 s tokens through its provider on one connection, and stops for good on a disconnect', async () => {
  const redis = await startRedis();
  const a = await startParleyd({ redis, env: { PARLEY_OPEN_ROOMS: 1 } });
  const b = await startParleyd({ redis });
  const user = newUser('lib');
  let minted = 0;
  const client = new ParleyClient({
    url: a.wsUrl, WebSocket,
    tokenProvider: async () => { minted++; return mintToken(user, { exp: now() + 3 }); },
    reconnect: { initialDelay: 100, maxDelay: 500 },
  });
  const states = [], renewals = [], errors = [];
  client.on('state', (e) => states.push(e));
  client.on('reauthenticated', (e) => renewals.push(e));
  client.on('error', (e) => errors.push(e));
  try {
    const first = await client.connect();
    const room = `lib-${process.pid}`;
    await client.subscribe(room);
    // three token lifetimes on the first connection: every exp is renewed before the server's
    // sweep reaches it
    await until(() => renewals.length >= 3, 15000, 'three renewals');
    eq(states.filter((e) => e.state === 'reconnecting').length, 0, `no reconnect while renewing (${JSON.stringify(states)})`);
    assert(minted >= 4, `provider calls: ${minted}`);
    // no database here: the echo (not an ack) shows the subscription still works
    const echo = new Promise((res) => client.once('message', res));
    client.send(room, 'after renewals');
    eq((await Promise.race([echo, new Promise((_, rej) => setTimeout(() => rej(new Error('no echo within 5 s')), 5000))])).text, 'after renewals', 'the echo after renewals');
    eq(client.state, 'open', 'state');
    // disconnected on every instance: closed for good
    const r = await httpRequest(b.port, 'POST', `/api/users/${encodeURIComponent(first.user)}/disconnect`, { headers: { Authorization: `Bearer ${API_KEY}` } });
    eq(r.status, 200, 'disconnect');
    await until(() => client.state === 'closed', 5000, 'the client to close');
    eq(errors.at(-1).code, 'disconnected', 'the error event');
    const calls = minted;
    await new Promise((res) => setTimeout(res, 1500));
    eq(client.state, 'closed', 'still closed');
    eq(minted, calls, 'no provider call after the disconnect (no reconnect)');
  } finally {
    client.close();
  }
});

test('authz: nbf, iss and aud are checked; the leeway applies to nbf and exp; the token endpoint mints iss, aud and a requested lifetime', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis, env: { PARLEY_JWT_ISSUER: 'https://auth.test', PARLEY_JWT_AUDIENCE: 'parley', PARLEY_JWT_LEEWAY: 30, PARLEY_TOKEN_MAX_TTL: 600 } });
  const good = { iss: 'https://auth.test', aud: 'parley' };
  const upgrade = async (token) => {
    try { const c = await connect(srv, { token }); await c.nextJson('authenticated'); c.close(); return 101; } catch (e) { return e.statusCode || e.message; }
  };
  eq(await upgrade(mintToken(newUser(), { extra: good })), 101, 'iss and aud right');
  eq(await upgrade(mintToken(newUser(), { extra: { ...good, aud: ['x', 'parley'] } })), 101, 'aud as an array naming us');
  eq(await upgrade(mintToken(newUser(), { extra: { aud: 'parley' } })), 401, 'no iss');
  eq(await upgrade(mintToken(newUser(), { extra: { ...good, iss: 'https://evil.test' } })), 401, 'wrong iss');
  eq(await upgrade(mintToken(newUser(), { extra: { ...good, aud: 'other' } })), 401, 'wrong aud');
  eq(await upgrade(mintToken(newUser(), { extra: { ...good, nbf: now() + 120 } })), 401, 'nbf beyond the leeway');
  eq(await upgrade(mintToken(newUser(), { extra: { ...good, nbf: now() + 10 } })), 101, 'nbf within the leeway');
  eq(await upgrade(mintToken(newUser(), { extra: good, exp: now() - 10 })), 101, 'exp within the leeway');
  eq(await upgrade(mintToken(newUser(), { extra: good, exp: now() - 120 })), 401, 'exp beyond the leeway');
  // in an authenticate frame: 4001 and the reason
  const c = await connect(srv, { tokenIn: 'none' });
  c.send({ type: 'authenticate', token: mintToken(newUser(), { extra: { ...good, nbf: now() + 120 } }) });
  const cl = await c.waitClose(5000);
  eq(cl.code, 4001, 'nbf in the future in an authenticate frame');
  eq(cl.reason, 'token not yet valid', 'its reason');

  const mint = (body, key = API_KEY) => httpRequest(srv.port, 'POST', '/api/websocket/token',
    { headers: { Authorization: `Bearer ${key}` }, body: JSON.stringify(body) });
  let r = await mint({ user_id: 'alice', expires_in: 120 });
  eq(r.status, 200, `token with expires_in (${r.text})`);
  eq(r.json.expires_in, 120, 'expires_in answered');
  const t = verifyToken(r.json.token);
  assert(t && Math.abs(t.claims.exp - (now() + 120)) <= 2, `exp of the minted token: ${JSON.stringify(t)}`);
  eq(t.claims.iss, 'https://auth.test', 'minted iss');
  eq(t.claims.aud, 'parley', 'minted aud');
  eq(await upgrade(r.json.token), 101, 'the minted token works');
  r = await mint({ user_id: 'alice' });
  eq(r.json.expires_in, 600, 'the default lifetime is capped by PARLEY_TOKEN_MAX_TTL');
  for (const bad of [601, 0, -5, 1.5, '60']) {
    r = await mint({ user_id: 'alice', expires_in: bad });
    eq(r.status, 400, `expires_in ${JSON.stringify(bad)}`);
    assert(/1\.\.600/.test(r.json.message), `the message names the range: ${r.text}`);
  }
});

test('authz: kid rotation: old and new secret accepted during the rotation, the removed one refused; bad lists refused at start-up', async () => {
  const redis = await startRedis();
  const envOld = { PARLEY_JWT_SECRET: '', PARLEY_JWT_SECRETS: 'k1:first-secret-1' };
  const envBoth = { PARLEY_JWT_SECRET: '', PARLEY_JWT_SECRETS: 'k2:second-secret-2,k1:first-secret-1' };
  const envNew = { PARLEY_JWT_SECRET: '', PARLEY_JWT_SECRETS: 'k2:second-secret-2' };
  const [before, during, after] = [await startParleyd({ redis, env: envOld }), await startParleyd({ redis, env: envBoth }), await startParleyd({ redis, env: envNew })];
  const mintOn = async (srv) => {
    const r = await httpRequest(srv.port, 'POST', '/api/websocket/token', { headers: { Authorization: `Bearer ${API_KEY}` }, body: JSON.stringify({ user_id: newUser('rot') }) });
    eq(r.status, 200, `token from ${srv.serverId}`);
    return r.json.token;
  };
  const upgrade = async (srv, token) => {
    try { const c = await connect(srv, { token }); await c.nextJson('authenticated'); c.close(); return 101; } catch (e) { return e.statusCode || e.message; }
  };
  const oldTok = await mintOn(before);
  eq(verifyToken(oldTok, 'first-secret-1').header.kid, 'k1', 'kid of a token minted before the rotation');
  const newTok = await mintOn(during);
  eq(verifyToken(newTok, 'second-secret-2').header.kid, 'k2', 'during the rotation the first secret signs');
  eq(await upgrade(during, oldTok), 101, 'old token during the rotation');
  eq(await upgrade(during, newTok), 101, 'new token during the rotation');
  eq(await upgrade(after, newTok), 101, 'new token after the rotation');
  eq(await upgrade(after, oldTok), 401, 'old token after its secret was removed');
  eq(await upgrade(before, newTok), 401, 'new token before its secret was added');
  // a token naming k2 but signed with k1's secret
  eq(await upgrade(during, mintToken('m', { secret: 'first-secret-1', header: { alg: 'HS256', kid: 'k2' } })), 401, 'kid k2 signed with k1');
  // without a kid every accepted secret is tried
  eq(await upgrade(during, mintToken(newUser(), { secret: 'first-secret-1' })), 101, 'no kid, old secret, during');
  eq(await upgrade(after, mintToken(newUser(), { secret: 'first-secret-1' })), 401, 'no kid, old secret, after');
  // a user token for the HTTP API goes through the same keys
  const r = await httpRequest(after.port, 'GET', '/api/users/me/rooms', { headers: { Authorization: `Bearer ${oldTok}` } });
  eq(r.status, 401, 'the API refuses the removed key too');

  // both forms at once, or a bad list: refused at start-up with a clear message, no secret in it
  const run = (env) => spawnSync(PARLEYD, [], { env: { PATH: process.env.PATH, PARLEY_API_KEY: 'k', PARLEY_LISTEN: '127.0.0.1:1', ...env }, encoding: 'utf8', timeout: 5000 });
  let p = run({ PARLEY_JWT_SECRET: 'one-SEKRIT', PARLEY_JWT_SECRETS: 'k1:two-SEKRIT' });
  assert(p.status !== 0 && /PARLEY_JWT_SECRET and PARLEY_JWT_SECRETS/.test(p.stderr), `both set: ${p.status} ${p.stderr}`);
  p = run({ PARLEY_JWT_SECRETS: 'k1:a-SEKRIT,k1:b-SEKRIT' });
  assert(p.status !== 0 && /appears twice/.test(p.stderr), `duplicate kid: ${p.status} ${p.stderr}`);
  p = run({ PARLEY_JWT_SECRETS: 'no-kid-SEKRIT' });
  assert(p.status !== 0 && /kid:secret/.test(p.stderr) && !/SEKRIT/.test(p.stderr), `no kid: ${p.status} ${p.stderr}`);
});

test('authz: removing a member ends that user\'s live subscriptions to the room on every instance; history and sending are refused from then on', async () => {
  const { redis, pg, a, b } = await twoWithDatabase();
  const room = `closed-${process.pid}`;
  const other = `other-${process.pid}`;
  const alice = newUser('alice'), bob = newUser('bob');
  for (const [r, u] of [[room, alice], [room, bob], [other, alice]]) eq((await setMember(a, 'PUT', r, u)).status, 200, `PUT ${u} in ${r}`);
  const a1 = await connectAuthed(a, alice), a2 = await connectAuthed(b, alice), b1 = await connectAuthed(b, bob);
  await a1.subscribe([room, other]);
  await a2.subscribe([room]);
  await b1.subscribe([room]);

  const del = await setMember(b, 'DELETE', room, alice);
  eq(del.status, 200, `DELETE (${del.text})`);
  for (const [c, where] of [[a1, 'instance A'], [a2, 'instance B']]) {
    const u = await c.nextJson((j) => j.type === 'unsubscribed', 5000, `unsubscribed on ${where}`);
    eq(u.room, room, `unsubscribed.room on ${where}`);
    eq(u.reason, 'removed', `unsubscribed.reason on ${where}`);
  }
  // the others are not touched: bob still gets the room, alice still gets her other room
  b1.send({ type: 'message', room, text: 'after', cid: 'b-1' });
  eq((await b1.nextJson('message')).text, 'after', 'bob still subscribed');
  await a1.none((j) => j.type === 'message' && j.room === room, 500, 'alice got a message of the room she was removed from');
  a1.send({ type: 'message', room: other, text: 'other room', cid: 'a-0' });
  eq((await a1.nextJson('message')).room, other, 'alice still in her other room');
  // sending, history and subscribing again are refused
  a1.send({ type: 'message', room, text: 'no', cid: 'a-1' });
  await a1.expectError('not_subscribed', 5000, 'a-1');
  eq((await getHistory(a, room, { token: mintToken(alice) })).status, 403, 'history after removal');
  a2.send({ type: 'subscribe', rooms: [room] });
  const f = await a2.nextJson((j) => j.type === 'error' || j.type === 'subscribed', 5000, 'the resubscribe answer');
  eq(f.code, 'forbidden', `resubscribe after removal: ${JSON.stringify(f)}`);
  assert(a1.open && a2.open, 'the removed user\'s connections stay open');

  // leaving with one's own token ends the user's other subscriptions with reason "left"
  await b1.subscribe([room]);
  const b2 = await connectAuthed(a, bob);
  await b2.subscribe([room]);
  const leave = await httpRequest(a.port, 'DELETE', `/api/rooms/${room}/members/${bob}`, { headers: { Authorization: `Bearer ${mintToken(bob)}` } });
  eq(leave.status, 200, 'leave with the own token');
  for (const c of [b1, b2]) eq((await c.nextJson('unsubscribed')).reason, 'left', 'reason after leaving');
});

test('authz: POST /api/users/{id}/disconnect closes every connection of the user on every instance with 4003', async () => {
  const redis = await startRedis();
  const a = await startParleyd({ redis });
  const b = await startParleyd({ redis });
  const alice = newUser('ban'), bob = newUser('bob');
  const conns = [await connectAuthed(a, alice), await connectAuthed(a, alice), await connectAuthed(b, alice)];
  const bystander = await connectAuthed(b, bob);
  const post = (srv, user, { key = API_KEY, body } = {}) => httpRequest(srv.port, 'POST', `/api/users/${encodeURIComponent(user)}/disconnect`,
    { headers: key ? { Authorization: `Bearer ${key}` } : {}, body });

  eq((await post(a, alice, { key: null })).status, 401, 'no credential');
  eq((await post(a, alice, { key: mintToken(alice) })).status, 403, 'a user token');
  eq((await post(a, alice, { body: '{"reason":7}' })).status, 400, 'a reason that is not a string');
  eq((await post(a, alice, { body: JSON.stringify({ reason: 'x'.repeat(101) }) })).status, 400, 'a reason too long');
  eq((await post(a, alice, { body: 'nope' })).status, 400, 'a body that is not JSON');
  eq((await httpRequest(a.port, 'GET', `/api/users/${alice}/disconnect`, { headers: { Authorization: `Bearer ${API_KEY}` } })).status, 405, 'GET');
  eq((await httpRequest(a.port, 'POST', `/api/users/${alice}/other`, { headers: { Authorization: `Bearer ${API_KEY}` } })).status, 404, 'another path');
  for (const c of conns) assert(c.open, 'a refused request closed a connection');

  const r = await post(b, alice, { body: JSON.stringify({ reason: 'banned for spam' }) });
  eq(r.status, 200, `disconnect (${r.text})`);
  eq(r.json.user, alice, 'answer.user');
  assert(r.json.instances >= 2, `both instances reached: ${r.text}`);
  for (const c of conns) {
    const n = await c.nextJson('server_notice');
    eq(n.code, 'disconnected', 'notice code');
    eq(n.message, 'banned for spam', 'notice message: the reason');
    const { code } = await c.waitClose(5000);
    eq(code, 4003, 'close code');
  }
  assert(bystander.open, 'another user was closed');
  await bystander.ping();
  // a user without any connection: still 200, nothing closed
  eq((await post(a, newUser('nobody'))).status, 200, 'disconnect of a user with no connection');
});

test('authz: a disconnect revokes the user\'s tokens issued until then, on every instance: an old token is closed with 4003 after authenticated, a newer one works; "revoke": false only closes', async () => {
  const redis = await startRedis();
  const a = await startParleyd({ redis });
  const b = await startParleyd({ redis });
  const now = () => Math.floor(Date.now() / 1000);
  const post = (srv, user, body) => httpRequest(srv.port, 'POST', `/api/users/${encodeURIComponent(user)}/disconnect`,
    { headers: { Authorization: `Bearer ${API_KEY}` }, body });
  const oldToken = async (srv, token, what) => {
    const c = await connect(srv, { token });
    eq((await c.nextJson('authenticated')).type, 'authenticated', `${what}: authenticated first (the check rides on presence)`);
    const n = await c.nextJson('server_notice', 5000);
    eq(n.code, 'disconnected', `${what}: notice`);
    assert(/revoked/.test(n.message), `${what}: the notice says why: ${n.message}`);
    eq((await c.waitClose(5000)).code, 4003, `${what}: close code`);
  };
  const mallory = newUser('revoked');
  const before = mintToken(mallory, { extra: { iat: now() - 10 } });
  const noIat = mintToken(mallory, { extra: { iat: undefined } });
  const live = await connectAuthed(a, mallory);
  eq((await post(b, mallory, JSON.stringify({ reason: 'banned' }))).json.revoked, true, 'answer.revoked');
  eq((await live.waitClose(5000)).code, 4003, 'the live connection');
  // Tokens issued up to the disconnect (and one without iat) are refused on both instances.
  await oldToken(a, before, 'an older token on a');
  await oldToken(b, before, 'an older token on b');
  await oldToken(b, noIat, 'a token without iat');
  const bystander = await connectAuthed(a, newUser('bystander'));
  await bystander.ping();
  // The boundary is the disconnect's second: a token issued in it passes (the application's
  // new token right after a password change), one issued the second before does not.
  const revokedKey = redis.isCluster ? `ws:{u:${mallory}}:revoked` : `ws:revoked:${mallory}`;
  const rv = Number(await redisCli(redis, 'GET', revokedKey));
  assert(Math.abs(rv - now()) < 60, `${revokedKey} holds the disconnect's second: ${rv}`);
  await oldToken(a, mintToken(mallory, { extra: { iat: rv - 1 } }), 'a token of the second before');
  const same = await connect(a, { token: mintToken(mallory, { extra: { iat: rv } }) });
  eq((await same.nextJson('authenticated')).user, mallory, 'a token of the same second');
  await sleep(300);
  assert(same.open, 'a token issued in the disconnect\'s second was closed');
  same.close();
  await same.waitClose(5000);
  // A token issued after it works, and stays.
  const fresh = await connect(a, { token: mintToken(mallory, { extra: { iat: now() + 1 } }) });
  eq((await fresh.nextJson('authenticated')).user, mallory, 'a newer token');
  await sleep(500);
  assert(fresh.open, 'a newer token was closed');
  await fresh.ping();
  // The presence count stayed right: the refused connections were never counted (nor counted
  // down), so the fresh connection is mallory's one counted connection.
  const conns = (await connCount(redis, mallory, a.serverId)) + (await connCount(redis, mallory, b.serverId));
  eq(conns, 1, 'mallory\'s counted connections');
  eq(await onlineInRedis(redis, mallory), '1', 'mallory online');
  const m = (await httpRequest(a.port, 'GET', '/metrics')).text;
  assert(/parley_authentication_failures_total\{reason="revoked"\} [1-9]/.test(m), 'revoked refusals counted in /metrics');
  fresh.close();
  await fresh.waitClose(5000);

  // "revoke": false only closes: the same token connects again.
  const kate = newUser('kate');
  const tok = mintToken(kate, { extra: { iat: now() - 10 } });
  const k1 = await connect(b, { token: tok });
  await k1.nextJson('authenticated');
  const r = await post(a, kate, JSON.stringify({ revoke: false }));
  eq(r.json.revoked, false, `answer.revoked (${r.text})`);
  eq((await k1.waitClose(5000)).code, 4003, 'closed');
  const k2 = await connect(b, { token: tok });
  await k2.nextJson('authenticated');
  await sleep(500);
  assert(k2.open, 'the same token after a disconnect without revoke');
  eq((await post(a, kate, '{"revoke":"yes"}')).status, 400, 'revoke that is not a boolean');
});

test('authz: a token in ?token= reaches neither parleyd\'s log (debug) nor nginx\'s access log', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis, env: { PARLEY_LOG_LEVEL: 'debug', PARLEY_TRUSTED_PROXIES: '127.0.0.1' } });
  const nginx = await startNginx([srv]);
  const token = mintToken(newUser('quiet'));
  const direct = await connect(srv, { token, tokenIn: 'query' });
  await direct.nextJson('authenticated');
  const proxied = await connect(`ws://127.0.0.1:${nginx.port}/ws`, { token, tokenIn: 'query' });
  await proxied.nextJson('authenticated');
  // a refused one too
  const bad = token.slice(0, -4) + 'AAAA';
  try { (await connect(srv, { token: bad, tokenIn: 'query' })).close(); } catch {}
  direct.close();
  proxied.close();
  const sig = token.split('.')[2];
  await until(() => fs.existsSync(path.join(nginx.dir, 'access.log')) && /\/ws/.test(fs.readFileSync(path.join(nginx.dir, 'access.log'), 'utf8')), 5000, 'nginx to log the upgrade');
  const access = fs.readFileSync(path.join(nginx.dir, 'access.log'), 'utf8');
  assert(!access.includes(sig) && !access.includes('token='), `nginx's access log holds the token:\n${access}`);
  await until(() => /websocket from/.test(srv.log()), 5000, 'parleyd to log the upgrades');
  const log = srv.log();
  assert(!log.includes(sig) && !log.includes(bad.split('.')[2]) && !log.includes('token='), `parleyd's log holds a token:\n${log}`);
});

test('authz: a subscribe in flight when the member is removed is answered (forbidden, or subscribed then unsubscribed), never left waiting', async () => {
  const { redis, pg, a, b } = await twoWithDatabase();
  const room = `race-${process.pid}`;
  const carol = newUser('carol');
  const c = await connectAuthed(b, carol);
  const answers = { forbidden: 0, subscribed: 0 };
  for (let i = 0; i < 20; i++) {
    eq((await setMember(a, 'PUT', room, carol)).status, 200, `PUT ${i}`);
    // The removal's event and the subscribe's membership check race on instance B.
    const del = setMember(a, 'DELETE', room, carol);
    c.send({ type: 'subscribe', rooms: [room] });
    const j = await c.nextJson((x) => (x.type === 'subscribed' && x.room === room) || (x.type === 'error' && x.room === room), 5000, `an answer to subscribe ${i}`);
    eq((await del).status, 200, `DELETE ${i}`);
    if (j.type === 'error') {
      eq(j.code, 'forbidden', `refusal ${i}: ${JSON.stringify(j)}`);
      answers.forbidden++;
    } else {
      // Subscribed before the removal took effect: the removal then ends it.
      await c.nextJson((x) => x.type === 'unsubscribed' && x.room === room, 5000, `unsubscribed after subscribed ${i}`);
      answers.subscribed++;
    }
    await sleep(50); // a late removal event arrives before the next round
    for (let k; (k = c.frames.findIndex((f) => f.json && f.json.room === room)) >= 0;) c.frames.splice(k, 1);
  }
  console.log(`  (20 races: ${answers.forbidden} refused, ${answers.subscribed} subscribed then removed)`);
  await c.ping();
});
