"""End to end: the JavaScript runtime's WebGPU backend (runtime_js, built module) in Node
(Dawn through npm `webgpu`) and in headless Chromium, against the Python oracles.

runtime_js/test/e2e/run.mjs serves a bundle on 127.0.0.1 with a request log, loads it
with the WebGPU backend, greedy-decodes each case through the Backend interface, asks
the engine the same chat question streamed and not streamed, then loads it again (the
persistent shard cache must serve everything). The assertions live here, where the
oracles are: the numpy reference executor (packager/reference.py) and transformers.

Without a GPU, Node's Dawn runs on SwiftShader (VK_ICD_FILENAMES, see
runtime_js/README.md) and Chromium uses its own SwiftShader adapter: f32 kernels only.
SwiftShader is slow (under 1 token/s for SmolLM2): by default each SmolLM2 test runs one
chat prompt for a few tokens in one place (f32 against transformers in Node, q4f32
against the reference in Chromium); LLMPACK_LONG_TESTS=1 runs every prompt for 32 tokens
in Node and Chromium side by side, and the SwiftShader benchmarks. They pass Dawn's
`disable_workgroup_init` toggle (SwiftShader spends more than
half of a decode step zero-filling workgroup memory; the kernels write it before
reading it, which these token-for-token comparisons would catch otherwise). The tiny
model tests run with Dawn's defaults.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import CHAT_PROMPTS, LONG_TESTS, chat_ids, hf_greedy, record_device, require, require_node
from packager.bench import SWIFTSHADER_ICD
from packager.reference import ReferenceModel

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ROOT / "runtime_js"
DRIVER = RUNTIME / "test" / "e2e" / "run.mjs"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FAST_SWIFTSHADER = ["disable_workgroup_init"]
NEW_TOKENS = 32 if LONG_TESTS else 6  # SmolLM2 tokens per prompt
CHAT_TOKENS = 12 if LONG_TESTS else 3  # SmolLM2 tokens of the engine's chat answer (asked twice)



# ---------------------------------------------------------------------------------------
# harness


@pytest.fixture(scope="session")
def js_env():
    """Environment for the drivers: the runtime built, and a WebGPU adapter in Node
    (the machine's own, else SwiftShader's). Fails (conftest.require) when Node has no adapter."""
    require_node()
    if not (RUNTIME / "dist" / "llmpack.js").is_file():
        pytest.fail("the runtime is not built: run `npm run build` in runtime_js (scripts/setup.sh does)")
    env = dict(os.environ)
    env.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))
    probe = ("const { create } = await import('webgpu'); const a = await create([]).requestAdapter();"
             "const f = a?.features.has('shader-f16') ? 'f16' : 'f32';"
             "console.log(a ? `ok ${process.version} ${a.info?.description || a.info?.device || ''} (${f})` : 'none');"
             "process.exit(0);")
    tries = [env]
    if "VK_ICD_FILENAMES" not in env and SWIFTSHADER_ICD.is_file():
        tries.append({**env, "VK_ICD_FILENAMES": str(SWIFTSHADER_ICD)})
    for candidate in tries:
        r = subprocess.run(["node", "--input-type=module", "-e", probe], cwd=RUNTIME, env=candidate,
                           capture_output=True, text=True, timeout=120)
        if r.stdout.startswith("ok "):
            _, version, adapter = (r.stdout.strip() + " ").split(" ", 2)
            record_device(f"Node {version}", f"Dawn {adapter.strip() or 'unknown adapter'}")
            return candidate
    require("dawn", False, "Node's WebGPU (Dawn) finds no adapter on this machine")


def where_params():
    return [pytest.param("node", id="node"), pytest.param("chromium", id="chromium")]


def start_driver(where: str, bundle: Path, spec: dict, env: dict, tmp: Path) -> subprocess.Popen:
    spec_file = tmp / f"spec-{where}-{time.monotonic_ns()}.json"
    spec_file.write_text(json.dumps(spec))
    cmd = ["node", str(DRIVER), "--where", where, "--bundle", str(bundle), "--spec", str(spec_file)]
    proc = subprocess.Popen(cmd, cwd=RUNTIME, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.started = time.monotonic()  # type: ignore[attr-defined]
    return proc


def finish_driver(proc: subprocess.Popen, timeout: float = 1800) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"driver failed ({proc.returncode}):\n{err[-6000:]}"
    result = json.loads(out.strip().splitlines()[-1])
    result["wall_s"] = round(time.monotonic() - proc.started, 1)  # type: ignore[attr-defined]
    return result


def run_drivers(jobs: list[tuple[str, Path, dict]], env: dict, tmp: Path) -> list[dict]:
    """Runs the drivers side by side (SwiftShader leaves a core idle); results in order."""
    from concurrent.futures import ThreadPoolExecutor

    if any(where == "chromium" for where, _, _ in jobs):
        require("chromium", Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM} (scripts/setup.sh --test installs it)")
    procs = [start_driver(where, bundle, spec, env, tmp) for where, bundle, spec in jobs]
    try:
        with ThreadPoolExecutor(len(procs)) as pool:
            results = list(pool.map(finish_driver, procs))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for (where, _, _), result in zip(jobs, results):
        if where == "chromium":
            first = result["first"]
            info = first["adapter"]
            adapter = info.get("description") or " ".join(
                filter(None, (info.get(k) for k in ("vendor", "architecture", "device")))) or "unknown adapter"
            record_device(result.get("browser") or "Chromium", f"{adapter} ({first['variant']})")
    return results


def report(request, line: str) -> None:
    """A line in the test log, whatever the capture mode (-q included)."""
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    if tr is None or capman is None:
        print(line)
        return
    with capman.global_and_fixture_disabled():
        tr.ensure_newline()
        tr.write_line(line)


def check_common(result: dict, bundle: Path) -> None:
    """Label, verified uploads, streamed == non-streamed, and a reload without shard requests."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    first = result["first"]
    assert first["label"] == f"WebGPU {first['variant']}"
    assert first["uploads"]["committed"] == len(manifest["shards"]) and first["uploads"]["discarded"] == 0
    shard_requests = [p for p in result["requests"]["first"] if p.startswith("bundle/shards/")]
    assert len(shard_requests) == len(manifest["shards"])
    chat = first.get("chat")
    if chat:
        assert chat["streamed"] == chat["text"], chat
        assert chat["stream_finish_reason"] == chat["finish_reason"]
        assert chat["usage"]["completion_tokens"] >= 1
    if "reload" in result:
        assert result["requests"]["reload"] == ["bundle/manifest.json"], result["requests"]["reload"]
        assert result["reload"]["load_stats"]["cachedShards"] == len(manifest["shards"])
        assert result["reload"]["load_stats"]["networkShards"] == 0


