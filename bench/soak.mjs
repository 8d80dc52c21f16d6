// make soak: a bounded soak run (SOAK_SECONDS, default 180) of two parleyd instances under mixed
// traffic, with a Redis restart at 1/3 and a PostgreSQL restart at 2/3 of the run.
//
// It starts its own redis-server, PostgreSQL (migrated) and two parleyd on free loopback ports
// (the integration tests' helpers, test/integration/lib.mjs), then drives them with clients built
// on the JavaScript client library (web/parley.js: reconnect, resubscribe with since, outbox resend
// with the same cid), as applications do:
//   - "stable" clients, connected for the whole run, each subscribed to every room: the witnesses.
//     They send room messages too, and receive the churn clients' direct messages;
//   - "churn" clients, continuously connecting and disconnecting (lifetimes of a few seconds to
//     half a minute), subscribing to and unsubscribing from rooms, sending room messages with
//     cids, direct messages to stable users, typing and read positions.
// Every SOAK_SAMPLE seconds it prints per instance VmRSS and open files (/proc), Redis used_memory
// (INFO memory), the DB queue (/health db_queue) and the message counts. At the end it checks the
// criteria it printed at the start (see CRITERIA below) and exits non-zero if any fails.
import fs from 'node:fs';
import {
  Redis, startParleyd, startPostgres, mintToken, httpRequest, redisCli, cleanupCurrent, current,
  tmpDir, sleep, WebSocket,
} from '../test/integration/lib.mjs';
import { ParleyClient } from '../web/parley.js';

const num = (name, dflt) => {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) { console.error(`soak: ${name} must be a positive number, not ${v}`); process.exit(2); }
  return n;
};
const SECONDS = num('SOAK_SECONDS', 180);
const CLIENTS = Math.round(num('SOAK_CLIENTS', 300)); // stable + churn, spread over the two instances
const STABLE = Math.round(num('SOAK_STABLE', 24));
const ROOMS = Math.round(num('SOAK_ROOMS', 16));
const SAMPLE = num('SOAK_SAMPLE', 5);
const STREAM_LEN = 200; // small, so that the streams reach their cap within the run
const CHURN = Math.max(0, CLIENTS - STABLE);
const T = SECONDS * 1000;
if (STABLE < 2 || SECONDS < 30) { console.error('soak: needs SOAK_STABLE >= 2 and SOAK_SECONDS >= 30'); process.exit(2); }

// Tolerances of the criteria, printed with them.
const RSS_FACTOR = 1.10, RSS_SLACK_MIB = 4;
const FD_SLACK = 4;
const REDIS_BYTES_PER_MSG = 512, REDIS_SLACK = 1 << 20;
const DRAIN_MS = 60000;
const CRITERIA = [
  `lost = 0: every acked room message (cid -> id, seq) was received with that id and seq by every stable client (all subscribed to every room for the whole run), every acked DM by its stable recipient, and every acked message is in PostgreSQL (by sender and cid) with the acked id and seq`,
  `every message a stable client sent is acked (its outbox is empty) within ${DRAIN_MS / 1000} s after traffic stops`,
  `RSS: per instance, VmRSS at the end of traffic <= ${RSS_FACTOR} x the largest VmRSS of the middle third + ${RSS_SLACK_MIB} MiB`,
  `open files: per instance, after the churn clients are gone, fds <= fds before churn began (same stable clients connected) + ${FD_SLACK}`,
  `DB queue: db_queue is 0 on both instances within ${DRAIN_MS / 1000} s after traffic stops`,
  `Redis: over the last third, used_memory grows by at most ${REDIS_BYTES_PER_MSG} B per message sent in it (the documented 24 h cid record, docs/redis.md) + ${REDIS_SLACK >> 20} MiB, and every stream is within its cap (XLEN <= 1.1 x PARLEY_STREAM_LEN ${STREAM_LEN} + 100)`,
];

const t0 = Date.now();
const el = () => ((Date.now() - t0) / 1000).toFixed(0).padStart(4);
const log = (s) => console.log(`[${el()}s] ${s}`);

