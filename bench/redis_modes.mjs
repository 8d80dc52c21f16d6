// make bench-redis-modes: what Redis pays per published room message, and what the instances
// pay, for 2, 4 and 6 parleyd instances on one Redis, in PARLEY_SUBSCRIBE=pattern and =rooms,
// and on a local Redis Cluster (PARLEY_REDIS_CLUSTER=1: 3 masters with a replica each,
// deploy/dev/redis-cluster.sh; every node's CPU and bytes summed, the replication to the replicas
// and the WAIT of each message included), side by side in one run (issue 15; the model built on
// these figures is docs/scaling.md).
//
// Each configuration gets a fresh redis-server and K fresh parleyd (one shard each, no
// database: the Redis side of a message is the same with one), then ROOMS rooms of 10 members,
// each member a WebSocket (Node `ws`, test/integration/lib.mjs) on an instance chosen by the
// placement:
//   random: each member on a random instance (what nginx's ip_hash does to a room's members);
//   room:   all members of a room on one instance (room-affine routing, the best case for rooms
//           mode; pattern mode does not care).
// Traffic: RATE messages per second (with a cid, as clients send them) from random members for
// SECONDS, after a second of warm-up. Measured over the traffic, from the outside:
//   Redis CPU: utime+stime of redis-server (/proc/PID/stat), per message;
//   Redis output bytes: INFO stats total_net_output_bytes, per message (replies to the
//     publishing instances and Pub/Sub deliveries to the subscribing ones);
//   Pub/Sub deliveries: the instances' parley_subscriber_messages_total, per message;
//   parleyd CPU: all K instances together, per message;
//   and that every message reached all 10 members of its room once (lost and duplicates).
// Then Redis's Pub/Sub cost alone, the constant the model needs: redis-benchmark PUBLISHes
// PS_N messages of the size of a room message (pipelined, as a busy Redis sees them) to 0, 1,
// 2, 6 and 20 subscriber connections, each holding `PSUBSCRIBE room:*` or `SUBSCRIBE room:x`;
// Redis CPU per PUBLISH, and per delivery.
// Settings: RM_SECONDS (10), RM_RATE (1000), RM_ROOMS (100), RM_INSTANCES ("2,4,6"),
// RM_PLACEMENTS ("random,room"), RM_MODES ("pattern,rooms,cluster"), RM_WAIT_REPLICAS (cluster
// mode's PARLEY_REDIS_WAIT_REPLICAS, default 1). Writes
// bench/results/<date>-redis-modes.md and prints it.
// Bounded: every phase has a deadline; the whole run stops by itself.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
  startRedis, startParleyd, connectAuthed, redisCli, httpRequest, cleanupCurrent, runCmd, sleep, ROOT,
  RedisCluster, current,
} from '../test/integration/lib.mjs';

const num = (name, dflt) => {
  const v = process.env[name];
  const n = v === undefined || v === '' ? dflt : Number(v);
  if (!Number.isFinite(n) || n <= 0) { console.error(`redis-modes: ${name} must be a positive number`); process.exit(2); }
  return n;
};
const SECONDS = num('RM_SECONDS', 10);
const RATE = num('RM_RATE', 1000);
const ROOMS = Math.round(num('RM_ROOMS', 100));
const MEMBERS = 10;
const INSTANCES = (process.env.RM_INSTANCES || '2,4,6').split(',').map(Number);
const PLACEMENTS = (process.env.RM_PLACEMENTS || 'random,room').split(',');
const MODES = (process.env.RM_MODES || 'pattern,rooms,cluster').split(',');
const WAIT_REPLICAS = process.env.RM_WAIT_REPLICAS || '1';
const HZ = 100; // clock ticks per second (getconf CLK_TCK on Linux)

const hard = setTimeout(() => { console.error('redis-modes: hard time limit reached'); process.exit(1); },
  (INSTANCES.length * PLACEMENTS.length * MODES.length * (SECONDS + 90) + 120) * 1000);
hard.unref();

function cpuUs(pid) {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) * (1e6 / HZ); // utime, stime
}

