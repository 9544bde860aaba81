"""runtime_js as an npm package: `npm pack` (with its prepack build), the tarball
installed offline into a scratch project, that project's TypeScript checked by tsc
against the package's declarations, and bundled by esbuild twice: for the web (the
runtime's Node-only imports must not stop a browser build) and for Node, where the
built app loads a tiny bundle from a static host by URL and greedy-decodes the numpy
reference's tokens."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

from conftest import require_node
from static_host import static_server
from test_registry_helpers import ROOT

RUNTIME = ROOT / "runtime_js"
TSC = RUNTIME / "node_modules" / "typescript" / "bin" / "tsc"
ESBUILD = RUNTIME / "node_modules" / "esbuild"

WEB_APP = """\
import { createEngine, RUNTIME_VERSION, type ChatCompletionChunk, type Engine } from "llmpack-runtime";

const out = document.getElementById("out")!;
const engine: Engine = await createEngine(new URL("models/tiny/", location.href).href, {
  onProgress: (p) => (out.textContent = `${p.phase} ${p.bytesDone}/${p.bytesTotal}`),
});
const stream: AsyncIterable<ChatCompletionChunk> = await engine.chat.completions.create({
  messages: [{ role: "user", content: "Hello" }], max_tokens: 8, stream: true,
});
for await (const chunk of stream) out.textContent += chunk.choices[0]?.delta.content ?? "";
console.log(RUNTIME_VERSION, engine.backend.label);
"""

NODE_APP = """\
import { createEngine } from "llmpack-runtime";

declare const process: { argv: string[] }; // (the scratch project has no @types/node)

const [bundleUrl, ids, n] = process.argv.slice(2);
const engine = await createEngine(bundleUrl, { backend: "wasm", cache: null });
const prompt: number[] = JSON.parse(ids);
const argmax = (l: Float32Array) => l.reduce((best, v, i) => (v > l[best]! ? i : best), 0);
let logits = await engine.backend.prefill(Int32Array.from(prompt), 0);
const tokens: number[] = [];
for (let i = 0; i < Number(n); i++) {
  tokens.push(argmax(logits));
  if (i + 1 < Number(n)) logits = await engine.backend.decode(tokens[i]!, prompt.length + i);
}
console.log(JSON.stringify({ tokens, label: engine.backend.label }));
await engine.unload();
"""

BAD_APP = """\
import { createEngine } from "llmpack-runtime";
await createEngine(42, { backend: "wasm" });
"""

TSCONFIG = {"compilerOptions": {"target": "ES2022", "module": "ESNext", "moduleResolution": "bundler",
                                "lib": ["ES2022", "DOM", "DOM.Iterable"], "strict": True, "noEmit": True,
                                "skipLibCheck": False, "types": []}}


def run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "npm_config_update_notifier": "false"})
    assert r.returncode == 0, f"{' '.join(map(str, cmd))}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def esbuild(app: Path, entry: str, platform: str, outdir: str) -> None:
    script = (f"const {{ build }} = require({json.dumps(str(ESBUILD))});"
              f"build({{ entryPoints: [{json.dumps(entry)}], bundle: true, format: 'esm', splitting: true, "
              f"platform: {json.dumps(platform)}, target: 'es2022', outdir: {json.dumps(outdir)}, logLevel: 'error' }})"
              ".catch(() => process.exit(1));")
    run(["node", "-e", script], app)


def test_npm_package_installs_offline_type_checks_and_bundles(packaged_tiny, tmp_path):
    require_node()
    from packager.reference import ReferenceModel

    packed = json.loads(run(["npm", "pack", "--json", "--pack-destination", str(tmp_path)], RUNTIME,
                            timeout=600).stdout)
    tarball = tmp_path / packed[0]["filename"]
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("package/package.json"))
    assert {"package/README.md", "package/dist/llmpack.js", "package/dist/xgrammar.js",
            "package/dist/types/index.d.ts", "package/dist/types/version.d.ts"} <= names
    assert not [n for n in names if n.startswith(("package/src/", "package/test/", "package/dist/test/"))]
    assert manifest["exports"]["."]["types"] == "./dist/types/index.d.ts" and manifest["type"] == "module"
    assert not manifest.get("dependencies"), "the runtime is bundled: the package needs nothing else"

    app = tmp_path / "app"
    (app / "src").mkdir(parents=True)
    (app / "package.json").write_text(json.dumps({"name": "scratch-app", "private": True, "type": "module"}))
    run(["npm", "install", "--offline", "--no-audit", "--no-fund", str(tarball)], app)
    assert json.loads((app / "node_modules" / "llmpack-runtime" / "package.json").read_text())["version"] == \
        manifest["version"]
    (app / "src" / "web.ts").write_text(WEB_APP)
    (app / "src" / "node.ts").write_text(NODE_APP)
    (app / "tsconfig.json").write_text(json.dumps({**TSCONFIG, "include": ["src"]}))
    run(["node", str(TSC), "-p", "."], app)  # the app's code against the package's declarations
    (app / "bad").mkdir()
    (app / "bad" / "bad.ts").write_text(BAD_APP)
    (app / "tsconfig.bad.json").write_text(json.dumps({**TSCONFIG, "include": ["bad"]}))
    r = subprocess.run(["node", str(TSC), "-p", "tsconfig.bad.json"], cwd=app, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode != 0 and "bad/bad.ts" in r.stdout and "number" in r.stdout, r.stdout  # the types are real

    esbuild(app, "src/web.ts", "browser", "dist-web")
    web = (app / "dist-web" / "web.js").read_text()
    assert "createEngine" in web and 'import("node:' not in web
    esbuild(app, "src/node.ts", "node", "dist-node")

    bundle = packaged_tiny("gqa", "q4f32")
    prompt, n = [1, 5, 9, 2, 7], 5
    with static_server(bundle.parent) as root:
        r = run(["node", "dist-node/node.js", f"{root}{bundle.name}/", json.dumps(prompt), str(n)], app)
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["tokens"] == ReferenceModel(bundle).greedy(prompt, n), got
