// Loop wake-ups and slow consumers (issue 10): output and Redis commands
// queued outside an I/O callback must not wait in poll for the next wake-up,
// catch-ups stream as the socket drains, and a client is cut off only for
// what it fails to read.
//
// The time limits here are generous bounds on a stall (a second per turn
// before the fix), not speed targets: 1,000 pongs took ~7 s, 1,000 recovered
// messages 4-6 s, a heartbeat ~1 s.
import net from 'node:net';
import fs from 'node:fs';
import {
  test, startRedis, startParleyd, connectAuthed, rawUpgrade, buildFrame, parseFrames, mintToken,
  newUser, redisMonitor, until, sleep, eq, assert, httpRequest,
} from './lib.mjs';

// Read every server frame on a raw socket into `frames` (text payloads as strings).
function collect(sock, rest) {
  const st = { frames: [], buf: Buffer.from(rest || []), closed: false };
  const take = () => {
    const { frames, rest: r } = parseFrames(st.buf);
    for (const f of frames) st.frames.push({ opcode: f.opcode, text: f.payload.toString('utf8'), payload: f.payload });
    st.buf = Buffer.from(r);
  };
  take();
  sock.on('data', (d) => { st.buf = Buffer.concat([st.buf, d]); take(); });
  sock.on('close', () => { st.closed = true; });
  return st;
}

test('wake-up: 1,000 pings sent in one write get 1,000 pongs at once (no one-second stall per 128 frames)', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis });
  const { sock, head, rest } = await rawUpgrade(srv.port, { token: mintToken(newUser()) });
  assert(/^HTTP\/1\.1 101/.test(head), `upgrade: ${head}`);
  const st = collect(sock, rest);
  await until(() => st.frames.some((f) => f.text.includes('"authenticated"')), 5000, 'authenticated');
  const ping = buildFrame(1, JSON.stringify({ type: 'ping' }));
  const t0 = Date.now();
  sock.write(Buffer.concat(Array.from({ length: 1000 }, () => ping)));
  const pongs = () => st.frames.filter((f) => f.text === '{"type":"pong"}').length;
  await until(() => pongs() === 1000, 3000, `1,000 pongs (got ${pongs()})`, 20);
  console.log(`  (1,000 pongs in ${Date.now() - t0} ms)`);
  sock.destroy();
});

test('wake-up: a catch-up of 1,000 missed messages arrives right after subscribed, not seconds later', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis });
  const room = 'wake-catchup';
  const pub = await connectAuthed(srv);
  await pub.subscribe([room]);
  let mine = 0;
  pub.onFrame = (f) => { if (f.json && f.json.type === 'message') { mine++; return true; } return false; };
  for (let i = 0; i < 1000; i++) {
    while (i - mine >= 100) await sleep(1);
    pub.send({ type: 'message', room, text: `m${i}` });
  }
  await until(() => mine === 1000, 20000, 'the publisher\'s own 1,000 copies');
  const late = await connectAuthed(srv);
  const got = [];
  let subscribedAt = 0;
  late.onFrame = (f) => {
    if (f.json && f.json.type === 'subscribed') { subscribedAt = Date.now(); return false; }
    if (f.json && f.json.type === 'message') { got.push(f.json.seq); return true; }
    return false;
  };
  late.send({ type: 'subscribe', rooms: [room], since: { [room]: 0 } });
  const sub = await late.nextJson('subscribed', 5000);
  eq(sub.recovered, 1000, 'recovered');
  await until(() => got.length === 1000, 3000, `1,000 recovered messages (got ${got.length})`, 20);
  console.log(`  (1,000 recovered messages ${Date.now() - subscribedAt} ms after subscribed)`);
  for (let i = 0; i < 1000; i++) if (got[i] !== i + 1) throw new Error(`message ${i}: seq ${got[i]}, expected ${i + 1}`);
});

// A command issued from a timer (the heartbeat) must reach Redis in the same loop turn: before
// the fix it waited for the next wake-up, on an idle instance the 1 s sweep timer.
test('wake-up: the heartbeat, sent from a timer, reaches Redis when it is stamped', async () => {
  const redis = await startRedis();
  const mon = await redisMonitor(redis);
  const srv = await startParleyd({ redis });
  // MONITOR: <unix s.us> [db addr] "EVALSHA" sha "0" prefix server now ttl (the sweep script)
  const beats = () => mon.lines.map((l) => {
    const m = /^(\d+\.\d+) \[[^\]]+\] "EVALSHA" "[0-9a-f]{40}" "0" "ws:" "([^"]+)" "(\d+)" "15"$/.exec(l);
    return m && m[2] === srv.serverId ? { at: Number(m[1]) * 1000, stamped: Number(m[3]) } : null;
  }).filter(Boolean);
  await until(() => beats().length >= 2, 15000, 'two heartbeats');
  for (const b of beats()) {
    const lag = b.at - b.stamped;
    assert(lag < 300, `a heartbeat stamped at ${b.stamped} reached Redis ${lag.toFixed(0)} ms later`);
  }
  console.log(`  (heartbeat lags: ${beats().map((b) => (b.at - b.stamped).toFixed(1)).join(', ')} ms)`);
}, { timeout: 30000 });

