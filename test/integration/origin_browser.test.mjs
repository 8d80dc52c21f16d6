// PARLEY_ALLOWED_ORIGINS with the Origin a real browser sends (chromium via playwright-core; a page
// cannot set that header itself): a page of the allowed site opens a WebSocket to parleyd and is
// authenticated; the same script on a page of another site is refused before the upgrade (the
// browser sees the handshake fail, the page gets no `open`), and parleyd counts the refusal.
import http from 'node:http';
import {
  test, startRedis, startParleyd, httpRequest, mintToken, newUser, freePort, eq, assert, current,
  launchChromium,
} from './lib.mjs';

// A site on host:port serving one empty page; stopped by the test's cleanup.
async function site(host) {
  const port = await freePort();
  const srv = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>site</title>');
  });
  await new Promise((resolve, reject) => { srv.once('error', reject); srv.listen(port, host, resolve); });
  current.cleanups.push(() => new Promise((resolve) => srv.close(resolve)));
  return `http://${host}:${port}`;
}

// In the page: open a WebSocket, report what happened within 5 s.
function tryConnect(page, url) {
  return page.evaluate((u) => new Promise((resolve) => {
    const ws = new WebSocket(u);
    const out = { opened: false, frames: [], closeCode: null };
    const done = () => { clearTimeout(t); resolve(out); };
    const t = setTimeout(() => { try { ws.close(); } catch {} resolve(out); }, 5000);
    ws.onopen = () => { out.opened = true; };
    ws.onmessage = (e) => { out.frames.push(JSON.parse(e.data)); if (out.frames.length === 1) { ws.close(1000); } };
    ws.onclose = (e) => { out.closeCode = e.code; done(); };
  }), url);
}

test('browser origin: chromium on the allowed site connects and authenticates; on another site its upgrade is refused (403) and counted', async () => {
  const allowed = await site('127.0.0.1');
  const other = await site('127.0.0.2');
  const redis = await startRedis();
  const srv = await startParleyd({ redis, env: { PARLEY_ALLOWED_ORIGINS: allowed }, tls: false });
  const browser = await launchChromium();
  const user = newUser('origin');
  const wsUrl = `ws://127.0.0.1:${srv.port}/ws?token=${encodeURIComponent(mintToken(user))}`;

  const good = await (await browser.newContext()).newPage();
  await good.goto(`${allowed}/`);
  const g = await tryConnect(good, wsUrl);
  assert(g.opened, `the allowed site's page did not connect: ${JSON.stringify(g)}`);
  eq(g.frames[0] && g.frames[0].type, 'authenticated', `first frame on the allowed site (${JSON.stringify(g)})`);
  eq(g.frames[0].user, user, 'authenticated user');

  const bad = await (await browser.newContext()).newPage();
  await bad.goto(`${other}/`);
  const b = await tryConnect(bad, wsUrl);
  assert(!b.opened && b.frames.length === 0, `another site's page connected: ${JSON.stringify(b)}`);
  eq(b.closeCode, 1006, 'the page sees the handshake fail (1006)');

  const m = await httpRequest(srv.port, 'GET', '/metrics');
  const line = m.text.split('\n').find((l) => l.startsWith('parley_connections_refused_total{reason="origin"}'));
  eq(line && Number(line.split(' ').pop()), 1, `refusals counted (${line})`);
});
