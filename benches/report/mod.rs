//! The measurements behind `cargo bench`: soft against discrete memory access, per op and
//! pass, with the bytes each op must move and its bandwidth against a plain copy kernel of the
//! same bytes measured in the same run. Not part of the library: `benches/memory_access.rs`
//! and `tests/bench_report.rs` (on tiny shapes) both include this module, so they run the
//! same code.
#![allow(dead_code)] // each includer uses part of it

pub mod ab;
pub mod peer;

use std::fmt::Write as _;
use std::time::Instant;

use ntm_kernels::{Clock, DType, Gpu, Indices, Result, Tensor, WriteUndo};

/// The report's errors: the library's, or I/O writing the CSV and plot.
pub type ReportResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The newest of the forwards prepared for timed backward runs (each undoes its write, so
/// runs take them in last-in-first-out order; `time` makes at most `reps + 1` runs).
fn pop<T>(stack: &mut Vec<T>) -> Result<T> {
    stack.pop().ok_or_else(|| ntm_kernels::Error::Invalid {
        op: "bench",
        message: "more timed backward runs than prepared forwards".into(),
    })
}

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
    /// Storage type of the memory: `f32` (or `f16`).
    pub dtype: &'static str,
    /// `gbps` over the roofline's GB/s at the same shape (0 when none was measured).
    pub roofline_fraction: f64,
}

/// The CSV header of [`Row::csv`].
pub const CSV_HEADER: &str =
    "op,access,pass,dtype,batch,heads,slots,width,median_us,min_us,bytes,gbps,roofline_fraction";

/// The text tables' first columns: a row's identity (see [`Row::key_columns`]).
pub const KEY_COLUMNS: &str = "op               access   pass     dtype   B  H        N    W";

impl Row {
    /// The row's identity (op, access, pass, dtype, B, H, N, W) as the text tables' first
    /// columns, under [`KEY_COLUMNS`].
    pub fn key_columns(&self) -> String {
        format!(
            "{:<16} {:<8} {:<8} {:<5} {:>3} {:>2} {:>8} {:>4}",
            self.op,
            self.access,
            self.pass,
            self.dtype,
            self.batch,
            self.heads,
            self.slots,
            self.width
        )
    }

    /// The row's identity as the CSVs' first eight fields.
    pub fn key_csv(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{}",
            self.op,
            self.access,
            self.pass,
            self.dtype,
            self.batch,
            self.heads,
            self.slots,
            self.width
        )
    }

    /// The row as one CSV line (no newline), columns as [`CSV_HEADER`].
    pub fn csv(&self) -> String {
        format!(
            "{},{:.3},{:.3},{},{:.4},{:.4}",
            self.key_csv(),
            self.median_us,
            self.min_us,
            self.bytes,
            self.gbps,
            self.roofline_fraction
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
    /// The roofline of the current shape: the faster of the driver's buffer copy and the
    /// crate's copy kernel on the memory's bytes (on CPU adapters, the copy kernel).
    roofline_gbps: f64,
    /// Rooflines measured so far: (shape, driver copy GB/s, copy kernel GB/s, roofline GB/s).
    pub rooflines: Vec<(Shape4, f64, f64, f64)>,
    /// A step's bookkeeping per shape: (shape, user kernel us, axpy us, axpy GB/s, axpy
    /// roofline fraction).
    pub bookkeeping: Vec<(Shape4, f64, f64, f64, f64)>,
    warm: std::collections::HashSet<(String, &'static str, &'static str, &'static str)>,
    /// The dtype of the memory-shaped tensors of the rows measured now (`shape`).
    pub dtype: DType,
    /// Seconds of each row's own work run just before it is timed.
    pub warm_seconds: f64,
    /// When the device last finished timed work (`None`: not yet); see [`IDLE_SECONDS`].
    busy: Option<Instant>,
    /// The 64 MiB pair the clock ramp copies, made on first use.
    ramp_pair: Option<(Tensor, Tensor)>,
    /// Clock ramps run (rows that followed an idle device).
    pub ramps: usize,
    /// Seconds spent timing soft and whole-step rows, for projecting the next shape's cost.
    soft_seconds: f64,
}

/// A shape of the sweep: batch, heads, slots, width.
pub type Shape4 = (usize, usize, usize, usize);

/// The CSV name of a dtype.
pub fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F16 => "f16",
        _ => "f32",
    }
}

/// Seconds of a row's own work run just before it is timed (see [`Bench::time`]); the
/// default of [`Config::warm_seconds`].
pub const WARM_SECONDS: f64 = 0.05;

/// A GPU whose device idled longer than this (while the host made a shape's data) gets
/// [`RAMP_SECONDS`] of copies before the next timed row: its clocks fall when idle and take
/// a while under load to come back (an H200: from 345 to 1,980 MHz after about 4 s idle,
/// 0.3 to 0.6 s to ramp up again, measured with `nvidia-smi` during the bench), longer
/// than a row's own warm period.
const IDLE_SECONDS: f64 = 0.5;
/// Seconds of copies that bring an idled GPU's clocks back up (see [`IDLE_SECONDS`]).
const RAMP_SECONDS: f64 = 1.0;