# ---------------------------------------------------------------------------------------
# tiny random Llama: every code path, fast


@pytest.fixture(scope="module")
def tiny_bundle(tiny_llama, tmp_path_factory):
    from packager.bundle import package_model

    out = tmp_path_factory.mktemp("e2e") / "tiny-q4f32"
    # 16 KiB shards: several, with tensors spanning them; window 256: prefill chunks of 128
    package_model(tiny_llama("gqa"), out, quant="q4f32", shard_size=16 << 10, context_window=256)
    return out


@pytest.fixture(scope="module")
def tiny_cases(tiny_bundle):
    ref = ReferenceModel(tiny_bundle)
    prompts = [[1, 5, 9, 20, 33, 7, 100, 200, 3], [(i * 37 + 11) % 317 + 3 for i in range(150)]]  # 150: two chunks
    news = [16, 8]
    return [{"prompt_ids": p, "new_tokens": n, "expected": ref.greedy(p, n)} for p, n in zip(prompts, news)]


@pytest.mark.parametrize("where", where_params())
def test_tiny_model_matches_reference(where, tiny_bundle, tiny_cases, js_env, tmp_path, request):
    spec = {"cases": [{k: c[k] for k in ("prompt_ids", "new_tokens")} for c in tiny_cases],
            "chat": {"messages": CHAT_PROMPTS[0], "max_tokens": 12}, "reload": {"cases": []}}
    [result] = run_drivers([(where, tiny_bundle, spec)], js_env, tmp_path)
    check_common(result, tiny_bundle)
    for case, got in zip(tiny_cases, result["first"]["cases"]):
        assert got["tokens"] == case["expected"], (len(case["prompt_ids"]), got["tokens"], case["expected"])
    report(request, f"runtime e2e tiny ({where}): {result['first']['label']} load {result['first']['load_ms']} ms, "
                    f"reload {result['reload']['load_ms']} ms, wall {result['wall_s']} s")


def test_f16_bundle_picks_the_variant_the_device_can_run(tiny_llama, tiny_cases, js_env, tmp_path):
    """A q4f16 bundle carries f16 and f32 kernels: the f16 ones where the adapter has
    shader-f16, else the f32 ones (SwiftShader); either way the reference's tokens."""
    from packager.bundle import package_model

    bundle = tmp_path / "tiny-q4f16"
    package_model(tiny_llama("gqa"), bundle, quant="q4f16", context_window=256)
    plan = json.loads((bundle / "plan.json").read_text())
    assert plan["variant_order"] == ["f16", "f32"]
    case = tiny_cases[0]
    expected = ReferenceModel(bundle).greedy(case["prompt_ids"], case["new_tokens"])
    spec = {"cases": [{"prompt_ids": case["prompt_ids"], "new_tokens": case["new_tokens"]}]}
    [result] = run_drivers([("node", bundle, spec)], js_env, tmp_path)
    first = result["first"]
    assert first["label"] == f"WebGPU {first['variant']}" and first["variant"] in ("f16", "f32")
    if first["variant"] == "f32":  # f32 arithmetic throughout: the reference's argmax exactly
        assert first["cases"][0]["tokens"] == expected
    else:  # f16 activations: the first tokens at least
        assert first["cases"][0]["tokens"][:4] == expected[:4]


