//! The host layer, one concern per module:
//!
//! | module | concern |
//! | --- | --- |
//! | `mod.rs` (this file) | the [`Gpu`] context: adapter and device, the limits the kernels need, error scopes |
//! | [`abi`] | the GPU ABI: dispatch parameters, shared constants, the WGSL prelude |
//! | [`pipelines`] | shader composition, bind-group layouts derived from the WGSL, the pipeline cache |
//! | [`tensor`] | tensors and indices: allocation, upload |
//! | [`recorder`] | recording and batching: the open compute pass, the uniform arena, submits, index checks, scratch |
//! | [`dispatch`] | dispatch of one kernel over units, split by binding windows and dispatch limits |
//! | [`readback`] | waiting (with a deadline), downloads, deferred errors |
//! | [`profile`] | timing recorded work with GPU timestamps or the wall clock |
//! | [`user`] | the application's own kernels, recorded in the crate's batches |

pub(crate) mod abi;
pub(crate) mod dispatch;
pub(crate) mod pipelines;
pub(crate) mod profile;
pub(crate) mod readback;
pub(crate) mod recorder;
pub(crate) mod tensor;
pub(crate) mod user;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};
use abi::PARAM_BYTES;
use recorder::{Recorder, ARENA_SLOTS};
use tensor::DType;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A process-wide unique number: ids of Gpus and tensors, and tensor versions.
pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
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
///
/// GPU errors raised by the crate's own work are captured with wgpu error scopes (pushed
/// around everything the crate records or submits) and reported by the next wait as
/// [`Error::Gpu`]; the device's uncaptured-error handler is left to its owner.
pub struct Gpu {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    pub(crate) limits: wgpu::Limits,
    features: wgpu::Features,
    pub(crate) id: u64,
    pub(crate) arena: wgpu::Buffer,
    pub(crate) slot_bytes: u64,
    pub(crate) pipelines: Mutex<pipelines::Cache>,
    pub(crate) rec: Mutex<Recorder>,
    /// GPU errors captured by the crate's error scopes (and, for a device of its own, its
    /// uncaptured-error handler), reported by the next wait.
    pub(crate) gpu_errors: Arc<Mutex<Vec<String>>>,
    /// How long a wait may take before it gives up with [`Error::Timeout`].
    pub(crate) wait_timeout: Mutex<Duration>,
    /// Whether f16 tensors use the packed kernels although the device has `SHADER_F16`.
    f16_packed: AtomicBool,
    /// Whether the streaming kernels sum rows by subgroup shuffles ([`RowSums::Subgroup`]).
    row_sums_subgroup: AtomicBool,
    /// Rows each thread of the elementwise kernels takes ([`Gpu::set_elementwise_rows`]).
    elementwise_rows: AtomicU32,
    /// Rows of those loaded before any is stored ([`Gpu::set_elementwise_row_group`]).
    elementwise_row_group: AtomicU32,
    /// Workgroups the reductions' layouts aim for ([`Gpu::set_reduction_workgroups`]).
    reduction_workgroups: AtomicU32,
    /// Rows the streaming kernels' subgroup loops and the several-head column partials load
    /// before summing any ([`Gpu::set_stream_row_group`]).
    stream_row_group: AtomicU32,
    /// Passes over the memory of the soft read's backward ([`Gpu::set_read_backward_passes`]).
    read_backward_passes: AtomicU32,
    /// V's of a row each thread of the streaming kernels takes, where their rule allows
    /// ([`Gpu::set_stream_vecs_per_thread`]).
    stream_vecs_per_thread: AtomicU32,
    /// Whether rows whose `V` count is not a power of two get a power of two of column threads
    /// ([`ColumnTiles::PowerOfTwo`]).
    tiles_pow2: AtomicBool,
}

