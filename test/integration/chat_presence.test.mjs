// Presence across instances (issue 5): online/offline events to the members'
// rooms, one event per user (not per tab), the online endpoints, and users of
// a kill -9'd instance reported offline by the survivors.
import {
  test, startRedis, startParleyd, startPostgres, connectAuthed, dbEnv, recordFrames, userOnline, onlineUsers, connCount, onlineInRedis, onlineCountInRedis,
  redisCli, mintToken, setMember, API_KEY, assert, eq, sleep, until,
} from './lib.mjs';

const GRACE = 1500; // how long "nothing arrives" is watched for

const presenceOf = (list, user) => list.filter((p) => p.user === user);
const fmt = (list) => JSON.stringify(list.map((p) => `${p.user}:${p.status}`));

function checkPresenceFrame(p, user, status) {
  assert(p.raw.startsWith('{"type":"presence"'), `presence frame must start with {"type":"presence": ${p.raw}`);
  eq(p.user, user, `presence user in ${p.raw}`);
  eq(p.status, status, `presence status in ${p.raw}`);
}

// The online endpoint on every server, with the API key and a user token, says `online`.
async function expectOnline(servers, user, online, { token, ms = 0, step }) {
  const check = async () => {
    for (const s of servers) {
      for (const [how, auth] of [['API key', API_KEY], ['user token', token]]) {
        const r = await userOnline(s, user, { auth });
        if (r.status !== 200) throw new Error(`${step}: GET /api/websocket/users/${user}/online on ${s.serverId} with the ${how}: HTTP ${r.status} ${r.text}`);
        if (!r.json || r.json.user !== user || r.json.online !== online) {
          throw new Error(`${step}: GET /api/websocket/users/${user}/online on ${s.serverId} with the ${how}: expected {"user":"${user}","online":${online}}, got ${r.text}`);
        }
      }
    }
    return true;
  };
  if (!ms) return check();
  return until(check, ms, `${step}: ${user} online=${online} on every instance`, 100);
}

async function expectList(server, users, { auth = API_KEY, step }) {
  const want = [...users].sort();
  const r = await onlineUsers(server, { auth });
  eq(r.status, 200, `${step}: GET /api/websocket/users/online on ${server.serverId} status (${r.text})`);
  eq(r.json && r.json.count, want.length, `${step}: online count on ${server.serverId} (${r.text})`);
  eq(JSON.stringify(r.json.users), JSON.stringify(want), `${step}: online users on ${server.serverId} (${r.text})`);
}

