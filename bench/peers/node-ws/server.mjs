// A peer for the benchmarks: the chat server people write with Node's `ws`
// and ioredis (one PUBLISH per message, one PSUBSCRIBE room:* connection,
// fan-out to the local sockets of the room), speaking the part of Parley's
// protocol v1 that build/parley-bench uses: HS256 token on the upgrade
// (?token= or Authorization: Bearer), `authenticated`, `subscribe` ->
// `subscribed`, `message` -> {"type":"message",...} to every subscriber of the
// room, the sender included. No storage, seq or dedup: this is the baseline
// the issue names ("Node ws + ioredis"), not a Parley replacement.
//
// PORT, REDIS_URL (redis://host:port/db) and JWT_SECRET from the environment.
import Redis from 'ioredis';
import { WebSocketServer } from 'ws';
import { verifyToken } from '../jwt.mjs';

const port = Number(process.env.PORT || 8090);
const secret = process.env.JWT_SECRET || '';
const redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379/0';

const verify = (token) => verifyToken(token, secret);

const pub = new Redis(redisUrl);
const sub = new Redis(redisUrl);
const rooms = new Map(); // room -> Set of sockets
let nextId = 1;

sub.psubscribe('room:*');
sub.on('pmessageBuffer', (_pattern, channel, message) => {
  const members = rooms.get(channel.toString().slice(5));
  if (!members) return;
  for (const ws of members) ws.send(message, { binary: false });
});

const wss = new WebSocketServer({ host: '127.0.0.1', port, path: '/ws' });
wss.on('connection', (ws, req) => {
  const url = new URL(req.url, 'http://x');
  const auth = req.headers.authorization || '';
  const user = verify(url.searchParams.get('token') || (auth.startsWith('Bearer ') ? auth.slice(7) : ''));
  if (!user) {
    ws.close(4001, 'unauthorized');
    return;
  }
  ws.user = user;
  ws.rooms = new Set();
  ws.send(JSON.stringify({ type: 'authenticated', user }));
  ws.on('message', (data) => {
    let m;
    try {
      m = JSON.parse(data);
    } catch {
      ws.send(JSON.stringify({ type: 'error', code: 'bad_json', message: 'frame is not valid JSON' }));
      return;
    }
    if (m.type === 'subscribe' && Array.isArray(m.rooms)) {
      for (const r of m.rooms) {
        if (typeof r !== 'string') continue;
        if (!rooms.has(r)) rooms.set(r, new Set());
        rooms.get(r).add(ws);
        ws.rooms.add(r);
        ws.send(JSON.stringify({ type: 'subscribed', room: r }));
      }
    } else if (m.type === 'message' && typeof m.room === 'string' && typeof m.text === 'string') {
      if (!ws.rooms.has(m.room)) {
        ws.send(JSON.stringify({ type: 'error', code: 'not_subscribed', message: 'subscribe first' }));
        return;
      }
      const frame = JSON.stringify({
        type: 'message', room: m.room, id: String(nextId++), from: user, text: m.text, ts: Date.now(),
        ...(m.cid ? { cid: m.cid } : {}),
      });
      pub.publish(`room:${m.room}`, frame);
    } else if (m.type === 'ping') {
      ws.send(JSON.stringify({ type: 'pong' }));
    }
  });
  ws.on('close', () => {
    for (const r of ws.rooms) {
      const s = rooms.get(r);
      if (s) {
        s.delete(ws);
        if (!s.size) rooms.delete(r);
      }
    }
  });
});
wss.on('listening', () => console.error(`node-ws peer listening on 127.0.0.1:${port}`));
