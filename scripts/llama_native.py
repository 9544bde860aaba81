"""llama.cpp built natively for this machine, the peer of scripts/bench_wasm_vs_wllama.mjs.

Benchmark tooling only (llmpack never runs llama.cpp): the source is the llama.cpp that
the PyPI sdist of llama-cpp-python vendors, fetched with pip into a cache folder outside
the repository, configured with cmake for this CPU (GGML_NATIVE) and built into its
`llama-bench`. Prints the path of that binary (building it first when missing: a few
minutes on 2 cores).

    python scripts/llama_native.py [--cache DIR] [--jobs N]

DIR: $LLMPACK_BENCH_CACHE, default ~/.cache/llmpack-bench.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

LLAMA_CPP_PYTHON = "0.3.36"  # the sdist whose vendor/llama.cpp is built
CMAKE_FLAGS = ["-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
               "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF"]


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def source_dir(cache: Path) -> Path:
    """vendor/llama.cpp of the sdist, downloaded and unpacked into `cache` once."""
    root = cache / f"llama_cpp_python-{LLAMA_CPP_PYTHON}"
    src = root / "vendor" / "llama.cpp"
    if (src / "CMakeLists.txt").is_file():
        return src
    sdist = cache / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    if not sdist.is_file():
        print(f"downloading the llama-cpp-python {LLAMA_CPP_PYTHON} sdist into {cache} ...", file=sys.stderr)
        cmd = [sys.executable, "-m", "pip", "download", f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "--no-deps",
               "--no-binary", ":all:", "-d", str(cache)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0 or not sdist.is_file():
            fail(f"pip could not download llama-cpp-python=={LLAMA_CPP_PYTHON}: {r.stderr.strip()[-500:]}")
    with tarfile.open(sdist) as tar:
        tar.extractall(cache, filter="data")
    if not (src / "CMakeLists.txt").is_file():
        fail(f"{sdist} has no vendor/llama.cpp")
    return src


def build(cache: Path, jobs: int) -> Path:
    src = source_dir(cache)
    out = src / "build"
    binary = out / "bin" / "llama-bench"
    if binary.is_file():
        return binary
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            fail(f"building llama.cpp needs {tool} (apt-get install cmake g++)")
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    print(f"building llama.cpp (llama-bench) in {out}: a few minutes ...", file=sys.stderr)
    for cmd in (["cmake", "-S", str(src), "-B", str(out), *gen, *CMAKE_FLAGS],
                ["cmake", "--build", str(out), "--target", "llama-bench", "-j", str(jobs)]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"{' '.join(cmd[:3])} failed:\n{(r.stdout + r.stderr)[-2000:]}")
    if not binary.is_file():
        fail(f"the build made no {binary}")
    return binary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path,
                    default=Path(os.environ.get("LLMPACK_BENCH_CACHE") or Path.home() / ".cache" / "llmpack-bench"))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    print(build(args.cache.resolve(), args.jobs))


if __name__ == "__main__":
    main()
