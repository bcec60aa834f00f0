//! Side by side with PyTorch, and the speed targets judged from the measurements.
//!
//! [`compare`] pairs the bench's rows with the PyTorch peer's (`../shared/peers/torch_ntm_ops.py
//! --csv`, run on the same GPU in the same session) and judges issue 8's speed targets (and
//! issue 9's f16 one) from both: every verdict comes from the two CSVs, so a README table is
//! regenerated, not counted by hand. Without peer rows the targets that need only the bench's
//! rows are still judged (roofline fractions, discrete access, same bytes, f16), the others
//! say "not measured".
//!
//! The pairs (this crate's rows on the right; "f+b" is the sum of the forward and backward
//! medians, the peer's autograd forward+backward on the left):
//! - `copy` ↔ `copy` (the roofline row: the faster of the driver's copy and the copy kernel);
//! - `content_address`, `soft_read`, `soft_write`, `location_address`, forward and
//!   forward+backward ↔ the soft `content_address`, `read`, `write`, `location_address` rows;
//! - `memory_access_soft` forward+backward ↔ `access`/soft/`both`;
//! - `discrete_read` forward, `discrete_read_sparse` forward+backward ↔ `read`/discrete;
//!   `discrete_write` forward, `discrete_write_sparse` forward+backward ↔ `write`/discrete;
//!   `memory_access_discrete_sparse` forward+backward ↔ `access`/discrete/`both` (the sparse
//!   rows are the peer's mirror of this crate's API: dM turned in place in O(B·H·W)).
//!
//! The peer's dense-autograd discrete rows (`discrete_read` and `discrete_write_functional`
//! forward+backward, `memory_access_discrete`) have no counterpart and are left out.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Row, Shape4, CSV_HEADER};

/// The header of the PyTorch peer's CSV.
pub const PEER_CSV_HEADER: &str = "peer,op,pass,batch,heads,slots,width,median_us,min_us";

/// The CSV header of [`Comparison::csv`]: each paired row's medians and the peers' times over
/// this crate's (above 1: this crate is faster).
pub const VS_CSV_HEADER: &str =
    "op,pass,dtype,batch,heads,slots,width,ours_us,eager_us,compile_us,eager_over_ours,compile_over_ours";

/// Which PyTorch the peer row timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// Plain PyTorch (`torch-eager`).
    Eager,
    /// `torch.compile` of the same functions (`torch-compile`).
    Compile,
}

/// One row of the PyTorch peer's CSV.
#[derive(Clone, Debug)]
pub struct PeerRow {
    /// Eager or compiled.
    pub peer: Peer,
    /// The tensors' dtype: `f32`, or the peer name's suffix (`torch-eager-f16`: `f16`).
    pub dtype: String,
    /// The peer's op name (`soft_read`, `memory_access_soft`, ...).
    pub op: String,
    /// `forward` or `forward+backward`.
    pub pass: String,
    /// (B, H, N, W).
    pub shape: Shape4,
    /// Median, microseconds.
    pub median_us: f64,
    /// Fastest, microseconds.
    pub min_us: f64,
}

fn field<T: std::str::FromStr>(line: usize, name: &str, v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("line {line}: {name} {v:?} is not a number"))
}

/// The records of a CSV that must start with `header` (blank lines skipped): each line's
/// number and its `header`'s count of fields.
fn records<'a>(
    text: &'a str,
    header: &str,
    what: &str,
) -> Result<Vec<(usize, Vec<&'a str>)>, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    match lines.next() {
        Some((_, h)) if h.trim() == header => {}
        other => {
            return Err(format!(
                "{what} starts with {header:?}, not {:?}",
                other.map_or("", |(_, h)| h)
            ))
        }
    }
    let n = header.split(',').count();
    lines
        .map(|(i, l)| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            if f.len() == n {
                Ok((i + 1, f))
            } else {
                Err(format!(
                    "line {}: {} fields, not {n}: {l:?}",
                    i + 1,
                    f.len()
                ))
            }
        })
        .collect()
}

