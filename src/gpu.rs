//! The GPU context: adapter and device, tensors, batched recording of dispatches, and the
//! machinery every op shares (a uniform arena for parameters, pipelines cached per `Gpu`,
//! windowed bindings for tensors larger than one storage binding, folded dispatches).

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};

/// Bytes reserved per dispatch in the uniform arena (rounded up to the adapter's alignment).
const PARAM_BYTES: u64 = std::mem::size_of::<Params>() as u64;
/// Dispatches recorded per batch before the batch is submitted on its own.
const ARENA_SLOTS: u64 = 4096;
/// Index-check slots per batch (each op that reads indices takes one).
pub(crate) const CHECK_SLOTS: u64 = 1024;
/// Bytes of the index-check flags buffer (one u32 per slot).
const CHECK_BYTES: u64 = CHECK_SLOTS * 4;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Parameters of one dispatch, as the shaders see them (`struct Params` in every `.wgsl` file).
///
/// `unit_base..unit_end` is the range of work units this dispatch covers; a unit is one
/// workgroup. `groups_x` folds the unit range into two dispatch dimensions. `base[k]` is the
/// element offset at which storage binding `k + 1` was bound (0 when bound whole), so shaders
/// index windows with global indices minus `base`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub(crate) struct Params {
    pub unit_base: u32,
    pub unit_end: u32,
    pub groups_x: u32,
    pub check_slot: u32,
    pub base: [u32; 8],
    pub dims: [u32; 4],
    pub extra: [u32; 4],
    pub fextra: [f32; 4],
}

impl Params {
    /// Params with `dims = [B, H, N, W]` and op-specific integers and floats.
    pub fn new(dims: [usize; 4], extra: [u32; 4], fextra: [f32; 4]) -> Self {
        Params {
            dims: dims.map(|d| d as u32),
            extra,
            fextra,
            ..Default::default()
        }
    }
}

/// A static description of one compute entry point.
pub(crate) struct KernelDef {
    /// Name of the shader file (for errors and the cache key).
    pub file: &'static str,
    /// WGSL source of the whole file.
    pub source: &'static str,
    /// Entry point.
    pub entry: &'static str,
    /// For each storage binding 1..=k: true if written.
    pub writes: &'static [bool],
}

struct Kernel {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
}

/// How a storage binding is bound for a dispatch.
pub(crate) enum Span<'a> {
    /// The whole buffer (it must fit one storage binding).
    Whole,
    /// Only the elements `[lo, hi)` that units `[u0, u1)` touch, given by this function.
    Window(&'a dyn Fn(u64, u64) -> (u64, u64)),
}

/// One storage argument of a dispatch.
pub(crate) struct Arg<'a> {
    pub buf: &'a wgpu::Buffer,
    /// Length of the buffer in 4-byte elements.
    pub len: u64,
    pub span: Span<'a>,
}

impl<'a> Arg<'a> {
    pub fn whole(t: &'a Tensor) -> Self {
        Arg {
            buf: &t.buf,
            len: t.len as u64,
            span: Span::Whole,
        }
    }
    pub fn window(t: &'a Tensor, f: &'a dyn Fn(u64, u64) -> (u64, u64)) -> Self {
        Arg {
            buf: &t.buf,
            len: t.len as u64,
            span: Span::Window(f),
        }
    }
    pub fn indices(t: &'a Indices) -> Self {
        Arg {
            buf: &t.buf,
            len: t.len as u64,
            span: Span::Whole,
        }
    }
    pub fn raw(buf: &'a wgpu::Buffer, len: u64, span: Span<'a>) -> Self {
        Arg { buf, len, span }
    }
}

/// A dense f32 tensor in GPU memory, row-major, with its shape.
#[derive(Debug)]
pub struct Tensor {
    pub(crate) buf: Arc<wgpu::Buffer>,
    pub(crate) shape: Vec<usize>,
    pub(crate) len: usize,
    pub(crate) id: u64,
    pub(crate) gpu: u64,
}

impl Tensor {
    /// The shape, outermost dimension first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Always false: zero-sized tensors are refused at creation.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.len as u64 * 4
    }
}

/// A dense u32 tensor in GPU memory (slot indices), with its shape.
#[derive(Debug)]
pub struct Indices {
    pub(crate) buf: Arc<wgpu::Buffer>,
    pub(crate) shape: Vec<usize>,
    pub(crate) len: usize,
    pub(crate) gpu: u64,
}

