//! Sampling a slot per head (Gumbel-max), the greedy pick, and the score-function
//! (REINFORCE) gradient with an entropy bonus. Shaders in `shaders/sample.wgsl`.

use crate::check;
use crate::error::{Error, Result};
use crate::primitives::rowstat::{row_pairs, Stat};
use crate::primitives::spans::{flat, row_chunks};
use crate::runtime::abi::{divisor, Params, CHUNK, WG};
use crate::runtime::dispatch::{Arg, Span};
use crate::runtime::pipelines::{KernelDef, Shader};
use crate::runtime::recorder::{CheckKind, IndexCheck, CHECK_SLOTS};
use crate::runtime::tensor::{Indices, Tensor};
use crate::runtime::Gpu;

pub(crate) const SHADER: Shader = Shader {
    name: "sample.wgsl",
    source: include_str!("../../shaders/sample.wgsl"),
    imports: &[],
};

const PARTIAL: KernelDef = KernelDef::new(&SHADER, "partial");
const COMBINE: KernelDef = KernelDef::new(&SHADER, "combine");
const REINFORCE: KernelDef = KernelDef::new(&SHADER, "reinforce");

fn weights(gpu: &Gpu, op: &'static str, w: &Tensor) -> Result<(usize, usize, usize)> {
    gpu.check_owner(op, "w", w.gpu)?;
    check::f32_only(op, "w", w)?;
    if w.shape.len() != 3 {
        return Err(Error::Shape {
            op,
            arg: "w",
            expected: "rank 3: [B, H, N]".into(),
            given: w.shape.clone(),
        });
    }
    Ok((w.shape[0], w.shape[1], w.shape[2]))
}

impl Gpu {
    fn pick(&self, op: &'static str, w: &Tensor, mode: u32, seed: u64) -> Result<Indices> {
        let (b, h, n) = weights(self, op, w)?;
        let out = self.alloc_indices(op, &[b, h])?;
        let rows = (b * h) as u64;
        let n64 = n as u64;
        let chunks = n64.div_ceil(CHUNK as u64);
        let dims = [b, h, n, 0];
        let extra = [mode, seed as u32, (seed >> 32) as u32, chunks as u32];
        let mut rec = self.recorder();
        let best = self.scratch(op, &mut rec, rows * chunks * 2)?;
        let w_span = |u0, u1| row_chunks(u0, u1, chunks, CHUNK as u64, n64);
        let best_span = |u0: u64, u1: u64| (u0 * 2, u1 * 2);
        self.launch(
            &mut rec,
            op,
            &PARTIAL,
            Params::new(dims, extra, [0.0; 4]),
            rows * chunks,
            &[
                Arg::window(w, &w_span),
                Arg::raw(&best, rows * chunks * 2, Span::Window(&best_span)),
            ],
        )?;
        let flags = self.reserve_check(
            &mut rec,
            IndexCheck {
                op,
                heads: h,
                kind: CheckKind::NoPositiveWeight,
            },
        );
        let params = Params::new(dims, extra, [0.0; 4]);
        let in_span = |u0: u64, u1: u64| (u0 * chunks * 2, u1 * chunks * 2);
        self.launch(
            &mut rec,
            op,
            &COMBINE,
            params,
            rows,
            &[
                Arg::raw(&best, rows * chunks * 2, Span::Window(&in_span)),
                Arg::raw(&out.buf, rows, Span::Whole),
                Arg::raw(&flags, CHECK_SLOTS, Span::Whole),
            ],
        )?;
        self.release(&mut rec, best);
        Ok(out)
    }

    /// Draws one slot per (batch, head) from the weights `w` [B, H, N] with probability
    /// `w[i] / sum w`, by Gumbel-max: `argmax_i log w[i] + G(seed, b, h, i)` with `G` a
    /// standard Gumbel from a counter-based hash, the same function as
    /// [`reference::sample`](crate::reference::sample). Slots with `w <= 0` are never drawn;
    /// ties go to the lowest index; the same seed gives the same indices. A row with no
    /// positive weight returns index 0 and is reported by the next `download`/`sync`.
    pub fn sample(&self, w: &Tensor, seed: u64) -> Result<Indices> {
        self.pick("sample", w, 0, seed)
    }

    /// The greedy pick: `argmax_i w[b,h,i]` per (batch, head), ties to the lowest index.
    pub fn argmax(&self, w: &Tensor) -> Result<Indices> {
        self.pick("argmax", w, 1, 0)
    }

    /// The score-function gradient of `-A log w(idx) - lambda H(w)` with respect to the
    /// addressing scores `z` (where `w = softmax(z)`), [B, H, N]:
    /// `dz(i) = -A (onehot(idx)(i) - w(i)) + lambda w(i) (log w(i) + H(w))`, with
    /// `H(w) = -sum w log w` and `w log w = 0` where `w = 0`. Never divides by `w(idx)`.
    /// Feed it to [`Gpu::content_address_backward_scores`].
    ///
    /// `w` [B, H, N], `indices` [B, H], `advantage` [B, H] (reward minus baseline).
    pub fn reinforce_grad(
        &self,
        w: &Tensor,
        indices: &Indices,
        advantage: &Tensor,
        lambda: f32,
    ) -> Result<Tensor> {
        const OP: &str = "reinforce_grad";
        let (b, h, n) = weights(self, OP, w)?;
        check::indices(self, OP, "indices", indices, &["B", "H"], &[b, h])?;
        check::tensor(self, OP, "advantage", advantage, &["B", "H"], &[b, h])?;
        if !lambda.is_finite() {
            return Err(Error::Invalid {
                op: OP,
                message: format!("lambda must be finite, got {lambda}"),
            });
        }
        let out = self.alloc(OP, &[b, h, n])?;
        let rows = (b * h) as u64;
        let total = rows * n as u64;
        let mut rec = self.recorder();
        let ent = row_pairs(
            self,
            &mut rec,
            OP,
            Stat::Entropy,
            (&w.buf, total),
            (&w.buf, total),
            rows,
            n as u64,
        )?;
        let check = IndexCheck {
            op: OP,
            heads: h,
            kind: CheckKind::Range {
                indices: indices.buf.clone(),
                slots: n,
            },
        };
        let flags = self.reserve_check(&mut rec, check);
        let [m, l] = divisor(n as u32);
        let params = Params {
            divs: [m, l, 0, 0],
            ..Params::new([b, h, n, 0], [0; 4], [lambda, 0.0, 0.0, 0.0])
        };
        let span = |u0, u1| flat(u0, u1, WG as u64, total);
        self.launch(
            &mut rec,
            OP,
            &REINFORCE,
            params,
            total.div_ceil(WG as u64),
            &[
                Arg::window(w, &span),
                Arg::indices(indices),
                Arg::whole(advantage),
                Arg::raw(&ent, rows * 2, Span::Whole),
                Arg::window(&out, &span),
                Arg::raw(&flags, CHECK_SLOTS, Span::Whole),
            ],
        )?;
        self.release(&mut rec, ent);
        Ok(out)
    }
}
