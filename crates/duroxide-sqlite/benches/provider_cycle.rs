//! Provider cycle benchmark (placeholder until written).

fn main() {}
