"""llmpack as users install it: a wheel (not editable) in a fresh virtual environment
serves a bundle, its chat page and its JS runtime from a directory outside the checkout."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def clean_checkout(dest: Path) -> Path:
    """The tracked files and the built runtime, as a fresh clone after `npm run build`
    has them (no stale build/ folder to leak into the wheel)."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    files = [f for f in tracked.decode().split("\0") if f]
    # (dist's top-level files: llmpack.js, xgrammar.js, api_host.js and their maps)
    files += [str(p.relative_to(ROOT)) for p in (ROOT / "runtime_js" / "dist").glob("*.js*")]
    for rel in files:
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)  # mtimes kept: the runtime counts as up to date
    return dest


def test_wheel_serves_from_anywhere(packaged_tiny, tmp_path):
    wheels = tmp_path / "wheels"
    src = clean_checkout(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(src)], check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = wheels.glob("llmpack-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"packager/web/runtime/llmpack.js", "packager/web/runtime/api_host.js", "packager/web/demo/index.html",
            "packager/web/demo/app.js", "packager/kernels/matvec.wgsl"} <= names
    assert not any(n.startswith(("packager/web/demo/test/", "runtime_js/", "web_demo/")) for n in names)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # The wheel goes into the fresh environment; its dependencies (numpy, fastapi, ...) are
    # borrowed from this one through a path entry, which sorts after the venv's own packages.
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", purelib, str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    Path(purelib, "borrowed-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([py, "-c", "import packager; print(packager.__file__)"], cwd=elsewhere,
                           check=True, capture_output=True, text=True).stdout
    assert where.startswith(purelib), where

    bundles = tmp_path / "bundles"
    bundles.mkdir()
    (bundles / "tiny").symlink_to(packaged_tiny("gqa", "q4f16"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.Popen([py, "-m", "packager.cli", "serve", str(bundles), "--port", "0", "--api"],
                            cwd=elsewhere, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert "serving 1 model" in first, first + proc.stderr.read()
        base = first.split(" at ")[1].split()[0]
        for _ in range(100):
            try:
                page = httpx.get(base, timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        runtime = httpx.get(base + "runtime/llmpack.js", timeout=5)
        models = httpx.get(base + "api/models", timeout=5).json()["models"]
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert runtime.status_code == 200 and runtime.content == (ROOT / "runtime_js/dist/llmpack.js").read_bytes()
        assert [m["id"] for m in models] == ["tiny"]
        assert httpx.get(base + "models/tiny/manifest.json", timeout=5).status_code == 200
        # --api: the installed runtime's api_host.js runs the model in Node (Wasm: no npm `webgpu` beside it)
        assert [m["id"] for m in httpx.get(base + "v1/models", timeout=5).json()["data"]] == ["tiny"]
        answer = httpx.post(base + "v1/chat/completions", timeout=120, json={
            "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0})
        assert answer.status_code == 200, answer.text
        assert answer.json()["usage"]["completion_tokens"] >= 1
    finally:
        proc.terminate()
        proc.wait(10)
