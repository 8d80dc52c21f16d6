// Unit tests for web/parley.js: a fake WebSocket plays the server, a fake clock drives every
// timer, and nothing touches the network. Run with `node --test web/test/`.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { ParleyClient, ParleyError, backoffDelay, decodeJwt } from '../parley.js';

// ---- fakes ----

const flush = () => new Promise((resolve) => setImmediate(resolve));

/** Timers that run only when the test advances time. */
class FakeClock {
  t = 1_700_000_000_000;
  #timers = new Map();
  #nextId = 1;

  now = () => this.t;

  setTimeout = (fn, ms) => {
    const id = this.#nextId++;
    this.#timers.set(id, { at: this.t + Math.max(0, ms), ms, fn });
    return id;
  };

  clearTimeout = (id) => {
    this.#timers.delete(id);
  };

  /** Timers not yet run or cleared. */
  get size() {
    return this.#timers.size;
  }

  /** Durations (as scheduled) of the pending timers. */
  delays() {
    return [...this.#timers.values()].map((t) => t.ms);
  }

  /** Moves time forward, running due timers in order (and promise jobs between them). */
  async advance(ms) {
    const end = this.t + ms;
    for (;;) {
      await flush();
      let next = null;
      for (const [id, tm] of this.#timers) {
        if (tm.at <= end && (!next || tm.at < next.tm.at)) next = { id, tm };
      }
      if (!next) break;
      this.#timers.delete(next.id);
      this.t = next.tm.at;
      next.tm.fn();
    }
    this.t = end;
    await flush();
  }
}

/** A WebSocket class whose instances the test drives as the server would. */
function fakeWebSocket() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      this.onopen = this.onmessage = this.onerror = this.onclose = null;
      sockets.push(this);
    }

    send(data) {
      if (this.readyState !== 1) throw new Error('InvalidStateError: not open');
      this.sent.push(JSON.parse(data));
    }

    /** The client closes: like a browser, the close event comes later. */
    close(code, reason) {
      if (this.readyState >= 2) return;
      this.readyState = 2;
      this.closedWith = { code, reason };
      queueMicrotask(() => {
        this.readyState = 3;
        this.onclose?.({ code: code ?? 1005, reason: reason ?? '', wasClean: true });
      });
    }

    // -- the server's side --
    accept() {
      this.readyState = 1;
      this.onopen?.({});
    }

    deliver(frame) {
      this.onmessage?.({ data: JSON.stringify(frame) });
    }

    authenticate(user = 'alice') {
      if (this.readyState === 0) this.accept();
      this.deliver({ type: 'authenticated', user, server: 'srv-1', session: `sess-${sockets.indexOf(this)}` });
    }

    /** The server or the network ends the connection. */
    drop(code = 1006, reason = '', error = {}) {
      this.readyState = 3;
      if (code === 1006) this.onerror?.({ type: 'error', ...error });
      this.onclose?.({ code, reason, wasClean: code !== 1006 });
    }

    frames(type) {
      return this.sent.filter((f) => f.type === type);
    }
  }
  return { FakeWebSocket, sockets };
}

function b64url(obj) {
  return Buffer.from(JSON.stringify(obj)).toString('base64url');
}

function makeJwt(payload) {
  return `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(payload)}.c2lnbmF0dXJl`;
}

const TOKEN = makeJwt({ sub: 'alice' });

/** A deterministic random source cycling through `values`. */
function sequence(values) {
  let i = 0;
  return () => values[i++ % values.length];
}

function setup(options = {}) {
  const clock = new FakeClock();
  const { FakeWebSocket, sockets } = fakeWebSocket();
  const client = new ParleyClient({
    url: 'ws://127.0.0.1:8080/ws',
    token: TOKEN,
    WebSocket: FakeWebSocket,
    random: () => 0.5,
    now: clock.now,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    ...options,
  });
  const record = (event) => {
    const list = [];
    client.on(event, (payload) => list.push(payload));
    return list;
  };
  return { client, clock, sockets, last: () => sockets.at(-1), record };
}

/** Connects and authenticates; resolves with the socket. */
async function connected(t, user = 'alice') {
  const p = t.client.connect();
  await flush();
  t.last().authenticate(user);
  await p;
  return t.last();
}

/** The server answers a subscribe frame for each of its rooms with `seqs[room]` (default 0). */
function answerSubscribe(ws, seqs = {}, extra = {}) {
  const frame = ws.frames('subscribe').at(-1);
  for (const room of frame.rooms) {
    ws.deliver({ type: 'subscribed', room, seq: seqs[room] ?? 0, ...(extra[room] ?? {}) });
  }
  return frame;
}

function message(room, seq, extra = {}) {
  return { type: 'message', seq, room, id: String(1000 + seq), from: 'bob', text: `m${seq}`, ts: 1, ...extra };
}

// ---- tests ----

describe('backoff', () => {
  test('backoffDelay: within [base*(1-jitter), base], growing, capped', () => {
    const opts = { initialDelay: 500, maxDelay: 30000, factor: 2, jitter: 0.5 };
    let previousBase = 0;
    for (let attempt = 0; attempt < 20; attempt++) {
      const base = Math.min(30000, 500 * 2 ** attempt);
      assert.ok(base >= previousBase);
      previousBase = base;
      assert.equal(backoffDelay(attempt, opts, () => 0), base);
      const low = backoffDelay(attempt, opts, () => 0.999999);
      assert.ok(low >= base * 0.5 && low < base * 0.5 + 0.1, `attempt ${attempt}: ${low}`);
      for (let i = 0; i < 50; i++) {
        const d = backoffDelay(attempt, opts, Math.random);
        assert.ok(d >= base * 0.5 && d <= base, `attempt ${attempt}: ${d} outside [${base * 0.5}, ${base}]`);
      }
    }
    assert.equal(backoffDelay(30, opts, () => 0), 30000);
  });

  test('reconnect delays stay within bounds, grow, cap, and reset after a stable connection', async () => {
    const t = setup({ random: sequence([0, 0.3, 0.99, 0.7]) });
    const states = t.record('state');
    t.client.connect();
    const delays = [];
    for (let i = 0; i < 12; i++) {
      t.last().drop(1006); // the upgrade fails
      const ev = states.at(-1);
      assert.equal(ev.state, 'reconnecting');
      assert.equal(ev.attempt, i + 1);
      assert.deepEqual(t.clock.delays().filter((d) => d === ev.delay), [ev.delay], 'a timer with that delay');
      const base = Math.min(30000, 500 * 2 ** i);
      assert.ok(ev.delay >= base * 0.5 && ev.delay <= base, `attempt ${i}: ${ev.delay} not in [${base / 2}, ${base}]`);
      delays.push(ev.delay);
      await t.clock.advance(ev.delay - 1);
      assert.equal(t.sockets.length, i + 1, 'no reconnect before the delay');
      await t.clock.advance(1);
      assert.equal(t.sockets.length, i + 2, 'a reconnect at the delay');
    }
    // The bases double: even with jitter, a delay is at least the one two attempts earlier.
    for (let i = 2; i < 8; i++) assert.ok(delays[i] >= delays[i - 2], `delays grow: ${delays}`);
    assert.ok(delays.slice(-3).every((d) => d >= 15000 && d <= 30000), `capped: ${delays.slice(-3)}`);

    // A connection that does not last does not reset the count...
    t.last().authenticate();
    await t.clock.advance(5000);
    t.last().drop(1006);
    assert.ok(states.at(-1).delay >= 15000, `not reset early: ${states.at(-1).delay}`);
    await t.clock.advance(states.at(-1).delay);

    // ...one open for stableAfter does.
    t.last().authenticate();
    await t.clock.advance(10000);
    t.last().drop(1006);
    const ev = states.at(-1);
    assert.equal(ev.attempt, 1);
    assert.ok(ev.delay >= 250 && ev.delay <= 500, `reset: ${ev.delay}`);
    t.client.close();
  });
});

