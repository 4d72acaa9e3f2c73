// jupyter-anvil browser client: call an app's server functions from a web page.
//
//   import {server, kwargs, AnvilError} from "/anvil/client.js";
//   const greeting = await server.call("greet", "Ada");
//   const loud = await server.call("shout", "hi", kwargs({excited: true}));
//
// Plain ES module, no build step. It is served at {base_url}anvil/client.js, so every
// other URL is worked out from import.meta.url, never from "/": the server may live
// under a prefix (JupyterHub, a proxy).
//
// Calls go over one WebSocket (opened on the first call, reopened with backoff when it
// drops) and fall back to plain HTTP POSTs while the socket is not open. Values use the
// Anvil wire encoding: JSON inline, special values (dates, big ints, non-finite floats,
// Blobs, portable objects) as `null` placeholders described in `objects`.
//
// Sessions: the server keeps `server.session` for each browser window. The client holds
// the window's session token in sessionStorage under "anvil-session:{base}anvil/apps/<app>/"
// (so two tabs are two sessions and a reload keeps its session), presents it in a HELLO
// message on every WebSocket connection and in an X-Anvil-Session header on HTTP calls,
// and never puts it in a URL. The server hands out a token only once the session holds
// something (so it is stored, and survives a server restart): until then the window has
// none, and each connection runs on a fresh session of its own. A call on an expired
// session rejects with an AnvilError of type "anvil.server.SessionExpiredError";
// `server.resetSession()` starts a new session.
// Cookies (`server.cookies.local` / `.shared`) are HttpOnly: when a call over the socket
// changed them, the client trades the reply's ticket for the Set-Cookie headers before
// the call resolves, so they survive a reload. A socket sees the cookies it was opened
// with (plus its own changes), so after such a change every other socket of this origin
// (other tabs, other AnvilServer objects) is replaced before its next call. An HTTP call
// that changed cookies says so in an X-Anvil-Cookies header, with the same effect.
//
// Background tasks: a server function may return a `Task` (from
// server.launch_background_task). The client decodes it as a `Task` object whose async
// methods (getState, isCompleted, getReturnValue, ...) ask the server about it; passed back
// to a server function it arrives as the same Task. Browsers cannot launch or kill tasks.

const ANVIL_BASE = new URL(".", import.meta.url); // {base}anvil/
const CHUNK_SIZE = 65536; // the most bytes in one Media chunk (protocol §10.2)
const INT32_MAX = 2147483647; // larger ints travel as "Long" descriptors
const CONNECT_TIMEOUT_MS = 5000; // a socket not open by then counts as failed
const RETRY_FIRST_MS = 250;
const RETRY_MAX_MS = 30000;
const SESSION_EXPIRED = "anvil.server.SessionExpiredError";
const COOKIES_HEADER = "X-Anvil-Cookies"; // "changed" on an HTTP reply whose call changed cookies
const TASK_TYPE = "anvil.private.BackgroundTask";
const TASK_RECORD = "anvil.private.background_tasks.record";
const TASK_ERROR = "anvil.server.BackgroundTaskError";

// Hidden markers. Symbols are skipped by JSON.stringify and Object.keys, so marked
// values still look like plain dates and objects to the page's own code.
const DATE_MARK = Symbol("anvil.Date"); // a Date that means a calendar date
const TYPE_NAME = Symbol("anvil.typeName"); // portable class instance (ValueType)
const RAW_DESCRIPTOR = Symbol("anvil.descriptor"); // a value type we do not understand

/** An error from the server (or from reaching it). `type` is the Anvil error name,
 * e.g. "ValueError", "anvil.server.NoServerFunctionError",
 * "anvil.server.RuntimeUnavailableError". `error` is the raw error object. */
export class AnvilError extends Error {
  constructor(type, message, error = null) {
    super(message ?? "");
    this.name = "AnvilError";
    this.type = type || "anvil.server.AnvilWrappedError";
    this.error = error ?? {type: this.type, message: this.message};
  }
}

