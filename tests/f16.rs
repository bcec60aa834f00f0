//! f16 memory (DESIGN.md section 7): every op that takes a memory-shaped tensor, with f16 in
//! each such argument and mixed with f32, on both kernel paths the adapter has: WGSL `f16`
//! (`F16Path::Native`, where the device has SHADER_F16: lavapipe, most GPUs) and two halves
//! per u32 (`F16Path::Packed`: every device; the only one on GL). Each test prints the paths
//! it ran ("f16 path exercised: ...").
//!
//! Reference: the f64 CPU reference applied to the f16-rounded inputs (which the kernels read
//! exactly), so f32 outputs keep the f32 tolerance of soft_ops.rs; outputs stored as f16 may
//! in addition be one f16 ulp off (half an ulp for round-to-nearest; a full ulp admits a device
//! that rounds f32 -> f16 toward zero, which WGSL allows).
mod common;
use common::*;
use half::f16;
use ntm_kernels::reference::{self as r, Shape};
use ntm_kernels::{
    ColumnTiles, DType, Error, F16Path, Gpu, RowSums, Tensor, MAX_ELEMENTWISE_ROWS,
    MAX_ELEMENTWISE_ROW_GROUP, MAX_READ_BACKWARD_PASSES, MAX_STREAM_ROW_GROUP,
};

const ATOL: f64 = 2e-5;
const RTOL: f64 = 1e-4;

fn r16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

fn round16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| r16(x)).collect()
}

/// The spacing of f16 values at |x| (2^-24 among subnormals).
fn ulp16(x: f64) -> f64 {
    let a = x.abs();
    if a < 6.103515625e-5 {
        2f64.powi(-24)
    } else {
        2f64.powi(a.log2().floor() as i32 - 10)
    }
}

/// A Gpu for each f16 path of this adapter (the path is a per-Gpu setting).
fn paths() -> Vec<(F16Path, Gpu)> {
    let g = own_gpu();
    let mut out = Vec::new();
    if g.f16_path() == F16Path::Native {
        out.push((F16Path::Native, g));
        let packed = own_gpu();
        packed.set_f16_path(F16Path::Packed).unwrap();
        out.push((F16Path::Packed, packed));
    } else {
        out.push((F16Path::Packed, g));
    }
    for (p, g) in &out {
        eprintln!("f16 path exercised: {p:?} on {}", g.adapter());
    }
    out
}

/// `all_close`, with one f16 ulp per element added when the result was stored as f16.
#[track_caller]
fn close(g: &Gpu, what: &str, t: &Tensor, want: &[f64], terms: Option<&[f64]>) {
    let got = g.download(t).unwrap();
    let mut tol: Vec<f64> = match (t.dtype(), terms) {
        (DType::F16, _) => want.iter().map(|&w| ulp16(w)).collect(),
        _ => vec![0.0; want.len()],
    };
    if let Some(terms) = terms {
        tol.iter_mut().zip(terms).for_each(|(t, x)| *t += x);
    }
    all_close_terms(
        &format!("{what} ({})", t.dtype()),
        &got,
        want,
        ATOL,
        RTOL,
        Some(&tol),
    );
}

/// Inputs of one case; the memory-shaped ones already rounded to f16.
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
            m: round16(&rng.vec(bnw, -1.0, 1.0)),
            k: rng.vec(bhw, -1.0, 1.0),
            beta: rng.vec(s.b * s.h, 0.0, 20.0),
            w: rng.weights(s.b * s.h, s.n, 3.0),
            e: rng.vec(bhw, 0.0, 1.0),
            a: rng.vec(bhw, -1.0, 1.0),
            g_w: rng.vec(bhn, -1.0, 1.0),
            g_r: rng.vec(bhw, -1.0, 1.0),
            g_m: round16(&rng.vec(bnw, -1.0, 1.0)),
        }
    }
}