describe('heartbeat', () => {
  test('pings after interval of silence; a pong keeps the connection', async () => {
    const t = setup();
    const ws = await connected(t);
    await t.clock.advance(19999);
    assert.equal(ws.frames('ping').length, 0);
    await t.clock.advance(1);
    assert.equal(ws.frames('ping').length, 1);
    await t.clock.advance(9000);
    ws.deliver({ type: 'pong' });
    await t.clock.advance(15000);
    assert.equal(t.client.state, 'open');
    assert.equal(ws.closedWith, null);
    assert.equal(ws.frames('ping').length, 1, 'next ping 20 s after the pong');
    await t.clock.advance(5000);
    assert.equal(ws.frames('ping').length, 2);
    t.client.close();
  });

  test('any frame from the server postpones the ping', async () => {
    const t = setup();
    const ws = await connected(t);
    await t.clock.advance(15000);
    ws.deliver({ type: 'presence', user: 'bob', status: 'online' });
    await t.clock.advance(19000);
    assert.equal(ws.frames('ping').length, 0);
    await t.clock.advance(1000);
    assert.equal(ws.frames('ping').length, 1);
    t.client.close();
  });

  test('no answer within timeout closes the socket and reconnects', async () => {
    const t = setup();
    const states = t.record('state');
    const ws = await connected(t);
    await t.clock.advance(20000);
    assert.equal(ws.frames('ping').length, 1);
    await t.clock.advance(9999);
    assert.equal(t.client.state, 'open');
    await t.clock.advance(1);
    assert.ok(ws.closedWith, 'the dead socket is closed');
    assert.equal(t.client.state, 'reconnecting');
    assert.equal(states.at(-1).reason, 'heartbeat timeout');
    await t.clock.advance(states.at(-1).delay);
    assert.equal(t.sockets.length, 2);
    t.last().authenticate();
    await flush();
    assert.equal(t.client.state, 'open');
    t.client.close();
  });

  test('a socket that never opens is given up after interval + timeout', async () => {
    const t = setup();
    t.client.connect();
    await t.clock.advance(29999);
    assert.equal(t.client.state, 'connecting');
    await t.clock.advance(1);
    assert.ok(t.sockets[0].closedWith);
    assert.equal(t.client.state, 'reconnecting');
    t.client.close();
  });
});

