import { test, startRedis, startParleyd, connectAuthed, assert, sleep } from './lib.mjs';

// Two parleyd instances on one Redis; 4 senders (2 per instance) and 4 pure
// receivers (2 per instance), all subscribed to two rooms. 10,000 messages in
// all, at most WINDOW in flight per sender. Every subscriber (senders
// included) must get every message exactly once, each sender's in order.
const TOTAL = 10000, SENDERS = 4, WINDOW = 200, ROOMS = ['fan-a', 'fan-b'];

test('cluster: 10,000 messages across two instances, none lost or duplicated, per-sender order kept', async () => {
  const redis = await startRedis();
  const inst = [await startParleyd({ redis }), await startParleyd({ redis })];
  const senders = [], receivers = [];
  for (let i = 0; i < SENDERS; i++) senders.push(await connectAuthed(inst[i % 2], `sender-${i}`));
  for (let i = 0; i < 4; i++) receivers.push(await connectAuthed(inst[i % 2], `recv-${i}`));
  const everyone = [...senders, ...receivers];
  for (const c of everyone) await c.subscribe(ROOMS);
  // the subscriptions must have reached every instance before we start
  await sleep(300);

  const perSender = TOTAL / SENDERS;
  const problems = [];
  const ids = new Map(); // "s:seq" -> id
  const note = (msg) => { if (problems.length < 20) problems.push(msg); };
  const state = everyone.map(() => ({ next: new Array(SENDERS).fill(0), count: 0 }));
  let doneResolve; const allDone = new Promise((r) => { doneResolve = r; });
  let finished = 0;
  const inflight = new Array(SENDERS).fill(0);
  const pump = [];

  everyone.forEach((c, ci) => {
    const st = state[ci];
    c.onFrame = (f) => {
      const j = f.json;
      if (!j) { note(`${c.user}: non-JSON frame`); return true; }
      if (j.type === 'error') { note(`${c.user}: error frame ${f.raw}`); return true; }
      if (j.type !== 'message') return false;
      const m = /^s(\d+):(\d+)$/.exec(j.text);
      if (!m) { note(`${c.user}: unexpected text ${j.text}`); return true; }
      const s = Number(m[1]), seq = Number(m[2]);
      if (j.from !== `sender-${s}`) note(`${c.user}: from ${j.from} for sender ${s}`);
      if (seq !== st.next[s]) note(`${c.user}: sender ${s} expected seq ${st.next[s]} got ${seq} (${seq < st.next[s] ? 'duplicate/reorder' : 'gap'})`);
      st.next[s] = Math.max(st.next[s], seq + 1);
      const key = `${s}:${seq}`;
      const prev = ids.get(key);
      if (prev === undefined) ids.set(key, j.id); else if (prev !== j.id) note(`${key}: different ids ${prev} / ${j.id}`);
      st.count++;
      if (ci < SENDERS && s === ci) { inflight[ci]--; pump[ci](); }
      if (st.count === TOTAL) { if (++finished === everyone.length) doneResolve(); }
      if (st.count > TOTAL) note(`${c.user}: more than ${TOTAL} messages`);
      return true;
    };
  });

  const sent = new Array(SENDERS).fill(0);
  for (let s = 0; s < SENDERS; s++) {
    pump[s] = () => {
      while (inflight[s] < WINDOW && sent[s] < perSender) {
        const seq = sent[s]++;
        inflight[s]++;
        senders[s].send({ type: 'message', room: ROOMS[seq % 2], text: `s${s}:${seq}` });
      }
    };
  }
  const t0 = Date.now();
  for (let s = 0; s < SENDERS; s++) pump[s]();

  const closedEarly = Promise.race(everyone.map((c) => c.closed.then((ci) => `${c.user} closed with ${ci.code} ${ci.reason}`)));
  // fail fast when delivery stalls (no frame for 10 s), at the latest after 90 s
  const total = () => state.reduce((a, x) => a + x.count, 0);
  let over = false;
  const stalled = (async () => {
    let last = -1, lastAt = Date.now();
    while (!over && Date.now() - t0 < 90000) {
      await sleep(250);
      const n = total();
      if (n !== last) { last = n; lastAt = Date.now(); } else if (Date.now() - lastAt > 10000) return 'stalled (nothing received for 10 s)';
    }
    return 'timeout';
  })();
  const r = await Promise.race([allDone.then(() => 'done'), closedEarly, stalled]);
  over = true;
  const ms = Date.now() - t0;
  if (r !== 'done') {
    const counts = everyone.map((c, i) => `${c.user}=${state[i].count}`).join(' ');
    throw new Error(`${r} after ${ms} ms; received counts: ${counts}; sent ${sent.join('/')}; problems: ${problems.join(' | ') || 'none'}`);
  }
  // a short grace: nothing extra may arrive
  await sleep(500);
  assert(problems.length === 0, `problems: ${problems.join(' | ')}`);
  for (let i = 0; i < everyone.length; i++) {
    assert(state[i].count === TOTAL, `${everyone[i].user} got ${state[i].count} messages`);
    for (let s = 0; s < SENDERS; s++) assert(state[i].next[s] === perSender, `${everyone[i].user}: sender ${s} last seq ${state[i].next[s]}`);
  }
  const uniq = new Set(ids.values());
  assert(uniq.size === TOTAL, `ids not unique: ${uniq.size} distinct ids for ${TOTAL} messages`);
  console.log(`  (10,000 messages x ${everyone.length} subscribers in ${ms} ms)`);
}, { timeout: 150000 });
