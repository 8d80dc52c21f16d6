#!/usr/bin/env node
// A minimal stand-in for `k6 run`, for running bench/k6/*.js where k6 cannot be installed (the
// project's machines: no k6 package in Debian, the npm package `k6` is a placeholder). It is
// NOT k6: it implements just the part of k6's API those scripts use, with k6's semantics as
// documented, so that a broken script fails the tests. See README.md beside it.
//
//   node test/k6-standin/k6.mjs run [-e NAME=value]... [--summary-export FILE] SCRIPT
//
// Exit status as k6's: 0, 99 when a threshold fails, 104 for an invalid threshold or options,
// 107 when the script's init code or setup() throws.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { MessageChannel, Worker } from 'node:worker_threads';

const here = path.dirname(fileURLToPath(import.meta.url));
const WebSocket = createRequire(path.join(here, '..', 'package.json'))('ws');

// ---------------------------------------------------------------- arguments
const argv = process.argv.slice(2);
if (argv[0] !== 'run') { console.error('usage: k6.mjs run [-e NAME=value]... [--summary-export FILE] SCRIPT'); process.exit(2); }
const cliEnv = {};
let summaryExport = null, script = null;
for (let i = 1; i < argv.length; i++) {
  const a = argv[i];
  if (a === '-e' || a === '--env') { const kv = argv[++i]; const j = kv.indexOf('='); cliEnv[kv.slice(0, j)] = kv.slice(j + 1); }
  else if (a.startsWith('--env=')) { const kv = a.slice(6); const j = kv.indexOf('='); cliEnv[kv.slice(0, j)] = kv.slice(j + 1); }
  else if (a === '--summary-export') summaryExport = argv[++i];
  else if (a.startsWith('--summary-export=')) summaryExport = a.slice(17);
  else if (a === '-q' || a === '--quiet') { /* no progress bar to hide */ }
  else if (!a.startsWith('-') && !script) script = a;
  else { console.error(`k6 stand-in: option ${a} not implemented`); process.exit(2); }
}
if (!script) { console.error('k6 stand-in: no script'); process.exit(2); }
const ENV = { ...process.env, ...cliEnv }; // k6 run passes the system environment to __ENV too