/// Runs `f` back to back for `seconds` (at least once), submitting each run and keeping at most
/// four runs queued ahead of the device, then waits for the device.
fn busy_for(gpu: &Gpu, seconds: f64, mut f: impl FnMut() -> Result<()>) -> Result<()> {
    let t0 = Instant::now();
    for k in 1.. {
        f()?;
        gpu.flush()?;
        if t0.elapsed().as_secs_f64() >= seconds {
            break;
        }
        if k % 4 == 0 {
            gpu.sync()?;
        }
    }
    gpu.sync()
}

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
            roofline_gbps: 0.0,
            rooflines: Vec::new(),
            bookkeeping: Vec::new(),
            warm: Default::default(),
            soft_seconds: 0.0,
            dtype: DType::F32,
            warm_seconds: WARM_SECONDS,
            busy: None,
            ramp_pair: None,
            ramps: 0,
        }
    }

    /// On a GPU that has idled longer than [`IDLE_SECONDS`]: [`RAMP_SECONDS`] of copies
    /// (bounded queue, as the warm period), so that the next row is timed at the clocks the
    /// device runs under load. CPU adapters have no such clocks: nothing to do.
    fn ramp_if_idle(&mut self) -> Result<()> {
        let gpu = self.gpu;
        if gpu.adapter().is_cpu
            || self
                .busy
                .is_some_and(|t| t.elapsed().as_secs_f64() < IDLE_SECONDS)
        {
            return Ok(());
        }
        if self.ramp_pair.is_none() {
            let n = (64 << 20) / 4;
            self.ramp_pair = Some((gpu.zeros(&[n])?, gpu.zeros(&[n])?));
        }
        let Some((src, dst)) = self.ramp_pair.as_mut() else {
            return Ok(());
        };
        busy_for(gpu, RAMP_SECONDS, || gpu.copy_into(src, dst))?;
        self.ramps += 1;
        self.busy = Some(Instant::now());
        Ok(())
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
        f: impl FnMut() -> Result<()>,
    ) -> Result<Option<&Row>> {
        self.time_runs(op, access, pass, shape, bytes, true, f)
    }

    /// [`Bench::time`] for runs that each consume a prepared input (a stack of `reps + 1`
    /// forwards to undo): at most `reps + 1` runs, so without the warm-up period.
    pub fn time_prepared(
        &mut self,
        op: &str,
        access: &'static str,
        pass: &'static str,
        shape: Shape4,
        bytes: u64,
        f: impl FnMut() -> Result<()>,
    ) -> Result<Option<&Row>> {
        self.time_runs(op, access, pass, shape, bytes, false, f)
    }

    #[allow(clippy::too_many_arguments)] // the row's identity, its bytes, and how to run it
    fn time_runs(
        &mut self,
        op: &str,
        access: &'static str,
        pass: &'static str,
        shape: Shape4,
        bytes: u64,
        repeatable: bool,
        mut f: impl FnMut() -> Result<()>,
    ) -> Result<Option<&Row>> {
        if !self.wanted(op) {
            return Ok(None);
        }
        // Warm-up, only for ops not measured before in this session (pipeline creation):
        // once warm, the first timed run decides how many more a row gets (slow rows fewer).
        let key = (op.to_string(), access, pass, dtype_name(self.dtype));
        if !self.warm.contains(&key) {
            f()?;
            self.gpu.sync()?;
            self.warm.insert(key);
        }
        // Keep the device busy with this row's own work for a while first (after a clock
        // ramp if it idled): a GPU that idled (while the host made the shape's data) runs at
        // lower clocks for a while, and the PyTorch peer times ops under continuous load.
        self.ramp_if_idle()?;
        if repeatable {
            busy_for(self.gpu, self.warm_seconds, &mut f)?;
        }
        let t0 = Instant::now();
        let mut p = self.gpu.profile(1, &mut f)?;
        let first = t0.elapsed().as_secs_f64();
        let more = if first > 1.0 {
            1
        } else if first > 0.3 {
            2
        } else if first < 0.002 && repeatable {
            // Short rows: more samples for a stable median (they cost nothing).
            3 * self.reps - 1
        } else {
            self.reps.saturating_sub(1)
        };
        if more > 0 {
            p.samples.extend(self.gpu.profile(more, &mut f)?.samples);
        }
        if access == "soft" || op == "step" {
            self.soft_seconds += t0.elapsed().as_secs_f64();
        }
        self.busy = Some(Instant::now());
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
            dtype: dtype_name(self.dtype),
            roofline_fraction: if self.roofline_gbps > 0.0 {
                gbps / self.roofline_gbps
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

    /// Measures the roofline at memory shape (B, N, W): the crate's copy kernel (a `copy`
    /// row) and the driver's `copy_buffer_to_buffer` on the same bytes, by wall clock over a
    /// batch of copies in one submit (no timestamps can be written around a transfer
    /// command portably). The faster is the roofline that later rows of the shape are
    /// compared with; on a CPU adapter the driver's copy is a memcpy outside the compute path,
    /// so there the copy kernel is the roofline.
    pub fn copy_baseline(&mut self, shape: Shape4) -> Result<()> {
        let (b, _, n, w) = shape;
        let mut seed = 1;
        let m = self.upload(&mut seed, &[b, n, w], -1.0, 1.0)?;
        self.roofline_gbps = 0.0;
        // The roofline is a bandwidth: measured once per shape, on f32 bytes.
        let dtype = std::mem::replace(&mut self.dtype, DType::F32);
        let gpu = self.gpu;
        let bytes = 2 * m.size_bytes();
        // The copy row is always measured: every other row's fraction needs it.
        let filter = self.filter.take();
        // Into a destination made once, as PyTorch's `copy_` into its scratch tensor.
        let mut dst = gpu.zeros_as(m.dtype(), m.shape())?;
        let kernel = self
            .time("copy", "-", "forward", shape, bytes, || {
                gpu.copy_into(&m, &mut dst)
            })
            .map(|r| r.map_or(0.0, |r| r.gbps));
        self.filter = filter;
        let kernel = kernel?;
        self.ramp_if_idle()?;
        let driver = self.driver_copy_gbps(&m)?;
        self.busy = Some(Instant::now());
        let roofline = if gpu.adapter().is_cpu {
            kernel
        } else {
            kernel.max(driver)
        };
        self.roofline_gbps = roofline;
        if let Some(r) = self.rows.last_mut().filter(|r| r.op == "copy") {
            r.roofline_fraction = r.gbps / roofline;
        }
        self.rooflines.push((shape, driver, kernel, roofline));
        self.dtype = dtype;
        Ok(())
    }

    /// GB/s (read + write) of the driver's buffer copy of `m`: the median of 5 batches.
    fn driver_copy_gbps(&self, m: &Tensor) -> Result<f64> {
        let gpu = self.gpu;
        let dst = gpu.zeros(m.shape())?;
        let size = m.size_bytes();
        let batch = |count: u32| -> Result<f64> {
            gpu.sync()?;
            let mut enc = gpu.device().create_command_encoder(&Default::default());
            for _ in 0..count {
                enc.copy_buffer_to_buffer(m.buffer(), 0, dst.buffer(), 0, size);
            }
            let t0 = Instant::now();
            gpu.queue().submit([enc.finish()]);
            let _ = gpu.device().poll(wgpu::PollType::wait_indefinitely());
            Ok(t0.elapsed().as_secs_f64() / count as f64)
        };
        batch(1)?; // warm-up
        let one = batch(1)?;
        // Enough copies per batch for about 50 ms, so the submit's cost does not count.
        let count = (0.05 / one.max(1e-9)).clamp(1.0, 100.0) as u32;
        let mut times: Vec<f64> = (0..5).map(|_| batch(count)).collect::<Result<_>>()?;
        times.sort_by(f64::total_cmp);
        Ok(2.0 * size as f64 / times[2] / 1e9)
    }

    /// Every row at one shape, with memory-shaped tensors (the memory, `d_mem`) of
    /// `self.dtype`: discrete ops and discrete memory access always; with `full`,
    /// also the soft ops, soft memory access and the whole NTM step, soft and discrete (both
    /// forms of the step address by content, O(N·W)). The copy baseline must be measured first.
    pub fn shape(&mut self, shape: Shape4, full: bool) -> Result<()> {
        let soft = full;
        let (b, h, n, w) = shape;
        let gpu = self.gpu;
        let mut seed = 7;
        let dt = self.dtype;
        let mut m = gpu.cast(&self.upload(&mut seed, &[b, n, w], -1.0, 1.0)?, dt)?;
        let k = self.upload(&mut seed, &[b, h, w], -1.0, 1.0)?;
        let beta = self.upload(&mut seed, &[b, h], 1.0, 10.0)?;
        let kw = self.upload(&mut seed, &[b, 1, w], -1.0, 1.0)?;
        let beta_w = self.upload(&mut seed, &[b, 1], 1.0, 10.0)?;
        let e = self.upload(&mut seed, &[b, h, w], 0.0, 1.0)?;
        let a = self.upload(&mut seed, &[b, h, w], -1.0, 1.0)?;
        let e1 = self.upload(&mut seed, &[b, 1, w], 0.0, 1.0)?;
        let a1 = self.upload(&mut seed, &[b, 1, w], -1.0, 1.0)?;
        let dr = self.upload(&mut seed, &[b, h, w], -1.0, 1.0)?;
        let adv = self.upload(&mut seed, &[b, h], -1.0, 1.0)?;
        let adv1 = self.upload(&mut seed, &[b, 1], -1.0, 1.0)?;
        let wt = gpu.content_address(&m, &k, &beta)?;
        let ix = gpu.sample(&wt, 1)?;
        // Location addressing's inputs for H heads and for the one write head: previous
        // weights, gate, a 3-tap shift, sharpening.
        let loc = |heads: usize, seed: &mut u64| -> Result<[Tensor; 4]> {
            Ok([
                gpu.upload(&[b, heads, n], &vec![1.0 / n as f32; b * heads * n])?,
                self.upload(seed, &[b, heads], 0.0, 1.0)?,
                gpu.upload(&[b, heads, 3], &[0.1, 0.8, 0.1].repeat(b * heads))?,
                self.upload(seed, &[b, heads], 1.0, 3.0)?,
            ])
        };
        let [wprev, gate, shift, gamma] = loc(h, &mut seed)?;
        let [wprev1, gate1, shift1, gamma1] = loc(1, &mut seed)?;
        let mem = m.size_bytes();
        let (bhn, bhw, bh) = (
            (b * h * n * 4) as u64,
            (b * h * w * 4) as u64,
            (b * h * 4) as u64,
        );
        // Memory rows of B·H heads, in the memory's dtype.
        let bhm = (b * h * w) as u64 * dt.size_bytes();
        let mut d_mem = gpu.cast(&self.upload(&mut seed, &[b, n, w], -1.0, 1.0)?, dt)?;

        if soft {
            let dw = self.upload(&mut seed, &[b, h, n], -1.0, 1.0)?;
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
            // Location addressing: reads content and previous weights, writes the weights
            // (backward: also dw in, d content and d previous out); O(B·H·N·S), no memory.
            self.time(
                "location_address",
                "soft",
                "forward",
                shape,
                3 * bhn,
                || {
                    gpu.location_address(&wt, &wprev, &gate, &shift, &gamma)
                        .map(drop)
                },
            )?;
            self.time(
                "location_address",
                "soft",
                "backward",
                shape,
                5 * bhn,
                || {
                    gpu.location_address_backward(&wt, &wprev, &gate, &shift, &gamma, &dw)
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
            self.time(
                "write",
                "soft",
                "backward",
                shape,
                3 * mem + 2 * bhn + 4 * bhw,
                || gpu.soft_write_backward(&m, &wt, &e, &a, &d_mem).map(drop),
            )?;
            self.time(
                "write",
                "soft",
                "forward",
                shape,
                2 * mem + bhn + 2 * bhw,
                || gpu.soft_write(&mut m, &wt, &e, &a),
            )?;
        }
        // Discrete rows: O(B H W) bytes whatever N is.
        self.time("sample", "discrete", "forward", shape, bhn + bh, || {
            gpu.sample(&wt, 3).map(drop)
        })?;
        self.time("read", "discrete", "forward", shape, bhm + bhw + bh, || {
            gpu.discrete_read(&m, &ix).map(drop)
        })?;
        self.time(
            "read",
            "discrete",
            "backward",
            shape,
            3 * bhm + bhw + 2 * bh,
            || {
                gpu.discrete_read_backward(&m, &ix, &dr, &mut d_mem)
                    .map(drop)
            },
        )?;
        let undo = gpu.discrete_write(&mut m, &ix, &e, &a)?;
        // Row read and written; old rows (f32), erase and add.
        self.time(
            "write",
            "discrete",
            "forward",
            shape,
            2 * bhm + 3 * bhw + bh,
            || gpu.discrete_write(&mut m, &ix, &e, &a).map(drop),
        )?;
        let undo_bytes = bhm + bhw + bh;
        // dM' rows read twice and written; old rows, erase, add; de, da out.
        self.time(
            "write",
            "discrete",
            "backward",
            shape,
            3 * bhm + 5 * bhw + 2 * bh,
            || {
                gpu.discrete_write_backward(&undo, &e, &a, &mut d_mem)
                    .map(drop)
            },
        )?;
        // Each timed undo takes the newest record of a stack of writes: undos in LIFO order.
        let mut stack = (0..self.reps + 1)
            .map(|_| gpu.discrete_write(&mut m, &ix, &e, &a))
            .collect::<Result<Vec<_>>>()?;
        self.time_prepared("undo", "discrete", "backward", shape, undo_bytes, || {
            gpu.undo_write(&mut m, &pop(&mut stack)?)
        })?;
        self.time(
            "reinforce_grad",
            "discrete",
            "backward",
            shape,
            3 * bhn,
            || gpu.reinforce_grad(&wt, &ix, &adv, 0.01).map(drop),
        )?;

        // Memory access alone: reads and writes given weights (soft) or indices (discrete).
        let soft_fwd = |m: &mut Tensor| -> Result<Tensor> {
            let snap = gpu.copy(m)?;
            gpu.soft_read(m, &wt)?;
            gpu.soft_write(m, &wt, &e, &a)?;
            Ok(snap)
        };
        let soft_bwd = |snap: &Tensor, d_mem: &Tensor| -> Result<()> {
            gpu.soft_write_backward(snap, &wt, &e, &a, d_mem)?;
            gpu.soft_read_backward(snap, &wt, &dr)?;
            Ok(())
        };
        // The read, then the write, in one call (1 dispatch).
        let disc_fwd = |m: &mut Tensor| -> Result<WriteUndo> {
            Ok(gpu.discrete_access(m, &ix, &ix, &e, &a)?.1)
        };
        // The write's backward, the undo and the read's backward in one call (2 dispatches).
        let disc_bwd = |m: &mut Tensor, u: &WriteUndo, d_mem: &mut Tensor| -> Result<()> {
            gpu.discrete_access_backward(m, &ix, &dr, u, &e, &a, d_mem)?;
            Ok(())
        };
        if soft {
            let snap = gpu.copy(&m)?;
            self.time(
                "access",
                "soft",
                "forward",
                shape,
                5 * mem + 2 * bhn,
                || soft_fwd(&mut m).map(drop),
            )?;
            self.time(
                "access",
                "soft",
                "backward",
                shape,
                5 * mem + 4 * bhn,
                || soft_bwd(&snap, &d_mem),
            )?;
            self.time("access", "soft", "both", shape, 10 * mem + 6 * bhn, || {
                soft_bwd(&soft_fwd(&mut m)?, &d_mem)
            })?;
        }
        self.time(
            "access",
            "discrete",
            "forward",
            shape,
            3 * bhm + 5 * bhw,
            || disc_fwd(&mut m).map(drop),
        )?;
        // Backward rows undo writes: each timed run takes the newest of a stack of forwards.
        let mut fwds = (0..self.reps + 1)
            .map(|_| disc_fwd(&mut m))
            .collect::<Result<Vec<_>>>()?;
        self.time_prepared(
            "access",
            "discrete",
            "backward",
            shape,
            7 * bhm + 7 * bhw,
            || disc_bwd(&mut m, &pop(&mut fwds)?, &mut d_mem),
        )?;
        self.time(
            "access",
            "discrete",
            "both",
            shape,
            10 * bhm + 12 * bhw,
            || {
                let u = disc_fwd(&mut m)?;
                disc_bwd(&mut m, &u, &mut d_mem)
            },
        )?;

        // The whole NTM step: addressing for H read heads and one write head, reads, write.
        let step_bytes = |soft: bool| if soft { 6 * mem } else { 2 * mem };
        if soft {
            // As an NTM head: content addressing, then location addressing.
            type Saved = (Tensor, Tensor, Tensor, Tensor, Tensor);
            let fwd = |m: &mut Tensor| -> Result<Saved> {
                let cr = gpu.content_address(m, &k, &beta)?;
                let wr = gpu.location_address(&cr, &wprev, &gate, &shift, &gamma)?;
                let cw = gpu.content_address(m, &kw, &beta_w)?;
                let ww = gpu.location_address(&cw, &wprev1, &gate1, &shift1, &gamma1)?;
                gpu.soft_read(m, &wr)?;
                let snap = gpu.copy(m)?;
                gpu.soft_write(m, &ww, &e1, &a1)?;
                Ok((cr, wr, cw, ww, snap))
            };
            let bwd = |(cr, wr, cw, ww, snap): &Saved, d_mem: &Tensor| -> Result<()> {
                let gw = gpu.soft_write_backward(snap, ww, &e1, &a1, d_mem)?;
                let lw = gpu.location_address_backward(
                    cw,
                    &wprev1,
                    &gate1,
                    &shift1,
                    &gamma1,
                    &gw.weights,
                )?;
                gpu.content_address_backward(snap, &kw, &beta_w, cw, &lw.content)?;
                let gr = gpu.soft_read_backward(snap, wr, &dr)?;
                let lr =
                    gpu.location_address_backward(cr, &wprev, &gate, &shift, &gamma, &gr.weights)?;
                gpu.content_address_backward(snap, &k, &beta, cr, &lr.content)?;
                Ok(())
            };
            let saved = fwd(&mut m)?;
            self.time("step", "soft", "forward", shape, step_bytes(true), || {
                fwd(&mut m).map(drop)
            })?;
            self.time(
                "step",
                "soft",
                "backward",
                shape,
                2 * step_bytes(true),
                || bwd(&saved, &d_mem),
            )?;
            self.time("step", "soft", "both", shape, 3 * step_bytes(true), || {
                bwd(&fwd(&mut m)?, &d_mem)
            })?;
        }
        if full {
            let fwd = |m: &mut Tensor| -> Result<(Tensor, Indices, Tensor, Indices, WriteUndo)> {
                let wr = gpu.content_address(m, &k, &beta)?;
                let ir = gpu.sample(&wr, 5)?;
                let wwr = gpu.content_address(m, &kw, &beta_w)?;
                let iw = gpu.sample(&wwr, 6)?;
                // The read, then the write (both addressed on the memory before the write).
                let (_, u) = gpu.discrete_access(m, &ir, &iw, &e1, &a1)?;
                Ok((wr, ir, wwr, iw, u))
            };
            let bwd = |m: &mut Tensor,
                       s: &(Tensor, Indices, Tensor, Indices, WriteUndo),
                       d_mem: &mut Tensor|
             -> Result<()> {
                let (wr, ir, wwr, iw, u) = s;
                gpu.discrete_access_backward(m, ir, &dr, u, &e1, &a1, d_mem)?;
                let dz = gpu.reinforce_grad(wwr, iw, &adv1, 0.01)?;
                gpu.content_address_backward_scores(m, &kw, &beta_w, &dz)?;
                let dz = gpu.reinforce_grad(wr, ir, &adv, 0.01)?;
                gpu.content_address_backward_scores(m, &k, &beta, &dz)?;
                Ok(())
            };
            self.time(
                "step",
                "discrete",
                "forward",
                shape,
                step_bytes(false),
                || fwd(&mut m).map(drop),
            )?;
            let mut saved = (0..self.reps + 1)
                .map(|_| fwd(&mut m))
                .collect::<Result<Vec<_>>>()?;
            self.time_prepared(
                "step",
                "discrete",
                "backward",
                shape,
                2 * step_bytes(false),
                || bwd(&mut m, &pop(&mut saved)?, &mut d_mem),
            )?;
            self.time(
                "step",
                "discrete",
                "both",
                shape,
                3 * step_bytes(false),
                || {
                    let s = fwd(&mut m)?;
                    bwd(&mut m, &s, &mut d_mem)
                },
            )?;
        }
        Ok(())
    }

    /// Bytes that backprop through `steps` steps must keep at this shape: soft (a memory
    /// snapshot per step) and discrete (each step's undo record and read indices), from the
    /// sizes the library reports.
    pub fn backprop_memory(&self, shape: Shape4, steps: u64) -> Result<(u64, u64)> {
        let (b, h, n, w) = shape;
        let gpu = self.gpu;
        // Sizes only: tiny tensors of the right shapes, no memory of N slots is needed.
        let snapshot = (b * n * w * 4) as u64;
        let mut m = gpu.zeros(&[b, 1, w])?;
        let ix = gpu.upload_indices(&[b, h], &vec![0; b * h])?;
        let v = gpu.zeros(&[b, h, w])?;
        let undo = gpu.discrete_write(&mut m, &ix, &v, &v)?;
        Ok((
            steps * snapshot,
            steps * (undo.size_bytes() + ix.size_bytes()),
        ))
    }

    /// A training step's bookkeeping beside the memory ops, at memory shape (B, N, W): the
    /// median time of a user kernel dispatch (a [B, 1, W] update, as a controller's or an
    /// optimiser's would be) and of an `axpy` over the memory (summing its gradient over
    /// steps), with the axpy's GB/s and roofline fraction. Not CSV rows: the CSV's ops are
    /// the memory ops of DESIGN.md §9.
    pub fn bookkeeping(&mut self, shape: Shape4) -> Result<()> {
        let (b, _, n, w) = shape;
        let gpu = self.gpu;
        let mut seed = 11;
        let x = self.upload(&mut seed, &[b, n, w], -1.0, 1.0)?;
        let mut y = self.upload(&mut seed, &[b, n, w], -1.0, 1.0)?;
        let v = self.upload(&mut seed, &[b, 1, w], -1.0, 1.0)?;
        let k = gpu.kernel(
            "bench_sgd",
            "@group(0) @binding(0) var<uniform> p: array<vec4<u32>, 4>;
             @group(0) @binding(1) var<storage, read_write> v: array<f32>;
             @compute @workgroup_size(64)
             fn main(@builtin(global_invocation_id) id: vec3<u32>) {
                 if id.x < p[0].x { v[id.x] = v[id.x] * bitcast<f32>(p[0].y); }
             }",
            "main",
            &[ntm_kernels::Access::ReadWrite],
        )?;
        self.ramp_if_idle()?;
        let len = (b * w) as u32;
        let params = [len, 0.999f32.to_bits()];
        let groups = [len.div_ceil(64), 1, 1];
        let reps = self.reps;
        let kernel = gpu
            .profile(reps, || gpu.dispatch(&k, groups, &[&v], &params))?
            .median();
        let axpy = gpu.profile(reps, || gpu.axpy(0.5, &x, &mut y))?.median();
        let bytes = 3 * x.size_bytes();
        let gbps = bytes as f64 / axpy.as_secs_f64() / 1e9;
        self.bookkeeping.push((
            shape,
            kernel.as_secs_f64() * 1e6,
            axpy.as_secs_f64() * 1e6,
            gbps,
            gbps / self.roofline_gbps.max(1e-12),
        ));
        self.busy = Some(Instant::now());
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
            "{KEY_COLUMNS} {:>12} {:>12} {:>12} {:>8} {:>6}",
            "median_us", "min_us", "bytes", "GB/s", "roof%"
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "{} {:>12.1} {:>12.1} {:>12} {:>8.2} {:>6.1}",
                r.key_columns(),
                r.median_us,
                r.min_us,
                r.bytes,
                r.gbps,
                r.roofline_fraction * 100.0
            );
        }
        s
    }
}

/// What to measure: shapes, repetitions, filters, where to write the CSV and plot.
#[derive(Clone, Debug)]
pub struct Config {
    /// Shapes (B, H, N, W) in order.
    pub shapes: Vec<Shape4>,
    /// Timed repetitions per row (slow rows use at most 3).
    pub reps: usize,
    /// Only ops whose name contains this (the copy baseline is always measured).
    pub filter: Option<String>,
    /// Soft rows are skipped where the memory is larger than this many bytes.
    pub soft_limit: u64,
    /// Soft and whole-step rows of a shape (both O(N·W)) are skipped when their time, projected
    /// from the previous N of the same (B, H, W), would exceed this many seconds; the first
    /// (plotted) slice is exempt.
    pub soft_seconds: f64,
    /// Steps of backprop through time for the memory accounting.
    pub steps: u64,
    /// Directory for `memory_access.csv` and `memory_access.svg`, if any.
    pub out_dir: Option<std::path::PathBuf>,
    /// Print each shape to stderr as it starts.
    pub progress: bool,
    /// Dtypes of the memory-shaped tensors: every shape's rows are measured for each.
    pub dtypes: Vec<DType>,
    /// Seconds of each row's own work run just before it is timed.
    pub warm_seconds: f64,
}

/// Parses `NTM_BENCH_DTYPES`: `"f32,f16"` (either or both).
pub fn parse_dtypes(text: &str) -> std::result::Result<Vec<DType>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        out.push(match part {
            "f32" => DType::F32,
            "f16" => DType::F16,
            other => {
                return Err(format!(
                    "NTM_BENCH_DTYPES: {other:?} is neither f32 nor f16"
                ))
            }
        });
    }
    if out.is_empty() {
        return Err("NTM_BENCH_DTYPES: no dtype given (format: f32,f16)".into());
    }
    Ok(out)
}

