// Several instances behind Debian's nginx with deploy/nginx.conf (issue: make cluster): clients
// from many loopback source addresses spread over the instances by ip_hash, which keys on the
// first three octets of an IPv4 address (127.A.B.x: one /24 per client here); an instance killed
// under library clients; an instance added with `nginx -s reload`; and deploy/cluster itself.
import fs from 'node:fs';
import path from 'node:path';
import {
  test, ROOT, SECRET, startRedis, startParleyd, startPostgres, startNginx, connectAuthed, dbEnv,
  mintToken, newUser, track, sendAcked, seqProblems, runCmd, tmpDir, httpRequest, until, sleep,
  eq, assert, current, WebSocket, API_KEY,
} from './lib.mjs';
import { ParleyClient } from '../../web/parley.js';

// A loopback source address in a /24 of its own for client i (any 127.x.y.z works on Linux).
const addr = (i, base = 20) => `127.${base + (i >> 8)}.${i & 255}.7`;

// Clients through nginx, client i from addr(i), connected `batch` at a time.
async function connectMany(url, n, { base = 20, from = 0, batch = 50, prefix = 'spread' } = {}) {
  const out = [];
  for (let i = from; i < from + n; i += batch) {
    const k = Math.min(batch, from + n - i);
    out.push(...await Promise.all(Array.from({ length: k }, (_, j) =>
      connectAuthed(url, newUser(prefix), { wsOptions: { localAddress: addr(i + j, base) } }))));
  }
  return out;
}

// How many clients each server id holds, from their `authenticated` frames.
const spread = (clients) => clients.reduce((m, c) => m.set(c.auth.server, (m.get(c.auth.server) || 0) + 1), new Map());
const show = (m) => [...m].sort().map(([k, v]) => `${k}=${v}`).join(' ');

// Every tracked client has seq 1..n of the room once, in order, each with the id its sender was
// acked with (acks: seq -> id).
function checkExactlyOnce(clients, room, n, acks) {
  const problems = [];
  for (const c of clients) {
    const list = c.track.rooms.get(room) || [];
    problems.push(...seqProblems(list, 1, n, c.user));
    for (const m of list) if (acks.get(m.seq) !== m.id) { problems.push(`${c.user}: seq ${m.seq} has id ${m.id}, acked ${acks.get(m.seq)}`); break; }
    if (problems.length > 10) break;
  }
  assert(problems.length === 0, `delivery problems: ${problems.slice(0, 10).join(' | ')}`);
}

// seq -> id over the acks the senders got; each cid acked once.
function ackMap(senders) {
  const acks = new Map();
  for (const s of senders) for (const [cid, list] of s.track.acks) {
    eq(list.length, 1, `acks for ${cid}`);
    assert(!acks.has(list[0].seq), `seq ${list[0].seq} acked twice`);
    acks.set(list[0].seq, list[0].id);
  }
  return acks;
}

// Redis (and PostgreSQL: acks), three instances, nginx with deploy/nginx.conf in front.
async function threeBehindNginx({ db }) {
  const redis = await startRedis();
  const env = { PARLEY_OPEN_ROOMS: 1, PARLEY_TRUSTED_PROXIES: '127.0.0.1', ...(db ? dbEnv(await startPostgres()) : {}) };
  const inst = [];
  for (let i = 0; i < 3; i++) inst.push(await startParleyd({ redis, env }));
  const ng = await startNginx(inst);
  return { redis, env, inst, ng, url: `ws://127.0.0.1:${ng.port}/ws` };
}