/// Parses the PyTorch peer's CSV ([`PEER_CSV_HEADER`]).
pub fn parse_peer_csv(text: &str) -> Result<Vec<PeerRow>, String> {
    let mut out = Vec::new();
    for (line, f) in records(text, PEER_CSV_HEADER, "the PyTorch peer's CSV")? {
        let unknown = || {
            format!(
                "line {line}: unknown peer {:?} (torch-eager or torch-compile, -<dtype> optional)",
                f[0]
            )
        };
        let rest = f[0].strip_prefix("torch-").ok_or_else(unknown)?;
        let (kind, dtype) = rest.split_once('-').unwrap_or((rest, "f32"));
        let peer = match kind {
            "eager" => Peer::Eager,
            "compile" => Peer::Compile,
            _ => return Err(unknown()),
        };
        if f[2] != "forward" && f[2] != "forward+backward" {
            return Err(format!(
                "line {line}: pass {:?} is not forward or forward+backward",
                f[2]
            ));
        }
        out.push(PeerRow {
            peer,
            dtype: dtype.to_string(),
            op: f[1].to_string(),
            pass: f[2].to_string(),
            shape: (
                field(line, "batch", f[3])?,
                field(line, "heads", f[4])?,
                field(line, "slots", f[5])?,
                field(line, "width", f[6])?,
            ),
            median_us: field(line, "median_us", f[7])?,
            min_us: field(line, "min_us", f[8])?,
        });
    }
    Ok(out)
}

/// Parses the bench's CSV ([`CSV_HEADER`]) back into rows, to compare a stored run.
pub fn parse_report_csv(text: &str) -> Result<Vec<Row>, String> {
    let mut out = Vec::new();
    for (line, f) in records(text, CSV_HEADER, "the bench's CSV")? {
        let access = match f[1] {
            "soft" => "soft",
            "discrete" => "discrete",
            "-" => "-",
            other => {
                return Err(format!(
                    "line {line}: access {other:?} is not soft, discrete or -"
                ))
            }
        };
        let pass = match f[2] {
            "forward" => "forward",
            "backward" => "backward",
            "both" => "both",
            other => {
                return Err(format!(
                    "line {line}: pass {other:?} is not forward, backward or both"
                ))
            }
        };
        let dtype = match f[3] {
            "f32" => "f32",
            "f16" => "f16",
            other => return Err(format!("line {line}: dtype {other:?} is not f32 or f16")),
        };
        out.push(Row {
            op: f[0].to_string(),
            access,
            pass,
            dtype,
            batch: field(line, "batch", f[4])?,
            heads: field(line, "heads", f[5])?,
            slots: field(line, "slots", f[6])?,
            width: field(line, "width", f[7])?,
            median_us: field(line, "median_us", f[8])?,
            min_us: field(line, "min_us", f[9])?,
            bytes: field(line, "bytes", f[10])?,
            gbps: field(line, "gbps", f[11])?,
            roofline_fraction: field(line, "roofline_fraction", f[12])?,
        });
    }
    Ok(out)
}

/// What a pair is, for the targets that take some of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The roofline against `copy_`.
    Copy,
    /// A soft op that moves the memory (content addressing, the soft read and write).
    SoftMemory,
    /// Location addressing (soft: O(B·H·N), not the memory).
    Location,
    /// The soft read and write together.
    SoftAccess,
    /// Discrete reads, writes and their access.
    Discrete,
}

/// An op of this crate (`op`, `access`) and the peer's ops for its forward and its
/// forward+backward, where the peer times them.
struct Pairing {
    label: &'static str,
    kind: Kind,
    ours: (&'static str, &'static str),
    forward: Option<&'static str>,
    fb: Option<&'static str>,
}

impl Pairing {
    /// The rows (op, access, pass) whose medians sum to the forward+backward time: the
    /// accesses have a timed `both` row of their own, the other ops a forward and a backward.
    fn fb_rows(&self) -> Vec<(&'static str, &'static str, &'static str)> {
        let (op, acc) = self.ours;
        if op == "access" {
            vec![(op, acc, "both")]
        } else {
            vec![(op, acc, "forward"), (op, acc, "backward")]
        }
    }
}

