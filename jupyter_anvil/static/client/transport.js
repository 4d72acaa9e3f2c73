// How calls reach the server: one WebSocket per AnvilServer (opened on the first call,
// reopened with backoff and jitter when it drops, replaced once this origin's cookies
// change), with Media in 64 KiB binary chunks, and plain HTTP POSTs (Media inline as
// base64) for the "http" transport and while the socket is not open. Each connection
// presents the window's session in a HELLO (HTTP: the X-Anvil-Session header) and never
// in a URL. The AnvilServer (server.js) picks the transport for each call; this module
// sends it and settles it.

import {bytesToBase64, base64ToBytes, decodeMessage, isDataMedia, newId} from "./codec.js";
import {
  AnvilError, AppOfflineError, connectionLost, invalidResponse, SESSION_EXPIRED, sessionExpiredError,
} from "./errors.js";
import {
  adoptToken, cookieGeneration, cookiesChanged, isCurrent, markExpired, sessionNow, storeCookies,
} from "./session.js";

const CHUNK_SIZE = 65536; // the most bytes in one Media chunk (protocol §10.2)
const CONNECT_TIMEOUT_MS = 5000; // a socket not open by then counts as failed
const RETRY_FIRST_MS = 250;
const RETRY_MAX_MS = 30000;
const COOKIES_HEADER = "X-Anvil-Cookies"; // "changed" on an HTTP reply whose call changed cookies
const KEY_HEADER = "Idempotency-Key"; // a queued call's key: the server runs it at most once
const GATEWAY_DOWN = [502, 503, 504]; // a proxy in front of a server that is not there

/** The WebSocket of one AnvilServer and the calls in flight on it. The `owner` gives
 * the app's URLs (`_appUrl(rest)`), the window's session (`_session()`) and the
 * transport mode (`_mode`), and is the origin of the values the socket decodes. */
export class SocketTransport {
  constructor(owner) {
    this._owner = owner;
    this._ws = null; // the open socket, if any
    this._opening = null; // {ws, promise} while a socket is connecting
    this._retryTimer = null;
    this._retryDelay = RETRY_FIRST_MS;
    this._wanted = true; // false after disconnect(): no reconnecting until the next call
    this._pending = new Map(); // call id -> in-flight call on a socket
    this._chunkHeader = null; // the CHUNK_HEADER whose binary frame comes next
    // socket -> {presented, hellos, answered}: the window's session (see sessionNow) it
    // presented last, the HELLOs not answered yet, and the one the server runs it on now
    this._socketSessions = new WeakMap();
    this._socketCookies = new WeakMap(); // socket -> the cookieGeneration it has seen
    this._retiring = new Set(); // replaced sockets, closed once their calls are answered
    // The browser went offline: a socket that still looks open would swallow calls until
    // TCP gives up, so it goes now, and its calls reject with AppOfflineError.
    owner._onlineState.onBrowserOffline(() => this._dropForOffline());
  }

  _dropForOffline() {
    const sockets = [this._ws, this._opening?.ws, ...this._retiring].filter(Boolean);
    if (sockets.length === 0) return;
    for (const [id, call] of this._pending) {
      this._pending.delete(id);
      call.reject(new AppOfflineError("The app went offline while the call was in flight"));
    }
    this._ws = null;
    this._opening = null;
    this._retiring.clear();
    for (const ws of sockets) ws.close(1000);
    // No reconnecting while offline: the next call opens a socket again.
  }

  /** The open socket, if any. */
  get socket() {
    return this._ws;
  }

  /** Replaced sockets still answering the calls sent on them. */
  get retiring() {
    return this._retiring;
  }

  /** True while the socket is open. */
  get connected() {
    return this._ws !== null && this._ws.readyState === WebSocket.OPEN;
  }

  /** Close the WebSocket. Calls in flight on it are rejected; the next call opens it again. */
  disconnect() {
    this._wanted = false;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    for (const ws of [this._ws, this._opening?.ws]) if (ws) ws.close(1000);
    this._ws = null;
    this._opening = null;
  }

  /** The open socket for a call, opening it if need be; null when the call should go
   * over HTTP (or, in "websocket" mode, fail). */
  async socketForCall() {
    if (this._owner._mode === "http") return null;
    if (this.connected && this._socketCookies.get(this._ws) !== cookieGeneration) this._retire(this._ws);
    if (this.connected) return this._ws;
    if (this._opening) return this._opening.promise;
    // Known to be offline: HTTP fails (or, back online, succeeds) at once, where a socket
    // would take its connect timeout to fail.
    if (this._owner._mode === "auto" && !this._owner._onlineState.online) return null;
    // Between retries, auto mode uses HTTP rather than making the caller wait.
    if (this._retryTimer !== null && this._owner._mode === "auto") return null;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    return this._open();
  }

