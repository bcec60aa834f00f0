//! Discrete access on the GPU against the CPU reference, the one-hot identities with soft
//! access, and backprop through time with undo records instead of snapshots.
//! Tolerance as in soft_ops.rs: |gpu - ref| <= ATOL * max|ref| + RTOL * |ref|.
mod common;
use common::*;
use ntm_kernels::reference::{self as r, Shape};
use ntm_kernels::{DType, Error, F16Path, Gpu, Indices, Tensor};

const ATOL: f64 = 2e-5;
const RTOL: f64 = 1e-4;

/// Indices with collisions: head 1 always shares head 0's row, when there are two heads.
fn indices(rng: &mut Rng, s: Shape) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..s.b * s.h)
        .map(|_| (rng.next_u64() % s.n as u64) as u32)
        .collect();
    if s.h >= 2 {
        for b in 0..s.b {
            idx[b * s.h + 1] = idx[b * s.h];
        }
    }
    idx
}

fn up(g: &Gpu, shape: &[usize], x: &[f32]) -> Tensor {
    g.upload(shape, x).unwrap()
}

fn at_idx(w: &[f64], idx: &[u32], n: usize) -> Vec<f64> {
    idx.iter()
        .enumerate()
        .map(|(bh, &i)| w[bh * n + i as usize])
        .collect()
}

fn run(s: Shape, seed: u64, erase_one: bool) {
    run_on(gpu(), s, seed, erase_one)
}