/// The most memory rows a thread of the elementwise kernels may take
/// ([`Gpu::set_elementwise_rows`]).
pub const MAX_ELEMENTWISE_ROWS: u32 = 8;
/// The elementwise kernels' rows per thread on CPU adapters (see [`Gpu::set_elementwise_rows`]).
const ELEMENTWISE_ROWS_CPU: u32 = 8;
/// The most rows a head-specialised elementwise kernel loads before storing any
/// ([`Gpu::set_elementwise_row_group`]).
pub const MAX_ELEMENTWISE_ROW_GROUP: u32 = 4;

/// The most rows a thread of the streaming kernels' subgroup row sums, or of the several-head
/// column partials, loads before summing any ([`Gpu::set_stream_row_group`]).
pub const MAX_STREAM_ROW_GROUP: u32 = 4;

/// The most passes over the memory the soft read's backward may take
/// ([`Gpu::set_read_backward_passes`]).
pub const MAX_READ_BACKWARD_PASSES: u32 = 2;

/// The most V's (4 columns, or 1 where W is not a multiple of 4) of a memory row each thread
/// of the streaming kernels may take ([`Gpu::set_stream_vecs_per_thread`]).
pub const MAX_STREAM_VECS_PER_THREAD: u32 = 2;

/// The most workgroups the reductions' layouts may aim for
/// ([`Gpu::set_reduction_workgroups`]).
pub const MAX_REDUCTION_WORKGROUPS: u32 = 1 << 20;
/// The reductions' workgroup target on GPUs (see [`Gpu::set_reduction_workgroups`]).
const REDUCTION_WORKGROUPS_GPU: u32 = 4096;

/// Stores `count` in `setting` if it is 1 to `max`; else an [`Error::Invalid`] of `op` saying
/// what was counted, the range and the count given, the setting unchanged.
fn set_count(
    setting: &AtomicU32,
    op: &'static str,
    what: &str,
    count: u32,
    max: u32,
) -> Result<()> {
    if !(1..=max).contains(&count) {
        return Err(Error::Invalid {
            op,
            message: format!("{what} must be 1 to {max}, not {count}"),
        });
    }
    setting.store(count, Ordering::Relaxed);
    Ok(())
}

/// How the streaming kernels (content addressing's scores and its backward, the soft read's
/// weight gradient) sum each memory row over the threads that hold its columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowSums {
    /// Subgroup shuffles (devices with `SUBGROUP`, for rows whose column threads fit the
    /// smallest subgroup): no workgroup memory and no barrier per chunk of rows. Opt-in: not
    /// yet measured on a GPU (on lavapipe it made content addressing's forward 0.76x as fast).
    Subgroup,
    /// Workgroup memory and barriers, a fixed-order sum per row: every backend, GL included.
    /// The default.
    Workgroup,
}

/// How many column threads the column reductions (the soft read's forward, the gradients'
/// column sums) and the streaming kernels' workgroup row sums give a memory row of `V`'s (a
/// `V`: 4 columns, or 1 where W is not a multiple of 4), where that count is not a power of
/// two (powers of two have one layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnTiles {
    /// Exactly the row's `V`'s (halved, rounded up, with two `V`'s per streaming thread): no
    /// idle thread. Their workgroup-memory slots are not swizzled, so on a GPU the streaming
    /// row sums may meet 3- to 6-way bank conflicts at some even counts (12, 24 and 48 `V`'s
    /// are the worst). The default: on lavapipe 1.04-1.62x as fast as powers of two on
    /// content addressing and the backward passes, and the soft read forward 1.06-1.14x.
    Exact,
    /// The narrowest power of two holding them: idle threads (W = 20: 3 of every 8), slots
    /// swizzled against bank conflicts. The layout before `Exact`, kept to measure the two
    /// against each other on a GPU (`NTM_BENCH_TILES=pow2`).
    PowerOfTwo,
}

/// Which kernels serve f16 tensors on a [`Gpu`] (DESIGN.md section 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum F16Path {
    /// WGSL `f16` (the device has `SHADER_F16`): kernels load and store f16 values.
    Native,
    /// Two halves per `u32` (`pack2x16float`/`unpack2x16float`, core WGSL: every backend,
    /// GL included); a thread that stores owns both halves of each word it writes.
    Packed,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.info.name)
            .finish()
    }
}

