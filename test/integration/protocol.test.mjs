import {
  test, startRedis, startParleyd, connect, connectAuthed, eq, assert, mintToken, newUser,
  rawUpgrade, buildFrame, parseFrames, sleep,
} from './lib.mjs';

const LIMITS = { PARLEY_MAX_TEXT: 100, PARLEY_MAX_FRAME: 4096, PARLEY_MAX_ROOMS: 4 };

async function setup(env = LIMITS) {
  const redis = await startRedis();
  const srv = await startParleyd({ redis, env });
  return { redis, srv };
}

test('protocol: every bad input gets its error and the connection keeps working', async () => {
  const { srv } = await setup();
  const c = await connectAuthed(srv);
  await c.subscribe(['home']);
  const cases = [
    // [what, frame to send (string = raw text), expected code, expected cid]
    ['invalid JSON', 'not json', 'bad_json'],
    ['truncated JSON', '{"type":"ping"', 'bad_json'],
    ['bytes after the object', '{"type":"ping"} x', 'bad_json'],
    ['a second object', '{"type":"ping"}{"type":"ping"}', 'bad_json'],
    ['JSON array', '[{"type":"ping"}]', 'bad_json'],
    ['JSON string', '"ping"', 'bad_json'],
    ['JSON number', '42', 'bad_json'],
    ['JSON null', 'null', 'bad_json'],
    ['missing type', '{"room":"home"}', 'bad_json'],
    ['non-string type', '{"type":7}', 'bad_json'],
    ['unknown type', '{"type":"shout"}', 'unknown_type'],
    ['unknown type with cid', '{"type":"shout","cid":"u-1"}', 'unknown_type', 'u-1'],
    ['subscribe: empty room id', { type: 'subscribe', rooms: [''] }, 'bad_request'],
    ['subscribe: 129-byte room id', { type: 'subscribe', rooms: ['r'.repeat(129)] }, 'bad_request'],
    ['subscribe: space in room id', { type: 'subscribe', rooms: ['bad room'] }, 'bad_request'],
    ['subscribe: slash in room id', { type: 'subscribe', rooms: ['a/b'] }, 'bad_request'],
    ['subscribe: star in room id', { type: 'subscribe', rooms: ['room*'] }, 'bad_request'],
    ['subscribe: non-ASCII room id', { type: 'subscribe', rooms: ['caf\u00e9'] }, 'bad_request'],
    ['subscribe: rooms not an array', { type: 'subscribe', rooms: 'home' }, 'bad_request'],
    ['subscribe: non-string room', { type: 'subscribe', rooms: [5] }, 'bad_request'],
    ['subscribe: empty array', { type: 'subscribe', rooms: [] }, 'bad_request'],
    ['subscribe: no rooms member', { type: 'subscribe' }, 'bad_request'],
    ['unsubscribe: bad room id', { type: 'unsubscribe', rooms: ['x y'] }, 'bad_request'],
    ['unsubscribe: rooms not an array', { type: 'unsubscribe', rooms: {} }, 'bad_request'],
    ['message: not subscribed', { type: 'message', room: 'elsewhere', text: 'hi', cid: 'ns-1' }, 'not_subscribed', 'ns-1'],
    ['message: not subscribed, no cid', { type: 'message', room: 'elsewhere', text: 'hi' }, 'not_subscribed'],
    ['message: text over PARLEY_MAX_TEXT', { type: 'message', room: 'home', text: 'x'.repeat(101), cid: 'tl-1' }, 'too_large', 'tl-1'],
    ['message: multibyte text over PARLEY_MAX_TEXT bytes', { type: 'message', room: 'home', text: '\u00e9'.repeat(51) }, 'too_large'],
    ['message: missing text', { type: 'message', room: 'home' }, 'bad_request'],
    ['message: text not a string', { type: 'message', room: 'home', text: 5 }, 'bad_request'],
    ['message: empty text', { type: 'message', room: 'home', text: '' }, 'bad_request'],
    ['message: missing room', { type: 'message', text: 'hi' }, 'bad_request'],
    ['message: cid not a string', { type: 'message', room: 'home', text: 'hi', cid: 5 }, 'bad_request'],
    ['message: cid over 128 bytes', { type: 'message', room: 'home', text: 'hi', cid: 'c'.repeat(129) }, 'bad_request'],
    ['authenticate again, as another user', { type: 'authenticate', token: mintToken('someone') }, 'forbidden'],
    ['authenticate again, a bad token', { type: 'authenticate', token: 'x.y.z' }, 'unauthorized'],
    ['subscribe over PARLEY_MAX_ROOMS', { type: 'subscribe', rooms: ['m1', 'm2', 'm3', 'm4'] }, 'too_large'],
  ];
  for (const [what, frame, code, cid] of cases) {
    c.send(frame);
    try {
      await c.expectError(code, 5000, cid);
      if (cid === undefined) {
        // no cid sent: none echoed
      }
      await c.ping();
    } catch (e) { throw new Error(`${what}: ${e.message}`); }
  }
  // binary frame
  c.sendRaw(Buffer.from('{"type":"ping"}'), { binary: true });
  await c.expectError('bad_request').catch((e) => { throw new Error(`binary frame: ${e.message}`); });
  await c.ping();
  // nothing changed by the rejected frames: still exactly in 'home', not in m1
  c.send({ type: 'message', room: 'm1', text: 'x', cid: 'chk' });
  await c.expectError('not_subscribed', 5000, 'chk');
  // text of exactly PARLEY_MAX_TEXT bytes is accepted
  c.send({ type: 'message', room: 'home', text: 'y'.repeat(100), cid: 'max' });
  const m = await c.nextJson((j) => j.type === 'message' || j.type === 'error', 5000);
  assert(m.type === 'message' && m.cid === 'max', `100-byte text should be delivered: ${JSON.stringify(m)}`);
  assert(c.open, 'connection closed');
  eq(c.frames.length, 0, `unexpected extra frames: ${c.describePending()}`);
});

