// Type declarations for @parley/client (web/parley.js). Protocol: docs/protocol.md.

export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

/** The subset of the WebSocket API the client uses (browsers' WebSocket and the ws package fit). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onerror: ((ev: any) => void) | null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ReconnectOptions {
  /** ms before the first retry; default 500 */
  initialDelay?: number;
  /** cap on the delay; default 30000 */
  maxDelay?: number;
  /** growth per attempt; default 2 */
  factor?: number;
  /** the delay is scaled by a random factor in [1 - jitter, 1]; default 0.5 */
  jitter?: number;
  /** ms a connection must stay open for the attempt count to reset; default 10000 */
  stableAfter?: number;
}

export interface HeartbeatOptions {
  /** ms of silence from the server before a ping; default 20000 */
  interval?: number;
  /** ms after the ping before the connection is given up; default 10000 */
  timeout?: number;
}

export interface ParleyClientOptions {
  /**
   * ws:// or wss:// URL of /ws (relative URLs resolve against location in browsers); or several,
   * one per instance: each connection attempt takes the next in turn, starting with the first
   */
  url: string | string[];
  /** a static JWT; give this or tokenProvider */
  token?: string;
  /** returns a JWT; called before every (re)connect and shortly before the current token expires */
  tokenProvider?: () => string | Promise<string>;
  /** default globalThis.WebSocket; in Node 20 pass one, e.g. `import WebSocket from 'ws'` */
  WebSocket?: WebSocketConstructor;
  /** default globalThis.fetch */
  fetch?: (input: string, init?: { method?: string; headers?: Record<string, string> }) => Promise<FetchResponseLike>;
  /** base of the HTTP API; default derived from url: ws -> http, wss -> https, same host:port, no path */
  httpUrl?: string;
  reconnect?: ReconnectOptions;
  heartbeat?: HeartbeatOptions;
  /** typing(room) sends typing_start at most once per this many ms per room; default 3000 */
  typingThrottle?: number;
  /** the server's PARLEY_MAX_FRAME; larger sends are refused locally (too_large); default 65536 */
  maxFrame?: number;
  random?: () => number;
  now?: () => number;
  setTimeout?: (fn: () => void, ms: number) => any;
  clearTimeout?: (id: any) => void;
}

export interface FetchResponseLike {
  readonly ok: boolean;
  readonly status: number;
  json(): Promise<any>;
}

export interface AuthenticatedInfo {
  user: string;
  server: string;
  session: string;
}

export interface SubscribedInfo {
  room: string;
  /** the room's seq when subscribed */
  seq: number;
  /** this user's read position */
  read?: number;
  unread?: number;
  /** how many missed messages follow (a subscribe with since) */
  recovered?: number;
  /** more were missed than the server replays: page history() for the rest */
  truncated?: boolean;
}

/** A message frame as the server sends it. Direct messages have `to` and a `dm:` room. */
export interface MessageFrame {
  type: 'message';
  seq: number;
  room: string;
  id: string;
  from: string;
  to?: string;
  text: string;
  ts: number;
  cid?: string;
  [key: string]: unknown;
}

export interface Ack {
  cid: string;
  id: string;
  seq: number;
}

export interface PendingSend {
  cid: string;
  room?: string;
  to?: string;
  text: string;
  /** local time of send() */
  ts: number;
  /** the server delivered it (its copy came back) but has not acknowledged storing it yet */
  delivered?: boolean;
  id?: string;
  seq?: number;
}

export interface StateEvent {
  state: ConnectionState;
  previous: ConnectionState;
  /** reconnect attempts since the last stable connection */
  attempt: number;
  /** 'reconnecting': ms until the next attempt */
  delay?: number;
  /** 'reconnecting': the close code that ended the connection */
  code?: number | string;
  reason?: string;
}

export interface TruncatedEvent {
  room: string;
  /** the room's seq when subscribed */
  seq: number;
  /** the seq the client asked to resume after */
  since: number;
  /** how many of the newest messages are replayed; since+1 .. seq-recovered are only in history() */
  recovered: number;
}

export interface GapEvent {
  room: string;
  /** the last seq delivered before the gap */
  after: number;
  /** the seq just delivered; after+1 .. seq-1 were missed (page history() for them) */
  seq: number;
}

