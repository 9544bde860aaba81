"""The Node process that runs the models of `llmpack serve --api`.

The JS runtime runs in Node (`api_host.js`, built beside `llmpack.js`): it creates one
engine per bundle on the bundle's first request (backend "auto": WebGPU through npm
`webgpu` on a GPU that is not a software renderer, else Wasm), and the engine queues that
model's requests. This module starts it, sends it one JSON line per chat request or
abort on its stdin, and routes the lines it prints (`<id> <kind> [<json>]`, see
runtime_js/src/node/api_host.ts) to the asyncio queue of the request they answer. Its
stderr (which model runs on which backend, server errors) is copied to ours.

Why a pipe and not a second HTTP server: nothing else listens (no port another local
user or a DNS-rebinding page could reach past the Host check), the process ends with
its stdin when the server does, and the HTTP side stays in one place (openai_api.py).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from . import web_assets
from .errors import PackError

HOST_SCRIPT = "api_host.js"
MIN_NODE = 20
READY_TIMEOUT_S = 30.0


@dataclass
class Event:
    """One line of the Node process about a request: kind is stream | chunk | done |
    result | error; data the JSON text after it (a chunk is forwarded as is)."""
    kind: str
    data: str = ""

    def json(self) -> dict:
        return json.loads(self.data)


@dataclass
class Call:
    """A request sent to the Node process; its events arrive in `queue`."""
    id: int
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)


def server_error(message: str) -> Event:
    return Event("error", json.dumps({"status": 500, "error": {"message": message, "type": "server_error",
                                                               "param": None, "code": None}}))


class NodeApiHost:
    """Starts `node api_host.js` and talks to it. `start()` checks Node and waits for the
    process to say it is ready (PackError, one line, when it cannot); a process that died
    is started again at the next request. `speculative`: prompt-lookup speculative decoding
    for the requests that do not say (their `speculative` field)."""

    def __init__(self, script: Path | None = None, node: str | None = None, env: dict[str, str] | None = None,
                 speculative: bool = False):
        self.script = script
        self.node = node
        self.env = env
        self.speculative = speculative
        self.proc: subprocess.Popen | None = None
        self.calls: dict[int, Call] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)

    def start(self) -> NodeApiHost:
        node = self.node or shutil.which("node")
        if node is None:
            raise PackError("--api runs the models in Node.js: install Node.js 20 or newer (`node` is not on PATH)")
        self.node = node
        if self.script is None:
            self.script = web_assets.runtime_dir() / HOST_SCRIPT
        if not self.script.is_file():
            raise PackError(f"this llmpack install's JS runtime has no {HOST_SCRIPT} ({self.script} is missing): "
                            f"rebuild it (`npm run build` in runtime_js) or {web_assets.REINSTALL}")
        with self._lock:
            self._spawn()
        return self

    def _spawn(self) -> None:
        env = dict(self.env if self.env is not None else os.environ)
        env.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))  # quiets Mesa
        try:
            args = ["--speculative"] if self.speculative else []
            proc = subprocess.Popen([self.node, str(self.script), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env, cwd=self.script.parent, text=True,
                                    encoding="utf-8", bufsize=1)
        except OSError as e:
            raise PackError(f"--api cannot start Node.js ({self.node}): {e.strerror or e}") from None
        ready = threading.Event()
        info: dict = {}
        threading.Thread(target=self._read_stdout, args=(proc, ready, info), daemon=True,
                         name="llmpack-api-stdout").start()
        stderr = threading.Thread(target=self._read_stderr, args=(proc,), daemon=True, name="llmpack-api-stderr")
        stderr.start()
        if not ready.wait(READY_TIMEOUT_S) or "node" not in info:
            proc.kill()
            proc.wait()
            stderr.join(5)  # (its last lines say why)
            why = self._stderr_tail[-1] if self._stderr_tail else f"it exited with status {proc.returncode}"
            raise PackError(f"--api: the Node.js process running the models did not start ({why})")
        major = int(str(info["node"]).split(".")[0])
        if major < MIN_NODE:
            proc.kill()
            proc.wait()
            raise PackError(f"--api needs Node.js {MIN_NODE} or newer; {self.node} is {info['node']}")
        self.proc = proc

    def _read_stdout(self, proc: subprocess.Popen, ready: threading.Event, info: dict) -> None:
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line.startswith("ready "):
                info.update(json.loads(line[6:]))
                ready.set()
                continue
            head, _, data = line.partition(" ")
            kind, _, data = data.partition(" ")
            if not head.isdigit():
                print(line, file=sys.stderr)  # (not a protocol line: something printed to stdout)
                continue
            self._deliver(int(head), Event(kind, data))
        ready.set()
        proc.wait()
        with self._lock:
            if self.proc is proc:
                self.proc = None
            pending, self.calls = self.calls, {}
        for call_id in pending:
            self._deliver(call_id, server_error(f"the Node.js process running the models exited with status "
                                                f"{proc.returncode} (its messages are in the server's log)"), pending)

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            self._stderr_tail.append(line.rstrip("\n"))
            sys.stderr.write(line)
            sys.stderr.flush()

    def _deliver(self, call_id: int, event: Event, calls: dict[int, Call] | None = None) -> None:
        call = (calls if calls is not None else self.calls).get(call_id)
        if call is None:  # (a request that was aborted, or answered)
            return
        try:
            call.loop.call_soon_threadsafe(call.queue.put_nowait, event)
        except RuntimeError:  # its event loop is closed
            pass

    def _send(self, message: dict) -> bool:
        """Writes one line to the process (started again if it died); False if it cannot."""
        with self._lock:
            if self.proc is None or self.proc.poll() is not None:
                try:
                    self._spawn()
                except PackError:
                    return False
            try:
                self.proc.stdin.write(json.dumps(message) + "\n")
                self.proc.stdin.flush()
                return True
            except OSError:
                return False

    def chat(self, bundle: Path, model: str, body: str) -> Call:
        """Sends a chat request (the body as the client sent it); its events arrive in the
        returned call's queue, the last one being done, result or error."""
        call = Call(next(self._ids), asyncio.get_running_loop())
        self.calls[call.id] = call
        if not self._send({"op": "chat", "id": call.id, "bundle": str(bundle), "model": model, "body": body}):
            self.calls.pop(call.id, None)
            call.queue.put_nowait(server_error("the Node.js process running the models is not running"))
        return call

    def finish(self, call: Call, abort: bool = False) -> None:
        """Forgets a call; with `abort`, tells the process to stop it (the client went away)."""
        if self.calls.pop(call.id, None) is not None and abort:
            self._send({"op": "abort", "id": call.id})

    def close(self) -> None:
        """Ends the process: its stdin closes, it unloads the engines and exits."""
        with self._lock:
            proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
