//! Shaders and their pipelines: a shader file is composed behind the prelude of
//! [`crate::runtime::abi`] and the primitive shaders it imports; each entry point's bind-group
//! layout is derived from the shader itself (naga reflection: which storage bindings the entry
//! point uses and whether it writes them), so no hand-kept table can drift from the WGSL.
//! Pipelines are built once per [`Gpu`] and cached by (file, entry point).

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::{Arc, OnceLock};

use wgpu::naga;

use super::abi::{prelude, MAX_ARGS, PARAM_BYTES};
use super::Gpu;
use crate::error::{Error, Result};

/// One `.wgsl` file of the crate and the primitive shaders it uses.
pub(crate) struct Shader {
    /// File name, for errors and the pipeline cache.
    pub name: &'static str,
    /// The file's WGSL.
    pub source: &'static str,
    /// Shaders composed before this one (after the prelude), in order.
    pub imports: &'static [&'static Shader],
}

/// One compute entry point of a crate shader.
#[derive(Clone, Copy)]
pub(crate) struct KernelDef {
    pub shader: &'static Shader,
    pub entry: &'static str,
    /// The build-time specialisation: `V` is `f32` (1) or `vec4<f32>` (4) in the prelude.
    pub lanes: u32,
    /// The build-time specialisation `ACC` in the prelude: kernels that write a gradient of the
    /// memory add it to the output (true) or store it (false).
    pub acc: bool,
}

impl KernelDef {
    /// The entry point of `shader`, scalar (`V = f32`).
    pub const fn new(shader: &'static Shader, entry: &'static str) -> Self {
        KernelDef {
            shader,
            entry,
            lanes: 1,
            acc: false,
        }
    }
    /// The same entry point specialised for `lanes` (1 or 4) f32s per `V`.
    pub const fn lanes(self, lanes: u32) -> Self {
        KernelDef { lanes, ..self }
    }
    /// The same entry point specialised to accumulate (`ACC = acc`).
    pub const fn acc(self, acc: bool) -> Self {
        KernelDef { acc, ..self }
    }
}

/// What an entry point binds and needs, read from its WGSL.
#[derive(Clone, Debug)]
pub(crate) struct Reflection {
    /// For each storage binding 1..=k, in order: whether the entry point writes it.
    pub writes: Vec<bool>,
    /// Bytes of workgroup memory the entry point uses.
    pub workgroup_bytes: u64,
    /// `@workgroup_size`.
    pub workgroup_size: [u32; 3],
}

/// A built pipeline with the layout derived for it.
pub(crate) struct Pipeline {
    pub layout: wgpu::BindGroupLayout,
    pub pipeline: wgpu::ComputePipeline,
    pub reflection: Reflection,
}

/// The whole WGSL of a crate shader specialised for `lanes`: prelude, imports (each once),
/// then the file.
pub(crate) fn compose(shader: &Shader, lanes: u32, acc: bool) -> String {
    fn add(s: &Shader, seen: &mut Vec<&'static str>, out: &mut String) {
        for &i in s.imports {
            if !seen.contains(&i.name) {
                seen.push(i.name);
                add(i, seen, out);
                out.push_str(&format!("// ---- {} ----\n{}\n", i.name, i.source));
            }
        }
    }
    let mut out = prelude(lanes, acc);
    add(shader, &mut Vec::new(), &mut out);
    out.push_str(&format!("// ---- {} ----\n{}", shader.name, shader.source));
    out
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
        let mut storage: Vec<(u32, bool)> = Vec::new();
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
                    storage.push((rb.binding, access.contains(naga::StorageAccess::STORE)));
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
        for (k, &(binding, _)) in storage.iter().enumerate() {
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
                let src = compose(s, lanes, false);
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
pub(crate) type Cache = HashMap<(String, String, u32), Arc<Pipeline>>;

impl Gpu {
    /// The cached pipeline of a crate kernel, built on first use.
    pub(crate) fn pipeline(&self, def: &KernelDef) -> Result<Arc<Pipeline>> {
        let key = (
            def.shader.name.to_string(),
            def.entry.to_string(),
            def.lanes | (def.acc as u32) << 8,
        );
        if let Some(p) = self.lock_cache().get(&key) {
            return Ok(p.clone());
        }
        let built = Arc::new(self.build_pipeline(
            def.shader.name,
            &compose(def.shader, def.lanes, def.acc),
            def.entry,
            PARAM_BYTES,
        )?);
        Ok(self.lock_cache().entry(key).or_insert(built).clone())
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.pipelines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reflects `entry` of `source`, derives its bind-group layout (the uniform at binding 0
    /// is `uniform_bytes` long), and builds the pipeline. Every failure is an
    /// [`Error::Invalid`] naming the shader and entry point.
    pub(crate) fn build_pipeline(
        &self,
        name: &str,
        source: &str,
        entry: &str,
        uniform_bytes: u64,
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
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(fail(format!("the device refused the pipeline: {e}")));
        }
        Ok(Pipeline {
            layout,
            pipeline,
            reflection,
        })
    }
}
