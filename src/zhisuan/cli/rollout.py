"""``zhisuan rollout``: gray release on a running server — set weights, promote, roll back, status."""

from __future__ import annotations

from typing import Any

import typer

from zhisuan.cli._common import JSON_HELP, console, finite, positive, print_json

app = typer.Typer(
    help="Gray (canary) release of a served model: weights, promote, rollback, automatic rollback.",
    no_args_is_help=True,
)

SERVER_HELP = "Server URL (the token comes from ZHISUAN_TOKEN)."
DEFAULT_SERVER = "http://127.0.0.1:8000"


def _server_url(value: str) -> str:
    """Option callback: an http(s) URL with a host and a valid port, refused before any request."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port out of 0..65535 or not a number
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise typer.BadParameter(f"{value!r} is not an http(s)://HOST[:PORT] URL")
    return value


def _client(server: str) -> Any:
    from zhisuan.serve.rollout import RolloutClient

    return RolloutClient(server)


@app.command("set")
def set_cmd(
    name: str = typer.Argument(..., help="Model name on the server."),
    weights: str | None = typer.Option(None, "--weights", help="VERSION=WEIGHT pairs, e.g. 1=80,2=20."),
    server: str = typer.Option(DEFAULT_SERVER, "--server", envvar="ZHISUAN_SERVER", callback=_server_url, help=SERVER_HELP),
    max_error_rate: float | None = typer.Option(
        None, "--max-error-rate", min=0.0, max=1.0, callback=finite, help="Roll back by itself when a canary's server-error rate exceeds this (0-1)."
    ),
    max_p99_ms: float | None = typer.Option(
        None, "--max-p99-ms", callback=positive, help="Roll back by itself when a canary's p99 latency exceeds this (ms)."
    ),
    window_s: float | None = typer.Option(None, "--window-s", callback=positive, help="Sliding window of the checks, seconds."),
    min_requests: int | None = typer.Option(
        None, "--min-requests", min=1, max=10**6, help="Requests in the window before a canary is judged."
    ),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Split NAME's traffic between versions by weight; the current split becomes the rollback target.

    Example:  zhisuan rollout set resnet --weights 1=80,2=20 --max-error-rate 0.05 --max-p99-ms 200 --server http://127.0.0.1:8000
    """
    from zhisuan.serve.rollout import parse_weights

    policy = {
        key: value
        for key, value in {
            "max_error_rate": max_error_rate, "max_p99_ms": max_p99_ms,
            "window_s": window_s, "min_requests": min_requests,
        }.items()
        if value is not None
    }
    status = _client(server).set(name, parse_weights(weights) if weights else None, policy=policy)
    _show(status, json_out)


@app.command("promote")
def promote_cmd(
    name: str = typer.Argument(..., help="Model name on the server."),
    version: int = typer.Argument(..., min=1, help="The version to send all traffic to."),
    server: str = typer.Option(DEFAULT_SERVER, "--server", envvar="ZHISUAN_SERVER", callback=_server_url, help=SERVER_HELP),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Send all of NAME's traffic to VERSION and make that the stable state.

    Example:  zhisuan rollout promote resnet 2 --server http://127.0.0.1:8000
    """
    _show(_client(server).promote(name, version), json_out)


@app.command("rollback")
def rollback_cmd(
    name: str = typer.Argument(..., help="Model name on the server."),
    server: str = typer.Option(DEFAULT_SERVER, "--server", envvar="ZHISUAN_SERVER", callback=_server_url, help=SERVER_HELP),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Return NAME's traffic to the stable weights (those before the last change).

    Example:  zhisuan rollout rollback resnet --server http://127.0.0.1:8000
    """
    _show(_client(server).rollback(name), json_out)


@app.command("status")
def status_cmd(
    name: str = typer.Argument(..., help="Model name on the server."),
    server: str = typer.Option(DEFAULT_SERVER, "--server", envvar="ZHISUAN_SERVER", callback=_server_url, help=SERVER_HELP),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show NAME's weights, thresholds, per-version counts, error rate, p50/p99 and the event history.

    Example:  zhisuan rollout status resnet --server http://127.0.0.1:8000 --json
    """
    _show(_client(server).status(name), json_out)


def _show(status: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print_json(status)
        return
    console.print(format_status(status))


def format_status(status: dict[str, Any]) -> Any:
    """A rich renderable of a rollout status (pure: prints nothing)."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    def ms(value: Any) -> str:
        return "—" if value is None else f"{value:.1f}"

    table = Table(title=f"rollout of {escape(str(status.get('model')))}")
    for col in ("version", "weight", "stable", "canary", "requests", "5xx", "window n", "error rate", "p50 ms", "p99 ms"):
        table.add_column(col)
    for version, v in status.get("versions", {}).items():
        w = v.get("window", {})
        rate = w.get("error_rate")
        table.add_row(
            escape(version), f"{v.get('weight', 0):g}", f"{v.get('stable_weight', 0):g}",
            "yes" if v.get("canary") else "", str(v.get("requests_total", 0)), str(v.get("server_errors_total", 0)),
            str(w.get("requests", 0)), "—" if rate is None else f"{rate:.3f}", ms(w.get("p50_ms")), ms(w.get("p99_ms")),
        )
    policy = status.get("policy", {})
    lines: list[Any] = [table]
    lines.append(
        "automatic rollback: "
        + ", ".join(
            f"{k} {v:g}" for k, v in (("max error rate", policy.get("max_error_rate")), ("max p99 ms", policy.get("max_p99_ms")))
            if v is not None
        )
        + f" over {policy.get('window_s', 0):g} s (min {policy.get('min_requests')} requests)"
        if policy.get("max_error_rate") is not None or policy.get("max_p99_ms") is not None
        else "automatic rollback: off (set --max-error-rate / --max-p99-ms)"
    )
    for event in status.get("events", [])[-5:]:
        weights = ", ".join(f"{k}={v:g}" for k, v in event.get("weights", {}).items())
        lines.append(f"  {event.get('time')} {escape(str(event.get('action')))} -> {weights}: {escape(str(event.get('reason')))}")
    return Group(*lines)


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="rollout")
