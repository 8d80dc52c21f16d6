import { test, startRedis, startParleyd, startPostgres, connectAuthed, dbEnv, eq, assert } from './lib.mjs';

// A client that sends right after subscribing, before `subscribed` comes back, gets its own
// message: a plain subscription starts when it joined the room, and `subscribed`'s seq says so.
test('subscribe: a message sent before `subscribed` arrives is delivered to its sender, after `subscribed`', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const A = await startParleyd({ redis, env: dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 }) });
  const c = await connectAuthed(A, `early-${process.pid}`);
  const room = 'seam-early';
  c.send({ type: 'subscribe', rooms: [room] });
  c.send({ type: 'message', room, text: 'early', cid: 'e1' });
  const all = [];
  const sub = await c.nextJson((x) => { all.push(x.type); return x.type === 'subscribed'; });
  const m = await c.nextJson((x) => { all.push(x.type); return x.type === 'message'; }, 5000, 'own early message: ' + JSON.stringify(all) + JSON.stringify(sub));
  eq(m.cid, 'e1', 'own message');
  assert(m.seq === sub.seq + 1, `message seq ${m.seq} follows subscribed seq ${sub.seq}`);
});
