//! `cargo bench`: soft against discrete NTM memory access on the default adapter. Prints the
//! report and writes `target/ntm-bench/memory_access.csv` and `memory_access.svg`.
//!
//! Environment: `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` pick the adapter; `NTM_BENCH_QUICK=1`
//! runs the reduced sweep; `NTM_BENCH_SHAPES="B,H,N,W;B,H,N,W"` replaces the sweep's shapes;
//! `NTM_BENCH_DTYPES=f32,f16` picks the memory dtypes (default both); `NTM_BENCH_F16_PATH=packed`
//! times the packed f16 kernels on a device that has native f16; `NTM_BENCH_ROW_SUMS=subgroup`
//! or `workgroup` picks how the streaming kernels sum rows (`Gpu::set_row_sums`);
//! `NTM_BENCH_TILES=pow2` or `exact` how the column reductions and the streaming row sums tile
//! a row's V's (`Gpu::set_column_tiles`);
//! `NTM_BENCH_EW_ROWS=<1..8>` the rows per thread of the elementwise kernels
//! (`Gpu::set_elementwise_rows`) and `NTM_BENCH_EW_GROUP=<1..4>` how many of them the
//! head-specialised ones load before storing (`Gpu::set_elementwise_row_group`);
//! `NTM_BENCH_REDUCTION_WG=<n>` the workgroups the reductions aim for
//! (`Gpu::set_reduction_workgroups`); `NTM_BENCH_STREAM_GROUP=<1..4>` the rows the streaming
//! kernels' subgroup loops load before summing any (`Gpu::set_stream_row_group`);
//! `NTM_BENCH_READ_PASSES=<1..2>` the soft read backward's passes over the memory
//! (`Gpu::set_read_backward_passes`); `NTM_BENCH_STREAM_VECS=<1..2>` the V's of a row each
//! thread of the streaming kernels takes (`Gpu::set_stream_vecs_per_thread`);
//! `NTM_BENCH_FILTER=<substring>` selects ops; `NTM_BENCH_REPS`
//! sets repetitions per row; `NTM_BENCH_WARM_MS` the milliseconds of each row's own work run
//! before it is timed (default 50); `NTM_BENCH_SOFT_MIB` caps the memory size of soft rows (default:
//! 256 MiB on CPU adapters such as lavapipe, no cap on GPUs); `NTM_BENCH_SOFT_SECONDS` skips
//! soft rows of a shape projected to take longer (default: 40 s on CPU adapters, 0 = no cap),
//! except in the first (plotted) slice B = 1, H = 1, W = 64.
//!
//! Side by side with PyTorch (`report::peer`): `NTM_BENCH_PEER=<torch.csv>` names the CSV of
//! `../shared/peers/torch_ntm_ops.py` run on the same GPU; its rows are paired with the bench's
//! and the speed targets judged from both (`comparison.txt`, `comparison.csv` and the
//! README-style table `comparison.md` beside the report; without a peer, the targets that
//! need only the bench's rows).
//! `NTM_BENCH_FROM=<memory_access.csv>` compares a stored run instead of measuring: no device;
//! several runs, as a path list (`a.csv:b.csv`), give each row its fastest median.
//!
//! A/B of this crate's own runs (`report::ab`): `NTM_BENCH_BASE=<a.csv:b.csv...>` names the
//! base side's CSVs (another build's or another setting's runs on the same device); this run,
//! or the runs `NTM_BENCH_FROM` names, is the new side. Each row's time is the fastest of its
//! side's medians; the table, the ratios and a summary per kind of row are printed and written
//! to `ab.txt` and `ab.csv` beside the report.

mod report;