/// Parses `NTM_BENCH_SHAPES`: `"B,H,N,W;B,H,N,W;..."`, every size at least 1.
pub fn parse_shapes(text: &str) -> std::result::Result<Vec<Shape4>, String> {
    let mut out = Vec::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let v: Vec<usize> = part
            .split(',')
            .map(|x| x.trim().parse::<usize>().ok().filter(|&d| d > 0))
            .collect::<Option<_>>()
            .filter(|v: &Vec<usize>| v.len() == 4)
            .ok_or_else(|| {
                format!("NTM_BENCH_SHAPES: {part:?} is not B,H,N,W with four sizes of at least 1")
            })?;
        out.push((v[0], v[1], v[2], v[3]));
    }
    if out.is_empty() {
        return Err("NTM_BENCH_SHAPES: no shape given (format: B,H,N,W;B,H,N,W)".into());
    }
    Ok(out)
}

const SWEEP_N: [usize; 6] = [1024, 4096, 16384, 65536, 262144, 1048576];

impl Config {
    /// The default sweep: N from 1,024 to 1,048,576 (powers of 4) at W = 64 for B in {1, 16}
    /// and H in {1, 4}, and at W in {32, 128} for B = 1, H = 1.
    pub fn sweep() -> Config {
        let mut shapes = Vec::new();
        for (b, h, w) in [
            (1, 1, 64),
            (1, 4, 64),
            (16, 1, 64),
            (16, 4, 64),
            (1, 1, 32),
            (1, 1, 128),
        ] {
            shapes.extend(SWEEP_N.iter().map(|&n| (b, h, n, w)));
        }
        Config {
            shapes,
            reps: 7,
            filter: None,
            soft_limit: u64::MAX,
            soft_seconds: f64::INFINITY,
            steps: 100,
            out_dir: None,
            progress: false,
            dtypes: vec![DType::F32, DType::F16],
            warm_seconds: WARM_SECONDS,
        }
    }
    /// The quick sweep: N in {1,024, 65,536} at B = 1, H = 1, W = 64 (every op).
    pub fn quick() -> Config {
        Config {
            shapes: vec![(1, 1, 1024, 64), (1, 1, 65536, 64)],
            reps: 5,
            ..Config::sweep()
        }
    }
}

