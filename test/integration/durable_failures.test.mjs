// Durable messages under failure: parleyd killed with SIGKILL under load,
// PostgreSQL stopped under load, and the bounded store queue.
import {
  test, startRedis, startParleyd, startPostgres, connectAuthed, dbEnv, track, seqProblems, sendAcked,
  storedMessages, httpRequest, assert, eq, sleep, until,
} from './lib.mjs';

// A sender that keeps at most `window` messages unacked (ack-paced) until stopped.
function ackPacedSender(c, rooms, { window = 50, prefix }) {
  const st = { sent: new Map(), pending: new Set(), stop: false, errors: [] };
  let i = 0;
  const pump = () => {
    while (!st.stop && st.pending.size < window && c.open) {
      const cid = `${prefix}-${i}`, room = rooms[i % rooms.length];
      st.sent.set(cid, { room, text: `${prefix} #${i}` });
      st.pending.add(cid);
      c.send({ type: 'message', room, text: `${prefix} #${i}`, cid });
      i++;
    }
  };
  c.track.onEvent = (kind, j) => {
    if (kind === 'error') st.errors.push(j);
    if (kind === 'message') return;
    st.pending.delete(j.cid);
    pump();
  };
  st.start = pump;
  return st;
}

test('durable failures: kill -9 of an instance under load: every acked message is in PostgreSQL', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 });
  const [A, B] = [await startParleyd({ redis, env }), await startParleyd({ redis, env })];
  const rooms = ['k-0', 'k-1', 'k-2', 'k-3'];
  const onA = [], onB = [];
  for (let i = 0; i < 3; i++) onA.push(await connectAuthed(A, `ka-${process.pid}-${i}`));
  onB.push(await connectAuthed(B, `kb-${process.pid}-0`));
  const all = [...onA, ...onB];
  for (const c of all) { track(c); await c.subscribe(rooms); }
  await sleep(200);
  const senders = all.map((c, i) => ackPacedSender(c, rooms, { window: 50, prefix: `k${i}` }));
  senders.forEach((s) => s.start());
  await until(() => onA.reduce((a, c) => a + c.track.ackCount, 0) >= 1500, 20000, '1500 acks from A');
  A.child.kill('SIGKILL');
  const killedAt = Date.now();
  assert(await A.waitExit(5000), 'parleyd A did not die');
  await sleep(1000); // B goes on
  senders[3].stop = true;
  await until(() => senders[3].pending.size === 0, 15000, `B's sender: ${senders[3].pending.size} messages unacked`);
  const ackedOnA = onA.reduce((a, c) => a + c.track.ackCount, 0);

  const rows = await storedMessages(pg);
  const byKey = new Map(rows.map((r) => [`${r.sender}\u0000${r.cid}`, r]));
  const missing = [], wrong = [];
  let acked = 0;
  all.forEach((c) => {
    for (const [cid, list] of c.track.acks) {
      acked++;
      const a = list[0], row = byKey.get(`${c.user}\u0000${cid}`);
      if (!row) missing.push(`${c.user} ${cid} (ack seq ${a.seq}${a.at > killedAt ? '' : ', acked before the kill'})`);
      else if (row.id !== a.id || row.seq !== a.seq) wrong.push(`${cid}: ack ${a.id}/${a.seq}, stored ${row.id}/${row.seq}`);
      if (list.length !== 1) wrong.push(`${cid}: ${list.length} acks`);
    }
  });
  assert(missing.length === 0, `${missing.length} of ${acked} acked messages are not in PostgreSQL: ${missing.slice(0, 8).join(' | ')}`);
  assert(wrong.length === 0, wrong.slice(0, 8).join(' | '));
  // B's sender got every message it sent acked, and B still works.
  eq(onB[0].track.ackCount, senders[3].sent.size, "acks for B's sender");
  eq(senders[3].errors.length, 0, `B's sender errors ${JSON.stringify(senders[3].errors.slice(0, 3))}`);
  assert(B.running, 'parleyd B still runs');
  // Stored seqs are unique per room (a killed instance never leaves a seq taken twice).
  const seen = new Set();
  for (const r of rows) { const k = `${r.room}#${r.seq}`; assert(!seen.has(k), `seq ${k} stored twice`); seen.add(k); }
  console.log(`  (${acked} acked, ${ackedOnA} of them on the killed instance; ${rows.length} rows stored)`);
}, { timeout: 60000 });

