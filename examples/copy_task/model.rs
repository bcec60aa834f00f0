//! The copy-task NTM, all on one `Gpu`: an LSTM (or feedforward) controller, one read head and
//! one write head with content and location addressing, sigmoid outputs, binary cross-entropy,
//! Adam with a global gradient-norm clip. The memory ops are the library's; the controller,
//! the heads' activations, the loss and the optimiser are user kernels (`nn.wgsl`) recorded in
//! the same batches, so a training step makes no host round trip (the loss is read when asked).
//!
//! Soft access reads and writes every slot and keeps a memory snapshot per step for backprop
//! through time. Discrete access samples a slot per head (`sample`), gathers and scatters
//! (`discrete_read`/`discrete_write`), keeps only the undo records, and trains the addressing
//! with the score-function gradient (`reinforce_grad`, entering at the sharpening scores
//! through `location_address_backward_scores`) against a moving-average baseline per sequence
//! length; reward = minus the sequence's mean BCE per bit. A blend `w = d w_soft + (1 - d)
//! onehot(idx)` (soft ops on the blended weights) serves the curriculum and the switch.

use ntm_kernels::{Access, Gpu, Indices, Kernel, Result, Tensor, WriteUndo};

/// Input bits per step: 8 data bits and the delimiter channel.
pub const X: usize = 9;
/// Output bits per step.
pub const Y: usize = 8;
const NN: &str = include_str!("nn.wgsl");

/// How the heads touch the memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// Soft reads and writes over every slot.
    Soft,
    /// One sampled slot per head, trained with the score-function gradient.
    Discrete,
}

/// The controller network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Controller {
    /// An LSTM over [input; last read].
    Lstm,
    /// One ReLU layer over [input; last read].
    Feedforward,
}

/// The model's sizes and the optimiser's settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub slots: usize,
    pub width: usize,
    pub hidden: usize,
    pub batch: usize,
    pub controller: Controller,
    pub lr: f32,
    pub clip: f32,
    pub seed: u64,
    /// Longest sequence the model is built for (steps = 2 max_len + 1).
    pub max_len: usize,
}

/// SplitMix64: deterministic data and initialisation.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// One batch of copy-task sequences of length `len`: inputs [T, B, X] and targets [T, B, Y]
/// with T = 2 len + 1 (the sequence, the delimiter, then the sequence to reproduce).
pub struct Batch {
    pub len: usize,
    pub x: Vec<f32>,
    pub y: Vec<f32>,
}

impl Batch {
    pub fn random(rng: &mut Rng, batch: usize, len: usize) -> Batch {
        let t_all = 2 * len + 1;
        let mut x = vec![0.0; t_all * batch * X];
        let mut y = vec![0.0; t_all * batch * Y];
        for b in 0..batch {
            for t in 0..len {
                for k in 0..Y {
                    let bit = (rng.next_u64() & 1) as f32;
                    x[(t * batch + b) * X + k] = bit;
                    y[((len + 1 + t) * batch + b) * Y + k] = bit;
                }
            }
            x[(len * batch + b) * X + Y] = 1.0; // the delimiter
        }
        Batch { len, x, y }
    }
}

/// Offsets of each layer in the flat parameter vector.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// Controller weights [rows, ctrl_in] and bias [rows] (rows = 4C for the LSTM, C else).
    cw: usize,
    cb: usize,
    ctrl_in: usize,
    ctrl_rows: usize,
    /// Heads' linear layer [P, C], [P].
    hw: usize,
    hb: usize,
    p: usize,
    /// Output layer [Y, C + W], [Y].
    ow: usize,
    ob: usize,
    total: usize,
}

impl Layout {
    fn new(cfg: &Config) -> Layout {
        let (w, c) = (cfg.width, cfg.hidden);
        let (ctrl_in, ctrl_rows) = match cfg.controller {
            Controller::Lstm => (X + w + c, 4 * c),
            Controller::Feedforward => (X + w, c),
        };
        // Read head (key, beta, gate, 3 shifts, gamma), write head (same), erase, add.
        let p = 4 * w + 12;
        let cw = 0;
        let cb = cw + ctrl_rows * ctrl_in;
        let hw = cb + ctrl_rows;
        let hb = hw + p * c;
        let ow = hb + p;
        let ob = ow + Y * (c + w);
        Layout {
            cw,
            cb,
            ctrl_in,
            ctrl_rows,
            hw,
            hb,
            p,
            ow,
            ob,
            total: ob + Y,
        }
    }
}

