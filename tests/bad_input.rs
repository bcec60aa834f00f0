//! Bad input returns an Error naming the op, the argument, the expected and the given
//! shape; nothing panics and nothing is modified.
mod common;
use common::*;
use ntm_kernels::{Error, Gpu};

fn msg<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    r.expect_err("bad input must be an error").to_string()
}

#[track_caller]
fn says(m: &str, parts: &[&str]) {
    for p in parts {
        assert!(m.contains(p), "error message {m:?} should mention {p:?}");
    }
}

#[test]
fn uploads_check_shape_and_length() {
    let g = gpu();
    says(
        &msg(g.upload(&[2, 0, 3], &[])),
        &["upload", "[2, 0, 3]", "zero"],
    );
    says(&msg(g.upload(&[], &[])), &["upload", "[]"]);
    says(
        &msg(g.upload(&[2, 3], &[1.0; 5])),
        &["upload", "[2, 3]", "6", "5"],
    );
    says(
        &msg(g.zeros(&[1 << 20, 1 << 20, 64])),
        &["zeros", "over the limit"],
    );
    says(
        &msg(g.upload_indices(&[4], &[1, 2])),
        &["upload_indices", "4", "2"],
    );
}

#[test]
fn ops_check_every_argument() {
    let g = gpu();
    let (b, h, n, w) = (2, 3, 5, 4);
    let m = g.zeros(&[b, n, w]).unwrap();
    let k = g.zeros(&[b, h, w]).unwrap();
    let beta = g.zeros(&[b, h]).unwrap();
    let wt = g.zeros(&[b, h, n]).unwrap();
    let v = g.zeros(&[b, h, w]).unwrap();
    let flat = g.zeros(&[b * n * w]).unwrap();
    let bad_b = g.zeros(&[b + 1, h, w]).unwrap();
    let bad_w = g.zeros(&[b, h, w + 1]).unwrap();
    let bad_n = g.zeros(&[b, h, n + 1]).unwrap();
    let bad_h = g.zeros(&[b, h + 1, w]).unwrap();

    says(
        &msg(g.content_address(&flat, &k, &beta)),
        &["content_address", "memory", "[40]", "[B, N, W]"],
    );
    says(
        &msg(g.content_address(&m, &bad_b, &beta)),
        &[
            "content_address",
            "keys",
            "[3, 3, 4]",
            "[B, H, W] = [2, H, 4]",
        ],
    );
    says(
        &msg(g.content_address(&m, &bad_w, &beta)),
        &["keys", "[2, 3, 5]"],
    );
    says(
        &msg(g.content_address(&m, &k, &wt)),
        &["beta", "[B, H] = [2, 3]", "[2, 3, 5]"],
    );
    says(
        &msg(g.content_address_backward(&m, &k, &beta, &wt, &bad_n)),
        &["content_address_backward", "dw", "[B, H, N] = [2, 3, 5]"],
    );
    says(
        &msg(g.content_address_backward(&m, &k, &beta, &bad_n, &wt)),
        &["content_address_backward", "`w`"],
    );
    says(
        &msg(g.content_address_backward_scores(&m, &k, &beta, &v)),
        &["content_address_backward_scores", "dz"],
    );
    says(
        &msg(g.soft_read(&m, &bad_n)),
        &["soft_read", "`w`", "[B, H, N] = [2, H, 5]", "[2, 3, 6]"],
    );
    says(&msg(g.soft_read(&m, &k)), &["soft_read", "`w`"]);
    says(
        &msg(g.soft_read_backward(&m, &wt, &bad_w)),
        &["soft_read_backward", "dr", "[B, H, W] = [2, 3, 4]"],
    );
    says(
        &msg(g.soft_write_backward(&m, &wt, &v, &v, &wt)),
        &["soft_write_backward", "d_after", "[B, N, W] = [2, 5, 4]"],
    );
    says(
        &msg(g.soft_write_backward(&m, &wt, &bad_h, &v, &m)),
        &[
            "soft_write_backward",
            "erase",
            "[B, H, W] = [2, 3, 4]",
            "[2, 4, 4]",
        ],
    );
}

