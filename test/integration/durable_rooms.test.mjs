// Durable messages: the history API and room membership (closed and open rooms).
import {
  test, startRedis, startParleyd, startPostgres, connectAuthed, dbEnv, track, sendAcked, msgKey,
  getHistory, setMember, mintToken, assert, eq, sleep, until, API_KEY,
} from './lib.mjs';

async function expectForbidden(c, room) {
  c.send({ type: 'subscribe', rooms: [room] });
  const j = await c.nextJson((x) => (x.type === 'subscribed' && x.room === room) || x.type === 'error', 8000, `answer to subscribe ${room}`);
  eq(j.type, 'error', `subscribe to ${room} without membership: ${JSON.stringify(j)}`);
  eq(j.code, 'forbidden', `error code for ${room}: ${JSON.stringify(j)}`);
  eq(j.room, room, 'the error names the room');
}

test('durable history: newest first, limits, paging with next_before, members only, 401/403/400', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const A = await startParleyd({ redis, env: dbEnv(pg, { PARLEY_OPEN_ROOMS: 0 }) });
  const room = 'hist', user = `alice-${process.pid}`;
  eq((await setMember(A, 'PUT', room, user)).status, 200, 'PUT member');
  const alice = await connectAuthed(A, user); track(alice);
  await alice.subscribe([room]);
  const N = 237;
  await sendAcked(alice, room, N, { window: 50 });
  // An ack and the sender's live copy travel different roads (database, Redis): either may come first.
  await until(() => (alice.track.rooms.get(room) || []).length >= N, 10000, 'live copies');
  const ref = new Map(alice.track.rooms.get(room).map((m) => [m.seq, m]));
  eq(ref.size, N, 'live copies');
  const tok = mintToken(user);

  const page = async (query, what) => {
    const r = await getHistory(A, room, { token: tok, query });
    eq(r.status, 200, `${what} (${r.text.slice(0, 200)})`);
    assert(r.json && Array.isArray(r.json.messages), `${what}: body ${r.text.slice(0, 200)}`);
    eq(r.json.room, room, `${what}: room`);
    eq(typeof r.json.has_more, 'boolean', `${what}: has_more is a boolean`);
    for (const m of r.json.messages) {
      const live = ref.get(m.seq);
      assert(live, `${what}: unknown seq ${m.seq}`);
      if (msgKey(m) !== msgKey(live)) throw new Error(`${what}: seq ${m.seq} is ${JSON.stringify(m)}, live ${live.raw}`);
    }
    return r.json;
  };
  const seqs = (j) => j.messages.map((m) => m.seq);
  const range = (hi, n) => Array.from({ length: n }, (_, i) => hi - i);

  const d = await page('', 'default page');
  eq(JSON.stringify(seqs(d)), JSON.stringify(range(N, 50)), 'default page: the newest 50, newest first');
  eq(d.has_more, true, 'default page: has_more');
  eq(typeof d.next_before, 'number', 'default page: next_before is a number');
  eq(JSON.stringify(seqs(await page('limit=100', 'limit 100'))), JSON.stringify(range(N, 100)), 'limit=100');
  eq(JSON.stringify(seqs(await page('limit=1', 'limit 1'))), JSON.stringify([N]), 'limit=1');
  eq(JSON.stringify(seqs(await page('before=11&limit=100', 'before 11'))), JSON.stringify(range(10, 10)), 'before=11: seqs 10..1');
  const b1 = await page('before=1', 'before 1');
  eq(b1.messages.length, 0, 'before=1: nothing'); eq(b1.has_more, false, 'before=1: has_more');

  for (const limit of [100, 7]) {
    const got = [];
    let q = `limit=${limit}`, pages = 0, j;
    for (;;) {
      j = await page(q, `paging by ${limit}, page ${pages + 1}`);
      pages++;
      assert(j.messages.length <= limit, `page of ${j.messages.length} > limit ${limit}`);
      got.push(...seqs(j));
      if (!j.has_more) break;
      assert(j.messages.length > 0, `paging by ${limit}: empty page with has_more`);
      assert(pages < 100, `paging by ${limit}: no end`);
      q = `limit=${limit}&before=${j.next_before}`;
    }
    eq(JSON.stringify(got), JSON.stringify(range(N, N)), `paging by ${limit}: every seq once, newest first`);
    eq(pages, Math.ceil(N / limit), `paging by ${limit}: pages`);
  }

  // Authentication and authorization.
  const status = async (opts, what) => (await getHistory(A, room, opts)).status;
  eq(await status({}, 'no token'), 401, 'no token');
  eq(await status({ token: mintToken(user, { secret: 'not-the-secret' }) }, 'bad'), 401, 'token with another secret');
  eq(await status({ token: mintToken(user, { exp: Math.floor(Date.now() / 1000) - 60 }) }, 'expired'), 401, 'expired token');
  eq(await status({ token: 'garbage' }, 'garbage'), 401, 'garbage token');
  eq(await status({ token: mintToken(`bob-${process.pid}`) }, 'non-member'), 403, 'non-member');
  const r403 = await getHistory(A, room, { token: mintToken(`bob-${process.pid}`) });
  assert(r403.json && typeof r403.json.error === 'string', `403 body is a JSON error: ${r403.text}`);
  // Bad parameters.
  for (const q of ['limit=0', 'limit=101', 'limit=-1', 'limit=abc', 'before=abc', 'limit=', 'before=12abc']) {
    const r = await getHistory(A, room, { token: tok, query: q });
    eq(r.status, 400, `?${q} (${r.text.slice(0, 120)})`);
    assert(r.json && typeof r.json.error === 'string', `?${q}: JSON error body: ${r.text}`);
  }
  // Removing the member closes the history to her.
  eq((await setMember(A, 'DELETE', room, user)).status, 200, 'DELETE member');
  eq(await status({ token: tok }, 'former member'), 403, 'history after the membership is removed');
  // A server-side caller reads any room's history with the API key; a wrong key is no key.
  const viaKey = await getHistory(A, room, { token: API_KEY, query: 'limit=5' });
  eq(viaKey.status, 200, `history with the API key (${viaKey.text.slice(0, 120)})`);
  eq(viaKey.json.messages.length, 5, 'messages read with the API key');
  eq(viaKey.json.messages[0].seq, N, 'the newest first');
  eq(await status({ token: API_KEY + 'x' }, 'wrong key'), 401, 'a wrong API key');
}, { timeout: 60000 });