fn run_on(g: &Gpu, s: Shape, seed: u64, erase_one: bool) {
    let tag = format!("B={} H={} N={} W={}", s.b, s.h, s.n, s.w);
    let mut rng = Rng(seed);
    let m0 = rng.vec(s.b * s.n * s.w, -1.0, 1.0);
    let idx = indices(&mut rng, s);
    let e = if erase_one {
        vec![1.0; s.b * s.h * s.w]
    } else {
        rng.vec(s.b * s.h * s.w, 0.0, 1.0)
    };
    let a = rng.vec(s.b * s.h * s.w, -1.0, 1.0);
    let dr = rng.vec(s.b * s.h * s.w, -1.0, 1.0);
    let dm0 = rng.vec(s.b * s.n * s.w, -1.0, 1.0);
    let (mem_s, vec_s) = ([s.b, s.n, s.w], [s.b, s.h, s.w]);
    let m = up(g, &mem_s, &m0);
    let ix = g.upload_indices(&[s.b, s.h], &idx).unwrap();
    let (ge, ga, gdr) = (up(g, &vec_s, &e), up(g, &vec_s, &a), up(g, &vec_s, &dr));
    let (m64, e64, a64, dr64) = (f64s(&m0), f64s(&e), f64s(&a), f64s(&dr));
    let hot: Vec<f32> = r::onehot::<f64>(&idx, s)
        .iter()
        .map(|&x| x as f32)
        .collect();
    let ghot = up(g, &[s.b, s.h, s.n], &hot);

    // read, against the reference and against soft read with one-hot weights
    let rd = g.download(&g.discrete_read(&m, &ix).unwrap()).unwrap();
    all_close(
        &format!("{tag} discrete_read"),
        &rd,
        &r::discrete_read(&m64, &idx, s),
        ATOL,
        RTOL,
    );
    let soft_rd = g.download(&g.soft_read(&m, &ghot).unwrap()).unwrap();
    all_close(
        &format!("{tag} discrete_read = soft_read(onehot)"),
        &rd,
        &f64s(&soft_rd),
        ATOL,
        RTOL,
    );

    // read backward: accumulates into d_mem
    let mut gdm = up(g, &mem_s, &dm0);
    let dw = g
        .download(&g.discrete_read_backward(&m, &ix, &gdr, &mut gdm).unwrap())
        .unwrap();
    let mut want_dm = f64s(&dm0);
    let want_dw = r::discrete_read_backward(&m64, &idx, &dr64, &mut want_dm, s);
    all_close(
        &format!("{tag} discrete_read_backward d_mem"),
        &g.download(&gdm).unwrap(),
        &want_dm,
        ATOL,
        RTOL,
    );
    all_close(
        &format!("{tag} discrete_read_backward dw_at_idx"),
        &dw,
        &want_dw,
        ATOL,
        RTOL,
    );
    let soft = g.soft_read_backward(&m, &ghot, &gdr).unwrap();
    let mut zero = g.zeros(&mem_s).unwrap();
    let dw2 = g
        .download(&g.discrete_read_backward(&m, &ix, &gdr, &mut zero).unwrap())
        .unwrap();
    all_close(
        &format!("{tag} read d_mem = soft"),
        &g.download(&zero).unwrap(),
        &f64s(&g.download(&soft.memory).unwrap()),
        ATOL,
        RTOL,
    );
    let soft_w = f64s(&g.download(&soft.weights).unwrap());
    all_close(
        &format!("{tag} read dw_at_idx = soft dw at idx"),
        &dw2,
        &at_idx(&soft_w, &idx, s.n),
        ATOL,
        RTOL,
    );

    // write, undo record, undo
    let mut mw = g.copy(&m).unwrap();
    let undo = g.discrete_write(&mut mw, &ix, &ge, &ga).unwrap();
    assert_eq!(
        undo.size_bytes(),
        (s.b * s.h * 4 + s.b * s.h * s.w * 4) as u64
    );
    let mut want = m64.clone();
    let want_old = r::discrete_write(&mut want, &idx, &e64, &a64, s);
    let after = g.download(&mw).unwrap();
    all_close(&format!("{tag} discrete_write"), &after, &want, ATOL, RTOL);
    all_close(
        &format!("{tag} undo old rows"),
        &g.download(undo.old_rows()).unwrap(),
        &want_old,
        0.0,
        0.0,
    );
    let mut ms = g.copy(&m).unwrap();
    g.soft_write(&mut ms, &ghot, &ge, &ga).unwrap();
    all_close(
        &format!("{tag} discrete_write = soft_write(onehot)"),
        &after,
        &f64s(&g.download(&ms).unwrap()),
        ATOL,
        RTOL,
    );
    g.undo_write(&mut mw, &undo).unwrap();
    assert_eq!(
        g.download(&mw).unwrap(),
        m0,
        "{tag}: undo_write must restore the memory bit for bit"
    );

    // write backward: dM' -> dM in place
    let mut gdm = up(g, &mem_s, &dm0);
    let gw = g
        .discrete_write_backward(&undo, &ge, &ga, &mut gdm)
        .unwrap();
    let mut want_dm = f64s(&dm0);
    let want = r::discrete_write_backward(&idx, &want_old, &e64, &a64, &mut want_dm, s);
    let got_dm = g.download(&gdm).unwrap();
    all_close(
        &format!("{tag} discrete_write_backward d_mem"),
        &got_dm,
        &want_dm,
        ATOL,
        RTOL,
    );
    let (de, da, dwi) = (
        g.download(&gw.erase).unwrap(),
        g.download(&gw.add).unwrap(),
        g.download(&gw.weight_at_idx).unwrap(),
    );
    all_close(
        &format!("{tag} discrete_write_backward erase"),
        &de,
        &want.erase,
        ATOL,
        RTOL,
    );
    all_close(
        &format!("{tag} discrete_write_backward add"),
        &da,
        &want.add,
        ATOL,
        RTOL,
    );
    all_close(
        &format!("{tag} discrete_write_backward weight_at_idx"),
        &dwi,
        &want.weight_at_idx,
        ATOL,
        RTOL,
    );
    let gdm_soft = up(g, &mem_s, &dm0);
    let soft = g
        .soft_write_backward(&m, &ghot, &ge, &ga, &gdm_soft)
        .unwrap();
    all_close(
        &format!("{tag} write d_mem = soft"),
        &got_dm,
        &f64s(&g.download(&soft.memory).unwrap()),
        ATOL,
        RTOL,
    );
    all_close(
        &format!("{tag} write erase = soft"),
        &de,
        &f64s(&g.download(&soft.erase).unwrap()),
        ATOL,
        RTOL,
    );
    all_close(
        &format!("{tag} write add = soft"),
        &da,
        &f64s(&g.download(&soft.add).unwrap()),
        ATOL,
        RTOL,
    );
    let soft_w = f64s(&g.download(&soft.weights).unwrap());
    all_close(
        &format!("{tag} write dw_at_idx = soft dw at idx"),
        &dwi,
        &at_idx(&soft_w, &idx, s.n),
        ATOL,
        RTOL,
    );

    // argmax of the one-hot weights is the indices
    assert_eq!(
        g.download_indices(&g.argmax(&ghot).unwrap()).unwrap(),
        idx,
        "{tag}: argmax(onehot)"
    );
}

