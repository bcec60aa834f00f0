//! GPU against the CPU reference for every output of every soft op, on shapes that are not
//! multiples of the workgroup sizes, N = 1, W = 1, several heads, and the edge cases of
//! DESIGN.md: zero keys and rows, strengths up to 1000, one-hot weights with erase exactly 1.
//!
//! Tolerance: |gpu - ref| <= ATOL * max|ref| + RTOL * |ref|, the reference in f64 on the same
//! f32 inputs. f32 sums of N terms err by about sqrt(N) * 6e-8 relative to their scale.
mod common;
use common::*;
use ntm_kernels::reference::{self as r, Shape};
use ntm_kernels::{
    ColumnTiles, Error, Gpu, RowSums, Tensor, MAX_ELEMENTWISE_ROWS, MAX_ELEMENTWISE_ROW_GROUP,
    MAX_READ_BACKWARD_PASSES, MAX_REDUCTION_WORKGROUPS, MAX_STREAM_ROW_GROUP,
    MAX_STREAM_VECS_PER_THREAD,
};

const ATOL: f64 = 2e-5;
const RTOL: f64 = 1e-4;
struct Case {
    s: Shape,
    m: Vec<f32>,
    k: Vec<f32>,
    beta: Vec<f32>,
    w: Vec<f32>,
    e: Vec<f32>,
    a: Vec<f32>,
    g_w: Vec<f32>,
    g_r: Vec<f32>,
    g_m: Vec<f32>,
}

impl Case {
    fn new(s: Shape, seed: u64) -> Case {
        let mut rng = Rng(seed);
        let (bnw, bhw, bhn) = (s.b * s.n * s.w, s.b * s.h * s.w, s.b * s.h * s.n);
        Case {
            s,
            m: rng.vec(bnw, -1.0, 1.0),
            k: rng.vec(bhw, -1.0, 1.0),
            beta: rng.vec(s.b * s.h, 0.0, 20.0),
            w: rng.weights(s.b * s.h, s.n, 3.0),
            e: rng.vec(bhw, 0.0, 1.0),
            a: rng.vec(bhw, -1.0, 1.0),
            g_w: rng.vec(bhn, -1.0, 1.0),
            g_r: rng.vec(bhw, -1.0, 1.0),
            g_m: rng.vec(bnw, -1.0, 1.0),
        }
    }
}

/// A tensor's elements as bits.
fn bits(g: &Gpu, t: &Tensor) -> Vec<u32> {
    g.download(t).unwrap().iter().map(|x| x.to_bits()).collect()
}

/// The soft ops' streamed and elementwise outputs at one case, named, as bits: soft write
/// (in place), content addressing and its backward from the scores (also adding to a
/// gradient), the soft read's and the soft write's backward (also in place).
fn soft_output_bits(g: &Gpu, s: Shape, seed: u64) -> Vec<(&'static str, Vec<u32>)> {
    let c = Case::new(s, seed);
    let (mem_s, vec_s, wt_s) = ([s.b, s.n, s.w], [s.b, s.h, s.w], [s.b, s.h, s.n]);
    let m = up(g, &mem_s, &c.m);
    let w = up(g, &wt_s, &c.w);
    let (e, a) = (up(g, &vec_s, &c.e), up(g, &vec_s, &c.a));
    let k = up(g, &vec_s, &c.k);
    let beta = up(g, &[s.b, s.h], &c.beta);
    let dz = up(g, &wt_s, &c.g_w);
    let read = g.soft_read(&m, &w).unwrap();
    let mut written = g.copy(&m).unwrap();
    g.soft_write(&mut written, &w, &e, &a).unwrap();
    let scores = g.content_address(&m, &k, &beta).unwrap();
    let gc = g
        .content_address_backward_scores(&m, &k, &beta, &dz)
        .unwrap();
    let mut acc = up(g, &mem_s, &c.g_m);
    let gca = g
        .content_address_backward_scores_into(&m, &k, &beta, &dz, &mut acc)
        .unwrap();
    let gr = g
        .soft_read_backward(&m, &w, &up(g, &vec_s, &c.g_r))
        .unwrap();
    let gw = g
        .soft_write_backward(&m, &w, &e, &a, &up(g, &mem_s, &c.g_m))
        .unwrap();
    let mut in_place = up(g, &mem_s, &c.g_m);
    let gwi = g
        .soft_write_backward_into(&m, &w, &e, &a, &mut in_place)
        .unwrap();
    [
        ("soft_read", &read),
        ("soft_write", &written),
        ("content_address", &scores),
        ("content dM", &gc.memory),
        ("content dk", &gc.keys),
        ("content dbeta", &gc.beta),
        ("content dM added", &acc),
        ("content dk (added dM)", &gca.keys),
        ("read dw", &gr.weights),
        ("read dM", &gr.memory),
        ("write dM", &gw.memory),
        ("write dw", &gw.weights),
        ("write de", &gw.erase),
        ("write da", &gw.add),
        ("write dM in place", &in_place),
        ("write dw (in place)", &gwi.weights),
    ]
    .into_iter()
    .map(|(what, t)| (what, bits(g, t)))
    .collect()
}

