"""`llmpack bench`: how fast a bundle loads and runs in the JavaScript runtime.

Drives runtime_js/bench/bench.mjs in Node (WebGPU through npm `webgpu`, i.e. Dawn) or
in headless Chromium (playwright-core), which serves the bundle on 127.0.0.1, loads it
twice (cold: empty shard cache; cached: the second load), then times prefill and
greedy decode through the runtime's Backend interface. The result is one JSON object:
load times, prefill and decode tokens/s (median of the runs), peak memory where the
environment reports it (Node: RSS and heap; Chromium: performance.memory), the
adapter and the backend label.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .errors import PackError

RUNTIME_DIR = Path(__file__).resolve().parent.parent / "runtime_js"
BENCH_SCRIPT = RUNTIME_DIR / "bench" / "bench.mjs"
SWIFTSHADER_ICD = Path("/usr/lib/chromium/vk_swiftshader_icd.json")
WHERE = ("node", "chromium")
BACKENDS = ("webgpu", "wasm")


def runtime_env(swiftshader: bool = False) -> dict[str, str]:
    """The environment for the Node process: XDG_RUNTIME_DIR set (quiets Mesa), and with
    `swiftshader`, Dawn pointed at SwiftShader's Vulkan driver (the ICD Debian's
    chromium package ships), for machines without a GPU Dawn accepts."""
    env = dict(os.environ)
    env.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))
    if swiftshader:
        env["VK_ICD_FILENAMES"] = str(SWIFTSHADER_ICD)
    return env


def run_bench(bundle: Path, *, backend: str = "webgpu", where: str = "node", runs: int = 3, prompt_tokens: int = 64,
              new_tokens: int = 32, chromium: str | None = None, dawn_flags: tuple[str, ...] = (),
              extra_args: tuple[str, ...] = (), timeout: float | None = None, threads: int | None = None) -> dict:
    """Run the benchmark; return its JSON object. PackError on a user-facing problem.
    threads: worker threads of the Wasm backend (None: its default)."""
    bundle = Path(bundle)
    if not (bundle / "manifest.json").is_file():
        raise PackError(f"{bundle} is not a bundle (no manifest.json)")
    if where not in WHERE:
        raise PackError(f"--where must be one of {', '.join(WHERE)}, not {where!r}")
    if backend not in BACKENDS:
        raise PackError(f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if runs < 1 or prompt_tokens < 1 or new_tokens < 0:
        raise PackError("--runs and --prompt-tokens must be at least 1, --new-tokens at least 0")
    node = shutil.which("node")
    if node is None:
        raise PackError("llmpack bench needs Node.js 20 or newer (`node` is not on PATH)")
    if not BENCH_SCRIPT.is_file():  # the harness and its npm packages are development tools
        raise PackError("llmpack bench runs from a source checkout of llmpack (it needs runtime_js/bench "
                        "and runtime_js/node_modules)")
    need = "playwright-core" if where == "chromium" else "webgpu"
    if not (RUNTIME_DIR / "node_modules" / need).is_dir() or not (RUNTIME_DIR / "dist" / "llmpack.js").is_file():
        raise PackError(f"the runtime or npm package {need} is missing: run `npm ci && npm run build` in "
                        f"{RUNTIME_DIR}")
    cmd = [node, str(BENCH_SCRIPT), "--bundle", str(bundle.resolve()), "--where", where, "--backend", backend,
           "--runs", str(runs), "--prompt-tokens", str(prompt_tokens), "--new-tokens", str(new_tokens)]
    if chromium:
        cmd += ["--chromium", chromium]
    for flag in dawn_flags:
        cmd += ["--dawn-flag", flag]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    cmd += list(extra_args)
    r = _run(cmd, runtime_env(), timeout)
    # In Node on a machine without a GPU that Dawn accepts, use SwiftShader (unless the
    # user chose a Vulkan driver).
    if (r.returncode != 0 and where == "node" and "no WebGPU adapter" in r.stderr
            and "VK_ICD_FILENAMES" not in os.environ and SWIFTSHADER_ICD.is_file()):
        r = _run(cmd, runtime_env(swiftshader=True), timeout)
    if r.returncode != 0:
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        why = next((ln.strip() for ln in lines if ln.lstrip().startswith(("Error", "BackendUnsupportedError",
                                                                            "ShardError", "PlanError"))),
                   lines[-1].strip() if lines else f"exit status {r.returncode}")
        raise PackError(f"the benchmark failed ({where}, {backend}): {why}")
    try:
        return json.loads(r.stdout)
    except json.JSONDecodeError as e:
        raise PackError(f"the benchmark printed no JSON: {r.stdout[-400:]!r}") from e


def _run(cmd: list[str], env: dict[str, str], timeout: float | None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=RUNTIME_DIR, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise PackError(f"the benchmark did not finish within {timeout:.0f} s") from e


def parse_threads(text: str | None, backend: str) -> list[int | None]:
    """--threads "1,4" -> [1, 4]; none given: [1, min(CPUs, 4)] for wasm, [None] otherwise."""
    if text is None:
        if backend != "wasm":
            return [None]
        n = min(os.cpu_count() or 1, 4)
        return [1, n] if n > 1 else [1]
    if backend != "wasm":
        raise PackError("--threads applies to --backend wasm")
    try:
        counts = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise PackError(f"--threads wants positive counts like 1,4, not {text!r}")
    return counts


def _cpu(ms: float | None) -> str:
    """ " (CPU 14.3 s)": the process's CPU time of a load, where the environment reports it (Node)."""
    return "" if ms is None else f" (CPU {ms / 1000:.1f} s)"


def summary_rows(result: dict) -> list[tuple[str, str]]:
    """(what, value) pairs for a human-readable table."""
    mem = result.get("peak_memory") or {}
    peak = mem.get("max_rss_bytes") or mem.get("rss_bytes") or mem.get("js_heap_used_bytes")
    peak_what = "peak RSS" if ("max_rss_bytes" in mem or "rss_bytes" in mem) else "peak JS heap"
    adapter = result.get("adapter") or {}
    vendor = " ".join(v for v in (adapter.get("vendor"), adapter.get("architecture")) if v)
    rows = [
        ("backend", f"{result.get('label')} ({result.get('where')}, {result.get('runtime')})"),
        ("adapter", adapter.get("description") or vendor or "-"),
        ("model", f"{result.get('model')} {result.get('quantization')}"),
        ("load, cold", f"{result.get('load_cold_ms', 0) / 1000:.2f} s{_cpu(result.get('load_cold_cpu_ms'))}"),
        ("load, cached", f"{result.get('load_cached_ms', 0) / 1000:.2f} s{_cpu(result.get('load_cached_cpu_ms'))}"),
        ("prefill", f"{result.get('prefill_tok_s')} tok/s ({result.get('prompt_tokens')} tokens)"),
        ("decode", f"{result.get('decode_tok_s')} tok/s ({result.get('new_tokens')} tokens)"),
    ]
    if peak:
        rows.append((peak_what, f"{peak / 2**20:.0f} MiB"))
    return rows
