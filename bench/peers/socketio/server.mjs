// A peer for the benchmarks: Socket.IO with its Redis adapter, the way its
// documentation sets it up for several nodes (io.to(room).emit through
// @socket.io/redis-adapter), WebSocket transport only. Events, as
// build/parley-bench --proto socketio speaks them: the token in the handshake
// query (HS256, verified in a middleware), "subscribe" [rooms] -> "m"
// {type:"subscribed",room}, "message" {room,text,cid} -> "m" {type:"message",...}
// to the room, the sender included. No storage, seq or dedup.
//
// PORT, REDIS_URL and JWT_SECRET from the environment.
import http from 'node:http';
import { createAdapter } from '@socket.io/redis-adapter';
import Redis from 'ioredis';
import { Server } from 'socket.io';
import { verifyToken } from '../jwt.mjs';

const port = Number(process.env.PORT || 8091);
const secret = process.env.JWT_SECRET || '';
const redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379/0';

const verify = (token) => verifyToken(token, secret);

const pubClient = new Redis(redisUrl);
const subClient = pubClient.duplicate();
const server = http.createServer();
const io = new Server(server, { transports: ['websocket'], adapter: createAdapter(pubClient, subClient) });
let nextId = 1;

io.use((socket, next) => {
  const user = verify(socket.handshake.query.token || socket.handshake.auth?.token);
  if (!user) return next(new Error('unauthorized'));
  socket.data.user = user;
  next();
});

io.on('connection', (socket) => {
  socket.on('subscribe', (rooms) => {
    if (!Array.isArray(rooms)) return;
    for (const r of rooms) {
      if (typeof r !== 'string') continue;
      socket.join(r);
      socket.emit('m', { type: 'subscribed', room: r });
    }
  });
  socket.on('message', (m) => {
    if (!m || typeof m.room !== 'string' || typeof m.text !== 'string') return;
    if (!socket.rooms.has(m.room)) {
      socket.emit('m', { type: 'error', code: 'not_subscribed', message: 'subscribe first' });
      return;
    }
    io.to(m.room).emit('m', {
      type: 'message', room: m.room, id: String(nextId++), from: socket.data.user, text: m.text,
      ts: Date.now(), ...(m.cid ? { cid: m.cid } : {}),
    });
  });
});

server.listen(port, '127.0.0.1', () => console.error(`socket.io peer listening on 127.0.0.1:${port}`));