// INFO stats of one Redis, or summed over every node of a cluster (replicas too).
async function redisInfo(redis) {
  const out = {};
  const nodes = redis.isCluster ? redis.ports.map((port) => ({ port })) : [redis];
  for (const node of nodes) {
    for (const line of (await redisCli(node, 'INFO', 'stats')).split('\n')) {
      const [k, v] = line.trim().split(':');
      if (v !== undefined) out[k] = (out[k] || 0) + Number(v);
    }
  }
  return out;
}

// The redis-server processes: one, or every node of a cluster.
function redisPids(redis) {
  if (!redis.isCluster) return [redis.child.pid];
  return redis.ports.map((p) => Number(fs.readFileSync(path.join(redis.dir, String(p), 'redis.pid'), 'utf8')));
}
const redisCpuUs = (pids) => pids.reduce((a, pid) => a + cpuUs(pid), 0);

async function subscriberMessages(p) {
  const r = await httpRequest(p.port, 'GET', '/metrics');
  const line = r.text.split('\n').find((l) => l.startsWith('parley_subscriber_messages_total '));
  return Number(line.split(' ')[1]);
}

// A small PRNG so that every configuration gets the same placements and traffic.
function rng(seed) {
  let s = seed >>> 0;
  return () => { s = (s * 1664525 + 1013904223) >>> 0; return s / 4294967296; };
}

async function one(k, placement, mode) {
  let redis;
  if (mode === 'cluster') {
    redis = new RedisCluster();
    current.procs.push(redis);
    await redis.start();
  } else {
    redis = await startRedis();
  }
  const pids = redisPids(redis);
  const inst = [];
  for (let i = 0; i < k; i++) {
    inst.push(await startParleyd({
      redis,
      env: { ...(mode === 'cluster' ? { PARLEY_REDIS_WAIT_REPLICAS: WAIT_REPLICAS } : { PARLEY_SUBSCRIBE: mode }), PARLEY_SHARDS: 1, PARLEY_OPEN_ROOMS: 1, PARLEY_LOG_LEVEL: 'warn', PARLEY_MAX_CONNS_PER_IP: 0 },
    }));
  }
  const rand = rng(42);
  const members = []; // [room][member] -> client
  const seen = new Map(); // text -> deliveries
  let dups = 0;
  for (let r = 0; r < ROOMS; r++) {
    members.push([]);
    const home = Math.floor(rand() * k);
    for (let m = 0; m < MEMBERS; m++) {
      const at = placement === 'room' ? home : Math.floor(rand() * k);
      const c = await connectAuthed(inst[at], `rm-${r}-${m}`);
      c.onFrame = (f) => {
        const j = f.json;
        if (!j || j.type !== 'message') return j && (j.type === 'presence' || j.type === 'ack');
        const n = (seen.get(j.text) || 0) + 1;
        if (n > MEMBERS) dups++;
        seen.set(j.text, n);
        return true;
      };
      members[r].push(c);
    }
  }
  await Promise.all(members.flat().map((c, i) => c.subscribe([`room-${Math.floor(i / MEMBERS)}`], 20000)));
  const held = new Set();
  for (let r = 0; r < ROOMS; r++) for (const c of members[r]) held.add(`${c.ws.url.split('/ws')[0]}|${r}`);
  const send = (count, prefix) => new Promise((resolve) => {
    let sent = 0;
    const t0 = Date.now();
    const tick = setInterval(() => {
      const due = Math.min(count, Math.floor(((Date.now() - t0) / 1000) * RATE));
      for (; sent < due; sent++) {
        const r = Math.floor(rand() * ROOMS), m = Math.floor(rand() * MEMBERS);
        members[r][m].send({ type: 'message', room: `room-${r}`, text: `${prefix}${sent}`, cid: `${prefix}${sent}` });
      }
      if (sent >= count) { clearInterval(tick); resolve(sent); }
    }, 5);
  });
  await send(RATE, 'w'); // warm-up
  await sleep(1000);
  const n = Math.round(RATE * SECONDS);
  const r0 = redisCpuUs(pids), i0 = await redisInfo(redis);
  const p0 = inst.map((p) => cpuUs(p.child.pid));
  const s0 = await Promise.all(inst.map(subscriberMessages));
  await send(n, 'm');
  // Every message delivered to its 10 members, or 10 s more at most.
  const deadline = Date.now() + 10000;
  const complete = () => { let ok = 0; for (let i = 0; i < n; i++) if (seen.get(`m${i}`) >= MEMBERS) ok++; return ok; };
  while (complete() < n && Date.now() < deadline) await sleep(100);
  const r1 = redisCpuUs(pids), i1 = await redisInfo(redis);
  const p1 = inst.map((p) => cpuUs(p.child.pid));
  const s1 = await Promise.all(inst.map(subscriberMessages));
  let lost = 0;
  for (let i = 0; i < n; i++) lost += Math.max(0, MEMBERS - (seen.get(`m${i}`) || 0));
  const subMsgs = s1.reduce((a, v, i) => a + v - s0[i], 0);
  const res = {
    k, placement, mode, n,
    heldPerRoom: held.size / ROOMS,
    redisUs: (r1 - r0) / n,
    outBytes: (i1.total_net_output_bytes - i0.total_net_output_bytes) / n,
    inBytes: (i1.total_net_input_bytes - i0.total_net_input_bytes) / n,
    cmds: (i1.total_commands_processed - i0.total_commands_processed) / n,
    pubsubPerMsg: subMsgs / n,
    parleydUs: p1.reduce((a, v, i) => a + v - p0[i], 0) / n,
    lost, dups,
  };
  for (const c of members.flat()) c.close();
  await cleanupCurrent();
  return res;
}

