// Decode attention, split over the KV cache ("flash decoding"), pass 1 of 2: the single
// query row (position past_len) of head h attends to the n = min(past_len + 1, WINDOW)
// positions lo + i, lo = past_len + 1 - n, i in [s * SPLIT, min((s + 1) * SPLIT, n)) for
// split s = workgroup_id.y (position j is cache row j % SLOTS: a ring buffer for a
// sliding-window layer; a full cache has WINDOW = SLOTS = context window; scores soft-capped
// as in attention.wgsl when SOFTCAP > 0), and
// writes the partial result of that split: running max m, sum l = sum_j e^(s_j - m) and
// acc[d] = sum_j e^(s_j - m) v[j, d], all f32. attention_combine merges the splits.
// Splits let long contexts use many workgroups where attention (one workgroup per head)
// would use only NH.
// bindings: 0 uniform, 1 q act[NH, HD], 2 kc act[SLOTS, NKV, HD], 3 vc act[SLOTS, NKV, HD],
//           4 part f32[NH, MAX_SPLITS, HD + 2]
// workgroups: (NH, cdiv(min(past_len + 1, WINDOW), SPLIT), 1)
{{PRELUDE}}
const NH: u32 = {{NH}}u;
const NKV: u32 = {{NKV}}u;
const HD: u32 = {{HD}}u;
const GROUP: u32 = NH / NKV;
const SCALE: f32 = {{SCALE}};
const SOFTCAP: f32 = {{SOFTCAP}};
const WINDOW: u32 = {{WINDOW}}u;
const SLOTS: u32 = {{SLOTS}}u;
const SPLIT: u32 = {{SPLIT}}u;
const MAX_SPLITS: u32 = {{MAX_SPLITS}}u;
const WG: u32 = {{WG}}u;
const DPT: u32 = (HD + WG - 1u) / WG;
const NEG: f32 = -3.0e38;

struct Params { past_len: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<act>;
@group(0) @binding(2) var<storage, read> kc: array<act4>;
@group(0) @binding(3) var<storage, read> vc: array<act>;
@group(0) @binding(4) var<storage, read_write> part: array<f32>;

fn capped(s: f32) -> f32 {
  if (SOFTCAP == 0.0) { return s; }
  let e = exp(-2.0 * abs(s) / SOFTCAP);   // tanh from e^-2|x|, which cannot overflow
  let th = (1.0 - e) / (1.0 + e);
  return select(-th, th, s >= 0.0) * SOFTCAP;
}

var<workgroup> qs: array<vec4<f32>, HD / 4u>;
var<workgroup> pr: array<f32, WG>;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let h = wid.x;
  let split = wid.y;
  let kvh = h / GROUP;
  let n_keys = min(p.past_len + 1u, WINDOW);
  let lo = p.past_len + 1u - n_keys;
  let begin = split * SPLIT;
  let end = min(begin + SPLIT, n_keys);
  for (var d = tid; d < HD / 4u; d += WG) {
    let b = h * HD + 4u * d;
    qs[d] = vec4<f32>(f32(q[b]), f32(q[b + 1u]), f32(q[b + 2u]), f32(q[b + 3u])) * SCALE;
  }
  workgroupBarrier();
  var m = NEG;
  var l = 0.0;
  var acc: array<f32, DPT>;
  for (var t0 = begin; t0 < end; t0 += WG) {
    let j = t0 + tid;
    var s = NEG;
    if (j < end) {
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
    if (j < end) { pj = exp(s - m_new); }
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
    let cnt = min(WG, end - t0);
    for (var e = 0u; e < DPT; e++) {
      let d = tid + e * WG;
      if (d < HD) {
        var a = acc[e] * alpha;
        for (var jj = 0u; jj < cnt; jj++) {
          a += pr[jj] * f32(vc[(((lo + t0 + jj) % SLOTS) * NKV + kvh) * HD + d]);
        }
        acc[e] = a;
      }
    }
    workgroupBarrier();
  }
  let base = (h * MAX_SPLITS + split) * (HD + 2u);
  for (var e = 0u; e < DPT; e++) {
    let d = tid + e * WG;
    if (d < HD) { part[base + d] = acc[e]; }
  }
  if (tid == 0u) {
    part[base + HD] = m;
    part[base + HD + 1u] = l;
  }
}
