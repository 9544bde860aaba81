"""`llmpack registry ...`: publish, list, show, pull, verify, remove, gc, serve.

The registry is named by `--registry/-r REGISTRY` (or `--to` for publish, or the
positional argument of serve), falling back to the LLMPACK_REGISTRY environment
variable. REGISTRY is a local folder or an fsspec URL (s3://bucket/prefix, memory://x).
packager/cli.py mounts `registry_app` as `llmpack registry`; `main` runs it on its own
(`python -m model_registry.cli`). Both print a UserError as `error: ...` and exit 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from bundle_contract.errors import UserError

from .errors import RegistryError
from .naming import parse_spec
from .registry import Registry, versions_newest_first

ENV = "LLMPACK_REGISTRY"
registry_app = typer.Typer(
    no_args_is_help=True, add_completion=False,
    help=f"Publish packaged models to a registry (a folder or fsspec URL), find, fetch, check and serve them. "
         f"Commands take the registry from --registry/-r or ${ENV}.")

_REGISTRY_HELP = f"registry: a folder or fsspec URL (s3://..., memory://...); default ${ENV}"


def _registry(url: Optional[str], flag: str = "--registry/-r") -> Registry:
    if not url:
        raise RegistryError(f"no registry given: pass {flag} REGISTRY or set {ENV}")
    return Registry(url)


def _console() -> Console:
    """stdout console; when piped, tables get room to stay one row per line (grep-able)."""
    con = Console(highlight=False, soft_wrap=True)
    if not con.is_terminal:
        con = Console(highlight=False, soft_wrap=True, width=200)
    return con


def _table(*columns: str, **kwargs) -> Table:
    """A table that folds long cells instead of cutting them: ids and hashes must stay whole."""
    table = Table(**kwargs)
    for c in columns:
        table.add_column(c, overflow="fold")
    return table


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _progress() -> bool:
    return sys.stderr.isatty()


def _size(n) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _quant(entry: dict) -> str:
    q = entry.get("quantization") or {}
    return q.get("scheme") or "-"


def _print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


@registry_app.command()
def publish(
    bundle: Path = typer.Argument(..., help="bundle folder written by `llmpack package`"),
    to: Optional[str] = typer.Option(None, "--to", "-t", "--registry", "-r", envvar=ENV, help=_REGISTRY_HELP,
                                     show_envvar=False),
    model_id: Optional[str] = typer.Option(None, "--id", help="model id (default: the manifest's model name)"),
    version: Optional[str] = typer.Option(None, "--version", "-V",
                                          help="version name (default: next number, 1, 2, ...)"),
    repair: bool = typer.Option(False, "--repair",
                                help="re-hash what the registry already holds and replace corrupt shards/files"),
    as_json: bool = typer.Option(False, "--json", help="print a machine-readable summary"),
):
    """Publish a bundle: upload the shards the registry lacks, then add ID@VERSION to the index."""
    reg = _registry(to, "--to")
    summary = reg.publish(bundle, model_id, version, repair=repair, progress=_progress() and not as_json)
    if as_json:
        _print_json(summary)
        return
    con = _console()
    label = f"{summary['id']}@{summary['version']}"
    if summary["status"] == "unchanged":
        con.print(f"{label} already holds this bundle in {reg.url}; nothing to do")
    else:
        verb = "repaired" if summary["status"] == "repaired" else "published"
        con.print(f"[green]{verb}[/green] {label} to {reg.url}: {_plural(summary['shards'], 'shard')}, "
                  f"{_size(summary['total_bytes'])}; uploaded {_plural(summary['uploaded_blobs'], 'file')} "
                  f"({_size(summary['uploaded_bytes'])}), the registry had the rest")
    if summary["unlisted_files"]:
        names = ", ".join(summary["unlisted_files"][:5]) + (", …" if len(summary["unlisted_files"]) > 5 else "")
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"[yellow]warning:[/yellow] not published, because manifest.json does not list them: {names}")


@registry_app.command("list")
def list_models(
    registry: Optional[str] = typer.Option(None, "--registry", "-r", envvar=ENV, help=_REGISTRY_HELP,
                                           show_envvar=False),
    as_json: bool = typer.Option(False, "--json", help="print the index's models as JSON"),
):
    """List the models in a registry with their latest version."""
    index = _registry(registry).load_index()
    if as_json:
        _print_json({"models": [{"id": mid, **model} for mid, model in index["models"].items()]})
        return
    con = _console()
    if not index["models"]:
        con.print("no models yet")
        return
    table = _table("id", "latest", "versions", "arch", "quant", "size", "memory", "license")
    for mid, model in sorted(index["models"].items()):
        e = model["versions"][model["latest"]]
        table.add_row(mid, model["latest"], str(len(model["versions"])), e.get("architecture") or "-",
                      _quant(e), _size(e.get("total_bytes")), _size(e.get("memory_estimate_bytes")),
                      e.get("license") or "-")
    con.print(table)


@registry_app.command()
def show(
    spec: str = typer.Argument(..., metavar="ID[@VERSION]", help="model id, optionally @version"),
    registry: Optional[str] = typer.Option(None, "--registry", "-r", envvar=ENV, help=_REGISTRY_HELP,
                                           show_envvar=False),
    as_json: bool = typer.Option(False, "--json", help="print the index entry as JSON"),
):
    """Show a model's versions (or one version) as the index records them."""
    reg = _registry(registry)
    index = reg.load_index()
    model_id, version = parse_spec(spec)
    if version:
        model_id, version, entry = reg.resolve(spec, index)
        versions = [(version, entry)]
    else:
        versions = versions_newest_first(reg.model(model_id, index))
    latest = index["models"][model_id]["latest"]
    if as_json:
        _print_json({"id": model_id, "latest": latest,
                     "versions": [{"version": v, **e} for v, e in versions]})
        return
    con = _console()
    for v, e in versions:
        table = Table(title=f"{model_id}@{v}" + ("  (latest)" if v == latest else ""), show_header=False,
                      title_justify="left")
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        q = e.get("quantization") or {}
        src = e.get("source") or {}
        rows = [
            ("architecture", f"{e.get('architecture') or '-'} ({e.get('hf_architecture') or '-'})"),
            ("parameters", f"{e['parameters']:,}" if isinstance(e.get("parameters"), int) else "-"),
            ("quantization", f"{q.get('scheme', '-')}, compute {q.get('compute', '-')}, "
                             f"{q.get('bits_per_weight', '-')} bits/weight" if q else "-"),
            ("size", f"{_size(e.get('total_bytes'))} in {e.get('shard_count', '-')} shards"),
            ("memory estimate", f"{_size(e.get('memory_estimate_bytes'))} "
                                f"(context window {e.get('context_window') or '-'})"),
            ("requirements", json.dumps(e["requirements"]) if e.get("requirements") else "-"),
            ("license", e.get("license") or "-"),
            ("source", f"{src.get('name', '-')} ({src.get('kind', '-')})" if src else "-"),
            ("source sha256", src.get("sha256") or "-"),
            ("quality", _quality_text((e.get("card") or {}).get("quality"))),
            ("created", e.get("created") or "-"),
            ("published", e.get("published") or "-"),
            ("manifest sha256", e["manifest_sha256"]),
            ("path", e.get("path") or "-"),
        ]
        for k, val in rows:
            table.add_row(k, val)
        con.print(table)