// Hard bound on the whole run, whatever happens: set-up, traffic, drain and checks.
const HARD_MS = T + 240000;
const watchdog = setTimeout(async () => {
  console.error(`soak: still running after ${HARD_MS / 1000} s: giving up`);
  await cleanupCurrent().catch(() => {});
  process.exit(2);
}, HARD_MS);
let stopping = false;
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, async () => {
    if (stopping) process.exit(130);
    stopping = true;
    console.error(`soak: ${sig}: stopping what it started`);
    await cleanupCurrent().catch(() => {});
    process.exit(130);
  });
}

const rand = (n) => Math.floor(Math.random() * n);
const pick = (a) => a[rand(a.length)];
const roomName = (i) => `soak-${i}`;
const allRooms = Array.from({ length: ROOMS }, (_, i) => roomName(i));

// ---------------------------------------------------------------- bookkeeping
const counts = { sent: 0, dmSent: 0, acked: 0, dmAcked: 0, rejected: 0, typing: 0, reads: 0, connects: 0, disconnects: 0, subs: 0, unsubs: 0, unackedAtClose: 0 };
const errorCodes = new Map(); // server error code -> count (every client)
const errorSamples = new Map(); // code -> the first message text
const acked = new Map(); // `${sender}\0${cid}` -> { room, seq, id, to? }
let received = 0; // message frames handed to the stable clients' application
let pauseSends = false;

function countError(e) {
  if (!e || !e.code) return;
  errorCodes.set(e.code, (errorCodes.get(e.code) || 0) + 1);
  if (!errorSamples.has(e.code)) errorSamples.set(e.code, e.message);
}

function makeClient(user, url) {
  const c = new ParleyClient({
    url, WebSocket,
    tokenProvider: async () => mintToken(user),
    reconnect: { initialDelay: 200, maxDelay: 2000, stableAfter: 5000 },
    heartbeat: { interval: 10000, timeout: 5000 },
  });
  c.on('error', countError);
  c.on('state', (s) => { if (s.state === 'reconnecting') c.reconnects = (c.reconnects || 0) + 1; });
  c.reconnects = 0;
  c.userId = user;
  return c;
}

// A send through the library: counted when acked; a final rejection is counted, not retried.
function trackSend(c, promise, target) {
  if (target.to) counts.dmSent++; else counts.sent++;
  return promise.then((a) => {
    acked.set(`${c.userId}\0${a.cid}`, { ...target, seq: a.seq, id: a.id, at: Date.now() - tStart });
    if (target.to) counts.dmAcked++; else counts.acked++;
  }, () => { counts.rejected++; });
}

// ---------------------------------------------------------------- stable clients
function makeStable(i, servers) {
  const user = `stable-${i}`;
  const c = makeClient(user, servers[i % 2].wsUrl);
  c.rooms = new Map(allRooms.map((r) => [r, new Map()])); // room -> seq -> id
  c.dms = new Map(); // `${from}\0${cid}` -> id
  c.gaps = 0; c.typingSeen = 0; c.sends = []; c.n = 0;
  c.cids = new Set(); c.dups = 0; // room messages by sender and cid: one cid twice is a duplicate
  c.on('message', (m) => {
    received++;
    if (m.to !== undefined) { if (m.to === user && m.cid !== undefined) c.dms.set(`${m.from}\0${m.cid}`, m.id); return; }
    const r = c.rooms.get(m.room);
    if (r) r.set(m.seq, m.id);
    if (m.cid !== undefined) {
      const k = `${m.from}\0${m.cid}`;
      if (c.cids.has(k)) c.dups++; else c.cids.add(k);
    }
  });
  c.on('gap', () => { c.gaps++; });
  c.on('typing', () => { c.typingSeen++; });
  return c;
}

// ---------------------------------------------------------------- churn clients
let churnSeq = 0;
const churnLive = new Set();
const freeUsers = Array.from({ length: Math.max(CHURN * 2, 1) }, (_, i) => `churn-${i}`); // a pool: users come back