struct Kernels {
    lstm_fwd: Kernel,
    lstm_bwd: Kernel,
    linear_fwd: Kernel,
    linear_bwd_in: Kernel,
    linear_bwd_w: Kernel,
    relu_bwd: Kernel,
    head_act: Kernel,
    head_act_bwd: Kernel,
    ea_act: Kernel,
    ea_act_bwd: Kernel,
    bce: Kernel,
    grad_norm: Kernel,
    adam: Kernel,
    scale: Kernel,
    advantage: Kernel,
}

impl Kernels {
    fn new(gpu: &Gpu) -> Result<Kernels> {
        use Access::{Read as R, ReadWrite as RW};
        let k = |entry: &str, access: &[Access]| gpu.kernel("copy_task_nn", NN, entry, access);
        Ok(Kernels {
            lstm_fwd: k("lstm_fwd", &[R, R, R, R, R, RW, RW, RW])?,
            lstm_bwd: k("lstm_bwd", &[R, R, R, R, RW, RW])?,
            linear_fwd: k("linear_fwd", &[R, R, R, RW])?,
            linear_bwd_in: k("linear_bwd_in", &[R, R, RW, RW])?,
            linear_bwd_w: k("linear_bwd_w", &[RW, R, R, R])?,
            relu_bwd: k("relu_bwd", &[R, RW])?,
            head_act: k("head_act", &[R, RW, RW, RW, RW, RW])?,
            head_act_bwd: k("head_act_bwd", &[R, R, R, R, R, R, RW])?,
            ea_act: k("ea_act", &[R, RW, RW])?,
            ea_act_bwd: k("ea_act_bwd", &[R, R, R, RW])?,
            bce: k("bce", &[R, R, RW, RW])?,
            grad_norm: k("grad_norm", &[R, RW])?,
            adam: k("adam", &[RW, RW, RW, RW, R])?,
            scale: k("scale", &[RW])?,
            advantage: k("advantage", &[R, RW, RW])?,
        })
    }
}

fn groups(threads: usize) -> [u32; 3] {
    [(threads as u32).div_ceil(64), 1, 1]
}

/// One head's activated parameters, [B, 1, ...].
struct Head {
    key: Tensor,
    beta: Tensor,
    gate: Tensor,
    shift: Tensor,
    gamma: Tensor,
}

impl Head {
    fn new(gpu: &Gpu, b: usize, w: usize) -> Result<Head> {
        Ok(Head {
            key: gpu.zeros(&[b, 1, w])?,
            beta: gpu.zeros(&[b, 1])?,
            gate: gpu.zeros(&[b, 1])?,
            shift: gpu.zeros(&[b, 1, 3])?,
            gamma: gpu.zeros(&[b, 1])?,
        })
    }
}

/// What one step keeps for the backward pass.
struct Step {
    h: Tensor,
    c: Tensor,
    gates: Tensor,
    p: Tensor,
    read: Head,
    write: Head,
    erase: Tensor,
    add: Tensor,
    y: Tensor,
    dy: Tensor,
    /// Filled by the forward pass.
    fwd: Option<Addressed>,
}

/// The library's outputs of a step.
struct Addressed {
    /// Content weights and the final (location) weights of the read and write heads.
    wc_r: Tensor,
    w_r: Tensor,
    wc_w: Tensor,
    w_w: Tensor,
    /// The read vector [B, 1, W].
    r: Tensor,
    /// Soft ops (and blends): the memory before the write, and the weights they used
    /// (blends: d w + (1 - d) onehot(idx)).
    snap: Option<Tensor>,
    used: Option<(Tensor, Tensor)>,
    /// Discrete forms: the draws of the read and write heads.
    idx: Option<(Indices, Indices)>,
    /// Pure discrete access: the write's undo record.
    undo: Option<WriteUndo>,
}

/// How a forward pass accesses the memory.
#[derive(Clone, Copy, Debug)]
pub struct Mode {
    pub form: Form,
    /// Discrete only: the blend of the soft weights and the draw (1 = soft weights, 0 = the
    /// one-hot draw: discrete ops).
    pub d: f32,
    /// Discrete only: draw by argmax (evaluation) instead of sampling.
    pub greedy: bool,
}

impl Mode {
    pub const SOFT: Mode = Mode {
        form: Form::Soft,
        d: 1.0,
        greedy: false,
    };
    pub fn discrete(d: f32, greedy: bool) -> Mode {
        Mode {
            form: Form::Discrete,
            d,
            greedy,
        }
    }
}

