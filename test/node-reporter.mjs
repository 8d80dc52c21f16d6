// A reporter for `node --test` that prints what test/run counts: one line per test,
// `PASS <file>: <name>` or `FAIL <file>: <name>: <why>` (suites, describe(), are not counted).
import path from 'node:path';

export default async function* reporter(source) {
  for await (const ev of source) {
    if (ev.type !== 'test:pass' && ev.type !== 'test:fail') continue;
    const d = ev.data;
    if (d.details && d.details.type === 'suite') continue;
    const where = d.file ? `${path.basename(d.file, '.test.mjs')}: ` : '';
    if (ev.type === 'test:pass') {
      yield `PASS ${where}${d.name}${d.skip ? ' (skipped)' : ''}\n`;
    } else {
      const err = d.details && d.details.error;
      const why = String((err && (err.cause || err).message) || err || 'failed').split('\n')[0];
      yield `FAIL ${where}${d.name}: ${why}\n`;
    }
  }
}
