"""Puts the built JS runtime and the chat page inside the `packager` package
(packager/web/runtime, packager/web/demo), so that an installed llmpack serves them
without a source checkout. Everything else about the distribution is in pyproject.toml.

- a wheel (`pip install .`): the runtime is built with npm when runtime_js/dist is
  missing or older than its sources, then both folders are copied into the wheel;
- an editable install (`pip install -e .`): packager/web/runtime and packager/web/demo
  become links to runtime_js/dist and web_demo, so a rebuilt runtime is served at once.
"""

import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
RUNTIME = ROOT / "runtime_js"
DEMO = ROOT / "web_demo"
# (xgrammar.js: the grammar engine, which llmpack.js imports on the first constrained request;
# api_host.js: the Node process of `llmpack serve --api`)
RUNTIME_FILES = ("llmpack.js", "llmpack.js.map", "xgrammar.js", "xgrammar.js.map", "api_host.js")


def built_runtime() -> Path:
    """runtime_js/dist, built (npm ci when node_modules is missing, then npm run build)
    when llmpack.js is missing or older than a source file."""
    dist = RUNTIME / "dist"
    js = dist / "llmpack.js"
    newest_source = max(p.stat().st_mtime for p in (RUNTIME / "src").rglob("*.ts"))
    if js.is_file() and js.stat().st_mtime >= newest_source:
        return dist
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("building llmpack needs Node.js 20+ with npm (to build the JS runtime in runtime_js/)")
    if not (RUNTIME / "node_modules").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=RUNTIME, check=True)
    subprocess.run([npm, "run", "--silent", "build"], cwd=RUNTIME, check=True)
    return dist


def demo_files() -> list[Path]:
    """The page: web_demo's top-level files (web_demo/test is not part of it)."""
    return sorted(p for p in DEMO.iterdir() if p.is_file())


class build_py_with_web(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            self._link_web(ROOT / "packager" / "web")
        else:
            self._copy_web(Path(self.build_lib) / "packager" / "web")

    def _copy_web(self, web: Path):
        dist = built_runtime()
        shutil.rmtree(web, ignore_errors=True)
        (web / "runtime").mkdir(parents=True)
        (web / "demo").mkdir()
        for name in RUNTIME_FILES:
            shutil.copy2(dist / name, web / "runtime" / name)
        for f in demo_files():
            shutil.copy2(f, web / "demo" / f.name)

    def _link_web(self, web: Path):
        built_runtime()
        web.mkdir(exist_ok=True)
        for name, target in (("runtime", RUNTIME / "dist"), ("demo", DEMO)):
            link = web / name
            if link.is_symlink() or link.exists():
                if link.is_symlink() and Path(os.readlink(link)) == Path(os.path.relpath(target, web)):
                    continue
                shutil.rmtree(link) if link.is_dir() and not link.is_symlink() else link.unlink()
            link.symlink_to(os.path.relpath(target, web), target_is_directory=True)


setup(cmdclass={"build_py": build_py_with_web})
