// Bias fragment (the BIAS placeholder) of a template whose table entry binds `bias` (a linear layer's
// bias, f32, one value per row of the bound weight): bias_of(r) is row r's.
@group(0) @binding(3) var<storage, read> bias: array<f32>;

fn bias_of(r: u32) -> f32 { return bias[r]; }
