// Helpers for Parley's integration tests: private redis-server and parleyd
// processes, HS256 JWTs minted here with node:crypto, and a promise-based
// client over the npm `ws` package (which shares no code with the server).
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
export const WebSocket = require('ws');

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const PARLEYD = process.env.PARLEYD_BIN || path.join(ROOT, 'build/parleyd');
export const SECRET = 'integration-secret-' + crypto.randomBytes(6).toString('hex');
export const API_KEY = 'integration-api-key';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- TLS
// PARLEY_TEST_TLS=1: every parleyd listens with TLS only (PARLEY_LISTEN=none), and every client
// here (WebSocket, HTTP, raw) talks TLS to it and verifies its certificate against a CA made for
// this run with the openssl CLI. test/run runs the protocol, durable and chat tests so.
export const TLS_MODE = process.env.PARLEY_TEST_TLS === '1';
// Every instance's PARLEY_SUBSCRIBE (unset: parleyd's default, pattern), unless a test sets its own.
export const SUBSCRIBE_MODE = process.env.PARLEY_TEST_SUBSCRIBE || '';
const tlsPorts = new Set();
let tlsDir = null;
// { ca, cert, key, dir }: a CA and a certificate for 127.0.0.1/localhost signed by it (EC P-256).
// `name` makes another pair from the same CA (for reloads).
export function tlsFiles(name = 'server') {
  if (!tlsDir) {
    tlsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-tls-'));
    process.on('exit', () => { try { fs.rmSync(tlsDir, { recursive: true, force: true }); } catch {} });
    const ca = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', path.join(tlsDir, 'ca.key'), '-out', path.join(tlsDir, 'ca.pem'), '-days', '2', '-subj', '/CN=parley test CA'], { encoding: 'utf8' });
    if (ca.status !== 0) throw new Error(`openssl (CA): ${ca.stderr}`);
    fs.writeFileSync(path.join(tlsDir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  }
  const key = path.join(tlsDir, `${name}.key`), cert = path.join(tlsDir, `${name}.pem`), csr = path.join(tlsDir, `${name}.csr`);
  if (!fs.existsSync(cert)) {
    const steps = [
      ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${name}`],
      ['x509', '-req', '-in', csr, '-CA', path.join(tlsDir, 'ca.pem'), '-CAkey', path.join(tlsDir, 'ca.key'), '-CAcreateserial',
        '-out', cert, '-days', '2', '-extfile', path.join(tlsDir, 'ext.cnf')],
    ];
    for (const a of steps) {
      const r = spawnSync('openssl', a, { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`openssl ${a[0]}: ${r.stderr}`);
    }
  }
  return { ca: path.join(tlsDir, 'ca.pem'), cert, key, dir: tlsDir };
}
export const tlsCa = () => fs.readFileSync(tlsFiles().ca);
export const isTlsPort = (port) => tlsPorts.has(port);

// ---------------------------------------------------------------- registry
// Every process and client a test starts is registered with the running test
// so that the runner can clean it up (finally) and print logs on failure.
export const current = { procs: [], clients: [], cleanups: [], tmp: null };

export function tmpDir() {
  if (!current.tmp) current.tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-it-'));
  return current.tmp;
}

export async function cleanupCurrent() {
  current.clusterFlushed = false;
  for (const c of current.clients.splice(0)) { try { c.ws.terminate(); } catch {} }
  for (const fn of current.cleanups.splice(0).reverse()) { try { await fn(); } catch {} }
  const procs = current.procs.splice(0);
  await Promise.all(procs.map((p) => p.stop().catch(() => {})));
  return procs;
}

export function assert(cond, msg) { if (!cond) throw new Error(msg); }
export function eq(actual, expected, what) {
  if (actual !== expected) throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}

// ---------------------------------------------------------------- ports
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

function waitExit(child, ms) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => { child.off('exit', on); resolve(false); }, ms);
    const on = () => { clearTimeout(t); resolve(true); };
    child.once('exit', on);
  });
}

// ---------------------------------------------------------------- redis
export class Redis {
  // args: more redis-server arguments; auth: { user, password } a client logs in with (url, ping).
  constructor(port, { args = [], auth = null } = {}) { this.port = port; this.child = null; this.dir = null; this.args = args; this.auth = auth; }
  get url() {
    const a = this.auth;
    const cred = a ? `${a.user ? encodeURIComponent(a.user) : ''}:${encodeURIComponent(a.password)}@` : '';
    return `redis://${cred}127.0.0.1:${this.port}/0`;
  }
  get name() { return `redis:${this.port}`; }
  get logFile() { return path.join(this.dir, 'redis.log'); }

  async start() {
    if (!this.port) this.port = await freePort();
    if (!this.dir) this.dir = fs.mkdtempSync(path.join(tmpDir(), 'redis-'));
    for (let attempt = 0; attempt < 50; attempt++) {
      const log = fs.openSync(this.logFile, 'a');
      this.child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1',
        '--save', '', '--appendonly', 'no', '--dir', this.dir, '--daemonize', 'no', '--loglevel', 'warning', ...this.args],
        { stdio: ['ignore', log, log] });
      fs.closeSync(log);
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline) {
        if (this.child.exitCode !== null) break;
        if (await redisPing(this.port, this.auth)) return this;
        await sleep(50);
      }
      await this.kill();
      await sleep(200); // port may still be held briefly after a kill: retry on the SAME port
    }
    throw new Error(`redis-server did not start on port ${this.port}; log:\n${readTail(this.logFile)}`);
  }
  async kill() { // SIGKILL: the crash case
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGKILL');
      await waitExit(this.child, 5000);
    }
  }
  async stop() { return this.kill(); }
  logTail() { return this.dir ? readTail(this.logFile) : ''; }
}

export function redisPing(port, auth = null) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    const done = (v) => { s.destroy(); clearTimeout(t); resolve(v); };
    const t = setTimeout(() => done(false), 500);
    const login = auth ? `AUTH ${auth.user ? auth.user + ' ' : ''}${auth.password}\r\n` : '';
    s.on('connect', () => s.write(login + 'PING\r\n'));
    s.on('data', (d) => { buf += d; if (buf.includes('PONG') || /^-/m.test(buf)) done(buf.includes('+PONG')); });
    s.on('error', () => done(false));
  });
}

export async function startRedis() {
  if (REDIS_CLUSTER_MODE) return sharedRedisCluster();
  const r = new Redis();
  current.procs.push(r);
  await r.start();
  return r;
}