export interface ErrorEvent {
  code: string;
  message: string;
  cid?: string;
  room?: string;
  /** set for errors raised by the client itself rather than sent by the server */
  local?: boolean;
  cause?: unknown;
  [key: string]: unknown;
}

export interface PresenceEvent {
  user: string;
  status: 'online' | 'offline';
  [key: string]: unknown;
}

export interface TypingEvent {
  room: string;
  user: string;
  active: boolean;
}

export interface ReadReceiptEvent {
  room: string;
  user: string;
  seq: number;
  [key: string]: unknown;
}

export interface ServerNoticeEvent {
  code: string;
  message: string;
  [key: string]: unknown;
}

/** The server ended a subscription: the membership was removed ('removed') or the user left
 *  on another device ('left'). The room is forgotten (not resubscribed). */
export interface UnsubscribedEvent {
  room: string;
  reason: string;
}

/** A fresh token was accepted on the open connection. */
export interface ReauthenticatedEvent {
  user: string;
  /** the new token's exp (unix seconds), absent when it has none */
  exp?: number;
}

export interface ParleyEvents {
  state: StateEvent;
  authenticated: AuthenticatedInfo;
  subscribed: SubscribedInfo;
  truncated: TruncatedEvent;
  gap: GapEvent;
  message: MessageFrame;
  ack: Ack;
  presence: PresenceEvent;
  typing: TypingEvent;
  read_receipt: ReadReceiptEvent;
  error: ErrorEvent;
  server_notice: ServerNoticeEvent;
  unsubscribed: UnsubscribedEvent;
  reauthenticated: ReauthenticatedEvent;
  outbox: PendingSend[];
}

export interface HistoryPage {
  room: string;
  /** newest first */
  messages: MessageFrame[];
  has_more: boolean;
  /** present when has_more: pass it as `before` for the next (older) page */
  next_before?: number;
}

export interface MyRooms {
  user: string;
  /** `with`: the other user of a direct conversation */
  rooms: Array<{ room: string; seq: number; read: number; unread: number; with?: string }>;
  /** the server's list was cut at its maximum */
  truncated?: boolean;
}

export interface Members {
  room: string;
  count?: number;
  members: Array<{ user: string; online: boolean }>;
}

/** An error with a machine-readable code (server, HTTP or local). */
export class ParleyError extends Error {
  constructor(code: string, message: string, extra?: Record<string, unknown>);
  code: string;
  /** HTTP status (HTTP calls; 0 when the request did not reach the server) */
  status?: number;
  cid?: string;
  room?: string;
  /** unsubscribe(): the rooms a refusal left subscribed */
  rooms?: string[];
  to?: string;
}

export class ParleyClient {
  constructor(options: ParleyClientOptions);

  readonly state: ConnectionState;
  /** the authenticated user id, null before the first authentication */
  readonly user: string | null;
  /** un-acknowledged sends, oldest first (a fresh copy on every read) */
  readonly pending: PendingSend[];

  connect(): Promise<AuthenticatedInfo>;
  close(): void;

  on<K extends keyof ParleyEvents>(event: K, fn: (payload: ParleyEvents[K]) => void): this;
  once<K extends keyof ParleyEvents>(event: K, fn: (payload: ParleyEvents[K]) => void): this;
  off<K extends keyof ParleyEvents>(event: K, fn: (payload: ParleyEvents[K]) => void): this;

  subscribe(rooms: string | string[]): Promise<SubscribedInfo[]>;
  unsubscribe(rooms: string | string[]): Promise<void>;
  lastSeq(room: string): number;

  send(room: string, text: string, options?: { cid?: string }): Promise<Ack>;
  sendDirect(user: string, text: string, options?: { cid?: string }): Promise<Ack>;
  markRead(room: string, seq: number): void;
  typing(room: string, active?: boolean): void;

  history(room: string, options?: { before?: number; limit?: number }): Promise<HistoryPage>;
  myRooms(): Promise<MyRooms>;
  members(room: string): Promise<Members>;
  leave(room: string): Promise<void>;
}

/** min(maxDelay, initialDelay * factor^attempt) scaled by a random factor in [1 - jitter, 1]. */
export function backoffDelay(attempt: number, options?: ReconnectOptions, random?: () => number): number;

/** A JWT's payload, decoded without verification; null if unreadable. */
export function decodeJwt(token: string): Record<string, unknown> | null;

export default ParleyClient;