/// For each shape (case seeds from `seed`), the soft ops' outputs on the Gpu of each setting
/// (`gpu_at`) bit for bit those of the first setting: the first element that differs is
/// named.
fn assert_settings_keep_bits<S: Copy + std::fmt::Debug>(
    settings: &[S],
    shapes: &[Shape],
    seed: u64,
    gpu_at: impl Fn(S) -> Gpu,
) {
    for (k, &s) in shapes.iter().enumerate() {
        let first = soft_output_bits(&gpu_at(settings[0]), s, seed + k as u64);
        for &setting in &settings[1..] {
            let other = soft_output_bits(&gpu_at(setting), s, seed + k as u64);
            for ((name, x), (_, y)) in first.iter().zip(&other) {
                assert_eq!(
                    x.len(),
                    y.len(),
                    "{s:?} {name} at {setting:?}: another length"
                );
                let diff = x.iter().zip(y).position(|(p, q)| p != q);
                assert_eq!(
                    diff, None,
                    "{s:?} {name}: {setting:?} differs from {:?}",
                    settings[0]
                );
            }
        }
    }
}

fn up(g: &Gpu, shape: &[usize], x: &[f32]) -> Tensor {
    g.upload(shape, x).unwrap()
}

fn run(c: &Case, atol: f64) {
    run_on(gpu(), c, atol)
}

