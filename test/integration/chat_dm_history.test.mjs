import {
  test, startRedis, startParleyd, startPostgres, connectAuthed, dbEnv, track, until, getHistory,
  mintToken, eq, assert,
} from './lib.mjs';

// The two users of a direct conversation, and only they, read its history over HTTP.
test('chat dm: the conversation history is readable by its two users only', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const A = await startParleyd({ redis, env: dbEnv(pg, { PARLEY_OPEN_ROOMS: 0 }) });
  const alice = `hal-${process.pid}`, bob = `hbo-${process.pid}`, eve = `hev-${process.pid}`;
  const a = await connectAuthed(A, alice); track(a);
  const b = await connectAuthed(A, bob); track(b);
  for (let i = 1; i <= 3; i++) a.send({ type: 'message', to: bob, text: `h${i}`, cid: `h-${i}` });
  await until(() => a.track.ackCount === 3, 8000, '3 acks');
  await until(() => b.track.msgs.some((m) => m.cid === 'h-1'), 5000, 'DM at bob');
  const first = b.track.msgs.find((m) => m.cid === 'h-1');
  assert(first.room.startsWith('dm:'), `dm room id ${first.room}`);
  for (const [user, want] of [[alice, 200], [bob, 200], [eve, 403]]) {
    let r;
    for (let t = 0; t < 50; t++) {
      r = await getHistory(A, first.room, { token: mintToken(user) });
      if (r.status === want) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    eq(r.status, want, `history of the DM room for ${user}: ${r.text.slice(0, 200)}`);
    if (want === 200) {
      const h = JSON.parse(r.text);
      eq(h.messages.map((m) => m.text).join(','), 'h3,h2,h1', `history for ${user}: newest first`);
    }
  }
});
