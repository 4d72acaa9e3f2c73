// AnvilServer: the server functions of one app, as pages use them (call, configure,
// connect, the session API), and `server`, the one for the page's own app. It picks the
// transport for each call and leaves the sending to transport.js, the values to
// codec.js and the window's session to session.js.
//
// Served at {base_url}anvil/client/server.js: every other URL is worked out from
// import.meta.url, never from "/", as the server may live under a prefix (JupyterHub, a
// proxy).

import {encodeCall} from "./codec.js";
import {AnvilError, AppOfflineError, connectionLost, TASK_ERROR} from "./errors.js";
import {enableOffline, OnlineState} from "./offline.js";
import {CallQueue} from "./queue.js";
import {sessionFor, startNewSession} from "./session.js";
import {LocalStore} from "./store.js";
import {callOverHttp, SocketTransport} from "./transport.js";

const ANVIL_BASE = new URL("..", import.meta.url); // {base}anvil/

function appFromLocation() {
  // Pages are served at {base}anvil/apps/<app>/...; use the first segment.
  // (An app named by a nested path, e.g. "team/shop", must call configure({app}).)
  const apps = new URL("apps/", ANVIL_BASE).href;
  const here = globalThis.location?.href ?? "";
  if (!here.startsWith(apps)) return null;
  const segment = here.slice(apps.length).split(/[/?#]/)[0];
  return segment ? decodeURIComponent(segment) : null;
}

/** The server functions of one app. `server` (exported below) is the one for the page's
 * own app; make another with `new AnvilServer({app: "other"})`. */
export class AnvilServer {
  constructor(options = {}) {
    this._app = null;
    this._mode = "auto"; // "auto" | "websocket" | "http"
    this._onlineState = new OnlineState(this);
    this._sockets = new SocketTransport(this);
    this._queues = new Map(); // app URL -> CallQueue
    this._lastTransport = null;
    /** How many calls went over each transport (handy in tests and debugging). */
    this.stats = {websocket: 0, http: 0};
    this.configure(options);
  }

  /** Options: `app` (app name; default from the page URL), `transport`
   * ("auto": WebSocket with HTTP fallback, the default; "websocket"; "http"). */
  configure({app, transport} = {}) {
    if (app !== undefined && app !== this._app) {
      this._app = app;
      this.disconnect(); // the socket belonged to the old app
    }
    if (transport !== undefined) {
      if (!["auto", "websocket", "http"].includes(transport)) throw new TypeError(`unknown transport ${transport}`);
      this._mode = transport;
      if (transport === "http") this.disconnect();
    }
    return this;
  }

  get app() {
    const app = this._app ?? appFromLocation();
    if (!app) throw new AnvilError("anvil.server.RuntimeUnavailableError", "No app: call server.configure({app: \"name\"})");
    return app;
  }

  /** "websocket" or "http": how the most recent call was sent (null before any). */
  get transport() {
    return this._lastTransport;
  }

  /** True while the WebSocket is open. */
  get connected() {
    return this._sockets.connected;
  }

  /** The open WebSocket (for tests and debugging; closing it looks like a dropped
   * connection, so the client reconnects). */
  get _socket() {
    return this._sockets.socket;
  }

  /** Replaced sockets, closed once the calls sent on them are answered (for tests). */
  get _retiring() {
    return this._sockets.retiring;
  }

  _appUrl(rest) {
    const app = this.app.split("/").map(encodeURIComponent).join("/");
    return new URL(`apps/${app}/${rest}`, ANVIL_BASE);
  }

  _session() {
    return sessionFor(`anvil-session:${this._appUrl("").href}`);
  }

  /** This window's session token for the app (null before the server gave one). */
  get sessionToken() {
    return this._session().token;
  }

  /** True after the server said this window's session expired, until resetSession(). */
  get sessionExpired() {
    return this._session().expired;
  }

  /** Forget this window's session and start a new, empty one (Anvil's reset_session).
   * Calls made from now on run in the new session; calls already sent finish in the old. */
  resetSession() {
    startNewSession(this._session());
    // An open socket says HELLO again before its next call (see SocketTransport.call).
  }

  /** Call `callback(error)` when the server says this window's session has expired
   * (once per expiry). By default nothing happens beyond the call rejecting with an
   * AnvilError of type "anvil.server.SessionExpiredError". Returns a function that
   * removes the callback. */
  onSessionExpired(callback) {
    if (typeof callback !== "function") throw new TypeError("onSessionExpired needs a function");
    const {listeners} = this._session();
    listeners.add(callback);
    return () => listeners.delete(callback);
  }

  /** Call server function `name`. A final `kwargs({...})` argument gives keyword
   * arguments. Resolves to the return value; rejects with an AnvilError. */
  async call(name, ...args) {
    if (typeof name !== "string" || !name) throw new TypeError("server.call needs a function name");
    const {json, objects, media} = encodeCall(args);
    const bytes = await Promise.all(media.map(async (m) => new Uint8Array(await m.blob.arrayBuffer())));
    const ws = await this._sockets.socketForCall();
    // Nothing awaits between this check and the sends, so the socket cannot change under us.
    if (ws && ws.readyState === WebSocket.OPEN) {
      this.stats.websocket += 1;
      this._lastTransport = "websocket";
      return this._sockets.call(ws, name, json, objects, media, bytes);
    }
    if (this._mode === "websocket") {
      throw (await this._onlineState.check(true)) ? connectionLost() : new AppOfflineError();
    }
    this.stats.http += 1;
    this._lastTransport = "http";
    return callOverHttp(this, name, json, objects, media, bytes);
  }

  // -- offline -------------------------------------------------------------------------

  /** Whether the app's server can be reached now: asks it (a cheap GET with a short
   * timeout), unless a recent answer or event says already. Resolves to a boolean. */
  isAppOnline() {
    return this._onlineState.check();
  }

  /** `fn()` on each change of the online state ("online", "offline"), or `fn(count)` when
   * the number of queued calls waiting changes ("queue"; the first listener also hears the
   * count there is). Returns a function that removes it. */
  on(event, fn) {
    const off = this._onlineState.on(event, fn);
    if (event === "queue") {
      let queue = null;
      try {
        queue = this._queue();
      } catch { /* no app known yet: counts come once the page queues a call */ }
      queue?._countChanged();
    }
    return off;
  }

  off(event, fn) {
    this._onlineState.off(event, fn);
  }

  /** Register the app's service worker, so the app's pages (visited once online), their
   * files and this client load with no connection. Resolves to the registration once it
   * is active and has kept this page; rejects where service workers are unavailable. */
  enableOffline() {
    return enableOffline(this);
  }

  _queue() {
    const url = this._appUrl("").href;
    let queue = this._queues.get(url);
    if (!queue) {
      queue = new CallQueue(this);
      this._queues.set(url, queue);
    }
    return queue;
  }

  /** Record a call of server function `name` durably and send it as soon as the app is
   * online (at once, if it is), exactly once. Resolves to a QueuedCall: `id`, `state`,
   * `result` (a Promise of the server's answer), `cancel()`. */
  callQueued(name, ...args) {
    return this._queue().add(name, args);
  }

  /** The queued calls still waiting (queued or being sent), oldest first. */
  queuedCalls() {
    return this._queue().waiting();
  }

  /** Send the queued calls now (they are also sent on load and when the app comes online). */
  syncQueued() {
    return this._queue().replay();
  }

  /** A page that was closed with calls still queued sends them when it loads again. */
  async _resumeQueue() {
    let url;
    try {
      url = this._appUrl("").href;
    } catch {
      return; // no app known (yet): the queue starts on the page's first queued call
    }
    // Only open the app's database if a page made one (indexedDB.databases(): Chromium, Firefox, Safari).
    const known = await globalThis.indexedDB?.databases?.().catch(() => null);
    if (!known || !known.some((db) => db.name === `jupyter-anvil:${url}`)) return;
    const queue = this._queue(); // from now on it replays whenever the app comes online
    // (a page loaded offline from the service worker may think it is online: ask)
    if (await this._onlineState.check(true)) await queue.replay();
  }

  /** Refused, as in Anvil: background tasks are launched by server code (a server
   * function may launch one and return its Task). Rejects with an AnvilError of type
   * "anvil.server.BackgroundTaskError" without contacting the server. */
  async launchBackgroundTask(_name, ..._args) {
    throw new AnvilError(TASK_ERROR, "Can't launch background tasks from the client.");
  }

  /** Open the WebSocket now rather than on the first call. Resolves to true if open. */
  async connect() {
    return (await this._sockets.socketForCall()) !== null;
  }

  /** Close the WebSocket. Calls in flight on it are rejected; the next call opens it again. */
  disconnect() {
    this._sockets.disconnect();
  }
}

/** The server functions of the app this page belongs to. */
export const server = new AnvilServer();
setTimeout(() => { server._resumeQueue(); }, 0);

/** A named store of values kept in this browser for the app (IndexedDB): async `get(key)`
 * (undefined when missing), `set(key, value)`, `delete(key)`, `keys()`, `clear()`. Keys are
 * strings; values are what server calls carry (dates, big ints, Blobs, portable objects,
 * lists and objects of them). `owner`: the AnvilServer whose app it belongs to. */
export function localStore(name, owner = server) {
  return new LocalStore(owner, name);
}
