"""``zhisuan repo``: a versioned model repository on disk (add, list, show, remove; SPEC SRV-1)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from zhisuan.cli._common import JSON_HELP, console, finite, output_path, print_json, status
from zhisuan.cli.pack import (
    MAX_BATCH_HELP,
    MAX_DELAY_HELP,
    META_HELP,
    POST_HELP,
    PRE_HELP,
    PREFERRED_HELP,
    RUNTIME_HELP,
    ZOO_DEFAULTS_HELP,
    pack_options,
    print_package,
    spinner_progress,
)
from zhisuan.errors import UserError

app = typer.Typer(
    help="A versioned model repository: DIR/NAME/VERSION/ packages, written atomically.",
    no_args_is_help=True,
)

REPO_HELP = "Repository directory (or set ZHISUAN_REPO)."


def _repo_option() -> Path:
    return typer.Option(..., "--repo", envvar="ZHISUAN_REPO", help=REPO_HELP)


@app.command("add")
def add_cmd(
    model: str = typer.Argument(..., help="An ONNX file, OpenVINO IR .xml (with its .bin), or a zoo model name."),
    repo: Path = typer.Option(..., "--repo", envvar="ZHISUAN_REPO", callback=output_path, help=REPO_HELP),
    name: str = typer.Option(..., "--name", help="Model name in the repository."),
    version: int | None = typer.Option(None, "--version", min=1, max=2**31 - 1, help="Version to create (default: the next one)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing version."),
    runtime: str | None = typer.Option(None, "--runtime", "-r", help=RUNTIME_HELP),
    max_batch: int | None = typer.Option(None, "--max-batch", min=1, max=65536, help=MAX_BATCH_HELP),
    max_delay_ms: float | None = typer.Option(None, "--max-delay-ms", min=0, callback=finite, help=MAX_DELAY_HELP),
    preferred: str | None = typer.Option(None, "--preferred-batch", help=PREFERRED_HELP),
    preprocess: str | None = typer.Option(None, "--preprocess", help=PRE_HELP),
    postprocess: str | None = typer.Option(None, "--postprocess", help=POST_HELP),
    metadata: str | None = typer.Option(None, "--metadata", help=META_HELP),
    zoo_defaults: bool = typer.Option(True, "--zoo-defaults/--no-zoo-defaults", help=ZOO_DEFAULTS_HELP),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Package MODEL into the repository as NAME, at the next version unless --version is given.

    Example:  zhisuan repo add efficientnet-lite0 --repo models --name effnet
    """
    from zhisuan.serve.repository import Repository

    options = pack_options(
        runtime=runtime, max_batch=max_batch, max_delay_ms=max_delay_ms, preferred=preferred,
        preprocess=preprocess, postprocess=postprocess, metadata=metadata, zoo_defaults=zoo_defaults,
    )
    repository = Repository(repo)
    with status(f"adding {model} as {name}", enabled=not json_out) as update:
        package = repository.add(model, name=name, version=version, force=force, progress=spinner_progress(update), **options)
    if json_out:
        print_json(package.to_dict())
        return
    print_package(package, verb="added")


@app.command("list")
def list_cmd(
    repo: Path = _repo_option(),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List the repository's models with their versions, format and signature.

    Example:  zhisuan repo list --repo models --json
    """
    from rich.markup import escape
    from rich.table import Table

    from zhisuan.serve.repository import Repository

    models = Repository(repo, create=False).list()
    if json_out:
        print_json(models)
        return
    if not models:
        console.print(f"no models in {escape(str(repo))}")
        return
    table = Table(title=f"models in {escape(str(repo))}")
    for col in ("name", "versions", "format", "runtime", "inputs", "outputs", "max batch", "source"):
        table.add_column(col)
    for m in models:
        if "error" in m:
            table.add_row(escape(m["name"]), ", ".join(map(str, m["versions"])), f"[red]{escape(m['error'])}[/]",
                          "", "", "", "", "")
            continue
        names = {side: ", ".join(s["name"] for s in m[side]) for side in ("inputs", "outputs")}
        table.add_row(
            escape(m["name"]), ", ".join(map(str, m["versions"])), m["format"], m["runtime"],
            escape(names["inputs"]), escape(names["outputs"]), str(m["max_batch_size"]),
            escape(Path(str(m["source"])).name),
        )
    console.print(table)


@app.command("show")
def show_cmd(
    name: str = typer.Argument(..., help="Model name in the repository."),
    version: int | None = typer.Option(None, "--version", min=1, max=2**31 - 1, help="Version (default: the latest)."),
    repo: Path = _repo_option(),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show one version's manifest after verifying every file's sha256.

    Example:  zhisuan repo show effnet --version 2 --repo models --json
    """
    from zhisuan.serve.repository import Repository

    repository = Repository(repo, create=False)
    data = repository.show(name, version)
    if json_out:
        print_json(data)
        return
    package = repository.package(name, data["version"])
    print_package(package, verb="verified")
    console.print(f"  [cyan]versions[/]: {', '.join(map(str, data['versions']))}")
    source = data["metadata"].get("source", {})
    console.print(f"  [cyan]source[/]: {source.get('zoo_model') or source.get('path')}, "
                  f"created {data['metadata'].get('created_at')}")


@app.command("remove")
def remove_cmd(
    name: str = typer.Argument(..., help="Model name in the repository."),
    version: int | None = typer.Option(None, "--version", min=1, max=2**31 - 1, help="Version to remove (default: every version)."),
    repo: Path = _repo_option(),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Remove one version of a model, or all of its versions.

    Example:  zhisuan repo remove effnet --version 1 --repo models --yes
    """
    from zhisuan.serve.repository import Repository

    repository = Repository(repo, create=False)
    versions = repository.versions(name)
    what = f"{name} version {version}" if version is not None else f"{name} (versions {', '.join(map(str, versions))})"
    if not versions:
        repository.package(name)  # raises the one-line "no model" error
    if not yes:
        if not sys.stdin.isatty():
            raise UserError(f"refusing to remove {what} without --yes (stdin is not a terminal)")
        if not typer.confirm(f"remove {what} from {repo}?"):
            raise typer.Exit(1)
    removed = repository.remove(name, version)
    if json_out:
        print_json({"name": name, "removed_versions": removed, "remaining_versions": repository.versions(name)})
        return
    console.print(f"removed {name} version(s) {', '.join(map(str, removed))}")


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="repo")
