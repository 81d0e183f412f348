//! lifeboatd.
fn main() {}
