// Errors the client raises or passes on: AnvilError (the one error type pages catch), the
// Anvil error names the client itself uses, and the errors for an unreachable or garbled
// server. Every other module of the client takes its errors from here.

export const SESSION_EXPIRED = "anvil.server.SessionExpiredError";
export const TASK_ERROR = "anvil.server.BackgroundTaskError";
export const APP_OFFLINE = "anvil.server.AppOfflineError";
export const RUNTIME_UNAVAILABLE = "anvil.server.RuntimeUnavailableError";

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

/** The server cannot be reached: the device is offline, or the server is down (Anvil's
 * anvil.server.AppOfflineError; the server itself never sends it). */
export class AppOfflineError extends AnvilError {
  constructor(message = "The app is offline: could not reach the server") {
    super(APP_OFFLINE, message);
    this.name = "AppOfflineError";
  }
}

/** The server answered, but not with anything the client understands. */
export function invalidResponse(detail) {
  return new AnvilError("anvil.server.InvalidResponseError", `Invalid response from the server: ${detail}`);
}

/** The socket a call was sent on closed before the call was answered. */
export function connectionLost() {
  return new AnvilError(RUNTIME_UNAVAILABLE, LOST);
}


/** The error a call gets when the server says the window's session has expired. */
export function sessionExpiredError(error) {
  return new AnvilError(SESSION_EXPIRED, error?.message ?? "Session expired", error ?? undefined);
}

const LOST = "Connection to the server was lost";
// A fetch that failed although the server answers a probe: a connection cut mid-call, or
// a page of another origin the app does not list (offline.js)
export const UNREACHABLE = "Could not reach the server";

/** Whether `error` says the call may not have run to an answer the client got, so that
 * sending it again (with its idempotency key) is safe and useful: no connection, a
 * connection lost or cut, or the server's word that it did not run the keyed call for a
 * cause that may pass (Retry-After: the app still starting, no kernel free, the key still
 * running elsewhere, a store fault). */
export function isRetryable(error) {
  if (!(error instanceof AnvilError)) return false;
  if (error.type === APP_OFFLINE || error.retryAfter > 0) return true;
  const message = error.message ?? "";
  return error.type === RUNTIME_UNAVAILABLE && (message === LOST || message.startsWith(UNREACHABLE));
}
