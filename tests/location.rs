//! Location addressing on the GPU against the CPU reference: every output of the forward and
//! both backward forms, on odd shapes (N = 1, N not a multiple of the 256-slot tile, S = 1,
//! S > N), the known failure modes (gate exactly 0 and 1, one-hot weights and shift, large
//! gamma with exact zeros), bit-determinism, windowed bindings and bad input.
mod common;
use common::*;
use ntm_kernels::reference::{self as r, Shape};
use ntm_kernels::{Error, Gpu, Tensor, MAX_SHIFT};

// Weights are O(1); sums over slots err in proportion to their scale.
const ATOL: f64 = 2e-5;
const RTOL: f64 = 1e-4;

struct Case {
    s: Shape,
    taps: usize,
    wc: Vec<f32>,
    wp: Vec<f32>,
    gate: Vec<f32>,
    shift: Vec<f32>,
    gamma: Vec<f32>,
    cot: Vec<f32>,
}

impl Case {
    fn random(b: usize, h: usize, n: usize, taps: usize, seed: u64) -> Case {
        let mut rng = Rng(seed);
        let rows = b * h;
        Case {
            s: Shape::new(b, h, n, 0),
            taps,
            wc: rng.weights(rows, n, 3.0),
            wp: rng.weights(rows, n, 3.0),
            gate: rng.vec(rows, 0.0, 1.0),
            shift: rng.weights(rows, taps, 2.0),
            gamma: rng.vec(rows, 1.0, 5.0),
            cot: rng.vec(rows * n, -1.0, 1.0),
        }
    }
}

fn up(g: &Gpu, shape: &[usize], x: &[f32]) -> Tensor {
    g.upload(shape, x).unwrap()
}

fn run_on(g: &Gpu, c: &Case) {
    let s = c.s;
    let (rows, n, taps) = (s.b * s.h, s.n, c.taps);
    let tag = format!("B={} H={} N={n} S={taps}", s.b, s.h);
    let bhn = [s.b, s.h, n];
    let (wc, wp) = (up(g, &bhn, &c.wc), up(g, &bhn, &c.wp));
    let gate = up(g, &[s.b, s.h], &c.gate);
    let shift = up(g, &[s.b, s.h, taps], &c.shift);
    let gamma = up(g, &[s.b, s.h], &c.gamma);
    let cot = up(g, &bhn, &c.cot);
    let f = |x: &[f32]| f64s(x);
    let (wc64, wp64, g64, s64, gm64, cot64) = (
        f(&c.wc),
        f(&c.wp),
        f(&c.gate),
        f(&c.shift),
        f(&c.gamma),
        f(&c.cot),
    );

    let w = g.location_address(&wc, &wp, &gate, &shift, &gamma).unwrap();
    let want = r::location_address(&wc64, &wp64, &g64, &s64, &gm64, s, taps);
    all_close(
        &format!("{tag} w"),
        &g.download(&w).unwrap(),
        &want,
        ATOL,
        RTOL,
    );

    // Every gradient is a sum of terms that may cancel (the softmax's dz sums to 0 over a
    // row; dgamma's ln(wt + EPS) is near 0 where wt is near 1): f32 resolves each only to a
    // few roundings of its terms' magnitudes. Those magnitudes are the reference backward run
    // on |dz| (every other factor is non-negative), and the tolerance adds (S + 8) 2^-24 of
    // them, per element.
    let w64 = r::location_address(&wc64, &wp64, &g64, &s64, &gm64, s, taps);
    let lnwt: Vec<f64> = r::location_scores(&wc64, &wp64, &g64, &s64, &gm64, s, taps)
        .iter()
        .enumerate()
        .map(|(i, z)| z / gm64[i / n])
        .collect();
    let ulps = (taps as f64 + 8.0) * 2f64.powi(-24);
    let terms = |dz_mag: &[f64]| -> Terms {
        let m =
            r::location_address_backward_scores(&wc64, &wp64, &g64, &s64, &gm64, dz_mag, s, taps);
        let per_row = |f: &dyn Fn(usize) -> f64| -> Vec<f64> {
            (0..rows)
                .map(|row| (row * n..(row + 1) * n).map(f).sum::<f64>() * ulps)
                .collect()
        };
        Terms {
            content: m.content.iter().map(|x| x * ulps).collect(),
            prev: m.prev.iter().map(|x| x * ulps).collect(),
            shift: m.shift.iter().map(|x| x * ulps).collect(),
            gate: per_row(&|k| (m.content[k] + m.prev[k]) * (wc64[k] - wp64[k]).abs()),
            gamma: per_row(&|k| dz_mag[k] * (1.0 + lnwt[k].abs())),
        }
    };
    // From dw, dz = w (dw - sum w dw) is itself rounded: its magnitude is w (|dw| + sum w |dw|).
    let dz_mag_of_dw: Vec<f64> = (0..rows * n)
        .map(|k| {
            let row = k / n;
            let sum: f64 = (row * n..(row + 1) * n)
                .map(|i| w64[i] * cot64[i].abs())
                .sum();
            w64[k] * (cot64[k].abs() + sum)
        })
        .collect();
    let want = r::location_address_backward(&wc64, &wp64, &g64, &s64, &gm64, &cot64, s, taps);
    let got = g
        .location_address_backward(&wc, &wp, &gate, &shift, &gamma, &cot)
        .unwrap();
    compare(
        g,
        &format!("{tag} from dw"),
        &got,
        &want,
        &terms(&dz_mag_of_dw),
    );
    let want =
        r::location_address_backward_scores(&wc64, &wp64, &g64, &s64, &gm64, &cot64, s, taps);
    let got = g
        .location_address_backward_scores(&wc, &wp, &gate, &shift, &gamma, &cot)
        .unwrap();
    let abs: Vec<f64> = cot64.iter().map(|x| x.abs()).collect();
    compare(g, &format!("{tag} from dz"), &got, &want, &terms(&abs));
    assert_eq!(got.shift.shape(), &[s.b, s.h, taps]);
    assert_eq!(got.gate.shape(), &[s.b, s.h]);
}

