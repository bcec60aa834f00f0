//! The GPU ABI, in one place: the parameters every dispatch passes to its kernel, the
//! constants that host code and shaders both use, and the WGSL prelude built from them that
//! is composed in front of every shader (see [`crate::runtime::pipelines`]).

use bytemuck::{Pod, Zeroable};

use super::pipelines::Spec;

/// Heads handled together by one workgroup in the row-tile and column kernels.
pub(crate) const HG: u32 = 4;
/// Memory rows per tile of the row-tile kernels (= their workgroup size).
pub(crate) const TR: u32 = 64;
/// Threads per workgroup of the elementwise and row-statistic kernels.
pub(crate) const WG: u32 = 256;
/// Threads of the column-reduction kernels (a column tile is at most this wide).
pub(crate) const CW: u32 = 256;
/// Elements per workgroup of the row-statistic kernels (`WG` threads x 4).
pub(crate) const CHUNK: u32 = 1024;
/// Rows each row lane of the streaming backward kernels (soft write's `bwd_heads`) takes
/// between two workgroup reductions of their row sums.
pub(crate) const KR: u32 = 2;
/// Storage bindings a kernel may have after the uniform (binding 0): the size of `Params::base`.
pub(crate) const MAX_ARGS: usize = 8;

/// Parameters of one dispatch: `struct Params` of [`PARAMS_WGSL`], bound at group 0, binding 0.
///
/// `unit_base..unit_end` is the range of work units this dispatch covers; a unit is one
/// workgroup. `groups_x` folds the unit range into two dispatch dimensions. `base[k]` is the
/// element offset at which storage binding `k + 1` was bound (0 when bound whole), so shaders
/// index windows with global indices minus `base`. `check_slot` is the index-check flag the
/// op's kernels report bad indices to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub(crate) struct Params {
    pub unit_base: u32,
    pub unit_end: u32,
    pub groups_x: u32,
    pub check_slot: u32,
    pub base: [u32; MAX_ARGS],
    pub dims: [u32; 4],
    pub extra: [u32; 4],
    pub fextra: [f32; 4],
    pub divs: [u32; 4],
}

/// The WGSL twin of [`Params`]; a unit test checks that naga lays it out exactly as Rust does.
const PARAMS_WGSL: &str = "\
struct Params {
    unit_base: u32,
    unit_end: u32,
    groups_x: u32,
    check_slot: u32,
    base0: vec4<u32>, // element offsets of the windows of bindings 1..4
    base1: vec4<u32>, // ... and 5..8
    dims: vec4<u32>,  // B, H, N, W
    extra: vec4<u32>, // op-specific integers
    fx: vec4<f32>,    // op-specific floats
    divs: vec4<u32>,  // two divisors as `divisor` makes them, for `div_by`: (x, y) and (z, w)
}
";

/// Bytes of one dispatch's parameters.
pub(crate) const PARAM_BYTES: u64 = std::mem::size_of::<Params>() as u64;

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

/// `[m, l]` for dividing by `d` with a multiply and shifts, exact for every u32
/// dividend (`div_by` in `shaders/prelude.wgsl`; Granlund and Montgomery's method, as in
/// Hacker's Delight 10-8): `l = ceil(log2 d)` and `m = floor(2^32 (2^l - d) / d) + 1`. Kernels
/// that split a flat index into (row, column) or (batch, slot) for every element take these
/// instead of dividing: a u32 division is a long instruction sequence on GPUs, and lavapipe
/// runs it lane by lane (3 of the soft write forward's 9.7 ms at N = 65,536).
pub(crate) fn divisor(d: u32) -> [u32; 2] {
    // An empty dimension has no element to divide: take it as 1.
    let d = d.max(1);
    let l = 32 - (d - 1).leading_zeros();
    let m = (((1u64 << l) - d as u64) << 32) / d as u64 + 1;
    [m as u32, l]
}

