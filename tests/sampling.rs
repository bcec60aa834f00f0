//! Sampling statistics, the REINFORCE gradient, and out-of-range indices.
mod common;
use common::*;
use ntm_kernels::reference::{self as r, Shape};
use ntm_kernels::Error;

/// Upper critical value of chi-square with `k` degrees of freedom at p = 0.001
/// (Wilson-Hilferty; z = 3.0902).
fn chi2_critical(k: f64) -> f64 {
    let z = 3.0902;
    k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3)
}

/// Draws `seeds` x (rows) samples of distribution `p` (every row the same), checks the
/// chi-square fit at p > 0.001, that zero-weight slots are never drawn, agreement with the
/// CPU reference for `ref_seeds` of the seeds, and that different seeds differ.
fn check_distribution(name: &str, p: &[f32], rows: usize, seeds: u64, ref_seeds: u64) {
    let g = gpu();
    let n = p.len();
    let s = Shape::new(rows, 1, n, 0);
    let w: Vec<f32> = (0..rows).flat_map(|_| p.iter().copied()).collect();
    let gw = g.upload(&[rows, 1, n], &w).unwrap();
    let mut counts = vec![0u64; n];
    let (mut same, mut compared) = (0usize, 0usize);
    let mut previous: Option<Vec<u32>> = None;
    let mut seeds_differ = 0;
    for seed in 0..seeds {
        let draws = g
            .download_indices(&g.sample(&gw, 1000 + seed).unwrap())
            .unwrap();
        for &d in &draws {
            assert!(
                p[d as usize] > 0.0,
                "{name}: drew slot {d}, whose weight is 0"
            );
            counts[d as usize] += 1;
        }
        if seed < ref_seeds {
            let want = r::sample(&w, 1000 + seed, s);
            same += draws.iter().zip(&want).filter(|(a, b)| a == b).count();
            compared += draws.len();
        }
        if let Some(prev) = &previous {
            seeds_differ += usize::from(prev != &draws);
        }
        previous = Some(draws);
    }
    let total = (rows as u64 * seeds) as f64;
    assert!(total >= 100_000.0, "{name}: only {total} draws");
    let sum: f64 = p.iter().map(|&x| x as f64).sum();
    // Pool slots with expected count < 5 into one bin.
    let (mut stat, mut bins, mut pooled_o, mut pooled_e) = (0.0, 0usize, 0.0, 0.0);
    for i in 0..n {
        let e = total * p[i] as f64 / sum;
        if e == 0.0 {
            continue;
        }
        if e < 5.0 {
            pooled_o += counts[i] as f64;
            pooled_e += e;
            continue;
        }
        stat += (counts[i] as f64 - e).powi(2) / e;
        bins += 1;
    }
    if pooled_e > 0.0 {
        stat += (pooled_o - pooled_e).powi(2) / pooled_e;
        bins += 1;
    }
    if bins > 1 {
        let crit = chi2_critical((bins - 1) as f64);
        assert!(
            stat < crit,
            "{name}: chi-square {stat:.1} over {} dof exceeds {crit:.1} (p < 0.001)",
            bins - 1
        );
    }
    let agree = same as f64 / compared as f64;
    assert!(
        agree >= 0.999,
        "{name}: only {:.4}% of {compared} draws equal the reference's",
        agree * 100.0
    );
    if n > 1 {
        assert!(
            seeds_differ as u64 == seeds - 1,
            "{name}: consecutive seeds gave identical draws"
        );
    }
    eprintln!(
        "{name}: {total} draws, chi-square {stat:.1} / {bins} bins, {:.3}% equal to reference",
        agree * 100.0
    );
}

#[test]
fn samples_follow_the_weights() {
    let uniform = vec![1.0 / 16.0; 16];
    check_distribution("uniform N=16", &uniform, 1000, 100, 100);
    let peaked: Vec<f32> = (0..20)
        .map(|i| if i == 3 { 0.9 } else { 0.1 / 19.0 })
        .collect();
    check_distribution("peaked N=20", &peaked, 1000, 100, 100);
    let zeros: Vec<f32> = (0..12)
        .map(|i| if i % 3 == 0 { 0.0 } else { (i + 1) as f32 })
        .collect();
    check_distribution("with zeros N=12", &zeros, 1000, 100, 100);
    check_distribution("N=1", &[1.0], 1000, 100, 100);
    let large: Vec<f32> = (0..5000).map(|i| 1.0 + (i % 7) as f32).collect();
    check_distribution("large N=5000", &large, 1000, 100, 10);
}