fn soft_ops(g: &Gpu, c: &Case) {
    let s = c.s;
    let tag = format!("{:?} B={} H={} N={} W={}", g.f16_path(), s.b, s.h, s.n, s.w);
    let (mem_s, vec_s, wt_s) = ([s.b, s.n, s.w], [s.b, s.h, s.w], [s.b, s.h, s.n]);
    let up = |shape: &[usize], x: &[f32]| g.upload(shape, x).unwrap();
    let up16 = |x: &[f32]| g.upload_as(DType::F16, &mem_s, x).unwrap();
    let m = up16(&c.m);
    assert_eq!(m.dtype(), DType::F16);
    let (k, beta, w) = (up(&vec_s, &c.k), up(&[s.b, s.h], &c.beta), up(&wt_s, &c.w));
    let (e, a) = (up(&vec_s, &c.e), up(&vec_s, &c.a));
    let (dw, dr) = (up(&wt_s, &c.g_w), up(&vec_s, &c.g_r));
    let (m64, k64, b64, w64) = (f64s(&c.m), f64s(&c.k), f64s(&c.beta), f64s(&c.w));
    let (e64, a64, dr64, gm64) = (f64s(&c.e), f64s(&c.a), f64s(&c.g_r), f64s(&c.g_m));

    // Content addressing: f32 weights from an f16 memory; f16 memory gradients.
    let wa = g.content_address(&m, &k, &beta).unwrap();
    close(
        g,
        &format!("{tag} content_address"),
        &wa,
        &r::content_address(&m64, &k64, &b64, s),
        None,
    );
    let wa_host = f64s(&g.download(&wa).unwrap());
    let ga = g.content_address_backward(&m, &k, &beta, &wa, &dw).unwrap();
    assert_eq!(ga.memory.dtype(), DType::F16, "takes the memory's dtype");
    let want = r::content_address_backward(&m64, &k64, &b64, &wa_host, &f64s(&c.g_w), s);
    let (tm, tk, tb) = content_terms(&m64, &k64, &b64, &dz_terms(&wa_host, &f64s(&c.g_w), s.n), s);
    close(
        g,
        &format!("{tag} content bwd memory"),
        &ga.memory,
        &want.memory,
        Some(&tm),
    );
    close(
        g,
        &format!("{tag} content bwd keys"),
        &ga.keys,
        &want.keys,
        Some(&tk),
    );
    close(
        g,
        &format!("{tag} content bwd beta"),
        &ga.beta,
        &want.beta,
        Some(&tb),
    );
    // Accumulating into an f16 and into an f32 d_mem (each keeps its dtype).
    let want = r::content_address_backward_scores(&m64, &k64, &b64, &f64s(&c.g_w), s);
    let (tm, _, _) = content_terms(&m64, &k64, &b64, &f64s(&c.g_w), s);
    for dtype in [DType::F16, DType::F32] {
        let mut d_mem = g.upload_as(dtype, &mem_s, &c.g_m).unwrap();
        g.content_address_backward_scores_into(&m, &k, &beta, &dw, &mut d_mem)
            .unwrap();
        assert_eq!(d_mem.dtype(), dtype);
        let sum: Vec<f64> = gm64.iter().zip(&want.memory).map(|(x, y)| x + y).collect();
        close(
            g,
            &format!("{tag} content bwd_scores_into memory"),
            &d_mem,
            &sum,
            Some(&tm),
        );
    }

    // Soft read.
    let rd = g.soft_read(&m, &w).unwrap();
    close(
        g,
        &format!("{tag} soft_read"),
        &rd,
        &r::soft_read(&m64, &w64, s),
        None,
    );
    let gr = g.soft_read_backward(&m, &w, &dr).unwrap();
    let (want_m, want_w) = r::soft_read_backward(&m64, &w64, &dr64, s);
    close(
        g,
        &format!("{tag} soft_read_backward memory"),
        &gr.memory,
        &want_m,
        None,
    );
    close(
        g,
        &format!("{tag} soft_read_backward weights"),
        &gr.weights,
        &want_w,
        None,
    );
    for dtype in [DType::F16, DType::F32] {
        let mut d_mem = g.upload_as(dtype, &mem_s, &c.g_m).unwrap();
        g.soft_read_backward_into(&m, &w, &dr, &mut d_mem).unwrap();
        let sum: Vec<f64> = gm64.iter().zip(&want_m).map(|(x, y)| x + y).collect();
        close(
            g,
            &format!("{tag} soft_read_backward_into"),
            &d_mem,
            &sum,
            None,
        );
    }

    // Soft write in place on an f16 memory.
    let mut mw = g.copy(&m).unwrap();
    assert_eq!(mw.dtype(), DType::F16);
    g.soft_write(&mut mw, &w, &e, &a).unwrap();
    let mut want = m64.clone();
    r::soft_write(&mut want, &w64, &e64, &a64, s);
    close(g, &format!("{tag} soft_write"), &mw, &want, None);
    // Backward from an f32 and from an f16 dM'; in place into an f16 and an f32 d_memory.
    let want = r::soft_write_backward(&m64, &w64, &e64, &a64, &gm64, s);
    for d_dtype in [DType::F32, DType::F16] {
        let d_after = g.upload_as(d_dtype, &mem_s, &c.g_m).unwrap();
        let gw = g.soft_write_backward(&m, &w, &e, &a, &d_after).unwrap();
        assert_eq!(gw.memory.dtype(), DType::F16, "takes the memory's dtype");
        let t = format!("{tag} soft_write_backward (dM' {d_dtype})");
        close(g, &format!("{t} memory"), &gw.memory, &want.memory, None);
        close(g, &format!("{t} weights"), &gw.weights, &want.weights, None);
        close(g, &format!("{t} erase"), &gw.erase, &want.erase, None);
        close(g, &format!("{t} add"), &gw.add, &want.add, None);
        let mut d_mem = g.upload_as(d_dtype, &mem_s, &c.g_m).unwrap();
        let hg = g
            .soft_write_backward_into(&m, &w, &e, &a, &mut d_mem)
            .unwrap();
        assert_eq!(d_mem.dtype(), d_dtype, "keeps its dtype");
        close(g, &format!("{t}_into memory"), &d_mem, &want.memory, None);
        close(
            g,
            &format!("{t}_into weights"),
            &hg.weights,
            &want.weights,
            None,
        );
    }
}

