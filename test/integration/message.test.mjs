import { test, startRedis, startParleyd, connectAuthed, eq, assert } from './lib.mjs';

test('message: frame shape (type first, id, from, text, ts, cid echoed or absent)', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis });
  const alice = await connectAuthed(srv);
  const bob = await connectAuthed(srv);
  await alice.subscribe(['shape']);
  await bob.subscribe(['shape']);

  const t0 = Date.now();
  alice.send({ type: 'message', room: 'shape', text: 'hello', cid: 'c-1' });
  const a1 = await alice.next('message');
  const b1 = await bob.next('message');
  const t1 = Date.now();
  for (const [who, f] of [['sender', a1], ['receiver', b1]]) {
    assert(f.raw.startsWith('{"type":"message"'), `${who}: frame must start with {"type":"message": ${f.raw}`);
    const j = f.json;
    eq(j.room, 'shape', `${who} room`);
    assert(typeof j.id === 'string' && /^[0-9]+$/.test(j.id) && BigInt(j.id) < 2n ** 64n, `${who}: id must be a decimal string of a 64-bit integer: ${f.raw}`);
    eq(j.from, alice.user, `${who} from`);
    eq(j.text, 'hello', `${who} text`);
    assert(Number.isInteger(j.ts) && j.ts >= t0 - 2000 && j.ts <= t1 + 2000, `${who}: ts must be unix ms of acceptance: ${j.ts} not in [${t0}, ${t1}]`);
    eq(j.cid, 'c-1', `${who} cid`);
  }
  eq(a1.json.id, b1.json.id, 'same id for every recipient');

  alice.send({ type: 'message', room: 'shape', text: 'no cid' });
  const a2 = await alice.next('message');
  const b2 = await bob.next('message');
  for (const f of [a2, b2]) {
    assert(!('cid' in f.json) && !f.raw.includes('"cid"'), `cid must be absent when not sent: ${f.raw}`);
    eq(f.json.text, 'no cid', 'text');
  }
  assert(BigInt(a2.json.id) > BigInt(a1.json.id), `ids from one connection must increase: ${a1.json.id} then ${a2.json.id}`);

  // text that needs JSON escaping and non-ASCII is delivered byte-exact
  const tricky = 'quote " backslash \\ newline \n tab \t ctrl \u0001 slash / é 日本 🌍 \u2028';
  alice.send({ type: 'message', room: 'shape', text: tricky, cid: 'tricky "cid" é' });
  const b3 = await bob.nextJson('message');
  eq(b3.text, tricky, 'escaped text');
  eq(b3.cid, 'tricky "cid" é', 'escaped cid');

  // ids increase over a burst
  for (let i = 0; i < 50; i++) alice.send({ type: 'message', room: 'shape', text: `n${i}` });
  let prev = BigInt(a2.json.id);
  await alice.nextJson('message'); // tricky
  for (let i = 0; i < 50; i++) {
    const m = await bob.nextJson('message');
    eq(m.text, `n${i}`, 'order of a burst');
    assert(BigInt(m.id) > prev, `id ${m.id} not above ${prev}`);
    prev = BigInt(m.id);
  }
});
