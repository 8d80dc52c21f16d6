import { test, startRedis, startParleyd, connect, connectAuthed, eq, assert } from './lib.mjs';

test('shutdown: SIGTERM sends server_notice then close 1001, exits within 5 s', async () => {
  const redis = await startRedis();
  const srv = await startParleyd({ redis });
  const clients = [];
  for (let i = 0; i < 5; i++) { const c = await connectAuthed(srv); await c.subscribe(['bye']); clients.push(c); }
  const pending = await connect(srv, { tokenIn: 'none' }); // not yet authenticated
  const t0 = Date.now();
  srv.child.kill('SIGTERM');
  for (const c of clients) {
    const f = await c.next((j) => j.type === 'server_notice', 5000, 'server_notice');
    eq(f.raw, '{"type":"server_notice","code":"shutdown","message":"this server is shutting down: reconnect (another instance takes you)"}', 'server_notice frame');
    const { code } = await c.waitClose(5000);
    eq(code, 1001, 'close code');
  }
  eq((await pending.waitClose(5000)).code, 1001, 'close code of the unauthenticated client');
  const exited = await srv.waitExit(Math.max(0, 5000 - (Date.now() - t0)) + 300);
  const ms = Date.now() - t0;
  assert(exited, `parleyd still running ${ms} ms after SIGTERM`);
  const exit = srv.exit;
  eq(exit.code, 0, `exit status after SIGTERM (${JSON.stringify(exit)})`);
});
