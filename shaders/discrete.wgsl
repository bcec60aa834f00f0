// Discrete access: soft access with one-hot weights w_h = onehot(idx_h), touching only the
// chosen rows, O(B H W) work and memory whatever N is.
//   read:        r_h = M[idx_h]
//   read bwd:    dM[idx_h] += dr_h (heads on one row summed in head order), dw_at_idx_h = dr_h . M[idx_h]
//   write:       M'[r] = M[r] prod_{h: idx_h = r} (1 - e_h) + sum_{h: idx_h = r} a_h,
//                saving the old rows M[idx_h] (the undo record) first, in the same pass
//   undo:        M[idx_h] = old_h
//   write bwd:   with old = M[idx_h], g = dM'[idx_h], Q_h(j) = prod_{h' != h, idx_h' = idx_h} (1 - e_h'(j))
//                (a product that skips h, never a division):
//                de_h = -g old Q_h,  da_h = g (a gather of dM'),  dw_at_idx_h = sum_j g (a_h - old e_h Q_h),
//                then dM[r] = dM'[r] prod_{h: idx_h = r} (1 - e_h) in place.
//   access:      a read (heads Hr), then a write (heads Hw) of the same step: the read sees the
//                memory before the write; forward in one pass (access_fwd), backward in two
//                (write_bwd, then access_bwd_read: the undo and the read's backward).
// The lowest head on a row owns it: only the owner writes the row, so heads sharing a row
// never race and results are the same bits every run. One workgroup per (b, h), threads
// along W. Memory larger than one storage binding is processed in row windows
// [extra.x, extra.y): a dispatch acts on the heads whose row lies in its window.
// Indices >= N are flagged (atomicMax of u32::MAX - (b H + h) in flags[check_slot]) and skipped
// (the write's backward takes the write's indices, already checked, and only skips them).
// Memory-shaped bindings (MemS, GradS, DMemS) may be f32 or f16 (the undo record is f32: it
// holds f16 values exactly). With WORDS (f16 packed two per u32, so rows of odd width share
// words with their neighbours) a thread takes whole words of a row (cols_of) and the kernels
// that store the memory run as one workgroup taking every head in turn, a storage barrier
// apart, so no two invocations ever store halves of one word at the same time.
// Composed behind the prelude (src/runtime/abi.rs, shaders/prelude.wgsl).

// Params.extra: x, y: window of flattened memory rows

// What one (b, h) workgroup does: its row, whether that row is valid and in this window,
// and whether this head owns it.
struct Head {
    bh: u32,
    b: u32,
    h: u32,
    row: u32,
    valid: bool,
    here: bool,
    owner: bool,
}

// The columns of a row one thread visits: j = per x + s - lo for x = t, t + 64, ... < n and
// s < per. Plainly (per = 1) j = t, t + 64, ...; with WORDS (per = 2) x runs over the words
// holding the row and s over both halves, lo = 1 when the row starts mid-word; j >= W (the
// neighbour's half, as u32) is skipped.
struct Cols {
    n: u32,
    per: u32,
    lo: u32,
}

fn cols_of(row: u32) -> Cols {
    let W = p.dims.w;
    var c: Cols;
    if WORDS {
        c.lo = (row * W) & 1u;
        c.per = 2u;
        c.n = (W + c.lo + 1u) / 2u;
    } else {
        c.lo = 0u;
        c.per = 1u;
        c.n = W;
    }
    return c;
}

// The heads a workgroup takes: its own unit, or with WORDS (dispatched as one workgroup)
// every (b, h) in turn.
fn heads_first(wg: vec3<u32>) -> u32 {
    if WORDS {
        return 0u;
    }
    return unit_id(wg);
}

fn heads_end(wg: vec3<u32>) -> u32 {
    if WORDS {
        return p.dims.x * p.dims.y;
    }
    return min(unit_id(wg) + 1u, p.unit_end);
}

