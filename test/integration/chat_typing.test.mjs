// Typing indicators (issue 5): forwarded to the room's other subscribers on
// every instance, never to the typist, rate limited to one start per second,
// expiring after 10 s, stopped when the typist's connection closes.
import {
  test, startRedis, startParleyd, startPostgres, connectAuthed, dbEnv, recordFrames, assert, eq, sleep, until,
} from './lib.mjs';

const isTyping = (j) => j.type === 'typing_start' || j.type === 'typing_stop';
const fmt = (list) => JSON.stringify(list.map((t) => `${t.type}:${t.room}:${t.user}`));

function checkTyping(t, type, room, user, who) {
  assert(t.raw.startsWith(`{"type":"${type}"`), `${who}: frame must start with {"type":"${type}": ${t.raw}`);
  eq(t.type, type, `${who}: type of ${t.raw}`);
  eq(t.room, room, `${who}: room of ${t.raw}`);
  eq(t.user, user, `${who}: user of ${t.raw}`);
}

test('chat typing: start/stop reach the other subscribers on both instances, not the typist; one start per second; 10 s expiry; closing stops; unsubscribed room is not_subscribed', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 });
  const A = await startParleyd({ redis, env }), B = await startParleyd({ redis, env });
  const room = 'typ-r', alice = `talice-${process.pid}`;
  const a = await connectAuthed(A, alice);
  const b = await connectAuthed(B, `tbob-${process.pid}`);   // other instance
  const c = await connectAuthed(A, `tcarol-${process.pid}`); // same instance
  const o = await connectAuthed(B, `toscar-${process.pid}`); // not in the room
  const tA = recordFrames(a, isTyping), tB = recordFrames(b, isTyping), tC = recordFrames(c, isTyping), tO = recordFrames(o, isTyping);
  for (const x of [a, b, c]) await x.subscribe([room]);
  await o.subscribe(['typ-other']);
  await sleep(300);

  // not subscribed
  a.send({ type: 'typing_start', room: 'typ-other' });
  await a.expectError('not_subscribed');
  a.send({ type: 'typing_stop', room: 'typ-other' });
  await a.expectError('not_subscribed');

  // 1. start, then stop
  const s1 = Date.now();
  a.send({ type: 'typing_start', room });
  await until(() => tB.length >= 1 && tC.length >= 1, 3000, `typing_start at bob (other instance) and carol (same instance); bob ${fmt(tB)}, carol ${fmt(tC)}`);
  checkTyping(tB[0], 'typing_start', room, alice, 'bob');
  checkTyping(tC[0], 'typing_start', room, alice, 'carol');
  a.send({ type: 'typing_stop', room });
  await until(() => tB.length >= 2 && tC.length >= 2, 3000, `typing_stop at bob and carol; bob ${fmt(tB)}, carol ${fmt(tC)}`);
  checkTyping(tB[1], 'typing_stop', room, alice, 'bob');
  checkTyping(tC[1], 'typing_stop', room, alice, 'carol');
  await sleep(300);
  eq(tA.length, 0, `typing frames sent back to the typist: ${fmt(tA)}`);
  eq(tO.length, 0, `typing frames to a user not in the room: ${fmt(tO)}`);
  eq(tB.length, 2, `bob's typing frames after one start and one stop: ${fmt(tB)}`);

  // 2. rate limit: a start 1.2 s after the last one is forwarded, a second one right after is not, one 1.2 s later is.
  await sleep(Math.max(0, s1 + 1200 - Date.now()));
  tB.length = 0; tC.length = 0;
  const s2 = Date.now();
  a.send({ type: 'typing_start', room });
  await until(() => tB.length >= 1, 3000, `bob gets the typing_start sent >1 s after the previous one (${fmt(tB)})`);
  checkTyping(tB[0], 'typing_start', room, alice, 'bob');
  await sleep(Math.max(0, s2 + 150 - Date.now()));
  a.send({ type: 'typing_start', room });
  a.send({ type: 'typing_start', room });
  await sleep(Math.max(0, s2 + 850 - Date.now()));
  eq(tB.length, 1, `typing frames at bob after three starts within 1 s (only the first may be forwarded): ${fmt(tB)}`);
  eq(tC.length, 1, `typing frames at carol after three starts within 1 s: ${fmt(tC)}`);
  await sleep(Math.max(0, s2 + 1250 - Date.now()));
  a.send({ type: 'typing_start', room });
  await until(() => tB.length >= 2, 3000, `bob gets a typing_start sent 1.25 s after the forwarded one (${fmt(tB)})`);
  checkTyping(tB[1], 'typing_start', room, alice, 'bob');
  a.send({ type: 'typing_stop', room });
  await until(() => tB.length >= 3 && tC.length >= 3, 3000, `typing_stop at bob and carol (${fmt(tB)} / ${fmt(tC)})`);
  checkTyping(tB[2], 'typing_stop', room, alice, 'bob');
  await sleep(1200);
  eq(tB.length, 3, `bob's typing frames (start, start, stop): ${fmt(tB)}`);

  // 3. a start never stopped expires about 10 s later with a typing_stop.
  tB.length = 0; tC.length = 0;
  const s3 = Date.now();
  a.send({ type: 'typing_start', room });
  await until(() => tB.length >= 1, 3000, `bob gets typing_start (${fmt(tB)})`);
  checkTyping(tB[0], 'typing_start', room, alice, 'bob');
  await until(() => tB.length >= 2, 14000, `typing_stop at bob by expiry (${fmt(tB)})`);
  const after = (tB[1].at - s3) / 1000;
  console.log(`  (typing_stop by expiry ${after.toFixed(2)} s after typing_start)`);
  checkTyping(tB[1], 'typing_stop', room, alice, 'bob (expiry)');
  assert(after >= 9 && after <= 13, `typing_stop by expiry came ${after.toFixed(2)} s after typing_start (expected 9-13 s)`);
  await until(() => tC.length >= 2, 2000, `typing_stop at carol by expiry (${fmt(tC)})`);
  checkTyping(tC[1], 'typing_stop', room, alice, 'carol (expiry)');
  await sleep(1500);
  eq(tB.length, 2, `bob's typing frames for one expired start (start, one stop): ${fmt(tB)}`);
  eq(tC.length, 2, `carol's typing frames for one expired start: ${fmt(tC)}`);
  eq(tA.length, 0, `typing frames sent back to the typist: ${fmt(tA)}`);

  // 4. closing the connection while typing stops it.
  tB.length = 0;
  a.send({ type: 'typing_start', room });
  await until(() => tB.length >= 1, 3000, `bob gets typing_start (${fmt(tB)})`);
  const s4 = Date.now();
  a.close(); await a.waitClose();
  await until(() => tB.length >= 2, 4000, `typing_stop at bob after the typist's connection closed (${fmt(tB)})`);
  checkTyping(tB[1], 'typing_stop', room, alice, 'bob (close)');
  assert(tB[1].at - s4 < 4000, 'typing_stop after close took too long');
  await sleep(1000);
  eq(tB.length, 2, `bob's typing frames after the typist closed (start, one stop): ${fmt(tB)}`);
  eq(tO.length, 0, `typing frames to a user not in the room: ${fmt(tO)}`);
}, { timeout: 60000 });

