// GET /metrics: the exposition passes `promtool check metrics` (Debian's prometheus package),
// its counters move by what the test drives (connections, authentications and their failures,
// subscriptions, messages received / published / delivered / stored, errors by code, Redis and
// subscriber histograms), and PARLEY_METRICS_LISTEN serves it alone on its own port.
import fs from 'node:fs';
import path from 'node:path';
import {
  test, startRedis, startPostgres, startParleyd, connect, connectAuthed, mintToken, newUser,
  httpRequest, runCmd, freePort, dbEnv, eq, assert, until, sleep, SECRET, ROOT,
} from './lib.mjs';

// The samples of an exposition: 'name{labels}' -> value.
function parse(text) {
  const m = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    m.set(line.slice(0, sp), Number(line.slice(sp + 1)));
  }
  return m;
}

// The sum of a family's samples whose labels contain `labels` (e.g. 'code="x"'), any shard.
function sum(m, name, labels = '') {
  let s = 0, found = false;
  for (const [k, v] of m) {
    const base = k.includes('{') ? k.slice(0, k.indexOf('{')) : k;
    if (base !== name || (labels && !k.includes(labels))) continue;
    s += v;
    found = true;
  }
  if (!found) throw new Error(`no sample ${name}${labels ? `{${labels}}` : ''} in the exposition`);
  return s;
}

async function promtool(text) {
  let r;
  try {
    r = await runCmd('promtool', ['check', 'metrics'], { input: text, timeout: 20000 });
  } catch (e) {
    throw new Error(`promtool not runnable (${e.message}): deploy/dev/deps.sh installs Debian's prometheus`);
  }
  const out = (r.stdout + r.stderr).trim();
  assert(r.code === 0 && out === '', `promtool check metrics: exit ${r.code}: ${out}`);
}

