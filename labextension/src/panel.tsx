// The "Anvil" sidebar panel: six sections over one model. Each list renders at most
// PAGE_SIZE rows at a time (a pager below), so a thousand tasks stay smooth.
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { ReactWidget } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { AnvilController } from './controller';
import { formatBytes, formatDuration, progressOf } from './model';
import type { AppInfo, EnvInfo, MailDetail, MailInfo, ScheduleInfo, TaskSummary } from './types';

export const PAGE_SIZE = 100;

/** Tab labels short enough for one line at the default sidebar width (the title says it whole). */
const SHORT_TAB_LABELS: Record<string, string> = { Environments: 'Envs', Schedules: 'Sched.' };
const SECTIONS = ['Apps', 'Tasks', 'Schedules', 'Mail', 'Environments', 'Logs'] as const;
type Section = (typeof SECTIONS)[number];

export interface PanelHooks {
  openNotebook: (path: string, cell: number | null) => void;
}

function time(t: number | null | undefined): string {
  if (!t) {
    return '—';
  }
  const d = new Date(t * 1000);
  const today = new Date();
  return d.toDateString() === today.toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}

function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

function Badge(props: { status: string }): JSX.Element {
  return <span className={`jp-Anvil-badge jp-Anvil-status-${props.status}`}>{props.status}</span>;
}

function Pager(props: { total: number; page: number; setPage: (p: number) => void }): JSX.Element | null {
  const pages = Math.ceil(props.total / PAGE_SIZE);
  if (pages <= 1) {
    return null;
  }
  return (
    <div className="jp-Anvil-pager">
      <button className="jp-Anvil-button" disabled={props.page === 0} onClick={() => props.setPage(props.page - 1)}>
        ‹ Newer
      </button>
      <span>
        {props.page * PAGE_SIZE + 1}–{Math.min(props.total, (props.page + 1) * PAGE_SIZE)} of {props.total}
      </span>
      <button
        className="jp-Anvil-button"
        disabled={props.page >= pages - 1}
        onClick={() => props.setPage(props.page + 1)}
      >
        Older ›
      </button>
    </div>
  );
}

function usePage<T>(items: T[], deps: unknown[]): [T[], JSX.Element | null] {
  const [page, setPage] = React.useState(0);
  React.useEffect(() => setPage(0), deps);
  const maxPage = Math.max(0, Math.ceil(items.length / PAGE_SIZE) - 1);
  const p = Math.min(page, maxPage);
  return [items.slice(p * PAGE_SIZE, (p + 1) * PAGE_SIZE), <Pager total={items.length} page={p} setPage={setPage} />];
}

