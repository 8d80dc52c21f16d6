// TLS served by parleyd itself (issue 11): a client that verifies the certificate, TLS beside
// plain, ALPN, what is refused (old protocol versions, plain HTTP, garbage, stalled and flooding
// handshakes: each closed, nobody else delayed), and SIGHUP reloading the certificate without
// dropping anyone. Certificates are made here with the openssl CLI (lib.mjs tlsFiles).
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import {
  test, startRedis, startParleyd, connect, connectAuthed, mintToken, newUser, httpRequest, tlsFiles,
  tlsCa, until, sleep, eq, assert,
} from './lib.mjs';

// A TLS connection to `port`; resolves { socket, cert (the peer's), alpn } or rejects.
function tlsConnect(port, opts = {}) {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ port, host: '127.0.0.1', servername: 'localhost', ca: tlsCa(), ...opts });
    s.once('secureConnect', () => resolve({ socket: s, cert: s.getPeerCertificate(), alpn: s.alpnProtocol, version: s.getProtocol() }));
    s.once('error', reject);
    setTimeout(() => reject(new Error('TLS connect timed out')), 5000);
  });
}

// Bytes to a port; resolves how the server ended it: { closed, ms, data }.
function poke(port, bytes, ms = 8000) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const t0 = Date.now();
    let data = Buffer.alloc(0), done = false;
    const finish = (closed) => { if (done) return; done = true; clearTimeout(t); s.destroy(); resolve({ closed, ms: Date.now() - t0, data }); };
    const t = setTimeout(() => finish(false), ms);
    s.on('connect', () => { if (bytes) s.write(bytes); });
    s.on('data', (d) => { data = Buffer.concat([data, d]); });
    s.on('close', () => finish(true));
    s.on('error', () => finish(true));
  });
}

test('tls: wss and https beside plain ws, with a client that verifies the certificate; ALPN http/1.1; TLS 1.2', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis, tls: 'both', env: { PARLEY_MAX_FRAME: 200000, PARLEY_MAX_TEXT: 100000 } });
  // https: the token endpoint names wss:// for a request that came over TLS
  const r = await httpRequest(srv.tlsPort, 'GET', '/health');
  eq(r.status, 200, 'GET /health over https');
  const { socket, alpn, version, cert } = await tlsConnect(srv.tlsPort, { ALPNProtocols: ['http/1.1'] });
  eq(alpn, 'http/1.1', 'ALPN');
  eq(version, 'TLSv1.2', 'protocol version');
  assert(cert && cert.subjectaltname && cert.subjectaltname.includes('127.0.0.1'), `certificate: ${JSON.stringify(cert && cert.subject)}`);
  socket.destroy();
  // Key exchange: the server's order (X25519, P-256, P-384), whatever the client lists first;
  // mbedTLS's default would take P-521 for a client offering it, at three times the CPU.
  for (const [offer, want] of [['P-521:P-384:X25519:P-256', 'X25519'], ['P-521:P-384:P-256', 'prime256v1']]) {
    const k = await tlsConnect(srv.tlsPort, { ecdhCurve: offer });
    eq(k.socket.getEphemeralKeyInfo().name, want, `key exchange group for a client offering ${offer}`);
    k.socket.destroy();
  }
  // wss and ws clients in one room
  const a = await connect(srv.wssUrl, { token: mintToken('tls-a') });
  await a.nextJson('authenticated');
  const b = await connect(`ws://127.0.0.1:${srv.port}/ws`, { token: mintToken('tls-b') });
  await b.nextJson('authenticated');
  await a.subscribe(['mixed']); await b.subscribe(['mixed']);
  a.send({ type: 'message', room: 'mixed', text: 'from wss' });
  b.send({ type: 'message', room: 'mixed', text: 'from ws' });
  for (const c of [a, b])
    for (const text of ['from wss', 'from ws'])
      eq((await c.nextJson((j) => j.type === 'message' && j.text === text, 5000)).text, text, 'delivered across ws and wss');
  // a large message (several TLS records each way)
  const big = 'z'.repeat(60000);
  a.send({ type: 'message', room: 'mixed', text: big });
  eq((await b.nextJson((j) => j.type === 'message' && j.text.length === big.length, 5000)).text, big, 'a 60 KB message over TLS');
  // A burst queues many frames at once; the server gathers them into records of up to 16 KB
  // (tls_write): sizes from a few bytes to 40 KB, so records end inside frames, frames span
  // records and some go in without the gathering copy. Every one must arrive intact, in order.
  const sizes = Array.from({ length: 300 }, (_, i) => [1, 7, 150, 900, 5000, 16383, 16384, 16385, 40000][i % 9] + (i % 5));
  const got = [];
  a.onFrame = (f) => { if (f.json && f.json.type === 'message' && /^burst /.test(f.json.text)) { got.push(f.json.text); return true; } return false; };
  sizes.forEach((n, i) => b.send({ type: 'message', room: 'mixed', text: `burst ${i} ${'y'.repeat(n)}` }));
  await until(() => got.length === sizes.length, 15000, `the burst over wss (${got.length} of ${sizes.length})`);
  for (let i = 0; i < sizes.length; i++)
    if (got[i] !== `burst ${i} ${'y'.repeat(sizes[i])}`) throw new Error(`burst message ${i} (of ${sizes[i]} bytes) arrived as ${String(got[i]).slice(0, 60)}... (${String(got[i]).length} chars)`);
  a.onFrame = null;
  // a client that does not trust the certificate is refused by its own check
  let refused = null;
  try { await tlsConnect(srv.tlsPort, { ca: undefined }); } catch (e) { refused = e; }
  assert(refused && /self.signed|unable to (get|verify)/i.test(refused.message), `an unverifiable certificate was accepted: ${refused && refused.message}`);
  assert(srv.running, 'parleyd exited');
});

