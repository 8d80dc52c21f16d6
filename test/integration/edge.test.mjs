import { test, startRedis, startParleyd, connect, connectAuthed, mintToken, eq, assert } from './lib.mjs';

test('edge: token sub with a control character, NUL or over 128 bytes is refused (401)', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis });
  for (const [what, sub] of [['NUL', 'ali\u0000ce'], ['newline', 'ali\nce'], ['129 bytes', 'u'.repeat(129)], ['empty', '']]) {
    let err = null;
    try { const c = await connect(srv, { token: mintToken(sub) }); c.close(); } catch (e) { err = e; }
    assert(err, `sub with ${what}: upgrade was accepted`);
    eq(err.statusCode, 401, `sub with ${what}: HTTP status`);
  }
  const ok = await connect(srv, { token: mintToken('u'.repeat(128)) });
  eq((await ok.nextJson('authenticated')).user, 'u'.repeat(128), '128-byte sub');
});

test('edge: NUL inside JSON strings is never silently truncated', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis });
  const c = await connectAuthed(srv);
  await c.subscribe(['r1']);
  c.send({ type: 'subscribe', rooms: ['r1\u0000zz'] });
  await c.expectError('bad_request');
  await c.ping();
  // a text with NUL: delivered byte-exact, or refused with bad_request; never cut at the NUL
  c.send({ type: 'message', room: 'r1', text: 'a\u0000b', cid: 'nul' });
  const j = await c.nextJson((x) => (x.type === 'message' || x.type === 'error') && x.cid === 'nul', 5000);
  if (j.type === 'message') eq(j.text, 'a\u0000b', 'text with NUL');
  else eq(j.code, 'bad_request', 'error for text with NUL');
  // a room frame whose room member has a NUL is not taken as room "r1"
  c.send({ type: 'message', room: 'r1\u0000x', text: 'hi', cid: 'nulroom' });
  const k = await c.nextJson((x) => x.cid === 'nulroom', 5000);
  assert(k.type === 'error', `message to room "r1\\u0000x" must be refused, got ${JSON.stringify(k)}`);
  await c.ping();
});
