// Switchboard client SDK: the public surface. The modules:
// - client: the Switchboard class (connect, send, close, events);
// - frames: typed frames, their encoder and decoder (SPEC §2);
// - codes: reply and close codes, and what a close means for a client;
// - backoff: reconnect delays (full jitter);
// - errors: SwitchboardError;
// - transport: one connection attempt over the platform's WebSocket.

export { Switchboard } from './client.js';
export type {
  Message,
  Presence,
  Receipt,
  Recovered,
  SendResult,
  State,
  StateChange,
  SwitchboardEvents,
  SwitchboardOptions,
  Target,
} from './client.js';
export { CloseCode, ReplyCode, closeClass, refusalClass } from './codes.js';
export type { CloseClass } from './codes.js';
export { SwitchboardError } from './errors.js';
export type { LocalCode } from './errors.js';
export { FrameError, Mode, decodeClientFrame, decodeServerFrame, encodeClientFrame } from './frames.js';
export type {
  AckFrame,
  BroadcastFrame,
  ClientFrame,
  DeliveryFrame,
  GroupFrame,
  HeartbeatFrame,
  HeartbeatReplyFrame,
  Json,
  PresenceFrame,
  ReceiptFrame,
  ReplyFrame,
  ServerFrame,
  UnicastFrame,
  WelcomeData,
  WelcomeFrame,
} from './frames.js';
export { backoffDelay, retryAfterMs } from './backoff.js';
export type { SocketLike, WebSocketConstructor } from './transport.js';
