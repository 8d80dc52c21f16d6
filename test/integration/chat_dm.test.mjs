// Direct messages (issue 5): to every connection of the recipient and the
// sender on every instance, stored and acked, one deterministic dm: room per
// pair; offline recipients get them on their next connection, once; DMs are
// published only on the channels of instances that have the recipient or sender.
import {
  test, startRedis, startParleyd, startPostgres, connect, connectAuthed, dbEnv, track, storedMessages, md5,
  redisMonitor, redisCli, mintToken, httpRequest, assert, eq, sleep, until,
} from './lib.mjs';

const DM_ROOM = /^dm:[0-9a-f]{32}$/;
const dmsOf = (c) => c.track.msgs.filter((m) => m.to !== undefined || /^dm:/.test(m.room || ''));
const brief = (list) => JSON.stringify(list.map((m) => `${m.seq}:${m.from}->${m.to}:${m.cid}`));

function checkDm(m, { from, to, text, cid, seq, room }, who) {
  assert(m.raw.startsWith(`{"type":"message","seq":${seq},`), `${who}: DM frame must start with {"type":"message","seq":${seq},: ${m.raw}`);
  assert(DM_ROOM.test(m.room), `${who}: DM room must be dm: + 32 hex digits: ${m.raw}`);
  if (room) eq(m.room, room, `${who}: DM room in ${m.raw}`);
  eq(m.from, from, `${who}: from in ${m.raw}`); eq(m.to, to, `${who}: to in ${m.raw}`);
  eq(m.text, text, `${who}: text in ${m.raw}`); eq(m.cid, cid, `${who}: cid in ${m.raw}`);
  assert(typeof m.id === 'string' && /^\d+$/.test(m.id), `${who}: id must be a decimal string: ${m.raw}`);
  assert(Number.isInteger(m.ts) && Math.abs(m.ts - Date.now()) < 60000, `${who}: ts in ${m.raw}`);
}

