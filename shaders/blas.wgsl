// Whole-tensor updates for training loops, flat over the elements:
//   axpy: y <- y + alpha x
//   fill: t <- value
// A thread per V (LANES elements: 4 when the length is a multiple of 4), or with WORDS (an
// f16 tensor packed two per u32, scalar V) per word, both halves. Either tensor may be f32 or
// f16 (slots MemV for x, DMemV for y and t): computed in f32, rounded once on store. Only the
// tensor's elements are stored (bytes past a wrapped tensor are the application's).
// Composed behind the prelude (src/runtime/abi.rs, shaders/prelude.wgsl).

// Params.extra: x = elements / LANES; fx.x = alpha (axpy) or value (fill)

@group(0) @binding(1) var<storage, read> ax: array<MemV>;
@group(0) @binding(2) var<storage, read_write> ay: array<DMemV>;

fn axpy_value(e: u32) -> V {
    return ay_ld(e - p.base0.y / LANES) + p.fx.x * ax_ld(e - p.base0.x / LANES);
}

@compute @workgroup_size(WG)
fn axpy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let f = flat_item(u, t, p.extra.x);
    if f.ok {
        var v1 = V(0.0);
        if f.ok1 {
            v1 = axpy_value(f.e + 1u);
        }
        ay_st2(f.e - p.base0.y / LANES, axpy_value(f.e), v1, f.ok1);
    }
}

@group(0) @binding(1) var<storage, read_write> ft: array<DMemV>;

@compute @workgroup_size(WG)
fn fill(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let f = flat_item(u, t, p.extra.x);
    let v = V(p.fx.x);
    if f.ok {
        ft_st2(f.e - p.base0.x / LANES, v, v, f.ok1);
    }
}