/// Totals of a forward pass, read back from the GPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    /// Mean BCE per sequence (sum over its output bits).
    pub loss: f64,
    /// Mean wrong output bits per sequence.
    pub bits: f64,
}

/// The model, its optimiser state and its step buffers.
pub struct Ntm<'g> {
    gpu: &'g Gpu,
    pub cfg: Config,
    lay: Layout,
    k: Kernels,
    theta: Tensor,
    grad: Tensor,
    m: Tensor,
    v: Tensor,
    norm: Tensor,
    acc: Tensor,
    baseline: Tensor,
    adv: Tensor,
    ones: Tensor,
    x_all: Tensor,
    y_all: Tensor,
    steps: Vec<Step>,
    len: usize,
    mode: Mode,
    h0: Tensor,
    c0: Tensor,
    r0: Tensor,
    w0: Tensor,
    memory: Tensor,
    mem_init: Tensor,
    // Backward carries.
    dh: Tensor,
    dh_next: Tensor,
    dc: Tensor,
    dr: Tensor,
    dr_next: Tensor,
    dwr_next: Tensor,
    dww_next: Tensor,
    dp: Tensor,
    dgates: Tensor,
    d_mem: Tensor,
    dummy: Tensor,
    updates: u64,
    draws: u64,
}

impl<'g> Ntm<'g> {
    pub fn new(gpu: &'g Gpu, cfg: Config) -> Result<Ntm<'g>> {
        let lay = Layout::new(&cfg);
        let (b, n, w, c) = (cfg.batch, cfg.slots, cfg.width, cfg.hidden);
        let t_max = 2 * cfg.max_len + 1;
        // Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)); the LSTM's forget bias 1.
        let mut rng = Rng(cfg.seed ^ 0x5eed);
        let mut theta = vec![0.0f32; lay.total];
        let mut fill = |at: usize, len: usize, fan_in: usize| {
            let k = 1.0 / (fan_in as f32).sqrt();
            for x in &mut theta[at..at + len] {
                *x = (2.0 * rng.unit() - 1.0) * k;
            }
        };
        fill(lay.cw, lay.ctrl_rows * lay.ctrl_in, lay.ctrl_in);
        fill(lay.hw, lay.p * c, c);
        fill(lay.ow, Y * (c + w), c + w);
        if cfg.controller == Controller::Lstm {
            for j in 0..c {
                theta[lay.cb + c + j] = 1.0;
            }
        }
        let z = |shape: &[usize]| gpu.zeros(shape);
        let mut steps = Vec::with_capacity(t_max);
        for _ in 0..t_max {
            steps.push(Step {
                h: z(&[b, c])?,
                c: z(&[b, c])?,
                gates: z(&[b, lay.ctrl_rows])?,
                p: z(&[b, lay.p])?,
                read: Head::new(gpu, b, w)?,
                write: Head::new(gpu, b, w)?,
                erase: z(&[b, 1, w])?,
                add: z(&[b, 1, w])?,
                y: z(&[b, Y])?,
                dy: z(&[b, Y])?,
                fwd: None,
            });
        }
        // Previous weights start one-hot at slot 0; the memory at a small constant.
        let mut w0 = vec![0.0; b * n];
        for bi in 0..b {
            w0[bi * n] = 1.0;
        }
        let mem_init = gpu.upload(&[b, n, w], &vec![1e-6; b * n * w])?;
        Ok(Ntm {
            gpu,
            lay,
            k: Kernels::new(gpu)?,
            theta: gpu.upload(&[lay.total], &theta)?,
            grad: z(&[lay.total])?,
            m: z(&[lay.total])?,
            v: z(&[lay.total])?,
            norm: z(&[1])?,
            acc: z(&[b * 2])?,
            baseline: z(&[cfg.max_len + 1])?,
            adv: z(&[b, 1])?,
            ones: gpu.upload(&[b, 1], &vec![1.0; b])?,
            x_all: z(&[t_max * b * X])?,
            y_all: z(&[t_max * b * Y])?,
            steps,
            len: 0,
            mode: Mode::SOFT,
            h0: z(&[b, c])?,
            c0: z(&[b, c])?,
            r0: z(&[b, 1, w])?,
            w0: gpu.upload(&[b, 1, n], &w0)?,
            memory: gpu.copy(&mem_init)?,
            mem_init,
            dh: z(&[b, c])?,
            dh_next: z(&[b, c])?,
            dc: z(&[b, c])?,
            dr: z(&[b, 1, w])?,
            dr_next: z(&[b, 1, w])?,
            dwr_next: z(&[b, 1, n])?,
            dww_next: z(&[b, 1, n])?,
            dp: z(&[b, lay.p])?,
            dgates: z(&[b, lay.ctrl_rows])?,
            d_mem: z(&[b, n, w])?,
            dummy: z(&[1])?,
            updates: 0,
            draws: 0,
            cfg,
        })
    }

    /// Number of parameters.
    pub fn parameters(&self) -> usize {
        self.lay.total
    }

    fn dispatch(&self, k: &Kernel, threads: usize, t: &[&Tensor], p: &[u32]) -> Result<()> {
        self.gpu.dispatch(k, groups(threads), t, p)
    }

    /// `y = W [a; a2] + b` into `y`, `a` read from row offset `aoff` (`a2_len` may be 0).
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &self,
        (woff, boff, stride): (usize, usize, usize),
        (a, aoff, a_len): (&Tensor, usize, usize),
        (a2, a2_len): (&Tensor, usize),
        y: &Tensor,
        outs: usize,
        relu: bool,
    ) -> Result<()> {
        let b = self.cfg.batch;
        let p = [
            b,
            a_len,
            a2_len,
            outs,
            woff,
            boff,
            stride,
            relu as usize,
            aoff,
        ]
        .map(|x| x as u32);
        self.dispatch(&self.k.linear_fwd, b * outs, &[&self.theta, a, a2, y], &p)
    }

