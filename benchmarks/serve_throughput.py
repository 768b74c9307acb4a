"""Serving throughput and latency: zhisuan serve vs Ray Serve vs an in-process ONNX Runtime loop.

Three ways to serve the same zoo model packages (efficientnet-lite0 with its zoo processing:
uint8 NHWC image in, top-5 labels and logits out; minilm-l6: int64 token ids and mask of 32
tokens in, sentence embedding out), each with dynamic batching of at most 8 requests waiting at
most 2 ms, one batch in flight, ONNX Runtime with 2 intra-op threads:

(a) ``zhisuan serve`` (the real CLI, as a subprocess) over HTTP/1.1, Open Inference Protocol v2
    with the binary tensor extension both ways;
(b) Ray Serve (a subprocess driving a local Ray cluster): one deployment per model whose
    ``@serve.batch`` method runs the same ``Package.open_runner`` runner, behind Ray's HTTP proxy,
    decoding and encoding the same v2 binary requests with zhisuan's codec, the same pre/post-processing
    per request, ``max_ongoing_requests`` 64 so that batches can fill;
(c) in process: the same runner and processing behind a minimal asyncio batcher with the same
    policy, no HTTP: the upper bound.

The load generator is closed-loop: C connections (C = 1, 8, 32), each sending its next request
when the previous answer arrived, over raw asyncio sockets (keep-alive, TCP_NODELAY; a lighter
client than httpx, so it takes less CPU from the servers on a small machine). Both servers stay
up for the whole model; for each concurrency the three engines are measured in ``--rounds``
interleaved rounds (order rotated every round, so drift in a shared machine's load hits each
alike), each a warm-up then one ``--window-s`` window. Throughput is the median over rounds with
the min-max; latency percentiles pool every request that completed inside the windows. Before
any timing, each server's answer is checked against the in-process one.

Idle memory (and idle CPU over 5 s) is the sum over the server's process tree (the server and every process it
started: for Ray, its driver, GCS, raylet, workers, controller, proxy and replica), once the
model is loaded and before any traffic: RSS (shared pages counted once per process) and PSS
(shared pages split between processes: the fair tree total).

    python benchmarks/serve_throughput.py [--models effnet,minilm] [--concurrency 1,8,32]
        [--window-s 4 --rounds 3] [--threads 2] [--skip-ray] [--json-out results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MODELS = {"effnet": "efficientnet-lite0", "minilm": "minilm-l6"}
MAX_BATCH = 8
MAX_DELAY_MS = 2.0
SEQ_LEN = 32
# Triton: no official idle-memory figure was found. Asked how much CPU and memory the server itself
# uses, maintainers suggested measuring a server started with an empty model repository
# (triton-inference-server/server#4225); startup logs show a 256 MiB default pinned memory pool
# (pinned_memory_pool_byte_size 268435456, e.g. server#7950), which matters on GPU hosts.
TRITON_NOTE = (
    "no published idle figure (triton-inference-server/server#4225: measure it with an empty model "
    "repository); its default pinned host memory pool is 256 MiB (pinned_memory_pool_byte_size, GPU hosts)"
)


# --- requests ------------------------------------------------------------------------------------


def make_inputs(model: str, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if model == "effnet":
        from zhisuan.zoo.data.images import labelled_views

        views = labelled_views(224)
        return {"image": views[seed % len(views)].pixels[None].astype(np.uint8)}
    ids = rng.integers(1000, 20000, size=(1, SEQ_LEN), dtype=np.int64)
    ids[0, 0], ids[0, -1] = 101, 102  # [CLS] ... [SEP]
    return {"input_ids": ids, "attention_mask": np.ones((1, SEQ_LEN), dtype=np.int64)}


def v2_binary_request(inputs: dict[str, np.ndarray]) -> tuple[bytes, int]:
    """A v2 request with binary inputs and binary outputs: (body, JSON header length)."""
    header = {
        "inputs": [
            {"name": n, "datatype": _v2(a), "shape": list(a.shape), "parameters": {"binary_data_size": a.nbytes}}
            for n, a in inputs.items()
        ],
        "parameters": {"binary_data_output": True},
    }
    head = json.dumps(header).encode()
    return head + b"".join(np.ascontiguousarray(a).tobytes() for a in inputs.values()), len(head)


def _v2(a: np.ndarray) -> str:
    from zhisuan.serve.processing import v2_datatype

    return v2_datatype(a.dtype)


def decode_v2_response(body: bytes, header_length: int | None) -> dict[str, np.ndarray]:
    head = body if header_length is None else body[:header_length]
    doc = json.loads(head)
    out, offset = {}, header_length or 0
    for o in doc["outputs"]:
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is None:
            out[o["name"]] = np.array(o["data"]).reshape(o["shape"])
            continue
        chunk = body[offset : offset + size]
        offset += size
        if o["datatype"] == "BYTES":
            from zhisuan.serve.protocol import decode_bytes_tensor

            count = int(np.prod(o["shape"]))
            out[o["name"]] = decode_bytes_tensor(chunk, count).reshape(o["shape"])
        else:
            from zhisuan.serve.processing import numpy_dtype

            out[o["name"]] = np.frombuffer(chunk, dtype=numpy_dtype(o["datatype"])).reshape(o["shape"])
    return out


# --- a minimal HTTP/1.1 client on asyncio streams ------------------------------------------------


class HttpConnection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def request(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            body = b"".join(parts)
        else:
            body = b""
        return status, headers, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def raw_request(host: str, port: int, path: str, body: bytes, header_length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/octet-stream\r\n"
        f"Inference-Header-Content-Length: {header_length}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@dataclass
class RunResult:
    engine: str
    model: str
    concurrency: int
    throughput_rps: float  # median over rounds
    throughput_min_rps: float
    throughput_max_rps: float
    rounds_rps: list[float]
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    loadavg_1m: list[float]  # at the end of each round


@dataclass
class Window:
    """One measurement window: completed requests per second, their latencies, failed requests."""

    rate_rps: float
    latencies_ms: list[float]
    errors: int
    loadavg_1m: float


def window_of(done: list[tuple[float, float, bool]], start: float, window_s: float) -> Window:
    inside = [(t0, t1, ok) for t0, t1, ok in done if start <= t1 < start + window_s]
    latencies = [(t1 - t0) * 1000 for t0, t1, ok in inside if ok]
    return Window(len(latencies) / window_s, latencies, sum(1 for *_, ok in inside if not ok), os.getloadavg()[0])


def aggregate(engine: str, model: str, concurrency: int, windows: list[Window]) -> RunResult:
    rates = [w.rate_rps for w in windows]
    lat = np.array([x for w in windows for x in w.latencies_ms] or [float("nan")])
    return RunResult(
        engine, model, concurrency, statistics.median(rates), min(rates), max(rates), rates,
        float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), int(np.isfinite(lat).sum()),
        sum(w.errors for w in windows), [w.loadavg_1m for w in windows],
    )


async def http_load(url: str, model: str, path: str, concurrency: int, *, warmup_s: float,
                    window_s: float) -> Window:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    body, hlen = v2_binary_request(make_inputs(model))
    raw = raw_request(host, int(port), path, body, hlen)
    done: list[tuple[float, float, bool]] = []
    start = time.perf_counter() + warmup_s
    stop = start + window_s

    async def client() -> None:
        conn = HttpConnection(host, int(port))
        await conn.open()
        try:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                status, _, _ = await conn.request(raw)
                done.append((t0, time.perf_counter(), status == 200))
        finally:
            conn.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return window_of(done, start, window_s)


async def check_http(url: str, model: str, path: str, expected: dict[str, np.ndarray]) -> None:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    body, hlen = v2_binary_request(make_inputs(model))
    conn = HttpConnection(host, int(port))
    await conn.open()
    try:
        status, headers, answer = await conn.request(raw_request(host, int(port), path, body, hlen))
    finally:
        conn.close()
    if status != 200:
        raise SystemExit(f"{url}{path}: HTTP {status}: {answer[:300]!r}")
    got = decode_v2_response(answer, int(headers["inference-header-content-length"])
                             if "inference-header-content-length" in headers else None)
    for name, value in expected.items():
        if value.dtype == object:
            assert got[name].tolist() == value.tolist(), (name, got[name], value)
        else:
            np.testing.assert_allclose(got[name], value, rtol=1e-3, atol=1e-4, err_msg=f"{url} {name}")


# --- (c) in process ------------------------------------------------------------------------------


async def inprocess_load(package: Any, runner: Any, model: str, concurrency: int, *, warmup_s: float,
                         window_s: float) -> Window:
    """The same runner and processing behind a minimal batcher: <= 8 requests, <= 2 ms, one batch in flight."""
    from concurrent.futures import ThreadPoolExecutor

    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=1)
    queue: asyncio.Queue[tuple[dict[str, np.ndarray], asyncio.Future[dict[str, np.ndarray]]]] = asyncio.Queue()
    inputs = make_inputs(model)

    async def batcher() -> None:
        while True:
            first = await queue.get()
            items = [first]
            deadline = loop.time() + MAX_DELAY_MS / 1000
            while len(items) < MAX_BATCH:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            feeds = {k: np.concatenate([f[k] for f, _ in items]) for k in items[0][0]}
            outputs = await loop.run_in_executor(pool, runner.run, feeds)
            for row, (_, fut) in enumerate(items):
                fut.set_result({k: v[row : row + 1] for k, v in outputs.items()})

    done: list[tuple[float, float, bool]] = []
    start = time.perf_counter() + warmup_s
    stop = start + window_s

    async def client() -> None:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            fut: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
            await queue.put((package.preprocess(dict(inputs)), fut))
            package.postprocess(await fut)
            done.append((t0, time.perf_counter(), True))

    task = asyncio.create_task(batcher())
    try:
        await asyncio.gather(*(client() for _ in range(concurrency)))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        pool.shutdown()
    return window_of(done, start, window_s)


# --- process trees -------------------------------------------------------------------------------


def tree_memory(pid: int) -> dict[str, Any]:
    import psutil

    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    rss = pss = 0
    names = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            info = p.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
            names.append(p.name())
    return {"rss_mib": rss / 2**20, "pss_mib": pss / 2**20, "processes": len(names), "names": sorted(set(names))}


def tree_cpu_percent(pid: int, seconds: float = 5.0) -> float:
    """CPU used by the whole process tree over ``seconds`` while idle, in % of one core."""
    import psutil

    def total() -> float:
        root = psutil.Process(pid)
        used = 0.0
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                used += t.user + t.system
        return used

    before = total()
    time.sleep(seconds)
    return 100.0 * (total() - before) / seconds


def stop_tree(proc: subprocess.Popen[str], grace_s: float = 20.0) -> None:
    """SIGINT the server we started, then SIGKILL its process group (only processes we started)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def read_ready_line(proc: subprocess.Popen[str], timeout_s: float) -> dict[str, Any]:
    import selectors

    sel = selectors.DefaultSelector()
    assert proc.stdout is not None
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        if sel.select(timeout=0.5):
            line = proc.stdout.readline()
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if isinstance(data, dict) and "url" in data:
                    return data
    raise SystemExit("server did not become ready in time")


