//! The crate's kernels leave their workgroup memory unzeroed: each writes every workgroup slot
//! it reads before reading it. Here every op runs once as it is and once right after a user
//! kernel that fills 16 KiB of workgroup memory (the most a kernel may use) with NaN in every
//! workgroup the device runs, and must give the same bits. On lavapipe and llvmpipe a
//! workgroup's memory keeps what the workgroup before it on the same thread left
//! (`training_loop::user_kernels_see_zeroed_workgroup_memory` fails without the zeroing), so a
//! slot read before it is written would read NaN, or the previous kernel's values, and change
//! the result.
mod common;
use common::*;
use ntm_kernels::{Access, Gpu, Indices, Kernel, RowSums, Tensor};

const POISON: &str = "
@group(0) @binding(0) var<uniform> p: array<vec4<u32>, 4>;
@group(0) @binding(1) var<storage, read_write> sink: array<f32>;
var<workgroup> junk: array<vec4<f32>, 1024>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) i: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let nan = bitcast<f32>(p[0].x);
    for (var k = 0u; k < 4u; k += 1u) {
        junk[k * 256u + i] = vec4<f32>(nan);
    }
    workgroupBarrier();
    // Keeps the stores: one value read back per workgroup (the sink is never checked).
    if i == 0u {
        sink[wg.x] = junk[p[0].y % 1024u].x;
    }
}";

/// Workgroups of the poison kernel: many more than any CPU adapter's threads.
const POISON_GROUPS: u32 = 256;

struct Poison {
    kernel: Kernel,
    sink: Tensor,
}

impl Poison {
    fn new(g: &Gpu) -> Poison {
        Poison {
            kernel: g
                .kernel("poison", POISON, "main", &[Access::ReadWrite])
                .unwrap(),
            sink: g.zeros(&[POISON_GROUPS as usize]).unwrap(),
        }
    }

    fn run(&self, g: &Gpu) {
        g.dispatch(
            &self.kernel,
            [POISON_GROUPS, 1, 1],
            &[&self.sink],
            &[0x7fc0_0000, 7],
        )
        .unwrap();
    }
}

fn bits(g: &Gpu, t: &Tensor) -> Vec<u32> {
    g.download(t).unwrap().iter().map(|x| x.to_bits()).collect()
}