async function scrape(port, { check = false } = {}) {
  const r = await httpRequest(port, 'GET', '/metrics');
  eq(r.status, 200, `GET /metrics status (${r.text.slice(0, 200)})`);
  eq(r.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8', 'content type');
  if (check) await promtool(r.text);
  return parse(r.text);
}

// Moved by exactly `by` between two scrapes.
function moved(a, b, name, labels, by) {
  eq(sum(b, name, labels) - sum(a, name, labels), by, `${name}${labels ? `{${labels}}` : ''} moved by`);
}

test('metrics: promtool passes and the counters move as traffic drives them', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const srv = await startParleyd({ redis, env: dbEnv(pg, { PARLEY_OPEN_ROOMS: 1, PARLEY_AUTH_TIMEOUT: 1 }) });
  const s0 = await scrape(srv.port, { check: true });
  const version = fs.readFileSync(path.join(ROOT, 'VERSION'), 'utf8').trim();
  eq(s0.get(`parley_build_info{version="${version}",server_id="${srv.serverId}"}`), 1, 'build info');
  eq(sum(s0, 'parley_shards'), 2, 'parley_shards');
  eq(sum(s0, 'parley_draining'), 0, 'parley_draining');
  eq(sum(s0, 'parley_db_connected'), 1, 'parley_db_connected');
  eq(sum(s0, 'parley_redis_connected'), 3, 'redis connections up (subscriber and two shards)');

  // Authentication: two good ones, and one failure of each kind the test can cause.
  const room = `metrics-${process.pid}`;
  const a = await connectAuthed(srv, newUser('ma'));
  const b = await connectAuthed(srv, newUser('mb'));
  const bad = await connect(srv, { tokenIn: 'none' });
  bad.send({ type: 'authenticate', token: mintToken('mallory', { secret: SECRET + 'x' }) });
  eq((await bad.waitClose()).code, 4001, 'bad signature closes 4001');
  const expired = await connect(srv, { token: mintToken('old', { exp: Math.floor(Date.now() / 1000) - 60 }) })
    .then(() => 0, (e) => e.statusCode);
  eq(expired, 401, 'expired token on the upgrade');
  const silent = await connect(srv, { tokenIn: 'none' });
  eq((await silent.waitClose(5000)).code, 4001, 'authentication timeout closes 4001');

  // Subscriptions, then one error: a message to a room not subscribed to.
  await a.subscribe([room]);
  await b.subscribe([room]);
  a.send({ type: 'message', room: `${room}-other`, text: 'nope', cid: 'x0' });
  await a.expectError('not_subscribed');
  await sleep(300); // presence events of the joins are delivered before the count below
  const s1 = await scrape(srv.port);
  for (const [name, labels, by] of [
    ['parley_authentications_total', '', 2],
    ['parley_authentication_failures_total', 'reason="signature"', 1],
    ['parley_authentication_failures_total', 'reason="expired"', 1],
    ['parley_authentication_failures_total', 'reason="timeout"', 1],
    ['parley_authentication_failures_total', 'reason="malformed"', 0],
    ['parley_errors_sent_total', 'code="not_subscribed"', 1],
    ['parley_errors_sent_total', 'code="bad_json"', 0],
  ]) moved(s0, s1, name, labels, by);
  eq(sum(s1, 'parley_subscriptions'), 2, 'subscriptions held');
  eq(sum(s1, 'parley_sessions'), 2, 'authenticated sessions open (not the failed or silent ones)');
  eq((await httpRequest(srv.port, 'GET', '/api/websocket/status')).json.sessions, 2, 'sessions in the status');
  assert(sum(s1, 'parley_rooms') >= 1, 'rooms held');
  assert(sum(s1, 'parley_connections') >= 3, 'connections open: two clients and this scrape');
  assert(sum(s1, 'parley_connections_accepted_total') - sum(s0, 'parley_connections_accepted_total') >= 6,
    'connections accepted: five clients and a scrape');

  // Three messages from a: each published once, delivered to a and b, stored, acked.
  const got = { a: [], b: [] }, acks = [];
  for (let i = 0; i < 3; i++) a.send({ type: 'message', room, text: `m${i}`, cid: `c${i}` });
  for (let i = 0; i < 3; i++) {
    got.a.push(await a.nextJson((j) => j.type === 'message' && j.room === room, 5000, 'message to a'));
    got.b.push(await b.nextJson((j) => j.type === 'message' && j.room === room, 5000, 'message to b'));
    acks.push(await a.nextJson('ack', 10000));
  }
  eq(acks.length, 3, 'acks');
  const s2 = await until(async () => {
    const s = await scrape(srv.port);
    return sum(s, 'parley_db_batch_messages_sum') - sum(s1, 'parley_db_batch_messages_sum') >= 3 ? s : null;
  }, 5000, 'the stored batch counted');
  for (const [name, labels, by] of [
    ['parley_messages_received_total', '', 3],
    ['parley_messages_published_total', '', 3],
    ['parley_messages_delivered_total', '', 6],
    ['parley_subscriber_lag_seconds_count', '', 3],
    ['parley_db_batch_messages_sum', '', 3],
    ['parley_errors_sent_total', 'code="not_stored"', 0],
  ]) moved(s1, s2, name, labels, by);
  assert(sum(s2, 'parley_db_batch_messages_count') > sum(s1, 'parley_db_batch_messages_count'), 'batches counted');
  assert(sum(s2, 'parley_db_batch_duration_seconds_count') > sum(s1, 'parley_db_batch_duration_seconds_count'), 'batch latency observed');
  assert(sum(s2, 'parley_subscriber_messages_total') - sum(s1, 'parley_subscriber_messages_total') >= 3, 'subscriber messages');
  assert(sum(s2, 'parley_redis_command_duration_seconds_count') - sum(s1, 'parley_redis_command_duration_seconds_count') >= 3,
    'redis commands timed (the publish script, at least)');
  // bytes: at least the six deliveries and three acks went out
  const bytes = sum(s2, 'parley_bytes_out_total') - sum(s1, 'parley_bytes_out_total');
  assert(bytes >= got.a.concat(got.b).reduce((n, m) => n + JSON.stringify(m).length, 0), `bytes out moved by ${bytes}`);
  assert(sum(s2, 'parley_frames_out_total') - sum(s1, 'parley_frames_out_total') >= 9, 'frames out: 6 messages, 3 acks');
  // Histograms: _count is the +Inf bucket.
  eq(sum(s2, 'parley_redis_command_duration_seconds_bucket', 'le="+Inf"'),
    sum(s2, 'parley_redis_command_duration_seconds_count'), '+Inf bucket == count');
  await promtool((await httpRequest(srv.port, 'GET', '/metrics')).text);

  a.close();
  b.close();
  await until(async () => sum(await scrape(srv.port), 'parley_subscriptions') === 0, 5000, 'subscriptions back to 0');
  eq(sum(await scrape(srv.port), 'parley_sessions'), 0, 'sessions back to 0');
});

test('metrics: PARLEY_METRICS_LISTEN serves /metrics and /health alone on its own port', async () => {
  const redis = await startRedis();
  const mport = await freePort();
  const srv = await startParleyd({ redis, env: { PARLEY_METRICS_LISTEN: `127.0.0.1:${mport}` } });
  const s0 = await scrape(mport, { check: true });
  eq((await httpRequest(mport, 'GET', '/health')).status, 200, '/health on the metrics port');
  eq((await httpRequest(mport, 'GET', '/api/websocket/status')).status, 404, 'the API is not on the metrics port');
  eq((await httpRequest(mport, 'POST', '/metrics')).status, 405, 'POST /metrics');
  const up = await connect(`ws://127.0.0.1:${mport}/ws`, { token: mintToken(newUser()) }).then(() => 0, (e) => e.statusCode);
  eq(up, 404, 'no WebSocket on the metrics port');
  eq((await httpRequest(srv.port, 'GET', '/metrics')).status, 404, '/metrics is not on the main port then');
  eq((await httpRequest(srv.port, 'GET', '/api/websocket/status')).status, 200, 'the main port serves the API');
  await connectAuthed(srv);
  moved(s0, await scrape(mport), 'parley_authentications_total', '', 1);
});
