// Durable messages: `subscribed` seq, catching up with `since` after a
// reconnect (from the Redis stream and from PostgreSQL), the seam between
// missed and live messages, and the PARLEY_RECOVER_MAX cap.
import {
  test, startRedis, startParleyd, startPostgres, connectAuthed, dbEnv, track, seqProblems, sendAcked,
  msgKey, redisCli, assert, eq, sleep, until,
} from './lib.mjs';

// Subscribe to one room (with since when given); resolves the `subscribed` frame
// (json plus n, its place in the client's arrival order); throws on an error frame.
async function subscribeOne(c, room, since, ms = 15000) {
  const frame = { type: 'subscribe', rooms: [room] };
  if (since !== undefined) frame.since = { [room]: since };
  c.send(frame);
  const f = await c.next((j) => (j.type === 'subscribed' && j.room === room) || (j.type === 'error' && j.cid === undefined), ms, `subscribed ${room}`);
  if (f.json.type !== 'subscribed') throw new Error(`subscribe ${room} since ${since}: ${f.raw}`);
  assert(f.raw.startsWith('{"type":"subscribed"'), `subscribed frame starts with its type: ${f.raw}`);
  return { ...f.json, n: f.n, raw: f.raw };
}

// Compare what c got in room (seq from..to) with the reference copies (seq -> message).
function sameAsReference(c, room, from, to, ref, what) {
  const list = c.track.rooms.get(room) || [];
  const p = seqProblems(list, from, to, `${what}: ${c.user} ${room}`);
  assert(p.length === 0, p.join(' | '));
  for (const m of list) {
    const r = ref.get(m.seq);
    assert(r, `${what}: no reference copy of seq ${m.seq}`);
    if (msgKey(m) !== msgKey(r)) throw new Error(`${what}: seq ${m.seq} differs from the live copy: got ${m.raw}, live ${r.raw}`);
  }
}