def start_zhisuan(repo: Path, model: str, threads: int) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "zhisuan", "serve", "--repo", str(repo), "--models", model, "--port", "0",
           "--threads", str(threads), "--max-batch", str(MAX_BATCH), "--max-delay-ms", str(MAX_DELAY_MS), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    return proc, read_ready_line(proc, 180)["url"]


def start_ray(repo: Path, model: str, threads: int) -> tuple[subprocess.Popen[str], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, __file__, "--ray-server", "--repo", str(repo), "--models", model,
           "--port", str(port), "--threads", str(threads)]
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True, env=env)
    return proc, read_ready_line(proc, 300)["url"]


# --- (b) the Ray Serve server --------------------------------------------------------------------


def ray_server_main(repo: Path, model: str, port: int, threads: int) -> None:
    import ray
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response

    from zhisuan.serve import protocol
    from zhisuan.serve.repository import Repository

    package_path = str(Repository(repo).package(model).path)

    class V2Model:
        def __init__(self, path: str, threads: int) -> None:
            from concurrent.futures import ThreadPoolExecutor

            from zhisuan.serve.package import load_package

            self.package = load_package(path)
            self.runner = self.package.open_runner(threads=threads)
            self.pool = ThreadPoolExecutor(max_workers=1)

        @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=MAX_DELAY_MS / 1000)
        async def run_batch(self, items: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
            feeds = {k: np.concatenate([f[k] for f in items]) for k in items[0]}
            out = await asyncio.get_running_loop().run_in_executor(self.pool, self.runner.run, feeds)
            return [{k: v[i : i + 1] for k, v in out.items()} for i in range(len(items))]

        async def __call__(self, request: Request) -> Response:
            body = await request.body()
            req = protocol.decode_infer_request(body, request.headers.get("inference-header-content-length"))
            outputs = self.package.postprocess(await self.run_batch(self.package.preprocess(req.inputs)))
            payload, hlen = protocol.encode_infer_response(
                model_name=self.package.name, model_version=str(self.package.version), request_id=req.id,
                outputs=outputs, requested=req.outputs, binary_output=req.binary_output,
            )
            headers = {protocol.HEADER_LENGTH: str(hlen)} if hlen is not None else {}
            return Response(payload, headers=headers, media_type="application/octet-stream")

    ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    deployment = serve.deployment(V2Model, name=model, num_replicas=1, ray_actor_options={"num_cpus": 1},
                                  max_ongoing_requests=64)
    serve.run(deployment.bind(package_path, threads), name=model, route_prefix=f"/v2/models/{model}")
    print(json.dumps({"url": f"http://127.0.0.1:{port}", "models": {model: ["1"]}}), flush=True)
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not stopping:
        time.sleep(0.2)
    serve.shutdown()
    ray.shutdown()


# --- main ----------------------------------------------------------------------------------------


@dataclass
class Report:
    runs: list[RunResult] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)


