//! The element ranges ("spans") that a range of work units touches in each tensor layout,
//! used to bind windows of tensors larger than one storage binding, and the layouts of the
//! elementwise kernels.

use crate::check::Dims;
use crate::error::{Error, Result};
use crate::runtime::abi::{divisor, Params, HG, WG};
use crate::runtime::pipelines::KernelDef;
use crate::runtime::Gpu;

/// The memory rows `[g0, g1)` (flattened over batch) that a range of units touches, when each
/// batch element has `per_b` units of which each block of `per_blk` consecutive units covers
/// `rows` consecutive slots.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rows {
    pub b0: u64,
    pub i0: u64,
    pub b1: u64,
    /// One past the last slot of batch `b1`.
    pub i1: u64,
}

impl Rows {
    pub fn of_blocks(u0: u64, u1: u64, units_per_blk: u64, blocks: u64, rows: u64, n: u64) -> Rows {
        let first = u0 / units_per_blk;
        let last = (u1 - 1) / units_per_blk;
        Rows {
            b0: first / blocks,
            i0: (first % blocks) * rows,
            b1: last / blocks,
            i1: ((last % blocks) * rows + rows).min(n),
        }
    }
    /// Elements of a [B, N, W] tensor.
    pub fn bnw(&self, n: u64, w: u64) -> (u64, u64) {
        ((self.b0 * n + self.i0) * w, (self.b1 * n + self.i1) * w)
    }
    /// Elements of a [B, H, N] tensor (all heads of the rows).
    pub fn bhn(&self, h: u64, n: u64) -> (u64, u64) {
        (
            self.b0 * h * n + self.i0,
            (self.b1 * h + h - 1) * n + self.i1,
        )
    }
}

/// Elements `[u0 * per, min(u1 * per, total))` of a flat range processed `per` elements a unit.
pub(crate) fn flat(u0: u64, u1: u64, per: u64, total: u64) -> (u64, u64) {
    (u0 * per, (u1 * per).min(total))
}

/// Layout of the elementwise kernels over [B, N, W]: a workgroup of `WG` threads covers
/// `WG / tw * rows` rows of one batch element (`rows` = `Gpu::elementwise_rows`, the
/// kernels' `EW_ROWS`) by a column tile of `tw` (a power of two) columns of `lanes` f32s each
/// (shaders/prelude.wgsl `element`): the kernels are specialised for `V = vec4<f32>` (4
/// lanes) when W is a multiple of 4, else `f32`. With `words` (a packed f16 argument and
/// scalar columns: the kernels' `WORDS`), a thread takes one packed word, two consecutive
/// elements, and a workgroup `WG * rows` words.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Elementwise {
    tw: u64,
    /// Column tiles per row.
    nct: u64,
    /// Rows (or with `words`, words) per thread.
    rows: u32,
    /// Rows the head-specialised kernels load before storing any (`Gpu::elementwise_row_group`).
    group: u32,
    /// Rows per row tile (a unit's rows).
    rows_per_unit: u64,
    /// Row tiles per batch element.
    tiles_per_b: u64,
    b: u64,
    h: u32,
    n: u64,
    w: u64,
    /// f32s per thread and column: 4 when W is a multiple of 4, else 1.
    pub lanes: u32,
    /// Whether threads take packed words (see above).
    pub words: bool,
    /// Workgroups to dispatch.
    pub units: u64,
}