function AppsSection(props: { c: AnvilController; hooks: PanelHooks }): JSX.Element {
  const { c } = props;
  const m = c.model;
  const apps = m.appList();
  const tasksOf = (app: string) => [...m.tasks.values()].filter(t => t.app === app && t.status === 'running').length;
  const schedulesOf = (app: string) => [...m.schedules.values()].filter(s => s.app === app).length;
  return (
    <div className="jp-Anvil-list" data-section="apps">
      {m.appsMessage && <div className="jp-Anvil-note">{m.appsMessage}</div>}
      {apps.length === 0 && <div className="jp-Anvil-empty">No apps: tag a notebook cell “server” to make one.</div>}
      {apps.map((app: AppInfo) => (
        <div className="jp-Anvil-card" key={app.name} data-app={app.name}>
          <div className="jp-Anvil-row">
            <span className="jp-Anvil-title" title={app.name}>
              {app.name}
            </span>
            <Badge status={app.status} />
          </div>
          <div className="jp-Anvil-row jp-Anvil-actions">
            <a className="jp-Anvil-link" href={app.url} target="_blank" rel="noopener noreferrer" title="Open the app's page">
              page ↗
            </a>
            {app.notebook && (
              <a
                className="jp-Anvil-link"
                href="#"
                title="Open the notebook"
                onClick={e => {
                  e.preventDefault();
                  props.hooks.openNotebook(app.notebook!, null);
                }}
              >
                notebook
              </a>
            )}
            <button
              className="jp-Anvil-button"
              title="Read the notebook again and reload the app"
              onClick={() => void c.guard(() => c.api.reloadApp(app.name)).then(a => a && (m.apps.set(a.name, a), m.changed()))}
            >
              Reload
            </button>
          </div>
          {app.error && (
            <div className="jp-Anvil-error" data-role="app-error">
              {app.error_location && app.error_location.cell !== null && (
                <a
                  className="jp-Anvil-link jp-Anvil-cellLink"
                  href="#"
                  onClick={e => {
                    e.preventDefault();
                    props.hooks.openNotebook(app.error_location!.notebook, app.error_location!.cell);
                  }}
                >
                  cell {app.error_location.cell + 1}
                  {app.error_location.line !== null ? `, line ${app.error_location.line}` : ''}
                </a>
              )}
              <pre>{app.error}</pre>
            </div>
          )}
          <div className="jp-Anvil-meta">
            {app.pool ? (
              <span title="kernels serving calls">
                kernels {app.pool.kernels} ({app.pool.busy} busy, {Math.max(0, app.pool.kernels - app.pool.busy)} idle
                {app.pool.starting ? `, ${app.pool.starting} starting` : ''}){app.pool.queued ? ` · ${app.pool.queued} queued` : ''}
              </span>
            ) : (
              <span>no kernels</span>
            )}
            <span>
              {' '}
              · {plural(tasksOf(app.name), 'task')} running · {plural(schedulesOf(app.name), 'schedule')}
            </span>
            {app.env && <span> · env {app.env.status}</span>}
          </div>
          {app.functions.length > 0 && (
            <div className="jp-Anvil-meta">functions: {app.functions.map(f => <code key={f}>{f}</code>)}</div>
          )}
          {app.background_tasks.length > 0 && (
            <div className="jp-Anvil-meta">
              background tasks: {app.background_tasks.map(f => <code key={f}>{f}</code>)}
            </div>
          )}
          {(app.schedule_problems ?? []).map(p => (
            <div className="jp-Anvil-warn" key={p}>
              {p}
            </div>
          ))}
        </div>
      ))}
      {m.problems.map(p => (
        <div className="jp-Anvil-card" key={p.notebook}>
          <div className="jp-Anvil-row">
            <span className="jp-Anvil-title">{p.notebook}</span>
            <Badge status="error" />
          </div>
          <div className="jp-Anvil-error">
            <pre>{p.error}</pre>
          </div>
        </div>
      ))}
    </div>
  );
}

function StateView(props: { state: unknown }): JSX.Element | null {
  const p = progressOf(props.state);
  if (props.state === null || props.state === undefined) {
    return null;
  }
  if (p !== null) {
    return (
      <div className="jp-Anvil-progress" role="progressbar" aria-valuemin={0} aria-valuemax={100} aria-valuenow={Math.round(p * 100)}>
        <div className="jp-Anvil-progressFill" style={{ width: `${(p * 100).toFixed(1)}%` }} />
        <span className="jp-Anvil-progressText">{Math.round(p * 100)}%</span>
      </div>
    );
  }
  return <code className="jp-Anvil-state">{JSON.stringify(props.state)}</code>;
}