fn run_on(g: &Gpu, c: &Case, atol: f64) {
    let s = c.s;
    let tag = format!("B={} H={} N={} W={}", s.b, s.h, s.n, s.w);
    let (mem_s, vec_s, wt_s) = ([s.b, s.n, s.w], [s.b, s.h, s.w], [s.b, s.h, s.n]);
    let m = up(g, &mem_s, &c.m);
    let k = up(g, &vec_s, &c.k);
    let beta = up(g, &[s.b, s.h], &c.beta);
    let w = up(g, &wt_s, &c.w);
    let e = up(g, &vec_s, &c.e);
    let a = up(g, &vec_s, &c.a);
    let dw = up(g, &wt_s, &c.g_w);
    let dr = up(g, &vec_s, &c.g_r);
    let dm = up(g, &mem_s, &c.g_m);
    let (m64, k64, b64, w64) = (f64s(&c.m), f64s(&c.k), f64s(&c.beta), f64s(&c.w));
    let (e64, a64) = (f64s(&c.e), f64s(&c.a));

    // content addressing
    let wa = g.content_address(&m, &k, &beta).unwrap();
    let wa_host = g.download(&wa).unwrap();
    all_close(
        &format!("{tag} content_address"),
        &wa_host,
        &r::content_address(&m64, &k64, &b64, s),
        atol,
        RTOL,
    );
    let ga = g.content_address_backward(&m, &k, &beta, &wa, &dw).unwrap();
    let want = r::content_address_backward(&m64, &k64, &b64, &f64s(&wa_host), &f64s(&c.g_w), s);
    let (tm, tk, tb) = content_terms(
        &m64,
        &k64,
        &b64,
        &dz_terms(&f64s(&wa_host), &f64s(&c.g_w), s.n),
        s,
    );
    let close = |what: &str, t: &Tensor, want: &[f64], terms: &[f64]| {
        all_close_terms(
            &format!("{tag} {what}"),
            &g.download(t).unwrap(),
            want,
            atol,
            RTOL,
            Some(terms),
        )
    };
    close(
        "content_address_backward memory",
        &ga.memory,
        &want.memory,
        &tm,
    );
    close("content_address_backward keys", &ga.keys, &want.keys, &tk);
    close("content_address_backward beta", &ga.beta, &want.beta, &tb);
    let gs = g
        .content_address_backward_scores(&m, &k, &beta, &dw)
        .unwrap();
    let want = r::content_address_backward_scores(&m64, &k64, &b64, &f64s(&c.g_w), s);
    let (tm, tk, tb) = content_terms(&m64, &k64, &b64, &f64s(&c.g_w), s);
    close("backward_scores memory", &gs.memory, &want.memory, &tm);
    close("backward_scores keys", &gs.keys, &want.keys, &tk);
    close("backward_scores beta", &gs.beta, &want.beta, &tb);

    // soft read
    let rd = g.soft_read(&m, &w).unwrap();
    all_close(
        &format!("{tag} soft_read"),
        &g.download(&rd).unwrap(),
        &r::soft_read(&m64, &w64, s),
        atol,
        RTOL,
    );
    let gr = g.soft_read_backward(&m, &w, &dr).unwrap();
    let (want_m, want_w) = r::soft_read_backward(&m64, &w64, &f64s(&c.g_r), s);
    all_close(
        &format!("{tag} soft_read_backward memory"),
        &g.download(&gr.memory).unwrap(),
        &want_m,
        atol,
        RTOL,
    );
    all_close(
        &format!("{tag} soft_read_backward weights"),
        &g.download(&gr.weights).unwrap(),
        &want_w,
        atol,
        RTOL,
    );
    // The memory gradient added to the caller's (c.g_m as what it held).
    let mut added = up(g, &[s.b, s.n, s.w], &c.g_m);
    let gw_into = g.soft_read_backward_into(&m, &w, &dr, &mut added).unwrap();
    let want_added: Vec<f64> = want_m
        .iter()
        .zip(&c.g_m)
        .map(|(x, y)| x + *y as f64)
        .collect();
    all_close(
        &format!("{tag} soft_read_backward_into memory"),
        &g.download(&added).unwrap(),
        &want_added,
        atol,
        RTOL,
    );
    all_close(
        &format!("{tag} soft_read_backward_into weights"),
        &g.download(&gw_into).unwrap(),
        &want_w,
        atol,
        RTOL,
    );

    // soft write
    let mut mw = g.copy(&m).unwrap();
    g.soft_write(&mut mw, &w, &e, &a).unwrap();
    let mut want = m64.clone();
    r::soft_write(&mut want, &w64, &e64, &a64, s);
    all_close(
        &format!("{tag} soft_write"),
        &g.download(&mw).unwrap(),
        &want,
        atol,
        RTOL,
    );
    let gw = g.soft_write_backward(&m, &w, &e, &a, &dm).unwrap();
    let want = r::soft_write_backward(&m64, &w64, &e64, &a64, &f64s(&c.g_m), s);
    all_close(
        &format!("{tag} soft_write_backward memory"),
        &g.download(&gw.memory).unwrap(),
        &want.memory,
        atol,
        RTOL,
    );
    all_close(
        &format!("{tag} soft_write_backward weights"),
        &g.download(&gw.weights).unwrap(),
        &want.weights,
        atol,
        RTOL,
    );
    all_close(
        &format!("{tag} soft_write_backward erase"),
        &g.download(&gw.erase).unwrap(),
        &want.erase,
        atol,
        RTOL,
    );
    all_close(
        &format!("{tag} soft_write_backward add"),
        &g.download(&gw.add).unwrap(),
        &want.add,
        atol,
        RTOL,
    );
    // In place: dM' becomes dM.
    let mut in_place = up(g, &[s.b, s.n, s.w], &c.g_m);
    let gi = g
        .soft_write_backward_into(&m, &w, &e, &a, &mut in_place)
        .unwrap();
    for (what, got, want) in [
        ("memory", &in_place, &want.memory),
        ("weights", &gi.weights, &want.weights),
        ("erase", &gi.erase, &want.erase),
        ("add", &gi.add, &want.add),
    ] {
        all_close(
            &format!("{tag} soft_write_backward_into {what}"),
            &g.download(got).unwrap(),
            want,
            atol,
            RTOL,
        );
    }
}

#[test]
fn every_op_on_the_shape_grid() {
    let mut seed = 100;
    for b in [1, 3] {
        for h in [1, 2, 4, 5] {
            for n in [1, 7, 129, 1000] {
                for w in [1, 19, 64] {
                    seed += 1;
                    run(&Case::new(Shape::new(b, h, n, w), seed), ATOL);
                }
            }
        }
    }
}

/// The Gpus that sum streaming rows each way the adapter can: by workgroup memory always, and
/// by subgroup shuffles where it has `SUBGROUP` (refused, and left as it was, where not).
fn row_sum_gpus() -> Vec<Gpu> {
    let wg = own_gpu();
    wg.set_row_sums(RowSums::Workgroup).unwrap();
    let sub = own_gpu();
    match sub.set_row_sums(RowSums::Subgroup) {
        Ok(()) => vec![wg, sub],
        Err(Error::Unsupported { op, .. }) => {
            assert_eq!(op, "set_row_sums");
            assert_eq!(sub.row_sums(), RowSums::Workgroup);
            vec![wg]
        }
        Err(e) => panic!("set_row_sums: {e}"),
    }
}

