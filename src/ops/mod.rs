//! The op families: each is one module here and one shader in `shaders/`, with its CPU
//! reference in [`crate::reference`] and its tests in `tests/`. Ops depend on the primitives
//! and the runtime, never on each other.

pub(crate) mod blas;
pub(crate) mod content;
pub(crate) mod copy;
pub(crate) mod discrete;
pub(crate) mod location;
pub(crate) mod read;
pub(crate) mod sample;
pub(crate) mod write;