describe('outbox', () => {
  test('un-acked sends are resent after reconnect with the same cid, after the resubscribe', async () => {
    const t = setup();
    const outbox = t.record('outbox');
    const acks = t.record('ack');
    const ws1 = await connected(t);
    const sub = t.client.subscribe('r1');
    answerSubscribe(ws1, { r1: 5 });
    await sub;

    const first = t.client.send('r1', 'hello');
    const sent = ws1.frames('message');
    assert.equal(sent.length, 1);
    const cid1 = sent[0].cid;
    assert.match(cid1, /^c-/);
    assert.deepEqual(sent[0], { type: 'message', room: 'r1', text: 'hello', cid: cid1 });
    assert.deepEqual(t.client.pending.map((p) => p.cid), [cid1]);

    ws1.drop(1006);
    const second = t.client.send('r1', 'while away'); // queued, not sent
    const cid2 = t.client.pending[1].cid;
    assert.notEqual(cid2, cid1);
    assert.equal(t.client.pending.length, 2);
    assert.ok(outbox.length >= 2);

    await t.clock.advance(500);
    const ws2 = t.last();
    assert.notEqual(ws2, ws1);
    ws2.authenticate();
    assert.deepEqual(
      ws2.sent.map((f) => f.type),
      ['subscribe', 'message', 'message'],
    );
    assert.deepEqual(ws2.sent[0].since, { r1: 5 });
    assert.deepEqual(
      ws2.frames('message').map((f) => [f.cid, f.text]),
      [
        [cid1, 'hello'],
        [cid2, 'while away'],
      ],
    );

    ws2.deliver({ type: 'ack', cid: cid1, id: '77', seq: 6 });
    assert.deepEqual(await first, { cid: cid1, id: '77', seq: 6 });
    assert.deepEqual(t.client.pending.map((p) => p.cid), [cid2]);
    ws2.deliver({ type: 'ack', cid: cid2, id: '78', seq: 7 });
    assert.deepEqual(await second, { cid: cid2, id: '78', seq: 7 });
    assert.deepEqual(t.client.pending, []);
    assert.deepEqual(outbox.at(-1), []);
    assert.deepEqual(acks.map((a) => a.cid), [cid1, cid2]);
    t.client.close();
  });

  test('sends before connect() are queued and go out once authenticated', async () => {
    const t = setup();
    const p = t.client.send('r1', 'early', { cid: 'mine-1' });
    assert.equal(t.client.state, 'idle');
    assert.deepEqual(t.client.pending.map(({ cid, room, text }) => ({ cid, room, text })), [
      { cid: 'mine-1', room: 'r1', text: 'early' },
    ]);
    assert.equal(t.client.pending[0].ts, t.clock.t);
    const ws = await connected(t);
    assert.deepEqual(ws.frames('message'), [{ type: 'message', room: 'r1', text: 'early', cid: 'mine-1' }]);
    ws.deliver({ type: 'ack', cid: 'mine-1', id: '1', seq: 1 });
    assert.equal((await p).id, '1');
    t.client.close();
  });

  test('the echo marks a pending send delivered; the app sees it as a message', async () => {
    const t = setup();
    const messages = t.record('message');
    const ws = await connected(t);
    t.client.subscribe('r1');
    answerSubscribe(ws, { r1: 0 });
    t.client.send('r1', 'hi', { cid: 'c-x' });
    ws.deliver({ ...message('r1', 1), from: 'alice', text: 'hi', cid: 'c-x' });
    assert.equal(messages.length, 1);
    assert.deepEqual(t.client.pending[0], { cid: 'c-x', room: 'r1', text: 'hi', ts: t.clock.t, delivered: true, id: '1001', seq: 1 });
    t.client.close();
  });

  test('transient errors keep the send and resend the same cid after a backoff', async () => {
    const t = setup();
    const errors = t.record('error');
    const ws = await connected(t);
    const p = t.client.send('r1', 'x', { cid: 'c-1' });
    assert.equal(ws.frames('message').length, 1);

    ws.deliver({ type: 'error', code: 'unavailable', message: 'redis is unreachable; retry later', cid: 'c-1' });
    assert.equal(errors.at(-1).code, 'unavailable');
    assert.equal(t.client.pending.length, 1);
    await t.clock.advance(374); // random 0.5, jitter 0.5: the first retry waits 375 ms
    assert.equal(ws.frames('message').length, 1, 'not resent before the backoff');
    await t.clock.advance(1);
    assert.deepEqual(ws.frames('message').map((f) => f.cid), ['c-1', 'c-1']);

    ws.deliver({ type: 'error', code: 'not_stored', message: 'resend it', cid: 'c-1' });
    await t.clock.advance(749);
    assert.equal(ws.frames('message').length, 2, 'the second retry backs off further');
    await t.clock.advance(1);
    assert.deepEqual(ws.frames('message').map((f) => f.cid), ['c-1', 'c-1', 'c-1']);

    ws.deliver({ type: 'ack', cid: 'c-1', id: '9', seq: 3 });
    assert.deepEqual(await p, { cid: 'c-1', id: '9', seq: 3 });
    assert.equal(t.client.pending.length, 0);
    t.client.close();
  });

  test('rate_limited keeps the send and resends the same cid no sooner than retry_after_ms', async () => {
    const t = setup();
    const ws = await connected(t);
    const p = t.client.send('r1', 'x', { cid: 'c-1' });
    ws.deliver({ type: 'error', code: 'rate_limited', message: 'too many frames; retry later', cid: 'c-1', retry_after_ms: 2000 });
    assert.equal(t.client.pending.length, 1);
    await t.clock.advance(1999); // the backoff alone would be 375 ms
    assert.equal(ws.frames('message').length, 1, 'not resent before retry_after_ms');
    await t.clock.advance(1);
    assert.deepEqual(ws.frames('message').map((f) => f.cid), ['c-1', 'c-1']);
    ws.deliver({ type: 'ack', cid: 'c-1', id: '9', seq: 3 });
    assert.deepEqual(await p, { cid: 'c-1', id: '9', seq: 3 });
    t.client.close();
  });

  test('a transient error followed by a reconnect resends once, on the new connection', async () => {
    const t = setup();
    const ws1 = await connected(t);
    t.client.send('r1', 'x', { cid: 'c-1' });
    ws1.deliver({ type: 'error', code: 'unavailable', message: 'later', cid: 'c-1' });
    ws1.drop(1006);
    await t.clock.advance(500);
    const ws2 = t.last();
    ws2.authenticate();
    await t.clock.advance(5000);
    assert.deepEqual(ws2.frames('message').map((f) => f.cid), ['c-1']);
    assert.equal(ws1.frames('message').length, 1);
    t.client.close();
  });

  for (const code of ['too_large', 'bad_request', 'not_subscribed', 'forbidden', 'something_new']) {
    test(`a final error (${code}) rejects the send and removes it`, async () => {
      const t = setup();
      const outbox = t.record('outbox');
      const ws = await connected(t);
      const keep = t.client.send('r1', 'stays', { cid: 'c-0' });
      const p = t.client.send('r1', 'x', { cid: 'c-1' });
      ws.deliver({ type: 'error', code, message: 'no', cid: 'c-1' });
      await assert.rejects(p, (err) => err instanceof ParleyError && err.code === code && err.cid === 'c-1' && err.room === 'r1');
      assert.deepEqual(t.client.pending.map((e) => e.cid), ['c-0']);
      assert.deepEqual(outbox.at(-1).map((e) => e.cid), ['c-0']);
      await t.clock.advance(60000);
      assert.equal(ws.frames('message').filter((f) => f.cid === 'c-1').length, 1, 'never resent');
      keep.catch(() => {});
      t.client.close();
    });
  }

  test('local validation: empty text, bad room, oversized frame', async () => {
    const t = setup();
    await assert.rejects(t.client.send('r1', ''), { code: 'bad_request' });
    await assert.rejects(t.client.send('bad room', 'x'), { code: 'bad_request' });
    await assert.rejects(t.client.sendDirect('', 'x'), { code: 'bad_request' });
    // A text that escapes to more than 64 KiB would make the server close the connection (1009).
    await assert.rejects(t.client.send('r1', '\u0001'.repeat(12000)), { code: 'too_large' });
    assert.deepEqual(t.client.pending, []);
  });

  test('a cid already pending names the same send', async () => {
    const t = setup();
    const ws = await connected(t);
    const a = t.client.send('r1', 'once', { cid: 'c-same' });
    const b = t.client.send('r1', 'once', { cid: 'c-same' });
    assert.equal(a, b);
    assert.equal(t.client.pending.length, 1);
    assert.equal(ws.frames('message').length, 1);
    t.client.close();
  });

  test('sendDirect sends `to` and resolves on the ack', async () => {
    const t = setup();
    const ws = await connected(t);
    const p = t.client.sendDirect('bob', 'psst', { cid: 'c-d' });
    assert.deepEqual(ws.frames('message'), [{ type: 'message', to: 'bob', text: 'psst', cid: 'c-d' }]);
    assert.equal(t.client.pending[0].to, 'bob');
    ws.deliver({ type: 'ack', cid: 'c-d', id: '5', seq: 1 });
    assert.deepEqual(await p, { cid: 'c-d', id: '5', seq: 1 });
    t.client.close();
  });
});

