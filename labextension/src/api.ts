// A small client of the admin API (anvil/api/...): ServerConnection.makeRequest adds the
// token and the XSRF header, under the server's base URL. A refusal becomes an ApiError
// carrying the server's own message (AdminError's `message`), for the panel's banner.
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import type {
  AppInfo,
  AppsList,
  EnvInfo,
  EnvLog,
  LogRecord,
  MailDetail,
  MailInfo,
  ScheduleInfo,
  ScheduleRunInfo,
  TaskOutput,
  TaskPage,
  TaskSummary
} from './types';

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export type Query = Record<string, string | number | null | undefined>;

export function queryString(query: Query): string {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(query)) {
    if (value === null || value === undefined || value === '') {
      continue;
    }
    parts.push(`${encodeURIComponent(key)}=${encodeURIComponent(String(value))}`);
  }
  return parts.length ? `?${parts.join('&')}` : '';
}

export class AnvilApi {
  constructor(readonly settings: ServerConnection.ISettings) {}

  /** The absolute URL of an admin route (for links and downloads). */
  url(path: string, query: Query = {}): string {
    return URLExt.join(this.settings.baseUrl, 'anvil/api', path) + queryString(query);
  }

  /** The feed's WebSocket URL (the token is added by the feed client, as Lab's own sockets do). */
  feedUrl(): string {
    return URLExt.join(this.settings.wsUrl, 'anvil/api/feed');
  }

  async request<T>(path: string, init: RequestInit = {}, query: Query = {}): Promise<T> {
    const url = this.url(path, query);
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(url, init, this.settings);
    } catch (error) {
      throw new ApiError(`The Jupyter server cannot be reached: ${String(error)}`, 0);
    }
    const text = await response.text();
    let body: any = null;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch {
        body = null;
      }
    }
    if (!response.ok) {
      const message =
        body && typeof body.message === 'string' && body.message
          ? body.message
          : `${response.status} ${response.statusText || 'error'} from ${path}`;
      throw new ApiError(message, response.status);
    }
    if (text && body === null) {
      throw new ApiError(`${path} answered something that is not JSON`, response.status);
    }
    return body as T;
  }

  private send<T>(method: string, path: string, payload?: unknown): Promise<T> {
    const init: RequestInit = { method };
    if (payload !== undefined) {
      init.body = JSON.stringify(payload);
      init.headers = { 'Content-Type': 'application/json' };
    }
    return this.request<T>(path, init);
  }

  apps(): Promise<AppsList> {
    return this.request<AppsList>('apps');
  }

  reloadApp(name: string): Promise<AppInfo> {
    return this.send<AppInfo>('POST', `apps/${encodeURIComponent(name)}/reload`);
  }

  tasks(filter: { app?: string; status?: string; name?: string; limit?: number; before?: number | null } = {}): Promise<TaskPage> {
    return this.request<TaskPage>('tasks', {}, filter);
  }

  taskOutput(id: string, offset = 0): Promise<TaskOutput> {
    return this.request<TaskOutput>(`tasks/${encodeURIComponent(id)}/output`, {}, { offset });
  }

  killTask(id: string): Promise<TaskSummary> {
    return this.send<TaskSummary>('POST', `tasks/${encodeURIComponent(id)}/kill`);
  }

  schedules(): Promise<{ schedules: ScheduleInfo[] }> {
    return this.request('schedules');
  }

  setPaused(id: string, paused: boolean): Promise<ScheduleInfo> {
    return this.send<ScheduleInfo>('PATCH', `schedules/${encodeURIComponent(id)}`, { paused });
  }

  runSchedule(id: string): Promise<ScheduleRunInfo> {
    return this.send<ScheduleRunInfo>('POST', `schedules/${encodeURIComponent(id)}/run`);
  }

  scheduleRuns(id: string, limit = 5): Promise<{ runs: ScheduleRunInfo[]; next: number | null }> {
    return this.request(`schedules/${encodeURIComponent(id)}/runs`, {}, { limit });
  }

  mail(filter: { box?: string; app?: string; limit?: number } = {}): Promise<{ messages: MailInfo[]; next: number | null }> {
    return this.request('mail', {}, filter);
  }

  mailDetail(id: string): Promise<MailDetail> {
    return this.request<MailDetail>(`mail/${encodeURIComponent(id)}`);
  }

  envs(): Promise<{ envs: EnvInfo[] }> {
    return this.request('envs');
  }

  envLog(id: string, offset = 0): Promise<EnvLog> {
    return this.request<EnvLog>(`envs/${encodeURIComponent(id)}/log`, {}, { offset });
  }

  logs(filter: { app?: string; since?: number; limit?: number } = {}): Promise<{ records: LogRecord[] }> {
    return this.request('logs', {}, filter);
  }
}
