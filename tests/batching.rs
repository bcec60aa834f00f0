//! Many queued ops followed by one wait: results correct, and batched into few submits.
mod common;
use common::*;
use ntm_kernels::reference::{self as r, Shape};

#[test]
fn hundreds_of_queued_ops_then_one_sync() {
    let g = gpu();
    let s = Shape::new(2, 2, 37, 19);
    let mut rng = Rng(5);
    let m0 = rng.vec(s.b * s.n * s.w, -1.0, 1.0);
    let steps = 300;
    let ws: Vec<Vec<f32>> = (0..steps)
        .map(|_| rng.weights(s.b * s.h, s.n, 2.0))
        .collect();
    let es: Vec<Vec<f32>> = (0..steps)
        .map(|_| rng.vec(s.b * s.h * s.w, 0.0, 0.2))
        .collect();
    let as_: Vec<Vec<f32>> = (0..steps)
        .map(|_| rng.vec(s.b * s.h * s.w, -0.1, 0.1))
        .collect();
    let mut m = g.upload(&[s.b, s.n, s.w], &m0).unwrap();
    let inputs: Vec<_> = (0..steps)
        .map(|t| {
            (
                g.upload(&[s.b, s.h, s.n], &ws[t]).unwrap(),
                g.upload(&[s.b, s.h, s.w], &es[t]).unwrap(),
                g.upload(&[s.b, s.h, s.w], &as_[t]).unwrap(),
            )
        })
        .collect();
    g.sync().unwrap();
    let (d0, s0) = g.counters();
    let mut reads = Vec::new();
    for (w, e, a) in &inputs {
        g.soft_write(&mut m, w, e, a).unwrap();
        reads.push(g.soft_read(&m, w).unwrap());
    }
    g.sync().unwrap();
    let (d1, s1) = g.counters();
    assert!(
        d1 - d0 >= 2 * steps as u64,
        "expected at least {} dispatches, recorded {}",
        2 * steps,
        d1 - d0
    );
    assert!(
        s1 - s0 <= 2,
        "{} ops took {} submits: they must be batched",
        2 * steps,
        s1 - s0
    );

    let mut want = f64s(&m0);
    for t in 0..steps {
        r::soft_write(&mut want, &f64s(&ws[t]), &f64s(&es[t]), &f64s(&as_[t]), s);
        if t % 50 == 0 || t == steps - 1 {
            let rr = r::soft_read(&want, &f64s(&ws[t]), s);
            all_close(
                &format!("read after write {t}"),
                &g.download(&reads[t]).unwrap(),
                &rr,
                1e-4,
                1e-3,
            );
        }
    }
    all_close(
        "memory after 300 writes",
        &g.download(&m).unwrap(),
        &want,
        1e-4,
        1e-3,
    );
}