class Kwargs {
  constructor(values) {
    this.values = values ?? {};
  }
}

/** Keyword arguments for server.call: pass `kwargs({...})` as the last argument. */
export function kwargs(values) {
  return new Kwargs(values);
}

/** A calendar date (Python `datetime.date`): `anvilDate(2024, 2, 29)` with a 1-based
 * month, or `anvilDate("2024-02-29")`, or `anvilDate(someDate)` (its local date).
 * It is a JS Date at local midnight that the server receives as a date. */
export function anvilDate(year, month, day) {
  let d;
  if (year instanceof Date) {
    d = new Date(year.getFullYear(), year.getMonth(), year.getDate());
  } else if (typeof year === "string") {
    const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(year);
    if (!m) throw new TypeError(`anvilDate: expected "YYYY-MM-DD", got ${JSON.stringify(year)}`);
    return anvilDate(Number(m[1]), Number(m[2]), Number(m[3]));
  } else {
    d = new Date(2000, 0, 1);
    d.setFullYear(year, month - 1, day); // setFullYear: years 0-99 are not 1900-1999
  }
  d[DATE_MARK] = true;
  return d;
}

/** True if `value` is a calendar date (from anvilDate or received from the server). */
export function isAnvilDate(value) {
  return value instanceof Date && value[DATE_MARK] === true;
}

/** Mark a plain object as an instance of a server portable class, e.g.
 * `portable("app.Point", {x: 1, y: 2})`; objects received as such stay marked. */
export function portable(typeName, data) {
  Object.defineProperty(data, TYPE_NAME, {value: typeName, enumerable: false, configurable: true});
  return data;
}

/** The portable class name of an object received from the server, or undefined. */
export function portableTypeName(value) {
  return value != null && typeof value === "object" ? value[TYPE_NAME] : undefined;
}

// ---------------------------------------------------------------------------------------
// Encoding: JS values -> {json, objects, media}

const pad = (n, width = 2) => String(Math.abs(n)).padStart(width, "0");