test('chat presence: two instances, one online and one offline event per user (not per tab), endpoints agree on both instances', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 });
  const A = await startParleyd({ redis, env }), B = await startParleyd({ redis, env });
  const room = 'pres-r', alice = `palice-${process.pid}`, bob = `pbob-${process.pid}`;
  const tokA = mintToken(alice), tokB = mintToken(bob);

  // alice becomes a member of the room, then leaves completely.
  let a = await connectAuthed(B, alice);
  await a.subscribe([room]);
  a.close(); await a.waitClose();
  await expectOnline([A, B], alice, false, { token: tokB, ms: 5000, step: 'alice disconnected after joining' });
  await sleep(500);

  // bob watches the room from instance A.
  const b = await connectAuthed(A, bob);
  const seen = recordFrames(b, (j) => j.type === 'presence');
  await b.subscribe([room]);
  const o = await connectAuthed(B, `poscar-${process.pid}`); // subscribed to a room alice is not in
  const oSeen = recordFrames(o, (j) => j.type === 'presence');
  await o.subscribe(['pres-other']);
  await sleep(500);
  const early = presenceOf(seen, alice);
  eq(early.length, 0, `presence events about alice before she connects again: ${fmt(early)}`);

  // Unauthenticated callers get nothing.
  const noAuth = await userOnline(A, alice, { auth: null });
  eq(noAuth.status, 401, `GET /api/websocket/users/{id}/online without Authorization (${noAuth.text})`);
  const noAuthList = await onlineUsers(A, { auth: null });
  eq(noAuthList.status, 401, `GET /api/websocket/users/online without Authorization (${noAuthList.text})`);
  const badAuth = await userOnline(A, alice, { auth: 'not-the-key' });
  eq(badAuth.status, 401, `GET /api/websocket/users/{id}/online with a wrong key (${badAuth.text})`);

  // 1. alice connects on B: bob (on A) gets online.
  const a1 = await connectAuthed(B, alice);
  await until(() => presenceOf(seen, alice).length >= 1, 5000, 'bob gets alice online (first connection, other instance)');
  checkPresenceFrame(presenceOf(seen, alice)[0], alice, 'online');
  await expectOnline([A, B], alice, true, { token: tokB, ms: 2000, step: 'alice has one connection (B)' });
  await expectList(A, [alice, bob, o.user], { step: 'alice online' });
  await expectList(B, [alice, bob, o.user], { auth: tokA, step: 'alice online (user token)' });
  const page = await onlineUsers(A, { query: 'offset=1&limit=1' });
  eq(page.status, 200, `GET /api/websocket/users/online?offset=1&limit=1 (${page.text})`);
  eq(page.json.count, 3, `paged list: count is the whole cluster's (${page.text})`);
  eq(JSON.stringify(page.json.users), JSON.stringify([[alice, bob, o.user].sort()[1]]), `paged list: users (${page.text})`);
  eq(page.json.offset, 1, `paged list: offset (${page.text})`); eq(page.json.limit, 1, `paged list: limit (${page.text})`);
  eq(await onlineInRedis(redis, alice), '1', 'alice in ws:online_users');

  // 2. a second connection on A: no second online event.
  const a2 = await connectAuthed(A, alice);
  await sleep(GRACE);
  eq(presenceOf(seen, alice).length, 1, `events after a second tab: ${fmt(presenceOf(seen, alice))}`);
  await expectOnline([A, B], alice, true, { token: tokB, step: 'alice has two connections' });

  // 3. closing one of them: no offline.
  a1.close(); await a1.waitClose();
  await sleep(GRACE);
  eq(presenceOf(seen, alice).length, 1, `events after closing one of two tabs: ${fmt(presenceOf(seen, alice))}`);
  await expectOnline([A, B], alice, true, { token: tokB, step: 'alice closed B, still on A' });
  await expectList(B, [alice, bob, o.user], { step: 'alice still online' });

  // 4. closing the last: exactly one offline.
  a2.close(); await a2.waitClose();
  await until(() => presenceOf(seen, alice).length >= 2, 5000, 'bob gets alice offline (last connection closed)');
  await sleep(GRACE);
  const all = presenceOf(seen, alice);
  eq(all.length, 2, `presence events about alice in all: ${fmt(all)}`);
  checkPresenceFrame(all[1], alice, 'offline');
  await expectOnline([A, B], alice, false, { token: tokB, ms: 2000, step: 'alice closed every connection' });
  await expectList(A, [bob, o.user], { step: 'alice offline' });
  await expectList(B, [bob, o.user], { auth: tokB, step: 'alice offline (user token)' });
  eq(presenceOf(oSeen, alice).length, 0, `presence events about alice at a subscriber of a room she is not in: ${fmt(oSeen)}`);
  eq(await onlineInRedis(redis, alice), '0', 'alice removed from ws:online_users');
  const never = await userOnline(B, `nobody-${process.pid}`);
  eq(never.status, 200, `online endpoint for an unknown user (${never.text})`);
  eq(never.json && never.json.online, false, `online endpoint for an unknown user (${never.text})`);
}, { timeout: 60000 });