/// Every soft op with an f16 memory, on widths that give each thread map: W % 4 == 0 (vec4
/// lanes), odd W and W % 4 == 2 (scalar lanes; packed rows that start mid-word), N = 1, W = 1.
#[test]
fn soft_ops_with_f16_memory() {
    for (_, g) in paths() {
        let mut seed = 1600;
        for (b, h, n, w) in [
            (1, 1, 1, 1),
            (2, 1, 7, 1),
            (1, 2, 33, 19),
            (3, 3, 129, 6),
            (2, 5, 200, 64),
            (1, 1, 1000, 65),
            (2, 2, 300, 20),
        ] {
            seed += 1;
            soft_ops(&g, &Case::new(Shape::new(b, h, n, w), seed));
        }
    }
}

/// Soft ops with f16 memories on rows narrow enough for subgroup row sums, each way of
/// summing rows the adapter has (subgroup shuffles, workgroup memory), on its f16 paths.
#[test]
fn soft_ops_with_f16_memory_both_row_sums() {
    for (_, g) in paths() {
        for sums in [RowSums::Subgroup, RowSums::Workgroup] {
            if g.set_row_sums(sums).is_err() {
                continue; // no SUBGROUP: tested in soft_ops
            }
            eprintln!("row sums: {sums:?}, f16 path {:?}", g.f16_path());
            let mut seed = 1950;
            for (b, h, n, w) in [
                (1, 1, 300, 8),
                (2, 3, 129, 6),
                (3, 2, 1000, 20),
                (2, 5, 77, 28),
            ] {
                seed += 1;
                soft_ops(&g, &Case::new(Shape::new(b, h, n, w), seed));
            }
        }
    }
}

