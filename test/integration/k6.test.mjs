// bench/k6/chat.js, run small under the k6 stand-in (test/k6-standin/: k6 itself cannot be
// installed here) against real instances behind nginx (deploy/docker/nginx.conf): it must pass
// with deliveries and no loss, agree with what PostgreSQL stored, and fail (exit 99) when a
// threshold cannot be met or the server is not there.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import {
  test, ROOT, API_KEY, WebSocket, current, startRedis, startPostgres, startParleyd, dbEnv, runCmd, freePort, tmpDir, eq, assert,
} from './lib.mjs';
import { startComposeNginx } from './deploylib.mjs';

const STANDIN = path.join(ROOT, 'test/k6-standin/k6.mjs');
const SCRIPT = path.join(ROOT, 'bench/k6/chat.js');

async function k6(env, what) {
  const summary = path.join(tmpDir(), `k6-${what}.json`);
  const args = [STANDIN, 'run', '--summary-export', summary];
  for (const [k, v] of Object.entries(env)) args.push('-e', `${k}=${v}`);
  args.push(SCRIPT);
  const r = await runCmd(process.execPath, args, { env: { PATH: process.env.PATH, HOME: process.env.HOME || '/tmp' }, timeout: 90000 });
  r.summary = fs.existsSync(summary) ? JSON.parse(fs.readFileSync(summary, 'utf8')).metrics : null;
  r.out = `${r.stdout}\n${r.stderr}`.trim();
  return r;
}
const SMALL = { VUS: 4, RAMP: '1s', HOLD: '2s', RAMP_DOWN: '1s', ROOMS: 2, MSGS: 5, INTERVAL_MS: 100, SETTLE_MS: 1000 };

test('k6: bench/k6/chat.js (under the stand-in, not k6) through nginx against three instances: exit 0, deliveries, no loss, every message stored; a threshold it cannot meet fails the run (99)', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = dbEnv(pg, { PARLEY_OPEN_ROOMS: 1, PARLEY_TRUSTED_PROXIES: '127.0.0.1', PARLEY_SHARDS: 1 });
  const servers = {};
  for (const n of [1, 2, 3]) servers[`parleyd-${n}:8080`] = await startParleyd({ redis, env, tls: false });
  const ng = await startComposeNginx(servers);
  const inst = Object.values(servers);
  // Tokens and one WebSocket URL in four through nginx (ip_hash: one instance for 127.0.0.1),
  // the rest straight to each instance, so that rooms span instances.
  const urls = [`ws://127.0.0.1:${ng.port}/ws`, ...inst.map((s) => s.wsUrl)].join(',');
  const base = { ...SMALL, PARLEY_URL: `http://127.0.0.1:${ng.port}`, PARLEY_API_KEY: API_KEY, PARLEY_WS_URLS: urls };
  const r = await k6(base, 'pass');
  assert(r.code === 0, `the run exited ${r.code}:\n${r.out.slice(-3000)}`);
  assert(!/ERRO/.test(r.out), `errors in the run:\n${r.out.slice(-2000)}`);
  const m = r.summary;
  if (process.env.PARLEY_K6_SHOW) console.log(r.out); // the stand-in's summary, to look at
  assert(m, 'no summary written');
  eq(m.parley_lost.count, 0, 'lost messages');
  eq(m.parley_duplicates.count, 0, 'duplicates');
  eq(m.parley_unacked.count, 0, 'unacked messages');
  eq(m.parley_error_frames.count, 0, 'error frames');
  eq(m.parley_connected.value, 1, 'connected rate');
  assert(m.parley_sent.count >= 4 * SMALL.MSGS, `only ${m.parley_sent.count} messages sent`);
  assert(m.parley_delivered_others.count > 0, 'no message from another user delivered');
  assert(m.parley_delivered.count >= m.parley_sent.count, `${m.parley_delivered.count} deliveries for ${m.parley_sent.count} sends`);
  assert(m.parley_delivery_ms['p(95)'] > 0, 'no delivery latency measured');
  eq(m.checks.fails, 0, 'failed checks');
  for (const [k, t] of Object.entries(m)) for (const [expr, bad] of Object.entries(t.thresholds || {})) assert(!bad, `threshold ${k} ${expr} failed`);
  // What the script counts is what the server stored.
  eq(Number(await pg.scalar("SELECT count(*) FROM messages WHERE room_id LIKE 'k6-%'")), m.parley_sent.count, 'messages stored vs. sent');
  // The same run with a latency threshold no run can meet: thresholds fail the run.
  const bad = await k6({ ...base, VUS: 2, HOLD: '1s', P95_MS: 0 }, 'p95');
  assert(bad.code === 99, `with P95_MS=0 the run exited ${bad.code} (want 99):\n${bad.out.slice(-1500)}`);
  assert(bad.summary.parley_delivery_ms.thresholds['p(95)<0'] === true, 'the summary does not mark p(95)<0 as failed');
  eq(bad.summary.parley_lost.count, 0, 'lost messages in the second run');
}, { timeout: 120000 });