// ---------------------------------------------------------------- Redis Cluster
// A private cluster of 3 masters with 1 replica each (deploy/dev/redis-cluster.sh, ~13 s to
// start). parleyd instances started with it as `redis` run in cluster mode.
export class RedisCluster {
  constructor() { this.dir = null; this.seeds = ''; this.isCluster = true; }
  get url() { return `redis://${this.seeds}`; }
  get name() { return `redis cluster ${this.seeds}`; }
  get ports() { return this.seeds.split(',').map((a) => Number(a.split(':')[1])); }
  get port() { return this.ports.find((p) => !this.dead?.has(p)); } // a node not killed
  async start() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-rcluster-'));
    const r = await runCmd(path.join(ROOT, 'deploy/dev/redis-cluster.sh'), ['start', this.dir], { timeout: 90000 });
    if (r.code !== 0) throw new Error(`redis-cluster.sh start: ${r.stderr}${r.stdout}`);
    this.seeds = fs.readFileSync(path.join(this.dir, 'nodes'), 'utf8').trim();
    return this;
  }
  async stop() {
    if (!this.dir) return;
    await runCmd(path.join(ROOT, 'deploy/dev/redis-cluster.sh'), ['stop', this.dir], { timeout: 30000 });
    fs.rmSync(this.dir, { recursive: true, force: true });
    this.dir = null;
  }
  logTail() { return ''; }
  // SIGKILL the node on `port` (the crash case; its replica takes over after cluster-node-timeout).
  killNode(port) {
    const pid = Number(fs.readFileSync(path.join(this.dir, String(port), 'redis.pid'), 'utf8'));
    process.kill(pid, 'SIGKILL');
    (this.dead ||= new Set()).add(port);
  }
  // redis-cli on one node (default: the first seed), -c: following redirections.
  async cli(...args) {
    const port = typeof args[0] === 'number' ? args.shift() : this.port;
    const r = await runCmd('redis-cli', ['-c', '-h', '127.0.0.1', '-p', String(port), ...args.map(String)], { timeout: 20000 });
    if (r.code !== 0) throw new Error(`redis-cli -p ${port} ${args.join(' ')}: ${r.stderr}`);
    return r.stdout.trim();
  }
  // { slot, port, id } of the master serving `key`'s slot, and its replica's { port, id }.
  async ownerOf(key) {
    const slot = Number(await this.cli('CLUSTER', 'KEYSLOT', key));
    const nodes = (await this.cli('CLUSTER', 'NODES')).split('\n').map((l) => l.split(' '));
    for (const n of nodes) {
      if (!/master/.test(n[2]) || /fail/.test(n[2])) continue;
      for (const range of n.slice(8)) {
        if (range.startsWith('[')) continue;
        const [a, b = a] = range.split('-').map(Number);
        if (slot >= a && slot <= b) {
          const rep = nodes.find((m) => m[3] === n[0] && !/fail/.test(m[2]));
          const port = (x) => Number(x[1].split('@')[0].split(':')[1]);
          return { slot, port: port(n), id: n[0], first: a, replica: rep ? { port: port(rep), id: rep[0] } : null };
        }
      }
    }
    throw new Error(`no master serves slot ${slot}`);
  }
  // Every master's { port, id, first } (first: the lowest slot it serves).
  async masters() {
    const nodes = (await this.cli('CLUSTER', 'NODES')).split('\n').map((l) => l.split(' '));
    return nodes.filter((n) => /master/.test(n[2]) && !/fail/.test(n[2]) && n.length > 8)
      .map((n) => ({ port: Number(n[1].split('@')[0].split(':')[1]), id: n[0],
        first: Math.min(...n.slice(8).filter((r) => !r.startsWith('[')).map((r) => Number(r.split('-')[0]))) }));
  }
}

// PARLEY_TEST_REDIS_CLUSTER=1 (test/run's integration-rcluster suite): startRedis() gives every
// test one cluster, started at the first call and stopped when the run ends (atEnd); each test
// finds it empty (FLUSHALL on every master at its first startRedis), as it would a new Redis.
export const REDIS_CLUSTER_MODE = process.env.PARLEY_TEST_REDIS_CLUSTER === '1';
export const atEnd = [];
let sharedCluster = null;
export async function sharedRedisCluster() {
  if (!sharedCluster) {
    sharedCluster = new RedisCluster().start();
    atEnd.push(async () => (await sharedCluster).stop());
  }
  const rc = await sharedCluster;
  if (!current.clusterFlushed) {
    for (const m of await rc.masters()) await rc.cli(m.port, 'FLUSHALL');
    current.clusterFlushed = true;
  }
  return rc;
}

// ---------------------------------------------------------------- parleyd
function readTail(file, lines = 60) {
  try { return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n'); } catch { return ''; }
}

export class Parleyd {
  constructor(opts) { Object.assign(this, opts); this.child = null; }
  get name() { return `parleyd ${this.serverId}`; }
  get wsUrl() { return this.tls === true ? `wss://127.0.0.1:${this.port}/ws` : `ws://127.0.0.1:${this.port}/ws`; }
  get wssUrl() { return `wss://127.0.0.1:${this.tlsPort}/ws`; }
  logTail(n) { return readTail(this.logFile, n); }
  log() { try { return fs.readFileSync(this.logFile, 'utf8'); } catch { return ''; } }

  get running() { return !!this.child && this.child.exitCode === null && this.child.signalCode === null; }

  // Wait up to ms for the process to exit on its own; resolves true if it did.
  async waitExit(ms) {
    const ok = await waitExit(this.child, ms);
    if (ok && !this.exit) this.exit = { code: this.child.exitCode, signal: this.child.signalCode, killed: false };
    return ok;
  }

  // SIGTERM, then SIGKILL after 6 s. Resolves { code, signal, ms, killed }.
  async stop(signal = 'SIGTERM') {
    const c = this.child;
    if (!c) return null;
    if (!this.running && !this.exit) this.exit = { code: c.exitCode, signal: c.signalCode, killed: false };
    if (this.running) {
      const t0 = Date.now();
      c.kill(signal);
      let killed = false;
      if (!(await waitExit(c, 6000))) { killed = true; c.kill('SIGKILL'); await waitExit(c, 5000); }
      this.exit = { code: c.exitCode, signal: c.signalCode, ms: Date.now() - t0, killed };
    }
    return this.exit;
  }
}

let instanceSeq = 0;
// startParleyd({ redis, env: { PARLEY_...: value }, serverId, waitHealthy })
// tls: true (or PARLEY_TEST_TLS=1): TLS only, on `port`; 'both': plain on `port`, TLS on `tlsPort`.
// nofile: the process's open-files limit (ulimit -n), to run it out of descriptors.
export async function startParleyd({ redis, redisUrl, env = {}, serverId, waitHealthy = true, tls: withTls = TLS_MODE, nofile } = {}) {
  if (!fs.existsSync(PARLEYD)) throw new Error(`${PARLEYD} missing: build it with make`);
  const dir = tmpDir();
  serverId = serverId || `it-${process.pid}-${++instanceSeq}`;
  let lastErr;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const tlsPort = withTls === 'both' ? await freePort() : withTls ? port : 0;
    const logFile = path.join(dir, `${serverId}.${attempt}.log`);
    const p = new Parleyd({ port, serverId, logFile, tls: !!withTls, tlsPort });
    const tlsEnv = {};
    // A port is TLS or not per instance: a free port handed out again (an earlier instance's
    // TLS port, now a plain one) must not be spoken to in TLS.
    if (withTls !== true) tlsPorts.delete(port);
    if (withTls) {
      const f = tlsFiles();
      Object.assign(tlsEnv, { PARLEY_TLS_LISTEN: `127.0.0.1:${tlsPort}`, PARLEY_TLS_CERT: f.cert, PARLEY_TLS_KEY: f.key });
      tlsPorts.add(tlsPort);
    }
    const fullEnv = {
      PATH: process.env.PATH, HOME: process.env.HOME || '/tmp', LANG: 'C.UTF-8',
      PARLEY_LISTEN: withTls === true ? 'none' : `127.0.0.1:${port}`, ...tlsEnv,
      PARLEY_REDIS_URL: redisUrl || (redis && redis.url) || 'redis://127.0.0.1:1/0',
      ...(redis && redis.isCluster ? { PARLEY_REDIS_CLUSTER: '1' } : {}),
      PARLEY_JWT_SECRET: SECRET, PARLEY_API_KEY: API_KEY,
      PARLEY_SERVER_ID: serverId, PARLEY_SHARDS: '2',
      // Tests stop instances with SIGTERM: a drain spread over seconds would only slow them.
      // The drain tests set their own.
      PARLEY_DRAIN_SECONDS: '0',
      // Tests send far faster than any person may (PARLEY_RATE_LIMIT's default is for people);
      // limits.test.mjs and the browser test run with the defaults or their own.
      PARLEY_RATE_LIMIT: '0', PARLEY_SUBSCRIBE_RATE: '0',
      // test/run's integration-rooms suite runs tests again in PARLEY_SUBSCRIBE=rooms.
      ...(SUBSCRIBE_MODE ? { PARLEY_SUBSCRIBE: SUBSCRIBE_MODE } : {}),
      ...Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v)])),
    };
    p.env = fullEnv;
    const fd = fs.openSync(logFile, 'a');
    // The shell execs parleyd, so the child's pid is parleyd's.
    p.child = nofile
      ? spawn('/bin/sh', ['-c', `ulimit -n ${Number(nofile)} && exec "$0"`, PARLEYD], { env: fullEnv, stdio: ['ignore', fd, fd] })
      : spawn(PARLEYD, [], { env: fullEnv, stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    p.child.on('error', () => {});
    current.procs.push(p);
    if (!waitHealthy) { await sleep(300); return p; }
    // Under valgrind on a busy machine start-up takes longer (test/checked.sh sets this).
    const deadline = Date.now() + Number(process.env.PARLEY_TEST_START_MS || 20000);
    while (Date.now() < deadline) {
      if (p.child.exitCode !== null || p.child.signalCode !== null) break;
      try {
        const r = await httpRequest(port, 'GET', '/health', { timeout: 1000 });
        // With a running, migrated test database the instance is ready once its pool is
        // connected: tests read the database's state right away, and under the sanitizers the
        // pool connects well after the listener opens.
        const pg = livePostgres.get(fullEnv.PARLEY_DATABASE_URL);
        if (r.status === 200 && (!pg || !pg.running || (r.json && r.json.status) === 'healthy')) return p;
      } catch {}
      await sleep(100);
    }
    const exited = p.child.exitCode !== null || p.child.signalCode !== null;
    lastErr = new Error(`parleyd did not become healthy on port ${port}` +
      (exited ? ` (exited code=${p.child.exitCode} signal=${p.child.signalCode})` : '') +
      `; log:\n${p.logTail()}`);
    await p.stop();
    if (!/address in use|EADDRINUSE/i.test(p.log())) break;
  }
  throw lastErr;
}