test('chat presence: kill -9 of an instance: its users are reported offline within 30 s; a user also on the survivor stays online', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 });
  const A = await startParleyd({ redis, env }), B = await startParleyd({ redis, env });
  const room = 'kill-r', carol = `kcarol-${process.pid}`, dave = `kdave-${process.pid}`, erin = `kerin-${process.pid}`;
  const tok = mintToken(carol);

  // dave only on B; erin on B and on A; carol watches from A. All members of the room.
  const d = await connectAuthed(B, dave); await d.subscribe([room]);
  const e1 = await connectAuthed(B, erin); await e1.subscribe([room]);
  const e2 = await connectAuthed(A, erin);
  const c = await connectAuthed(A, carol);
  const seen = recordFrames(c, (j) => j.type === 'presence');
  await c.subscribe([room]);
  await sleep(1000);
  seen.length = 0;
  await expectOnline([A, B], dave, true, { token: tok, ms: 2000, step: 'before the kill' });
  await expectOnline([A, B], erin, true, { token: tok, step: 'before the kill' });

  const t0 = Date.now();
  B.child.kill('SIGKILL');
  assert(await B.waitExit(5000), 'B did not die');
  await d.waitClose(5000).catch(() => {});
  await until(() => presenceOf(seen, dave).length >= 1, 32000, 'carol gets dave offline after his instance was killed');
  const secs = (Date.now() - t0) / 1000;
  checkPresenceFrame(presenceOf(seen, dave)[0], dave, 'offline');
  console.log(`  (dave reported offline ${secs.toFixed(1)} s after the kill)`);
  assert(secs <= 30.5, `dave reported offline ${secs.toFixed(1)} s after the kill (limit 30 s)`);
  await expectOnline([A], dave, false, { token: tok, ms: 2000, step: 'after the sweep' });
  await sleep(2000);
  eq(presenceOf(seen, dave).length, 1, `events about dave: ${fmt(presenceOf(seen, dave))}`);
  eq(presenceOf(seen, erin).length, 0, `events about erin, who still has a connection on A: ${fmt(presenceOf(seen, erin))}`);
  await expectOnline([A], erin, true, { token: tok, step: 'after the sweep, erin still on A' });
  await expectList(A, [carol, erin], { step: 'after the sweep' });
  eq(await onlineInRedis(redis, dave), '0', 'dave removed from ws:online_users');
  eq(await onlineInRedis(redis, erin), '1', 'erin still in ws:online_users');
  assert(e2.open, 'erin\'s connection on A was closed');

  // erin's last connection closes normally afterwards: now she goes offline, once.
  e2.close(); await e2.waitClose();
  await until(() => presenceOf(seen, erin).length >= 1, 5000, 'carol gets erin offline');
  checkPresenceFrame(presenceOf(seen, erin)[0], erin, 'offline');
  await expectOnline([A], erin, false, { token: tok, ms: 2000, step: 'erin closed her last connection' });
}, { timeout: 90000 });

test('chat presence: closed rooms: members added over HTTP get presence; a removed member\'s presence no longer goes to the room', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = dbEnv(pg); // closed rooms
  const A = await startParleyd({ redis, env }), B = await startParleyd({ redis, env });
  const room = 'closed-r', alice = `calice-${process.pid}`, bob = `cbob-${process.pid}`;
  for (const u of [alice, bob]) {
    const r = await setMember(A, 'PUT', room, u);
    eq(r.status, 200, `PUT member ${u} (${r.text})`);
  }
  const b = await connectAuthed(A, bob);
  const seen = recordFrames(b, (j) => j.type === 'presence');
  await b.subscribe([room]);
  await sleep(500);
  // alice, a member who never subscribed, connects on B and leaves.
  let a = await connectAuthed(B, alice);
  await until(() => presenceOf(seen, alice).length >= 1, 5000, 'bob gets alice (member via HTTP, never subscribed) online');
  checkPresenceFrame(presenceOf(seen, alice)[0], alice, 'online');
  a.close(); await a.waitClose();
  await until(() => presenceOf(seen, alice).length >= 2, 5000, `bob gets alice offline (${fmt(seen)})`);
  checkPresenceFrame(presenceOf(seen, alice)[1], alice, 'offline');
  // alice is removed from the room (over HTTP, on the other instance): her presence no longer goes there.
  const d = await setMember(B, 'DELETE', room, alice);
  eq(d.status, 200, `DELETE member (${d.text})`);
  await sleep(500);
  a = await connectAuthed(A, alice);
  await sleep(GRACE);
  a.close(); await a.waitClose();
  await sleep(GRACE);
  eq(presenceOf(seen, alice).length, 2, `presence events about alice after she was removed from the room: ${fmt(presenceOf(seen, alice))}`);
}, { timeout: 60000 });