#[test]
fn sampling_a_row_with_no_positive_weight_is_an_error() {
    // Deferred errors go to the next wait on the same Gpu: use one of our own.
    let g = &own_gpu();
    let w = g
        .upload(&[1, 2, 3], &[0.2, 0.3, 0.5, 0.0, 0.0, 0.0])
        .unwrap();
    let ix = g.sample(&w, 1).unwrap();
    let err = g.sync().expect_err("no positive weight must be reported");
    let m = err.to_string();
    assert!(m.contains("sample") && m.contains("head 1"), "{m}");
    assert_eq!(g.download_indices(&ix).unwrap()[1], 0);
}

#[test]
fn reinforce_grad_matches_finite_differences_and_gpu() {
    // Reference against central differences of the loss through the scores, in f64.
    let s = Shape::new(2, 2, 6, 0);
    let mut rng = Rng(3);
    let z: Vec<f64> = (0..s.b * s.h * s.n).map(|_| rng.range(-2.0, 2.0)).collect();
    let idx = vec![1u32, 5, 0, 3];
    let adv = vec![0.7, -1.3, 2.0, 0.4];
    let lambda = 0.3;
    let softmax_rows = |z: &[f64]| -> Vec<f64> { z.chunks(s.n).flat_map(r::softmax).collect() };
    let loss = |z: &[f64]| -> f64 {
        let w = softmax_rows(z);
        (0..s.b * s.h)
            .map(|row| {
                let wr = &w[row * s.n..(row + 1) * s.n];
                -adv[row] * wr[idx[row] as usize].ln() - lambda * r::entropy(wr)
            })
            .sum()
    };
    let analytic = r::reinforce_grad(&softmax_rows(&z), &idx, &adv, lambda, s);
    let mut zp = z.clone();
    for i in 0..z.len() {
        zp[i] = z[i] + 1e-6;
        let up = loss(&zp);
        zp[i] = z[i] - 1e-6;
        let down = loss(&zp);
        zp[i] = z[i];
        let num = (up - down) / 2e-6;
        assert!(
            (num - analytic[i]).abs() < 1e-6 * (1.0 + num.abs()),
            "dz[{i}]: analytic {} numeric {num}",
            analytic[i]
        );
    }

    // GPU against the reference, including weights so sharp that some are exactly 0 in f32.
    let g = gpu();
    for (n, sharp) in [(1usize, 1.0), (7, 3.0), (1000, 5.0), (3000, 200.0)] {
        let s = Shape::new(2, 3, n, 0);
        let mut rng = Rng(n as u64);
        let w = rng.weights(s.b * s.h, n, sharp);
        if sharp > 100.0 {
            assert!(
                w.contains(&0.0),
                "the sharp case must contain weights that are exactly 0 in f32"
            );
        }
        let idx: Vec<u32> = (0..s.b * s.h).map(|k| ((k * 7919) % n) as u32).collect();
        let adv = rng.vec(s.b * s.h, -2.0, 2.0);
        let dz = g
            .reinforce_grad(
                &g.upload(&[s.b, s.h, n], &w).unwrap(),
                &g.upload_indices(&[s.b, s.h], &idx).unwrap(),
                &g.upload(&[s.b, s.h], &adv).unwrap(),
                0.25,
            )
            .unwrap();
        let want = r::reinforce_grad(&f64s(&w), &idx, &f64s(&adv), 0.25, s);
        all_close(
            &format!("reinforce_grad N={n} sharp={sharp}"),
            &g.download(&dz).unwrap(),
            &want,
            2e-5,
            1e-4,
        );
    }
}

