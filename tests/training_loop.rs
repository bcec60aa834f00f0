//! The training-loop API against the obvious host computation: axpy, fill, write, copy_into,
//! flush, wrap, user kernels in the crate's batches, and the backward forms that accumulate
//! into a caller's gradient, including 50 steps of soft backprop through time on the GPU.
mod common;
use common::*;
use ntm_kernels::reference::{self as r, Shape};
use ntm_kernels::{Access, DType, Error, Gpu, Tensor};

fn up(g: &Gpu, shape: &[usize], x: &[f32]) -> Tensor {
    g.upload(shape, x).unwrap()
}

#[test]
fn axpy_fill_write_and_copy_into_match_the_host() {
    let g = gpu();
    let mut rng = Rng(3);
    for len in [1, 3, 4, 5, 1027, 70_001] {
        let x = rng.vec(len, -1.0, 1.0);
        let y0 = rng.vec(len, -1.0, 1.0);
        let tx = up(g, &[len], &x);
        let mut ty = up(g, &[len], &y0);
        g.axpy(-0.75, &tx, &mut ty).unwrap();
        let want: Vec<f64> = (0..len)
            .map(|i| y0[i] as f64 - 0.75 * x[i] as f64)
            .collect();
        // One rounding of y + alpha x in f32: relative to the operands' scale.
        all_close(
            &format!("axpy {len}"),
            &g.download(&ty).unwrap(),
            &want,
            1e-6,
            1e-6,
        );

        let mut tf = up(g, &[len], &y0);
        g.fill(&mut tf, 2.5).unwrap();
        assert!(
            g.download(&tf).unwrap().iter().all(|&v| v == 2.5),
            "fill {len}"
        );

        let mut tw = g.zeros(&[len]).unwrap();
        g.write(&mut tw, &x).unwrap();
        assert_eq!(g.download(&tw).unwrap(), x, "write {len}");

        let mut tc = g.zeros(&[len]).unwrap();
        g.copy_into(&ty, &mut tc).unwrap();
        assert_eq!(
            g.download(&tc).unwrap(),
            g.download(&ty).unwrap(),
            "copy_into {len}"
        );
    }
}

/// `write` lands in order with the recorded work: an op recorded before it reads the old
/// contents, one recorded after it the new, all in one batch.
#[test]
fn write_is_ordered_with_recorded_ops() {
    let g = &own_gpu();
    let (b, n, w) = (1, 4, 2);
    let mut m = up(g, &[b, n, w], &[1.0; 8]);
    let wt = up(g, &[b, 1, n], &[0.0, 1.0, 0.0, 0.0]);
    g.sync().unwrap();
    let before = g.soft_read(&m, &wt).unwrap();
    g.write(&mut m, &[0.0, 0.0, 7.0, 8.0, 0.0, 0.0, 0.0, 0.0])
        .unwrap();
    let after = g.soft_read(&m, &wt).unwrap();
    let (_, s0) = g.counters();
    assert_eq!(g.download(&before).unwrap(), vec![1.0, 1.0]);
    let (_, s1) = g.counters();
    assert_eq!(g.download(&after).unwrap(), vec![7.0, 8.0]);
    assert_eq!(
        s1 - s0,
        1,
        "recorded in one batch, submitted by the download"
    );
}

/// `flush` submits without waiting; work recorded after it, then `sync`, completes in order.
#[test]
fn flush_then_more_work_then_sync() {
    let g = &own_gpu();
    let len = 10_000;
    let x = up(g, &[len], &vec![1.0; len]);
    let mut y = g.zeros(&[len]).unwrap();
    g.sync().unwrap();
    let (_, s0) = g.counters();
    g.axpy(1.0, &x, &mut y).unwrap();
    g.flush().unwrap();
    let (_, s1) = g.counters();
    assert_eq!(s1 - s0, 1, "flush submitted the batch");
    g.axpy(2.0, &x, &mut y).unwrap();
    g.flush().unwrap();
    g.axpy(4.0, &x, &mut y).unwrap();
    g.sync().unwrap();
    assert!(g.download(&y).unwrap().iter().all(|&v| v == 7.0));
    g.flush().unwrap(); // nothing queued: no submit
    let (_, s2) = g.counters();
    assert_eq!(s2 - s1, 3, "two more batches and the download's");
}

const DOUBLE: &str = "
@group(0) @binding(0) var<uniform> p: array<vec4<u32>, 4>;
@group(0) @binding(1) var<storage, read_write> t: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < p[0].x {
        t[id.x] = t[id.x] * bitcast<f32>(p[0].y) + bitcast<f32>(p[3].w);
    }
}";

