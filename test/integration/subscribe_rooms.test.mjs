// PARLEY_SUBSCRIBE=rooms: an instance's Redis subscriber holds exactly the rooms its clients
// are in, and the seam between a subscription's catch-up and its live messages stays exact
// while rooms come and go on it. (test/run also runs the protocol, message, durable, chat,
// rooms and redis tests with every instance in rooms mode: the integration-rooms suite.)
import {
  test, startRedis, startPostgres, dbEnv, startParleyd, connectAuthed, redisCli, httpRequest, track, sendAcked, until,
  sleep, eq, assert,
} from './lib.mjs';

// Acks come once a message is stored: these tests run with a database.
const withDb = (pg, mode) => dbEnv(pg, { PARLEY_OPEN_ROOMS: 1, PARLEY_SUBSCRIBE: mode });

// PUBSUB NUMSUB for each channel: how many connections (subscribers) hold it.
async function numsub(redis, ...rooms) {
  const lines = (await redisCli(redis, 'PUBSUB', 'NUMSUB', ...rooms.map((r) => `room:${r}`))).split('\n');
  const out = {};
  for (let i = 0; i + 1 < lines.length; i += 2) out[lines[i].slice(5)] = Number(lines[i + 1]);
  return out;
}

async function metric(port, name) {
  const r = await httpRequest(port, 'GET', '/metrics');
  eq(r.status, 200, 'GET /metrics');
  const line = r.text.split('\n').find((l) => l.startsWith(`${name} `));
  assert(line, `${name} in /metrics`);
  return Number(line.split(' ')[1]);
}

test('subscribe-rooms: an instance subscribes in Redis to the rooms held on it, and only those', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const a = await startParleyd({ redis, env: withDb(pg, 'rooms') });
  const b = await startParleyd({ redis, env: withDb(pg, 'pattern') });
  eq(await redisCli(redis, 'PUBSUB', 'NUMPAT'), '1', 'one pattern subscription: the pattern-mode instance');
  const a1 = await connectAuthed(a), a2 = await connectAuthed(a);
  await a1.subscribe(['x1', 'x2']);
  await a2.subscribe(['x1']);
  // Subscribed means the Redis subscription is in effect (the catch-up waits for it).
  const n = await numsub(redis, 'x1', 'x2', 'x3');
  eq(JSON.stringify(n), JSON.stringify({ x1: 1, x2: 1, x3: 0 }), 'one Redis subscription per room held, shared by its clients');
  eq(await metric(a.port, 'parley_subscriber_channels'), 2, 'parley_subscriber_channels');
  eq(await metric(b.port, 'parley_subscriber_channels'), 0, 'parley_subscriber_channels in pattern mode');

  // Messages of a room nobody on A is in never reach A's subscriber.
  const b1 = await connectAuthed(b);
  track(b1);
  await b1.subscribe(['elsewhere', 'x1']);
  await sleep(300); // b1's presence in x1 has reached A
  const m0 = await metric(a.port, 'parley_subscriber_messages_total');
  const mb0 = await metric(b.port, 'parley_subscriber_messages_total');
  await sendAcked(b1, 'elsewhere', 50);
  // ... while a message in x1, sent from B, does (and reaches both of A's clients).
  b1.send({ type: 'message', room: 'x1', text: 'to A' });
  for (const c of [a1, a2]) eq((await c.nextJson('message')).text, 'to A', 'x1 delivered on A');
  eq(await metric(a.port, 'parley_subscriber_messages_total') - m0, 1, 'messages A received from Redis: only x1\'s');
  assert(await metric(b.port, 'parley_subscriber_messages_total') - mb0 >= 51, 'B (pattern) received every room\'s');

  // The last client leaving a room ends the subscription; one of two leaving does not.
  a1.send({ type: 'unsubscribe', rooms: ['x1'] });
  await a1.next((j) => j.type === 'unsubscribed');
  await sleep(200);
  eq((await numsub(redis, 'x1')).x1, 1, 'x1 still held by a2');
  a2.send({ type: 'unsubscribe', rooms: ['x1'] });
  await a2.next((j) => j.type === 'unsubscribed');
  await until(async () => (await numsub(redis, 'x1')).x1 === 0, 5000, 'x1 unsubscribed in Redis');
  a1.close();
  await until(async () => (await numsub(redis, 'x2')).x2 === 0, 5000, 'x2 unsubscribed when its last client closed');
  await until(async () => (await metric(a.port, 'parley_subscriber_channels')) === 0, 5000, 'no channels left');
  // And back: a room joined again is subscribed again.
  await a2.subscribe(['x1']);
  eq((await numsub(redis, 'x1')).x1, 1, 'x1 subscribed again');
  b1.send({ type: 'message', room: 'x1', text: 'again' });
  eq((await a2.nextJson('message')).text, 'again', 'delivered after joining again');
});

