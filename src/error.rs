//! The crate's error type.

use std::fmt;

/// Everything that can go wrong in `ntm-kernels`, in words a user can act on.
///
/// Every message names the op and the argument involved, and, for shape and size problems,
/// what was expected and what was given.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// No GPU adapter matched the request.
    NoAdapter(String),
    /// The adapter refused to create a device.
    Device(String),
    /// An argument has the wrong rank or shape, or disagrees with another argument.
    Shape {
        /// The op that was called.
        op: &'static str,
        /// The argument at fault.
        arg: &'static str,
        /// The shape the op needs, in words (for example `[B, N, W] = [2, 7, 19]`).
        expected: String,
        /// The shape that was given.
        given: Vec<usize>,
    },
    /// An argument has a dtype the op does not take: only memory-shaped tensors may be f16
    /// (DESIGN.md section 7).
    DType {
        /// The op that was called.
        op: &'static str,
        /// The argument at fault.
        arg: &'static str,
        /// The dtype the op needs there, in words.
        expected: &'static str,
        /// The dtype that was given.
        given: crate::DType,
    },
    /// The device lacks a feature the call needs.
    Unsupported {
        /// The call.
        op: &'static str,
        /// What is missing.
        message: String,
    },
    /// Host data does not match the shape it was uploaded with.
    DataLength {
        /// The op that was called.
        op: &'static str,
        /// The shape asked for.
        shape: Vec<usize>,
        /// Elements that shape holds.
        expected: usize,
        /// Elements given.
        given: usize,
    },
    /// A tensor or dispatch exceeds what this adapter (or this library's 32-bit indexing) allows.
    TooLarge {
        /// The op that was called.
        op: &'static str,
        /// What is too large.
        what: String,
        /// Its size, in the unit named by `what`.
        size: u64,
        /// The limit it exceeds.
        limit: u64,
    },
    /// An argument has an invalid value (not a shape problem).
    Invalid {
        /// The op that was called.
        op: &'static str,
        /// What is wrong.
        message: String,
    },
    /// An index was `>= N`: found on the GPU, reported by the next `download` or `sync`.
    IndexOutOfRange {
        /// The op that found it.
        op: &'static str,
        /// Batch element of the first bad index.
        batch: usize,
        /// Head of the first bad index.
        head: usize,
        /// The bad index.
        index: u32,
        /// The number of memory slots.
        slots: usize,
    },
    /// The device's limits are below what the crate's kernels need (checked when a [`crate::Gpu`]
    /// is created).
    Limit {
        /// The `wgpu::Limits` field, e.g. `max_storage_buffers_per_shader_stage`.
        limit: &'static str,
        /// What the kernels need.
        needed: u64,
        /// What the device allows.
        available: u64,
    },
    /// A wait gave up after the timeout set by [`crate::Gpu::set_wait_timeout`]; the queued
    /// work goes on, and a later wait picks it up.
    Timeout {
        /// The call that waited.
        op: &'static str,
        /// What it was waiting for.
        what: String,
        /// How long it waited.
        waited: std::time::Duration,
    },
    /// The GPU or wgpu reported an error (validation, out of memory, device lost, mapping).
    Gpu(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoAdapter(m) => write!(f, "no GPU adapter: {m}"),
            Error::Device(m) => write!(f, "could not create a GPU device: {m}"),
            Error::Shape { op, arg, expected, given } => write!(
                f,
                "{op}: argument `{arg}` has shape {given:?}, expected {expected}"
            ),
            Error::DType { op, arg, expected, given } => write!(
                f,
                "{op}: argument `{arg}` is {given}, expected {expected} (only memory-shaped \
                 tensors may be f16)"
            ),
            Error::Unsupported { op, message } => write!(f, "{op}: {message}"),
            Error::DataLength { op, shape, expected, given } => write!(
                f,
                "{op}: shape {shape:?} holds {expected} elements but {given} were given"
            ),
            Error::TooLarge { op, what, size, limit } => {
                write!(f, "{op}: {what} is {size}, over the limit of {limit}")
            }
            Error::Invalid { op, message } => write!(f, "{op}: {message}"),
            Error::IndexOutOfRange { op, batch, head, index, slots } => write!(
                f,
                "{op}: index {index} at [batch {batch}, head {head}] is out of range: memory has {slots} slots; \
                 the rows it would have touched were left unchanged"
            ),
            Error::Limit { limit, needed, available } => write!(
                f,
                "the device's limit `{limit}` is {available}, but this crate's kernels need {needed}; \
                 request the adapter's limits when creating the device"
            ),
            Error::Timeout { op, what, waited } => write!(
                f,
                "{op}: gave up after {:.1} s waiting for {what} (see Gpu::set_wait_timeout)",
                waited.as_secs_f64()
            ),
            Error::Gpu(m) => write!(f, "GPU error: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand for `Result<T, ntm_kernels::Error>`.
pub type Result<T> = std::result::Result<T, Error>;
