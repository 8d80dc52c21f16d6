// Read receipts (issue 5): stored, monotonic, broadcast to the room across
// instances; `subscribed` carries the reader's position and unread count,
// which survive a restart of every parleyd (they are in PostgreSQL).
import {
  test, startRedis, startParleyd, startPostgres, connectAuthed, dbEnv, track, recordFrames, sendAcked,
  assert, eq, sleep, until,
} from './lib.mjs';

const fmt = (list) => JSON.stringify(list.map((r) => `${r.user}:${r.seq}`));

async function subscribedTo(c, room) {
  c.send({ type: 'subscribe', rooms: [room] });
  const j = await c.nextJson((x) => (x.type === 'subscribed' && x.room === room) || x.type === 'error', 5000, `subscribed ${room}`);
  if (j.type === 'error') throw new Error(`subscribe ${room}: ${JSON.stringify(j)}`);
  return j;
}
function checkSubscribed(j, seq, read, unread, what) {
  eq(j.seq, seq, `${what}: seq in ${JSON.stringify(j)}`);
  eq(j.read, read, `${what}: read in ${JSON.stringify(j)}`);
  eq(j.unread, unread, `${what}: unread in ${JSON.stringify(j)}`);
}

test('chat read: receipts are broadcast across instances, monotonic, bounded by the room seq; subscribed has read/unread; stored across restarts', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 });
  let A = await startParleyd({ redis, env }), B = await startParleyd({ redis, env });
  const room = 'read-r', alice = `ralice-${process.pid}`, bob = `rbob-${process.pid}`;
  const a = await connectAuthed(A, alice); track(a);
  const aR = recordFrames(a, (j) => j.type === 'read_receipt');
  await a.subscribe([room]);
  let b = await connectAuthed(B, bob); track(b);
  const bR = recordFrames(b, (j) => j.type === 'read_receipt');
  await b.subscribe([room]);
  await sleep(300);
  await sendAcked(a, room, 5, { prefix: 'rd' });
  await until(() => b.track.msgs.length === 5, 5000, 'bob gets the 5 messages');

  // read 3 -> broadcast
  b.send({ type: 'read', room, seq: 3 });
  await until(() => aR.length >= 1, 5000, `alice gets bob's read_receipt for seq 3 (${fmt(aR)})`);
  const r3 = aR[0];
  assert(r3.raw.startsWith('{"type":"read_receipt"'), `read_receipt frame must start with {"type":"read_receipt": ${r3.raw}`);
  eq(r3.room, room, `room in ${r3.raw}`); eq(r3.user, bob, `user in ${r3.raw}`); eq(r3.seq, 3, `seq in ${r3.raw}`);

  // read 2 (older) -> nothing, and no error
  b.send({ type: 'read', room, seq: 2 });
  await sleep(1500);
  eq(aR.length, 1, `receipts at alice after bob's older read (seq 2): ${fmt(aR)}`);
  await b.none((j) => j.type === 'error', 10, 'an older read position must be accepted silently');
  // read 3 again -> nothing either (it does not move)
  // read 5 -> broadcast
  b.send({ type: 'read', room, seq: 5 });
  await until(() => aR.length >= 2, 5000, `alice gets bob's read_receipt for seq 5 (${fmt(aR)})`);
  eq(aR[1].user, bob, `user in ${aR[1].raw}`); eq(aR[1].seq, 5, `seq in ${aR[1].raw}`); eq(aR[1].room, room, `room in ${aR[1].raw}`);

  // bad ones
  b.send({ type: 'read', room, seq: 99 });
  await b.expectError('bad_request');
  b.send({ type: 'read', room, seq: 6 });
  await b.expectError('bad_request');
  b.send({ type: 'read', room, seq: -1 });
  await b.expectError('bad_request');
  b.send({ type: 'read', room, seq: '4' });
  await b.expectError('bad_request');
  b.send({ type: 'read', room, seq: 2.5 });
  await b.expectError('bad_request');
  b.send({ type: 'read', room });
  await b.expectError('bad_request');
  b.send({ type: 'read', room: 'read-not-mine', seq: 0 });
  await b.expectError('not_subscribed');
  await sleep(800);
  eq(aR.length, 2, `receipts at alice after invalid reads: ${fmt(aR)}`);

  // bob reconnects: read 5, unread 0
  b.close(); await b.waitClose();
  b = await connectAuthed(B, bob); track(b);
  checkSubscribed(await subscribedTo(b, room), 5, 5, 0, 'bob re-subscribing after reading up to 5');
  // 3 more messages; a new subscribe (another connection, other instance): read 5, unread 3
  await sendAcked(a, room, 3, { prefix: 'rd2' });
  const b2 = await connectAuthed(A, bob);
  checkSubscribed(await subscribedTo(b2, room), 8, 5, 3, 'bob subscribing after 3 more messages');

  const q = `SELECT last_read_seq FROM message_status WHERE room_id = '${room}' AND user_id = '${bob}'`;
  await until(async () => JSON.stringify(await pg.query(q)) === JSON.stringify([['5']]), 5000,
    'a message_status row with last_read_seq 5 for bob in the room').catch(async (e) => { throw new Error(`${e.message}; rows: ${JSON.stringify(await pg.query(q))}`); });

  // every parleyd restarts: the position is still there
  for (const x of [a, b, b2]) x.close();
  await A.stop(); await B.stop();
  A = await startParleyd({ redis, env });
  const b3 = await connectAuthed(A, bob);
  checkSubscribed(await subscribedTo(b3, room), 8, 5, 3, 'bob subscribing after every parleyd restarted');
  // and it still moves forward only
  b3.send({ type: 'read', room, seq: 4 });
  await sleep(500);
  b3.send({ type: 'read', room, seq: 8 });
  await sleep(1000);
  await b3.none((j) => j.type === 'error', 10, 'reads after restart');
  const b4 = await connectAuthed(A, bob);
  checkSubscribed(await subscribedTo(b4, room), 8, 8, 0, 'bob after reading up to 8');
}, { timeout: 90000 });