impl Indices {
    /// Another handle to the same GPU indices (they are never written after creation).
    pub(crate) fn share(&self) -> Indices {
        Indices {
            buf: self.buf.clone(),
            shape: self.shape.clone(),
            len: self.len,
            gpu: self.gpu,
        }
    }
    /// The shape, outermost dimension first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Always false: zero-sized tensors are refused at creation.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.len as u64 * 4
    }
}

/// What a check slot reports if its kernel flags a (batch, head).
pub(crate) struct IndexCheck {
    pub op: &'static str,
    pub heads: usize,
    pub kind: CheckKind,
}

pub(crate) enum CheckKind {
    /// An index >= slots in `indices`.
    Range {
        indices: Arc<wgpu::Buffer>,
        slots: usize,
    },
    /// Sampling found no positive weight in the row.
    NoPositiveWeight,
}

pub(crate) struct Recorder {
    encoder: Option<wgpu::CommandEncoder>,
    /// The compute pass dispatches are recorded into, kept open across dispatches and ops
    /// (wgpu orders the dispatches inside it) until another command or a flush needs the encoder.
    pass: Option<wgpu::ComputePass<'static>>,
    /// Parameters staged for the batch being recorded; written to the arena just before submit.
    params: Vec<u8>,
    slots_used: u64,
    checks: Vec<IndexCheck>,
    /// Index checks of batches already submitted, not yet read back.
    submitted_checks: Vec<(wgpu::Buffer, Vec<IndexCheck>)>,
    /// Scratch buffers free for reuse, by size in bytes.
    pool: HashMap<u64, Vec<wgpu::Buffer>>,
    dispatches_recorded: u64,
    submits: u64,
    /// While profiling: the query set each pass writes its start and end timestamps to.
    capture: Option<Capture>,
}

struct Capture {
    set: wgpu::QuerySet,
    next: u32,
    /// Kernel of each timed pass, for `NTM_PROFILE_PASSES`.
    labels: Vec<&'static str>,
    /// A pass found the set full and went untimed.
    overflow: bool,
}

/// Where the times of a [`Profile`] come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// GPU timestamp queries: from the start of an op's first pass to the end of its last.
    GpuTimestamps,
    /// Wall clock over a batch of repetitions with one submit-and-wait, divided by the count.
    WallClock,
}

impl std::fmt::Display for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Clock::GpuTimestamps => "GPU timestamps",
            Clock::WallClock => "wall clock (batched)",
        })
    }
}

/// Times of repeated runs of some GPU work, from [`Gpu::profile`].
#[derive(Clone, Debug)]
pub struct Profile {
    /// One duration per sample.
    pub samples: Vec<std::time::Duration>,
    /// How they were measured.
    pub clock: Clock,
}

impl Profile {
    /// The median sample.
    pub fn median(&self) -> std::time::Duration {
        let mut v = self.samples.clone();
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    }
    /// The fastest sample.
    pub fn min(&self) -> std::time::Duration {
        self.samples.iter().min().copied().unwrap_or_default()
    }
}

/// Facts about the adapter in use.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    /// Adapter name, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)` or `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Backend: Vulkan, Gl, Metal, Dx12.
    pub backend: String,
    /// Driver name and version, as the adapter reports them.
    pub driver: String,
    /// Largest storage-buffer binding, bytes.
    pub max_storage_binding: u64,
    /// Largest buffer, bytes.
    pub max_buffer: u64,
    /// Largest dispatch, workgroups per dimension.
    pub max_workgroups_per_dim: u32,
    /// Whether GPU timestamp queries are available.
    pub timestamps: bool,
    /// Whether the adapter is a CPU implementation (lavapipe, llvmpipe, WARP).
    pub is_cpu: bool,
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}; driver {}; max storage binding {} MiB, max buffer {} MiB, {} workgroups/dim; timestamps: {})",
            self.name,
            self.backend,
            self.driver,
            self.max_storage_binding >> 20,
            self.max_buffer >> 20,
            self.max_workgroups_per_dim,
            if self.timestamps { "yes" } else { "no" }
        )
    }
}

/// A GPU device with the kernels of this crate.
///
/// Ops record their work and return at once; work is submitted in batches, and only
/// [`Gpu::download`], [`Gpu::download_indices`] and [`Gpu::sync`] wait for it.
pub struct Gpu {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    pub(crate) limits: wgpu::Limits,
    features: wgpu::Features,
    id: u64,
    arena: wgpu::Buffer,
    slot_bytes: u64,
    kernels: Mutex<HashMap<(&'static str, &'static str), Arc<Kernel>>>,
    rec: Mutex<Recorder>,
    gpu_errors: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.info.name)
            .finish()
    }
}