  _open() {
    this._wanted = true;
    const url = this._owner._appUrl("_/ws");
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    let ws;
    try {
      ws = new WebSocket(url);
    } catch {
      this._scheduleReconnect();
      return Promise.resolve(null);
    }
    ws.binaryType = "arraybuffer";
    const promise = new Promise((resolve) => {
      const timer = setTimeout(() => ws.close(), CONNECT_TIMEOUT_MS);
      ws.onopen = () => {
        clearTimeout(timer);
        if (this._opening?.ws !== ws) { // disconnect() was called while it connected
          ws.close(1000);
          resolve(null);
          return;
        }
        this._opening = null;
        this._ws = ws;
        this._retryDelay = RETRY_FIRST_MS;
        this._socketSessions.set(ws, {presented: undefined, hellos: [], answered: undefined});
        this._socketCookies.set(ws, cookieGeneration);
        this._hello(ws); // always the first message on a connection
        this._owner._onlineState.set(true);
        resolve(ws);
      };
      ws.onclose = () => {
        clearTimeout(timer);
        // Only the socket we were using (or opening) going away calls for a reconnect;
        // one we replaced or closed on purpose does not.
        const current = this._ws === ws || this._opening?.ws === ws;
        // A socket that never opened: offline, or only the socket refused? Ask.
        if (this._opening?.ws === ws) this._owner._onlineState.check(true);
        if (this._opening?.ws === ws) this._opening = null;
        if (this._ws === ws) this._ws = null;
        resolve(null); // no-op if it had opened
        this._socketClosed(ws, current);
      };
      ws.onmessage = (event) => this._receive(ws, event.data);
    });
    this._opening = {ws, promise};
    return promise;
  }

  /** Stop sending calls on `ws` (its cookies are out of date); close it once the calls
   * already sent on it are answered. The next call opens a fresh socket. */
  _retire(ws) {
    if (this._ws === ws) this._ws = null;
    this._retiring.add(ws);
    this._closeIfDone(ws);
  }

  _closeIfDone(ws) {
    if (!ws || !this._retiring.has(ws)) return;
    for (const call of this._pending.values()) if (call.socket === ws) return;
    this._retiring.delete(ws);
    ws.close(1000);
  }

  _socketClosed(ws, current) {
    this._retiring.delete(ws);
    for (const [id, call] of this._pending) {
      if (call.socket === ws) {
        this._pending.delete(id);
        call.reject(connectionLost());
      }
    }
    if (current && this._wanted && this._owner._mode !== "http") this._scheduleReconnect();
  }

