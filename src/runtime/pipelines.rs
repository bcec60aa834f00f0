//! Shaders and their pipelines: a shader file is composed behind the prelude of
//! [`crate::runtime::abi`] and the primitive shaders it imports; each entry point's bind-group
//! layout is derived from the shader itself (naga reflection: which storage bindings the entry
//! point uses and whether it writes them), so no hand-kept table can drift from the WGSL.
//! Pipelines are built once per [`Gpu`] and cached by (file, entry point).

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::{Arc, OnceLock};

use wgpu::naga;

use super::abi::{prelude, HG, MAX_ARGS, PARAM_BYTES};
use super::tensor::DType;
use super::Gpu;
use crate::error::{Error, Result};

/// Whether a pipeline's workgroup memory is zeroed before its workgroups run (WebGPU's
/// default, which wgpu implements by a zeroing prologue where the driver cannot: on GL one
/// invocation per workgroup stores every element, measured on llvmpipe to make location
/// addressing 21-34x and sampling 5-6x slower than the same kernels without it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WorkgroupMemory {
    /// Zeroed: kernels the crate did not write (`Gpu::kernel`) keep WebGPU's guarantee.
    Zeroed,
    /// Left as it is: the crate's kernels write every workgroup slot before they read it
    /// (each reduction tree over slots all of its threads stored, each staged tile whole,
    /// zeros included), so the zeroing is never observed.
    WrittenBeforeRead,
}

/// One `.wgsl` file of the crate and the primitive shaders it uses.
pub(crate) struct Shader {
    /// File name, for errors and the pipeline cache.
    pub name: &'static str,
    /// The file's WGSL.
    pub source: &'static str,
    /// Shaders composed before this one (after the prelude), in order.
    pub imports: &'static [&'static Shader],
}

/// How a kernel specialisation stores the elements of one memory-shaped binding (DESIGN.md
/// section 7): f32, f16 in WGSL (adapters with `SHADER_F16`), or two f16 packed per `u32`
/// (`pack2x16float`, everywhere else).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Form {
    F32,
    F16,
    Packed,
}

impl Form {
    /// The tensor dtype this form stores.
    pub fn dtype(self) -> DType {
        match self {
            Form::F32 => DType::F32,
            Form::F16 | Form::Packed => DType::F16,
        }
    }
}

/// The memory-shaped binding slots of a kernel, each with its own storage form: `M` (the
/// memory, and outputs that take its dtype), `G` (the gradient after a write, `dM'`), `D` (a
/// memory gradient the kernel stores or accumulates into). A shader declares such a binding
/// with the placeholder element type `MemV`/`MemS`, `GradV`/`GradS` or `DMemV`/`DMemS`
/// (`V` or scalar `f32` values), and reads and writes it only through the accessors the
/// composer generates: `NAME_ld(e)`, `NAME_st(e, v)` and `NAME_st2(e, v0, v1, ok1)`.
pub(crate) const SLOTS: [&str; 3] = ["Mem", "Grad", "DMem"];

/// A kernel's build-time specialisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Spec {
    /// `V` is `f32` (1), `vec2<f32>` (2) or `vec4<f32>` (4).
    pub lanes: u32,
    /// `ACC`: kernels that write a gradient of the memory add it to the output.
    pub acc: bool,
    /// The storage form of each memory-shaped slot (`M`, `G`, `D`).
    pub forms: [Form; 3],
    /// `SUB_ROWS`: the streaming kernels' rows lie within one subgroup each, so their sums
    /// over a row's column lanes are subgroup shuffles (adapters with `SUBGROUP`), not
    /// workgroup memory and barriers.
    pub sub_rows: bool,
    /// `heads()`: the head count of a kernel specialised for one (1..=HG: one group of heads
    /// holds them all), so that its per-head loops and branches fold at build time; 0: any
    /// count, read from `Params.dims.y`.
    pub heads: u32,
    /// `EW_ROWS`: memory rows (or, with `WORDS`, words) each thread of an elementwise kernel
    /// takes (`Gpu::elementwise_rows`; 1 for other kernels).
    pub ew_rows: u32,
    /// `ROW_GROUP`: rows a head-specialised elementwise kernel loads before it stores any
    /// (`Gpu::elementwise_row_group`), or a streaming kernel's subgroup loop before it sums
    /// any (`Gpu::stream_row_group`); 1 elsewhere.
    pub row_group: u32,
}

