import { AnvilModel, formatBytes, formatDuration, MAX_LOG_RECORDS, progressOf } from '../model';
import { toggleServerTag, TaggableCell } from '../tags';
import type { AppInfo, LogRecord, MailInfo, ScheduleInfo, TaskSummary } from '../types';

/** A model whose coalesced notifications run when the test flushes them. */
function makeModel(): { model: AnvilModel; flush: () => void; calls: () => number } {
  let queued: (() => void)[] = [];
  let count = 0;
  const model = new AnvilModel(f => queued.push(f));
  model.onChange(() => (count += 1));
  return {
    model,
    flush: () => {
      const q = queued;
      queued = [];
      q.forEach(f => f());
    },
    calls: () => count
  };
}

function task(id: string, extra: Partial<TaskSummary> = {}): TaskSummary {
  return {
    id,
    app: 'hello',
    name: 'crunch',
    status: 'running',
    launched: 100,
    started: 101,
    ended: null,
    error: null,
    launched_by: null,
    output_dropped: 0,
    owner: null,
    schedule_id: null,
    state: {},
    ...extra
  };
}

function app(name: string, extra: Partial<AppInfo> = {}): AppInfo {
  return {
    name,
    notebook: `${name}.ipynb`,
    status: 'ready',
    error: null,
    functions: [],
    background_tasks: [],
    pool: null,
    call_timeout: 30,
    url: `/anvil/apps/${name}/`,
    env: null,
    requirements: [],
    requirements_source: null,
    requirements_note: null,
    ...extra
  };
}

function log(seq: number, extra: Partial<LogRecord> = {}): LogRecord {
  return { seq, time: seq, app: 'hello', function: 'f', call_id: 'c1', stream: 'stdout', text: `line ${seq}`, ...extra };
}

describe('progressOf', () => {
  it('reads done/total', () => {
    expect(progressOf({ done: 3, total: 4 })).toBe(0.75);
    expect(progressOf({ done: '5', total: '10' })).toBe(0.5); // big numbers come as strings
    expect(progressOf({ done: 12, total: 10 })).toBe(1);
  });
  it('reads progress in [0, 1]', () => {
    expect(progressOf({ progress: 0.25 })).toBe(0.25);
    expect(progressOf({ progress: 0 })).toBe(0);
  });
  it('has none otherwise', () => {
    expect(progressOf({ progress: 40 })).toBeNull();
    expect(progressOf({ done: 3, total: 0 })).toBeNull();
    expect(progressOf({ step: 'download' })).toBeNull();
    expect(progressOf(null)).toBeNull();
    expect(progressOf([1, 2])).toBeNull();
    expect(progressOf('half')).toBeNull();
    expect(progressOf({ done: NaN, total: 2 })).toBeNull();
  });
});