test('chat dm: to both connections of the recipient and the sender\'s other connection across instances, acked, stored, same room both ways; bad targets; dm rooms cannot be subscribed', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 });
  const A = await startParleyd({ redis, env }), B = await startParleyd({ redis, env });
  const alice = `dalice-${process.pid}`, bob = `dbob-${process.pid}`;
  const a1 = await connectAuthed(A, alice), a2 = await connectAuthed(B, alice);
  const b1 = await connectAuthed(A, bob), b2 = await connectAuthed(B, bob);
  const o = await connectAuthed(A, `doscar-${process.pid}`), o2 = await connectAuthed(B, `doscar2-${process.pid}`); // bystanders
  const all = [a1, a2, b1, b2, o, o2];
  for (const c of all) track(c);
  await sleep(500);

  a1.send({ type: 'message', to: bob, text: 'hi', cid: 'dm-1' });
  await until(() => (a1.track.acks.get('dm-1') || []).length >= 1 || a1.track.errors.length, 8000, 'ack for dm-1');
  eq(a1.track.errors.length, 0, `errors for dm-1: ${JSON.stringify(a1.track.errors)}`);
  await until(() => [a1, a2, b1, b2].every((c) => dmsOf(c).length >= 1), 5000,
    `dm-1 at both bob connections and both alice connections (${[a1, a2, b1, b2].map((c) => brief(dmsOf(c))).join(' ')})`);
  const first = dmsOf(b1)[0];
  const spec1 = { from: alice, to: bob, text: 'hi', cid: 'dm-1', seq: 1, room: first.room };
  for (const [c, who] of [[b1, 'bob on A'], [b2, 'bob on B'], [a1, 'alice (sender, on A)'], [a2, 'alice on B']]) {
    checkDm(dmsOf(c)[0], spec1, who);
    eq(dmsOf(c)[0].id, first.id, `${who}: id of dm-1`);
  }
  const ack = a1.track.acks.get('dm-1')[0];
  eq(ack.id, first.id, 'ack id of dm-1'); eq(ack.seq, 1, 'ack seq of dm-1');

  // bob replies (from B): the same room, seq 2
  b2.send({ type: 'message', to: alice, text: 'hello back', cid: 'dm-2' });
  await until(() => (b2.track.acks.get('dm-2') || []).length >= 1 || b2.track.errors.length, 8000, 'ack for dm-2');
  eq(b2.track.errors.length, 0, `errors for dm-2: ${JSON.stringify(b2.track.errors)}`);
  await until(() => [a1, a2, b1, b2].every((c) => dmsOf(c).length >= 2), 5000,
    `dm-2 everywhere (${[a1, a2, b1, b2].map((c) => brief(dmsOf(c))).join(' ')})`);
  const spec2 = { from: bob, to: alice, text: 'hello back', cid: 'dm-2', seq: 2, room: first.room };
  for (const [c, who] of [[b1, 'bob on A'], [b2, 'bob on B (sender)'], [a1, 'alice on A'], [a2, 'alice on B']]) checkDm(dmsOf(c)[1], spec2, who);
  eq(b2.track.acks.get('dm-2')[0].seq, 2, 'ack seq of dm-2');
  eq(b2.track.acks.get('dm-2')[0].id, dmsOf(a1)[1].id, 'ack id of dm-2');

  await sleep(1000);
  for (const [c, who] of [[b1, 'bob on A'], [b2, 'bob on B'], [a1, 'alice on A'], [a2, 'alice on B']]) {
    eq(brief(dmsOf(c)), brief([spec1, spec2]), `${who}: DMs received (each once)`);
    eq(c.track.msgs.length, 2, `${who}: messages received`);
  }
  for (const c of [o, o2]) eq(c.track.msgs.length, 0, `bystander ${c.user} got ${brief(c.track.msgs)}`);
  eq(a2.track.ackCount, 0, 'acks at the sender\'s other connection');
  eq(a1.track.acks.get('dm-1').length, 1, 'acks for dm-1');

  const rows = await storedMessages(pg, first.room);
  eq(JSON.stringify(rows.map((r) => [r.seq, r.sender, r.cid, r.md5])), JSON.stringify([[1, alice, 'dm-1', md5('hi')], [2, bob, 'dm-2', md5('hello back')]]), 'stored DMs');
  eq(rows[0].id, first.id, 'stored id of dm-1');

  // A resend of dm-1 is not delivered again and gets the same ack.
  a1.send({ type: 'message', to: bob, text: 'hi', cid: 'dm-1' });
  await until(() => a1.track.acks.get('dm-1').length >= 2, 5000, 'second ack for the resent dm-1');
  eq(a1.track.acks.get('dm-1')[1].id, first.id, 'resent dm-1: ack id');
  await sleep(700);
  eq(dmsOf(b1).length, 2, `bob after a resend of dm-1: ${brief(dmsOf(b1))}`);

  // Another pair has another room.
  const carol = `dcarol-${process.pid}`;
  const c1 = await connectAuthed(B, carol); track(c1);
  a1.send({ type: 'message', to: carol, text: 'x', cid: 'dm-c' });
  await until(() => dmsOf(c1).length >= 1, 5000, 'carol gets dm-c');
  checkDm(dmsOf(c1)[0], { from: alice, to: carol, text: 'x', cid: 'dm-c', seq: 1 }, 'carol');
  assert(dmsOf(c1)[0].room !== first.room, 'alice-carol and alice-bob share a DM room');

  // Bad targets (a fresh, untracked connection so errors are not consumed).
  const a3 = await connectAuthed(A, alice);
  const bad = [[alice, 'self'], ['', 'empty'], ['x'.repeat(129), '129 bytes'], ['bo\u0001b', 'a control character'], [42, 'a number'], [null, 'null']];
  for (const [to, what] of bad) {
    a3.send({ type: 'message', to, text: 'nope', cid: `bad-${what}` });
    await a3.expectError('bad_request', 5000, `bad-${what}`).catch((e) => { throw new Error(`DM to ${what}: ${e.message}`); });
  }
  // dm: rooms cannot be subscribed, not even by their own members.
  for (const [c, room, who] of [[a3, first.room, 'alice (member)'], [a3, 'dm:' + '0'.repeat(32), 'alice (other dm room)']]) {
    c.send({ type: 'subscribe', rooms: [room] });
    await c.expectError('forbidden').catch((e) => { throw new Error(`subscribing ${who} to ${room}: ${e.message}`); });
  }
  const o3 = await connectAuthed(B, `doscar3-${process.pid}`);
  o3.send({ type: 'subscribe', rooms: [first.room] });
  await o3.expectError('forbidden').catch((e) => { throw new Error(`an outsider subscribing to ${first.room}: ${e.message}`); });
  await sleep(500);
  eq(dmsOf(b1).length, 2, `bob after the invalid DMs: ${brief(dmsOf(b1))}`);
  eq((await storedMessages(pg)).filter((r) => r.sender === alice && /^bad-/.test(r.cid || '')).length, 0, 'invalid DMs stored');
}, { timeout: 60000 });