    /// Gradients of a linear layer: of its inputs (`d_a`, `d_a2`, added or stored) and of its
    /// weights (added to `grad`).
    #[allow(clippy::too_many_arguments)]
    fn linear_back(
        &self,
        (woff, boff, stride, col0): (usize, usize, usize, usize),
        dy: &Tensor,
        outs: usize,
        (a, aoff, a_len): (&Tensor, usize, usize),
        (a2, a2_len): (&Tensor, usize),
        d_in: Option<(&Tensor, &Tensor, bool)>,
        bias: bool,
    ) -> Result<()> {
        let b = self.cfg.batch;
        if let Some((da, da2, add)) = d_in {
            let p = [b, a_len, a2_len, outs, woff, stride, col0, add as usize].map(|x| x as u32);
            self.dispatch(
                &self.k.linear_bwd_in,
                b * (a_len + a2_len),
                &[&self.theta, dy, da, da2],
                &p,
            )?;
        }
        let p = [
            b,
            a_len,
            a2_len,
            outs,
            woff,
            boff,
            stride,
            col0,
            bias as usize,
            aoff,
        ]
        .map(|x| x as u32);
        self.dispatch(
            &self.k.linear_bwd_w,
            outs * (a_len + a2_len + bias as usize),
            &[&self.grad, dy, a, a2],
            &p,
        )
    }

    fn seed(&mut self) -> u64 {
        self.draws += 1;
        self.cfg.seed.wrapping_mul(0x9E3779B97F4A7C15) ^ self.draws
    }

