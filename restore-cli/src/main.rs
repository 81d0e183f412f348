//! lifeboat.
fn main() {}