impl Spec {
    /// `WORDS`: stores of a packed slot with scalar columns (`LANES == 1`) must own whole
    /// words, so kernels switch to a word-owning thread map.
    pub fn words(&self) -> bool {
        self.lanes == 1 && self.forms.contains(&Form::Packed)
    }
}

/// One compute entry point of a crate shader, with its specialisation.
#[derive(Clone, Copy)]
pub(crate) struct KernelDef {
    pub shader: &'static Shader,
    pub entry: &'static str,
    pub spec: Spec,
}

impl KernelDef {
    /// The entry point of `shader`, scalar (`V = f32`), f32 memory, storing.
    pub const fn new(shader: &'static Shader, entry: &'static str) -> Self {
        KernelDef {
            shader,
            entry,
            spec: Spec {
                lanes: 1,
                acc: false,
                forms: [Form::F32; 3],
                sub_rows: false,
                heads: 0,
                ew_rows: 1,
                row_group: 1,
            },
        }
    }
    /// The same entry point specialised for `lanes` (1, 2 or 4) f32s per `V`.
    pub const fn lanes(mut self, lanes: u32) -> Self {
        self.spec.lanes = lanes;
        self
    }
    /// The same entry point specialised to accumulate (`ACC = acc`).
    pub const fn acc(mut self, acc: bool) -> Self {
        self.spec.acc = acc;
        self
    }
    /// The same entry point with rows summed by subgroup shuffles (`SUB_ROWS = sub_rows`).
    pub const fn sub_rows(mut self, sub_rows: bool) -> Self {
        self.spec.sub_rows = sub_rows;
        self
    }
    /// The same entry point specialised for exactly `heads` heads (0: any).
    pub const fn heads(mut self, heads: u32) -> Self {
        self.spec.heads = heads;
        self
    }
    /// The same entry point specialised for `heads` heads where one group of HG heads holds
    /// them all (`heads <= HG`), else for any count.
    pub const fn one_group_heads(self, heads: usize) -> Self {
        self.heads(if heads <= HG as usize {
            heads as u32
        } else {
            0
        })
    }
    /// The same entry point with `ew_rows` rows per thread (elementwise kernels).
    pub const fn ew_rows(mut self, ew_rows: u32) -> Self {
        self.spec.ew_rows = ew_rows;
        self
    }
    /// The same entry point loading `row_group` rows before storing any (head-specialised
    /// elementwise kernels) or summing any (streaming kernels with subgroup row sums, and the
    /// column partials of several heads).
    pub const fn row_group(mut self, row_group: u32) -> Self {
        self.spec.row_group = row_group;
        self
    }
    /// The same entry point with the storage forms of slots `M`, `G` and `D`.
    pub const fn forms(mut self, m: Form, g: Form, d: Form) -> Self {
        self.spec.forms = [m, g, d];
        self
    }
}

/// What an entry point binds and needs, read from its WGSL.
#[derive(Clone, Debug)]
pub(crate) struct Reflection {
    /// For each storage binding 1..=k, in order: whether the entry point writes it.
    pub writes: Vec<bool>,
    /// For each storage binding 1..=k, in order: the variable's name.
    pub names: Vec<String>,
    /// Bytes of workgroup memory the entry point uses.
    pub workgroup_bytes: u64,
    /// `@workgroup_size`.
    pub workgroup_size: [u32; 3],
}

/// A built pipeline with the layout derived for it.
pub(crate) struct Pipeline {
    /// For each storage binding 1..=k: the dtype of the tensor it takes (F16 for memory-shaped
    /// slots specialised to f16 or packed; F32, or 4-byte words, otherwise).
    pub dtypes: Vec<DType>,
    /// Whether the entry point stores into a memory-shaped slot (with `WORDS`, such stores
    /// need word-owning thread maps).
    pub stores_slot: bool,
    pub layout: wgpu::BindGroupLayout,
    pub pipeline: wgpu::ComputePipeline,
    pub reflection: Reflection,
}

