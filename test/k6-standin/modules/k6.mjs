// Stand-in for the `k6` module: check, sleep, group, fail.
import { metric, sleepMs } from '../runtime.mjs';

// Each condition adds one sample to the `checks` rate; true when all pass. An exception in a
// condition propagates, as in k6.
export function check(val, sets, tags = {}) {
  let all = true;
  for (const [name, fn] of Object.entries(sets)) {
    const ok = typeof fn === 'function' ? !!fn(val) : !!fn;
    metric('checks', 'rate', ok ? 1 : 0, { ...tags, check: name });
    all = all && ok;
  }
  return all;
}

export function sleep(seconds) { sleepMs(Number(seconds) * 1000); }

// k6 tags the samples taken inside with the group; the stand-in only runs the function.
export function group(name, fn) { return fn(); }

export function fail(msg = '') { throw new Error(msg); }

export default { check, sleep, group, fail };
