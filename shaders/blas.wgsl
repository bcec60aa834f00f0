// Whole-tensor updates for training loops, four elements at a time:
//   axpy: y <- y + alpha x
//   fill: t <- value
// Only the tensor's elements are stored: in the last vec4 of a length that is not a multiple
// of 4, element by element (bytes past a wrapped tensor are the application's).
// Composed behind the prelude (src/runtime/abi.rs, shaders/prelude.wgsl).

// Params.extra: x = vec4s, y = elements; fx.x = alpha (axpy) or value (fill)

@group(0) @binding(1) var<storage, read> ax: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> ay: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn axpy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let e = u * WG + t;
    if e >= p.extra.x {
        return;
    }
    let o = e - p.base0.y / 4u;
    let v = ay[o] + p.fx.x * ax[e - p.base0.x / 4u];
    if e * 4u + 4u <= p.extra.y {
        ay[o] = v;
    } else {
        for (var c = 0u; e * 4u + c < p.extra.y; c += 1u) {
            ay[o][c] = v[c];
        }
    }
}

@group(0) @binding(1) var<storage, read_write> ft: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn fill(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let e = u * WG + t;
    if e >= p.extra.x {
        return;
    }
    let o = e - p.base0.x / 4u;
    if e * 4u + 4u <= p.extra.y {
        ft[o] = vec4<f32>(p.fx.x);
    } else {
        for (var c = 0u; e * 4u + c < p.extra.y; c += 1u) {
            ft[o][c] = p.fx.x;
        }
    }
}
