//! Robustness of the host layer: index checks across batch submits, error handling shared with
//! the application, device limits, wait deadlines, scratch memory, undo order.
mod common;
use common::*;
use ntm_kernels::{Error, Gpu, Tensor};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The arena of parameters holds this many dispatches per batch (src/runtime/recorder.rs).
const ARENA_SLOTS: usize = 4096;
/// Index-check slots per batch.
const CHECK_SLOTS: usize = 1024;

/// A tiny memory and the ops that fill a batch with one dispatch each.
struct Filler {
    m: Tensor,
    w: Tensor,
    e: Tensor,
    a: Tensor,
}

impl Filler {
    fn new(g: &Gpu) -> Filler {
        Filler {
            m: g.upload(&[1, 1, 1], &[0.5]).unwrap(),
            w: g.upload(&[1, 1, 1], &[1.0]).unwrap(),
            e: g.upload(&[1, 1, 1], &[0.0]).unwrap(),
            a: g.upload(&[1, 1, 1], &[0.0]).unwrap(),
        }
    }
    /// `count` soft writes: one dispatch each, no index check.
    fn record(&mut self, g: &Gpu, count: usize) {
        for _ in 0..count {
            g.soft_write(&mut self.m, &self.w, &self.e, &self.a)
                .unwrap();
        }
    }
}

/// Each index-checked op, given a Gpu, records once with a bad index (or, for sampling, a row
/// with no positive weight) and names the op its error must carry.
type BadOp = fn(&Gpu, &Bad);

struct Bad {
    s: [usize; 4], // B, H, N, W
    m: Tensor,
    bad: ntm_kernels::Indices,
    good: ntm_kernels::Indices,
    v: Tensor,
    w: Tensor,
    zero_w: Tensor,
    adv: Tensor,
}

impl Bad {
    fn new(g: &Gpu) -> Bad {
        let s = [2, 3, 5, 4];
        let [b, h, n, w] = s;
        let mut bad_idx = vec![1u32; b * h];
        bad_idx[4] = n as u32 + 2; // batch 1, head 1
        Bad {
            s,
            m: g.upload(&[b, n, w], &vec![0.25; b * n * w]).unwrap(),
            bad: g.upload_indices(&[b, h], &bad_idx).unwrap(),
            good: g.upload_indices(&[b, h], &vec![1; b * h]).unwrap(),
            v: g.upload(&[b, h, w], &vec![0.5; b * h * w]).unwrap(),
            w: g.upload(&[b, h, n], &vec![1.0 / n as f32; b * h * n])
                .unwrap(),
            zero_w: {
                let mut z = vec![0.2f32; b * h * n];
                z[4 * n..5 * n].fill(0.0);
                g.upload(&[b, h, n], &z).unwrap()
            },
            adv: g.upload(&[b, h], &vec![1.0; b * h]).unwrap(),
        }
    }
}

fn expect_bad(op: &str, r: Result<(), Error>) {
    match r {
        Err(Error::IndexOutOfRange {
            op: o,
            batch: 1,
            head: 1,
            index: 7,
            slots: 5,
        }) if o == op => {}
        Err(Error::Invalid { op: o, message })
            if o == op && message.contains("[batch 1, head 1]") => {}
        other => panic!("{op}: expected the bad (batch 1, head 1) to be reported, got {other:?}"),
    }
}

fn checked_ops() -> Vec<(&'static str, BadOp)> {
    vec![
        ("discrete_read", |g, c| {
            g.discrete_read(&c.m, &c.bad).unwrap();
        }),
        ("discrete_read_backward", |g, c| {
            let [b, _, n, w] = c.s;
            let mut dm = g.zeros(&[b, n, w]).unwrap();
            g.discrete_read_backward(&c.m, &c.bad, &c.v, &mut dm)
                .unwrap();
        }),
        ("discrete_write", |g, c| {
            let mut m = g.copy(&c.m).unwrap();
            g.discrete_write(&mut m, &c.bad, &c.v, &c.v).unwrap();
        }),
        ("discrete_access (read)", |g, c| {
            let mut m = g.copy(&c.m).unwrap();
            g.discrete_access(&mut m, &c.bad, &c.good, &c.v, &c.v)
                .unwrap();
        }),
        ("discrete_access (write)", |g, c| {
            let mut m = g.copy(&c.m).unwrap();
            g.discrete_access(&mut m, &c.good, &c.bad, &c.v, &c.v)
                .unwrap();
        }),
        ("discrete_access_backward", |g, c| {
            let [b, _, n, w] = c.s;
            let mut m = g.copy(&c.m).unwrap();
            let undo = g.discrete_write(&mut m, &c.good, &c.v, &c.v).unwrap();
            let mut dm = g.zeros(&[b, n, w]).unwrap();
            g.discrete_access_backward(&mut m, &c.bad, &c.v, &undo, &c.v, &c.v, &mut dm)
                .unwrap();
        }),
        ("reinforce_grad", |g, c| {
            g.reinforce_grad(&c.w, &c.bad, &c.adv, 0.1).unwrap();
        }),
        ("sample", |g, c| {
            g.sample(&c.zero_w, 9).unwrap();
        }),
    ]
}