impl Gpu {
    /// Opens the default adapter.
    ///
    /// `WGPU_BACKEND` (e.g. `vulkan`, `gl`, `metal`, `dx12`) restricts the backends, and
    /// `WGPU_ADAPTER_NAME` picks the first adapter whose name contains it (case-insensitive).
    pub fn new() -> Result<Gpu> {
        pollster::block_on(Self::new_async())
    }

    async fn new_async() -> Result<Gpu> {
        let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        desc.flags = wgpu::InstanceFlags::empty().with_env();
        let instance = wgpu::Instance::new(desc);
        let hint = "on a machine without a GPU, install Mesa's software drivers \
                    (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers` for lavapipe) \
                    or use `WGPU_BACKEND=gl` with Mesa's llvmpipe";
        let adapter = match std::env::var("WGPU_ADAPTER_NAME") {
            Ok(name) if !name.is_empty() => {
                let want = name.to_lowercase();
                let all = instance.enumerate_adapters(backends).await;
                let names: Vec<String> = all.iter().map(|a| a.get_info().name).collect();
                all.into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&want))
                    .ok_or_else(|| {
                        Error::NoAdapter(format!(
                            "WGPU_ADAPTER_NAME={name:?} matches none of the adapters found: {names:?}; {hint}"
                        ))
                    })?
            }
            _ => instance
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::from_env()
                        .unwrap_or(wgpu::PowerPreference::HighPerformance),
                    force_fallback_adapter: false,
                    compatible_surface: None,
                    apply_limit_buckets: false,
                })
                .await
                .map_err(|e| Error::NoAdapter(format!("backends {backends:?}: {e}; {hint}")))?,
        };
        let features = adapter.features() & wgpu::Features::TIMESTAMP_QUERY;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("ntm-kernels"),
                required_features: features,
                required_limits: adapter.limits(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::Device(e.to_string()))?;
        Self::from_wgpu(device, queue)
    }

    /// Wraps a device and queue that the host application already has, so that this crate's
    /// tensors live beside the application's own buffers. Limits and features are read from the
    /// device; request the adapter's limits when creating it to allow large tensors.
    pub fn from_wgpu(device: wgpu::Device, queue: wgpu::Queue) -> Result<Gpu> {
        let limits = device.limits();
        let info = device.adapter_info();
        let features = device.features();
        let slot_bytes =
            PARAM_BYTES.next_multiple_of(limits.min_uniform_buffer_offset_alignment as u64);
        let arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("ntm-kernels params arena"),
            size: slot_bytes * ARENA_SLOTS,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let gpu_errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = gpu_errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            features,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            arena,
            slot_bytes,
            kernels: Mutex::default(),
            rec: Mutex::new(Recorder {
                encoder: None,
                pass: None,
                params: Vec::new(),
                slots_used: 0,
                checks: Vec::new(),
                submitted_checks: Vec::new(),
                pool: HashMap::new(),
                dispatches_recorded: 0,
                submits: 0,
                capture: None,
            }),
            gpu_errors,
        })
    }

    /// The adapter in use, its backend, driver and the limits that shape dispatches.
    pub fn adapter(&self) -> AdapterSummary {
        AdapterSummary {
            name: self.info.name.clone(),
            backend: format!("{:?}", self.info.backend),
            driver: format!("{} {}", self.info.driver, self.info.driver_info)
                .trim()
                .to_string(),
            max_storage_binding: self.limits.max_storage_buffer_binding_size,
            max_buffer: self.limits.max_buffer_size,
            max_workgroups_per_dim: self.limits.max_compute_workgroups_per_dimension,
            timestamps: self.features.contains(wgpu::Features::TIMESTAMP_QUERY),
            is_cpu: self.info.device_type == wgpu::DeviceType::Cpu,
        }
    }

    /// The underlying wgpu device, for applications that share it.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The underlying wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// Counters since creation: (dispatches recorded, command submissions). Useful to check
    /// that many small ops were batched into few submits.
    pub fn counters(&self) -> (u64, u64) {
        let rec = self.lock();
        (rec.dispatches_recorded, rec.submits)
    }

    fn lock(&self) -> MutexGuard<'_, Recorder> {
        // A panic while holding the lock cannot leave the recorder inconsistent in a way that
        // matters more than losing the batch, so a poisoned lock is taken over.
        self.rec.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ----- tensors -------------------------------------------------------------------------

    fn check_shape(&self, op: &'static str, shape: &[usize]) -> Result<usize> {
        if shape.is_empty() || shape.contains(&0) {
            return Err(Error::Shape {
                op,
                arg: "shape",
                expected: "a non-empty shape with no zero-sized dimension".into(),
                given: shape.to_vec(),
            });
        }
        let mut len: u64 = 1;
        for &d in shape {
            len = len.checked_mul(d as u64).ok_or_else(|| Error::TooLarge {
                op,
                what: format!("the element count of shape {shape:?}"),
                size: u64::MAX,
                limit: u32::MAX as u64,
            })?;
        }
        self.check_bytes(op, &format!("a tensor of shape {shape:?}"), len)?;
        Ok(len as usize)
    }

    fn check_bytes(&self, op: &'static str, what: &str, len: u64) -> Result<()> {
        let bytes = len.saturating_mul(4);
        if bytes > self.limits.max_buffer_size {
            return Err(Error::TooLarge {
                op,
                what: format!("{what}, in bytes (the adapter's max_buffer_size)"),
                size: bytes,
                limit: self.limits.max_buffer_size,
            });
        }
        // Shaders index with u32.
        if len > u32::MAX as u64 {
            return Err(Error::TooLarge {
                op,
                what: format!("{what}, in elements (32-bit indexing)"),
                size: len,
                limit: u32::MAX as u64,
            });
        }
        Ok(())
    }

    pub(crate) fn new_buffer(&self, len: u64, label: &str) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (len * 4).max(4),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A new zero-filled f32 tensor (used by ops for their outputs).
    pub(crate) fn alloc(&self, op: &'static str, shape: &[usize]) -> Result<Tensor> {
        let len = self.check_shape(op, shape)?;
        Ok(Tensor {
            buf: Arc::new(self.new_buffer(len as u64, op)),
            shape: shape.to_vec(),
            len,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            gpu: self.id,
        })
    }

    pub(crate) fn alloc_indices(&self, op: &'static str, shape: &[usize]) -> Result<Indices> {
        let len = self.check_shape(op, shape)?;
        Ok(Indices {
            buf: Arc::new(self.new_buffer(len as u64, op)),
            shape: shape.to_vec(),
            len,
            gpu: self.id,
        })
    }

    /// Uploads host data as a tensor of the given shape.
    pub fn upload(&self, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        let t = self.alloc("upload", shape)?;
        if data.len() != t.len {
            return Err(Error::DataLength {
                op: "upload",
                shape: shape.to_vec(),
                expected: t.len,
                given: data.len(),
            });
        }
        self.queue
            .write_buffer(&t.buf, 0, bytemuck::cast_slice(data));
        Ok(t)
    }

    /// Uploads host indices (u32) as an [`Indices`] tensor of the given shape.
    pub fn upload_indices(&self, shape: &[usize], data: &[u32]) -> Result<Indices> {
        let t = self.alloc_indices("upload_indices", shape)?;
        if data.len() != t.len {
            return Err(Error::DataLength {
                op: "upload_indices",
                shape: shape.to_vec(),
                expected: t.len,
                given: data.len(),
            });
        }
        self.queue
            .write_buffer(&t.buf, 0, bytemuck::cast_slice(data));
        Ok(t)
    }

    /// A zero-filled tensor of the given shape.
    pub fn zeros(&self, shape: &[usize]) -> Result<Tensor> {
        // wgpu zero-initialises new buffers.
        self.alloc("zeros", shape)
    }

    /// Waits for all queued work, then copies the tensor back to the host.
    pub fn download(&self, t: &Tensor) -> Result<Vec<f32>> {
        self.check_owner("download", "tensor", t.gpu)?;
        let bytes = self.read_back(&t.buf, t.len as u64 * 4)?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }

    /// Waits for all queued work, then copies the indices back to the host.
    pub fn download_indices(&self, t: &Indices) -> Result<Vec<u32>> {
        self.check_owner("download_indices", "indices", t.gpu)?;
        let bytes = self.read_back(&t.buf, t.len as u64 * 4)?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }

    /// Waits until all queued work has finished, and reports any error it raised
    /// (out-of-range indices, GPU errors).
    pub fn sync(&self) -> Result<()> {
        let mut rec = self.lock();
        self.flush(&mut rec);
        drop(rec);
        self.wait()?;
        self.collect_errors()
    }

    /// A copy of `t` made by this crate's plain copy kernel (the bandwidth baseline of the
    /// benches). Useful for the memory snapshots that soft backprop needs.
    pub fn copy(&self, t: &Tensor) -> Result<Tensor> {
        const OP: &str = "copy";
        self.check_owner(OP, "tensor", t.gpu)?;
        let out = self.alloc(OP, &t.shape)?;
        let n = t.len as u64;
        let span = |u0: u64, u1: u64| (u0 * 256, (u1 * 256).min(n));
        let mut rec = self.recorder();
        self.dispatch(
            &mut rec,
            OP,
            &COPY,
            Params::new([0, 0, 0, 0], [n as u32, 0, 0, 0], [0.0; 4]),
            n.div_ceil(256),
            &[Arg::window(t, &span), Arg::window(&out, &span)],
        )?;
        Ok(out)
    }

    pub(crate) fn check_owner(&self, op: &'static str, arg: &'static str, gpu: u64) -> Result<()> {
        if gpu != self.id {
            return Err(Error::Invalid {
                op,
                message: format!("argument `{arg}` belongs to another Gpu"),
            });
        }
        Ok(())
    }

    fn read_back(&self, buf: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("ntm-kernels readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut rec = self.lock();
        self.encoder(&mut rec)
            .copy_buffer_to_buffer(buf, 0, &staging, 0, bytes);
        self.flush(&mut rec);
        drop(rec);
        let out = self.map_read(&staging, bytes)?;
        self.collect_errors()?;
        Ok(out)
    }

    fn map_read(&self, staging: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|_| Error::Gpu("buffer mapping was dropped".into()))?
            .map_err(|e| Error::Gpu(format!("buffer mapping failed: {e}")))?;
        let view = staging
            .get_mapped_range(0..bytes)
            .map_err(|e| Error::Gpu(format!("buffer mapping failed: {e}")))?;
        let out = view.to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }

    fn wait(&self) -> Result<()> {
        // Wait in short slices: a backend may hold its context lock while it waits (wgpu's GL
        // backend does, and panics in other threads that wait over 6 s for it), so a long job
        // must not keep other threads of this Gpu out.
        loop {
            match self.device.poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: Some(std::time::Duration::from_millis(100)),
            }) {
                Ok(_) => return Ok(()),
                Err(wgpu::PollError::Timeout) => continue,
                Err(e) => return Err(Error::Gpu(format!("waiting for the GPU failed: {e}"))),
            }
        }
    }

    /// Reports (and clears) GPU errors and out-of-range indices from submitted batches.
    /// Call only after waiting for the GPU.
    fn collect_errors(&self) -> Result<()> {
        let errors =
            std::mem::take(&mut *self.gpu_errors.lock().unwrap_or_else(|p| p.into_inner()));
        let submitted = std::mem::take(&mut self.lock().submitted_checks);
        if let Some(e) = errors.into_iter().next() {
            return Err(Error::Gpu(e));
        }
        for (buf, checks) in submitted {
            let bytes = self.map_read(&buf, CHECK_BYTES)?;
            let flags: &[u32] = bytemuck::cast_slice(&bytes);
            for (slot, check) in checks.iter().enumerate() {
                // Kernels store u32::MAX - (first bad position) with atomicMax; 0 = all in range.
                if flags[slot] != 0 {
                    let pos = (u32::MAX - flags[slot]) as u64;
                    let (batch, head) = (pos as usize / check.heads, pos as usize % check.heads);
                    return Err(match &check.kind {
                        CheckKind::Range { indices, slots } => Error::IndexOutOfRange {
                            op: check.op,
                            batch,
                            head,
                            index: self.map_read_one(indices, pos)?,
                            slots: *slots,
                        },
                        CheckKind::NoPositiveWeight => Error::Invalid {
                            op: check.op,
                            message: format!(
                                "the weights at [batch {batch}, head {head}] have no positive entry, so nothing \
                                 can be drawn (index 0 was returned)"
                            ),
                        },
                    });
                }
            }
        }
        Ok(())
    }

    fn map_read_one(&self, buf: &wgpu::Buffer, pos: u64) -> Result<u32> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("ntm-kernels index readback"),
            size: 4,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buf, pos * 4, &staging, 0, 4);
        self.queue.submit([enc.finish()]);
        let b = self.map_read(&staging, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Runs `f` `reps` times and times each run: with GPU timestamp queries where the adapter
    /// has them (one sample per run, from its first compute pass's start to its last pass's
    /// end; a run's ops share passes as they do outside profiling), else
    /// by wall clock over batches of runs with one submit-and-wait each (up to 5 samples).
    /// Work queued before the call is finished first and not timed.
    pub fn profile(&self, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<Profile> {
        self.sync()?;
        let reps = reps.max(1);
        if !self.adapter().timestamps {
            let batches = reps.min(5);
            let mut samples = Vec::with_capacity(batches);
            for k in 0..batches {
                let count = reps / batches + usize::from(k < reps % batches);
                let t0 = std::time::Instant::now();
                for _ in 0..count {
                    f()?;
                }
                self.sync()?;
                samples.push(t0.elapsed() / count as u32);
            }
            return Ok(Profile {
                samples,
                clock: Clock::WallClock,
            });
        }
        let period_ns = self.queue.get_timestamp_period() as f64;
        let mut samples = Vec::with_capacity(reps);
        let mut done = 0;
        while done < reps {
            let set = self.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("ntm-kernels profile"),
                ty: wgpu::QueryType::Timestamp,
                count: wgpu::QUERY_SET_MAX_QUERIES,
            });
            self.lock().capture = Some(Capture {
                set: set.clone(),
                next: 0,
                labels: Vec::new(),
                overflow: false,
            });
            let mut marks = Vec::new();
            let result = (|| {
                while done < reps {
                    let start = self.lock().capture.as_ref().map_or(0, |c| c.next);
                    f()?;
                    // A run's ops share compute passes, as they do outside profiling; the run
                    // is timed from its first pass's start to its last pass's end.
                    let mut rec = self.lock();
                    rec.pass = None;
                    let (end, overflow) = rec
                        .capture
                        .as_ref()
                        .map_or((0, false), |c| (c.next, c.overflow));
                    drop(rec);
                    if overflow {
                        // This run went partly untimed: drop it and time it again in a fresh set.
                        if start == 0 {
                            return Err(Error::Invalid {
                                op: "profile",
                                message: format!(
                                    "one run records more than {} passes",
                                    wgpu::QUERY_SET_MAX_QUERIES / 2
                                ),
                            });
                        }
                        break;
                    }
                    if end == start {
                        return Err(Error::Invalid {
                            op: "profile",
                            message: "the profiled closure recorded no GPU work".into(),
                        });
                    }
                    marks.push((start, end));
                    done += 1;
                }
                Ok(())
            })();
            let mut rec = self.lock();
            let (used, labels) = rec
                .capture
                .take()
                .map_or((0, Vec::new()), |c| (c.next, c.labels));
            result?;
            if used == 0 {
                continue;
            }
            let bytes = used as u64 * 8;
            let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("ntm-kernels timestamps"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("ntm-kernels timestamps readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let enc = self.encoder(&mut rec);
            enc.resolve_query_set(&set, 0..used, &resolve, 0);
            enc.copy_buffer_to_buffer(&resolve, 0, &staging, 0, bytes);
            self.flush(&mut rec);
            drop(rec);
            let raw = self.map_read(&staging, bytes)?;
            let ts: &[u64] = bytemuck::cast_slice(&raw);
            if std::env::var_os("NTM_PROFILE_PASSES").is_some() {
                // Per-pass breakdown of the first timed run, to find the slow kernel of an op.
                if let Some(&(start, end)) = marks.first() {
                    for q in (start..end).step_by(2) {
                        let ns =
                            ts[q as usize + 1].saturating_sub(ts[q as usize]) as f64 * period_ns;
                        eprintln!(
                            "  pass {:<20} {:>10.1} us",
                            labels[q as usize / 2],
                            ns / 1e3
                        );
                    }
                }
            }
            for (start, end) in marks {
                let ticks = ts[end as usize - 1].saturating_sub(ts[start as usize]);
                samples.push(std::time::Duration::from_nanos(
                    (ticks as f64 * period_ns) as u64,
                ));
            }
        }
        self.collect_errors()?;
        Ok(Profile {
            samples,
            clock: Clock::GpuTimestamps,
        })
    }

    // ----- recording -----------------------------------------------------------------------

    /// The batch's encoder, for a command other than a dispatch: ends the open compute pass.
    fn encoder<'r>(&self, rec: &'r mut Recorder) -> &'r mut wgpu::CommandEncoder {
        rec.pass = None;
        rec.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("ntm-kernels batch"),
                })
        })
    }

    /// Submits the recorded batch, if any.
    fn flush(&self, rec: &mut Recorder) {
        rec.pass = None;
        let Some(mut enc) = rec.encoder.take() else {
            return;
        };
        if !rec.checks.is_empty() {
            // Copy the check flags out so the next batch can reuse the slots.
            let flags = self.pooled_checks_buffer(rec);
            let read = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("ntm-kernels index checks readback"),
                size: CHECK_BYTES,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            enc.copy_buffer_to_buffer(&flags, 0, &read, 0, CHECK_BYTES);
            let checks = std::mem::take(&mut rec.checks);
            rec.submitted_checks.push((read, checks));
        }
        if !rec.params.is_empty() {
            self.queue.write_buffer(&self.arena, 0, &rec.params);
        }
        self.queue.submit([enc.finish()]);
        rec.params.clear();
        rec.slots_used = 0;
        rec.submits += 1;
    }

    /// The buffer of index-check flags (one u32 per slot); kept in the pool under a key no
    /// scratch size can have.
    fn pooled_checks_buffer(&self, rec: &mut Recorder) -> Arc<wgpu::Buffer> {
        const KEY: u64 = u64::MAX;
        let existing = rec.pool.get(&KEY).and_then(|v| v.first()).is_some();
        if !existing {
            let b = self.new_buffer(CHECK_SLOTS, "ntm-kernels index checks");
            rec.pool.insert(KEY, vec![b]);
        }
        // Buffers are reference-counted handles inside wgpu: cloning is cheap.
        Arc::new(rec.pool[&KEY][0].clone())
    }

    /// Reserves an index-check slot for the op about to be recorded; its flag is cleared now.
    pub(crate) fn reserve_check(
        &self,
        rec: &mut Recorder,
        check: IndexCheck,
    ) -> (u32, Arc<wgpu::Buffer>) {
        if rec.checks.len() as u64 >= CHECK_SLOTS {
            self.flush(rec);
        }
        let flags = self.pooled_checks_buffer(rec);
        let slot = rec.checks.len() as u32;
        if slot == 0 {
            let enc = self.encoder(rec);
            enc.clear_buffer(&flags, 0, None);
        }
        rec.checks.push(check);
        (slot, flags)
    }

    /// A scratch buffer of at least `len` elements, contents undefined, returned with
    /// [`Gpu::release`] once the dispatches using it are recorded.
    pub(crate) fn scratch(&self, rec: &mut Recorder, len: u64) -> wgpu::Buffer {
        let bytes = (len.max(1) * 4).next_power_of_two();
        if let Some(b) = rec.pool.get_mut(&bytes).and_then(|v| v.pop()) {
            return b;
        }
        self.new_buffer(bytes / 4, "ntm-kernels scratch")
    }

    /// Returns scratch to the pool. Later dispatches may reuse it: wgpu orders their accesses.
    pub(crate) fn release(&self, rec: &mut Recorder, b: wgpu::Buffer) {
        rec.pool.entry(b.size()).or_default().push(b);
    }

    /// Windows `[lo, hi)` of `rows` rows of `width` floats, each of which fits one storage
    /// binding once its start is aligned down: kernels that gather rows by index run once
    /// per window.
    pub(crate) fn row_windows(&self, rows: u64, width: u64) -> Vec<(u64, u64)> {
        let max_bind = self.limits.max_storage_buffer_binding_size;
        if rows * width * 4 <= max_bind {
            return vec![(0, rows)];
        }
        let align = self.limits.min_storage_buffer_offset_alignment as u64;
        let row_bytes = width * 4;
        // Windows of a whole number of aligned row groups start at aligned offsets and fill
        // the binding exactly; otherwise leave room for aligning each start down.
        let group = align / gcd(align, row_bytes);
        let per = match (max_bind / row_bytes) / group * group {
            0 => (max_bind.saturating_sub(align) / row_bytes).max(1),
            p => p,
        };
        (0..rows.div_ceil(per))
            .map(|k| (k * per, ((k + 1) * per).min(rows)))
            .collect()
    }

    /// The recorder, locked for one op.
    pub(crate) fn recorder(&self) -> MutexGuard<'_, Recorder> {
        self.lock()
    }

    fn kernel(&self, def: &KernelDef) -> Arc<Kernel> {
        let mut cache = self.kernels.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .entry((def.file, def.entry))
            .or_insert_with(|| Arc::new(self.build_kernel(def)))
            .clone()
    }

    fn build_kernel(&self, def: &KernelDef) -> Kernel {
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: NonZeroU64::new(PARAM_BYTES),
            },
            count: None,
        }];
        for (k, &w) in def.writes.iter().enumerate() {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: k as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: !w },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(def.entry),
                entries: &entries,
            });
        let pl = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(def.entry),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(def.file),
                source: wgpu::ShaderSource::Wgsl(def.source.into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(def.entry),
                layout: Some(&pl),
                module: &module,
                entry_point: Some(def.entry),
                compilation_options: Default::default(),
                cache: None,
            });
        Kernel { layout, pipeline }
    }

    /// Records `units` workgroups of `def`, split into as many dispatches as the adapter's
    /// binding and dispatch limits need. Windowed arguments are bound over just the elements
    /// each dispatch touches.
    pub(crate) fn dispatch(
        &self,
        rec: &mut Recorder,
        op: &'static str,
        def: &KernelDef,
        mut params: Params,
        units: u64,
        args: &[Arg<'_>],
    ) -> Result<()> {
        debug_assert_eq!(
            args.len(),
            def.writes.len(),
            "{}: argument count",
            def.entry
        );
        let max_bind = self.limits.max_storage_buffer_binding_size;
        let align = self.limits.min_storage_buffer_offset_alignment as u64;
        let max_dim = self.limits.max_compute_workgroups_per_dimension as u64;
        for a in args {
            if matches!(a.span, Span::Whole) && a.len * 4 > max_bind {
                return Err(Error::TooLarge {
                    op,
                    what: format!(
                        "an argument bound whole by kernel `{}`, in bytes (max_storage_buffer_binding_size)",
                        def.entry
                    ),
                    size: a.len * 4,
                    limit: max_bind,
                });
            }
        }
        let window = |a: &Arg<'_>, u0: u64, u1: u64| -> (u64, u64) {
            match a.span {
                Span::Whole => (0, a.len * 4),
                Span::Window(f) => {
                    let (lo, hi) = f(u0, u1);
                    let off = (lo * 4) / align * align;
                    let end = (hi * 4).clamp(off + 4, a.len * 4);
                    (off, end - off)
                }
            }
        };
        let fits = |u0: u64, u1: u64| args.iter().all(|a| window(a, u0, u1).1 <= max_bind);
        let kernel = self.kernel(def);
        let mut u0 = 0;
        while u0 < units {
            // Largest u1 such that every window fits one binding: grow, then bisect.
            let cap = (units - u0).min(max_dim * max_dim);
            let mut u1 = u0 + cap;
            if !fits(u0, u1) {
                if !fits(u0, u0 + 1) {
                    let worst = args
                        .iter()
                        .map(|a| window(a, u0, u0 + 1).1)
                        .max()
                        .unwrap_or(0);
                    return Err(Error::TooLarge {
                        op,
                        what: format!("one workgroup's window in kernel `{}`, in bytes", def.entry),
                        size: worst,
                        limit: max_bind,
                    });
                }
                let (mut lo, mut hi) = (u0 + 1, u1);
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if fits(u0, mid) {
                        lo = mid
                    } else {
                        hi = mid
                    }
                }
                u1 = lo;
            }
            let groups = u1 - u0;
            let gx = groups.min(max_dim);
            let gy = groups.div_ceil(gx);
            params.unit_base = u0 as u32;
            params.unit_end = u1 as u32;
            params.groups_x = gx as u32;
            let mut binds = Vec::with_capacity(args.len());
            for (k, a) in args.iter().enumerate() {
                let (off, size) = window(a, u0, u1);
                params.base[k] = (off / 4) as u32;
                binds.push((off, size));
            }
            if rec.slots_used >= ARENA_SLOTS {
                self.flush(rec);
            }
            let slot_off = rec.slots_used * self.slot_bytes;
            rec.params.resize(slot_off as usize, 0);
            rec.params.extend_from_slice(bytemuck::bytes_of(&params));
            rec.slots_used += 1;
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &self.arena,
                    offset: slot_off,
                    size: NonZeroU64::new(PARAM_BYTES),
                }),
            }];
            for (k, (a, (off, size))) in args.iter().zip(&binds).enumerate() {
                entries.push(wgpu::BindGroupEntry {
                    binding: k as u32 + 1,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: a.buf,
                        offset: *off,
                        size: NonZeroU64::new(*size),
                    }),
                });
            }
            let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(def.entry),
                layout: &kernel.layout,
                entries: &entries,
            });
            if rec.pass.is_none() {
                let stamp = rec.capture.as_mut().and_then(|c| {
                    if c.next + 2 > wgpu::QUERY_SET_MAX_QUERIES {
                        c.overflow = true;
                        return None;
                    }
                    c.next += 2;
                    c.labels.push(op);
                    Some((c.set.clone(), c.next - 2))
                });
                let enc = self.encoder(rec);
                let pass = enc
                    .begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("ntm-kernels"),
                        timestamp_writes: stamp.as_ref().map(|(set, i)| {
                            wgpu::ComputePassTimestampWrites {
                                query_set: set,
                                beginning_of_pass_write_index: Some(*i),
                                end_of_pass_write_index: Some(*i + 1),
                            }
                        }),
                    })
                    .forget_lifetime();
                rec.pass = Some(pass);
            }
            if let Some(pass) = rec.pass.as_mut() {
                pass.set_pipeline(&kernel.pipeline);
                pass.set_bind_group(0, &bg, &[]);
                pass.dispatch_workgroups(gx as u32, gy as u32, 1);
            }
            rec.dispatches_recorded += 1;
            u0 = u1;
        }
        Ok(())
    }
}

pub(crate) use Recorder as Rec;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

const COPY: KernelDef = KernelDef {
    file: "copy.wgsl",
    source: include_str!("../shaders/copy.wgsl"),
    entry: "copy",
    writes: &[false, true],
};
