// What the web app needs from parleyd (issue 12): static files from PARLEY_WEB_ROOT, the
// development token endpoint, a user's rooms, a room's members with their online state, leaving
// a room, and presence when an online user joins a room.
import fs from 'node:fs';
import path from 'node:path';
import {
  test, startRedis, startParleyd, startPostgres, connectAuthed, dbEnv, mintToken, httpRequest,
  setMember, assert, eq, sleep, until, tmpDir, API_KEY, newUser, rawExchange,
} from './lib.mjs';

const bearer = (t) => ({ Authorization: `Bearer ${t}` });

function webRoot() {
  const dir = tmpDir();
  const root = path.join(dir, 'www'), outside = path.join(dir, 'outside');
  fs.mkdirSync(path.join(root, 'sub'), { recursive: true });
  fs.mkdirSync(outside);
  fs.writeFileSync(path.join(root, 'index.html'), '<!doctype html><title>t</title>');
  fs.writeFileSync(path.join(root, 'app.js'), 'export const x = 1;\n');
  fs.writeFileSync(path.join(root, 'style.css'), 'body{}');
  fs.writeFileSync(path.join(root, 'logo.svg'), '<svg xmlns="http://www.w3.org/2000/svg"/>');
  fs.writeFileSync(path.join(root, 'data.bin'), Buffer.from([1, 2, 3]));
  fs.writeFileSync(path.join(root, 'sub', 'index.html'), '<p>sub</p>');
  fs.writeFileSync(path.join(root, '.env'), 'SECRET=1');
  fs.writeFileSync(path.join(outside, 'secret.txt'), 'secret');
  fs.symlinkSync('../outside/secret.txt', path.join(root, 'rel-out.txt'));
  fs.symlinkSync(path.join(outside, 'secret.txt'), path.join(root, 'abs-out.txt'));
  fs.symlinkSync('../outside', path.join(root, 'dir-out'));
  fs.symlinkSync('app.js', path.join(root, 'alias.js'));
  return root;
}