async function churnSession(servers, stableUsers, deadline) {
  const user = freeUsers.splice(rand(freeUsers.length), 1)[0];
  const c = makeClient(user, pick(servers).wsUrl);
  const id = ++churnSeq;
  churnLive.add(c);
  const life = Date.now() + 3000 + rand(27000);
  const mine = new Set();
  const sends = [];
  try {
    await Promise.race([c.connect(), sleep(10000).then(() => { throw new Error('connect timed out'); })]);
    counts.connects++;
    const want = new Set(Array.from({ length: 1 + rand(3) }, () => pick(allRooms)));
    for (const r of want) { c.subscribe(r).then(() => mine.add(r), () => {}); counts.subs++; }
    let k = 0;
    while (Date.now() < Math.min(life, deadline)) {
      await sleep(500 + rand(1000));
      if (pauseSends) continue;
      const subscribed = [...mine];
      const x = Math.random();
      if (x < 0.45 && subscribed.length) {
        const room = pick(subscribed);
        sends.push(trackSend(c, c.send(room, `c${id} #${k} ${'x'.repeat(rand(200))}`, { cid: `c${id}-${k++}` }), { room }));
      } else if (x < 0.55) {
        // One partner per churn user: the conversations (a seq key and a stream each in Redis)
        // are then all made early on, and what Redis gains later is per message.
        const to = stableUsers[Number(user.slice(6)) % stableUsers.length];
        sends.push(trackSend(c, c.sendDirect(to, `dm c${id} #${k}`, { cid: `c${id}-${k++}` }), { to }));
      } else if (x < 0.70 && subscribed.length) {
        const room = pick(subscribed);
        c.typing(room, true); counts.typing++;
        setTimeout(() => c.typing(room, false), 300 + rand(2000));
      } else if (x < 0.80 && subscribed.length) {
        const room = pick(subscribed);
        c.markRead(room, c.lastSeq(room)); counts.reads++;
      } else if (x < 0.88 && subscribed.length > 1) {
        const room = pick(subscribed);
        mine.delete(room);
        c.unsubscribe(room).catch(() => {}); counts.unsubs++;
      } else if (x < 0.96 && subscribed.length < 4) {
        const room = pick(allRooms);
        if (!mine.has(room)) { c.subscribe(room).then(() => mine.add(room), () => {}); counts.subs++; }
      }
    }
    // Leave politely: wait (bounded) for what is still un-acked, then go.
    const waitUntil = Date.now() + 5000;
    while (c.pending.length && Date.now() < waitUntil) await sleep(100);
  } catch { /* a connect that timed out: the session just ends */ }
  counts.unackedAtClose += c.pending.length;
  c.close();
  counts.disconnects++;
  await Promise.race([Promise.all(sends), sleep(100)]);
  churnLive.delete(c);
  freeUsers.push(user);
}

// ---------------------------------------------------------------- sampling
const samples = []; // { t, phase, inst: [{ rss, fds, dbq }], redisMem, sent, acked, received }
function procStat(pid) {
  try {
    const st = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const rss = Number(/VmRSS:\s+(\d+)/.exec(st)[1]); // KiB
    const fds = fs.readdirSync(`/proc/${pid}/fd`).length;
    return { rss, fds };
  } catch { return { rss: null, fds: null }; }
}
// ms (since tStart) when every instance's /health says `ok(json)` again; null after 30 s.
async function healthyAt(servers, ok) {
  const until = Date.now() + 30000;
  while (Date.now() < until) {
    const h = await Promise.all(servers.map((p) => httpRequest(p.port, 'GET', '/health', { timeout: 2000 }).catch(() => null)));
    if (h.every((r) => r && r.status === 200 && r.json && ok(r.json))) return Date.now() - tStart;
    await sleep(100);
  }
  return null;
}
async function dbQueue(p) {
  try { const r = await httpRequest(p.port, 'GET', '/health', { timeout: 2000 }); return r.json ? r.json.db_queue : null; } catch { return null; }
}
async function redisMemory(redis) {
  try { const m = /used_memory:(\d+)/.exec(await redisCli(redis, 'INFO', 'memory')); return m ? Number(m[1]) : null; } catch { return null; }
}
const mib = (kib) => (kib == null ? '-' : (kib / 1024).toFixed(1));
async function sample(servers, redis, phase) {
  const inst = [];
  for (const p of servers) inst.push({ ...procStat(p.child.pid), dbq: await dbQueue(p) });
  const s = { t: Date.now() - tStart, phase, inst, redisMem: await redisMemory(redis), sent: counts.sent + counts.dmSent, acked: counts.acked + counts.dmAcked, received, clients: churnLive.size };
  samples.push(s);
  const parts = inst.map((x, i) => `${'AB'[i]} rss ${mib(x.rss)} MiB fds ${x.fds ?? '-'} dbq ${x.dbq ?? '-'}`);
  log(`t=${(s.t / 1000).toFixed(0).padStart(3)}s ${phase.padEnd(9)} ${parts.join(' | ')} | redis ${s.redisMem == null ? '-' : (s.redisMem / 1048576).toFixed(2) + ' MiB'} | churn ${s.clients} | sent ${s.sent} acked ${s.acked} recv ${s.received}`);
  return s;
}

