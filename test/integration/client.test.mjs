// The JavaScript client library (web/parley.js) against real parleyd instances behind nginx, as
// applications run it: an instance killed under a sending and a receiving client. The library is
// the application's code here; the checks look at what it handed the application, what the
// server stored, and what an independent client (the `ws` package) saw.
import {
  test, startRedis, startParleyd, startPostgres, startNginx, connectAuthed, dbEnv, mintToken,
  storedMessages, newUser, until, eq, assert, sleep, current, WebSocket,
} from './lib.mjs';
import { ParleyClient } from '../../web/parley.js';

function libClient(url, user) {
  const c = new ParleyClient({
    url,
    tokenProvider: async () => mintToken(user),
    WebSocket,
    reconnect: { initialDelay: 100, maxDelay: 1000, stableAfter: 5000 },
    heartbeat: { interval: 2000, timeout: 2000 },
  });
  c.seen = []; // room messages as the application got them
  c.states = [];
  c.on('message', (m) => { if (!m.to) c.seen.push(m); });
  c.on('state', (s) => c.states.push(s.state));
  current.cleanups.push(async () => c.close());
  return c;
}

// Each seq of a room once and in order, 1..n.
function exactlyOnce(list, n, who) {
  const seqs = list.map((m) => m.seq);
  for (let i = 0; i < seqs.length; i++)
    if (seqs[i] !== i + 1) throw new Error(`${who}: position ${i} has seq ${seqs[i]} (want ${i + 1}); around it: ${seqs.slice(Math.max(0, i - 3), i + 4)}`);
  eq(seqs.length, n, `${who}: messages`);
}

test('client library: kill -9 of the instance under a sending and a receiving client (behind nginx): every send acked, each message exactly once everywhere, nothing lost', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 });
  const A = await startParleyd({ redis, env });
  const B = await startParleyd({ redis, env });
  const ng = await startNginx([A, B]);
  const room = `lib-${process.pid}`;
  const url = `ws://127.0.0.1:${ng.port}/ws`;
  const sender = libClient(url, newUser('sender'));
  const receiver = libClient(url, newUser('receiver'));
  const info = await sender.connect();
  await receiver.connect();
  await sender.subscribe(room);
  await receiver.subscribe(room);
  // nginx's ip_hash puts both on one instance (one client address); an independent client
  // watches from the other.
  const victim = info.server === A.serverId ? A : B, survivor = victim === A ? B : A;
  const observer = await connectAuthed(survivor, newUser('observer'));
  await observer.subscribe([room]);

  const N = 300, KILL_AT = 120;
  const sends = [];
  let unackedAtKill = 0;
  for (let i = 0; i < N; i++) {
    sends.push(sender.send(room, `msg ${i}`, { cid: `k-${i}` }));
    if (i === KILL_AT) {
      // Counted as the signal goes (stop() sends it before its first await): by the time the
      // exit is reported the client may already have reconnected and had its outbox acked (an
      // AddressSanitizer build takes a while to exit).
      const stopping = victim.stop('SIGKILL');
      unackedAtKill = sender.pending.length;
      const r = await stopping;
      assert(r && r.signal === 'SIGKILL', `${victim.name} killed`);
    }
    // a burst just before the kill (in flight when it dies), some sends while it reconnects
    if (i < KILL_AT - 40 || i >= KILL_AT) await sleep(i >= KILL_AT && i < KILL_AT + 50 ? 20 : 5);
  }
  const acks = await Promise.race([
    Promise.all(sends),
    sleep(60000).then(() => { throw new Error(`not every send acked in 60 s: ${sender.pending.length} pending, state ${sender.state}`); }),
  ]);
  eq(new Set(acks.map((a) => a.id)).size, N, 'a distinct id per send');
  eq(JSON.stringify(acks.map((a) => a.seq).sort((x, y) => x - y)), JSON.stringify(Array.from({ length: N }, (_, i) => i + 1)), 'acked seqs are 1..N');
  eq(sender.pending.length, 0, 'the outbox is empty');
  // The kill must have caught sends in flight, or the outbox was not exercised.
  assert(unackedAtKill > 0, 'no send was un-acked when the instance died');
  console.log(`  (${unackedAtKill} sends un-acked when the instance died; resent with their cids)`);
  assert(sender.states.includes('reconnecting') && sender.state === 'open', `the sender reconnected: ${sender.states}`);

  await until(() => receiver.seen.length >= N && sender.seen.length >= N, 20000, 'every message at the library clients');
  await sleep(300); // anything extra would come now
  exactlyOnce(receiver.seen, N, 'receiver (library)');
  exactlyOnce(sender.seen, N, 'sender (library, its own copies)');
  for (const m of receiver.seen) {
    const i = Number(m.cid.slice(2));
    eq(m.text, `msg ${i}`, `seq ${m.seq}: text of its cid`);
    eq(m.id, acks[i].id, `seq ${m.seq}: the acked id`);
  }
  await until(() => observer.frames.filter((f) => f.json && f.json.type === 'message').length >= N, 10000, 'the observer');
  exactlyOnce(observer.frames.filter((f) => f.json && f.json.type === 'message').map((f) => f.json), N, 'observer (ws, on the survivor)');
  const stored = await storedMessages(pg, room);
  eq(stored.length, N, 'stored once each');
  eq(new Set(stored.map((m) => m.cid)).size, N, 'one row per cid');
});