// The seam: a room appearing on an instance is subscribed in Redis while its first catch-up is
// on its way, and that catch-up must not read the room before the subscription is in effect
// (a message published in between would be in neither), nor deliver anything twice. Clients on
// a rooms-mode instance join and leave one busy room over and over, so the room appears and
// goes on the instance (and on each of its shards) many times while another instance publishes
// into it; every stretch between `subscribed` and `unsubscribed` must hold exactly the seqs
// after `subscribed`'s (or after `since`), in order.
test('subscribe-rooms: joining and leaving a busy room over and over: nothing missed or doubled at the seam', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const p = await startParleyd({ redis, env: withDb(pg, 'pattern') });
  // Without a database a subscribe reads the room at once (with one, the membership record
  // comes first, and the Redis subscription is usually in effect long before): the narrowest
  // seam. Two such instances, a client each, so the room comes and goes on each often.
  const a = await startParleyd({ redis, env: { PARLEY_SUBSCRIBE: 'rooms' } });
  const a2 = await startParleyd({ redis, env: { PARLEY_SUBSCRIBE: 'rooms' } });
  const room = 'seam-churn';
  const pub = await connectAuthed(p);
  track(pub);
  await pub.subscribe([room]);
  const churners = [];
  for (const srv of [a, a, a2, a2]) { const c = await connectAuthed(srv); track(c); churners.push(c); }
  let publishing = true, sent = 0;
  const publisher = (async () => {
    while (publishing) { await sendAcked(pub, room, 100, { window: 10 }); sent += 100; }
  })();
  const problems = [];
  let stretches = 0, nonEmpty = 0, withSince = 0, delivered = 0;
  const deadline = Date.now() + 8000;
  await Promise.all(churners.map(async (c, k) => {
    let last = 0;
    for (let it = 0; Date.now() < deadline && problems.length < 10; it++) {
      const mark = (c.track.rooms.get(room) || []).length;
      const since = it % 2 === 1 && last > 0 ? last : undefined;
      c.send({ type: 'subscribe', rooms: [room], ...(since !== undefined ? { since: { [room]: since } } : {}) });
      const s = await c.nextJson((j) => j.type === 'subscribed' || j.type === 'error', 10000, 'subscribed');
      if (s.type !== 'subscribed') { problems.push(`churner ${k}: ${JSON.stringify(s)}`); break; }
      await sleep(5 + ((it * 37 + k * 11) % 120));
      c.send({ type: 'unsubscribe', rooms: [room] });
      await c.next((j) => j.type === 'unsubscribed', 10000, 'unsubscribed');
      const got = (c.track.rooms.get(room) || []).slice(mark).map((m) => m.seq);
      const from = since !== undefined ? since + 1 : s.seq + 1;
      for (let i = 0; i < got.length; i++) {
        if (got[i] !== from + i) {
          problems.push(`churner ${k}, stretch ${it}${since !== undefined ? ` (since ${since})` : ''}: subscribed seq ${s.seq}, expected seq ${from + i} at #${i}, got ${got[i]} (${got.slice(0, 8).join(',')}${got.length > 8 ? ',...' : ''})`);
          break;
        }
      }
      stretches++;
      if (since !== undefined) withSince++;
      if (got.length) { nonEmpty++; last = got[got.length - 1]; }
      delivered += got.length;
    }
  }));
  publishing = false;
  await publisher;
  assert(problems.length === 0, problems.join('\n'));
  assert(stretches >= 30 && nonEmpty >= stretches / 2, `enough stretches carried messages: ${nonEmpty} of ${stretches}`);
  for (const c of churners) c.close();
  await until(async () => (await numsub(redis, room))[room] === 0, 5000, 'the room unsubscribed in Redis once no rooms-mode instance holds it');
  console.log(`  (${stretches} subscribe/unsubscribe stretches, ${withSince} with since, ${nonEmpty} with messages, ${delivered} messages in them, ${sent} published meanwhile)`);
});