#[test]
fn every_discrete_op_on_the_shape_grid() {
    let mut seed = 500;
    for b in [1, 3] {
        for h in [1, 2, 4, 5] {
            for n in [1, 7, 129, 1000] {
                for w in [1, 19, 64] {
                    seed += 1;
                    run(Shape::new(b, h, n, w), seed, false);
                }
            }
        }
    }
}

/// Widths past one workgroup's column loop (64).
#[test]
fn every_discrete_op_on_wide_words() {
    let mut seed = 800;
    for b in [1, 3] {
        for h in [1, 2, 5] {
            for n in [7, 129, 1000] {
                for w in [65, 128, 300] {
                    seed += 1;
                    run(Shape::new(b, h, n, w), seed, false);
                }
            }
        }
    }
}

/// Every discrete op on a device whose storage bindings are 256 KiB: gathers and scatters run
/// once per row window.
#[test]
fn every_discrete_op_bound_in_windows() {
    let (device, queue) = device_with(|l| l.max_storage_buffer_binding_size = 256 << 10);
    let g = Gpu::from_wgpu(device, queue).unwrap();
    for (k, s) in [Shape::new(2, 3, 1000, 64), Shape::new(3, 5, 700, 65)]
        .into_iter()
        .enumerate()
    {
        run_on(&g, s, 950 + k as u64, k == 1);
    }
}

#[test]
fn erase_exactly_one_with_shared_rows() {
    for h in [1, 2, 5] {
        run(Shape::new(2, h, 9, 19), 900 + h as u64, true);
    }
}

#[test]
fn argmax_matches_reference() {
    let g = gpu();
    for (n, seed) in [(1, 1), (7, 2), (1000, 3), (5000, 4)] {
        let s = Shape::new(3, 2, n, 0);
        let mut rng = Rng(seed);
        let w = rng.weights(s.b * s.h, n, 5.0);
        let got = g
            .download_indices(&g.argmax(&g.upload(&[s.b, s.h, n], &w).unwrap()).unwrap())
            .unwrap();
        assert_eq!(got, r::argmax(&w, s), "argmax N={n}");
    }
}