test('web: static files from PARLEY_WEB_ROOT: types, ETag/Last-Modified and 304, HEAD, 405; nothing outside the root or hidden (.., encoded .., NUL, symlinks out, dotfiles): 404; API paths unaffected; no root: 404', async () => {
  const redis = await startRedis();
  const root = webRoot();
  const A = await startParleyd({ redis, env: { PARLEY_WEB_ROOT: root } });
  const get = (p, headers = {}, method = 'GET') => httpRequest(A.port, method, p, { headers });
  for (const [p, type, body] of [
    ['/', 'text/html; charset=utf-8', '<!doctype html><title>t</title>'],
    ['/index.html', 'text/html; charset=utf-8', null],
    ['/app.js', 'text/javascript; charset=utf-8', 'export const x = 1;\n'],
    ['/style.css', 'text/css; charset=utf-8', null],
    ['/logo.svg', 'image/svg+xml', null],
    ['/data.bin', 'application/octet-stream', null],
    ['/sub/', 'text/html; charset=utf-8', '<p>sub</p>'],
    ['/alias.js', 'text/javascript; charset=utf-8', null], // a symlink inside the root
    ['/%61pp.js', 'text/javascript; charset=utf-8', null], // percent-encoded, inside
    ['//app.js', 'text/javascript; charset=utf-8', null],
  ]) {
    const r = await get(p);
    eq(r.status, 200, `GET ${p}`);
    eq(r.headers['content-type'], type, `content type of ${p}`);
    if (body !== null) eq(r.text, body, `body of ${p}`);
    assert(r.headers.etag && r.headers['last-modified'], `${p}: ETag and Last-Modified (${JSON.stringify(r.headers)})`);
    eq(r.headers['x-content-type-options'], 'nosniff', `${p}: nosniff`);
  }
  const html = await get('/');
  assert(/default-src 'self'/.test(html.headers['content-security-policy'] || ''), `the page has a CSP: ${JSON.stringify(html.headers)}`);

  // Revalidation: by ETag, by date; a changed file gets a new tag.
  const first = await get('/app.js');
  eq((await get('/app.js', { 'If-None-Match': first.headers.etag })).status, 304, 'If-None-Match: the same tag');
  const nm = await get('/app.js', { 'If-None-Match': first.headers.etag });
  eq(nm.text, '', '304 has no body');
  eq((await get('/app.js', { 'If-None-Match': 'W/"other"' })).status, 200, 'If-None-Match: another tag');
  eq((await get('/app.js', { 'If-Modified-Since': first.headers['last-modified'] })).status, 304, 'If-Modified-Since: the same date');
  eq((await get('/app.js', { 'If-Modified-Since': 'Thu, 01 Jan 1970 00:00:00 GMT' })).status, 200, 'If-Modified-Since: long ago');
  await sleep(20);
  fs.writeFileSync(path.join(root, 'app.js'), 'export const x = 2;\n');
  const changed = await get('/app.js', { 'If-None-Match': first.headers.etag });
  eq(changed.status, 200, 'a changed file is sent again');
  assert(changed.headers.etag !== first.headers.etag, 'a changed file has a new ETag');

  const head = await get('/app.js', {}, 'HEAD');
  eq(head.status, 200, 'HEAD');
  eq(head.headers['content-length'], String('export const x = 2;\n'.length), 'HEAD: Content-Length of the file');
  eq(head.text, '', 'HEAD: no body');
  for (const m of ['POST', 'PUT', 'DELETE']) {
    const r = await get('/app.js', {}, m);
    eq(r.status, 405, `${m} on a static file`);
    eq(r.headers.allow, 'GET, HEAD', `${m}: Allow`);
  }

  for (const p of ['/../outside/secret.txt', '/sub/../../outside/secret.txt', '/%2e%2e/outside/secret.txt',
    '/%2E%2E%2Foutside%2Fsecret.txt', '/sub/..%2f..%2foutside/secret.txt', '/app.js%00.html', '/%00',
    '/rel-out.txt', '/abs-out.txt', '/dir-out/secret.txt', '/.env', '/%2eenv', '/sub/.', '/nope.html',
    '/sub', '/%zz', '/%2', '/' + 'a'.repeat(2000)]) {
    const r = await get(p);
    eq(r.status, 404, `GET ${p}`);
    assert(!r.text.includes('secret'), `${p} leaked the file outside the root`);
  }
  // The raw bytes too, with no client in between to normalise the path.
  const raw = (await rawExchange(A.port, 'GET /../outside/secret.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).data.toString();
  assert(/^HTTP\/1.1 404/.test(raw) && !raw.includes('secret\n') && !/\r\n\r\nsecret/.test(raw), `raw ..: ${raw.slice(0, 80)}`);

  // The API is where it was.
  eq((await get('/health')).status, 200, '/health');
  eq((await get('/api/nope')).status, 404, '/api/... is never a file');
  eq((await get('/api/nope')).json.error, 'not_found', '/api/... 404 is the API\'s');
  eq((await get('/ws')).status, 400, '/ws without upgrade');
  const B = await startParleyd({ redis });
  eq((await httpRequest(B.port, 'GET', '/')).status, 404, 'no PARLEY_WEB_ROOT: nothing at /');
  assert(A.running && B.running, 'parleyd exited');
});

test('web: PARLEY_WEB_ROOT that is not a directory: parleyd refuses to start, saying why', async () => {
  const redis = await startRedis();
  const A = await startParleyd({ redis, env: { PARLEY_WEB_ROOT: '/nonexistent-web-root' }, waitHealthy: false });
  await until(() => !A.running, 5000, 'parleyd to exit');
  assert(/PARLEY_WEB_ROOT: cannot open directory \/nonexistent-web-root/.test(A.log()), `the reason: ${A.log().slice(-300)}`);
});

test('web: PARLEY_DEV=1 enables POST /api/dev/token without the API key; off by default (404); the token works', async () => {
  const redis = await startRedis();
  const off = await startParleyd({ redis });
  const r0 = await httpRequest(off.port, 'POST', '/api/dev/token', { body: JSON.stringify({ user_id: 'alice' }) });
  eq(r0.status, 404, 'dev token with PARLEY_DEV unset');
  const dev = await startParleyd({ redis, env: { PARLEY_DEV: 1 } });
  const r = await httpRequest(dev.port, 'POST', '/api/dev/token', { body: JSON.stringify({ user_id: 'alice' }) });
  eq(r.status, 200, 'dev token');
  eq(r.json.user_id, 'alice', 'for the user asked');
  assert(typeof r.json.token === 'string' && !r.text.includes(API_KEY), 'a token, and never the API key');
  eq(r.json.websocket_url, `ws://127.0.0.1:${dev.port}/ws`, 'websocket_url');
  eq((await httpRequest(dev.port, 'POST', '/api/dev/token', { body: '{"user_id":""}' })).status, 400, 'a bad user id');
  eq((await httpRequest(dev.port, 'GET', '/api/dev/token')).status, 405, 'GET');
  const c = await connectAuthed(dev, 'alice', { token: r.json.token }).catch((e) => e);
  assert(!(c instanceof Error), `the dev token authenticates: ${c}`);
  assert(/PARLEY_DEV=1/.test(dev.log()), 'a warning at start-up');
});

test('web: GET /api/users/me/rooms: each room with seq, read and unread, direct conversations with the other user; the user\'s token only', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const A = await startParleyd({ redis, env: dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 }) });
  const alice = await connectAuthed(A, newUser('alice')), bob = await connectAuthed(A, newUser('bob'));
  await alice.subscribe(['web-a', 'web-b']);
  await bob.subscribe(['web-a']);
  for (let i = 0; i < 5; i++) {
    alice.send({ type: 'message', room: 'web-a', text: `m${i}`, cid: `a${i}` });
    await alice.nextJson((j) => j.type === 'ack' && j.cid === `a${i}`, 8000, 'ack');
  }
  bob.send({ type: 'read', room: 'web-a', seq: 3 });
  await bob.nextJson((j) => j.type === 'read_receipt' && j.user === bob.user, 5000, 'own read receipt');
  bob.send({ type: 'message', to: alice.user, text: 'psst', cid: 'dm1' });
  const dm = await bob.nextJson((j) => j.type === 'ack' && j.cid === 'dm1', 8000, 'dm ack');
  const rooms = async (u) => {
    const r = await httpRequest(A.port, 'GET', '/api/users/me/rooms', { headers: bearer(mintToken(u)) });
    eq(r.status, 200, `rooms of ${u}: ${r.text}`);
    eq(r.json.user, u, 'user');
    return Object.fromEntries(r.json.rooms.map((x) => [x.room, x]));
  };
  let b = {};
  await until(async () => { b = await rooms(bob.user); return b['web-a'] && b['web-a'].read === 3 && Object.keys(b).some((k) => k.startsWith('dm:')); }, 5000, 'bob\'s read position and dm stored');
  eq(JSON.stringify(b['web-a']), JSON.stringify({ room: 'web-a', seq: 5, read: 3, unread: 2 }), 'bob in web-a');
  const dmRoom = Object.keys(b).find((k) => k.startsWith('dm:'));
  eq(b[dmRoom].with, alice.user, 'the dm names the other user');
  eq(b[dmRoom].seq, dm.seq, 'the dm\'s seq');
  const a = await rooms(alice.user);
  eq(JSON.stringify(Object.keys(a).filter((k) => !k.startsWith('dm:')).sort()), JSON.stringify(['web-a', 'web-b']), 'alice\'s rooms');
  eq(a['web-b'].seq, 0, 'an empty room');
  eq(a[dmRoom].with, bob.user, 'the same dm from alice\'s side');
  eq((await rooms(newUser('nobody'))) && true, true, 'a user with no rooms');
  eq((await httpRequest(A.port, 'GET', '/api/users/me/rooms')).status, 401, 'no token');
  eq((await httpRequest(A.port, 'GET', '/api/users/me/rooms', { headers: bearer(API_KEY) })).status, 401, 'the API key is nobody');
  eq((await httpRequest(A.port, 'GET', '/api/users/me/rooms', { headers: bearer(mintToken('x', { secret: 'wrong' })) })).status, 401, 'a bad token');
  eq((await httpRequest(A.port, 'POST', '/api/users/me/rooms', { headers: bearer(mintToken(bob.user)) })).status, 405, 'POST');
});

