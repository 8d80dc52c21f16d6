import { test, startRedis, startParleyd, connectAuthed, eq, assert, REDIS_CLUSTER_MODE } from './lib.mjs';

test('rooms: subscribe/unsubscribe answer one frame per room, idempotently', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis });
  const c = await connectAuthed(srv);
  const room128 = 'R'.repeat(100) + 'a-b_c.d:e' + '0'.repeat(19);
  eq(room128.length, 128, 'test room length');
  c.send({ type: 'subscribe', rooms: ['r1', 'r2', room128] });
  // In the order asked; on a Redis Cluster each room is read on its own master, so in the
  // order they answer.
  const got = [];
  for (let i = 0; i < 3; i++) got.push((await c.next((j) => j.type === 'subscribed' || j.type === 'error', 5000, 'subscribed')).raw);
  const want = ['r1', 'r2', room128].map((r) => JSON.stringify({ type: 'subscribed', room: r, seq: 0, read: 0, unread: 0 }));
  eq(REDIS_CLUSTER_MODE ? [...got].sort().join('\n') : got.join('\n'), REDIS_CLUSTER_MODE ? [...want].sort().join('\n') : want.join('\n'), 'subscribed frames (a new room: seq 0, nothing read)');
  c.send({ type: 'subscribe', rooms: ['r1'] });
  eq((await c.next()).raw, '{"type":"subscribed","room":"r1","seq":0,"read":0,"unread":0}', 'second subscribe to r1');
  c.send({ type: 'unsubscribe', rooms: ['r1', 'never-joined'] });
  eq((await c.next()).raw, '{"type":"unsubscribed","room":"r1"}', 'unsubscribe r1');
  eq((await c.next()).raw, '{"type":"unsubscribed","room":"never-joined"}', 'unsubscribe never-joined');
  c.send({ type: 'unsubscribe', rooms: ['r1'] });
  eq((await c.next()).raw, '{"type":"unsubscribed","room":"r1"}', 'unsubscribe r1 again');
  c.send({ type: 'message', room: 'r1', text: 'x', cid: 'after' });
  await c.expectError('not_subscribed', 5000, 'after');
  c.send({ type: 'message', room: room128, text: 'long room', cid: 'long' });
  const m = await c.nextJson('message');
  eq(m.room, room128, 'message room');
});

test('rooms: unsubscribe stops delivery (same and other instance)', async () => {
  const redis = await startRedis();
  const a = await startParleyd({ redis });
  const b = await startParleyd({ redis });
  const sender = await connectAuthed(a);
  const local = await connectAuthed(a);
  const remote = await connectAuthed(b);
  for (const c of [sender, local, remote]) await c.subscribe(['news', 'ctrl']);
  sender.send({ type: 'message', room: 'news', text: 'before', cid: 'b' });
  for (const c of [sender, local, remote]) eq((await c.nextJson('message')).text, 'before', 'first delivery');
  for (const c of [local, remote]) {
    c.send({ type: 'unsubscribe', rooms: ['news'] });
    // (the others' presence, announced as each joined, may come first)
    eq((await c.next((j) => j.type !== 'presence')).raw, '{"type":"unsubscribed","room":"news"}', 'unsubscribed');
  }
  for (let i = 0; i < 5; i++) sender.send({ type: 'message', room: 'news', text: `after-${i}` });
  sender.send({ type: 'message', room: 'ctrl', text: 'marker' });
  for (let i = 0; i < 5; i++) eq((await sender.nextJson('message')).text, `after-${i}`, 'sender still gets news');
  eq((await sender.nextJson('message')).text, 'marker', 'sender gets marker');
  for (const [name, c] of [['same-instance', local], ['other-instance', remote]]) {
    const m = await c.nextJson('message', 5000);
    eq(m.text, 'marker', `${name} client: first message after unsubscribe (must be the ctrl marker)`);
    await c.none((j) => j.type === 'message', 700, `${name} client got a message after unsubscribe`);
  }
  // resubscribe works again
  await remote.subscribe(['news']);
  sender.send({ type: 'message', room: 'news', text: 'again' });
  eq((await remote.nextJson('message')).text, 'again', 'delivery after resubscribe');
});
