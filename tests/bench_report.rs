//! The bench's code path on tiny shapes: `cargo test` proves the report works (not how fast).
mod common;
use common::*;
#[path = "../benches/report/mod.rs"]
mod report;
use ntm_kernels::DType;
use report::ab::{compare_runs, fastest, AB_CSV_HEADER};
use report::peer::{
    compare, parse_peer_csv, parse_report_csv, Kind, Peer, PEER_CSV_HEADER, VS_CSV_HEADER,
};
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
    // The comparison reads the CSV back into the same rows.
    let parsed = parse_report_csv(&csv).unwrap();
    assert_eq!(parsed.len(), report.rows.len());
    for (p, r) in parsed.iter().zip(&report.rows) {
        assert_eq!(p.csv(), r.csv(), "the CSV round trip changed a row");
    }
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

/// A bench CSV line: (op, access, pass, dtype), shape, median, roofline fraction.
fn bench_line(
    key: (&str, &str, &str, &str),
    s: (usize, usize, usize, usize),
    med: f64,
    rf: f64,
) -> String {
    let (op, acc, pass, dt) = key;
    let (b, h, n, w) = s;
    format!("{op},{acc},{pass},{dt},{b},{h},{n},{w},{med},{med},1,1.0,{rf}\n")
}

fn peer_line(
    peer: &str,
    op: &str,
    pass: &str,
    s: (usize, usize, usize, usize),
    med: f64,
) -> String {
    let (b, h, n, w) = s;
    format!("{peer},{op},{pass},{b},{h},{n},{w},{med},{med}\n")
}

