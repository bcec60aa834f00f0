//! # ntm-kernels
//!
//! GPU compute kernels (WGSL on wgpu) for the external memory of a Neural Turing Machine, in
//! its soft form (every read and write touches all N slots) and its discrete form (one slot per
//! head, gather/scatter), each with its backward pass, checked against the CPU reference in
//! [`reference`].
//!
//! The contract (shapes, math, names, errors) is `DESIGN.md`; the formulas are repeated on
//! each op. Tensors are row-major f32: memory `M[B,N,W]`, keys `k[B,H,W]`, strengths
//! `beta[B,H]`, weights `w[B,H,N]`, erase/add/read vectors `[B,H,W]`.
//!
//! ```no_run
//! # fn main() -> Result<(), ntm_kernels::Error> {
//! use ntm_kernels::Gpu;
//! let gpu = Gpu::new()?;
//! let (b, h, n, w) = (2, 1, 128, 16);
//! let mut m = gpu.upload(&[b, n, w], &vec![0.1; b * n * w])?;
//! let k = gpu.upload(&[b, h, w], &vec![0.2; b * h * w])?;
//! let beta = gpu.upload(&[b, h], &vec![5.0; b * h])?;
//! let weights = gpu.content_address(&m, &k, &beta)?;
//! let r = gpu.soft_read(&m, &weights)?;
//! let erase = gpu.upload(&[b, h, w], &vec![0.5; b * h * w])?;
//! gpu.soft_write(&mut m, &weights, &erase, &k)?;
//! let host: Vec<f32> = gpu.download(&r)?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod bench;
mod check;
mod content;
mod discrete;
mod error;
mod gpu;
mod read;
mod reduce;
pub mod reference;
mod sample;
mod write;

pub use content::ContentGrads;
pub use discrete::{DiscreteWriteGrads, WriteUndo};
pub use error::{Error, Result};
pub use gpu::{AdapterSummary, Clock, Gpu, Indices, Profile, Tensor};
pub use read::ReadGrads;
pub use write::WriteGrads;

/// The epsilon of `norm(x) = sqrt(sum x² + EPS)` and of `K = D / (P + EPS)`.
pub const EPS: f32 = 1e-6;