/// Per-element tolerance terms of each gradient (see `run_on`).
struct Terms {
    content: Vec<f64>,
    prev: Vec<f64>,
    gate: Vec<f64>,
    shift: Vec<f64>,
    gamma: Vec<f64>,
}

fn compare(
    g: &Gpu,
    tag: &str,
    got: &ntm_kernels::LocationGrads,
    want: &r::LocationGrads<f64>,
    terms: &Terms,
) {
    for (name, t, w, tt) in [
        ("content", &got.content, &want.content, &terms.content),
        ("prev", &got.prev, &want.prev, &terms.prev),
        ("gate", &got.gate, &want.gate, &terms.gate),
        ("shift", &got.shift, &want.shift, &terms.shift),
        ("gamma", &got.gamma, &want.gamma, &terms.gamma),
    ] {
        all_close_terms(
            &format!("{tag} d{name}"),
            &g.download(t).unwrap(),
            w,
            ATOL,
            RTOL,
            Some(tt),
        );
    }
}

#[test]
fn every_output_on_the_shape_grid() {
    let g = gpu();
    let mut seed = 1000;
    for b in [1, 3] {
        for h in [1, 2, 5] {
            for n in [1, 7, 129, 257, 1000] {
                for taps in [1, 3, 5] {
                    seed += 1;
                    run_on(g, &Case::random(b, h, n, taps, seed));
                }
            }
        }
    }
}

/// Shifts wider than the memory (offsets wrap modulo N, several taps land on one slot), and
/// wide shifts up to the largest a tile holds (on a GPU the backward's tile sums take 32, 4 and
/// 2 lanes per column at S = 3, 41 and 101; a thread per column at the widest and on CPU
/// adapters, whose lanes are tested in `src/ops/location.rs`).
#[test]
fn shifts_wider_than_the_memory_and_the_widest_shift() {
    let g = gpu();
    for (k, (n, taps)) in [
        (1, 3),
        (2, 5),
        (7, 9),
        (3, 41),
        (300, 41),
        (1000, 101),
        (1000, MAX_SHIFT),
        (5, MAX_SHIFT),
    ]
    .into_iter()
    .enumerate()
    {
        run_on(g, &Case::random(2, 2, n, taps, 2000 + k as u64));
    }
}

/// Gate exactly 0 and 1, one-hot weights and a one-hot shift (so `wt` has exact zeros), and
/// gamma up to 20: finite everywhere, equal to the reference, and the one-hot shift moves the
/// weight by exactly its offset.
#[test]
fn one_hot_inputs_and_large_gamma_stay_finite() {
    let g = gpu();
    let (b, h, n, taps) = (2, 2, 11, 3);
    let rows = b * h;
    let mut wc = vec![0.0f32; rows * n];
    let mut wp = vec![0.0f32; rows * n];
    for row in 0..rows {
        wc[row * n + (row * 3) % n] = 1.0;
        wp[row * n + (row * 5 + 1) % n] = 1.0;
    }
    for (gate_v, gamma_v) in [
        (0.0f32, 1.0f32),
        (1.0, 1.0),
        (1.0, 20.0),
        (0.0, 20.0),
        (0.5, 20.0),
    ] {
        // Shift by +1 for every row: wt(i) = wg(i - 1).
        let shift: Vec<f32> = (0..rows).flat_map(|_| [0.0, 0.0, 1.0]).collect();
        let c = Case {
            s: Shape::new(b, h, n, 0),
            taps,
            wc: wc.clone(),
            wp: wp.clone(),
            gate: vec![gate_v; rows],
            shift,
            gamma: vec![gamma_v; rows],
            cot: Rng(7).vec(rows * n, -1.0, 1.0),
        };
        run_on(g, &c);
        if gamma_v == 20.0 && gate_v != 0.5 {
            let t = |x: &[f32], shape: &[usize]| g.upload(shape, x).unwrap();
            let w = g
                .location_address(
                    &t(&c.wc, &[b, h, n]),
                    &t(&c.wp, &[b, h, n]),
                    &t(&c.gate, &[b, h]),
                    &t(&c.shift, &[b, h, taps]),
                    &t(&c.gamma, &[b, h]),
                )
                .unwrap();
            let w = g.download(&w).unwrap();
            for row in 0..rows {
                let src = if gate_v == 1.0 { &c.wc } else { &c.wp };
                let hot = (0..n).find(|&i| src[row * n + i] == 1.0).unwrap();
                let moved = (hot + 1) % n;
                assert!(
                    w[row * n + moved] > 0.999,
                    "row {row}: weight moved to {moved}"
                );
            }
        }
    }
}

