// The crate documentation is the README: its API tour is compiled as a doc test.
#![doc = include_str!("../README.md")]
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