async function recoveryScenario(extraEnv, label) {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = dbEnv(pg, { PARLEY_OPEN_ROOMS: 1, ...extraEnv });
  const [A, B] = [await startParleyd({ redis, env }), await startParleyd({ redis, env })];
  const room = 'rec-room';
  const S = await connectAuthed(B, `rs-${process.pid}`);   // sends the missed ones; its copies are the reference
  const S2 = await connectAuthed(A, `rs2-${process.pid}`); // keeps sending across the resubscribe
  const R = await connectAuthed(A, `rr-${process.pid}`);   // disconnects and catches up
  for (const c of [S, S2, R]) { track(c); await c.subscribe([room]); }
  await sleep(200);
  const ref = () => new Map((S.track.rooms.get(room) || []).map((m) => [m.seq, m]));

  await sendAcked(S, room, 5);
  await until(() => (R.track.rooms.get(room) || []).length === 5, 5000, 'R sees the first 5');
  let lastSeen = R.track.rooms.get(room).at(-1).seq;
  eq(lastSeen, 5, 'seq of the 5th message');

  // Phase 1: R away while 500 messages are sent and acked; it comes back on a quiet room.
  R.close(); await R.waitClose();
  await sendAcked(S, room, 500, { window: 50 });
  if (extraEnv.PARLEY_STREAM_LEN) console.log(`  (${label}: Redis stream holds ${await redisCli(redis, 'XLEN', `parley:stream:${room}`)} entries of 505)`);
  const R2 = await connectAuthed(A, R.user); track(R2);
  const sub = await subscribeOne(R2, room, lastSeen);
  eq(sub.seq, 505, `${label}: subscribed seq`);
  eq(sub.recovered, 500, `${label}: subscribed recovered`);
  assert(!sub.truncated, `${label}: not truncated: ${sub.raw}`);
  await until(() => (R2.track.rooms.get(room) || []).length >= 500, 15000, `${label}: 500 missed messages (have ${(R2.track.rooms.get(room) || []).length})`);
  await sleep(300);
  sameAsReference(R2, room, 6, 505, ref(), `${label}, quiet catch-up`);
  assert(R2.track.msgs[0].n > sub.n, `${label}: the missed messages must follow "subscribed"`);
  S2.send({ type: 'message', room, text: 'live after catch-up', cid: 'after-1' });
  await until(() => (R2.track.rooms.get(room) || []).length === 501, 5000, `${label}: a live message after the catch-up`);
  eq(R2.track.rooms.get(room).at(-1).seq, 506, `${label}: first live message after the catch-up`);
  lastSeen = 506;

  // Phase 2: away again for 500; S2 keeps sending while R resubscribes (the seam).
  R2.close(); await R2.waitClose();
  await sendAcked(S, room, 500, { window: 50 });
  let stop = false, s2sent = 0;
  const s2pending = new Set();
  S2.track.onEvent = (kind, j) => { if (kind !== 'message') s2pending.delete(j.cid); };
  const s2loop = (async () => {
    while (!stop) {
      for (let k = 0; k < 3 && s2pending.size < 40; k++) {
        const cid = `s2-${s2sent++}`;
        s2pending.add(cid);
        S2.send({ type: 'message', room, text: `seam ${cid}`, cid });
      }
      await sleep(2);
    }
  })();
  try {
    await until(() => S2.track.ackCount >= 30, 10000, 'S2 under way');
    const R3 = await connectAuthed(A, R.user); track(R3);
    const sub3 = await subscribeOne(R3, room, lastSeen);
    assert(sub3.seq >= 1006 + 30, `${label}: subscribed seq ${sub3.seq} should count S2's messages too`);
    eq(sub3.recovered, sub3.seq - lastSeen, `${label}: recovered = subscribed seq - since (${sub3.raw})`);
    // let live traffic flow past the seam for a while
    await until(() => (R3.track.rooms.get(room) || []).length >= sub3.recovered + 200, 20000,
      `${label}: catch-up plus 200 live messages (have ${(R3.track.rooms.get(room) || []).length}, recovered ${sub3.recovered})`);
    stop = true; await s2loop;
    await until(() => s2pending.size === 0, 15000, `${label}: S2's messages acked (${s2pending.size} pending)`);
    // An ack and the live copies travel different roads (database, Redis): wait for the copies.
    const maxSeen = () => Math.max(...(S.track.rooms.get(room) || []).map((m) => m.seq));
    await until(() => maxSeen() >= 1006 + s2sent, 10000, `${label}: S sees the last seq`);
    const final = maxSeen();
    eq(final, 1006 + s2sent, `${label}: last seq (S2 sent ${s2sent})`);
    await until(() => (R3.track.rooms.get(room) || []).at(-1).seq >= final, 10000, `${label}: R3 reaches seq ${final}`);
    await sleep(300);
    sameAsReference(R3, room, lastSeen + 1, final, ref(), `${label}, catch-up under load`);
    assert(R3.track.msgs[0].n > sub3.n, `${label}: the missed messages must follow "subscribed"`);
    for (const c of [S, S2, R2, R3]) {
      eq(c.track.errors.length, 0, `${c.user}: errors ${JSON.stringify(c.track.errors.slice(0, 3))}`);
      assert(c.track.problems.length === 0, c.track.problems.join(' | '));
    }
    console.log(`  (${label}: ${sub3.recovered} recovered under load, ${final - sub3.seq} live after, final seq ${final})`);
  } finally { stop = true; await s2loop; }
}

test('durable recovery: resubscribing with since gets the 500 missed messages in order, then live ones with no gap or duplicate at the seam (Redis stream)', async () => {
  await recoveryScenario({}, 'default stream');
}, { timeout: 90000 });

test('durable recovery: the same with PARLEY_STREAM_LEN=100, most missed messages coming from PostgreSQL', async () => {
  await recoveryScenario({ PARLEY_STREAM_LEN: 100 }, 'stream 100');
}, { timeout: 90000 });