test('durable failures: PostgreSQL stopped for 10 s under load: live delivery goes on, acks wait, then everything is stored and acked', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const env = dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 });
  const [A, B] = [await startParleyd({ redis, env }), await startParleyd({ redis, env })];
  const rooms = ['o-0', 'o-1'];
  const senders = [await connectAuthed(A, `os-${process.pid}-0`), await connectAuthed(B, `os-${process.pid}-1`)];
  const receivers = [await connectAuthed(A, `or-${process.pid}-0`), await connectAuthed(B, `or-${process.pid}-1`)];
  const all = [...senders, ...receivers];
  for (const c of all) { track(c); await c.subscribe(rooms); }
  await sleep(200);
  // Paced by time (acks stop during the outage): each sender sends one message
  // every 20 ms while fewer than 100 of its messages are undelivered to itself.
  const sent = senders.map(() => new Map()); // cid -> { room, at }
  let stop = false;
  const loops = senders.map((c, s) => (async () => {
    let i = 0;
    while (!stop) {
      const undelivered = [...sent[s].keys()].length - c.track.mine.size - c.track.errors.length;
      if (undelivered < 100) {
        const cid = `o${s}-${i}`, room = rooms[i % 2];
        sent[s].set(cid, { room, at: Date.now() });
        c.send({ type: 'message', room, text: `o${s} #${i}`, cid });
        i++;
      }
      await sleep(20);
    }
  })());
  let downAt, upAt;
  try {
    await sleep(2000);
    await pg.stop();
    downAt = Date.now();
    await sleep(10000);
    const upBegin = Date.now();
    await pg.start();
    upAt = upBegin;
    await sleep(3000);
  } finally { stop = true; await Promise.all(loops); }
  const total = sent.reduce((a, m) => a + m.size, 0);
  await until(() => senders.every((c, s) => c.track.ackCount >= sent[s].size), 30000,
    `every message acked after PostgreSQL is back (acks ${senders.map((c) => c.track.ackCount).join('/')} of ${sent.map((m) => m.size).join('/')})`);
  await until(() => receivers.every((c) => c.track.msgs.length >= total), 5000, 'receivers have everything');
  await sleep(500);

  for (const c of all) eq(c.track.errors.length, 0, `${c.user}: errors ${JSON.stringify(c.track.errors.slice(0, 3))}`);
  assert(A.running && B.running, `parleyd exited: A ${JSON.stringify(A.exit)} B ${JSON.stringify(B.exit)}`);
  for (const p of [A, B]) eq((await httpRequest(p.port, 'GET', '/health')).status, 200, `${p.name} /health`);
  // Live delivery went on while PostgreSQL was down.
  let duringOutage = 0, slow = [];
  senders.forEach((c, s) => {
    for (const [cid, m] of sent[s]) {
      const live = c.track.mine.get(cid);
      if (m.at >= downAt && m.at < upAt) {
        duringOutage++;
        if (!live) slow.push(`${cid}: not delivered`);
        else if (live[0].at - m.at > 2000) slow.push(`${cid}: delivered after ${live[0].at - m.at} ms`);
      }
    }
  });
  assert(duringOutage >= 300, `only ${duringOutage} messages were sent while PostgreSQL was down`);
  assert(slow.length === 0, `live delivery during the outage: ${slow.length} late: ${slow.slice(0, 5).join(' | ')}`);
  // Acks stopped: nothing sent well into the outage was acked before PostgreSQL was back.
  const early = [];
  let waited = 0;
  senders.forEach((c, s) => {
    for (const [cid, m] of sent[s]) {
      if (m.at < downAt + 1000 || m.at >= upAt) continue;
      waited++;
      const a = c.track.acks.get(cid)[0];
      if (a.at < upAt) early.push(`${cid} sent ${m.at - downAt} ms into the outage, acked ${upAt - a.at} ms before PostgreSQL was started`);
    }
  });
  assert(waited >= 200, `only ${waited} messages sent during the outage`);
  assert(early.length === 0, `acked while PostgreSQL was down: ${early.length}: ${early.slice(0, 3).join(' | ')}`);
  // Everything stored once, acks match, receivers saw each room as 1..n.
  const rows = await storedMessages(pg);
  eq(rows.length, total, 'rows stored');
  const byKey = new Map(rows.map((r) => [`${r.sender}\u0000${r.cid}`, r]));
  senders.forEach((c, s) => {
    for (const cid of sent[s].keys()) {
      const row = byKey.get(`${c.user}\u0000${cid}`), a = c.track.acks.get(cid);
      assert(row, `${cid} not stored`);
      assert(a && a.length === 1, `${cid}: ${a ? a.length : 0} acks`);
      assert(a[0].id === row.id && a[0].seq === row.seq, `${cid}: ack ${a[0].id}/${a[0].seq}, stored ${row.id}/${row.seq}`);
    }
  });
  for (const room of rooms) {
    const n = rows.filter((r) => r.room === room).length;
    for (const c of receivers) { const p = seqProblems(c.track.rooms.get(room), 1, n, `${c.user} ${room}`); assert(p.length === 0, p.join(' | ')); }
  }
  console.log(`  (${total} messages, ${duringOutage} sent during the 10 s outage, all stored and acked)`);
}, { timeout: 90000 });

