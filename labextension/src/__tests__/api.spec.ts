// The API client against a mocked fetch (the server lies outside the unit): URLs under
// the base URL, the token header, JSON bodies, and a refusal's message surfacing.
import { ServerConnection } from '@jupyterlab/services';

import { AnvilApi, ApiError, queryString } from '../api';
import { backoffDelay, FeedClient } from '../feed';

type Call = { url: string; init: RequestInit };

function api(respond: (call: Call) => Response | Promise<Response>): { api: AnvilApi; calls: Call[] } {
  const calls: Call[] = [];
  const fetch = async (input: RequestInfo, init?: RequestInit) => {
    const request = input as Request;
    // ServerConnection appends a cache-busting timestamp ("?1700000000000"): not ours to check
    const raw = typeof input === 'string' ? input : request.url;
    const call = { url: raw.replace(/[?&]\d{10,}$/, ''), init: init ?? {} };
    if (typeof input !== 'string') {
      call.init = { method: request.method, headers: request.headers, body: await request.text() };
    }
    calls.push(call);
    return respond(call);
  };
  const settings = ServerConnection.makeSettings({
    baseUrl: 'http://lab.test/base/',
    wsUrl: 'ws://lab.test/base/',
    token: 'secret',
    fetch: fetch as any,
    Request: Request,
    Headers: Headers
  } as any);
  return { api: new AnvilApi(settings), calls };
}

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });
}

describe('AnvilApi', () => {
  it('gets the apps under the base URL with the token', async () => {
    const { api: a, calls } = api(() => json({ apps: [], problems: [] }));
    expect(await a.apps()).toEqual({ apps: [], problems: [] });
    expect(calls[0].url).toBe('http://lab.test/base/anvil/api/apps');
    const headers = new Headers(calls[0].init.headers as HeadersInit);
    expect(headers.get('Authorization')).toBe('token secret');
  });

  it('builds queries, leaving out empty filters', async () => {
    const { api: a, calls } = api(() => json({ tasks: [], next: null }));
    await a.tasks({ app: 'my app', status: '', name: undefined, limit: 50 });
    expect(calls[0].url).toBe('http://lab.test/base/anvil/api/tasks?app=my%20app&limit=50');
    expect(queryString({})).toBe('');
  });

  it('sends PATCH with a JSON body to pause a schedule', async () => {
    const { api: a, calls } = api(() => json({ id: 's/1', paused: true }));
    await a.setPaused('s/1', true);
    expect(calls[0].url).toBe('http://lab.test/base/anvil/api/schedules/s%2F1');
    expect(calls[0].init.method).toBe('PATCH');
    expect(JSON.parse(String(calls[0].init.body))).toEqual({ paused: true });
  });

  it('posts kill and reload', async () => {
    const { api: a, calls } = api(() => json({ id: 't', status: 'killed' }));
    await a.killTask('t');
    await a.reloadApp('hello');
    expect(calls.map(c => [c.init.method, c.url])).toEqual([
      ['POST', 'http://lab.test/base/anvil/api/tasks/t/kill'],
      ['POST', 'http://lab.test/base/anvil/api/apps/hello/reload']
    ]);
  });

  it("raises the server's message on a refusal", async () => {
    const { api: a } = api(() => json({ message: 'no task abc', reason: 'Not Found' }, 404));
    await expect(a.taskOutput('abc')).rejects.toEqual(new ApiError('no task abc', 404));
  });

  it('names the status when a refusal has no JSON message', async () => {
    const { api: a } = api(() => new Response('<html>oops</html>', { status: 502, statusText: 'Bad Gateway' }));
    await expect(a.envs()).rejects.toThrow('502 Bad Gateway from envs');
  });

  it('says when the server cannot be reached', async () => {
    const { api: a } = api(() => Promise.reject(new TypeError('Failed to fetch')));
    await expect(a.mail({ box: 'outbox' })).rejects.toThrow('cannot be reached');
  });

  it('gives the feed URL on the WebSocket base', () => {
    const { api: a } = api(() => json({}));
    expect(a.feedUrl()).toBe('ws://lab.test/base/anvil/api/feed');
  });
});