test('chat dm: an offline recipient gets the waiting DMs right after authenticated, in order, once', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 });
  const A = await startParleyd({ redis, env }), B = await startParleyd({ redis, env });
  const alice = `oalice-${process.pid}`, carol = `ocarol-${process.pid}`;
  const a = await connectAuthed(A, alice); track(a);
  for (let i = 1; i <= 3; i++) a.send({ type: 'message', to: carol, text: `off ${i}`, cid: `off-${i}` });
  await until(() => a.track.ackCount >= 3 || a.track.errors.length, 8000, '3 acks for DMs to an offline user');
  eq(a.track.errors.length, 0, `errors: ${JSON.stringify(a.track.errors)}`);
  for (let i = 1; i <= 3; i++) eq(a.track.acks.get(`off-${i}`)[0].seq, i, `ack seq of off-${i}`);
  await until(() => a.track.msgs.length >= 3, 3000, 'alice gets her own 3 DMs');
  await sleep(300);

  // carol connects (on the other instance): authenticated, then exactly the 3, in order.
  const connectRecording = async (server) => {
    const c = await connect(server, { token: mintToken(carol) });
    c.keepAll = true; c.user = carol;
    return c;
  };
  // Frames still queued but not in c.all arrived before keepAll was set: they come first.
  const frames = (c) => [...c.frames.filter((f) => !c.all.includes(f)), ...c.all].map((f) => f.json).filter(Boolean);
  const c1 = await connectRecording(B);
  await until(() => frames(c1).filter((j) => j.type === 'message').length >= 3, 5000,
    `carol gets 3 waiting DMs (frames so far: ${JSON.stringify(frames(c1).map((j) => j.type))})`).catch((e) => {
    throw new Error(`${e.message}; frames: ${JSON.stringify(frames(c1)).slice(0, 400)}`);
  });
  await sleep(1000);
  const got = frames(c1);
  eq(got[0] && got[0].type, 'authenticated', 'first frame');
  const seq = got.slice(1, 4).map((j) => `${j.type}:${j.seq}:${j.cid}:${j.from}:${j.to}:${j.text}`);
  eq(JSON.stringify(seq), JSON.stringify([1, 2, 3].map((i) => `message:${i}:off-${i}:${alice}:${carol}:off ${i}`)), 'the 3 frames right after authenticated');
  eq(got.filter((j) => j.type === 'message').length, 3, `messages to carol on her first connection: ${JSON.stringify(got).slice(0, 500)}`);
  const room = got[1].room;
  assert(DM_ROOM.test(room), `DM room ${room}`);
  assert(got.slice(1, 4).every((j) => j.room === room && j.id === a.track.acks.get(j.cid)[0].id), 'waiting DMs: room and ids as acked');

  // Reconnecting gives nothing more (also on the other instance).
  c1.close(); await c1.waitClose();
  await sleep(500);
  for (const server of [B, A]) {
    const c = await connectRecording(server);
    await sleep(1500);
    const more = frames(c).filter((j) => j.type === 'message');
    eq(more.length, 0, `messages to carol on reconnecting to ${server.serverId}: ${JSON.stringify(more)}`);
    c.close(); await c.waitClose();
  }
  // A DM while carol is online arrives live and does not wait for her next connection.
  const c3 = await connectRecording(A);
  await sleep(300);
  a.send({ type: 'message', to: carol, text: 'live', cid: 'off-4' });
  await until(() => frames(c3).some((j) => j.type === 'message'), 5000, 'carol gets a DM live');
  const live = frames(c3).filter((j) => j.type === 'message');
  eq(JSON.stringify(live.map((j) => `${j.seq}:${j.cid}`)), JSON.stringify(['4:off-4']), 'live DM to carol');
  c3.close(); await c3.waitClose();
  await sleep(500);
  const c4 = await connectRecording(B);
  await sleep(1500);
  eq(frames(c4).filter((j) => j.type === 'message').length, 0, 'messages to carol after the live one, on reconnecting');
  const rows = await storedMessages(pg, room);
  eq(JSON.stringify(rows.map((r) => `${r.seq}:${r.cid}`)), JSON.stringify(['1:off-1', '2:off-2', '3:off-3', '4:off-4']), 'stored DMs to carol');
}, { timeout: 60000 });

