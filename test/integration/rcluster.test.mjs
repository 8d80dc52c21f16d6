// parleyd on a Redis Cluster (PARLEY_REDIS_CLUSTER=1, issue 15): a real local cluster of 3
// masters with 1 replica each (deploy/dev/redis-cluster.sh), real parleyd instances, the `ws`
// client. Room traffic, presence, typing and read receipts cross instances through sharded
// Pub/Sub; a reshard of a busy room's slot, moved by redis-cli --cluster reshard while clients
// send, and the death of the room's master (its replica takes over), lose and duplicate nothing.
import {
  test, assert, eq, RedisCluster, current, startParleyd, startPostgres, connectAuthed, newUser,
  setMember, track, seqProblems, storedMessages, dbEnv, runCmd, sleep, until, keySlot, httpRequest,
} from './lib.mjs';

async function startCluster() {
  const rc = new RedisCluster();
  current.procs.push(rc);
  return rc.start();
}

// Send n messages with cids, at most `window` unacked; a refusal (unavailable, not_stored) is
// sent again with the same cid after 100 ms, as a client library does. Resolves with the acks
// by cid once all n are acked.
// With `to`, direct messages to that user instead (`room` then only names them in errors).
// `pace`: ms between an ack and the next send (0: at once).
function sendResending(c, room, n, { window = 20, prefix = `${c.user}-${Date.now().toString(36)}`, ms = 60000, to = null, pace = 0 } = {}) {
  const t = c.track;
  return new Promise((resolve, reject) => {
    let sent = 0, acked = 0, resent = 0;
    const pending = new Map();
    const timer = setTimeout(() => reject(new Error(`${room}: ${acked}/${n} acked after ${ms} ms (${resent} resent); last errors ${JSON.stringify(t.errors.slice(-3))}`)), ms);
    const send = (cid, i) => c.send(to ? { type: 'message', to, text: `${prefix} #${i}`, cid } : { type: 'message', room, text: `${prefix} #${i}`, cid });
    const pump = () => {
      while (sent - acked < window && sent < n) {
        const cid = `${prefix}-${sent}`;
        pending.set(cid, sent);
        send(cid, sent++);
      }
    };
    const prev = t.onEvent;
    t.onEvent = (kind, j) => {
      if (prev) prev(kind, j);
      if (!pending.has(j.cid)) return;
      if (kind === 'error') {
        if (j.code !== 'unavailable' && j.code !== 'not_stored') { clearTimeout(timer); reject(new Error(`${room}: ${JSON.stringify(j)}`)); return; }
        resent++;
        const i = pending.get(j.cid);
        setTimeout(() => send(j.cid, i), 100);
        return;
      }
      if (kind !== 'ack') return;
      pending.delete(j.cid);
      if (++acked === n) { clearTimeout(timer); t.onEvent = prev; resolve({ resent }); } else if (pace) setTimeout(pump, pace); else pump();
    };
    pump();
  });
}

test('rcluster: two instances on a Redis Cluster: messages acked and delivered once in order, a catch-up by seq, typing, read receipts, presence online and offline', async () => {
  const rc = await startCluster();
  const pg = await startPostgres();
  const [a, b] = [await startParleyd({ redis: rc, env: dbEnv(pg) }), await startParleyd({ redis: rc, env: dbEnv(pg) })];
  const room = `rc-basic-${process.pid}`;
  const [u, v, w] = [newUser('u'), newUser('v'), newUser('w')];
  for (const x of [u, v, w]) eq((await setMember(a, 'PUT', room, x)).status, 200, 'membership');
  const c1 = await connectAuthed(a, u), c2 = await connectAuthed(b, v);
  track(c1); track(c2);
  await c1.subscribe([room]); await c2.subscribe([room]);
  const { resent } = await sendResending(c1, room, 200);
  eq(resent, 0, 'nothing refused on a healthy cluster');
  await until(() => c2.track.rooms.get(room)?.length >= 200 && c1.track.rooms.get(room)?.length >= 200, 10000, 'live copies');
  for (const [c, who] of [[c1, 'sender'], [c2, 'the other instance']]) {
    const p = seqProblems(c.track.rooms.get(room), 1, 200, who);
    assert(p.length === 0, p.join('; '));
  }
  eq((await storedMessages(pg, room)).length, 200, 'stored');
  // A late joiner on the other instance catches up from seq 150 (the room's stream).
  const c3 = await connectAuthed(b, w);
  track(c3);
  c3.send({ type: 'subscribe', rooms: [room], since: { [room]: 150 } });
  const sub = await c3.nextJson('subscribed', 5000);
  eq(sub.seq, 200, 'subscribed at the room seq');
  await until(() => c3.track.rooms.get(room)?.length >= 50, 5000, 'catch-up');
  const p = seqProblems(c3.track.rooms.get(room), 151, 200, 'late joiner');
  assert(p.length === 0, p.join('; '));
  // Presence online of w reached both instances' members.
  await c1.nextJson((j) => j.type === 'presence' && j.user === w && j.status === 'online', 5000);
  c2.send({ type: 'typing_start', room });
  const ty = await c1.nextJson('typing_start', 5000);
  eq(ty.user, v, 'typing from the other instance');
  c1.send({ type: 'read', room, seq: 120 });
  const rr = await c2.nextJson('read_receipt', 5000);
  eq(`${rr.user}:${rr.seq}`, `${u}:120`, 'read receipt');
  c2.close();
  await c1.nextJson((j) => j.type === 'presence' && j.user === v && j.status === 'offline', 5000);
  // The cluster's keys carry their hash tags (docs/redis.md).
  eq(await rc.cli('GET', `parley:{r:${room}}:seq`), '200', 'room seq key');
  eq(await rc.cli('HGET', `ws:{r:${room}}:read`, u), '120', 'read position key');
  assert(/conn:/.test(await rc.cli('HKEYS', `ws:{u:${u}}:user`)), 'user hash counts the connection');
  eq(await rc.cli('SISMEMBER', `ws:{o:${keySlot(u) % 64}}:online`, u), '1', 'online bucket');
  // The routers' slot map reads show in /metrics; nothing was given up on a healthy cluster.
  const m = (await httpRequest(a.port, 'GET', '/metrics')).text;
  const ev = (e) => Number((m.match(new RegExp(`^parley_redis_cluster_events_total\\{event="${e}"\\} (\\d+)`, 'm')) || [])[1]);
  assert(ev('map_read') >= 1, `map reads in /metrics: ${ev('map_read')}`);
  eq(ev('gave_up'), 0, 'commands given up');
});