/// Every op's outputs at one shape, each op after the poison kernel when `poison` is given.
fn outputs(
    g: &Gpu,
    (b, h, n, w): (usize, usize, usize, usize),
    poison: Option<&Poison>,
) -> Vec<(String, Vec<u32>)> {
    let mut rng = Rng(1000 + (b * 7 + h * 13 + n * 17 + w * 19) as u64);
    let up = |shape: &[usize], x: &[f32]| g.upload(shape, x).unwrap();
    let mem = up(&[b, n, w], &rng.vec(b * n * w, -1.0, 1.0));
    let keys = up(&[b, h, w], &rng.vec(b * h * w, -1.0, 1.0));
    let beta = up(&[b, h], &rng.vec(b * h, 0.5, 10.0));
    let wts = up(&[b, h, n], &rng.weights(b * h, n, 3.0));
    let prev = up(&[b, h, n], &rng.weights(b * h, n, 3.0));
    let erase = up(&[b, h, w], &rng.vec(b * h * w, 0.0, 1.0));
    let add = up(&[b, h, w], &rng.vec(b * h * w, -1.0, 1.0));
    let gate = up(&[b, h], &rng.vec(b * h, 0.0, 1.0));
    let shift = up(&[b, h, 3], &rng.weights(b * h, 3, 1.0));
    let gamma = up(&[b, h], &rng.vec(b * h, 1.0, 3.0));
    let dw = up(&[b, h, n], &rng.vec(b * h * n, -1.0, 1.0));
    let dr = up(&[b, h, w], &rng.vec(b * h * w, -1.0, 1.0));
    let dm = up(&[b, n, w], &rng.vec(b * n * w, -1.0, 1.0));
    let adv = up(&[b, h], &rng.vec(b * h, -1.0, 1.0));
    let idx: Vec<u32> = (0..b * h).map(|k| ((k * 7919) % n) as u32).collect();
    let ix: Indices = g.upload_indices(&[b, h], &idx).unwrap();
    let before = || {
        if let Some(p) = poison {
            p.run(g);
        }
    };
    let mut out: Vec<(String, Vec<u32>)> = Vec::new();
    let mut keep = |what: &str, t: &[u32]| out.push((what.to_string(), t.to_vec()));
    let f = |t: &Tensor| bits(g, t);

    before();
    let ca = g.content_address(&mem, &keys, &beta).unwrap();
    keep("content_address", &f(&ca));
    before();
    let cg = g
        .content_address_backward(&mem, &keys, &beta, &ca, &dw)
        .unwrap();
    keep("content_address_backward memory", &f(&cg.memory));
    keep("content_address_backward keys", &f(&cg.keys));
    keep("content_address_backward beta", &f(&cg.beta));
    before();
    let la = g
        .location_address(&ca, &prev, &gate, &shift, &gamma)
        .unwrap();
    keep("location_address", &f(&la));
    before();
    let lg = g
        .location_address_backward(&ca, &prev, &gate, &shift, &gamma, &dw)
        .unwrap();
    for (what, t) in [
        ("content", &lg.content),
        ("prev", &lg.prev),
        ("gate", &lg.gate),
        ("shift", &lg.shift),
        ("gamma", &lg.gamma),
    ] {
        keep(&format!("location_address_backward {what}"), &f(t));
    }
    before();
    keep("soft_read", &f(&g.soft_read(&mem, &wts).unwrap()));
    before();
    let rg = g.soft_read_backward(&mem, &wts, &dr).unwrap();
    keep("soft_read_backward memory", &f(&rg.memory));
    keep("soft_read_backward weights", &f(&rg.weights));
    before();
    let mut written = g.copy(&mem).unwrap();
    g.soft_write(&mut written, &wts, &erase, &add).unwrap();
    keep("soft_write", &f(&written));
    before();
    let wg = g
        .soft_write_backward(&mem, &wts, &erase, &add, &dm)
        .unwrap();
    keep("soft_write_backward memory", &f(&wg.memory));
    keep("soft_write_backward weights", &f(&wg.weights));
    keep("soft_write_backward erase", &f(&wg.erase));
    keep("soft_write_backward add", &f(&wg.add));
    before();
    let drawn = g.sample(&wts, 5).unwrap();
    let greedy = g.argmax(&wts).unwrap();
    keep("sample", &g.download_indices(&drawn).unwrap());
    keep("argmax", &g.download_indices(&greedy).unwrap());
    before();
    let rz = g.reinforce_grad(&wts, &drawn, &adv, 0.01).unwrap();
    keep("reinforce_grad", &f(&rz));
    before();
    let mut dmem = g.copy(&dm).unwrap();
    let rd = g.discrete_read_backward(&mem, &ix, &dr, &mut dmem).unwrap();
    keep("discrete_read_backward weight", &f(&rd));
    keep("discrete_read_backward memory", &f(&dmem));
    let mut m2 = g.copy(&mem).unwrap();
    let undo = g.discrete_write(&mut m2, &ix, &erase, &add).unwrap();
    before();
    let mut dmem2 = g.copy(&dm).unwrap();
    let wgd = g
        .discrete_write_backward(&undo, &erase, &add, &mut dmem2)
        .unwrap();
    keep("discrete_write_backward erase", &f(&wgd.erase));
    keep("discrete_write_backward add", &f(&wgd.add));
    keep("discrete_write_backward weight", &f(&wgd.weight_at_idx));
    keep("discrete_write_backward memory", &f(&dmem2));
    out
}

/// Every op gives the same bits after the poison kernel as without it: soft and discrete,
/// streaming rows (W ≤ 1,024) and row tiles (W = 1,100), several heads and head groups, shapes
/// of one and of many blocks, with each way of summing streaming rows the adapter has.
#[test]
fn every_op_gives_the_same_bits_after_workgroup_memory_is_poisoned() {
    for sums in [RowSums::Workgroup, RowSums::Subgroup] {
        let g = own_gpu();
        if g.set_row_sums(sums).is_err() {
            continue; // no subgroups on this adapter
        }
        poisoned_and_clean_agree(&g);
    }
}

fn poisoned_and_clean_agree(g: &Gpu) {
    let poison = Poison::new(g);
    for shape in [
        (2, 1, 3000, 64),
        (1, 5, 700, 20),
        (3, 2, 129, 7),
        (2, 3, 500, 32),
        (1, 3, 300, 300),
        (1, 2, 40, 1100),
    ] {
        let clean = outputs(g, shape, None);
        let poisoned = outputs(g, shape, Some(&poison));
        assert_eq!(clean.len(), poisoned.len());
        for ((what, a), (_, b)) in clean.iter().zip(&poisoned) {
            let diff = a.iter().zip(b).position(|(x, y)| x != y);
            assert_eq!(
                diff,
                None,
                "{:?} {shape:?} {what}: element {diff:?} differs after the poison ({:?} against {:?})",
                g.row_sums(),
                diff.map(|i| f32::from_bits(a[i])),
                diff.map(|i| f32::from_bits(b[i]))
            );
        }
    }
}
