// The panel's state: the lists the admin API returns, kept current by the feed's events.
// Plain TypeScript (no JupyterLab import) so jest tests it directly. Listeners are told of
// changes coalesced: many events in a burst make one `changed` call (see `schedule`).
import type {
  AppInfo,
  EnvInfo,
  FeedEvent,
  LogRecord,
  MailInfo,
  NotebookProblem,
  ScheduleInfo,
  ScheduleRunInfo,
  TaskSummary
} from './types';

/** At most this many tasks, logs, mails are kept in memory (newest win). */
export const MAX_TASKS = 5000;
export const MAX_LOG_RECORDS = 5000;
export const MAX_MAIL = 2000;
/** A task's or an environment's output is tailed up to this many characters (the end kept). */
export const MAX_OUTPUT_CHARS = 200_000;

/** A task's progress in [0, 1] from its task_state, or null when the state has none. */
export function progressOf(state: unknown): number | null {
  if (state === null || typeof state !== 'object' || Array.isArray(state)) {
    return null;
  }
  const s = state as Record<string, unknown>;
  const done = toNumber(s.done);
  const total = toNumber(s.total);
  if (done !== null && total !== null && total > 0) {
    return clamp(done / total);
  }
  const progress = toNumber(s.progress);
  if (progress !== null && progress >= 0 && progress <= 1) {
    return progress;
  }
  return null;
}

function toNumber(value: unknown): number | null {
  // big numbers come as strings (readable.py); a numeric string counts
  if (typeof value === 'number' && Number.isFinite(value)) {
    return value;
  }
  if (typeof value === 'string' && value.trim() !== '' && Number.isFinite(Number(value))) {
    return Number(value);
  }
  return null;
}

function clamp(x: number): number {
  return Math.max(0, Math.min(1, x));
}

export interface TaskFilter {
  app: string;
  status: string;
  name: string;
}

export interface OutputTail {
  text: string;
  offset: number; // characters printed up to the end of `text`
  running: boolean;
}

/** The records of one call, in order: the Logs section shows each call as one group. */
export interface LogGroup {
  key: string;
  app: string;
  function: string;
  callId: string;
  time: number;
  records: LogRecord[];
  hasError: boolean;
}

export type Scheduler = (flush: () => void) => void;

/** Coalesce bursts of events into one redraw per animation frame (or 50 ms in tests). */
export const defaultScheduler: Scheduler = flush => {
  if (typeof requestAnimationFrame === 'function') {
    requestAnimationFrame(() => flush());
  } else {
    setTimeout(flush, 50);
  }
};

export class AnvilModel {
  apps = new Map<string, AppInfo>();
  problems: NotebookProblem[] = [];
  appsMessage: string | null = null;
  tasks = new Map<string, TaskSummary>();
  outputs = new Map<string, OutputTail>();
  schedules = new Map<string, ScheduleInfo>();
  scheduleRuns = new Map<string, ScheduleRunInfo[]>();
  mail = new Map<string, MailInfo>();
  envs = new Map<string, EnvInfo>();
  envOutput = new Map<string, string>();
  /** build.log's byte offset up to which `envOutput` holds an env's log (set by a fetch). */
  readonly envOffsets = new Map<string, number>();
  /** Envs whose feed output skipped past what is held: the controller refetches their log. */
  readonly envGaps = new Set<string>();
  logs: LogRecord[] = [];
  /** The last server error, for the banner (null: none). */
  error: string | null = null;
  connected = false;
  /** The server instance of the feed's last hello: a new one means refetch everything. */
  serverId: string | null = null;

  /** Task ids whose output had a gap in the feed: the panel refetches them. */
  readonly outputGaps = new Set<string>();

  private listeners = new Set<() => void>();
  private pending = false;

  constructor(private scheduler: Scheduler = defaultScheduler) {}

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Ask for one `changed` call soon, however many changes come before it. */
  changed(): void {
    if (this.pending) {
      return;
    }
    this.pending = true;
    this.scheduler(() => {
      this.pending = false;
      for (const listener of [...this.listeners]) {
        listener();
      }
    });
  }

  setError(message: string | null): void {
    this.error = message;
    this.changed();
  }

  // -- lists loaded through REST (after connecting, and after each reconnect) ----------------

  setApps(apps: AppInfo[], problems: NotebookProblem[], message: string | null = null): void {
    this.apps = new Map(apps.map(a => [a.name, a]));
    this.problems = problems;
    this.appsMessage = message;
    this.changed();
  }

