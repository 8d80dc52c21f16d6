// The VU side of the k6 stand-in: each virtual user is a worker thread with its own globals
// and module instances, as each k6 VU is its own JavaScript runtime. k6's blocking calls
// (sleep, http.*, ws.connect) block here too: the VU posts a request to the main thread and
// waits on a shared counter (Atomics.wait) until the answer is on its port, which it reads
// with receiveMessageOnPort. The VU never returns to its own event loop mid-iteration.
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';

const sig = new Int32Array(workerData.sab);
const port = workerData.port;
const queue = [];
let seq = 0;

export const vu = workerData.vu;
export const nextId = () => `${vu}:${++seq}`;
export const post = (msg) => parentPort.postMessage(msg);

function pull() {
  for (let m = receiveMessageOnPort(port); m; m = receiveMessageOnPort(port)) queue.push(m.message);
}

// The first message from the main thread matching pred, waiting up to ms; null on time-out.
export function waitFor(pred, ms = Infinity) {
  const deadline = Date.now() + ms;
  for (;;) {
    pull();
    const i = queue.findIndex(pred);
    if (i >= 0) return queue.splice(i, 1)[0];
    const left = deadline - Date.now();
    if (left <= 0) return null;
    const seen = Atomics.load(sig, 0);
    pull(); // the main thread posts, then bumps the counter: nothing slips between
    if (queue.some(pred)) continue;
    Atomics.wait(sig, 0, seen, Math.min(left, 1000));
  }
}

export function sleepMs(ms) {
  if (ms > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

export const metric = (name, type, value, tags) => post({ t: 'metric', name, type, value: Number(value), tags, at: Date.now() });
export const declare = (name, type, isTime) => post({ t: 'declare', name, type, isTime: !!isTime });