describe('catching up', () => {
  test('resubscribe with since: the seam between catch-up and live messages has no gap and no duplicate', async () => {
    const t = setup();
    const seen = [];
    t.client.on('message', (m) => seen.push(m.seq));
    const gaps = t.record('gap');
    const ws1 = await connected(t);
    t.client.subscribe('r1');
    answerSubscribe(ws1, { r1: 35 });
    ws1.deliver(message('r1', 36));
    ws1.deliver(message('r1', 37));
    assert.equal(t.client.lastSeq('r1'), 37);
    ws1.drop(1006);

    await t.clock.advance(500);
    const ws2 = t.last();
    ws2.authenticate();
    assert.deepEqual(ws2.frames('subscribe')[0].since, { r1: 37 });
    ws2.deliver({ type: 'subscribed', room: 'r1', seq: 41, recovered: 4 });
    // Catch-up and live overlap at the seam, and a live copy repeats.
    for (const seq of [38, 39, 40, 41, 40, 41, 42, 42, 43, 41]) ws2.deliver(message('r1', seq));
    assert.deepEqual(seen, [36, 37, 38, 39, 40, 41, 42, 43]);
    assert.deepEqual(gaps, []);
    assert.equal(t.client.lastSeq('r1'), 43);
    t.client.close();
  });

  test('a room subscribed with no message yet resumes from its subscribed seq', async () => {
    const t = setup();
    const ws1 = await connected(t);
    t.client.subscribe(['r1', 'r2']);
    assert.equal(ws1.frames('subscribe')[0].since, undefined, 'a room never seen gets no since');
    answerSubscribe(ws1, { r1: 12, r2: 0 });
    ws1.drop(1001);
    await t.clock.advance(500);
    t.last().authenticate();
    assert.deepEqual(t.last().frames('subscribe')[0].since, { r1: 12, r2: 0 });
    t.client.close();
  });

  test('a truncated catch-up emits truncated and does not count as a gap', async () => {
    const t = setup();
    const truncated = t.record('truncated');
    const gaps = t.record('gap');
    const seen = [];
    t.client.on('message', (m) => seen.push(m.seq));
    const ws1 = await connected(t);
    const sub = t.client.subscribe('r1');
    answerSubscribe(ws1, { r1: 10 });
    assert.deepEqual(await sub, [{ room: 'r1', seq: 10 }]);
    ws1.drop(1006);
    await t.clock.advance(500);
    const ws2 = t.last();
    ws2.authenticate();
    assert.deepEqual(ws2.frames('subscribe')[0].since, { r1: 10 });
    ws2.deliver({ type: 'subscribed', room: 'r1', seq: 20010, recovered: 10000, truncated: true });
    assert.deepEqual(truncated, [{ room: 'r1', seq: 20010, since: 10, recovered: 10000 }]);
    ws2.deliver(message('r1', 10011));
    ws2.deliver(message('r1', 10012));
    assert.deepEqual(seen, [10011, 10012]);
    assert.deepEqual(gaps, []);
    t.client.close();
  });

  test('direct messages: duplicates dropped, a hole reported as a gap', async () => {
    const t = setup();
    const seen = [];
    t.client.on('message', (m) => seen.push(m.seq));
    const gaps = t.record('gap');
    const ws = await connected(t);
    const dm = (seq) => ({ ...message('dm:0123456789abcdef0123456789abcdef', seq), to: 'alice' });
    ws.deliver(dm(3));
    ws.deliver(dm(3));
    ws.deliver(dm(4));
    ws.deliver(dm(7));
    assert.deepEqual(seen, [3, 4, 7]);
    assert.deepEqual(gaps, [{ room: 'dm:0123456789abcdef0123456789abcdef', after: 4, seq: 7 }]);
    assert.equal(t.client.lastSeq('dm:0123456789abcdef0123456789abcdef'), 7);
    t.client.close();
  });

  test('messages of a room unsubscribed from are dropped', async () => {
    const t = setup();
    const seen = t.record('message');
    const ws = await connected(t);
    t.client.subscribe('r1');
    answerSubscribe(ws, { r1: 0 });
    const done = t.client.unsubscribe('r1');
    assert.deepEqual(ws.frames('unsubscribe').map((f) => f.rooms), [['r1']]);
    ws.deliver(message('r1', 1));
    ws.deliver({ type: 'unsubscribed', room: 'r1' });
    await done;
    assert.deepEqual(seen, []);
    assert.equal(t.client.lastSeq('r1'), 0);
    ws.drop(1006);
    await t.clock.advance(500);
    t.last().authenticate();
    assert.deepEqual(t.last().frames('subscribe'), [], 'not resubscribed');
    t.client.close();
  });
  test('an unsubscribe refused as rate_limited is sent again after retry_after_ms; another refusal rejects', async () => {
    const t = setup();
    const ws = await connected(t);
    t.client.subscribe(['r1', 'r2', 'r3']);
    answerSubscribe(ws, { r1: 0, r2: 0, r3: 0 });
    let done = false;
    const p = t.client.unsubscribe(['r1', 'r2']).then(() => { done = true; });
    const f1 = ws.frames('unsubscribe')[0];
    assert.deepEqual(f1.rooms, ['r1', 'r2']);
    assert.equal(typeof f1.cid, 'string');
    ws.deliver({ type: 'error', code: 'rate_limited', message: 'too many rooms subscribed or left; retry later', cid: f1.cid, retry_after_ms: 800 });
    await t.clock.advance(799);
    assert.equal(ws.frames('unsubscribe').length, 1, 'not sent again before retry_after_ms');
    await t.clock.advance(1);
    const f2 = ws.frames('unsubscribe')[1];
    assert.deepEqual(f2.rooms, ['r1', 'r2']);
    assert.notEqual(f2.cid, f1.cid);
    assert.equal(done, false, 'still waiting for the server');
    ws.deliver({ type: 'unsubscribed', room: 'r1' });
    ws.deliver({ type: 'unsubscribed', room: 'r2' });
    await p;
    // A final refusal rejects, naming the rooms.
    const q = t.client.unsubscribe('r3');
    const f3 = ws.frames('unsubscribe')[2];
    ws.deliver({ type: 'error', code: 'bad_request', message: 'no', cid: f3.cid });
    await assert.rejects(q, (e) => e.code === 'bad_request' && e.rooms.includes('r3'));
    t.client.close();
  });

  test('a room subscribed to again while its refused unsubscribe waits is not left', async () => {
    const t = setup();
    const ws = await connected(t);
    t.client.subscribe('r1');
    answerSubscribe(ws, { r1: 0 });
    const p = t.client.unsubscribe('r1');
    const f1 = ws.frames('unsubscribe')[0];
    ws.deliver({ type: 'error', code: 'rate_limited', message: 'later', cid: f1.cid, retry_after_ms: 100 });
    t.client.subscribe('r1');
    await t.clock.advance(100);
    await p;
    assert.equal(ws.frames('unsubscribe').length, 1, 'not sent again');
    t.client.close();
  });
});