/// T = 50 steps of discrete reads and writes, then backprop walked in reverse with
/// `discrete_write_backward` and `undo_write` only, against soft ops with one-hot weights and
/// a memory snapshot per step; the memory must end restored bit for bit.
#[test]
fn backprop_through_time_without_snapshots() {
    let g = gpu();
    let s = Shape::new(2, 3, 37, 19);
    let steps = 50;
    let mut rng = Rng(77);
    let m0 = rng.vec(s.b * s.n * s.w, -1.0, 1.0);
    let (mem_s, vec_s, wt_s) = ([s.b, s.n, s.w], [s.b, s.h, s.w], [s.b, s.h, s.n]);
    struct Step {
        ir: Indices,
        iw: Indices,
        hr: Tensor,
        hw: Tensor,
        e: Tensor,
        a: Tensor,
        c: Tensor,
        iw_host: Vec<u32>,
        ir_host: Vec<u32>,
    }
    let to_hot =
        |idx: &[u32]| -> Vec<f32> { r::onehot::<f64>(idx, s).iter().map(|&x| x as f32).collect() };
    let steps: Vec<Step> = (0..steps)
        .map(|_| {
            let ir_host = indices(&mut rng, s);
            let iw_host = indices(&mut rng, s);
            Step {
                ir: g.upload_indices(&[s.b, s.h], &ir_host).unwrap(),
                iw: g.upload_indices(&[s.b, s.h], &iw_host).unwrap(),
                hr: up(g, &wt_s, &to_hot(&ir_host)),
                hw: up(g, &wt_s, &to_hot(&iw_host)),
                e: up(g, &vec_s, &rng.vec(s.b * s.h * s.w, 0.0, 1.0)),
                a: up(g, &vec_s, &rng.vec(s.b * s.h * s.w, -1.0, 1.0)),
                c: up(g, &vec_s, &rng.vec(s.b * s.h * s.w, -1.0, 1.0)),
                iw_host,
                ir_host,
            }
        })
        .collect();
    let c_final = rng.vec(s.b * s.n * s.w, -1.0, 1.0);

    // Discrete: forward keeps only the undo records.
    let mut m = up(g, &mem_s, &m0);
    let mut undos = Vec::new();
    let mut undo_bytes = 0;
    for st in &steps {
        let _read = g.discrete_read(&m, &st.ir).unwrap();
        let u = g.discrete_write(&mut m, &st.iw, &st.e, &st.a).unwrap();
        undo_bytes += u.size_bytes();
        undos.push(u);
    }
    let mut dm = up(g, &mem_s, &c_final);
    let mut disc = Vec::new();
    for (st, u) in steps.iter().zip(&undos).rev() {
        let gw = g.discrete_write_backward(u, &st.e, &st.a, &mut dm).unwrap();
        g.undo_write(&mut m, u).unwrap();
        let dwr = g
            .discrete_read_backward(&m, &st.ir, &st.c, &mut dm)
            .unwrap();
        disc.push((
            g.download(&gw.erase).unwrap(),
            g.download(&gw.add).unwrap(),
            g.download(&gw.weight_at_idx).unwrap(),
            g.download(&dwr).unwrap(),
        ));
    }
    assert_eq!(
        g.download(&m).unwrap(),
        m0,
        "memory must be restored bit for bit after the backward walk"
    );
    let disc_dm0 = g.download(&dm).unwrap();

    // Soft with one-hot weights: a snapshot per step.
    let mut m = up(g, &mem_s, &m0);
    let mut snaps = Vec::new();
    for st in &steps {
        snaps.push(g.copy(&m).unwrap());
        g.soft_write(&mut m, &st.hw, &st.e, &st.a).unwrap();
    }
    let snapshot_bytes: u64 = snaps.iter().map(|t| t.size_bytes()).sum();
    let mut dm = f64s(&c_final);
    let mut soft = Vec::new();
    for (st, snap) in steps.iter().zip(&snaps).rev() {
        let d_after = g
            .upload(&mem_s, &dm.iter().map(|&x| x as f32).collect::<Vec<_>>())
            .unwrap();
        let gw = g
            .soft_write_backward(snap, &st.hw, &st.e, &st.a, &d_after)
            .unwrap();
        let gr = g.soft_read_backward(snap, &st.hr, &st.c).unwrap();
        let (mw, mr) = (
            g.download(&gw.memory).unwrap(),
            g.download(&gr.memory).unwrap(),
        );
        dm = mw
            .iter()
            .zip(&mr)
            .map(|(&x, &y)| x as f64 + y as f64)
            .collect();
        let ww = f64s(&g.download(&gw.weights).unwrap());
        let wr = f64s(&g.download(&gr.weights).unwrap());
        soft.push((
            g.download(&gw.erase).unwrap(),
            g.download(&gw.add).unwrap(),
            at_idx(&ww, &st.iw_host, s.n),
            at_idx(&wr, &st.ir_host, s.n),
        ));
    }
    for (t, (d, sf)) in disc.iter().zip(&soft).enumerate() {
        let step = steps.len() - 1 - t;
        all_close(
            &format!("step {step} erase"),
            &d.0,
            &f64s(&sf.0),
            1e-4,
            1e-3,
        );
        all_close(&format!("step {step} add"), &d.1, &f64s(&sf.1), 1e-4, 1e-3);
        all_close(
            &format!("step {step} write weight_at_idx"),
            &d.2,
            &sf.2,
            1e-4,
            1e-3,
        );
        all_close(
            &format!("step {step} read weight_at_idx"),
            &d.3,
            &sf.3,
            1e-4,
            1e-3,
        );
    }
    all_close("dL/dM0", &disc_dm0, &dm, 1e-4, 1e-3);
    assert!(
        undo_bytes * 10 < snapshot_bytes,
        "undo records ({undo_bytes} B) should be far smaller than snapshots ({snapshot_bytes} B)"
    );
}