describe('AnvilModel', () => {
  it('coalesces a burst of events into one notification', () => {
    const { model, flush, calls } = makeModel();
    for (let i = 0; i < 50; i++) {
      model.apply({ type: 'task', task: task(`t${i}`, { launched: i }) });
    }
    expect(calls()).toBe(0);
    flush();
    expect(calls()).toBe(1);
    expect(model.taskList()).toHaveLength(50);
    expect(model.taskList()[0].id).toBe('t49'); // newest first
  });

  it('applies app and app_removed events', () => {
    const { model } = makeModel();
    model.setApps([app('a'), app('b')], []);
    model.apply({ type: 'app', app: app('a', { status: 'error', error: 'boom' }) });
    model.apply({ type: 'app_removed', name: 'b' });
    expect(model.appList().map(a => [a.name, a.status])).toEqual([['a', 'error']]);
    expect(model.appForNotebook('a.ipynb')?.name).toBe('a');
    expect(model.appForNotebook('b.ipynb')).toBeNull();
  });

  it('filters tasks by app, status and name', () => {
    const { model } = makeModel();
    model.setTasks([
      task('1', { app: 'x', name: 'Resize', status: 'completed' }),
      task('2', { app: 'y', name: 'resize_all' }),
      task('3', { app: 'x', name: 'mail' })
    ]);
    expect(model.taskList({ app: 'x' }).map(t => t.id).sort()).toEqual(['1', '3']);
    expect(model.taskList({ status: 'running' }).map(t => t.id).sort()).toEqual(['2', '3']);
    expect(model.taskList({ name: 'RESIZE' }).map(t => t.id).sort()).toEqual(['1', '2']);
    expect(model.taskList({ app: 'x', name: 'resize', status: 'completed' }).map(t => t.id)).toEqual(['1']);
  });

  it('a task update replaces the task (progress moves)', () => {
    const { model } = makeModel();
    model.apply({ type: 'task', task: task('1', { state: { done: 1, total: 10 } }) });
    model.apply({ type: 'task', task: task('1', { state: { done: 6, total: 10 } }) });
    expect(progressOf(model.tasks.get('1')!.state)).toBe(0.6);
  });

  it('appends task output only where it continues, skips repeats, marks gaps', () => {
    const { model } = makeModel();
    model.apply({ type: 'task_output', id: 't', text: 'ignored', offset: 7 }); // not followed
    expect(model.outputs.has('t')).toBe(false);
    model.setOutput('t', 0, 'abc', 3, true);
    model.apply({ type: 'task_output', id: 't', text: 'abc', offset: 3 }); // already held
    model.apply({ type: 'task_output', id: 't', text: 'bcde', offset: 5 }); // overlaps: 'de' is new
    expect(model.outputs.get('t')!.text).toBe('abcde');
    model.apply({ type: 'task_output', id: 't', text: 'xyz', offset: 20 }); // a gap
    expect(model.outputs.get('t')!.text).toBe('abcde');
    expect(model.outputGaps.has('t')).toBe(true);
    model.setOutput('t', 0, 'abcde....xyz', 12, true);
    expect(model.outputGaps.has('t')).toBe(false);
  });

  it('marks output finished when the task ends', () => {
    const { model } = makeModel();
    model.setOutput('t', 0, 'x', 1, true);
    model.apply({ type: 'task', task: task('t', { status: 'killed' }) });
    expect(model.outputs.get('t')!.running).toBe(false);
  });

  it('keeps schedules and their recent runs', () => {
    const { model } = makeModel();
    const s = { id: 's1', app: 'a', name: 'n', paused: false } as ScheduleInfo;
    model.apply({ type: 'schedule', event: 'changed', id: 's1', app: 'a', schedule: s, run: null });
    model.apply({
      type: 'schedule',
      event: 'changed',
      id: 's1',
      app: 'a',
      schedule: { ...s, paused: true },
      run: { seq: 1, schedule_id: 's1', app: 'a', due: 1, at: 1, task_id: null, outcome: 'launched', reason: '', server: null }
    });
    expect(model.schedules.get('s1')!.paused).toBe(true);
    expect(model.scheduleRuns.get('s1')).toHaveLength(1);
    model.apply({ type: 'schedule', event: 'deleted', id: 's1', app: 'a', schedule: null, run: null });
    expect(model.schedules.size).toBe(0);
  });

  it('sorts mail by box and removes deleted mail', () => {
    const { model } = makeModel();
    const m = (id: string, box: string, created: number) => ({ id, box, created, app: 'a' }) as MailInfo;
    model.setMail([m('1', 'outbox', 1), m('2', 'sent', 2)]);
    model.apply({ type: 'mail', mail: m('3', 'outbox', 3) });
    expect(model.mailList('outbox').map(x => x.id)).toEqual(['3', '1']);
    model.apply({ type: 'mail_deleted', id: '3', app: 'a' });
    expect(model.mailList('outbox').map(x => x.id)).toEqual(['1']);
    expect(model.mailList('outbox', 'other')).toEqual([]);
  });

  it('holds thousands of tasks, filters them by name and pages them quickly', () => {
    const { model } = makeModel();
    const many = Array.from({ length: 3000 }, (_, i) => task(`t${i}`, { name: `job${i % 10}`, launched: i, status: 'completed' }));
    model.setTasks(many);
    const started = performance.now();
    const all = model.taskList();
    const some = model.taskList({ name: 'JOB3' });
    const elapsed = performance.now() - started;
    expect(all).toHaveLength(3000);
    expect(all[0].id).toBe('t2999'); // newest first
    expect(some).toHaveLength(300);
    expect(some.every(t => t.name === 'job3')).toBe(true);
    expect(elapsed).toBeLessThan(500); // generous: a few ms on a laptop
    model.apply({ type: 'task', task: task('new', { launched: 99999, name: 'job3' }) });
    expect(model.taskList({ name: 'job3' })[0].id).toBe('new');
  });

  it('tails environment output', () => {
    const { model } = makeModel();
    model.apply({ type: 'env_output', id: 'e', text: 'Collecting x\n', offset: 13 });
    model.apply({ type: 'env_output', id: 'e', text: 'Installing\n', offset: 24 });
    expect(model.envOutput.get('e')).toBe('Collecting x\nInstalling\n');
  });

  it('applies environment output after a fetched log by its offset: no repeated chunk', () => {
    const { model } = makeModel();
    // the log was fetched up to byte 17 ('€' is 3 UTF-8 bytes)
    model.setEnvLog('e', 'Collecting €\nIn', 17);
    model.apply({ type: 'env_output', id: 'e', text: 'Collecting €\n', offset: 15 }); // held: skipped
    model.apply({ type: 'env_output', id: 'e', text: 'Installing\n', offset: 26 }); // overlaps: the rest only
    expect(model.envOutput.get('e')).toBe('Collecting €\nInstalling\n');
    expect(model.envGaps.has('e')).toBe(false);
    model.apply({ type: 'env_output', id: 'e', text: 'Done\n', offset: 41 }); // bytes 26..36 lost: refetch
    expect(model.envGaps.has('e')).toBe(true);
    expect(model.envOutput.get('e')).toBe('Collecting €\nInstalling\n');
    model.setEnvLog('e', 'Collecting €\nInstalling\nmore\nDone\n', 41);
    expect(model.envGaps.has('e')).toBe(false);
    model.apply({ type: 'env_output', id: 'e', text: 'Ready\n', offset: 47 });
    expect(model.envOutput.get('e')).toBe('Collecting €\nInstalling\nmore\nDone\nReady\n');
  });

  it('groups log lines by call, errors standing out, filtered by app', () => {
    const { model } = makeModel();
    model.setLogs([log(1), log(2, { call_id: 'c2', app: 'b' }), log(3, { stream: 'traceback' }), log(4, { call_id: '' })]);
    const groups = model.logGroups();
    expect(groups.map(g => g.records.map(r => r.seq))).toEqual([[4], [1, 3], [2]]);
    expect(groups[1].hasError).toBe(true);
    expect(groups[2].hasError).toBe(false);
    expect(model.logGroups('b').map(g => g.callId)).toEqual(['c2']);
  });

  it('skips log records it already holds and keeps a bounded number', () => {
    const { model } = makeModel();
    model.apply({ type: 'logs', records: [log(1), log(2)] });
    model.apply({ type: 'logs', records: [log(2), log(3)] });
    expect(model.logs.map(r => r.seq)).toEqual([1, 2, 3]);
    model.addLogs(Array.from({ length: MAX_LOG_RECORDS + 10 }, (_, i) => log(10 + i)));
    expect(model.logs).toHaveLength(MAX_LOG_RECORDS);
    expect(model.logs[model.logs.length - 1].seq).toBe(MAX_LOG_RECORDS + 19);
  });

  it('ignores unknown events and remembers the hello', () => {
    const { model } = makeModel();
    model.apply({ type: 'future_thing' } as any);
    model.apply({ type: 'hello', server: 'abc', time: 1 });
    expect(model.serverId).toBe('abc');
  });
});