test('web: GET /api/rooms/{room}/members with online state (members or the API key); a user may leave, and join an open room, only themselves', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const A = await startParleyd({ redis, env: dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 }) });
  const room = `mem-${process.pid}`;
  const alice = await connectAuthed(A, newUser('alice')), bob = await connectAuthed(A, newUser('bob'));
  const carol = newUser('carol'); // a member who is not connected
  await alice.subscribe([room]); await bob.subscribe([room]);
  eq((await setMember(A, 'PUT', room, carol)).status, 200, 'carol made a member');
  const members = (tok, q = '') => httpRequest(A.port, 'GET', `/api/rooms/${room}/members${q}`, { headers: bearer(tok) });
  let r;
  await until(async () => { r = await members(mintToken(alice.user)); return r.status === 200 && r.json.count === 3; }, 5000, 'three members');
  eq(JSON.stringify(r.json.members), JSON.stringify([alice.user, bob.user, carol].sort().map((u) => ({ user: u, online: u !== carol }))), 'members, sorted, with online state');
  eq((await members(API_KEY)).status, 200, 'the API key');
  const lim = await members(API_KEY, '?limit=1');
  eq(lim.json.count, 3, 'count with limit'); eq(lim.json.members.length, 1, 'limit=1');
  eq((await members(mintToken(newUser('eve')))).status, 403, 'not a member');
  eq((await httpRequest(A.port, 'GET', `/api/rooms/${room}/members`)).status, 401, 'no token');
  eq((await members(API_KEY, '?limit=0')).status, 400, 'limit 0');
  eq((await httpRequest(A.port, 'GET', '/api/rooms/bad%20room/members', { headers: bearer(API_KEY) })).status, 400, 'a bad room id');

  bob.close();
  await until(async () => (await members(API_KEY)).json.members.find((m) => m.user === bob.user).online === false, 5000, 'bob offline in the list');

  const tokA = mintToken(alice.user);
  const change = (method, u, tok) => httpRequest(A.port, method, `/api/rooms/${room}/members/${encodeURIComponent(u)}`, { headers: bearer(tok) });
  eq((await change('DELETE', bob.user, tokA)).status, 403, 'alice cannot remove bob');
  eq((await change('DELETE', alice.user, tokA)).status, 200, 'alice leaves');
  eq((await members(tokA)).status, 403, 'alice is no longer a member');
  eq((await change('PUT', alice.user, tokA)).status, 200, 'alice joins again (open rooms)');
  eq((await members(tokA)).status, 200, 'a member again');
  // Read-your-writes: the answer to a change comes once the whole gateway sees it, whichever
  // shard or instance the next request lands on.
  const B = await startParleyd({ redis, env: dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 }) });
  const membersB = (tok) => httpRequest(B.port, 'GET', `/api/rooms/${room}/members`, { headers: bearer(tok) });
  for (let i = 0; i < 20; i++) {
    eq((await change('DELETE', alice.user, tokA)).status, 200, `leave ${i}`);
    eq((await (i % 2 ? members : membersB)(tokA)).status, 403, `not a member right after leaving ${i}`);
    eq((await change('PUT', alice.user, tokA)).status, 200, `join ${i}`);
    eq((await (i % 2 ? membersB : members)(tokA)).status, 200, `a member right after joining ${i}`);
  }
  eq((await change('DELETE', alice.user, mintToken(carol))).status, 403, 'carol cannot remove alice');
  const closed = await startParleyd({ redis, env: dbEnv(pg, { PARLEY_OPEN_ROOMS: 0 }) });
  const r2 = await httpRequest(closed.port, 'PUT', `/api/rooms/${room}/members/${encodeURIComponent(carol)}`, { headers: bearer(mintToken(carol)) });
  eq(r2.status, 403, 'closed rooms: a user cannot make themselves a member');
  eq((await httpRequest(closed.port, 'DELETE', `/api/rooms/${room}/members/${encodeURIComponent(carol)}`, { headers: bearer(mintToken(carol)) })).status, 200, 'closed rooms: but may leave');
});