// ---------------------------------------------------------------- nginx
// nginx with deploy/nginx.conf itself, only its ports and paths substituted: listening on
// 127.0.0.1:<free port>, both upstreams pointing at `servers` (parleyd instances). Resolves
// { port, dir, confFile, stop(), reload(), logTail() }; stopped at clean-up.
export async function startNginx(servers) {
  // deploy/nginx.conf's two example servers of each upstream become these instances.
  const upstream = (line) => servers.map((s) => line.replace(/127\.0\.0\.1:8080/, `127.0.0.1:${s.port}`)).join('\n');
  return runNginx(path.join(ROOT, 'deploy/nginx.conf'), 'nginx',
    (conf) => conf.replace(/^( *server 127\.0\.0\.1:8080[^\n]*)\n *server 127\.0\.0\.1:8081[^\n]*$/gm, (_, line) => upstream(line)));
}

// Debian's nginx with the configuration in `file`, `edit`ed (its upstreams), then moved into a
// directory of its own: its listen port, pid, logs, temp paths and the web app's root (a copy
// of web/ that nginx's workers, user nobody, may read). Stopped at the end of the test.
export async function runNginx(file, label, edit) {
  const dir = fs.mkdtempSync(path.join(tmpDir(), `${label}-`));
  fs.chmodSync(dir, 0o755);
  const port = await freePort();
  let conf = edit(fs.readFileSync(file, 'utf8'));
  conf = conf.replace(/^( *)listen 80;$/m, `$1listen 127.0.0.1:${port};`);
  conf = conf.replace(/^pid [^\n]*;$/m, `pid ${dir}/nginx.pid;`);
  fs.cpSync(path.join(ROOT, 'web'), path.join(dir, 'web'), { recursive: true, filter: (s) => !/node_modules/.test(s) });
  fs.chmodSync(tmpDir(), 0o711);
  conf = conf.replace(/root \/srv\/parley\/web;/, `root ${dir}/web;`);
  conf = conf.replace(/\/var\/log\/nginx\/access\.log/g, `${dir}/access.log`);
  conf = conf.replace(/^http \{$/m, `http {\n    access_log ${dir}/access.log;\n    client_body_temp_path ${dir}/body;\n    proxy_temp_path ${dir}/proxy;`);
  const confFile = path.join(dir, 'nginx.conf');
  fs.writeFileSync(confFile, conf);
  const errLog = path.join(dir, 'error.log');
  const t = await runCmd('nginx', ['-t', '-p', dir, '-e', errLog, '-c', confFile], { timeout: 10000 });
  if (t.code !== 0) throw new Error(`nginx -t (${path.relative(ROOT, file)}) failed: ${t.stderr}`);
  const child = spawn('nginx', ['-p', dir, '-e', errLog, '-c', confFile, '-g', 'daemon off;'], { stdio: 'ignore' });
  child.on('error', () => {});
  const n = {
    port, dir, confFile, child, name: `${label}:${port}`,
    logTail: (k = 40) => readTail(errLog, k),
    accessLog: () => { try { return fs.readFileSync(path.join(dir, 'access.log'), 'utf8'); } catch { return ''; } },
    reload: () => runCmd('nginx', ['-p', dir, '-e', errLog, '-c', confFile, '-s', 'reload'], { timeout: 10000 }),
    async stop() { if (child.exitCode === null && child.signalCode === null) { child.kill('SIGTERM'); if (!(await waitExit(child, 5000))) { child.kill('SIGKILL'); await waitExit(child, 5000); } } },
  };
  current.procs.push(n);
  await until(async () => { try { return (await httpRequest(port, 'GET', '/health', { timeout: 1000 })).status > 0; } catch { return false; } }, 10000, `${label} to answer`);
  return n;
}

// ---------------------------------------------------------------- HTTP
export function httpRequest(port, method, reqPath, { headers = {}, body, timeout = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    const mod = tlsPorts.has(port) ? https : http;
    const opts = { host: '127.0.0.1', port, method, path: reqPath, headers, agent: false };
    if (mod === https) opts.ca = tlsCa();
    const req = mod.request(opts, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json; try { json = JSON.parse(text); } catch {}
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.setTimeout(timeout, () => req.destroy(new Error(`HTTP ${method} ${reqPath} timed out`)));
    req.on('error', reject);
    if (body !== undefined) req.write(typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body));
    req.end();
  });
}