def _quality_text(q: dict | None) -> str:
    """The model card's quality (from `llmpack eval`), or why there is none."""
    if not q:
        return "not measured (run `llmpack eval BUNDLE` before publishing)"
    parts = [f"perplexity {q['perplexity']:.3f}" if "perplexity" in q else None,
             f"KL {q['kl']:.4f} vs {q.get('reference') or 'the reference'}" if "kl" in q else None,
             f"on {q['tokens']} tokens" if "tokens" in q else None,
             f"({q['evaluated']})" if "evaluated" in q else None]
    return " ".join(p for p in parts if p)


@registry_app.command()
def pull(
    spec: str = typer.Argument(..., metavar="ID[@VERSION]", help="model id, optionally @version (default latest)"),
    out: Path = typer.Option(..., "--out", "-o", help="bundle folder to create"),
    registry: Optional[str] = typer.Option(None, "--registry", "-r", envvar=ENV, help=_REGISTRY_HELP,
                                           show_envvar=False),
    force: bool = typer.Option(False, "--force", help="replace an existing OUT"),
    as_json: bool = typer.Option(False, "--json", help="print a machine-readable summary"),
):
    """Download a model version as a bundle folder, checking every hash."""
    reg = _registry(registry)
    summary = reg.pull(spec, out, force=force, progress=_progress() and not as_json)
    if as_json:
        _print_json(summary)
        return
    _console().print(f"[green]pulled[/green] {summary['id']}@{summary['version']} to {summary['out']}: "
                     f"{summary['shards']} shards, {_size(summary['total_bytes'])}, all hashes checked")