fn head_of(u: u32, i: u32) -> Head {
    var hd: Head;
    hd.bh = u;
    hd.b = u / p.dims.y;
    hd.h = u % p.dims.y;
    hd.valid = i < p.dims.z;
    hd.row = hd.b * p.dims.z + i;
    hd.here = hd.valid && hd.row >= p.extra.x && hd.row < p.extra.y;
    return hd;
}

@group(0) @binding(1) var<storage, read> g_mem: array<MemS>;
@group(0) @binding(2) var<storage, read> g_idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> g_out: array<f32>;
@group(0) @binding(4) var<storage, read_write> g_flags: array<atomic<u32>>;

// r_h = M[idx_h].
@compute @workgroup_size(64)
fn gather(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let u = unit_id(wg);
    if u >= p.unit_end {
        return;
    }
    let hd = head_of(u, g_idx[u]);
    if !hd.valid {
        if t == 0u {
            atomicMax(&g_flags[p.check_slot], 0xffffffffu - u);
        }
        return;
    }
    if !hd.here {
        return;
    }
    let W = p.dims.w;
    for (var j = t; j < W; j += 64u) {
        g_out[u * W + j] = g_mem_ld(hd.row * W + j - p.base0.x);
    }
}

@group(0) @binding(1) var<storage, read> rb_mem: array<MemS>;
@group(0) @binding(2) var<storage, read> rb_idx: array<u32>;
@group(0) @binding(3) var<storage, read> rb_dr: array<f32>;
@group(0) @binding(4) var<storage, read_write> rb_dmem: array<DMemS>;
@group(0) @binding(5) var<storage, read_write> rb_dw: array<f32>;
@group(0) @binding(6) var<storage, read_write> rb_flags: array<atomic<u32>>;

var<workgroup> red: array<f32, 64>;

fn reduce64(t: u32) -> f32 {
    for (var s = 32u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if t < s {
            red[t] += red[t + s];
        }
    }
    workgroupBarrier();
    return red[0];
}

@compute @workgroup_size(64)
fn read_bwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    if unit_id(wg) >= p.unit_end {
        return;
    }
    let H = p.dims.y;
    let W = p.dims.w;
    for (var u = heads_first(wg); u < heads_end(wg); u += 1u) {
        let i = rb_idx[u];
        var hd = head_of(u, i);
        if !hd.valid && t == 0u {
            atomicMax(&rb_flags[p.check_slot], 0xffffffffu - u);
        }
        hd.owner = true;
        for (var o = 0u; o < hd.h; o += 1u) {
            if rb_idx[hd.b * H + o] == i {
                hd.owner = false;
            }
        }
        var dot = 0.0;
        if hd.here {
            let c = cols_of(hd.row);
            for (var x = t; x < c.n; x += 64u) {
                for (var s = 0u; s < c.per; s += 1u) {
                    let j = c.per * x + s - c.lo;
                    if j >= W {
                        continue;
                    }
                    let mi = hd.row * W + j;
                    let g = rb_dr[u * W + j];
                    dot += g * rb_mem_ld(mi - p.base0.x);
                    if hd.owner {
                        var sum = 0.0;
                        for (var o = hd.h; o < H; o += 1u) {
                            if rb_idx[hd.b * H + o] == i {
                                sum += rb_dr[(hd.b * H + o) * W + j];
                            }
                        }
                        let di = mi - p.base0.w;
                        rb_dmem_st(di, rb_dmem_ld(di) + sum);
                    }
                }
            }
        }
        red[t] = dot;
        let total = reduce64(t);
        if hd.here && t == 0u {
            rb_dw[u] = total;
        }
        if WORDS {
            storageBarrier();
        }
    }
}