def test_load_by_registry_id(tiny_bundle, tiny_cases, js_env, tmp_path):
    """Publish to a registry folder, serve it with `llmpack registry serve`, load by id."""
    reg = tmp_path / "registry"
    r = subprocess.run(["llmpack", "registry", "publish", str(tiny_bundle), "--to", str(reg), "--id", "tiny-e2e",
                        "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    server = subprocess.Popen(["llmpack", "registry", "serve", str(reg), "--port", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        url = next(w for w in line.split() if w.startswith("http://"))
        case = tiny_cases[0]
        spec = {"model": "registry:tiny-e2e", "registryUrl": url,
                "cases": [{"prompt_ids": case["prompt_ids"], "new_tokens": case["new_tokens"]}]}
        [result] = run_drivers([("node", tiny_bundle, spec)], js_env, tmp_path)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert result["first"]["cases"][0]["tokens"] == case["expected"]
    assert result["requests"]["first"] == [], "nothing came from the bundle folder: all from the registry"


# ---------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct: the real model


def smollm2_prompts() -> list[list[dict]]:
    return CHAT_PROMPTS if LONG_TESTS else CHAT_PROMPTS[:1]


def smollm2_e2e(bundle: Path, expected: list[list[int]], prompts: list[list[int]], env, tmp, request, name: str,
                where: str):
    spec = {"cases": [{"messages": m, "new_tokens": NEW_TOKENS} for m in smollm2_prompts()],
            "chat": {"messages": CHAT_PROMPTS[0], "max_tokens": CHAT_TOKENS}, "reload": {"cases": []},
            "dawnFlags": FAST_SWIFTSHADER}
    wheres = ["node", "chromium"] if LONG_TESTS else [where]
    results = run_drivers([(w, bundle, spec) for w in wheres], env, tmp)
    for where, result in zip(wheres, results):
        check_common(result, bundle)
        first = result["first"]
        for i, (got, want, prompt) in enumerate(zip(first["cases"], expected, prompts)):
            assert got["prompt_ids"] == prompt, f"{where}: the JS chat template differs on prompt {i}"
            assert got["tokens"] == want, f"{where}, prompt {i}: {got['tokens']} != {want}"
        times = ", ".join(f"{c['ms'] / 1000:.1f} s" for c in first["cases"])
        adapter = first["adapter"].get("description") or "SwiftShader"
        report(request, f"runtime e2e {name} ({where}, {first['label']}, {adapter}): "
                        f"load {first['load_ms'] / 1000:.1f} s, reload {result['reload']['load_ms'] / 1000:.1f} s, "
                        f"{len(prompts)} x {NEW_TOKENS} tokens: {times}; wall {result['wall_s']} s")
    return results


@pytest.mark.slow
def test_smollm2_f32_greedy_equals_transformers(smollm2_bundle, smollm2_hf, js_env, tmp_path, request):
    model, tok = smollm2_hf
    bundle = smollm2_bundle("f32", context_window=512)
    prompts = [chat_ids(tok, m) for m in smollm2_prompts()]
    expected = [hf_greedy(model, p, NEW_TOKENS) for p in prompts]
    results = smollm2_e2e(bundle, expected, prompts, js_env, tmp_path, request, "SmolLM2 f32 vs transformers",
                          "node")
    # the engine's answer is the greedy continuation, cut at EOS
    eos = set(json.loads((bundle / "manifest.json").read_text())["generation"]["eos_token_ids"])
    want = expected[0][:CHAT_TOKENS]
    want = want[: next((i for i, t in enumerate(want) if t in eos), len(want))]
    for r in results:
        assert r["first"]["chat"]["text"] == tok.decode(want), (r["first"]["chat"], tok.decode(want))


@pytest.mark.slow
def test_smollm2_q4f32_greedy_equals_reference(smollm2_bundle, smollm2_hf, js_env, tmp_path, request):
    _, tok = smollm2_hf
    bundle = smollm2_bundle("q4f32", context_window=512)
    ref = ReferenceModel(bundle)
    prompts = [chat_ids(tok, m) for m in smollm2_prompts()]
    expected = [ref.greedy(p, NEW_TOKENS) for p in prompts]
    smollm2_e2e(bundle, expected, prompts, js_env, tmp_path, request, "SmolLM2 q4f32 vs reference", "chromium")


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.parametrize("where", where_params())
def test_bench_smollm2(where, smollm2_bundle, js_env, request):
    """`llmpack bench` on the SmolLM2 bundle; its JSON goes to the test log."""
    bundle = smollm2_bundle("q4f32", context_window=512)
    cmd = ["llmpack", "bench", str(bundle), "--where", where, "--runs", "2", "--prompt-tokens", "16",
           "--new-tokens", "4", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=js_env, timeout=1800)
    assert r.returncode == 0, r.stderr[-4000:]
    result = json.loads(r.stdout)
    assert result["label"].startswith("WebGPU") and result["decode_tok_s"] > 0 and result["prefill_tok_s"] > 0
    assert result["load_cached_network_shards"] == 0
    artifacts = ROOT / "test-artifacts" / "bench"
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / f"smollm2-q4f32-{where}.json").write_text(json.dumps(result, indent=2))
    report(request, f"llmpack bench ({where}): {json.dumps(result)}")
