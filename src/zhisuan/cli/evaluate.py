"""``zhisuan evaluate``: run the accelerator evaluation suite and write report.json + report.html.

Exit status, as for every command (``zhisuan.cli.app.EXIT_STATUSES``): 0 when no item failed, 1 when
some item failed or on an error in the inputs (unknown device, a directory holding another run), 2 on
a usage error (an unknown suite, a value out of range), 130 when interrupted (resume with --resume).
An item that failed while other jobs took the machine is ``disturbed``: reported, but it does not
make the exit status 1 (see :mod:`zhisuan.bench.interference`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any

import typer

from zhisuan.cli._common import JSON_HELP, SEED, THREADS, console, err_console, output_path, print_json

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


def evaluate_cmd(
    suite: str = typer.Option("quick", "--suite", help="quick (about 10 min on a 2-core CPU), standard or full."),
    device: str | None = typer.Option(None, "--device", help="Device to evaluate, e.g. cpu:0 or cuda:0 (default: the first GPU, else cpu:0)."),
    out: Path = typer.Option(Path("zhisuan-report"), "-o", "--out", callback=output_path, help="Directory for report.json, report.html and saved task results."),
    resume: bool = typer.Option(False, "--resume", help="Reuse the finished tasks saved in DIR by an interrupted run."),
    threads: int | None = typer.Option(None, "--threads", **THREADS, help="Threads for the measurements (default: physical cores)."),
    seed: int = typer.Option(0, "--seed", **SEED, help="Seed of every random input."),
    only: list[str] | None = typer.Option(None, "--only", help="Run only these clauses or task id prefixes (repeat or comma-separate), e.g. EV-2,EV-5.loadgen."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Run the evaluation suite (SPEC EV-1..EV-11) on one device and write DIR/report.json and a
    self-contained DIR/report.html; print a summary per clause.

    Exit status: 0 no item failed, 1 some item failed (or an input error), 2 usage error, 130 interrupted.
    An item that failed while other jobs took the machine is reported as 'disturbed' and does not fail
    the run; a warning is printed when the machine is not quiet at the start.

    Example:  zhisuan evaluate --suite quick --device cpu:0 -o zhisuan-report
    """
    from zhisuan.bench.suite import SuiteConfig, SuiteInterrupted, run_suite
    from zhisuan.report.html import write_suite_html

    patterns = tuple(p.strip() for value in only or [] for p in value.split(",") if p.strip())
    ui = _ProgressUI(enabled=not json_out)
    try:
        config = SuiteConfig(
            suite=suite, device=device, out_dir=out, resume=resume, threads=threads, seed=seed, only=patterns,
            command=tuple(_command(suite, device, out, resume, threads, seed, patterns, json_out)),
        )
        with ui, _stdout_to_stderr(json_out):
            report = write_suite_html(run_suite(config, progress=ui.on_event), out)
    except SuiteInterrupted as exc:
        print(str(exc), file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        # What finished is already saved (atomically, fsynced). A native library interrupted in the
        # middle of a call (LoadGen's C++ test loop) can be left with a corrupt heap that aborts the
        # interpreter's shutdown ("double free"), so leave without running native destructors.
        os._exit(EXIT_INTERRUPTED)
    failed = [i for i in report.items if i.status == "fail"]
    disturbed = [i for i in report.items if i.status == "disturbed"]
    paths = {"report_json": str(out / "report.json"), "report_html": str(out / "report.html")}
    if json_out:
        print_json({**paths, **report.to_dict()})
    else:
        from zhisuan.cli.report import summary_table

        console.print(summary_table(report, title=f"{report.device_name} — suite {report.suite}, "
                                                  f"{report.summary.get('duration_s', 0):.0f} s"))
        console.print(f"report: {paths['report_json']}  and  {paths['report_html']}")
        if failed:
            console.print(f"[bold red]{len(failed)} item(s) failed:[/] " + ", ".join(i.id for i in failed[:10])
                          + (" …" if len(failed) > 10 else ""))
        if disturbed:
            console.print(f"[bold magenta]{len(disturbed)} item(s) disturbed[/] (failed while other jobs took the "
                          "machine; not counted as failures, rerun them on a quiet machine with --resume): "
                          + ", ".join(i.id for i in disturbed[:10]) + (" …" if len(disturbed) > 10 else ""))
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


@contextmanager
def _stdout_to_stderr(enabled: bool) -> Iterator[None]:
    """Keep stdout clean for --json: whatever the tasks (or the C++ libraries and child processes
    under them, e.g. LoadGen) print goes to stderr while the suite runs."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _command(suite: str, device: str | None, out: Path, resume: bool, threads: int | None, seed: int,
             only: tuple[str, ...], json_out: bool) -> list[str]:
    """The command line as typed when run as ``zhisuan``, else rebuilt from the options."""
    if sys.argv and Path(sys.argv[0]).name in ("zhisuan", "__main__.py") and "evaluate" in sys.argv:
        return ["zhisuan", *sys.argv[1:]]
    cmd = ["zhisuan", "evaluate", "--suite", suite, "-o", str(out), "--seed", str(seed)]
    if device:
        cmd += ["--device", device]
    if threads:
        cmd += ["--threads", str(threads)]
    if only:
        cmd += ["--only", ",".join(only)]
    if resume:
        cmd.append("--resume")
    if json_out:
        cmd.append("--json")
    return cmd


class _ProgressUI:
    """Rich progress bars on stderr (overall over the tasks' estimated seconds, plus the current
    task's own progress); one line per finished task when stderr is not a terminal."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.live = enabled and err_console.is_terminal
        self.bars: Any = None
        self.overall: Any = None
        self.current: Any = None

    def __enter__(self) -> _ProgressUI:
        if self.live:
            from rich.progress import (
                BarColumn,
                Progress,
                SpinnerColumn,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bars = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("[dim]{task.fields[note]}"),
                console=err_console,
            )
            self.bars.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bars is not None:
            self.bars.__exit__(*exc)

    def on_event(self, e: Any) -> None:
        if not self.enabled:
            return
        from rich.markup import escape

        if e.kind == "warning":
            (self.bars.console if self.bars is not None else err_console).print(
                f"[bold magenta]{escape(e.text)}[/]", highlight=False)
        elif e.kind == "suite_start":
            line = f"evaluating {e.device}: {e.total} task(s), about {e.total_est_s:.0f} s estimated"
            if self.bars is None:
                err_console.print(escape(line), highlight=False)
                return
            self.overall = self.bars.add_task(escape(line), total=max(e.total_est_s, 1.0), note="")
            self.current = self.bars.add_task("", total=None, note="", visible=False)
        elif e.kind == "task_start" and self.bars is not None:
            self.bars.update(self.current, description=f"[{e.index + 1}/{e.total}] {escape(e.task_id)}", total=None,
                             completed=0, note=escape(e.title), visible=True)
        elif e.kind == "task_progress" and self.bars is not None:
            self.bars.update(self.current, total=e.task_total or None, completed=e.done, note=escape(e.text))
        elif e.kind == "task_end":
            c = e.counts or {}
            how = "reused from the interrupted run" if e.resumed else f"{e.duration_s or 0:.1f} s"
            line = (f"[{e.index + 1}/{e.total}] {escape(e.task_id)}: [green]{c.get('pass', 0)} pass[/], "
                    f"{'[red]' if c.get('fail') else ''}{c.get('fail', 0)} fail{'[/]' if c.get('fail') else ''}, "
                    f"[yellow]{c.get('skip', 0)} skip[/]"
                    + (f", [magenta]{c['disturbed']} disturbed[/]" if c.get("disturbed") else "") + f" ({how})")
            if self.bars is None:
                err_console.print(line, highlight=False)
                return
            self.bars.console.print(line, highlight=False)
            self.bars.advance(self.overall, e.est_s)
        elif e.kind == "writing" and self.bars is not None:
            self.bars.update(self.current, description=escape(e.text), total=None, note="", visible=True)
        elif e.kind == "suite_end" and self.bars is not None:
            self.bars.update(self.overall, completed=self.bars.tasks[self.overall].total)
            self.bars.update(self.current, visible=False)


def register(parent: typer.Typer) -> None:
    parent.command("evaluate")(evaluate_cmd)