@group(0) @binding(1) var<storage, read_write> ss_mem: array<MemS>;
@group(0) @binding(2) var<storage, read> ss_idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> ss_old: array<f32>;
@group(0) @binding(4) var<storage, read> ss_e: array<f32>;
@group(0) @binding(5) var<storage, read> ss_a: array<f32>;
@group(0) @binding(6) var<storage, read_write> ss_flags: array<atomic<u32>>;

// A write in one pass: the owner of each chosen row (its lowest head) saves the row into the
// undo record of every head on it, then writes it. Other heads touch nothing, so no head reads
// a row another is writing.
fn save_scatter_head(u: u32, t: u32) {
    let H = p.dims.y;
    let W = p.dims.w;
    let i = ss_idx[u];
    let hd = head_of(u, i);
    if !hd.valid {
        if t == 0u {
            atomicMax(&ss_flags[p.check_slot], 0xffffffffu - u);
        }
        return;
    }
    if !hd.here {
        return;
    }
    for (var o = 0u; o < hd.h; o += 1u) {
        if ss_idx[hd.b * H + o] == i {
            return; // an earlier head owns this row
        }
    }
    let c = cols_of(hd.row);
    for (var x = t; x < c.n; x += 64u) {
        for (var s = 0u; s < c.per; s += 1u) {
            let j = c.per * x + s - c.lo;
            if j >= W {
                continue;
            }
            let g = hd.row * W + j - p.base0.x;
            let m = ss_mem_ld(g);
            var keep = 1.0;
            var add = 0.0;
            for (var o = hd.h; o < H; o += 1u) {
                if ss_idx[hd.b * H + o] == i {
                    let oj = (hd.b * H + o) * W + j;
                    ss_old[oj] = m;
                    keep *= 1.0 - ss_e[oj];
                    add += ss_a[oj];
                }
            }
            ss_mem_st(g, m * keep + add);
        }
    }
}

@compute @workgroup_size(64)
fn save_scatter(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    if unit_id(wg) >= p.unit_end {
        return;
    }
    for (var u = heads_first(wg); u < heads_end(wg); u += 1u) {
        save_scatter_head(u, t);
        if WORDS {
            storageBarrier();
        }
    }
}

@group(0) @binding(1) var<storage, read_write> rs_mem: array<MemS>;
@group(0) @binding(2) var<storage, read> rs_idx: array<u32>;
@group(0) @binding(3) var<storage, read> rs_old: array<f32>;

// Undo: the owner of each chosen row restores it from the record.
fn restore_head(u: u32, t: u32) {
    let H = p.dims.y;
    let W = p.dims.w;
    let i = rs_idx[u];
    let hd = head_of(u, i);
    if !hd.here {
        return;
    }
    for (var o = 0u; o < hd.h; o += 1u) {
        if rs_idx[hd.b * H + o] == i {
            return; // an earlier head owns this row
        }
    }
    let c = cols_of(hd.row);
    for (var x = t; x < c.n; x += 64u) {
        for (var s = 0u; s < c.per; s += 1u) {
            let j = c.per * x + s - c.lo;
            if j < W {
                rs_mem_st(hd.row * W + j - p.base0.x, rs_old[u * W + j]);
            }
        }
    }
}

@compute @workgroup_size(64)
fn restore(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    if unit_id(wg) >= p.unit_end {
        return;
    }
    for (var u = heads_first(wg); u < heads_end(wg); u += 1u) {
        restore_head(u, t);
        if WORDS {
            storageBarrier();
        }
    }
}

// ---- The write's backward in one pass (`write_bwd`), and the rest of a step's access
// backward (a read, then a write on the same memory) in a second (`access_bwd_read`): the
// same bits as write_bwd, restore, then read_bwd. ----

@group(0) @binding(1) var<storage, read_write> wb_dmem: array<GradS>;
@group(0) @binding(2) var<storage, read> wb_idx: array<u32>;
@group(0) @binding(3) var<storage, read> wb_old: array<f32>;
@group(0) @binding(4) var<storage, read> wb_e: array<f32>;
@group(0) @binding(5) var<storage, read> wb_a: array<f32>;
@group(0) @binding(6) var<storage, read_write> wb_de: array<f32>;
@group(0) @binding(7) var<storage, read_write> wb_dw: array<f32>;
@group(0) @binding(8) var<storage, read_write> wb_da: array<f32>;