test('durable failures: PostgreSQL down with PARLEY_DB_QUEUE=50: the overflow is refused with unavailable (cid echoed), never delivered; the rest is stored once it is back', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const A = await startParleyd({ redis, env: dbEnv(pg, { PARLEY_OPEN_ROOMS: 1, PARLEY_DB_QUEUE: 50 }) });
  const room = 'q-room';
  const s = await connectAuthed(A, `qs-${process.pid}`); track(s);
  const r = await connectAuthed(A, `qr-${process.pid}`); track(r);
  await s.subscribe([room]); await r.subscribe([room]);
  await sendAcked(s, room, 5);
  await pg.stop();
  await sleep(500);
  const N = 200;
  for (let i = 0; i < N; i++) {
    s.send({ type: 'message', room, text: `q #${i}`, cid: `q-${i}` });
    if (i % 20 === 19) await sleep(5);
  }
  const answered = () => [...Array(N).keys()].filter((i) => s.track.mine.has(`q-${i}`) || s.track.errors.some((e) => e.cid === `q-${i}`)).length;
  await until(() => answered() === N, 10000, `a message or an error for each of the ${N} (have ${answered()})`);
  await sleep(500);
  const accepted = [], refused = [];
  for (let i = 0; i < N; i++) {
    const cid = `q-${i}`, live = s.track.mine.has(cid), errs = s.track.errors.filter((e) => e.cid === cid);
    assert(!(live && errs.length), `${cid} was both delivered and refused`);
    if (live) accepted.push(cid);
    else { eq(errs.length, 1, `errors for ${cid}`); eq(errs[0].code, 'unavailable', `error code for ${cid}`); refused.push(cid); }
  }
  assert(accepted.length <= 50, `${accepted.length} messages accepted while PostgreSQL was down with PARLEY_DB_QUEUE=50`);
  assert(refused.length >= N - 50, `${refused.length} refused`);
  // Refused ones were not delivered; accepted ones were, in seq order; none acked yet.
  const rseqs = r.track.rooms.get(room);
  const p = seqProblems(rseqs, 1, 5 + accepted.length, `${r.user}`);
  assert(p.length === 0, p.join(' | '));
  const delivered = new Set(rseqs.map((m) => m.cid));
  for (const cid of refused) assert(!delivered.has(cid), `refused ${cid} was delivered`);
  eq(s.track.ackCount, 5, 'acks while PostgreSQL is down');

  await pg.start();
  await until(() => s.track.ackCount >= 5 + accepted.length, 30000, `acks for the ${accepted.length} accepted after PostgreSQL is back (have ${s.track.ackCount - 5})`);
  const rows = await storedMessages(pg, room);
  eq(rows.length, 5 + accepted.length, 'rows stored');
  const storedCids = new Set(rows.map((x) => x.cid));
  for (const cid of accepted) assert(storedCids.has(cid), `accepted ${cid} not stored`);
  for (const cid of refused) assert(!storedCids.has(cid), `refused ${cid} stored`);
  rows.forEach((x, i) => eq(x.seq, i + 1, 'stored seqs are 1..n'));
  // The queue has room again.
  await sendAcked(s, room, 60, { window: 20 });
  assert(A.running, 'parleyd still runs');
  console.log(`  (${accepted.length} accepted, ${refused.length} refused while PostgreSQL was down)`);
}, { timeout: 60000 });

test('durable failures: a message the database refuses gets not_stored with its cid; resent with the same cid it is stored and acked, not delivered twice', async () => {
  const redis = await startRedis();
  const pg = await startPostgres();
  const srv = await startParleyd({ redis, env: dbEnv(pg, { PARLEY_OPEN_ROOMS: 1 }) });
  await pg.query("CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN IF NEW.body = 'poison' THEN RAISE EXCEPTION 'poison refused'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql");
  await pg.query('CREATE TRIGGER refuse_poison BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION refuse_poison()');
  const a = await connectAuthed(srv), b = await connectAuthed(srv);
  track(a); track(b);
  await a.subscribe(['ns']); await b.subscribe(['ns']);
  a.send({ type: 'message', room: 'ns', text: 'poison', cid: 'p1' });
  await until(() => a.track.errors.find((e) => e.cid === 'p1'), 10000, 'an error for p1');
  const err = a.track.errors.find((e) => e.cid === 'p1');
  eq(err.code, 'not_stored', `error code (${JSON.stringify(err)})`);
  await until(() => (b.track.rooms.get('ns') || []).length === 1, 5000, 'the live copy');
  eq((await storedMessages(pg, 'ns')).length, 0, 'rows stored');
  await pg.query('DROP TRIGGER refuse_poison ON messages');
  a.send({ type: 'message', room: 'ns', text: 'poison', cid: 'p1' });
  await until(() => a.track.acks.get('p1'), 10000, 'the ack of the resend');
  const ack = a.track.acks.get('p1')[0];
  eq(ack.seq, b.track.rooms.get('ns')[0].seq, 'the ack names the seq delivered the first time');
  await sleep(1000);
  eq(b.track.rooms.get('ns').length, 1, 'copies delivered to another subscriber');
  const rows = await storedMessages(pg, 'ns');
  eq(rows.length, 1, 'rows stored after the resend');
  eq(rows[0].id, ack.id, 'the stored id is the acked one');
});
