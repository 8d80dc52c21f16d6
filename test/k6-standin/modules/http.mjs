// Stand-in for `k6/http`: blocking requests, done by the main thread with fetch(). Records
// http_reqs, http_req_duration and http_req_failed (a status outside 200-399, or no answer).
import { metric, nextId, post, waitFor } from '../runtime.mjs';

class Response {
  constructor(r) { Object.assign(this, r); this.timings = { duration: r.duration }; }
  // k6 takes a GJSON path; the stand-in a dotted one (a.b.0.c).
  json(selector) {
    const v = JSON.parse(this.body);
    if (!selector) return v;
    return String(selector).split('.').reduce((o, k) => (o == null ? undefined : o[k]), v);
  }
}

export function request(method, url, body = null, params = {}) {
  const id = nextId();
  const headers = { ...(params.headers || {}) };
  post({ t: 'http', id, method, url: String(url), headers, body: body == null ? null : (typeof body === 'string' ? body : JSON.stringify(body)), timeout: params.timeout });
  const m = waitFor((x) => x.t === 'http-res' && x.id === id);
  const r = new Response(m.res);
  metric('http_reqs', 'counter', 1);
  metric('http_req_duration', 'trend', r.duration);
  metric('http_req_failed', 'rate', r.status >= 200 && r.status < 400 ? 0 : 1);
  if (r.error) console.warn(`WARN Request Failed error="${r.error}"`);
  return r;
}
export const get = (url, params) => request('GET', url, null, params);
export const post_ = (url, body, params) => request('POST', url, body, params);
export const put = (url, body, params) => request('PUT', url, body, params);
export const del = (url, body, params) => request('DELETE', url, body, params);
export { post_ as post };
export default { request, get, post: post_, put, del };
