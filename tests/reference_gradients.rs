//! The CPU reference's backward passes against central finite differences of its forwards,
//! in f64, for every input of every op. Loss = sum(output * cotangent) with a random cotangent.
mod common;
use common::*;
use ntm_kernels::reference::{self as r, Shape};

const STEP: f64 = 1e-6;
// Central differences in f64 with step 1e-6 err by ~1e-9 relative: 1e-6 leaves margin.
const ATOL: f64 = 1e-6;
const RTOL: f64 = 1e-5;

fn v(rng: &mut Rng, len: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..len).map(|_| rng.range(lo, hi)).collect()
}

/// Numerical gradient of `loss` with respect to each element of `x`.
fn numeric(x: &[f64], loss: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let orig = xp[i];
            xp[i] = orig + STEP;
            let up = loss(&xp);
            xp[i] = orig - STEP;
            let down = loss(&xp);
            xp[i] = orig;
            (up - down) / (2.0 * STEP)
        })
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn check(what: &str, analytic: &[f64], numeric: &[f64]) {
    assert_eq!(analytic.len(), numeric.len(), "{what}: length");
    let scale = numeric
        .iter()
        .fold(0.0f64, |m, x| m.max(x.abs()))
        .max(1e-12);
    let mut worst = (0, 0.0);
    for i in 0..analytic.len() {
        let err = (analytic[i] - numeric[i]).abs() / (ATOL * scale + RTOL * numeric[i].abs());
        if err > worst.1 {
            worst = (i, err);
        }
    }
    assert!(
        worst.1 <= 1.0,
        "{what}: worst element {}: analytic {} numeric {} (tolerance {ATOL:e} x {scale:.3e} + {RTOL:e} x |numeric|)",
        worst.0,
        analytic[worst.0],
        numeric[worst.0]
    );
}

fn shapes() -> Vec<Shape> {
    vec![
        Shape::new(2, 3, 5, 4),
        Shape::new(1, 1, 1, 1),
        Shape::new(1, 5, 3, 2),
    ]
}

#[test]
fn content_address_backward_matches_finite_differences() {
    for s in shapes() {
        let mut rng = Rng(10 + s.h as u64);
        let m = v(&mut rng, s.b * s.n * s.w, -1.0, 1.0);
        let k = v(&mut rng, s.b * s.h * s.w, -1.0, 1.0);
        let beta = v(&mut rng, s.b * s.h, 0.5, 5.0);
        let cot = v(&mut rng, s.b * s.h * s.n, -1.0, 1.0);
        let w = r::content_address(&m, &k, &beta, s);
        let g = r::content_address_backward(&m, &k, &beta, &w, &cot, s);
        let loss_m = |x: &[f64]| dot(&r::content_address(x, &k, &beta, s), &cot);
        let loss_k = |x: &[f64]| dot(&r::content_address(&m, x, &beta, s), &cot);
        let loss_b = |x: &[f64]| dot(&r::content_address(&m, &k, x, s), &cot);
        check(&format!("{s:?} memory"), &g.memory, &numeric(&m, loss_m));
        check(&format!("{s:?} keys"), &g.keys, &numeric(&k, loss_k));
        check(&format!("{s:?} beta"), &g.beta, &numeric(&beta, loss_b));
        // The scores half alone, against differences of the scores.
        let gs = r::content_address_backward_scores(&m, &k, &beta, &cot, s);
        let sm = |x: &[f64]| dot(&r::content_scores(x, &k, &beta, s), &cot);
        let sk = |x: &[f64]| dot(&r::content_scores(&m, x, &beta, s), &cot);
        let sb = |x: &[f64]| dot(&r::content_scores(&m, &k, x, s), &cot);
        check(
            &format!("{s:?} scores memory"),
            &gs.memory,
            &numeric(&m, sm),
        );
        check(&format!("{s:?} scores keys"), &gs.keys, &numeric(&k, sk));
        check(&format!("{s:?} scores beta"), &gs.beta, &numeric(&beta, sb));
    }
}

#[test]
fn soft_read_backward_matches_finite_differences() {
    for s in shapes() {
        let mut rng = Rng(20 + s.h as u64);
        let m = v(&mut rng, s.b * s.n * s.w, -1.0, 1.0);
        let w = v(&mut rng, s.b * s.h * s.n, 0.0, 1.0);
        let cot = v(&mut rng, s.b * s.h * s.w, -1.0, 1.0);
        let (dm, dw) = r::soft_read_backward(&m, &w, &cot, s);
        check(
            &format!("{s:?} memory"),
            &dm,
            &numeric(&m, |x| dot(&r::soft_read(x, &w, s), &cot)),
        );
        check(
            &format!("{s:?} weights"),
            &dw,
            &numeric(&w, |x| dot(&r::soft_read(&m, x, s), &cot)),
        );
    }
}

fn write_out(m: &[f64], w: &[f64], e: &[f64], a: &[f64], s: Shape) -> Vec<f64> {
    let mut out = m.to_vec();
    r::soft_write(&mut out, w, e, a, s);
    out
}