/// The result of [`run`].
#[derive(Debug)]
pub struct Report {
    /// Every measured row.
    pub rows: Vec<Row>,
    /// Shapes or rows not measured, and why.
    pub skipped: Vec<String>,
    /// Backprop memory per shape: (shape, soft bytes, discrete bytes) for `steps` steps.
    pub memory: Vec<(Shape4, u64, u64)>,
    /// The whole report as printed.
    pub text: String,
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

/// Runs the sweep of `cfg` on `gpu`: prints nothing, returns the report (and writes the CSV
/// and SVG plot into `cfg.out_dir`).
pub fn run(gpu: &Gpu, cfg: &Config) -> ReportResult<Report> {
    let ad = gpu.adapter();
    let mut bench = Bench::new(gpu, cfg.reps, cfg.filter.clone());
    bench.warm_seconds = cfg.warm_seconds;
    let mut skipped = Vec::new();
    let mut memory = Vec::new();
    // Soft time spent at the previous N of each (B, H, W): (N, seconds).
    let started = Instant::now();
    let mut last_soft: std::collections::HashMap<(usize, usize, usize), (usize, f64)> =
        Default::default();
    let plotted = cfg.shapes.first().map(|&(b, h, _, w)| (b, h, w));
    for &shape in &cfg.shapes {
        let (b, h, n, w) = shape;
        let bytes = (b * n * w * 4) as u64;
        if bytes > ad.max_buffer {
            skipped.push(format!(
                "B={b} H={h} N={n} W={w}: memory of {:.0} MiB exceeds the adapter's max_buffer_size of {:.0} MiB",
                mib(bytes),
                mib(ad.max_buffer)
            ));
            continue;
        }
        let mut soft = bytes <= cfg.soft_limit;
        if !soft {
            skipped.push(format!(
                "B={b} H={h} N={n} W={w}: soft and whole-step rows skipped, memory of {:.0} MiB exceeds the soft budget of {:.0} MiB (NTM_BENCH_SOFT_MIB)",
                mib(bytes),
                mib(cfg.soft_limit)
            ));
        }
        let projected = last_soft
            .get(&(b, h, w))
            .map(|&(pn, secs)| secs * n as f64 / pn as f64);
        if let Some(p) =
            projected.filter(|&p| soft && p > cfg.soft_seconds && plotted != Some((b, h, w)))
        {
            soft = false;
            skipped.push(format!(
                "B={b} H={h} N={n} W={w}: soft and whole-step rows skipped, projected to take {p:.0} s, over the budget of {:.0} s per shape (NTM_BENCH_SOFT_SECONDS)",
                cfg.soft_seconds
            ));
        }
        let before = bench.soft_seconds;
        if cfg.progress {
            eprintln!(
                "[{:5.0} s] B={b} H={h} N={n} W={w}{}",
                started.elapsed().as_secs_f64(),
                if soft { "" } else { " (discrete rows only)" }
            );
        }
        bench.copy_baseline(shape)?;
        for &dt in &cfg.dtypes {
            bench.dtype = dt;
            bench.shape(shape, soft)?;
        }
        bench.dtype = DType::F32;
        if soft && cfg.filter.is_none() {
            bench.bookkeeping(shape)?;
        }
        if soft {
            // The budget is per dtype: each dtype's rows of the next shape are projected alone.
            let per_dtype = (bench.soft_seconds - before) / cfg.dtypes.len().max(1) as f64;
            last_soft.insert((b, h, w), (n, per_dtype));
        }
        let (sb, db) = bench.backprop_memory(shape, cfg.steps)?;
        memory.push((shape, sb, db));
    }
    let mut text = String::new();
    let _ = writeln!(text, "adapter: {ad}");
    let _ = writeln!(
        text,
        "timing: {}; median and min of up to {} runs after a warm-up (3 for rows slower than 0.3 s, 2 over 1 s), each row after {:.0} ms of its own work{}",
        bench.clock.map_or("none".to_string(), |c| c.to_string()),
        cfg.reps,
        cfg.warm_seconds * 1e3,
        if bench.ramps > 0 {
            format!(
                "; {} clock ramps ({RAMP_SECONDS:.0} s of copies before a row that followed over {IDLE_SECONDS} s of device idle)",
                bench.ramps
            )
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        text,
        "roofline per shape (each row's roof% is against its own shape's): the faster of the driver's \
         copy_buffer_to_buffer and the crate's copy kernel{}",
        if ad.is_cpu {
            "; on this CPU adapter the driver's copy is a memcpy outside the compute path, so the copy kernel sets it"
        } else {
            ""
        }
    );
    let _ = writeln!(
        text,
        "{:>3} {:>2} {:>8} {:>4} {:>10} {:>14} {:>14} {:>14}  set by",
        "B", "H", "N", "W", "MiB", "driver GB/s", "kernel GB/s", "roofline GB/s"
    );
    for ((b, h, n, w), driver, kernel, roof) in &bench.rooflines {
        let _ = writeln!(
            text,
            "{b:>3} {h:>2} {n:>8} {w:>4} {:>10.1} {driver:>14.2} {kernel:>14.2} {roof:>14.2}  {}",
            mib((b * n * w * 4) as u64),
            if roof == kernel {
                "copy kernel"
            } else {
                "driver copy"
            }
        );
    }
    text.push('\n');
    text.push_str(&bench.table());
    if !bench.bookkeeping.is_empty() {
        let _ = writeln!(
            text,
            "\na step's bookkeeping beside the ops: a user kernel dispatch ([B, 1, W] update) and an axpy of the memory (3 x its bytes)"
        );
        let _ = writeln!(
            text,
            "{:>3} {:>2} {:>8} {:>4} {:>14} {:>12} {:>10} {:>6}",
            "B", "H", "N", "W", "user kernel us", "axpy us", "GB/s", "roof%"
        );
        for ((b, h, n, w), kus, aus, gbps, frac) in &bench.bookkeeping {
            let _ = writeln!(
                text,
                "{b:>3} {h:>2} {n:>8} {w:>4} {kus:>14.1} {aus:>12.1} {gbps:>10.2} {:>6.1}",
                frac * 100.0
            );
        }
    }
    text.push('\n');
    text.push_str(&speedups(&bench.rows));
    if cfg.dtypes.contains(&DType::F16) && cfg.dtypes.contains(&DType::F32) {
        text.push('\n');
        text.push_str(&f16_speedups(&bench.rows));
    }
    let _ = writeln!(text, "\nbackprop memory for T = {} steps (soft: a memory snapshot per step; discrete: undo record + read indices per step)", cfg.steps);
    let _ = writeln!(
        text,
        "{:>3} {:>2} {:>8} {:>4} {:>14} {:>14} {:>10}",
        "B", "H", "N", "W", "soft_bytes", "discrete_bytes", "ratio"
    );
    for ((b, h, n, w), sb, db) in &memory {
        let _ = writeln!(
            text,
            "{b:>3} {h:>2} {n:>8} {w:>4} {sb:>14} {db:>14} {:>10.0}",
            *sb as f64 / *db as f64
        );
    }
    for s in &skipped {
        let _ = writeln!(text, "skipped: {s}");
    }
    if let Some(dir) = &cfg.out_dir {
        let io = |e: std::io::Error| format!("writing {}: {e}", dir.display());
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut csv = String::from(CSV_HEADER);
        csv.push('\n');
        for r in &bench.rows {
            csv.push_str(&r.csv());
            csv.push('\n');
        }
        std::fs::write(dir.join("memory_access.csv"), csv).map_err(io)?;
        std::fs::write(
            dir.join("memory_access.svg"),
            plot(&bench.rows, &memory, &ad.name, cfg.steps),
        )
        .map_err(io)?;
    }
    Ok(Report {
        rows: bench.rows,
        skipped,
        memory,
        text,
    })
}

/// The median of the f32 row of (op, access, pass) at `shape`.
fn median_of(rows: &[Row], op: &str, access: &str, pass: &str, shape: Shape4) -> Option<f64> {
    median_dtype(rows, op, access, pass, shape, "f32")
}

fn median_dtype(
    rows: &[Row],
    op: &str,
    access: &str,
    pass: &str,
    shape: Shape4,
    dtype: &str,
) -> Option<f64> {
    rows.iter()
        .find(|r| {
            r.dtype == dtype
                && r.op == op
                && r.access == access
                && r.pass == pass
                && (r.batch, r.heads, r.slots, r.width) == shape
        })
        .map(|r| r.median_us)
}

/// Discrete over soft speedups per shape, where both were measured.
fn speedups(rows: &[Row]) -> String {
    let mut s =
        String::from("speedup of discrete over soft (soft time / discrete time, medians)\n");
    let _ = writeln!(
        s,
        "{:>3} {:>2} {:>8} {:>4} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "B",
        "H",
        "N",
        "W",
        "read f+b",
        "write f+b",
        "access both",
        "step fwd",
        "step bwd",
        "step both"
    );
    let mut shapes: Vec<Shape4> = rows
        .iter()
        .map(|r| (r.batch, r.heads, r.slots, r.width))
        .collect();
    shapes.dedup();
    for sh in shapes {
        let fb = |op: &str, acc: &str| {
            Some(
                median_of(rows, op, acc, "forward", sh)?
                    + median_of(rows, op, acc, "backward", sh)?,
            )
        };
        let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.1}x", a / b),
            _ => "-".to_string(),
        };
        let one = |op: &str, pass: &str| {
            ratio(
                median_of(rows, op, "soft", pass, sh),
                median_of(rows, op, "discrete", pass, sh),
            )
        };
        let (b, h, n, w) = sh;
        let _ = writeln!(
            s,
            "{b:>3} {h:>2} {n:>8} {w:>4} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12}",
            ratio(fb("read", "soft"), fb("read", "discrete")),
            ratio(fb("write", "soft"), fb("write", "discrete")),
            one("access", "both"),
            one("step", "forward"),
            one("step", "backward"),
            one("step", "both")
        );
    }
    s
}