def prepare_repo(root: Path, models: list[str]) -> Path:
    from zhisuan.serve.package import BatchingConfig
    from zhisuan.serve.repository import Repository

    repo = Repository(root / "repo")
    for model in models:
        if not repo.versions(model):
            repo.add(MODELS[model], name=model, batching=BatchingConfig(MAX_BATCH, MAX_DELAY_MS))
    return repo.root


def print_tables(report: Report, concurrencies: list[int]) -> None:
    by = {(r.engine, r.model, r.concurrency): r for r in report.runs}
    for model in sorted({r.model for r in report.runs}):
        print(f"\n{model} ({MODELS[model]}): throughput req/s median [min-max of rounds]; latency p50 / p99 ms")
        print(f"{'C':>3} | {'zhisuan serve':>30} | {'Ray Serve':>30} | {'in-process ORT':>30} | ours/Ray | ours/in-proc")
        for c in concurrencies:
            cells, rates = [], {}
            for engine in ("zhisuan", "ray", "in-process"):
                r = by.get((engine, model, c))
                if r is None:
                    cells.append(f"{'—':>30}")
                    continue
                rates[engine] = r.throughput_rps
                err = f" E{r.errors}" if r.errors else ""
                cells.append(f"{r.throughput_rps:7.1f} [{r.throughput_min_rps:.0f}-{r.throughput_max_rps:.0f}] "
                             f"{r.p50_ms:5.1f}/{r.p99_ms:5.1f}{err}".rjust(30))
            ours = rates.get("zhisuan")
            vs_ray = f"{ours / rates['ray']:8.2f}x" if ours and rates.get("ray") else f"{'—':>9}"
            vs_in = f"{ours / rates['in-process']:8.2f}x" if ours and rates.get("in-process") else f"{'—':>9}"
            print(f"{c:>3} | {' | '.join(cells)} | {vs_ray} | {vs_in}")
    if report.memory:
        print("\nidle memory with one small model loaded (process tree, before traffic):")
        for key, m in report.memory.items():
            if isinstance(m, dict):
                print(f"  {key:<28} RSS {m['rss_mib']:7.1f} MiB   PSS {m['pss_mib']:7.1f} MiB   "
                      f"{m['processes']} processes, idle CPU {m['idle_cpu_percent']:.1f}% of a core, "
                      f"ready in {m['startup_s']} s")
        print(f"  {'Triton (published)':<28} {TRITON_NOTE}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="effnet,minilm")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup-s", type=float, default=1.5)
    parser.add_argument("--window-s", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds per engine and concurrency.")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None, help="Keep the repository here (default: a temp dir).")
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--ray-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repo", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ray_server:
        ray_server_main(args.repo, args.models, args.port, args.threads)
        return

    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise SystemExit(f"unknown models {unknown}; choose from {list(MODELS)}")
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    timing = {"warmup_s": args.warmup_s, "window_s": args.window_s}
    report = Report(machine={
        "cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(), "threads": args.threads,
        "max_batch": MAX_BATCH, "max_delay_ms": MAX_DELAY_MS, "rounds": args.rounds, **timing,
    })
    starters = {"zhisuan": start_zhisuan, **({} if args.skip_ray else {"ray": start_ray})}
    with tempfile.TemporaryDirectory(prefix="zhisuan-serve-bench-") as tmp:
        root = args.workdir or Path(tmp)
        repo = prepare_repo(root, models)
        from zhisuan.serve.repository import Repository

        for model in models:
            package = Repository(repo).package(model)
            runner = package.open_runner(threads=args.threads)
            expected = package.postprocess(runner.run(package.preprocess(make_inputs(model))))
            path = f"/v2/models/{model}/infer"
            servers: dict[str, tuple[subprocess.Popen[str], str]] = {}
            try:
                for engine, start in starters.items():
                    print(f"[{model}] starting {engine} ...", file=sys.stderr)
                    t0 = time.perf_counter()
                    servers[engine] = start(repo, model, args.threads)
                    ready_s = time.perf_counter() - t0
                    time.sleep(3)  # settle
                    if model == models[0]:
                        pid = servers[engine][0].pid
                        report.memory[engine] = {**tree_memory(pid), "idle_cpu_percent": tree_cpu_percent(pid),
                                                 "startup_s": round(ready_s, 1), "model": model}
                    asyncio.run(check_http(servers[engine][1], model, path, expected))
                engines = ["in-process", *servers]
                for c in concurrencies:
                    windows: dict[str, list[Window]] = {e: [] for e in engines}
                    for r in range(args.rounds):
                        # rotate the order every round, so that drift in the machine's load hits each alike
                        for engine in engines[r % len(engines):] + engines[: r % len(engines)]:
                            print(f"[{model}] C={c} round {r + 1} {engine} ...", file=sys.stderr)
                            if engine == "in-process":
                                w = asyncio.run(inprocess_load(package, runner, model, c, **timing))
                            else:
                                w = asyncio.run(http_load(servers[engine][1], model, path, c, **timing))
                            windows[engine].append(w)
                    for engine in engines:
                        report.runs.append(aggregate(engine, model, c, windows[engine]))
            finally:
                for proc, _ in servers.values():
                    stop_tree(proc)
                runner.close()
        report.memory["triton"] = TRITON_NOTE
    print_tables(report, concurrencies)
    print(f"\nmachine: {os.cpu_count()} CPUs, load average at start {report.machine['loadavg_at_start']}; "
          "the load generator runs on the same CPUs as the HTTP servers (not in the in-process case); both "
          "servers stay up (idle) while the other engines are measured")
    if args.json_out:
        args.json_out.write_text(json.dumps({**asdict(report), "runs": [asdict(r) for r in report.runs]}, indent=2))


if __name__ == "__main__":
    main()