  setTasks(tasks: TaskSummary[]): void {
    this.tasks = new Map(tasks.map(t => [t.id, t]));
    this.changed();
  }

  setSchedules(schedules: ScheduleInfo[]): void {
    this.schedules = new Map(schedules.map(s => [s.id, s]));
    this.changed();
  }

  setScheduleRuns(id: string, runs: ScheduleRunInfo[]): void {
    this.scheduleRuns.set(id, runs.slice(0, 5));
    this.changed();
  }

  setMail(messages: MailInfo[]): void {
    this.mail = new Map(messages.map(m => [m.id, m]));
    this.changed();
  }

  setEnvs(envs: EnvInfo[]): void {
    this.envs = new Map(envs.map(e => [e.id, e]));
    this.changed();
  }

  setLogs(records: LogRecord[]): void {
    this.logs = [];
    this.addLogs(records);
  }

  /** Output fetched through REST from `start` on (`start` 0: the whole output). */
  setOutput(id: string, start: number, text: string, offset: number, running: boolean): void {
    const tail = this.outputs.get(id);
    const before = start === 0 || !tail ? '' : tail.text.slice(0, Math.max(0, tail.text.length - (tail.offset - start)));
    this.outputs.set(id, { text: cut(before + text, MAX_OUTPUT_CHARS), offset, running });
    this.outputGaps.delete(id);
    this.changed();
  }

  // -- the feed ---------------------------------------------------------------------------------

  /** Apply one feed event. Unknown types are ignored (a newer server may send more). */
  apply(event: FeedEvent): void {
    switch (event.type) {
      case 'hello':
        this.serverId = event.server;
        break;
      case 'app':
        this.apps.set(event.app.name, event.app);
        break;
      case 'app_removed':
        this.apps.delete(event.name);
        break;
      case 'logs':
        this.addLogs(event.records);
        return;
      case 'task':
        this.putTask(event.task);
        break;
      case 'task_output':
        this.appendOutput(event.id, event.text, event.offset);
        break;
      case 'schedule':
        if (event.event === 'deleted' || event.schedule === null) {
          this.schedules.delete(event.id);
        } else {
          this.schedules.set(event.id, event.schedule);
        }
        if (event.run) {
          const runs = this.scheduleRuns.get(event.id) ?? [];
          this.scheduleRuns.set(event.id, [event.run, ...runs.filter(r => r.seq !== event.run!.seq)].slice(0, 5));
        }
        break;
      case 'mail':
        this.mail.set(event.mail.id, event.mail);
        trimMap(this.mail, MAX_MAIL, m => m.created);
        break;
      case 'mail_deleted':
        this.mail.delete(event.id);
        break;
      case 'env':
        this.envs.set(event.env.id, event.env);
        break;
      case 'env_output':
        this.appendEnvOutput(event.id, event.text, event.offset);
        break;
      default:
        return;
    }
    this.changed();
  }

  putTask(task: TaskSummary): void {
    this.tasks.set(task.id, task);
    const tail = this.outputs.get(task.id);
    if (tail && task.status !== 'running' && task.status !== 'queued') {
      tail.running = false;
    }
    trimMap(this.tasks, MAX_TASKS, t => t.launched);
  }

  /**
   * Feed output: `offset` is the output's length AFTER `text`. Only output that continues
   * what is held is appended; a gap (output lost between a fetch and the feed) marks the
   * task for a refetch; what is already held is skipped.
   */
  appendOutput(id: string, text: string, offset: number): void {
    const tail = this.outputs.get(id);
    if (!tail) {
      return; // not followed (its output was never fetched): nothing to append to
    }
    const start = offset - text.length;
    if (offset <= tail.offset) {
      return; // already held
    }
    if (start > tail.offset) {
      this.outputGaps.add(id);
      return;
    }
    const fresh = text.slice(tail.offset - start);
    tail.text = cut(tail.text + fresh, MAX_OUTPUT_CHARS);
    tail.offset = offset;
  }

  /** A fetched environment log: `offset` is build.log's byte offset after `text`. */
  setEnvLog(id: string, text: string, offset: number): void {
    this.envOutput.set(id, cut(text, MAX_OUTPUT_CHARS));
    this.envOffsets.set(id, offset);
    this.envGaps.delete(id);
    this.changed();
  }

