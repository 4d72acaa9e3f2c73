// Queued calls: `server.callQueued(name, ...args)` records a call durably in the app's
// IndexedDB database (store.js) and sends it when it can, exactly once.
//
// * Each call gets an idempotency key (its id, crypto.randomUUID()), sent in the
//   Idempotency-Key header: the server runs a key once and answers a replay with the
//   stored outcome, so a call whose reply was lost can be sent again safely.
// * Each record keeps the window's session token of the moment it was made; a record with
//   none gets one first (the host service anvil.private.session.keep stores the window's
//   fresh session), so every send of one call presents the same session.
// * Records go queued -> sending -> done | failed | cancelled, written before and after
//   each send. Sending happens oldest first, one at a time, over HTTP, under a Web Lock
//   per app, so two tabs of one app replay the queue once. It starts when the call is made
//   (if online), on page load, and whenever the app comes online. A call that could not
//   reach the server (offline, connection lost, "still running" on the server) stays
//   queued; any answer of the server ends it: done, or failed with the server's error
//   (a server function that raised is never run again).
// * A session that expired while offline: the window's onSessionExpired listeners are
//   called; if one renewed the session (server.resetSession()), the calls of the old
//   session that never ran go on in the new one; otherwise they fail with
//   SessionExpiredError. A call sent before (its reply lost) is never moved unasked: the
//   server replays its key's outcome despite the expiry, or says it never ran.
// * Finished records are kept KEEP_FINISHED_MS, so a handle in another tab or in the page
//   after a reload still learns its outcome (BroadcastChannel tells other tabs at once).

import {encodeCall} from "./codec.js";
import {AnvilError, APP_OFFLINE, isRetryable, SESSION_EXPIRED} from "./errors.js";
import {isCurrent, notifyExpired} from "./session.js";
import {done, mediaOf, transaction} from "./store.js";
import {decodeHttpReply, postCall} from "./transport.js";

export const KEEP_FINISHED_MS = 24 * 3600 * 1000; // as long as the server keeps outcomes by default
const RETRY_FIRST_MS = 2000; // the server answered "not yet": ask again after this long,
const RETRY_MAX_MS = 60000; // doubling up to this
const MAX_WAITING = 10000; // calls waiting at once (each one is kept in IndexedDB)
const WAITING = ["queued", "sending"];
const KEEP_SESSION = "anvil.private.session.keep";
const CANCELLED = "anvil.server.CallCancelledError";

function errorOf(outcome) {
  const e = outcome?.error ?? {};
  return new AnvilError(e.type, e.message ?? "The queued call failed", e);
}

/** A call made with server.callQueued: `id`, `name`, `state` ("queued" | "sending" |
 * "done" | "failed" | "cancelled"), `result` (resolves to the server's answer, or rejects
 * with its AnvilError; a cancelled call's rejects with type "anvil.server.CallCancelledError")
 * and cancel(). */