/// The default for [`Gpu::set_wait_timeout`].
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(600);

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
        // f16 arithmetic types in WGSL (DESIGN.md section 7) and subgroup operations, where
        // the adapter has them.
        let features = adapter.features()
            & (wgpu::Features::TIMESTAMP_QUERY
                | wgpu::Features::SHADER_F16
                | wgpu::Features::SUBGROUP);
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
        let gpu = Self::from_wgpu(device, queue)?;
        // The device is ours: anything that escapes the error scopes is still reported.
        let sink = gpu.gpu_errors.clone();
        gpu.device
            .on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                if let Ok(mut v) = sink.lock() {
                    v.push(e.to_string());
                }
            }));
        Ok(gpu)
    }

    /// Wraps a device and queue that the host application already has, so that this crate's
    /// tensors live beside the application's own buffers. Limits and features are read from the
    /// device; request the adapter's limits when creating it to allow large tensors.
    ///
    /// The application's uncaptured-error handler is left in place: the crate captures the
    /// errors of its own work with error scopes and reports them from its next wait.
    /// A device whose limits are below what the crate's kernels need (storage buffers per
    /// stage, workgroup memory and size, uniform binding size) is refused with
    /// [`Error::Limit`] naming the limit.
    pub fn from_wgpu(device: wgpu::Device, queue: wgpu::Queue) -> Result<Gpu> {
        let limits = device.limits();
        check_limits(&limits)?;
        let info = device.adapter_info();
        let cpu = info.device_type == wgpu::DeviceType::Cpu;
        let elementwise_rows = if cpu { ELEMENTWISE_ROWS_CPU } else { 1 };
        let elementwise_row_group = if cpu { 1 } else { MAX_ELEMENTWISE_ROW_GROUP };
        let stream_row_group = if cpu { 1 } else { MAX_STREAM_ROW_GROUP };
        let read_backward_passes = if cpu { MAX_READ_BACKWARD_PASSES } else { 1 };
        let reduction_workgroups = if cpu {
            // A few workgroups per core: each one more costs a barrier tree and a partial.
            let cores = std::thread::available_parallelism().map_or(4, |c| c.get()) as u32;
            16 * cores
        } else {
            REDUCTION_WORKGROUPS_GPU
        };
        let features = device.features();
        let slot_bytes =
            PARAM_BYTES.next_multiple_of(limits.min_uniform_buffer_offset_alignment as u64);
        let scope = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("ntm-kernels params arena"),
            size: slot_bytes * ARENA_SLOTS,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Device(format!("the parameter arena: {e}")));
        }
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            features,
            id: next_id(),
            arena,
            slot_bytes,
            pipelines: Mutex::default(),
            rec: Mutex::new(Recorder::default()),
            gpu_errors: Arc::default(),
            wait_timeout: Mutex::new(DEFAULT_WAIT_TIMEOUT),
            f16_packed: AtomicBool::new(false),
            row_sums_subgroup: AtomicBool::new(false),
            elementwise_rows: AtomicU32::new(elementwise_rows),
            elementwise_row_group: AtomicU32::new(elementwise_row_group),
            reduction_workgroups: AtomicU32::new(reduction_workgroups),
            stream_row_group: AtomicU32::new(stream_row_group),
            read_backward_passes: AtomicU32::new(read_backward_passes),
            stream_vecs_per_thread: AtomicU32::new(MAX_STREAM_VECS_PER_THREAD),
            tiles_pow2: AtomicBool::new(false),
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
            is_cpu: self.is_cpu(),
        }
    }

    /// Whether the adapter is a CPU (lavapipe, llvmpipe, SwiftShader): some kernel shapes
    /// differ there. Without the allocations of [`Gpu::adapter`], for the ops' hot paths.
    pub(crate) fn is_cpu(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// The underlying wgpu device, for applications that share it.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The underlying wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// How long a wait ([`Gpu::sync`], downloads) may take before it returns
    /// [`Error::Timeout`]; the default is [`DEFAULT_WAIT_TIMEOUT`]. The queued work is not
    /// cancelled: a later wait picks it up again.
    pub fn set_wait_timeout(&self, timeout: Duration) {
        *self.wait_timeout.lock().unwrap_or_else(|p| p.into_inner()) = timeout;
    }

    /// Whether the streaming kernels sum rows of `lanes` column threads by subgroup shuffles:
    /// [`RowSums::Subgroup`] is chosen and the smallest subgroup holds `lanes` consecutive
    /// invocations (a power of two, from a multiple of it: subgroups are aligned runs of a
    /// one-dimensional workgroup's invocations, a power of two long).
    pub(crate) fn subgroup_holds(&self, lanes: u64) -> bool {
        self.row_sums() == RowSums::Subgroup && lanes <= self.info.subgroup_min_size as u64
    }

    /// How the streaming kernels sum rows (see [`RowSums`]).
    pub fn row_sums(&self) -> RowSums {
        if self.row_sums_subgroup.load(Ordering::Relaxed) {
            RowSums::Subgroup
        } else {
            RowSums::Workgroup
        }
    }

    /// Chooses how the streaming kernels sum rows from now on (to compare or test both on one
    /// adapter): [`RowSums::Workgroup`] works on every device; [`RowSums::Subgroup`] needs
    /// `SUBGROUP` and is an [`Error::Unsupported`] without it. Results agree within the
    /// tests' tolerances, not bit for bit (the sums' orders differ); each is the same bits
    /// every run.
    pub fn set_row_sums(&self, sums: RowSums) -> Result<()> {
        if sums == RowSums::Subgroup && !self.features.contains(wgpu::Features::SUBGROUP) {
            return Err(Error::Unsupported {
                op: "set_row_sums",
                message: "subgroup row sums need the SUBGROUP feature, which this device lacks"
                    .into(),
            });
        }
        self.row_sums_subgroup
            .store(sums == RowSums::Subgroup, Ordering::Relaxed);
        Ok(())
    }

    /// Rows of the memory each thread of the elementwise kernels takes (soft write's forward
    /// and the soft ops' `dM` passes); see [`Gpu::set_elementwise_rows`].
    pub fn elementwise_rows(&self) -> u32 {
        self.elementwise_rows.load(Ordering::Relaxed)
    }

    /// Chooses how many memory rows (1 to [`MAX_ELEMENTWISE_ROWS`]) each thread of the
    /// elementwise kernels (soft write's forward, the soft ops' `dM` passes) takes from now on,
    /// to compare or test them on one adapter; another count is an [`Error::Invalid`]. With
    /// more than 1, shapes of at most 4 heads take kernels specialised for their head count
    /// that load a column's vectors (erase and add, `dr`, keys) once for all of a thread's
    /// rows instead of once per row. The default is 1 on GPUs, the kernels and geometry
    /// measured on an H200 (an earlier 4-row form of these kernels ran slower there: to be
    /// measured again with this one), and 8 on CPU adapters (lavapipe: the soft write forward
    /// 1.7x as fast as with 1). Each element is computed by the same operations whatever the
    /// count (the tests check the bits agree). How many of a thread's rows those kernels load
    /// before storing any is [`Gpu::set_elementwise_row_group`].
    pub fn set_elementwise_rows(&self, rows: u32) -> Result<()> {
        let what = "rows per thread";
        set_count(
            &self.elementwise_rows,
            "set_elementwise_rows",
            what,
            rows,
            MAX_ELEMENTWISE_ROWS,
        )
    }

    /// Rows of a thread's [`Gpu::elementwise_rows`] that the head-specialised elementwise
    /// kernels load before they store any; see [`Gpu::set_elementwise_row_group`].
    pub fn elementwise_row_group(&self) -> u32 {
        self.elementwise_row_group.load(Ordering::Relaxed)
    }

    /// Chooses how many of a thread's rows (1 to [`MAX_ELEMENTWISE_ROW_GROUP`]) the
    /// head-specialised elementwise kernels (those [`Gpu::set_elementwise_rows`] above 1 runs)
    /// load before storing any, from now on; another count is an [`Error::Invalid`]. Their
    /// stores may alias their later loads (in place), so no compiler moves a later row's load
    /// above an earlier row's store: row by row, a thread has one load in flight. The default
    /// is 4 on GPUs, the copy kernel's loads in flight per thread (not yet measured on a GPU),
    /// and 1 on CPU adapters, whose cores reorder loads themselves: there four rows held for
    /// four heads made lavapipe's soft write forward 1.4x slower (B = 1, H = 4, N = 16,384,
    /// W = 20). Each element is computed by the same operations whatever the group (the tests
    /// check the bits agree).
    pub fn set_elementwise_row_group(&self, rows: u32) -> Result<()> {
        let (op, what) = ("set_elementwise_row_group", "rows loaded before storing");
        set_count(
            &self.elementwise_row_group,
            op,
            what,
            rows,
            MAX_ELEMENTWISE_ROW_GROUP,
        )
    }

    /// Rows of the memory each thread of the streaming kernels' subgroup row sums, or of the
    /// several-head column partials, loads before summing any; see
    /// [`Gpu::set_stream_row_group`].
    pub fn stream_row_group(&self) -> u32 {
        self.stream_row_group.load(Ordering::Relaxed)
    }

    /// Chooses how many rows (1 to [`MAX_STREAM_ROW_GROUP`]) a thread of the streaming kernels
    /// (content addressing's forward and backward, the soft read's and the soft write's heads'
    /// gradients) loads before it sums any, from now on, where rows are summed by subgroup
    /// shuffles ([`RowSums::Subgroup`]); another count is an [`Error::Invalid`]. A row's sum
    /// is a butterfly of shuffles that waits on the row's load, so row by row a thread has one
    /// load in flight; with 4 it has four (the copy kernel's and the soft read's column
    /// sums'). The default is 4 on GPUs, not yet measured on one (`NTM_BENCH_STREAM_GROUP`),
    /// and 1 on CPU adapters, whose cores reorder loads themselves: on lavapipe 4 and 1 were
    /// within the machine's run-to-run scatter (W = 32, its subgroup rows; H = 1 and 4). Rows are
    /// finished in the same order whatever the group, so results keep their bits (the tests
    /// check them). Workgroup row sums ([`RowSums::Workgroup`]) stage two rows per thread
    /// between barriers whatever this count. The same count applies to the column partials of
    /// several heads (the soft read's forward at H > 1; one head always loads four, a form
    /// that with 16 rows per row lane made the H200's one-head read forward 1.4-1.7x faster):
    /// on lavapipe 4 rows there were 0.92-1.03x as fast as 1 (H = 2 and 4; three alternating
    /// runs).
    pub fn set_stream_row_group(&self, rows: u32) -> Result<()> {
        let (op, what) = ("set_stream_row_group", "rows loaded before summing");
        set_count(&self.stream_row_group, op, what, rows, MAX_STREAM_ROW_GROUP)
    }

    /// Passes over the memory that the soft read's backward takes; see
    /// [`Gpu::set_read_backward_passes`].
    pub fn read_backward_passes(&self) -> u32 {
        self.read_backward_passes.load(Ordering::Relaxed)
    }

    /// Chooses how the soft read's backward computes the memory gradient from now on: with 1
    /// pass, the streaming pass that reads the memory for the weights' gradient (`dr . M_i`)
    /// also stores `dM = sum_h w_h dr_h` (shapes whose rows stream and whose heads fit one
    /// group of 4, with a width that is a multiple of 4 where the gradient is packed f16;
    /// others take 2 passes whatever this count); with 2, an elementwise pass stores it after
    /// that pass. Another count is an [`Error::Invalid`]. The bytes are the
    /// same (the memory read once, its gradient written once); one pass saves a dispatch and
    /// issues the stores beside the loads. The default is 1 on GPUs, not yet measured on one
    /// (`NTM_BENCH_READ_PASSES`; the H200 took 176 µs for the weights' pass and 161 µs for the
    /// `dM` pass at 256 MiB), and 2 on CPU adapters: on lavapipe the one pass took 19.4 ms
    /// where the two took 13.9 + 2.1 (B = 1, N = 65,536, W = 64). Results agree within the
    /// tests' tolerances.
    pub fn set_read_backward_passes(&self, passes: u32) -> Result<()> {
        let (op, what) = ("set_read_backward_passes", "passes");
        set_count(
            &self.read_backward_passes,
            op,
            what,
            passes,
            MAX_READ_BACKWARD_PASSES,
        )
    }

    /// V's of a memory row each thread of the streaming kernels takes where rows are summed in
    /// workgroup memory; see [`Gpu::set_stream_vecs_per_thread`].
    pub fn stream_vecs_per_thread(&self) -> u32 {
        self.stream_vecs_per_thread.load(Ordering::Relaxed)
    }

    /// Chooses how many V's of a memory row (1 to [`MAX_STREAM_VECS_PER_THREAD`]; a V is 4
    /// columns, or 1 where W is not a multiple of 4) each thread of the streaming kernels takes
    /// from now on, where rows are summed in workgroup memory ([`RowSums::Workgroup`]: subgroup
    /// butterflies take one); another count is an [`Error::Invalid`]. With 2, a thread takes
    /// V's `c` and `c + TW` of a row (`TW` half the row's V's, rounded up) and stages one share
    /// of the row's sums for both: half the workgroup-memory stores and row-sum reads per row,
    /// twice the loads in flight between barriers. It applies to content addressing's scores
    /// and the soft read's weight gradient at rows of at least 2 V's, to content addressing's
    /// backward at an even count of at least 4, and to the soft write's heads' gradients at
    /// one head and an even count (where one V per lane measured faster on lavapipe, the other
    /// rows keep one). The default is 2 on every adapter: on lavapipe content addressing ran
    /// 1.32-1.36x as fast forward and 1.42-1.44x backward at W = 64 and 128, the soft read's
    /// backward 1.25-1.31x; not yet measured on a GPU (`NTM_BENCH_STREAM_VECS`). The two
    /// forms sum a row's shares in different orders, so results at 1 and 2 agree within the
    /// tests' tolerances, not bit for bit; each gives the same bits every run.
    pub fn set_stream_vecs_per_thread(&self, vecs: u32) -> Result<()> {
        let (op, what) = ("set_stream_vecs_per_thread", "V's per thread");
        set_count(
            &self.stream_vecs_per_thread,
            op,
            what,
            vecs,
            MAX_STREAM_VECS_PER_THREAD,
        )
    }

    /// How the column reductions and the streaming kernels' workgroup row sums tile a row's
    /// `V`'s; see [`Gpu::set_column_tiles`].
    pub fn column_tiles(&self) -> ColumnTiles {
        if self.tiles_pow2.load(Ordering::Relaxed) {
            ColumnTiles::PowerOfTwo
        } else {
            ColumnTiles::Exact
        }
    }

    /// Chooses how the column reductions (the soft read's forward, the gradients' column
    /// sums) and the streaming kernels' workgroup row sums tile a row's `V`'s from now on,
    /// where their count is not a power of two: exactly ([`ColumnTiles::Exact`], the default
    /// on every adapter) or by the narrowest power of two ([`ColumnTiles::PowerOfTwo`]), to
    /// measure both on one device; subgroup row sums always take a power of two. The
    /// kernels are the same; the two tilings sum a row's shares (and the column partials'
    /// row lanes) in different orders, so results agree within the tests' tolerances, not bit
    /// for bit; each gives the same bits every run.
    pub fn set_column_tiles(&self, tiles: ColumnTiles) {
        self.tiles_pow2
            .store(tiles == ColumnTiles::PowerOfTwo, Ordering::Relaxed);
    }

    /// The column threads a row of `cols` `V`'s takes under [`Gpu::column_tiles`].
    pub(crate) fn row_tile(&self, cols: u64) -> u64 {
        match self.column_tiles() {
            ColumnTiles::Exact => cols,
            ColumnTiles::PowerOfTwo => cols.next_power_of_two(),
        }
    }

    /// How many workgroups the reductions spread over (at least, where their rows allow),
    /// to keep the device busy; see [`Gpu::set_reduction_workgroups`].
    pub fn reduction_workgroups(&self) -> u32 {
        self.reduction_workgroups.load(Ordering::Relaxed)
    }

    /// Chooses how many workgroups (1 to [`MAX_REDUCTION_WORKGROUPS`]) the reductions over
    /// the memory's slots aim for from now on: the soft read and the column sums of the
    /// gradients (row blocks of one partial each, then a fixed-order combine), and the
    /// streaming row kernels (content addressing, the soft read's and write's backward). Each
    /// takes the longest blocks of rows (up to its maximum) that still give this many
    /// workgroups: fewer workgroups mean longer-lived threads and fewer partials to combine,
    /// more keep more of a large device busy. Another count is an [`Error::Invalid`]. The
    /// default is 4,096 on GPUs (the count measured on an H200) and 16 per core on CPU
    /// adapters, which run a few workgroups at a time per core (where a column reduction's row
    /// lanes take rows a multiple of 4 KiB apart, as the soft read's of f32 rows of W = 64, its
    /// blocks also hold at most 32 rows per row lane: more workgroups than the target there).
    /// The blocks set the order of
    /// the sums, so results at two counts agree within the tests' tolerances, not bit for
    /// bit; each count gives the same bits every run.
    pub fn set_reduction_workgroups(&self, workgroups: u32) -> Result<()> {
        set_count(
            &self.reduction_workgroups,
            "set_reduction_workgroups",
            "workgroups",
            workgroups,
            MAX_REDUCTION_WORKGROUPS,
        )
    }

    /// The most rows of `row_bytes` each, as a power of two (at least 1), that one storage
    /// binding holds from any start (aligned down): a block of a reduction's rows longer than
    /// this could not be bound.
    pub(crate) fn rows_per_binding(&self, row_bytes: u64) -> u64 {
        let max_bind = self.limits.max_storage_buffer_binding_size;
        let align = self.limits.min_storage_buffer_offset_alignment as u64;
        let rows = max_bind.saturating_sub(align) / row_bytes.max(1);
        if rows == 0 {
            1
        } else {
            1 << rows.ilog2()
        }
    }

    /// Whether the device has WGSL `f16` (`SHADER_F16`).
    pub(crate) fn has_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    /// The kernels f16 tensors use: [`F16Path::Native`] where the device has `SHADER_F16`
    /// (unless [`Gpu::set_f16_path`] chose otherwise), else [`F16Path::Packed`].
    pub fn f16_path(&self) -> F16Path {
        if self.has_f16() && !self.f16_packed.load(Ordering::Relaxed) {
            F16Path::Native
        } else {
            F16Path::Packed
        }
    }

    /// Chooses the kernels f16 tensors use from now on: [`F16Path::Packed`] works on every
    /// device (to compare or test both paths on one adapter); [`F16Path::Native`] needs
    /// `SHADER_F16` and is an [`Error::Unsupported`] without it. Tensors are the same bytes on
    /// both paths.
    pub fn set_f16_path(&self, path: F16Path) -> Result<()> {
        if path == F16Path::Native && !self.has_f16() {
            return Err(Error::Unsupported {
                op: "set_f16_path",
                message: "the native f16 path needs the SHADER_F16 feature, which this device \
                          lacks"
                    .into(),
            });
        }
        self.f16_packed
            .store(path == F16Path::Packed, Ordering::Relaxed);
        Ok(())
    }

    /// The storage form kernels use for a memory-shaped tensor of `dtype`.
    pub(crate) fn form(&self, dtype: DType) -> pipelines::Form {
        match (dtype, self.f16_path()) {
            (DType::F32, _) => pipelines::Form::F32,
            (DType::F16, F16Path::Native) => pipelines::Form::F16,
            (DType::F16, F16Path::Packed) => pipelines::Form::Packed,
        }
    }

    /// Whether any of `ts` is stored packed (f16 on the packed path): elementwise kernels
    /// then take whole words where rows may start mid-word.
    pub(crate) fn any_packed(&self, ts: &[&tensor::Tensor]) -> bool {
        ts.iter()
            .any(|t| self.form(t.dtype) == pipelines::Form::Packed)
    }

    /// Runs `f` inside error scopes for validation, out-of-memory and internal errors; what
    /// they capture is kept for the next wait.
    pub(crate) fn scoped<T>(&self, f: impl FnOnce() -> T) -> T {
        let scopes = ErrorScopes::push(self);
        let out = f();
        scopes.pop(self);
        out
    }
}

