"""The built JS runtime and the chat page, as installed inside this package.

setup.py puts them in packager/web/ when llmpack is installed: copies in a wheel, links
to runtime_js/dist and web_demo in an editable install. Nothing here reads the source
tree, so `llmpack serve` and `llmpack demo` work from any directory.
"""

from __future__ import annotations

from pathlib import Path

from .errors import PackError

WEB_DIR = Path(__file__).resolve().parent / "web"
REINSTALL = "reinstall llmpack (`bash scripts/setup.sh`, or `pip install .` in a checkout with Node.js 20+)"


def runtime_dir() -> Path:
    """The folder holding llmpack.js (served as /runtime/)."""
    folder = WEB_DIR / "runtime"
    if not (folder / "llmpack.js").is_file():
        raise PackError(f"this llmpack install has no built JS runtime ({folder / 'llmpack.js'} is missing); "
                        f"{REINSTALL}")
    return folder.resolve()


def demo_dir() -> Path:
    """The folder holding the chat page (index.html, app.js, ...)."""
    folder = WEB_DIR / "demo"
    if not (folder / "index.html").is_file():
        raise PackError(f"this llmpack install has no chat page ({folder / 'index.html'} is missing); {REINSTALL}")
    return folder.resolve()
