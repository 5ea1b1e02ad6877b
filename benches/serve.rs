//! `cairn serve` benchmarks (filled in below this commit's series).

fn main() {}
