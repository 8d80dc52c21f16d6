// Drain and rebalance: SIGTERM and POST /api/admin/drain make /health answer 503 at once, close
// the clients (server_notice, then 1001) spread over PARLEY_DRAIN_SECONDS, store and ack what
// is in flight, then exit; a second SIGTERM exits at once; POST /api/admin/rebalance asks a
// share of the clients to reconnect.
import {
  test, startRedis, startPostgres, startParleyd, connectAuthed, httpRequest, eq, assert, until,
  dbEnv, API_KEY, sleep, newUser,
} from './lib.mjs';

const bearer = (t) => ({ Authorization: `Bearer ${t}` });
const health = (srv) => httpRequest(srv.port, 'GET', '/health');
const status = async (srv) => (await httpRequest(srv.port, 'GET', '/api/websocket/status')).json;

async function clients(srv, n, room) {
  const list = [];
  for (let i = 0; i < n; i++) {
    const c = await connectAuthed(srv);
    await c.subscribe([room]);
    list.push(c);
  }
  return list;
}

// Each client's notice and close, with the time of the close.
async function closes(list, code, ms) {
  return Promise.all(list.map(async (c) => {
    const n = await c.nextJson((j) => j.type === 'server_notice', ms, 'server_notice');
    eq(n.code, code, 'notice code');
    assert(/reconnect/.test(n.message), `the notice says to reconnect: ${n.message}`);
    const cl = await c.waitClose(ms);
    eq(cl.code, 1001, 'close code');
    return cl.at;
  }));
}

test('drain: SIGTERM: /health 503 "draining" at once, upgrades refused 503, every client told and closed with 1001 spread over PARLEY_DRAIN_SECONDS, then exit 0', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis, env: { PARLEY_DRAIN_SECONDS: 2 } });
  const room = `drain-${process.pid}`;
  const list = await clients(srv, 20, room);
  eq((await health(srv)).status, 200, 'healthy before');
  eq((await status(srv)).state, 'running', 'state before');
  const t0 = Date.now();
  srv.child.kill('SIGTERM');
  await until(async () => (await health(srv).catch(() => ({}))).status === 503, 2000, '/health 503');
  const h = await health(srv);
  eq(h.json.status, 'draining', '/health status');
  eq(h.headers.connection, 'close', 'a draining instance keeps no HTTP connection');
  const refused = await connectAuthed(srv).then(() => null, (e) => e);
  eq(refused && refused.statusCode, 503, 'a new WebSocket client is refused with 503 (nginx moves it on)');
  const st = await status(srv);
  eq(st.state, 'draining', 'status state');
  const m = await httpRequest(srv.port, 'GET', '/metrics');
  assert(/^parley_draining 1$/m.test(m.text), `parley_draining 1 in /metrics: ${(m.text.match(/^parley_draining.*$/m) || [])[0]}`);
  assert(st.draining_since >= t0 - 1000, `draining_since: ${st.draining_since}`);
  const at = await closes(list, 'shutdown', 8000);
  const spread = Math.max(...at) - Math.min(...at);
  console.log(`  (20 closes spread over ${spread} ms; the last ${Math.max(...at) - t0} ms after SIGTERM)`);
  // The span is 2 s: all at once would be a few ms.
  assert(spread >= 1000, `closes spread over ${spread} ms, expected most of 2 s`);
  assert(await srv.waitExit(8000), 'parleyd exits after the drain');
  eq(srv.exit.code, 0, 'exit status');
  assert(/draining over 2 s/.test(srv.log()) && /drained/.test(srv.log()), 'the log tells the drain');
});

test('drain: messages in flight when a client is closed are stored and acked before its close; none stored unacked', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const srv = await startParleyd({ redis, env: dbEnv(pg, { PARLEY_DRAIN_SECONDS: 1, PARLEY_OPEN_ROOMS: 1 }) });
  const room = `inflight-${process.pid}`;
  const [sender] = await clients(srv, 1, room);
  const acks = new Set();
  sender.onFrame = (f) => {
    if (f.json && f.json.type === 'ack') { acks.add(f.json.cid); return true; }
    return false;
  };
  // Keep sending until the close: some are read before the drain stops reading, some not.
  let sent = 0;
  // About 1,000 a second: enough to have some in flight at any moment, not so many that a
  // sanitizer build (tsan runs this test) is still writing acks when the shutdown deadline comes.
  const pump = setInterval(() => {
    if (!sender.open) return;
    for (let i = 0; i < 10; i++) sender.send({ type: 'message', room, text: `m${sent}`, cid: `c${sent++}` });
  }, 10);
  await sleep(300);
  srv.child.kill('SIGTERM');
  const cl = await sender.waitClose(8000);
  clearInterval(pump);
  eq(cl.code, 1001, 'close code');
  assert(await srv.waitExit(8000), 'exit');
  const stored = (await pg.query(`SELECT cid FROM messages WHERE room_id = '${room}'`)).map((r) => r[0]);
  console.log(`  (${sent} sent, ${stored.length} stored, ${acks.size} acked before the close)`);
  assert(stored.length > 0, 'something was stored');
  const unacked = stored.filter((c) => !acks.has(c));
  eq(unacked.length, 0, `stored but not acked: ${unacked.slice(0, 5)}`);
  eq(acks.size, stored.length, 'acks = stored');
});

