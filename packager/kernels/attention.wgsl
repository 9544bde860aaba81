// Causal attention with grouped-query heads over the KV cache, for prefill chunks
// (decode uses attention_decode + attention_combine): query row t sits at position
// pos = past_len + t and attends to the positions j in [max(0, pos + 1 - WINDOW), pos]
// (the chunk's own keys are appended first); position j is cache row j % SLOTS (a ring
// buffer for a sliding-window layer; a full cache has WINDOW = SLOTS = context window).
//   out[t, h, :] = softmax_j(cap(SCALE * q[t, h, :] . kc[j, h / GROUP, :])) @ vc[j, h / GROUP, :]
// cap(s) = tanh(s / SOFTCAP) * SOFTCAP (attention-logit soft-capping), or s when SOFTCAP = 0.
// One {{WG}}-thread workgroup per (head, query row): keys go in tiles of {{WG}} (one per
// thread), with an online softmax (running max m and sum l, in f32); thread d
// accumulates output dimensions d, d + {{WG}}, ...
// bindings: 0 uniform, 1 q act[seq, NH, HD], 2 kc act[SLOTS, NKV, HD], 3 vc act[SLOTS, NKV, HD],
//           4 out act[seq, NH, HD]
// workgroups: (NH, seq_len, 1)
{{PRELUDE}}
const NH: u32 = {{NH}}u;
const NKV: u32 = {{NKV}}u;
const HD: u32 = {{HD}}u;
const GROUP: u32 = NH / NKV;
const SCALE: f32 = {{SCALE}};
const SOFTCAP: f32 = {{SOFTCAP}};
const WINDOW: u32 = {{WINDOW}}u;
const SLOTS: u32 = {{SLOTS}}u;
const WG: u32 = {{WG}}u;
const DPT: u32 = (HD + WG - 1u) / WG;   // output dimensions per thread
const NEG: f32 = -3.0e38;

struct Params { seq_len: u32, past_len: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<act>;
@group(0) @binding(2) var<storage, read> kc: array<act4>;
@group(0) @binding(3) var<storage, read> vc: array<act>;
@group(0) @binding(4) var<storage, read_write> out: array<act>;

fn capped(s: f32) -> f32 {
  if (SOFTCAP == 0.0) { return s; }
  let e = exp(-2.0 * abs(s) / SOFTCAP);   // tanh from e^-2|x|, which cannot overflow
  let th = (1.0 - e) / (1.0 + e);
  return select(-th, th, s >= 0.0) * SOFTCAP;
}

var<workgroup> qs: array<vec4<f32>, HD / 4u>;
var<workgroup> pr: array<f32, WG>;    // probabilities of the current key tile
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let h = wid.x;
  let t = wid.y;
  let kvh = h / GROUP;
  let pos = p.past_len + t;
  let lo = select(0u, pos + 1u - WINDOW, pos + 1u > WINDOW);   // first position in the window
  let n_keys = pos + 1u - lo;
  for (var d = tid; d < HD / 4u; d += WG) {
    let b = (t * NH + h) * HD + 4u * d;
    qs[d] = vec4<f32>(f32(q[b]), f32(q[b + 1u]), f32(q[b + 2u]), f32(q[b + 3u])) * SCALE;
  }
  workgroupBarrier();
  var m = NEG;
  var l = 0.0;
  var acc: array<f32, DPT>;
  let n_tiles = (n_keys + WG - 1u) / WG;
  for (var tile = 0u; tile < n_tiles; tile++) {
    let j = tile * WG + tid;
    var s = NEG;
    if (j < n_keys) {
      let kb = (((lo + j) % SLOTS) * NKV + kvh) * (HD / 4u);
      var qk = 0.0;
      for (var d = 0u; d < HD / 4u; d++) { qk += dot(qs[d], vec4<f32>(kc[kb + d])); }
      s = capped(qk);
    }
    red[tid] = s;
    workgroupBarrier();
    for (var st = WG / 2u; st > 0u; st >>= 1u) {
      if (tid < st) { red[tid] = max(red[tid], red[tid + st]); }
      workgroupBarrier();
    }
    let m_new = max(m, red[0]);
    workgroupBarrier();
    var pj = 0.0;
    if (j < n_keys) { pj = exp(s - m_new); }
    pr[tid] = pj;
    red[tid] = pj;
    workgroupBarrier();
    for (var st = WG / 2u; st > 0u; st >>= 1u) {
      if (tid < st) { red[tid] += red[tid + st]; }
      workgroupBarrier();
    }
    let alpha = exp(m - m_new);
    l = l * alpha + red[0];
    m = m_new;
    let cnt = min(WG, n_keys - tile * WG);
    for (var e = 0u; e < DPT; e++) {
      let d = tid + e * WG;
      if (d < HD) {
        var a = acc[e] * alpha;
        for (var jj = 0u; jj < cnt; jj++) {
          a += pr[jj] * f32(vc[(((lo + tile * WG + jj) % SLOTS) * NKV + kvh) * HD + d]);
        }
        acc[e] = a;
      }
    }
    workgroupBarrier();
  }
  for (var e = 0u; e < DPT; e++) {
    let d = tid + e * WG;
    if (d < HD) { out[(t * NH + h) * HD + d] = act(acc[e] / l); }
  }
}