/// Soft ops with f16 memories at 1 and at the most rows per elementwise thread, loaded 1 and
/// 4 at a time before storing (the adapter's defaults are tested above), on each f16 path:
/// packed words (odd W) and V's.
#[test]
fn soft_ops_with_f16_memory_at_each_elementwise_rows_count() {
    for (_, g) in paths() {
        for (rows, group) in [
            (1, 1),
            (MAX_ELEMENTWISE_ROWS, 1),
            (MAX_ELEMENTWISE_ROWS, MAX_ELEMENTWISE_ROW_GROUP),
        ] {
            g.set_elementwise_rows(rows).unwrap();
            g.set_elementwise_row_group(group).unwrap();
            let mut seed = 2400;
            for (b, h, n, w) in [
                (2, 1, 7, 1),
                (1, 2, 33, 19),
                (3, 3, 129, 6),
                (2, 5, 200, 64),
            ] {
                seed += 1;
                soft_ops(&g, &Case::new(Shape::new(b, h, n, w), seed));
            }
        }
    }
}

/// Soft ops with f16 memories at each count of rows loaded before summing (the column
/// partials of several heads take it on every adapter, the subgroup loops where rows are
/// summed by shuffles), on each f16 path, with the longest blocks (so that every row of a
/// group of 4 occurs).
#[test]
fn soft_ops_with_f16_memory_at_each_stream_row_group() {
    for (_, g) in paths() {
        g.set_reduction_workgroups(1).unwrap();
        for group in 1..=MAX_STREAM_ROW_GROUP {
            g.set_stream_row_group(group).unwrap();
            let mut seed = 2450;
            for (b, h, n, w) in [
                (1, 2, 300, 20),
                (2, 3, 129, 6),
                (1, 4, 1000, 64),
                (2, 5, 77, 7),
            ] {
                seed += 1;
                soft_ops(&g, &Case::new(Shape::new(b, h, n, w), seed));
            }
        }
    }
}

/// Soft ops with f16 memories with the soft read's backward in one pass and in two (the
/// adapter's default is among them), on each f16 path (packed words at odd W: two passes
/// whatever the count) and each way of summing rows the adapter has, whole and in windows.
#[test]
fn soft_ops_with_f16_memory_at_each_read_backward_pass_count() {
    let shapes = [
        (2, 1, 7, 1),
        (1, 2, 33, 20),
        (3, 3, 129, 6),
        (2, 4, 300, 64),
        (2, 5, 200, 8),
    ];
    for (_, g) in paths() {
        for passes in 1..=MAX_READ_BACKWARD_PASSES {
            g.set_read_backward_passes(passes).unwrap();
            for sums in [RowSums::Subgroup, RowSums::Workgroup] {
                if g.set_row_sums(sums).is_err() {
                    continue; // no SUBGROUP
                }
                let mut seed = 2500;
                for (b, h, n, w) in shapes {
                    seed += 1;
                    soft_ops(&g, &Case::new(Shape::new(b, h, n, w), seed));
                }
            }
        }
    }
    let (device, queue) = device_with(|l| l.max_storage_buffer_binding_size = 256 << 10);
    let g = Gpu::from_wgpu(device, queue).unwrap();
    for passes in 1..=MAX_READ_BACKWARD_PASSES {
        g.set_read_backward_passes(passes).unwrap();
        soft_ops(&g, &Case::new(Shape::new(2, 2, 1500, 64), 2600));
    }
}