/// A discrete step (a read, then a write with its undo record and index checks) records 2
/// dispatches forward as two calls and 1 as `discrete_access`; its backward as three calls
/// (the write's, the undo, the read's, one each) 3, and as `discrete_access_backward` 2.
#[test]
fn a_discrete_step_is_one_dispatch_forward_and_two_backward() {
    let g = own_gpu();
    let (b, h, n, w) = (2, 3, 50, 8);
    let mut m = g.upload(&[b, n, w], &vec![0.5; b * n * w]).unwrap();
    let ix = g.upload_indices(&[b, h], &[1, 4, 1, 7, 7, 2]).unwrap();
    let v = g.upload(&[b, h, w], &vec![0.25; b * h * w]).unwrap();
    let mut d_mem = g.zeros(&[b, n, w]).unwrap();
    g.sync().unwrap();
    let (d0, _) = g.counters();
    g.discrete_read(&m, &ix).unwrap();
    let undo = g.discrete_write(&mut m, &ix, &v, &v).unwrap();
    let (d1, _) = g.counters();
    g.discrete_write_backward(&undo, &v, &v, &mut d_mem)
        .unwrap();
    g.undo_write(&mut m, &undo).unwrap();
    g.discrete_read_backward(&m, &ix, &v, &mut d_mem).unwrap();
    let (d2, _) = g.counters();
    g.sync().unwrap();
    assert_eq!(d1 - d0, 2, "forward dispatches");
    assert_eq!(d2 - d1, 3, "backward dispatches of the three calls");
    let (d3, _) = g.counters();
    let (_, undo) = g.discrete_access(&mut m, &ix, &ix, &v, &v).unwrap();
    let (d4, _) = g.counters();
    g.discrete_access_backward(&mut m, &ix, &v, &undo, &v, &v, &mut d_mem)
        .unwrap();
    let (d5, _) = g.counters();
    g.sync().unwrap();
    assert_eq!(d4 - d3, 1, "forward dispatches of discrete_access");
    assert_eq!(
        d5 - d4,
        2,
        "backward dispatches of discrete_access_backward"
    );
}

/// Bits of a tensor as downloaded (f32; f16 values exactly).
fn bits(g: &Gpu, t: &Tensor) -> Vec<u32> {
    g.download(t).unwrap().iter().map(|x| x.to_bits()).collect()
}

