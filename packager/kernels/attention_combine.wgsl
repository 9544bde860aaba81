// Decode attention, pass 2 of 2: merges the per-split partial results of
// attention_decode for head h = workgroup_id.x:
//   out[h, d] = sum_s e^(m_s - M) acc_s[d] / sum_s e^(m_s - M) l_s,  M = max_s m_s
// over the splits s < cdiv(min(past_len + 1, WINDOW), SPLIT).
// bindings: 0 uniform, 1 part f32[NH, MAX_SPLITS, HD + 2], 2 out act[NH, HD]
// workgroups: (NH, 1, 1)
{{PRELUDE}}
const HD: u32 = {{HD}}u;
const WINDOW: u32 = {{WINDOW}}u;
const SPLIT: u32 = {{SPLIT}}u;
const MAX_SPLITS: u32 = {{MAX_SPLITS}}u;

struct Params { past_len: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<act>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let h = wid.x;
  let n = (min(p.past_len + 1u, WINDOW) + SPLIT - 1u) / SPLIT;
  var mx = -3.0e38;
  for (var s = 0u; s < n; s++) { mx = max(mx, part[(h * MAX_SPLITS + s) * (HD + 2u) + HD]); }
  var l = 0.0;
  for (var s = 0u; s < n; s++) {
    let b = (h * MAX_SPLITS + s) * (HD + 2u);
    l += exp(part[b + HD] - mx) * part[b + HD + 1u];
  }
  for (var d = tid; d < HD; d += {{WG}}u) {
    var a = 0.0;
    for (var s = 0u; s < n; s++) {
      let b = (h * MAX_SPLITS + s) * (HD + 2u);
      a += exp(part[b + HD] - mx) * part[b + d];
    }
    out[h * HD + d] = act(a / l);
  }
}