function TaskRow(props: { c: AnvilController; task: TaskSummary; now: number }): JSX.Element {
  const { c, task } = props;
  const [open, setOpen] = React.useState(false);
  const out = c.model.outputs.get(task.id);
  const preRef = React.useRef<HTMLPreElement>(null);
  React.useEffect(() => {
    if (preRef.current) {
      preRef.current.scrollTop = preRef.current.scrollHeight;
    }
  }, [out?.offset]);
  const end = task.ended ?? props.now;
  const elapsed = task.started ? formatDuration(end - task.started) : '';
  const live = task.status === 'running' || task.status === 'queued';
  const toggle = () => {
    if (open) {
      c.unfollowOutput(task.id);
    } else {
      void c.followOutput(task.id);
    }
    setOpen(!open);
  };
  const kill = async () => {
    const result = await showDialog({
      title: 'Kill task?',
      body: `Kill ${task.app} / ${task.name} (${task.id})? Its kernel is stopped.`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Kill' })]
    });
    if (result.button.accept) {
      const t = await c.guard(() => c.api.killTask(task.id));
      if (t) {
        c.model.putTask(t);
        c.model.changed();
      }
    }
  };
  return (
    <div className="jp-Anvil-card" data-task={task.id} data-status={task.status}>
      <div className="jp-Anvil-row">
        <button className="jp-Anvil-twisty" onClick={toggle} title="Show its output" aria-expanded={open}>
          {open ? '▾' : '▸'}
        </button>
        <span className="jp-Anvil-title" title={`${task.name} (${task.id})`}>
          {task.name}
        </span>
        <Badge status={task.status} />
        <span className="jp-Anvil-spacer" />
        {live && (
          <button className="jp-Anvil-button jp-Anvil-danger" onClick={() => void kill()}>
            Kill
          </button>
        )}
      </div>
      <div className="jp-Anvil-meta">
        {task.app} · started {time(task.started ?? task.launched)}
        {elapsed && ` · ${elapsed}`}
        {task.schedule_id && ' · by a schedule'}
      </div>
      <StateView state={task.state} />
      {task.error && (
        <div className="jp-Anvil-error">
          {task.error.type}: {task.error.message}
        </div>
      )}
      {open && (
        <pre className="jp-Anvil-output" ref={preRef} data-role="task-output">
          {out ? out.text || '(nothing printed yet)' : 'loading…'}
        </pre>
      )}
    </div>
  );
}

function TasksSection(props: { c: AnvilController; now: number }): JSX.Element {
  const m = props.c.model;
  const [app, setApp] = React.useState('');
  const [status, setStatus] = React.useState('');
  const [name, setName] = React.useState('');
  const tasks = m.taskList({ app, status, name });
  const [page, pager] = usePage(tasks, [app, status, name]);
  return (
    <div data-section="tasks">
      <div className="jp-Anvil-filters">
        <AppPicker c={props.c} value={app} onChange={setApp} />
        <select className="jp-Anvil-select" value={status} onChange={e => setStatus(e.target.value)} aria-label="status">
          <option value="">any status</option>
          {['queued', 'running', 'completed', 'failed', 'killed', 'missing'].map(s => (
            <option key={s}>{s}</option>
          ))}
        </select>
        <input className="jp-Anvil-input" placeholder="name" value={name} onChange={e => setName(e.target.value)} aria-label="name" />
      </div>
      <div className="jp-Anvil-list">
        {tasks.length === 0 && <div className="jp-Anvil-empty">No tasks.</div>}
        {page.map(t => (
          <TaskRow key={t.id} c={props.c} task={t} now={props.now} />
        ))}
      </div>
      {pager}
    </div>
  );
}

function AppPicker(props: { c: AnvilController; value: string; onChange: (v: string) => void }): JSX.Element {
  return (
    <select className="jp-Anvil-select" value={props.value} onChange={e => props.onChange(e.target.value)} aria-label="app">
      <option value="">all apps</option>
      {props.c.model.appList().map(a => (
        <option key={a.name}>{a.name}</option>
      ))}
    </select>
  );
}