#[test]
fn soft_write_backward_matches_finite_differences() {
    for s in shapes() {
        for one_hot in [false, true] {
            let mut rng = Rng(30 + s.h as u64);
            let m = v(&mut rng, s.b * s.n * s.w, -1.0, 1.0);
            let mut w = v(&mut rng, s.b * s.h * s.n, 0.0, 1.0);
            let mut e = v(&mut rng, s.b * s.h * s.w, 0.0, 1.0);
            if one_hot {
                // One-hot weights (several heads on row 0) and erase exactly 1: Q needs no division.
                w.iter_mut().for_each(|x| *x = 0.0);
                for bh in 0..s.b * s.h {
                    w[bh * s.n] = 1.0;
                }
                e.iter_mut().for_each(|x| *x = 1.0);
            }
            let a = v(&mut rng, s.b * s.h * s.w, -1.0, 1.0);
            let cot = v(&mut rng, s.b * s.n * s.w, -1.0, 1.0);
            let g = r::soft_write_backward(&m, &w, &e, &a, &cot, s);
            let tag = format!("{s:?} one_hot={one_hot}");
            check(
                &format!("{tag} memory"),
                &g.memory,
                &numeric(&m, |x| dot(&write_out(x, &w, &e, &a, s), &cot)),
            );
            check(
                &format!("{tag} weights"),
                &g.weights,
                &numeric(&w, |x| dot(&write_out(&m, x, &e, &a, s), &cot)),
            );
            check(
                &format!("{tag} erase"),
                &g.erase,
                &numeric(&e, |x| dot(&write_out(&m, &w, x, &a, s), &cot)),
            );
            check(
                &format!("{tag} add"),
                &g.add,
                &numeric(&a, |x| dot(&write_out(&m, &w, &e, x, s), &cot)),
            );
        }
    }
}

/// `reference::undo_write` restores a chain of discrete writes, undone in reverse order, bit
/// for bit, with heads sharing rows.
#[test]
fn reference_undo_write_restores_bit_for_bit() {
    let mut rng = Rng(77);
    for s in [
        Shape::new(2, 3, 5, 4),
        Shape::new(1, 4, 1, 3),
        Shape::new(3, 2, 7, 1),
    ] {
        let m0: Vec<f32> = rng.vec(s.b * s.n * s.w, -1.0, 1.0);
        let mut m = m0.clone();
        let mut records = Vec::new();
        let mut states = Vec::new();
        for _ in 0..4 {
            // Heads of a batch element share a row every other write.
            let idx: Vec<u32> = (0..s.b * s.h)
                .map(|bh| {
                    if records.len() % 2 == 0 {
                        (bh / s.h % s.n) as u32
                    } else {
                        (rng.next_u64() % s.n as u64) as u32
                    }
                })
                .collect();
            let e = rng.vec(s.b * s.h * s.w, 0.0, 1.0);
            let a = rng.vec(s.b * s.h * s.w, -1.0, 1.0);
            states.push(m.clone());
            let old = r::discrete_write(&mut m, &idx, &e, &a, s);
            assert_ne!(m, *states.last().unwrap(), "the write changed the memory");
            records.push((idx, old));
        }
        while let Some((idx, old)) = records.pop() {
            r::undo_write(&mut m, &idx, &old, s);
            let want = states.pop().unwrap();
            assert!(
                m.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()),
                "undo restores the memory bit for bit at {s:?}"
            );
        }
        assert_eq!(m, m0);
    }
}

/// Location addressing's backward, for every input, against finite differences: from `dw`
/// (through the softmax) and from the sharpening scores' gradient; S = 1, S < N, S > N.
#[test]
fn location_address_backward_matches_finite_differences() {
    for (s, taps) in [
        (Shape::new(2, 3, 7, 0), 3),
        (Shape::new(1, 2, 5, 0), 1),
        (Shape::new(1, 1, 3, 0), 7),
        (Shape::new(2, 1, 1, 0), 3),
        (Shape::new(1, 2, 9, 0), 5),
    ] {
        let mut rng = Rng(40 + taps as u64 + s.n as u64);
        let rows = s.b * s.h;
        let wc = v(&mut rng, rows * s.n, 0.0, 1.0);
        let wp = v(&mut rng, rows * s.n, 0.0, 1.0);
        let gate = v(&mut rng, rows, 0.0, 1.0);
        let shift = v(&mut rng, rows * taps, 0.0, 1.0);
        let gamma = v(&mut rng, rows, 1.0, 3.0);
        let cot = v(&mut rng, rows * s.n, -1.0, 1.0);
        let tag = format!("{s:?} S={taps}");
        let g = r::location_address_backward(&wc, &wp, &gate, &shift, &gamma, &cot, s, taps);
        let gs =
            r::location_address_backward_scores(&wc, &wp, &gate, &shift, &gamma, &cot, s, taps);
        type Fwd = fn(&[f64], &[f64], &[f64], &[f64], &[f64], Shape, usize) -> Vec<f64>;
        for (kind, fwd, grads) in [
            ("w", r::location_address as Fwd, &g),
            ("scores", r::location_scores as Fwd, &gs),
        ] {
            let at = |x: [&[f64]; 5]| dot(&fwd(x[0], x[1], x[2], x[3], x[4], s, taps), &cot);
            let inputs: [&[f64]; 5] = [&wc, &wp, &gate, &shift, &gamma];
            let analytic = [
                &grads.content,
                &grads.prev,
                &grads.gate,
                &grads.shift,
                &grads.gamma,
            ];
            for (k, name) in ["content", "prev", "gate", "shift", "gamma"]
                .iter()
                .enumerate()
            {
                let num = numeric(inputs[k], |x| {
                    let mut args = inputs;
                    args[k] = x;
                    at(args)
                });
                check(&format!("{tag} {kind} {name}"), analytic[k], &num);
            }
        }
    }
}
