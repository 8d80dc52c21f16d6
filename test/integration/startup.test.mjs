// Start-up and configuration as an operator meets them (issue 10): what
// parleyd refuses to start with, and says in one line; what works alone; the
// Redis login; logs.
import {
  test, PARLEYD, SECRET, API_KEY, Redis, startRedis, startParleyd, startPostgres, connect,
  connectAuthed, mintToken, newUser, runCmd, freePort, httpRequest, redisCli, until, sleep, eq,
  assert, current,
} from './lib.mjs';

// Run parleyd to its exit (at most `ms`; then it is killed and `timedOut` set).
async function runToExit(env, ms = 15000) {
  const full = {
    PATH: process.env.PATH, HOME: process.env.HOME || '/tmp', LANG: 'C.UTF-8',
    PARLEY_JWT_SECRET: SECRET, PARLEY_API_KEY: API_KEY, PARLEY_SHARDS: '2',
    PARLEY_REDIS_URL: 'redis://127.0.0.1:1/0', ...env,
  };
  for (const k of Object.keys(full)) if (full[k] === undefined) delete full[k];
  try {
    const r = await runCmd(PARLEYD, [], { env: full, timeout: ms });
    return { code: r.code, out: r.stdout + r.stderr };
  } catch (e) {
    return { code: null, timedOut: true, out: String(e.message) };
  }
}

// Every line a log holds is one event: it starts with the time stamp.
function oneLinePerEvent(log, who) {
  const lines = log.split('\n').filter((l) => l !== '');
  const bad = lines.filter((l) => !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO |WARN |ERROR) \[/.test(l));
  assert(bad.length === 0, `${who}: log lines that do not start an event: ${JSON.stringify(bad.slice(0, 3))}`);
}

test('start-up: a second parleyd on an address another process listens on refuses to start', async () => {
  const redis = await startRedis();
  const A = await startParleyd({ redis });
  for (const listen of [`127.0.0.1:${A.port}`, `0.0.0.0:${A.port}`]) {
    const r = await runToExit({ PARLEY_LISTEN: listen, PARLEY_REDIS_URL: redis.url, PARLEY_SERVER_ID: newUser('second') });
    assert(r.code !== 0 && !r.timedOut, `${listen}: expected a refusal, got ${JSON.stringify(r)}`);
    assert(/another process is listening/.test(r.out), `${listen}: message: ${r.out}`);
    oneLinePerEvent(r.out, listen);
  }
  assert(A.running, 'the first instance stopped');
  eq((await httpRequest(A.port, 'GET', '/health')).status, 200, 'the first instance\'s health');
});

test('start-up: PARLEY_SERVER_ID of a live instance is refused; after a clean stop the id is free at once', async () => {
  const redis = await startRedis();
  const A = await startParleyd({ redis });
  const t0 = Date.now();
  const r = await runToExit({ PARLEY_LISTEN: `127.0.0.1:${await freePort()}`, PARLEY_REDIS_URL: redis.url, PARLEY_SERVER_ID: A.serverId });
  assert(r.code !== 0 && !r.timedOut, `expected a refusal, got ${JSON.stringify(r)}`);
  assert(r.out.includes(`PARLEY_SERVER_ID ${A.serverId} belongs to a running instance`), `message: ${r.out}`);
  assert(Date.now() - t0 < 5000, 'the refusal took more than 5 s');
  assert(A.running, 'the first instance stopped');
  const ex = await A.stop();
  assert(ex && !ex.killed, 'A did not stop on SIGTERM');
  eq(await redisCli(redis, 'EXISTS', `ws:server:${A.serverId}`), '0', 'the heartbeat after a clean stop');
  const t1 = Date.now();
  const A2 = await startParleyd({ redis, serverId: A.serverId });
  assert(Date.now() - t1 < 3000, `restarting under the id took ${Date.now() - t1} ms`);
  assert(A2.running, 'restart under the same id');
});

