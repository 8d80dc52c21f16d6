// The chat page (web/) in a real browser: Debian's chromium driven by playwright-core. Two people
// in two browser contexts, each on its own parleyd instance, join a room with 120 messages in it,
// chat both ways, see each other typing and online, read each other's messages ("Seen by"),
// exchange a direct message; a reload shows the whole history and scrolling up pages it in; one
// instance is frozen (a message sent then stays pending) and killed: the page on it shows
// "reconnecting", comes back through the other instance and shows every message exactly once.
// axe-core, run inside the pages, finds no serious or critical accessibility violation.
// On failure: screenshots and the browser consoles are saved (paths in the error message).
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import {
  test, startRedis, startPostgres, startParleyd, connectAuthed, track, sendAcked, dbEnv, newUser,
  until, eq, assert, tmpDir, ROOT, launchChromium,
} from './lib.mjs';

const require = createRequire(import.meta.url);
// PARLEY_BROWSER_SHOTS=<dir>: also save screenshots of the steps (and axe's full findings) there on success.
const SHOTS = process.env.PARLEY_BROWSER_SHOTS || '';
const SEEDED = 120;
const WAIT = 10000; // the longest any single wait in a page may take

const sel = {
  signinName: '[data-testid=signin-name]',
  joinRoom: '[data-testid=join-room]',
  composer: '[data-testid=composer-input]',
  banner: '[data-testid=connection]',
  typing: '[data-testid=typing]',
  list: '[data-testid=message-list]',
  message: '[data-testid=message-list] [data-testid=message]',
  historyStart: '[data-testid=history-start]',
  room: (r) => `[data-testid=room][data-room="${r}"]`,
  user: (u, online) => `[data-testid=user][data-user="${u}"]${online === undefined ? '' : `[data-online="${online}"]`}`,
  dm: (u) => `[data-testid=dm][data-user="${u}"]`,
};

