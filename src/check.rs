//! Argument validation shared by every op: shapes, ranks and ownership, with errors that name
//! the op, the argument, and what was expected and given.

use crate::error::{Error, Result};
use crate::runtime::tensor::{DType, Indices, Tensor};
use crate::runtime::Gpu;

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
        return Err(Error::Shape {
            op,
            arg,
            expected: describe(names, want),
            given: given.to_vec(),
        });
    }
    Ok(())
}

/// Memory must be [B, N, W]; returns (B, N, W).
pub(crate) fn memory(
    gpu: &Gpu,
    op: &'static str,
    arg: &'static str,
    m: &Tensor,
) -> Result<(usize, usize, usize)> {
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
    Ok(rank3(gpu, op, arg, t, names, [Some(b), None, Some(last)])?[1])
}

/// A tensor of rank 3 whose first two dimensions are known: [B, H, ?]; returns the last one.
pub(crate) fn middle_last(
    gpu: &Gpu,
    op: &'static str,
    arg: &'static str,
    t: &Tensor,
    names: [&str; 3],
    b: usize,
    h: usize,
) -> Result<usize> {
    Ok(rank3(gpu, op, arg, t, names, [Some(b), Some(h), None])?[2])
}

/// A tensor of rank 3 whose dimensions are `known` where given (the others free); the error
/// names them, e.g. `[B, H, N] = [2, H, 5]`.
fn rank3(
    gpu: &Gpu,
    op: &'static str,
    arg: &'static str,
    t: &Tensor,
    names: [&str; 3],
    known: [Option<usize>; 3],
) -> Result<[usize; 3]> {
    gpu.check_owner(op, arg, t.gpu)?;
    f32_only(op, arg, t)?;
    let fits = t.shape.len() == 3 && (0..3).all(|k| known[k].is_none_or(|d| d == t.shape[k]));
    if !fits {
        let dims: Vec<String> = (0..3)
            .map(|k| known[k].map_or(names[k].to_string(), |d| d.to_string()))
            .collect();
        return Err(Error::Shape {
            op,
            arg,
            expected: format!("[{}] = [{}]", names.join(", "), dims.join(", ")),
            given: t.shape.clone(),
        });
    }
    Ok([t.shape[0], t.shape[1], t.shape[2]])
}

/// Checks an f32 tensor's shape exactly.
pub(crate) fn tensor(
    gpu: &Gpu,
    op: &'static str,
    arg: &'static str,
    t: &Tensor,
    names: &[&str],
    want: &[usize],
) -> Result<()> {
    gpu.check_owner(op, arg, t.gpu)?;
    f32_only(op, arg, t)?;
    expect(op, arg, &t.shape, names, want)
}

/// Checks a memory-shaped tensor (`dM'`, `d_mem`: f32 or f16) against [B, N, W].
pub(crate) fn memory_shaped(
    gpu: &Gpu,
    op: &'static str,
    arg: &'static str,
    t: &Tensor,
    d: Dims,
) -> Result<()> {
    gpu.check_owner(op, arg, t.gpu)?;
    expect(op, arg, &t.shape, &["B", "N", "W"], &[d.b, d.n, d.w])
}

/// An error unless `t` is f32 (every tensor that is not memory-shaped).
pub(crate) fn f32_only(op: &'static str, arg: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype != DType::F32 {
        return Err(Error::DType {
            op,
            arg,
            expected: "f32",
            given: t.dtype,
        });
    }
    Ok(())
}

/// Checks that `t` has the shape of another argument, `other` (owned by this Gpu too).
pub(crate) fn same_shape(
    gpu: &Gpu,
    op: &'static str,
    (arg, t): (&'static str, &Tensor),
    (other_arg, other): (&'static str, &Tensor),
) -> Result<()> {
    gpu.check_owner(op, other_arg, other.gpu)?;
    gpu.check_owner(op, arg, t.gpu)?;
    if t.shape != other.shape {
        return Err(Error::Shape {
            op,
            arg,
            expected: format!("the shape of `{other_arg}`, {:?}", other.shape),
            given: t.shape.clone(),
        });
    }
    Ok(())
}

/// Checks an index tensor's shape exactly.
pub(crate) fn indices(
    gpu: &Gpu,
    op: &'static str,
    arg: &'static str,
    t: &Indices,
    names: &[&str],
    want: &[usize],
) -> Result<()> {
    gpu.check_owner(op, arg, t.gpu)?;
    expect(op, arg, &t.shape, names, want)
}