/// A user kernel between crate ops, in one batch: each sees the result of the one before.
#[test]
fn user_kernels_run_in_order_with_crate_ops() {
    let g = &own_gpu();
    let s = Shape::new(1, 1, 5, 3);
    let len = s.n * s.w;
    let k = g
        .kernel("scale_shift", DOUBLE, "main", &[Access::ReadWrite])
        .unwrap();
    let m0: Vec<f32> = (0..len).map(|i| i as f32 * 0.1).collect();
    let w = vec![0.1f32, 0.2, 0.4, 0.2, 0.1];
    let e = vec![0.5f32; 3];
    let a = vec![1.0f32; 3];
    let mut m = up(g, &[1, s.n, s.w], &m0);
    let (wt, et, at) = (
        up(g, &[1, 1, s.n], &w),
        up(g, &[1, 1, 3], &e),
        up(g, &[1, 1, 3], &a),
    );
    g.sync().unwrap();
    let (_, s0) = g.counters();
    g.soft_write(&mut m, &wt, &et, &at).unwrap();
    let params = [
        len as u32,
        2.0f32.to_bits(),
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0.5f32.to_bits(),
    ];
    g.dispatch(&k, [1, 1, 1], &[&m], &params).unwrap();
    let r1 = g.soft_read(&m, &wt).unwrap();
    g.dispatch(&k, [1, 1, 1], &[&m], &[len as u32, 1.0f32.to_bits()])
        .unwrap();
    let got = g.download(&m).unwrap();
    let (_, s1) = g.counters();
    assert_eq!(s1 - s0, 1, "one batch");
    let got_r = g.download(&r1).unwrap();
    let mut host: Vec<f64> = f64s(&m0);
    r::soft_write(&mut host, &f64s(&w), &f64s(&e), &f64s(&a), s);
    let host: Vec<f64> = host.iter().map(|v| v * 2.0 + 0.5).collect();
    let want_r = r::soft_read(&host, &f64s(&w), s);
    all_close("user kernel after soft_write", &got, &host, 0.0, 1e-6);
    all_close("soft_read after user kernel", &got_r, &want_r, 1e-6, 1e-6);
    // The same kernel again: the pipeline is cached.
    let k2 = g
        .kernel("scale_shift", DOUBLE, "main", &[Access::ReadWrite])
        .unwrap();
    assert_eq!(k2.name(), "scale_shift");
}

const READS_WORKGROUP: &str = "
@group(0) @binding(0) var<uniform> p: array<vec4<u32>, 4>;
@group(0) @binding(1) var<storage, read_write> t: array<f32>;
var<workgroup> scratch: array<vec4<f32>, 1024>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) i: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    // Reads the workgroup's memory without writing it: WebGPU zeroes it first.
    for (var k = 0u; k < 4u; k += 1u) {
        let v = scratch[k * 256u + i];
        t[(wg.x * 4u + k) * 256u + i] = v.x + v.y + v.z + v.w;
    }
}";

/// A user kernel that reads workgroup memory it never wrote sees zeros (WebGPU's guarantee,
/// which the crate's own kernels do without), also right after crate kernels that filled
/// theirs with other values, in the same batch.
#[test]
fn user_kernels_see_zeroed_workgroup_memory() {
    let g = &own_gpu();
    let k = g
        .kernel(
            "reads_workgroup",
            READS_WORKGROUP,
            "main",
            &[Access::ReadWrite],
        )
        .unwrap();
    let s = Shape::new(2, 4, 4096, 64);
    let mut rng = Rng(77);
    let m = up(g, &[s.b, s.n, s.w], &rng.vec(s.b * s.n * s.w, 1.0, 2.0));
    let w = up(g, &[s.b, s.h, s.n], &rng.weights(s.b * s.h, s.n, 1.0));
    let groups = 64u32;
    let out = up(
        g,
        &[groups as usize * 1024],
        &vec![7.0; groups as usize * 1024],
    );
    for _ in 0..3 {
        let _ = g.soft_read(&m, &w).unwrap(); // column partials: 16 KiB of workgroup memory
        g.dispatch(&k, [groups, 1, 1], &[&out], &[]).unwrap();
    }
    let got = g.download(&out).unwrap();
    let bad = got.iter().position(|&v| v != 0.0);
    assert_eq!(
        bad,
        None,
        "workgroup memory not zeroed: {:?}",
        bad.map(|i| got[i])
    );
}