describe('subscribe', () => {
  test('resolves with each room’s subscribed fields, in order', async () => {
    const t = setup();
    const subscribed = t.record('subscribed');
    const ws = await connected(t);
    const p = t.client.subscribe(['b', 'a']);
    const frame = ws.frames('subscribe')[0];
    assert.deepEqual(frame.rooms, ['b', 'a']);
    ws.deliver({ type: 'subscribed', room: 'a', seq: 2, read: 1, unread: 1 });
    ws.deliver({ type: 'subscribed', room: 'b', seq: 5 });
    assert.deepEqual(await p, [
      { room: 'b', seq: 5 },
      { room: 'a', seq: 2, read: 1, unread: 1 },
    ]);
    assert.equal(subscribed.length, 2);
    t.client.close();
  });

  test('subscribing while offline waits for the connection', async () => {
    const t = setup();
    const p = t.client.subscribe('r1');
    const ws = await connected(t);
    assert.deepEqual(ws.frames('subscribe')[0].rooms, ['r1']);
    answerSubscribe(ws, { r1: 3 });
    assert.deepEqual(await p, [{ room: 'r1', seq: 3 }]);
    t.client.close();
  });

  test('a per-room forbidden rejects; the other rooms stay subscribed', async () => {
    const t = setup();
    const ws = await connected(t);
    const p = t.client.subscribe(['r1', 'r2']);
    ws.deliver({ type: 'subscribed', room: 'r1', seq: 1 });
    // The server names the room only in the message.
    ws.deliver({ type: 'error', code: 'forbidden', message: 'r2 : not a member of this room' });
    await assert.rejects(p, { code: 'forbidden', room: 'r2' });
    ws.drop(1006);
    await t.clock.advance(500);
    t.last().authenticate();
    assert.deepEqual(t.last().frames('subscribe')[0].rooms, ['r1']);
    t.client.close();
  });

  test('an unsubscribed the client did not ask for (membership removed) forgets the room', async () => {
    const t = setup({ heartbeat: { interval: 1e9 } });
    const ends = t.record('unsubscribed');
    const ws = await connected(t);
    const p = t.client.subscribe(['r1', 'r2']);
    answerSubscribe(ws, { r1: 5, r2: 7 });
    await p;
    ws.deliver({ type: 'unsubscribed', room: 'r1', user: 'alice', reason: 'removed' });
    assert.deepEqual(ends, [{ room: 'r1', reason: 'removed' }]);
    assert.equal(t.client.lastSeq('r1'), 0, 'r1 forgotten');
    ws.deliver(message('r1', 6));
    t.last().drop(1006);
    await t.clock.advance(60_000);
    t.last().authenticate();
    await flush();
    assert.deepEqual(t.last().frames('subscribe').map((f) => f.rooms), [['r2']], 'only r2 is resubscribed');
    t.client.close();
  });

  test('a whole-frame error (with the frame’s cid) rejects', async () => {
    const t = setup();
    const ws = await connected(t);
    const p = t.client.subscribe(['r1', 'r2']);
    const frame = ws.frames('subscribe')[0];
    assert.ok(frame.cid);
    ws.deliver({ type: 'error', code: 'too_large', message: 'too many rooms on this connection', cid: frame.cid });
    await assert.rejects(p, { code: 'too_large' });
    ws.drop(1006);
    await t.clock.advance(500);
    t.last().authenticate();
    assert.deepEqual(t.last().frames('subscribe'), []);
    t.client.close();
  });

  test('a per-room unavailable is retried after a backoff', async () => {
    const t = setup();
    const ws = await connected(t);
    const p = t.client.subscribe('r3');
    ws.deliver({ type: 'error', code: 'unavailable', message: 'could not subscribe to r3: redis unreachable; retry' });
    await t.clock.advance(374);
    assert.equal(ws.frames('subscribe').length, 1);
    await t.clock.advance(1);
    assert.deepEqual(ws.frames('subscribe')[1].rooms, ['r3']);
    answerSubscribe(ws, { r3: 4 });
    assert.deepEqual(await p, [{ room: 'r3', seq: 4 }]);
    t.client.close();
  });

  test('dm: rooms and invalid ids are refused locally', async () => {
    const t = setup();
    await assert.rejects(t.client.subscribe('dm:0123456789abcdef0123456789abcdef'), { code: 'forbidden' });
    await assert.rejects(t.client.subscribe(['ok', 'not ok']), { code: 'bad_request' });
  });

  test('many rooms are split into frames under the frame limit', async () => {
    const t = setup({ maxFrame: 4096 });
    const ws = await connected(t);
    const rooms = Array.from({ length: 300 }, (_, i) => `room-${String(i).padStart(40, '0')}`);
    t.client.subscribe(rooms);
    const frames = ws.frames('subscribe');
    assert.ok(frames.length > 1);
    assert.ok(frames.every((f) => JSON.stringify(f).length <= 4096));
    assert.deepEqual(frames.flatMap((f) => f.rooms), rooms);
    t.client.close();
  });
});

