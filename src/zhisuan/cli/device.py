"""``zhisuan device``: list, info, monitor. (Being written.)"""

from __future__ import annotations

import typer

app = typer.Typer(help="Discover compute devices and sample their telemetry.", no_args_is_help=True)