function ScheduleRow(props: { c: AnvilController; s: ScheduleInfo }): JSX.Element {
  const { c, s } = props;
  const runs = c.model.scheduleRuns.get(s.id);
  React.useEffect(() => {
    if (!runs) {
      void c.loadRuns(s.id);
    }
  }, [s.id]);
  const act = async (action: () => Promise<unknown>) => {
    await c.guard(action);
    void c.loadRuns(s.id);
  };
  return (
    <div className="jp-Anvil-card" data-schedule={s.id} data-paused={String(s.paused)}>
      <div className="jp-Anvil-row">
        <span className="jp-Anvil-title" title={s.name}>
          {s.name}
        </span>
        <Badge status={s.problem ? 'error' : s.paused ? 'paused' : 'active'} />
      </div>
      <div className="jp-Anvil-row jp-Anvil-actions">
        <span className="jp-Anvil-dim">{s.app}</span>
        <span className="jp-Anvil-spacer" />
        {s.paused ? (
          <button className="jp-Anvil-button" onClick={() => void act(() => c.api.setPaused(s.id, false).then(x => c.model.schedules.set(x.id, x)))}>
            Resume
          </button>
        ) : (
          <button className="jp-Anvil-button" onClick={() => void act(() => c.api.setPaused(s.id, true).then(x => c.model.schedules.set(x.id, x)))}>
            Pause
          </button>
        )}
        <button className="jp-Anvil-button" onClick={() => void act(() => c.api.runSchedule(s.id))}>
          Run now
        </button>
      </div>
      <div className="jp-Anvil-meta">{s.description}</div>
      <div className="jp-Anvil-meta">
        next {s.paused ? 'paused' : time(s.next_run)} · last {time(s.last_run)}
        {s.last_status && ` (${s.last_status})`}
      </div>
      {s.problem && <div className="jp-Anvil-error">{s.problem}</div>}
      {runs && runs.length > 0 && (
        <div className="jp-Anvil-runs">
          {runs.map(r => (
            <span key={r.seq} className={`jp-Anvil-run jp-Anvil-status-${r.outcome}`} title={`${time(r.at)} ${r.outcome} ${r.reason}`}>
              {r.outcome === 'launched' ? '●' : r.outcome === 'skipped' ? '○' : '✕'}
            </span>
          ))}
        </div>
      )}
    </div>
  );
}

