//! The copy-task example's model (examples/copy_task) kept working: its whole-model gradient
//! against finite differences, and a few dozen training steps on a tiny configuration with a
//! fixed seed lower the loss, for soft and for discrete access. Not timed.
mod common;
use common::*;
#[allow(dead_code)]
#[path = "../examples/copy_task/model.rs"]
mod model;
use model::{Batch, Config, Controller, Mode, Ntm, Rng};

fn tiny(controller: Controller, clip: f32) -> Config {
    Config {
        slots: 8,
        width: 5,
        hidden: 12,
        batch: 3,
        controller,
        lr: 1e-2,
        clip,
        seed: 3,
        max_len: 3,
    }
}

/// d(mean sequence loss)/d theta from backprop through time against central differences of
/// the GPU's own loss, on a sample of parameters of every layer (soft access, both
/// controllers). Tolerance: 5% of the gradient plus 2e-3 (f32 losses of about 10, eps 5e-3).
#[test]
fn soft_model_gradient_matches_finite_differences() {
    let g = gpu();
    for controller in [Controller::Lstm, Controller::Feedforward] {
        let mut ntm = Ntm::new(g, tiny(controller, 1e9)).unwrap();
        let batch = Batch::random(&mut Rng(11), 3, 3);
        let loss = |ntm: &mut Ntm| {
            ntm.forward(&batch, Mode::SOFT).unwrap();
            ntm.totals().unwrap().loss
        };
        ntm.forward(&batch, Mode::SOFT).unwrap();
        ntm.backward().unwrap();
        let (theta, grad) = ntm.parameters_and_gradient().unwrap();
        let mut rng = Rng(5);
        let eps = 5e-3f32;
        let mut worst = (0.0f64, 0usize);
        for _ in 0..24 {
            let k = rng.below(theta.len());
            let mut t = theta.clone();
            t[k] = theta[k] + eps;
            ntm.set_parameters(&t).unwrap();
            let up = loss(&mut ntm);
            t[k] = theta[k] - eps;
            ntm.set_parameters(&t).unwrap();
            let down = loss(&mut ntm);
            let fd = (up - down) / (2.0 * eps as f64);
            let got = grad[k] as f64;
            let err = (fd - got).abs() / (0.05 * fd.abs() + 2e-3);
            assert!(
                err <= 1.0,
                "{controller:?}: parameter {k}: backprop {got:.6}, finite differences {fd:.6}"
            );
            if err > worst.0 {
                worst = (err, k);
            }
        }
        eprintln!(
            "{controller:?}: worst normalised gradient error {:.3} (parameter {})",
            worst.0, worst.1
        );
    }
}

/// Thirty updates on one fixed batch lower its loss, soft and discrete (sampled draws,
/// score-function gradients), with the same numbers on a second run of the same seed.
#[test]
fn a_few_dozen_steps_lower_the_loss() {
    let g = gpu();
    for (name, mode, clip) in [
        ("soft", Mode::SOFT, 10.0),
        ("discrete", Mode::discrete(0.0, false), 1.0),
    ] {
        let run = || {
            let mut ntm = Ntm::new(g, tiny(Controller::Lstm, clip)).unwrap();
            let batch = Batch::random(&mut Rng(21), 3, 2);
            let mut losses = Vec::new();
            for _ in 0..30 {
                ntm.forward(&batch, mode).unwrap();
                losses.push(ntm.totals().unwrap().loss);
                ntm.backward_and_step().unwrap();
            }
            losses
        };
        let losses = run();
        let first: f64 = losses[..5].iter().sum::<f64>() / 5.0;
        let last: f64 = losses[25..].iter().sum::<f64>() / 5.0;
        eprintln!("{name}: mean loss of the first 5 updates {first:.4}, of the last 5 {last:.4}");
        assert!(
            last < 0.8 * first,
            "{name}: the loss did not fall: {losses:?}"
        );
        assert_eq!(run(), losses, "{name}: the same seed gives the same curve");
    }
}
