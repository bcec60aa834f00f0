//! The bench's code path on tiny shapes: `cargo test` proves the report works (not how fast).
mod common;
use common::*;
#[path = "../benches/report/mod.rs"]
mod report;
use ntm_kernels::DType;
use report::{parse_dtypes, parse_shapes, run, Config, CSV_HEADER};
use std::collections::HashSet;

#[test]
fn the_report_runs_and_writes_csv_and_plot() {
    let g = gpu();
    let dir = std::env::temp_dir().join(format!("ntm-bench-test-{}", std::process::id()));
    let cfg = Config {
        shapes: vec![(1, 1, 64, 8), (2, 2, 300, 8)],
        reps: 2,
        filter: None,
        soft_limit: u64::MAX,
        soft_seconds: f64::INFINITY,
        steps: 100,
        out_dir: Some(dir.clone()),
        progress: false,
        dtypes: vec![DType::F32, DType::F16],
        warm_seconds: report::WARM_SECONDS,
    };
    let report = run(g, &cfg).unwrap();
    for part in [
        "adapter:",
        "speedup of discrete over soft",
        "roofline per shape",
        "a step's bookkeeping",
        "driver GB/s",
        "backprop memory for T = 100",
        "speedup of an f16 memory over f32",
    ] {
        assert!(
            report.text.contains(part),
            "report lacks {part:?}:\n{}",
            report.text
        );
    }

    let csv = std::fs::read_to_string(dir.join("memory_access.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(CSV_HEADER));
    assert_eq!(
        CSV_HEADER,
        "op,access,pass,dtype,batch,heads,slots,width,median_us,min_us,bytes,gbps,roofline_fraction"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(
        rows.len(),
        report.rows.len(),
        "one CSV line per measured row"
    );
    // One row per op, access, pass and dtype at each shape (the copy baseline in f32 only);
    // every field parses.
    let expected: &[(&str, &str, &str)] = &[
        ("copy", "-", "forward"),
        ("content_address", "soft", "forward"),
        ("content_address", "soft", "backward"),
        ("location_address", "soft", "forward"),
        ("location_address", "soft", "backward"),
        ("read", "soft", "forward"),
        ("read", "soft", "backward"),
        ("write", "soft", "forward"),
        ("write", "soft", "backward"),
        ("sample", "discrete", "forward"),
        ("read", "discrete", "forward"),
        ("read", "discrete", "backward"),
        ("write", "discrete", "forward"),
        ("write", "discrete", "backward"),
        ("undo", "discrete", "backward"),
        ("reinforce_grad", "discrete", "backward"),
        ("access", "soft", "forward"),
        ("access", "soft", "backward"),
        ("access", "soft", "both"),
        ("access", "discrete", "forward"),
        ("access", "discrete", "backward"),
        ("access", "discrete", "both"),
        ("step", "soft", "forward"),
        ("step", "soft", "backward"),
        ("step", "soft", "both"),
        ("step", "discrete", "forward"),
        ("step", "discrete", "backward"),
        ("step", "discrete", "both"),
    ];
    for &(b, h, n, w) in &cfg.shapes {
        let key = |r: &Vec<&str>| {
            (
                r[0].to_string(),
                r[1].to_string(),
                r[2].to_string(),
                r[3].to_string(),
            )
        };
        let at: Vec<&Vec<&str>> = rows
            .iter()
            .filter(|r| r[4..8] == [b.to_string(), h.to_string(), n.to_string(), w.to_string()])
            .collect();
        let seen: HashSet<_> = at.iter().map(|r| key(r)).collect();
        assert_eq!(
            seen.len(),
            at.len(),
            "a row is repeated at B={b} H={h} N={n} W={w}"
        );
        for (op, acc, pass) in expected {
            for dt in ["f32", "f16"] {
                if *op == "copy" && dt == "f16" {
                    continue;
                }
                let k = (
                    op.to_string(),
                    acc.to_string(),
                    pass.to_string(),
                    dt.to_string(),
                );
                assert!(
                    seen.contains(&k),
                    "no {op}/{acc}/{pass}/{dt} row at B={b} H={h} N={n} W={w}"
                );
            }
        }
        assert_eq!(
            at.len(),
            2 * expected.len() - 1,
            "unexpected rows at B={b} H={h} N={n} W={w}"
        );
        for r in at {
            assert!(r[3] == "f32" || r[3] == "f16", "dtype of {r:?}");
            for f in &r[8..] {
                let v: f64 = f
                    .parse()
                    .unwrap_or_else(|_| panic!("field {f:?} of {r:?} is not a number"));
                assert!(v.is_finite() && v >= 0.0, "field {f:?} of {r:?}");
            }
            assert!(
                r[8].parse::<f64>().unwrap() > 0.0,
                "median time of {r:?} must be positive"
            );
        }
    }

    let svg = std::fs::read_to_string(dir.join("memory_access.svg")).unwrap();
    for part in [
        "<svg",
        "content_address: time vs N",
        "step: time vs N",
        "backprop memory",
        "memory slots N",
        "median time (us)",
        "soft forward",
        "discrete backward",
        "</svg>",
    ] {
        assert!(svg.contains(part), "plot lacks {part:?}");
    }
    assert_eq!(report.memory.len(), cfg.shapes.len());
    for ((b, _, n, w), soft, disc) in &report.memory {
        assert_eq!(
            *soft,
            cfg.steps * (b * n * w * 4) as u64,
            "soft backprop memory is one snapshot per step"
        );
        assert!(
            disc < soft || *n == 1,
            "undo records should be smaller than snapshots"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bench_dtypes_parse_from_the_environment_format() {
    assert_eq!(parse_dtypes("f32,f16"), Ok(vec![DType::F32, DType::F16]));
    assert_eq!(parse_dtypes(" f16 "), Ok(vec![DType::F16]));
    for bad in ["", "f64", "f32,bf16"] {
        let e = parse_dtypes(bad).unwrap_err();
        assert!(e.contains("NTM_BENCH_DTYPES"), "{bad:?}: {e}");
    }
}

#[test]
fn bench_shapes_parse_from_the_environment_format() {
    assert_eq!(
        parse_shapes("16,1,65536,64; 1,1,1048576,64"),
        Ok(vec![(16, 1, 65536, 64), (1, 1, 1048576, 64)])
    );
    assert_eq!(parse_shapes("2,3,5,7;"), Ok(vec![(2, 3, 5, 7)]));
    for bad in ["", "1,2,3", "1,2,3,x", "0,1,1,1", "1,1,1,1,1"] {
        let e = parse_shapes(bad).unwrap_err();
        assert!(e.contains("NTM_BENCH_SHAPES"), "{bad:?}: {e}");
    }
}