/// Soft ops with f16 memories at every setting as a GPU gets it (`set_gpu_defaults`), with
/// each streaming layout: one or two V's per thread, exact or
/// power-of-two column tiles; on each f16 path.
#[test]
fn soft_ops_with_f16_memory_at_the_gpu_defaults_and_each_layout() {
    for (_, g) in paths() {
        set_gpu_defaults(&g);
        for (vecs, tiles) in [
            (2, ColumnTiles::Exact),
            (1, ColumnTiles::Exact),
            (2, ColumnTiles::PowerOfTwo),
            (1, ColumnTiles::PowerOfTwo),
        ] {
            g.set_stream_vecs_per_thread(vecs).unwrap();
            g.set_column_tiles(tiles);
            let mut seed = 2700;
            for (b, h, n, w) in [
                (2, 1, 7, 1),
                (1, 2, 33, 20),
                (3, 3, 129, 6),
                (2, 4, 300, 64),
                (2, 1, 200, 24),
                (1, 5, 100, 28),
            ] {
                seed += 1;
                soft_ops(&g, &Case::new(Shape::new(b, h, n, w), seed));
            }
        }
    }
}

/// Soft ops with f16 memories larger than one storage binding (a device whose bindings are
/// 256 KiB; it has no SHADER_F16 requested, so the packed path), odd widths included.
#[test]
fn soft_ops_with_f16_memory_in_windows() {
    let (device, queue) = device_with(|l| l.max_storage_buffer_binding_size = 256 << 10);
    let g = Gpu::from_wgpu(device, queue).unwrap();
    eprintln!(
        "f16 path exercised: {:?} (windows) on {}",
        g.f16_path(),
        g.adapter()
    );
    for (k, s) in [Shape::new(2, 2, 1500, 64), Shape::new(3, 5, 1100, 65)]
        .into_iter()
        .enumerate()
    {
        assert!(s.b * s.n * s.w * 2 > 256 << 10, "spans several bindings");
        soft_ops(&g, &Case::new(s, 1700 + k as u64));
    }
}