test('cluster nginx: 300 clients from 300 /24s spread over 3 instances by ip_hash; every message reaches every subscriber once', async () => {
  const { inst, url } = await threeBehindNginx({ db: true });
  const clients = await connectMany(url, 300);
  const dist = spread(clients);
  console.log(`  (300 clients over the instances: ${show(dist)})`);
  eq(dist.size, 3, `instances with clients (${show(dist)})`);
  for (const [id, k] of dist) assert(k >= 30, `${id} has only ${k} of 300 clients: ${show(dist)}`);
  const room = `spread-${process.pid}`;
  for (const c of clients) track(c);
  for (let i = 0; i < clients.length; i += 50) await Promise.all(clients.slice(i, i + 50).map((c) => c.subscribe([room], 10000)));
  await sleep(300);
  // 10 senders, spread over the instances, 20 messages each: 200 messages, 60,000 deliveries.
  const byServer = new Map();
  for (const c of clients) { if (!byServer.has(c.auth.server)) byServer.set(c.auth.server, []); byServer.get(c.auth.server).push(c); }
  const groups = [...byServer.values()];
  const senders = Array.from({ length: 10 }, (_, i) => groups[i % groups.length][Math.floor(i / groups.length)]);
  const t0 = Date.now();
  await Promise.all(senders.map((s) => sendAcked(s, room, 20, { window: 10, ms: 30000 })));
  const N = 200;
  await until(() => clients.every((c) => (c.track.rooms.get(room) || []).length >= N), 30000, `every client to have ${N} messages`);
  await sleep(500); // anything extra would come now
  const acks = ackMap(senders);
  eq(acks.size, N, 'acked messages');
  checkExactlyOnce(clients, room, N, acks);
  assert(clients.every((c) => c.open), 'a client was closed');
  console.log(`  (${N} messages sent and acked, ${N * clients.length} deliveries in ${Date.now() - t0} ms, no loss, no duplicate)`);
}, { timeout: 120000 });

// A library client (web/parley.js) whose sockets come from one local address.
function libClient(url, user, localAddress, secret = SECRET) {
  class BoundWebSocket extends WebSocket {
    constructor(u, protocols) { super(u, protocols, { localAddress, perMessageDeflate: false }); }
  }
  const c = new ParleyClient({
    url, WebSocket: BoundWebSocket, tokenProvider: async () => mintToken(user, { secret }),
    reconnect: { initialDelay: 100, maxDelay: 1000, stableAfter: 5000 },
    heartbeat: { interval: 2000, timeout: 2000 },
  });
  Object.assign(c, { name: user, seen: [], servers: [], closes: 0 });
  c.on('message', (m) => { if (!m.to) c.seen.push(m); });
  c.on('authenticated', (i) => c.servers.push(i.server));
  c.on('state', (s) => { if (s.state === 'reconnecting') c.closes++; });
  current.cleanups.push(async () => c.close());
  return c;
}

// Each seq of a room once and in order, 1..n, with the id and text its send was acked with.
function libExactlyOnce(c, n, acked) {
  const seqs = c.seen.map((m) => m.seq);
  for (let i = 0; i < seqs.length; i++)
    if (seqs[i] !== i + 1) throw new Error(`${c.name}: position ${i} has seq ${seqs[i]} (want ${i + 1}); around it: ${seqs.slice(Math.max(0, i - 3), i + 4)}`);
  eq(seqs.length, n, `${c.name}: messages`);
  for (const m of c.seen) eq(m.id, acked.get(m.cid).id, `${c.name}: seq ${m.seq}: the acked id of ${m.cid}`);
}

