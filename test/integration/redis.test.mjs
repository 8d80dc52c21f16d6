import {
  test, startRedis, startParleyd, startPostgres, connectAuthed, httpRequest, eq, assert, until, sleep,
  dbEnv, track, redisCli, seqProblems, newUser, API_KEY,
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

test('redis: direct messages and a disconnect sent while an instance\'s subscriber is away reach its clients once it is back (its log on Redis): every acked DM once, in order, the disconnect once', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = dbEnv(pg);
  const A = await startParleyd({ redis, env });
  const B = await startParleyd({ redis, env });
  // z is on A only (it receives); y on B sends; both are online, so the DMs go on server:{id}
  // channels, never to the offline queue.
  const z = await connectAuthed(A, newUser('z')), y = await connectAuthed(B, newUser('y'));
  const tz = track(z), ty = track(y);
  const N = 120;
  // A's subscriber connection is killed three times while y sends: each time it is away for
  // its reconnect backoff (100 ms and up), and what B published on server:{A} meanwhile is
  // gone from Pub/Sub.
  for (let i = 0; i < N; i++) {
    if (i % 40 === 5) await redisCli(redis, 'CLIENT', 'KILL', 'TYPE', 'pubsub');
    y.send({ type: 'message', to: z.user, text: `d${i}`, cid: `d${i}` });
    await sleep(10);
  }
  await until(() => ty.acks.size === N, 15000, `all ${N} acked`);
  const dm = () => [...tz.rooms.keys()].find((r) => r.startsWith('dm:'));
  await until(() => dm() && tz.rooms.get(dm()).length >= N && (ty.rooms.get(dm()) || []).length >= N, 10000,
    'every DM at both ends').catch((e) => {
    throw new Error(`${e.message}: z has ${dm() ? tz.rooms.get(dm()).length : 0}, y ${dm() ? (ty.rooms.get(dm()) || []).length : 0} of ${N}`);
  });
  await sleep(300);
  const first = tz.rooms.get(dm())[0].seq;
  for (const [c, t] of [[z, tz], [y, ty]]) {
    const p = seqProblems(t.rooms.get(dm()), first, first + N - 1, c.user);
    eq(p.length, 0, `${c.user}: ${p.join('; ')}`);
    assert(t.msgs.every((m) => !('_lid' in m)), `${c.user}: a frame carries the log id`);
  }
  assert(/read back from its log/.test(A.log()), 'A said it read frames back from its log');
  assert(!/may be lost/.test(A.log()), 'A warned that its log was trimmed');

  // A disconnect published while A's subscriber is away still closes z, once.
  await redisCli(redis, 'CLIENT', 'KILL', 'TYPE', 'pubsub');
  const r = await httpRequest(B.port, 'POST', `/api/users/${encodeURIComponent(z.user)}/disconnect`,
    { headers: { Authorization: `Bearer ${API_KEY}` } });
  eq(r.status, 200, `disconnect (${r.text})`);
  eq((await z.nextJson('server_notice', 10000)).code, 'disconnected', 'notice code');
  eq((await z.waitClose(5000)).code, 4003, 'close code');
  await y.ping();
});