#[rustfmt::skip]
const PAIRINGS: &[Pairing] = &[
    Pairing { label: "copy", kind: Kind::Copy, ours: ("copy", "-"), forward: Some("copy"), fb: None },
    Pairing { label: "content_address", kind: Kind::SoftMemory, ours: ("content_address", "soft"), forward: Some("content_address"), fb: Some("content_address") },
    Pairing { label: "soft read", kind: Kind::SoftMemory, ours: ("read", "soft"), forward: Some("soft_read"), fb: Some("soft_read") },
    Pairing { label: "soft write", kind: Kind::SoftMemory, ours: ("write", "soft"), forward: Some("soft_write"), fb: Some("soft_write") },
    Pairing { label: "location_address", kind: Kind::Location, ours: ("location_address", "soft"), forward: Some("location_address"), fb: Some("location_address") },
    Pairing { label: "soft access", kind: Kind::SoftAccess, ours: ("access", "soft"), forward: None, fb: Some("memory_access_soft") },
    Pairing { label: "discrete read", kind: Kind::Discrete, ours: ("read", "discrete"), forward: Some("discrete_read"), fb: Some("discrete_read_sparse") },
    Pairing { label: "discrete write", kind: Kind::Discrete, ours: ("write", "discrete"), forward: Some("discrete_write"), fb: Some("discrete_write_sparse") },
    Pairing { label: "discrete access", kind: Kind::Discrete, ours: ("access", "discrete"), forward: None, fb: Some("memory_access_discrete_sparse") },
];

/// One paired row: this crate's time and the peers' at one shape and dtype.
#[derive(Clone, Debug)]
pub struct Line {
    /// The op, as the README's tables name it.
    pub label: &'static str,
    /// Which targets it counts for.
    pub kind: Kind,
    /// `forward` or `f+b`.
    pub pass: &'static str,
    /// The memory's dtype.
    pub dtype: &'static str,
    /// (B, H, N, W).
    pub shape: Shape4,
    /// The memory's bytes (B·N·W elements of `dtype`).
    pub memory_bytes: u64,
    /// This crate's median (the sum of the paired rows' medians), microseconds.
    pub ours_us: f64,
    /// PyTorch eager's median, where the peer timed it.
    pub eager_us: Option<f64>,
    /// `torch.compile`'s median, where the peer timed it.
    pub compile_us: Option<f64>,
}

/// A target's verdict.
#[derive(Clone, Debug)]
pub struct Target {
    /// What the target asks.
    pub name: String,
    /// `Some(true)` met, `Some(false)` missed, `None` not measured (no rows for it).
    pub met: Option<bool>,
    /// The measurements behind the verdict.
    pub detail: String,
}

/// The result of [`compare`].
#[derive(Clone, Debug)]
pub struct Comparison {
    /// Every paired row, in the bench's shape order.
    pub lines: Vec<Line>,
    /// The targets, in issue 8's order, then issue 9's.
    pub targets: Vec<Target>,
    /// The comparison table and the targets as printed.
    pub text: String,
    /// The paired rows as CSV ([`VS_CSV_HEADER`]).
    pub csv: String,
    /// The f32 rows PyTorch timed as a Markdown table, a column per shape, each cell "this
    /// crate / eager / `torch.compile`" in µs (the README's form).
    pub markdown: String,
}

const MIB: u64 = 1 << 20;

fn dtype_bytes(dtype: &str) -> u64 {
    if dtype == "f16" {
        2
    } else {
        4
    }
}

fn memory_bytes(shape: Shape4, dtype: &str) -> u64 {
    (shape.0 * shape.2 * shape.3) as u64 * dtype_bytes(dtype)
}

fn shape_name(s: Shape4) -> String {
    format!("B={} H={} N={} W={}", s.0, s.1, s.2, s.3)
}

fn mib_name(bytes: u64) -> String {
    let m = bytes as f64 / MIB as f64;
    if m >= 1024.0 {
        format!("{:.0} GiB", m / 1024.0)
    } else {
        format!("{m:.0} MiB")
    }
}

/// A verdict over `items`, each a margin (the measurement over its bound, oriented so that 1 or
/// more meets it) and a description: met when every item is. The detail lists the missed
/// items, worst first, and the met item closest to its bound.
fn verdict(name: &str, mut items: Vec<(f64, String)>, none: &str) -> Target {
    if items.is_empty() {
        return Target {
            name: name.into(),
            met: None,
            detail: none.into(),
        };
    }
    items.sort_by(|a, b| a.0.total_cmp(&b.0));
    let missed: Vec<&str> = items
        .iter()
        .filter(|(m, _)| *m < 1.0)
        .map(|(_, d)| d.as_str())
        .collect();
    let mut detail = format!("{} of {} met", items.len() - missed.len(), items.len());
    if !missed.is_empty() {
        let _ = write!(detail, "; missed: {}", missed.join("; "));
    }
    if let Some((_, d)) = items.iter().find(|(m, _)| *m >= 1.0) {
        let _ = write!(detail, "; closest met: {d}");
    }
    Target {
        name: name.into(),
        met: Some(missed.is_empty()),
        detail,
    }
}