#[test]
fn failed_writes_leave_memory_unchanged() {
    let g = gpu();
    let (b, h, n, w) = (2, 3, 5, 4);
    let host: Vec<f32> = (0..b * n * w).map(|x| x as f32).collect();
    let mut m = g.upload(&[b, n, w], &host).unwrap();
    let wt = g.upload(&[b, h, n], &vec![0.5; b * h * n]).unwrap();
    let v = g.upload(&[b, h, w], &vec![0.5; b * h * w]).unwrap();
    let bad_w = g.zeros(&[b, h, w + 1]).unwrap();
    let bad_h = g.zeros(&[b, h + 1, w]).unwrap();
    says(
        &msg(g.soft_write(&mut m, &wt, &bad_w, &v)),
        &["soft_write", "erase", "[B, H, W] = [2, 3, 4]", "[2, 3, 5]"],
    );
    says(
        &msg(g.soft_write(&mut m, &wt, &v, &bad_h)),
        &["soft_write", "add"],
    );
    says(
        &msg(g.soft_write(&mut m, &v, &v, &v)),
        &["soft_write", "`w`"],
    );
    assert_eq!(
        g.download(&m).unwrap(),
        host,
        "a refused write modified the memory"
    );
}

#[test]
fn tensors_of_another_gpu_are_refused() {
    let g = gpu();
    let other = Gpu::new().unwrap();
    let m = other.zeros(&[1, 4, 4]).unwrap();
    let w = g.zeros(&[1, 1, 4]).unwrap();
    says(
        &msg(g.soft_read(&m, &w)),
        &["soft_read", "memory", "another Gpu"],
    );
    says(&msg(g.download(&m)), &["download", "another Gpu"]);
}

#[test]
fn discrete_ops_check_every_argument() {
    let g = gpu();
    let (b, h, n, w) = (2, 3, 5, 4);
    let m = g.zeros(&[b, n, w]).unwrap();
    let wt = g.zeros(&[b, h, n]).unwrap();
    let v = g.zeros(&[b, h, w]).unwrap();
    let adv = g.zeros(&[b, h]).unwrap();
    let ix = g.upload_indices(&[b, h], &vec![0; b * h]).unwrap();
    let bad_ix = g
        .upload_indices(&[b + 1, h], &vec![0; (b + 1) * h])
        .unwrap();
    let flat_ix = g.upload_indices(&[b * h], &vec![0; b * h]).unwrap();
    let bad_w = g.zeros(&[b, h, w + 1]).unwrap();
    let flat = g.zeros(&[b * h * n]).unwrap();

    says(
        &msg(g.sample(&flat, 1)),
        &["sample", "`w`", "rank 3: [B, H, N]", "[30]"],
    );
    says(
        &msg(g.argmax(&flat)),
        &["argmax", "`w`", "rank 3: [B, H, N]", "[30]"],
    );
    says(
        &msg(g.reinforce_grad(&flat, &ix, &adv, 0.0)),
        &["reinforce_grad", "`w`", "[B, H, N]"],
    );
    says(
        &msg(g.reinforce_grad(&wt, &bad_ix, &adv, 0.0)),
        &["reinforce_grad", "indices", "[B, H] = [2, 3]", "[3, 3]"],
    );
    says(
        &msg(g.reinforce_grad(&wt, &ix, &v, 0.0)),
        &[
            "reinforce_grad",
            "advantage",
            "[B, H] = [2, 3]",
            "[2, 3, 4]",
        ],
    );
    says(
        &msg(g.reinforce_grad(&wt, &ix, &adv, f32::NAN)),
        &["reinforce_grad", "lambda", "finite"],
    );
    says(
        &msg(g.discrete_read(&m, &flat_ix)),
        &["discrete_read", "indices", "[B, H] = [2, H]", "[6]"],
    );
    let mut d = g.zeros(&[b, n, w]).unwrap();
    says(
        &msg(g.discrete_read_backward(&m, &ix, &bad_w, &mut d)),
        &["discrete_read_backward", "dr", "[B, H, W] = [2, 3, 4]"],
    );
}

