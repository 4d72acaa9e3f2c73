// The window's session with each app, and this origin's cookies. The server keeps
// `server.session` per browser window: the client holds the window's token in
// sessionStorage under "anvil-session:{base}anvil/apps/<app>/" (two tabs are two sessions,
// a reload keeps its session), shared by every AnvilServer object for that app. This
// module owns that state: adopting a token the server hands out, expiry (with its
// listeners), resetSession's new epoch, and the cookie generation that tells a socket its
// cookies are out of date (with the cookie-ticket trade that stores a socket call's
// cookies). When and how tokens are presented is the transport's business.

const sessions = new Map(); // storage key -> {token, epoch, expired, listeners}

function storage() {
  try {
    return globalThis.sessionStorage ?? null;
  } catch { // sandboxed frames and some privacy modes refuse access
    return null;
  }
}

/** The window's session with the app whose storage key is `key`: {key, token, epoch,
 * expired, listeners}, read from sessionStorage the first time. */
export function sessionFor(key) {
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
export function sessionNow(state) {
  return {token: state.token, epoch: state.epoch};
}

/** Whether `sent` (from sessionNow) is still the window's session. */
export function isCurrent(state, sent) {
  return sent !== undefined && state.token === sent.token && state.epoch === sent.epoch;
}

/** The server gave this window a session token (for the session `sent` names). */
export function adoptToken(state, sent, token) {
  // A reply to a request made before resetSession() (or before another transport got a
  // newer token) must not bring the old session back.
  if (!isCurrent(state, sent) || typeof token !== "string" || !token) return;
  state.expired = false;
  if (token !== state.token) storeToken(state, token);
}

/** The server says the session `sent` is no longer live. */
export function markExpired(state, sent, error) {
  if (!isCurrent(state, sent) || state.expired) return;
  state.expired = true;
  // Keep presenting the dead token (the server keeps refusing it, on both transports)
  // until resetSession(); but forget it in storage, so a reload starts afresh.
  try {
    storage()?.removeItem(state.key);
  } catch { /* nothing stored */ }
  notifyExpired(state, error);
}

/** Call the window's onSessionExpired listeners (markExpired does; so does the call queue
 * when a call recorded in an older session finds it expired). */
export function notifyExpired(state, error) {
  for (const listener of [...state.listeners]) {
    try {
      listener(error);
    } catch (e) {
      console.error("anvil: an onSessionExpired callback failed", e);
    }
  }
}

/** Forget the window's session: calls from now on start a new, empty one. */
export function startNewSession(state) {
  state.expired = false;
  state.epoch += 1;
  storeToken(state, null);
}

// ---------------------------------------------------------------------------------------
// Cookie changes: sockets opened before a change are replaced before their next call

export let cookieGeneration = 0; // bumped whenever this origin's cookies change
const cookieChannel = typeof BroadcastChannel === "function" ? new BroadcastChannel("jupyter-anvil.cookies") : null;
if (cookieChannel) cookieChannel.onmessage = () => { cookieGeneration += 1; };

/** This origin's cookies changed (here or, told by the channel, in another tab). */
export function cookiesChanged() {
  cookieGeneration += 1;
  cookieChannel?.postMessage("changed"); // other tabs of this origin (not this one)
  return cookieGeneration;
}


/** Trade a cookie ticket (from a socket call's reply) for its Set-Cookie headers, at
 * `cookiesUrl()` (the app's `_/cookies`): they are HttpOnly, so JS never sees them. */
export async function storeCookies(cookiesUrl, ticket) {
  try {
    const response = await fetch(cookiesUrl(), {
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