// ---------------------------------------------------------------- the script, on our modules
const MODULES = { k6: 'k6.mjs', 'k6/http': 'http.mjs', 'k6/ws': 'ws.mjs', 'k6/metrics': 'metrics.mjs' };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'k6-standin-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
const src = fs.readFileSync(script, 'utf8').replace(/(\bfrom\s*|\bimport\s*)(['"])([^'"]+)\2/g, (all, kw, q, spec) => {
  if (MODULES[spec]) return `${kw}${q}${pathToFileURL(path.join(here, 'modules', MODULES[spec])).href}${q}`;
  if (spec === 'k6' || spec.startsWith('k6/')) { console.error(`k6 stand-in: module ${spec} not implemented`); process.exit(107); }
  if (spec.startsWith('.')) return `${kw}${q}${pathToFileURL(path.resolve(path.dirname(script), spec)).href}${q}`;
  return all;
});
const scriptFile = path.join(tmp, 'script.mjs');
fs.writeFileSync(scriptFile, src);

// ---------------------------------------------------------------- metrics
const metrics = new Map(); // name -> { type, isTime, values: [] (trend), count, sum, passes, fails, last }
const BUILTIN = { checks: 'rate', iterations: 'counter', iteration_duration: 'trend', http_reqs: 'counter',
  http_req_duration: 'trend', http_req_failed: 'rate', ws_sessions: 'counter', ws_msgs_sent: 'counter', ws_msgs_received: 'counter', vus: 'gauge' };
const checkCounts = new Map();
function sink(name, type, isTime) {
  let m = metrics.get(name);
  if (!m) { m = { type, isTime: isTime || /duration/.test(name), values: [], count: 0, sum: 0, passes: 0, fails: 0, last: 0 }; metrics.set(name, m); }
  return m;
}
function addSample(name, type, value, tags) {
  const m = sink(name, type);
  m.count++; m.sum += value; m.last = value;
  if (type === 'trend') m.values.push(value);
  if (type === 'rate') { if (value) m.passes++; else m.fails++; }
  if (name === 'checks' && tags && tags.check) {
    const c = checkCounts.get(tags.check) || { passes: 0, fails: 0 };
    if (value) c.passes++; else c.fails++;
    checkCounts.set(tags.check, c);
  }
}
function pct(sorted, p) {
  if (!sorted.length) return 0;
  const x = (p / 100) * (sorted.length - 1), lo = Math.floor(x), hi = Math.ceil(x);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (x - lo);
}
function aggregate(m, durS) {
  if (m.type === 'counter') return { count: m.sum, rate: durS > 0 ? m.sum / durS : 0 };
  if (m.type === 'rate') return { passes: m.passes, fails: m.fails, value: m.count ? m.passes / m.count : 0 };
  if (m.type === 'gauge') return { value: m.last, min: m.count ? Math.min(...m.values, m.last) : 0, max: m.last };
  const s = [...m.values].sort((a, b) => a - b);
  return { avg: s.length ? m.sum / s.length : 0, min: s[0] || 0, med: pct(s, 50), max: s[s.length - 1] || 0, 'p(90)': pct(s, 90), 'p(95)': pct(s, 95) };
}
// A threshold expression on an aggregate: `count==0`, `rate<0.01`, `p(95)<500`, `avg>=2`.
function thresholdPasses(m, expr) {
  const t = /^\s*(count|rate|value|avg|min|max|med|p\((\d+(?:\.\d+)?)\))\s*(<=|>=|===|==|!=|<|>)\s*(-?\d+(?:\.\d+)?)\s*$/.exec(expr);
  if (!t) return null;
  const [, agg, p, op, num] = t;
  const allowed = { counter: ['count', 'rate'], rate: ['rate'], gauge: ['value'], trend: ['avg', 'min', 'max', 'med', 'p'] }[m.type];
  if (!allowed.includes(p ? 'p' : agg)) return null;
  let v;
  if (m.type === 'counter') v = agg === 'count' ? m.sum : m.sum / Math.max(1e-9, runSeconds);
  else if (m.type === 'rate') v = m.count ? m.passes / m.count : 0;
  else if (m.type === 'gauge') v = m.last;
  else { const s = [...m.values].sort((a, b) => a - b); v = p ? pct(s, Number(p)) : { avg: s.length ? m.sum / s.length : 0, min: s[0] || 0, max: s[s.length - 1] || 0, med: pct(s, 50) }[agg]; }
  const n = Number(num);
  return { '<': v < n, '<=': v <= n, '>': v > n, '>=': v >= n, '==': v === n, '===': v === n, '!=': v !== n }[op];
}

// ---------------------------------------------------------------- VUs
const durMs = (d) => {
  if (typeof d === 'number') return d;
  let ms = 0; const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g; let m, seen = '';
  while ((m = re.exec(String(d)))) { ms += Number(m[1]) * { ms: 1, s: 1000, m: 60000, h: 3600000 }[m[2]]; seen += m[0]; }
  if (seen !== String(d)) throw Object.assign(new Error(`invalid duration ${JSON.stringify(d)}`), { exit: 104 });
  return ms;
};
const sockets = new Map();
class VU {
  constructor(n) {
    this.n = n;
    this.sab = new SharedArrayBuffer(4);
    this.sig = new Int32Array(this.sab);
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    this.handlers = [];
    this.worker = new Worker(path.join(here, 'vu.mjs'), { workerData: { vu: n, scriptUrl: pathToFileURL(scriptFile).href, env: ENV, sab: this.sab, port: port2 }, transferList: [port2] });
    this.exited = new Promise((r) => this.worker.once('exit', r));
    this.worker.on('error', (e) => { console.error(`ERRO VU ${n}: ${e && e.stack || e}`); });
    this.worker.on('message', (m) => this.onMessage(m));
  }
  send(m) { this.port.postMessage(m); Atomics.add(this.sig, 0, 1); Atomics.notify(this.sig, 0); }
  next(t) { return new Promise((resolve) => this.handlers.push({ t, resolve })); }
  onMessage(m) {
    if (m.t === 'metric') return addSample(m.name, m.type, m.value, m.tags);
    if (m.t === 'declare') { sink(m.name, m.type, m.isTime); return; }
    if (m.t === 'http') return this.http(m);
    if (m.t === 'ws-open') return this.wsOpen(m);
    if (m.t === 'ws-send') { const s = sockets.get(m.id); if (s && s.readyState === WebSocket.OPEN) s.send(m.data); return; }
    if (m.t === 'ws-ping') { const s = sockets.get(m.id); if (s && s.readyState === WebSocket.OPEN) s.ping(); return; }
    if (m.t === 'ws-close') { const s = sockets.get(m.id); if (s) { try { s.close(m.code || 1000); } catch { s.terminate(); } setTimeout(() => s.terminate(), 3000).unref(); } return; }
    const i = this.handlers.findIndex((h) => h.t.includes(m.t));
    if (i >= 0) this.handlers.splice(i, 1)[0].resolve(m);
  }
  async http(m) {
    const t0 = performance.now();
    let res;
    try {
      const r = await fetch(m.url, { method: m.method, headers: m.headers, body: m.body ?? undefined, signal: AbortSignal.timeout(m.timeout ? durMs(m.timeout) : 60000) });
      const body = await r.text();
      res = { status: r.status, body, headers: Object.fromEntries(r.headers), url: m.url, error: '' };
    } catch (e) {
      res = { status: 0, body: null, headers: {}, url: m.url, error: String(e && e.cause ? e.cause.message || e.cause : e) };
    }
    res.duration = performance.now() - t0;
    this.send({ t: 'http-res', id: m.id, res });
  }
  wsOpen(m) {
    const s = new WebSocket(m.url, { headers: m.headers, perMessageDeflate: false, handshakeTimeout: 60000 });
    let open = false;
    const ev = (e) => this.send({ t: 'ws-event', id: m.id, ...e });
    sockets.set(m.id, s);
    s.on('open', () => { open = true; ev({ ev: 'open', status: 101 }); });
    s.on('unexpected-response', (req, res) => { ev({ ev: 'fail', status: res.statusCode, error: `bad handshake (HTTP ${res.statusCode})` }); req.destroy(); open = true; });
    s.on('message', (data, bin) => ev({ ev: 'message', data: bin ? data : data.toString('utf8') }));
    s.on('ping', () => ev({ ev: 'ping' }));
    s.on('pong', () => ev({ ev: 'pong' }));
    s.on('error', (e) => { if (!open) { open = true; ev({ ev: 'fail', status: 0, error: String(e.message || e) }); } else ev({ ev: 'error', error: String(e.message || e) }); });
    s.on('close', (code) => { sockets.delete(m.id); ev({ ev: 'close', code }); });
  }
}

// ---------------------------------------------------------------- the run
let runSeconds = 0;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function startVU(n) {
  const vu = new VU(n);
  const r = await Promise.race([vu.next(['ready', 'init-error']), vu.exited.then(() => ({ t: 'init-error', error: 'the VU exited' }))]);
  if (r.t === 'init-error') { console.error(`ERRO script error in the init context: ${r.error}`); await stopAll([vu]); process.exit(107); }
  vu.ready = r;
  return vu;
}
async function stopAll(vus) {
  await Promise.all(vus.map(async (v) => { v.send({ t: 'stop' }); if (await Promise.race([v.exited.then(() => true), sleep(2000).then(() => false)]) === false) await v.worker.terminate(); }));
}

// Runs one ramping-vus scenario: VU n (1-based) runs iterations while n <= the target at that
// moment (linear within a stage); a VU ramped down finishes its iteration (k6 would interrupt
// it after gracefulRampDown); at the end of the stages, running iterations get gracefulStop.
async function rampingVus(name, sc, vus, data, counters) {
  const stages = (sc.stages || []).map((s) => ({ ms: durMs(s.duration), target: Number(s.target) }));
  const start = Number(sc.startVUs ?? 1);
  const total = stages.reduce((a, s) => a + s.ms, 0);
  const maxVUs = Math.max(start, ...stages.map((s) => s.target));
  while (vus.length < maxVUs) vus.push(await startVU(vus.length + 1)); // k6 initializes VUs first
  const t0 = Date.now();
  const target = () => {
    let t = Date.now() - t0, from = start;
    for (const s of stages) { if (t < s.ms) return Math.floor(from + (s.target - from) * (t / s.ms)); t -= s.ms; from = s.target; }
    return from;
  };
  const gracefulStop = durMs(sc.gracefulStop || '30s');
  const loops = vus.slice(0, maxVUs).map(async (vu) => {
    for (;;) {
      if (Date.now() - t0 >= total) return;
      if (vu.n > target()) { await sleep(20); continue; }
      vu.send({ t: 'go', iter: vu.iter = (vu.iter ?? -1) + 1, data, fn: sc.exec || 'default' });
      const done = await vu.next(['iter-done']);
      counters.iterations++;
      addSample('iterations', 'counter', 1);
      addSample('iteration_duration', 'trend', done.ms);
      if (done.error) { counters.errors++; console.error(`ERRO[${name}] VU ${vu.n} iteration ${vu.iter}: ${done.error}`); }
    }
  });
  const all = Promise.all(loops);
  await Promise.race([all, sleep(total).then(() => Promise.race([all, sleep(gracefulStop)]))]);
  const late = vus.filter((v) => v.handlers.some((h) => h.t.includes('iter-done')));
  for (const v of late) { console.error(`WARN VU ${v.n}: iteration interrupted after gracefulStop`); await v.worker.terminate(); counters.interrupted++; }
}

const t0 = Date.now();
const vus = [];
const first = await startVU(0); // VU 0 reads the options and runs setup() and teardown()
const options = first.ready.options;
const scenarios = options.scenarios || {};
if (!Object.keys(scenarios).length) { console.error('k6 stand-in: only options.scenarios is implemented'); await stopAll([first]); process.exit(104); }
for (const [n, sc] of Object.entries(scenarios)) {
  if (sc.executor !== 'ramping-vus') { console.error(`k6 stand-in: executor ${sc.executor} (scenario ${n}) not implemented`); await stopAll([first]); process.exit(104); }
}
let data = null;
if (first.ready.hasSetup) {
  first.send({ t: 'setup' });
  const r = await first.next(['setup-done']);
  if (r.error) { console.error(`ERRO setup() failed: ${r.error}`); await stopAll([first]); process.exit(107); }
  data = r.data;
}
const counters = { iterations: 0, errors: 0, interrupted: 0 };
try {
  for (const [n, sc] of Object.entries(scenarios)) await rampingVus(n, sc, vus, data, counters); // one after another
} catch (e) {
  console.error(`ERRO ${e.message}`); await stopAll([first, ...vus]); process.exit(e.exit || 104);
}
await stopAll(vus);
for (const s of sockets.values()) s.terminate();
if (first.ready.hasTeardown) {
  first.send({ t: 'teardown', data });
  const r = await first.next(['teardown-done']);
  if (r.error) console.error(`ERRO teardown() failed: ${r.error}`);
}
await stopAll([first]);
runSeconds = (Date.now() - t0) / 1000;

// ---------------------------------------------------------------- thresholds and summary
let failed = false, invalid = false;
const thresholds = {};
for (const [name, list] of Object.entries(options.thresholds || {})) {
  const base = name.replace(/\{.*\}$/, '');
  if (base !== name) { console.error(`k6 stand-in: thresholds on sub-metrics (${name}) not implemented`); invalid = true; continue; }
  const m = metrics.get(name) || (BUILTIN[name] ? sink(name, BUILTIN[name]) : null);
  if (!m) { console.error(`ERRO invalid threshold: no metric named ${name}`); invalid = true; continue; }
  thresholds[name] = {};
  for (const item of [].concat(list)) {
    const expr = typeof item === 'string' ? item : item.threshold;
    const ok = thresholdPasses(m, expr);
    if (ok === null) { console.error(`ERRO invalid threshold ${JSON.stringify(expr)} on ${name} (${m.type})`); invalid = true; continue; }
    thresholds[name][expr] = ok;
    if (!ok) failed = true;
  }
}
const fmt = (v, isTime) => (isTime ? `${v.toFixed(2)}ms` : Number.isInteger(v) ? String(v) : v.toFixed(4));
const lines = ['', '  k6 stand-in (test/k6-standin: NOT k6) summary', ''];
if (Object.keys(thresholds).length) {
  lines.push('  THRESHOLDS');
  for (const [name, t] of Object.entries(thresholds)) for (const [expr, ok] of Object.entries(t)) lines.push(`    ${ok ? '✓' : '✗'} ${name} '${expr}'`);
  lines.push('');
}
for (const [name, c] of checkCounts) lines.push(`    ${c.fails ? '✗' : '✓'} ${name}: ${c.passes} passed, ${c.fails} failed`);
const exported = { metrics: {}, root_group: { name: '', path: '', checks: {} }, state: { testRunDurationMs: runSeconds * 1000 }, standin: true };
for (const [name, m] of [...metrics].sort(([a], [b]) => a.localeCompare(b))) {
  const agg = aggregate(m, runSeconds);
  lines.push(`    ${name.padEnd(28, '.')}: ${Object.entries(agg).map(([k, v]) => `${k}=${fmt(v, m.isTime && m.type === 'trend')}`).join(' ')}`);
  exported.metrics[name] = { ...agg };
  // k6's --summary-export marks a threshold true when it FAILED (kept for compatibility).
  if (thresholds[name]) exported.metrics[name].thresholds = Object.fromEntries(Object.entries(thresholds[name]).map(([e, ok]) => [e, !ok]));
}
for (const [name, c] of checkCounts) exported.root_group.checks[name] = { name, passes: c.passes, fails: c.fails };
lines.push('', `  iterations: ${counters.iterations} complete, ${counters.errors} with an error, ${counters.interrupted} interrupted; ${runSeconds.toFixed(1)} s`, '');
console.log(lines.join('\n'));
if (summaryExport) fs.writeFileSync(summaryExport, JSON.stringify(exported, null, 2));
if (invalid) { console.error('ERRO some thresholds are invalid'); process.exit(104); }
if (failed) { console.error('ERRO thresholds on metrics have been crossed'); process.exit(99); }
process.exit(0);