/// Discrete access on an f16 memory: gathers exact, scatters rounded once, undo bit for bit,
/// backward into f16 gradients. Heads share rows and write adjacent rows (neighbours in one
/// packed word when W is odd).
fn discrete_ops(g: &Gpu, s: Shape, seed: u64) {
    let tag = format!("{:?} B={} H={} N={} W={}", g.f16_path(), s.b, s.h, s.n, s.w);
    let mut rng = Rng(seed);
    let (mem_s, vec_s) = ([s.b, s.n, s.w], [s.b, s.h, s.w]);
    let m0 = round16(&rng.vec(s.b * s.n * s.w, -1.0, 1.0));
    let mut idx: Vec<u32> = (0..s.b * s.h)
        .map(|_| (rng.next_u64() % s.n as u64) as u32)
        .collect();
    for b in 0..s.b {
        if s.h >= 2 {
            idx[b * s.h + 1] = idx[b * s.h]; // a shared row
        }
        if s.h >= 3 {
            idx[b * s.h + 2] = (idx[b * s.h] + 1) % s.n as u32; // the next row
        }
    }
    let e = rng.vec(s.b * s.h * s.w, 0.0, 1.0);
    let a = rng.vec(s.b * s.h * s.w, -1.0, 1.0);
    let dr = rng.vec(s.b * s.h * s.w, -1.0, 1.0);
    let dm0 = round16(&rng.vec(s.b * s.n * s.w, -1.0, 1.0));
    let (m64, e64, a64, dr64, dm64) = (f64s(&m0), f64s(&e), f64s(&a), f64s(&dr), f64s(&dm0));
    let mut m = g.upload_as(DType::F16, &mem_s, &m0).unwrap();
    let ix = g.upload_indices(&[s.b, s.h], &idx).unwrap();
    let (ge, ga, gdr) = (
        g.upload(&vec_s, &e).unwrap(),
        g.upload(&vec_s, &a).unwrap(),
        g.upload(&vec_s, &dr).unwrap(),
    );

    let rd = g.discrete_read(&m, &ix).unwrap();
    let want = r::discrete_read(&m64, &idx, s);
    let got = g.download(&rd).unwrap();
    assert!(
        got.iter().zip(&want).all(|(x, y)| *x as f64 == *y),
        "{tag} discrete_read: a gather of f16 values is exact"
    );
    let mut d_mem = g.upload_as(DType::F16, &mem_s, &dm0).unwrap();
    let dw = g.discrete_read_backward(&m, &ix, &gdr, &mut d_mem).unwrap();
    let mut want_dm = dm64.clone();
    let want_dw = r::discrete_read_backward(&m64, &idx, &dr64, &mut want_dm, s);
    close(
        g,
        &format!("{tag} discrete_read_backward d_mem"),
        &d_mem,
        &want_dm,
        None,
    );
    close(
        g,
        &format!("{tag} discrete_read_backward dw"),
        &dw,
        &want_dw,
        None,
    );

    let undo = g.discrete_write(&mut m, &ix, &ge, &ga).unwrap();
    let mut want_m = m64.clone();
    let old = r::discrete_write(&mut want_m, &idx, &e64, &a64, s);
    close(g, &format!("{tag} discrete_write"), &m, &want_m, None);
    let mut d_after = g.upload_as(DType::F16, &mem_s, &dm0).unwrap();
    let gw = g
        .discrete_write_backward(&undo, &ge, &ga, &mut d_after)
        .unwrap();
    let mut want_d = dm64.clone();
    let want_g = r::discrete_write_backward(&idx, &old, &e64, &a64, &mut want_d, s);
    close(
        g,
        &format!("{tag} discrete_write_backward d_mem"),
        &d_after,
        &want_d,
        None,
    );
    close(
        g,
        &format!("{tag} discrete_write_backward erase"),
        &gw.erase,
        &want_g.erase,
        None,
    );
    close(
        g,
        &format!("{tag} discrete_write_backward add"),
        &gw.add,
        &want_g.add,
        None,
    );
    close(
        g,
        &format!("{tag} discrete_write_backward weight"),
        &gw.weight_at_idx,
        &want_g.weight_at_idx,
        None,
    );
    g.undo_write(&mut m, &undo).unwrap();
    let back = g.download(&m).unwrap();
    let bits = |v: &[f32]| -> Vec<u16> { v.iter().map(|&x| f16::from_f32(x).to_bits()).collect() };
    assert_eq!(
        bits(&back),
        bits(&m0),
        "{tag}: undo_write restores the f16 memory bit for bit"
    );
}

#[test]
fn discrete_ops_with_f16_memory() {
    for (_, g) in paths() {
        let mut seed = 1800;
        for (b, h, n, w) in [
            (1, 1, 1, 1),
            (2, 3, 5, 1),
            (3, 3, 9, 7),
            (2, 4, 64, 6),
            (2, 2, 100, 64),
            (1, 5, 17, 65),
        ] {
            seed += 1;
            discrete_ops(&g, Shape::new(b, h, n, w), seed);
        }
    }
}

#[test]
fn discrete_ops_with_f16_memory_in_windows() {
    let (device, queue) = device_with(|l| l.max_storage_buffer_binding_size = 256 << 10);
    let g = Gpu::from_wgpu(device, queue).unwrap();
    eprintln!(
        "f16 path exercised: {:?} (windows) on {}",
        g.f16_path(),
        g.adapter()
    );
    discrete_ops(&g, Shape::new(3, 3, 2100, 65), 1900);
}

