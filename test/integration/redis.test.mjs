import {
  test, startRedis, startParleyd, startPostgres, connectAuthed, httpRequest, eq, assert, until, sleep,
  dbEnv, track, redisCli, seqProblems,
} from './lib.mjs';

test('redis: killed and restarted on the same port; clients stay, unavailable meanwhile, delivery resumes', async () => {
  const redis = await startRedis();
  const a = await startParleyd({ redis });
  const b = await startParleyd({ redis });
  const ca = await connectAuthed(a);
  const cb = await connectAuthed(b);
  await ca.subscribe(['rr']);
  await cb.subscribe(['rr']);
  ca.send({ type: 'message', room: 'rr', text: 'before', cid: 'before' });
  eq((await cb.nextJson('message')).text, 'before', 'delivery before the crash');
  eq((await ca.nextJson('message')).text, 'before', 'sender copy before the crash');

  await redis.kill();

  // /health turns 503 unhealthy
  const h = await until(async () => {
    const r = await httpRequest(a.port, 'GET', '/health');
    return r.status === 503 ? r : null;
  }, 10000, '/health to answer 503 while Redis is down');
  eq(h.json && h.json.status, 'unhealthy', '/health status member while Redis is down');

  // a message gets error unavailable (the server may need a moment to notice)
  let unavailable = null;
  for (let i = 0; i < 20 && !unavailable; i++) {
    ca.send({ type: 'message', room: 'rr', text: `down-${i}`, cid: `down-${i}` });
    try {
      const j = await ca.nextJson((x) => x.type === 'error' && x.cid === `down-${i}`, 500, `error for down-${i}`);
      if (j.code === 'unavailable') unavailable = j; else throw new Error(`while Redis is down: error ${JSON.stringify(j)}`);
    } catch (e) { if (!/timed out/.test(e.message)) throw e; }
  }
  assert(unavailable, 'no error "unavailable" for messages sent while Redis is down');
  // the connections stay and still answer
  await ca.ping();
  await cb.ping();
  assert(ca.open && cb.open, 'clients were disconnected while Redis was down');

  await redis.start(); // same port
  const tRestart = Date.now();

  // delivery resumes without restarting parleyd: both directions, both instances
  let n = 0;
  await until(async () => {
    const cid = `up-${n++}`;
    ca.send({ type: 'message', room: 'rr', text: cid, cid });
    try {
      const j = await cb.nextJson((x) => x.type === 'message' && x.cid === cid, 700, cid);
      return !!j;
    } catch { return false; }
  }, 15000, 'delivery a -> b to resume after Redis restart', 0);
  const resumedMs = Date.now() - tRestart;
  await until(async () => {
    const cid = `back-${n++}`;
    cb.send({ type: 'message', room: 'rr', text: cid, cid });
    try { return !!(await ca.nextJson((x) => x.type === 'message' && x.cid === cid, 700, cid)); } catch { return false; }
  }, 15000, 'delivery b -> a to resume after Redis restart', 0);

  // exactly once after recovery
  ca.frames.length = 0; cb.frames.length = 0;
  await sleep(800);
  ca.frames.length = 0; cb.frames.length = 0;
  ca.send({ type: 'message', room: 'rr', text: 'final', cid: 'final' });
  for (const c of [ca, cb]) {
    eq((await c.nextJson((x) => x.type === 'message' && x.cid === 'final', 5000)).text, 'final', 'final delivery');
    await c.none((x) => x.type === 'message' && x.cid === 'final', 500, 'duplicate final message');
  }
  for (const s of [a, b]) {
    await until(async () => (await httpRequest(s.port, 'GET', '/health')).status === 200, 15000, `/health 200 again on ${s.serverId}`);
    assert(s.running, `${s.serverId} exited`);
  }
  assert(ca.open && cb.open, 'clients were disconnected');
  console.log(`  (delivery resumed ${resumedMs} ms after Redis came back)`);
});

test('redis: what is published while an instance\'s subscriber is away (its connection killed) reaches that instance\'s clients once it is back: every acked message once, in order, no second subscribed', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 });
  const A = await startParleyd({ redis, env });
  const B = await startParleyd({ redis, env });
  const room = `gap-${process.pid}`;
  const x = await connectAuthed(A), y = await connectAuthed(B);
  x.keepAll = true;
  await x.subscribe([room]);
  await y.subscribe([room]);
  const tx = track(x), ty = track(y);
  const N = 120;
  // Kill every subscriber connection (both instances'), three times while y sends: each
  // instance's subscriber is away for its reconnect backoff (100 ms and up) each time.
  for (let i = 0; i < N; i++) {
    if (i % 40 === 5) await redisCli(redis, 'CLIENT', 'KILL', 'TYPE', 'pubsub');
    y.send({ type: 'message', room, text: `g${i}`, cid: `g${i}` });
    await sleep(10);
  }
  await until(() => ty.acks.size === N, 15000, `all ${N} acked`);
  await until(() => (tx.rooms.get(room) || []).length >= N && (ty.rooms.get(room) || []).length >= N, 10000,
    'every message at both clients').catch((e) => {
    throw new Error(`${e.message}: x has ${(tx.rooms.get(room) || []).length}, y ${(ty.rooms.get(room) || []).length} of ${N}`);
  });
  await sleep(300);
  const first = tx.rooms.get(room)[0].seq;
  for (const [c, t] of [[x, tx], [y, ty]]) {
    const p = seqProblems(t.rooms.get(room), first, first + N - 1, c.user);
    eq(p.length, 0, `${c.user}: ${p.join('; ')}`);
  }
  eq(x.all.filter((f) => f.json && f.json.type === 'subscribed').length, 1, 'one subscribed frame');
  assert(/catching \d+ subscription\(s\) up/.test(A.log()), 'the instance said it caught up');
});