// The write's backward in one pass: the owner of each written row (its lowest head) computes
// de, da and dw of every head on the row from dM', in head order, then turns the row's dM'
// into dM. Only the owner reads or stores the row, so no head reads a row another is turning.
// Indices >= N were reported by the write and are skipped here.
fn write_bwd_head(u: u32, t: u32) {
    let H = p.dims.y;
    let W = p.dims.w;
    let i = wb_idx[u];
    let hd = head_of(u, i);
    if !hd.here {
        return;
    }
    for (var o = 0u; o < hd.h; o += 1u) {
        if wb_idx[hd.b * H + o] == i {
            return; // an earlier head owns this row
        }
    }
    for (var h = hd.h; h < H; h += 1u) {
        let v = hd.b * H + h;
        if wb_idx[v] != i {
            continue; // uniform: every thread skips the same heads
        }
        var dot = 0.0;
        for (var j = t; j < W; j += 64u) {
            var q = 1.0;
            for (var o = 0u; o < H; o += 1u) {
                if o != h && wb_idx[hd.b * H + o] == i {
                    q *= 1.0 - wb_e[(hd.b * H + o) * W + j];
                }
            }
            let g = wb_dmem_ld(hd.row * W + j - p.base0.x);
            let old = wb_old[v * W + j];
            let e = wb_e[v * W + j];
            wb_de[v * W + j] = -g * old * q;
            wb_da[v * W + j] = g;
            dot += g * (wb_a[v * W + j] - old * e * q);
        }
        red[t] = dot;
        let total = reduce64(t);
        if t == 0u {
            wb_dw[v] = total;
        }
        // Every thread has read red[0] before the next head's partials overwrite it.
        workgroupBarrier();
    }
    // Each thread turns only the columns it read above (or, with WORDS, whole words after the
    // barriers above: every read of this row is done).
    let c = cols_of(hd.row);
    for (var x = t; x < c.n; x += 64u) {
        for (var s = 0u; s < c.per; s += 1u) {
            let j = c.per * x + s - c.lo;
            if j >= W {
                continue;
            }
            var keep = 1.0;
            for (var o = hd.h; o < H; o += 1u) {
                if wb_idx[hd.b * H + o] == i {
                    keep *= 1.0 - wb_e[(hd.b * H + o) * W + j];
                }
            }
            let g = hd.row * W + j - p.base0.x;
            wb_dmem_st(g, wb_dmem_ld(g) * keep);
        }
    }
}

@compute @workgroup_size(64)
fn write_bwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    if unit_id(wg) >= p.unit_end {
        return;
    }
    for (var u = heads_first(wg); u < heads_end(wg); u += 1u) {
        write_bwd_head(u, t);
        if WORDS {
            storageBarrier();
        }
    }
}

@group(0) @binding(1) var<storage, read_write> ar_mem: array<MemS>;
@group(0) @binding(2) var<storage, read> ar_widx: array<u32>;
@group(0) @binding(3) var<storage, read> ar_old: array<f32>;
@group(0) @binding(4) var<storage, read> ar_ridx: array<u32>;
@group(0) @binding(5) var<storage, read> ar_dr: array<f32>;
@group(0) @binding(6) var<storage, read_write> ar_dmem: array<DMemS>;
@group(0) @binding(7) var<storage, read_write> ar_dw: array<f32>;
@group(0) @binding(8) var<storage, read_write> ar_flags: array<atomic<u32>>;