/// Rows of 1 to 32 column lanes with each way of summing rows the adapter has: subgroup
/// shuffles where a row's lanes fit the smallest subgroup (lavapipe's is 8, NVIDIA's 32),
/// scalar and vec4 columns, each head count of one head group and several groups; and
/// workgroup memory.
#[test]
fn every_op_on_narrow_rows_both_row_sums() {
    for g in row_sum_gpus() {
        eprintln!("row sums: {:?} on {}", g.row_sums(), g.adapter());
        let mut seed = 900;
        for b in [1, 3] {
            // 1 to 4 heads: one group, kernels specialised for each count (a subgroup
            // butterfly of 1, 2, 3 or 4 lanes); 5: two groups of the any-count kernels.
            for h in [1, 2, 3, 4, 5] {
                for n in [7, 129, 1000] {
                    for w in [3, 6, 8, 20, 28, 64, 100] {
                        seed += 1;
                        run_on(&g, &Case::new(Shape::new(b, h, n, w), seed), ATOL);
                    }
                }
            }
        }
    }
}

/// The elementwise kernels (soft write forward, the soft ops' `dM` passes) at each count of
/// rows per thread and of rows loaded before storing, whatever the adapter's defaults (1 and
/// 4 on GPUs, 8 and 1 on CPU adapters): every op against the reference on the grid, one to
/// five heads (HG = 4 heads held in registers, 5 take the any-count kernels), whole and bound
/// in windows; and every setting's outputs bit for bit those of 1 row per thread. Groups
/// larger than the rows and not dividing them are among them. Counts outside their ranges are
/// refused, the settings unchanged.
#[test]
fn every_op_at_each_elementwise_rows_count() {
    // (rows per thread, rows loaded before storing)
    let settings = [
        (1, 1),
        (2, MAX_ELEMENTWISE_ROW_GROUP),
        (4, 3),
        (MAX_ELEMENTWISE_ROWS, 1),
        (MAX_ELEMENTWISE_ROWS, MAX_ELEMENTWISE_ROW_GROUP),
    ];
    let set = |g: &Gpu, (rows, group): (u32, u32)| {
        g.set_elementwise_rows(rows).unwrap();
        g.set_elementwise_row_group(group).unwrap();
        assert_eq!(
            (g.elementwise_rows(), g.elementwise_row_group()),
            (rows, group)
        );
    };
    let mut seed = 2200;
    for setting in settings {
        let g = own_gpu();
        set(&g, setting);
        for b in [1, 3] {
            for h in [1, 2, 4, 5] {
                for n in [1, 7, 129] {
                    for w in [1, 3, 20, 64] {
                        seed += 1;
                        run_on(&g, &Case::new(Shape::new(b, h, n, w), seed), ATOL);
                    }
                }
            }
        }
        let (device, queue) = device_with(|l| l.max_storage_buffer_binding_size = 256 << 10);
        let gw = Gpu::from_wgpu(device, queue).unwrap();
        set(&gw, setting);
        for s in [Shape::new(2, 2, 1000, 64), Shape::new(3, 5, 700, 65)] {
            seed += 1;
            run_on(&gw, &Case::new(s, seed), ATOL);
        }
    }
    // The same bits at every count: each element is computed by the same operations.
    let shapes = [
        Shape::new(3, 1, 129, 64),
        Shape::new(2, 3, 77, 20),
        Shape::new(2, 5, 50, 7),
        Shape::new(1, 2, 40, 1100),
    ];
    assert_settings_keep_bits(&settings, &shapes, 2300, |setting| {
        let g = own_gpu();
        set(&g, setting);
        g
    });
    let g = own_gpu();
    type Setter = fn(&Gpu, u32) -> Result<(), Error>;
    type Getter = fn(&Gpu) -> u32;
    let settings: [(&str, u32, Setter, Getter); 6] = [
        (
            "set_elementwise_rows",
            MAX_ELEMENTWISE_ROWS,
            Gpu::set_elementwise_rows,
            Gpu::elementwise_rows,
        ),
        (
            "set_elementwise_row_group",
            MAX_ELEMENTWISE_ROW_GROUP,
            Gpu::set_elementwise_row_group,
            Gpu::elementwise_row_group,
        ),
        (
            "set_reduction_workgroups",
            MAX_REDUCTION_WORKGROUPS,
            Gpu::set_reduction_workgroups,
            Gpu::reduction_workgroups,
        ),
        (
            "set_stream_row_group",
            MAX_STREAM_ROW_GROUP,
            Gpu::set_stream_row_group,
            Gpu::stream_row_group,
        ),
        (
            "set_read_backward_passes",
            MAX_READ_BACKWARD_PASSES,
            Gpu::set_read_backward_passes,
            Gpu::read_backward_passes,
        ),
        (
            "set_stream_vecs_per_thread",
            MAX_STREAM_VECS_PER_THREAD,
            Gpu::set_stream_vecs_per_thread,
            Gpu::stream_vecs_per_thread,
        ),
    ];
    for (name, max, set, get) in settings {
        let before = get(&g);
        for bad in [0, max + 1] {
            match set(&g, bad) {
                Err(Error::Invalid { op, message }) => {
                    assert_eq!(op, name);
                    assert!(
                        message.contains(&format!("1 to {max}, not {bad}")),
                        "{message}"
                    );
                }
                other => panic!("{name}({bad}): {other:?}"),
            }
            assert_eq!(get(&g), before, "{name}({bad}) changed the setting");
        }
    }
}

