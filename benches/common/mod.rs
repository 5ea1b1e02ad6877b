//! Small helpers the benchmarks share: settings from the environment and
//! percentile reports.

#![allow(dead_code)]

/// A numeric setting from the environment, else `default`.
pub fn num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

/// The `p` quantile (0..=1) of sorted samples.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Prints one row (milliseconds) and returns its median.
pub fn report(name: &str, mut ms: Vec<f64>) -> f64 {
    ms.sort_by(|a, b| a.total_cmp(b));
    let p50 = pct(&ms, 0.5);
    println!(
        "{name:<28} n={:<5} p50 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms",
        ms.len(),
        p50,
        pct(&ms, 0.99),
        ms[ms.len() - 1]
    );
    p50
}