/// Pairs `rows` (this crate's) with `peer` (PyTorch's) and judges the speed targets.
pub fn compare(rows: &[Row], peer: &[PeerRow]) -> Comparison {
    let mut shapes: Vec<Shape4> = Vec::new();
    for r in rows {
        let s = (r.batch, r.heads, r.slots, r.width);
        if !shapes.contains(&s) {
            shapes.push(s);
        }
    }
    let ours = |op: &str, access: &str, pass: &str, dtype: &str, s: Shape4| {
        rows.iter()
            .find(|r| {
                (r.op.as_str(), r.access, r.pass, r.dtype) == (op, access, pass, dtype)
                    && (r.batch, r.heads, r.slots, r.width) == s
            })
            .map(|r| r.median_us)
    };
    let theirs = |who: Peer, op: &str, pass: &str, dtype: &str, s: Shape4| {
        peer.iter()
            .find(|p| {
                p.peer == who && p.op == op && p.pass == pass && p.dtype == dtype && p.shape == s
            })
            .map(|p| p.median_us)
    };
    let mut lines = Vec::new();
    for &s in &shapes {
        for dtype in ["f32", "f16"] {
            for pr in PAIRINGS {
                let (op, acc) = pr.ours;
                let passes = [
                    (pr.forward, "forward", "forward", vec![(op, acc, "forward")]),
                    (pr.fb, "f+b", "forward+backward", pr.fb_rows()),
                ];
                for (peer_op, pass, peer_pass, parts) in passes {
                    let Some(peer_op) = peer_op else { continue };
                    let Some(ours_us) = parts
                        .iter()
                        .map(|&(op, acc, pass)| ours(op, acc, pass, dtype, s))
                        .sum::<Option<f64>>()
                    else {
                        continue;
                    };
                    lines.push(Line {
                        label: pr.label,
                        kind: pr.kind,
                        pass,
                        dtype,
                        shape: s,
                        memory_bytes: memory_bytes(s, dtype),
                        ours_us,
                        eager_us: theirs(Peer::Eager, peer_op, peer_pass, dtype, s),
                        compile_us: theirs(Peer::Compile, peer_op, peer_pass, dtype, s),
                    });
                }
            }
        }
    }
    let targets = targets(rows, &lines, !peer.is_empty());
    let text = render(&lines, &targets);
    let mut csv = String::from(VS_CSV_HEADER);
    csv.push('\n');
    let opt = |x: Option<f64>, d: usize| x.map_or(String::new(), |v| format!("{v:.d$}"));
    for l in &lines {
        let (b, h, n, w) = l.shape;
        let _ = writeln!(
            csv,
            "{},{},{},{b},{h},{n},{w},{:.3},{},{},{},{}",
            l.label.replace(' ', "_"),
            l.pass,
            l.dtype,
            l.ours_us,
            opt(l.eager_us, 3),
            opt(l.compile_us, 3),
            opt(l.eager_us.map(|e| e / l.ours_us), 4),
            opt(l.compile_us.map(|c| c / l.ours_us), 4),
        );
    }
    let markdown = markdown(&lines);
    Comparison {
        lines,
        targets,
        text,
        csv,
        markdown,
    }
}

fn ratio_name(theirs: f64, ours: f64) -> String {
    format!("{:.2}x ({} / {} us)", theirs / ours, us(ours), us(theirs))
}