#[test]
fn the_peer_comparison_pairs_rows_and_judges_each_target() {
    // Two shapes of the same 256 MiB, made to meet some targets and miss others.
    let s1 = (16, 1, 65536, 64);
    let s2 = (1, 1, 1048576, 64);
    let mut ours = format!("{CSV_HEADER}\n");
    for (s, read_fwd, access_disc) in [(s1, 60.0, 9.0), (s2, 90.0, 12.0)] {
        for (key, med, rf) in [
            (("copy", "-", "forward", "f32"), 100.0, 1.0),
            (("content_address", "soft", "forward", "f32"), 200.0, 0.5),
            (("content_address", "soft", "backward", "f32"), 400.0, 0.4),
            (("read", "soft", "forward", "f32"), read_fwd, 0.85),
            (("read", "soft", "backward", "f32"), 100.0, 0.65),
            (("write", "soft", "forward", "f32"), 120.0, 0.9),
            (("write", "soft", "backward", "f32"), 200.0, 0.62),
            (("location_address", "soft", "forward", "f32"), 30.0, 0.0),
            (("location_address", "soft", "backward", "f32"), 80.0, 0.0),
            (("access", "discrete", "both", "f32"), access_disc, 0.0),
            (("read", "soft", "forward", "f16"), 30.0, 0.85),
            (("content_address", "soft", "forward", "f16"), 150.0, 0.3),
            (("write", "soft", "forward", "f16"), 60.0, 0.9),
        ] {
            ours.push_str(&bench_line(key, s, med, rf));
        }
    }
    let rows = parse_report_csv(&ours).unwrap();
    let mut theirs = format!("{PEER_CSV_HEADER}\n");
    let (eager, compile, fwd, fb) = (
        "torch-eager",
        "torch-compile",
        "forward",
        "forward+backward",
    );
    for (peer, op, pass, s, med) in [
        (eager, "copy", fwd, s1, 95.0),
        (eager, "copy", fwd, s2, 80.0),
        (eager, "content_address", fwd, s1, 700.0),
        (eager, "content_address", fwd, s2, 590.0),
        (eager, "content_address", fb, s1, 2000.0),
        (eager, "soft_read", fwd, s1, 100.0),
        (eager, "soft_read", fwd, s2, 85.0),
        (eager, "location_address", fb, s2, 1000.0),
        (compile, "soft_write", fwd, s1, 110.0),
        (compile, "soft_read", fwd, s1, 200.0),
        ("torch-eager-f16", "soft_read", fwd, s1, 50.0),
        // no counterpart: left out
        (eager, "discrete_write_functional", fwd, s1, 50.0),
    ] {
        theirs.push_str(&peer_line(peer, op, pass, s, med));
    }
    let peer = parse_peer_csv(&theirs).unwrap();
    assert_eq!(peer.len(), 12);
    assert_eq!(
        (peer[8].peer, peer[8].dtype.as_str()),
        (Peer::Compile, "f32")
    );
    assert_eq!(
        (peer[10].peer, peer[10].dtype.as_str()),
        (Peer::Eager, "f16")
    );

    let cmp = compare(&rows, &peer);
    let line = |label: &str, pass: &str, dtype: &str, s| {
        cmp.lines
            .iter()
            .find(|l| l.label == label && l.pass == pass && l.dtype == dtype && l.shape == s)
            .unwrap_or_else(|| panic!("no {label} {pass} {dtype} line at {s:?}"))
    };
    // f+b is this crate's forward plus backward medians.
    let ca = line("content_address", "f+b", "f32", s1);
    assert_eq!(
        (ca.ours_us, ca.eager_us, ca.compile_us),
        (600.0, Some(2000.0), None)
    );
    assert_eq!(ca.memory_bytes, 256 << 20);
    assert_eq!(ca.kind, Kind::SoftMemory);
    let loc = line("location_address", "f+b", "f32", s2);
    assert_eq!((loc.ours_us, loc.eager_us), (110.0, Some(1000.0)));
    let r16 = line("soft read", "forward", "f16", s1);
    assert_eq!(
        (r16.ours_us, r16.eager_us, r16.memory_bytes),
        (30.0, Some(50.0), 128 << 20)
    );
    // The bench times the copy (the roofline) in f32 only; rows lacking a part are not paired.
    assert!(!cmp
        .lines
        .iter()
        .any(|l| l.label == "copy" && l.dtype == "f16"));
    assert!(!cmp.lines.iter().any(|l| l.label == "soft access"));

    let target = |start: &str| {
        cmp.targets
            .iter()
            .find(|t| t.name.starts_with(start))
            .unwrap_or_else(|| panic!("no target {start:?}: {:?}", cmp.targets))
    };
    let expect = |start: &str, met: Option<bool>, parts: &[&str]| {
        let t = target(start);
        assert_eq!(t.met, met, "{start}: {}", t.detail);
        for p in parts {
            assert!(t.detail.contains(p), "{start}: {p:?} not in {:?}", t.detail);
        }
    };
    expect(
        "roofline >= 90%",
        Some(false),
        &[
            "1 of 2 met",
            "missed: 80% at B=1",
            "closest met: 95% at B=16",
        ],
    );
    expect(
        "soft forward ops >= 80%",
        Some(false),
        &["4 of 6 met", "content_address 50% at B=16"],
    );
    expect(
        "backward passes >= 60%",
        Some(false),
        &["4 of 6 met", "content_address 40%"],
    );
    expect(
        "every soft op (forward, f+b) faster than torch eager",
        Some(false),
        &[
            "5 of 6 met",
            "missed: soft read forward at B=1 H=1 N=1048576 W=64 0.94x (90.0 / 85.0 us)",
        ],
    );
    expect(
        "soft ops faster than torch.compile",
        Some(false),
        &["1 of 2 met", "missed: soft write forward at B=16", "0.92x"],
    );
    expect(
        "content addressing forward >= 3x",
        Some(false),
        &["1 of 2 met", "missed: 2.95x (200 / 590 us) at B=1"],
    );
    expect(
        "discrete access",
        Some(false),
        &[
            "1 of 2 met",
            "missed: 12.0 us at B=1",
            "closest met: 9.0 us at B=16",
        ],
    );
    expect("the same bytes", Some(false), &["missed: read soft forward at H=1 W=64 1.50x (90.0 us at B=1 N=1048576, 60.0 us at B=16 N=65536)"]);
    expect(
        "soft read and write forward >= 50%",
        Some(true),
        &["2 of 2 met"],
    );
    expect(
        "soft forward ops with an f16 memory",
        Some(false),
        &["4 of 6 met", "missed: content_address 1.33x"],
    );

    // The CSV: one line per paired row, peers' times over ours.
    let mut csv = cmp.csv.lines();
    assert_eq!(csv.next(), Some(VS_CSV_HEADER));
    assert_eq!(csv.count(), cmp.lines.len());
    assert!(
        cmp.csv
            .contains("\nsoft_read,forward,f32,1,1,1048576,64,90.000,85.000,,0.9444,\n"),
        "{}",
        cmp.csv
    );
    assert!(cmp.text.contains("[MISSED] every soft op"), "{}", cmp.text);

    // Without a peer: the targets that need it say so, the others are judged.
    let alone = compare(&rows, &[]);
    assert!(
        alone.text.contains("no PyTorch rows paired"),
        "{}",
        alone.text
    );
    let t = alone
        .targets
        .iter()
        .find(|t| t.name.starts_with("roofline"))
        .unwrap();
    assert_eq!(t.met, None);
    assert!(t.detail.contains("NTM_BENCH_PEER"), "{}", t.detail);
    assert_eq!(alone.targets.iter().filter(|t| t.met.is_some()).count(), 6);
}