// Raw TCP exchange: write `data`, collect everything until the peer closes or
// `ms` passes. Resolves { data: Buffer, closed: boolean, ms }.
// A plain TCP connection, or TLS (verifying the test CA) to a TLS port. Either emits 'connect'
// once; what is written before the TLS handshake is done waits for it.
export function rawConnect(port) {
  if (!tlsPorts.has(port)) return net.connect(port, '127.0.0.1');
  return tls.connect({ port, host: '127.0.0.1', ca: tlsCa(), servername: 'localhost' });
}

export function rawExchange(port, data, ms = 3000) {
  return new Promise((resolve) => {
    const s = rawConnect(port);
    const chunks = []; const t0 = Date.now(); let closed = false;
    const t = setTimeout(() => { s.destroy(); finish(); }, ms);
    let done = false;
    const finish = () => { if (done) return; done = true; clearTimeout(t); resolve({ data: Buffer.concat(chunks), closed, ms: Date.now() - t0 }); };
    s.on('connect', () => s.write(data));
    s.on('data', (d) => chunks.push(d));
    s.on('end', () => { closed = true; s.destroy(); finish(); });
    s.on('close', () => { closed = true; finish(); });
    s.on('error', () => { closed = true; finish(); });
  });
}

// ---------------------------------------------------------------- JWT
const b64url = (buf) => Buffer.from(buf).toString('base64url');
export function mintToken(sub, { secret = SECRET, exp, ttl = 3600, extra = {}, header } = {}) {
  const h = header || { alg: 'HS256', typ: 'JWT' };
  const claims = { ...(sub === undefined ? {} : { sub }), iat: Math.floor(Date.now() / 1000), ...extra };
  if (exp !== null) claims.exp = exp !== undefined ? exp : Math.floor(Date.now() / 1000) + ttl;
  const input = `${b64url(JSON.stringify(h))}.${b64url(JSON.stringify(claims))}`;
  const sig = crypto.createHmac('sha256', secret).update(input).digest();
  return `${input}.${b64url(sig)}`;
}
export function verifyToken(token, secret = SECRET) {
  const parts = String(token).split('.');
  if (parts.length !== 3) return null;
  const sig = crypto.createHmac('sha256', secret).update(`${parts[0]}.${parts[1]}`).digest();
  const got = Buffer.from(parts[2], 'base64url');
  if (got.length !== sig.length || !crypto.timingSafeEqual(got, sig)) return null;
  return { header: JSON.parse(Buffer.from(parts[0], 'base64url')), claims: JSON.parse(Buffer.from(parts[1], 'base64url')) };
}

// ---------------------------------------------------------------- client
let userSeq = 0;
export const newUser = (p = 'user') => `${p}-${process.pid}-${++userSeq}`;

export class Client {
  constructor(ws) {
    this.ws = ws;
    this.frames = [];      // not yet consumed: { raw, json, binary }
    this.all = [];         // every frame received (when keepAll)
    this.keepAll = false;
    this.waiters = [];
    this.onFrame = null;   // optional hook (frame) => boolean consumed
    this.pings = 0;
    this.closeInfo = null;
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString(), at: Date.now() };
        resolve(this.closeInfo);
        for (const w of this.waiters.splice(0)) w.reject(new Error(`connection closed (code ${code} ${reason}) while waiting for ${w.what}; unconsumed frames: ${this.describePending()}`));
      });
    });
    ws.on('ping', () => { this.pings++; });
    ws.on('error', () => {});
    ws.on('message', (data, isBinary) => {
      const raw = isBinary ? data : data.toString('utf8');
      let json; if (!isBinary) { try { json = JSON.parse(raw); } catch {} }
      const f = { raw, json, binary: isBinary, at: Date.now() };
      if (this.keepAll) this.all.push(f);
      if (this.onFrame && this.onFrame(f)) return;
      for (let i = 0; i < this.waiters.length; i++) {
        const w = this.waiters[i];
        if (w.pred(f)) { this.waiters.splice(i, 1); clearTimeout(w.timer); w.resolve(f); return; }
      }
      this.frames.push(f);
    });
  }

  get open() { return this.ws.readyState === WebSocket.OPEN; }
  describePending() { return this.frames.slice(-5).map((f) => (f.binary ? '<binary>' : f.raw.slice(0, 200))).join(' | ') || '(none)'; }

  send(obj) { this.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj)); }
  sendRaw(data, opts = {}) { this.ws.send(data, opts); }

  // Next frame (json) matching pred; consumes it and leaves the others queued.
  next(pred = () => true, ms = 5000, what = 'a frame') {
    const p = typeof pred === 'string' ? (f) => f.json && f.json.type === pred : (f) => f.json && pred(f.json, f);
    if (typeof pred === 'string') what = `"${pred}" frame`;
    const i = this.frames.findIndex(p);
    if (i >= 0) return Promise.resolve(this.frames.splice(i, 1)[0]);
    if (this.closeInfo) return Promise.reject(new Error(`connection already closed (code ${this.closeInfo.code} ${this.closeInfo.reason}) while waiting for ${what}`));
    return new Promise((resolve, reject) => {
      const w = { pred: p, resolve, reject, what };
      w.timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`timed out after ${ms} ms waiting for ${what}; unconsumed frames: ${this.describePending()}`));
      }, ms);
      this.waiters.push(w);
    });
  }
  async nextJson(pred, ms, what) { return (await this.next(pred, ms, what)).json; }

  // Resolves if no frame matching pred arrives within ms; throws otherwise.
  async none(pred, ms, what = 'unexpected frame') {
    try { const f = await this.next(pred, ms); throw Object.assign(new Error(`${what}: ${f.raw}`), { got: true }); }
    catch (e) { if (e.got) throw e; if (/connection (already )?closed/.test(e.message)) throw e; }
  }

  async expectError(code, ms = 5000, cid) {
    const f = await this.next((j) => j.type === 'error' || j.type === 'message', ms, `error "${code}"`);
    const j = f.json;
    if (j.type !== 'error') throw new Error(`expected error ${code}, got ${f.raw}`);
    if (j.code !== code) throw new Error(`expected error code ${code}, got ${f.raw}`);
    assert(f.raw.startsWith('{"type":"error"'), `error frame must start with {"type":"error": ${f.raw}`);
    assert(typeof j.message === 'string', `error frame needs a string message: ${f.raw}`);
    if (cid !== undefined) eq(j.cid, cid, `cid echoed in error ${f.raw}`);
    return j;
  }

  async ping(ms = 5000) {
    this.send({ type: 'ping' });
    const f = await this.next('pong', ms);
    eq(f.raw, '{"type":"pong"}', 'pong frame');
    return f;
  }

  async subscribe(rooms, ms = 5000) {
    this.send({ type: 'subscribe', rooms });
    for (const r of rooms) {
      const j = await this.nextJson((x) => x.type === 'subscribed' && x.room === r || x.type === 'error', ms, `subscribed ${r}`);
      if (j.type === 'error') throw new Error(`subscribe ${r}: ${JSON.stringify(j)}`);
    }
  }

  waitClose(ms = 5000) {
    if (this.closeInfo) return Promise.resolve(this.closeInfo);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`connection not closed within ${ms} ms; unconsumed frames: ${this.describePending()}`)), ms);
      this.closed.then((c) => { clearTimeout(t); resolve(c); });
    });
  }
  close() { try { this.ws.close(1000); } catch {} }
}