/// Thousands of queued ops with one bad op placed at and around the arena's flush (every
/// dispatch count from 8 before to 1 after it), for every index-checked op: the error is
/// never lost, whichever batch the op's kernels land in.
#[test]
fn index_checks_survive_arena_flushes() {
    let g = own_gpu();
    let c = Bad::new(&g);
    let mut fill = Filler::new(&g);
    for (name, op) in checked_ops() {
        for before in ARENA_SLOTS - 8..=ARENA_SLOTS + 1 {
            g.sync().unwrap();
            fill.record(&g, before);
            op(&g, &c);
            fill.record(&g, 3);
            expect_bad(name, g.sync());
        }
    }
    // The write backward takes its indices from the write's undo record: the write reported
    // them; the backward skips them and reports nothing more.
    let [b, _, n, w] = c.s;
    let mut m = g.copy(&c.m).unwrap();
    let undo = g.discrete_write(&mut m, &c.bad, &c.v, &c.v).unwrap();
    expect_bad("discrete_write", g.sync());
    let mut dm = g.zeros(&[b, n, w]).unwrap();
    let grads = g
        .discrete_write_backward(&undo, &c.v, &c.v, &mut dm)
        .unwrap();
    g.sync().unwrap();
    let dw = g.download(&grads.weight_at_idx).unwrap();
    assert_eq!(dw[4], 0.0, "the bad head's gradient is zero");
}

/// The same at the index-check slots' limit: good ops fill the slots, the bad one lands at and
/// around the point where the checks of a batch run out.
#[test]
fn index_checks_survive_check_slot_flushes() {
    let g = own_gpu();
    let c = Bad::new(&g);
    for before in CHECK_SLOTS - 2..=CHECK_SLOTS + 1 {
        g.sync().unwrap();
        for _ in 0..before {
            g.discrete_read(&c.m, &c.good).unwrap();
        }
        g.discrete_read(&c.m, &c.bad).unwrap();
        for _ in 0..3 {
            g.discrete_read(&c.m, &c.good).unwrap();
        }
        expect_bad("discrete_read", g.sync());
    }
    g.sync().unwrap();
}

/// `from_wgpu` leaves the application's uncaptured-error handler in place, and the crate's
/// waits do not report the application's own errors.
#[test]
fn from_wgpu_keeps_the_applications_error_handler() {
    let (device, queue) = device_with(|_| {});
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    device.on_uncaptured_error(Arc::new(move |_e: wgpu::Error| {
        count.fetch_add(1, Ordering::SeqCst);
    }));
    let g = Gpu::from_wgpu(device.clone(), queue).unwrap();
    let m = g
        .upload(&[1, 3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        .unwrap();
    let w = g.upload(&[1, 1, 3], &[0.0, 1.0, 0.0]).unwrap();
    let r = g.soft_read(&m, &w).unwrap();
    assert_eq!(g.download(&r).unwrap(), vec![3.0, 4.0]);
    // The application's own mistake: a buffer that is both mappable for reading and storage.
    let _bad = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("invalid on purpose"),
        size: 16,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let _ = device.poll(wgpu::PollType::wait_indefinitely());
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "the application's handler saw its error"
    );
    g.sync().unwrap();
    assert_eq!(g.download(&r).unwrap(), vec![3.0, 4.0]);
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "the crate's work raised no error"
    );
}

/// A device whose limits are below what the kernels need is refused up front, naming the limit.
#[test]
fn from_wgpu_checks_the_limits_the_kernels_need() {
    type Lower = fn(&mut wgpu::Limits);
    let cases: [(&str, Lower); 2] = [
        ("max_storage_buffers_per_shader_stage", |l| {
            l.max_storage_buffers_per_shader_stage = 4
        }),
        ("max_compute_workgroup_storage_size", |l| {
            l.max_compute_workgroup_storage_size = 1024
        }),
    ];
    for (name, f) in cases {
        let (device, queue) = device_with(f);
        match Gpu::from_wgpu(device, queue) {
            Err(Error::Limit {
                limit,
                needed,
                available,
            }) => {
                assert_eq!(limit, name);
                assert!(
                    needed > available,
                    "{name}: needed {needed}, available {available}"
                );
                let msg = Error::Limit {
                    limit,
                    needed,
                    available,
                }
                .to_string();
                assert!(msg.contains(name), "{msg}");
            }
            other => panic!("{name}: expected Error::Limit, got {other:?}"),
        }
    }
}