@registry_app.command()
def verify(
    model_id: Optional[str] = typer.Argument(None, metavar="[ID]", help="check only this model's versions"),
    registry: Optional[str] = typer.Option(None, "--registry", "-r", envvar=ENV, help=_REGISTRY_HELP,
                                           show_envvar=False),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
):
    """Re-hash everything the index references and name what is missing or corrupt (exit 1 if any)."""
    reg = _registry(registry)
    report = reg.verify(model_id, progress=_progress() and not as_json)
    n = len(report["problems"])
    if as_json:
        _print_json(report)
    else:
        con = _console()
        if n:
            table = _table("problem", "path", "used by", "detail", title=f"{n} problem(s) in {reg.url}",
                           title_justify="left")
            for p in report["problems"]:
                table.add_row(p["kind"], p["path"], ", ".join(p["used_by"]), p["detail"])
            con.print(table)
        else:
            con.print(f"[green]ok[/green] {reg.url}: {report['versions']} versions, {report['shards']} shards, "
                      f"{report['files']} files, {_size(report['bytes_checked'])} checked")
    if n:
        raise RegistryError(f"{n} missing or corrupt file(s) in {reg.url}: re-publish the affected bundles with "
                            "`llmpack registry publish BUNDLE --to REGISTRY --repair`")


@registry_app.command()
def remove(
    spec: str = typer.Argument(..., metavar="ID@VERSION", help="the version to remove"),
    registry: Optional[str] = typer.Option(None, "--registry", "-r", envvar=ENV, help=_REGISTRY_HELP,
                                           show_envvar=False),
    as_json: bool = typer.Option(False, "--json", help="print a machine-readable summary"),
):
    """Remove one version from the index, then delete shards and folders nothing references."""
    reg = _registry(registry)
    result = reg.remove(spec)
    if as_json:
        _print_json(result)
        return
    _console().print(f"removed {result['removed']} from {reg.url}; deleted "
                     f"{_plural(result['shards_removed'], 'unreferenced shard')} ({_size(result['bytes_freed'])})")
    if result["skipped"]:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[yellow]warning:[/yellow] {result['skipped']}")


@registry_app.command()
def gc(
    registry: Optional[str] = typer.Option(None, "--registry", "-r", envvar=ENV, help=_REGISTRY_HELP,
                                           show_envvar=False),
    as_json: bool = typer.Option(False, "--json", help="print a machine-readable summary"),
):
    """Delete shards and version folders the index does not reference (left by killed publishes)."""
    reg = _registry(registry)
    result = reg.gc()
    if as_json:
        _print_json(result)
        return
    _console().print(f"{reg.url}: deleted {_plural(result['shards_removed'], 'unreferenced shard')} "
                     f"({_size(result['bytes_freed'])}) and {_plural(len(result['dirs_removed']), 'orphaned folder')}")
    if result["skipped"]:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[yellow]warning:[/yellow] {result['skipped']}")


@registry_app.command()
def serve(
    registry: Optional[str] = typer.Argument(None, envvar=ENV, metavar="REGISTRY", help=_REGISTRY_HELP,
                                             show_envvar=False),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (default: this machine only)"),
    port: int = typer.Option(8765, "--port", "-p", help="port to listen on (0: any free port)"),
    allowed_host: list[str] = typer.Option([], "--allowed-host", help="also answer requests for this host name "
                                           "(a reverse proxy's); repeatable"),
):
    """Serve a registry read-only over HTTP: /models, /models/{id}, and its files with Range and caching."""
    from .server import serve as run_server

    reg = _registry(registry, "REGISTRY")
    run_server(reg.url, host=host, port=port, allowed_hosts=allowed_host)


def main() -> None:
    """Entry point of `python -m model_registry.cli`: a user error is one line, exit 1."""
    try:
        registry_app()
    except UserError as e:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]error:[/red] {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()
