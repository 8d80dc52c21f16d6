// Stand-in for `k6/metrics`: custom metrics whose samples go to the main thread, which
// aggregates them and evaluates the thresholds at the end of the run.
import { declare, metric } from '../runtime.mjs';

class Metric {
  constructor(name, type, isTime) {
    if (!/^[A-Za-z0-9_]{1,128}$/.test(String(name))) throw new Error(`invalid metric name ${name}`);
    this.name = name; this.type = type;
    declare(name, type, isTime);
  }
}
export class Counter extends Metric {
  constructor(name) { super(name, 'counter'); }
  add(v, tags) { metric(this.name, 'counter', v, tags); }
}
export class Gauge extends Metric {
  constructor(name, isTime) { super(name, 'gauge', isTime); }
  add(v, tags) { metric(this.name, 'gauge', v, tags); }
}
export class Rate extends Metric {
  constructor(name) { super(name, 'rate'); }
  add(v, tags) { metric(this.name, 'rate', v ? 1 : 0, tags); } // k6: any non-zero value is a pass
}
export class Trend extends Metric {
  constructor(name, isTime) { super(name, 'trend', isTime); }
  add(v, tags) { metric(this.name, 'trend', v, tags); }
}
export default { Counter, Gauge, Rate, Trend };