function formatDate(d) {
  return `${pad(d.getFullYear(), 4)}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

function formatDateTime(d) {
  // Local wall time plus the browser's offset for that instant (DST-aware).
  const offset = -d.getTimezoneOffset();
  const sign = offset < 0 ? "-" : "+";
  return `${formatDate(d)} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}` +
    `.${pad(d.getMilliseconds() * 1000, 6)}${sign}${pad(Math.floor(Math.abs(offset) / 60))}${pad(Math.abs(offset) % 60)}`;
}

function serializationError(what, path) {
  const where = path.map((k) => `[${JSON.stringify(k)}]`).join("");
  return new AnvilError("anvil.server.SerializationError",
    `Cannot serialize arguments to function. Cannot serialize ${what} at msg${where}`);
}

function isPlainObject(v) {
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

let idCounter = 0;
const ID_PREFIX = Math.random().toString(36).slice(2, 8);
function newId(kind) {
  idCounter += 1;
  return `${kind}-${ID_PREFIX}-${idCounter}`;
}

/** Encode a value found at `path`. Returns its JSON form; pushes descriptors onto
 * `objects` and Blobs onto `media` ({id, blob, descriptor}). */
function encodeValue(value, path, objects, media, seen) {
  if (value === null || value === undefined) return null;
  switch (typeof value) {
    case "string":
    case "boolean":
      return value;
    case "number":
      if (!Number.isFinite(value)) {
        objects.push({type: ["Float"], path, value: Number.isNaN(value) ? "NaN" : value > 0 ? "Infinity" : "-Infinity"});
        return null;
      }
      if (Number.isInteger(value) && Math.abs(value) > INT32_MAX) {
        objects.push({type: ["Long"], path, value: BigInt(value).toString()});
        return null;
      }
      return value;
    case "bigint":
      if (value > BigInt(INT32_MAX) || value < -BigInt(INT32_MAX)) {
        objects.push({type: ["Long"], path, value: value.toString()});
        return null;
      }
      return Number(value);
    case "object":
      break;
    default:
      throw serializationError(`${typeof value} value`, path);
  }

  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) throw serializationError("invalid Date", path);
    objects.push(value[DATE_MARK]
      ? {type: ["Date"], path, value: formatDate(value)}
      : {type: ["DateTime"], path, value: formatDateTime(value)});
    return null;
  }
  if (value instanceof Blob) {
    const descriptor = {
      type: ["DataMedia"], path, id: newId("m"),
      "mime-type": value.type || null,
      name: value instanceof File ? value.name : null,
    };
    objects.push(descriptor);
    media.push({id: descriptor.id, blob: value, descriptor});
    return null;
  }
  if (value instanceof Task) {
    objects.push({type: ["ValueType"], path, typeName: TASK_TYPE});
    return {id: value.getId(), name: value.getTaskName()};
  }
  if (value[RAW_DESCRIPTOR]) {
    // Something the server sent that we do not interpret (a LiveObject, a
    // Capability...): send its descriptor back unchanged.
    objects.push({...value[RAW_DESCRIPTOR], path});
    return null;
  }
  if (value instanceof Kwargs) throw serializationError("kwargs() other than as the last argument", path);
  if (seen.has(value)) throw serializationError("circular reference", path);

  seen.add(value);
  let json;
  if (Array.isArray(value)) {
    json = value.map((item, i) => encodeValue(item, [...path, i], objects, media, seen));
  } else if (isPlainObject(value)) {
    json = {};
    for (const [key, item] of Object.entries(value)) {
      if (item === undefined) continue; // as JSON.stringify does
      json[key] = encodeValue(item, [...path, key], objects, media, seen);
    }
    // A portable object's descriptor comes after those of the values inside it.
    if (value[TYPE_NAME]) objects.push({type: ["ValueType"], path, typeName: value[TYPE_NAME]});
  } else {
    throw serializationError(`${value.constructor?.name ?? "object"} object`, path);
  }
  seen.delete(value);
  return json;
}

/** Encode a call's arguments. The last argument may be kwargs({...}). */
function encodeCall(args) {
  let kw = {};
  if (args.length && args[args.length - 1] instanceof Kwargs) {
    kw = args[args.length - 1].values;
    args = args.slice(0, -1);
  }
  if (!isPlainObject(kw)) throw serializationError("kwargs that are not a plain object", ["kwargs"]);
  const objects = [];
  const media = [];
  const seen = new Set();
  const json = {
    args: args.map((a, i) => encodeValue(a, ["args", i], objects, media, seen)),
    kwargs: encodeValue(kw, ["kwargs"], objects, media, seen),
  };
  return {json, objects, media};
}

// ---------------------------------------------------------------------------------------
// Decoding: {response, objects} -> JS values

function parseDateTime(text) {
  const m = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?\s*(Z|[+-]\d{2}:?\d{2})?$/.exec(text);
  if (!m) throw new Error(`bad DateTime ${JSON.stringify(text)}`);
  const [, y, mo, d, h, mi, s, frac, tz] = m;
  const ms = Number(((frac ?? "") + "000").slice(0, 3));
  if (!tz) { // naive: read as local wall time
    const local = new Date(2000, 0, 1);
    local.setFullYear(Number(y), Number(mo) - 1, Number(d));
    local.setHours(Number(h), Number(mi), Number(s), ms);
    return local;
  }
  let offsetMinutes = 0;
  if (tz !== "Z") {
    const digits = tz.replace(":", "");
    offsetMinutes = (digits[0] === "-" ? -1 : 1) * (Number(digits.slice(1, 3)) * 60 + Number(digits.slice(3, 5)));
  }
  const utc = new Date(0);
  utc.setUTCFullYear(Number(y), Number(mo) - 1, Number(d));
  utc.setUTCHours(Number(h), Number(mi) - offsetMinutes, Number(s), ms);
  return utc;
}

function base64ToBytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function bytesToBase64(bytes) {
  let binary = "";
  // String.fromCharCode takes arguments; slices keep us under the engine's limit.
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

function makeBlob(descriptor, parts) {
  const type = descriptor["mime-type"] || "";
  return descriptor.name != null
    ? new File(parts, descriptor.name, {type})
    : new Blob(parts, {type});
}

/** The JS value a descriptor stands for. `current` is what the JSON holds at its path;
 * `mediaParts(descriptor)` gives a DataMedia's bytes as a list of parts; `origin` is the
 * AnvilServer the value came from (a Task asks it about itself). */
function decodeDescriptor(descriptor, current, mediaParts, origin) {
  const types = Array.isArray(descriptor.type) ? descriptor.type : [descriptor.type];
  for (const type of types) {
    switch (type) {
      case "DateTime":
        return descriptor.value ? parseDateTime(descriptor.value) : null;
      case "Date":
        return descriptor.value ? anvilDate(descriptor.value) : null;
      case "Long": {
        const big = BigInt(descriptor.value);
        return big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
      }
      case "Float":
        return Number(descriptor.value); // "Infinity", "-Infinity", "NaN"
      case "Primitive":
        return descriptor.value;
      case "DataMedia":
        return makeBlob(descriptor, mediaParts(descriptor));
      case "ValueType":
        if (current === null || typeof current !== "object") break;
        if (descriptor.typeName === TASK_TYPE && typeof current.id === "string") {
          return new Task(current.id, current.name, origin);
        }
        return portable(descriptor.typeName, current);
    }
  }
  const {path: _path, ...rest} = descriptor;
  const raw = {...rest};
  Object.defineProperty(raw, RAW_DESCRIPTOR, {value: rest, enumerable: false});
  return raw;
}

/** Replace the placeholders of `message` (a reply) in place, in `objects` order. */
function decodeMessage(message, mediaParts, origin) {
  for (const descriptor of message.objects ?? []) {
    const path = descriptor.path;
    if (!Array.isArray(path) || path.length === 0) throw new Error("descriptor without a path");
    let parent = message;
    for (const key of path.slice(0, -1)) {
      parent = parent?.[key];
      if (parent === null || typeof parent !== "object") throw new Error(`no such path ${JSON.stringify(path)}`);
    }
    const last = path[path.length - 1];
    parent[last] = decodeDescriptor(descriptor, parent[last], mediaParts, origin);
  }
  return message;
}

function isDataMedia(descriptor) {
  return Array.isArray(descriptor.type) ? descriptor.type[0] === "DataMedia" : descriptor.type === "DataMedia";
}

function invalidResponse(detail) {
  return new AnvilError("anvil.server.InvalidResponseError", `Invalid response from the server: ${detail}`);
}

function connectionLost() {
  return new AnvilError("anvil.server.RuntimeUnavailableError", "Connection to the server was lost");
}

// ---------------------------------------------------------------------------------------
// Sessions: one per window and app, shared by every AnvilServer object for that app

const sessions = new Map(); // storage key -> {token, epoch, expired, listeners}

function storage() {
  try {
    return globalThis.sessionStorage ?? null;
  } catch { // sandboxed frames and some privacy modes refuse access
    return null;
  }
}

function sessionFor(key) {
  let state = sessions.get(key);
  if (!state) {
    let token = null;
    try {
      token = storage()?.getItem(key) ?? null;
    } catch { /* unreadable storage: start without a token */ }
    // epoch counts resetSession()s: with no token, it tells the new session from the old
    state = {key, token, epoch: 0, expired: false, listeners: new Set()};
    sessions.set(key, state);
  }
  return state;
}

function storeToken(state, token) {
  state.token = token;
  try {
    if (token === null) storage()?.removeItem(state.key);
    else storage()?.setItem(state.key, token);
  } catch { /* storage full or refused: the session lasts as long as the page */ }
}

/** Which session of the window a request was made in: {token, epoch}. */
function sessionNow(state) {
  return {token: state.token, epoch: state.epoch};
}

function isCurrent(state, sent) {
  return sent !== undefined && state.token === sent.token && state.epoch === sent.epoch;
}

/** The server gave this window a session token (for the session `sent` names). */
function adoptToken(state, sent, token) {
  // A reply to a request made before resetSession() (or before another transport got a
  // newer token) must not bring the old session back.
  if (!isCurrent(state, sent) || typeof token !== "string" || !token) return;
  state.expired = false;
  if (token !== state.token) storeToken(state, token);
}

/** The server says the session `sent` is no longer live. */
function markExpired(state, sent, error) {
  if (!isCurrent(state, sent) || state.expired) return;
  state.expired = true;
  // Keep presenting the dead token (the server keeps refusing it, on both transports)
  // until resetSession(); but forget it in storage, so a reload starts afresh.
  try {
    storage()?.removeItem(state.key);
  } catch { /* nothing stored */ }
  for (const listener of [...state.listeners]) {
    try {
      listener(error);
    } catch (e) {
      console.error("anvil: an onSessionExpired callback failed", e);
    }
  }
}

function sessionExpiredError(error) {
  return new AnvilError(SESSION_EXPIRED, error?.message ?? "Session expired", error ?? undefined);
}

// ---------------------------------------------------------------------------------------
// Cookie changes: sockets opened before a change are replaced before their next call

let cookieGeneration = 0; // bumped whenever this origin's cookies change
const cookieChannel = typeof BroadcastChannel === "function" ? new BroadcastChannel("jupyter-anvil.cookies") : null;
if (cookieChannel) cookieChannel.onmessage = () => { cookieGeneration += 1; };

function cookiesChanged() {
  cookieGeneration += 1;
  cookieChannel?.postMessage("changed"); // other tabs of this origin (not this one)
  return cookieGeneration;
}

// ---------------------------------------------------------------------------------------
// Background tasks

const RUNNING = ["queued", "running"];
const ENDED = ["completed", "failed", "killed", "missing"];

/** The error a task's record stands for (killed, failed or missing), or null. */
function taskError(record) {
  switch (record.status) {
    case "killed":
      return new AnvilError("anvil.server.BackgroundTaskKilled", "The background task was killed.");
    case "failed": {
      const error = record.error ?? {};
      return new AnvilError(error.type, error.message ?? "The background task failed", record.error ?? undefined);
    }
    case "missing":
      return new AnvilError("anvil.server.InternalError", "The background task failed (mia).");
    default:
      return null;
  }
}

/** A background task launched by server code and returned to the page. Every method but
 * getId() and getTaskName() asks the server (over the connection the Task came from) and
 * returns a promise. Pass the Task to a server function and it arrives as the same Task. */
export class Task {
  constructor(id, name, origin = null) {
    if (typeof id !== "string" || !id) throw new TypeError("Task needs the task's id");
    this._id = id;
    this._name = name ?? null;
    this._origin = origin;
  }

  /** The task's id (25 characters). */
  getId() {
    return this._id;
  }

  /** The name the task was registered under. */
  getTaskName() {
    return this._name;
  }

  /** Everything the server knows of the task, in one call: {id, name, status, launched,
   * started, ended, error, state, result}. The methods below are views of it. */
  async getRecord() {
    const record = await (this._origin ?? server).call(TASK_RECORD, this._id);
    if (record === null || typeof record !== "object" || typeof record.status !== "string") {
      throw invalidResponse("a background task's record has no status");
    }
    return record;
  }

  /** The task's `task_state` (an object): live while it runs, final once it has ended. */
  async getState() {
    return (await this.getRecord()).state ?? {};
  }

  /** "queued", "running", "completed", "failed", "killed" or "missing". */
  async getStatus() {
    return (await this.getRecord()).status;
  }

  /** True until the task has ended (also while it waits its turn). */
  async isRunning() {
    return RUNNING.includes((await this.getRecord()).status);
  }

  /** false while it runs, true once it completed; rejects if it was killed
   * (anvil.server.BackgroundTaskKilled), failed (the task's own error) or went missing
   * (anvil.server.InternalError). */
  async isCompleted() {
    const record = await this.getRecord();
    const error = taskError(record);
    if (error) throw error;
    return record.status === "completed";
  }

  /** null while it runs, then "completed", "failed", "killed" or "missing". */
  async getTerminationStatus() {
    const {status} = await this.getRecord();
    return ENDED.includes(status) ? status : null;
  }

  /** Rejects with the task's error if it failed; else resolves to null. */
  async getError() {
    const record = await this.getRecord();
    if (record.status === "failed") throw taskError(record);
    return null;
  }

  /** What the task returned (null until it completed); rejects with its error if it failed. */
  async getReturnValue() {
    const record = await this.getRecord();
    if (record.status === "failed") throw taskError(record);
    return record.status === "completed" ? record.result ?? null : null;
  }

  /** When the task was launched (a Date). */
  async getStartTime() {
    return (await this.getRecord()).launched ?? null;
  }

  /** Refused, as in Anvil: a browser cannot kill a task (a server function can). */
  async kill() {
    throw new AnvilError(TASK_ERROR, "Can't kill background tasks from the client");
  }

  get [TYPE_NAME]() {
    return TASK_TYPE;
  }

  toJSON() {
    return {id: this._id, name: this._name};
  }

  toString() {
    return `<Task ${this._name} ${this._id}>`;
  }
}

// ---------------------------------------------------------------------------------------
// The connection to one app

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
    return this._ws !== null && this._ws.readyState === WebSocket.OPEN;
  }

  /** The open WebSocket (for tests and debugging; closing it looks like a dropped
   * connection, so the client reconnects). */
  get _socket() {
    return this._ws;
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
    const state = this._session();
    state.expired = false;
    state.epoch += 1;
    storeToken(state, null);
    // An open socket says HELLO again before its next call (see _callOverSocket).
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
    const ws = await this._socketForCall();
    // Nothing awaits between this check and the sends, so the socket cannot change under us.
    if (ws && ws.readyState === WebSocket.OPEN) return this._callOverSocket(ws, name, json, objects, media, bytes);
    if (this._mode === "websocket") throw connectionLost();
    return this._callOverHttp(name, json, objects, media, bytes);
  }

  /** Refused, as in Anvil: background tasks are launched by server code (a server
   * function may launch one and return its Task). Rejects with an AnvilError of type
   * "anvil.server.BackgroundTaskError" without contacting the server. */
  async launchBackgroundTask(_name, ..._args) {
    throw new AnvilError(TASK_ERROR, "Can't launch background tasks from the client.");
  }

  /** Open the WebSocket now rather than on the first call. Resolves to true if open. */
  async connect() {
    return (await this._socketForCall()) !== null;
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

  // -- WebSocket -------------------------------------------------------------------------

  async _socketForCall() {
    if (this._mode === "http") return null;
    if (this.connected && this._socketCookies.get(this._ws) !== cookieGeneration) this._retire(this._ws);
    if (this.connected) return this._ws;
    if (this._opening) return this._opening.promise;
    // Between retries, auto mode uses HTTP rather than making the caller wait.
    if (this._retryTimer !== null && this._mode === "auto") return null;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    return this._open();
  }

  _open() {
    this._wanted = true;
    const url = this._appUrl("_/ws");
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
        resolve(ws);
      };
      ws.onclose = () => {
        clearTimeout(timer);
        // Only the socket we were using (or opening) going away calls for a reconnect;
        // one we replaced or closed on purpose does not.
        const current = this._ws === ws || this._opening?.ws === ws;
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
    if (current && this._wanted && this._mode !== "http") this._scheduleReconnect();
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
    const sent = sessionNow(this._session());
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
    const state = this._session();
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
    adoptToken(this._session(), sent, token);
  }

  _callOverSocket(ws, name, json, objects, media, bytes) {
    this.stats.websocket += 1;
    this._lastTransport = "websocket";
    const id = newId("c");
    // After resetSession() (or a token got over HTTP, or by another socket) the socket
    // re-presents the window's session, so the window stays one session on every transport.
    if (!isCurrent(this._session(), this._socketSessions.get(ws).presented)) this._hello(ws);
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
      if (error.type === SESSION_EXPIRED) markExpired(this._session(), call.sent, error);
      settle = () => call.reject(error);
    } else {
      try {
        const value = decodeMessage(reply, (d) => call.media.get(d.id).parts, this).response;
        settle = () => call.resolve(value);
      } catch (error) {
        settle = () => call.reject(invalidResponse(error.message));
      }
    }
    // The call changed cookies: store them in the browser before the caller goes on
    // (say, by reloading the page).
    if (typeof reply.cookies === "string" && reply.cookies) {
      this._storeCookies(reply.cookies).then(() => {
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

  /** Trade a cookie ticket for the Set-Cookie headers (HttpOnly: JS never sees them). */
  async _storeCookies(ticket) {
    try {
      const response = await fetch(this._appUrl("_/cookies"), {
        method: "POST",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({ticket}),
        credentials: "same-origin",
      });
      if (!response.ok) console.warn(`anvil: could not store cookies (HTTP ${response.status})`);
    } catch (error) {
      // The socket still carries the new values for this page; only a reload loses them.
      console.warn("anvil: could not store cookies", error);
    }
  }

  // -- HTTP ------------------------------------------------------------------------------

  async _callOverHttp(name, json, objects, media, bytes) {
    this.stats.http += 1;
    this._lastTransport = "http";
    // No binary frames over HTTP: Media bytes ride inline as base64.
    media.forEach((m, i) => { m.descriptor.base64 = bytesToBase64(bytes[i]); });
    const state = this._session();
    const sent = sessionNow(state);
    const headers = {"Content-Type": "application/json", "X-Anvil-Client": "browser"};
    if (sent.token !== null) headers["X-Anvil-Session"] = sent.token;
    let response;
    try {
      response = await fetch(this._appUrl(`_/call/${encodeURIComponent(name)}`), {
        method: "POST",
        headers,
        body: JSON.stringify({...json, objects}),
        credentials: "same-origin", // cookies go with the call, to this origin only
      });
    } catch (error) {
      throw new AnvilError("anvil.server.RuntimeUnavailableError", `Could not reach the server: ${error.message}`);
    } finally {
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
      throw invalidResponse(`HTTP ${response.status} ${response.statusText}`);
    }
    if (reply?.error) {
      const error = new AnvilError(reply.error.type, reply.error.message, reply.error);
      if (error.type === SESSION_EXPIRED) markExpired(state, sent, error);
      throw error;
    }
    if (!response.ok || reply === null || typeof reply !== "object" || !("response" in reply)) {
      throw invalidResponse(`HTTP ${response.status}`);
    }
    try {
      return decodeMessage(reply, (d) => {
        if (typeof d.base64 !== "string") throw new Error(`Media ${d.id} has no bytes`);
        return [base64ToBytes(d.base64)];
      }, this).response;
    } catch (error) {
      throw invalidResponse(error.message);
    }
  }
}

/** The server functions of the app this page belongs to. */
export const server = new AnvilServer();