/// A bench CSV row: its key (op, access, pass, dtype), shape and median.
type CsvLine<'a> = (
    (&'a str, &'a str, &'a str, &'a str),
    (usize, usize, usize, usize),
    f64,
);

/// A bench CSV of `lines`.
fn bench_csv(lines: &[CsvLine]) -> String {
    let mut csv = format!("{CSV_HEADER}\n");
    for &(key, s, med) in lines {
        csv.push_str(&bench_line(key, s, med, 0.5));
    }
    csv
}

#[test]
fn the_ab_takes_each_sides_fastest_median_and_lists_the_slower_rows() {
    let s = (1, 1, 4096, 64);
    let copy = ("copy", "-", "forward", "f32");
    let read = ("read", "soft", "forward", "f32");
    let write = ("write", "soft", "forward", "f32");
    let disc = ("read", "discrete", "forward", "f32");
    let read16 = ("read", "soft", "forward", "f16");
    fn parse(lines: &[CsvLine]) -> Vec<report::Row> {
        parse_report_csv(&bench_csv(lines)).unwrap()
    }
    // Two base runs: each row's base time is the faster of the two medians.
    let base = vec![
        parse(&[
            (copy, s, 100.0),
            (read, s, 90.0),
            (write, s, 50.0),
            (disc, s, 10.0),
        ]),
        parse(&[
            (copy, s, 110.0),
            (read, s, 60.0),
            (write, s, 55.0),
            (read16, s, 40.0),
        ]),
    ];
    let merged = fastest(&base);
    let got: Vec<(String, &str, &str, f64, usize)> = merged
        .iter()
        .map(|(r, n)| (r.op.clone(), r.access, r.dtype, r.median_us, *n))
        .collect();
    assert_eq!(
        got,
        vec![
            ("copy".into(), "-", "f32", 100.0, 2),
            ("read".into(), "soft", "f32", 60.0, 2),
            ("write".into(), "soft", "f32", 50.0, 2),
            ("read".into(), "discrete", "f32", 10.0, 1),
            ("read".into(), "soft", "f16", 40.0, 1),
        ],
        "first-seen order, fastest medians, runs counted"
    );
    // One new run: the read 2x faster, the write 0.5x, the copy (the control) 1.25x; a row
    // at another shape has no base.
    let new = vec![parse(&[
        (copy, s, 80.0),
        (read, s, 30.0),
        (write, s, 100.0),
        (disc, s, 10.2),
        (read, (2, 1, 4096, 64), 30.0),
    ])];
    let ab = compare_runs(&base, &new);
    let ratios: Vec<(String, &str, f64)> = ab
        .lines
        .iter()
        .map(|l| (l.row.op.clone(), l.row.access, l.ratio()))
        .collect();
    assert_eq!(
        ratios,
        vec![
            ("copy".into(), "-", 1.25),
            ("read".into(), "soft", 2.0),
            ("write".into(), "soft", 0.5),
            ("read".into(), "discrete", 10.0 / 10.2),
        ]
    );
    assert_eq!(
        (ab.only_base, ab.only_new),
        (1, 1),
        "the f16 read; the B = 2 read"
    );
    assert_eq!(ab.lines[1].base_runs, 2);
    assert_eq!(ab.lines[1].new_runs, 1);
    let t = &ab.text;
    assert!(t.contains("2 base, 1 new"), "{t}");
    assert_eq!(
        t.lines().nth(3).unwrap(),
        "read             soft     forward  f32     1  1     4096   64         60.0         30.0   2.00x",
        "the report's columns: {t}"
    );
    assert!(t.lines().nth(1).unwrap().starts_with(report::KEY_COLUMNS));
    assert!(
        t.contains("copy (the control: the same kernel on both sides): median 1.25x over 1 rows"),
        "{t}"
    );
    assert!(
        t.contains(
            "soft: median 1.25x over 2 rows (0.50-2.00x); 1 faster than 1.05x; slower than 0.95x"
        ),
        "{t}"
    );
    assert!(
        t.contains("0.50x  soft write forward at B=1 H=1 N=4096 W=64 (50.0 -> 100.0 us)"),
        "{t}"
    );
    // 0.98x is within the listing's bound: counted, not listed.
    assert!(
        t.contains("discrete: median 0.98x over 1 rows (0.98-0.98x); 0 faster than 1.05x, none slower than 0.95x"),
        "{t}"
    );
    assert!(!t.contains("other:"), "no other rows: {t}");
    assert!(
        t.contains("not paired: 1 rows only in the base runs, 1 only in the new"),
        "{t}"
    );
    let csv: Vec<&str> = ab.csv.lines().collect();
    assert_eq!(csv[0], AB_CSV_HEADER);
    assert_eq!(csv.len(), 1 + 4);
    assert_eq!(
        csv[2],
        "read,soft,forward,f32,1,1,4096,64,60.000,30.000,2.0000,2,1"
    );
    // No common row: said, not an empty summary.
    let ab = compare_runs(&base, &[parse(&[(read, (3, 1, 8, 4), 1.0)])]);
    assert!(ab.lines.is_empty());
    assert!(
        ab.text.contains("no row timed on both sides"),
        "{}",
        ab.text
    );
}