test('chat presence: kill -9 and restart with the same server id: stale connections do not keep users online', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 });
  const A = await startParleyd({ redis, env });
  let B = await startParleyd({ redis, env });
  const room = 'restart-r', carol = `scarol-${process.pid}`, dave = `sdave-${process.pid}`, erin = `serin-${process.pid}`;
  const tok = mintToken(carol);
  const d = await connectAuthed(B, dave); await d.subscribe([room]);
  const e = await connectAuthed(B, erin); await e.subscribe([room]);
  const c = await connectAuthed(A, carol);
  const seen = recordFrames(c, (j) => j.type === 'presence');
  await c.subscribe([room]);
  await sleep(1000);
  seen.length = 0;

  const t0 = Date.now();
  B.child.kill('SIGKILL');
  assert(await B.waitExit(5000), 'B did not die');
  B = await startParleyd({ redis, env, serverId: B.serverId }); // back at once, same id
  const e2 = await connectAuthed(B, erin); // erin reconnects to it; dave does not
  await until(() => presenceOf(seen, dave).length >= 1, 32000 - (Date.now() - t0), `carol gets dave offline after his instance was killed and restarted (${fmt(seen)})`);
  const secs = (Date.now() - t0) / 1000;
  console.log(`  (dave reported offline ${secs.toFixed(1)} s after the kill)`);
  checkPresenceFrame(presenceOf(seen, dave)[0], dave, 'offline');
  await expectOnline([A, B], dave, false, { token: tok, ms: 2000, step: 'dave after the restart' });
  await sleep(2000);
  eq(presenceOf(seen, dave).length, 1, `events about dave: ${fmt(presenceOf(seen, dave))}`);
  // erin has one connection (on the new B): online now, offline as soon as she closes it.
  await expectOnline([A, B], erin, true, { token: tok, step: 'erin reconnected to the restarted B' });
  const before = presenceOf(seen, erin).length;
  const last = presenceOf(seen, erin).slice(-1)[0];
  assert(!last || last.status === 'online', `the last presence event about erin while she is connected is ${last && last.raw}`);
  e2.close(); await e2.waitClose();
  await until(() => presenceOf(seen, erin).length > before, 5000, `carol gets erin offline when she closes her only connection (${fmt(seen)})`);
  checkPresenceFrame(presenceOf(seen, erin).slice(-1)[0], erin, 'offline');
  await expectOnline([A, B], erin, false, { token: tok, ms: 2000, step: 'erin closed her only connection' });
  await expectList(A, [carol], { step: 'only carol is left' });
}, { timeout: 90000 });

test('chat presence: kill -9 of an instance, the user reconnects to the survivor before the sweep: no offline event, stays online', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 });
  const A = await startParleyd({ redis, env }), B = await startParleyd({ redis, env });
  const room = 'move-r', carol = `mcarol-${process.pid}`, dave = `mdave-${process.pid}`;
  const tok = mintToken(carol);
  const d = await connectAuthed(B, dave); await d.subscribe([room]);
  const c = await connectAuthed(A, carol);
  const seen = recordFrames(c, (j) => j.type === 'presence');
  await c.subscribe([room]);
  await sleep(1000);
  seen.length = 0;

  const t0 = Date.now();
  B.child.kill('SIGKILL');
  assert(await B.waitExit(5000), 'B did not die');
  const d2 = await connectAuthed(A, dave); // the client reconnects to the survivor at once
  await d2.subscribe([room]);
  // the survivors notice a dead instance within 30 s: wait that long and a little more
  await sleep(Math.max(0, t0 + 32000 - Date.now()));
  eq(presenceOf(seen, dave).filter((p) => p.status === 'offline').length, 0, `offline events about dave, who is connected to A: ${fmt(presenceOf(seen, dave))}`);
  await expectOnline([A], dave, true, { token: tok, step: 'after the sweep, dave on A' });
  eq(await onlineInRedis(redis, dave), '1', 'dave in ws:online_users');
  seen.length = 0;
  d2.close(); await d2.waitClose();
  await until(() => presenceOf(seen, dave).length >= 1, 5000, 'carol gets dave offline when he closes');
  checkPresenceFrame(presenceOf(seen, dave)[0], dave, 'offline');
  await sleep(GRACE);
  eq(presenceOf(seen, dave).length, 1, `events about dave after he closed: ${fmt(presenceOf(seen, dave))}`);
  await expectOnline([A], dave, false, { token: tok, ms: 2000, step: 'dave closed' });
}, { timeout: 90000 });