test('drain: POST /api/admin/drain (the API key) drains like SIGTERM; a second SIGTERM exits at once', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis, env: { PARLEY_DRAIN_SECONDS: 60 } });
  const room = `apidrain-${process.pid}`;
  const list = await clients(srv, 4, room);
  const post = (h) => httpRequest(srv.port, 'POST', '/api/admin/drain', { headers: h });
  eq((await post({})).status, 401, 'no key');
  eq((await post(bearer('wrong'))).status, 401, 'a wrong key');
  eq((await httpRequest(srv.port, 'GET', '/api/admin/drain', { headers: bearer(API_KEY) })).status, 405, 'GET');
  eq((await httpRequest(srv.port, 'POST', '/api/admin/nothing', { headers: bearer(API_KEY) })).status, 404, 'unknown admin path');
  eq((await health(srv)).status, 200, 'still healthy');
  const r = await post(bearer(API_KEY));
  eq(r.status, 202, 'drain accepted');
  eq(r.json.status, 'draining', 'answer');
  eq(r.json.drain_seconds, 60, 'drain_seconds');
  eq((await post(bearer(API_KEY))).status, 202, 'asked again: the same');
  eq((await health(srv)).json.status, 'draining', '/health');
  // 4 clients on 2 shards over 60 s: each shard's first goes at once, the others much later.
  await until(async () => list.filter((c) => !c.open).length >= 1, 3000, 'a first client closed');
  await sleep(300);
  const early = list.filter((c) => !c.open).length;
  assert(early <= 2, `at most one per shard closed so soon, got ${early}`);
  const rb = await httpRequest(srv.port, 'POST', '/api/admin/rebalance', { headers: bearer(API_KEY) });
  eq(rb.status, 409, 'no rebalance while draining');
  const t0 = Date.now();
  srv.child.kill('SIGTERM');
  assert(await srv.waitExit(3000), 'a second SIGTERM exits at once');
  console.log(`  (exited ${Date.now() - t0} ms after the second signal)`);
  assert(/again: exiting at once/.test(srv.log()), 'logged');
});

test('drain: POST /api/admin/rebalance asks that share of the clients to reconnect (notice "reconnect", 1001), spread; the rest stay; bad input is 400', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis });
  const room = `rebal-${process.pid}`;
  const list = await clients(srv, 20, room);
  const post = (body, h = bearer(API_KEY)) => httpRequest(srv.port, 'POST', '/api/admin/rebalance', { headers: h, body });
  eq((await post({ share: 0.5 }, {})).status, 401, 'no key');
  for (const bad of ['{', '[]', { share: 0 }, { share: 1.5 }, { share: 'half' }, { seconds: -1 }, { seconds: 4000 }])
    eq((await post(bad)).status, 400, `bad body ${JSON.stringify(bad)}`);
  eq(list.filter((c) => !c.open).length, 0, 'nobody closed by bad requests');
  const r = await post({ share: 0.5, seconds: 1 });
  eq(r.status, 202, 'accepted');
  eq(r.json.status, 'rebalancing', 'answer');
  await until(async () => list.filter((c) => !c.open).length >= 9, 5000, 'half closed');
  await sleep(500);
  const gone = list.filter((c) => !c.open), stay = list.filter((c) => c.open);
  // Half of each shard's clients, rounded: 9 to 11 of 20 over 2 shards.
  assert(gone.length >= 9 && gone.length <= 11, `about half of 20 asked to reconnect, got ${gone.length}`);
  const at = await closes(gone, 'reconnect', 1000);
  console.log(`  (${gone.length} closes spread over ${Math.max(...at) - Math.min(...at)} ms)`);
  for (const c of stay) await c.ping();
  eq((await health(srv)).status, 200, 'still healthy');
  // Those who reconnect are served.
  const again = await connectAuthed(srv, newUser('back'));
  await again.subscribe([room]);
});
