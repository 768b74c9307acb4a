"""``zhisuan serve``: the Open Inference Protocol v2 server; ``zhisuan serve logs``: query its request logs."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import typer

from zhisuan.cli._common import JSON_HELP, THREADS, console, err_console, finite, positive, print_json
from zhisuan.errors import UserError

app = typer.Typer(
    invoke_without_command=True,
    no_args_is_help=False,
)

REPO_HELP = "Model repository directory (or set ZHISUAN_REPO)."


@app.callback(invoke_without_command=True)
def serve_cmd(
    ctx: typer.Context,
    repo: Path | None = typer.Option(None, "--repo", envvar="ZHISUAN_REPO", help=REPO_HELP),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port (0 picks a free one)."),
    replicas: int = typer.Option(1, "--replicas", min=1, max=1024, help="Worker replicas per model version (processes when > 1)."),
    max_batch: int | None = typer.Option(None, "--max-batch", min=1, max=65536, help="Max rows per batch (default: each package's)."),
    max_delay_ms: float | None = typer.Option(
        None, "--max-delay-ms", min=0, callback=finite, help="Longest a request waits for its batch to fill (default: each package's)."
    ),
    engine: str = typer.Option("local", "--engine", help="local (this machine) or ray (Ray Serve; pip install 'zhisuan\\[ray]')."),
    models: list[str] | None = typer.Option(
        None, "--models", help="Serve only these models (repeat, or comma-separate). Default: all."
    ),
    runtime: str | None = typer.Option(None, "--runtime", help="Runtime backend (default: each package's)."),
    threads: int | None = typer.Option(
        None, "--threads", **THREADS, help="Intra-op threads per model version (shared by its replicas)."
    ),
    concurrency: int | None = typer.Option(
        None, "--concurrency", min=1, max=1024, help="Batches in flight per model version (default: one per replica)."
    ),
    max_queue: int = typer.Option(256, "--max-queue", min=1, max=10**6, help="Requests waiting per model version before 429."),
    timeout_s: float = typer.Option(30.0, "--timeout-s", callback=positive, help="Request timeout in seconds (504 after it)."),
    max_payload_mb: float = typer.Option(64.0, "--max-payload-mb", callback=positive, help="Largest request body in MiB (413 above)."),
    log_dir: Path | None = typer.Option(None, "--log-dir", help="Request logs directory (default: REPO/logs)."),
    telemetry: bool = typer.Option(True, "--telemetry/--no-telemetry", help="Export device telemetry in /metrics."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every HTTP request to stderr too."),
    json_out: bool = typer.Option(False, "--json", help="Print the server's address and models as one JSON line when ready."),
) -> None:
    """Serve a model repository over the Open Inference Protocol v2 (KServe and Triton clients work),
    with dynamic batching, gray release, Prometheus metrics and request logs.

    Management endpoints (load/unload, rollout) need the bearer token in ZHISUAN_TOKEN; without
    it they are disabled. Stop with Ctrl-C. `zhisuan serve logs` queries the request logs.

    Example:  ZHISUAN_TOKEN=change-me-please zhisuan serve --repo models --port 8000 --max-batch 16
    """
    if ctx.invoked_subcommand is not None:
        return
    from zhisuan.serve.config import ServerConfig
    from zhisuan.serve.server import run_server

    if repo is None:
        raise UserError("give the model repository with --repo DIR (or set ZHISUAN_REPO)")
    names = tuple(n.strip() for item in models or [] for n in item.split(",") if n.strip())
    config = ServerConfig.from_env(
        repo=repo, models=names, host=host, port=port, replicas=replicas, engine=engine, runtime=runtime,
        threads=threads, max_batch_size=max_batch, max_queue_delay_ms=max_delay_ms, max_queue_size=max_queue,
        concurrency=concurrency, request_timeout_s=timeout_s, max_payload_bytes=int(max_payload_mb * (1 << 20)),
        log_dir=log_dir, telemetry=telemetry,
    )
    _configure_logging()
    spinner = err_console.status("loading models") if err_console.is_terminal and not json_out else None
    if spinner is not None:
        spinner.start()

    def progress(text: str = "", *, done: float | None = None, total: float | None = None) -> None:
        if spinner is not None and text:
            spinner.update(text)

    def ready(hub: Any, url: str) -> None:
        if spinner is not None:
            spinner.stop()
        loaded = {name: [str(v) for v in table] for name, table in hub.models.items()}
        if json_out:  # one line, flushed: a supervisor or a test reads it to learn the port
            sys.stdout.write(json.dumps({"url": url, "models": loaded, "config": config.to_dict()}) + "\n")
            sys.stdout.flush()
            return
        console.print(f"[bold green]serving[/] {len(loaded)} model(s) at [bold]{url}[/]  (Ctrl-C stops)")
        for name, versions in loaded.items():
            console.print(f"  {name}: versions {', '.join(versions)}  ->  {url}/v2/models/{name}/infer")
        console.print(
            f"  metrics {url}/metrics · logs {config.logs_path} · management "
            + ("enabled (bearer token)" if config.token else "disabled (set ZHISUAN_TOKEN)")
        )

    try:
        run_server(config, on_ready=ready, progress=progress, log_level="info" if verbose else "warning")
    finally:
        if spinner is not None:
            spinner.stop()


def _configure_logging() -> None:
    logger = logging.getLogger("zhisuan.serve")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


@app.command("logs")
def logs_cmd(
    repo: Path | None = typer.Option(None, "--repo", envvar="ZHISUAN_REPO", help=REPO_HELP),
    log_dir: Path | None = typer.Option(None, "--log-dir", help="Logs directory (default: REPO/logs)."),
    model: str | None = typer.Option(None, "--model", help="Only this model."),
    since: str | None = typer.Option(None, "--since", help="ISO time or an age: 30s, 10m, 2h, 1d."),
    status_code: str | None = typer.Option(None, "--status", help="A status code (429) or class (5xx)."),
    limit: int = typer.Option(50, "--limit", min=1, max=10**6, help="Show the newest N matching requests."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Query the server's structured request logs (one JSON line per request).

    Example:  zhisuan serve logs --repo models --model effnet --since 10m --status 5xx --json
    """
    from zhisuan.serve.logs import query_logs

    if log_dir is None:
        if repo is None:
            raise UserError("give --repo DIR (or --log-dir DIR) to find the request logs")
        log_dir = repo / "logs"
    result = query_logs(log_dir, model=model, since=since, status=status_code, limit=limit)
    if json_out:
        print_json(result.to_dict())
        return
    _print_logs(result)


def _print_logs(result: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{len(result.records)} request(s)")
    for col in ("time (UTC)", "request id", "model", "ver", "status", "latency ms", "queue ms", "batch", "error"):
        table.add_column(col)

    def num(value: Any) -> str:
        return "—" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)

    for r in result.records:
        code = r.get("status")
        color = "green" if isinstance(code, int) and code < 400 else "yellow" if isinstance(code, int) and code < 500 else "red"
        table.add_row(
            escape(str(r.get("ts", ""))[:23].replace("T", " ")), escape(str(r.get("request_id", ""))[:16]),
            escape(str(r.get("model", ""))), escape(str(r.get("version") or "—")), f"[{color}]{code}[/]",
            num(r.get("latency_ms")), num(r.get("queue_ms")), num(r.get("batch_size")),
            escape(str(r.get("error") or "")[:80]),
        )
    console.print(table)
    if result.lines_skipped:
        console.print(f"[yellow]{result.lines_skipped} unreadable line(s) skipped[/]")


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="serve")
