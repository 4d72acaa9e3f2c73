// jupyter-anvil browser client: call an app's server functions from a web page.
//
//   import {server, kwargs, AnvilError} from "/anvil/client.js";
//   const greeting = await server.call("greet", "Ada");
//   const loud = await server.call("shout", "hi", kwargs({excited: true}));
//
// Plain ES modules, no build step. This one is the only import pages need; it gathers
// the exports of the modules in client/ beside it, served at {base_url}anvil/client/:
//   errors.js     AnvilError and the errors the client raises
//   codec.js      Anvil's value encoding (dates, big ints, Media, portable objects)
//   session.js    the window's session token per app, expiry, reset; cookie changes
//   transport.js  the WebSocket (reconnects, Media chunks) and the HTTP fallback
//   tasks.js      Task objects for background tasks
//   offline.js    the online state and its events, the app's service worker (enableOffline)
//   store.js      the app's IndexedDB database: localStore(name) and the queue's records
//   queue.js      queued calls (callQueued): kept, replayed in order, run exactly once
//   server.js     AnvilServer and `server`, which put the above together
// They import one another by relative URL, so they work under any base_url and when a
// page of another origin imports this file.
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
//
// Offline: with no connection a call rejects at once with AppOfflineError.
// `server.isAppOnline()`, `server.on("online" | "offline", fn)` follow the state;
// `server.enableOffline()` registers the app's service worker (anvil/apps/<app>/sw.js) so
// the app's pages load offline; `localStore(name)` keeps values in the browser;
// `server.callQueued(name, ...args)` keeps a call until it can be sent and runs it exactly
// once (an idempotency key), `server.queuedCalls()` lists those waiting.

export {AnvilError, AppOfflineError} from "./client/errors.js";
export {anvilDate, isAnvilDate, kwargs, portable, portableTypeName} from "./client/codec.js";
export {Task} from "./client/tasks.js"; // also teaches the codec the Task value type
export {AnvilServer, localStore, server} from "./client/server.js";
export {QueuedCall} from "./client/queue.js";