#[test]
fn same_bits_every_run() {
    let g = gpu();
    let c = Case::random(3, 2, 1000, 3, 99);
    let s = c.s;
    let bhn = [s.b, s.h, s.n];
    let args = [
        up(g, &bhn, &c.wc),
        up(g, &bhn, &c.wp),
        up(g, &[s.b, s.h], &c.gate),
        up(g, &[s.b, s.h, c.taps], &c.shift),
        up(g, &[s.b, s.h], &c.gamma),
        up(g, &bhn, &c.cot),
    ];
    let once = || {
        let w = g
            .location_address(&args[0], &args[1], &args[2], &args[3], &args[4])
            .unwrap();
        let gr = g
            .location_address_backward(&args[0], &args[1], &args[2], &args[3], &args[4], &args[5])
            .unwrap();
        [w, gr.content, gr.prev, gr.gate, gr.shift, gr.gamma]
            .iter()
            .map(|t| g.download(t).unwrap())
            .collect::<Vec<_>>()
    };
    let (a, b) = (once(), once());
    for (x, y) in a.iter().zip(&b) {
        assert!(x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()));
    }
}

/// Weights larger than one storage binding are bound in windows of whole rows.
#[test]
fn weights_past_one_binding() {
    let (device, queue) = device_with(|l| l.max_storage_buffer_binding_size = 256 << 10);
    let g = Gpu::from_wgpu(device, queue).unwrap();
    let c = Case::random(2, 3, 20_000, 3, 77);
    assert!(c.s.b * c.s.h * c.s.n * 4 > 256 << 10);
    run_on(&g, &c);
}

#[test]
fn bad_input_is_an_error_and_names_the_argument() {
    let g = gpu();
    let (b, h, n) = (2, 3, 5);
    let w = g.zeros(&[b, h, n]).unwrap();
    let bh = g.zeros(&[b, h]).unwrap();
    let s3 = g.zeros(&[b, h, 3]).unwrap();
    let s4 = g.zeros(&[b, h, 4]).unwrap();
    let wide = g.zeros(&[b, h, MAX_SHIFT + 2]).unwrap();
    let bad = g.zeros(&[b, h + 1, n]).unwrap();
    let msg = |r: Result<Tensor, Error>| r.unwrap_err().to_string();
    let says = |m: String, parts: &[&str]| {
        for p in parts {
            assert!(m.contains(p), "{m:?} should mention {p:?}");
        }
    };
    says(
        msg(g.location_address(&w, &w, &bh, &s4, &bh)),
        &["location_address", "shift", "S = 4", "odd"],
    );
    says(
        msg(g.location_address(&w, &bad, &bh, &s3, &bh)),
        &[
            "location_address",
            "prev",
            "[B, H, N] = [2, 3, 5]",
            "[2, 4, 5]",
        ],
    );
    says(
        msg(g.location_address(&w, &w, &w, &s3, &bh)),
        &["gate", "[B, H] = [2, 3]"],
    );
    says(
        msg(g.location_address(&w, &w, &bh, &s3, &w)),
        &["gamma", "[B, H] = [2, 3]"],
    );
    says(
        msg(g.location_address(&w, &w, &bh, &bad, &bh)),
        &["shift", "[B, H, S] = [2, 3, S]"],
    );
    says(
        msg(g.location_address(&bh, &w, &bh, &s3, &bh)),
        &["content", "rank 3"],
    );
    says(
        msg(g.location_address(&w, &w, &bh, &wide, &bh)),
        &["shift width", "515", "513"],
    );
    let grads = |r: Result<ntm_kernels::LocationGrads, Error>| r.unwrap_err().to_string();
    says(
        grads(g.location_address_backward(&w, &w, &bh, &s3, &bh, &bad)),
        &["location_address_backward", "dw", "[B, H, N] = [2, 3, 5]"],
    );
    says(
        grads(g.location_address_backward_scores(&w, &w, &bh, &s3, &bh, &bh)),
        &["location_address_backward_scores", "dz"],
    );
    says(
        grads(g.location_address_backward_scores(&w, &w, &bh, &s4, &bh, &w)),
        &["shift", "odd"],
    );
    g.sync().unwrap();
}