// Redis CPU per PUBLISH of a room-message-sized payload with `k` subscribers (pattern or channel).
const PS_N = Math.round(num('RM_PUBSUB_N', 200000));
async function pubsubCost(k, pattern) {
  const redis = await startRedis();
  let got = 0;
  const subs = [];
  for (let i = 0; i < k; i++) {
    const s = net.connect(redis.port, '127.0.0.1');
    s.on('data', (d) => { got += d.length; });
    s.on('error', () => {});
    s.write(pattern ? 'PSUBSCRIBE room:*\r\n' : 'SUBSCRIBE room:x\r\n');
    subs.push(s);
  }
  await sleep(300);
  const payload = '{"type":"message","seq":123456,"room":"room-42","id":"1796160082633000001","from":"user-1234","text":"a message of about the size of a chat line","ts":1796160082633,"cid":"c-123456"}';
  const per = payload.length + (pattern ? 40 : 30); // the RESP around each delivery, roughly
  const g0 = got, c0 = cpuUs(redis.child.pid);
  const r = await runCmd('redis-benchmark', ['-p', String(redis.port), '-n', String(PS_N), '-c', '4', '-P', '32', '-q', 'PUBLISH', 'room:x', payload], { timeout: 120000 });
  if (r.code !== 0) throw new Error(`redis-benchmark: ${r.stderr}`);
  const deadline = Date.now() + 10000;
  while (got - g0 < PS_N * k * per * 0.95 && Date.now() < deadline) await sleep(50);
  const us = (cpuUs(redis.child.pid) - c0) / PS_N;
  for (const s of subs) s.destroy();
  await cleanupCurrent();
  return us;
}

const rows = [];
const started = new Date();
console.log(`redis-modes: ${ROOMS} rooms of ${MEMBERS}, ${RATE} msg/s for ${SECONDS} s, instances ${INSTANCES.join('/')}, placements ${PLACEMENTS.join('/')}`);
let failed = false;
for (const k of INSTANCES) {
  for (const placement of PLACEMENTS) {
    for (const mode of MODES) {
      let r;
      try {
        r = await one(k, placement, mode);
      } catch (e) {
        console.error(`redis-modes: ${k} instances, ${placement}, ${mode}: ${e.stack || e}`);
        await cleanupCurrent(); // the redis-server and parleyd it started
        process.exit(1);
      }
      rows.push(r);
      if (r.lost || r.dups) failed = true;
      console.log(`  ${k} instances, ${placement}, ${mode}: Redis ${r.redisUs.toFixed(1)} us/msg, out ${r.outBytes.toFixed(0)} B/msg, ` +
        `pubsub deliveries ${r.pubsubPerMsg.toFixed(2)}/msg (instances holding a room: ${r.heldPerRoom.toFixed(2)}), parleyd ${r.parleydUs.toFixed(1)} us/msg, lost ${r.lost}, dups ${r.dups}`);
    }
  }
}