/// `discrete_access` and `discrete_access_backward` against the calls they replace (the read
/// and the write; the write's backward, the undo, the read's backward), bit for bit: the read,
/// the written memory, the undo record, the restored memory, d_memory and every gradient.
/// Read heads `hr` and write heads `hw` differ; write heads 0 and 1 share a row; read head 0
/// reads write head 0's row (so its values come from the undo record), read head 1 shares
/// read head 0's row, read head 2 the row after it.
fn access_backward_is_the_three_calls(
    g: &Gpu,
    (b, hr, hw, n, w): (usize, usize, usize, usize, usize),
    (mem_dt, grad_dt): (DType, DType),
    seed: u64,
) {
    let tag = format!("B={b} Hr={hr} Hw={hw} N={n} W={w} memory {mem_dt:?} d_memory {grad_dt:?}");
    let mut rng = Rng(seed);
    let mut pick = |len: usize| -> Vec<u32> {
        (0..len)
            .map(|_| (rng.next_u64() % n as u64) as u32)
            .collect()
    };
    let mut iw = pick(b * hw);
    let mut ir = pick(b * hr);
    for k in 0..b {
        if hw >= 2 {
            iw[k * hw + 1] = iw[k * hw];
        }
        ir[k * hr] = iw[k * hw];
        if hr >= 2 {
            ir[k * hr + 1] = ir[k * hr];
        }
        if hr >= 3 {
            ir[k * hr + 2] = (ir[k * hr] + 1) % n as u32;
        }
    }
    let m0 = rng.vec(b * n * w, -1.0, 1.0);
    let dm0 = rng.vec(b * n * w, -1.0, 1.0);
    let e = rng.vec(b * hw * w, 0.0, 1.0);
    let a = rng.vec(b * hw * w, -1.0, 1.0);
    let dr = rng.vec(b * hr * w, -1.0, 1.0);
    let ge = g.upload(&[b, hw, w], &e).unwrap();
    let ga = g.upload(&[b, hw, w], &a).unwrap();
    let gdr = g.upload(&[b, hr, w], &dr).unwrap();
    let ixr = g.upload_indices(&[b, hr], &ir).unwrap();
    let ixw = g.upload_indices(&[b, hw], &iw).unwrap();
    let run = |fused: bool| -> Vec<Vec<u32>> {
        let mut m = g.upload_as(mem_dt, &[b, n, w], &m0).unwrap();
        let mut d_mem = g.upload_as(grad_dt, &[b, n, w], &dm0).unwrap();
        let before = bits(g, &m);
        let (r, undo) = if fused {
            g.discrete_access(&mut m, &ixr, &ixw, &ge, &ga).unwrap()
        } else {
            let r = g.discrete_read(&m, &ixr).unwrap();
            (r, g.discrete_write(&mut m, &ixw, &ge, &ga).unwrap())
        };
        let forward = [bits(g, &r), bits(g, &m), bits(g, undo.old_rows())];
        let (gr, gw) = if fused {
            let s = g
                .discrete_access_backward(&mut m, &ixr, &gdr, &undo, &ge, &ga, &mut d_mem)
                .unwrap();
            (s.read_weight_at_idx, s.write)
        } else {
            let gw = g
                .discrete_write_backward(&undo, &ge, &ga, &mut d_mem)
                .unwrap();
            g.undo_write(&mut m, &undo).unwrap();
            let gr = g
                .discrete_read_backward(&m, &ixr, &gdr, &mut d_mem)
                .unwrap();
            (gr, gw)
        };
        let mut out: Vec<Vec<u32>> = [&m, &d_mem, &gr, &gw.erase, &gw.add, &gw.weight_at_idx]
            .iter()
            .map(|t| bits(g, t))
            .collect();
        assert_eq!(out[0], before, "{tag}: the memory is restored");
        out.extend(forward);
        out
    };
    let (three, fused) = (run(false), run(true));
    let names = [
        "memory",
        "d_memory",
        "read dw",
        "erase",
        "add",
        "write dw",
        "read",
        "memory after the write",
        "undo record",
    ];
    for (k, name) in names.iter().enumerate() {
        if let Some(i) = (0..three[k].len()).find(|&i| three[k][i] != fused[k][i]) {
            panic!(
                "{tag}: {name} element {i}: fused {} against the three calls' {}",
                f32::from_bits(fused[k][i]),
                f32::from_bits(three[k][i])
            );
        }
    }
}

#[test]
fn access_backward_is_the_three_calls_on_the_shape_grid() {
    let mut seed = 2000;
    for b in [1, 3] {
        for (hr, hw) in [(1, 1), (2, 1), (1, 3), (4, 2), (5, 5)] {
            for n in [1, 7, 129] {
                for w in [1, 19, 65, 300] {
                    seed += 1;
                    let s = (b, hr, hw, n, w);
                    access_backward_is_the_three_calls(gpu(), s, (DType::F32, DType::F32), seed);
                }
            }
        }
    }
}

/// f16 memories and gradients, of odd widths and even ones, on both f16 paths the adapter
/// has: native, and packed words (whose kernels take every head in one workgroup at odd
/// widths).
#[test]
fn access_backward_is_the_three_calls_with_f16() {
    let mut gpus = vec![own_gpu()];
    if gpus[0].f16_path() == F16Path::Native {
        let packed = own_gpu();
        packed.set_f16_path(F16Path::Packed).unwrap();
        gpus.push(packed);
    }
    let mut seed = 2300;
    for g in &gpus {
        for dts in [
            (DType::F16, DType::F32),
            (DType::F32, DType::F16),
            (DType::F16, DType::F16),
        ] {
            for s in [
                (1, 1, 1, 1, 1),
                (2, 3, 2, 9, 7),
                (3, 2, 5, 17, 64),
                (2, 5, 4, 40, 65),
            ] {
                seed += 1;
                access_backward_is_the_three_calls(g, s, dts, seed);
            }
        }
    }
}