// connect(urlOrServer, { token, tokenIn: 'header'|'query'|'none', headers, ms })
// Resolves a Client once open; rejects with err.statusCode on a refused upgrade.
export function connect(target, { token, tokenIn = 'header', headers = {}, ms = 5000, wsOptions = {} } = {}) {
  let url = typeof target === 'string' ? target : target.wsUrl;
  const h = { ...headers };
  if (token && tokenIn === 'header') h.Authorization = `Bearer ${token}`;
  if (token && tokenIn === 'query') url += (url.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token);
  return new Promise((resolve, reject) => {
    const tlsOpts = url.startsWith('wss:') ? { ca: tlsCa() } : {};
    const ws = new WebSocket(url, { headers: h, handshakeTimeout: ms, perMessageDeflate: false, ...tlsOpts, ...wsOptions });
    const client = new Client(ws);
    current.clients.push(client);
    let settled = false;
    ws.once('open', () => { settled = true; resolve(client); });
    ws.once('unexpected-response', (req, res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        settled = true;
        const err = new Error(`upgrade refused: HTTP ${res.statusCode}`);
        err.statusCode = res.statusCode; err.body = Buffer.concat(chunks).toString();
        reject(err);
        req.destroy();
      });
    });
    ws.once('error', (e) => { if (!settled) { settled = true; reject(e); } });
  });
}

// Connect with a header token and wait for `authenticated`.
export async function connectAuthed(server, user = newUser(), opts = {}) {
  const c = await connect(server, { token: mintToken(user), ...opts });
  c.user = user;
  c.auth = await c.nextJson('authenticated', 5000);
  return c;
}

// Raw WebSocket upgrade over TCP (for clients that must misbehave).
// Resolves { sock, head (response headers), rest (bytes after headers), accept }.
export function rawUpgrade(port, { token, pathname = '/ws' } = {}) {
  return new Promise((resolve, reject) => {
    const key = crypto.randomBytes(16).toString('base64');
    const s = rawConnect(port);
    let buf = Buffer.alloc(0);
    const t = setTimeout(() => { s.destroy(); reject(new Error('raw upgrade timed out')); }, 5000);
    s.on('connect', () => s.write(
      `GET ${pathname} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
      (token ? `Authorization: Bearer ${token}\r\n` : '') + '\r\n'));
    const onData = (d) => {
      buf = Buffer.concat([buf, d]);
      const i = buf.indexOf('\r\n\r\n');
      if (i < 0) return;
      clearTimeout(t); s.off('data', onData);
      const head = buf.subarray(0, i).toString();
      const expect = crypto.createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
      const m = /^sec-websocket-accept:\s*(\S+)/im.exec(head);
      resolve({ sock: s, head, rest: buf.subarray(i + 4), acceptOk: !!m && m[1] === expect });
    };
    s.on('data', onData);
    s.on('error', (e) => { clearTimeout(t); reject(e); });
  });
}

// Parse server->client frames (unmasked) from a buffer. Returns { frames, rest }.
export function parseFrames(buf) {
  const frames = [];
  let off = 0;
  while (buf.length - off >= 2) {
    const b0 = buf[off], b1 = buf[off + 1];
    let len = b1 & 0x7f, hdr = 2;
    if (len === 126) { if (buf.length - off < 4) break; len = buf.readUInt16BE(off + 2); hdr = 4; }
    else if (len === 127) { if (buf.length - off < 10) break; len = Number(buf.readBigUInt64BE(off + 2)); hdr = 10; }
    const masked = (b1 & 0x80) !== 0;
    if (masked) hdr += 4;
    if (buf.length - off < hdr + len) break;
    frames.push({ fin: (b0 & 0x80) !== 0, opcode: b0 & 0x0f, masked, payload: buf.subarray(off + hdr, off + hdr + len) });
    off += hdr + len;
  }
  return { frames, rest: buf.subarray(off) };
}

// Build a client->server frame; masked unless mask === false.
export function buildFrame(opcode, payload, { mask = true, fin = true, rsv = 0 } = {}) {
  payload = Buffer.from(payload);
  const len = payload.length;
  const head = [ (fin ? 0x80 : 0) | (rsv << 4) | opcode ];
  let ext = Buffer.alloc(0);
  if (len < 126) head.push((mask ? 0x80 : 0) | len);
  else if (len < 65536) { head.push((mask ? 0x80 : 0) | 126); ext = Buffer.alloc(2); ext.writeUInt16BE(len); }
  else { head.push((mask ? 0x80 : 0) | 127); ext = Buffer.alloc(8); ext.writeBigUInt64BE(BigInt(len)); }
  if (!mask) return Buffer.concat([Buffer.from(head), ext, payload]);
  const key = crypto.randomBytes(4);
  const body = Buffer.from(payload.map((b, i) => b ^ key[i & 3]));
  return Buffer.concat([Buffer.from(head), ext, key, body]);
}

// Poll fn() until it returns a truthy value or ms passes.
export async function until(fn, ms, what, every = 100) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e; }
    await sleep(every);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}` + (last instanceof Error ? ` (last: ${last.message})` : ''));
}

// ---------------------------------------------------------------- browser
// Debian's chromium, driven by playwright-core (PARLEY_CHROMIUM: another binary); closed by the
// running test's cleanup.
export const CHROMIUM = process.env.PARLEY_CHROMIUM || '/usr/bin/chromium';
export async function launchChromium() {
  assert(fs.existsSync(CHROMIUM), `${CHROMIUM} not found: install Debian's chromium (apt-get install chromium) or set PARLEY_CHROMIUM`);
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : [],
    timeout: 30000,
  });
  current.cleanups.push(() => browser.close());
  return browser;
}

// ---------------------------------------------------------------- tests
export const registry = [];
export function test(name, fn, { timeout } = {}) { registry.push({ name, fn, timeout }); }

// ---------------------------------------------------------------- postgres
// A private PostgreSQL 15 cluster per test: initdb into a fresh directory
// under /tmp (as root, owned by and run as the `postgres` user: PostgreSQL
// refuses to run as root, and the test's own tmpDir() is root-only), a free
// loopback port, its socket directory inside the cluster's directory, fast
// and unsafe settings (fsync off: the crash tests kill parleyd, not
// PostgreSQL), database `parley` owned by superuser role `parley` (trust
// auth), then `parleyd --migrate`. The server's log goes to a file in the
// test's tmpDir() (opened here and inherited), so the runner can print it on
// failure after the cluster's directory is gone.
export const PGBIN = process.env.PGBIN || '/usr/lib/postgresql/15/bin';
const IS_ROOT = typeof process.getuid === 'function' && process.getuid() === 0;
let pgIds = null;
function postgresIds() {
  if (!pgIds) {
    const line = fs.readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('postgres:'));
    if (!line) throw new Error('running as root but there is no `postgres` user to run PostgreSQL as');
    const f = line.split(':');
    pgIds = { uid: Number(f[2]), gid: Number(f[3]) };
  }
  return pgIds;
}