#[test]
fn refused_discrete_writes_leave_memory_unchanged() {
    let g = gpu();
    let (b, h, n, w) = (2, 3, 5, 4);
    let host: Vec<f32> = (0..b * n * w).map(|x| x as f32).collect();
    let mut m = g.upload(&[b, n, w], &host).unwrap();
    let v = g.upload(&[b, h, w], &vec![0.5; b * h * w]).unwrap();
    let ix = g.upload_indices(&[b, h], &[0, 1, 2, 3, 4, 0]).unwrap();
    let bad_ix = g
        .upload_indices(&[b + 1, h], &vec![0; (b + 1) * h])
        .unwrap();
    let bad_w = g.zeros(&[b, h, w + 1]).unwrap();
    let bad_h = g.zeros(&[b, h + 1, w]).unwrap();
    says(
        &msg(g.discrete_write(&mut m, &ix, &bad_w, &v)),
        &[
            "discrete_write",
            "erase",
            "[B, H, W] = [2, 3, 4]",
            "[2, 3, 5]",
        ],
    );
    says(
        &msg(g.discrete_write(&mut m, &ix, &v, &bad_h)),
        &["discrete_write", "add", "[2, 4, 4]"],
    );
    says(
        &msg(g.discrete_write(&mut m, &bad_ix, &v, &v)),
        &["discrete_write", "indices", "[B, H] = [2, H]", "[3, 3]"],
    );
    // The fused step forward checks what the read and the write check.
    let ir = g.upload_indices(&[b, 2], &[0, 1, 2, 3]).unwrap();
    says(
        &msg(g.discrete_access(&mut m, &bad_ix, &ix, &v, &v)),
        &[
            "discrete_access",
            "read_indices",
            "[B, H] = [2, H]",
            "[3, 3]",
        ],
    );
    says(
        &msg(g.discrete_access(&mut m, &ir, &bad_ix, &v, &v)),
        &["discrete_access", "write_indices", "[3, 3]"],
    );
    says(
        &msg(g.discrete_access(&mut m, &ir, &ix, &bad_w, &v)),
        &[
            "discrete_access",
            "erase",
            "[B, Hw, W] = [2, 3, 4]",
            "[2, 3, 5]",
        ],
    );
    says(
        &msg(g.discrete_access(&mut m, &ir, &ix, &v, &bad_h)),
        &["discrete_access", "add", "[2, 4, 4]"],
    );
    assert_eq!(
        g.download(&m).unwrap(),
        host,
        "a refused discrete_access modified the memory"
    );
    let undo = g.discrete_write(&mut m, &ix, &v, &v).unwrap();
    let written = g.download(&m).unwrap();
    let mut d = g.zeros(&[b, n + 1, w]).unwrap();
    says(
        &msg(g.discrete_write_backward(&undo, &v, &v, &mut d)),
        &[
            "discrete_write_backward",
            "d_memory",
            "[B, N, W] = [2, 5, 4]",
        ],
    );
    let mut d = g.zeros(&[b, n, w]).unwrap();
    says(
        &msg(g.discrete_write_backward(&undo, &bad_w, &v, &mut d)),
        &["discrete_write_backward", "erase"],
    );
    let mut other = g.upload(&[b, n, w], &host).unwrap();
    says(
        &msg(g.undo_write(&mut other, &undo)),
        &["undo_write", "different memory tensor"],
    );
    assert_eq!(g.download(&other).unwrap(), host);
    // The fused backward of a step's access checks what the three calls it replaces check.
    let dr = g.zeros(&[b, 2, w]).unwrap();
    says(
        &msg(g.discrete_access_backward(&mut other, &ir, &dr, &undo, &v, &v, &mut d)),
        &["discrete_access_backward", "different memory tensor"],
    );
    says(
        &msg(g.discrete_access_backward(&mut m, &ir, &v, &undo, &v, &v, &mut d)),
        &[
            "discrete_access_backward",
            "dr",
            "[B, H, W] = [2, 2, 4]",
            "[2, 3, 4]",
        ],
    );
    says(
        &msg(g.discrete_access_backward(&mut m, &bad_ix, &dr, &undo, &v, &v, &mut d)),
        &["discrete_access_backward", "read_indices", "[3, 3]"],
    );
    says(
        &msg(g.discrete_access_backward(&mut m, &ir, &dr, &undo, &bad_w, &v, &mut d)),
        &[
            "discrete_access_backward",
            "erase",
            "[B, Hw, W] = [2, 3, 4]",
            "[2, 3, 5]",
        ],
    );
    says(
        &msg(g.discrete_access_backward(&mut m, &ir, &dr, &undo, &v, &bad_h, &mut d)),
        &["discrete_access_backward", "add", "[2, 4, 4]"],
    );
    let mut bad_d = g.zeros(&[b, n + 1, w]).unwrap();
    says(
        &msg(g.discrete_access_backward(&mut m, &ir, &dr, &undo, &v, &v, &mut bad_d)),
        &[
            "discrete_access_backward",
            "d_memory",
            "[B, N, W] = [2, 5, 4]",
        ],
    );
    assert_eq!(
        g.download(&m).unwrap(),
        written,
        "a refused op modified the memory"
    );
    g.undo_write(&mut m, &undo).unwrap();
    assert_eq!(g.download(&m).unwrap(), host);
    says(
        &msg(g.discrete_access_backward(&mut m, &ir, &dr, &undo, &v, &v, &mut d)),
        &[
            "discrete_access_backward",
            "undo writes in last-in-first-out order",
        ],
    );
}