/// `wrap` puts an application's buffer under the crate: crate ops read and write it, and the
/// application reads what they wrote.
#[test]
fn wrapped_application_buffers_are_read_and_written() {
    let g = &own_gpu();
    let s = Shape::new(2, 1, 6, 4);
    let len = s.b * s.n * s.w;
    let m0 = Rng(9).vec(len, -1.0, 1.0);
    let buf = g.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("application memory"),
        size: (len * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    g.queue().write_buffer(&buf, 0, bytemuck::cast_slice(&m0));
    let mut m = g.wrap(buf.clone(), &[s.b, s.n, s.w], DType::F32).unwrap();
    assert_eq!(m.dtype(), DType::F32);
    let w = Rng(10).weights(s.b * s.h, s.n, 1.0);
    let wt = up(g, &[s.b, s.h, s.n], &w);
    let e = up(g, &[s.b, s.h, s.w], &vec![0.25; s.b * s.h * s.w]);
    let a = up(g, &[s.b, s.h, s.w], &vec![0.5; s.b * s.h * s.w]);
    let r0 = g.soft_read(&m, &wt).unwrap();
    g.soft_write(&mut m, &wt, &e, &a).unwrap();
    all_close(
        "read of a wrapped buffer",
        &g.download(&r0).unwrap(),
        &r::soft_read(&f64s(&m0), &f64s(&w), s),
        1e-6,
        1e-6,
    );
    let mut want = f64s(&m0);
    r::soft_write(&mut want, &f64s(&w), &[0.25; 8], &[0.5; 8], s);
    // The application's own readback of its buffer.
    let staging = g.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (len * 4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    g.sync().unwrap();
    let mut enc = g.device().create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(&buf, 0, &staging, 0, (len * 4) as u64);
    g.queue().submit([enc.finish()]);
    staging.map_async(wgpu::MapMode::Read, .., |r| r.unwrap());
    g.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .unwrap();
    let got: Vec<f32> = bytemuck::cast_slice(&staging.get_mapped_range(..).unwrap()).to_vec();
    all_close("write into a wrapped buffer", &got, &want, 1e-6, 1e-6);
}

/// The accumulating backward forms equal the fresh forms plus what the accumulator held.
#[test]
fn accumulating_backward_forms_equal_the_fresh_ones() {
    // A Gpu of its own: on GL, wgpu runs a batch inside its submit under a context lock that
    // other threads of this binary give up waiting for after 6 s.
    let g = &own_gpu();
    for (k, s) in [
        Shape::new(2, 3, 37, 19),
        Shape::new(1, 2, 129, 64),
        Shape::new(3, 1, 7, 1),
    ]
    .into_iter()
    .enumerate()
    {
        let mut rng = Rng(50 + k as u64);
        let (bnw, bhw, bhn) = ([s.b, s.n, s.w], [s.b, s.h, s.w], [s.b, s.h, s.n]);
        let m = up(g, &bnw, &rng.vec(s.b * s.n * s.w, -1.0, 1.0));
        let keys = up(g, &bhw, &rng.vec(s.b * s.h * s.w, -1.0, 1.0));
        let beta = up(g, &[s.b, s.h], &rng.vec(s.b * s.h, 1.0, 5.0));
        let wt = up(g, &bhn, &rng.weights(s.b * s.h, s.n, 2.0));
        let dw = up(g, &bhn, &rng.vec(s.b * s.h * s.n, -1.0, 1.0));
        let dr = up(g, &bhw, &rng.vec(s.b * s.h * s.w, -1.0, 1.0));
        let e = up(g, &bhw, &rng.vec(s.b * s.h * s.w, 0.0, 1.0));
        let a = up(g, &bhw, &rng.vec(s.b * s.h * s.w, -1.0, 1.0));
        let acc0 = rng.vec(s.b * s.n * s.w, -1.0, 1.0);
        let tag = format!("{s:?}");
        let host_sum = |x: &Tensor| -> Vec<f64> {
            g.download(x)
                .unwrap()
                .iter()
                .zip(&acc0)
                .map(|(a, b)| *a as f64 + *b as f64)
                .collect()
        };

        let fresh = g.soft_read_backward(&m, &wt, &dr).unwrap();
        let mut acc = up(g, &bnw, &acc0);
        let dw_into = g.soft_read_backward_into(&m, &wt, &dr, &mut acc).unwrap();
        all_close(
            &format!("{tag} read into"),
            &g.download(&acc).unwrap(),
            &host_sum(&fresh.memory),
            1e-6,
            1e-6,
        );
        assert_eq!(
            g.download(&dw_into).unwrap(),
            g.download(&fresh.weights).unwrap()
        );

        let fresh = g
            .content_address_backward(&m, &keys, &beta, &wt, &dw)
            .unwrap();
        let mut acc = up(g, &bnw, &acc0);
        let kg = g
            .content_address_backward_into(&m, &keys, &beta, &wt, &dw, &mut acc)
            .unwrap();
        all_close(
            &format!("{tag} content into"),
            &g.download(&acc).unwrap(),
            &host_sum(&fresh.memory),
            1e-6,
            1e-6,
        );
        assert_eq!(
            g.download(&kg.keys).unwrap(),
            g.download(&fresh.keys).unwrap()
        );
        assert_eq!(
            g.download(&kg.beta).unwrap(),
            g.download(&fresh.beta).unwrap()
        );

        let fresh = g
            .content_address_backward_scores(&m, &keys, &beta, &dw)
            .unwrap();
        let mut acc = up(g, &bnw, &acc0);
        let kg = g
            .content_address_backward_scores_into(&m, &keys, &beta, &dw, &mut acc)
            .unwrap();
        all_close(
            &format!("{tag} content scores into"),
            &g.download(&acc).unwrap(),
            &host_sum(&fresh.memory),
            1e-6,
            1e-6,
        );
        assert_eq!(
            g.download(&kg.keys).unwrap(),
            g.download(&fresh.keys).unwrap()
        );

        let d_after = up(g, &bnw, &acc0);
        let fresh = g.soft_write_backward(&m, &wt, &e, &a, &d_after).unwrap();
        let mut dm = up(g, &bnw, &acc0);
        let hg = g
            .soft_write_backward_into(&m, &wt, &e, &a, &mut dm)
            .unwrap();
        // The in-place form turns dM' into dM inside the heads' pass; the fresh form has a
        // kernel of its own for dM, which a shader compiler may contract differently
        // (`1 - w e` as a fused multiply-add or not): equal to f32 rounding, not bit for bit.
        all_close(
            &format!("{tag} write into"),
            &g.download(&dm).unwrap(),
            &f64s(&g.download(&fresh.memory).unwrap()),
            1e-6,
            1e-6,
        );
        assert_eq!(
            g.download(&hg.weights).unwrap(),
            g.download(&fresh.weights).unwrap()
        );
        assert_eq!(
            g.download(&hg.erase).unwrap(),
            g.download(&fresh.erase).unwrap()
        );
        assert_eq!(
            g.download(&hg.add).unwrap(),
            g.download(&fresh.add).unwrap()
        );
    }
}

/// 50 steps of soft backprop through time done entirely on the GPU with the accumulating
/// forms (one sync at the end) equal the same backward with fresh gradients summed on the host.
#[test]
fn soft_bptt_on_the_gpu_equals_the_host_summed_version() {
    // A Gpu of its own, as above: its one batch of 50 steps is long on GL.
    let g = &own_gpu();
    let s = Shape::new(2, 2, 33, 8);
    let steps = 50;
    let mut rng = Rng(77);
    let (bnw, bhw, bhn) = ([s.b, s.n, s.w], [s.b, s.h, s.w], [s.b, s.h, s.n]);
    let inputs: Vec<(Tensor, Tensor, Tensor, Tensor)> = (0..steps)
        .map(|_| {
            (
                up(g, &bhn, &rng.weights(s.b * s.h, s.n, 2.0)),
                up(g, &bhw, &rng.vec(s.b * s.h * s.w, 0.0, 0.3)),
                up(g, &bhw, &rng.vec(s.b * s.h * s.w, -0.2, 0.2)),
                up(g, &bhw, &rng.vec(s.b * s.h * s.w, -1.0, 1.0)),
            )
        })
        .collect();
    // Forward: read, then write, each step; keep the snapshots soft backprop needs.
    let mut m = up(g, &bnw, &rng.vec(s.b * s.n * s.w, -1.0, 1.0));
    let mut snaps = Vec::new();
    for (w, e, a, _) in &inputs {
        snaps.push(g.copy(&m).unwrap());
        g.soft_write(&mut m, w, e, a).unwrap();
    }
    // GPU: dM accumulates in one tensor, no host round trip.
    let mut dm = up(g, &bnw, &vec![0.01; s.b * s.n * s.w]);
    let mut dws = Vec::new();
    for t in (0..steps).rev() {
        let (w, e, a, dr) = &inputs[t];
        let hg = g
            .soft_write_backward_into(&snaps[t], w, e, a, &mut dm)
            .unwrap();
        dws.push(hg.weights);
        g.soft_read_backward_into(&snaps[t], w, dr, &mut dm)
            .unwrap();
    }
    let gpu_dm = g.download(&dm).unwrap();
    // Host-summed: fresh gradients, downloaded and summed on the host each step.
    let mut host = vec![0.01f32; s.b * s.n * s.w];
    for t in (0..steps).rev() {
        let (w, e, a, dr) = &inputs[t];
        let gw = g
            .soft_write_backward(&snaps[t], w, e, a, &up(g, &bnw, &host))
            .unwrap();
        let gr = g.soft_read_backward(&snaps[t], w, dr).unwrap();
        let (x, y) = (
            g.download(&gw.memory).unwrap(),
            g.download(&gr.memory).unwrap(),
        );
        host = x.iter().zip(&y).map(|(a, b)| a + b).collect();
        // dM' differs from the accumulated one by f32 rounding (the in-place write backward
        // forms dM in its heads' pass), so dw does too.
        all_close(
            &format!("dw at step {t}"),
            &g.download(&dws[steps - 1 - t]).unwrap(),
            &f64s(&g.download(&gw.weights).unwrap()),
            1e-6,
            1e-6,
        );
    }
    all_close("dM after 50 steps", &gpu_dm, &f64s(&host), 1e-6, 1e-6);
}

#[test]
fn misuse_is_an_error_and_the_gpu_stays_usable() {
    let g = &own_gpu();
    let msg = |r: Result<(), Error>| r.unwrap_err().to_string();
    let says = |m: String, parts: &[&str]| {
        for p in parts {
            assert!(m.contains(p), "{m:?} should mention {p:?}");
        }
    };
    let x = g.zeros(&[2, 3]).unwrap();
    let mut y = g.zeros(&[3, 2]).unwrap();
    says(
        msg(g.axpy(1.0, &x, &mut y)),
        &["axpy", "`x`", "[2, 3]", "[3, 2]"],
    );
    says(
        msg(g.copy_into(&x, &mut y)),
        &["copy_into", "`src`", "[3, 2]"],
    );
    says(msg(g.write(&mut y, &[1.0; 5])), &["write", "6", "5"]);
    // wrap: too small, no STORAGE.
    let small = g.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 16,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    says(
        g.wrap(small.clone(), &[5], DType::F32)
            .unwrap_err()
            .to_string(),
        &["wrap", "16 bytes", "needs 32"],
    );
    let no_storage = g.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    says(
        g.wrap(no_storage, &[4], DType::F32)
            .unwrap_err()
            .to_string(),
        &["wrap", "STORAGE"],
    );
    let only_storage = g.wrap(small, &[4], DType::F32).unwrap();
    says(
        g.download(&only_storage).unwrap_err().to_string(),
        &["download", "COPY_SRC"],
    );
    // Kernels: WGSL that does not compile, unknown entry, bindings that do not match.
    let kerr = |src: &str, entry: &str, access: &[Access]| {
        g.kernel("mine", src, entry, access)
            .unwrap_err()
            .to_string()
    };
    says(
        kerr("fn main( {", "main", &[]),
        &["kernel `mine`", "does not compile"],
    );
    says(
        kerr(DOUBLE, "nope", &[Access::ReadWrite]),
        &["mine", "nope"],
    );
    says(
        kerr(DOUBLE, "main", &[]),
        &["mine", "1 storage bindings", "0 accesses"],
    );
    says(
        kerr(DOUBLE, "main", &[Access::Read]),
        &["mine", "binding 1", "read_write", "Read"],
    );
    let k = g
        .kernel("mine", DOUBLE, "main", &[Access::ReadWrite])
        .unwrap();
    says(
        msg(g.dispatch(&k, [1, 1, 1], &[], &[])),
        &["dispatch", "binds 1 tensors but 0"],
    );
    says(
        msg(g.dispatch(&k, [1, 1, 1], &[&x], &[0; 17])),
        &["dispatch", "parameter words", "17", "16"],
    );
    says(
        msg(g.dispatch(&k, [u32::MAX, 1, 1], &[&x], &[])),
        &["dispatch", "workgroups per dimension"],
    );
    let other = own_gpu();
    let ko = other
        .kernel("mine", DOUBLE, "main", &[Access::ReadWrite])
        .unwrap();
    says(
        msg(g.dispatch(&ko, [1, 1, 1], &[&x], &[])),
        &["another Gpu"],
    );
    says(
        msg(other.dispatch(&ko, [1, 1, 1], &[&x], &[])),
        &["belongs to another Gpu"],
    );
    // Still usable.
    let t = g.upload(&[4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    g.dispatch(&k, [1, 1, 1], &[&t], &[4, 3.0f32.to_bits()])
        .unwrap();
    assert_eq!(g.download(&t).unwrap(), vec![3.0, 6.0, 9.0, 12.0]);
    g.sync().unwrap();
}
