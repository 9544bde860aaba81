"""A plain static file server, as a user's static host would be: `python -m http.server`
over a folder, on 127.0.0.1 and a free port, in a subprocess. It sends no COOP/COEP
headers, answers no Range requests and knows nothing of llmpack."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def static_server(folder: Path) -> Iterator[str]:
    """Serve `folder`; yields the root URL (ending in "/")."""
    proc = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "0",
                             "--directory", str(folder)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"port (\d+)", line)
        assert m, f"http.server did not start: {line!r}"
        yield f"http://127.0.0.1:{m.group(1)}/"
    finally:
        proc.terminate()
        proc.wait(10)