/// A wait gives up at its deadline with an error that says what it waited for; the queued
/// work goes on and the Gpu stays usable.
#[test]
fn waits_give_up_at_the_deadline() {
    let g = own_gpu();
    // Enough queued work that it is still running when the wait starts: 40 writes of 16 MiB
    // on a CPU adapter, of 256 MiB on a GPU (an H200 did 40 of 16 MiB in under a poll).
    let n = if g.adapter().is_cpu { 1 << 16 } else { 1 << 20 };
    let (b, w) = (1, 64);
    let mut m = g.zeros(&[b, n, w]).unwrap();
    let wt = g.upload(&[b, 1, n], &vec![1.0 / n as f32; n]).unwrap();
    let e = g.zeros(&[b, 1, w]).unwrap();
    let a = g.upload(&[b, 1, w], &vec![1.0; w]).unwrap();
    g.sync().unwrap();
    g.set_wait_timeout(Duration::ZERO);
    for _ in 0..40 {
        g.soft_write(&mut m, &wt, &e, &a).unwrap();
    }
    let t0 = std::time::Instant::now();
    let r = g.sync();
    eprintln!("sync with a zero deadline: {r:?} after {:?}", t0.elapsed());
    match r {
        Err(e @ Error::Timeout { op: "sync", .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("waiting for the GPU to finish"), "{msg}");
        }
        // wgpu's GL backend on llvmpipe runs the work inside the submit itself, so when the
        // wait starts there is nothing left to wait for.
        Ok(()) if g.adapter().backend == "Gl" => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    g.set_wait_timeout(ntm_kernels::DEFAULT_WAIT_TIMEOUT);
    let got = g.download(&m).unwrap();
    let want = 40.0 / n as f32;
    assert!(
        got.iter()
            .all(|&x| (x - want).abs() <= 1e-6 * want.max(1.0)),
        "the queued writes completed: {} vs {want}",
        got[0]
    );
}

/// Scratch buffers are pooled for reuse, and the pool can be released.
#[test]
fn scratch_pool_can_be_released() {
    let g = own_gpu();
    let s = [2, 3, 300, 19];
    let [b, h, n, w] = s;
    let m = g.upload(&[b, n, w], &vec![0.5; b * n * w]).unwrap();
    let wt = g
        .upload(&[b, h, n], &vec![1.0 / n as f32; b * h * n])
        .unwrap();
    let r = g.soft_read(&m, &wt).unwrap();
    let before = g.download(&r).unwrap();
    assert!(g.scratch_bytes() > 0, "the soft read's partials are pooled");
    g.release_scratch();
    assert_eq!(g.scratch_bytes(), 0);
    let r = g.soft_read(&m, &wt).unwrap();
    assert_eq!(
        g.download(&r).unwrap(),
        before,
        "same bits with fresh scratch"
    );
}

/// Undo records apply only in last-in-first-out order, to the memory as its write left it.
#[test]
fn undo_out_of_order_is_refused_and_changes_nothing() {
    let g = own_gpu();
    let (b, h, n, w) = (1, 1, 4, 3);
    let m0: Vec<f32> = (0..b * n * w).map(|x| x as f32).collect();
    let mut m = g.upload(&[b, n, w], &m0).unwrap();
    let e = g.upload(&[b, h, w], &[0.5; 3]).unwrap();
    let a = g.upload(&[b, h, w], &[1.0; 3]).unwrap();
    let i1 = g.upload_indices(&[b, h], &[1]).unwrap();
    let i2 = g.upload_indices(&[b, h], &[2]).unwrap();
    let u1 = g.discrete_write(&mut m, &i1, &e, &a).unwrap();
    let after1 = g.download(&m).unwrap();
    let u2 = g.discrete_write(&mut m, &i2, &e, &a).unwrap();
    let after2 = g.download(&m).unwrap();
    // u1 before u2: refused, memory unchanged.
    let err = g.undo_write(&mut m, &u1).unwrap_err();
    assert!(err.to_string().contains("last-in-first-out"), "{err}");
    assert_eq!(g.download(&m).unwrap(), after2);
    // An in-place op between a write and its undo also invalidates the record.
    g.undo_write(&mut m, &u2).unwrap();
    assert_eq!(g.download(&m).unwrap(), after1);
    assert!(g.undo_write(&mut m, &u2).is_err(), "the same undo twice");
    let wt = g.upload(&[b, h, n], &[0.0, 0.0, 0.0, 1.0]).unwrap();
    let u3 = g.discrete_write(&mut m, &i1, &e, &a).unwrap();
    g.soft_write(&mut m, &wt, &e, &a).unwrap();
    let after_soft = g.download(&m).unwrap();
    assert!(g.undo_write(&mut m, &u3).is_err());
    assert_eq!(g.download(&m).unwrap(), after_soft);
    // In order, everything restores bit for bit.
    let mut m = g.upload(&[b, n, w], &m0).unwrap();
    let u1 = g.discrete_write(&mut m, &i1, &e, &a).unwrap();
    let u2 = g.discrete_write(&mut m, &i1, &e, &a).unwrap();
    g.undo_write(&mut m, &u2).unwrap();
    g.undo_write(&mut m, &u1).unwrap();
    assert_eq!(g.download(&m).unwrap(), m0);
}