test('durable rooms: PARLEY_OPEN_ROOMS=1 makes a subscriber a member (history allowed), others are not', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const A = await startParleyd({ redis, env: dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 }) });
  const room = 'open-room';
  const carol = await connectAuthed(A, `carol-${process.pid}`); track(carol);
  await carol.subscribe([room]);
  await sendAcked(carol, room, 3);
  const r = await getHistory(A, room, { token: mintToken(carol.user) });
  eq(r.status, 200, `history for a subscriber of an open room (${r.text.slice(0, 200)})`);
  eq(r.json.messages.map((m) => m.seq).join(','), '3,2,1', 'history');
  eq((await getHistory(A, room, { token: mintToken(`dave-${process.pid}`) })).status, 403, 'history for a user who never subscribed');
  const rows = await pg.query(`SELECT user_id FROM room_members WHERE room_id = '${room}'`);
  eq(JSON.stringify(rows), JSON.stringify([[carol.user]]), 'room_members of the open room');
}, { timeout: 30000 });

test('durable rooms: closed rooms: forbidden without membership; PUT/DELETE members with the API key', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = dbEnv(pg); // PARLEY_OPEN_ROOMS unset: closed rooms
  const [A, B] = [await startParleyd({ redis, env }), await startParleyd({ redis, env })];
  const room = 'club', dave = `dave-${process.pid}`, carolUser = `carol-${process.pid}`;
  const put = await setMember(A, 'PUT', room, dave);
  eq(put.status, 200, `PUT dave (${put.text})`);
  eq(JSON.stringify(put.json), JSON.stringify({ room, user: dave, member: true, changed: true }), 'PUT body');
  const d = await connectAuthed(A, dave); track(d);
  await d.subscribe([room]);

  const carol = await connectAuthed(B, carolUser); track(carol);
  await expectForbidden(carol, room);
  await sendAcked(d, room, 1);
  carol.send({ type: 'message', room, text: 'let me in', cid: 'x-1' });
  await until(() => carol.track.errors.length, 5000, 'an error for the message to a room carol is not in');
  eq(carol.track.errors[0].code, 'not_subscribed', `error for the message: ${JSON.stringify(carol.track.errors[0])}`);
  eq(carol.track.errors[0].cid, 'x-1', 'cid echoed');
  await sleep(500);
  eq(carol.track.msgs.length, 0, 'messages delivered to a forbidden subscriber');

  // The API key is required.
  eq((await setMember(A, 'PUT', room, carolUser, { key: 'wrong-key' })).status, 401, 'PUT with a wrong key');
  eq((await setMember(A, 'PUT', room, carolUser, { key: null })).status, 401, 'PUT without a key');
  // A user's own token may leave a room, and join one only when rooms are open (these are closed).
  eq((await setMember(A, 'PUT', room, carolUser, { key: mintToken(carolUser) })).status, 403, "PUT of oneself with a user's JWT, closed rooms");
  eq((await setMember(A, 'PUT', room, carolUser, { key: mintToken('someone-else') })).status, 403, "PUT of another user with a user's JWT");
  await expectForbidden(carol, room);

  const p1 = await setMember(B, 'PUT', room, carolUser);
  eq(p1.status, 200, 'PUT carol');
  eq(JSON.stringify(p1.json), JSON.stringify({ room, user: carolUser, member: true, changed: true }), 'PUT carol body');
  const p2 = await setMember(A, 'PUT', room, carolUser);
  eq(JSON.stringify(p2.json), JSON.stringify({ room, user: carolUser, member: true, changed: false }), 'PUT again: unchanged');
  await carol.subscribe([room]);
  await sleep(200);
  await sendAcked(d, room, 1);
  await sleep(300);
  eq(carol.track.msgs.map((m) => m.seq).join(','), '2', 'carol gets the message sent after she became a member');

  eq((await setMember(A, 'DELETE', room, carolUser, { key: 'wrong-key' })).status, 401, 'DELETE with a wrong key');
  const del = await setMember(A, 'DELETE', room, carolUser);
  eq(del.status, 200, 'DELETE carol');
  eq(JSON.stringify(del.json), JSON.stringify({ room, user: carolUser, member: false, changed: true }), 'DELETE body');
  const del2 = await setMember(A, 'DELETE', room, carolUser);
  eq(JSON.stringify(del2.json), JSON.stringify({ room, user: carolUser, member: false, changed: false }), 'DELETE again: unchanged');
  const carol2 = await connectAuthed(A, carolUser); track(carol2);
  await expectForbidden(carol2, room);
  carol.send({ type: 'unsubscribe', rooms: [room] });
  await carol.nextJson('unsubscribed', 5000);
  await expectForbidden(carol, room);

  // A user id with a space and a slash, percent-encoded in the path.
  const odd = `x y/z-${process.pid}`;
  const po = await setMember(A, 'PUT', room, odd);
  eq(po.status, 200, `PUT ${odd} (${po.text})`);
  eq(po.json.user, odd, 'percent-decoded user');
  const oc = await connectAuthed(B, odd);
  await oc.subscribe([room]);
  const members = (await pg.query(`SELECT user_id FROM room_members WHERE room_id = '${room}' ORDER BY user_id`)).map((r) => r[0]);
  eq(JSON.stringify(members), JSON.stringify([dave, odd].sort()), 'room_members in PostgreSQL');
}, { timeout: 60000 });