    /// The forward pass over a batch (uploaded first), with the loss's gradient per step.
    pub fn forward(&mut self, batch: &Batch, mode: Mode) -> Result<()> {
        let gpu = self.gpu;
        let (b, w, c) = (self.cfg.batch, self.cfg.width, self.cfg.hidden);
        let t_all = 2 * batch.len + 1;
        assert!(batch.len <= self.cfg.max_len && batch.x.len() == t_all * b * X);
        let mut xs = batch.x.clone();
        xs.resize(self.x_all.len(), 0.0);
        let mut ys = batch.y.clone();
        ys.resize(self.y_all.len(), 0.0);
        gpu.write(&mut self.x_all, &xs)?;
        gpu.write(&mut self.y_all, &ys)?;
        gpu.copy_into(&self.mem_init, &mut self.memory)?;
        gpu.fill(&mut self.acc, 0.0)?;
        self.len = batch.len;
        self.mode = mode;
        let lay = self.lay;
        for t in 0..t_all {
            let seeds = (self.seed(), self.seed());
            let (prev_h, prev_c, prev_r, prev_wr, prev_ww) = if t == 0 {
                (&self.h0, &self.c0, &self.r0, &self.w0, &self.w0)
            } else {
                let s = &self.steps[t - 1];
                let f = s.fwd.as_ref().expect("the previous step's forward");
                (&s.h, &s.c, &f.r, &f.w_r, &f.w_w)
            };
            let s = &self.steps[t];
            // Controller.
            match self.cfg.controller {
                Controller::Lstm => {
                    let p = [b, X, w, c, lay.cw, lay.cb, t * b * X].map(|x| x as u32);
                    self.dispatch(
                        &self.k.lstm_fwd,
                        b * c,
                        &[
                            &self.theta,
                            &self.x_all,
                            prev_r,
                            prev_h,
                            prev_c,
                            &s.gates,
                            &s.c,
                            &s.h,
                        ],
                        &p,
                    )?;
                }
                Controller::Feedforward => self.linear(
                    (lay.cw, lay.cb, lay.ctrl_in),
                    (&self.x_all, t * b * X, X),
                    (prev_r, w),
                    &s.h,
                    c,
                    true,
                )?,
            }
            // Heads: a linear layer, then each parameter's activation.
            self.linear(
                (lay.hw, lay.hb, c),
                (&s.h, 0, c),
                (&self.dummy, 0),
                &s.p,
                lay.p,
                false,
            )?;
            for (head, poff) in [(&s.read, 0), (&s.write, w + 6)] {
                let p = [b, w, lay.p, poff].map(|x| x as u32);
                self.dispatch(
                    &self.k.head_act,
                    b,
                    &[
                        &s.p,
                        &head.key,
                        &head.beta,
                        &head.gate,
                        &head.shift,
                        &head.gamma,
                    ],
                    &p,
                )?;
            }
            let p = [b, w, lay.p, 2 * w + 12].map(|x| x as u32);
            self.dispatch(&self.k.ea_act, b * w, &[&s.p, &s.erase, &s.add], &p)?;
            let address = |h: &Head, wprev: &Tensor| -> Result<(Tensor, Tensor)> {
                let wc = gpu.content_address(&self.memory, &h.key, &h.beta)?;
                let wl = gpu.location_address(&wc, wprev, &h.gate, &h.shift, &h.gamma)?;
                Ok((wc, wl))
            };
            let (wc_r, w_r) = address(&s.read, prev_wr)?;
            let (wc_w, w_w) = address(&s.write, prev_ww)?;
            let (e, a) = (&s.erase, &s.add);
            let mut out = Addressed {
                wc_r,
                w_r,
                wc_w,
                w_w,
                r: self.dummy_like()?,
                snap: None,
                used: None,
                idx: None,
                undo: None,
            };
            match (mode.form, mode.d > 0.0) {
                (Form::Soft, _) => {
                    out.r = gpu.soft_read(&self.memory, &out.w_r)?;
                    out.snap = Some(gpu.copy(&self.memory)?);
                    gpu.soft_write(&mut self.memory, &out.w_w, e, a)?;
                }
                (Form::Discrete, blend) => {
                    let draw = |wt: &Tensor, seed: u64| {
                        if mode.greedy {
                            gpu.argmax(wt)
                        } else {
                            gpu.sample(wt, seed)
                        }
                    };
                    let ir = draw(&out.w_r, seeds.0)?;
                    let iw = draw(&out.w_w, seeds.1)?;
                    if blend {
                        // Soft ops on d w + (1 - d) onehot(idx) = w - (1 - d) (w - onehot(idx)),
                        // where w - onehot(idx) is reinforce_grad's dz for an advantage of 1.
                        let blend = |wt: &Tensor, ix: &Indices| -> Result<Tensor> {
                            let dz = gpu.reinforce_grad(wt, ix, &self.ones, 0.0)?;
                            let mut m = gpu.copy(wt)?;
                            gpu.axpy(-(1.0 - mode.d), &dz, &mut m)?;
                            Ok(m)
                        };
                        let mr = blend(&out.w_r, &ir)?;
                        let mw = blend(&out.w_w, &iw)?;
                        out.r = gpu.soft_read(&self.memory, &mr)?;
                        out.snap = Some(gpu.copy(&self.memory)?);
                        gpu.soft_write(&mut self.memory, &mw, e, a)?;
                        out.used = Some((mr, mw));
                    } else {
                        // The read, then the write, in one dispatch.
                        let (r, undo) = gpu.discrete_access(&mut self.memory, &ir, &iw, e, a)?;
                        out.r = r;
                        out.undo = Some(undo);
                    }
                    out.idx = Some((ir, iw));
                }
            }
            // Output and loss (in the output phase).
            self.linear(
                (lay.ow, lay.ob, c + w),
                (&s.h, 0, c),
                (&out.r, w),
                &s.y,
                Y,
                false,
            )?;
            let active = t > batch.len;
            let p = [
                b as u32,
                Y as u32,
                (t * b * Y) as u32,
                active as u32,
                (1.0 / b as f32).to_bits(),
            ];
            self.dispatch(&self.k.bce, b, &[&s.y, &self.y_all, &s.dy, &self.acc], &p)?;
            self.steps[t].fwd = Some(out);
        }
        Ok(())
    }