// Publish `n` payloads of `size` bytes to room:<room> with one write, straight into Redis: the
// subscriber gets them in one read, so every shard gets them in one loop turn.
function publishBurst(redis, room, n, size) {
  return new Promise((resolve, reject) => {
    const s = net.connect(redis.port, '127.0.0.1');
    const chan = `room:${room}`;
    const cmds = [];
    for (let i = 0; i < n; i++) {
      const payload = JSON.stringify({ type: 'burst', i, pad: 'x'.repeat(size) });
      cmds.push(`*3\r\n$7\r\nPUBLISH\r\n$${Buffer.byteLength(chan)}\r\n${chan}\r\n$${Buffer.byteLength(payload)}\r\n${payload}\r\n`);
    }
    let replies = 0, buf = '';
    s.on('connect', () => s.write(cmds.join('')));
    s.on('data', (d) => { buf += d; replies = (buf.match(/\r\n/g) || []).length; if (replies >= n) { s.destroy(); resolve(); } });
    s.on('error', reject);
  });
}

test('slow consumer: a burst larger than PARLEY_MAX_OUTBUF in one loop turn does not cut off a client that reads', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis, env: { PARLEY_MAX_OUTBUF: 262144 } });
  const c = await connectAuthed(srv);
  await c.subscribe(['burst']);
  let got = 0;
  c.onFrame = (f) => { if (f.json && f.json.type === 'burst') { got++; return true; } return false; };
  await publishBurst(redis, 'burst', 400, 5000); // ~2 MB, eight times the limit
  await until(() => got === 400, 10000, `400 burst frames (got ${got}; closed: ${JSON.stringify(c.closeInfo)})`);
  assert(c.open, `closed: ${JSON.stringify(c.closeInfo)}`);
  await c.ping();
});

test('slow consumer: a 10,000-message catch-up to a client that reads is streamed, never cut off (PARLEY_MAX_OUTBUF 256 KiB)', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis, env: { PARLEY_MAX_OUTBUF: 262144, PARLEY_STREAM_LEN: 10000 } });
  const room = 'big-catchup';
  const pub = await connectAuthed(srv);
  await pub.subscribe([room]);
  let mine = 0;
  pub.onFrame = (f) => { if (f.json && f.json.type === 'message') { mine++; return true; } return false; };
  const text = 'y'.repeat(100);
  for (let i = 0; i < 10000; i++) {
    while (i - mine >= 200) await sleep(1);
    pub.send({ type: 'message', room, text });
  }
  await until(() => mine === 10000, 60000, 'the publisher\'s own 10,000 copies');
  const late = await connectAuthed(srv);
  let n = 0, last = 0, order = true;
  late.onFrame = (f) => {
    if (f.json && f.json.type === 'message') { n++; if (f.json.seq !== last + 1) order = false; last = f.json.seq; return true; }
    return false;
  };
  late.send({ type: 'subscribe', rooms: [room], since: { [room]: 0 } });
  const sub = await late.nextJson('subscribed', 5000);
  eq(sub.recovered, 10000, 'recovered');
  await until(() => n === 10000 || !late.open, 30000, `10,000 recovered (got ${n})`);
  assert(late.open, `the client that reads was closed: ${JSON.stringify(late.closeInfo)} after ${n} messages`);
  eq(n, 10000, 'recovered messages');
  assert(order, 'recovered messages out of order');
  // live ones go on after it
  late.onFrame = null;
  pub.send({ type: 'message', room, text: 'after' });
  eq((await late.nextJson((j) => j.type === 'message', 5000)).seq, 10001, 'the next live message');
}, { timeout: 120000 });

test('slow consumer: a client that stops reading is closed with 4008 once over PARLEY_MAX_OUTBUF_SOFT for its seconds, below the hard limit', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({
    redis,
    env: { PARLEY_MAX_OUTBUF: 64 << 20, PARLEY_MAX_OUTBUF_SOFT: 65536, PARLEY_MAX_OUTBUF_SOFT_SECONDS: 2 },
  });
  const sender = await connectAuthed(srv);
  await sender.subscribe(['soft']);
  const { sock, head, rest } = await rawUpgrade(srv.port, { token: mintToken(newUser()) });
  assert(/^HTTP\/1\.1 101/.test(head), `raw upgrade failed: ${head}`);
  sock.write(buildFrame(1, JSON.stringify({ type: 'subscribe', rooms: ['soft'] })));
  await sleep(300);
  sock.pause(); // stop reading
  let closed = false;
  sock.on('close', () => { closed = true; });
  let got = 0;
  sender.onFrame = (f) => { if (f.json && f.json.type === 'message') { got++; return true; } return false; };
  const status = async () => (await httpRequest(srv.port, 'GET', '/api/websocket/status')).json.connections.total;
  const before = await status();
  const text = 'z'.repeat(8000);
  const t0 = Date.now();
  // Fill the kernel's buffers, then keep a little more than the soft limit queued.
  for (let i = 0; i < 3000 && (await status()) >= before && Date.now() - t0 < 30000; i++) {
    while (i - got >= 10) await sleep(2);
    sender.send({ type: 'message', room: 'soft', text });
    if (i > 50) await sleep(20);
  }
  await until(async () => (await status()) < before, 15000, 'the stalled client to be dropped');
  const line = srv.log().split('\n').find((l) => l.includes('slow consumer'));
  assert(line, 'no slow-consumer line in the log');
  const unread = Number(/: (\d+) bytes unread/.exec(line)[1]);
  assert(unread > 65536 && unread < 64 << 20, `cut off with ${unread} bytes unread: ${line}`);
  sock.resume();
  let buf = Buffer.alloc(0);
  sock.on('data', (d) => { buf = Buffer.concat([buf, d]); });
  await until(() => closed, 10000, 'the socket to close');
  const close = parseFrames(Buffer.concat([Buffer.from(rest), buf])).frames.find((f) => f.opcode === 8);
  if (close) eq(close.payload.readUInt16BE(0), 4008, 'close code');
  assert(sender.open, 'the sender, which reads, was closed');
  await sender.ping();
}, { timeout: 90000 });