// Run a command to completion (as the postgres user when root and asPg).
// Resolves { code, signal, stdout, stderr }; rejects only on spawn failure or time-out.
export function runCmd(cmd, args, { env, asPg = false, timeout = 30000, input } = {}) {
  return new Promise((resolve, reject) => {
    let file = cmd, argv = args;
    if (asPg && IS_ROOT) { file = 'runuser'; argv = ['-u', 'postgres', '--', cmd, ...args]; }
    const child = spawn(file, argv, { env: env || process.env, cwd: '/', stdio: ['pipe', 'pipe', 'pipe'] });
    const out = [], err = [];
    child.stdout.on('data', (d) => out.push(d));
    child.stderr.on('data', (d) => err.push(d));
    const t = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`${cmd} ${args.join(' ')}: timed out after ${timeout} ms`)); }, timeout);
    child.on('error', (e) => { clearTimeout(t); reject(e); });
    child.on('close', (code, signal) => {
      clearTimeout(t);
      resolve({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
    if (input !== undefined) child.stdin.end(input); else child.stdin.end();
  });
}

export class Postgres {
  constructor() { this.port = 0; this.dir = null; this.child = null; this.exit = null; }
  get name() { return `postgres:${this.port}`; }
  get url() { return `postgresql://parley@127.0.0.1:${this.port}/parley`; }
  get dataDir() { return path.join(this.dir, 'data'); }
  get sockDir() { return path.join(this.dir, 'run'); }
  get running() { return !!this.child && this.child.exitCode === null && this.child.signalCode === null; }
  logTail(n = 40) { return readTail(this.logFile, n); }

  async init() {
    if (!fs.existsSync(path.join(PGBIN, 'initdb'))) throw new Error(`PostgreSQL 15 not found in ${PGBIN}`);
    this.dir = fs.mkdtempSync('/tmp/parley-pg-');
    this.logFile = path.join(tmpDir(), `postgres-${path.basename(this.dir)}.log`);
    fs.mkdirSync(this.sockDir);
    if (IS_ROOT) {
      const { uid, gid } = postgresIds();
      fs.chownSync(this.dir, uid, gid); fs.chownSync(this.sockDir, uid, gid);
    }
    fs.chmodSync(this.dir, 0o700);
    const r = await runCmd(path.join(PGBIN, 'initdb'),
      ['-D', this.dataDir, '-U', 'parley', '-A', 'trust', '-E', 'UTF8', '--no-locale', '-N'], { asPg: true });
    if (r.code !== 0) throw new Error(`initdb failed (${r.code}): ${r.stderr || r.stdout}`);
    this.port = await freePort();
  }

  // Start the postmaster on this.port (the same port and data directory on a restart).
  async start() {
    if (this.running) return this;
    fs.rmSync(path.join(this.dataDir, 'postmaster.pid'), { force: true });
    for (let attempt = 0; attempt < 3; attempt++) {
      const log = fs.openSync(this.logFile, 'a');
      const opts = { cwd: '/', stdio: ['ignore', log, log], env: { PATH: process.env.PATH, LANG: 'C.UTF-8', HOME: '/tmp' } };
      if (IS_ROOT) Object.assign(opts, postgresIds()); // setuid/setgid (supplementary groups dropped) in the child
      this.child = spawn(path.join(PGBIN, 'postgres'), ['-D', this.dataDir, '-p', String(this.port),
        '-h', '127.0.0.1', '-k', this.sockDir, '-c', 'fsync=off', '-c', 'synchronous_commit=off',
        '-c', 'full_page_writes=off', '-c', 'max_connections=50', '-c', 'shared_buffers=32MB',
        '-c', 'log_min_messages=warning'], opts);
      fs.closeSync(log);
      this.child.on('error', () => {});
      this.exit = null;
      const deadline = Date.now() + 15000;
      while (Date.now() < deadline && this.running) {
        const r = await runCmd(path.join(PGBIN, 'pg_isready'), ['-h', '127.0.0.1', '-p', String(this.port), '-U', 'parley', '-d', 'postgres', '-t', '1'], { timeout: 5000 }).catch(() => null);
        if (r && r.code === 0) return this;
        await sleep(100);
      }
      const inUse = /could not bind|already in use/i.test(this.logTail(20));
      await this.kill();
      if (!inUse || this.started) break; // a restart must keep its port
      this.port = await freePort();
    }
    throw new Error(`postgres did not start on port ${this.port}; log:\n${this.logTail(20)}`);
  }

  // Fast shutdown (SIGINT: roll back open transactions, disconnect clients).
  async stop() {
    const c = this.child;
    if (!c) return null;
    if (this.running) {
      c.kill('SIGINT');
      if (!(await waitExit(c, 15000))) { c.kill('SIGKILL'); await waitExit(c, 5000); }
    }
    this.exit = { code: c.exitCode, signal: c.signalCode };
    await this.reapChildren();
    return this.exit;
  }

  // SIGKILL the postmaster and its backends.
  async kill() {
    const c = this.child;
    if (!c) return;
    const pid = c.pid;
    if (this.running) { c.kill('SIGKILL'); await waitExit(c, 5000); }
    this.exit = { code: c.exitCode, signal: c.signalCode };
    await this.reapChildren(pid);
  }

  // Backends left behind by a killed postmaster hold its shared memory: end them.
  async reapChildren(pid = this.child && this.child.pid) {
    if (!pid) return;
    for (let i = 0; i < 50; i++) {
      const kids = [];
      for (const d of fs.readdirSync('/proc')) {
        if (!/^\d+$/.test(d)) continue;
        try {
          const st = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
          const ppid = Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]);
          if (ppid === pid) kids.push(Number(d));
        } catch {}
      }
      if (!kids.length) return;
      for (const k of kids) { try { process.kill(k, 'SIGKILL'); } catch {} }
      await sleep(50);
    }
  }

  async destroy() {
    await this.kill();
    if (this.dir) fs.rmSync(this.dir, { recursive: true, force: true });
  }

  // psql -Atc: resolves stdout lines (fields split on '|'); throws on error.
  async query(sql, db = 'parley') {
    const r = await runCmd('psql', ['-h', '127.0.0.1', '-p', String(this.port), '-U', 'parley', '-d', db,
      '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', sql], { env: { PATH: process.env.PATH, LANG: 'C.UTF-8' }, timeout: 30000 });
    if (r.code !== 0) throw new Error(`psql ${JSON.stringify(sql)}: exit ${r.code}: ${r.stderr.trim()}`);
    return r.stdout.split('\n').filter((l) => l !== '').map((l) => l.split('|'));
  }
  async scalar(sql) { const rows = await this.query(sql); return rows.length ? rows[0][0] : null; }
}

// Run `parleyd --migrate` against url. Resolves { code, stdout, stderr }.
export function migrate(url, env = {}) {
  return runCmd(path.resolve(PARLEYD), ['--migrate'], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME || '/tmp', LANG: 'C.UTF-8',
      PARLEY_DATABASE_URL: url, PARLEY_JWT_SECRET: SECRET, PARLEY_API_KEY: API_KEY, ...env },
    timeout: 30000,
  });
}

