"""packager/kernel_table.py is the one description of the kernel interface: every WGSL
template placeholder, binding and uniform, and every argument a C op reads, is in it;
the generated C header and plan.json's kernel constants come from it."""

from __future__ import annotations

import json
import re

import pytest

from packager.compile import KERNEL_DIR, load_template
from packager.errors import PackError
from packager.kernel_table import TEMPLATES, WASM_OPS, WEIGHT_BINDING0, WEIGHT_FORMATS, wasm_layout, workgroup_values
from packager.wasm_build import FORMATS, OPS, SRC_DIR, kernel_header, kernel_table
from quantization.formats import FORMATS as QUANT_FORMATS

PLACEHOLDER = re.compile(r"\{\{([A-Z0-9_]+)\}\}")
BINDING = re.compile(r"@group\(0\) @binding\((\d+)\) var<(uniform|storage, read|storage, read_write)> (\w+)")
ACCESS = {"storage, read": "read-only-storage", "storage, read_write": "storage"}


def test_every_template_file_is_in_the_table():
    files = {p.stem for p in KERNEL_DIR.glob("*.wgsl")}
    # (matvec_bias and matvec_rope_bias render matvec's and matvec_rope's files: Template.source)
    assert {f for f in files if not f.startswith("_")} == {t.file for t in TEMPLATES.values()}
    assert {f for f in files if f.startswith("_") and not f.startswith("_w_")} == {"_bias", "_no_bias"}
    assert {f[3:] for f in files if f.startswith("_w_")} == set(WEIGHT_FORMATS)


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_template_placeholders_are_the_tables(name):
    """A template uses exactly the table's params and tiles (and the variant's prelude,
    the workgroup size, with weights the fragment, and the bias fragment); nothing else."""
    t = TEMPLATES[name]
    used = set(PLACEHOLDER.findall(load_template(t.file)))
    fragments = {"WEIGHTS", "WEIGHTS2"} if t.weight_sets == 2 else {"WEIGHTS"}
    allowed = {"PRELUDE", "BIAS", *t.params, *t.tiles, *workgroup_values(t)} | (fragments if t.weights else set())
    assert used <= allowed, f"{name}: placeholders not in the kernel table: {sorted(used - allowed)}"
    assert {"PRELUDE", *t.params, *t.tiles} <= used, f"{name}: table values the template ignores"
    assert ("WEIGHTS" in used) == t.weights and ("WEIGHTS2" in used) == (t.weights and t.weight_sets == 2)
    assert "@workgroup_size({{" in load_template(t.file), f"{name}: the workgroup size must come from the table"
    assert "BIAS" in used or not t.has_bias, f"{name}: binds a bias its file has no place for"


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_template_bindings_and_uniforms_are_the_tables(name):
    t = TEMPLATES[name]
    text = load_template(t.file).replace("{{BIAS}}", load_template("_bias" if t.has_bias else "_no_bias"))
    declared = [(int(n), ACCESS.get(kind, kind), var) for n, kind, var in BINDING.findall(text)]
    assert declared[0] == (0, "uniform", "p")
    assert declared[1:] == [(b.binding, b.type, b.name) for b in t.bindings]
    fields = re.search(r"struct Params \{ (.*) \}", text).group(1)
    assert [f.split(":")[0].strip() for f in fields.split(",")] == list(t.uniforms)


@pytest.mark.parametrize("fmt", list(WEIGHT_FORMATS))
def test_weight_fragments_and_parts(fmt):
    """Each fragment binds the format's parts at 8, 9, ...; the parts are quantization's."""
    parts = WEIGHT_FORMATS[fmt].parts
    assert parts == tuple(p.name for p in QUANT_FORMATS[fmt].parts((1, 256)))
    bindings = [int(n) for n, _, _ in BINDING.findall(load_template(f"_w_{fmt}"))]
    assert bindings == list(range(WEIGHT_BINDING0, WEIGHT_BINDING0 + len(parts)))


def c_source(op: str) -> str:
    return (SRC_DIR / f"{op}.c").read_text()


@pytest.mark.parametrize("op", list(WASM_OPS))
def test_c_ops_read_their_arguments_by_the_tables_names(op):
    """Every argument a C op reads is a generated offset of that op, never a number."""
    src = c_source(op)
    assert re.search(rf"\bvoid op_{op}\(const uint32_t \*a, uint32_t tid, uint32_t nt\)", src)
    indexes = re.findall(r"\ba\[([^\]]+)\]", src)
    assert indexes, f"{op}.c reads no arguments"
    names = {f"{op.upper()}_{n.upper()}" for n, _ in wasm_layout(op)}
    for index in indexes:
        assert index in names, f"{op}.c reads a[{index}], not an argument of the kernel table"
    reads = re.findall(r"weight_parts\(a, (\w+), ", src)
    assert reads in ([], [f"{op.upper()}_WEIGHTS"])


