// Whether the app is online, as one AnvilServer sees it, and the events pages get when
// that changes; the reachability probe that tells "offline" (AppOfflineError) from "the
// server refused" after a failed fetch; and enableOffline(), which registers the app's
// service worker (anvil/apps/<app>/sw.js) so its pages load with no connection.
//
// navigator.onLine is not trusted on its own (after a navigation served by the service
// worker offline, Chromium may say true and never fire "online"): the state follows the
// browser's online/offline events, the socket (opened: online; failed: ask), every call's
// fate, and a cheap GET of the app's `_/check-app-online`, polled while offline so a
// connection that returns without an event is noticed.

import {AnvilError, AppOfflineError, RUNTIME_UNAVAILABLE, UNREACHABLE} from "./errors.js";

const CHECK_TIMEOUT_MS = 3500; // the online check gives up after this long
const CHECK_CACHE_MS = 5000; // a check's answer holds this long
const POLL_FIRST_MS = 3000; // while offline, ask the server after this long,
const POLL_MAX_MS = 15000; // then less and less often, down to this
const EVENTS = ["online", "offline", "queue"];

// The client's modules, which a page that enables offline use needs to load offline.
const CLIENT_MODULES = ["errors", "codec", "session", "transport", "tasks", "server", "offline", "store", "queue"];

function fetchWithTimeout(url, options, ms) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), ms);
  return fetch(url, {...options, signal: controller.signal}).finally(() => clearTimeout(timer));
}

/** The online state of one AnvilServer (`owner`: gives `_appUrl(rest)` and `app`) and
 * its listeners. `online` starts as the browser's guess and changes on evidence. */
export class OnlineState {
  constructor(owner) {
    this._owner = owner;
    this._online = globalThis.navigator?.onLine !== false;
    this._checkedAt = 0; // when the state was last confirmed (performance.now())
    this._checking = null; // the check in flight
    this._poll = null;
    this._pollDelay = POLL_FIRST_MS;
    this._listeners = new Map(EVENTS.map((e) => [e, new Set()]));
    this._offlineHooks = new Set(); // called (synchronously) when the browser goes offline
    if (typeof globalThis.addEventListener === "function") {
      globalThis.addEventListener("offline", () => {
        for (const hook of this._offlineHooks) hook();
        this.set(false);
      });
      // Not trusted alone: confirm with the server.
      globalThis.addEventListener("online", () => { this.check(true); });
    }
  }

  /** The last known state (true: online). */
  get online() {
    return this._online;
  }

  /** Run `hook()` when the browser says it went offline (the socket retires itself). */
  onBrowserOffline(hook) {
    this._offlineHooks.add(hook);
  }

  on(event, fn) {
    if (!EVENTS.includes(event)) throw new TypeError(`unknown event ${JSON.stringify(event)}: one of ${EVENTS.join(", ")}`);
    if (typeof fn !== "function") throw new TypeError(`server.on("${event}", fn) needs a function`);
    this._listeners.get(event).add(fn);
    if (event === "online" && !this._online && this._poll === null) this._schedulePoll();
    return () => this.off(event, fn);
  }

  off(event, fn) {
    this._listeners.get(event)?.delete(fn);
  }

  emit(event, detail) {
    for (const fn of [...(this._listeners.get(event) ?? [])]) {
      try {
        fn(detail);
      } catch (error) {
        console.error(`anvil: a server.on("${event}") callback failed`, error);
      }
    }
  }

  /** Evidence that the app is (or is not) reachable: fires "online"/"offline" on a change. */
  set(online) {
    this._checkedAt = performance.now();
    if (online) {
      clearTimeout(this._poll);
      this._poll = null;
      this._pollDelay = POLL_FIRST_MS;
    } else if (this._poll === null && this._listeners.get("online").size > 0) {
      this._schedulePoll(); // someone waits for "online" (the call queue does)
    }
    if (online === this._online) return;
    this._online = online;
    this.emit(online ? "online" : "offline");
  }

  _schedulePoll() {
    this._poll = setTimeout(async () => {
      this._poll = null;
      if (this._online) return;
      const online = await this.check(true);
      if (!online && this._poll === null) this._schedulePoll();
    }, this._pollDelay);
    this._pollDelay = Math.min(this._pollDelay * 2, POLL_MAX_MS);
  }

