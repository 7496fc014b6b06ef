// The frames of SPEC §2 "Frames": typed shapes, the encoder for what a client
// sends and the decoder for what the gateway sends. Checked against the
// golden fixtures in crates/protocol/fixtures/frames, which the Rust protocol
// crate renders and parses with its own code, so the two cannot drift.

/** Any JSON value: what `content` may be. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** The `mode` of every frame kind. */
export const Mode = {
  Welcome: 0,
  Heartbeat: 1,
  Reply: 2,
  Ack: 3,
  Receipt: 4,
  Unicast: 100,
  Group: 200,
  Broadcast: 300,
  Presence: 400,
  Upstream: 500,
} as const;

// ---- client → gateway ----

/** Mode 1: heartbeat; the gateway answers with a mode-1 reply. */
export interface HeartbeatFrame {
  mode: 1;
  msgId: string;
}

/** Mode 3: acknowledges the delivery `msgId` that carried `"ack": true`
 * (delivery receipts); the gateway does not answer it. */
export interface AckFrame {
  mode: 3;
  msgId: string;
}

/** Mode 100: to one client of the same bizCode; with `ack: true` the sender
 * later gets a receipt (mode 4). */
export interface UnicastFrame {
  mode: 100;
  msgId: string;
  targetClientId: string;
  content: Json;
  ack?: true;
}

/** Mode 200: to every other member of a group of the same bizCode. */
export interface GroupFrame {
  mode: 200;
  msgId: string;
  group: string;
  content: Json;
}

/** Mode 300: to every other client of the same bizCode. */
export interface BroadcastFrame {
  mode: 300;
  msgId: string;
  content: Json;
}

/** Mode 500: a message for the backend (an `upstream` connection event);
 * the mode-2 reply comes once it is stored. */
export interface UpstreamFrame {
  mode: 500;
  msgId: string;
  content: Json;
}

/** What a client sends. */
export type ClientFrame = HeartbeatFrame | AckFrame | UnicastFrame | GroupFrame | BroadcastFrame | UpstreamFrame;

// ---- gateway → client ----

/** The welcome's `data`. `epoch`/`seq` only with history on (SPEC §7),
 * `recovered` only when the client asked to recover. */
export interface WelcomeData {
  clientId: string;
  bizCode: string;
  groups: string[];
  node: string;
  heartbeatSec: number;
  epoch?: string;
  seq?: number;
  recovered?: boolean;
}

/** Mode 0: always the first frame of a connection. */
export interface WelcomeFrame {
  mode: 0;
  code: number;
  msg: string;
  data: WelcomeData;
}

/** Mode 1 from the gateway: the heartbeat's reply. */
export interface HeartbeatReplyFrame {
  mode: 1;
  msgId: string | null;
  ts: number;
}

/** Mode 2: the reply to a client send (or to a bad frame). */
export interface ReplyFrame {
  mode: 2;
  msgId: string | null;
  code: number;
  msg: string;
  data: { recipients: number } | null;
}

/** Modes 100/200/300 from the gateway: a delivery. `group` on 200 only;
 * `ack: true` when the sender wants a receipt (answer with mode 3); `seq`
 * with history on. */
export interface DeliveryFrame {
  mode: 100 | 200 | 300;
  msgId: string | null;
  from: string;
  group?: string;
  content: Json;
  ts: number;
  ack?: boolean;
  seq?: number;
}

/** Mode 4: the receipt of a unicast sent with `ack: true`: whether the
 * recipient acknowledged it in time. */
export interface ReceiptFrame {
  mode: 4;
  msgId: string;
  acked: string[];
  unacked: string[];
}

/** Mode 400: a presence notice; `group` is null for bizCode-wide notices. */
export interface PresenceFrame {
  mode: 400;
  event: 'online' | 'offline';
  clientId: string;
  group: string | null;
}

/** What the gateway sends. */
export type ServerFrame = WelcomeFrame | HeartbeatReplyFrame | ReplyFrame | DeliveryFrame | ReceiptFrame | PresenceFrame;

/** A frame that is not what SPEC §2 describes. */
export class FrameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FrameError';
  }
}

/**
 * Encodes a client frame as the gateway's own encoder writes it (fields in
 * the order mode, msgId, target, content), so the text is byte-for-byte the
 * golden fixture's.
 */
export function encodeClientFrame(frame: ClientFrame): string {
  switch (frame.mode) {
    case 1:
      return JSON.stringify({ mode: 1, msgId: frame.msgId });
    case 3:
      return JSON.stringify({ mode: 3, msgId: frame.msgId });
    case 100:
      return JSON.stringify({
        mode: 100,
        msgId: frame.msgId,
        targetClientId: frame.targetClientId,
        content: frame.content,
        ...(frame.ack === true ? { ack: true } : {}),
      });
    case 200:
      return JSON.stringify({ mode: 200, msgId: frame.msgId, group: frame.group, content: frame.content });
    case 300:
      return JSON.stringify({ mode: 300, msgId: frame.msgId, content: frame.content });
    case 500:
      return JSON.stringify({ mode: 500, msgId: frame.msgId, content: frame.content });
  }
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function field<T>(o: Obj, key: string, what: string, ok: (v: unknown) => v is T): T {
  const v = o[key];
  if (!ok(v)) throw new FrameError(`mode ${String(o.mode)}: ${key} must be ${what}`);
  return v;
}

function optional<T>(o: Obj, key: string, what: string, ok: (v: unknown) => v is T): T | undefined {
  return o[key] === undefined ? undefined : field(o, key, what, ok);
}

const isStr = (v: unknown): v is string => typeof v === 'string';
const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v);
const isBool = (v: unknown): v is boolean => typeof v === 'boolean';
const isStrOrNull = (v: unknown): v is string | null => v === null || typeof v === 'string';
const isStrList = (v: unknown): v is string[] => Array.isArray(v) && v.every(isStr);
const isPresent = (v: unknown): v is Json => v !== undefined;
const isEvent = (v: unknown): v is 'online' | 'offline' => v === 'online' || v === 'offline';