  _scheduleReconnect() {
    if (this._retryTimer !== null) return;
    // Jitter keeps many pages from reconnecting in lockstep after a server restart.
    const delay = this._retryDelay * (0.75 + Math.random() / 2);
    this._retryDelay = Math.min(this._retryDelay * 2, RETRY_MAX_MS);
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (this._wanted && !this._ws && !this._opening) this._open();
    }, delay);
  }

  /** Present this window's session on `ws`. The server answers with a SESSION message;
   * calls may follow at once (the server takes them after the HELLO). */
  _hello(ws) {
    const sent = sessionNow(this._owner._session());
    const socketSession = this._socketSessions.get(ws);
    socketSession.presented = sent;
    socketSession.hellos.push(sent);
    ws.send(JSON.stringify({type: "HELLO", session: sent.token, client: "browser"}));
  }

  _onSession(ws, message) {
    const socketSession = this._socketSessions.get(ws);
    if (!socketSession) return;
    if (typeof message.call === "string") { // not an answer: a call stored the session
      this._onStored(socketSession, message.session);
      return;
    }
    if (socketSession.hellos.length === 0) return;
    const sent = socketSession.hellos.shift();
    socketSession.answered = sent;
    const state = this._owner._session();
    if (message.error) {
      markExpired(state, sent, sessionExpiredError(message.error));
    } else if (typeof message.session === "string" && message.session) {
      if (socketSession.hellos.length === 0) socketSession.presented = {token: message.session, epoch: sent.epoch};
      adoptToken(state, sent, message.session);
    }
    // "session": null without an error: a fresh session, whose token comes once a call
    // stores it (see _onStored)
  }

  /** A call on the socket stored its fresh session: keep the token, as from a HELLO's
   * answer. The server says so only while the socket still runs on that session, so it
   * is the session of the last HELLO answered on it. */
  _onStored(socketSession, token) {
    const sent = socketSession.answered;
    if (sent === undefined || typeof token !== "string" || !token) return;
    socketSession.answered = {token, epoch: sent.epoch};
    if (socketSession.hellos.length === 0) socketSession.presented = socketSession.answered;
    adoptToken(this._owner._session(), sent, token);
  }

  /** Send a call on `ws` (open); resolves to its decoded return value. */
  call(ws, name, json, objects, media, bytes) {
    const id = newId("c");
    // After resetSession() (or a token got over HTTP, or by another socket) the socket
    // re-presents the window's session, so the window stays one session on every transport.
    if (!isCurrent(this._owner._session(), this._socketSessions.get(ws).presented)) this._hello(ws);
    const sent = this._socketSessions.get(ws).presented;
    return new Promise((resolve, reject) => {
      this._pending.set(id, {socket: ws, sent, resolve, reject, reply: null, media: new Map()});
      ws.send(JSON.stringify({type: "CALL", id, command: name, ...json, objects}));
      // Each header is followed at once by its binary frame: send() only queues, so no
      // other message can come between them.
      media.forEach((m, i) => {
        const data = bytes[i];
        let index = 0;
        for (let start = 0; start === 0 || start < data.length; start += CHUNK_SIZE) {
          const chunk = data.subarray(start, start + CHUNK_SIZE);
          const lastChunk = start + CHUNK_SIZE >= data.length;
          ws.send(JSON.stringify({type: "CHUNK_HEADER", requestId: id, mediaId: m.id, chunkIndex: index++, lastChunk}));
          ws.send(chunk);
        }
      });
    });
  }

  _receive(ws, data) {
    if (typeof data !== "string") { // binary: the bytes for the last CHUNK_HEADER
      const header = this._chunkHeader;
      this._chunkHeader = null;
      const call = header && this._pending.get(header.requestId);
      if (!call || call.socket !== ws) return;
      const entry = call.media.get(header.mediaId) ?? {parts: [], done: false, error: null};
      entry.parts.push(data);
      entry.done = entry.done || header.lastChunk === true;
      call.media.set(header.mediaId, entry);
      this._maybeFinish(header.requestId);
      return;
    }
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      console.warn("anvil: ignoring a message that is not JSON", data);
      return;
    }
    if (message.type === "CHUNK_HEADER") {
      this._chunkHeader = message;
    } else if (message.type === "SESSION") {
      this._onSession(ws, message);
    } else if (message.type === "MEDIA_ERROR") {
      const call = this._pending.get(message.requestId);
      if (!call) return;
      this._pending.delete(message.requestId);
      this._closeIfDone(call.socket);
      const cause = message.cause ?? {};
      call.reject(new AnvilError(cause.type, cause.message ?? "Error during media transfer", cause));
    } else if (message.id !== undefined && ("response" in message || "error" in message)) {
      const call = this._pending.get(message.id);
      if (!call) return;
      call.reply = message;
      this._maybeFinish(message.id);
    } else if ("output" in message) {
      console.info(`Anvil server output: ${String(message.output).replace(/\n$/, "")}`);
    }
  }

  /** Settle a socket call once its reply and all the reply's media have arrived. */
  _maybeFinish(id) {
    const call = this._pending.get(id);
    const reply = call?.reply;
    if (!reply) return;
    const failed = reply.error !== undefined && reply.error !== null;
    if (!failed) {
      const mediaIds = (reply.objects ?? []).filter(isDataMedia).map((d) => d.id);
      if (!mediaIds.every((mid) => call.media.get(mid)?.done)) return;
    }
    this._pending.delete(id);
    this._closeIfDone(call.socket);
    let settle;
    if (failed) {
      const error = new AnvilError(reply.error.type, reply.error.message, reply.error);
      if (error.type === SESSION_EXPIRED) markExpired(this._owner._session(), call.sent, error);
      settle = () => call.reject(error);
    } else {
      try {
        const value = decodeMessage(reply, (d) => call.media.get(d.id).parts, this._owner).response;
        settle = () => call.resolve(value);
      } catch (error) {
        settle = () => call.reject(invalidResponse(error.message));
      }
    }
    // The call changed cookies: store them in the browser before the caller goes on
    // (say, by reloading the page).
    if (typeof reply.cookies === "string" && reply.cookies) {
      storeCookies(() => this._owner._appUrl("_/cookies"), reply.cookies).then(() => {
        // Only now may other sockets reconnect: their handshake must carry the new
        // cookies. This socket has the new values already (unless it missed others).
        const before = cookieGeneration;
        const generation = cookiesChanged();
        if (this._socketCookies.get(call.socket) === before) this._socketCookies.set(call.socket, generation);
        settle();
      });
    } else {
      settle();
    }
  }
}