/// The whole WGSL of a crate shader specialised by `spec`: prelude, imports (each once),
/// then the file, with its memory-shaped bindings given their storage types and accessors.
/// Also returns those bindings' variable names and forms.
pub(crate) fn compose(shader: &Shader, spec: Spec) -> (String, Vec<(String, Form)>) {
    fn add(s: &Shader, seen: &mut Vec<&'static str>, out: &mut String) {
        for &i in s.imports {
            if !seen.contains(&i.name) {
                seen.push(i.name);
                add(i, seen, out);
                out.push_str(&format!("// ---- {} ----\n{}\n", i.name, i.source));
            }
        }
    }
    let mut body = String::new();
    add(shader, &mut Vec::new(), &mut body);
    body.push_str(&format!("// ---- {} ----\n{}", shader.name, shader.source));
    let mut slots = Vec::new();
    let body = memory_bindings(&body, spec, &mut slots);
    let mut out = String::new();
    // Must precede every declaration. (Subgroup builtins need no directive in this naga:
    // they are checked against the device's SUBGROUP capability.)
    if spec.forms.contains(&Form::F16) {
        out.push_str("enable f16;\n");
    }
    out.push_str(&prelude(spec));
    out.push_str(&body);
    (out, slots)
}

/// Rewrites each declaration `var<storage, ACCESS> NAME: array<SlotK>;` (slot `Mem`, `Grad`
/// or `DMem`, kind `V` or `S`) into the slot's storage type and appends its accessors:
///   `NAME_ld(e) -> T`: element `e` (a `V` for kind V, an `f32` for kind S), read as f32;
///   `NAME_st(e, v)`: stores element `e`, rounded once to the slot's type. For a packed slot
///     of scalars this is a read-modify-write of the word holding it: only kernels in which
///     no other invocation stores that word (the `WORDS` thread maps) may use it;
///   `NAME_st2(e, v0, v1, ok1)`: stores elements `e` (even) and `e + 1` (only if `ok1`; the
///     other half is kept): one whole word of a packed slot, so a thread owns what it stores.
fn memory_bindings(src: &str, spec: Spec, slots: &mut Vec<(String, Form)>) -> String {
    let mut out = String::with_capacity(src.len() + 4096);
    for line in src.lines() {
        let found = SLOTS.iter().enumerate().find_map(|(k, slot)| {
            ["V", "S"].into_iter().find_map(|kind| {
                let pat = format!("array<{slot}{kind}>");
                line.find(&pat).map(|at| (k, kind == "V", at, pat.len()))
            })
        });
        let Some((k, vector, at, len)) = found else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let form = spec.forms[k];
        let lanes = if vector { spec.lanes } else { 1 };
        let (name, writable) = binding_name(line);
        let t = if vector { "V" } else { "f32" };
        let h = match lanes {
            1 => "f16".to_string(),
            l => format!("vec{l}<f16>"),
        };
        let storage = match (form, lanes) {
            (Form::F32, _) => format!("array<{t}>"),
            (Form::F16, _) => format!("array<{h}>"),
            (Form::Packed, 1) | (Form::Packed, 2) => "array<u32>".to_string(),
            (Form::Packed, _) => "array<vec2<u32>>".to_string(),
        };
        out.push_str(&line[..at]);
        out.push_str(&storage);
        out.push_str(&line[at + len..]);
        out.push('\n');
        let n = &name;
        let (ld, st) = match (form, lanes) {
            (Form::F32, _) => (format!("return {n}[e];"), format!("{n}[e] = v;")),
            (Form::F16, _) => (format!("return {t}({n}[e]);"), format!("{n}[e] = {h}(v);")),
            (Form::Packed, 1) => (
                format!("return unpack2x16float({n}[e >> 1u])[e & 1u];"),
                format!(
                    "let q = e >> 1u; let sh = (e & 1u) * 16u; \
                     {n}[q] = ({n}[q] & ~(0xffffu << sh)) | \
                     ((pack2x16float(vec2<f32>(v, 0.0)) & 0xffffu) << sh);"
                ),
            ),
            (Form::Packed, 2) => (
                format!("return unpack2x16float({n}[e]);"),
                format!("{n}[e] = pack2x16float(v);"),
            ),
            (Form::Packed, _) => (
                format!(
                    "let q = {n}[e]; return vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));"
                ),
                format!("{n}[e] = vec2<u32>(pack2x16float(v.xy), pack2x16float(v.zw));"),
            ),
        };
        out.push_str(&format!("fn {n}_ld(e: u32) -> {t} {{ {ld} }}\n"));
        if writable {
            out.push_str(&format!("fn {n}_st(e: u32, v: {t}) {{ {st} }}\n"));
            let st2 = if (form, lanes) == (Form::Packed, 1) {
                format!(
                    "let q = e >> 1u; var hi = {n}[q] & 0xffff0000u; \
                     if ok1 {{ hi = pack2x16float(vec2<f32>(0.0, v1)) & 0xffff0000u; }} \
                     {n}[q] = (pack2x16float(vec2<f32>(v0, 0.0)) & 0xffffu) | hi;"
                )
            } else {
                format!("{n}_st(e, v0); if ok1 {{ {n}_st(e + 1u, v1); }}")
            };
            out.push_str(&format!(
                "fn {n}_st2(e: u32, v0: {t}, v1: {t}, ok1: bool) {{ {st2} }}\n"
            ));
        }
        slots.push((name, form));
    }
    out
}

