// Integration test runner: imports every *.test.mjs beside it, runs the tests
// one after another, each with a time limit, and prints `PASS <name>` or
// `FAIL <name>: <reason>`. Optional argument / PARLEY_TEST_FILTER: run only
// tests whose name contains that text; PARLEY_TEST_MATCH: only those matching
// that regular expression; PARLEY_TEST_SKIP: not those matching that one. Under
// PARLEY_TEST_TLS=1 every name gets " [tls]", under PARLEY_TEST_SUBSCRIBE=rooms
// " [rooms]", under PARLEY_TEST_REDIS_CLUSTER=1 " [redis cluster]".
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { registry, current, cleanupCurrent, atEnd, PARLEYD } from './lib.mjs';

const dir = path.dirname(fileURLToPath(import.meta.url));
const DEFAULT_TIMEOUT = Number(process.env.PARLEY_TEST_TIMEOUT_MS || 120000);
const filter = process.argv[2] || process.env.PARLEY_TEST_FILTER || '';
const match = process.env.PARLEY_TEST_MATCH ? new RegExp(process.env.PARLEY_TEST_MATCH) : null;
const skip = process.env.PARLEY_TEST_SKIP ? new RegExp(process.env.PARLEY_TEST_SKIP) : null;
const suffix = (process.env.PARLEY_TEST_TLS === '1' ? ' [tls]' : '') +
  (process.env.PARLEY_TEST_SUBSCRIBE ? ` [${process.env.PARLEY_TEST_SUBSCRIBE}]` : '') +
  (process.env.PARLEY_TEST_REDIS_CLUSTER === '1' ? ' [redis cluster]' : '');

const files = fs.readdirSync(dir).filter((f) => f.endsWith('.test.mjs')).sort();
for (const f of files) await import(pathToFileURL(path.join(dir, f)).href);

process.on('unhandledRejection', (e) => { console.log(`  (unhandled rejection: ${e && e.stack || e})`); });

if (!fs.existsSync(PARLEYD)) {
  console.log(`FAIL integration: ${PARLEYD} does not exist (build it with make)`);
  process.exit(1);
}

let passed = 0, failed = 0;
const oneLine = (s) => String(s).replace(/\s*\n\s*/g, ' / ').slice(0, 600);

for (const t of registry) {
  if (filter && !t.name.includes(filter)) continue;
  if (match && !match.test(t.name)) continue;
  if (skip && skip.test(t.name)) continue;
  const limit = t.timeout || DEFAULT_TIMEOUT;
  const t0 = Date.now();
  let timer, err = null;
  try {
    await Promise.race([
      Promise.resolve().then(() => t.fn()),
      new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`time limit of ${limit / 1000} s exceeded`)), limit); }),
    ]);
  } catch (e) {
    err = e || new Error('failed');
  } finally {
    clearTimeout(timer);
  }
  // Clean up every process and client the test started, whatever happened.
  const procs = [...current.procs];
  try { await cleanupCurrent(); } catch {}
  const secs = ((Date.now() - t0) / 1000).toFixed(1);
  if (!err) {
    passed++;
    console.log(`PASS ${t.name}${suffix} (${secs}s)`);
  } else {
    failed++;
    const msg = err && err.message ? err.message : String(err);
    const first = msg.split('\n')[0];
    console.log(`FAIL ${t.name}${suffix}: ${oneLine(first)} (${secs}s)`);
    const restLines = msg.split('\n').slice(1).filter(Boolean);
    if (restLines.length) console.log(restLines.map((l) => '  ' + l).join('\n'));
    for (const p of procs) {
      const tail = p.logTail ? p.logTail(40) : '';
      if (tail && tail.trim()) {
        console.log(`  --- ${p.name} log (last lines) ---`);
        console.log(tail.split('\n').map((l) => '  | ' + l).join('\n'));
      }
      if (p.exit) console.log(`  --- ${p.name} exit: ${JSON.stringify(p.exit)}`);
    }
  }
  if (current.tmp) { if (!err) fs.rmSync(current.tmp, { recursive: true, force: true }); current.tmp = null; }
}

for (const fn of atEnd) { try { await fn(); } catch (e) { console.log(`  (at the end: ${e.message})`); } }
console.log(`integration: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