test('start-up: PARLEY_DATABASE_URL that does not parse, does not answer, or lacks the schema is refused in one line', async () => {
  const redis = await startRedis();
  const deadPort = await freePort();
  const base = { PARLEY_LISTEN: `127.0.0.1:${await freePort()}`, PARLEY_REDIS_URL: redis.url };
  const cases = [
    ['mysql URL', { PARLEY_DATABASE_URL: 'mysql://x' }, /PARLEY_DATABASE_URL is not a PostgreSQL connection string/],
    ['wrong port', { PARLEY_DATABASE_URL: `postgresql://parley@127.0.0.1:${deadPort}/parley` }, /cannot connect to PostgreSQL at 127\.0\.0\.1:\d+\/parley.*PARLEY_DB_REQUIRED=0/],
  ];
  const pg = await startPostgres({ migrate: false });
  cases.push(['not migrated', { PARLEY_DATABASE_URL: pg.url }, /not at this build's version.*parleyd --migrate/]);
  for (const [what, env, want] of cases) {
    const r = await runToExit({ ...base, ...env, PARLEY_SERVER_ID: newUser('db') });
    assert(r.code !== 0 && !r.timedOut, `${what}: expected a refusal, got ${JSON.stringify(r)}`);
    assert(want.test(r.out), `${what}: message: ${r.out}`);
    oneLinePerEvent(r.out, what);
  }
  // Allowed to start without it: /health and the status say so. (Redis already holds the seqs, as
  // in a running deployment: a Redis without them waits for the database to restore them.)
  await redisCli(redis, 'SET', 'parley:ready', '1');
  const srv = await startParleyd({ redis, env: { PARLEY_DATABASE_URL: `postgresql://parley@127.0.0.1:${deadPort}/parley`, PARLEY_DB_REQUIRED: 0 } });
  const h = await httpRequest(srv.port, 'GET', '/health');
  eq(h.status, 200, '/health status code with the database down');
  eq(h.json.status, 'degraded', '/health status');
  eq(h.json.database, 'down', '/health database');
  eq(h.json.db_queue, 0, '/health db_queue');
  const st = await httpRequest(srv.port, 'GET', '/api/websocket/status');
  eq(st.json.database, 'down', 'status database');
  // A message is delivered and waits for its ack; the queue shows it. (A direct message: joining
  // a room needs the database's word on membership.)
  const c = await connectAuthed(srv);
  c.send({ type: 'message', to: newUser('nobody'), text: 'waits', cid: 'w1' });
  await c.nextJson('message', 5000);
  await until(async () => (await httpRequest(srv.port, 'GET', '/health')).json.db_queue === 1, 5000, 'db_queue 1');
  oneLinePerEvent(srv.log(), 'parleyd without its database');
  // With the database there and migrated: healthy, "up".
  await runCmd(PARLEYD, ['--migrate'], { env: { PATH: process.env.PATH, PARLEY_DATABASE_URL: pg.url } });
  const fresh = await startRedis();
  const ok = await startParleyd({ redis: fresh, env: { PARLEY_DATABASE_URL: pg.url } });
  // Its pool and Redis connect just after it listens (slowly under the sanitizers): a moment.
  let h2;
  await until(async () => (h2 = await httpRequest(ok.port, 'GET', '/health')).json.status === 'healthy', 10000, '/health healthy with the database').catch(() => {});
  eq(h2.json.status, 'healthy', '/health with the database');
  eq(h2.json.database, 'up', '/health database');
  await until(() => /INFO .*parley:ready/.test(ok.log()), 5000, 'a fresh Redis\'s info line');
  assert(!/WARN .*parley:ready/.test(ok.log()), `a fresh Redis is not a warning: ${ok.log()}`);
}, { timeout: 90000 });

test('start-up: Redis with a password (redis://:pw@) and an ACL user (redis://user:pw@): everything works, the password is never logged', async () => {
  const port = await freePort();
  const redis = new Redis(port, { args: ['--requirepass', 'Top-Secret-1', '--user', 'chat', 'on', '>Chat-Secret-2', '~*', '&*', '+@all'], auth: { password: 'Top-Secret-1' } });
  current.procs.push(redis);
  await redis.start();
  const viaPass = await startParleyd({ redisUrl: `redis://:Top-Secret-1@127.0.0.1:${port}/0` });
  const viaUser = await startParleyd({ redisUrl: `redis://chat:Chat-Secret-2@127.0.0.1:${port}/0` });
  const a = await connectAuthed(viaPass), b = await connectAuthed(viaUser);
  await a.subscribe(['authd']); await b.subscribe(['authd']);
  a.send({ type: 'message', room: 'authd', text: 'through AUTH' });
  eq((await b.nextJson('message', 5000)).text, 'through AUTH', 'delivered across instances');
  eq(await redisCli(redis, 'SISMEMBER', 'ws:online_users', b.user), '1', 'presence written');
  // A wrong password: unhealthy, one clear error, retried; no password anywhere in the log.
  const wrong = await startParleyd({ redisUrl: `redis://:Wrong-Secret-3@127.0.0.1:${port}/0`, waitHealthy: false });
  await until(() => /refused the login/.test(wrong.log()), 10000, 'the refused login in the log');
  eq((await httpRequest(wrong.port, 'GET', '/health')).status, 503, '/health with a refused login');
  const refusals = () => wrong.log().split('\n').filter((l) => /refused the login/.test(l)).length;
  await until(() => refusals() === 2, 5000, 'each shard\'s connection to log its refusal');
  await sleep(2000); // retries go on, quietly
  eq(refusals(), 2, 'refused-login lines (once per connection, not per retry)');
  for (const p of [viaPass, viaUser, wrong]) {
    const log = p.log();
    for (const pw of ['Top-Secret-1', 'Chat-Secret-2', 'Wrong-Secret-3']) assert(!log.includes(pw), `${p.serverId}'s log shows a password`);
    oneLinePerEvent(log, p.serverId);
  }
}, { timeout: 60000 });

test('start-up: --version; every log level; debug logs connections with their peer and close code', async () => {
  const v = await runCmd(PARLEYD, ['--version'], { env: { PATH: process.env.PATH } });
  eq(v.code, 0, '--version exit');
  assert(/^parleyd \S+/.test(v.stdout), `--version: ${v.stdout}`);
  const redis = await startRedis();
  for (const level of ['error', 'warn', 'info']) {
    const s = await startParleyd({ redis, env: { PARLEY_LOG_LEVEL: level } });
    const c = await connectAuthed(s); c.close(); await c.waitClose();
    await sleep(200);
    assert(!/conn from/.test(s.log()), `level ${level} logs connections`);
    if (level === 'error') assert(!/INFO|WARN/.test(s.log()), `level error logs: ${s.log()}`);
  }
  const d = await startParleyd({ redis, env: { PARLEY_LOG_LEVEL: 'debug' } });
  const c = await connectAuthed(d);
  c.ws.close(4321, 'bye');
  await c.waitClose();
  await until(() => /closing \(websocket close code 4321/.test(d.log()), 3000, 'the close line');
  assert(/conn from 127\.0\.0\.1:\d+: accepted/.test(d.log()), 'no accepted line with the peer address');
  assert(new RegExp(`conn ${c.user} from 127\\.0\\.0\\.1:\\d+: closing \\(websocket close code 4321`).test(d.log()), 'the close line names user, peer and code');
  oneLinePerEvent(d.log(), 'debug');
});

test('start-up: PARLEY_MAX_FRAME=4096 alone works; the text limit follows it', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis, env: { PARLEY_MAX_FRAME: 4096 } });
  const c = await connectAuthed(srv);
  await c.subscribe(['small']);
  c.send({ type: 'message', room: 'small', text: 'a'.repeat(3584), cid: 'fits' });
  eq((await c.nextJson('message', 5000)).text.length, 3584, 'the largest text that fits');
  c.send({ type: 'message', room: 'small', text: 'a'.repeat(3585), cid: 'over' });
  await c.expectError('too_large', 5000, 'over');
  // An explicit conflict is refused with a value that works.
  const r = await runToExit({ PARLEY_MAX_FRAME: '4096', PARLEY_MAX_TEXT: '16384', PARLEY_LISTEN: `127.0.0.1:${await freePort()}` });
  assert(r.code === 2 && /PARLEY_MAX_TEXT=3584 or less/.test(r.out), `conflict: ${JSON.stringify(r)}`);
});