/// The variable name of a `var<storage, ...> NAME: ...` line and whether it is writable.
fn binding_name(line: &str) -> (String, bool) {
    let after = line.split("var<").nth(1).unwrap_or("");
    let writable = after.starts_with("storage, read_write");
    let name = after
        .split('>')
        .nth(1)
        .and_then(|r| r.split(':').next())
        .unwrap_or("")
        .trim()
        .to_string();
    (name, writable)
}

/// Parses and validates WGSL with naga and reflects every entry point. Errors are naga's
/// report, with the source line.
pub(crate) fn reflect_all(source: &str) -> std::result::Result<Vec<(String, Reflection)>, String> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| e.emit_to_string(source))?;
    let mut out = Vec::new();
    for (index, ep) in module.entry_points.iter().enumerate() {
        if ep.stage != naga::ShaderStage::Compute {
            continue;
        }
        let fi = info.get_entry_point(index);
        let mut storage: Vec<(u32, bool, String)> = Vec::new();
        let mut workgroup_bytes = 0u64;
        let mut uniform_ok = true;
        for (handle, var) in module.global_variables.iter() {
            if fi[handle].is_empty() {
                continue;
            }
            match var.space {
                naga::AddressSpace::Storage { access } => {
                    let rb = var
                        .binding
                        .as_ref()
                        .ok_or("a storage variable without @binding")?;
                    if rb.group != 0 {
                        return Err(format!(
                            "entry point `{}`: storage binding in group {}, only group 0 is supported",
                            ep.name, rb.group
                        ));
                    }
                    storage.push((
                        rb.binding,
                        access.contains(naga::StorageAccess::STORE),
                        var.name.clone().unwrap_or_default(),
                    ));
                }
                naga::AddressSpace::Uniform => {
                    uniform_ok &= var
                        .binding
                        .as_ref()
                        .is_some_and(|b| b.group == 0 && b.binding == 0);
                }
                naga::AddressSpace::WorkGroup => {
                    workgroup_bytes += module.types[var.ty].inner.size(module.to_ctx()) as u64;
                }
                _ => {}
            }
        }
        if !uniform_ok {
            return Err(format!(
                "entry point `{}`: the only uniform must be the parameters at @group(0) @binding(0)",
                ep.name
            ));
        }
        storage.sort();
        for (k, &(binding, _, _)) in storage.iter().enumerate() {
            if binding != k as u32 + 1 {
                return Err(format!(
                    "entry point `{}`: storage bindings must be numbered 1, 2, ... without gaps or \
                     repeats; found {:?}",
                    ep.name,
                    storage.iter().map(|s| s.0).collect::<Vec<_>>()
                ));
            }
        }
        if storage.len() > MAX_ARGS {
            return Err(format!(
                "entry point `{}` has {} storage bindings; at most {MAX_ARGS} are supported",
                ep.name,
                storage.len()
            ));
        }
        out.push((
            ep.name.clone(),
            Reflection {
                writes: storage.iter().map(|s| s.1).collect(),
                names: storage.iter().map(|s| s.2.clone()).collect(),
                workgroup_bytes,
                workgroup_size: ep.workgroup_size,
            },
        ));
    }
    Ok(out)
}

/// What the crate's own kernels need of an adapter, over every shader of the registry
/// (reflected once per process).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Needs {
    pub storage_bindings: u32,
    pub workgroup_bytes: u64,
    pub invocations: u32,
    pub workgroup_size_x: u32,
}