/// f16 over f32 memory, per shape: the f32 median over the f16 median of each soft
/// forward op (half the bytes: 2x at best), and their roofline fractions.
fn f16_speedups(rows: &[Row]) -> String {
    let mut s = String::from(
        "speedup of an f16 memory over f32 (f32 time / f16 time, medians; roof% f32 / f16)\n",
    );
    let ops = [
        ("content_address", "soft", "forward"),
        ("read", "soft", "forward"),
        ("write", "soft", "forward"),
        ("read", "soft", "backward"),
        ("write", "soft", "backward"),
        ("access", "discrete", "both"),
    ];
    let _ = write!(s, "{:>3} {:>2} {:>8} {:>4}", "B", "H", "N", "W");
    for (op, acc, pass) in ops {
        let name = format!("{op} {}{}", &acc[..1], &pass[..1]);
        let _ = write!(s, " {name:>24}");
    }
    s.push('\n');
    let mut shapes: Vec<Shape4> = rows
        .iter()
        .map(|r| (r.batch, r.heads, r.slots, r.width))
        .collect();
    shapes.dedup();
    for sh in shapes {
        let (b, h, n, w) = sh;
        let _ = write!(s, "{b:>3} {h:>2} {n:>8} {w:>4}");
        for (op, acc, pass) in ops {
            let find = |dt: &str| {
                rows.iter().find(|r| {
                    r.dtype == dt
                        && (r.op.as_str(), r.access, r.pass) == (op, acc, pass)
                        && (r.batch, r.heads, r.slots, r.width) == sh
                })
            };
            let cell = match (find("f32"), find("f16")) {
                (Some(a), Some(b)) if b.median_us > 0.0 => format!(
                    "{:.2}x ({:.0}%/{:.0}%)",
                    a.median_us / b.median_us,
                    a.roofline_fraction * 100.0,
                    b.roofline_fraction * 100.0
                ),
                _ => "-".into(),
            };
            let _ = write!(s, " {cell:>24}");
        }
        s.push('\n');
    }
    s
}