test('chat dm: published only on the server:{id} channels of instances with the recipient or sender (three instances, MONITOR of every master)', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 });
  const A = await startParleyd({ redis, env }), B = await startParleyd({ redis, env }), C = await startParleyd({ redis, env });
  const alice = `ralice-${process.pid}`, bob = `rbob-${process.pid}`, dave = `rdave-${process.pid}`;
  const a = await connectAuthed(A, alice), b = await connectAuthed(B, bob);
  track(a); track(b);
  await sleep(500);

  // Each instance listens on its own server:{id} channel (on a cluster, the shard channel
  // server:{s:<id>} on the master of its slot: every master is asked, and watched below).
  const masters = redis.isCluster ? (await redis.masters()).map((m) => m.port) : [redis.port];
  const listCmd = redis.isCluster ? ['PUBSUB', 'SHARDCHANNELS', '*server:*'] : ['PUBSUB', 'CHANNELS', '*server:*'];
  const chans = [];
  const node = (port) => (redis.isCluster ? { port, isCluster: false } : redis);
  for (const port of masters) chans.push(...(await redisCli(node(port), ...listCmd)).split('\n').filter(Boolean));
  const chanOf = {};
  for (const s of [A, B, C]) {
    const mine = chans.filter((ch) => ch === `server:${s.serverId}` || ch === `server:{s:${s.serverId}}` || ch.endsWith(`:server:${s.serverId}`));
    eq(mine.length, 1, `channels for ${s.serverId} among ${JSON.stringify(chans)}`);
    chanOf[s.serverId] = mine[0];
    if (redis.isCluster) continue; // SHARDCHANNELS lists only channels with a subscriber
    const n = (await redisCli(redis, 'PUBSUB', 'NUMSUB', mine[0])).split('\n');
    assert(Number(n[1]) >= 1, `PUBSUB NUMSUB ${mine[0]}: ${n.join(' ')}`);
  }
  const statusC0 = (await httpRequest(C.port, 'GET', '/api/websocket/status')).json;

  const mons = await Promise.all(masters.map((port) => redisMonitor(node(port))));
  const mon = { publishes: () => mons.flatMap((m) => m.publishes()), stop: () => Promise.all(mons.map((m) => m.stop())) };
  const marker = (k) => `mk${process.pid}x${k}`;
  const pubsWith = (k) => mon.publishes().filter((p) => p.payload.includes(marker(k)));
  const channelsOf = (k) => [...new Set(pubsWith(k).map((p) => p.channel))].sort();
  const inv = Object.fromEntries(Object.entries(chanOf).map(([id, ch]) => [ch, id]));
  const named = (k) => channelsOf(k).map((ch) => inv[ch] ? `server:${inv[ch] === A.serverId ? 'A' : inv[ch] === B.serverId ? 'B' : 'C'}` : ch);

  // 1. alice (A) -> bob (B): on B's channel, maybe A's (alice's own copy), never C's or a room channel.
  a.send({ type: 'message', to: bob, text: marker(1), cid: 'rt-1' });
  await until(() => b.track.msgs.length >= 1 && a.track.msgs.length >= 1 && a.track.ackCount >= 1, 5000, 'DM 1 delivered to bob and alice, acked');
  await sleep(800);
  let ch = named(1);
  assert(ch.includes('server:B'), `DM to bob (on B) must be published on server:B's channel; published on ${JSON.stringify(ch)}`);
  assert(ch.every((x) => x === 'server:A' || x === 'server:B'), `DM alice(A) -> bob(B) published on ${JSON.stringify(ch)} (only server:A / server:B allowed)`);
  eq(pubsWith(1).filter((p) => p.channel === chanOf[B.serverId]).length, 1, 'PUBLISHes of DM 1 on server:B');

  // 2. bob also connects on C: the next DM goes to B and C.
  const b2 = await connectAuthed(C, bob); track(b2);
  await sleep(500);
  a.send({ type: 'message', to: bob, text: marker(2), cid: 'rt-2' });
  await until(() => b.track.msgs.length >= 2 && b2.track.msgs.length >= 1, 5000, 'DM 2 at both of bob\'s connections');
  await sleep(800);
  ch = named(2);
  assert(ch.includes('server:B') && ch.includes('server:C'), `DM to bob (on B and C) must be published on both channels; published on ${JSON.stringify(ch)}`);
  b2.close(); await b2.waitClose();
  await sleep(1000);

  // 3. bob left C: C gets nothing again.
  a.send({ type: 'message', to: bob, text: marker(3), cid: 'rt-3' });
  await until(() => b.track.msgs.length >= 3, 5000, 'DM 3 at bob');
  await sleep(800);
  ch = named(3);
  assert(ch.includes('server:B') && ch.every((x) => x === 'server:A' || x === 'server:B'), `DM 3 (bob only on B again) published on ${JSON.stringify(ch)}`);

  // 4. to an offline user: no instance's channel but (at most) the sender's.
  a.send({ type: 'message', to: dave, text: marker(4), cid: 'rt-4' });
  await until(() => a.track.acks.has('rt-4'), 5000, 'ack for DM 4 (to an offline user)');
  await sleep(800);
  ch = named(4);
  assert(ch.every((x) => x === 'server:A'), `DM to an offline user published on ${JSON.stringify(ch)} (at most server:A, for alice's own copies)`);

  // C delivered nothing of 1, 3, 4 (its delivered counter moved only by DM 2's one copy, at most).
  const statusC1 = (await httpRequest(C.port, 'GET', '/api/websocket/status')).json;
  assert(statusC1.delivered - statusC0.delivered <= 1, `C delivered ${statusC1.delivered - statusC0.delivered} frames (only DM 2's copy to bob was for it)`);
  for (const k of [1, 3, 4]) assert(!C.log().includes(marker(k)), `C's log mentions DM ${k}`);
  await mon.stop();
}, { timeout: 60000 });