    fn dummy_like(&self) -> Result<Tensor> {
        self.gpu.zeros(&[1])
    }

    /// Backprop through time of the last forward pass (adding to the gradient), then an
    /// Adam step (which clears it).
    pub fn backward_and_step(&mut self) -> Result<()> {
        self.backward()?;
        self.step()
    }

    /// Backprop through time of the last forward pass, adding to the gradient.
    pub fn backward(&mut self) -> Result<()> {
        let gpu = self.gpu;
        let (b, n, w, c) = (
            self.cfg.batch,
            self.cfg.slots,
            self.cfg.width,
            self.cfg.hidden,
        );
        let lay = self.lay;
        let t_all = 2 * self.len + 1;
        let mode = self.mode;
        if mode.form == Form::Discrete {
            // The advantage per sequence against the baseline of this length.
            let bits = (self.len * Y) as f32;
            let p = [b as u32, self.len as u32, bits.to_bits(), 0.95f32.to_bits()];
            gpu.dispatch(
                &self.k.advantage,
                [1, 1, 1],
                &[&self.acc, &self.baseline, &self.adv],
                &p,
            )?;
        }
        for t in [
            &mut self.dh_next,
            &mut self.dc,
            &mut self.dr_next,
            &mut self.dwr_next,
            &mut self.dww_next,
            &mut self.d_mem,
        ] {
            gpu.fill(t, 0.0)?;
        }
        for t in (0..t_all).rev() {
            let s = &self.steps[t];
            let f = s.fwd.as_ref().expect("a forward pass");
            let (prev_h, prev_c, prev_r, prev_wr, prev_ww) = if t == 0 {
                (&self.h0, &self.c0, &self.r0, &self.w0, &self.w0)
            } else {
                let q = &self.steps[t - 1];
                let g = q.fwd.as_ref().expect("a forward pass");
                (&q.h, &q.c, &g.r, &g.w_r, &g.w_w)
            };
            // Output layer: dh = dh_next + Wo_h^T dy, dr = dr_next + Wo_r^T dy.
            gpu.copy_into(&self.dh_next, &mut self.dh)?;
            gpu.copy_into(&self.dr_next, &mut self.dr)?;
            self.linear_back(
                (lay.ow, lay.ob, c + w, 0),
                &s.dy,
                Y,
                (&s.h, 0, c),
                (&f.r, w),
                Some((&self.dh, &self.dr, true)),
                true,
            )?;
            // Memory access, newest first: the write, then the read; d_mem goes from dM_t to
            // dM_{t-1}.
            let (dw_r, dw_w, de, da) = match (&f.snap, &f.undo) {
                (Some(snap), _) => {
                    let (ur, uw) = f.used.as_ref().map_or((&f.w_r, &f.w_w), |(a, b)| (a, b));
                    let hg =
                        gpu.soft_write_backward_into(snap, uw, &s.erase, &s.add, &mut self.d_mem)?;
                    let dwr = gpu.soft_read_backward_into(snap, ur, &self.dr, &mut self.d_mem)?;
                    let (mut dwr, mut dww) = (dwr, hg.weights);
                    if f.used.is_some() {
                        // Blend: the pathwise gradient reaches w through its weight d.
                        let p = [(b * n) as u32, mode.d.to_bits()];
                        self.dispatch(&self.k.scale, b * n, &[&dwr], &p)?;
                        self.dispatch(&self.k.scale, b * n, &[&dww], &p)?;
                    }
                    gpu.axpy(1.0, &self.dwr_next, &mut dwr)?;
                    gpu.axpy(1.0, &self.dww_next, &mut dww)?;
                    (Some(dwr), Some(dww), hg.erase, hg.add)
                }
                (None, Some(undo)) => {
                    let (ir, _) = f.idx.as_ref().expect("draws");
                    // The write's backward, the undo and the read's backward: 2 dispatches.
                    let g = gpu.discrete_access_backward(
                        &mut self.memory,
                        ir,
                        &self.dr,
                        undo,
                        &s.erase,
                        &s.add,
                        &mut self.d_mem,
                    )?;
                    (None, None, g.write.erase, g.write.add)
                }
                (None, None) => unreachable!("a step is soft, blended or discrete"),
            };
            let mem_before: &Tensor = match &f.snap {
                Some(snap) => snap,
                None => &self.memory, // restored by the undo above
            };
            // Addressing of each head: location backward from dw (pathwise: the weights
            // themselves, or the previous-weights chain) and, for draws, from the scores'
            // score-function gradient; then content backward into d_mem.
            let heads = [
                (
                    &s.read,
                    &f.wc_r,
                    &f.w_r,
                    prev_wr,
                    dw_r,
                    &self.dwr_next,
                    0usize,
                ),
                (&s.write, &f.wc_w, &f.w_w, prev_ww, dw_w, &self.dww_next, 1),
            ];
            let mut next_carry = Vec::new();
            for (head, wc, wl, wprev, dw, carry, which) in heads {
                let dw = match dw {
                    Some(d) => d,
                    None => gpu.copy(carry)?, // discrete: only the chain of previous weights
                };
                let mut lg = gpu.location_address_backward(
                    wc,
                    wprev,
                    &head.gate,
                    &head.shift,
                    &head.gamma,
                    &dw,
                )?;
                if let Some(idx) = &f.idx {
                    let ix = if which == 0 { &idx.0 } else { &idx.1 };
                    // Minimise -A log w(idx): the draws of better-than-baseline sequences
                    // become likelier; blends weigh it by 1 - d.
                    let dz = gpu.reinforce_grad(wl, ix, &self.adv, 0.0)?;
                    if mode.d > 0.0 {
                        let p = [(b * n) as u32, (1.0 - mode.d).to_bits()];
                        self.dispatch(&self.k.scale, b * n, &[&dz], &p)?;
                    }
                    let ls = gpu.location_address_backward_scores(
                        wc,
                        wprev,
                        &head.gate,
                        &head.shift,
                        &head.gamma,
                        &dz,
                    )?;
                    gpu.axpy(1.0, &ls.content, &mut lg.content)?;
                    gpu.axpy(1.0, &ls.prev, &mut lg.prev)?;
                    gpu.axpy(1.0, &ls.gate, &mut lg.gate)?;
                    gpu.axpy(1.0, &ls.shift, &mut lg.shift)?;
                    gpu.axpy(1.0, &ls.gamma, &mut lg.gamma)?;
                }
                let kg = gpu.content_address_backward_into(
                    mem_before,
                    &head.key,
                    &head.beta,
                    wc,
                    &lg.content,
                    &mut self.d_mem,
                )?;
                let p = [b, w, lay.p, which * (w + 6)].map(|x| x as u32);
                self.dispatch(
                    &self.k.head_act_bwd,
                    b,
                    &[
                        &s.p, &kg.keys, &kg.beta, &lg.gate, &lg.shift, &lg.gamma, &self.dp,
                    ],
                    &p,
                )?;
                next_carry.push(lg.prev);
            }
            let p = [b, w, lay.p, 2 * w + 12].map(|x| x as u32);
            self.dispatch(&self.k.ea_act_bwd, b * w, &[&s.p, &de, &da, &self.dp], &p)?;
            // Heads' layer: dh += Wp^T dp.
            self.linear_back(
                (lay.hw, lay.hb, c, 0),
                &self.dp,
                lay.p,
                (&s.h, 0, c),
                (&self.dummy, 0),
                Some((&self.dh, &self.dummy, true)),
                true,
            )?;
            // Controller: dr_{t-1} and dh_{t-1} for the step before.
            match self.cfg.controller {
                Controller::Lstm => {
                    let p = [b, c].map(|x| x as u32);
                    self.dispatch(
                        &self.k.lstm_bwd,
                        b * c,
                        &[&s.gates, &s.c, prev_c, &self.dh, &self.dc, &self.dgates],
                        &p,
                    )?;
                    let rows = lay.ctrl_rows;
                    self.linear_back(
                        (lay.cw, lay.cb, lay.ctrl_in, X),
                        &self.dgates,
                        rows,
                        (prev_r, 0, w),
                        (prev_h, c),
                        Some((&self.dr_next, &self.dh_next, false)),
                        false,
                    )?;
                    self.linear_back(
                        (lay.cw, lay.cb, lay.ctrl_in, 0),
                        &self.dgates,
                        rows,
                        (&self.x_all, t * b * X, X),
                        (&self.dummy, 0),
                        None,
                        true,
                    )?;
                }
                Controller::Feedforward => {
                    self.dispatch(
                        &self.k.relu_bwd,
                        b * c,
                        &[&s.h, &self.dh],
                        &[(b * c) as u32],
                    )?;
                    self.linear_back(
                        (lay.cw, lay.cb, lay.ctrl_in, X),
                        &self.dh,
                        c,
                        (prev_r, 0, w),
                        (&self.dummy, 0),
                        Some((&self.dr_next, &self.dummy, false)),
                        false,
                    )?;
                    self.linear_back(
                        (lay.cw, lay.cb, lay.ctrl_in, 0),
                        &self.dh,
                        c,
                        (&self.x_all, t * b * X, X),
                        (&self.dummy, 0),
                        None,
                        true,
                    )?;
                    gpu.fill(&mut self.dh_next, 0.0)?;
                }
            }
            let mut carry = next_carry.into_iter();
            self.dwr_next = carry.next().expect("read head");
            self.dww_next = carry.next().expect("write head");
        }
        for s in &mut self.steps {
            s.fwd = None;
        }
        Ok(())
    }

