//! A memory larger than one storage binding (128 MiB on lavapipe and llvmpipe): ops bind
//! windows of it and fold dispatches past 65,535 workgroups. Checked against the reference.
mod common;
use common::*;
use ntm_kernels::reference::{self as r, Shape};

#[test]
fn soft_read_write_and_addressing_past_one_binding() {
    let g = gpu();
    let s = Shape::new(2, 2, 300_007, 64); // 153.6 MB of memory, N not a multiple of any tile
    let bytes = (s.b * s.n * s.w * 4) as u64;
    assert!(
        bytes > 128 << 20,
        "test memory ({bytes} B) must exceed 128 MiB"
    );
    // On adapters whose binding limit is 128 MiB (lavapipe, llvmpipe) this exercises windows.
    eprintln!(
        "memory {bytes} B, adapter binding limit {} B: {}",
        g.adapter().max_storage_binding,
        if bytes > g.adapter().max_storage_binding {
            "bound in windows"
        } else {
            "bound whole"
        }
    );
    let mut rng = Rng(42);
    let m = rng.vec(s.b * s.n * s.w, -1.0, 1.0);
    let k = rng.vec(s.b * s.h * s.w, -1.0, 1.0);
    let beta = vec![4.0f32; s.b * s.h];
    let w = rng.weights(s.b * s.h, s.n, 4.0);
    let e = rng.vec(s.b * s.h * s.w, 0.0, 1.0);
    let a = rng.vec(s.b * s.h * s.w, -1.0, 1.0);
    let gm = g.upload(&[s.b, s.n, s.w], &m).unwrap();
    let gk = g.upload(&[s.b, s.h, s.w], &k).unwrap();
    let gb = g.upload(&[s.b, s.h], &beta).unwrap();
    let gw = g.upload(&[s.b, s.h, s.n], &w).unwrap();
    let ge = g.upload(&[s.b, s.h, s.w], &e).unwrap();
    let ga = g.upload(&[s.b, s.h, s.w], &a).unwrap();
    let (m64, w64) = (f64s(&m), f64s(&w));

    // Soft read: every element (sums over all 300,007 rows).
    let rd = g.soft_read(&gm, &gw).unwrap();
    all_close(
        "large soft_read",
        &g.download(&rd).unwrap(),
        &r::soft_read(&m64, &w64, s),
        2e-5,
        1e-4,
    );

    // Content addressing: every weight.
    let wa = g.content_address(&gm, &gk, &gb).unwrap();
    let want = r::content_address(&m64, &f64s(&k), &f64s(&beta), s);
    all_close(
        "large content_address",
        &g.download(&wa).unwrap(),
        &want,
        2e-5,
        1e-4,
    );

    // Soft write: sampled rows, including both ends of each batch and rows around every
    // 128 MiB window edge (row 524,288 of the flattened memory is at 128 MiB).
    let mut mw = g.copy(&gm).unwrap();
    g.soft_write(&mut mw, &gw, &ge, &ga).unwrap();
    let got = g.download(&mw).unwrap();
    let mut rows: Vec<usize> = (0..s.b * s.n).step_by(997).collect();
    rows.extend([
        0,
        1,
        s.n - 1,
        s.n,
        s.n + 1,
        2 * s.n - 1,
        524_287,
        524_288,
        524_289,
    ]);
    let one = Shape::new(1, s.h, 1, s.w);
    let (mut got_rows, mut want_rows) = (Vec::new(), Vec::new());
    for &row in &rows {
        let (b, i) = (row / s.n, row % s.n);
        let mut mr = m64[row * s.w..(row + 1) * s.w].to_vec();
        let wr: Vec<f64> = (0..s.h).map(|h| w64[(b * s.h + h) * s.n + i]).collect();
        let er = f64s(&e[b * s.h * s.w..(b + 1) * s.h * s.w]);
        let ar = f64s(&a[b * s.h * s.w..(b + 1) * s.h * s.w]);
        r::soft_write(&mut mr, &wr, &er, &ar, one);
        want_rows.extend(mr);
        got_rows.extend_from_slice(&got[row * s.w..(row + 1) * s.w]);
    }
    all_close(
        "large soft_write (sampled rows)",
        &got_rows,
        &want_rows,
        2e-6,
        1e-5,
    );

    // Discrete ops gather and scatter across binding windows: on a 128 MiB binding the edge
    // is flattened row 524,288 = batch 1, slot 224,281. Heads pick rows on both sides of it.
    let idx = vec![0u32, 300_006, 224_280, 224_281];
    let ix = g.upload_indices(&[s.b, s.h], &idx).unwrap();
    let rd = g.download(&g.discrete_read(&gm, &ix).unwrap()).unwrap();
    all_close(
        "large discrete_read",
        &rd,
        &r::discrete_read(&m64, &idx, s),
        0.0,
        0.0,
    );
    let mut md = g.upload(&[s.b, s.n, s.w], &m).unwrap();
    let undo = g.discrete_write(&mut md, &ix, &ge, &ga).unwrap();
    let after = g.download(&md).unwrap();
    let mut want = m64.clone();
    r::discrete_write(&mut want, &idx, &f64s(&e), &f64s(&a), s);
    for (bh, &i) in idx.iter().enumerate() {
        let row = (bh / s.h) * s.n + i as usize;
        let span = row * s.w..(row + 1) * s.w;
        all_close(
            &format!("large discrete_write row {row}"),
            &after[span.clone()],
            &want[span],
            2e-6,
            1e-5,
        );
    }
    let changed = after.iter().zip(&m).filter(|(x, y)| x != y).count();
    assert!(
        changed <= idx.len() * s.w,
        "discrete_write changed {changed} elements outside the chosen rows"
    );
    g.undo_write(&mut md, &undo).unwrap();
    assert!(
        g.download(&md).unwrap() == m,
        "undo_write across windows must restore the memory bit for bit"
    );
    let mut dm = g.zeros(&[s.b, s.n, s.w]).unwrap();
    let dwi = g
        .download(&g.discrete_read_backward(&gm, &ix, &ga, &mut dm).unwrap())
        .unwrap();
    let mut want_dm = vec![0.0; m.len()];
    let want_dwi = r::discrete_read_backward(&m64, &idx, &f64s(&a), &mut want_dm, s);
    all_close(
        "large discrete_read_backward dw_at_idx",
        &dwi,
        &want_dwi,
        2e-6,
        1e-5,
    );
    let got_dm = g.download(&dm).unwrap();
    for (bh, &i) in idx.iter().enumerate() {
        let row = (bh / s.h) * s.n + i as usize;
        let span = row * s.w..(row + 1) * s.w;
        all_close(
            &format!("large discrete_read_backward row {row}"),
            &got_dm[span.clone()],
            &want_dm[span],
            0.0,
            0.0,
        );
    }
}