describe('tokens', () => {
  test('the token goes on the upgrade URL', async () => {
    const t = setup();
    t.client.connect();
    assert.equal(t.last().url, `ws://127.0.0.1:8080/ws?token=${TOKEN}`);
    t.client.close();
    const t2 = setup({ url: 'wss://chat.example/ws?v=1', token: 'a+b/c' });
    t2.client.connect();
    assert.equal(t2.last().url, 'wss://chat.example/ws?v=1&token=a%2Bb%2Fc');
    t2.client.close();
  });

  test('several URLs: each connection attempt takes the next in turn; HTTP goes to the first', async () => {
    const { fetch, calls } = (() => {
      const calls = [];
      return { calls, fetch: async (url) => (calls.push(url), { ok: true, status: 200, json: async () => ({}) }) };
    })();
    const t = setup({ url: ['ws://a.example/ws', 'wss://b.example:8443/ws'], fetch });
    const states = t.record('state');
    const host = () => new URL(t.last().url).host;
    await connected(t);
    assert.equal(host(), 'a.example', 'the first attempt: the first URL');
    t.last().drop(1006); // instance a dies
    await t.clock.advance(states.at(-1).delay);
    assert.equal(t.last().url, `wss://b.example:8443/ws?token=${TOKEN}`, 'the reconnect: the next URL');
    t.last().drop(1006); // b refuses too
    await t.clock.advance(states.at(-1).delay);
    assert.equal(host(), 'a.example', 'then round again');
    await t.client.myRooms();
    assert.equal(calls[0], 'http://a.example/api/users/me/rooms');
    t.client.close();
    assert.throws(() => setup({ url: [] }), TypeError);
  });

  test('the provider is called before every connect and shortly before expiry', async () => {
    const clock = new FakeClock();
    let calls = 0;
    const tokenProvider = async () => {
      calls++;
      return makeJwt({ sub: 'alice', exp: Math.floor(clock.t / 1000) + 3600, n: calls });
    };
    const t = setup({ tokenProvider, token: undefined, now: clock.now, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, heartbeat: { interval: 1e9 } });
    t.clock = clock;
    const p = t.client.connect();
    await flush();
    assert.equal(calls, 1);
    assert.equal(decodeJwt(decodeURIComponent(t.last().url.split('token=')[1])).n, 1);
    t.last().authenticate();
    await p;

    // Expiry in 3600 s: a new token 60 s before.
    await clock.advance(3540_000 - 1);
    assert.equal(calls, 1);
    await clock.advance(1);
    assert.equal(calls, 2);
    // The refreshed token is the one used by the next reconnect's... provider call, and by HTTP.
    t.last().drop(1006);
    await clock.advance(500);
    assert.equal(calls, 3, 'called again before the reconnect');
    assert.equal(decodeJwt(decodeURIComponent(t.last().url.split('token=')[1])).n, 3);
    t.client.close();
    assert.equal(clock.size, 0);
  });

  test('a short-lived token is refreshed at 90 % of its life', async () => {
    const clock = new FakeClock();
    let calls = 0;
    const tokenProvider = () => {
      calls++;
      return makeJwt({ sub: 'alice', exp: Math.floor(clock.t / 1000) + 100 });
    };
    const t = setup({ tokenProvider, token: undefined, now: clock.now, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, heartbeat: { interval: 1e9 } });
    t.client.connect();
    await flush();
    t.last().authenticate();
    await clock.advance(89_999);
    assert.equal(calls, 1);
    await clock.advance(1);
    assert.equal(calls, 2);
    t.client.close();
  });

  test('a refreshed token is sent on the open connection (authenticate), so it is not closed at exp', async () => {
    const clock = new FakeClock();
    let calls = 0;
    const tokenProvider = () => {
      calls++;
      return makeJwt({ sub: 'alice', exp: Math.floor(clock.t / 1000) + 100, n: calls });
    };
    const t = setup({ tokenProvider, token: undefined, now: clock.now, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, heartbeat: { interval: 1e9 } });
    const renewed = t.record('reauthenticated');
    t.client.connect();
    await flush();
    const ws = t.last();
    ws.authenticate();
    await flush();
    assert.equal(ws.frames('authenticate').length, 0, 'nothing sent before the refresh');
    await clock.advance(90_000);
    assert.equal(calls, 2);
    const auth = ws.frames('authenticate');
    assert.equal(auth.length, 1);
    assert.equal(decodeJwt(auth[0].token).n, 2);
    assert.ok(typeof auth[0].cid === 'string');
    ws.deliver({ type: 'reauthenticated', user: 'alice', exp: 123 });
    assert.deepEqual(renewed, [{ user: 'alice', exp: 123 }]);
    assert.equal(t.client.state, 'open');
    assert.equal(t.sockets.length, 1, 'no reconnect');
    t.client.close();
  });

  test('the server\'s token_expiring notice makes the provider renew at once, on the same connection', async () => {
    let calls = 0;
    const t = setup({ token: undefined, tokenProvider: () => `tok-${++calls}`, heartbeat: { interval: 1e9 } });
    const notices = t.record('server_notice');
    t.client.connect();
    await flush();
    const ws = t.last();
    ws.authenticate();
    await flush();
    ws.deliver({ type: 'server_notice', code: 'token_expiring', message: 'soon', exp: 5 });
    await flush();
    assert.equal(calls, 2);
    assert.deepEqual(ws.frames('authenticate').map((f) => f.token), ['tok-2']);
    assert.equal(notices.length, 1);
    assert.equal(t.client.state, 'open');
    t.client.close();
  });

  test('a static token: the expiry notice sends nothing; 4001 "token expired" ends it with token_expired', async () => {
    const t = setup();
    const p = t.client.connect();
    await flush();
    t.last().authenticate();
    await p;
    t.last().deliver({ type: 'server_notice', code: 'token_expiring', message: 'soon', exp: 5 });
    await flush();
    assert.equal(t.last().frames('authenticate').length, 0);
    const errors = t.record('error');
    t.last().drop(4001, 'token expired');
    assert.equal(t.client.state, 'closed');
    assert.equal(errors.at(-1).code, 'token_expired');
    assert.equal(t.clock.size, 0);
  });

  test('4003 (disconnected by the server): closed for good, no reconnect, even with a provider', async () => {
    let calls = 0;
    const t = setup({ token: undefined, tokenProvider: () => `tok-${++calls}` });
    const errors = t.record('error');
    const states = t.record('state');
    t.client.connect();
    await flush();
    t.last().authenticate();
    await flush();
    t.last().deliver({ type: 'server_notice', code: 'disconnected', message: 'banned' });
    t.last().drop(4003, 'disconnected by the server');
    assert.equal(t.client.state, 'closed');
    assert.equal(states.at(-1).code, 'disconnected');
    assert.equal(errors.at(-1).code, 'disconnected');
    await t.clock.advance(60_000);
    assert.equal(t.sockets.length, 1, 'no reconnect');
    assert.equal(calls, 1);
    assert.equal(t.clock.size, 0);
  });

  test('4001 with a provider: a new token and a reconnect', async () => {
    let calls = 0;
    const t = setup({ token: undefined, tokenProvider: () => `tok-${++calls}` });
    const states = t.record('state');
    t.client.connect();
    await flush();
    t.last().authenticate();
    await flush();
    t.last().drop(4001, 'token expired');
    assert.equal(t.client.state, 'reconnecting');
    await t.clock.advance(states.at(-1).delay);
    assert.equal(calls, 2);
    assert.match(t.last().url, /token=tok-2$/);
    t.client.close();
  });

  test('4001 with a static token: closed, an error event, connect() rejects', async () => {
    const t = setup();
    const errors = t.record('error');
    const p = t.client.connect();
    t.last().accept();
    t.last().drop(4001, 'authentication timeout');
    await assert.rejects(p, { code: 'unauthorized' });
    assert.equal(t.client.state, 'closed');
    assert.equal(errors.at(-1).code, 'unauthorized');
    assert.equal(t.clock.size, 0);
  });

  test('an expired static token that cannot connect: closed with token_expired', async () => {
    const clock = new FakeClock();
    const token = makeJwt({ sub: 'alice', exp: Math.floor(clock.t / 1000) - 10 });
    const t = setup({ token, now: clock.now, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout });
    const p = t.client.connect();
    t.last().drop(1006); // browsers show the upgrade's HTTP 401 as a bare 1006
    await assert.rejects(p, { code: 'token_expired' });
    assert.equal(t.client.state, 'closed');
  });

  test('an HTTP 401 named by the platform (the ws package) ends a static-token client', async () => {
    const t = setup();
    const p = t.client.connect();
    const ws = t.last();
    ws.drop(1006, '', { message: 'Unexpected server response: 401' });
    await assert.rejects(p, { code: 'unauthorized' });
    assert.equal(t.client.state, 'closed');
    assert.equal(t.clock.size, 0);
  });

  test('a provider failure is reported and retried with backoff', async () => {
    let fail = true;
    const t = setup({ token: undefined, tokenProvider: async () => { if (fail) throw new Error('backend down'); return 'tok'; } });
    const errors = t.record('error');
    t.client.connect();
    await flush();
    assert.equal(errors.at(-1).code, 'token_provider');
    assert.equal(t.client.state, 'reconnecting');
    assert.equal(t.sockets.length, 0);
    fail = false;
    await t.clock.advance(500);
    assert.equal(t.sockets.length, 1);
    t.client.close();
  });

  test('decodeJwt reads base64url payloads', () => {
    assert.deepEqual(decodeJwt(makeJwt({ sub: 'ü?>', exp: 5 })), { sub: 'ü?>', exp: 5 });
    assert.equal(decodeJwt('nonsense'), null);
  });
});