test('cluster nginx: kill -9 of one instance: its library clients reach the others through nginx and recover everything acked', async () => {
  const { inst, url } = await threeBehindNginx({ db: true });
  const room = `kill-${process.pid}`;
  const clients = Array.from({ length: 12 }, (_, i) => libClient(url, newUser('k'), addr(i, 40)));
  const infos = await Promise.all(clients.map((c) => c.connect()));
  await Promise.all(clients.map((c) => c.subscribe(room)));
  const count = new Map();
  for (const i of infos) count.set(i.server, (count.get(i.server) || 0) + 1);
  const victimId = [...count].sort((a, b) => b[1] - a[1])[0][0];
  const victim = inst.find((p) => p.serverId === victimId);
  const onVictim = clients.filter((c, i) => infos[i].server === victimId);
  console.log(`  (12 library clients: ${show(count)}; killing ${victimId} under ${onVictim.length})`);

  // Every client sends 30 messages, 15 ms apart; the victim dies a third of the way through.
  const PER = 30, N = PER * clients.length;
  const sends = new Map();
  // The kill is not waited for: its clients keep sending into connections that are dead before
  // they notice, and those sends must be resent (counted: the most pending on them at once).
  let unackedAfterKill = 0, killed = null;
  for (let k = 0; k < PER; k++) {
    for (const [ci, c] of clients.entries()) sends.set(`c${ci}-${k}`, c.send(room, `${c.name} #${k}`, { cid: `c${ci}-${k}` }));
    if (k === 10) killed = victim.stop('SIGKILL');
    if (killed) unackedAfterKill = Math.max(unackedAfterKill, onVictim.reduce((a, c) => a + c.pending.length, 0));
    await sleep(15);
  }
  const r = await killed;
  assert(r && r.signal === 'SIGKILL', `${victim.name} killed`);
  assert(unackedAfterKill > 0, 'no send was pending on the killed instance\'s clients');
  const acked = new Map();
  await Promise.race([
    Promise.all([...sends].map(async ([cid, p]) => acked.set(cid, await p))),
    sleep(60000).then(() => { throw new Error(`not every send acked in 60 s: ${clients.map((c) => c.pending.length)} pending`); }),
  ]);
  eq(acked.size, N, 'acked sends');
  eq(new Set([...acked.values()].map((a) => a.seq)).size, N, 'a seq per send');
  await until(() => clients.every((c) => c.seen.length >= N), 20000, 'every message at every client');
  await sleep(300);
  for (const c of clients) libExactlyOnce(c, N, acked);
  for (const c of onVictim) {
    assert(c.closes >= 1 && c.state === 'open', `${c.name} reconnected (states: closes ${c.closes}, now ${c.state})`);
    assert(c.servers.length >= 2 && c.servers.at(-1) !== victimId, `${c.name} is on another instance now: ${c.servers}`);
  }
  for (const c of clients.filter((x) => !onVictim.includes(x))) eq(c.closes, 0, `${c.name} (not on the victim) reconnects`);
  console.log(`  (${N} sent and acked, up to ${unackedAfterKill} pending at once on the victim's clients after the kill; ${N} received by each of 12, no loss, no duplicate)`);
}, { timeout: 120000 });

// PIDs of nginx's workers that run the current configuration (not those shutting down).
function workers(master) {
  const out = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      if (Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]) !== master) continue;
      if (fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').replace(/\0+$/, '').trim() === 'nginx: worker process') out.push(Number(d));
    } catch {}
  }
  return out;
}