// The write's undo and the read's backward in one pass. Units [0, B H) are the read's heads
// (dims.y = H), units [B H, B H + B Hw) the write's (extra.z = Hw). A written row's owner
// restores it from the undo record; a read head whose row was written takes that row's values
// from the record (the same values the restore stores), so no unit reads a row another
// stores. The read's heads then do what read_bwd does, in the same order. Read indices >= N
// are flagged and skipped.
fn access_restore_head(v: u32, t: u32) {
    let Hw = p.extra.z;
    let W = p.dims.w;
    let i = ar_widx[v];
    let b = v / Hw;
    let row = b * p.dims.z + i;
    if i >= p.dims.z || row < p.extra.x || row >= p.extra.y {
        return;
    }
    for (var o = 0u; o < v - b * Hw; o += 1u) {
        if ar_widx[b * Hw + o] == i {
            return; // an earlier head owns this row
        }
    }
    let c = cols_of(row);
    for (var x = t; x < c.n; x += 64u) {
        for (var s = 0u; s < c.per; s += 1u) {
            let j = c.per * x + s - c.lo;
            if j < W {
                ar_mem_st(row * W + j - p.base0.x, ar_old[v * W + j]);
            }
        }
    }
}

fn access_read_head(u: u32, t: u32) {
    let H = p.dims.y;
    let Hw = p.extra.z;
    let W = p.dims.w;
    let i = ar_ridx[u];
    var hd = head_of(u, i);
    if !hd.valid && t == 0u {
        atomicMax(&ar_flags[p.check_slot], 0xffffffffu - u);
    }
    hd.owner = true;
    for (var o = 0u; o < hd.h; o += 1u) {
        if ar_ridx[hd.b * H + o] == i {
            hd.owner = false;
        }
    }
    // The write head whose record holds this row as the read saw it, if the write chose it.
    var rec = 0xffffffffu;
    for (var o = Hw; o > 0u; o -= 1u) {
        if ar_widx[hd.b * Hw + o - 1u] == i {
            rec = hd.b * Hw + o - 1u;
        }
    }
    var dot = 0.0;
    if hd.here {
        let c = cols_of(hd.row);
        for (var x = t; x < c.n; x += 64u) {
            for (var s = 0u; s < c.per; s += 1u) {
                let j = c.per * x + s - c.lo;
                if j >= W {
                    continue;
                }
                let mi = hd.row * W + j;
                let g = ar_dr[u * W + j];
                var m = 0.0;
                if rec != 0xffffffffu {
                    m = ar_old[rec * W + j];
                } else {
                    m = ar_mem_ld(mi - p.base0.x);
                }
                dot += g * m;
                if hd.owner {
                    var sum = 0.0;
                    for (var o = hd.h; o < H; o += 1u) {
                        if ar_ridx[hd.b * H + o] == i {
                            sum += ar_dr[(hd.b * H + o) * W + j];
                        }
                    }
                    let di = mi - p.base1.y; // binding 6
                    ar_dmem_st(di, ar_dmem_ld(di) + sum);
                }
            }
        }
    }
    red[t] = dot;
    let total = reduce64(t);
    if hd.here && t == 0u {
        ar_dw[u] = total;
    }
}

@compute @workgroup_size(64)
fn access_bwd_read(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    if unit_id(wg) >= p.unit_end {
        return;
    }
    let reads = p.dims.x * p.dims.y;
    var first = unit_id(wg);
    var end = min(first + 1u, p.unit_end);
    if WORDS {
        first = 0u;
        end = reads + p.dims.x * p.extra.z;
    }
    for (var u = first; u < end; u += 1u) {
        if u < reads {
            access_read_head(u, t);
        } else {
            access_restore_head(u - reads, t);
        }
        if WORDS {
            storageBarrier();
        }
    }
}

// ---- A step's access forward (a read, then a write on the same memory) in one pass, the
// same bits as gather, then save_scatter. ----

