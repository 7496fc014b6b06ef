// Switchboard client SDK, built from clients/js/src by `npm run build`: do not edit.

// build/lib/backoff.js
function backoffDelay(failures, baseMs, capMs, random = Math.random) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(Math.max(failures, 0), 30));
  return Math.floor(random() * ceiling);
}
function retryAfterMs(header, now = Date.now()) {
  if (header === void 0)
    return void 0;
  const text = header.trim();
  if (/^\d+$/.test(text))
    return Number(text) * 1e3;
  const at = Date.parse(text);
  return Number.isNaN(at) ? void 0 : Math.max(0, at - now);
}

// build/lib/codes.js
var ReplyCode = {
  Ok: 0,
  InvalidFrame: 1001,
  UnknownMode: 1002,
  TooLarge: 1003,
  Offline: 1004,
  RateLimited: 1005,
  Forbidden: 1006,
  UnknownBiz: 1007,
  Internal: 1500
};
var CloseCode = {
  Normal: 1e3,
  GoingAway: 1001,
  ProtocolError: 1002,
  Abnormal: 1006,
  InvalidPayload: 1007,
  Policy: 1008,
  TooBig: 1009,
  Draining: 1012,
  TryAgainLater: 1013,
  ClosedByApi: 4e3,
  TokenExpired: 4001,
  SlowConsumer: 4008,
  Replaced: 4009
};
function closeClass(code) {
  switch (code) {
    case 4001:
      return "token";
    case 1e3:
    case 1002:
    case 1003:
    case 1007:
    case 1008:
    case 1009:
    case 1010:
    case 4e3:
    case 4009:
      return "terminal";
    default:
      return "reconnect";
  }
}
function refusalClass(status) {
  switch (status) {
    case 401:
      return "token";
    case 400:
    case 403:
    case 404:
    case 426:
      return "terminal";
    default:
      return "reconnect";
  }
}

// build/lib/emitter.js
var Emitter = class {
  constructor() {
    this.listeners = /* @__PURE__ */ new Map();
  }
  /** Adds a listener; returns a function that removes it. */
  on(event, listener) {
    let set = this.listeners.get(event);
    if (set === void 0) {
      set = /* @__PURE__ */ new Set();
      this.listeners.set(event, set);
    }
    set.add(listener);
    return () => this.off(event, listener);
  }
  /** Adds a listener called once. */
  once(event, listener) {
    const off = this.on(event, (value) => {
      off();
      listener(value);
    });
    return off;
  }
  /** Removes a listener. */
  off(event, listener) {
    this.listeners.get(event)?.delete(listener);
  }
  /** Calls every listener in order. A listener that throws does not stop the
   * others nor the client: its error is rethrown on a later tick, where the
   * runtime reports it. */
  emit(event, value) {
    const set = this.listeners.get(event);
    if (set === void 0)
      return;
    for (const listener of [...set]) {
      try {
        listener(value);
      } catch (e) {
        setTimeout(() => {
          throw e;
        }, 0);
      }
    }
  }
};

// build/lib/errors.js
var SwitchboardError = class extends Error {
  constructor(code, message, msgId = null, status) {
    super(message);
    this.name = "SwitchboardError";
    this.code = code;
    this.msgId = msgId;
    this.status = status;
  }
};