  /** Ask the server whether the app is reachable (cached for a few seconds unless `fresh`). */
  async check(fresh = false) {
    if (!fresh && this._checkedAt && performance.now() - this._checkedAt < CHECK_CACHE_MS) return this._online;
    if (this._checking) return this._checking;
    this._checking = (async () => {
      let online;
      try {
        const response = await fetchWithTimeout(this._checkUrl(), {cache: "no-store", credentials: "same-origin"},
          CHECK_TIMEOUT_MS);
        online = response.ok;
      } catch {
        // No answer the page may read: none at all (offline), or a page of another origin
        // the app does not list (the server answered, but CORS hides it).
        online = await this._reachable();
      }
      this.set(online);
      return online;
    })().finally(() => { this._checking = null; });
    return this._checking;
  }

  _checkUrl() {
    const url = this._owner._appUrl("_/check-app-online");
    url.searchParams.set("t", String(Date.now()));
    return url;
  }

  /** Whether the server answers at all (an opaque no-cors answer is an answer). */
  async _reachable() {
    try {
      await fetchWithTimeout(this._checkUrl(), {mode: "no-cors", cache: "no-store"}, CHECK_TIMEOUT_MS);
      return true;
    } catch {
      return false;
    }
  }

  /** A fetch to the app failed: the error to give the caller. Either the server cannot be
   * reached (AppOfflineError; the state goes offline) or it can, and refused the request in
   * a way the page may not read (another origin not allowed: RuntimeUnavailableError). */
  async failedFetch(error) {
    if (!(await this._reachable())) {
      this.set(false);
      return new AppOfflineError(`The app is offline: could not reach the server (${error.message})`);
    }
    return new AnvilError(RUNTIME_UNAVAILABLE, `${UNREACHABLE}: ${error.message}`);
  }
}

/** Register the app's service worker (scope: the app's folder), wait until it is active,
 * and have it keep this page, the files it loaded from the app's folder and the client's
 * modules. Resolves to the ServiceWorkerRegistration. */
export async function enableOffline(owner) {
  const container = globalThis.navigator?.serviceWorker;
  if (!container || globalThis.isSecureContext === false) {
    throw new AnvilError("anvil.server.OfflineUnavailableError",
      "Offline use needs service workers, which this page cannot use (it must be served over https or from localhost)");
  }
  const controlled = container.controller;
  const scope = owner._appUrl("");
  const registration = await container.register(owner._appUrl("sw.js"), {scope: scope.href, updateViaCache: "none"});
  const worker = await activeWorker(registration);
  // A page the worker controlled as it called (loaded through it, or kept by an earlier
  // call): what it loaded is kept. (A first registration's clients.claim() makes the page
  // controlled too, but its files were loaded without the worker: those are sent below.)
  if (controlled && controlled.scriptURL === worker.scriptURL) return registration;
  const clientBase = new URL("..", import.meta.url); // {base}anvil/
  const urls = [
    globalThis.location?.href,
    ...performance.getEntriesByType("resource").map((entry) => entry.name),
    new URL("client.js", clientBase).href,
    ...CLIENT_MODULES.map((name) => new URL(`client/${name}.js`, clientBase).href),
  ].filter((u) => typeof u === "string");
  const answer = await new Promise((resolve, reject) => {
    const channel = new MessageChannel();
    const timer = setTimeout(() => reject(new AnvilError("anvil.server.OfflineUnavailableError",
      "The service worker did not answer")), 30000);
    channel.port1.onmessage = (event) => {
      clearTimeout(timer);
      resolve(event.data);
    };
    worker.postMessage({type: "cache", urls}, [channel.port2]);
  });
  if (answer?.failed?.length) console.warn("anvil: could not keep these for offline use:", answer.failed);
  return registration;
}

function activeWorker(registration) {
  if (registration.active && registration.active.state === "activated") return Promise.resolve(registration.active);
  const worker = registration.installing ?? registration.waiting ?? registration.active;
  return new Promise((resolve, reject) => {
    const changed = () => {
      if (worker.state === "activated") {
        worker.removeEventListener("statechange", changed);
        resolve(worker);
      } else if (worker.state === "redundant") {
        worker.removeEventListener("statechange", changed);
        // replaced by a newer one while it installed: use that
        activeWorker(registration).then(resolve, reject);
      }
    };
    worker.addEventListener("statechange", changed);
    changed();
  });
}