test('tls: plain HTTP, garbage, TLS 1.0, a stalled handshake and a handshake flood on the TLS port are closed; other clients are not delayed', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis, tls: 'both', env: { PARLEY_TLS_HANDSHAKE_TIMEOUT: 2, PARLEY_LOG_LEVEL: 'debug' } });
  const port = srv.tlsPort;
  const ok = await connect(srv.wssUrl, { token: mintToken('steady') });
  await ok.nextJson('authenticated');
  // plain HTTP to the TLS port: closed at once
  const plain = await poke(port, 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
  assert(plain.closed && plain.ms < 2000, `plain HTTP on the TLS port: ${JSON.stringify(plain)}`);
  // garbage
  const garbage = await poke(port, Buffer.from('\x16\x03\x01\x00\x05hello, no TLS here\r\n'.repeat(20), 'latin1'));
  assert(garbage.closed && garbage.ms < 2000, `garbage on the TLS port: ${JSON.stringify({ ...garbage, data: undefined })}`);
  // TLS 1.0
  let old = null;
  try { await tlsConnect(port, { minVersion: 'TLSv1', maxVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' }); } catch (e) { old = e; }
  assert(old, 'a TLS 1.0 handshake succeeded');
  // a client that starts a handshake and stalls: closed after PARLEY_TLS_HANDSHAKE_TIMEOUT (2 s)
  const hello = Buffer.from('16030100a5010000a10303' + '00'.repeat(32), 'hex'); // a ClientHello's first bytes
  const stalled = poke(port, hello, 8000);
  // a flood of 300 handshakes that never finish, opened at once
  const flood = [];
  for (let i = 0; i < 300; i++) {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => {});
    s.on('connect', () => s.write(hello));
    flood.push(s);
  }
  // meanwhile the established client is served as usual
  const t0 = Date.now();
  await ok.ping(3000);
  const rtt = Date.now() - t0;
  const st = await stalled;
  assert(st.closed && st.ms >= 1500 && st.ms < 6000, `a stalled handshake: closed ${st.closed} after ${st.ms} ms`);
  await until(() => flood.every((s) => s.destroyed || s.readyState === 'closed'), 10000, 'the flood to be closed');
  for (const s of flood) s.destroy();
  await ok.ping(3000);
  assert(ok.open && srv.running, 'the established client or parleyd went away');
  // each refusal logged once, at debug
  const tlsLines = srv.log().split('\n').filter((l) => /TLS handshake failed|no tls handshake within/.test(l));
  assert(tlsLines.length >= 300 && tlsLines.every((l) => / DEBUG /.test(l)), `TLS refusals not logged at debug: ${tlsLines.length}, ${tlsLines.slice(0, 2)}`);
  console.log(`  (ping during a 300-handshake flood: ${rtt} ms; ${tlsLines.length} refusals logged)`);
}, { timeout: 60000 });

test('tls: SIGHUP reloads the certificate for new handshakes; connections stay; a bad file keeps the pair in use', async () => {
  const redis = await startRedis();
  const dir = fs.mkdtempSync(path.join(tlsFiles().dir, 'reload-'));
  const cert = path.join(dir, 'cert.pem'), key = path.join(dir, 'key.pem');
  const first = tlsFiles('first'), second = tlsFiles('second');
  fs.copyFileSync(first.cert, cert); fs.copyFileSync(first.key, key);
  const srv = await startParleyd({ redis, tls: 'both', env: { PARLEY_TLS_CERT: cert, PARLEY_TLS_KEY: key } });
  const before = await tlsConnect(srv.tlsPort);
  eq(before.cert.subject.CN, 'first', 'certificate before the reload');
  before.socket.destroy();
  const alive = await connect(srv.wssUrl, { token: mintToken(newUser('stays')) });
  await alive.nextJson('authenticated');
  fs.copyFileSync(second.cert, cert); fs.copyFileSync(second.key, key);
  srv.child.kill('SIGHUP');
  await until(() => /TLS certificate and key reloaded/.test(srv.log()), 5000, 'the reload in the log');
  // every loop picks the new pair up at its next handshake
  for (let i = 0; i < 4; i++) {
    const after = await tlsConnect(srv.tlsPort);
    eq(after.cert.subject.CN, 'second', `certificate after the reload (connection ${i})`);
    after.socket.destroy();
  }
  await alive.ping();
  assert(alive.open, 'a connection made before the reload was dropped');
  // a key that does not match: logged, the second pair kept
  fs.copyFileSync(first.key, key);
  srv.child.kill('SIGHUP');
  await until(() => /TLS reload failed/.test(srv.log()), 5000, 'the failed reload in the log');
  const still = await tlsConnect(srv.tlsPort);
  eq(still.cert.subject.CN, 'second', 'certificate after a bad reload');
  still.socket.destroy();
  await alive.ping();
  assert(srv.running, 'parleyd exited');
});

test('tls: PARLEY_LISTEN=none serves TLS only; TLS settings are checked at start-up', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis, tls: true });
  const c = await connectAuthed(srv);
  await c.ping();
  eq((await httpRequest(srv.port, 'POST', '/api/websocket/token', { headers: { Authorization: 'Bearer integration-api-key' }, body: { user_id: 'u' } })).json.websocket_url,
    `wss://127.0.0.1:${srv.port}/ws`, 'websocket_url over TLS');
  const { spawnSync } = await import('node:child_process');
  const { PARLEYD } = await import('./lib.mjs');
  const base = { PATH: process.env.PATH, PARLEY_JWT_SECRET: 's', PARLEY_API_KEY: 'k', PARLEY_REDIS_URL: redis.url, PARLEY_LISTEN: 'none' };
  const missing = spawnSync(PARLEYD, [], { env: { ...base, PARLEY_TLS_LISTEN: '127.0.0.1:1' }, encoding: 'utf8', timeout: 5000 });
  assert(missing.status === 2 && /PARLEY_TLS_CERT/.test(missing.stderr), `no certificate: ${missing.stderr}`);
  const none = spawnSync(PARLEYD, [], { env: base, encoding: 'utf8', timeout: 5000 });
  assert(none.status === 2 && /nothing to listen on/.test(none.stderr), `no listener: ${none.stderr}`);
  const badFile = spawnSync(PARLEYD, [], { env: { ...base, PARLEY_TLS_LISTEN: '127.0.0.1:1', PARLEY_TLS_CERT: '/nonexistent.pem', PARLEY_TLS_KEY: tlsFiles().key }, encoding: 'utf8', timeout: 5000 });
  assert(badFile.status === 1 && /cannot read \/nonexistent.pem/.test(badFile.stderr), `a missing file: ${badFile.stderr}`);
  const mismatch = spawnSync(PARLEYD, [], { env: { ...base, PARLEY_TLS_LISTEN: '127.0.0.1:1', PARLEY_TLS_CERT: tlsFiles().cert, PARLEY_TLS_KEY: tlsFiles('other').key }, encoding: 'utf8', timeout: 5000 });
  assert(mismatch.status === 1 && /does not hold the key/.test(mismatch.stderr), `a key of another certificate: ${mismatch.stderr}`);
});

