// One WebSocket to anvil/api/feed while the panel is shown. The token goes in the URL's
// query, as JupyterLab's own kernel sockets do. A lost connection is retried with backoff
// (0.5 s doubling to 15 s, with jitter); each (re)connect calls `onOpen` so the panel
// refetches its lists through REST (events sent while it was away are not replayed).
import type { FeedEvent } from './types';

export interface FeedOptions {
  url: string;
  token: string;
  onEvent: (event: FeedEvent) => void;
  onOpen: () => void;
  onClose: (reason: string) => void;
  /** Injected in tests. */
  createSocket?: (url: string) => WebSocket;
  minDelay?: number;
  maxDelay?: number;
}

export function backoffDelay(attempt: number, min = 500, max = 15000, random: () => number = Math.random): number {
  const base = Math.min(max, min * 2 ** Math.min(attempt, 16));
  return Math.round(base * (0.75 + 0.5 * random()));
}

export class FeedClient {
  private socket: WebSocket | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private attempt = 0;
  private running = false;

  constructor(private options: FeedOptions) {}

  get isOpen(): boolean {
    return this.socket !== null && this.socket.readyState === 1;
  }

  get isRunning(): boolean {
    return this.running;
  }

  start(): void {
    if (this.running) {
      return;
    }
    this.running = true;
    this.attempt = 0;
    this.connect();
  }

  /** Close the connection and stop reconnecting (the panel was hidden or closed). */
  stop(): void {
    this.running = false;
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.onclose = null;
      socket.onmessage = null;
      socket.onerror = null;
      socket.onopen = null;
      socket.close();
    }
  }

  private connect(): void {
    const { url, token } = this.options;
    const full = token ? `${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}` : url;
    const create = this.options.createSocket ?? ((u: string) => new WebSocket(u));
    let socket: WebSocket;
    try {
      socket = create(full);
    } catch (error) {
      this.options.onClose(String(error));
      this.retry();
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      this.attempt = 0;
      this.options.onOpen();
    };
    socket.onmessage = message => {
      let event: FeedEvent;
      try {
        event = JSON.parse(String(message.data));
      } catch {
        return; // not JSON: not ours to show
      }
      if (event && typeof event === 'object' && typeof event.type === 'string') {
        this.options.onEvent(event);
      }
    };
    socket.onclose = close => {
      this.socket = null;
      this.options.onClose(close.reason || `the live feed closed (code ${close.code})`);
      this.retry();
    };
  }

  private retry(): void {
    if (!this.running) {
      return;
    }
    const delay = backoffDelay(this.attempt, this.options.minDelay, this.options.maxDelay);
    this.attempt += 1;
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.running) {
        this.connect();
      }
    }, delay);
  }
}
