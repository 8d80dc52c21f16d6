import { spawnSync } from 'node:child_process';
import { test, PARLEYD, eq, assert, startRedis, startParleyd, connectAuthed, rawUpgrade, parseFrames, mintToken, newUser, sleep } from './lib.mjs';

const NAMES = ['PARLEY_LISTEN', 'PARLEY_SHARDS', 'PARLEY_SERVER_ID', 'PARLEY_REDIS_URL', 'PARLEY_JWT_SECRET',
  'PARLEY_API_KEY', 'PARLEY_MAX_FRAME', 'PARLEY_MAX_TEXT', 'PARLEY_MAX_ROOMS', 'PARLEY_MAX_OUTBUF',
  'PARLEY_AUTH_TIMEOUT', 'PARLEY_PING_INTERVAL', 'PARLEY_IDLE_TIMEOUT'];

const run = (args, env) => spawnSync(PARLEYD, args, { env: { PATH: process.env.PATH, ...env }, encoding: 'utf8', timeout: 5000 });

test('config: --help lists every PARLEY_* setting; bad config refuses to start with a clear message', async () => {
  const h = run(['--help'], {});
  eq(h.status, 0, '--help exit status');
  const text = h.stdout + h.stderr;
  for (const n of NAMES) assert(text.includes(n), `--help does not mention ${n}`);
  const base = { PARLEY_JWT_SECRET: 's', PARLEY_API_KEY: 'k', PARLEY_LISTEN: '127.0.0.1:1', PARLEY_REDIS_URL: 'redis://127.0.0.1:1/0' };
  for (const [what, env, mention] of [
    ['missing secret', { ...base, PARLEY_JWT_SECRET: undefined }, 'PARLEY_JWT_SECRET'],
    ['missing api key', { ...base, PARLEY_API_KEY: undefined }, 'PARLEY_API_KEY'],
    ['bad max frame', { ...base, PARLEY_MAX_FRAME: 'abc' }, 'PARLEY_MAX_FRAME'],
    ['bad listen', { ...base, PARLEY_LISTEN: 'nowhere' }, 'PARLEY_LISTEN'],
    ['bad redis url', { ...base, PARLEY_REDIS_URL: 'http://x' }, 'PARLEY_REDIS_URL'],
    ['bad shards', { ...base, PARLEY_SHARDS: '0' }, 'PARLEY_SHARDS'],
  ]) {
    for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
    const r = run([], env);
    assert(r.status !== 0 && r.status !== null, `${what}: expected a non-zero exit, got status ${r.status} signal ${r.signal}`);
    assert((r.stderr + r.stdout).includes(mention), `${what}: message does not name ${mention}: ${r.stderr.trim()}`);
  }
});

test('slow consumer: a client that stops reading is closed with 4008 past PARLEY_MAX_OUTBUF', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis, env: { PARLEY_MAX_OUTBUF: 262144 } });
  const sender = await connectAuthed(srv);
  await sender.subscribe(['flood']);
  const { sock, head, rest } = await rawUpgrade(srv.port, { token: mintToken(newUser()) });
  assert(/^HTTP\/1\.1 101/.test(head), `raw upgrade failed: ${head}`);
  const sub = JSON.stringify({ type: 'subscribe', rooms: ['flood'] });
  // masked text frame, built by hand
  const { buildFrame } = await import('./lib.mjs');
  sock.write(buildFrame(1, sub));
  await sleep(300);
  sock.pause(); // stop reading: the kernel buffers fill, then the server's queue
  let closedSeen = false;
  sock.on('close', () => { closedSeen = true; });
  const text = 'x'.repeat(8000);
  let got = 0;
  sender.onFrame = (f) => { if (f.json && f.json.type === 'message') { got++; return true; } return false; };
  // up to 40 MB in all, at most 12 messages (~96 KB, under the limit) in flight
  // so that the sender, which reads, never gets near PARLEY_MAX_OUTBUF.
  // The paused raw client cannot see its close while paused: stop when the
  // server's status shows one connection fewer, or after all messages.
  const { httpRequest } = await import('./lib.mjs');
  const conns = async () => (await httpRequest(srv.port, 'GET', '/api/websocket/status')).json.connections.total;
  const before = await conns();
  for (let i = 0; i < 5000 && sender.open; i++) {
    while (i - got >= 12 && sender.open) await sleep(2);
    sender.send({ type: 'message', room: 'flood', text });
    if (i % 100 === 99 && (await conns()) < before) break;
  }
  assert(sender.open, `the sender (which reads) was closed: ${JSON.stringify(sender.closeInfo)}`);
  // read what the server sent: find its close frame
  let buf = Buffer.from(rest);
  sock.on('data', (d) => { buf = Buffer.concat([buf, d]); });
  sock.resume();
  const t0 = Date.now();
  while (!closedSeen && Date.now() - t0 < 10000) await sleep(50);
  sock.destroy();
  const close = parseFrames(buf).frames.find((f) => f.opcode === 8);
  assert(closedSeen, 'the slow client was not disconnected');
  if (close) eq(close.payload.readUInt16BE(0), 4008, 'close code for a slow consumer');
  if (process.env.PARLEY_TEST_DEBUG) console.log('  (slow consumer close frame: ' + (close ? close.payload.readUInt16BE(0) : 'none') + ')');
  assert(sender.open, 'the sender was closed too');
  await sender.ping();
  // and it is counted (docs/operations.md): one slow consumer, on whichever shard held it
  const metrics = (await httpRequest(srv.port, 'GET', '/metrics')).text;
  const cut = metrics.split('\n').filter((l) => l.startsWith('parley_slow_consumer_disconnects_total{'))
    .reduce((n, l) => n + Number(l.split(' ')[1]), 0);
  eq(cut, 1, 'parley_slow_consumer_disconnects_total');
}, { timeout: 120000 });