impl Elementwise {
    /// The layout for [B, N, W] tensors on `gpu`; `packed`: some memory-shaped argument is
    /// packed f16.
    pub fn new(gpu: &Gpu, d: Dims, packed: bool) -> Self {
        let rows = gpu.elementwise_rows();
        let (b, n, w) = (d.b as u64, d.n as u64, d.w as u64);
        let lanes = if w.is_multiple_of(4) { 4 } else { 1 };
        let words = packed && lanes == 1;
        let cols = w / lanes as u64;
        let tw = cols.next_power_of_two().min(WG as u64);
        let nct = cols.div_ceil(tw);
        let rows_per_unit = WG as u64 / tw * rows as u64;
        let tiles_per_b = n.div_ceil(rows_per_unit);
        let units = if words {
            (b * n * w).div_ceil(2 * WG as u64 * rows as u64)
        } else {
            b * tiles_per_b * nct
        };
        Elementwise {
            tw,
            nct,
            rows,
            group: gpu.elementwise_row_group(),
            rows_per_unit,
            tiles_per_b,
            b,
            h: d.h as u32,
            n,
            w,
            lanes,
            words,
            units,
        }
    }
    /// `def` specialised for this layout's lanes and rows per thread; an error if its storage
    /// forms disagree with the layout about word-owning threads (a routing bug, never a
    /// silent race).
    pub fn kernel(&self, def: KernelDef) -> Result<KernelDef> {
        let def = def.lanes(self.lanes).ew_rows(self.rows);
        if def.spec.words() != self.words {
            return Err(Error::Invalid {
                op: def.entry,
                message: format!(
                    "internal: kernel `{}::{}` ({:?}) does not match its elementwise layout",
                    def.shader.name, def.entry, def.spec
                ),
            });
        }
        Ok(def)
    }
    /// `rows` or `groups`, entry points that load their column's vectors of up to HG heads
    /// once for all of a thread's rows, specialised for the shape's head count, where that
    /// saves loads (more than 1 row per thread) and applies (at most HG heads, no packed
    /// words): `rows` row by row where `Gpu::elementwise_row_group` is 1, `groups` loading that
    /// many rows before storing any; else `any`, the same operation for any thread map,
    /// loading them per row, with its head loop specialised for the count where one group
    /// holds every head (unrolled, its indices folded).
    pub fn by_heads(&self, (rows, groups): (KernelDef, KernelDef), any: KernelDef) -> KernelDef {
        if self.rows > 1 && !self.words && self.h <= HG {
            if self.group > 1 {
                groups.heads(self.h).row_group(self.group)
            } else {
                rows.heads(self.h)
            }
        } else {
            any.one_group_heads(self.h as usize)
        }
    }
    /// The kernel's Params for [B, N, W] = `d`: `extra = [row tiles per batch element, 0, tw,
    /// log2 tw]`, and in `divs` the divisors of `element` (the row tiles per batch element,
    /// then the column tiles per row) or, with packed words, of `flat_element` (N, then W),
    /// so that no thread divides (shaders/prelude.wgsl).
    pub fn params(&self, d: Dims) -> Params {
        let (first, second) = if self.words {
            (self.n, self.w)
        } else {
            (self.tiles_per_b, self.nct)
        };
        let [m0, l0] = divisor(first as u32);
        let [m1, l1] = divisor(second as u32);
        Params {
            divs: [m0, l0, m1, l1],
            ..Params::new(
                d.arr(),
                [
                    self.tiles_per_b as u32,
                    0,
                    self.tw as u32,
                    self.tw.trailing_zeros(),
                ],
                [0.0; 4],
            )
        }
    }
    /// Memory rows that units `[u0, u1)` touch.
    pub fn rows(&self, u0: u64, u1: u64) -> Rows {
        if self.words {
            let (e0, e1) = self.bnw(u0, u1);
            let (g0, g1) = (e0 / self.w, e1.div_ceil(self.w));
            return Rows {
                b0: g0 / self.n,
                i0: g0 % self.n,
                b1: (g1 - 1) / self.n,
                i1: (g1 - 1) % self.n + 1,
            };
        }
        Rows::of_blocks(
            u0,
            u1,
            self.nct,
            self.tiles_per_b,
            self.rows_per_unit,
            self.n,
        )
    }
    /// Elements of the [B, N, W] tensors that units `[u0, u1)` touch.
    pub fn bnw(&self, u0: u64, u1: u64) -> (u64, u64) {
        if self.words {
            let per = 2 * WG as u64 * self.rows as u64;
            return (u0 * per, (u1 * per).min(self.b * self.n * self.w));
        }
        self.rows(u0, u1).bnw(self.n, self.w)
    }
}

/// Elements of a [rows, len] array that units `[u0, u1)` touch, when unit `r * chunks + c`
/// covers elements `[c * chunk, (c + 1) * chunk)` of row r.
pub(crate) fn row_chunks(u0: u64, u1: u64, chunks: u64, chunk: u64, len: u64) -> (u64, u64) {
    let (r0, c0) = (u0 / chunks, u0 % chunks);
    let (r1, c1) = ((u1 - 1) / chunks, (u1 - 1) % chunks);
    (
        r0 * len + c0 * chunk,
        r1 * len + ((c1 + 1) * chunk).min(len),
    )
}