class FakeSocket {
  static made: FakeSocket[] = [];
  readyState = 0;
  onopen: (() => void) | null = null;
  onmessage: ((m: { data: string }) => void) | null = null;
  onclose: ((c: { code: number; reason: string }) => void) | null = null;
  onerror: (() => void) | null = null;
  closed = false;
  constructor(readonly url: string) {
    FakeSocket.made.push(this);
  }
  close(): void {
    this.closed = true;
  }
}

describe('FeedClient', () => {
  beforeEach(() => {
    FakeSocket.made = [];
    jest.useFakeTimers();
  });
  afterEach(() => jest.useRealTimers());

  it('connects with the token, passes events, reconnects with backoff, and stops', () => {
    const events: unknown[] = [];
    let opens = 0;
    const feed = new FeedClient({
      url: 'ws://x/anvil/api/feed',
      token: 't k',
      onEvent: e => events.push(e),
      onOpen: () => (opens += 1),
      onClose: () => undefined,
      createSocket: url => new FakeSocket(url) as unknown as WebSocket,
      minDelay: 100,
      maxDelay: 1000
    });
    feed.start();
    expect(FakeSocket.made[0].url).toBe('ws://x/anvil/api/feed?token=t%20k');
    FakeSocket.made[0].onopen!();
    FakeSocket.made[0].onmessage!({ data: '{"type":"hello","server":"s","time":1}' });
    FakeSocket.made[0].onmessage!({ data: 'not json' });
    FakeSocket.made[0].onmessage!({ data: '[1]' });
    expect(events).toEqual([{ type: 'hello', server: 's', time: 1 }]);
    FakeSocket.made[0].onclose!({ code: 1008, reason: 'feed reader too slow' });
    expect(FakeSocket.made).toHaveLength(1);
    jest.advanceTimersByTime(200);
    expect(FakeSocket.made).toHaveLength(2);
    FakeSocket.made[1].onopen!();
    expect(opens).toBe(2);
    feed.stop();
    expect(FakeSocket.made[1].closed).toBe(true);
    jest.advanceTimersByTime(5000);
    expect(FakeSocket.made).toHaveLength(2); // no reconnect once stopped
  });

  it('backs off exponentially up to the maximum', () => {
    const fixed = () => 0.5;
    expect(backoffDelay(0, 500, 15000, fixed)).toBe(500);
    expect(backoffDelay(3, 500, 15000, fixed)).toBe(4000);
    expect(backoffDelay(30, 500, 15000, fixed)).toBe(15000);
  });
});

describe('AnvilController', () => {
  it("shows a refused action's message in the banner instead of swallowing it", async () => {
    const { AnvilController } = await import('../controller');
    const { api: a } = api(() => json({ message: 'task t has ended: nothing to kill' }, 409));
    const controller = new AnvilController(a, 'secret');
    const result = await controller.guard(() => a.killTask('t'));
    expect(result).toBeUndefined();
    expect(controller.model.error).toBe('task t has ended: nothing to kill');
  });

  it('fetches the newest tasks page after page (the API gives at most 500 a page)', async () => {
    const { AnvilController } = await import('../controller');
    const all = Array.from({ length: 1200 }, (_, i) => ({ id: `t${i}`, app: 'a', name: `job${i % 7}`, status: 'completed', launched: 5000 - i }));
    const { api: a, calls } = api(call => {
      const query = new URL(call.url).searchParams;
      const before = query.get('before');
      const rest = before ? all.filter(t => t.launched < Number(before)) : all;
      const page = rest.slice(0, Number(query.get('limit')));
      return json({ tasks: page, next: page.length === Number(query.get('limit')) ? page[page.length - 1].launched : null });
    });
    const controller = new AnvilController(a, 'secret');
    await controller.loadTasks();
    expect(controller.model.tasks.size).toBe(1200);
    expect(calls.filter(c => c.url.includes('anvil/api/tasks'))).toHaveLength(3);
  });
});