test('chat dm: past PARLEY_OFFLINE_MAX waiting DMs the oldest are dropped from the queue (still stored)', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = dbEnv(pg, { PARLEY_OPEN_ROOMS: 1, PARLEY_OFFLINE_MAX: 3 });
  const A = await startParleyd({ redis, env }), B = await startParleyd({ redis, env });
  const alice = `qalice-${process.pid}`, carol = `qcarol-${process.pid}`;
  const a = await connectAuthed(A, alice); track(a);
  for (let i = 1; i <= 5; i++) a.send({ type: 'message', to: carol, text: `q ${i}`, cid: `q-${i}` });
  await until(() => a.track.ackCount >= 5 || a.track.errors.length, 8000, '5 acks');
  eq(a.track.errors.length, 0, `errors: ${JSON.stringify(a.track.errors)}`);
  await sleep(300);
  const c = await connect(B, { token: mintToken(carol) });
  c.keepAll = true;
  const frames = () => [...c.frames.filter((f) => !c.all.includes(f)), ...c.all].map((f) => f.json).filter(Boolean);
  await until(() => frames().filter((j) => j.type === 'message').length >= 3, 5000, `waiting DMs (${JSON.stringify(frames().map((j) => j.type))})`);
  await sleep(1000);
  const got = frames();
  eq(got[0] && got[0].type, 'authenticated', 'first frame');
  eq(JSON.stringify(got.slice(1).map((j) => `${j.type}:${j.seq}:${j.cid}`)), JSON.stringify(['message:3:q-3', 'message:4:q-4', 'message:5:q-5']),
    'frames after authenticated with PARLEY_OFFLINE_MAX=3 and 5 waiting (the newest 3, oldest first)');
  const rows = await storedMessages(pg, got[1].room);
  eq(rows.map((r) => r.cid).join(','), 'q-1,q-2,q-3,q-4,q-5', 'all 5 stored');
}, { timeout: 60000 });