test('k6: bench/k6/chat.js (under the stand-in) fails (99) when nothing answers, and the stand-in refuses a script error (107)', async () => {
  const port = await freePort();
  const r = await k6({ ...SMALL, VUS: 1, RAMP: '500ms', HOLD: '500ms', RAMP_DOWN: '0s', PARLEY_URL: `http://127.0.0.1:${port}`, PARLEY_API_KEY: API_KEY }, 'dead');
  assert(r.code === 99, `against a closed port the run exited ${r.code} (want 99):\n${r.out.slice(-1500)}`);
  assert(r.summary.parley_connected.thresholds['rate==1'] === true, 'parley_connected rate==1 not marked failed');
  // No API key: setup() throws, as the script says it must.
  const nokey = await k6({ ...SMALL, VUS: 1, PARLEY_URL: `http://127.0.0.1:${port}` }, 'nokey');
  assert(nokey.code === 107 && /PARLEY_API_KEY/.test(nokey.out), `without an API key the run exited ${nokey.code}:\n${nokey.out.slice(-800)}`);
}, { timeout: 60000 });

// A fake server that speaks enough of the protocol for the script but skips a seq after every
// message it relays (as a server that lost one would look to a subscriber): the script must
// count the gaps as lost and fail the run. Proves the loss check is not vacuous.
test('k6: bench/k6/chat.js (under the stand-in) counts a seq gap as a lost message and fails the run (99)', async () => {
  const srv = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ token: `fake.${JSON.parse(body).user_id}`, websocket_url: `ws://127.0.0.1:${srv.address().port}/ws`, expires_in: 3600 }));
    });
  });
  const wss = new WebSocket.Server({ server: srv });
  let seq = 0;
  wss.on('connection', (ws, req) => {
    const user = String(req.headers.authorization || '').replace(/^Bearer fake\./, '');
    ws.send(JSON.stringify({ type: 'authenticated', user, server: 'fake', session: 's' }));
    ws.on('message', (raw) => {
      const f = JSON.parse(raw);
      if (f.type === 'subscribe') ws.send(JSON.stringify({ type: 'subscribed', room: f.rooms[0], seq }));
      if (f.type === 'message') {
        seq += 2; // one skipped: a gap
        ws.send(JSON.stringify({ type: 'message', seq, room: f.room, id: String(seq), from: user, text: f.text, ts: Date.now(), cid: f.cid }));
        ws.send(JSON.stringify({ type: 'ack', cid: f.cid, id: String(seq), seq }));
      }
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  current.cleanups.push(() => new Promise((r) => { for (const c of wss.clients) c.terminate(); wss.close(); srv.close(() => r()); }));
  const r = await k6({ ...SMALL, VUS: 1, RAMP: '500ms', HOLD: '1s', RAMP_DOWN: '0s', SETTLE_MS: 300, PARLEY_URL: `http://127.0.0.1:${srv.address().port}`, PARLEY_API_KEY: API_KEY }, 'gaps');
  assert(r.code === 99, `with gaps the run exited ${r.code} (want 99):\n${r.out.slice(-1500)}`);
  assert(r.summary.parley_lost.count > 0 && r.summary.parley_lost.thresholds['count==0'] === true, `lost: ${JSON.stringify(r.summary.parley_lost)}`);
  eq(r.summary.parley_unacked.count, 0, 'unacked (the fake acks everything)');
}, { timeout: 60000 });