// build/lib/frames.js
var Mode = {
  Welcome: 0,
  Heartbeat: 1,
  Reply: 2,
  Ack: 3,
  Receipt: 4,
  Unicast: 100,
  Group: 200,
  Broadcast: 300,
  Presence: 400,
  Upstream: 500
};
var FrameError = class extends Error {
  constructor(message) {
    super(message);
    this.name = "FrameError";
  }
};
function encodeClientFrame(frame) {
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
        ...frame.ack === true ? { ack: true } : {}
      });
    case 200:
      return JSON.stringify({ mode: 200, msgId: frame.msgId, group: frame.group, content: frame.content });
    case 300:
      return JSON.stringify({ mode: 300, msgId: frame.msgId, content: frame.content });
    case 500:
      return JSON.stringify({ mode: 500, msgId: frame.msgId, content: frame.content });
  }
}
function isObj(v) {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
function field(o, key, what, ok) {
  const v = o[key];
  if (!ok(v))
    throw new FrameError(`mode ${String(o.mode)}: ${key} must be ${what}`);
  return v;
}
function optional(o, key, what, ok) {
  return o[key] === void 0 ? void 0 : field(o, key, what, ok);
}
var isStr = (v) => typeof v === "string";
var isInt = (v) => typeof v === "number" && Number.isSafeInteger(v);
var isBool = (v) => typeof v === "boolean";
var isStrOrNull = (v) => v === null || typeof v === "string";
var isStrList = (v) => Array.isArray(v) && v.every(isStr);
var isPresent = (v) => v !== void 0;
var isEvent = (v) => v === "online" || v === "offline";
function parseObject(text) {
  let v;
  try {
    v = JSON.parse(text);
  } catch {
    throw new FrameError("frame is not valid JSON");
  }
  if (!isObj(v))
    throw new FrameError("frame is not a JSON object");
  return v;
}
function put(out, key, value) {
  if (value !== void 0)
    out[key] = value;
}
function decodeServerFrame(text) {
  const o = parseObject(text);
  switch (o.mode) {
    case 0: {
      field(o, "code", "an integer", isInt);
      const d = field(o, "data", "an object", isObj);
      const data = {
        clientId: field(d, "clientId", "a string", isStr),
        bizCode: field(d, "bizCode", "a string", isStr),
        groups: field(d, "groups", "a list of strings", isStrList),
        node: field(d, "node", "a string", isStr),
        heartbeatSec: field(d, "heartbeatSec", "an integer", isInt)
      };
      put(data, "epoch", optional(d, "epoch", "a string", isStr));
      put(data, "seq", optional(d, "seq", "an integer", isInt));
      put(data, "recovered", optional(d, "recovered", "a boolean", isBool));
      return { mode: 0, code: o.code, msg: field(o, "msg", "a string", isStr), data };
    }
    case 1:
      return { mode: 1, msgId: field(o, "msgId", "a string or null", isStrOrNull), ts: field(o, "ts", "an integer", isInt) };
    case 2: {
      const data = o.data;
      let parsed = null;
      if (data !== null && data !== void 0) {
        if (!isObj(data))
          throw new FrameError("mode 2: data must be an object or null");
        parsed = { recipients: field(data, "recipients", "an integer", isInt) };
      }
      return {
        mode: 2,
        msgId: field(o, "msgId", "a string or null", isStrOrNull),
        code: field(o, "code", "an integer", isInt),
        msg: field(o, "msg", "a string", isStr),
        data: parsed
      };
    }
    case 100:
    case 200:
    case 300: {
      const out = {
        mode: o.mode,
        msgId: field(o, "msgId", "a string or null", isStrOrNull),
        from: field(o, "from", "a string", isStr),
        content: field(o, "content", "present", isPresent),
        ts: field(o, "ts", "an integer", isInt)
      };
      if (o.mode === 200)
        out.group = field(o, "group", "a string", isStr);
      put(out, "ack", optional(o, "ack", "a boolean", isBool));
      put(out, "seq", optional(o, "seq", "an integer", isInt));
      return out;
    }
    case 4:
      return {
        mode: 4,
        msgId: field(o, "msgId", "a string", isStr),
        acked: field(o, "acked", "a list of strings", isStrList),
        unacked: field(o, "unacked", "a list of strings", isStrList)
      };
    case 400:
      return {
        mode: 400,
        event: field(o, "event", '"online" or "offline"', isEvent),
        clientId: field(o, "clientId", "a string", isStr),
        group: o.group === void 0 ? null : field(o, "group", "a string or null", isStrOrNull)
      };
    default:
      throw new FrameError(`unknown mode ${JSON.stringify(o.mode)}`);
  }
}
function decodeClientFrame(text) {
  const o = parseObject(text);
  const raw = o.msgId;
  const msgId = typeof raw === "number" ? String(raw) : field(o, "msgId", "a string or a number", isStr);
  switch (o.mode) {
    case 1:
      return { mode: 1, msgId };
    case 3:
      return { mode: 3, msgId };
    case 100: {
      const out = {
        mode: 100,
        msgId,
        targetClientId: field(o, "targetClientId", "a string", isStr),
        content: field(o, "content", "present", isPresent)
      };
      if (optional(o, "ack", "a boolean", isBool) === true)
        out.ack = true;
      return out;
    }
    case 200:
      return { mode: 200, msgId, group: field(o, "group", "a string", isStr), content: field(o, "content", "present", isPresent) };
    case 300:
      return { mode: 300, msgId, content: field(o, "content", "present", isPresent) };
    case 500:
      return { mode: 500, msgId, content: field(o, "content", "present", isPresent) };
    default:
      throw new FrameError(`unknown mode ${JSON.stringify(o.mode)}`);
  }
}

// build/lib/transport.js
var cached;
function platformWebSocket() {
  if (cached === void 0) {
    cached = load();
    cached.catch(() => {
      cached = void 0;
    });
  }
  return cached;
}
async function load() {
  const global = globalThis.WebSocket;
  if (typeof global === "function")
    return global;
  const name = "ws";
  try {
    const mod = await import(name);
    const ctor = mod.WebSocket ?? mod.default;
    if (typeof ctor === "function")
      return ctor;
  } catch {
  }
  throw new Error("no WebSocket: this runtime has no global WebSocket; install the `ws` package (npm i ws)");
}
var MAX_REFUSAL_BODY = 4096;
var Attempt = class {
  /** @throws whatever the WebSocket constructor throws (a `SyntaxError` for
   * a url it does not take). */
  constructor(ctor, url, handlers) {
    this.live = true;
    this.opened = false;
    this.socket = new ctor(url);
    const s = this.socket;
    this.showsRefusals = typeof s.on === "function";
    s.onopen = () => {
      if (this.live)
        this.opened = true;
    };
    s.onmessage = (ev) => {
      if (this.live && typeof ev.data === "string")
        handlers.message(ev.data);
    };
    s.onclose = (ev) => {
      if (!this.live)
        return;
      this.live = false;
      handlers.close(ev.code, ev.reason, this.opened);
    };
    s.onerror = () => {
    };
    if (typeof s.on === "function") {
      s.on("unexpected-response", ((req, res) => {
        const socket = req.socket;
        readRefusal(res, (refusal) => {
          req.destroy();
          socket?.destroy();
          if (!this.live)
            return;
          this.live = false;
          handlers.refused(refusal);
        });
      }));
    }
  }
  /** Writes a text frame. */
  send(text) {
    this.socket.send(text);
  }
  /** Ends the attempt: its handlers hear nothing more. With `code`, a close
   * handshake is started; without, the connection is dropped (where the
   * platform allows; a browser always closes with 1000). */
  abandon(code, reason) {
    this.live = false;
    const s = this.socket;
    try {
      if (code === void 0 && typeof s.terminate === "function")
        s.terminate();
      else
        s.close(code ?? 1e3, reason);
    } catch {
    }
  }
};
function readRefusal(res, done) {
  let body = "";
  let finished = false;
  const finish = () => {
    if (finished)
      return;
    finished = true;
    const status = res.statusCode ?? 0;
    let msg = `HTTP ${status} ${res.statusMessage ?? ""}`.trim();
    try {
      const parsed = JSON.parse(body);
      if (typeof parsed === "object" && parsed !== null && typeof parsed.msg === "string") {
        msg = parsed.msg;
      }
    } catch {
    }
    const ra = res.headers["retry-after"];
    done({ status, retryAfter: Array.isArray(ra) ? ra[0] : ra, msg });
  };
  res.on("data", (chunk) => {
    if (body.length < MAX_REFUSAL_BODY)
      body += chunk.toString();
  });
  res.on("end", finish);
  res.on("error", finish);
  res.on("close", finish);
}

// build/lib/client.js
function monotonicNow() {
  return typeof performance !== "undefined" ? performance.now() : Date.now();
}
var DEFAULTS = {
  recover: true,
  heartbeatTimeoutMs: 1e4,
  connectTimeoutMs: 1e4,
  stableAfterMs: 1e4,
  sendTimeoutMs: 15e3,
  queueLimit: 100,
  backoffBaseMs: 1e3,
  backoffCapMs: 3e4,
  maxFrameBytes: 65536,
  autoAck: false,
  receiptTimeoutMs: 35e3
};
var Switchboard = class extends Emitter {
  constructor(options) {
    super();
    this.currentState = "idle";
    this.welcomedOnce = false;
    this.failures = 0;
    this.attemptsSinceWelcome = 0;
    this.needToken = true;
    this.sends = /* @__PURE__ */ new Map();
    this.receipts = /* @__PURE__ */ new Map();
    this.queue = [];
    this.nextId = 0;
    this.idPrefix = Math.random().toString(36).slice(2, 10);
    this.generation = 0;
    this.waiters = [];
    if (typeof options.url !== "string" || options.url === "")
      throw new TypeError("url is required");
    if (typeof options.bizCode !== "string" || options.bizCode === "")
      throw new TypeError("bizCode is required");
    const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== void 0));
    this.opts = { ...DEFAULTS, ...given };
    this.id = options.clientId;
    this.token = options.token;
  }
  /** The connection's state. */
  get state() {
    return this.currentState;
  }
  /** The clientId: the chosen one, or the gateway's after the first welcome. */
  get clientId() {
    return this.id;
  }
  /** The current (or last) welcome's data: node, groups, heartbeatSec, … */
  get welcome() {
    return this.welcomeData;
  }
  /** The last processed log position (`epoch`, `seq`), if history is on. */
  get logPosition() {
    return this.position === void 0 ? void 0 : { ...this.position };
  }
  /**
   * Connects (and from then on stays connected until {@link close} or a
   * terminal close). Resolves with the first welcome's data; rejects when
   * the client ends closed before one, with a {@link SwitchboardError} whose
   * `code` is the close code (1006 for a refused handshake, a bad `url`, …)
   * and `status` the refusal's HTTP status where the platform shows it.
   */
  connect() {
    const p = new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
    if (this.currentState === "connected" && this.welcomeData !== void 0) {
      this.settleWaiters(this.welcomeData);
    } else if (this.currentState === "idle" || this.currentState === "closed") {
      this.failures = 0;
      this.attemptsSinceWelcome = 0;
      this.launchAttempt();
    }
    return p;
  }
  /** Closes with 1000 and stops reconnecting. Sends waiting for a reply or in
   * the queue reject with `closed`. */
  close() {
    if (this.currentState === "closed" || this.currentState === "idle")
      return;
    this.attempt?.abandon(1e3, "closed by the client");
    this.finish(1e3, "closed by the client", void 0);
  }
  /**
   * Sends `content` to `target`; resolves with the reply's `recipients`, or
   * rejects with a {@link SwitchboardError} whose `code` is the reply's
   * (1004 target offline, 1005 rate limited, …) or a local one. With
   * `ack: true` (a unicast only) the recipient is asked to acknowledge it,
   * and the result's `receipt` settles with the receipt (also emitted as a
   * `receipt` event).
   */
  send(target, content, options = {}) {
    const msgId = options.msgId ?? this.newMsgId();
    if (content === void 0)
      return Promise.reject(new TypeError("content is required"));
    const ack = options.ack === true;
    if (ack && !("clientId" in target))
      return Promise.reject(new TypeError("ack is for sends to one client only"));
    if (ack && this.receipts.has(msgId)) {
      return Promise.reject(new TypeError(`msgId ${msgId} is already waiting for its receipt`));
    }
    let frame;
    if ("clientId" in target) {
      frame = { mode: 100, msgId, targetClientId: target.clientId, content };
      if (ack)
        frame.ack = true;
    } else if ("group" in target)
      frame = { mode: 200, msgId, group: target.group, content };
    else
      frame = { mode: 300, msgId, content };
    return this.request(frame, ack);
  }
  /**
   * Sends `content` to the backend (mode 500): an `upstream` connection
   * event of this client. Resolves with `{msgId}` once the gateway stored
   * it; rejects like {@link send} (1005 rate limited, 1006 upstream
   * messages off, 1500 not stored, …).
   */
  upstream(content, options = {}) {
    const msgId = options.msgId ?? this.newMsgId();
    if (content === void 0)
      return Promise.reject(new TypeError("content is required"));
    return this.request({ mode: 500, msgId, content }).then((r) => ({ msgId: r.msgId }));
  }
  /** Writes `frame` (or queues it while reconnecting) and waits for its
   * mode-2 reply; with `ack`, the result also carries the receipt. */
  request(frame, ack = false) {
    const msgId = frame.msgId;
    const text = encodeClientFrame(frame);
    const bytes = new TextEncoder().encode(text).length;
    if (bytes > this.opts.maxFrameBytes) {
      return Promise.reject(new SwitchboardError(1003, `frame of ${bytes} bytes over the size limit (${this.opts.maxFrameBytes})`, msgId));
    }
    return new Promise((resolve, reject) => {
      const state = this.currentState;
      if (state === "idle" || state === "closed") {
        reject(new SwitchboardError("closed", "the client is not connected", msgId));
        return;
      }
      if (this.sends.has(msgId)) {
        reject(new TypeError(`msgId ${msgId} is already waiting for its reply`));
        return;
      }
      if (state !== "connected" && this.queue.length >= this.opts.queueLimit) {
        reject(new SwitchboardError("queue_full", `${this.queue.length} sends already wait for a connection`, msgId));
        return;
      }
      const receipt = ack ? this.expectReceipt(msgId) : void 0;
      const pending = {
        msgId,
        text,
        resolve: (r) => resolve(receipt === void 0 ? r : { ...r, receipt }),
        reject: (e) => {
          if (receipt !== void 0)
            this.settleReceipt(msgId, e);
          reject(e);
        },
        written: false,
        timer: setTimeout(() => this.failSend(pending, "timeout", "no reply in time"), this.opts.sendTimeoutMs)
      };
      this.sends.set(msgId, pending);
      if (state === "connected")
        this.write(pending);
      else
        this.queue.push(pending);
    });
  }
  // ---- connection lifecycle ----
  setState(change) {
    this.currentState = change.state;
    this.emit("state", change);
  }
  /** Starts an attempt; whatever goes wrong in it ends it, never as an
   * unhandled rejection. */
  launchAttempt() {
    this.startAttempt().catch((e) => {
      this.finish(1006, `internal error: ${errorText(e)}`, void 0);
    });
  }
  async startAttempt() {
    const gen = ++this.generation;
    this.attemptsSinceWelcome += 1;
    this.setState({ state: "connecting", attempt: this.attemptsSinceWelcome });
    const bad = badUrl(this.opts.url);
    if (bad !== void 0) {
      this.finish(1006, bad, void 0);
      return;
    }
    this.connectTimer = setTimeout(() => {
      if (gen !== this.generation)
        return;
      const waitingForToken = this.attempt === void 0 && this.opts.getToken !== void 0;
      this.attempt?.abandon();
      this.connectionLost(1006, waitingForToken ? "connect timeout: getToken did not answer in time" : "connect timeout: no welcome in time", void 0, false);
    }, this.opts.connectTimeoutMs);
    let ctor;
    try {
      ctor = this.opts.WebSocket ?? await platformWebSocket();
    } catch (e) {
      if (gen === this.generation)
        this.finish(1006, errorText(e), void 0);
      return;
    }
    if (gen !== this.generation)
      return;
    if (this.opts.getToken !== void 0 && this.needToken) {
      try {
        const t = await this.opts.getToken();
        if (gen !== this.generation)
          return;
        this.token = t;
        this.needToken = false;
      } catch (e) {
        if (gen !== this.generation)
          return;
        clearTimeout(this.connectTimer);
        this.retry("reconnect", 1006, `getToken failed: ${errorText(e)}`, void 0, void 0, false);
        return;
      }
    }
    if (gen !== this.generation)
      return;
    try {
      this.attempt = new Attempt(ctor, this.url(), {
        message: (text) => this.onFrame(gen, text),
        close: (code, reason, opened) => this.onClose(gen, code, reason, opened),
        refused: (r) => this.onRefused(gen, r)
      });
    } catch (e) {
      if (e?.name === "SyntaxError") {
        this.finish(1006, `invalid url: ${errorText(e)}`, void 0);
      } else {
        this.connectionLost(1006, `WebSocket failed: ${errorText(e)}`, void 0, false);
      }
    }
  }
  url() {
    const u = new URL(this.opts.url);
    const q = u.searchParams;
    q.set("bizCode", this.opts.bizCode);
    if (this.id !== void 0)
      q.set("clientId", this.id);
    if (this.opts.groups !== void 0 && this.opts.groups.length > 0)
      q.set("group", this.opts.groups.join(","));
    if (this.token !== void 0)
      q.set("token", this.token);
    if (this.opts.recover && this.position !== void 0) {
      q.set("recover", String(this.position.seq));
      q.set("epoch", this.position.epoch);
    }
    return u.toString();
  }
  onFrame(gen, text) {
    if (gen !== this.generation)
      return;
    this.unansweredSince = void 0;
    let frame;
    try {
      frame = decodeServerFrame(text);
    } catch {
      return;
    }
    if (this.welcomeData === void 0 || this.currentState !== "connected") {
      if (frame.mode === 0)
        this.onWelcome(gen, frame.data);
      return;
    }
    switch (frame.mode) {
      case 2: {
        const pending = frame.msgId === null ? void 0 : this.sends.get(frame.msgId);
        if (pending === void 0 || !pending.written)
          return;
        this.forget(pending);
        if (frame.code === 0)
          pending.resolve({ msgId: pending.msgId, recipients: frame.data?.recipients ?? 0 });
        else
          pending.reject(new SwitchboardError(frame.code, frame.msg, pending.msgId));
        return;
      }
      case 4: {
        const r = { msgId: frame.msgId, acked: frame.acked, unacked: frame.unacked };
        this.settleReceipt(frame.msgId, r);
        this.emit("receipt", r);
        return;
      }
      case 100:
      case 200:
      case 300: {
        const m = { mode: frame.mode, msgId: frame.msgId, from: frame.from, content: frame.content, ts: frame.ts };
        if (frame.group !== void 0)
          m.group = frame.group;
        if (frame.seq !== void 0)
          m.seq = frame.seq;
        const ackId = frame.ack === true ? frame.msgId : null;
        if (ackId !== null) {
          let acked = false;
          m.ack = () => {
            if (acked || gen !== this.generation)
              return;
            acked = true;
            this.sendFrame({ mode: 3, msgId: ackId });
          };
        }
        this.emit("message", m);
        if (this.opts.autoAck)
          m.ack?.();
        if (frame.seq !== void 0 && this.position !== void 0 && frame.seq > this.position.seq) {
          this.position.seq = frame.seq;
        }
        return;
      }
      case 400:
        this.emit("presence", { event: frame.event, clientId: frame.clientId, group: frame.group });
        return;
      default:
        return;
    }
  }
  onWelcome(gen, data) {
    clearTimeout(this.connectTimer);
    const reconnect = this.welcomedOnce;
    const asked = this.opts.recover && this.position !== void 0;
    this.welcomedOnce = true;
    this.attemptsSinceWelcome = 0;
    this.connectedAt = monotonicNow();
    this.welcomeData = data;
    this.id = data.clientId;
    const recovered = asked && data.recovered === true;
    this.position = data.epoch !== void 0 && data.seq !== void 0 ? { epoch: data.epoch, seq: data.seq } : void 0;
    this.startHeartbeats(gen, data.heartbeatSec);
    this.setState({ state: "connected", welcome: data });
    if (reconnect) {
      const r = { recovered };
      if (data.epoch !== void 0)
        r.epoch = data.epoch;
      if (data.seq !== void 0)
        r.seq = data.seq;
      this.emit("recovered", r);
    }
    if (gen !== this.generation)
      return;
    for (const pending of this.queue.splice(0))
      this.write(pending);
    this.settleWaiters(data);
  }
  onClose(gen, code, reason, opened) {
    if (gen !== this.generation)
      return;
    const hidden = !opened && this.attempt?.showsRefusals !== true;
    this.connectionLost(code, reason, void 0, hidden);
  }
  onRefused(gen, r) {
    if (gen !== this.generation)
      return;
    this.connectionLost(1006, r.msg, r, false);
  }
  /** The connection (or attempt) ended: reconnect or stop, by its class.
   * `hiddenRefusal`: it failed before the upgrade where a refusal's status
   * cannot be seen. */
  connectionLost(code, reason, refusal, hiddenRefusal) {
    const stable = this.connectedAt !== void 0 && monotonicNow() - this.connectedAt >= this.opts.stableAfterMs;
    if (stable)
      this.failures = 0;
    this.connectedAt = void 0;
    this.stopConnectionTimers();
    this.attempt = void 0;
    for (const pending of [...this.sends.values()]) {
      if (pending.written)
        this.failSend(pending, "connection_lost", "the connection ended before the reply");
    }
    for (const msgId of [...this.receipts.keys()]) {
      if (this.sends.get(msgId)?.written === false)
        continue;
      this.settleReceipt(msgId, new SwitchboardError("connection_lost", "the connection ended before the receipt", msgId));
    }
    let cls = refusal !== void 0 ? refusalClass(refusal.status) : closeClass(code);
    if (hiddenRefusal && this.opts.getToken !== void 0)
      this.needToken = true;
    if (cls === "token" && this.opts.getToken === void 0)
      cls = "terminal";
    if (cls === "terminal") {
      this.finish(code, reason, refusal?.status);
      return;
    }
    if (cls === "token")
      this.needToken = true;
    this.retry(cls, code, reason, refusal?.status, refusal?.retryAfter, stable);
  }
  /** Schedules the next attempt. `stable`: the connection that ended was
   * (a 4001 then reconnects at once). */
  retry(cls, code, reason, status, retryAfter, stable) {
    const atOnce = cls === "token" && status === void 0 && stable;
    let delay = atOnce ? 0 : backoffDelay(this.failures, this.opts.backoffBaseMs, this.opts.backoffCapMs);
    delay += retryAfterMs(retryAfter) ?? 0;
    if (!atOnce)
      this.failures += 1;
    const gen = ++this.generation;
    const change = { state: "reconnecting", code, reason, delayMs: delay };
    if (status !== void 0)
      change.status = status;
    this.setState(change);
    this.retryTimer = setTimeout(() => {
      if (gen === this.generation)
        this.launchAttempt();
    }, delay);
  }
  /** Ends for good: state `closed`, every send rejected. */
  finish(code, reason, status) {
    this.generation += 1;
    this.stopConnectionTimers();
    clearTimeout(this.retryTimer);
    this.attempt = void 0;
    this.connectedAt = void 0;
    for (const pending of [...this.sends.values()])
      this.failSend(pending, "closed", `the client closed: ${code} ${reason}`);
    for (const msgId of [...this.receipts.keys()]) {
      this.settleReceipt(msgId, new SwitchboardError("closed", `the client closed: ${code} ${reason}`, msgId));
    }
    const change = { state: "closed", code, reason };
    if (status !== void 0)
      change.status = status;
    this.setState(change);
    const waiters = this.waiters.splice(0);
    for (const w of waiters) {
      w.reject(new SwitchboardError(code, `closed before connecting: ${code} ${reason}`, null, status));
    }
  }
  settleWaiters(data) {
    for (const w of this.waiters.splice(0))
      w.resolve(data);
  }
  // ---- heartbeats ----
  /** Every `heartbeatSec` a heartbeat; the connection is dead when no frame
   * at all came within `heartbeatTimeoutMs` of the oldest heartbeat sent
   * since the last frame: found at most interval + timeout after it died,
   * whatever the two are. Checked at each heartbeat and by a timer. */
  startHeartbeats(gen, heartbeatSec) {
    const everyMs = Math.max(1, heartbeatSec) * 1e3;
    this.unansweredSince = void 0;
    this.heartbeatTimer = setInterval(() => {
      if (gen !== this.generation || this.attempt === void 0)
        return;
      if (this.checkDead(gen))
        return;
      this.unansweredSince ?? (this.unansweredSince = monotonicNow());
      try {
        this.attempt.send(encodeClientFrame({ mode: 1, msgId: this.newMsgId() }));
      } catch {
      }
      this.armDeadTimer(gen);
    }, everyMs);
  }
  /** A timer for the dead check, due when the oldest unanswered heartbeat
   * times out (re-armed if a later one is then the oldest). */
  armDeadTimer(gen) {
    if (this.deadTimer !== void 0 || this.unansweredSince === void 0)
      return;
    const due = Math.max(0, this.unansweredSince + this.opts.heartbeatTimeoutMs - monotonicNow());
    this.deadTimer = setTimeout(() => {
      this.deadTimer = void 0;
      if (gen !== this.generation)
        return;
      if (!this.checkDead(gen))
        this.armDeadTimer(gen);
    }, Math.ceil(due));
  }
  /** Ends the connection if it is dead (see startHeartbeats); whether it did. */
  checkDead(gen) {
    if (gen !== this.generation || this.unansweredSince === void 0)
      return false;
    const silentMs = monotonicNow() - this.unansweredSince;
    if (silentMs < this.opts.heartbeatTimeoutMs)
      return false;
    this.attempt?.abandon();
    this.connectionLost(1006, `heartbeat timeout: no frame for ${Math.round(silentMs)} ms`, void 0, false);
    return true;
  }
  stopConnectionTimers() {
    clearTimeout(this.connectTimer);
    clearInterval(this.heartbeatTimer);
    clearTimeout(this.deadTimer);
    this.deadTimer = void 0;
    this.unansweredSince = void 0;
  }
  // ---- sends ----
  newMsgId() {
    this.nextId += 1;
    return `${this.idPrefix}-${this.nextId}`;
  }
  /** A receipt promise for `msgId`, settled by its mode-4 frame, the
   * receipt timeout, or the end of the client or connection. */
  expectReceipt(msgId) {
    let settle;
    const promise = new Promise((resolve, reject) => {
      settle = { resolve, reject };
    });
    promise.catch(() => {
    });
    const timer = setTimeout(() => this.settleReceipt(msgId, new SwitchboardError("timeout", "no receipt in time", msgId)), this.opts.receiptTimeoutMs);
    if (settle !== void 0)
      this.receipts.set(msgId, { ...settle, timer });
    return promise;
  }
  settleReceipt(msgId, outcome) {
    const entry = this.receipts.get(msgId);
    if (entry === void 0)
      return;
    this.receipts.delete(msgId);
    clearTimeout(entry.timer);
    if (outcome instanceof SwitchboardError)
      entry.reject(outcome);
    else
      entry.resolve(outcome);
  }
  /** Writes a frame that expects no reply (an ack) on the current
   * connection, if there is one. */
  sendFrame(frame) {
    if (this.currentState !== "connected")
      return;
    try {
      this.attempt?.send(encodeClientFrame(frame));
    } catch {
    }
  }
  write(pending) {
    pending.written = true;
    try {
      this.attempt?.send(pending.text);
    } catch {
    }
  }
  forget(pending) {
    clearTimeout(pending.timer);
    this.sends.delete(pending.msgId);
    const i = this.queue.indexOf(pending);
    if (i >= 0)
      this.queue.splice(i, 1);
  }
  failSend(pending, code, why) {
    this.forget(pending);
    pending.reject(new SwitchboardError(code, why, pending.msgId));
  }
};
function badUrl(url) {
  try {
    new URL(url);
    return void 0;
  } catch (e) {
    return `invalid url ${JSON.stringify(url.slice(0, 100))}: ${errorText(e)}`;
  }
}
function errorText(e) {
  return e instanceof Error ? e.message : String(e);
}
export {
  CloseCode,
  FrameError,
  Mode,
  ReplyCode,
  Switchboard,
  SwitchboardError,
  backoffDelay,
  closeClass,
  decodeClientFrame,
  decodeServerFrame,
  encodeClientFrame,
  refusalClass,
  retryAfterMs
};