test('chat typing: the typist\'s instance is killed while typing: the room still gets typing_stop (expiry), within 30 s', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 });
  const A = await startParleyd({ redis, env }), B = await startParleyd({ redis, env });
  const room = 'typ-k', alice = `kalice-${process.pid}`;
  const a = await connectAuthed(B, alice);
  const b = await connectAuthed(A, `kbob-${process.pid}`);
  const tB = recordFrames(b, isTyping);
  await a.subscribe([room]); await b.subscribe([room]);
  await sleep(300);
  const t0 = Date.now();
  a.send({ type: 'typing_start', room });
  await until(() => tB.length >= 1, 3000, `bob gets typing_start (${fmt(tB)})`);
  checkTyping(tB[0], 'typing_start', room, alice, 'bob');
  B.child.kill('SIGKILL');
  assert(await B.waitExit(5000), 'B did not die');
  await until(() => tB.length >= 2, 32000, `typing_stop at bob after the typist's instance was killed (${fmt(tB)})`);
  const secs = (tB[1].at - t0) / 1000;
  console.log(`  (typing_stop ${secs.toFixed(1)} s after typing_start)`);
  checkTyping(tB[1], 'typing_stop', room, alice, 'bob');
  assert(secs <= 30, `typing_stop ${secs.toFixed(1)} s after typing_start`);
  await sleep(1500);
  eq(tB.length, 2, `bob's typing frames: ${fmt(tB)}`);
}, { timeout: 60000 });

test('chat typing: the rate limit is per user and room, across connections and instances', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 });
  const A = await startParleyd({ redis, env }), B = await startParleyd({ redis, env });
  const r1 = 'typ-p1', r2 = 'typ-p2', alice = `palice-${process.pid}`;
  const a1 = await connectAuthed(A, alice), a2 = await connectAuthed(B, alice);
  const b = await connectAuthed(A, `pbob-${process.pid}`);
  const tB = recordFrames(b, isTyping);
  for (const x of [a1, a2, b]) await x.subscribe([r1, r2]);
  await sleep(300);
  a1.send({ type: 'typing_start', room: r1 });
  await until(() => tB.length >= 1, 3000, `bob gets typing_start in ${r1}`);
  a2.send({ type: 'typing_start', room: r1 });  // same user, other connection/instance, within 1 s: dropped
  a2.send({ type: 'typing_start', room: r2 });  // another room: forwarded
  await until(() => tB.some((t) => t.room === r2), 3000, `bob gets typing_start in ${r2} (${fmt(tB)})`);
  await sleep(500);
  eq(JSON.stringify(tB.map((t) => `${t.type}:${t.room}:${t.user}`)), JSON.stringify([`typing_start:${r1}:${alice}`, `typing_start:${r2}:${alice}`]),
    'typing frames at bob (a second start by the same user in the same room within 1 s, from another connection, must be dropped)');
}, { timeout: 30000 });