/// The streaming kernels' subgroup loops, and the soft read's column partials of several
/// heads, at each count of rows loaded before summing any (1 to 4, whatever the adapter's
/// default: 4 on GPUs, 1 on CPU adapters), where the adapter sums rows by subgroup shuffles
/// (elsewhere the count is kept and the workgroup sums run; the partials take it anyway):
/// every op against the reference on rows that fit a subgroup, one to five heads (each count
/// of one head group, and two groups), N = 1 and blocks that end within a group of rows,
/// whole and bound in 256 KiB windows; and every count's outputs bit for bit those of 1 row
/// (the rows are finished in the same order).
#[test]
fn every_op_at_each_stream_row_group() {
    // Subgroup row sums where the adapter has them; else the workgroup sums stay.
    let subgroup_sums = |g: &Gpu| match g.set_row_sums(RowSums::Subgroup) {
        Ok(()) | Err(Error::Unsupported { .. }) => {}
        Err(e) => panic!("set_row_sums: {e}"),
    };
    // One workgroup target (the longest blocks, so that every row of a group of 4 occurs: a
    // block of the shortest kind holds 2 rows per row lane), or the adapter's default.
    let sub_gpu = |group: u32, longest: bool| -> Gpu {
        let g = own_gpu();
        subgroup_sums(&g);
        g.set_stream_row_group(group).unwrap();
        assert_eq!(g.stream_row_group(), group);
        // The soft read's backward through the streaming pass (`read_bwd`), and at 5 heads
        // through `dots`.
        g.set_read_backward_passes(1).unwrap();
        if longest {
            g.set_reduction_workgroups(1).unwrap();
        }
        g
    };
    let mut seed = 2600;
    for (group, longest) in (1..=MAX_STREAM_ROW_GROUP).flat_map(|k| [(k, false), (k, true)]) {
        let g = sub_gpu(group, longest);
        for b in [1, 2] {
            for h in [1, 2, 3, 4, 5] {
                for n in [1, 7, 129, 1000] {
                    for w in [3, 8, 20, 32] {
                        seed += 1;
                        run_on(&g, &Case::new(Shape::new(b, h, n, w), seed), ATOL);
                    }
                }
            }
        }
        let (device, queue) = device_with(|l| l.max_storage_buffer_binding_size = 256 << 10);
        let gw = Gpu::from_wgpu(device, queue).unwrap();
        subgroup_sums(&gw);
        gw.set_stream_row_group(group).unwrap();
        gw.set_read_backward_passes(1).unwrap();
        for s in [Shape::new(2, 2, 3000, 32), Shape::new(1, 3, 5000, 20)] {
            seed += 1;
            run_on(&gw, &Case::new(s, seed), ATOL);
        }
    }
    // The same bits at every count.
    let shapes = [
        Shape::new(3, 1, 129, 32),
        Shape::new(2, 3, 77, 20),
        Shape::new(1, 4, 1000, 8),
        Shape::new(2, 5, 50, 7),
    ];
    let groups: Vec<u32> = (1..=MAX_STREAM_ROW_GROUP).collect();
    assert_settings_keep_bits(&groups, &shapes, 2700, |group| sub_gpu(group, true));
}