// Connect, fail four times (so the backoff has grown), then authenticate.
async function backedOff(t, states) {
  t.client.connect();
  for (let i = 0; i < 4; i++) {
    t.last().drop(1006);
    await t.clock.advance(states.at(-1).delay);
  }
  t.last().authenticate();
}

describe('state and shutdown', () => {
  test('state events: connecting -> open -> reconnecting -> connecting -> open -> closed', async () => {
    const t = setup();
    const states = t.record('state');
    await connected(t);
    t.last().drop(1011);
    await t.clock.advance(500);
    t.last().authenticate();
    await flush();
    t.client.close();
    assert.deepEqual(
      states.map((s) => [s.previous, s.state]),
      [
        ['idle', 'connecting'],
        ['connecting', 'open'],
        ['open', 'reconnecting'],
        ['reconnecting', 'connecting'],
        ['connecting', 'open'],
        ['open', 'closed'],
      ],
    );
    assert.equal(states[2].code, 1011);
    assert.equal(states[2].attempt, 1);
    assert.equal(typeof states[2].delay, 'number');
    assert.equal(t.client.user, 'alice');
  });

  test('a shutdown notice then 1001: the next attempt starts from the shortest delay', async () => {
    const t = setup();
    const states = t.record('state');
    const notices = t.record('server_notice');
    await backedOff(t, states);
    t.last().deliver({ type: 'server_notice', code: 'shutdown', message: 'server shutting down' });
    t.last().drop(1001, 'server shutting down');
    assert.equal(notices.length, 1);
    const ev = states.at(-1);
    assert.equal(ev.state, 'reconnecting');
    assert.ok(ev.delay <= 500, `quick: ${ev.delay}`);
    // Without the notice the same close backs off as usual.
    await t.clock.advance(ev.delay);
    t.last().authenticate();
    t.last().drop(1001);
    assert.ok(states.at(-1).delay > 500);
    t.client.close();
  });

  test('a rebalance notice ("reconnect") then 1001: also reconnects from the shortest delay', async () => {
    const t = setup();
    const states = t.record('state');
    await backedOff(t, states);
    t.last().deliver({ type: 'server_notice', code: 'reconnect', message: 'the load is being rebalanced: reconnect' });
    t.last().drop(1001, 'rebalancing');
    const ev = states.at(-1);
    assert.equal(ev.state, 'reconnecting');
    assert.ok(ev.delay <= 500, `quick: ${ev.delay}`);
    t.client.close();
  });

  test('connect() without a WebSocket implementation throws a TypeError', () => {
    const saved = globalThis.WebSocket; // Node 20 has none; newer versions do
    delete globalThis.WebSocket;
    try {
      const c = new ParleyClient({ url: 'ws://h/ws', token: TOKEN });
      assert.throws(() => c.connect(), TypeError);
    } finally {
      if (saved) globalThis.WebSocket = saved;
    }
  });

  test('close() clears every timer and stops reconnecting', async () => {
    const clock = new FakeClock();
    const t = setup({
      token: undefined,
      tokenProvider: () => makeJwt({ sub: 'alice', exp: Math.floor(clock.t / 1000) + 3600 }),
      now: clock.now,
      setTimeout: clock.setTimeout,
      clearTimeout: clock.clearTimeout,
    });
    t.client.connect();
    await flush();
    const ws = t.last();
    ws.authenticate();
    t.client.subscribe('r1');
    ws.deliver({ type: 'error', code: 'unavailable', message: 'could not subscribe to r1: x; retry' });
    t.client.send('r1', 'x', { cid: 'c-1' });
    ws.deliver({ type: 'error', code: 'unavailable', message: 'later', cid: 'c-1' });
    assert.ok(clock.size >= 4, 'heartbeat, refresh, send retry, subscribe retry');
    t.client.close();
    assert.equal(clock.size, 0);
    assert.equal(ws.closedWith.code, 1000);
    assert.equal(t.client.state, 'closed');
    await clock.advance(3600_000);
    assert.equal(t.sockets.length, 1);
    assert.deepEqual(t.client.pending.map((p) => p.cid), ['c-1'], 'the outbox is kept for a later connect()');
  });

  test('close() while reconnecting clears the reconnect timer; connect() rejects if closed first', async () => {
    const t = setup();
    const p = t.client.connect();
    t.last().drop(1006);
    assert.equal(t.clock.size, 1);
    t.client.close();
    assert.equal(t.clock.size, 0);
    await assert.rejects(p, { code: 'closed' });
  });

  test('close() during the token provider call opens no socket', async () => {
    let release;
    const t = setup({ token: undefined, tokenProvider: () => new Promise((r) => { release = r; }) });
    t.client.connect();
    t.client.close();
    release(makeJwt({ sub: 'alice', exp: Math.floor(t.clock.t / 1000) + 3600 }));
    await flush();
    assert.equal(t.sockets.length, 0);
    assert.equal(t.clock.size, 0);
  });
});

