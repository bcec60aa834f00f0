//! Argument validation shared by every op, and the element ranges ("spans") that a range of
//! workgroups touches in each tensor layout, used to bind windows of large tensors.

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Indices, Tensor};

/// The sizes of one call: batch, heads, slots, width.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub b: usize,
    pub h: usize,
    pub n: usize,
    pub w: usize,
}

impl Dims {
    pub fn arr(&self) -> [usize; 4] {
        [self.b, self.h, self.n, self.w]
    }
}

fn describe(names: &[&str], want: &[usize]) -> String {
    format!("[{}] = {:?}", names.join(", "), want)
}

/// Checks that `given` is exactly `want` (names label each dimension in the message).
pub(crate) fn expect(
    op: &'static str,
    arg: &'static str,
    given: &[usize],
    names: &[&str],
    want: &[usize],
) -> Result<()> {
    if given != want {
        return Err(Error::Shape { op, arg, expected: describe(names, want), given: given.to_vec() });
    }
    Ok(())
}

/// Memory must be [B, N, W]; returns (B, N, W).
pub(crate) fn memory(gpu: &Gpu, op: &'static str, arg: &'static str, m: &Tensor) -> Result<(usize, usize, usize)> {
    gpu.check_owner(op, arg, m.gpu)?;
    if m.shape.len() != 3 {
        return Err(Error::Shape {
            op,
            arg,
            expected: "rank 3: [B, N, W]".into(),
            given: m.shape.clone(),
        });
    }
    Ok((m.shape[0], m.shape[1], m.shape[2]))
}

/// A tensor of rank 3 whose first and last dimensions are known: [B, ?, X]; returns the middle one.
pub(crate) fn middle(
    gpu: &Gpu,
    op: &'static str,
    arg: &'static str,
    t: &Tensor,
    names: [&str; 3],
    b: usize,
    last: usize,
) -> Result<usize> {
    gpu.check_owner(op, arg, t.gpu)?;
    if t.shape.len() != 3 || t.shape[0] != b || t.shape[2] != last {
        let expected = format!("[{}, {}, {}] = [{b}, {}, {last}]", names[0], names[1], names[2], names[1]);
        return Err(Error::Shape { op, arg, expected, given: t.shape.clone() });
    }
    Ok(t.shape[1])
}

/// Checks a tensor's shape exactly.
pub(crate) fn tensor(gpu: &Gpu, op: &'static str, arg: &'static str, t: &Tensor, names: &[&str], want: &[usize]) -> Result<()> {
    gpu.check_owner(op, arg, t.gpu)?;
    expect(op, arg, &t.shape, names, want)
}

/// Checks an index tensor's shape exactly.
pub(crate) fn indices(gpu: &Gpu, op: &'static str, arg: &'static str, t: &Indices, names: &[&str], want: &[usize]) -> Result<()> {
    gpu.check_owner(op, arg, t.gpu)?;
    expect(op, arg, &t.shape, names, want)
}

/// Two arguments that must be different tensors (one is written while the other is read).
pub(crate) fn distinct(op: &'static str, a: &Tensor, a_name: &str, b: &Tensor, b_name: &str) -> Result<()> {
    if a.id == b.id {
        return Err(Error::Invalid { op, message: format!("`{a_name}` and `{b_name}` must be different tensors") });
    }
    Ok(())
}

/// The memory rows `[g0, g1)` (flattened over batch) that a range of units touches, when each
/// batch element has `per_b` units of which each block of `per_blk` consecutive units covers
/// `rows` consecutive slots.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rows {
    pub b0: u64,
    pub i0: u64,
    pub b1: u64,
    /// One past the last slot of batch `b1`.
    pub i1: u64,
}

impl Rows {
    pub fn of_blocks(u0: u64, u1: u64, units_per_blk: u64, blocks: u64, rows: u64, n: u64) -> Rows {
        let first = u0 / units_per_blk;
        let last = (u1 - 1) / units_per_blk;
        Rows {
            b0: first / blocks,
            i0: (first % blocks) * rows,
            b1: last / blocks,
            i1: ((last % blocks) * rows + rows).min(n),
        }
    }
    /// Rows covered by the flat element range `[e0, e1)` of a [B, N, W] tensor.
    pub fn of_elements(e0: u64, e1: u64, n: u64, w: u64) -> Rows {
        let g0 = e0 / w;
        let g1 = e1.div_ceil(w);
        Rows { b0: g0 / n, i0: g0 % n, b1: (g1 - 1) / n, i1: (g1 - 1) % n + 1 }
    }
    /// Elements of a [B, N, W] tensor.
    pub fn bnw(&self, n: u64, w: u64) -> (u64, u64) {
        ((self.b0 * n + self.i0) * w, (self.b1 * n + self.i1) * w)
    }
    /// Elements of a [B, H, N] tensor (all heads of the rows).
    pub fn bhn(&self, h: u64, n: u64) -> (u64, u64) {
        (self.b0 * h * n + self.i0, (self.b1 * h + h - 1) * n + self.i1)
    }
}

/// Elements `[u0 * per, min(u1 * per, total))` of a flat range processed `per` elements a unit.
pub(crate) fn flat(u0: u64, u1: u64, per: u64, total: u64) -> (u64, u64) {
    (u0 * per, (u1 * per).min(total))
}