/// Every op against the reference on a Gpu set up by `configure`: B in {1, 3}, H in {1, 2, 4,
/// 5} (one head group of each count, and two groups), the given N and W; then on a device of
/// 256 KiB storage bindings set up the same way, at `windowed` (bound in windows); then each of
/// `bits_at` gives the same bits on two fresh Gpus so set up. Seeds count up from `seed`.
fn every_op_with(
    configure: impl Fn(&Gpu),
    (ns, ws): (&[usize], &[usize]),
    windowed: &[Shape],
    bits_at: &[Shape],
    seed: u64,
) {
    let at = || {
        let g = own_gpu();
        configure(&g);
        g
    };
    let g = at();
    let mut seed = seed;
    for b in [1, 3] {
        for h in [1, 2, 4, 5] {
            for &n in ns {
                for &w in ws {
                    seed += 1;
                    run_on(&g, &Case::new(Shape::new(b, h, n, w), seed), ATOL);
                }
            }
        }
    }
    let (device, queue) = device_with(|l| l.max_storage_buffer_binding_size = 256 << 10);
    let gw = Gpu::from_wgpu(device, queue).unwrap();
    configure(&gw);
    for &s in windowed {
        seed += 1;
        run_on(&gw, &Case::new(s, seed), ATOL);
    }
    for &s in bits_at {
        seed += 1;
        assert!(
            soft_output_bits(&at(), s, seed) == soft_output_bits(&at(), s, seed),
            "two runs of {s:?} gave different bits"
        );
    }
}

/// The streaming kernels with one V of a row per thread and with two (the default on every
/// adapter), each with the soft read's backward in one pass and in two (`read_bwd` and
/// `dots`): every op against the reference where rows are summed in workgroup memory, on
/// rows of 1 to 25 V's (pairs of a single lane, odd and even counts, scalar and vec4
/// columns), one to five heads (the soft write's heads' gradients pair at one head only),
/// N = 1 and rows past a block, whole and bound in 256 KiB windows; and each setting's outputs
/// the same bits on a second run.
#[test]
fn every_op_at_each_stream_vecs_per_thread() {
    let mut seed = 3100;
    for vecs in 1..=MAX_STREAM_VECS_PER_THREAD {
        for passes in 1..=MAX_READ_BACKWARD_PASSES {
            let configure = |g: &Gpu| {
                g.set_row_sums(RowSums::Workgroup).unwrap();
                g.set_stream_vecs_per_thread(vecs).unwrap();
                g.set_read_backward_passes(passes).unwrap();
                assert_eq!(g.stream_vecs_per_thread(), vecs);
            };
            every_op_with(
                configure,
                (&[1, 129, 1000], &[3, 6, 8, 20, 64, 100]),
                &[Shape::new(2, 1, 3000, 64), Shape::new(1, 3, 5000, 20)],
                &[Shape::new(2, 1, 129, 64), Shape::new(1, 4, 300, 24)],
                seed,
            );
            seed += 1000;
        }
    }
}

/// Column tiles of the narrowest power of two of a row's `V`'s (`ColumnTiles::PowerOfTwo`,
/// idle threads past the row) beside the default exact tiles: every op against the reference
/// where rows are summed in workgroup memory, on `V` counts that are not powers of two (odd,
/// even, one lane of pairs holding one `V`, a second lane past the row), with one and two
/// `V`'s per streaming thread and the soft read's backward in one pass, one to five heads,
/// N = 1 and rows past a block, whole and bound in 256 KiB windows; the same bits on a second
/// run. The setting holds until changed.
#[test]
fn every_op_with_power_of_two_column_tiles() {
    let mut seed = 3400;
    for vecs in 1..=MAX_STREAM_VECS_PER_THREAD {
        let configure = |g: &Gpu| {
            g.set_row_sums(RowSums::Workgroup).unwrap();
            g.set_column_tiles(ColumnTiles::PowerOfTwo);
            g.set_stream_vecs_per_thread(vecs).unwrap();
            g.set_read_backward_passes(1).unwrap();
            assert_eq!(g.column_tiles(), ColumnTiles::PowerOfTwo);
        };
        // V's: 3, 5, 6, 7, 25, 10 (scalar and vec4 rows)
        every_op_with(
            configure,
            (&[1, 129, 1000], &[3, 20, 24, 28, 100, 10]),
            &[Shape::new(2, 1, 3000, 24), Shape::new(1, 3, 5000, 20)],
            &[Shape::new(2, 1, 300, 20)],
            seed,
        );
        seed += 1000;
    }
    let g = own_gpu();
    assert_eq!(g.column_tiles(), ColumnTiles::Exact);
    g.set_column_tiles(ColumnTiles::PowerOfTwo);
    g.set_column_tiles(ColumnTiles::Exact);
    assert_eq!(g.column_tiles(), ColumnTiles::Exact);
}

