// KV-cache append: kc[(dst + i) % CACHE] = k[i], vc[(dst + i) % CACHE] = v[i] for i < n
// (n = seq_len * NKV * HD, dst = (past_len % rows) * NKV * HD; cache layout [rows, NKV, HD],
// CACHE = rows * NKV * HD elements: a ring buffer wraps around, a full cache never does).
// bindings: 0 uniform, 1 k act[], 2 v act[], 3 kc act[], 4 vc act[]
// workgroups: grid over n threads (x, y; {{WG}} per workgroup)
{{PRELUDE}}
const CACHE: u32 = {{CACHE}}u;
struct Params { n: u32, dst: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> k: array<act>;
@group(0) @binding(2) var<storage, read> v: array<act>;
@group(0) @binding(3) var<storage, read_write> kc: array<act>;
@group(0) @binding(4) var<storage, read_write> vc: array<act>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
  let i = (wid.y * nwg.x + wid.x) * {{WG}}u + tid;
  if (i >= p.n) { return; }
  let j = (p.dst + i) % CACHE;
  kc[j] = k[i];
  vc[j] = v[i];
}