/// One line of a plot: name, colour, dash pattern, points (N, value).
type Series = (String, &'static str, &'static str, Vec<(f64, f64)>);

/// Log-log plots of time against N, soft and discrete on the same axes, one panel per op and
/// one for the whole step, and backprop memory against N, as one SVG.
fn plot(rows: &[Row], memory: &[(Shape4, u64, u64)], adapter: &str, steps: u64) -> String {
    // The slice plotted: the first shape's B, H, W.
    let Some(first) = rows.iter().find(|r| r.op != "copy") else {
        return String::from("<svg xmlns=\"http://www.w3.org/2000/svg\"/>");
    };
    let (b, h, w) = (first.batch, first.heads, first.width);
    let slice: Vec<&Row> = rows
        .iter()
        .filter(|r| (r.batch, r.heads, r.width) == (b, h, w) && r.dtype == "f32")
        .collect();
    let panels = ["content_address", "read", "write", "access", "step"];
    let (pw, ph, cols) = (420.0, 300.0, 3usize);
    let total_h = ph * 2.0 + 40.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{total_h}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"14\">ntm-kernels: soft vs discrete memory access, B={b} H={h} W={w}, on {}</text>\n",
        pw * cols as f64,
        xml(adapter)
    );
    let mut all: Vec<(String, Vec<Series>, &str)> = Vec::new();
    for op in panels {
        let mut series = Vec::new();
        for (acc, color) in [("soft", "#d62728"), ("discrete", "#1f77b4")] {
            for (pass, dash) in [("forward", ""), ("backward", "6,3"), ("both", "2,2")] {
                let pts: Vec<(f64, f64)> = slice
                    .iter()
                    .filter(|r| r.op == op && r.access == acc && r.pass == pass)
                    .map(|r| (r.slots as f64, r.median_us))
                    .collect();
                if !pts.is_empty() {
                    series.push((format!("{acc} {pass}"), color, dash, pts));
                }
            }
        }
        all.push((format!("{op}: time vs N"), series, "median time (us)"));
    }
    let mem: Vec<(f64, f64, f64)> = memory
        .iter()
        .filter(|((mb, mh, _, mw), _, _)| (*mb, *mh, *mw) == (b, h, w))
        .map(|((_, _, n, _), s, d)| (*n as f64, *s as f64, *d as f64))
        .collect();
    all.push((
        format!("backprop memory, T = {steps}"),
        vec![
            (
                "soft (snapshots)".into(),
                "#d62728",
                "",
                mem.iter().map(|m| (m.0, m.1)).collect(),
            ),
            (
                "discrete (undo records)".into(),
                "#1f77b4",
                "",
                mem.iter().map(|m| (m.0, m.2)).collect(),
            ),
        ],
        "bytes kept",
    ));
    for (k, (title, series, ylabel)) in all.iter().enumerate() {
        let (ox, oy) = ((k % cols) as f64 * pw, 30.0 + (k / cols) as f64 * ph);
        svg.push_str(&panel(ox, oy, pw, ph, title, ylabel, series));
    }
    svg.push_str("</svg>\n");
    svg
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn panel(
    ox: f64,
    oy: f64,
    pw: f64,
    ph: f64,
    title: &str,
    ylabel: &str,
    series: &[Series],
) -> String {
    let (l, r, t, bm) = (ox + 62.0, ox + pw - 12.0, oy + 24.0, oy + ph - 40.0);
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.3.iter().copied())
        .filter(|p| p.0 > 0.0 && p.1 > 0.0)
        .collect();
    let mut out = format!(
        "<text x=\"{}\" y=\"{}\" font-size=\"12\" font-weight=\"bold\">{}</text>\n",
        l,
        oy + 14.0,
        xml(title)
    );
    if pts.is_empty() {
        return out;
    }
    let lg = |v: f64| v.log10();
    let (x0, x1) = (
        lg(pts.iter().map(|p| p.0).fold(f64::MAX, f64::min)).floor(),
        lg(pts.iter().map(|p| p.0).fold(0.0, f64::max)).ceil(),
    );
    let (y0, y1) = (
        lg(pts.iter().map(|p| p.1).fold(f64::MAX, f64::min)).floor(),
        lg(pts.iter().map(|p| p.1).fold(0.0, f64::max)).ceil(),
    );
    let (x1, y1) = (x1.max(x0 + 1.0), y1.max(y0 + 1.0));
    let px = |x: f64| l + (lg(x) - x0) / (x1 - x0) * (r - l);
    let py = |y: f64| bm - (lg(y) - y0) / (y1 - y0) * (bm - t);
    let _ = writeln!(
        out,
        "<rect x=\"{l}\" y=\"{t}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>",
        r - l,
        bm - t
    );
    for e in x0 as i32..=x1 as i32 {
        let x = px(10f64.powi(e));
        let _ = writeln!(out, "<line x1=\"{x}\" y1=\"{t}\" x2=\"{x}\" y2=\"{bm}\" stroke=\"#ddd\"/><text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">1e{e}</text>", bm + 14.0);
    }
    for e in y0 as i32..=y1 as i32 {
        let y = py(10f64.powi(e));
        let _ = writeln!(out, "<line x1=\"{l}\" y1=\"{y}\" x2=\"{r}\" y2=\"{y}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">1e{e}</text>", l - 4.0, y + 4.0);
    }
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">memory slots N (log scale)</text>",
        (l + r) / 2.0,
        bm + 30.0
    );
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 {} {})\">{} (log scale)</text>",
        ox + 14.0,
        (t + bm) / 2.0,
        ox + 14.0,
        (t + bm) / 2.0,
        xml(ylabel)
    );
    for (k, (name, color, dash, p)) in series.iter().enumerate() {
        let path: Vec<String> = p
            .iter()
            .filter(|q| q.0 > 0.0 && q.1 > 0.0)
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(out, "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\"/>", path.join(" "));
        let ly = t + 12.0 + k as f64 * 13.0;
        let _ = writeln!(
            out,
            "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            l + 6.0,
            l + 28.0,
            l + 32.0,
            ly + 4.0,
            xml(name)
        );
    }
    out
}