#[test]
fn the_comparison_refuses_malformed_csv() {
    let h = PEER_CSV_HEADER;
    for (bad, says) in [
        ("op,pass\n".to_string(), "starts with"),
        (
            format!("{h}\npytorch-eager,copy,forward,1,1,1,1,1,1\n"),
            "line 2: unknown peer",
        ),
        (
            format!("{h}\ntorch-jit,copy,forward,1,1,1,1,1,1\n"),
            "line 2: unknown peer",
        ),
        (
            format!("{h}\ntorch-eager,copy,backward,1,1,1,1,1,1\n"),
            "line 2: pass",
        ),
        (
            format!("{h}\ntorch-eager,copy,forward,1,1,x,1,1,1\n"),
            "line 2: slots",
        ),
        (
            format!("{h}\n\ntorch-eager,copy,forward,1,1,1,1\n"),
            "line 3: 7 fields",
        ),
    ] {
        let e = parse_peer_csv(&bad).unwrap_err();
        assert!(e.contains(says), "{bad:?}: {e}");
    }
    let h = CSV_HEADER;
    for (bad, says) in [
        (format!("{}\n", &h[3..]), "starts with"),
        (
            format!("{h}\nread,dense,forward,f32,1,1,1,1,1,1,1,1,1\n"),
            "line 2: access",
        ),
        (
            format!("{h}\nread,soft,both2,f32,1,1,1,1,1,1,1,1,1\n"),
            "line 2: pass",
        ),
        (
            format!("{h}\nread,soft,forward,bf16,1,1,1,1,1,1,1,1,1\n"),
            "line 2: dtype",
        ),
        (
            format!("{h}\nread,soft,forward,f32,1,1,1,1,1,1,1,1\n"),
            "line 2: 12 fields",
        ),
        (
            format!("{h}\nread,soft,forward,f32,1,1,1,1,fast,1,1,1,1\n"),
            "line 2: median_us",
        ),
    ] {
        let e = parse_report_csv(&bad).unwrap_err();
        assert!(e.contains(says), "{bad:?}: {e}");
    }
}

