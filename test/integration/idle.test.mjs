import {
  test, startRedis, startParleyd, connectAuthed, rawUpgrade, parseFrames, mintToken, newUser, eq, assert, sleep,
} from './lib.mjs';

const ENV = { PARLEY_PING_INTERVAL: 1, PARLEY_IDLE_TIMEOUT: 3 };

test('idle: a client that answers pings stays; a silent raw client is closed 1001 within ~6 s', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis, env: ENV });
  const good = await connectAuthed(srv); // ws answers ping frames automatically

  const t0 = Date.now();
  const { sock, head, rest } = await rawUpgrade(srv.port, { token: mintToken(newUser()) });
  assert(/^HTTP\/1\.1 101/.test(head), `raw upgrade failed: ${head}`);
  let buf = Buffer.from(rest);
  let closedAt = null;
  sock.on('data', (d) => { buf = Buffer.concat([buf, d]); });
  const closed = new Promise((resolve) => sock.on('close', () => { closedAt = Date.now(); resolve(); }));
  sock.on('error', () => {});

  await sleep(5000);
  assert(good.open, `ws client that answers pings was closed: ${JSON.stringify(good.closeInfo)}`);
  assert(good.pings >= 2, `expected the server to ping an idle client every ~1 s, got ${good.pings} pings in 5 s`);
  await good.ping();

  await Promise.race([closed, sleep(Math.max(0, 7000 - (Date.now() - t0)))]);
  sock.destroy();
  assert(closedAt, `silent raw client not closed ${Date.now() - t0} ms after upgrade`);
  const ms = closedAt - t0;
  assert(ms >= 2500, `silent client closed too early (${ms} ms; idle timeout is 3 s)`);
  const { frames } = parseFrames(buf);
  const authed = frames.find((f) => f.opcode === 1 && f.payload.toString().startsWith('{"type":"authenticated"'));
  assert(authed, 'raw client did not get authenticated');
  assert(frames.some((f) => f.opcode === 9), 'raw client got no ping frame before being dropped');
  const close = frames.find((f) => f.opcode === 8);
  assert(close, 'no close frame sent to the idle client');
  eq(close.payload.readUInt16BE(0), 1001, 'idle close code');
  eq(close.payload.subarray(2).toString(), 'idle timeout', 'idle close reason');
  assert(good.open, 'good client closed');
});
