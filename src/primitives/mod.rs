//! Kernel primitives shared by the op families: row tiles, column reductions, row statistics,
//! and the element spans that bind windows of large tensors.

pub(crate) mod colsum;
pub(crate) mod rowstat;
pub(crate) mod rowstream;
pub(crate) mod rowtile;
pub(crate) mod spans;