test('cluster nginx: a fourth instance added with nginx -s reload: new clients reach it, no open WebSocket is dropped', async () => {
  const { redis, env, inst, ng, url } = await threeBehindNginx({ db: false });
  const room = `grow-${process.pid}`;
  const old = await connectMany(url, 60, { base: 60, prefix: 'old' });
  for (const c of old) await c.subscribe([room]);
  const D = await startParleyd({ redis, env });
  // The upstreams again, with D after the last server of each.
  const last = inst[inst.length - 1].port;
  const conf = fs.readFileSync(ng.confFile, 'utf8');
  const grown = conf.replace(new RegExp(`^( *server 127\\.0\\.0\\.1:)${last}([^\\n]*)$`, 'gm'), (l, a, b) => `${l}\n${a}${D.port}${b}`);
  eq((grown.match(new RegExp(`127\\.0\\.0\\.1:${D.port}`, 'g')) || []).length, 2, 'D in both upstreams');
  fs.writeFileSync(ng.confFile, grown);
  const before = workers(ng.child.pid);
  const r = await ng.reload();
  eq(r.code, 0, `nginx -s reload: ${r.stderr}`);
  // The reload is done when every worker is a new one (the old ones are shutting down: they keep
  // their connections, and accept no new ones); then new clients from new /24s spread over four.
  await until(() => { const w = workers(ng.child.pid); return w.length > 0 && w.every((x) => !before.includes(x)); }, 10000, 'the new workers');
  const fresh = await connectMany(url, 80, { base: 70, prefix: 'new' });
  const dist = spread(fresh);
  console.log(`  (80 new clients: ${show(dist)}; the 60 older ones: ${show(spread(old))})`);
  eq(dist.size, 4, `instances with new clients (${show(dist)})`);
  for (const c of fresh) await c.subscribe([room]);
  await sleep(1000);
  const dropped = old.filter((c) => c.closeInfo);
  assert(dropped.length === 0, `${dropped.length} of the older clients were closed: ${JSON.stringify(dropped[0] && dropped[0].closeInfo)}`);
  // Both old and new connections still carry messages both ways.
  const everyone = [...old, ...fresh];
  for (const c of everyone) track(c);
  const onD = fresh.find((c) => c.auth.server === D.serverId);
  onD.send({ type: 'message', room, text: 'from the fourth' });
  old[0].send({ type: 'message', room, text: 'from an old one' });
  await until(() => everyone.every((c) => (c.track.rooms.get(room) || []).length >= 2), 10000, 'both messages at everyone');
  await sleep(300);
  for (const c of everyone) eq((c.track.rooms.get(room) || []).map((m) => m.text).sort().join('|'), 'from an old one|from the fourth', `${c.user}'s messages`);
  assert(old.every((c) => c.open), 'an older client was closed');
}, { timeout: 90000 });

test('cluster nginx: an instance drained over the API while still in nginx: new clients through nginx never see its 503, they reach the others (proxy_next_upstream http_503)', async () => {
  const redis = await startRedis();
  const env = { PARLEY_OPEN_ROOMS: 1, PARLEY_TRUSTED_PROXIES: '127.0.0.1' };
  // The victim drains over 60 s, so it is still up, answering 503, while the clients come.
  const victim = await startParleyd({ redis, env: { ...env, PARLEY_DRAIN_SECONDS: 60 } });
  const inst = [victim, await startParleyd({ redis, env }), await startParleyd({ redis, env })];
  const url = `ws://127.0.0.1:${(await startNginx(inst)).port}/ws`;
  // Its own clients: the first of each shard goes at once, the others over the 60 s.
  const held = [];
  for (let i = 0; i < 10; i++) held.push(await connectAuthed(victim));
  const r = await httpRequest(victim.port, 'POST', '/api/admin/drain', { headers: { Authorization: `Bearer ${API_KEY}` } });
  eq(r.status, 202, 'drain');
  eq((await httpRequest(victim.port, 'GET', '/health')).status, 503, 'the victim answers 503');
  // 60 new clients from 60 /24s: ip_hash sends about a third to the victim first.
  const clients = await connectMany(url, 60, { base: 200, prefix: 'next' });
  const where = spread(clients);
  console.log(`  (60 new clients during the drain: ${show(where)})`);
  eq(where.get(victim.serverId) || 0, 0, 'none on the draining instance');
  eq([...where.values()].reduce((a, b) => a + b, 0), 60, 'all connected');
  assert(held.filter((c) => c.open).length >= 6, 'the draining instance still has most of its clients (the drain is spread over 60 s)');
  assert(victim.running, 'the draining instance still runs: its 503s were what nginx passed on');
});

// ---------------------------------------------------------------- deploy/cluster
const CLUSTER = path.join(ROOT, 'deploy/cluster');

