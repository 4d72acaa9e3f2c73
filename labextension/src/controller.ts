// Ties the model to the server: REST fetches on (re)connect, the feed while shown, and
// every server error into the model's banner (never swallowed).
import { ApiError, AnvilApi } from './api';
import { FeedClient } from './feed';
import { AnvilModel } from './model';
import { TaskPage, TaskSummary } from './types';

/** How many of the newest tasks the panel fetches (pages of 500) on each (re)connect. */
export const MAX_FETCHED_TASKS = 2000;

export class AnvilController {
  readonly model = new AnvilModel();
  private feed: FeedClient;
  private followedEnvs = new Set<string>();

  constructor(
    readonly api: AnvilApi,
    token: string
  ) {
    this.feed = new FeedClient({
      url: api.feedUrl(),
      token,
      onOpen: () => {
        this.model.connected = true;
        void this.refresh();
      },
      onClose: reason => {
        this.model.connected = false;
        this.model.changed();
        if (reason && !/code 100[01]/.test(reason)) {
          this.model.setError(`Live updates interrupted (${reason}); reconnecting…`);
        }
      },
      onEvent: event => {
        this.model.apply(event);
        if (event.type === 'task_output' && this.model.outputGaps.has(event.id)) {
          void this.followOutput(event.id);
        }
        if (event.type === 'env_output' && this.model.envGaps.has(event.id) && this.followedEnvs.has(event.id)) {
          void this.followEnv(event.id);
        }
        if (event.type === 'task' && event.task.schedule_id) {
          // a schedule's task moved: its runs list may have a new outcome
        }
      }
    });
  }

  /** The panel is shown: connect (the first open refetches everything). */
  start(): void {
    this.feed.start();
    void this.refresh();
  }

  /** The panel is hidden or closed: hold no connection. */
  stop(): void {
    this.feed.stop();
    this.model.connected = false;
    this.model.changed();
  }

  get feedRunning(): boolean {
    return this.feed.isRunning;
  }

  /** Run a server action; a refusal becomes the banner's message. */
  async guard<T>(action: () => Promise<T>): Promise<T | undefined> {
    try {
      const result = await action();
      return result;
    } catch (error) {
      this.model.setError(error instanceof ApiError ? error.message : String(error));
      return undefined;
    }
  }

  /**
   * The newest tasks, page after page of the API's at most 500, up to MAX_FETCHED_TASKS:
   * the panel filters and pages them itself (the DOM holds one page of rows).
   */
  async loadTasks(): Promise<void> {
    const tasks: TaskSummary[] = [];
    let before: number | null = null;
    do {
      const page: TaskPage = await this.api.tasks({ limit: 500, before });
      tasks.push(...page.tasks);
      before = page.next;
    } while (before !== null && tasks.length < MAX_FETCHED_TASKS);
    this.model.setTasks(tasks);
  }

  async refresh(): Promise<void> {
    const m = this.model;
    const results = await Promise.allSettled([
      this.api.apps().then(r => m.setApps(r.apps, r.problems, r.message ?? null)),
      this.loadTasks(),
      this.api.schedules().then(r => m.setSchedules(r.schedules)),
      Promise.all(['outbox', 'sent', 'inbox'].map(box => this.api.mail({ box, limit: 200 }))).then(pages =>
        m.setMail(pages.flatMap(p => p.messages))
      ),
      this.api.envs().then(r => m.setEnvs(r.envs)),
      this.api.logs({ limit: 1000, since: Math.max(0, (m.logs.length ? m.logs[m.logs.length - 1].seq : 0)) }).then(r =>
        m.logs.length ? m.addLogs(r.records) : m.setLogs(r.records)
      )
    ]);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      const e = failed.reason;
      m.setError(e instanceof ApiError ? e.message : String(e));
    } else if (m.error && m.error.startsWith('Live updates')) {
      m.setError(null);
    }
    for (const id of m.outputs.keys()) {
      void this.followOutput(id);
    }
    for (const id of this.followedEnvs) {
      void this.followEnv(id);
    }
  }

  async followOutput(id: string): Promise<void> {
    const out = await this.guard(() => this.api.taskOutput(id, 0));
    if (out) {
      this.model.setOutput(id, 0, out.text, out.offset, out.running);
    }
  }

  unfollowOutput(id: string): void {
    this.model.outputs.delete(id);
  }

  async followEnv(id: string): Promise<void> {
    this.followedEnvs.add(id);
    const log = await this.guard(() => this.api.envLog(id, 0));
    if (log) {
      this.model.setEnvLog(id, log.text, log.offset);
    }
  }

  unfollowEnv(id: string): void {
    this.followedEnvs.delete(id);
  }

  async loadRuns(id: string): Promise<void> {
    const page = await this.guard(() => this.api.scheduleRuns(id, 5));
    if (page) {
      this.model.setScheduleRuns(id, page.runs);
    }
  }
}
