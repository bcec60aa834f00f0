//! `cargo bench`: soft against discrete NTM memory access on the default adapter.
//!
//! Environment: `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` pick the adapter; `NTM_BENCH_REPS`
//! (default 7) sets repetitions per row; `NTM_BENCH_FILTER=<substring>` selects ops.

use ntm_kernels::bench::Bench;
use ntm_kernels::Gpu;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo test --benches` runs this with `--bench` absent: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let gpu = Gpu::new()?;
    let reps = std::env::var("NTM_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let filter = std::env::var("NTM_BENCH_FILTER").ok();
    println!("adapter: {}", gpu.adapter());
    let mut bench = Bench::new(&gpu, reps, filter);
    for n in [1024, 4096, 16384, 65536] {
        let shape = (16, 1, n, 64);
        bench.copy_baseline(shape)?;
        bench.soft_ops(shape)?;
    }
    if let Some(c) = bench.clock {
        println!("timing: {c}, median and min of {reps} runs after a warm-up");
    }
    print!("{}", bench.table());
    let (queued, single) = bench.queued_small_ops(1000)?;
    println!(
        "1000 queued small ops: {queued:.1} us per op; one op then submit-and-wait: {single:.1} us ({:.1}x)",
        single / queued
    );
    Ok(())
}
