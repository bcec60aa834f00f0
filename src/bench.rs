//! The measurements behind `cargo bench`: soft against discrete memory access, per op and
//! pass, with the bytes each op must move and its bandwidth against a plain copy kernel of the
//! same bytes measured in the same run. Public so that the bench and a test (on tiny shapes)
//! run the same code.

use std::fmt::Write as _;
use std::time::Instant;

use crate::error::Result;
use crate::gpu::{Clock, Gpu, Tensor};

/// One measured row of the report.
#[derive(Clone, Debug)]
pub struct Row {
    /// Op family: `copy`, `content_address`, `read`, `write`, `sample`, `undo`, `step`, ...
    pub op: String,
    /// `soft`, `discrete`, or `-` for ops that are neither.
    pub access: &'static str,
    /// `forward`, `backward` or `both`.
    pub pass: &'static str,
    /// Batch B.
    pub batch: usize,
    /// Heads H.
    pub heads: usize,
    /// Slots N.
    pub slots: usize,
    /// Width W.
    pub width: usize,
    /// Median time, microseconds.
    pub median_us: f64,
    /// Fastest time, microseconds.
    pub min_us: f64,
    /// Bytes the op must read and write at least.
    pub bytes: u64,
    /// `bytes / median`, GB/s.
    pub gbps: f64,
    /// `gbps` over the copy kernel's GB/s at the same shape (0 when no copy was measured).
    pub copy_fraction: f64,
}

/// The CSV header of [`Row::csv`].
pub const CSV_HEADER: &str =
    "op,access,pass,batch,heads,slots,width,median_us,min_us,bytes,gbps,copy_fraction";

impl Row {
    /// The row as one CSV line (no newline), columns as [`CSV_HEADER`].
    pub fn csv(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{:.3},{:.3},{},{:.4},{:.4}",
            self.op,
            self.access,
            self.pass,
            self.batch,
            self.heads,
            self.slots,
            self.width,
            self.median_us,
            self.min_us,
            self.bytes,
            self.gbps,
            self.copy_fraction
        )
    }
}

/// A benchmark session on one GPU.
pub struct Bench<'g> {
    gpu: &'g Gpu,
    reps: usize,
    filter: Option<String>,
    /// Rows measured so far, in order.
    pub rows: Vec<Row>,
    /// How the rows were timed.
    pub clock: Option<Clock>,
    copy_gbps: f64,
}

/// A shape of the sweep: batch, heads, slots, width.
pub type Shape4 = (usize, usize, usize, usize);

fn rand_vec(seed: &mut u64, len: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..len)
        .map(|_| {
            // xorshift64*: cheap, deterministic bench data.
            *seed ^= *seed >> 12;
            *seed ^= *seed << 25;
            *seed ^= *seed >> 27;
            let u = (seed.wrapping_mul(0x2545F4914F6CDD1D) >> 40) as f32 / (1u64 << 24) as f32;
            lo + (hi - lo) * u
        })
        .collect()
}

impl<'g> Bench<'g> {
    /// A session timing `reps` repetitions per row (after one warm-up run), measuring only
    /// ops whose name contains `filter`, if given.
    pub fn new(gpu: &'g Gpu, reps: usize, filter: Option<String>) -> Self {
        Bench {
            gpu,
            reps: reps.max(1),
            filter,
            rows: Vec::new(),
            clock: None,
            copy_gbps: 0.0,
        }
    }

    fn wanted(&self, op: &str) -> bool {
        self.filter.as_ref().is_none_or(|f| op.contains(f.as_str()))
    }

    /// Times `f` (one warm-up, then `reps` timed runs) and appends a row.
    pub fn time(
        &mut self,
        op: &str,
        access: &'static str,
        pass: &'static str,
        shape: Shape4,
        bytes: u64,
        mut f: impl FnMut() -> Result<()>,
    ) -> Result<Option<&Row>> {
        if !self.wanted(op) {
            return Ok(None);
        }
        f()?;
        let p = self.gpu.profile(self.reps, &mut f)?;
        self.clock = Some(p.clock);
        let median_us = p.median().as_secs_f64() * 1e6;
        let gbps = if median_us > 0.0 {
            bytes as f64 / (median_us * 1e3)
        } else {
            0.0
        };
        let (batch, heads, slots, width) = shape;
        self.rows.push(Row {
            op: op.to_string(),
            access,
            pass,
            batch,
            heads,
            slots,
            width,
            median_us,
            min_us: p.min().as_secs_f64() * 1e6,
            bytes,
            gbps,
            copy_fraction: if self.copy_gbps > 0.0 {
                gbps / self.copy_gbps
            } else {
                0.0
            },
        });
        Ok(self.rows.last())
    }

    fn upload(&self, seed: &mut u64, shape: &[usize], lo: f32, hi: f32) -> Result<Tensor> {
        let len = shape.iter().product();
        self.gpu.upload(shape, &rand_vec(seed, len, lo, hi))
    }