// ---------------------------------------------------------------- the run
let tStart = Date.now();
let failures = [];
const restarts = [];
let exitCode = 1;
try {
  log(`soak: ${SECONDS} s, ${CLIENTS} clients (${STABLE} stable, ${CHURN} churning), ${ROOMS} rooms, sample every ${SAMPLE} s`);
  log('pass criteria:');
  CRITERIA.forEach((c, i) => console.log(`    ${i + 1}. ${c}`));
  const redis = new Redis();
  current.procs.push(redis);
  await redis.start();
  const pg = await startPostgres();
  const env = { PARLEY_DATABASE_URL: pg.url, PARLEY_OPEN_ROOMS: 1, PARLEY_STREAM_LEN: STREAM_LEN, PARLEY_LOG_LEVEL: 'info' };
  const servers = [await startParleyd({ redis, env, serverId: `soak-a-${process.pid}` }), await startParleyd({ redis, env, serverId: `soak-b-${process.pid}` })];
  log(`redis :${redis.port}, postgres :${pg.port}, parleyd A :${servers[0].port} (pid ${servers[0].child.pid}), B :${servers[1].port} (pid ${servers[1].child.pid}); logs in ${tmpDir()}`);

  const stable = Array.from({ length: STABLE }, (_, i) => makeStable(i, servers));
  await Promise.all(stable.map((c) => c.connect()));
  await Promise.all(stable.map((c) => c.subscribe(allRooms)));
  const stableUsers = stable.map((c) => c.userId);
  await sleep(1000);
  const base = await sample(servers, redis, 'baseline');

  tStart = Date.now();
  const deadline = tStart + T;
  // Churn: keep CHURN sessions going, each replaced as it ends; ramped over the first 10 s.
  const churnLoop = (async () => {
    const running = new Set();
    while (Date.now() < deadline) {
      const target = Math.min(CHURN, Math.ceil(CHURN * (Date.now() - tStart) / 10000));
      while (running.size < target && Date.now() < deadline) {
        const p = churnSession(servers, stableUsers, deadline);
        running.add(p);
        p.finally(() => running.delete(p));
      }
      await sleep(200);
    }
    await Promise.race([Promise.all(running), sleep(20000)]);
  })();
  // Stable clients send too, one message every ~5 s each, for the whole run.
  const stableLoop = (async () => {
    while (Date.now() < deadline) {
      await sleep(5000 / STABLE);
      if (pauseSends) continue;
      const c = pick(stable), room = pick(allRooms);
      c.sends.push(trackSend(c, c.send(room, `s ${c.userId} #${c.n}`, { cid: `s-${c.n++}` }), { room }));
      if (Math.random() < 0.2) { c.typing(room, true); counts.typing++; }
      if (Math.random() < 0.2) { c.markRead(room, c.lastSeq(room)); counts.reads++; }
    }
  })();
  // The faults, at 1/3 and 2/3.
  const faults = (async () => {
    await sleep(T / 3);
    log('fault: Redis killed (SIGKILL); restarting it empty on the same port in 3 s');
    let at = Date.now();
    await redis.kill();
    await sleep(3000);
    await redis.start();
    const rUp = Date.now() - tStart;
    restarts.push({ what: 'Redis (SIGKILL, restarted empty after 3 s)', at: at - tStart, upAt: rUp, healthy: await healthyAt(servers, (j) => j.redis === 'up') });
    log('fault: Redis is back');
    await sleep(Math.max(0, tStart + (2 * T) / 3 - Date.now()));
    log('fault: PostgreSQL stopped (fast shutdown); starting it again in 5 s');
    at = Date.now();
    await pg.stop();
    await sleep(5000);
    await pg.start();
    const pUp = Date.now() - tStart;
    restarts.push({ what: 'PostgreSQL (fast shutdown, started after 5 s)', at: at - tStart, upAt: pUp, healthy: await healthyAt(servers, (j) => j.database === 'up') });
    log('fault: PostgreSQL is back');
  })();
  const sampler = (async () => {
    while (Date.now() < deadline) {
      await sleep(SAMPLE * 1000);
      const third = (Date.now() - tStart) < T / 3 ? 'first' : (Date.now() - tStart) < (2 * T) / 3 ? 'middle' : 'last';
      await sample(servers, redis, third);
    }
  })();
  await Promise.all([stableLoop, faults, sampler]);
  const endOfTraffic = await sample(servers, redis, 'end');
  pauseSends = true;
  await churnLoop;
  log('traffic stopped; draining');

  // Drain: every stable send acked, the DB queues empty; bounded.
  const drainBy = Date.now() + DRAIN_MS;
  while (Date.now() < drainBy) {
    const pending = stable.reduce((n, c) => n + c.pending.length, 0);
    const q = await Promise.all(servers.map(dbQueue));
    if (pending === 0 && q.every((x) => x === 0)) break;
    await sleep(500);
  }
  await Promise.race([Promise.all(stable.flatMap((c) => c.sends)), sleep(1000)]);
  await sleep(2000); // the last live copies
  const fin = await sample(servers, redis, 'final');
  const drainedIn = Date.now() - (tStart + T);

  // ---------------------------------------------------------------- checks
  const stablePending = stable.reduce((n, c) => n + c.pending.length, 0);
  if (stablePending) failures.push(`criterion 2: ${stablePending} stable sends still un-acked after the drain`);

  // 1. lost: the stable clients' views and PostgreSQL against every ack.
  const rows = await pg.query('SELECT sender, cid, id::text, seq::text, room_id FROM messages WHERE cid IS NOT NULL');
  const stored = new Map(rows.map(([sender, cid, id, seq, room]) => [`${sender}\0${cid}`, { id, seq: Number(seq), room }]));
  const byUser = new Map(stable.map((c) => [c.userId, c]));
  let lostLive = 0, lostDb = 0, lostDm = 0;
  const examples = [], lostMsgs = new Map(); // key -> acked, for messages with any loss
  const lose = (key, a, who, has) => { // who: the stable client that lacks it (or PostgreSQL)
    if (!lostMsgs.has(key)) lostMsgs.set(key, { ...a, key: key.replace('\0', ' '), missing: [] });
    lostMsgs.get(key).missing.push(has === undefined ? who : `${who} has ${has}`);
  };
  for (const [key, a] of acked) {
    const row = stored.get(key);
    if (!row || row.id !== a.id || row.seq !== a.seq) { lostDb++; lose(key, a, 'postgres', row && `${row.id}/${row.seq}`); if (examples.length < 5) examples.push(`not in PostgreSQL as acked: ${key.replace('\0', ' ')} ${JSON.stringify(a)} stored ${JSON.stringify(row)}`); }
    if (a.to !== undefined) {
      const r = byUser.get(a.to);
      if (r && r.dms.get(key) !== a.id) { lostDm++; lose(key, a, a.to); if (examples.length < 5) examples.push(`DM not received by ${a.to}: ${key.replace('\0', ' ')} ${JSON.stringify(a)}`); }
      continue;
    }
    for (const c of stable) {
      if (c.rooms.get(a.room).get(a.seq) !== a.id) { lostLive++; lose(key, a, `${c.userId}@${'AB'[Number(c.userId.slice(7)) % 2]}`, c.rooms.get(a.room).get(a.seq)); if (examples.length < 5) examples.push(`${c.userId} lacks ${a.room} seq ${a.seq} id ${a.id} (has ${c.rooms.get(a.room).get(a.seq)})`); }
    }
  }
  const lost = lostLive + lostDb + lostDm;
  if (lost) failures.push(`criterion 1: ${lostMsgs.size} acked messages lost (room deliveries missing at stable clients ${lostLive}, DMs missing ${lostDm}, not in PostgreSQL ${lostDb}): ${examples.join(' | ')}`);

  // 3. RSS.
  const mid = samples.filter((s) => s.phase === 'middle');
  if (!mid.length) failures.push('criterion 3: no sample in the middle third (SOAK_SAMPLE too long for SOAK_SECONDS)');
  servers.forEach((p, i) => {
    const midMax = Math.max(...mid.map((s) => s.inst[i].rss ?? 0));
    const end = endOfTraffic.inst[i].rss;
    const limit = midMax * RSS_FACTOR + RSS_SLACK_MIB * 1024;
    p.rssReport = { start: base.inst[i].rss, midMax, end, final: fin.inst[i].rss, limit, max: Math.max(...samples.map((s) => s.inst[i].rss ?? 0)) };
    if (mid.length && !(end <= limit)) failures.push(`criterion 3: ${'AB'[i]} RSS ${mib(end)} MiB at the end > ${mib(limit)} MiB (middle third max ${mib(midMax)} MiB)`);
  });
  // 4. open files.
  servers.forEach((p, i) => {
    const b = base.inst[i].fds, f = fin.inst[i].fds;
    p.fdReport = { base: b, final: f, max: Math.max(...samples.map((s) => s.inst[i].fds ?? 0)) };
    if (!(f <= b + FD_SLACK)) failures.push(`criterion 4: ${'AB'[i]} has ${f} open files after churn, ${b} before it`);
  });
  // 5. DB queue.
  const q = fin.inst.map((x) => x.dbq);
  if (!q.every((x) => x === 0)) failures.push(`criterion 5: db_queue ${q.join('/')} after the drain`);
  // 6. Redis memory over the last third, and the stream caps.
  const last = samples.filter((s) => s.phase === 'last' && s.redisMem != null);
  let redisGrowth = null, redisAllowed = null, redisMsgs = 0;
  if (last.length >= 2) {
    const a = last[0], b = endOfTraffic.redisMem != null ? endOfTraffic : last[last.length - 1];
    redisGrowth = b.redisMem - a.redisMem;
    redisMsgs = b.sent - a.sent;
    redisAllowed = redisMsgs * REDIS_BYTES_PER_MSG + REDIS_SLACK;
    if (redisGrowth > redisAllowed) failures.push(`criterion 6: Redis used_memory grew ${(redisGrowth / 1048576).toFixed(2)} MiB over the last third, allowed ${(redisAllowed / 1048576).toFixed(2)} MiB for ${b.sent - a.sent} messages`);
  } else failures.push('criterion 6: too few Redis samples in the last third');
  let maxXlen = 0;
  for (const r of allRooms) maxXlen = Math.max(maxXlen, Number(await redisCli(redis, 'XLEN', `parley:stream:${r}`).catch(() => 0)) || 0);
  if (maxXlen > 1.1 * STREAM_LEN + 100) failures.push(`criterion 6: a stream holds ${maxXlen} entries, cap ${STREAM_LEN}`);
  const dbsize = await redisCli(redis, 'DBSIZE').catch(() => '-');

  // ---------------------------------------------------------------- summary
  const reconnects = stable.reduce((n, c) => n + c.reconnects, 0);
  const gaps = stable.reduce((n, c) => n + c.gaps, 0);
  const dups = stable.reduce((n, c) => n + c.dups, 0);
  const typingSeen = stable.reduce((n, c) => n + c.typingSeen, 0);
  const row = (k, v) => console.log(`| ${k} | ${v} |`);
  console.log('\n## Soak summary\n');
  console.log('| figure | value |');
  console.log('|---|---|');
  row('duration (traffic)', `${SECONDS} s, then ${(drainedIn / 1000).toFixed(1)} s to drain`);
  row('clients', `${STABLE} stable + ${CHURN} churning (${counts.connects} sessions opened, ${counts.disconnects} closed), ${ROOMS} rooms`);
  const secs = (ms) => (ms == null ? 'not within 30 s' : `${(ms / 1000).toFixed(1)} s`);
  for (const r of restarts) row('restart', `${r.what} at ${secs(r.at)}, answering at ${secs(r.upAt)}, both instances' /health up at ${secs(r.healthy)}`);
  servers.forEach((p, i) => {
    const r = p.rssReport, f = p.fdReport;
    row(`${'AB'[i]}: RSS MiB baseline / max middle third / end of traffic / after drain (limit)`, `${mib(r.start)} / ${mib(r.midMax)} / ${mib(r.end)} / ${mib(r.final)} (${mib(r.limit)})`);
    row(`${'AB'[i]}: open files before churn / max / after churn`, `${f.base} / ${f.max} / ${f.final}`);
  });
  row('Redis used_memory MiB baseline / max / end', `${(base.redisMem / 1048576).toFixed(2)} / ${(Math.max(...samples.map((s) => s.redisMem ?? 0)) / 1048576).toFixed(2)} / ${(fin.redisMem / 1048576).toFixed(2)}`);
  row('Redis growth over the last third (allowed)', redisGrowth == null ? '-' : `${(redisGrowth / 1048576).toFixed(2)} MiB, ${Math.round(redisGrowth / Math.max(1, redisMsgs))} B per message (${(redisAllowed / 1048576).toFixed(2)} MiB)`);
  row('Redis keys at the end / longest stream', `${dbsize} / ${maxXlen} (cap ${STREAM_LEN})`);
  row('DB queue max / after drain', `${Math.max(...samples.flatMap((s) => s.inst.map((x) => x.dbq ?? 0)))} / ${q.join(', ')}`);
  row('room messages sent / acked', `${counts.sent} / ${counts.acked}`);
  row('DMs sent / acked', `${counts.dmSent} / ${counts.dmAcked}`);
  row('sends rejected for good / un-acked when a churn client left', `${counts.rejected} / ${counts.unackedAtClose}`);
  row('acked messages lost (missing deliveries to stable clients / DMs missing / not in PostgreSQL)', `${lostMsgs.size} (${lostLive} / ${lostDm} / ${lostDb})`);
  if (lostMsgs.size) {
    const ats = [...lostMsgs.values()].map((a) => a.at);
    row('lost messages were acked at', `${(Math.min(...ats) / 1000).toFixed(1)}-${(Math.max(...ats) / 1000).toFixed(1)} s`);
  }
  row('deliveries to stable clients', received);
  row('typing sent / seen by stable clients; reads sent', `${counts.typing} / ${typingSeen}; ${counts.reads}`);
  row('subscribes / unsubscribes by churn clients', `${counts.subs} / ${counts.unsubs}`);
  row('stable clients: reconnects / gaps reported by the library / a cid delivered twice', `${reconnects} / ${gaps} / ${dups}`);
  row('error frames by code (the first one\'s message)', [...errorCodes].map(([k, v]) => `${k} ${v} ("${errorSamples.get(k)}")`).join(', ') || 'none');
  console.log('');
  if (failures.length) {
    console.log(`FAIL: ${failures.length} criteria failed`);
    for (const f of failures) console.log(`  - ${f}`);
    if (lostMsgs.size) {
      fs.writeFileSync(`${tmpDir()}/lost.json`, JSON.stringify([...lostMsgs.values()], null, 1));
      console.log(`the lost messages, with who lacks each (client@instance, or what it has at that seq): ${tmpDir()}/lost.json`);
    }
    console.log(`logs kept in ${tmpDir()}`);
  } else {
    console.log('PASS: every criterion met');
  }
  exitCode = failures.length ? 1 : 0;
  for (const c of stable) c.close();
} catch (e) {
  console.error(`soak: ${e.stack || e}`);
  console.error(`logs kept in ${current.tmp}`);
  exitCode = 2;
}
await cleanupCurrent().catch(() => {});
if (exitCode === 0 && current.tmp) fs.rmSync(current.tmp, { recursive: true, force: true });
clearTimeout(watchdog);
process.exit(exitCode);