/// Bound in 256 KiB row windows: each pass runs once per window.
#[test]
fn access_backward_is_the_three_calls_in_windows() {
    let (device, queue) = device_with(|l| l.max_storage_buffer_binding_size = 256 << 10);
    let g = Gpu::from_wgpu(device, queue).unwrap();
    for (k, s) in [(2, 3, 2, 1000, 64), (3, 5, 4, 700, 65)]
        .into_iter()
        .enumerate()
    {
        access_backward_is_the_three_calls(&g, s, (DType::F32, DType::F32), 2400 + k as u64);
        access_backward_is_the_three_calls(&g, s, (DType::F16, DType::F16), 2410 + k as u64);
    }
}

/// An out-of-range index of either set of `discrete_access` is reported by the next wait,
/// naming which; its row is left unchanged, and the read of a bad index is zeros.
#[test]
fn access_reports_bad_read_and_write_indices() {
    let g = own_gpu();
    let (b, h, n, w) = (2, 2, 6, 5);
    let host: Vec<f32> = (0..b * n * w).map(|x| x as f32).collect();
    let v = g.upload(&[b, h, w], &vec![0.5; b * h * w]).unwrap();
    let good = g.upload_indices(&[b, h], &[1, 2, 3, 4]).unwrap();
    let bad = g.upload_indices(&[b, h], &[1, 2, 3, 7]).unwrap();
    for (ir, iw, set) in [(&bad, &good, "read"), (&good, &bad, "write")] {
        let mut m = g.upload(&[b, n, w], &host).unwrap();
        let (r, undo) = g.discrete_access(&mut m, ir, iw, &v, &v).unwrap();
        match g.sync() {
            Err(Error::IndexOutOfRange {
                op,
                batch: 1,
                head: 1,
                index: 7,
                slots: 6,
            }) if op == format!("discrete_access ({set})") => {}
            other => panic!("expected the bad {set} index reported, got {other:?}"),
        }
        let got = g.download(&m).unwrap();
        // Batch 1's rows other than 3 and 4 (written when the write's indices are good) are
        // unchanged; with the bad write index, row 4 too.
        let rows = if set == "write" {
            vec![n, n + 1, n + 2, n + 4, n + 5]
        } else {
            vec![n, n + 1, n + 2, n + 5]
        };
        for row in rows {
            assert_eq!(
                &got[row * w..(row + 1) * w],
                &host[row * w..(row + 1) * w],
                "{set}: row {row}"
            );
        }
        if set == "read" {
            let read = g.download(&r).unwrap();
            assert_eq!(&read[3 * w..], &vec![0.0; w][..], "a bad read is zeros");
        }
        g.undo_write(&mut m, &undo).unwrap();
        assert_eq!(g.download(&m).unwrap(), host, "{set}: undone");
    }
}

/// A read index out of range is reported by the next wait, naming the op; the write's
/// backward and the undo still happen.
#[test]
fn access_backward_reports_a_bad_read_index() {
    let g = own_gpu();
    let (b, h, n, w) = (2, 2, 6, 5);
    let host: Vec<f32> = (0..b * n * w).map(|x| x as f32).collect();
    let mut m = g.upload(&[b, n, w], &host).unwrap();
    let v = g.upload(&[b, h, w], &vec![0.5; b * h * w]).unwrap();
    let iw = g.upload_indices(&[b, h], &[1, 2, 3, 4]).unwrap();
    let ir = g.upload_indices(&[b, h], &[1, 0, 3, 9]).unwrap();
    let mut d_mem = g.zeros(&[b, n, w]).unwrap();
    let undo = g.discrete_write(&mut m, &iw, &v, &v).unwrap();
    g.sync().unwrap();
    g.discrete_access_backward(&mut m, &ir, &v, &undo, &v, &v, &mut d_mem)
        .unwrap();
    match g.sync() {
        Err(Error::IndexOutOfRange {
            op: "discrete_access_backward",
            batch: 1,
            head: 1,
            index: 9,
            slots: 6,
        }) => {}
        other => panic!("expected the bad read index reported, got {other:?}"),
    }
    assert_eq!(g.download(&m).unwrap(), host, "the memory is restored");
}