function parseObject(text: string): Obj {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new FrameError('frame is not valid JSON');
  }
  if (!isObj(v)) throw new FrameError('frame is not a JSON object');
  return v;
}

/** Sets `key` on `out` only when `value` is defined (exact optional fields). */
function put<T extends object, K extends keyof T>(out: T, key: K, value: T[K] | undefined): void {
  if (value !== undefined) out[key] = value;
}

/**
 * Decodes a text frame from the gateway. Unknown fields are ignored (SPEC
 * §2); the result holds only the fields of its kind.
 *
 * @throws {FrameError} if the text is not JSON, not an object, of an unknown
 * mode, or misses or mistypes a field.
 */
export function decodeServerFrame(text: string): ServerFrame {
  const o = parseObject(text);
  switch (o.mode) {
    case 0: {
      field(o, 'code', 'an integer', isInt);
      const d = field(o, 'data', 'an object', isObj);
      const data: WelcomeData = {
        clientId: field(d, 'clientId', 'a string', isStr),
        bizCode: field(d, 'bizCode', 'a string', isStr),
        groups: field(d, 'groups', 'a list of strings', isStrList),
        node: field(d, 'node', 'a string', isStr),
        heartbeatSec: field(d, 'heartbeatSec', 'an integer', isInt),
      };
      put(data, 'epoch', optional(d, 'epoch', 'a string', isStr));
      put(data, 'seq', optional(d, 'seq', 'an integer', isInt));
      put(data, 'recovered', optional(d, 'recovered', 'a boolean', isBool));
      return { mode: 0, code: o.code as number, msg: field(o, 'msg', 'a string', isStr), data };
    }
    case 1:
      return { mode: 1, msgId: field(o, 'msgId', 'a string or null', isStrOrNull), ts: field(o, 'ts', 'an integer', isInt) };
    case 2: {
      const data = o.data;
      let parsed: { recipients: number } | null = null;
      if (data !== null && data !== undefined) {
        if (!isObj(data)) throw new FrameError('mode 2: data must be an object or null');
        parsed = { recipients: field(data, 'recipients', 'an integer', isInt) };
      }
      return {
        mode: 2,
        msgId: field(o, 'msgId', 'a string or null', isStrOrNull),
        code: field(o, 'code', 'an integer', isInt),
        msg: field(o, 'msg', 'a string', isStr),
        data: parsed,
      };
    }
    case 100:
    case 200:
    case 300: {
      const out: DeliveryFrame = {
        mode: o.mode,
        msgId: field(o, 'msgId', 'a string or null', isStrOrNull),
        from: field(o, 'from', 'a string', isStr),
        content: field(o, 'content', 'present', isPresent),
        ts: field(o, 'ts', 'an integer', isInt),
      };
      if (o.mode === 200) out.group = field(o, 'group', 'a string', isStr);
      put(out, 'ack', optional(o, 'ack', 'a boolean', isBool));
      put(out, 'seq', optional(o, 'seq', 'an integer', isInt));
      return out;
    }
    case 4:
      return {
        mode: 4,
        msgId: field(o, 'msgId', 'a string', isStr),
        acked: field(o, 'acked', 'a list of strings', isStrList),
        unacked: field(o, 'unacked', 'a list of strings', isStrList),
      };
    case 400:
      return {
        mode: 400,
        event: field(o, 'event', '"online" or "offline"', isEvent),
        clientId: field(o, 'clientId', 'a string', isStr),
        group: o.group === undefined ? null : field(o, 'group', 'a string or null', isStrOrNull),
      };
    default:
      throw new FrameError(`unknown mode ${JSON.stringify(o.mode)}`);
  }
}

/**
 * Decodes a client frame (what {@link encodeClientFrame} writes); for tools
 * and tests that read what a client sent. `msgId` may be a number, kept as
 * its text, as the gateway does.
 *
 * @throws {FrameError} as the gateway would refuse it (its code 1001/1002).
 */
export function decodeClientFrame(text: string): ClientFrame {
  const o = parseObject(text);
  const raw = o.msgId;
  const msgId = typeof raw === 'number' ? String(raw) : field(o, 'msgId', 'a string or a number', isStr);
  switch (o.mode) {
    case 1:
      return { mode: 1, msgId };
    case 3:
      return { mode: 3, msgId };
    case 100: {
      const out: UnicastFrame = {
        mode: 100,
        msgId,
        targetClientId: field(o, 'targetClientId', 'a string', isStr),
        content: field(o, 'content', 'present', isPresent),
      };
      if (optional(o, 'ack', 'a boolean', isBool) === true) out.ack = true;
      return out;
    }
    case 200:
      return { mode: 200, msgId, group: field(o, 'group', 'a string', isStr), content: field(o, 'content', 'present', isPresent) };
    case 300:
      return { mode: 300, msgId, content: field(o, 'content', 'present', isPresent) };
    case 500:
      return { mode: 500, msgId, content: field(o, 'content', 'present', isPresent) };
    default:
      throw new FrameError(`unknown mode ${JSON.stringify(o.mode)}`);
  }
}