#[test]
fn out_of_range_indices_are_reported_and_touch_nothing() {
    let g = &own_gpu();
    let (b, h, n, w) = (2, 2, 5, 3);
    let host: Vec<f32> = (0..b * n * w).map(|x| x as f32).collect();
    let mut m = g.upload(&[b, n, w], &host).unwrap();
    let v = g.upload(&[b, h, w], &vec![0.5; b * h * w]).unwrap();
    let bad = g.upload_indices(&[b, h], &[1, 2, 3, 9]).unwrap(); // [batch 1, head 1] = 9 >= 5

    let expect = |e: Error, op: &str| {
        assert!(
            matches!(&e, Error::IndexOutOfRange { op: o, batch: 1, head: 1, index: 9, slots: 5 } if *o == op),
            "{op}: {e:?}"
        );
        assert!(
            e.to_string().contains(op) && e.to_string().contains("9"),
            "{e}"
        );
    };
    g.discrete_read(&m, &bad).unwrap();
    expect(g.sync().unwrap_err(), "discrete_read");

    let undo = g.discrete_write(&mut m, &bad, &v, &v).unwrap();
    expect(g.sync().unwrap_err(), "discrete_write");
    let after = g.download(&m).unwrap();
    // Valid heads wrote rows 1, 2 (batch 0) and 3 (batch 1); nothing else changed.
    for row in 0..b * n {
        let written = [1, 2, n + 3].contains(&row);
        let same = after[row * w..(row + 1) * w] == host[row * w..(row + 1) * w];
        assert_eq!(
            same, !written,
            "row {row}: written={written}, unchanged={same}"
        );
    }
    g.undo_write(&mut m, &undo).unwrap();
    assert_eq!(
        g.download(&m).unwrap(),
        host,
        "undo of a write with a bad index restores the memory"
    );

    let mut dm = g.zeros(&[b, n, w]).unwrap();
    g.discrete_read_backward(&m, &bad, &v, &mut dm).unwrap();
    expect(g.sync().unwrap_err(), "discrete_read_backward");
    // The write's backward takes the write's indices from its undo record: the write
    // reported the bad one; the backward skips it and touches no row for it.
    let before = g.download(&dm).unwrap();
    g.discrete_write_backward(&undo, &v, &v, &mut dm).unwrap();
    g.sync()
        .expect("reported by the write, not again by its backward");
    let after = g.download(&dm).unwrap();
    for row in 0..b * n {
        let written = [1, 2, n + 3].contains(&row);
        let same = after[row * w..(row + 1) * w] == before[row * w..(row + 1) * w];
        assert!(same || written, "write backward: row {row} changed");
    }
    let wt = g.upload(&[b, h, n], &vec![0.2; b * h * n]).unwrap();
    let adv = g.upload(&[b, h], &vec![1.0; b * h]).unwrap();
    g.reinforce_grad(&wt, &bad, &adv, 0.1).unwrap();
    expect(g.sync().unwrap_err(), "reinforce_grad");
    g.sync().expect("errors are reported once");
}

#[test]
fn an_undo_record_only_fits_its_own_memory() {
    let g = gpu();
    let mut m = g.zeros(&[1, 4, 2]).unwrap();
    let ix = g.upload_indices(&[1, 1], &[2]).unwrap();
    let v = g.zeros(&[1, 1, 2]).unwrap();
    let undo = g.discrete_write(&mut m, &ix, &v, &v).unwrap();
    let mut other = g.copy(&m).unwrap();
    let e = g.undo_write(&mut other, &undo).unwrap_err().to_string();
    assert!(
        e.contains("undo_write") && e.contains("different memory"),
        "{e}"
    );
    let mut wrong = g.zeros(&[1, 5, 2]).unwrap();
    let e = g
        .discrete_write_backward(&undo, &v, &v, &mut wrong)
        .unwrap_err()
        .to_string();
    assert!(e.contains("d_memory") && e.contains("[1, 5, 2]"), "{e}");
    let bad_shape = g.upload_indices(&[2, 1], &[0, 0]).unwrap();
    let e = g.discrete_read(&m, &bad_shape).unwrap_err().to_string();
    assert!(
        e.contains("discrete_read") && e.contains("indices") && e.contains("[B, H] = [1, H]"),
        "{e}"
    );
}