function MailSection(props: { c: AnvilController }): JSX.Element {
  const { c } = props;
  const [box, setBox] = React.useState('outbox');
  const [app, setApp] = React.useState('');
  const [detail, setDetail] = React.useState<MailDetail | null>(null);
  const list = c.model.mailList(box, app);
  const [page, pager] = usePage(list, [box, app]);
  const open = async (mail: MailInfo) => {
    if (detail && detail.id === mail.id) {
      setDetail(null);
      return;
    }
    const d = await c.guard(() => c.api.mailDetail(mail.id));
    setDetail(d ?? null);
  };
  return (
    <div data-section="mail">
      <div className="jp-Anvil-filters">
        {['outbox', 'sent', 'inbox'].map(b => (
          <button key={b} className={`jp-Anvil-tab ${box === b ? 'jp-mod-active' : ''}`} onClick={() => setBox(b)} data-box={b}>
            {b} ({c.model.mailList(b, app).length})
          </button>
        ))}
        <AppPicker c={c} value={app} onChange={setApp} />
      </div>
      <div className="jp-Anvil-list">
        {list.length === 0 && <div className="jp-Anvil-empty">No mail in the {box}.</div>}
        {page.map(mail => (
          <div className="jp-Anvil-card" key={mail.id} data-mail={mail.id}>
            <div className="jp-Anvil-row jp-Anvil-clickable" onClick={() => void open(mail)}>
              <span className="jp-Anvil-title">{mail.subject || '(no subject)'}</span>
              <Badge status={mail.status} />
            </div>
            <div className="jp-Anvil-meta">
              {box === 'inbox' ? `from ${mail.from_header}` : `to ${mail.to_header || mail.recipients.join(', ')}`} ·{' '}
              {time(mail.created)} · {formatBytes(mail.size)}
            </div>
            {mail.outcome && <div className="jp-Anvil-meta">{mail.outcome}</div>}
            {detail && detail.id === mail.id && (
              <div className="jp-Anvil-mail">
                <table className="jp-Anvil-headers">
                  <tbody>
                    {detail.headers.map(([k, v], i) => (
                      <tr key={i}>
                        <th>{k}</th>
                        <td>{v}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
                <pre className="jp-Anvil-output">{detail.text ?? (detail.html ? '(HTML only: download the message)' : '(no body)')}</pre>
                {detail.parts.map(part => (
                  <div key={part.index} className="jp-Anvil-meta">
                    📎{' '}
                    <a className="jp-Anvil-link" href={part.url} download={part.name ?? undefined}>
                      {part.name ?? `part ${part.index}`}
                    </a>{' '}
                    {part.content_type} · {formatBytes(part.size)}
                  </div>
                ))}
                <a className="jp-Anvil-link" href={detail.raw_url} download>
                  download .eml
                </a>
              </div>
            )}
          </div>
        ))}
      </div>
      {pager}
    </div>
  );
}

function EnvRow(props: { c: AnvilController; env: EnvInfo }): JSX.Element {
  const { c, env } = props;
  const [open, setOpen] = React.useState(env.status === 'building');
  React.useEffect(() => {
    if (open) {
      void c.followEnv(env.id);
      return () => c.unfollowEnv(env.id);
    }
    return undefined;
  }, [open]);
  return (
    <div className="jp-Anvil-card" data-env={env.id}>
      <div className="jp-Anvil-row">
        <button className="jp-Anvil-twisty" onClick={() => setOpen(!open)} aria-expanded={open}>
          {open ? '▾' : '▸'}
        </button>
        <span className="jp-Anvil-title">{env.id}</span>
        <Badge status={env.status} />
        <span className="jp-Anvil-spacer" />
        <span className="jp-Anvil-dim">{formatBytes(env.size_bytes)}</span>
      </div>
      <div className="jp-Anvil-meta">
        {env.requirements.map(r => (
          <code key={r}>{r}</code>
        ))}
      </div>
      <div className="jp-Anvil-meta">
        used by {env.apps.length ? env.apps.join(', ') : 'no app'}
        {env.python && ` · Python ${env.python}`}
        {env.last_used && ` · last used ${time(env.last_used)}`}
      </div>
      {env.error && <div className="jp-Anvil-error">{env.error}</div>}
      {open && <pre className="jp-Anvil-output">{c.model.envOutput.get(env.id) ?? 'loading…'}</pre>}
    </div>
  );
}

function LogsSection(props: { c: AnvilController }): JSX.Element {
  const [app, setApp] = React.useState('');
  const [errorsOnly, setErrorsOnly] = React.useState(false);
  const groups = props.c.model.logGroups(app).filter(g => !errorsOnly || g.hasError);
  const [page, pager] = usePage(groups, [app, errorsOnly]);
  return (
    <div data-section="logs">
      <div className="jp-Anvil-filters">
        <AppPicker c={props.c} value={app} onChange={setApp} />
        <label className="jp-Anvil-dim">
          <input type="checkbox" checked={errorsOnly} onChange={e => setErrorsOnly(e.target.checked)} /> errors only
        </label>
      </div>
      <div className="jp-Anvil-list">
        {groups.length === 0 && <div className="jp-Anvil-empty">No log records.</div>}
        {page.map(g => (
          <div key={g.key} className={`jp-Anvil-card ${g.hasError ? 'jp-Anvil-hasError' : ''}`} data-call={g.callId}>
            <div className="jp-Anvil-row">
              <span className="jp-Anvil-title">{g.function}</span>
              <span className="jp-Anvil-spacer" />
              <span className="jp-Anvil-dim">
                {g.app} · {time(g.time)}
              </span>
            </div>
            <pre className="jp-Anvil-log">
              {g.records.map(r => (
                <span key={r.seq} className={`jp-Anvil-stream-${r.stream}`}>
                  {r.text.endsWith('\n') ? r.text : r.text + '\n'}
                </span>
              ))}
            </pre>
          </div>
        ))}
      </div>
      {pager}
    </div>
  );
}

function PanelView(props: { c: AnvilController; hooks: PanelHooks }): JSX.Element {
  const { c } = props;
  const m = c.model;
  const [, setTick] = React.useState(0);
  const [section, setSection] = React.useState<Section>('Apps');
  const [now, setNow] = React.useState(Date.now() / 1000);
  React.useEffect(() => m.onChange(() => setTick(t => t + 1)), []);
  React.useEffect(() => {
    const timer = setInterval(() => setNow(Date.now() / 1000), 1000);
    return () => clearInterval(timer);
  }, []);
  const counts: Record<Section, number> = {
    Apps: m.apps.size,
    Tasks: [...m.tasks.values()].filter(t => t.status === 'running' || t.status === 'queued').length,
    Schedules: m.schedules.size,
    Mail: m.mailList('outbox').length,
    Environments: [...m.envs.values()].filter(e => e.status === 'building').length,
    Logs: 0
  };
  return (
    <div className="jp-Anvil-root">
      <div className="jp-Anvil-header">
        <span className="jp-Anvil-heading">Anvil</span>
        <span className={`jp-Anvil-live ${m.connected ? 'jp-mod-live' : ''}`} title={m.connected ? 'live' : 'connecting…'}>
          {m.connected ? '● live' : '○ connecting'}
        </span>
      </div>
      <div className="jp-Anvil-tabs" role="tablist">
        {SECTIONS.map(s => (
          <button
            key={s}
            role="tab"
            aria-selected={section === s}
            className={`jp-Anvil-tab ${section === s ? 'jp-mod-active' : ''}`}
            onClick={() => setSection(s)}
            data-tab={s}
            title={s}
          >
            {SHORT_TAB_LABELS[s] ?? s}
            {counts[s] > 0 && <span className="jp-Anvil-count">{counts[s]}</span>}
          </button>
        ))}
      </div>
      {m.error && (
        <div className="jp-Anvil-banner" role="alert">
          <span>{m.error}</span>
          <button className="jp-Anvil-button" onClick={() => m.setError(null)} title="Dismiss">
            ✕
          </button>
        </div>
      )}
      <div className="jp-Anvil-body">
        {section === 'Apps' && <AppsSection c={c} hooks={props.hooks} />}
        {section === 'Tasks' && <TasksSection c={c} now={now} />}
        {section === 'Schedules' && (
          <div className="jp-Anvil-list" data-section="schedules">
            {m.schedules.size === 0 && <div className="jp-Anvil-empty">No schedules.</div>}
            {m.scheduleList().map(s => (
              <ScheduleRow key={s.id} c={c} s={s} />
            ))}
          </div>
        )}
        {section === 'Mail' && <MailSection c={c} />}
        {section === 'Environments' && (
          <div className="jp-Anvil-list" data-section="environments">
            {m.envs.size === 0 && <div className="jp-Anvil-empty">No environments: apps run on the server's kernel.</div>}
            {m.envList().map(e => (
              <EnvRow key={e.id} c={c} env={e} />
            ))}
          </div>
        )}
        {section === 'Logs' && <LogsSection c={c} />}
      </div>
    </div>
  );
}

/** The sidebar widget: connected only while shown. */
export class AnvilPanel extends ReactWidget {
  constructor(
    readonly controller: AnvilController,
    private hooks: PanelHooks
  ) {
    super();
    this.addClass('jp-Anvil-panel');
  }

  render(): JSX.Element {
    return <PanelView c={this.controller} hooks={this.hooks} />;
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.controller.start();
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    if (this.isVisible) {
      this.controller.start();
    }
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this.controller.stop();
  }

  protected onBeforeDetach(msg: Message): void {
    this.controller.stop();
    super.onBeforeDetach(msg);
  }
}