    /// An Adam step with the global gradient-norm clip; clears the gradient.
    pub fn step(&mut self) -> Result<()> {
        let gpu = self.gpu;
        self.updates += 1;
        let (b1, b2) = (0.9f32, 0.999f32);
        let tt = self.updates as i32;
        let n_par = self.lay.total;
        gpu.dispatch(
            &self.k.grad_norm,
            [1, 1, 1],
            &[&self.grad, &self.norm],
            &[n_par as u32],
        )?;
        let p = [
            n_par as u32,
            self.cfg.lr.to_bits(),
            b1.to_bits(),
            b2.to_bits(),
            1e-8f32.to_bits(),
            self.cfg.clip.to_bits(),
            (1.0 - b1.powi(tt)).to_bits(),
            (1.0 - b2.powi(tt)).to_bits(),
        ];
        self.dispatch(
            &self.k.adam,
            n_par,
            &[&self.theta, &self.grad, &self.m, &self.v, &self.norm],
            &p,
        )
    }

    /// The parameters and their gradient, as host vectors (waits; for tests/copy_task.rs).
    #[allow(dead_code)]
    pub fn parameters_and_gradient(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok((
            self.gpu.download(&self.theta)?,
            self.gpu.download(&self.grad)?,
        ))
    }

    /// Replaces the parameters (for tests/copy_task.rs) and clears the gradient.
    #[allow(dead_code)]
    pub fn set_parameters(&mut self, theta: &[f32]) -> Result<()> {
        self.gpu.write(&mut self.theta, theta)?;
        self.gpu.fill(&mut self.grad, 0.0)
    }