use ntm_kernels::Gpu;
use report::{ab, peer, run, Config, Row};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo test` builds and runs bench targets without `--bench`: nothing to do then.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let read =
        |path: &str| std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"));
    let peer_rows = match env("NTM_BENCH_PEER") {
        Some(path) => peer::parse_peer_csv(&read(&path)?)
            .map_err(|e| format!("NTM_BENCH_PEER={path}: {e}"))?,
        None => Vec::new(),
    };
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let out_dir = std::path::Path::new(&target).join("ntm-bench");
    // The runs of a path list of the bench's CSVs.
    let runs = |var: &str, list: &str| -> Result<Vec<Vec<Row>>, String> {
        std::env::split_paths(list)
            .map(|p| {
                let path = p.display().to_string();
                peer::parse_report_csv(&read(&path)?).map_err(|e| format!("{var}={path}: {e}"))
            })
            .collect()
    };
    let base = match env("NTM_BENCH_BASE") {
        Some(list) => Some(runs("NTM_BENCH_BASE", &list)?),
        None => None,
    };
    if let Some(list) = env("NTM_BENCH_FROM") {
        // Stored runs: nothing is measured, no device is opened.
        let from = runs("NTM_BENCH_FROM", &list)?;
        if let Some(base) = &base {
            write_ab(base, &from, &out_dir)?;
        }
        let rows: Vec<Row> = ab::fastest(&from).into_iter().map(|(r, _)| r).collect();
        return write_comparison(&rows, &peer_rows, &out_dir);
    }
    let gpu = Gpu::new()?;
    let mut cfg = if env("NTM_BENCH_QUICK").is_some_and(|v| v != "0") {
        Config::quick()
    } else {
        Config::sweep()
    };
    if let Some(shapes) = env("NTM_BENCH_SHAPES") {
        cfg.shapes = report::parse_shapes(&shapes)?;
    }
    if let Some(d) = env("NTM_BENCH_DTYPES") {
        cfg.dtypes = report::parse_dtypes(&d)?;
    }
    cfg.filter = env("NTM_BENCH_FILTER");
    if let Some(r) = env("NTM_BENCH_REPS").and_then(|v| v.parse().ok()) {
        cfg.reps = r;
    }
    if let Some(ms) = env("NTM_BENCH_WARM_MS").and_then(|v| v.parse::<f64>().ok()) {
        cfg.warm_seconds = ms / 1e3;
    }
    let cpu = gpu.adapter().is_cpu;
    cfg.soft_limit = match env("NTM_BENCH_SOFT_MIB").and_then(|v| v.parse::<u64>().ok()) {
        Some(mib) => mib << 20,
        None if cpu => 256 << 20,
        None => u64::MAX,
    };
    cfg.soft_seconds = match env("NTM_BENCH_SOFT_SECONDS").and_then(|v| v.parse::<f64>().ok()) {
        Some(secs) if secs > 0.0 => secs,
        Some(_) => f64::INFINITY,
        None if cpu => 40.0,
        None => f64::INFINITY,
    };
    cfg.out_dir = Some(out_dir.clone());
    cfg.progress = true;
    let started = std::time::Instant::now();
    if env("NTM_BENCH_F16_PATH").as_deref() == Some("packed") {
        gpu.set_f16_path(ntm_kernels::F16Path::Packed)?;
    }
    println!("f16 kernels: {:?}", gpu.f16_path());
    match env("NTM_BENCH_TILES").as_deref() {
        Some("pow2") => gpu.set_column_tiles(ntm_kernels::ColumnTiles::PowerOfTwo),
        Some("exact") => gpu.set_column_tiles(ntm_kernels::ColumnTiles::Exact),
        Some(other) => return Err(format!("NTM_BENCH_TILES={other}: exact or pow2").into()),
        None => {}
    }
    match env("NTM_BENCH_ROW_SUMS").as_deref() {
        Some("subgroup") => gpu.set_row_sums(ntm_kernels::RowSums::Subgroup)?,
        Some("workgroup") => gpu.set_row_sums(ntm_kernels::RowSums::Workgroup)?,
        Some(other) => {
            return Err(format!("NTM_BENCH_ROW_SUMS={other}: subgroup or workgroup").into())
        }
        None => {}
    }
    // The count settings: each variable, when set, passes its count to its setter.
    type Setter = fn(&Gpu, u32) -> ntm_kernels::Result<()>;
    let settings: [(&str, &str, Setter); 6] = [
        ("NTM_BENCH_EW_ROWS", "rows", Gpu::set_elementwise_rows),
        ("NTM_BENCH_EW_GROUP", "rows", Gpu::set_elementwise_row_group),
        ("NTM_BENCH_STREAM_GROUP", "rows", Gpu::set_stream_row_group),
        (
            "NTM_BENCH_READ_PASSES",
            "passes",
            Gpu::set_read_backward_passes,
        ),
        (
            "NTM_BENCH_REDUCTION_WG",
            "workgroups",
            Gpu::set_reduction_workgroups,
        ),
        (
            "NTM_BENCH_STREAM_VECS",
            "V's per thread",
            Gpu::set_stream_vecs_per_thread,
        ),
    ];
    for (var, what, set) in settings {
        if let Some(v) = env(var) {
            let n = v
                .parse()
                .map_err(|_| format!("{var}={v}: a count of {what}"))?;
            set(&gpu, n)?;
        }
    }
    println!(
        "elementwise rows per thread: {}, loaded {} at a time",
        gpu.elementwise_rows(),
        gpu.elementwise_row_group()
    );
    println!(
        "reductions over slots aim for {} workgroups",
        gpu.reduction_workgroups()
    );
    println!(
        "column tiles: {:?}; streaming row sums: {:?}, {} V's per thread where summed in workgroup memory, subgroup loops load {} rows at a time; soft read backward in {} pass(es)",
        gpu.column_tiles(),
        gpu.row_sums(),
        gpu.stream_vecs_per_thread(),
        gpu.stream_row_group(),
        gpu.read_backward_passes()
    );
    let report = run(&gpu, &cfg)?;
    print!("{}", report.text);
    let bench = report::Bench::new(&gpu, 1, None);
    let (queued, single) = bench.queued_small_ops(1000)?;
    println!(
        "\n1000 queued small ops (soft_read, B=1 N=64 W=16): {queued:.1} us per op; one op then submit-and-wait: {single:.1} us ({:.1}x)",
        single / queued
    );
    println!(
        "wrote {}/memory_access.csv and memory_access.svg in {:.0} s\n",
        out_dir.display(),
        started.elapsed().as_secs_f64()
    );
    if let Some(base) = &base {
        write_ab(base, std::slice::from_ref(&report.rows), &out_dir)?;
    }
    write_comparison(&report.rows, &peer_rows, &out_dir)
}

/// Prints the A/B of the `base` runs against the `new` ones, and writes it into `dir`.
fn write_ab(
    base: &[Vec<Row>],
    new: &[Vec<Row>],
    dir: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let cmp = ab::compare_runs(base, new);
    println!("{}", cmp.text);
    write_files(dir, &[("ab.txt", &cmp.text), ("ab.csv", &cmp.csv)])?;
    println!();
    Ok(())
}

/// Writes each (name, contents) into `dir` (made if missing), then says so.
fn write_files(dir: &std::path::Path, files: &[(&str, &str)]) -> Result<(), String> {
    let io = |e: std::io::Error| format!("writing {}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(io)?;
    for (name, contents) in files {
        std::fs::write(dir.join(name), contents).map_err(io)?;
    }
    let names: Vec<&str> = files.iter().map(|f| f.0).collect();
    println!("wrote {}/{}", dir.display(), names.join(", "));
    Ok(())
}

/// Prints the rows beside PyTorch's and the speed targets, and writes them into `dir`.
fn write_comparison(
    rows: &[report::Row],
    peer_rows: &[peer::PeerRow],
    dir: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let cmp = peer::compare(rows, peer_rows);
    print!("{}", cmp.text);
    write_files(
        dir,
        &[
            ("comparison.txt", &cmp.text),
            ("comparison.csv", &cmp.csv),
            ("comparison.md", &cmp.markdown),
        ],
    )?;
    Ok(())
}