/// Every setting at once as `Gpu::from_wgpu` sets it for a GPU (`set_gpu_defaults`; CI runs
/// only CPU adapters, whose defaults differ in four of them): every op against the reference
/// on the shape grid, whole and in 256 KiB windows, and the same bits on a second run.
#[test]
fn every_op_at_the_gpu_defaults() {
    every_op_with(
        set_gpu_defaults,
        (&[1, 7, 129, 1000], &[1, 3, 6, 19, 20, 64, 100]),
        &[Shape::new(2, 2, 3000, 64), Shape::new(3, 5, 700, 65)],
        &[Shape::new(2, 3, 1000, 20)],
        3700,
    );
}

/// The soft read's backward in one pass over the memory and in two, whatever the adapter's
/// default, with each way of summing rows the adapter has: every op against the reference on
/// the grid (one to four heads take one pass, five always two; scalar and vec4 rows, rows too
/// wide to stream), whole and bound in 256 KiB windows.
#[test]
fn every_op_at_each_read_backward_pass_count() {
    let mut seed = 2800;
    for passes in 1..=MAX_READ_BACKWARD_PASSES {
        for g in row_sum_gpus() {
            g.set_read_backward_passes(passes).unwrap();
            assert_eq!(g.read_backward_passes(), passes);
            for b in [1, 3] {
                for h in [1, 2, 4, 5] {
                    for n in [1, 7, 129, 1000] {
                        for w in [1, 8, 19, 64] {
                            seed += 1;
                            run_on(&g, &Case::new(Shape::new(b, h, n, w), seed), ATOL);
                        }
                    }
                }
            }
            seed += 1;
            run_on(&g, &Case::new(Shape::new(2, 2, 70, 1100), seed), ATOL);
        }
        let (device, queue) = device_with(|l| l.max_storage_buffer_binding_size = 256 << 10);
        let gw = Gpu::from_wgpu(device, queue).unwrap();
        gw.set_read_backward_passes(passes).unwrap();
        for s in [Shape::new(2, 2, 3000, 64), Shape::new(3, 4, 700, 65)] {
            seed += 1;
            run_on(&gw, &Case::new(s, seed), ATOL);
        }
    }
}

/// Every soft op against the reference at reduction workgroup targets from 1 (the longest
/// blocks of rows: one per 4,096 rows) to the most (the shortest blocks), the default among
/// them: shapes of one block and of several, N past one longest block (narrow rows, vec4 and
/// scalar: CPU adapters cut the blocks of wider f32 rows, whose row lanes step 4 KiB), whole and bound in
/// 256 KiB windows (where a longest block would not fit one binding); each target the same
/// bits on a second run.
#[test]
fn every_op_at_each_reduction_workgroup_target() {
    let default = own_gpu().reduction_workgroups();
    let mut seed = 2400;
    for target in [1, 3, default, 5000, MAX_REDUCTION_WORKGROUPS] {
        let g = own_gpu();
        g.set_reduction_workgroups(target).unwrap();
        assert_eq!(g.reduction_workgroups(), target);
        for (b, h, n, w) in [
            (1, 1, 1, 64),
            (1, 2, 129, 20),
            (3, 5, 700, 7),
            (2, 1, 5000, 64),
            (1, 4, 4100, 3),
            (2, 1, 4100, 8),
        ] {
            seed += 1;
            run_on(&g, &Case::new(Shape::new(b, h, n, w), seed), ATOL);
        }
        let (device, queue) = device_with(|l| l.max_storage_buffer_binding_size = 256 << 10);
        let gw = Gpu::from_wgpu(device, queue).unwrap();
        gw.set_reduction_workgroups(target).unwrap();
        for s in [Shape::new(2, 2, 3000, 64), Shape::new(1, 5, 2000, 65)] {
            seed += 1;
            run_on(&gw, &Case::new(s, seed), ATOL);
        }
        // The same bits on a second run at this target.
        let s = Shape::new(2, 3, 2100, 20);
        let c = Case::new(s, 2500);
        let (mem_s, vec_s, wt_s) = ([s.b, s.n, s.w], [s.b, s.h, s.w], [s.b, s.h, s.n]);
        let run = || -> Vec<Vec<u32>> {
            let m = up(&g, &mem_s, &c.m);
            let w = up(&g, &wt_s, &c.w);
            let k = up(&g, &vec_s, &c.k);
            let beta = up(&g, &[s.b, s.h], &c.beta);
            let read = g.soft_read(&m, &w).unwrap();
            let address = g.content_address(&m, &k, &beta).unwrap();
            let gr = g
                .soft_read_backward(&m, &w, &up(&g, &vec_s, &c.g_r))
                .unwrap();
            [&read, &address, &gr.memory, &gr.weights]
                .iter()
                .map(|t| bits(&g, t))
                .collect()
        };
        assert_eq!(run(), run(), "target {target}: two runs differ");
    }
}