// startPostgres({ migrate: true }) -> Postgres with { url, stop(), start(), kill(), query(), scalar() }.
// Registered with the running test: killed and its directory removed at clean-up.
// Migrated test databases by URL: startParleyd waits for an instance given one to connect.
const livePostgres = new Map();

export async function startPostgres({ migrate: doMigrate = true } = {}) {
  const pg = new Postgres();
  current.procs.push({ name: 'postgres', stop: () => pg.destroy(), logTail: (n) => pg.logTail(n), get exit() { return pg.exit; } });
  await pg.init();
  await pg.start();
  pg.started = true;
  const r = await runCmd(path.join(PGBIN, 'createdb'), ['-h', '127.0.0.1', '-p', String(pg.port), '-U', 'parley', 'parley'],
    { env: { PATH: process.env.PATH, LANG: 'C.UTF-8' } });
  if (r.code !== 0) throw new Error(`createdb failed: ${r.stderr}`);
  if (doMigrate) {
    const m = await migrate(pg.url);
    if (m.code !== 0) throw new Error(`parleyd --migrate exited ${m.code}: ${m.stderr}${m.stdout}`);
    livePostgres.set(pg.url, pg);
  }
  return pg;
}

// redis-cli against a test Redis: resolves trimmed stdout.
export async function redisCli(redis, ...args) {
  const a = redis.auth;
  const login = a ? [...(a.user ? ['--user', a.user] : []), '--pass', a.password, '--no-auth-warning'] : [];
  const r = await runCmd('redis-cli', [...(redis.isCluster ? ['-c'] : []), '-h', '127.0.0.1', '-p', String(redis.port), ...login, ...args.map(String)], { timeout: 10000 });
  if (r.code !== 0) throw new Error(`redis-cli ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.trim();
}

// ---------------------------------------------------------------- durable messages
// Environment for a parleyd that stores messages in `pg`.
export const dbEnv = (pg, extra = {}) => ({ PARLEY_DATABASE_URL: pg.url, ...extra });

// Record every message, ack, and error-with-cid a client gets (they are
// consumed; other frames stay queued for next()). Each record has `at` (ms)
// and `n` (its place in this client's arrival order, over all frames).
//   t.msgs: message frames in arrival order; t.rooms: room -> [message]
//   t.acks: cid -> [ack, ...]; t.errors: [error with a cid]
//   t.mine: cid -> [message frames from this client's own user with that cid]
//   t.problems: protocol violations seen (non-JSON, a message without seq, ...)
//   t.onEvent(kind, json): optional hook, called after recording
export function track(c) {
  const t = { msgs: [], rooms: new Map(), acks: new Map(), ackCount: 0, errors: [], mine: new Map(), problems: [], frames: 0, onEvent: null };
  const prev = c.onFrame;
  c.onFrame = (f) => {
    const n = ++t.frames;
    f.n = n;
    const j = f.json;
    if (!j) { if (t.problems.length < 20) t.problems.push(`non-JSON frame: ${String(f.raw).slice(0, 100)}`); return true; }
    if (j.type === 'message') {
      if (!/^\{"type":"message","seq":\d+,/.test(f.raw) && t.problems.length < 20) t.problems.push(`message frame does not start with type then seq: ${f.raw.slice(0, 120)}`);
      const m = { ...j, at: f.at, n, raw: f.raw };
      t.msgs.push(m);
      if (!t.rooms.has(j.room)) t.rooms.set(j.room, []);
      t.rooms.get(j.room).push(m);
      if (j.cid !== undefined && j.from === c.user) {
        if (!t.mine.has(j.cid)) t.mine.set(j.cid, []);
        t.mine.get(j.cid).push(m);
      }
      if (t.onEvent) t.onEvent('message', m);
      return true;
    }
    if (j.type === 'ack') {
      if (!f.raw.startsWith('{"type":"ack"') && t.problems.length < 20) t.problems.push(`ack frame does not start with type: ${f.raw}`);
      const a = { ...j, at: f.at, n };
      if (!t.acks.has(j.cid)) t.acks.set(j.cid, []);
      t.acks.get(j.cid).push(a);
      t.ackCount++;
      if (t.onEvent) t.onEvent('ack', a);
      return true;
    }
    if (j.type === 'error' && j.cid !== undefined) {
      const e = { ...j, at: f.at, n };
      t.errors.push(e);
      if (t.onEvent) t.onEvent('error', e);
      return true;
    }
    return prev ? prev(f) : false;
  };
  c.track = t;
  return t;
}

// Problems with one client's view of a room: seqs must be exactly
// from..to (to = from + count - 1), in order. Returns a list of strings.
export function seqProblems(list, from, to, who) {
  const out = [];
  let expect = from;
  for (const m of list || []) {
    if (m.seq !== expect) { out.push(`${who}: expected seq ${expect}, got ${m.seq} (${m.seq < expect ? 'duplicate/reorder' : 'gap'})`); if (out.length > 5) break; }
    expect = Math.max(expect, m.seq + 1);
  }
  const n = (list || []).length;
  if (to !== undefined && n !== to - from + 1) out.push(`${who}: ${n} messages, expected ${to - from + 1} (seq ${from}..${to})`);
  return out;
}

// GET /api/rooms/{room}/messages; token: a JWT (null: no Authorization).
export function getHistory(server, room, { token, query = '', headers = {} } = {}) {
  const h = { ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  return httpRequest(server.port, 'GET', `/api/rooms/${encodeURIComponent(room)}/messages${query ? '?' + query : ''}`, { headers: h });
}

// PUT or DELETE /api/rooms/{room}/members/{user} with the API key (key: null for none).
export function setMember(server, method, room, user, { key = API_KEY } = {}) {
  const headers = key === null ? {} : { Authorization: `Bearer ${key}` };
  return httpRequest(server.port, method, `/api/rooms/${encodeURIComponent(room)}/members/${encodeURIComponent(user)}`, { headers });
}

// Messages stored for a room (or all), as objects, ordered by room and seq.
export async function storedMessages(pg, room) {
  const where = room ? `WHERE room_id = '${room.replace(/'/g, "''")}'` : '';
  // ids and seqs as text: bigint does not fit a JS number exactly
  const rows = await pg.query(`SELECT id::text, room_id, seq::text, sender, coalesce(cid, '<null>'), ts_ms::text, md5(body) FROM messages ${where} ORDER BY messages.room_id, messages.seq`);
  return rows.map(([id, room_id, seq, sender, cid, ts, md5]) => ({ id, room: room_id, seq: Number(seq), sender, cid: cid === '<null>' ? null : cid, ts: Number(ts), md5 }));
}
export const md5 = (s) => crypto.createHash('md5').update(s, 'utf8').digest('hex');

