//! The copy kernel (vec4 loads and stores) against the source, bit for bit, on lengths that
//! are not multiples of 4 or of a workgroup's chunk, and across binding windows.
mod common;
use common::*;
use ntm_kernels::Gpu;

fn check(g: &Gpu, len: usize, seed: u64) {
    let host = Rng(seed).vec(len, -1e3, 1e3);
    let t = g.upload(&[len], &host).unwrap();
    let c = g.copy(&t).unwrap();
    let got = g.download(&c).unwrap();
    assert_eq!(got.len(), len);
    if let Some(i) = (0..len).find(|&i| got[i].to_bits() != host[i].to_bits()) {
        panic!("copy of {len}: element {i} is {} not {}", got[i], host[i]);
    }
}

#[test]
fn copies_every_length_bit_for_bit() {
    let g = gpu();
    for (k, len) in [1, 2, 3, 4, 5, 1023, 4096, 4097, 65_539, 1_000_003]
        .into_iter()
        .enumerate()
    {
        check(g, len, k as u64);
    }
}

#[test]
fn copies_across_binding_windows() {
    let (device, queue) = device_with(|l| l.max_storage_buffer_binding_size = 256 << 10);
    let g = Gpu::from_wgpu(device, queue).unwrap();
    for (k, len) in [65_536 * 3 + 7, 1_000_001].into_iter().enumerate() {
        check(&g, len, 10 + k as u64);
    }
}
