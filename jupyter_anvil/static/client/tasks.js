// Background tasks as the page sees them: a server function may return a `Task` (from
// server.launch_background_task). It arrives as a Task object whose async methods
// (getState, isCompleted, getReturnValue, ...) ask the server about it, over the
// connection it came from; passed back to a server function it arrives as the same Task.
// Browsers cannot launch or kill tasks. This module registers the Task value type with
// the codec when it is loaded.

import {registerValueType, TYPE_NAME} from "./codec.js";
import {AnvilError, invalidResponse, TASK_ERROR} from "./errors.js";
import {server} from "./server.js";

const TASK_TYPE = "anvil.private.BackgroundTask";
const TASK_RECORD = "anvil.private.background_tasks.record";

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

registerValueType(TASK_TYPE, {
  cls: Task,
  encode: (task) => ({id: task.getId(), name: task.getTaskName()}),
  decode: (data, origin) => (typeof data.id === "string" ? new Task(data.id, data.name, origin) : undefined),
});