/// The prelude composed in front of every shader: the constants above, the build-time
/// specialisation (`V`, the type a kernel streams the memory in: `f32`, or `vec4<f32>` when the
/// row width is a multiple of 4, with `LANES` f32s each, and `vsum`, the sum of a V's lanes;
/// `SUB_ROWS` and `xor_lanes`, the subgroup shuffles of rows that fit a subgroup; `ACC`, whether a kernel that writes a
/// memory gradient adds to its output; `WORDS`, whether stores must own whole packed f16
/// words, see [`Spec::words`]; `EW_ROWS`, the rows per thread of the elementwise kernels, and
/// `ROW_GROUP`, how many of them a head-specialised one loads before storing any (or a
/// streaming kernel's subgroup loop, or a several-head column partial, before summing any);
/// `heads()`, a head-specialised kernel's head count or else `Params.dims.y`), `Params` and
/// its binding, then
/// `shaders/prelude.wgsl` (the unit prologue and the elementwise mapping).
pub(crate) fn prelude(spec: Spec) -> String {
    let Spec {
        lanes,
        acc,
        ew_rows,
        row_group,
        ..
    } = spec;
    let words = spec.words();
    let v = match lanes {
        1 => "f32".to_string(),
        l => format!("vec{l}<f32>"),
    };
    // The sum of a V's lanes (a row's partial dot product).
    let vsum = match lanes {
        1 => "x",
        _ => "dot(x, V(1.0))",
    };
    // x of the invocation whose subgroup lane is this one's xor m; without `subgroups` the
    // functions exist (so both variants of a kernel validate) but SUB_ROWS keeps them unused.
    let xor = if spec.sub_rows {
        "fn xor_lanes4(x: vec4<f32>, m: u32) -> vec4<f32> { return subgroupShuffleXor(x, m); }\n\
         fn xor_lanes3(x: vec3<f32>, m: u32) -> vec3<f32> { return subgroupShuffleXor(x, m); }\n\
         fn xor_lanes2(x: vec2<f32>, m: u32) -> vec2<f32> { return subgroupShuffleXor(x, m); }\n\
         fn xor_lanes(x: f32, m: u32) -> f32 { return subgroupShuffleXor(x, m); }\n"
    } else {
        "fn xor_lanes4(x: vec4<f32>, m: u32) -> vec4<f32> { return x; }\n\
         fn xor_lanes3(x: vec3<f32>, m: u32) -> vec3<f32> { return x; }\n\
         fn xor_lanes2(x: vec2<f32>, m: u32) -> vec2<f32> { return x; }\n\
         fn xor_lanes(x: f32, m: u32) -> f32 { return x; }\n"
    };
    let sub_rows = spec.sub_rows;
    // A head-specialised kernel's count is a constant, so its per-head branches fold away.
    let heads = match spec.heads {
        0 => "p.dims.y".to_string(),
        h => format!("{h}u"),
    };
    format!(
        "// ---- prelude (generated by src/runtime/abi.rs) ----\n\
         alias V = {v};\n\
         const LANES: u32 = {lanes}u;\n\
         fn vsum(x: V) -> f32 {{ return {vsum}; }}\n\
         const ACC: bool = {acc};\n\
         const WORDS: bool = {words};\n\
         const SUB_ROWS: bool = {sub_rows};\n\
         {xor}\
         const EPS: f32 = {eps:e};\n\
         const HG: u32 = {HG}u;\n\
         const TR: u32 = {TR}u;\n\
         const WG: u32 = {WG}u;\n\
         const CW: u32 = {CW}u;\n\
         const EW_ROWS: u32 = {ew_rows}u;\n\
         const ROW_GROUP: u32 = {row_group}u;\n\
         const CHUNK: u32 = {CHUNK}u;\n\
         const KR: u32 = {KR}u;\n\
         {PARAMS_WGSL}\
         fn heads() -> u32 {{ return {heads}; }}\n\
         {}\n\
         // ---- end of prelude ----\n",
        include_str!("../../shaders/prelude.wgsl"),
        eps = crate::EPS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgpu::naga;

    /// `div_by` of shaders/prelude.wgsl, operation for operation in u32 arithmetic.
    fn div_by(x: u32, [m, l]: [u32; 2]) -> u32 {
        let (al, ah, bl, bh) = (m & 0xffff, m >> 16, x & 0xffff, x >> 16);
        let (lh, hl) = (al * bh, ah * bl);
        let carry = (((al * bl) >> 16) + (lh & 0xffff) + (hl & 0xffff)) >> 16;
        let t = ah * bh + (lh >> 16) + (hl >> 16) + carry;
        (t + ((x - t) >> l.min(1))) >> (l.max(1) - 1)
    }

    /// Exact against `/` on every divisor up to 2^12 and at and around powers of two and the
    /// largest u32s, for dividends at every multiple's edges and across the u32 range.
    #[test]
    fn division_by_multiply_and_shift_is_exact() {
        let mut ds: Vec<u32> = (1..=4096).collect();
        for k in 12..32 {
            let p = 1u32 << k;
            ds.extend([p - 1, p, p + 1, p / 3, p / 3 * 2 + 1]);
        }
        ds.extend([u32::MAX, u32::MAX - 1, 641, 6_700_417, 65_537, 1_000_003]);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for &d in &ds {
            let mg = divisor(d);
            let mut xs = vec![0, 1, d - 1, d, d.wrapping_add(1), u32::MAX, u32::MAX - 1];
            for q in [1u32, 2, 3, 1000, u32::MAX / d, u32::MAX / d - 1] {
                if let Some(x) = q.checked_mul(d) {
                    xs.extend([
                        x,
                        x.wrapping_sub(1),
                        x.saturating_add(1),
                        x.saturating_add(d - 1),
                    ]);
                }
            }
            for _ in 0..64 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                xs.push(seed as u32);
            }
            for x in xs {
                assert_eq!(div_by(x, mg), x / d, "{x} / {d} with m, l = {mg:?}");
            }
        }
    }

    /// The WGSL struct must have the Rust struct's size and member offsets.
    #[test]
    fn wgsl_params_match_rust_layout() {
        let src = format!(
            "{}\n@compute @workgroup_size(1) fn main() {{ _ = p.unit_base; }}",
            prelude(Spec {
                lanes: 1,
                acc: false,
                sub_rows: false,
                forms: [super::super::pipelines::Form::F32; 3],
                heads: 0,
                ew_rows: 1,
                row_group: 1,
            })
        );
        let module = naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{}", e.emit_to_string(&src)));
        let ty = module
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some("Params"))
            .expect("struct Params in the prelude")
            .1;
        let naga::TypeInner::Struct { members, span } = &ty.inner else {
            panic!("Params is not a struct")
        };
        assert_eq!(*span as u64, PARAM_BYTES, "size of Params");
        let rust = [
            ("unit_base", std::mem::offset_of!(Params, unit_base)),
            ("unit_end", std::mem::offset_of!(Params, unit_end)),
            ("groups_x", std::mem::offset_of!(Params, groups_x)),
            ("check_slot", std::mem::offset_of!(Params, check_slot)),
            ("base0", std::mem::offset_of!(Params, base)),
            ("base1", std::mem::offset_of!(Params, base) + 16),
            ("dims", std::mem::offset_of!(Params, dims)),
            ("extra", std::mem::offset_of!(Params, extra)),
            ("fx", std::mem::offset_of!(Params, fextra)),
            ("divs", std::mem::offset_of!(Params, divs)),
        ];
        assert_eq!(members.len(), rust.len());
        for (m, (name, off)) in members.iter().zip(rust) {
            assert_eq!(m.name.as_deref(), Some(name));
            assert_eq!(m.offset as usize, off, "offset of {name}");
        }
    }
}
