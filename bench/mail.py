"""Email benchmark: messages per second in and out of a real server.

Run by hand, not by CI:

    python bench/mail.py                          # about a minute
    python bench/mail.py --messages 500 --concurrency 8 --json mail.json

One ``python -m jupyter_anvil`` server serves one app, ``mail_bench``, whose email handler
only counts, and whose callable ``send_one`` calls ``email.send`` once. It is started with
a relay (``--AnvilApp.smtp_relay_url=smtp+plain://…``): an aiosmtpd server in this process
that accepts and counts every message (a sink, so the relay costs next to nothing).

* ``inbound``: ``--concurrency`` SMTP clients (``smtplib``, one connection each) send
  ``--messages`` messages in all to ``mail_bench@localhost`` on the server's inbound port.
  Each message is stored, handed to the app's handler on a kernel, and answered 250 once
  the handler returned: the time of each ``sendmail`` is the latency, and messages per
  second is the throughput of the whole path.
* ``outbound``: ``--concurrency`` HTTP callers call ``send_one`` ``--messages`` times in all:
  the kernel builds the message, the host stores it and hands it to the relay, the call
  returns once the relay said 250. Sends per second, the call's latency, and a check that
  the relay got each message exactly once.
* ``outbox``: the same sends on a second server with no relay (the default outbox), for
  what the relay's round trip costs.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import secrets
import smtplib
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
from aiosmtpd.controller import Controller
from harness import HOST, ServerProcess, free_port, git_commit, percentile, wait_until, write_app_notebook, write_json

APP = "mail_bench"
CELL = """\
from jupyter_anvil import email, server

@email.handle_message
def incoming(msg):
    pass

@server.callable
def send_one(n):
    return email.send(to="sink@example.com", subject=f"bench {n}", text="hello from the benchmark").message_id
"""

MESSAGE = (
    "From: bench@example.com\r\nTo: {to}\r\nSubject: bench {n}\r\nMessage-ID: <{n}.{tag}@bench>\r\n\r\n"
    "A small message, as a contact form would send.\r\n"
)


class Sink:
    """The relay's handler: counts messages by Message-ID."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[str, int] = {}

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or b""
        message_id = next((line for line in content.split(b"\r\n") if line.lower().startswith(b"message-id:")), b"")
        with self.lock:
            self.seen[message_id.decode(errors="replace")] = self.seen.get(message_id.decode(errors="replace"), 0) + 1
        return "250 OK"


def write_notebook(folder: Path) -> None:
    write_app_notebook(folder, APP, CELL, {"kernels": {"min": 2, "max": 2}})


def summary(latencies: list[float], wall: float, errors: int) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {
        "messages": len(latencies),
        "errors": errors,
        "per_second": len(latencies) / wall if wall else 0.0,
        "p50_ms": percentile(ordered, 0.5) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
        "wall_s": wall,
    }


def inbound(port: int, messages: int, concurrency: int) -> dict[str, Any]:
    tag = secrets.token_hex(4)
    per_client = [messages // concurrency + (1 if i < messages % concurrency else 0) for i in range(concurrency)]

    def client(count: int, first: int) -> tuple[list[float], int]:
        times: list[float] = []
        errors = 0
        with smtplib.SMTP(HOST, port, timeout=60) as smtp:
            for n in range(first, first + count):
                body = MESSAGE.format(to=f"{APP}@localhost", n=n, tag=tag).encode()
                t0 = time.perf_counter()
                try:
                    smtp.sendmail("bench@example.com", [f"{APP}@localhost"], body)
                    times.append(time.perf_counter() - t0)
                except smtplib.SMTPException:
                    errors += 1
        return times, errors

    starts = [sum(per_client[:i]) for i in range(concurrency)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(client, per_client, starts))
    wall = time.perf_counter() - t0
    return summary([t for times, _ in results for t in times], wall, sum(e for _, e in results))


async def outbound(base: str, messages: int, concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    numbers = iter(range(messages))

    async def caller(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        for n in numbers:
            t0 = time.perf_counter()
            async with session.post(f"{base}/anvil/apps/{APP}/_/call/send_one", json={"args": [n]}) as r:
                await r.read()
                if r.status == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120), trust_env=False) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(caller(session) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return summary(latencies, wall, errors)


async def run_server(folder: Path, relay_port: int | None, args: argparse.Namespace, sink: Sink) -> dict[str, Any]:
    port, smtp_port, token = free_port(), free_port(), secrets.token_hex(16)
    base, auth = f"http://{HOST}:{port}", {"Authorization": f"token {token}"}
    options = [f"--AnvilApp.smtp_server_port={smtp_port}", "--AnvilApp.mail_kept=100000"]
    if relay_port is not None:
        options.append(f"--AnvilApp.smtp_relay_url=smtp+plain://{HOST}:{relay_port}")
    server = ServerProcess(
        "jupyter-anvil",
        [
            sys.executable, "-m", "jupyter_anvil", str(folder), f"--ServerApp.ip={HOST}", f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False",
            *options,
        ],
        folder,
        folder / f"anvil-{port}.log",
    )  # fmt: skip

    async def ready(s: aiohttp.ClientSession) -> bool:
        async with s.get(f"{base}/anvil/api/apps", headers=auth) as r:
            listing = await r.json() if r.status == 200 else {}
        return any(a.get("name") == APP and a.get("status") == "ready" for a in listing.get("apps", []))

    server.start()
    try:
        await wait_until(server, ready)
        await outbound(base, min(20, args.messages), 2)  # warm-up: imports, store, connections
        results: dict[str, Any] = {}
        if relay_port is not None:
            inbound(smtp_port, min(20, args.messages), 2)
            results["inbound"] = await asyncio.to_thread(inbound, smtp_port, args.messages, args.concurrency)
            before = sum(sink.seen.values())
            results["outbound"] = await outbound(base, args.messages, args.concurrency)
            delivered = sum(sink.seen.values()) - before
            results["outbound"]["relay_received"] = delivered
            results["outbound"]["delivered_twice"] = sum(1 for c in sink.seen.values() if c > 1)
        else:
            results["outbox"] = await outbound(base, args.messages, args.concurrency)
        return results
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--json", help="also write the raw numbers to this file ('-': stdout)")
    args = parser.parse_args()
    sink = Sink()
    relay_port = free_port()
    relay = Controller(sink, hostname=HOST, port=relay_port)
    relay.start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder)
            write_notebook(path)
            results = asyncio.run(run_server(path, relay_port, args, sink))
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder)
            write_notebook(path)
            results.update(asyncio.run(run_server(path, None, args, sink)))
    finally:
        relay.stop()
    print(f"## mail: {args.messages} messages, {args.concurrency} at once, 2 app kernels ({platform.machine()})")
    for name, row in results.items():
        extra = "".join(f" {k}={row[k]}" for k in ("relay_received", "delivered_twice") if k in row)
        print(
            f"  {name:<9} {row['per_second']:7.1f} msg/s   p50 {row['p50_ms']:7.1f} ms   p99 {row['p99_ms']:7.1f} ms"
            f"   errors {row['errors']}{extra}"
        )
    if args.json:
        write_json({"commit": git_commit(), "args": vars(args), **results}, args.json)


if __name__ == "__main__":
    main()
