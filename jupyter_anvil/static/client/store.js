// Data kept in the browser for an app, in IndexedDB: one database per app (named by the
// app's URL, so two apps, or two servers, never share one), holding
//   local  localStore(name)'s values, keyed [name, key]
//   queue  queued calls (queue.js), in the order they were made
// Values are kept in the call encoding (codec.js), so what comes back is what went in:
// dates (calendar dates and datetimes), big ints, Blobs and Files, portable objects, and
// nested lists and objects of them. They survive reloads and browser restarts.

import {decodeMessage, encodeCall} from "./codec.js";
import {AnvilError} from "./errors.js";

const VERSION = 1;
const databases = new Map(); // database name -> Promise<IDBDatabase>

function unavailable(detail) {
  return new AnvilError("anvil.server.StorageUnavailableError", `Local storage is unavailable here: ${detail}`);
}

/** The app's database (opened once per page). `appUrl`: the app's URL (a string). */
export function openDatabase(appUrl) {
  const name = `jupyter-anvil:${appUrl}`;
  let opening = databases.get(name);
  if (!opening) {
    opening = new Promise((resolve, reject) => {
      let request;
      try {
        if (!globalThis.indexedDB) throw new Error("this browser has no IndexedDB");
        request = indexedDB.open(name, VERSION);
      } catch (error) {
        reject(unavailable(error.message));
        return;
      }
      request.onupgradeneeded = () => {
        const db = request.result;
        if (!db.objectStoreNames.contains("local")) db.createObjectStore("local");
        if (!db.objectStoreNames.contains("queue")) {
          const queue = db.createObjectStore("queue", {keyPath: "seq", autoIncrement: true});
          queue.createIndex("id", "id", {unique: true});
        }
      };
      request.onsuccess = () => {
        const db = request.result;
        // A newer page wants to upgrade the database: let it (this page reopens on next use).
        db.onversionchange = () => {
          db.close();
          databases.delete(name);
        };
        resolve(db);
      };
      request.onerror = () => reject(unavailable(request.error?.message ?? "IndexedDB refused to open"));
      request.onblocked = () => console.warn("anvil: the app's local database is held open by an older page");
    });
    opening.catch(() => databases.delete(name)); // try again next time
    databases.set(name, opening);
  }
  return opening;
}

/** Run `work(stores)` in one transaction over `names` (object store names); resolves to
 * what `work` returned once the transaction has committed. */
export async function transaction(appUrl, names, mode, work) {
  const db = await openDatabase(appUrl);
  return new Promise((resolve, reject) => {
    const tx = db.transaction(names, mode);
    const stores = Object.fromEntries(names.map((n) => [n, tx.objectStore(n)]));
    let result;
    tx.oncomplete = () => resolve(result);
    tx.onerror = () => reject(tx.error ?? unavailable("transaction failed"));
    tx.onabort = () => reject(tx.error ?? unavailable("transaction aborted"));
    Promise.resolve()
      .then(() => work(stores))
      .then((r) => { result = r; }, (error) => {
        try { tx.abort(); } catch { /* already finished */ }
        reject(error);
      });
  });
}

/** An IDBRequest as a promise (for use inside transaction()'s `work`). */
export function done(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/** A value in the call encoding, ready for IndexedDB: {json, objects, blobs} (Blobs kept
 * as Blobs, which IndexedDB stores natively). */
export function encodeForStorage(values) {
  const {json, objects, media} = encodeCall(values);
  return {json: json.args, objects, blobs: media.map((m) => ({id: m.id, blob: m.blob}))};
}

/** The values encodeForStorage kept. `origin`: the AnvilServer values (Tasks) belong to. */
export function decodeFromStorage(stored, origin) {
  const message = {args: structuredClone(stored.json), kwargs: {}, objects: stored.objects ?? []};
  const blobs = new Map((stored.blobs ?? []).map((b) => [b.id, b.blob]));
  decodeMessage(message, (d) => [blobs.get(d.id) ?? new Blob([])], origin);
  return message.args;
}

/** The descriptors and bytes a stored value's Blobs need to be sent in a call. */
export function mediaOf(stored) {
  const byId = new Map((stored.objects ?? []).map((d) => [d.id, d]));
  return (stored.blobs ?? []).map((b) => ({id: b.id, blob: b.blob, descriptor: byId.get(b.id)}));
}

function checkKey(key) {
  if (typeof key !== "string") throw new TypeError(`localStore keys are strings, not ${typeof key}`);
}

/** A named store of values for the app, kept in the browser (IndexedDB). */
export class LocalStore {
  constructor(owner, name) {
    if (typeof name !== "string" || !name) throw new TypeError("localStore needs a name (a string)");
    this._owner = owner;
    this.name = name;
  }

  _run(mode, work) {
    return transaction(this._owner._appUrl("").href, ["local"], mode, ({local}) => work(local));
  }

  /** The value kept under `key`, or undefined. */
  async get(key) {
    checkKey(key);
    const stored = await this._run("readonly", (local) => done(local.get([this.name, key])));
    return stored === undefined ? undefined : decodeFromStorage(stored, this._owner)[0];
  }

  /** Keep `value` under `key` (null and undefined are kept as null). */
  async set(key, value) {
    checkKey(key);
    const stored = encodeForStorage([value]); // throws on values the encoding cannot carry
    await this._run("readwrite", (local) => done(local.put(stored, [this.name, key])));
  }

  async delete(key) {
    checkKey(key);
    await this._run("readwrite", (local) => done(local.delete([this.name, key])));
  }

  /** This store's keys, sorted. */
  async keys() {
    const range = IDBKeyRange.bound([this.name], [this.name, []]); // every [name, <string>]
    const keys = await this._run("readonly", (local) => done(local.getAllKeys(range)));
    return keys.map((k) => k[1]);
  }

  async clear() {
    const range = IDBKeyRange.bound([this.name], [this.name, []]);
    await this._run("readwrite", (local) => done(local.delete(range)));
  }
}