def test_no_c_source_indexes_arguments_by_number():
    for path in SRC_DIR.glob("*.[ch]"):
        assert not re.search(r"\ba\[\d", path.read_text()), path.name


def test_generated_header():
    header = kernel_header(["q4f16", "q8f16"])
    defines = dict(re.findall(r"#define (\w+) (\S+)", header))
    assert [int(defines[f"OP_{op.upper()}"]) for op in OPS] == list(range(len(OPS)))
    assert [int(defines[f"FMT_{f.upper()}"]) for f in FORMATS] == list(range(len(FORMATS)))
    assert OPS == list(WASM_OPS) and FORMATS == list(WEIGHT_FORMATS)
    assert re.search(r"LLMPACK_WEIGHT_FORMATS\(X\) X\(FMT_Q8F16, FORMAT_Q8F16\) X\(FMT_Q4F16, FORMAT_Q4F16\)",
                     header)
    # matmul: consts [FORMAT, K, N] | uniforms [seq_len, row0, rows] | wg | x, y, weight parts
    assert [defines[f"MATMUL_{n}"] for n in ("FORMAT", "K", "N", "SEQ_LEN", "ROW0", "ROWS", "WG_X", "X", "Y",
                                            "WEIGHTS", "ARGS")] == ["0", "1", "2", "3", "4", "5", "6", "9", "10",
                                                                    "11", "11"]
    assert defines["MATMUL_TILE"] == f"{WASM_OPS['matmul'].tiles['TILE']}u"
    for op in WASM_OPS:  # ops read the fixed part of their record in this order
        layout = wasm_layout(op)
        consts = len(WASM_OPS[op].consts)
        assert [n for n, _ in layout[:consts]] == list(WASM_OPS[op].consts)
        assert int(defines[f"{op.upper()}_WG_X"]) == consts + len(next(
            t.uniforms for t in TEMPLATES.values() if t.wasm_op == op))


def test_every_template_has_a_wasm_op():
    """Every template but the WebGPU-only ones (wasm "-": argmax and topk_*, whose entries Wasm
    never runs)."""
    for name, t in TEMPLATES.items():
        if t.wasm_op == "-":
            assert name in ("argmax", "topk_partial", "topk_merge"), name
            continue
        assert t.wasm_op in WASM_OPS, name
        assert (SRC_DIR / f"{t.wasm_op}.c").exists()


def test_plan_kernels_carry_the_constants(packaged_tiny):
    """plan.json lists each kernel's params and tiles: the Wasm kernel table is made from
    them alone, and a plan without them (an older bundle) is refused with a clear message."""
    bundle = packaged_tiny("llama3", "q4f16", quantizer="rtn")
    manifest = json.loads((bundle / "manifest.json").read_text())
    plan = json.loads((bundle / "plan.json").read_text())
    for name, k in plan["kernels"].items():
        t = TEMPLATES[k["template"]]
        assert set(k["consts"]) == set(t.params) | set(t.tiles), name
        assert ("weight_format" in k) == t.weights
        assert k["workgroup_size"] == list(t.workgroup_size)
    table = kernel_table(manifest, plan)[0]
    matvec = next(n for n, k in plan["kernels"].items() if k["template"] == "matvec")
    c = plan["kernels"][matvec]["consts"]
    assert table["kernels"][matvec] == {"op": OPS.index("matmul"),
                                        "consts": [FORMATS.index(plan["kernels"][matvec]["weight_format"]), c["K"],
                                                   c["N"]]}
    for k in plan["kernels"].values():
        del k["consts"]
    with pytest.raises(PackError, match="no consts.*package the bundle again"):
        kernel_table(manifest, plan)


def test_changing_a_tile_in_the_table_changes_the_kernels(monkeypatch):
    """The tile sizes are written once: the rendered WGSL follows the table."""
    from packager.compile import render

    base = render("attention_decode", "f32", {"NH": 4, "NKV": 2, "HD": 64, "SCALE": 0.125, "SOFTCAP": 0.0,
                                                "WINDOW": 512, "SLOTS": 512, "MAX_SPLITS": 4})
    assert "const SPLIT: u32 = 256u;" in base
    monkeypatch.setitem(TEMPLATES["attention_decode"].tiles, "SPLIT", 128)
    text = render("attention_decode", "f32", {"NH": 4, "NKV": 2, "HD": 64, "SCALE": 0.125, "SOFTCAP": 0.0,
                                                "WINDOW": 512, "SLOTS": 512, "MAX_SPLITS": 4})
    assert "const SPLIT: u32 = 128u;" in text