    /// Loss and wrong bits of the last forward pass, per sequence (waits for the GPU).
    pub fn totals(&self) -> Result<Totals> {
        let acc = self.gpu.download(&self.acc)?;
        let b = self.cfg.batch as f64;
        Ok(Totals {
            loss: acc.iter().step_by(2).map(|&x| x as f64).sum::<f64>() / b,
            bits: acc
                .iter()
                .skip(1)
                .step_by(2)
                .map(|&x| x as f64)
                .sum::<f64>()
                / b,
        })
    }

    /// Where the heads went in the last forward pass (waits): per sequence, the fraction of
    /// output steps whose read head's strongest slot is the write head's strongest slot at the
    /// matching input step.
    pub fn read_on_written(&self) -> Result<f64> {
        let (b, n) = (self.cfg.batch, self.cfg.slots);
        let argmax = |t: &Tensor| -> Result<Vec<usize>> {
            let v = self.gpu.download(t)?;
            Ok(v.chunks(n)
                .map(|row| {
                    row.iter()
                        .enumerate()
                        .fold((0, f32::MIN), |m, (i, &x)| if x > m.1 { (i, x) } else { m })
                        .0
                })
                .collect())
        };
        let len = self.len;
        let mut hit = 0usize;
        for k in 0..len {
            let fw = self.steps[k].fwd.as_ref().expect("a forward pass");
            let fr = self.steps[len + 1 + k]
                .fwd
                .as_ref()
                .expect("a forward pass");
            let (ws, rs) = (argmax(&fw.w_w)?, argmax(&fr.w_r)?);
            hit += ws.iter().zip(&rs).filter(|(a, b)| a == b).count();
        }
        Ok(hit as f64 / (len * b).max(1) as f64)
    }
}
