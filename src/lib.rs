// The crate documentation is the README: its API tour is compiled as a doc test.
#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod check;
mod error;
mod ops;
mod primitives;
pub mod reference;
mod registry;
mod runtime;

pub use error::{Error, Result};
pub use ops::content::{ContentGrads, KeyGrads};
pub use ops::discrete::{DiscreteAccessGrads, DiscreteWriteGrads, WriteUndo};
pub use ops::location::{LocationGrads, MAX_SHIFT};
pub use ops::read::ReadGrads;
pub use ops::write::{HeadGrads, WriteGrads};
pub use runtime::profile::{Clock, Profile};
pub use runtime::tensor::{DType, Indices, Tensor};
pub use runtime::user::{Access, Kernel, MAX_PARAM_WORDS};
pub use runtime::{
    AdapterSummary, ColumnTiles, F16Path, Gpu, RowSums, DEFAULT_WAIT_TIMEOUT, MAX_ELEMENTWISE_ROWS,
    MAX_ELEMENTWISE_ROW_GROUP, MAX_READ_BACKWARD_PASSES, MAX_REDUCTION_WORKGROUPS,
    MAX_STREAM_ROW_GROUP, MAX_STREAM_VECS_PER_THREAD,
};

/// The epsilon of `norm(x) = sqrt(sum x² + EPS)` and of `K = D / (P + EPS)`.
pub const EPS: f32 = 1e-6;