fn us(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A number's digits before the point grouped by three with commas (the README's tables).
fn grouped(plain: &str) -> String {
    let (int, frac) = plain.split_once('.').unwrap_or((plain, ""));
    let mut out = String::new();
    for (k, c) in int.chars().enumerate() {
        if k > 0 && (int.len() - k) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// `us`, grouped.
fn us_grouped(v: f64) -> String {
    grouped(&us(v))
}

/// The f32 lines PyTorch timed, a row per op and pass and a column per shape: "ours / eager"
/// or "ours / eager / compile" where `torch.compile` timed that op and that shape at all
/// (a missing time "-").
fn markdown(lines: &[Line]) -> String {
    let timed: Vec<&Line> = lines
        .iter()
        .filter(|l| l.dtype == "f32" && (l.eager_us.is_some() || l.compile_us.is_some()))
        .collect();
    let mut shapes: Vec<(Shape4, u64)> = Vec::new();
    let mut rows: Vec<(&str, &str)> = Vec::new();
    for l in &timed {
        if !shapes.iter().any(|(s, _)| *s == l.shape) {
            shapes.push((l.shape, l.memory_bytes));
        }
        if !rows.contains(&(l.label, l.pass)) {
            rows.push((l.label, l.pass));
        }
    }
    if timed.is_empty() {
        return String::new();
    }
    let same_hw = shapes
        .iter()
        .all(|((_, h, _, w), _)| (*h, *w) == (shapes[0].0 .1, shapes[0].0 .3));
    let count = |n: usize| grouped(&n.to_string());
    let mut s = String::from("| op | pass |");
    for &((b, h, n, w), bytes) in &shapes {
        if same_hw {
            let _ = write!(
                s,
                " B = {}, N = {} ({}) |",
                count(b),
                count(n),
                mib_name(bytes)
            );
        } else {
            let _ = write!(
                s,
                " B = {}, H = {h}, N = {}, W = {w} ({}) |",
                count(b),
                count(n),
                mib_name(bytes)
            );
        }
    }
    s.push_str("\n| --- | --- |");
    s.push_str(&" --- |".repeat(shapes.len()));
    s.push('\n');
    let compiled = |f: &dyn Fn(&Line) -> bool| timed.iter().any(|l| l.compile_us.is_some() && f(l));
    let cell = |x: Option<f64>| x.map_or("-".to_string(), us_grouped);
    for (label, pass) in rows {
        let _ = write!(s, "| {label} | {pass} |");
        for &(shape, _) in &shapes {
            let l = timed
                .iter()
                .find(|l| (l.label, l.pass, l.shape) == (label, pass, shape));
            let Some(l) = l else {
                s.push_str(" |");
                continue;
            };
            let _ = write!(s, " {} / {}", us_grouped(l.ours_us), cell(l.eager_us));
            if compiled(&|o| (o.label, o.pass) == (label, pass)) && compiled(&|o| o.shape == shape)
            {
                let _ = write!(s, " / {}", cell(l.compile_us));
            }
            s.push_str(" |");
        }
        s.push('\n');
    }
    s
}

/// Rows that move the same bytes: (op, access, pass, H, W, B·N).
type BytesKey<'a> = (String, &'a str, &'a str, usize, usize, usize);

fn targets(rows: &[Row], lines: &[Line], have_peer: bool) -> Vec<Target> {
    let no_peer = if have_peer {
        "not measured: no paired PyTorch rows"
    } else {
        "not measured: no PyTorch peer CSV (NTM_BENCH_PEER)"
    };
    let f32_lines = || lines.iter().filter(|l| l.dtype == "f32");
    let where_ = |l: &Line| format!("{} {} at {}", l.label, l.pass, shape_name(l.shape));
    let mut out = Vec::new();

    // 1. The roofline against PyTorch's copy_ of the same bytes.
    out.push(verdict(
        "roofline >= 90% of PyTorch's copy_",
        f32_lines()
            .filter(|l| l.kind == Kind::Copy)
            .filter_map(|l| {
                let e = l.eager_us?;
                Some((
                    e / l.ours_us / 0.9,
                    format!(
                        "{:.0}% at {} ({})",
                        100.0 * e / l.ours_us,
                        shape_name(l.shape),
                        mib_name(l.memory_bytes)
                    ),
                ))
            })
            .collect(),
        no_peer,
    ));

    // 2, 3. Roofline fractions of the soft ops that move the memory, at >= 64 MiB.
    // Roofline fractions of the f32 soft rows of `ops` and `pass` where `keep` holds.
    let fractions = |ops: &[&str], pass: &str, floor: f64, keep: &dyn Fn(&Row) -> bool| {
        rows.iter()
            .filter(|r| {
                r.dtype == "f32"
                    && r.access == "soft"
                    && r.pass == pass
                    && ops.contains(&r.op.as_str())
                    && r.roofline_fraction > 0.0
                    && keep(r)
            })
            .map(|r| {
                (
                    r.roofline_fraction / floor,
                    format!(
                        "{} {:.0}% at {}",
                        r.op,
                        100.0 * r.roofline_fraction,
                        shape_name((r.batch, r.heads, r.slots, r.width))
                    ),
                )
            })
            .collect::<Vec<_>>()
    };
    let memory_ops = ["content_address", "read", "write"];
    let big = |r: &Row| memory_bytes((r.batch, r.heads, r.slots, r.width), r.dtype) >= 64 * MIB;
    let no_big = "not measured: no f32 soft rows at memories of 64 MiB or more";
    out.push(verdict(
        "soft forward ops >= 80% of the roofline at memories >= 64 MiB",
        fractions(&memory_ops, "forward", 0.8, &big),
        no_big,
    ));
    out.push(verdict(
        "backward passes >= 60% of the roofline at memories >= 64 MiB",
        fractions(&memory_ops, "backward", 0.6, &big),
        no_big,
    ));

    // 4. Faster than eager: every soft op, forward and f+b, at every shape the peer timed.
    out.push(verdict(
        "every soft op (forward, f+b) faster than torch eager",
        f32_lines()
            .filter(|l| matches!(l.kind, Kind::SoftMemory | Kind::Location))
            .filter_map(|l| {
                let e = l.eager_us?;
                Some((
                    e / l.ours_us,
                    format!("{} {}", where_(l), ratio_name(e, l.ours_us)),
                ))
            })
            .collect(),
        no_peer,
    ));

    // 5. Faster than torch.compile at >= 64 MiB (the ops the peer compiles).
    out.push(verdict(
        "soft ops faster than torch.compile at memories >= 64 MiB",
        f32_lines()
            .filter(|l| l.kind == Kind::SoftMemory && l.memory_bytes >= 64 * MIB)
            .filter_map(|l| {
                let c = l.compile_us?;
                Some((
                    c / l.ours_us,
                    format!("{} {}", where_(l), ratio_name(c, l.ours_us)),
                ))
            })
            .collect(),
        "not measured: no torch.compile rows (--compile) at memories of 64 MiB or more",
    ));

    // 6. Content addressing forward >= 3x eager at >= 256 MiB.
    out.push(verdict(
        "content addressing forward >= 3x faster than eager at memories >= 256 MiB",
        f32_lines()
            .filter(|l| {
                l.label == "content_address" && l.pass == "forward" && l.memory_bytes >= 256 * MIB
            })
            .filter_map(|l| {
                let e = l.eager_us?;
                Some((
                    e / (3.0 * l.ours_us),
                    format!("{} at {}", ratio_name(e, l.ours_us), shape_name(l.shape)),
                ))
            })
            .collect(),
        no_peer,
    ));

    // 7. Discrete access, read + write, forward + backward: <= 10 us at B <= 16.
    out.push(verdict(
        "discrete access (read + write, forward + backward) <= 10 us at B <= 16",
        rows.iter()
            .filter(|r| {
                (r.op.as_str(), r.access, r.pass, r.dtype) == ("access", "discrete", "both", "f32")
                    && r.batch <= 16
            })
            .map(|r| {
                (
                    10.0 / r.median_us,
                    format!(
                        "{} us at {}",
                        us(r.median_us),
                        shape_name((r.batch, r.heads, r.slots, r.width))
                    ),
                )
            })
            .collect(),
        "not measured: no discrete access rows",
    ));

    // 8. The same bytes take the same time: rows of shapes with the same B·N (and H, W).
    let mut groups: BTreeMap<BytesKey, Vec<&Row>> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.dtype == "f32" && (r.access == "soft" || r.op == "copy"))
    {
        if r.op == "step" {
            continue; // whole steps also time host-side snapshots, not only their bytes
        }
        groups
            .entry((
                r.op.clone(),
                r.access,
                r.pass,
                r.heads,
                r.width,
                r.batch * r.slots,
            ))
            .or_default()
            .push(r);
    }
    let mut same = Vec::new();
    for ((op, acc, pass, h, w, _), g) in groups {
        if g.len() < 2 {
            continue;
        }
        let fast = g
            .iter()
            .min_by(|a, b| a.median_us.total_cmp(&b.median_us))
            .unwrap();
        let slow = g
            .iter()
            .max_by(|a, b| a.median_us.total_cmp(&b.median_us))
            .unwrap();
        let r = slow.median_us / fast.median_us;
        let access = if acc == "-" {
            String::new()
        } else {
            format!(" {acc}")
        };
        same.push((
            1.1 / r,
            format!(
                "{op}{access} {pass} at H={h} W={w} {:.2}x ({} us at B={} N={}, {} us at B={} N={})",
                r,
                us(slow.median_us),
                slow.batch,
                slow.slots,
                us(fast.median_us),
                fast.batch,
                fast.slots
            ),
        ));
    }
    out.push(verdict(
        "the same bytes take the same time (shapes of equal B*N, within 10%)",
        same,
        "not measured: no two shapes with the same B*N, H and W",
    ));

    // Issue 8's CPU-adapter target (judged on any adapter's rows).
    out.push(verdict(
        "soft read and write forward >= 50% of the roofline at N = 65,536 (issue 8's lavapipe target)",
        fractions(&["read", "write"], "forward", 0.5, &|r: &Row| r.slots == 65536),
        "not measured: no f32 soft read or write rows at N = 65,536",
    ));

    // Issue 9: an f16 memory's soft forward ops >= 1.8x faster than f32 at >= 64 MiB.
    let mut f16 = Vec::new();
    for r in rows.iter().filter(|r| {
        r.dtype == "f16"
            && r.access == "soft"
            && r.pass == "forward"
            && ["content_address", "read", "write"].contains(&r.op.as_str())
            && memory_bytes((r.batch, r.heads, r.slots, r.width), "f32") >= 64 * MIB
    }) {
        let s = (r.batch, r.heads, r.slots, r.width);
        if let Some(a) = rows.iter().find(|a| {
            a.dtype == "f32"
                && (a.op.as_str(), a.access, a.pass) == (r.op.as_str(), r.access, r.pass)
                && (a.batch, a.heads, a.slots, a.width) == s
        }) {
            let x = a.median_us / r.median_us;
            f16.push((
                x / 1.8,
                format!(
                    "{} {:.2}x ({} / {} us) at {}",
                    r.op,
                    x,
                    us(a.median_us),
                    us(r.median_us),
                    shape_name(s)
                ),
            ));
        }
    }
    out.push(verdict(
        "soft forward ops with an f16 memory >= 1.8x faster than f32 at memories >= 64 MiB (issue 9)",
        f16,
        "not measured: no f16 and f32 soft rows at memories of 64 MiB or more",
    ));
    out
}

fn render(lines: &[Line], targets: &[Target]) -> String {
    let mut s = String::from(
        "side by side with PyTorch (medians, us; f+b: this crate's forward + backward rows, the peer's autograd forward+backward; x: the peer's time over this crate's, above 1 this crate is faster)\n",
    );
    let opt = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1}"));
    let x = |p: Option<f64>, o: f64| p.map_or("-".to_string(), |v| format!("{:.2}x", v / o));
    let paired: Vec<&Line> = lines
        .iter()
        .filter(|l| l.eager_us.is_some() || l.compile_us.is_some())
        .collect();
    if paired.is_empty() {
        s.push_str("(no PyTorch rows paired with these: see NTM_BENCH_PEER)\n");
    } else {
        let _ = writeln!(
            s,
            "{:<18} {:<7} {:<5} {:>3} {:>2} {:>8} {:>4} {:>8} {:>11} {:>11} {:>11} {:>9} {:>9}",
            "op",
            "pass",
            "dtype",
            "B",
            "H",
            "N",
            "W",
            "memory",
            "ours_us",
            "eager_us",
            "compile_us",
            "x eager",
            "x compile"
        );
    }
    for l in paired {
        let (b, h, n, w) = l.shape;
        let _ = writeln!(
            s,
            "{:<18} {:<7} {:<5} {b:>3} {h:>2} {n:>8} {w:>4} {:>8} {:>11.1} {:>11} {:>11} {:>9} {:>9}",
            l.label,
            l.pass,
            l.dtype,
            mib_name(l.memory_bytes),
            l.ours_us,
            opt(l.eager_us),
            opt(l.compile_us),
            x(l.eager_us, l.ours_us),
            x(l.compile_us, l.ours_us),
        );
    }
    s.push_str("\nspeed targets (f32 rows unless named)\n");
    for t in targets {
        let v = match t.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "-",
        };
        let _ = writeln!(s, "[{v}] {}: {}", t.name, t.detail);
    }
    s
}