/** Send a call of `owner` (an AnvilServer) as an HTTP POST; resolves to its decoded
 * return value. */
export async function callOverHttp(owner, name, json, objects, media, bytes) {
  const {reply} = await postCall(owner, name, json, objects, media, bytes);
  return decodeHttpReply(reply, owner);
}

/** The return value in an HTTP call's reply (Media inline as base64). */
export function decodeHttpReply(reply, owner) {
  try {
    return decodeMessage(reply, (d) => {
      if (typeof d.base64 !== "string") throw new Error(`Media ${d.id} has no bytes`);
      return [base64ToBytes(d.base64)];
    }, owner).response;
  } catch (error) {
    throw invalidResponse(error.message);
  }
}

// HTTP calls in flight, aborted when the browser goes offline (they would hang until TCP
// gives up): owner -> Set of AbortControllers
const inFlight = new WeakMap();

function abortOnOffline(owner, controller) {
  let set = inFlight.get(owner);
  if (!set) {
    set = new Set();
    inFlight.set(owner, set);
    owner._onlineState.onBrowserOffline(() => { for (const c of set) c.abort(); });
  }
  set.add(controller);
  return () => set.delete(controller);
}

/** POST a call; resolves to {reply, response} with the reply's JSON as received (values
 * not decoded), or rejects with an AnvilError (AppOfflineError when the server cannot be
 * reached). Options: `sent` ({token, epoch}: the session to present; default the
 * window's) and `key` (an idempotency key). */
export async function postCall(owner, name, json, objects, media, bytes, {sent, key} = {}) {
  // No binary frames over HTTP: Media bytes ride inline as base64.
  media.forEach((m, i) => { m.descriptor.base64 = bytesToBase64(bytes[i]); });
  const state = owner._session();
  sent = sent ?? sessionNow(state);
  const headers = {"Content-Type": "application/json", "X-Anvil-Client": "browser"};
  if (sent.token !== null) headers["X-Anvil-Session"] = sent.token;
  if (key) headers[KEY_HEADER] = key;
  const controller = new AbortController();
  const forget = abortOnOffline(owner, controller);
  let response;
  try {
    response = await fetch(owner._appUrl(`_/call/${encodeURIComponent(name)}`), {
      method: "POST",
      headers,
      body: JSON.stringify({...json, objects}),
      credentials: "same-origin", // cookies go with the call, to this origin only
      signal: controller.signal,
    });
  } catch (error) {
    throw await owner._onlineState.failedFetch(error);
  } finally {
    forget();
    media.forEach((m) => { delete m.descriptor.base64; });
  }
  const given = response.headers.get("X-Anvil-Session");
  if (given) adoptToken(state, sent, given);
  // The browser stored this call's Set-Cookie headers already; sockets opened before
  // (this page's and other tabs') carry the old cookies, so they are replaced.
  if (response.headers.get(COOKIES_HEADER) === "changed") cookiesChanged();
  let reply;
  try {
    reply = await response.json();
  } catch {
    if (GATEWAY_DOWN.includes(response.status)) {
      owner._onlineState.set(false);
      throw new AppOfflineError(`The app is offline: HTTP ${response.status} ${response.statusText}`);
    }
    throw invalidResponse(`HTTP ${response.status} ${response.statusText}`);
  }
  owner._onlineState.set(true);
  if (reply?.error) {
    const error = new AnvilError(reply.error.type, reply.error.message, reply.error);
    // the server did not run this keyed call, for a cause that may pass: send it again later
    const retryAfter = Number(response.headers.get("Retry-After"));
    if (key && retryAfter > 0) error.retryAfter = retryAfter;
    if (error.type === SESSION_EXPIRED) markExpired(state, sent, error);
    throw error;
  }
  if (!response.ok || reply === null || typeof reply !== "object" || !("response" in reply)) {
    throw invalidResponse(`HTTP ${response.status}`);
  }
  return {reply, response};
}
