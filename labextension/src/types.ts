// The admin API's JSON, written from jupyter_anvil/host/api_types.py (the contract).

export interface PoolStats {
  kernels: number;
  starting: number;
  busy: number;
  in_flight: number;
  queued: number;
  task_spares: number;
}

export interface ErrorLocation {
  notebook: string;
  cell: number | null;
  line: number | null;
}

export interface AppInfo {
  name: string;
  notebook: string | null;
  status: string; // building, loading, ready, error, stopped
  error: string | null;
  error_location?: ErrorLocation | null;
  functions: string[];
  background_tasks: string[];
  pool: PoolStats | null;
  call_timeout: number | null;
  url: string;
  env: { id: string; status: string } | null;
  requirements: string[];
  requirements_source: string | null;
  requirements_note: string | null;
  schedule_problems?: string[];
}

export interface NotebookProblem {
  notebook: string;
  app: string | null;
  error: string;
}

export interface AppsList {
  apps: AppInfo[];
  problems: NotebookProblem[];
  serving?: false;
  message?: string;
}

export interface TaskSummary {
  id: string;
  app: string;
  name: string;
  status: string; // queued, running, completed, failed, killed, missing
  launched: number;
  started: number | null;
  ended: number | null;
  error: { type: string; message: string; trace: unknown[] } | null;
  launched_by: Record<string, unknown> | null;
  output_dropped: number;
  owner: string | null;
  schedule_id: string | null;
  state: unknown;
}

export interface TaskPage {
  tasks: TaskSummary[];
  next: number | null;
}

export interface TaskOutput {
  text: string;
  offset: number;
  dropped: number;
  running: boolean;
}

export interface ScheduleInfo {
  id: string;
  app: string;
  task: string;
  name: string;
  spec: string | Record<string, unknown>;
  description: string;
  tz: string;
  misfire: string;
  source: string;
  paused: boolean;
  next_run: number | null;
  last_run: number | null;
  last_status: string | null;
  last_task_id: string | null;
  problem: string | null;
  created: number;
  updated: number;
  app_loaded: boolean;
}

export interface ScheduleRunInfo {
  seq: number;
  schedule_id: string;
  app: string;
  due: number;
  at: number;
  task_id: string | null;
  outcome: string;
  reason: string;
  server: string | null;
}

export interface MailInfo {
  id: string;
  app: string;
  box: string; // outbox, sent, inbox
  status: string;
  created: number;
  updated: number;
  message_id: string | null;
  envelope_from: string;
  recipients: string[];
  from_header: string;
  to_header: string;
  subject: string;
  size: number;
  attempts: number;
  smtp_code: number | null;
  outcome: string;
  next_attempt: number | null;
  deadline: number | null;
  owner: string | null;
  call_id: string | null;
}

export interface MailPart {
  index: number;
  name: string | null;
  content_type: string;
  size: number;
  content_id: string | null;
  inline: boolean;
  url: string;
}

export interface MailDetail extends MailInfo {
  headers: string[][];
  text: string | null;
  html: string | null;
  parts: MailPart[];
  raw_url: string;
}

export interface EnvInfo {
  id: string;
  requirements: string[];
  python: string | null;
  status: string; // building, ready, failed
  error: string | null;
  size_bytes: number | null;
  created: number | null;
  last_used: number | null;
  apps: string[];
}

export interface EnvLog {
  text: string;
  offset: number;
  building: boolean;
}

export interface LogRecord {
  seq: number;
  time: number;
  app: string;
  function: string;
  call_id: string;
  stream: string; // stdout, stderr, traceback, system
  text: string;
}

export type FeedEvent =
  | { type: 'hello'; server: string; time: number }
  | { type: 'app'; app: AppInfo }
  | { type: 'app_removed'; name: string }
  | { type: 'logs'; records: LogRecord[] }
  | { type: 'task'; task: TaskSummary }
  | { type: 'task_output'; id: string; text: string; offset: number }
  | {
      type: 'schedule';
      event: string;
      id: string;
      app: string;
      schedule: ScheduleInfo | null;
      run: ScheduleRunInfo | null;
    }
  | { type: 'mail'; mail: MailInfo }
  | { type: 'mail_deleted'; id: string; app: string }
  | { type: 'env'; env: EnvInfo }
  | { type: 'env_output'; id: string; text: string; offset: number };