    /// Measures the copy kernel on `bytes / 2` bytes of memory shape (B, N, W): the baseline
    /// that later rows of the same shape are compared with.
    pub fn copy_baseline(&mut self, shape: Shape4) -> Result<()> {
        let (b, _, n, w) = shape;
        let mut seed = 1;
        let m = self.upload(&mut seed, &[b, n, w], -1.0, 1.0)?;
        self.copy_gbps = 0.0;
        let gpu = self.gpu;
        let bytes = 2 * m.size_bytes();
        // The copy row is always measured: every other row's fraction needs it.
        let filter = self.filter.take();
        let gbps = self
            .time("copy", "-", "forward", shape, bytes, || {
                gpu.copy(&m).map(drop)
            })
            .map(|r| r.map_or(0.0, |r| r.gbps));
        self.filter = filter;
        self.copy_gbps = gbps?;
        Ok(())
    }

    /// Soft ops at one shape: content addressing, soft read and soft write, forward and
    /// backward, after the copy baseline of that shape.
    pub fn soft_ops(&mut self, shape: Shape4) -> Result<()> {
        let (b, h, n, w) = shape;
        let gpu = self.gpu;
        let mut seed = 7;
        let mut m = self.upload(&mut seed, &[b, n, w], -1.0, 1.0)?;
        let k = self.upload(&mut seed, &[b, h, w], -1.0, 1.0)?;
        let beta = self.upload(&mut seed, &[b, h], 1.0, 10.0)?;
        let e = self.upload(&mut seed, &[b, h, w], 0.0, 1.0)?;
        let a = self.upload(&mut seed, &[b, h, w], -1.0, 1.0)?;
        let dr = self.upload(&mut seed, &[b, h, w], -1.0, 1.0)?;
        let wt = gpu.content_address(&m, &k, &beta)?;
        let dw = self.upload(&mut seed, &[b, h, n], -1.0, 1.0)?;
        let mem = m.size_bytes();
        let bhn = (b * h * n * 4) as u64;
        let bhw = (b * h * w * 4) as u64;
        self.time(
            "content_address",
            "soft",
            "forward",
            shape,
            mem + bhn + bhw,
            || gpu.content_address(&m, &k, &beta).map(drop),
        )?;
        self.time(
            "content_address",
            "soft",
            "backward",
            shape,
            2 * mem + 2 * bhn + 2 * bhw,
            || {
                gpu.content_address_backward(&m, &k, &beta, &wt, &dw)
                    .map(drop)
            },
        )?;
        self.time("read", "soft", "forward", shape, mem + bhn + bhw, || {
            gpu.soft_read(&m, &wt).map(drop)
        })?;
        self.time(
            "read",
            "soft",
            "backward",
            shape,
            2 * mem + 2 * bhn + bhw,
            || gpu.soft_read_backward(&m, &wt, &dr).map(drop),
        )?;
        let d_after = self.upload(&mut seed, &[b, n, w], -1.0, 1.0)?;
        self.time(
            "write",
            "soft",
            "backward",
            shape,
            3 * mem + 2 * bhn + 4 * bhw,
            || gpu.soft_write_backward(&m, &wt, &e, &a, &d_after).map(drop),
        )?;
        self.time(
            "write",
            "soft",
            "forward",
            shape,
            2 * mem + bhn + 2 * bhw,
            || gpu.soft_write(&mut m, &wt, &e, &a),
        )?;
        Ok(())
    }

    /// The cost per op of `count` small ops queued then waited for once, against one op
    /// followed by a wait (a submit-and-wait), in microseconds: (queued, submit_and_wait).
    pub fn queued_small_ops(&self, count: usize) -> Result<(f64, f64)> {
        let gpu = self.gpu;
        let mut seed = 3;
        let m = self.upload(&mut seed, &[1, 64, 16], -1.0, 1.0)?;
        let w = self.upload(&mut seed, &[1, 1, 64], 0.0, 1.0)?;
        gpu.soft_read(&m, &w)?;
        gpu.sync()?;
        let t0 = Instant::now();
        for _ in 0..count {
            gpu.soft_read(&m, &w)?;
        }
        gpu.sync()?;
        let queued = t0.elapsed().as_secs_f64() * 1e6 / count as f64;
        let mut one = Vec::new();
        for _ in 0..9 {
            let t0 = Instant::now();
            gpu.soft_read(&m, &w)?;
            gpu.sync()?;
            one.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        one.sort_by(f64::total_cmp);
        Ok((queued, one[one.len() / 2]))
    }

    /// The rows as an aligned text table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<16} {:<8} {:<8} {:>3} {:>2} {:>8} {:>4} {:>12} {:>12} {:>12} {:>8} {:>6}",
            "op",
            "access",
            "pass",
            "B",
            "H",
            "N",
            "W",
            "median_us",
            "min_us",
            "bytes",
            "GB/s",
            "copy%"
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "{:<16} {:<8} {:<8} {:>3} {:>2} {:>8} {:>4} {:>12.1} {:>12.1} {:>12} {:>8.2} {:>6.1}",
                r.op,
                r.access,
                r.pass,
                r.batch,
                r.heads,
                r.slots,
                r.width,
                r.median_us,
                r.min_us,
                r.bytes,
                r.gbps,
                r.copy_fraction * 100.0
            );
        }
        s
    }
}