test('browser: the chat page in chromium, two users on two instances: rooms, history paging, typing, presence, seen by, a DM, reload, failover with pending messages exactly once; axe finds nothing serious', async () => {

  const redis = await startRedis();
  const pg = await startPostgres();
  // The shipped rates (lib.mjs turns them off for the other tests): the pages work under them.
  // The burst is raised only for the library client that seeds SEEDED messages at once.
  const env = dbEnv(pg, {
    PARLEY_WEB_ROOT: path.join(ROOT, 'web'), PARLEY_DEV: 1, PARLEY_OPEN_ROOMS: 1,
    PARLEY_RATE_LIMIT: 20, PARLEY_RATE_BURST: SEEDED + 80, PARLEY_SUBSCRIBE_RATE: 10,
  });
  const A = await startParleyd({ redis, env, tls: false });
  const B = await startParleyd({ redis, env, tls: false });

  const browser = await launchChromium();

  const pages = []; // { name, page, log }
  const outDir = path.join(tmpDir(), 'browser');
  const t0 = Date.now();
  const stamp = () => `${((Date.now() - t0) / 1000).toFixed(2)}s`;

  // A fresh context (profile) per user; the page comes from `server` and knows the other instance.
  async function openPage(name, server, others, viewport) {
    const context = await browser.newContext({ viewport });
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT);
    const log = [];
    const errors = [];
    page.on('console', (m) => log.push(`${stamp()} ${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => {
      log.push(`${stamp()} pageerror: ${e.stack || e}`);
      errors.push(String(e.stack || e));
    });
    page.on('requestfailed', (r) => log.push(`${stamp()} request failed: ${r.url()} ${r.failure()?.errorText ?? ''}`));
    // Content-Security-Policy violations would mean inline script or style crept in.
    await page.addInitScript(() => {
      window.__csp = [];
      document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
    });
    pages.push({ name, page, log, errors });
    const servers = [server, ...others].map((s) => s.wsUrl).join(',');
    await page.goto(`http://127.0.0.1:${server.port}/?servers=${encodeURIComponent(servers)}`);
    return page;
  }

  const attached = (page, selector, what, timeout = WAIT) =>
    page.waitForSelector(selector, { state: 'attached', timeout }).catch((e) => {
      throw new Error(`${what}: ${selector} did not appear within ${timeout} ms (${e.message.split('\n')[0]})`);
    });
  const textIn = async (page, selector, re, what, timeout = WAIT) => {
    try {
      await page.waitForFunction(([s, src]) => new RegExp(src, 'i').test(document.querySelector(s)?.textContent ?? ''), [selector, re.source], { timeout, polling: 50 });
    } catch {
      const got = await page.$eval(selector, (el) => el.textContent).catch(() => '(missing)');
      throw new Error(`${what}: ${selector} never matched ${re} within ${timeout} ms; it says ${JSON.stringify(got)}`);
    }
  };
  /** The messages on screen, in document order. */
  const shown = (page) => page.$$eval(sel.message, (els) => els.map((e) => ({
    seq: e.dataset.seq === undefined ? null : Number(e.dataset.seq),
    room: e.dataset.room,
    from: e.dataset.from,
    pending: e.dataset.pending ?? null,
    text: e.querySelector('[data-testid=message-text]')?.textContent ?? '',
  })));
  const describe = (list) => {
    const seqs = list.map((m) => m.seq);
    return `${list.length} messages, seqs ${seqs.slice(0, 5).join(',')}…${seqs.slice(-5).join(',')}, pending ${list.filter((m) => m.pending).length}`;
  };
  /** Every seq 1..n exactly once, in order, none pending. */
  function exactlyOnce(list, n, who) {
    const seqs = list.map((m) => m.seq);
    const problems = [];
    if (list.some((m) => m.pending)) problems.push(`pending: ${JSON.stringify(list.filter((m) => m.pending))}`);
    if (seqs.length !== n) problems.push(`${seqs.length} messages instead of ${n}`);
    for (let i = 0; i < seqs.length; i++) if (seqs[i] !== i + 1) { problems.push(`position ${i} has seq ${seqs[i]} (expected ${i + 1})`); break; }
    if (problems.length) throw new Error(`${who}: not every message exactly once: ${problems.join('; ')} (${describe(list)})`);
  }

  async function signIn(page, name) {
    await page.fill(sel.signinName, name);
    await page.press(sel.signinName, 'Enter');
    await attached(page, `${sel.banner}[data-state=open]`, `${name} connected`);
  }
  async function join(page, room) {
    await page.fill(sel.joinRoom, room);
    await page.press(sel.joinRoom, 'Enter');
    await attached(page, `${sel.room(room)}[aria-current=page]`, `${room} open in the list`);
  }

  /** Scrolls to the top until the beginning: each page of older messages goes in above without moving the view. */
  async function scrollToBeginning(page, who) {
    for (let round = 0; round < 12; round++) {
      if (await page.$(sel.historyStart)) return round;
      const before = await page.evaluate(([list, message]) => {
        const log = document.querySelector(list);
        log.scrollTop = 0;
        const first = document.querySelector(message);
        // Its text: the message's own top changes as it joins the group of the one now above it.
        return { seq: Number(first.dataset.seq), top: first.querySelector('[data-testid=message-text]').getBoundingClientRect().top };
      }, [sel.list, sel.message]);
      await page.waitForFunction(([message, seq]) => Number(document.querySelector(message)?.dataset.seq) < seq || !!document.querySelector('[data-testid=history-start]'),
        [sel.message, before.seq], { timeout: WAIT, polling: 50 }).catch(() => { throw new Error(`${who}: scrolling to the top loaded nothing older than seq ${before.seq}`); });
      await page.waitForTimeout(50); // the insertion's scroll adjustment is synchronous; one frame for layout
      const after = await page.evaluate((seq) => document.querySelector(`[data-testid=message-list] [data-seq="${seq}"] [data-testid=message-text]`).getBoundingClientRect().top, before.seq);
      if (Math.abs(after - before.top) > 4) throw new Error(`${who}: loading older messages moved the view: seq ${before.seq} was at y=${before.top}, now ${after}`);
    }
    throw new Error(`${who}: never reached the beginning of the history`);
  }

  async function snap(page, name) {
    if (!SHOTS) return;
    fs.mkdirSync(SHOTS, { recursive: true });
    await page.screenshot({ path: path.join(SHOTS, `${name}.png`) });
  }

  async function runAxe(page, who) {
    const source = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
    // Evaluated through the DevTools protocol: the page's CSP (script-src 'self') stays in force.
    await page.evaluate(source);
    const violations = await page.evaluate(async () => (await window.axe.run(document, { resultTypes: ['violations'] })).violations
      .map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 4).map((n) => `${n.target.join(' ')}: ${n.failureSummary}`) })));
    if (SHOTS) fs.mkdirSync(SHOTS, { recursive: true });
    if (SHOTS) fs.writeFileSync(path.join(SHOTS, `axe-${who.replace(/\W+/g, '-')}.json`), JSON.stringify(violations, null, 2));
    const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    if (bad.length) {
      throw new Error(`axe (${who}): ${bad.length} serious or critical violation(s):\n${bad.map((v) => `  ${v.impact} ${v.id}: ${v.help}\n    ${v.nodes.join('\n    ')}`).join('\n')}`);
    }
    return violations.length;
  }

  try {
    // A room with a history that needs several pages (the page loads 50 at a time).
    const room = `browser-${process.pid}-${Date.now().toString(36)}`;
    const carol = await connectAuthed(A, newUser('carol'));
    track(carol);
    await carol.subscribe([room]);
    await sendAcked(carol, room, SEEDED, { text: (i) => `seeded message ${i + 1}` });
    carol.close();
    const alice = newUser('alice');
    const bob = newUser('bob');

    // Alice on a desktop-sized window served by A; Bob on a phone-sized one served by B.
    const pa = await openPage('alice', A, [B], { width: 1280, height: 800 });
    const pb = await openPage('bob', B, [A], { width: 390, height: 844 });
    eq(await runAxe(pb, 'the sign-in page') >= 0, true, 'axe ran');
    await signIn(pa, alice);
    await signIn(pb, bob);
    await join(pa, room);
    // On a phone the list of conversations is a drawer behind the menu button.
    await pb.click('#menu-btn');
    await join(pb, room);
    await attached(pa, `${sel.message}[data-seq="${SEEDED}"]`, 'alice sees the newest seeded message');
    await attached(pb, `${sel.message}[data-seq="${SEEDED}"]`, 'bob sees the newest seeded message');
    const first = await shown(pa);
    assert(first.length >= 50 && first.length < SEEDED, `alice: the newest page of the history, not all of it (${describe(first)})`);

    // Presence: each sees the other online in the room's member list.
    await attached(pa, sel.user(bob, 'true'), 'alice sees bob online');
    await attached(pb, sel.user(alice, 'true'), 'bob sees alice online');

    // Alice types: Bob sees it; she sends: Bob gets the message and the indicator goes.
    await pa.locator(sel.composer).pressSequentially('hello bob', { delay: 40 });
    await textIn(pb, sel.typing, new RegExp(`${alice} is typing`), 'bob sees alice typing');
    await pa.press(sel.composer, 'Enter');
    await attached(pb, `${sel.message}[data-seq="${SEEDED + 1}"][data-from="${alice}"]`, 'bob gets alice\'s message');
    await pb.waitForFunction((s) => document.querySelector(s).textContent.trim() === '', sel.typing, { timeout: WAIT });
    // And back.
    await pb.locator(sel.composer).pressSequentially('hi alice, line one', { delay: 40 });
    await textIn(pa, sel.typing, new RegExp(`${bob} is typing`), 'alice sees bob typing');
    await pb.keyboard.press('Shift+Enter');
    await pb.keyboard.type('and line two');
    await pb.press(sel.composer, 'Enter');
    await attached(pa, `${sel.message}[data-seq="${SEEDED + 2}"][data-from="${bob}"]`, 'alice gets bob\'s message');
    await snap(pa, 'alice-chat'); await snap(pb, 'bob-chat');
    const reply = (await shown(pa)).find((m) => m.seq === SEEDED + 2);
    eq(reply.text, 'hi alice, line one\nand line two', 'Shift+Enter makes a new line');
    // Bob has read alice's message: under it, on her screen.
    await textIn(pa, `${sel.message}[data-seq="${SEEDED + 1}"] [data-testid=seen-by]`, new RegExp(`Seen by ${bob}`), 'alice sees that bob has read her message');

    // A direct message: alice picks bob from the people list; bob gets it in his DM list.
    await pa.click(`${sel.user(bob)} button`);
    await pa.locator(sel.composer).pressSequentially('psst, just between us', { delay: 10 });
    await pa.press(sel.composer, 'Enter');
    await attached(pa, `${sel.message}[data-from="${alice}"]:not([data-pending])`, 'alice\'s direct message acknowledged');
    await attached(pb, `${sel.dm(alice)}[data-unread="1"]`, 'bob has an unread conversation with alice');
    await pb.click('#menu-btn');
    await pb.click(sel.dm(alice));
    await textIn(pb, sel.list, /psst, just between us/, 'bob reads the direct message');
    await snap(pa, 'alice-dm'); await snap(pb, 'bob-dm');
    const dm = (await shown(pb)).find((m) => m.text === 'psst, just between us');
    assert(dm && /^dm:[0-9a-f]{32}$/.test(dm.room), `a direct message in a dm: room: ${JSON.stringify(dm)}`);
    await attached(pb, `${sel.dm(alice)}[data-unread="0"]`, 'the conversation read once open');

    // Unread counts: alice writes in the room while bob is in the direct conversation.
    await pa.click(sel.room(room));
    await pa.fill(sel.composer, 'anyone still here?');
    await pa.press(sel.composer, 'Enter');
    await attached(pb, `${sel.room(room)}[data-unread="1"]`, 'bob: one unread message in the room');
    // The drawer opens from the menu button and Escape closes it, focus back on the button.
    await pb.click('#menu-btn');
    await attached(pb, '#menu-btn[aria-expanded=true]', 'the conversations drawer open');
    await pb.keyboard.press('Escape');
    await attached(pb, '#menu-btn[aria-expanded=false]:focus', 'Escape closes the drawer');

    // Reload: signed in again (same tab), the whole history by scrolling up, the DM still listed.
    await pa.reload();
    await attached(pa, `${sel.banner}[data-state=open]`, 'alice connected again after the reload');
    await attached(pa, sel.dm(bob), 'the conversation with bob after the reload');
    await pa.click(sel.dm(bob));
    await textIn(pa, sel.list, /psst, just between us/, 'the direct conversation\'s history after the reload');
    await pa.click(sel.room(room));
    await attached(pa, `${sel.message}[data-seq="${SEEDED + 3}"]`, 'the room after the reload');
    const rounds = await scrollToBeginning(pa, 'alice after the reload');
    assert(rounds >= 2, `scrolling up took ${rounds} page(s) of older messages; expected at least 2`);
    exactlyOnce(await shown(pa), SEEDED + 3, 'alice after the reload');
    await snap(pa, 'alice-history-start');

    // Failover. Bob goes back to the room; A (alice's instance) freezes: what alice sends stays
    // pending ("sending…"); bob writes meanwhile through B. Then A dies: alice's page says it is
    // reconnecting, comes back through B, and has everything once.
    await pb.click('#menu-btn');
    await pb.click(sel.room(room));
    await attached(pb, `${sel.room(room)}[data-unread="0"]`, 'bob: the room read once open');
    await pa.evaluate((s) => {
      window.__banner = [];
      const el = document.querySelector(s);
      const text = el.querySelector('[data-testid=connection-text]');
      const note = () => window.__banner.push(`${el.dataset.state}${el.checkVisibility() ? '' : ' (hidden)'}: ${text.textContent.trim()}`);
      new MutationObserver(note).observe(el, { subtree: true, childList: true, characterData: true, attributes: true });
    }, sel.banner);
    A.child.kill('SIGSTOP');
    await pa.locator(sel.composer).pressSequentially('sent while the server is away', { delay: 5 });
    await pa.press(sel.composer, 'Enter');
    await attached(pa, `${sel.message}[data-pending]`, 'alice\'s message shown as pending');
    await pb.locator(sel.composer).fill('bob writes during the outage');
    await pb.press(sel.composer, 'Enter');
    await attached(pb, `${sel.message}[data-seq="${SEEDED + 4}"]:not([data-pending])`, 'bob\'s message stored while A is frozen');
    await pa.waitForTimeout(300);
    eq((await shown(pa)).filter((m) => m.pending).length, 1, 'alice: one message pending while her server is frozen');
    await snap(pa, 'alice-pending');
    await A.stop('SIGKILL');
    await pa.waitForFunction(() => window.__banner.some((s) => /^reconnecting: .*reconnecting/i.test(s)), null, { timeout: WAIT, polling: 50 })
      .catch(async () => { throw new Error(`alice's page never said it was reconnecting: ${JSON.stringify(await pa.evaluate(() => window.__banner))}`); });
    await snap(pa, 'alice-reconnecting');
    await attached(pa, `${sel.banner}[data-state=open]`, 'alice back online through B');
    await attached(pa, `${sel.message}[data-seq="${SEEDED + 5}"]`, 'alice\'s pending message stored (through B)');
    await pa.waitForFunction((s) => !document.querySelector(`${s}[data-pending]`), sel.message, { timeout: WAIT });
    const after = await shown(pa);
    exactlyOnce(after, SEEDED + 5, 'alice after the failover');
    eq(after.filter((m) => m.text === 'sent while the server is away').length, 1, 'alice\'s outage message shown once');
    eq(after[SEEDED + 3].text, 'bob writes during the outage', 'bob\'s outage message, caught up in order');
    eq(after[SEEDED + 4].text, 'sent while the server is away', 'alice\'s outage message after it');
    const banners = await pa.evaluate(() => window.__banner);
    assert(banners.some((s) => /^open: Connected/.test(s)), `the banner said connected again: ${JSON.stringify(banners)}`);
    await attached(pb, `${sel.message}[data-seq="${SEEDED + 5}"][data-from="${alice}"]`, 'bob gets alice\'s outage message');
    const bobs = (await shown(pb)).filter((m) => m.seq !== null);
    const bobSeqs = bobs.map((m) => m.seq);
    assert(bobSeqs.every((s, i) => i === 0 || s === bobSeqs[i - 1] + 1) && bobSeqs.at(-1) === SEEDED + 5,
      `bob: contiguous, no duplicates, up to ${SEEDED + 5} (${describe(bobs)})`);

    await snap(pa, 'alice-after-failover'); await snap(pb, 'bob-after-failover');
    // Accessibility of the chat as it stands, on both window sizes; no CSP violation anywhere.
    await runAxe(pa, 'alice, desktop');
    await runAxe(pb, 'bob, phone');
    for (const { name, page, errors } of pages) {
      const csp = await page.evaluate(() => window.__csp);
      eq(csp.length, 0, `${name}: Content-Security-Policy violations ${JSON.stringify(csp)}`);
      eq(errors.length, 0, `${name}: uncaught exceptions in the page ${JSON.stringify(errors)}`);
    }
  } catch (err) {
    fs.mkdirSync(outDir, { recursive: true });
    const saved = [];
    for (const { name, page, log } of pages) {
      const shot = path.join(outDir, `${name}.png`);
      try {
        await page.screenshot({ path: shot, fullPage: true, timeout: 5000 });
        saved.push(shot);
      } catch (e) {
        log.push(`(screenshot failed: ${e.message})`);
      }
      const file = path.join(outDir, `${name}.console.log`);
      fs.writeFileSync(file, log.join('\n') + '\n');
      saved.push(file);
    }
    const tails = pages.map(({ name, log }) => `${name} console (last lines):\n${log.slice(-12).map((l) => `  ${l}`).join('\n') || '  (empty)'}`).join('\n');
    err.message = `${err.message}\nscreenshots and console logs: ${saved.join(' ')}\n${tails}`;
    throw err;
  }
}, { timeout: 90000 });
