// Bias fragment (the BIAS placeholder) of a template whose table entry binds no bias: none.
fn bias_of(r: u32) -> f32 { return 0.0; }