/// The stored H200 run (docs/h200.csv, docs/h200-torch.csv: the README's H200 tables) gives
/// the verdicts the README states.
#[test]
fn the_stored_h200_run_gives_the_readme_verdicts() {
    let read = |f: &str| repo_text(&format!("docs/{f}"));
    let readme = repo_text("README.md");
    let cmp = compare(
        &parse_report_csv(&read("h200.csv")).unwrap(),
        &parse_peer_csv(&read("h200-torch.csv")).unwrap(),
    );
    let detail = |start: &str| {
        let t = cmp
            .targets
            .iter()
            .find(|t| t.name.starts_with(start))
            .unwrap();
        (t.met, t.detail.clone())
    };
    let (met, d) = detail("roofline >= 90%");
    assert_eq!(met, Some(true), "{d}");
    assert!(
        d.contains("closest met: 93% at B=16 H=1 N=262144 W=64"),
        "{d}"
    );
    let (met, d) = detail("every soft op (forward, f+b) faster than torch eager");
    assert_eq!(met, Some(false));
    assert!(d.starts_with("39 of 40 met; missed: soft read forward at B=1 H=1 N=1048576 W=64 0.91x (91.5 / 83.6 us)"), "{d}");
    let (_, d) = detail("soft ops faster than torch.compile");
    assert!(d.starts_with("19 of 23 met"), "{d}");
    assert_eq!(
        d.matches("soft write").count(),
        5,
        "four missed and the closest met: {d}"
    );
    let (met, d) = detail("content addressing forward >= 3x");
    assert_eq!(met, Some(true));
    assert!(
        d.contains("3.49x (211 / 735 us) at B=16 H=1 N=65536 W=64"),
        "{d}"
    );
    let (met, d) = detail("the same bytes");
    assert_eq!(met, Some(true), "{d}");
    let (met, d) = detail("discrete access");
    assert_eq!(met, Some(false));
    assert!(d.starts_with("0 of 5 met"), "{d}");
    // The README's H200 table is this table, line for line.
    assert_eq!(cmp.markdown.lines().count(), 2 + 15, "{}", cmp.markdown);
    for line in cmp.markdown.lines() {
        assert!(
            readme.contains(line),
            "README lacks the table line {line:?}"
        );
    }
}

/// A repository file. Cargo runs tests in the package root; a copied test binary finds the
/// repository's files where it runs, or else where it was built.
fn repo_text(rel: &str) -> String {
    let local = std::path::Path::new(rel).to_path_buf();
    let path = if local.exists() {
        local
    } else {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
    };
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `benches/gpu_run.sh` sets only variables the bench or the crate reads (a renamed variable
/// would leave a GPU run's A/B comparing a setting with itself), and each of its default
/// settings has its runs' variables.
#[test]
fn the_gpu_run_script_sets_only_variables_that_are_read() {
    let script = repo_text("benches/gpu_run.sh");
    let readers = [
        repo_text("benches/memory_access.rs"),
        repo_text("benches/report/mod.rs"),
        repo_text("src/runtime/profile.rs"),
        repo_text("src/runtime/mod.rs"),
    ];
    let mut vars = HashSet::new();
    for prefix in ["NTM_BENCH_", "NTM_PROFILE_"] {
        for (at, _) in script.match_indices(prefix) {
            let name: String = script[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            vars.insert(name);
        }
    }
    assert!(vars.len() >= 10, "found only {vars:?}");
    for v in &vars {
        let quoted = format!("\"{v}\"");
        assert!(
            readers.iter().any(|r| r.contains(&quoted)),
            "gpu_run.sh sets {v}, which nothing reads"
        );
    }
    let defaults = script
        .lines()
        .find_map(|l| l.strip_prefix("SETTINGS=${SETTINGS:-"))
        .expect("the default SETTINGS line")
        .trim_end_matches('}');
    let settings: Vec<&str> = defaults.split_whitespace().collect();
    assert!(settings.len() >= 5, "{settings:?}");
    for s in settings {
        assert!(
            script.contains(&format!("    {s}) echo \"NTM_")),
            "setting {s} has no run variables in gpu_run.sh"
        );
    }
}