test('web: presence on joining: an online user who becomes a member is announced to the room (subscribe in open rooms, PUT member), once', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const A = await startParleyd({ redis, env: dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 }) });
  const B = await startParleyd({ redis, env: dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 }) });
  const room = `join-${process.pid}`;
  const bob = await connectAuthed(A, newUser('bob'));
  await bob.subscribe([room]);
  const alice = await connectAuthed(B, newUser('alice')); // online, not yet a member of the room
  await bob.none((j) => j.type === 'presence' && j.user === alice.user, 500, 'presence before alice joins');
  await alice.subscribe([room]);
  const p = await bob.nextJson((j) => j.type === 'presence' && j.user === alice.user, 5000, 'alice online as she joins');
  eq(p.status, 'online', 'status');
  await alice.subscribe([room]); // again: already a member, nothing new
  await alice.send({ type: 'unsubscribe', rooms: [room] });
  await alice.subscribe([room]);
  await bob.none((j) => j.type === 'presence' && j.user === alice.user, 800, 'a second presence for a member who was one already');
  // Made a member by the API while online, on another instance.
  const carol = await connectAuthed(B, newUser('carol'));
  eq((await setMember(B, 'PUT', room, carol.user)).status, 200, 'PUT carol');
  eq((await bob.nextJson((j) => j.type === 'presence' && j.user === carol.user, 5000, 'carol online as she is made a member')).status, 'online', 'carol');
  // Offline users are not announced.
  eq((await setMember(B, 'PUT', room, 'dave-offline')).status, 200, 'PUT an offline user');
  await bob.none((j) => j.type === 'presence' && j.user === 'dave-offline', 800, 'presence for an offline user');
});
