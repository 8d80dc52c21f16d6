// The development scripts behind `make run` (issue 10): the private Redis
// comes back on its port after a restart, so running instances reconnect;
// `make run` listens on loopback only unless told otherwise. Each test runs
// its own set of services under PARLEY_VAR, never the developer's ./var.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawn } from 'node:child_process';
import {
  test, ROOT, startParleyd, connectAuthed, runCmd, tmpDir, freePort, httpRequest, until, sleep,
  eq, assert, current, tlsFiles,
} from './lib.mjs';
import https from 'node:https';

const SERVICES = path.join(ROOT, 'deploy/dev/services.sh');

async function services(varDir, ...args) {
  const r = await runCmd(SERVICES, args, { env: { ...process.env, PARLEY_VAR: varDir }, timeout: 120000 });
  if (r.code !== 0) throw new Error(`services.sh ${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
  return r;
}

function privateVar() {
  const dir = fs.mkdtempSync(path.join(tmpDir(), 'var-'));
  current.cleanups.push(() => services(dir, 'stop').catch(() => {}));
  return dir;
}

const readEnv = (dir) => Object.fromEntries(fs.readFileSync(path.join(dir, 'services.env'), 'utf8')
  .split('\n').filter(Boolean).map((l) => l.split(/=(.*)/s).slice(0, 2)));

test('dev services: a restarted private Redis keeps its port (TIME_WAIT does not move it); instances reconnect', async () => {
  const dir = privateVar();
  await services(dir, 'start', 'redis');
  const env1 = readEnv(dir);
  const port = Number(env1.REDIS_PORT);
  const srv = await startParleyd({ redisUrl: env1.PARLEY_REDIS_URL });
  // A client connection open when Redis dies leaves Redis's side of it in TIME_WAIT.
  const held = net.connect(port, '127.0.0.1');
  await new Promise((r) => held.on('connect', r));
  held.on('error', () => {});
  const pid = Number(fs.readFileSync(path.join(dir, 'redis/redis.pid'), 'utf8'));
  process.kill(pid, 'SIGKILL');
  await until(() => { try { process.kill(pid, 0); return false; } catch { return true; } }, 5000, 'redis to die');
  await sleep(200);
  await services(dir, 'start', 'redis');
  eq(Number(readEnv(dir).REDIS_PORT), port, 'Redis port after the restart');
  await until(async () => (await httpRequest(srv.port, 'GET', '/health')).status === 200, 15000, 'parleyd healthy again');
  const c = await connectAuthed(srv);
  await c.subscribe(['after-restart']);
  c.send({ type: 'message', room: 'after-restart', text: 'ok' });
  eq((await c.nextJson('message', 5000)).text, 'ok', 'delivery after the restart');
  held.destroy();
  // Stopped and started again: the same port too.
  await services(dir, 'stop', 'redis');
  await services(dir, 'start', 'redis');
  eq(Number(readEnv(dir).REDIS_PORT), port, 'Redis port after stop and start');
}, { timeout: 60000 });

test('make run: listens on 127.0.0.1 only by default and says so; with TLS only, its banner names wss:// and https', async () => {
  const dir = privateVar();
  const port = await freePort();
  const env = { ...process.env, PARLEY_VAR: dir, PARLEY_PORT: String(port) };
  for (const k of ['PARLEY_LISTEN', 'PARLEY_REDIS_URL', 'PARLEY_DATABASE_URL']) delete env[k];
  const child = spawn(path.join(ROOT, 'deploy/dev/run.sh'), [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  current.cleanups.push(async () => { if (child.exitCode === null) { child.kill('SIGTERM'); await sleep(500); if (child.exitCode === null) child.kill('SIGKILL'); } });
  await until(() => new RegExp(`listening on 127\\.0\\.0\\.1:${port}`).test(out), 90000, `parleyd listening (output: ${out.slice(-400)})`);
  assert(/Listening: +127\.0\.0\.1:\d+, this machine only/.test(out), `the banner says where it listens: ${out}`);
  // The listener opens before the Redis connections are up, and /health says 503 until they are
  // (so that a load balancer waits too): a loaded machine can take a moment.
  await until(async () => (await httpRequest(port, 'GET', '/health')).status === 200, 15000, '/health 200 on 127.0.0.1');
  // Bound to 127.0.0.1, not the wildcard: another local address is refused.
  const refused = await new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.2', port });
    s.on('connect', () => { s.destroy(); resolve(false); });
    s.on('error', () => resolve(true));
  });
  assert(refused, `127.0.0.2:${port} accepted a connection`);
  child.kill('SIGTERM');
  await until(() => child.exitCode !== null || child.signalCode !== null, 10000, 'make run to stop');

  // TLS only: the banner names the wss:// URL and its recipes use https; /health answers over TLS.
  const tport = await freePort();
  const f = tlsFiles();
  const tenv = { ...env, PARLEY_LISTEN: 'none', PARLEY_TLS_LISTEN: `127.0.0.1:${tport}`, PARLEY_TLS_CERT: f.cert, PARLEY_TLS_KEY: f.key };
  const tchild = spawn(path.join(ROOT, 'deploy/dev/run.sh'), [], { env: tenv, stdio: ['ignore', 'pipe', 'pipe'] });
  let tout = '';
  tchild.stdout.on('data', (d) => { tout += d; });
  tchild.stderr.on('data', (d) => { tout += d; });
  current.cleanups.push(async () => { if (tchild.exitCode === null) { tchild.kill('SIGTERM'); await sleep(500); if (tchild.exitCode === null) tchild.kill('SIGKILL'); } });
  await until(() => /listening on 127\.0\.0\.1:\d+ \(TLS\)/.test(tout), 90000, `TLS-only parleyd listening (output: ${tout.slice(-400)})`);
  assert(new RegExp(`WebSocket: +wss://localhost:${tport}/ws`).test(tout), `the banner names the wss URL: ${tout}`);
  assert(new RegExp(`curl -s -X POST https://localhost:${tport}/api/websocket/token`).test(tout), `the recipe uses https: ${tout}`);
  assert(!/ws:\/\/127/.test(tout), `no plain URL in a TLS-only banner: ${tout}`);
  const tlsHealth = () => new Promise((resolve, reject) => {
    https.get({ host: 'localhost', port: tport, path: '/health', ca: fs.readFileSync(f.ca), agent: false }, (res) => { res.resume(); resolve(res.statusCode); }).on('error', reject);
  });
  await until(async () => (await tlsHealth()) === 200, 15000, '/health 200 over https from make run');
  tchild.kill('SIGTERM');
  await until(() => tchild.exitCode !== null || tchild.signalCode !== null, 10000, 'make run (TLS) to stop');
}, { timeout: 200000 });