// Send n messages to `room` from tracked client c (see track), with at most
// `window` unacked; resolves with their cids once every one is acked, rejects
// on an error frame for one of them or after ms.
export function sendAcked(c, room, n, { window = 50, prefix = `${c.user}-${Date.now().toString(36)}`, text = (i) => `${prefix} #${i}`, ms = 30000 } = {}) {
  const t = c.track;
  return new Promise((resolve, reject) => {
    const cids = [], pending = new Set();
    let sent = 0, acked = 0;
    const prev = t.onEvent;
    const finish = (err) => { clearTimeout(timer); t.onEvent = prev; if (err) reject(err); else resolve(cids); };
    const timer = setTimeout(() => finish(new Error(`sendAcked ${room}: ${acked}/${n} acked (${sent} sent) after ${ms} ms; last errors ${JSON.stringify(t.errors.slice(-3))}`)), ms);
    const pump = () => {
      while (sent - acked < window && sent < n) {
        const cid = `${prefix}-${sent}`;
        cids.push(cid); pending.add(cid); mine.add(cid);
        c.send({ type: 'message', room, text: text(sent), cid });
        sent++;
      }
    };
    // Resolves once every message is acked and the sender has its own live copy of each: an
    // ack and the live copy travel different roads (database, Redis), either may come first.
    // (If the copies do not come within 5 s of the last ack, it resolves anyway: tests check.)
    const mine = new Set(cids), seen = new Set();
    let graceTimer = null;
    const maybeDone = () => {
      if (acked !== n) return;
      if (seen.size >= n) { clearTimeout(graceTimer); finish(); return; }
      if (!graceTimer) graceTimer = setTimeout(() => finish(), 5000);
    };
    t.onEvent = (kind, j) => {
      if (prev) prev(kind, j);
      if (kind === 'message') {
        if (j.room === room && mine.has(j.cid)) { seen.add(j.cid); maybeDone(); }
        return;
      }
      if (!pending.has(j.cid)) return;
      if (kind === 'error') { finish(new Error(`sendAcked ${room}: error for ${j.cid}: ${JSON.stringify(j)}`)); return; }
      pending.delete(j.cid);
      if (++acked === n) maybeDone(); else pump();
    };
    if (n === 0) finish(); else pump();
  });
}

// The fields of a message frame, in a fixed order, for comparing two copies.
export const msgKey = (m) => JSON.stringify(['type', 'seq', 'room', 'id', 'from', 'text', 'ts', 'cid'].map((k) => m[k]));

// ---------------------------------------------------------------- chat (presence, typing, reads, DMs)
// GET /api/websocket/users/{id}/online on `server`; auth: the API key (default),
// a user JWT, or null for no Authorization header.
export function userOnline(server, user, { auth = API_KEY } = {}) {
  const headers = auth === null ? {} : { Authorization: `Bearer ${auth}` };
  return httpRequest(server.port, 'GET', `/api/websocket/users/${encodeURIComponent(user)}/online`, { headers });
}
// GET /api/websocket/users/online[?query] on `server` (auth as above).
export function onlineUsers(server, { auth = API_KEY, query = '' } = {}) {
  const headers = auth === null ? {} : { Authorization: `Bearer ${auth}` };
  return httpRequest(server.port, 'GET', `/api/websocket/users/online${query ? '?' + query : ''}`, { headers });
}

// How many connections Redis counts for `user` on instance `serverId`: the sum of its per-shard
// fields conn:<server>#<shard> in ws:user:<id> (docs/redis.md).
// (A cluster keeps the user's hash in the user's slot, ws:{u:<user>}:user, and names each run of
// an instance in its fields: conn:<server>@<run>#<shard>.)
export async function connCount(redis, user, serverId, prefix = 'ws:') {
  const key = redis.isCluster ? `${prefix}{u:${user}}:user` : `${prefix}user:${user}`;
  const flat = (await redisCli(redis, 'HGETALL', key)).split('\n');
  let n = 0;
  for (let i = 0; i + 1 < flat.length; i += 2) if (flat[i].startsWith(`conn:${serverId}#`) || flat[i].startsWith(`conn:${serverId}@`)) n += Number(flat[i + 1]);
  return n;
}

// CRC16 (XMODEM) of a key's hash tag: the slot Redis Cluster places it in.
export function keySlot(key) {
  const open = key.indexOf('{');
  if (open >= 0) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) key = key.slice(open + 1, close);
  }
  let crc = 0;
  for (const b of Buffer.from(key)) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc % 16384;
}

// Whether Redis lists `user` as online ('1' or '0'), and how many users it lists: the set
// ws:online_users, or on a cluster its 64 buckets ws:{o:<k>}:online.
export async function onlineInRedis(redis, user, prefix = 'ws:') {
  const key = redis.isCluster ? `${prefix}{o:${keySlot(user) % 64}}:online` : `${prefix}online_users`;
  return redisCli(redis, 'SISMEMBER', key, user);
}
export async function onlineCountInRedis(redis, prefix = 'ws:') {
  if (!redis.isCluster) return Number(await redisCli(redis, 'SCARD', `${prefix}online_users`));
  let n = 0;
  for (let k = 0; k < 64; k++) n += Number(await redisCli(redis, 'SCARD', `${prefix}{o:${k}}:online`));
  return n;
}

// Record (and consume) every frame of c whose json satisfies pred, in arrival
// order, into the returned array (each entry: { ...json, at, raw }). Frames
// not matching go on to the previous hook (track's, say) or stay queued for next().
export function recordFrames(c, pred) {
  const list = [];
  const prev = c.onFrame;
  c.onFrame = (f) => {
    if (f.json && pred(f.json)) { list.push({ ...f.json, at: f.at, raw: f.raw }); return true; }
    return prev ? prev(f) : false;
  };
  return list;
}

// `redis-cli MONITOR` against a test Redis, spawned and bounded: resolves once
// it is ready with { lines (every line so far), publishes() -> [{ channel, payload, lua }],
// stop() }. Stopped at clean-up at the latest (and after `ms`).
export async function redisMonitor(redis, { ms = 120000 } = {}) {
  const child = spawn('redis-cli', ['-h', '127.0.0.1', '-p', String(redis.port), 'MONITOR'], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.on('error', () => {});
  const lines = [];
  let partial = '';
  child.stdout.on('data', (d) => {
    partial += d.toString('utf8');
    const parts = partial.split('\n');
    partial = parts.pop();
    for (const l of parts) lines.push(l.replace(/\r$/, ''));
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), ms);
  const stop = async () => { clearTimeout(timer); if (child.exitCode === null && child.signalCode === null) { child.kill('SIGKILL'); await waitExit(child, 3000); } };
  current.cleanups.push(stop);
  await until(() => lines.some((l) => l.trim() === 'OK'), 5000, 'redis-cli MONITOR to start');
  // "<ts> [<db> <client>|lua] "CMD" "arg" ...": the arguments, unquoted.
  const parseArgs = (s) => {
    const out = []; const re = /"((?:[^"\\]|\\.)*)"/g; let m;
    while ((m = re.exec(s))) out.push(m[1].replace(/\\x([0-9a-f]{2})|\\(.)/gi, (_, h, ch) => (h ? String.fromCharCode(parseInt(h, 16)) : ({ n: '\n', r: '\r', t: '\t' }[ch] || ch))));
    return out;
  };
  const publishes = () => lines.map((l) => {
    const i = l.indexOf(']');
    if (i < 0) return null;
    const args = parseArgs(l.slice(i + 1));
    if (!args.length || !/^s?publish$/i.test(args[0])) return null;
    return { channel: args[1], payload: args[2] || '', lua: /\[\d+ lua\]/.test(l), line: l };
  }).filter(Boolean);
  return { lines, publishes, stop };
}
