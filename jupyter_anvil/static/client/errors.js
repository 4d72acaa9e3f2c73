// Errors the client raises or passes on: AnvilError (the one error type pages catch), the
// Anvil error names the client itself uses, and the errors for an unreachable or garbled
// server. Every other module of the client takes its errors from here.

export const SESSION_EXPIRED = "anvil.server.SessionExpiredError";
export const TASK_ERROR = "anvil.server.BackgroundTaskError";

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

/** The server answered, but not with anything the client understands. */
export function invalidResponse(detail) {
  return new AnvilError("anvil.server.InvalidResponseError", `Invalid response from the server: ${detail}`);
}

/** The socket a call was sent on closed before the call was answered. */
export function connectionLost() {
  return new AnvilError("anvil.server.RuntimeUnavailableError", "Connection to the server was lost");
}


/** The error a call gets when the server says the window's session has expired. */
export function sessionExpiredError(error) {
  return new AnvilError(SESSION_EXPIRED, error?.message ?? "Session expired", error ?? undefined);
}
