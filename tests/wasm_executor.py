"""A Python twin of the runtime's Wasm executor (runtime_js/src/wasm/), on wasmtime: it
interprets a bundle's plan.json with the Wasm kernels exactly as the runtime does
(same memory layout rules, same argument records, same program format), so that the
whole plan can be tested against packager.reference without a browser or Node.

    ex = WasmExecutor(bundle, files=build_wasm(manifest, plan))
    logits = ex.prefill(tokens); logits = ex.decode(token); ex.reset()
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from plan_session import PlanSession

from bundle_contract.manifest import load
from packager.plan_expr import evaluate
from packager.shards import read_tensor_bytes
from packager.wasm_build import FILES, TABLE_FILE

PAGE = 65536


def align(n: int, a: int = 64) -> int:
    return (n + a - 1) // a * a


class WasmExecutor(PlanSession):
    def __init__(self, bundle, *, files: dict[str, bytes] | None = None):
        import wasmtime

        self.bundle = Path(bundle)
        self.manifest = load(self.bundle).data
        self.plan = plan = json.loads((self.bundle / "plan.json").read_text())
        read = (lambda p: files[p]) if files else (lambda p: (self.bundle / p).read_bytes())
        self.table = table = json.loads(read(TABLE_FILE))
        wasm = read(FILES["single"])

        # layout: module data | stack | activations, KV cache, I/O | weights | program
        pos = align(table["modules"]["single"]["heap_base"]) + table["stack_bytes"]
        stack_top = pos
        self.addr: dict[str, int] = {}
        for name, buf in plan["buffers"].items():
            if buf["kind"] != "weight":
                self.addr[name] = pos
                pos = align(pos + 4 * buf["elements"])
        parts: dict[tuple[str, str], int] = {}
        for t in self.manifest["tensors"]:
            for p in t["parts"]:
                parts[t["name"], p["name"]] = pos
                pos = align(pos + p["bytes"])
        for name, buf in plan["buffers"].items():
            if buf["kind"] == "weight":
                self.addr[name] = parts[buf["tensor"], buf["part"]] + buf["offset"]
        self.programs = {}
        for ename, entry in plan["entries"].items():
            words = sum(2 + len(table["kernels"][d["kernel"]]["consts"]) + len(d["uniforms"]) + 3 +
                        len(d["bindings"]) for d in entry["dispatches"])
            self.programs[ename] = pos
            pos = align(pos + 4 * words)
        self.memory_bytes = pos

        self.store = wasmtime.Store(wasmtime.Engine())
        self.memory = wasmtime.Memory(self.store, wasmtime.MemoryType(wasmtime.Limits(-(-pos // PAGE), None)))
        inst = wasmtime.Instance(self.store, wasmtime.Module(self.store.engine, wasm), [self.memory])
        ex = inst.exports(self.store)
        ex["__stack_pointer"].set_value(self.store, wasmtime.Val.i32(stack_top))
        self._run = ex["run"]
        for t in self.manifest["tensors"]:
            blob = read_tensor_bytes(self.bundle, self.manifest["shards"], t)
            for p in t["parts"]:
                self.memory.write(self.store, blob[p["offset"]: p["offset"] + p["bytes"]], parts[t["name"], p["name"]])
        self.past_len = 0

    def program(self, entry: str, env: dict) -> np.ndarray:
        """The entry point's command words for these dimensions (runtime_js/src/wasm/program.ts)."""
        words = []
        for d in self.plan["entries"][entry]["dispatches"]:
            k = self.table["kernels"][d["kernel"]]
            wg = [evaluate(e, env) for e in d["workgroups"]]
            args = [*k["consts"], *(evaluate(e, env) for e in d["uniforms"]), *wg,
                    *(self.addr[b] for _, b in sorted(d["bindings"]))]
            words += [0xFFFFFFFF if 0 in wg else k["op"], len(args), *args]
        return np.array(words, np.uint32)

    def _forward(self, entry: str, tokens: np.ndarray) -> np.ndarray:
        self.memory.write(self.store, tokens.tobytes(), self.addr["tokens"])
        prog = self.program(entry, {"seq_len": len(tokens), "past_len": self.past_len})
        self.memory.write(self.store, prog.tobytes(), self.programs[entry])
        count = len(self.plan["entries"][entry]["dispatches"])
        self._run(self.store, self.programs[entry], count)
        vocab = self.plan["buffers"]["logits"]["elements"]
        raw = self.memory.read(self.store, self.addr["logits"], self.addr["logits"] + 4 * vocab)
        return np.frombuffer(bytes(raw), np.float32).copy()