// deploy/cluster with its state in a private directory (not a developer's var/), with `env`
// added to what it passes its instances; stopped at the end of the test if the test did not.
function scriptCluster(extra = {}) {
  fs.chmodSync(tmpDir(), 0o711); // nginx's workers (nobody) reach its temp paths under it
  const dir = fs.mkdtempSync(path.join(tmpDir(), 'var-'));
  fs.chmodSync(dir, 0o755);
  // Library clients here send faster than PARLEY_RATE_LIMIT's default allows a person.
  const env = { ...process.env, PARLEY_VAR: dir, PARLEY_JWT_SECRET: SECRET, PARLEY_RATE_LIMIT: '0', PARLEY_SUBSCRIBE_RATE: '0', ...extra };
  for (const k of ['PARLEY_REDIS_URL', 'PARLEY_DATABASE_URL', 'PARLEY_CLUSTER_DIR', 'PARLEY_CLUSTER_SPACING']) if (!(k in extra)) delete env[k];
  const cl = { dir, cdir: path.join(dir, 'cluster'), env, stopped: false };
  cl.run = async (...args) => {
    const r = await runCmd(CLUSTER, args, { env, timeout: 180000 });
    if (r.code !== 0 && args[0] !== 'status') throw new Error(`deploy/cluster ${args.join(' ')}: exit ${r.code}: ${r.stderr}${r.stdout}`);
    if (args[0] === 'stop') cl.stopped = true;
    return r;
  };
  cl.ids = () => fs.readdirSync(path.join(cl.cdir, 'instances')).filter((x) => /^\d+$/.test(x)).sort();
  cl.port = (id) => Number(fs.readFileSync(path.join(cl.cdir, 'instances', id, 'port'), 'utf8'));
  current.cleanups.push(async () => { if (!cl.stopped) await runCmd(CLUSTER, ['stop'], { env, timeout: 120000 }).catch(() => {}); });
  return cl;
}