describe('formatting', () => {
  it('formats durations and sizes', () => {
    expect(formatDuration(3.25)).toBe('3.3 s');
    expect(formatDuration(125)).toBe('2 min 05 s');
    expect(formatDuration(3700)).toBe('1 h 01 min');
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1_500_000)).toBe('1.5 MB');
    expect(formatBytes(null)).toBe('');
  });
});

describe('toggleServerTag', () => {
  function cell(tags?: unknown): TaggableCell & { meta: Record<string, unknown> } {
    const meta: Record<string, unknown> = tags === undefined ? {} : { tags };
    return {
      meta,
      getMetadata: k => meta[k],
      setMetadata: (k, v) => (meta[k] = v),
      deleteMetadata: k => delete meta[k]
    };
  }
  it('adds the tag to all unless all have it, keeping other tags', () => {
    const a = cell(['keep']);
    const b = cell(['server']);
    expect(toggleServerTag([a, b])).toBe(true);
    expect(a.meta.tags).toEqual(['keep', 'server']);
    expect(b.meta.tags).toEqual(['server']);
    expect(toggleServerTag([a, b])).toBe(false);
    expect(a.meta.tags).toEqual(['keep']);
    expect('tags' in b.meta).toBe(false);
  });
  it('copes with bad tags metadata', () => {
    const c = cell('server');
    toggleServerTag([c]);
    expect(c.meta.tags).toEqual(['server']);
  });
});