  /**
   * Feed output of an environment build, `offset` being build.log's byte offset AFTER `text`
   * (UTF-8 bytes, as `/envs/<id>/log` counts). As task output: what is held is skipped, a
   * gap marks the env for a refetch. Before any fetch the chunks are simply tailed.
   */
  appendEnvOutput(id: string, text: string, offset: number | undefined): void {
    const held = this.envOffsets.get(id);
    if (held === undefined || typeof offset !== 'number') {
      this.envOutput.set(id, cut((this.envOutput.get(id) ?? '') + text, MAX_OUTPUT_CHARS));
      return;
    }
    if (offset <= held) {
      return; // already held
    }
    const bytes = new TextEncoder().encode(text);
    const start = offset - bytes.length;
    if (start > held) {
      this.envGaps.add(id);
      return;
    }
    const fresh = new TextDecoder().decode(bytes.subarray(held - start));
    this.envOutput.set(id, cut((this.envOutput.get(id) ?? '') + fresh, MAX_OUTPUT_CHARS));
    this.envOffsets.set(id, offset);
  }

  addLogs(records: LogRecord[]): void {
    if (!records.length) {
      return;
    }
    const last = this.logs.length ? this.logs[this.logs.length - 1].seq : -Infinity;
    const fresh = records.filter(r => r.seq > last);
    this.logs.push(...fresh);
    if (this.logs.length > MAX_LOG_RECORDS) {
      this.logs.splice(0, this.logs.length - MAX_LOG_RECORDS);
    }
    this.changed();
  }

  // -- views ------------------------------------------------------------------------------------

  appList(): AppInfo[] {
    return [...this.apps.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  appForNotebook(path: string): AppInfo | null {
    for (const app of this.apps.values()) {
      if (app.notebook === path) {
        return app;
      }
    }
    return null;
  }

  /** Tasks newest first, filtered (app and status exact, name a case-insensitive substring). */
  taskList(filter: Partial<TaskFilter> = {}): TaskSummary[] {
    const name = (filter.name ?? '').toLowerCase();
    return [...this.tasks.values()]
      .filter(
        t =>
          (!filter.app || t.app === filter.app) &&
          (!filter.status || t.status === filter.status) &&
          (!name || t.name.toLowerCase().includes(name))
      )
      .sort((a, b) => b.launched - a.launched || a.id.localeCompare(b.id));
  }

  scheduleList(): ScheduleInfo[] {
    return [...this.schedules.values()].sort(
      (a, b) => a.app.localeCompare(b.app) || a.name.localeCompare(b.name) || a.id.localeCompare(b.id)
    );
  }

  mailList(box: string, app = ''): MailInfo[] {
    return [...this.mail.values()]
      .filter(m => m.box === box && (!app || m.app === app))
      .sort((a, b) => b.created - a.created);
  }

  envList(): EnvInfo[] {
    return [...this.envs.values()].sort((a, b) => (b.created ?? 0) - (a.created ?? 0));
  }

  /** Log records grouped by call (consecutive or not), newest group first. */
  logGroups(app = ''): LogGroup[] {
    const groups = new Map<string, LogGroup>();
    for (const r of this.logs) {
      if (app && r.app !== app) {
        continue;
      }
      // the server's own notes ("") and loading ("-") are not calls: one group per record
      const key = r.call_id && r.call_id !== '-' ? `${r.app}\u0000${r.call_id}` : `seq:${r.seq}`;
      let group = groups.get(key);
      if (!group) {
        group = { key, app: r.app, function: r.function, callId: r.call_id, time: r.time, records: [], hasError: false };
        groups.set(key, group);
      }
      group.records.push(r);
      group.time = Math.max(group.time, r.time);
      if (r.stream === 'traceback' || r.stream === 'stderr') {
        group.hasError = true;
      }
    }
    return [...groups.values()].sort((a, b) => b.time - a.time);
  }
}

function cut(text: string, max: number): string {
  return text.length > max ? text.slice(text.length - max) : text;
}

function trimMap<T>(map: Map<string, T>, max: number, key: (item: T) => number): void {
  if (map.size <= max) {
    return;
  }
  const oldest = [...map.entries()].sort((a, b) => key(a[1]) - key(b[1])).slice(0, map.size - max);
  for (const [id] of oldest) {
    map.delete(id);
  }
}

/** Seconds as "1 h 02 min", "3 min 05 s", "12.3 s". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) {
    return '';
  }
  if (seconds < 60) {
    return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  }
  const m = Math.floor(seconds / 60);
  if (m < 60) {
    return `${m} min ${String(Math.floor(seconds % 60)).padStart(2, '0')} s`;
  }
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

/** Bytes as "1.2 MB". */
export function formatBytes(bytes: number | null): string {
  if (bytes === null || !Number.isFinite(bytes)) {
    return '';
  }
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}
