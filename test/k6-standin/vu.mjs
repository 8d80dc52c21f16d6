// One virtual user (a worker thread): evaluates the script's init code, then runs setup,
// iterations or teardown as the main thread says (bin/k6.mjs).
import { workerData } from 'node:worker_threads';
import { post, waitFor } from './runtime.mjs';

globalThis.__VU = workerData.vu;
globalThis.__ITER = 0;
globalThis.__ENV = Object.freeze({ ...workerData.env });

const describe = (e) => (e && e.stack ? e.stack : String(e));
let mod;
try {
  mod = await import(workerData.scriptUrl);
} catch (e) {
  post({ t: 'init-error', error: describe(e) });
  await new Promise(() => {}); // the main thread ends the run
}
// Options as k6 would see them: plain data.
post({ t: 'ready', options: JSON.parse(JSON.stringify(mod.options || {})), hasSetup: typeof mod.setup === 'function', hasTeardown: typeof mod.teardown === 'function' });

for (;;) {
  const cmd = waitFor((m) => m.t === 'setup' || m.t === 'teardown' || m.t === 'go' || m.t === 'stop');
  if (cmd.t === 'stop') break;
  if (cmd.t === 'setup' || cmd.t === 'teardown') {
    try {
      const data = mod[cmd.t](cmd.data);
      post({ t: `${cmd.t}-done`, data: data === undefined ? null : JSON.parse(JSON.stringify(data)) });
    } catch (e) {
      post({ t: `${cmd.t}-done`, error: describe(e) });
    }
    continue;
  }
  const t0 = Date.now();
  let error = null;
  globalThis.__ITER = cmd.iter;
  try { (mod[cmd.fn] || mod.default)(cmd.data); } catch (e) { error = describe(e); }
  post({ t: 'iter-done', error, ms: Date.now() - t0 });
}
post({ t: 'stopped' });