const psRows = [];
for (const k of [0, 1, 2, 6, 20]) {
  const row = { k };
  for (const pattern of [true, false]) row[pattern ? 'pattern' : 'channel'] = await pubsubCost(k, pattern);
  psRows.push(row);
  console.log(`  PUBLISH to ${k} subscriber(s): Redis ${row.pattern.toFixed(2)} us (pattern), ${row.channel.toFixed(2)} us (channel)`);
}

const f1 = (x) => x.toFixed(1), f0 = (x) => x.toFixed(0), f2 = (x) => x.toFixed(2);
let md = `# Redis cost per message by subscription mode (${started.toISOString()})\n\n` +
  `Command: \`make bench-redis-modes\` (bench/redis_modes.mjs; RM_SECONDS=${SECONDS} RM_RATE=${RATE} RM_ROOMS=${ROOMS} ` +
  `RM_INSTANCES=${INSTANCES.join(',')} RM_PLACEMENTS=${PLACEMENTS.join(',')} RM_MODES=${MODES.join(',')}). ${ROOMS} rooms of ${MEMBERS} members, ` +
  `${RATE} messages/s with cids for ${SECONDS} s; each configuration on a fresh redis-server (cluster: a fresh local cluster of ` +
  `3 masters with a replica each, PARLEY_REDIS_WAIT_REPLICAS=${WAIT_REPLICAS}) and fresh parleyd ` +
  `(1 shard each, no database). Per published message: Redis CPU (utime+stime of redis-server; cluster: all 6 nodes), Redis output bytes ` +
  `(INFO stats; cluster: all nodes, replication included), Pub/Sub messages the instances' subscribers received, parleyd CPU of all instances together.\n\n` +
  `| instances | placement | mode | instances holding a room | Redis CPU µs/msg | Redis out B/msg | Redis in B/msg | Redis commands/msg | Pub/Sub deliveries/msg | parleyd CPU µs/msg (all) | lost | dup |\n` +
  `|---|---|---|---|---|---|---|---|---|---|---|---|\n`;
for (const r of rows) {
  md += `| ${r.k} | ${r.placement} | ${r.mode} | ${f2(r.heldPerRoom)} | ${f1(r.redisUs)} | ${f0(r.outBytes)} | ${f0(r.inBytes)} | ${f1(r.cmds)} | ${f2(r.pubsubPerMsg)} | ${f1(r.parleydUs)} | ${r.lost} | ${r.dups} |\n`;
}
md += `\nRedis CPU per PUBLISH alone (redis-benchmark, ${PS_N} PUBLISHes of a ${'~200'}-byte room message, 4 connections, ` +
  `pipelined 32 deep), by subscriber connections; the last column is the cost of one more delivery, from 0 to 20 subscribers:\n\n` +
  `| subscribers | PSUBSCRIBE room:* µs/PUBLISH | SUBSCRIBE room:x µs/PUBLISH |\n|---|---|---|\n`;
for (const r of psRows) md += `| ${r.k} | ${f2(r.pattern)} | ${f2(r.channel)} |\n`;
const last = psRows[psRows.length - 1], first = psRows[0];
md += `| per delivery (0→${last.k}) | ${f2((last.pattern - first.pattern) / last.k)} | ${f2((last.channel - first.channel) / last.k)} |\n`;
md += `\nMachine: ${(await import('node:os')).cpus().length} CPUs; load average at the end ${(await import('node:os')).loadavg().map((x) => x.toFixed(2)).join(' ')}.\n`;
const file = path.join(ROOT, 'bench/results', `${started.toISOString().slice(0, 19).replace(/[-:]/g, '').replace('T', '-')}-redis-modes.md`);
fs.writeFileSync(file, md);
console.log('\n' + md + `\nwritten to ${path.relative(ROOT, file)}`);
clearTimeout(hard);
process.exit(failed ? 1 : 0);