test('cluster script: start 3, status, add, remove, rolling-restart under a library client sending through nginx (every acked message received once), stop leaves none of its processes', async () => {
  const cl = scriptCluster({ PARLEY_DRAIN_SECONDS: '2' });
  const { run, cdir, dir } = cl;
  const seen = new Set(); // every PID the script started: instances, nginx's master
  const pids = () => {
    const out = {};
    for (const id of fs.existsSync(path.join(cdir, 'instances')) ? fs.readdirSync(path.join(cdir, 'instances')) : []) {
      out[id] = Number(fs.readFileSync(path.join(cdir, 'instances', id, 'pid'), 'utf8'));
      seen.add(out[id]);
    }
    const n = path.join(cdir, 'nginx/nginx.pid');
    if (fs.existsSync(n)) seen.add(Number(fs.readFileSync(n, 'utf8')));
    return out;
  };
  // Running: it exists and is no zombie (an exited instance's parent is init, or whoever reaps).
  const alive = (pid) => { try { return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8')); } catch { return false; } };
  const t0 = Date.now();
  const started = await run('start', '3');
  const m = /Open the chat: (http:\/\/127\.0\.0\.1:(\d+)\/)/.exec(started.stdout);
  assert(m, `the banner names the page's URL: ${started.stdout}`);
  const port = Number(m[2]);
  const page = await httpRequest(port, 'GET', '/');
  assert(page.status === 200 && /<html/i.test(page.text), `the chat page through nginx: ${page.status}`);
  const st = await run('status');
  eq(st.code, 0, `status exit code (${st.stdout})`);
  eq((st.stdout.match(/^instance \d+: cluster-\d+ 127\.0\.0\.1:\d+ running .*\/health 200$/gm) || []).length, 3, `status lists 3 healthy instances:\n${st.stdout}`);
  const first = pids();
  eq(Object.keys(first).length, 3, 'instances');
  const health = await Promise.all(Object.keys(first).map(async (id) => {
    const p = Number(fs.readFileSync(path.join(cdir, 'instances', id, 'port'), 'utf8'));
    return (await httpRequest(p, 'GET', '/health')).json.server_id;
  }));
  eq(new Set(health).size, 3, `distinct server ids: ${health}`);
  console.log(`  (started 3 instances and nginx in ${Date.now() - t0} ms: ${health.join(', ')})`);

  // Library clients through nginx from six /24s: one sends the whole time, all receive.
  const url = `ws://127.0.0.1:${port}/ws`;
  const room = `script-${process.pid}`;
  const clients = Array.from({ length: 6 }, (_, i) => libClient(url, newUser('s'), addr(i, 90)));
  await Promise.all(clients.map((c) => c.connect()));
  await Promise.all(clients.map((c) => c.subscribe(room)));
  const sender = clients[0];
  const sends = new Map();
  let sending = true;
  const pump = (async () => {
    for (let k = 0; sending && k < 5000; k++) {
      sends.set(`s-${k}`, sender.send(room, `#${k}`, { cid: `s-${k}` }));
      await sleep(25);
    }
  })();

  // A probe through nginx the whole time: /health (least_conn) every 100 ms and a new WebSocket
  // from a new /24 (ip_hash) every 250 ms must never fail: no 502 while instances come and go.
  const probe = { health: new Map(), ws: 0, wsFailed: [] };
  let probing = true;
  const probes = (async () => {
    for (let k = 0; probing && k < 3000; k++) {
      const h = await httpRequest(port, 'GET', '/health', { timeout: 3000 }).catch((e) => ({ status: e.message }));
      probe.health.set(h.status, (probe.health.get(h.status) || 0) + 1);
      if (k % 3 === 0) {
        try {
          const c = await connectAuthed(url, newUser('probe'), { wsOptions: { localAddress: addr(k / 3, 120) } });
          probe.ws++;
          c.ws.terminate();
        } catch (e) { probe.wsFailed.push(e.message); }
      }
      await sleep(100);
    }
  })();
  await sleep(500);
  await run('add');
  const afterAdd = pids();
  eq(Object.keys(afterAdd).length, 4, 'instances after add');
  assert(alive(afterAdd['4']), 'instance 4 runs');
  eq((await run('status')).code, 0, 'status after add');
  assert(/127\.0\.0\.1:\d+ max_fails/.test(fs.readFileSync(path.join(cdir, 'nginx/nginx.conf'), 'utf8')), 'the generated configuration keeps max_fails');
  const conf = fs.readFileSync(path.join(cdir, 'nginx/nginx.conf'), 'utf8');
  eq((conf.match(/^ *server 127\.0\.0\.1:\d+ max_fails/gm) || []).length, 8, 'four servers in each of the two upstreams');
  await sleep(500);
  await run('remove', '2');
  assert(!alive(first['2']), 'instance 2 has exited');
  const afterRemove = pids();
  eq(Object.keys(afterRemove).sort().join(','), '1,3,4', 'instances after remove 2');
  await sleep(500);
  const tr = Date.now();
  const rr = await run('rolling-restart');
  const rrMs = Date.now() - tr;
  const afterRestart = pids();
  for (const id of ['1', '3', '4']) {
    assert(afterRestart[id] !== afterRemove[id] && !alive(afterRemove[id]), `instance ${id} was restarted`);
    assert(alive(afterRestart[id]), `instance ${id} runs again`);
  }
  assert(/waiting 10s before the next instance/.test(rr.stderr), `the spacing is nginx's fail_timeout (10 s): ${rr.stderr}`);
  sending = false;
  probing = false;
  await pump;
  await probes;
  const codes = [...probe.health].map(([k, v]) => `${k}: ${v}`).join(', ');
  assert(probe.health.size === 1 && probe.health.has(200), `/health through nginx during add, remove and rolling restart: ${codes}`);
  assert(probe.wsFailed.length === 0, `${probe.wsFailed.length} of ${probe.ws + probe.wsFailed.length} new WebSockets through nginx failed: ${probe.wsFailed.slice(0, 3)}`);
  const N = sends.size;
  const acked = new Map();
  await Promise.race([
    Promise.all([...sends].map(async ([cid, p]) => acked.set(cid, await p))),
    sleep(60000).then(() => { throw new Error(`not every send acked in 60 s: ${sender.pending.length} pending`); }),
  ]);
  eq(acked.size, N, 'acked sends');
  await until(() => clients.every((c) => c.seen.length >= N), 20000, 'every message at every client');
  await sleep(300);
  for (const c of clients) libExactlyOnce(c, N, acked);
  const reconnects = clients.map((c) => c.closes);
  console.log(`  (probes through nginx meanwhile: /health ${codes}; ${probe.ws} new WebSockets, none refused)`);
  console.log(`  (add, remove, rolling restart in ${rrMs} ms; ${N} messages sent and acked, received once each by 6 clients; reconnects per client ${reconnects.join('/')})`);

  for (const c of clients) c.close();
  await run('stop');
  const left = [...seen].filter(alive);
  eq(left.length, 0, `PIDs of the cluster still running after stop: ${left}`);
  const st2 = await run('status');
  assert(st2.code !== 0 && /^nginx: stopped$/m.test(st2.stdout), `status after stop: ${st2.stdout}`);
  for (const f of ['redis/redis.pid']) assert(!fs.existsSync(path.join(dir, f)), `${f} left behind: its service was started by the cluster and must be stopped`);
}, { timeout: 240000 });

test('cluster script: rolling restart with the drain under 30 library clients sending through nginx: every acked message received once by all, /health 503 "draining" on each instance as it drains; deploy/cluster rebalance evens out the load it leaves', async () => {
  const cl = scriptCluster({ PARLEY_DRAIN_SECONDS: '2', PARLEY_CLUSTER_SPACING: '3' });
  const started = await cl.run('start', '3');
  const port = Number(/Open the chat: http:\/\/127\.0\.0\.1:(\d+)\//.exec(started.stdout)[1]);
  const ids = cl.ids();
  const ports = new Map(ids.map((id) => [id, cl.port(id)]));
  const sessions = async () => {
    const out = [];
    for (const [id, p] of ports) out.push(`${id}:${(await httpRequest(p, 'GET', '/api/websocket/status')).json.sessions}`);
    return out.join(' ');
  };
  const counts = (line) => line.split(' ').map((x) => Number(x.split(':')[1]));

  // Each instance's own /health, every 100 ms (nginx never sends there while it drains: the
  // script marks it down first).
  const drains = new Map(ids.map((id) => [id, 0]));
  let probing = true;
  const probe = (async () => {
    for (let k = 0; probing && k < 2000; k++) {
      await Promise.all([...ports].map(async ([id, p]) => {
        const h = await httpRequest(p, 'GET', '/health', { timeout: 1000 }).catch(() => null);
        if (h && h.status === 503 && h.json && h.json.status === 'draining') drains.set(id, drains.get(id) + 1);
      }));
      await sleep(100);
    }
  })();

  const url = `ws://127.0.0.1:${port}/ws`;
  const room = `rolling-${process.pid}`;
  const clients = Array.from({ length: 30 }, (_, i) => libClient(url, newUser('r'), addr(i, 150)));
  await Promise.all(clients.map((c) => c.connect()));
  await Promise.all(clients.map((c) => c.subscribe(room)));
  const before = await sessions();
  // Three senders, each a message every 30 ms, through everything that follows.
  const sends = new Map();
  let sending = true;
  const pumps = clients.slice(0, 3).map(async (c, j) => {
    for (let k = 0; sending && k < 3000; k++) {
      const cid = `r${j}-${k}`;
      sends.set(cid, c.send(room, `#${j}.${k}`, { cid }));
      await sleep(30);
    }
  });
  await sleep(500);
  const t0 = Date.now();
  await cl.run('rolling-restart');
  const restartMs = Date.now() - t0;
  await sleep(1000);
  const after = await sessions();
  const rb = await cl.run('rebalance');
  const balanced = await sessions();
  await sleep(500);
  sending = false;
  await Promise.all(pumps);
  probing = false;
  await probe;

  const acked = new Map();
  await Promise.race([
    Promise.all([...sends].map(async ([cid, p]) => acked.set(cid, await p))),
    sleep(60000).then(() => { throw new Error('not every send acked in 60 s'); }),
  ]);
  const N = sends.size;
  eq(acked.size, N, 'acked sends');
  await until(() => clients.every((c) => c.seen.length >= N), 20000, 'every message at every client');
  await sleep(300);
  for (const c of clients) libExactlyOnce(c, N, acked);
  for (const [id, n] of drains) assert(n > 0, `instance ${id}: /health never answered 503 "draining" while it drained`);
  const spreadOf = (line) => Math.max(...counts(line)) - Math.min(...counts(line));
  console.log(`  (rolling restart of 3 with a 2 s drain each in ${restartMs} ms; ${N} messages sent, ${acked.size} acked, each received once by 30 clients: 0 lost, 0 duplicates; reconnects per client ${clients.map((c) => c.closes).join('/')})`);
  console.log(`  (/health 503 "draining" seen per instance: ${[...drains].map(([id, n]) => `${id}:${n}`).join(' ')})`);
  console.log(`  (clients per instance: before ${before}; after the rolling restart ${after}; after deploy/cluster rebalance ${balanced})`);
  assert(/clients per instance before: .*after: /s.test(rb.stderr), `rebalance reports the spread: ${rb.stderr}`);
  eq(counts(balanced).reduce((a, b) => a + b, 0), 30, 'every client is connected after the rebalance');
  // Every client back on the instance its address hashes to: the spread they started with.
  eq(balanced, before, `the rebalance restored the spread (after the restart ${after})`);
  for (const c of clients) c.close();
  await cl.run('stop');
}, { timeout: 240000 });

test('cluster nginx: deploy/nginx.conf as shipped: /ws to an ip_hash upstream with upgrade headers and timeouts above the idle timeout, the API to least_conn, passive health on every server', async () => {
  const conf = fs.readFileSync(path.join(ROOT, 'deploy/nginx.conf'), 'utf8');
  const block = (re) => { // the text of the { ... } block that follows re
    const m = re.exec(conf);
    assert(m, `no ${re} in deploy/nginx.conf`);
    const i = conf.indexOf('{', m.index);
    let depth = 0, j = i;
    do { depth += conf[j] === '{' ? 1 : conf[j] === '}' ? -1 : 0; j++; } while (depth > 0 && j < conf.length);
    return conf.slice(i, j);
  };
  const live = (b) => b.split('\n').map((l) => l.replace(/#.*/, '').trim()).filter(Boolean);
  const ws = live(block(/upstream parley_ws/)), api = live(block(/upstream parley_api/)), loc = live(block(/location \/ws/));
  assert(ws.includes('ip_hash;'), `ip_hash in parley_ws: ${ws}`);
  assert(api.includes('least_conn;'), `least_conn in parley_api: ${api}`);
  for (const l of [...ws, ...api].filter((x) => x.startsWith('server '))) assert(/max_fails=\d+ fail_timeout=\d+s/.test(l), `passive health on ${l}`);
  for (const h of ['Upgrade $http_upgrade', 'Connection $connection_upgrade', 'X-Forwarded-For $proxy_add_x_forwarded_for'])
    assert(loc.includes(`proxy_set_header ${h};`), `/ws sets ${h}`);
  assert(loc.includes('proxy_next_upstream error timeout http_503;'), '/ws passes a draining instance\'s 503 on to the next server');
  // The server's defaults: ping after 30 s of silence, close after 75 s (docs/protocol.md).
  for (const t of ['proxy_read_timeout', 'proxy_send_timeout']) {
    const m = loc.map((l) => new RegExp(`^${t} (\\d+)s;$`).exec(l)).find(Boolean);
    assert(m && Number(m[1]) > 75, `${t} in /ws above the idle timeout (75 s): ${m && m[0]}`);
  }
  assert(/^\s*# hash \$remote_addr consistent;$/m.test(block(/upstream parley_ws/)), 'the consistent-hash alternative is shown in parley_ws');
});
