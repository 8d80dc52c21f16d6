// Helpers for Parley's integration tests: private redis-server and parleyd
// processes, HS256 JWTs minted here with node:crypto, and a promise-based
// client over the npm `ws` package (which shares no code with the server).
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
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

// ---------------------------------------------------------------- registry
// Every process and client a test starts is registered with the running test
// so that the runner can clean it up (finally) and print logs on failure.
export const current = { procs: [], clients: [], cleanups: [], tmp: null };

export function tmpDir() {
  if (!current.tmp) current.tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-it-'));
  return current.tmp;
}

export async function cleanupCurrent() {
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
  constructor(port) { this.port = port; this.child = null; this.dir = null; }
  get url() { return `redis://127.0.0.1:${this.port}/0`; }
  get name() { return `redis:${this.port}`; }
  get logFile() { return path.join(this.dir, 'redis.log'); }

  async start() {
    if (!this.port) this.port = await freePort();
    if (!this.dir) this.dir = fs.mkdtempSync(path.join(tmpDir(), 'redis-'));
    for (let attempt = 0; attempt < 50; attempt++) {
      const log = fs.openSync(this.logFile, 'a');
      this.child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1',
        '--save', '', '--appendonly', 'no', '--dir', this.dir, '--daemonize', 'no', '--loglevel', 'warning'],
        { stdio: ['ignore', log, log] });
      fs.closeSync(log);
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline) {
        if (this.child.exitCode !== null) break;
        if (await redisPing(this.port)) return this;
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

export function redisPing(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    const done = (v) => { s.destroy(); clearTimeout(t); resolve(v); };
    const t = setTimeout(() => done(false), 500);
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => { buf += d; if (buf.includes('\r\n')) done(buf.startsWith('+PONG')); });
    s.on('error', () => done(false));
  });
}

export async function startRedis() {
  const r = new Redis();
  current.procs.push(r);
  await r.start();
  return r;
}

// ---------------------------------------------------------------- parleyd
function readTail(file, lines = 60) {
  try { return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n'); } catch { return ''; }
}

export class Parleyd {
  constructor(opts) { Object.assign(this, opts); this.child = null; }
  get name() { return `parleyd ${this.serverId}`; }
  get wsUrl() { return `ws://127.0.0.1:${this.port}/ws`; }
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
export async function startParleyd({ redis, redisUrl, env = {}, serverId, waitHealthy = true } = {}) {
  if (!fs.existsSync(PARLEYD)) throw new Error(`${PARLEYD} missing: build it with make`);
  const dir = tmpDir();
  serverId = serverId || `it-${process.pid}-${++instanceSeq}`;
  let lastErr;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const logFile = path.join(dir, `${serverId}.${attempt}.log`);
    const p = new Parleyd({ port, serverId, logFile });
    const fullEnv = {
      PATH: process.env.PATH, HOME: process.env.HOME || '/tmp', LANG: 'C.UTF-8',
      PARLEY_LISTEN: `127.0.0.1:${port}`,
      PARLEY_REDIS_URL: redisUrl || (redis && redis.url) || 'redis://127.0.0.1:1/0',
      PARLEY_JWT_SECRET: SECRET, PARLEY_API_KEY: API_KEY,
      PARLEY_SERVER_ID: serverId, PARLEY_SHARDS: '2',
      ...Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v)])),
    };
    p.env = fullEnv;
    const fd = fs.openSync(logFile, 'a');
    p.child = spawn(PARLEYD, [], { env: fullEnv, stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    p.child.on('error', () => {});
    current.procs.push(p);
    if (!waitHealthy) { await sleep(300); return p; }
    const deadline = Date.now() + 10000;
    while (Date.now() < deadline) {
      if (p.child.exitCode !== null || p.child.signalCode !== null) break;
      try {
        const r = await httpRequest(port, 'GET', '/health', { timeout: 1000 });
        if (r.status === 200) return p;
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

// ---------------------------------------------------------------- HTTP
export function httpRequest(port, method, reqPath, { headers = {}, body, timeout = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: reqPath, headers, agent: false }, (res) => {
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
export function rawExchange(port, data, ms = 3000) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
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
    const ws = new WebSocket(url, { headers: h, handshakeTimeout: ms, perMessageDeflate: false, ...wsOptions });
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
    const s = net.connect(port, '127.0.0.1');
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

// ---------------------------------------------------------------- tests
export const registry = [];
export function test(name, fn, { timeout } = {}) { registry.push({ name, fn, timeout }); }