/// Host rounding (upload_as): nearest, ties to even, overflow to infinity, subnormals; and
/// downloads return the f16 values exactly.
#[test]
fn upload_rounds_to_nearest_even_and_download_is_exact() {
    let g = gpu();
    let t = 2f32.powi(-11);
    let vals = [
        1.0 + t,        // tie: to 1.0 (even)
        1.0 + 3.0 * t,  // tie: to 1 + 2^-9 (even)
        1.0 + 1.5 * t,  // nearest: 1 + 2^-10
        65504.0,        // largest f16
        65519.0,        // rounds down to 65504
        65520.0,        // overflows to inf
        -65520.0,       // to -inf
        2f32.powi(-24), // smallest subnormal
        2f32.powi(-25), // tie with 0: to 0
        3.0 * 2f32.powi(-25),
        6.0e-5, // subnormal
        -0.0,
        0.1,
    ];
    let m = g.upload_as(DType::F16, &[1, 1, vals.len()], &vals).unwrap();
    assert_eq!(m.size_bytes(), 2 * vals.len() as u64);
    let got = g.download(&m).unwrap();
    let want: Vec<f32> = vals.iter().map(|&x| r16(x)).collect();
    assert_eq!(
        got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        "upload_as F16 then download: {got:?} vs {want:?}"
    );
    assert_eq!(want[0], 1.0);
    assert_eq!(want[1], 1.0 + 4.0 * t);
    assert_eq!(want[5], f32::INFINITY);
    assert_eq!(want[8], 0.0);
}

/// `cast` on the GPU: f16 -> f32 exact; f32 -> f16 rounds once, to one of the two nearest f16
/// values (the nearest on round-to-nearest devices: reported); overflow to infinity; same
/// dtype copies.
#[test]
fn cast_rounds_once_on_each_path() {
    for (path, g) in paths() {
        let mut rng = Rng(77);
        let mut vals = rng.vec(1003, -70000.0, 70000.0);
        vals.extend(rng.vec(1000, -1e-4, 1e-4));
        vals.extend([65504.0, 65519.0, 1.0 + 2f32.powi(-11), 2f32.powi(-25), -0.0]);
        for len in [vals.len(), 1, 2, 3, 4, 5] {
            let x = &vals[vals.len() - len..];
            let t = g.upload(&[len], x).unwrap();
            let h = g.cast(&t, DType::F16).unwrap();
            assert_eq!(h.dtype(), DType::F16);
            let got = g.download(&h).unwrap();
            let mut nearest = 0;
            for (i, (&v, &y)) in x.iter().zip(&got).enumerate() {
                let rn = r16(v);
                if y.to_bits() == rn.to_bits() {
                    nearest += 1;
                    continue;
                }
                // Toward zero: the f16 below |v| (f16 max for finite values past it).
                let rz = f16::from_bits(f16::from_f32(v).to_bits() - 1).to_f32();
                assert!(
                    (y == rz && rz.abs() < v.abs()) || (rn.is_infinite() && y.abs() == 65504.0),
                    "{path:?} cast element {i}: {v} became {y}, neither {rn} nor toward zero"
                );
            }
            if len == vals.len() {
                eprintln!("{path:?}: cast f32 -> f16 rounded {nearest} of {len} values to nearest");
            }
            let back = g.cast(&h, DType::F32).unwrap();
            assert_eq!(g.download(&back).unwrap(), got, "f16 -> f32 is exact");
            let same = g.cast(&h, DType::F16).unwrap();
            assert_eq!(g.download(&same).unwrap(), got, "f16 -> f16 copies");
            let copied = g.copy(&h).unwrap();
            assert_eq!(g.download(&copied).unwrap(), got, "copy keeps f16");
        }
    }
}

