// Presence and routing heal after Redis faults and early crashes (issue 10):
// instances re-announce their live connections when Redis comes back or
// forgot them, register before accepting anyone, and clean up after dead
// instances wherever their records are.
import {
  test, Redis, startRedis, startParleyd, startPostgres, connect, connectAuthed, dbEnv, recordFrames,
  userOnline, onlineUsers, redisCli, mintToken, newUser, freePort, until, sleep, eq, assert,
  current, httpRequest, API_KEY,
} from './lib.mjs';

const presenceAbout = (seen, user) => seen.filter((p) => p.user === user);

test('heal: Redis restarts empty under connected clients: presence, the online list and DM routing come back, with no presence events', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 });
  const A = await startParleyd({ redis, env }), B = await startParleyd({ redis, env });
  const room = 'heal-r';
  const alice = await connectAuthed(A, newUser('halice')); await alice.subscribe([room]);
  const bob = await connectAuthed(B, newUser('hbob')); await bob.subscribe([room]);
  const carol = await connectAuthed(A, newUser('hcarol'));
  const seen = recordFrames(carol, (j) => j.type === 'presence');
  await carol.subscribe([room]);
  await until(async () => (await onlineUsers(A)).json?.count === 3, 5000, 'three users online');
  await sleep(500);
  seen.length = 0;

  await redis.kill();
  await sleep(300);
  await redis.start(); // same port, no data
  for (const s of [A, B])
    await until(async () => (await httpRequest(s.port, 'GET', '/health')).status === 200, 15000, `/health 200 on ${s.serverId}`);
  // Without any client reconnecting:
  await until(async () => (await onlineUsers(A)).json?.count === 3, 10000, 'the three users online again');
  for (const u of [alice, bob, carol])
    eq((await userOnline(B, u.user)).json.online, true, `${u.user} online`);
  // A direct message to bob is routed to B and delivered live, not queued as if he were offline.
  alice.send({ type: 'message', to: bob.user, text: 'still here?', cid: 'dm-after-restart' });
  const dm = await bob.nextJson((j) => j.type === 'message' && j.cid === 'dm-after-restart', 10000, 'the DM, live');
  eq(dm.text, 'still here?', 'DM text');
  eq(await redisCli(redis, 'LLEN', `ws:offline:${bob.user}`), '0', 'nothing queued for bob as offline');
  // Room messages flow again.
  bob.send({ type: 'message', room, text: 'and the room' });
  await alice.nextJson((j) => j.type === 'message' && j.text === 'and the room', 10000);
  await sleep(1500);
  eq(presenceAbout(seen, alice.user).length + presenceAbout(seen, bob.user).length, 0,
    `presence events for users who never left: ${JSON.stringify(seen)}`);
  // The heal is exact: bob's last connection closing still reports him offline.
  bob.close(); await bob.waitClose();
  await until(() => presenceAbout(seen, bob.user).some((p) => p.status === 'offline'), 5000, 'bob offline after he closed');
  eq((await userOnline(A, bob.user)).json.online, false, 'bob online after closing');
}, { timeout: 90000 });

test('heal: parleyd starts while Redis is down; a user who connects meanwhile is online once Redis is up, and ids come from Redis', async () => {
  const port = await freePort();
  const redis = new Redis(port);
  current.procs.push(redis);
  const srv = await startParleyd({ redisUrl: redis.url, waitHealthy: false });
  const user = newUser('early');
  const c = await connect(srv, { token: mintToken(user) });
  await c.nextJson('authenticated', 5000);
  await sleep(500);
  await redis.start();
  await until(async () => (await httpRequest(srv.port, 'GET', '/health')).status === 200, 15000, '/health 200');
  await until(async () => (await userOnline(srv, user)).json?.online === true, 10000, `${user} online`);
  // Each shard took its id node from Redis when it connected (2 shards: nodes 0 and 1).
  eq(await redisCli(redis, 'GET', 'parley:id_nodes'), '2', 'parley:id_nodes after two shards took one each');
  await c.subscribe(['ids']);
  c.send({ type: 'message', room: 'ids', text: 'x' });
  const m = await c.nextJson('message', 10000);
  const node = Number((BigInt(m.id) >> 12n) & 1023n);
  assert(node === 0 || node === 1, `message id ${m.id} has node ${node}, not one Redis handed out`);
  assert(!/at random/.test(srv.log()), 'an id node was chosen at random');
}, { timeout: 60000 });

test('heal: an instance killed in its first second is cleaned up by the survivors (registered before accepting)', async () => {
  const redis = await startRedis();
  const A = await startParleyd({ redis });
  const room = 'early-death';
  const carol = await connectAuthed(A, newUser('ecarol'));
  const seen = recordFrames(carol, (j) => j.type === 'presence');
  await carol.subscribe([room]);
  const t0 = Date.now();
  const B = await startParleyd({ redis });
  const dave = await connectAuthed(B, newUser('edave'));
  dave.send({ type: 'subscribe', rooms: [room] });
  await dave.nextJson('subscribed', 5000);
  B.child.kill('SIGKILL');
  console.log(`  (killed ${Date.now() - t0} ms after starting it)`);
  assert(await B.waitExit(5000), 'B did not die');
  await until(() => presenceAbout(seen, dave.user).some((p) => p.status === 'offline'), 35000,
    `carol gets dave offline (${JSON.stringify(seen)})`);
  eq(await redisCli(redis, 'SISMEMBER', 'ws:online_users', dave.user), '0', 'dave in ws:online_users');
}, { timeout: 60000 });

test('heal: users of an instance missing from ws:servers (left by an older version) are cleaned up', async () => {
  const redis = await startRedis();
  const A = await startParleyd({ redis });
  const ghost = `ghost-${process.pid}`, gu = newUser('ghostuser');
  // What a version that counted per instance ("conn:<server>") and never listed itself left.
  await redisCli(redis, 'SADD', `ws:server_users:${ghost}`, gu);
  await redisCli(redis, 'HSET', `ws:user:${gu}`, `conn:${ghost}`, '1');
  await redisCli(redis, 'SADD', 'ws:online_users', gu);
  eq((await userOnline(A, gu)).json.online, true, 'the ghost user online at first');
  await until(async () => (await userOnline(A, gu)).json.online === false, 25000, 'the ghost user offline');
  eq(await redisCli(redis, 'EXISTS', `ws:server_users:${ghost}`), '0', 'the ghost instance\'s set');
}, { timeout: 60000 });

test('heal: Redis flushed (FLUSHALL) without a reconnect: the heartbeat notices and the shards re-announce', async () => {
  const redis = await startRedis();
  const A = await startParleyd({ redis });
  const us = [await connectAuthed(A), await connectAuthed(A), await connectAuthed(A)];
  await until(async () => (await onlineUsers(A, { auth: API_KEY })).json?.count === 3, 5000, 'three online');
  await redisCli(redis, 'FLUSHALL');
  eq((await onlineUsers(A)).json.count, 0, 'online right after FLUSHALL');
  await until(async () => (await onlineUsers(A)).json?.count === 3, 15000, 'three online again');
  assert(/re-announce/.test(A.log()), 'no log line about re-announcing');
  for (const c of us) assert(c.open, 'a client was disconnected');
}, { timeout: 60000 });
