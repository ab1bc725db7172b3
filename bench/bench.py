"""Measure auth-proxy against nginx and a bare aiohttp proxy, side by side (issue 6).

Run through ``bench/run``. Everything listens on 127.0.0.1 and everything started here is
stopped at the end, also on failure, SIGTERM or Ctrl-C. The steps:

1. an upstream nginx serving a small JSON body, 64 KiB and 1 MiB under ``/`` and ``/saas/``;
2. ``wrk`` at 1 and 64 connections against: the upstream directly; nginx as a reverse
   proxy (1 and 2 workers); ``bench/bare_proxy.py`` (1 and 2 processes); auth-proxy's
   ``ivanti-api-key`` and ``iics-password`` routes (``workers: 1`` and ``2``), the IICS
   login going to ``bench/bench_sandbox.py``, whose ``serverUrl`` names the upstream;
3. the ratios the issue sets as targets;
4. auth-proxy's peak RSS while streaming 256 MiB and 1 GiB down and up;
5. cold start: 200 concurrent requests on a fresh proxy must cause exactly one login.

Tables go to stdout, the same numbers to ``bench/results/latest.json``.
Settings: ``BENCH_DURATION`` (seconds per wrk run, default 5), ``BENCH_WARMUP`` (1),
``BENCH_TMP`` (scratch directory, default a fresh one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "latest.json"
PYTHON = sys.executable

DURATION = int(os.environ.get("BENCH_DURATION", "5"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "1"))
CONNECTIONS = (1, 64)
MIB = 1024 * 1024

SMALL_BODY = json.dumps(
    {
        "@type": "agent",
        "id": "01ABCD08000000000002",
        "name": "bench-agent",
        "active": True,
        "readyToRun": True,
    }
).encode()
BODIES = {"small": "small.json", "64k": "64k.bin", "1m": "1m.bin"}
BODY_SIZES = {"small": len(SMALL_BODY), "64k": 64 * 1024, "1m": MIB}
BODY_TITLES = {
    "small": f"small JSON body ({len(SMALL_BODY)} B)",
    "64k": "64 KiB body",
    "1m": "1 MiB body",
}
STREAM_FILES = {256 * MIB: "256m.bin", 1024 * MIB: "1g.bin"}

TARGETS = {
    "direct": "direct to nginx",
    "nginx-1": "nginx proxy, 1 worker",
    "nginx-2": "nginx proxy, 2 workers",
    "bare-1": "bare aiohttp, 1 process",
    "bare-2": "bare aiohttp, 2 processes",
    "key-1": "auth-proxy api-key, 1 worker",
    "iics-1": "auth-proxy iics, 1 worker",
    "key-2": "auth-proxy api-key, 2 workers",
    "iics-2": "auth-proxy iics, 2 workers",
}
ROUTES = {"iics": "iics-password", "key": "ivanti-api-key"}
RSS_TARGET_MB = 100
COLD_REQUESTS = 200

_CPUS = sorted(os.sched_getaffinity(0))
PINNING = len(_CPUS) >= 2
WRK_CPU, SERVER_CPU = (_CPUS[0], _CPUS[1]) if PINNING else (None, None)

NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BenchError(Exception):
    """A step could not run; the message says which and why."""


# --------------------------------------------------------------------------- processes


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group: a server and the workers it forked."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp = stat.rpartition(")")[2].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            pids.append(int(entry))
    return pids


def listening_pids(pgid: int, port: int) -> set[int]:
    """Processes of the group holding a listening socket on ``port`` (one each with
    SO_REUSEPORT, or a shared one inherited across a fork)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                parts = line.split()
                if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{parts[9]}]")
    found = set()
    for pid in group_pids(pgid):
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        if inodes.intersection(links):
            found.add(pid)
    return found


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