test('protocol: a subscribe with one bad room changes nothing (applied whole or not at all)', async () => {
  const { srv } = await setup();
  const c = await connectAuthed(srv);
  c.send({ type: 'subscribe', rooms: ['good1', 'bad room', 'good2'] });
  await c.expectError('bad_request');
  await c.none((j) => j.type === 'subscribed', 300, 'subscribed frame after rejected subscribe');
  for (const r of ['good1', 'good2']) {
    c.send({ type: 'message', room: r, text: 'x', cid: r });
    await c.expectError('not_subscribed', 5000, r);
  }
  // up to PARLEY_MAX_ROOMS is fine, one more is too_large and changes nothing
  await c.subscribe(['a1', 'a2', 'a3']);
  c.send({ type: 'subscribe', rooms: ['a4', 'a5'] });
  await c.expectError('too_large');
  c.send({ type: 'message', room: 'a4', text: 'x', cid: 'a4' });
  await c.expectError('not_subscribed', 5000, 'a4');
  await c.subscribe(['a4', 'a1']); // a1 again is idempotent, total 4
  await c.ping();
});

test('protocol: a frame over PARLEY_MAX_FRAME closes with 1009', async () => {
  const { srv } = await setup();
  const c = await connectAuthed(srv);
  const other = await connectAuthed(srv);
  c.send(JSON.stringify({ type: 'message', room: 'home', text: 'z'.repeat(5000) }));
  eq((await c.waitClose(5000)).code, 1009, 'close code for a 5000-byte frame');
  // a fragmented message over the limit (3 x 2000 bytes)
  const f = await connectAuthed(srv);
  const part = Buffer.from('a'.repeat(2000));
  f.ws.send(part, { fin: false, binary: false });
  f.ws.send(part, { fin: false, binary: false });
  f.ws.send(part, { fin: true, binary: false });
  eq((await f.waitClose(5000)).code, 1009, 'close code for a 6000-byte fragmented message');
  await other.ping();
});

test('protocol: fragmented message under the limit is reassembled', async () => {
  const { srv } = await setup();
  const c = await connectAuthed(srv);
  await c.subscribe(['frag']);
  const s = JSON.stringify({ type: 'message', room: 'frag', text: 'hello fragments', cid: 'fr' });
  c.ws.send(s.slice(0, 10), { fin: false });
  c.ws.send(s.slice(10, 30), { fin: false });
  c.ws.send(s.slice(30), { fin: true });
  const m = await c.nextJson('message');
  eq(m.text, 'hello fragments', 'reassembled text');
});

test('protocol: invalid UTF-8 closes 1007; unmasked frame and bad opcode close 1002', async () => {
  const { srv } = await setup();
  const c = await connectAuthed(srv);
  c.ws.send(Buffer.from([0x7b, 0xc3, 0x28, 0x7d]), { binary: false }); // text frame, invalid UTF-8
  eq((await c.waitClose(5000)).code, 1007, 'close code for invalid UTF-8');

  const closeCodeOf = async (bytes, what) => {
    const { sock, head, rest } = await rawUpgrade(srv.port, { token: mintToken(newUser()) });
    assert(/^HTTP\/1\.1 101/.test(head), `${what}: upgrade failed: ${head}`);
    let buf = Buffer.from(rest);
    const closed = new Promise((resolve) => { sock.on('close', resolve); sock.on('error', resolve); });
    sock.on('data', (d) => { buf = Buffer.concat([buf, d]); });
    sock.write(bytes);
    await Promise.race([closed, sleep(5000)]);
    sock.destroy();
    const close = parseFrames(buf).frames.find((fr) => fr.opcode === 8);
    assert(close, `${what}: no close frame received`);
    return close.payload.length >= 2 ? close.payload.readUInt16BE(0) : null;
  };
  eq(await closeCodeOf(buildFrame(1, '{"type":"ping"}', { mask: false }), 'unmasked frame'), 1002, 'unmasked frame close code');
  eq(await closeCodeOf(buildFrame(3, 'x'), 'opcode 3'), 1002, 'reserved opcode close code');
  eq(await closeCodeOf(buildFrame(1, '{"type":"ping"}', { rsv: 4 }), 'RSV1 set'), 1002, 'RSV1 close code');
});

test('protocol: WebSocket ping frames are answered with pong carrying the payload', async () => {
  const { srv } = await setup();
  const c = await connectAuthed(srv);
  const got = new Promise((resolve) => c.ws.once('pong', (d) => resolve(d.toString())));
  c.ws.ping('abc123');
  const payload = await Promise.race([got, sleep(3000).then(() => null)]);
  eq(payload, 'abc123', 'pong payload');
});