/// The training-loop ops on f16 tensors: write, copy_into across dtypes, axpy of every dtype
/// pair, fill, zeros_as; odd lengths (a packed word half outside the tensor is kept).
#[test]
fn training_loop_ops_on_f16_tensors() {
    for (path, g) in paths() {
        let mut rng = Rng(5);
        for len in [1usize, 3, 8, 1001] {
            let x = round16(&rng.vec(len, -2.0, 2.0));
            let y = round16(&rng.vec(len, -2.0, 2.0));
            let mut t = g.zeros_as(DType::F16, &[len]).unwrap();
            assert_eq!(g.download(&t).unwrap(), vec![0.0; len]);
            g.write(&mut t, &x).unwrap();
            assert_eq!(g.download(&t).unwrap(), x, "{path:?} write len {len}");
            for (dx, dy) in [
                (DType::F16, DType::F16),
                (DType::F32, DType::F16),
                (DType::F16, DType::F32),
            ] {
                let gx = g.upload_as(dx, &[len], &x).unwrap();
                let mut gy = g.upload_as(dy, &[len], &y).unwrap();
                g.axpy(-0.5, &gx, &mut gy).unwrap();
                let want: Vec<f64> = x
                    .iter()
                    .zip(&y)
                    .map(|(&a, &b)| b as f64 - 0.5 * a as f64)
                    .collect();
                close(
                    &g,
                    &format!("{path:?} axpy {dx} -> {dy} len {len}"),
                    &gy,
                    &want,
                    None,
                );
                let mut c = g.zeros_as(dy, &[len]).unwrap();
                g.copy_into(&gx, &mut c).unwrap();
                assert_eq!(
                    g.download(&c).unwrap(),
                    x,
                    "{path:?} copy_into {dx} -> {dy}"
                );
            }
            // A tensor after `t` in memory must not be touched by its odd last word.
            let mut f = g.upload_as(DType::F16, &[len], &x).unwrap();
            g.fill(&mut f, 0.1).unwrap();
            assert_eq!(
                g.download(&f).unwrap(),
                vec![r16(0.1); len],
                "{path:?} fill"
            );
        }
    }
}

/// Only memory-shaped tensors may be f16: every other argument refuses f16 with an error
/// naming the argument; the native path is refused where the device lacks SHADER_F16.
#[test]
fn f16_where_f32_is_needed_is_an_error() {
    let g = gpu();
    let s = Shape::new(1, 2, 5, 3);
    let m = g.upload_as(DType::F16, &[1, 5, 3], &[0.5; 15]).unwrap();
    let k16 = g.upload_as(DType::F16, &[1, 2, 3], &[0.5; 6]).unwrap();
    let k = g.upload(&[1, 2, 3], &[0.5; 6]).unwrap();
    let beta = g.upload(&[1, 2], &[1.0; 2]).unwrap();
    let w16 = g.upload_as(DType::F16, &[1, 2, 5], &[0.2; 10]).unwrap();
    let dtype_err = |e: Error, arg: &str| match e {
        Error::DType { arg: a, given, .. } => {
            assert_eq!(a, arg);
            assert_eq!(given, DType::F16);
        }
        other => panic!("expected a dtype error for `{arg}`, got {other}"),
    };
    dtype_err(g.content_address(&m, &k16, &beta).unwrap_err(), "keys");
    dtype_err(g.soft_read(&m, &w16).unwrap_err(), "w");
    let ix = g.upload_indices(&[1, 2], &[0, 1]).unwrap();
    let mut mm = g.copy(&m).unwrap();
    dtype_err(
        g.discrete_write(&mut mm, &ix, &k16, &k).unwrap_err(),
        "erase",
    );
    let (gate, shift) = (
        g.upload(&[1, 2], &[0.5; 2]).unwrap(),
        g.upload(&[1, 2, 3], &[0.2; 6]).unwrap(),
    );
    dtype_err(
        g.location_address(&w16, &w16, &gate, &shift, &beta)
            .unwrap_err(),
        "content",
    );
    dtype_err(g.sample(&w16, 1).map(|_| ()).unwrap_err(), "w");
    let _ = s;
    // The native path needs SHADER_F16.
    if g.f16_path() == F16Path::Packed && g.set_f16_path(F16Path::Native).is_ok() {
        panic!("the native path was accepted on a device without SHADER_F16");
    }
}