@dataclass
class Server:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def pids(self) -> list[int]:
        return group_pids(self.popen.pid)

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(f"    {line}" for line in text)

    def pin(self, cpu: int | None) -> None:
        cpus = {cpu} if cpu is not None else set(_CPUS)
        for pid in self.pids():
            os.sched_setaffinity(pid, cpus)

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM the whole group, wait for it to go, SIGKILL what is left."""
        pgid = self.popen.pid
        deadline = time.monotonic() + timeout
        _signal_group(pgid, signal.SIGTERM)
        while time.monotonic() < deadline and (self.popen.poll() is None or self.pids()):
            time.sleep(0.05)
        _signal_group(pgid, signal.SIGKILL)
        self.popen.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


@dataclass
class Processes:
    """Every server this run started; each in its own session, so a group kill gets all."""

    tmp: Path
    servers: list[Server] = field(default_factory=list)

    def start(self, name: str, argv: list[str], cpu: int | None = None) -> Server:
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]
        log = self.tmp / f"{name}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
                start_new_session=True,
            )
        # bench/run's trap reads this if we die before our own cleanup runs.
        with open(self.tmp / "pids", "a") as pids:
            pids.write(f"{popen.pid}\n")
        server = Server(name, popen, log)
        self.servers.append(server)
        return server

    def stop(self, server: Server) -> None:
        server.stop()
        self.servers.remove(server)

    def stop_all(self) -> None:
        while self.servers:
            self.stop(self.servers[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with NO_PROXY_OPENER.open(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until_up(server: Server, url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.popen.poll() is not None:
            raise BenchError(
                f"{server.name} exited with {server.popen.returncode}:\n{server.tail()}"
            )
        try:
            fetch(url, timeout=1)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(f"{server.name} did not answer {url}:\n{server.tail()}") from None
            time.sleep(0.05)


def wait_for_json_line(server: Server, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in server.log.read_text().splitlines():
            if line.startswith("{"):
                return dict(json.loads(line))
        if server.popen.poll() is not None:
            break
        time.sleep(0.05)
    raise BenchError(f"{server.name} printed no URLs:\n{server.tail()}")


def wait_for_listeners(server: Server, port: int, wanted: int, timeout: float = 10) -> set[int]:
    """The processes listening on ``port`` once ``wanted`` do, or when time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        found = listening_pids(server.popen.pid, port)
        if len(found) >= wanted or time.monotonic() > deadline or server.popen.poll() is not None:
            return found
        time.sleep(0.1)


def memory_mb(pids: set[int], key: str) -> list[float]:
    """``VmHWM`` (peak) or ``VmRSS`` of each process, in MB (kB / 1024)."""
    return [round(status_kb(pid, key) / 1024, 1) for pid in sorted(pids)]


# --------------------------------------------------------------------------- wrk


@dataclass(frozen=True)
class Run:
    rps: float
    p50_us: float
    p99_us: float
    requests: int
    errors: int  # non-2xx/3xx answers plus socket errors


_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def _latency(text: str, percentile: str) -> float:
    match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.MULTILINE)
    if match is None:
        raise BenchError(f"no {percentile}% latency in wrk output:\n{text}")
    return float(match[1]) * _UNITS_US[match[2]]


def parse_wrk(text: str) -> Run:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    if rps is None or total is None:
        raise BenchError(f"unexpected wrk output:\n{text}")
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", text))
    socket_errors = re.search(r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return Run(
        rps=float(rps[1]),
        p50_us=_latency(text, "50"),
        p99_us=_latency(text, "99"),
        requests=int(total[1]),
        errors=errors,
    )


def wrk(url: str, connections: int, seconds: int) -> Run:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    if WRK_CPU is not None:
        argv = ["taskset", "-c", str(WRK_CPU), *argv]
    done = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=seconds + 30, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"wrk failed on {url}: {done.stderr.strip() or done.stdout.strip()}")
    return parse_wrk(done.stdout)


def measure(name: str, base: str) -> dict[str, dict[int, Run]]:
    """All body sizes at every connection count, each after a warm-up at the highest."""
    print(f"  {TARGETS[name]:<32}", end="", flush=True)
    runs: dict[str, dict[int, Run]] = {}
    for body, file in BODIES.items():
        url = f"{base}/{file}"
        status, data = fetch(url)
        if status != 200 or len(data) != BODY_SIZES[body]:
            raise BenchError(f"GET {url}: status {status}, {len(data)} bytes")
        wrk(url, max(CONNECTIONS), WARMUP)
        runs[body] = {c: wrk(url, c, DURATION) for c in CONNECTIONS}
    small = runs["small"][64]
    print(f"small c=64: {small.rps:>9,.0f} req/s", flush=True)
    return runs


