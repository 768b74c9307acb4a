"""``zhisuan device``: list, info, monitor (DEV-1..DEV-3). Thin: parse, call ``zhisuan.device``, print."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

import typer

from zhisuan.cli._common import JSON_HELP, console, err_console, fmt_bytes, positive, print_json, to_jsonable

if TYPE_CHECKING:
    from rich.table import Table

    from zhisuan.device import DeviceInfo, TelemetrySnapshot, TelemetrySummary

app = typer.Typer(help="Discover compute devices and sample their telemetry.", no_args_is_help=True)

KIND_HELP = "Only these device kinds (repeatable): cpu, cuda, null (a fake device, shown only when named)."
NA = "[dim]n/a[/]"


@app.command("list")
def list_cmd(
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
    kind: list[str] | None = typer.Option(None, "--kind", "-k", help=KIND_HELP),
) -> None:
    """List every CPU and GPU with memory, precisions, ISA features and the runtimes that reach it.

    Example:  zhisuan device list --json
    """
    from zhisuan.device import list_devices
    from zhisuan.runtime import backend_status

    found = list_devices(kinds=kind or None, backend_statuses=backend_status(tolerate_errors=True))
    if json_out:
        print_json(found.devices)
        return
    console.print(devices_table(found.devices))
    for name, reason in found.reasons.items():
        console.print(f"[dim]no {name} device: {reason}[/]")


@app.command("info")
def info_cmd(
    device: str | None = typer.Argument(
        None, help="Position in `device list`, an id (cpu, cuda:0) or part of a name; default: all."
    ),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
    kind: list[str] | None = typer.Option(None, "--kind", "-k", help=KIND_HELP),
) -> None:
    """Everything known about one device (or all): topology, caches, clocks, limits, driver, backends.

    Example:  zhisuan device info cuda:0 --json
    """
    from zhisuan.device import find_device, list_devices
    from zhisuan.runtime import backend_status

    found = list_devices(kinds=kind or None, backend_statuses=backend_status(tolerate_errors=True))
    chosen = (
        [find_device(device, found.devices, found.reasons)] if device is not None else list(found.devices)
    )
    if json_out:
        print_json(chosen[0] if device is not None else chosen)
        return
    for info in chosen:
        console.print(info_table(info))
    if device is None:
        for name, reason in found.reasons.items():
            console.print(f"[dim]no {name} device: {reason}[/]")


@app.command("monitor")
def monitor_cmd(
    interval: float = typer.Option(1.0, "--interval", "-i", callback=positive, help="Seconds between samples."),
    once: bool = typer.Option(False, "--once", help="Take one sample (over one interval), print it, exit."),
    duration: float | None = typer.Option(None, "--duration", "-d", callback=positive, help="Stop after this many seconds."),
    prometheus: int | None = typer.Option(
        None, "--prometheus", min=0, max=65535, help="Also serve the samples as Prometheus metrics on this port (0: any free)."
    ),
    address: str = typer.Option("127.0.0.1", "--address", help="Address the Prometheus exporter listens on."),
    json_out: bool = typer.Option(
        False, "--json", help="JSON: one object with --once, else one JSON line per sample, then a summary."
    ),
    kind: list[str] | None = typer.Option(None, "--kind", "-k", help=KIND_HELP),
) -> None:
    """Live utilisation, memory, power, energy, temperature and clocks of every device, like nvitop.

    Example:  zhisuan device monitor --interval 0.5 --duration 60 --prometheus 9400
    """
    from zhisuan.device import TelemetrySampler, sample_once
    from zhisuan.errors import UserError

    if duration is not None and duration <= 0:
        raise UserError(f"--duration must be > 0 s, not {duration}")
    kinds = kind or None
    if once:
        snapshot = sample_once(interval_s=interval, kinds=kinds)
        if json_out:
            print_json(snapshot)
        else:
            console.print(telemetry_table(snapshot))
        return

    from rich.live import Live

    live: Live | None = None

    def on_sample(snapshot: TelemetrySnapshot) -> None:
        if json_out:
            _json_line({"type": "snapshot", **snapshot.to_dict()})
        elif live is not None:
            live.update(telemetry_table(snapshot))

    sampler = TelemetrySampler(interval_s=interval, kinds=kinds, on_sample=on_sample)
    server = None
    sampler.start()
    try:
        if prometheus is not None:
            from zhisuan.device.prometheus import serve_metrics

            server = serve_metrics(sampler, port=prometheus, host=address)
            err_console.print(f"serving Prometheus metrics on {server.url}")
        if not json_out:
            live = Live(telemetry_table(None), console=console, refresh_per_second=4)
            live.start()
        deadline = None if duration is None else time.monotonic() + duration
        try:
            while deadline is None or time.monotonic() < deadline:
                remaining = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
                time.sleep(max(remaining, 0.0))
        except KeyboardInterrupt:
            pass  # Ctrl-C ends monitoring normally: the summary still prints
    finally:
        if server is not None:
            server.close()
        summary = sampler.stop()
        if live is not None:
            live.stop()
            console.print()
    if json_out:
        _json_line({"type": "summary", **summary.to_dict()})
    else:
        console.print(summary_table(summary))


# formatting: pure functions from results to rich tables ----------------------------------------


def devices_table(devices: tuple[DeviceInfo, ...] | list[DeviceInfo]) -> Table:
    from rich.table import Table

    table = Table(title="Devices")
    for col in ("#", "id", "name", "memory", "precisions", "features", "backends"):
        table.add_column(col, overflow="fold")
    for position, d in enumerate(devices):
        table.add_row(
            str(position),
            d.id,
            d.name,
            _memory(d),
            ", ".join(d.precisions),
            " ".join(d.features) or "—",
            ", ".join(str(b) for b in d.backends) or "—",
        )
    return table


def info_table(d: DeviceInfo) -> Table:
    from rich.table import Table

    table = Table(title=f"{d.id}  {d.name}", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("memory", _memory(d))
    table.add_row("precisions", ", ".join(d.precisions))
    table.add_row("features", " ".join(d.features) or "—")
    table.add_row("driver", d.driver_version or "—")
    table.add_row("backends", ", ".join(f"{b} {b.version or ''}".strip() for b in d.backends) or "—")
    for key, value in d.details.items():
        if key == "flags":
            value = f"{len(value)} flags (see --json)"
        elif key == "caches":
            value = ", ".join(f"{c.name} {fmt_bytes(c.size_bytes)} x{c.instances}" for c in value)
        elif key == "numa_nodes":
            value = ", ".join(f"node{n.index}: cpus {n.cpus}" for n in value) or "—"
        elif key == "cache_bytes":
            continue
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        table.add_row(key, "—" if value is None else str(value))
    for key, reason in d.unavailable.items():
        table.add_row(f"[dim]{key}[/]", f"[dim]unavailable: {reason}[/]")
    return table


def telemetry_table(snapshot: TelemetrySnapshot | None) -> Table:
    from rich.table import Table

    table = Table(title="zhisuan device monitor", caption_justify="left")
    for col in ("device", "util", "memory", "power", "energy", "temp", "clocks"):
        table.add_column(col, justify="left" if col in ("device", "clocks") else "right")
    if snapshot is None:
        table.caption = "waiting for the first sample…"
        return table
    reasons = []
    for s in snapshot.samples:
        table.add_row(
            f"{s.id} {s.name}",
            _bar(s.utilization_pct),
            f"{fmt_bytes(s.memory_used_bytes)} / {fmt_bytes(s.memory_total_bytes)}"
            if s.memory_used_bytes is not None
            else NA,
            _num(s.power_w, "W", 1),
            _num(s.energy_j, "J", 1),
            _num(s.temperature_c, "°C", 0),
            " ".join(f"{k} {v:.0f} MHz" for k, v in s.clocks_mhz.items()) or NA,
        )
        reasons += [f"{s.id} {metric}: {why}" for metric, why in s.unavailable.items()]
    table.caption = "\n".join(_dedupe(reasons)) or None
    return table


def summary_table(summary: TelemetrySummary) -> Table:
    from rich.table import Table

    table = Table(title=f"Summary: {summary.snapshots} samples over {summary.duration_s:.1f} s")
    for col in ("device", "mean util", "mean power", "max power", "energy", "max temp", "max memory"):
        table.add_column(col, justify="left" if col == "device" else "right")
    for d in summary.devices:
        energy = _num(d.energy_j, "J", 1)
        if d.energy_source == "power x time":
            energy += " (power x time)"
        table.add_row(
            f"{d.id} {d.name}",
            _num(d.mean_utilization_pct, "%", 1),
            _num(d.mean_power_w, "W", 1),
            _num(d.max_power_w, "W", 1),
            energy,
            _num(d.max_temperature_c, "°C", 0),
            fmt_bytes(d.max_memory_used_bytes) if d.max_memory_used_bytes is not None else NA,
        )
    return table


def _memory(d: DeviceInfo) -> str:
    size = fmt_bytes(d.memory_bytes) if d.memory_bytes is not None else "—"
    return f"{size} {d.memory_type}" if d.memory_type else size


def _num(value: float | None, unit: str, digits: int) -> str:
    return NA if value is None else f"{value:.{digits}f} {unit}"


def _bar(pct: float | None, width: int = 10) -> str:
    if pct is None:
        return NA
    filled = round(pct / 100 * width)
    return f"[green]{'█' * filled}[/][dim]{'░' * (width - filled)}[/] {pct:5.1f}%"


def _dedupe(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))


def _json_line(obj: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(obj), ensure_ascii=False) + "\n")
    sys.stdout.flush()


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="device")