test('chat presence: graceful shutdown (SIGTERM) of an instance: its users go offline at once (no 30 s wait); a user also elsewhere stays online', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 });
  const A = await startParleyd({ redis, env }), B = await startParleyd({ redis, env });
  const room = 'term-r', carol = `gcarol-${process.pid}`, dave = `gdave-${process.pid}`, erin = `gerin-${process.pid}`;
  const tok = mintToken(carol);
  const d = await connectAuthed(B, dave); await d.subscribe([room]);
  const e1 = await connectAuthed(B, erin); await e1.subscribe([room]);
  const e2 = await connectAuthed(A, erin);
  const c = await connectAuthed(A, carol);
  const seen = recordFrames(c, (j) => j.type === 'presence');
  await c.subscribe([room]);
  await sleep(1000);
  seen.length = 0;
  const t0 = Date.now();
  const ex = await B.stop('SIGTERM');
  assert(ex && !ex.killed, `B did not exit on SIGTERM: ${JSON.stringify(ex)}`);
  await until(() => presenceOf(seen, dave).length >= 1, 5000, `carol gets dave offline within 5 s of B's shutdown (${fmt(seen)})`);
  console.log(`  (dave reported offline ${((Date.now() - t0) / 1000).toFixed(1)} s after SIGTERM)`);
  checkPresenceFrame(presenceOf(seen, dave)[0], dave, 'offline');
  await expectOnline([A], dave, false, { token: tok, ms: 2000, step: 'after B shut down' });
  await sleep(GRACE);
  eq(presenceOf(seen, erin).length, 0, `events about erin, still on A: ${fmt(presenceOf(seen, erin))}`);
  eq(presenceOf(seen, dave).length, 1, `events about dave: ${fmt(presenceOf(seen, dave))}`);
  await expectOnline([A], erin, true, { token: tok, step: 'erin still on A' });
  await expectList(A, [carol, erin], { step: 'after B shut down' });
  assert(e2.open, 'erin\'s connection on A closed');
}, { timeout: 60000 });

// Presence changes are sent to Redis in one script call per shard and loop
// turn (src/chat.c): a storm of connections opening and closing together must
// still count every connection exactly, across two instances.
test('chat presence: a storm of 400 connections (100 users x 2 tabs x 2 instances) opening and closing at once keeps exact counts', async () => {
  const redis = await startRedis();
  const A = await startParleyd({ redis }), B = await startParleyd({ redis });
  const users = Array.from({ length: 100 }, (_, i) => `storm-${process.pid}-${i}`);
  const open = (srv) => Promise.all(users.flatMap((u) => [connectAuthed(srv, u), connectAuthed(srv, u)]));
  const [onA, onB] = await Promise.all([open(A), open(B)]);
  await until(async () => (await onlineUsers(A, { auth: API_KEY })).json?.count === users.length, 5000,
    'all 100 users online');
  for (const [srv, u] of [[A, users[0]], [B, users[99]]]) {
    eq(await connCount(redis, u, srv.serverId), 2, `${u}'s connections counted on ${srv.serverId}`);
  }

  // Close the first tab of every user on A and every tab on B, all at once: everyone is still online (A's second tabs).
  const closing = [...onA.filter((_, i) => i % 2 === 0), ...onB];
  for (const c of closing) c.close();
  await Promise.all(closing.map((c) => c.waitClose()));
  await until(async () => (await connCount(redis, users[50], B.serverId)) === 0, 5000,
    'B\'s connections uncounted');
  const r = await onlineUsers(B, { auth: API_KEY });
  eq(r.json && r.json.count, users.length, `online count with one tab left per user (${r.text.slice(0, 200)})`);
  for (const u of [users[0], users[50], users[99]]) {
    eq(await connCount(redis, u, A.serverId), 1, `${u}'s connections on A after closing one`);
  }

  // The last tabs close together: nobody is online.
  const rest = onA.filter((_, i) => i % 2 === 1);
  for (const c of rest) c.close();
  await Promise.all(rest.map((c) => c.waitClose()));
  await until(async () => (await onlineUsers(A, { auth: API_KEY })).json?.count === 0, 5000, 'nobody online');
  eq(await onlineCountInRedis(redis), 0, 'ws:online_users empty');
});