def check_injected(base: str, pattern: str) -> None:
    """The upstream's ``/headers`` echo shows that the proxy added its header."""
    status, data = fetch(f"{base}/headers")
    if status != 200 or not re.search(pattern, data.decode()):
        raise BenchError(f"GET {base}/headers: status {status}, no {pattern!r} in {data[:200]!r}")


# --------------------------------------------------------------------------- nginx


NGINX_MAIN = """\
worker_processes {workers};
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    keepalive_timeout 60;
    keepalive_requests 1000000;
    types {{ application/json json; application/octet-stream bin; }}
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{http}
}}
"""

# What the upstream's /headers answers: the headers a proxy is meant to add.
HEADERS_ECHO = "x-auth=$http_x_auth authorization=$http_authorization icsessionid=$http_icsessionid"
UPSTREAM_SERVER = """\
    server {{
        listen 127.0.0.1:{port};
        root {www};
        location /saas/ {{ alias {www}/; }}
        location ~ ^(/saas)?/headers$ {{
            default_type text/plain;
            return 200 "{echo}\\n";
        }}
    }}"""

# Keep-alive both ways. 64 KiB buffers and no temp files: a large answer streams through
# memory as it does through the Python proxies (nginx's defaults, 4 KiB buffers spilling
# to disk, make it 2-5x slower on 1 MiB bodies and would flatter the ratios).
PROXY_SERVER = """\
    upstream backend {{
        server 127.0.0.1:{upstream};
        keepalive 128;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Auth "bench-token";
            proxy_buffer_size 64k;
            proxy_buffers 8 64k;
            proxy_busy_buffers_size 128k;
            proxy_max_temp_file_size 0;
        }}
    }}"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(found, os.X_OK):
        raise BenchError("nginx not found (bench/run installs nginx-light)")
    return found


def nginx_argv(directory: Path, workers: int, http: str) -> list[str]:
    directory.mkdir(mode=0o755)
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_MAIN.format(workers=workers, dir=directory, http=http))
    return [
        nginx_binary(),
        "-p",
        str(directory),
        "-e",
        str(directory / "error.log"),
        "-c",
        str(conf),
    ]


def write_bodies(www: Path) -> None:
    www.mkdir(mode=0o755)
    (www / BODIES["small"]).write_bytes(SMALL_BODY)
    (www / BODIES["64k"]).write_bytes(os.urandom(BODY_SIZES["64k"]))
    (www / BODIES["1m"]).write_bytes(os.urandom(BODY_SIZES["1m"]))
    for size, name in STREAM_FILES.items():
        with open(www / name, "wb") as sparse:
            sparse.truncate(size)


# --------------------------------------------------------------------------- ratios


@dataclass(frozen=True)
class Ratio:
    name: str
    op: str  # ">=" or "<="
    target: float
    unit: str
    values: dict[str, float | None]  # by auth-proxy route

    def verdict(self, route: str) -> str:
        value = self.values[route]
        if value is None:
            return "n/a"
        ok = value >= self.target if self.op == ">=" else value <= self.target
        return "PASS" if ok else "MISS"


def compute_ratios(results: dict[str, Any]) -> list[Ratio]:
    def rps(name: str, body: str = "small", c: int = 64) -> float | None:
        runs = results.get(name)
        return runs[body][c].rps if runs else None

    def p50(name: str) -> float | None:
        runs = results.get(name)
        return runs["small"][1].p50_us if runs else None

    def div(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    def sub(a: float | None, b: float | None) -> float | None:
        return a - b if a is not None and b is not None else None

    specs: list[tuple[str, str, float, str, Callable[[str], float | None]]] = [
        ("auth-proxy / bare aiohttp, 1 process (small, c=64)", ">=", 0.90, "x",
         lambda r: div(rps(f"{r}-1"), rps("bare-1"))),
        ("auth-proxy / bare aiohttp, 2 processes (small, c=64)", ">=", 0.90, "x",
         lambda r: div(rps(f"{r}-2"), rps("bare-2"))),
        ("auth-proxy 2 workers / 1 worker (small, c=64)", ">=", 1.7, "x",
         lambda r: div(rps(f"{r}-2"), rps(f"{r}-1"))),
        ("auth-proxy(2) / nginx(2 workers) (small, c=64)", ">=", 0.22, "x",
         lambda r: div(rps(f"{r}-2"), rps("nginx-2"))),
        ("added p50 vs direct, 1 worker (small, c=1)", "<=", 300, "µs",
         lambda r: sub(p50(f"{r}-1"), p50("direct"))),
        ("auth-proxy(2) / nginx(1 worker) (1 MiB, c=64)", ">=", 0.75, "x",
         lambda r: div(rps(f"{r}-2", "1m"), rps("nginx-1", "1m"))),
    ]  # fmt: skip
    return [
        Ratio(name, op, target, unit, {route: _rounded(value(route)) for route in ROUTES})
        for name, op, target, unit, value in specs
    ]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# --------------------------------------------------------------------------- clients


async def download(url: str) -> int:
    timeout = aiohttp.ClientTimeout(total=300)
    async with (
        aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as client,
        client.get(url) as response,
    ):
        if response.status != 200:
            raise BenchError(f"GET {url}: status {response.status}")
        size = 0
        async for chunk in response.content.iter_chunked(MIB):
            size += len(chunk)
        return size


async def _zeros(size: int) -> AsyncIterator[bytes]:
    chunk = bytes(MIB)
    for _ in range(size // MIB):
        yield chunk


async def upload(url: str, size: int) -> int:
    timeout = aiohttp.ClientTimeout(total=300)
    async with (
        aiohttp.ClientSession(timeout=timeout) as client,
        client.post(url, data=_zeros(size)) as response,
    ):
        if response.status != 200:
            raise BenchError(f"POST {url}: status {response.status}")
        return int((await response.json())["bytes"])


async def burst(url: str, count: int) -> tuple[float, list[int]]:
    """Fire ``count`` requests at once; the time until all have answered, and statuses."""
    connector = aiohttp.TCPConnector(limit=count)
    async with aiohttp.ClientSession(connector=connector) as client:

        async def one() -> int:
            async with client.get(url) as response:
                await response.read()
                return response.status

        started = time.perf_counter()
        statuses = await asyncio.gather(*(one() for _ in range(count)))
        return time.perf_counter() - started, list(statuses)


# --------------------------------------------------------------------------- the run


class Bench:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs = Processes(tmp)
        self.results: dict[str, dict[str, dict[int, Run]] | None] = {}
        self.multi_worker = False
        self.upstream: Server | None = None
        self.upstream_url = ""
        self.login_url = ""
        self.sink_url = ""

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        machine = describe_machine()
        print_header(machine)
        self.start_upstream()
        self.start_sandbox()
        print(f"\nthroughput: wrk -t1, {WARMUP}s warm-up at c=64, then {DURATION}s per run")
        self.bench_direct()
        for workers in (1, 2):
            self.bench_nginx_proxy(workers)
        for workers in (1, 2):
            self.bench_bare(workers)
        for workers in (1, 2):
            self.bench_auth_proxy(workers)
        print_tables(self.results)
        ratios = compute_ratios(self.results)
        print_ratios(ratios)
        memory = self.bench_memory()
        cold = self.bench_cold_start()
        elapsed = time.monotonic() - started
        print(f"\ntotal time: {elapsed:.0f} s")
        return {
            "meta": {**machine, "elapsed_s": round(elapsed, 1)},
            "throughput": {
                name: None
                if runs is None
                else {
                    body: {f"c{c}": asdict(r) for c, r in by_c.items()}
                    for body, by_c in runs.items()
                }
                for name, runs in self.results.items()
            },
            "ratios": [
                {**asdict(r), "verdicts": {route: r.verdict(route) for route in ROUTES}}
                for r in ratios
            ],
            "memory": memory,
            "cold_start": cold,
        }

    # ---- servers

    def start_upstream(self) -> None:
        www = self.tmp / "www"
        self.tmp.chmod(0o755)  # nginx workers run as nobody when started by root
        write_bodies(www)
        port = free_port()
        http = UPSTREAM_SERVER.format(port=port, www=www, echo=HEADERS_ECHO)
        argv = nginx_argv(self.tmp / "nginx-upstream", 1, http)
        self.upstream = self.procs.start("nginx-upstream", argv, cpu=WRK_CPU)
        self.upstream_url = f"http://127.0.0.1:{port}"
        wait_until_up(self.upstream, f"{self.upstream_url}/{BODIES['small']}")
        for prefix in ("", "/saas"):
            status, data = fetch(f"{self.upstream_url}{prefix}/{BODIES['small']}")
            if status != 200 or data != SMALL_BODY:
                raise BenchError(f"upstream nginx: GET {prefix}/{BODIES['small']} gave {status}")

    def start_sandbox(self) -> None:
        argv = [PYTHON, "bench/bench_sandbox.py", "--server-url", f"{self.upstream_url}/saas"]
        sandbox = self.procs.start("sandbox", argv)
        urls = wait_for_json_line(sandbox)
        self.login_url, self.sink_url = urls["login"], urls["sink"]
        wait_until_up(sandbox, f"{self.sink_url}/stats")

    def logins_seen(self) -> int:
        return int(json.loads(fetch(f"{self.sink_url}/stats")[1])["logins"])

    def auth_proxy_config(self, port: int, workers: int) -> Path:
        def api_key_route(name: str, url: str) -> dict[str, Any]:
            auth = {"type": "ivanti-api-key", "url": url, "api_key": "bench-api-key"}
            return {"name": name, "match": {"prefix": f"/{name}"}, "auth": auth}

        iics = {
            "type": "iics-password",
            "login_url": self.login_url,
            "username": "demo",
            "password": "demo-password",
        }
        config = {
            "listen": {"host": "127.0.0.1", "port": port},
            "workers": workers,
            "shutdown_timeout": 1,
            "upstream": {"trust_env": False},
            # Per process, as the figures have always been taken: bench/fleet.py compares
            # the stores (and never writes to the user's state directory).
            "session_store": {"type": "memory"},
            "routes": [
                {"name": "iics", "match": {"prefix": "/iics"}, "auth": iics},
                api_key_route("key", self.upstream_url),
                api_key_route("sink", self.sink_url),
            ],
        }
        path = self.tmp / f"auth-proxy-{port}.yaml"
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        return path

    def start_auth_proxy(self, workers: int, cpu: int | None) -> tuple[Server, str, set[int]]:
        """A fresh auth-proxy (access log on, to a file); its URL and serving processes."""
        port = free_port()
        argv = [PYTHON, "-m", "proxy", "serve", "-c", str(self.auth_proxy_config(port, workers))]
        server = self.procs.start(f"auth-proxy-{port}", argv, cpu=cpu)
        url = f"http://127.0.0.1:{port}"
        wait_until_up(server, f"{url}/-/healthz")
        return server, url, wait_for_listeners(server, port, workers)

    # ---- throughput

    def bench_direct(self) -> None:
        assert self.upstream is not None
        self.upstream.pin(SERVER_CPU)
        self.results["direct"] = measure("direct", self.upstream_url)
        self.upstream.pin(WRK_CPU)

    def bench_nginx_proxy(self, workers: int) -> None:
        port = free_port()
        http = PROXY_SERVER.format(port=port, upstream=self.upstream_url.rsplit(":", 1)[1])
        argv = nginx_argv(self.tmp / f"nginx-proxy-{workers}", workers, http)
        server = self.procs.start(f"nginx-proxy-{workers}", argv, cpu=_server_cpu(workers))
        url = f"http://127.0.0.1:{port}"
        wait_until_up(server, f"{url}/{BODIES['small']}")
        check_injected(url, r"x-auth=bench-token")
        self.results[f"nginx-{workers}"] = measure(f"nginx-{workers}", url)
        self.procs.stop(server)

    def bench_bare(self, workers: int) -> None:
        port = free_port()
        argv = [PYTHON, "bench/bare_proxy.py", "--port", str(port)]
        argv += ["--upstream", self.upstream_url, "--workers", str(workers)]
        server = self.procs.start(f"bare-{workers}", argv, cpu=_server_cpu(workers))
        url = f"http://127.0.0.1:{port}"
        wait_until_up(server, f"{url}/{BODIES['small']}")
        listening = wait_for_listeners(server, port, workers)
        if len(listening) != workers:
            raise BenchError(f"bare proxy: {len(listening)} of {workers} processes listening")
        check_injected(url, r"x-auth=bench-token")
        self.results[f"bare-{workers}"] = measure(f"bare-{workers}", url)
        self.procs.stop(server)

    def bench_auth_proxy(self, workers: int) -> None:
        server, url, listening = self.start_auth_proxy(workers, _server_cpu(workers))
        if len(listening) < workers:
            print(
                f"  auth-proxy workers: {workers} -> {len(listening)} process(es) listening;"
                " multi-process serving not available: rows n/a"
            )
            self.results[f"key-{workers}"] = self.results[f"iics-{workers}"] = None
            self.procs.stop(server)
            return
        self.multi_worker = self.multi_worker or workers > 1
        check_injected(f"{url}/key", r"authorization=rest_api_key=bench-api-key")
        check_injected(f"{url}/iics/saas", r"icsessionid=\S")
        self.results[f"key-{workers}"] = measure(f"key-{workers}", f"{url}/key")
        self.results[f"iics-{workers}"] = measure(f"iics-{workers}", f"{url}/iics/saas")
        self.procs.stop(server)

    # ---- memory

    def bench_memory(self) -> list[dict[str, Any]]:
        print("\npeak RSS of auth-proxy while streaming (VmHWM, max over its workers)")
        print(f"  target < {RSS_TARGET_MB} MB; MB = kB / 1024")
        print(
            f"  {'workers':<8} {'transfer':<16} {'idle MB':>8} {'peak MB':>8} {'MB/s':>7}  verdict"
        )
        rows = []
        for workers in (1, 2):
            for direction in ("download", "upload"):
                for size in STREAM_FILES:
                    row = self.stream_once(workers, direction, size)
                    rows.append(row)
                    label = f"{direction} {size // MIB} MiB"
                    if row["peak_mb"] is None:
                        print(f"  {workers:<8} {label:<16} {'n/a':>8} {'n/a':>8} {'n/a':>7}  n/a")
                        continue
                    print(
                        f"  {workers:<8} {label:<16} {row['idle_mb']:>8.1f} {row['peak_mb']:>8.1f}"
                        f" {row['mb_per_s']:>7.0f}  {row['verdict']}"
                    )
        return rows

    def stream_once(self, workers: int, direction: str, size: int) -> dict[str, Any]:
        row: dict[str, Any] = {"workers": workers, "direction": direction, "bytes": size}
        if workers > 1 and not self.multi_worker:
            return {**row, "idle_mb": None, "peak_mb": None, "mb_per_s": None, "verdict": "n/a"}
        server, url, serving = self.start_auth_proxy(workers, cpu=None)
        try:
            idle = memory_mb(serving, "VmRSS")
            started = time.perf_counter()
            if direction == "download":
                moved = asyncio.run(download(f"{url}/key/{STREAM_FILES[size]}"))
            else:
                moved = asyncio.run(upload(f"{url}/sink/sink", size))
            seconds = time.perf_counter() - started
            peak = memory_mb(serving, "VmHWM")
        finally:
            self.procs.stop(server)
        if moved != size:
            raise BenchError(f"{direction} of {size} bytes moved {moved}")
        return {
            **row,
            "idle_mb": max(idle),
            "peak_mb": max(peak),
            "peak_mb_per_process": peak,
            "mb_per_s": round(size / MIB / seconds),
            "verdict": "PASS" if max(peak) < RSS_TARGET_MB else "MISS",
        }

    # ---- cold start

    def bench_cold_start(self) -> dict[str, Any]:
        server, url, _ = self.start_auth_proxy(1, cpu=None)
        try:
            before = self.logins_seen()
            seconds, statuses = asyncio.run(
                burst(f"{url}/iics/saas/{BODIES['small']}", COLD_REQUESTS)
            )
            logins = self.logins_seen() - before
        finally:
            self.procs.stop(server)
        ok = sum(1 for status in statuses if status == 200)
        verdict = "PASS" if logins == 1 and ok == COLD_REQUESTS else "MISS"
        print(
            f"\ncold start: {COLD_REQUESTS} concurrent requests, fresh auth-proxy (iics, 1 worker)"
        )
        print(f"  all answered in {seconds * 1000:.0f} ms; {ok} answered 200")
        print(f"  logins the sandbox saw: {logins} (must be exactly 1)  {verdict}")
        return {
            "requests": COLD_REQUESTS,
            "ok": ok,
            "seconds": round(seconds, 3),
            "logins": logins,
            "verdict": verdict,
        }


def _server_cpu(workers: int) -> int | None:
    """Single-process servers get their own core; multi-process ones float."""
    return SERVER_CPU if workers == 1 else None


# --------------------------------------------------------------------------- output


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    return (done.stdout + done.stderr).strip().splitlines()[0]


def describe_machine() -> dict[str, Any]:
    try:
        import uvloop

        uvloop_version: str | None = uvloop.__version__
    except ImportError:
        uvloop_version = None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "uvloop": uvloop_version,
        "nginx": _version([nginx_binary(), "-v"]),
        "wrk": _version(["wrk", "-v"]),
        "commit": _version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "duration_s": DURATION,
        "warmup_s": WARMUP,
        "pinning": pinning_text(),
    }


def pinning_text() -> str:
    if not PINNING:
        return "none (fewer than 2 CPUs available)"
    return (
        f"wrk on CPU {WRK_CPU}; single-process servers (nginx proxy 1 worker, bare aiohttp 1, "
        f"auth-proxy 1 worker) on CPU {SERVER_CPU}; 2-process servers float; the upstream "
        f"nginx on CPU {SERVER_CPU} while measured directly, else on CPU {WRK_CPU}; "
        "the sandbox and the memory/cold-start proxies float"
    )


def print_header(info: dict[str, Any]) -> None:
    print(f"auth-proxy benchmark  {info['date']}  commit {info['commit']}")
    print(
        f"{info['cpus']} CPUs, Linux {info['kernel']}, Python {info['python']}, "
        f"aiohttp {info['aiohttp']}, uvloop {info['uvloop'] or 'not installed'}, "
        f"{info['nginx']}, {info['wrk'].split(' Copyright')[0]}"
    )
    print(f"pinning: {info['pinning']}")


def fmt_us(us: float) -> str:
    if us < 1000:
        return f"{us:.0f}µs"
    if us < 1e6:
        return f"{us / 1000:.2f}ms"
    return f"{us / 1e6:.2f}s"


def print_tables(results: dict[str, Any]) -> None:
    for body in BODIES:
        print(f"\n{BODY_TITLES[body]}")
        print(f"  {'':<32}{'c=1':^28}  {'c=64':^28}")
        cols = f"{'req/s':>10}{'p50':>9}{'p99':>9}"
        print(f"  {'target':<32}{cols}  {cols}")
        for name, label in TARGETS.items():
            runs = results.get(name)
            cells = []
            for c in CONNECTIONS:
                if runs is None:
                    cells.append(f"{'n/a':>10}{'n/a':>9}{'n/a':>9}")
                    continue
                r = runs[body][c]
                mark = "!" if r.errors else " "
                cells.append(f"{r.rps:>9,.0f}{mark}{fmt_us(r.p50_us):>9}{fmt_us(r.p99_us):>9}")
            print(f"  {label:<32}{'  '.join(cells)}")
    if any(
        r.errors
        for runs in results.values()
        if runs
        for by_c in runs.values()
        for r in by_c.values()
    ):
        print("  ! some requests failed (non-2xx answers or socket errors): see latest.json")


def print_ratios(ratios: list[Ratio]) -> None:
    print("\nratios (auth-proxy route: iics = iics-password, key = ivanti-api-key)")
    print(f"  {'ratio':<52}{'target':>9}{'iics':>10} {'':<5}{'key':>10}")
    for r in ratios:
        cells = []
        for route in ROUTES:
            value = r.values[route]
            shown = (
                "n/a" if value is None else f"{value:.0f}µs" if r.unit == "µs" else f"{value:.2f}"
            )
            verdict = r.verdict(route)
            cells.append(f"{shown:>10} {verdict if verdict != 'n/a' else '':<5}")
        target = f"{r.op} {r.target:g}{'µs' if r.unit == 'µs' else ''}"
        print(f"  {r.name:<52}{target:>9}{''.join(cells)}")


def write_results(report: dict[str, Any]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"results: {RESULTS.relative_to(ROOT)}")


# --------------------------------------------------------------------------- main


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    given = os.environ.get("BENCH_TMP")
    tmp = Path(given) if given else Path(tempfile.mkdtemp(prefix="auth-proxy-bench-"))
    bench = Bench(tmp)
    try:
        write_results(bench.run())
    except BenchError as exc:
        print(f"\nbench: {exc}", file=sys.stderr)
        return 1
    finally:
        bench.procs.stop_all()
        if not given:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