test('rcluster: a busy room whose slot redis-cli --cluster reshard moves while clients on two instances send: every acked message stored and delivered once, in seq order', async () => {
  const rc = await startCluster();
  const pg = await startPostgres();
  const [a, b] = [await startParleyd({ redis: rc, env: dbEnv(pg) }), await startParleyd({ redis: rc, env: dbEnv(pg) })];
  // A room whose slot is the first of its master's range: `reshard --cluster-slots 1` moves it
  // (redis-cli takes a source's slots from its lowest).
  const masters = await rc.masters();
  let room = null, from = null;
  for (let i = 0; !room && i < 1000000; i++) {
    const m = masters.find((x) => x.first === keySlot(`{r:rc-reshard-${i}}`));
    if (m) { room = `rc-reshard-${i}`; from = m; }
  }
  assert(room, 'a room at the start of a master\'s slots');
  eq((await rc.ownerOf(`{r:${room}}`)).id, from.id, 'the room\'s master');
  const to = masters.find((m) => m.id !== from.id);
  const users = [newUser('s1'), newUser('s2'), newUser('r1'), newUser('r2')];
  for (const x of users) eq((await setMember(a, 'PUT', room, x)).status, 200, 'membership');
  const [s1, s2, r1, r2] = [await connectAuthed(a, users[0]), await connectAuthed(b, users[1]), await connectAuthed(a, users[2]), await connectAuthed(b, users[3])];
  for (const c of [s1, s2, r1, r2]) { track(c); await c.subscribe([room]); }
  // Busy: 1,500 messages first (each leaves a cid record in the slot), then 1,000 more from
  // each sender while the slot moves.
  await sendResending(s1, room, 1500, { window: 50 });
  const sending = Promise.all([sendResending(s1, room, 1000, { window: 10 }), sendResending(s2, room, 1000, { window: 10 })]);
  await sleep(300);
  const t0 = Date.now();
  const r = await runCmd('redis-cli', ['--cluster', 'reshard', `127.0.0.1:${from.port}`, '--cluster-from', from.id, '--cluster-to', to.id,
    '--cluster-slots', '1', '--cluster-yes'], { timeout: 60000 });
  eq(r.code, 0, `reshard: ${r.stderr}`);
  const movedMs = Date.now() - t0;
  const after = await rc.ownerOf(`{r:${room}}`);
  eq(after.id, to.id, 'the room\'s slot moved');
  const [x1, x2] = await sending;
  const total = 3500;
  for (const [c, who] of [[r1, 'receiver on a'], [r2, 'receiver on b'], [s1, 'sender 1'], [s2, 'sender 2']]) {
    await until(() => (c.track.rooms.get(room)?.length || 0) >= total, 15000, `${who}: ${total} messages`).catch(() => {});
    const p = seqProblems(c.track.rooms.get(room), 1, total, who);
    assert(p.length === 0, p.join('; '));
  }
  const stored = await storedMessages(pg, room);
  eq(stored.length, total, 'stored once each');
  eq(new Set(stored.map((m) => m.cid)).size, total, 'distinct cids stored');
  console.log(`  (slot ${from.first} moved ${from.port} -> ${to.port} in ${movedMs} ms under load; resent ${x1.resent + x2.resent})`);
});