describe('reads, typing, events', () => {
  test('markRead sends only increasing seqs, and re-sends after a reconnect when ahead', async () => {
    const t = setup();
    const ws1 = await connected(t);
    t.client.subscribe('r1');
    answerSubscribe(ws1, { r1: 10 });
    t.client.markRead('r1', 5);
    t.client.markRead('r1', 5);
    t.client.markRead('r1', 4);
    t.client.markRead('r1', 6);
    t.client.markRead('r1', 7);
    // One read frame per room per readThrottle (1000 ms): the newest position at the window's end.
    assert.deepEqual(ws1.frames('read'), [{ type: 'read', room: 'r1', seq: 5 }]);
    await t.clock.advance(999);
    assert.equal(ws1.frames('read').length, 1);
    await t.clock.advance(1);
    assert.deepEqual(ws1.frames('read'), [
      { type: 'read', room: 'r1', seq: 5 },
      { type: 'read', room: 'r1', seq: 7 },
    ]);
    t.client.markRead('r1', 8);
    assert.equal(ws1.frames('read').length, 2, 'within the next window: waits');
    ws1.drop(1006); // cancels the pending read (8 is sent with the next subscribed)
    await t.clock.advance(500);
    const ws2 = t.last();
    ws2.authenticate();
    assert.deepEqual(ws2.frames('read'), []);
    ws2.deliver({ type: 'subscribed', room: 'r1', seq: 10, read: 6, unread: 4 });
    assert.deepEqual(ws2.frames('read'), [{ type: 'read', room: 'r1', seq: 8 }]);
    t.client.close();
  });

  test('typing is throttled per room; typing_stop only after a start', async () => {
    const t = setup();
    const ws = await connected(t);
    t.client.subscribe(['r1', 'r2']);
    answerSubscribe(ws);
    t.client.typing('r1');
    t.client.typing('r2');
    await t.clock.advance(2999);
    t.client.typing('r1');
    assert.equal(ws.frames('typing_start').length, 2);
    await t.clock.advance(1);
    t.client.typing('r1');
    assert.equal(ws.frames('typing_start').length, 3);
    t.client.typing('r1', false);
    t.client.typing('r1', false);
    assert.deepEqual(ws.frames('typing_stop'), [{ type: 'typing_stop', room: 'r1' }]);
    t.client.typing('r1'); // after a stop, a start goes out at once
    assert.equal(ws.frames('typing_start').length, 4);
    t.client.close();
  });

  test('server events are forwarded', async () => {
    const t = setup();
    const typing = t.record('typing');
    const presence = t.record('presence');
    const receipts = t.record('read_receipt');
    const errors = t.record('error');
    const ws = await connected(t);
    ws.deliver({ type: 'typing_start', room: 'r1', user: 'bob' });
    ws.deliver({ type: 'typing_stop', room: 'r1', user: 'bob' });
    ws.deliver({ type: 'presence', user: 'bob', status: 'offline' });
    ws.deliver({ type: 'read_receipt', room: 'r1', user: 'bob', seq: 4 });
    ws.deliver({ type: 'error', code: 'bad_json', message: 'nope' });
    assert.deepEqual(typing, [
      { room: 'r1', user: 'bob', active: true },
      { room: 'r1', user: 'bob', active: false },
    ]);
    assert.equal(presence[0].status, 'offline');
    assert.equal(receipts[0].seq, 4);
    assert.equal(errors[0].code, 'bad_json');
    t.client.close();
  });

  test('once() and off()', async () => {
    const t = setup();
    let n = 0;
    const fn = () => n++;
    t.client.once('presence', fn);
    const ws = await connected(t);
    ws.deliver({ type: 'presence', user: 'b', status: 'online' });
    ws.deliver({ type: 'presence', user: 'b', status: 'online' });
    assert.equal(n, 1);
    t.client.on('presence', fn);
    t.client.off('presence', fn);
    ws.deliver({ type: 'presence', user: 'b', status: 'online' });
    assert.equal(n, 1);
    t.client.close();
  });
});

describe('HTTP', () => {
  function fakeFetch(responses = []) {
    const calls = [];
    const fetch = async (url, init) => {
      calls.push({ url, ...init });
      const r = responses.shift() ?? { status: 200, body: {} };
      return { ok: r.status >= 200 && r.status < 300, status: r.status, json: async () => r.body };
    };
    return { fetch, calls };
  }

  test('history(): URL, query and Authorization header', async () => {
    const { fetch, calls } = fakeFetch([{ status: 200, body: { room: 'dm:ab', messages: [], has_more: false, next_before: 0 } }]);
    const t = setup({ fetch });
    const page = await t.client.history('dm:ab', { before: 10, limit: 20 });
    assert.equal(page.room, 'dm:ab');
    assert.equal(calls[0].url, 'http://127.0.0.1:8080/api/rooms/dm%3Aab/messages?before=10&limit=20');
    assert.equal(calls[0].method, 'GET');
    assert.equal(calls[0].headers.Authorization, `Bearer ${TOKEN}`);
    await t.client.history('r1');
    assert.equal(calls[1].url, 'http://127.0.0.1:8080/api/rooms/r1/messages');
  });

  test('the HTTP base follows wss -> https, or httpUrl', async () => {
    const a = fakeFetch();
    const t = setup({ url: 'wss://chat.example:8443/parley/ws', fetch: a.fetch });
    await t.client.myRooms();
    assert.equal(a.calls[0].url, 'https://chat.example:8443/api/users/me/rooms');
    const b = fakeFetch();
    const t2 = setup({ httpUrl: 'https://api.example/chat/', fetch: b.fetch });
    await t2.client.members('r 1'.replace(' ', '_'));
    assert.equal(b.calls[0].url, 'https://api.example/chat/api/rooms/r_1/members');
  });

  test('a non-200 rejects with .status and .code', async () => {
    const { fetch } = fakeFetch([{ status: 403, body: { error: 'forbidden', message: 'not a member' } }]);
    const t = setup({ fetch });
    await assert.rejects(t.client.history('r1'), (err) => err instanceof ParleyError && err.status === 403 && err.code === 'forbidden' && err.message === 'not a member');
    const f2 = fakeFetch([{ status: 503, body: undefined }]);
    const t2 = setup({ fetch: f2.fetch });
    await assert.rejects(t2.client.history('r1'), { status: 503, code: 'http_503' });
  });

  test('a 401 with a provider is retried once with a fresh token', async () => {
    const { fetch, calls } = fakeFetch([{ status: 401, body: { error: 'unauthorized' } }, { status: 200, body: { ok: 1 } }]);
    let n = 0;
    const t = setup({ fetch, token: undefined, tokenProvider: () => `tok-${++n}` });
    assert.deepEqual(await t.client.myRooms(), { ok: 1 });
    assert.deepEqual(calls.map((c) => c.headers.Authorization), ['Bearer tok-1', 'Bearer tok-2']);
  });

  test('leave(): unsubscribe, then DELETE the own membership', async () => {
    const { fetch, calls } = fakeFetch([{ status: 200, body: { member: false } }]);
    const t = setup({ fetch });
    const ws = await connected(t, 'al ice');
    t.client.subscribe('r1');
    answerSubscribe(ws, { r1: 1 });
    const p = t.client.leave('r1');
    assert.deepEqual(ws.frames('unsubscribe').map((f) => f.rooms), [['r1']]);
    assert.equal(calls.length, 0, 'DELETE after the unsubscribe is confirmed');
    ws.deliver({ type: 'unsubscribed', room: 'r1' });
    await p;
    assert.equal(calls[0].method, 'DELETE');
    assert.equal(calls[0].url, 'http://127.0.0.1:8080/api/rooms/r1/members/al%20ice');
    assert.equal(calls[0].headers.Authorization, `Bearer ${TOKEN}`);
    t.client.close();
  });
});