// A TLS 1.2 handshake that stays open until the server's NewSessionTicket (if any) has come:
// resolves { socket, reused, ticket, session, health (the answer to GET /health) }.
function tlsSession(port, opts = {}) {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ port, host: '127.0.0.1', servername: 'localhost', ca: tlsCa(), ...opts });
    let session = null;
    s.on('session', (sess) => { session = sess; });
    s.once('secureConnect', () => {
      // The ticket message follows the server's Finished; a request's answer comes after it.
      s.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
      s.once('data', (d) => resolve({ socket: s, reused: s.isSessionReused(), ticket: s.getTLSTicket(), session, health: String(d) }));
    });
    s.once('error', reject);
    setTimeout(() => reject(new Error('TLS connect timed out')), 5000);
  });
}

test('tls: a reconnect resumes its session with its ticket (shards share the key); a forged, foreign or absent ticket gets a full handshake; PARLEY_TLS_TICKET_LIFETIME=0 issues none', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis, tls: 'both', env: { PARLEY_SHARDS: 2 } });
  const first = await tlsSession(srv.tlsPort);
  eq(first.reused, false, 'first connection: a full handshake');
  assert(first.ticket && first.ticket.length > 32, `no session ticket issued: ${first.ticket && first.ticket.length}`);
  assert(first.session, 'no session to resume');
  first.socket.destroy();
  // Reconnects land on either shard (SO_REUSEPORT hashes the new source port): all resume.
  for (let i = 0; i < 8; i++) {
    const again = await tlsSession(srv.tlsPort, { session: first.session });
    eq(again.reused, true, `reconnect ${i} resumed its session`);
    assert(/^HTTP\/1.1 200/.test(again.health), `GET /health over a resumed session: ${again.health.slice(0, 80)}`);
    again.socket.destroy();
  }
  // WebSocket traffic over a resumed session
  const ws = await connect(srv.wssUrl, { token: mintToken('resumed'), wsOptions: { session: first.session } });
  eq((await ws.nextJson('authenticated')).user, 'resumed', 'wss over a resumed session');
  eq(ws.ws._socket.isSessionReused(), true, 'the WebSocket resumed its session');
  await ws.ping();
  ws.close();
  // A forged ticket (one byte changed inside it, in the session the client presents): the server
  // cannot decrypt it and completes a full handshake; the connection works.
  const forged = Buffer.from(first.session);
  const at = forged.indexOf(first.ticket);
  assert(at > 0, 'the ticket inside the session');
  forged[at + (first.ticket.length >> 1)] ^= 0x5a;
  const f = await tlsSession(srv.tlsPort, { session: forged });
  eq(f.reused, false, 'a forged ticket resumes nothing');
  assert(/^HTTP\/1.1 200/.test(f.health), `a forged ticket, then a full handshake: ${f.health.slice(0, 80)}`);
  assert(f.ticket && !f.ticket.equals(first.ticket), 'a new ticket after the full handshake');
  f.socket.destroy();
  // Another instance has its own ticket key (ip_hash normally sends a client back to the issuer).
  const other = await startParleyd({ redis, tls: 'both' });
  const o = await tlsSession(other.tlsPort, { session: first.session });
  eq(o.reused, false, "another instance's ticket resumes nothing");
  assert(/^HTTP\/1.1 200/.test(o.health), `another instance, full handshake: ${o.health.slice(0, 80)}`);
  o.socket.destroy();
  // Tickets off: none issued, nothing resumed.
  const off = await startParleyd({ redis, tls: 'both', env: { PARLEY_TLS_TICKET_LIFETIME: 0 } });
  const n1 = await tlsSession(off.tlsPort);
  assert(!n1.ticket || n1.ticket.length === 0, 'PARLEY_TLS_TICKET_LIFETIME=0: no ticket');
  n1.socket.destroy();
  if (n1.session) {
    const n2 = await tlsSession(off.tlsPort, { session: n1.session });
    eq(n2.reused, false, 'PARLEY_TLS_TICKET_LIFETIME=0: no resumption');
    n2.socket.destroy();
  }
  for (const s of [srv, other, off]) assert(s.running, 'parleyd exited');
  assert(!/ (ERROR|WARN) .*TLS/.test(srv.log()), 'a forged ticket is not an error');
});