/// Widths past one column tile (64) and past the kernels' `j += 64` loops.
#[test]
fn every_op_on_wide_words() {
    let mut seed = 300;
    for b in [1, 3] {
        for h in [1, 2, 5] {
            for n in [7, 129, 1000] {
                for w in [65, 128, 300] {
                    seed += 1;
                    run(&Case::new(Shape::new(b, h, n, w), seed), ATOL);
                }
            }
        }
    }
}

/// Rows of more than 256 V's (one workgroup's threads): the streaming kernels leave them to the
/// row tiles (content scores, dr·M, soft write's heads' gradients), scalar and vec4 columns.
#[test]
fn rows_wider_than_a_workgroup_take_the_row_tiles() {
    let mut seed = 500;
    for b in [1, 2] {
        for h in [1, 3] {
            for n in [7, 129] {
                for w in [257, 1028] {
                    seed += 1;
                    run(&Case::new(Shape::new(b, h, n, w), seed), ATOL);
                }
            }
        }
    }
}

/// Every soft op, backward passes included, on a device whose storage bindings are 256 KiB:
/// memories of 0.5 to 2.3 MiB are bound in windows on every machine (large GPUs bind the
/// `large` test's memory whole).
#[test]
fn every_op_bound_in_windows() {
    let (device, queue) = device_with(|l| l.max_storage_buffer_binding_size = 256 << 10);
    let g = Gpu::from_wgpu(device, queue).unwrap();
    assert_eq!(g.adapter().max_storage_binding, 256 << 10);
    for (k, s) in [
        Shape::new(2, 2, 1000, 64),
        Shape::new(3, 5, 700, 65),
        Shape::new(1, 1, 3000, 200),
    ]
    .into_iter()
    .enumerate()
    {
        assert!(
            s.b * s.n * s.w * 4 > 256 << 10,
            "the memory spans several bindings"
        );
        run_on(&g, &Case::new(s, 700 + k as u64), ATOL);
    }
}

#[test]
fn zero_key_and_zero_memory_row_stay_finite() {
    let s = Shape::new(2, 2, 9, 19);
    let mut c = Case::new(s, 7);
    c.k[..s.w].iter_mut().for_each(|x| *x = 0.0); // key of (b=0, h=0)
    c.m[3 * s.w..4 * s.w].iter_mut().for_each(|x| *x = 0.0); // row 3 of batch 0
    run(&c, ATOL); // all_close also asserts every element is finite
}

#[test]
fn strengths_from_0_to_1000_keep_softmax_normalised() {
    let s = Shape::new(1, 4, 1000, 19);
    let mut c = Case::new(s, 8);
    c.beta = vec![0.0, 1.0, 100.0, 1000.0];
    let g = gpu();
    let m = g.upload(&[s.b, s.n, s.w], &c.m).unwrap();
    let k = g.upload(&[s.b, s.h, s.w], &c.k).unwrap();
    let beta = g.upload(&[s.b, s.h], &c.beta).unwrap();
    let w = g
        .download(&g.content_address(&m, &k, &beta).unwrap())
        .unwrap();
    for (h, row) in w.chunks(s.n).enumerate() {
        assert!(
            row.iter().all(|x| x.is_finite() && *x >= 0.0),
            "head {h}: non-finite or negative weight"
        );
        let sum: f64 = row.iter().map(|&x| x as f64).sum();
        assert!(
            (sum - 1.0).abs() < 1e-4,
            "head {h} (beta {}): weights sum to {sum}",
            c.beta[h]
        );
    }
    // beta = 1000 turns f32 rounding of K (~1e-7) into ~1e-4 in the scores: the tolerance
    // scales with beta * 2^-23.
    run(&c, 1000.0 * 1.2e-7 * 8.0);
}

#[test]
fn one_hot_weights_with_erase_one_have_finite_backward() {
    for h in [1, 3] {
        let s = Shape::new(2, h, 7, 19);
        let mut c = Case::new(s, 9);
        c.w.iter_mut().for_each(|x| *x = 0.0);
        for bh in 0..s.b * s.h {
            c.w[bh * s.n + 2] = 1.0; // every head on row 2: several heads on the same row
        }
        c.e.iter_mut().for_each(|x| *x = 1.0);
        run(&c, ATOL);
    }
}