// On one Redis, Parley's scripts touch keys of several hash slots and publish with PUBLISH: on a
// Redis Cluster node they would fail message by message (CROSSSLOT). Cluster mode must be asked
// for (PARLEY_REDIS_CLUSTER=1, docs/redis.md), and asking for it on a standalone Redis would never
// give a slot map: both are said at start-up, in one line, and parleyd does not start.
test('start-up: a Redis Cluster node without PARLEY_REDIS_CLUSTER=1, and cluster mode on a standalone Redis, are refused in one line', async () => {
  const redis = new Redis(0, { args: ['--cluster-enabled', 'yes'] });
  current.procs.push(redis);
  await redis.start();
  const r = await runToExit({ PARLEY_LISTEN: `127.0.0.1:${await freePort()}`, PARLEY_REDIS_URL: redis.url });
  assert(r.code !== 0 && !r.timedOut, `expected a refusal, got ${JSON.stringify(r)}`);
  assert(/is a Redis Cluster node \(cluster_enabled:1\): set PARLEY_REDIS_CLUSTER=1/.test(r.out), `message: ${r.out}`);
  oneLinePerEvent(r.out, 'cluster node');
  // Cluster mode asked for with a standalone Redis among the seeds (the other seed is down).
  const plain = await startRedis();
  const c = await runToExit({ PARLEY_LISTEN: `127.0.0.1:${await freePort()}`, PARLEY_REDIS_URL: `redis://127.0.0.1:1,127.0.0.1:${plain.port}`, PARLEY_REDIS_CLUSTER: '1' });
  assert(c.code !== 0 && !c.timedOut && new RegExp(`PARLEY_REDIS_CLUSTER=1, but redis at 127\\.0\\.0\\.1:${plain.port} is not a Redis Cluster node`).test(c.out), `cluster mode: ${JSON.stringify(c)}`);
  oneLinePerEvent(c.out, 'cluster mode');
});