pub(crate) fn crate_needs() -> std::result::Result<Needs, String> {
    static NEEDS: OnceLock<std::result::Result<Needs, String>> = OnceLock::new();
    NEEDS
        .get_or_init(|| {
            let mut n = Needs {
                storage_bindings: 0,
                workgroup_bytes: 0,
                invocations: 0,
                workgroup_size_x: 0,
            };
            for (s, lanes) in crate::registry::SHADERS
                .iter()
                .flat_map(|s| [(s, 1), (s, 4)])
            {
                let spec = Spec {
                    lanes,
                    acc: false,
                    forms: [Form::F32; 3],
                    sub_rows: false,
                    heads: 0,
                    ew_rows: 1,
                    row_group: 1,
                };
                let (src, _) = compose(s, spec);
                for (_, r) in
                    reflect_all(&src).map_err(|e| format!("{} ({lanes} lanes): {e}", s.name))?
                {
                    n.storage_bindings = n.storage_bindings.max(r.writes.len() as u32);
                    n.workgroup_bytes = n.workgroup_bytes.max(r.workgroup_bytes);
                    n.invocations = n.invocations.max(r.workgroup_size.iter().product());
                    n.workgroup_size_x = n.workgroup_size_x.max(r.workgroup_size[0]);
                }
            }
            Ok(n)
        })
        .clone()
}

/// Pipelines built on one device, by (file or kernel name, entry point, specialisation).
pub(crate) type Cache = HashMap<(String, String, Option<Spec>), Arc<Pipeline>>;

impl Gpu {
    /// The cached pipeline of a crate kernel, built on first use.
    pub(crate) fn pipeline(&self, def: &KernelDef) -> Result<Arc<Pipeline>> {
        let key = (
            def.shader.name.to_string(),
            def.entry.to_string(),
            Some(def.spec),
        );
        if let Some(p) = self.lock_cache().get(&key) {
            return Ok(p.clone());
        }
        if def.spec.forms.contains(&Form::F16) && !self.has_f16() {
            return Err(Error::Invalid {
                op: "pipeline",
                message: format!(
                    "kernel `{}::{}` specialised for f16 on an adapter without SHADER_F16",
                    def.shader.name, def.entry
                ),
            });
        }
        let (source, slots) = compose(def.shader, def.spec);
        let built = Arc::new(self.build_pipeline(
            def.shader.name,
            &source,
            def.entry,
            PARAM_BYTES,
            &slots,
            WorkgroupMemory::WrittenBeforeRead,
        )?);
        Ok(self.lock_cache().entry(key).or_insert(built).clone())
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.pipelines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reflects `entry` of `source`, derives its bind-group layout (the uniform at binding 0
    /// is `uniform_bytes` long), and builds the pipeline. Every failure is an
    /// [`Error::Invalid`] naming the shader and entry point.
    /// `slots` are the memory-shaped bindings the composer specialised (by variable name);
    /// `workgroup` says whether the kernel needs its workgroup memory zeroed.
    pub(crate) fn build_pipeline(
        &self,
        name: &str,
        source: &str,
        entry: &str,
        uniform_bytes: u64,
        slots: &[(String, Form)],
        workgroup: WorkgroupMemory,
    ) -> Result<Pipeline> {
        let op = "pipeline";
        let fail = |message: String| Error::Invalid {
            op,
            message: format!("kernel `{name}` entry point `{entry}`: {message}"),
        };
        let reflection = reflect_all(source)
            .map_err(|e| fail(format!("the WGSL does not compile:\n{e}")))?
            .into_iter()
            .find(|(n, _)| n == entry)
            .map(|(_, r)| r)
            .ok_or_else(|| fail("no compute entry point of that name".into()))?;
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: NonZeroU64::new(uniform_bytes),
            },
            count: None,
        }];
        for (k, &w) in reflection.writes.iter().enumerate() {
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
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(entry),
                entries: &entries,
            });
        let pl = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(entry),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(name),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&pl),
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    zero_initialize_workgroup_memory: workgroup == WorkgroupMemory::Zeroed,
                    ..Default::default()
                },
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(fail(format!("the device refused the pipeline: {e}")));
        }
        let slot_of = |n: &String| slots.iter().find(|(s, _)| s == n).map(|&(_, f)| f);
        let dtypes = reflection
            .names
            .iter()
            .map(|n| slot_of(n).map_or(DType::F32, Form::dtype))
            .collect();
        let stores_slot = reflection
            .names
            .iter()
            .zip(&reflection.writes)
            .any(|(n, &w)| w && slot_of(n).is_some());
        Ok(Pipeline {
            dtypes,
            stores_slot,
            layout,
            pipeline,
            reflection,
        })
    }
}