export class QueuedCall {
  constructor(queue, record) {
    this._queue = queue;
    this.id = record.id;
    this.name = record.name;
    this.created = new Date(record.created);
    this.state = record.state;
    this.result = new Promise((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
    this.result.catch(() => {}); // a page that never looks at a failure is not an error
    this._update(record);
  }

  /** Cancel the call if it has not been sent yet: resolves to true if it was (it will
   * never run), false if it is being sent or has finished. */
  cancel() {
    return this._queue.cancel(this.id);
  }

  _update(record) {
    if (this._settled) return;
    this.state = record.state;
    // a finished call's handle is the page's to keep: the queue forgets it
    if (!WAITING.includes(record.state)) this._queue._handles.delete(this.id);
    if (record.state === "done") {
      this._settled = true;
      try {
        this._resolve(decodeHttpReply(structuredClone(record.outcome.reply), this._queue._owner));
      } catch (error) {
        this._reject(error);
      }
    } else if (record.state === "failed") {
      this._settled = true;
      this._reject(errorOf(record.outcome));
    } else if (record.state === "cancelled") {
      this._settled = true;
      this._reject(new AnvilError(CANCELLED, "The queued call was cancelled"));
    }
  }
}

/** The queued calls of one AnvilServer's app. */
export class CallQueue {
  constructor(owner) {
    this._owner = owner;
    this.appUrl = owner._appUrl("").href;
    this._handles = new Map(); // id -> QueuedCall (one handle per call in this page)
    this._replaying = null;
    this._again = false;
    this._retryTimer = null;
    this._retryDelay = RETRY_FIRST_MS;
    this._lastCount = null;
    this._channel = typeof BroadcastChannel === "function" ? new BroadcastChannel(`jupyter-anvil-queue:${this.appUrl}`) : null;
    if (this._channel) this._channel.onmessage = (event) => this._changedElsewhere(event.data?.id);
    owner._onlineState.on("online", () => { this.replay(); });
  }

  _run(mode, work) {
    return transaction(this.appUrl, ["queue"], mode, ({queue}) => work(queue));
  }

  _handle(record) {
    let handle = this._handles.get(record.id);
    if (!handle) {
      handle = new QueuedCall(this, record);
      this._handles.set(record.id, handle);
    } else {
      handle._update(record);
    }
    return handle;
  }

  /** Record a call and send it when it can. */
  async add(name, args) {
    if (typeof name !== "string" || !name) throw new TypeError("server.callQueued needs a function name");
    const {json, objects, media} = encodeCall(args); // refuses what cannot be sent, at once
    const call = {json, objects, blobs: media.map((m) => ({id: m.id, blob: m.blob}))};
    const record = {
      id: crypto.randomUUID(), name, call, token: this._owner._session().token,
      created: Date.now(), state: "queued",
    };
    await this._run("readwrite", async (queue) => {
      const waiting = await done(queue.index("id").count());
      if (waiting >= MAX_WAITING && (await this._waitingRecords(queue)).length >= MAX_WAITING) {
        throw new AnvilError("anvil.server.QueueFullError", `${MAX_WAITING} queued calls are waiting already`);
      }
      record.seq = await done(queue.add(record));
    });
    const handle = this._handle(record);
    this._changed(record);
    if (this._owner._onlineState.online) this.replay();
    return handle;
  }

  async _waitingRecords(queue) {
    const all = await done(queue.getAll());
    return all.filter((r) => WAITING.includes(r.state));
  }

  /** The calls still waiting (queued or being sent), oldest first. */
  async waiting() {
    const records = await this._run("readonly", (queue) => this._waitingRecords(queue));
    return records.map((r) => this._handle(r));
  }

  async cancel(id) {
    const record = await this._run("readwrite", async (queue) => {
      const seq = await done(queue.index("id").getKey(id));
      if (seq === undefined) return null;
      const r = await done(queue.get(seq));
      if (r.state !== "queued") return null; // being sent, or finished (cancelled already too)
      r.state = "cancelled";
      r.finished = Date.now();
      await done(queue.put(r));
      return r;
    });
    if (record === null) return false;
    this._changed(record);
    return true;
  }

  /** A record changed here: settle this page's handle, tell other tabs, count. */
  _changed(record) {
    this._handles.get(record.id)?._update(record);
    this._channel?.postMessage({id: record.id});
    this._countChanged();
  }

  async _changedElsewhere(id) {
    if (typeof id !== "string") return;
    const handle = this._handles.get(id);
    if (handle) {
      const record = await this._run("readonly", async (queue) => {
        const seq = await done(queue.index("id").getKey(id));
        return seq === undefined ? null : done(queue.get(seq));
      });
      if (record) handle._update(record);
    }
    this._countChanged();
  }

  async _countChanged() {
    try {
      const count = (await this._run("readonly", (queue) => this._waitingRecords(queue))).length;
      if (count === this._lastCount) return;
      this._lastCount = count;
      this._owner._onlineState.emit("queue", count);
    } catch (error) {
      console.warn("anvil: could not count queued calls", error);
    }
  }

  /** Send the waiting calls, oldest first (one replay at a time per page; one tab at a
   * time per app, by a Web Lock). Resolves when the queue is empty or the app offline. */
  replay() {
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    if (this._replaying) {
      this._again = true; // new work came while replaying: look again after
      return this._replaying;
    }
    this._replaying = (async () => {
      do {
        this._again = false;
        await this._withLock(() => this._drain());
      } while (this._again);
    })().catch((error) => console.warn("anvil: replaying queued calls failed", error))
      .finally(() => { this._replaying = null; });
    return this._replaying;
  }

  _withLock(work) {
    const locks = globalThis.navigator?.locks;
    if (!locks) return work(); // no Web Locks: each tab replays (the keys still run once)
    return locks.request(`jupyter-anvil-queue:${this.appUrl}`, work);
  }

  async _drain() {
    await this._prune();
    for (;;) {
      const record = await this._claimNext();
      if (!record) return;
      this._changed(record);
      const goOn = await this._send(record);
      if (!goOn) return;
    }
  }

  /** The oldest waiting record, now marked "sending" (one left "sending" by a tab that
   * went away is sent again: its key makes that safe). */
  _claimNext() {
    return this._run("readwrite", async (queue) => {
      const next = (await this._waitingRecords(queue))[0];
      if (!next) return null;
      next.state = "sending";
      next.sent = true; // it may run from now on: never moved to another session unasked
      await done(queue.put(next));
      return next;
    });
  }

  /** Write `changes` into the record `id` if it is still waiting; returns the record. */
  async _update(id, changes) {
    const record = await this._run("readwrite", async (queue) => {
      const seq = await done(queue.index("id").getKey(id));
      if (seq === undefined) return null;
      const r = await done(queue.get(seq));
      if (!WAITING.includes(r.state)) return r;
      Object.assign(r, changes);
      await done(queue.put(r));
      return r;
    });
    if (record) this._changed(record);
    return record;
  }

  /** The session to send `record` in: its own, or (none yet) the window's, stored on the
   * server first if it is fresh. */
  async _sessionOf(record) {
    const state = this._owner._session();
    if (record.token === null || record.token === undefined) {
      if (state.token === null) {
        // A fresh session is only stored once it holds something: have it stored, so the
        // key has a session to belong to that every replay presents again.
        await postCall(this._owner, KEEP_SESSION, {args: [], kwargs: {}}, [], [], []);
      }
      if (state.token === null) throw new AnvilError(SESSION_EXPIRED, "The server gave this window no session");
      record.token = state.token;
      await this._update(record.id, {token: record.token});
    }
    return {token: record.token, epoch: state.token === record.token ? state.epoch : -1};
  }

  /** Send one record; false when the replay should stop for now (offline). */
  async _send(record) {
    const state = this._owner._session();
    const epoch = state.epoch;
    let sent;
    try {
      sent = await this._sessionOf(record);
      const media = mediaOf(record.call);
      const bytes = await Promise.all(media.map(async (m) => new Uint8Array(await m.blob.arrayBuffer())));
      const {reply} = await postCall(this._owner, record.name, record.call.json, record.call.objects, media, bytes,
        {sent, key: record.id});
      await this._update(record.id, {state: "done", outcome: {reply}, finished: Date.now()});
      this._retryDelay = RETRY_FIRST_MS;
      return true;
    } catch (error) {
      if (isRetryable(error)) {
        await this._update(record.id, {state: "queued"});
        if (error.type !== APP_OFFLINE) { // the server answered: ask again in a while
          this._retryTimer = setTimeout(() => this.replay(), Math.max(this._retryDelay, (error.retryAfter ?? 0) * 1000));
          this._retryDelay = Math.min(this._retryDelay * 2, RETRY_MAX_MS);
        }
        return false;
      }
      if (error instanceof AnvilError && error.type === SESSION_EXPIRED) {
        return this._sessionExpired(record, sent, epoch, error);
      }
      const wire = error instanceof AnvilError ? error.error : {type: "Error", message: String(error?.message ?? error)};
      await this._update(record.id, {state: "failed", outcome: {error: wire}, finished: Date.now()});
      return true;
    }
  }

  /** `record`'s session expired. markExpired (in postCall) called the listeners if it was
   * the window's session; otherwise they are called here. A listener that renewed the
   * session (resetSession()) moves the waiting calls of the old session to the new one
   * (they never ran); otherwise they fail with SessionExpiredError. */
  async _sessionExpired(record, sent, epoch, error) {
    if (record.follows) {
      // its session was renewed while this call, sent before, might have run; the server
      // has now said it keeps no run of its key (a run would have been replayed despite the
      // expiry): it never ran, so it goes on in the window's session
      await this._update(record.id, {token: null, follows: false, state: "queued"});
      return true;
    }
    const state = this._owner._session();
    if (sent && !isCurrent(state, sent) && state.epoch === epoch) notifyExpired(state, error);
    const renewed = state.epoch !== epoch;
    const oldToken = record.token;
    const changed = await this._run("readwrite", async (queue) => {
      const records = (await this._waitingRecords(queue)).filter((r) => r.token === oldToken);
      for (const r of records) {
        if (renewed && (r.id === record.id || !r.sent)) {
          Object.assign(r, {token: null, state: "queued"}); // never ran: on in the new session
        } else if (renewed) {
          // sent before, so it may have run: asked again in its own session, whose key's
          // outcome the server still replays; only its word that it never ran moves it
          Object.assign(r, {follows: true, state: "queued"});
        } else {
          Object.assign(r, {state: "failed", outcome: {error: error.error}, finished: Date.now()});
        }
        await done(queue.put(r));
      }
      return records;
    });
    for (const r of changed) this._changed(r);
    return true;
  }

  /** Forget finished records older than KEEP_FINISHED_MS. */
  async _prune() {
    const before = Date.now() - KEEP_FINISHED_MS;
    await this._run("readwrite", async (queue) => {
      const all = await done(queue.getAll());
      for (const r of all) if (!WAITING.includes(r.state) && (r.finished ?? 0) < before) queue.delete(r.seq);
    });
  }
}