/// Error scopes of the three filters, popped in reverse order.
pub(crate) struct ErrorScopes(Vec<wgpu::ErrorScopeGuard>);

impl ErrorScopes {
    pub(crate) fn push(gpu: &Gpu) -> Self {
        ErrorScopes(
            [
                wgpu::ErrorFilter::Validation,
                wgpu::ErrorFilter::OutOfMemory,
                wgpu::ErrorFilter::Internal,
            ]
            .into_iter()
            .map(|f| gpu.device.push_error_scope(f))
            .collect(),
        )
    }

    /// Pops the scopes and keeps what they caught for the next wait.
    pub(crate) fn pop(mut self, gpu: &Gpu) {
        let caught = self.take();
        if !caught.is_empty() {
            gpu.gpu_errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(caught);
        }
    }

    fn take(&mut self) -> Vec<String> {
        let mut caught = Vec::new();
        while let Some(s) = self.0.pop() {
            if let Some(e) = pollster::block_on(s.pop()) {
                caught.push(e.to_string());
            }
        }
        caught
    }
}

/// Checks the limits the crate's kernels need (read from their WGSL) against the device's.
fn check_limits(l: &wgpu::Limits) -> Result<()> {
    let needs = crate::runtime::pipelines::crate_needs().map_err(|e| Error::Invalid {
        op: "from_wgpu",
        message: format!("a crate shader does not compile: {e}"),
    })?;
    let checks: [(&'static str, u64, u64); 6] = [
        (
            "max_storage_buffers_per_shader_stage",
            needs.storage_bindings as u64,
            l.max_storage_buffers_per_shader_stage as u64,
        ),
        (
            "max_bindings_per_bind_group",
            needs.storage_bindings as u64 + 1,
            l.max_bindings_per_bind_group as u64,
        ),
        (
            "max_compute_workgroup_storage_size",
            needs.workgroup_bytes,
            l.max_compute_workgroup_storage_size as u64,
        ),
        (
            "max_compute_invocations_per_workgroup",
            needs.invocations as u64,
            l.max_compute_invocations_per_workgroup as u64,
        ),
        (
            "max_compute_workgroup_size_x",
            needs.workgroup_size_x as u64,
            l.max_compute_workgroup_size_x as u64,
        ),
        (
            "max_uniform_buffer_binding_size",
            PARAM_BYTES,
            l.max_uniform_buffer_binding_size,
        ),
    ];
    for (limit, needed, available) in checks {
        if available < needed {
            return Err(Error::Limit {
                limit,
                needed,
                available,
            });
        }
    }
    Ok(())
}