test('durable recovery: subscribed carries the current seq; since 0, equal to or above the current seq', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 });
  const [A, B] = [await startParleyd({ redis, env }), await startParleyd({ redis, env })];
  const room = 'seq-room';
  const alice = await connectAuthed(A, `alice-${process.pid}`); track(alice);
  const s0 = await subscribeOne(alice, room);
  eq(s0.seq, 0, 'seq of a room without messages');
  assert(!('recovered' in s0), `plain subscribe has no recovered: ${s0.raw}`);
  await sendAcked(alice, room, 7);
  const ref = () => new Map(alice.track.rooms.get(room).map((m) => [m.seq, m]));

  const bob = await connectAuthed(B, `bob-${process.pid}`); track(bob);
  const s1 = await subscribeOne(bob, room);
  eq(s1.seq, 7, 'plain subscribe on the other instance: seq');
  assert(!('recovered' in s1), `plain subscribe has no recovered: ${s1.raw}`);

  const carol = await connectAuthed(A, `carol-${process.pid}`); track(carol);
  const s2 = await subscribeOne(carol, room, 1000);
  eq(s2.seq, 7, 'since above the current seq: subscribed seq');
  assert(!s2.recovered, `since above the current seq recovers nothing: ${s2.raw}`);
  await sleep(200);
  await sendAcked(alice, room, 1);
  await until(() => (carol.track.rooms.get(room) || []).length >= 1, 5000, 'carol gets seq 8');
  const dave = await connectAuthed(B, `dave-${process.pid}`); track(dave);
  const s3 = await subscribeOne(dave, room, 8);
  eq(s3.seq, 8, 'since equal to the current seq: subscribed seq');
  assert(!s3.recovered, `since equal to the current seq recovers nothing: ${s3.raw}`);
  await sleep(200);
  await sendAcked(alice, room, 1);
  const erin = await connectAuthed(A, `erin-${process.pid}`); track(erin);
  const s4 = await subscribeOne(erin, room, 0);
  eq(s4.seq, 9, 'since 0: subscribed seq'); eq(s4.recovered, 9, 'since 0: recovered');
  await until(() => (erin.track.rooms.get(room) || []).length >= 9, 5000, 'erin gets 1..9');
  // one frame, two rooms: since for one of them only
  const frank = await connectAuthed(B, `frank-${process.pid}`); track(frank);
  frank.send({ type: 'subscribe', rooms: [room, 'seq-other'], since: { [room]: 5 } });
  const f1 = await frank.nextJson((j) => j.type === 'subscribed' && j.room === room || j.type === 'error', 8000, `subscribed ${room}`);
  const f2 = await frank.nextJson((j) => j.type === 'subscribed' && j.room === 'seq-other' || j.type === 'error', 8000, 'subscribed seq-other');
  eq(f1.seq, 9, 'frank: seq'); eq(f1.recovered, 4, 'frank: recovered (since 5)');
  eq(f2.seq, 0, 'frank: seq of the other room'); assert(!('recovered' in f2), `no since for the other room: ${JSON.stringify(f2)}`);
  await sleep(200);
  await sendAcked(alice, room, 1);
  await until(() => [bob, carol, dave, erin, frank].every((c) => (c.track.rooms.get(room) || []).some((m) => m.seq === 10)), 5000, 'everyone gets seq 10');
  await sleep(300);
  sameAsReference(bob, room, 8, 10, ref(), 'bob (plain subscribe at 7)');
  sameAsReference(carol, room, 8, 10, ref(), 'carol (since 1000 at 7)');
  sameAsReference(dave, room, 9, 10, ref(), 'dave (since 8 at 8)');
  sameAsReference(erin, room, 1, 10, ref(), 'erin (since 0 at 9)');
  sameAsReference(frank, room, 6, 10, ref(), 'frank (since 5 at 9)');
}, { timeout: 60000 });

