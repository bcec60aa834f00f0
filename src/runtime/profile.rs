//! Timing recorded work: GPU timestamps around the compute passes of each run where the
//! adapter has them, else the wall clock over batches of runs.

use super::Gpu;
use crate::error::{Error, Result};

/// While profiling: the query set each compute pass writes its start and end timestamps to.
pub(crate) struct Capture {
    set: wgpu::QuerySet,
    next: u32,
    /// Op of each timed pass (with `NTM_PROFILE_DISPATCHES`, op and kernel), for
    /// `NTM_PROFILE_PASSES`.
    labels: Vec<String>,
    /// `NTM_PROFILE_DISPATCHES`: every dispatch in a pass of its own, so that the per-pass
    /// breakdown names the slow kernel (slower runs: passes are not free).
    pub(crate) per_dispatch: bool,
    /// A pass found the set full and went untimed.
    overflow: bool,
}

impl Capture {
    /// The query set and first index for the next pass's timestamps, or `None` when full.
    pub(crate) fn next_pass(&mut self, op: &str, kernel: &str) -> Option<(wgpu::QuerySet, u32)> {
        if self.next + 2 > wgpu::QUERY_SET_MAX_QUERIES {
            self.overflow = true;
            return None;
        }
        self.next += 2;
        self.labels.push(if self.per_dispatch {
            format!("{op} {kernel}")
        } else {
            op.to_string()
        });
        Some((self.set.clone(), self.next - 2))
    }
}

/// Where the times of a [`Profile`] come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// GPU timestamp queries: from the start of an op's first pass to the end of its last.
    GpuTimestamps,
    /// Wall clock over a batch of repetitions with one submit-and-wait, divided by the count.
    WallClock,
}

impl std::fmt::Display for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Clock::GpuTimestamps => "GPU timestamps",
            Clock::WallClock => "wall clock (batched)",
        })
    }
}

/// Times of repeated runs of some GPU work, from [`Gpu::profile`].
#[derive(Clone, Debug)]
pub struct Profile {
    /// One duration per sample.
    pub samples: Vec<std::time::Duration>,
    /// How they were measured.
    pub clock: Clock,
}

impl Profile {
    /// The median sample.
    pub fn median(&self) -> std::time::Duration {
        let mut v = self.samples.clone();
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    }
    /// The fastest sample.
    pub fn min(&self) -> std::time::Duration {
        self.samples.iter().min().copied().unwrap_or_default()
    }
}

impl Gpu {
    /// Runs `f` `reps` times and times each run: with GPU timestamp queries where the adapter
    /// has them (one sample per run, from its first compute pass's start to its last pass's
    /// end; a run's ops share passes as they do outside profiling), else
    /// by wall clock over batches of runs with one submit-and-wait each (up to 5 samples).
    /// Work queued before the call is finished first and not timed.
    pub fn profile(&self, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<Profile> {
        const OP: &str = "profile";
        self.sync()?;
        let reps = reps.max(1);
        if !self.adapter().timestamps {
            let batches = reps.min(5);
            let mut samples = Vec::with_capacity(batches);
            for k in 0..batches {
                let count = reps / batches + usize::from(k < reps % batches);
                let t0 = std::time::Instant::now();
                for _ in 0..count {
                    f()?;
                }
                self.sync()?;
                samples.push(t0.elapsed() / count as u32);
            }
            return Ok(Profile {
                samples,
                clock: Clock::WallClock,
            });
        }
        let period_ns = self.queue.get_timestamp_period() as f64;
        let mut samples = Vec::with_capacity(reps);
        let mut done = 0;
        while done < reps {
            let set = self.scoped(|| {
                self.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("ntm-kernels profile"),
                    ty: wgpu::QueryType::Timestamp,
                    count: wgpu::QUERY_SET_MAX_QUERIES,
                })
            });
            self.lock().capture = Some(Capture {
                set: set.clone(),
                next: 0,
                labels: Vec::new(),
                overflow: false,
                per_dispatch: std::env::var_os("NTM_PROFILE_DISPATCHES").is_some(),
            });
            let mut marks = Vec::new();
            let result = (|| {
                while done < reps {
                    let start = self.lock().capture.as_ref().map_or(0, |c| c.next);
                    f()?;
                    // A run's ops share compute passes, as they do outside profiling; the run
                    // is timed from its first pass's start to its last pass's end.
                    let mut rec = self.lock();
                    rec.pass = None;
                    let (end, overflow) = rec
                        .capture
                        .as_ref()
                        .map_or((0, false), |c| (c.next, c.overflow));
                    drop(rec);
                    if overflow {
                        // This run went partly untimed: drop it and time it again in a fresh set.
                        if start == 0 {
                            return Err(Error::Invalid {
                                op: OP,
                                message: format!(
                                    "one run records more than {} passes",
                                    wgpu::QUERY_SET_MAX_QUERIES / 2
                                ),
                            });
                        }
                        break;
                    }
                    if end == start {
                        return Err(Error::Invalid {
                            op: OP,
                            message: "the profiled closure recorded no GPU work".into(),
                        });
                    }
                    marks.push((start, end));
                    done += 1;
                }
                Ok(())
            })();
            let mut rec = self.lock();
            let (used, labels) = rec
                .capture
                .take()
                .map_or((0, Vec::new()), |c| (c.next, c.labels));
            result?;
            if used == 0 {
                continue;
            }
            let bytes = used as u64 * 8;
            let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("ntm-kernels timestamps"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("ntm-kernels timestamps readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let enc = self.encoder(&mut rec);
            enc.resolve_query_set(&set, 0..used, &resolve, 0);
            enc.copy_buffer_to_buffer(&resolve, 0, &staging, 0, bytes);
            self.flush_batch(&mut rec);
            drop(rec);
            let raw = self.map_read(OP, &staging, bytes)?;
            let ts: &[u64] = bytemuck::cast_slice(&raw);
            if std::env::var_os("NTM_PROFILE_PASSES").is_some() {
                // Per-pass breakdown of the first timed run, to find the slow kernel of an op.
                if let Some(&(start, end)) = marks.first() {
                    for q in (start..end).step_by(2) {
                        let (q0, q1) = (q as usize, q as usize + 1);
                        let ns = ts[q1].saturating_sub(ts[q0]) as f64 * period_ns;
                        // The idle time before the pass: barriers, clears, host stalls.
                        let gap = if q > start {
                            ts[q0].saturating_sub(ts[q0 - 1]) as f64 * period_ns
                        } else {
                            0.0
                        };
                        eprintln!(
                            "  pass {:<50} {:>10.1} us (after {:.1} us)",
                            labels[q as usize / 2],
                            ns / 1e3,
                            gap / 1e3
                        );
                    }
                }
            }
            for (start, end) in marks {
                let ticks = ts[end as usize - 1].saturating_sub(ts[start as usize]);
                samples.push(std::time::Duration::from_nanos(
                    (ticks as f64 * period_ns) as u64,
                ));
            }
        }
        self.collect_errors(OP)?;
        Ok(Profile {
            samples,
            clock: Clock::GpuTimestamps,
        })
    }
}
