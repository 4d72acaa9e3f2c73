// The service worker of one app, served at {base}anvil/apps/<app>/sw.js with a prelude
// (self.ANVIL_SW = {app, scope, client, clientModules}: paths on this server) and
// registered by `server.enableOffline()` with the app's folder as its scope. It keeps the
// app's own static files and the browser client, so a page visited once online loads with
// no connection.
//
// Strategy: network first with a short timeout, the cache as fallback. A fresh 200 from the
// network replaces the cached copy, so online a new version of a page wins. Only GETs of
// this origin are cached, and only the app's static files (under the scope, never under
// `_/`: calls, the socket, tasks, the online check, cookies) and the client's modules:
// never a server call, never another app's files, never anything but a plain 200.

const CONFIG = self.ANVIL_SW;
const ORIGIN = self.location.origin;
const SCOPE = new URL(CONFIG.scope, ORIGIN).href; // {origin}{base}anvil/apps/<app>/
const CLIENT = new URL(CONFIG.client, ORIGIN).href; // .../anvil/client.js
const CLIENT_MODULES = new URL(CONFIG.clientModules, ORIGIN).href; // .../anvil/client/
const SERVER_ROUTES = SCOPE + "_/";
const WORKER = SCOPE + "sw.js";
// One cache per app (the scope names it); a new layout of the cache bumps the version and
// activation drops the app's older caches.
const CACHE_PREFIX = `jupyter-anvil:${SCOPE}:`;
const CACHE_NAME = CACHE_PREFIX + "v1";
const NETWORK_TIMEOUT_MS = 4000;

/** Whether `url` (a string) is a file this worker may keep. */
function cacheable(url) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    return false;
  }
  if (parsed.origin !== ORIGIN) return false;
  const path = parsed.origin + parsed.pathname; // what decides, whatever the query says
  if (path === CLIENT) return true;
  if (path.startsWith(CLIENT_MODULES)) return !path.slice(CLIENT_MODULES.length).includes("/");
  if (!path.startsWith(SCOPE)) return false; // another app's files, or none of ours
  return !path.startsWith(SERVER_ROUTES) && path !== WORKER;
}

/** The cache key of a request: its URL without query or fragment. The server serves a
 * file by its path whatever the query says (`page.html?v=2` is `page.html`), so one copy
 * per file, and the cache holds no more entries than the app has files. */
function keyOf(url) {
  const u = new URL(url);
  return u.origin + u.pathname;
}

function worthKeeping(response) {
  return response && response.status === 200 && response.type === "basic" && !response.redirected;
}

async function keep(url, response) {
  if (!worthKeeping(response)) return;
  const cache = await caches.open(CACHE_NAME);
  await cache.put(keyOf(url), response);
}

async function fromCache(request) {
  const cache = await caches.open(CACHE_NAME);
  return cache.match(keyOf(request.url)); // another query string of the same file: the same file
}

/** Network first: the network's answer if it comes within the timeout (kept if it is a
 * 200), else the cached copy; with nothing cached, whatever the network gives in the end. */
async function networkFirst(event) {
  const request = event.request;
  const network = fetch(request).then((response) => {
    // kept beside the answer, not before it: a cache that refuses it (quota) or is slow to
    // take a big file never holds back or fails what the network answered
    if (worthKeeping(response)) {
      event.waitUntil(keep(request.url, response.clone()).catch(() => undefined));
    }
    return response;
  });
  event.waitUntil(network.catch(() => null)); // a late answer still refreshes the cache
  let timer;
  const timeout = new Promise((resolve) => { timer = setTimeout(() => resolve("timeout"), NETWORK_TIMEOUT_MS); });
  let outcome;
  try {
    outcome = await Promise.race([network, timeout]);
  } catch {
    outcome = "failed";
  } finally {
    clearTimeout(timer);
  }
  if (outcome !== "timeout" && outcome !== "failed") return outcome;
  const cached = await fromCache(request);
  if (cached) return cached;
  if (outcome === "timeout") return network; // slow, but all there is
  return Response.error();
}

self.addEventListener("install", () => {
  self.skipWaiting(); // a new version of the worker takes over at once
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith(CACHE_PREFIX) && name !== CACHE_NAME) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  // Anything else goes to the network as if there were no worker: calls, the socket,
  // other apps, other origins.
  if (request.method !== "GET" || !cacheable(request.url)) return;
  event.respondWith(networkFirst(event));
});

// A page that just registered the worker was loaded without it: it sends the URLs it
// loaded ({type: "cache", urls}) and a port; the worker keeps those it may and answers
// {type: "cached", cached: [urls], failed: [urls]} on the port.
self.addEventListener("message", (event) => {
  const data = event.data;
  const port = event.ports?.[0];
  if (!data || data.type !== "cache" || !Array.isArray(data.urls) || !port) return;
  event.waitUntil((async () => {
    const cached = [];
    const failed = [];
    const urls = [...new Set(data.urls.filter((u) => typeof u === "string" && cacheable(u)).map(keyOf))];
    await Promise.all(urls.map(async (url) => {
      try {
        const response = await fetch(url, {credentials: "same-origin", cache: "no-cache"});
        if (worthKeeping(response)) {
          await keep(url, response);
          cached.push(url);
        } else {
          failed.push(url);
        }
      } catch {
        failed.push(url);
      }
    }));
    port.postMessage({type: "cached", cached, failed});
  })());
});
