mod common;
use common::*;
use ntm_kernels::reference::{self as r, Shape};

#[test]
fn smoke() {
    let g = gpu();
    let s = Shape::new(2, 3, 129, 19);
    let mut rng = Rng(1);
    let m = rng.vec(s.b * s.n * s.w, -1.0, 1.0);
    let k = rng.vec(s.b * s.h * s.w, -1.0, 1.0);
    let beta = rng.vec(s.b * s.h, 0.0, 10.0);
    let gm = g.upload(&[s.b, s.n, s.w], &m).unwrap();
    let gk = g.upload(&[s.b, s.h, s.w], &k).unwrap();
    let gb = g.upload(&[s.b, s.h], &beta).unwrap();
    let w = g.content_address(&gm, &gk, &gb).unwrap();
    let want = r::content_address(&f64s(&m), &f64s(&k), &f64s(&beta), s);
    all_close("w", &g.download(&w).unwrap(), &want, 1e-5, 1e-4);
    let rd = g.soft_read(&gm, &w).unwrap();
    let wv = g.download(&w).unwrap();
    all_close("r", &g.download(&rd).unwrap(), &r::soft_read(&f64s(&m), &f64s(&wv), s), 1e-5, 1e-4);
}