test('rcluster: the master of a busy room\'s slot killed (kill -9) while clients on two instances send: its replica takes over, every acked message is stored and delivered once, in seq order, seqs without a gap', async () => {
  const rc = await startCluster();
  const pg = await startPostgres();
  const [a, b] = [await startParleyd({ redis: rc, env: dbEnv(pg) }), await startParleyd({ redis: rc, env: dbEnv(pg) })];
  const room = `rc-failover-${process.pid}`;
  const owner = await rc.ownerOf(`{r:${room}}`);
  assert(owner.replica, 'the room\'s master has a replica');
  const users = [newUser('s1'), newUser('s2'), newUser('r1'), newUser('r2')];
  for (const x of users) eq((await setMember(a, 'PUT', room, x)).status, 200, 'membership');
  const [s1, s2, r1, r2] = [await connectAuthed(a, users[0]), await connectAuthed(b, users[1]), await connectAuthed(a, users[2]), await connectAuthed(b, users[3])];
  for (const c of [s1, s2, r1, r2]) { track(c); await c.subscribe([room]); }
  await sendResending(s1, room, 300, { window: 20 });
  const sending = Promise.all([sendResending(s1, room, 700, { window: 10, ms: 90000 }), sendResending(s2, room, 700, { window: 10, ms: 90000 })]);
  await sleep(400);
  const t0 = Date.now();
  rc.killNode(owner.port);
  await until(async () => (await rc.ownerOf(`{r:${room}}`).catch(() => null))?.port === owner.replica.port, 20000, 'the replica serves the slot');
  const tookOver = Date.now() - t0;
  const [x1, x2] = await sending;
  const total = 1700;
  const stored = await storedMessages(pg, room);
  eq(stored.length, total, 'every message stored once');
  eq(new Set(stored.map((m) => m.cid)).size, total, 'distinct cids');
  const seqs = stored.map((m) => m.seq);
  eq(`${seqs[0]}..${seqs[seqs.length - 1]}`, `1..${total}`, 'stored seqs without a gap');
  for (const [c, who] of [[r1, 'receiver on a'], [r2, 'receiver on b'], [s1, 'sender 1'], [s2, 'sender 2']]) {
    await until(() => (c.track.rooms.get(room)?.length || 0) >= total, 20000, `${who}: ${total} messages`).catch(() => {});
    const p = seqProblems(c.track.rooms.get(room), 1, total, who);
    assert(p.length === 0, p.join('; '));
  }
  // What each receiver got for a seq is what was stored for it.
  const byseq = new Map(stored.map((m) => [m.seq, m.cid]));
  for (const c of [r1, r2]) for (const m of c.track.rooms.get(room)) eq(m.cid, byseq.get(m.seq), `seq ${m.seq} at ${c.user}`);
  console.log(`  (replica serving ${tookOver} ms after the kill; resent ${x1.resent + x2.resent})`);
}, { timeout: 180000 });

test('rcluster: direct messages while the master of the recipient instance\'s slot is killed (kill -9): every acked DM reaches the recipient, in seq order (its instance reads its log back after the failover)', async () => {
  const rc = await startCluster();
  const pg = await startPostgres();
  const [a, b] = [await startParleyd({ redis: rc, env: dbEnv(pg) }), await startParleyd({ redis: rc, env: dbEnv(pg) })];
  const owner = await rc.ownerOf(`{s:${b.serverId}}`);
  assert(owner.replica, 'the master of the recipient instance\'s slot has a replica');
  const alice = newUser('dma'), bob = newUser('dmb');
  const sa = await connectAuthed(a, alice), rb = await connectAuthed(b, bob);
  track(sa); track(rb);
  await sendResending(sa, 'dm', 50, { to: bob, window: 10 });
  await until(() => rb.track.msgs.length >= 50, 10000, 'the first 50 DMs at bob');
  const dm = rb.track.msgs[0].room;
  assert(/^dm:[0-9a-f]{32}$/.test(dm), `a conversation's room: ${dm}`);
  const sending = sendResending(sa, 'dm', 250, { to: bob, window: 2, pace: 15, ms: 90000 });
  await sleep(300);
  rc.killNode(owner.port);
  await until(async () => (await rc.ownerOf(`{s:${b.serverId}}`).catch(() => null))?.port === owner.replica.port, 20000, 'the replica serves the slot');
  const { resent } = await sending;
  const total = 300;
  const stored = await storedMessages(pg, dm);
  eq(stored.length, total, 'every DM stored once');
  await until(() => new Set(rb.track.msgs.map((m) => m.seq)).size >= total, 20000, `bob: ${total} DMs`).catch(() => {});
  // A step whose connection was lost in flight is sent again and may arrive twice: the
  // conversation's seq tells the copy, and the JavaScript client drops it; here it is counted.
  const seen = new Map();
  for (const m of rb.track.msgs) if (!seen.has(m.seq)) seen.set(m.seq, m);
  const got = [...seen.values()];
  const p = seqProblems(got, 1, total, 'bob');
  assert(p.length === 0, p.join('; '));
  const byseq = new Map(stored.map((m) => [m.seq, m.cid]));
  for (const m of got) eq(m.cid, byseq.get(m.seq), `seq ${m.seq} at bob`);
  const readBack = b.log().split('\n').filter((l) => /read back from its log/.test(l)).length;
  console.log(`  (resent ${resent}; copies dropped by seq ${rb.track.msgs.length - got.length}; log read back ${readBack} time(s))`);
}, { timeout: 180000 });