@group(0) @binding(1) var<storage, read_write> af_mem: array<MemS>;
@group(0) @binding(2) var<storage, read> af_widx: array<u32>;
@group(0) @binding(3) var<storage, read_write> af_old: array<f32>;
@group(0) @binding(4) var<storage, read> af_e: array<f32>;
@group(0) @binding(5) var<storage, read> af_a: array<f32>;
@group(0) @binding(6) var<storage, read> af_ridx: array<u32>;
@group(0) @binding(7) var<storage, read_write> af_r: array<f32>;
@group(0) @binding(8) var<storage, read_write> af_flags: array<atomic<u32>>;

// Units [0, B Hw) are the write's heads (dims.y = Hw), units [B Hw, B Hw + B Hr) the read's
// (extra.z = Hr). A written row's owner saves it for every write head on it and gives its
// values to every read head on it, then writes it (save_scatter plus those reads); a read
// head on a row no write chose gathers it (gather). So no unit reads a row another stores.
// Index checks: read heads at positions [0, B Hr), write heads at B Hr + their unit.
fn access_fwd_write_head(u: u32, t: u32) {
    let H = p.dims.y;
    let Hr = p.extra.z;
    let W = p.dims.w;
    let i = af_widx[u];
    let hd = head_of(u, i);
    if !hd.valid {
        if t == 0u {
            atomicMax(&af_flags[p.check_slot], 0xffffffffu - (p.dims.x * Hr + u));
        }
        return;
    }
    if !hd.here {
        return;
    }
    for (var o = 0u; o < hd.h; o += 1u) {
        if af_widx[hd.b * H + o] == i {
            return; // an earlier head owns this row
        }
    }
    let c = cols_of(hd.row);
    for (var x = t; x < c.n; x += 64u) {
        for (var s = 0u; s < c.per; s += 1u) {
            let j = c.per * x + s - c.lo;
            if j >= W {
                continue;
            }
            let g = hd.row * W + j - p.base0.x;
            let m = af_mem_ld(g);
            for (var o = 0u; o < Hr; o += 1u) {
                if af_ridx[hd.b * Hr + o] == i {
                    af_r[(hd.b * Hr + o) * W + j] = m;
                }
            }
            var keep = 1.0;
            var add = 0.0;
            for (var o = hd.h; o < H; o += 1u) {
                if af_widx[hd.b * H + o] == i {
                    let oj = (hd.b * H + o) * W + j;
                    af_old[oj] = m;
                    keep *= 1.0 - af_e[oj];
                    add += af_a[oj];
                }
            }
            af_mem_st(g, m * keep + add);
        }
    }
}

fn access_fwd_read_head(u: u32, t: u32) {
    let H = p.dims.y;
    let Hr = p.extra.z;
    let W = p.dims.w;
    let i = af_ridx[u];
    let b = u / Hr;
    if i >= p.dims.z {
        if t == 0u {
            atomicMax(&af_flags[p.check_slot], 0xffffffffu - u);
        }
        return;
    }
    let row = b * p.dims.z + i;
    if row < p.extra.x || row >= p.extra.y {
        return;
    }
    for (var o = 0u; o < H; o += 1u) {
        if af_widx[b * H + o] == i {
            return; // a written row: its owner gives this head its values
        }
    }
    for (var j = t; j < W; j += 64u) {
        af_r[u * W + j] = af_mem_ld(row * W + j - p.base0.x);
    }
}

@compute @workgroup_size(64)
fn access_fwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    if unit_id(wg) >= p.unit_end {
        return;
    }
    let writes = p.dims.x * p.dims.y;
    var first = unit_id(wg);
    var end = min(first + 1u, p.unit_end);
    if WORDS {
        first = 0u;
        end = writes + p.dims.x * p.extra.z;
    }
    for (var u = first; u < end; u += 1u) {
        if u < writes {
            access_fwd_write_head(u, t);
        } else {
            access_fwd_read_head(u - writes, t);
        }
        if WORDS {
            storageBarrier();
        }
    }
}