test('durable recovery: more missed than PARLEY_RECOVER_MAX: the newest are replayed and subscribed says truncated', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const A = await startParleyd({ redis, env: dbEnv(pg, { PARLEY_OPEN_ROOMS: 1, PARLEY_RECOVER_MAX: 50, PARLEY_STREAM_LEN: 30 }) });
  const room = 'cap-room';
  const alice = await connectAuthed(A, `alice-${process.pid}`); track(alice);
  await alice.subscribe([room]);
  await sendAcked(alice, room, 120);
  const ref = new Map(alice.track.rooms.get(room).map((m) => [m.seq, m]));
  const bob = await connectAuthed(A, `bob-${process.pid}`); track(bob);
  const s = await subscribeOne(bob, room, 0);
  eq(s.seq, 120, 'seq'); eq(s.recovered, 50, 'recovered (capped)'); eq(s.truncated, true, 'truncated');
  await until(() => (bob.track.rooms.get(room) || []).length >= 50, 8000, '50 replayed');
  const carol = await connectAuthed(A, `carol-${process.pid}`); track(carol);
  const s2 = await subscribeOne(carol, room, 100);
  eq(s2.recovered, 20, 'recovered (under the cap)'); assert(!s2.truncated, `not truncated: ${s2.raw}`);
  await until(() => (carol.track.rooms.get(room) || []).length >= 20, 8000, '20 replayed');
  await sleep(300);
  sameAsReference(bob, room, 71, 120, ref, 'bob (since 0, cap 50)');
  sameAsReference(carol, room, 101, 120, ref, 'carol (since 100)');
}, { timeout: 60000 });

// A message sent right after `subscribed`, while the catch-up is still being written to a reader
// that does not keep up: it used to wait on the subscription until the subscription ended (the
// owner's messages wait only until `subscribed` is out), and was never acked.
test('durable recovery: a message sent right after subscribed, while a long catch-up is still going to a slow reader, is published and acked, after the catch-up, with no gap', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = dbEnv(pg, { PARLEY_OPEN_ROOMS: 1, PARLEY_STREAM_LEN: 20000 });
  const A = await startParleyd({ redis, env });
  const room = 'slow-replay';
  const S = await connectAuthed(A, `sr-s-${process.pid}`); track(S); await S.subscribe([room]);
  // ~11 MB to catch up: more than loopback's socket buffers hold, so the replay waits on the reader.
  const N = 6000, big = 'x'.repeat(1900);
  await sendAcked(S, room, N, { window: 200, text: (i) => `${i} ${big}` });
  const R = await connectAuthed(A, `sr-r-${process.pid}`); track(R);
  let sentN = 0;
  R.ws.on('message', (d) => {
    if (sentN || !d.toString('latin1', 0, 24).startsWith('{"type":"subscribed"')) return;
    R.send({ type: 'message', room, text: 'right after subscribed', cid: 'sr-1' });
    sentN = 1;
    R.ws._socket.pause(); // a reader that stops for a while: the replay stalls on a full socket
    setTimeout(() => R.ws._socket.resume(), 1500);
  });
  R.send({ type: 'subscribe', rooms: [room], since: { [room]: 0 } });
  await until(() => R.track.acks.has('sr-1') || R.track.errors.length > 0, 15000, 'ack of the message sent right after subscribed');
  eq(R.track.errors.length, 0, `errors ${JSON.stringify(R.track.errors)}`);
  eq(R.track.acks.get('sr-1')[0].seq, N + 1, 'its seq follows the room\'s');
  await until(() => (R.track.rooms.get(room) || []).length >= N + 1, 15000, `R gets ${N} + 1 (has ${(R.track.rooms.get(room) || []).length})`);
  await sleep(200);
  const list = R.track.rooms.get(room);
  const p = seqProblems(list, 1, N + 1, 'slow reader');
  assert(p.length === 0, p.join(' | '));
  eq(list.at(-1).cid, 'sr-1', 'the last is its own, after the catch-up');
  assert(R.track.problems.length === 0, R.track.problems.join(' | '));
}, { timeout: 90000 });
