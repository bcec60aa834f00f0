//! The seed's experiment: an NTM learns the copy task (Graves et al. 2014) with soft and with
//! discrete memory access, all on the GPU through ntm-kernels, and training time per sequence
//! is measured against the memory size N.
//!
//! ```sh
//! cargo run --release --example copy_task -- --access soft
//! cargo run --release --example copy_task -- --access discrete --schedule switch --batch 16 --sequences 60000
//! cargo run --release --example copy_task -- --access both --time-slots 128,1024,8192,65536
//! ```
//! Options: `--access soft|discrete|both`, `--schedule switch|reinforce|curriculum`,
//! `--controller lstm|feedforward`, `--slots`, `--width`, `--hidden`, `--min-len`, `--max-len`,
//! `--batch`, `--sequences` (per form; the switch schedule's soft and discrete phases together),
//! `--seed`, `--lr`, `--eval` (fresh sequences for the final evaluation), `--time-slots
//! N1,N2,...`, `--time-sequences`, `--out DIR` (default `target/ntm-copy`).
//! Writes `learning_<form>.csv`, `timing.csv`, `learning.svg`, `timing.svg` into `--out`.

mod model;
mod svg;

use model::{Batch, Config, Controller, Form, Mode, Ntm, Rng};
use ntm_kernels::Gpu;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Schedule {
    Switch,
    Reinforce,
    Curriculum,
}

#[derive(Clone, Debug)]
struct Opts {
    access: Vec<Form>,
    schedule: Schedule,
    controller: Controller,
    slots: usize,
    width: usize,
    hidden: usize,
    min_len: usize,
    max_len: usize,
    batch: usize,
    sequences: usize,
    seed: u64,
    lr: f32,
    eval: usize,
    time_slots: Vec<usize>,
    time_sequences: usize,
    out: std::path::PathBuf,
}

fn parse() -> Result<Opts, String> {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let mut o = Opts {
        access: vec![Form::Soft],
        schedule: Schedule::Switch,
        controller: Controller::Lstm,
        slots: 128,
        width: 20,
        hidden: 100,
        min_len: 1,
        max_len: 10,
        batch: 4,
        sequences: 20_000,
        seed: 1,
        // 3e-3, not the issue's 1e-3: at 1e-3 seeds 2 and 3 had not begun to use the memory
        // after 20,000 sequences; at 3e-3 seeds 1-3 reach 0.00 bits by 4,300-5,200 (README).
        lr: 3e-3,
        eval: 1000,
        time_slots: Vec::new(),
        time_sequences: 64,
        out: std::path::Path::new(&target).join("ntm-copy"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--bench" {
            continue; // `cargo test` may pass it to examples; nothing to do
        }
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--access" => {
                o.access = match value()?.as_str() {
                    "soft" => vec![Form::Soft],
                    "discrete" => vec![Form::Discrete],
                    "both" => vec![Form::Soft, Form::Discrete],
                    v => return Err(format!("--access {v}: soft, discrete or both")),
                }
            }
            "--schedule" => {
                o.schedule = match value()?.as_str() {
                    "switch" => Schedule::Switch,
                    "reinforce" => Schedule::Reinforce,
                    "curriculum" => Schedule::Curriculum,
                    v => return Err(format!("--schedule {v}: switch, reinforce or curriculum")),
                }
            }
            "--controller" => {
                o.controller = match value()?.as_str() {
                    "lstm" => Controller::Lstm,
                    "feedforward" | "ff" => Controller::Feedforward,
                    v => return Err(format!("--controller {v}: lstm or feedforward")),
                }
            }
            "--slots" => o.slots = num(value()?)?,
            "--width" => o.width = num(value()?)?,
            "--hidden" => o.hidden = num(value()?)?,
            "--min-len" => o.min_len = num(value()?)?,
            "--max-len" => o.max_len = num(value()?)?,
            "--batch" => o.batch = num(value()?)?,
            "--sequences" => o.sequences = num(value()?)?,
            "--seed" => o.seed = num(value()?)? as u64,
            "--lr" => o.lr = value()?.parse().map_err(|e| format!("--lr: {e}"))?,
            "--eval" => o.eval = num(value()?)?,
            "--time-sequences" => o.time_sequences = num(value()?)?,
            "--time-slots" => {
                o.time_slots = value()?
                    .split(',')
                    .map(|v| num(v.trim().to_string()))
                    .collect::<Result<_, _>>()?
            }
            "--out" => o.out = value()?.into(),
            "--help" | "-h" => {
                return Err("see the head of examples/copy_task/main.rs for the options".into())
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if o.min_len == 0 || o.min_len > o.max_len || o.slots == 0 || o.width == 0 || o.batch == 0 {
        return Err("need 1 <= --min-len <= --max-len and positive sizes".into());
    }
    Ok(o)
}

/// The model for a form: clip 1 for discrete access (rare unlikely draws give score gradients
/// of norm 24-61 in the prototype), 10 for soft (and the switch schedule's soft phase).
fn config(o: &Opts, form: Form, slots: usize) -> Config {
    Config {
        slots,
        width: o.width,
        hidden: o.hidden,
        batch: o.batch,
        controller: o.controller,
        lr: o.lr,
        clip: if form == Form::Soft { 10.0 } else { 1.0 },
        seed: o.seed,
        // Built for length 20 as well: the evaluation reports the error there.
        max_len: o.max_len.max(20),
    }
}

/// A point of a learning curve.
#[derive(Clone, Copy)]
struct Point {
    sequences: usize,
    loss: f64,
    bits: f64,
    seconds: f64,
}

/// The mean bits per sequence of greedy evaluation on `count` fresh sequences of lengths
/// `lens`, and how often the read head reads the slot written for that input.
fn evaluate(
    ntm: &mut Ntm,
    form: Form,
    rng: &mut Rng,
    lens: (usize, usize),
    count: usize,
) -> ntm_kernels::Result<(f64, f64)> {
    let mode = match form {
        Form::Soft => Mode::SOFT,
        Form::Discrete => Mode::discrete(0.0, true),
    };
    let (mut bits, mut on, mut batches) = (0.0, 0.0, 0);
    let b = ntm.cfg.batch;
    for _ in 0..count.div_ceil(b) {
        let len = lens.0 + rng.below(lens.1 - lens.0 + 1);
        let batch = Batch::random(rng, b, len);
        ntm.forward(&batch, mode)?;
        bits += ntm.totals()?.bits;
        on += ntm.read_on_written()?;
        batches += 1;
    }
    Ok((bits / batches as f64, on / batches as f64))
}

/// The blend weight d of the soft weights for discrete training at `update`, or None when the
/// schedule is still in its soft phase.
struct Phase {
    soft_until: Option<usize>,
}

fn train(
    o: &Opts,
    form: Form,
    gpu: &Gpu,
) -> Result<(Vec<Point>, String), Box<dyn std::error::Error>> {
    let mut ntm = Ntm::new(gpu, config(o, form, o.slots))?;
    let mut rng = Rng(o.seed);
    let mut eval_rng = Rng(o.seed ^ 0xe7a1);
    let started = Instant::now();
    let mut last_print = Instant::now();
    let mut curve = Vec::new();
    let mut seqs = 0usize;
    let mut update = 0usize;
    let mut phase = Phase { soft_until: None };
    let name = match (form, o.schedule) {
        (Form::Soft, _) => "soft".to_string(),
        (Form::Discrete, s) => format!("discrete ({s:?})").to_lowercase(),
    };
    eprintln!(
        "copy_task: training {name}: {} parameters, N={} W={} batch {} lengths {}..{}",
        ntm.parameters(),
        o.slots,
        o.width,
        o.batch,
        o.min_len,
        o.max_len
    );
    // Loss read every K updates (the only host round trips of training).
    const K: usize = 10;
    let (mut run_loss, mut run_bits, mut run_n) = (0.0, 0.0, 0);
    while seqs < o.sequences {
        let mode = match (form, o.schedule) {
            (Form::Soft, _) => Mode::SOFT,
            (Form::Discrete, Schedule::Reinforce) => Mode::discrete(0.0, false),
            (Form::Discrete, Schedule::Curriculum) => {
                Mode::discrete(1.0 / (1.0 + 0.0015 * update as f32).sqrt(), false)
            }
            (Form::Discrete, Schedule::Switch) => match phase.soft_until {
                None => Mode::SOFT,
                Some(u0) => {
                    let d = 1.0 - (update - u0) as f32 / 500.0;
                    Mode::discrete(d.max(0.0), false)
                }
            },
        };
        // Clip 10 while soft, 1 once draws are involved.
        ntm.cfg.clip = if mode.form == Form::Soft { 10.0 } else { 1.0 };
        let len = o.min_len + rng.below(o.max_len - o.min_len + 1);
        let batch = Batch::random(&mut rng, o.batch, len);
        ntm.forward(&batch, mode)?;
        let read = update % K == K - 1;
        if read {
            let t = ntm.totals()?;
            run_loss += t.loss;
            run_bits += t.bits;
            run_n += 1;
        }
        ntm.backward_and_step()?;
        update += 1;
        seqs += o.batch;
        // The switch: soft until the soft evaluation is at most 1 bit per sequence.
        if form == Form::Discrete
            && o.schedule == Schedule::Switch
            && phase.soft_until.is_none()
            && update.is_multiple_of(200)
        {
            let (bits, _) = evaluate(
                &mut ntm,
                Form::Soft,
                &mut eval_rng,
                (o.min_len, o.max_len),
                64,
            )?;
            if bits <= 1.0 {
                eprintln!("copy_task: soft evaluation {bits:.2} bits per sequence after {seqs} sequences: blending to discrete over 500 updates");
                phase.soft_until = Some(update);
            }
        }
        if read && (last_print.elapsed().as_secs_f64() > 5.0 || seqs >= o.sequences) {
            let secs = started.elapsed().as_secs_f64();
            let p = Point {
                sequences: seqs,
                loss: run_loss / run_n as f64,
                bits: run_bits / run_n as f64,
                seconds: secs,
            };
            eprintln!(
                "copy_task: {name}: {seqs} sequences, loss {:.3}, bits per sequence {:.2}, {:.1} sequences/s{}",
                p.loss,
                p.bits,
                seqs as f64 / secs,
                if mode.form == Form::Discrete { format!(", d = {:.3}", mode.d) } else { String::new() }
            );
            curve.push(p);
            (run_loss, run_bits, run_n) = (0.0, 0.0, 0);
            last_print = Instant::now();
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let (bits, on) = evaluate(
        &mut ntm,
        form,
        &mut eval_rng,
        (o.min_len, o.max_len),
        o.eval,
    )?;
    let (bits20, _) = evaluate(&mut ntm, form, &mut eval_rng, (20, 20), 100.max(o.batch))?;
    let line = format!(
        "copy_task: access={} slots={} width={} sequences={} bits_per_sequence={:.2} seconds={:.1} read_on_written={:.3} bits_at_length_20={:.2}{}",
        match form {
            Form::Soft => "soft",
            Form::Discrete => "discrete",
        },
        o.slots,
        o.width,
        seqs,
        bits,
        seconds,
        on,
        bits20,
        match form {
            Form::Soft => String::new(),
            Form::Discrete => format!(" schedule={:?}", o.schedule).to_lowercase(),
        }
    );
    Ok((curve, line))
}

/// Seconds per training sequence at `slots` for a form (a fixed number of sequences after a
/// warm-up batch).
fn time_per_sequence(o: &Opts, form: Form, slots: usize, gpu: &Gpu) -> ntm_kernels::Result<f64> {
    let mut ntm = Ntm::new(gpu, config(o, form, slots))?;
    let mut rng = Rng(o.seed);
    let mode = match form {
        Form::Soft => Mode::SOFT,
        Form::Discrete => Mode::discrete(0.0, false),
    };
    let run = |ntm: &mut Ntm, rng: &mut Rng| -> ntm_kernels::Result<()> {
        let len = o.min_len + rng.below(o.max_len - o.min_len + 1);
        let batch = Batch::random(rng, o.batch, len);
        ntm.forward(&batch, mode)?;
        ntm.backward_and_step()
    };
    run(&mut ntm, &mut rng)?;
    gpu.sync()?;
    let t0 = Instant::now();
    let updates = o.time_sequences.div_ceil(o.batch);
    for _ in 0..updates {
        run(&mut ntm, &mut rng)?;
    }
    gpu.sync()?;
    Ok(t0.elapsed().as_secs_f64() / (updates * o.batch) as f64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("copy_task: {e}");
            std::process::exit(2);
        }
    };
    let gpu = Gpu::new()?;
    eprintln!("copy_task: adapter {}", gpu.adapter());
    std::fs::create_dir_all(&o.out)?;
    let mut curves: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let mut lines = Vec::new();
    if o.sequences > 0 {
        for &form in &o.access {
            let (curve, line) = train(&o, form, &gpu)?;
            let name = match form {
                Form::Soft => "soft".to_string(),
                Form::Discrete => format!("discrete_{:?}", o.schedule).to_lowercase(),
            };
            let mut csv = String::from("sequences,loss,bits_per_sequence,seconds\n");
            for p in &curve {
                csv.push_str(&format!(
                    "{},{:.5},{:.4},{:.2}\n",
                    p.sequences, p.loss, p.bits, p.seconds
                ));
            }
            std::fs::write(o.out.join(format!("learning_{name}.csv")), csv)?;
            println!("{line}");
            curves.push((
                name,
                curve.iter().map(|p| (p.sequences as f64, p.bits)).collect(),
            ));
            lines.push(line);
        }
    }
    {
        // The plot has every learning curve in the directory: runs of other forms and
        // schedules written to the same --out appear beside this one.
        let mut all = curves.clone();
        for entry in std::fs::read_dir(&o.out)? {
            let path = entry?.path();
            let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
            let Some(name) = file
                .strip_prefix("learning_")
                .and_then(|f| f.strip_suffix(".csv"))
            else {
                continue;
            };
            if all.iter().any(|(n, _)| n == name) {
                continue;
            }
            let text = std::fs::read_to_string(&path)?;
            let pts = text
                .lines()
                .skip(1)
                .filter_map(|l| {
                    let v: Vec<f64> = l.split(',').filter_map(|x| x.parse().ok()).collect();
                    (v.len() >= 3).then(|| (v[0], v[2]))
                })
                .collect();
            all.push((name.to_string(), pts));
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        std::fs::write(
            o.out.join("learning.svg"),
            svg::plot(
                "copy task: wrong bits per sequence (training batches)",
                "training sequences",
                "wrong bits per sequence",
                false,
                &all,
            ),
        )?;
    }
    if !o.time_slots.is_empty() {
        let mut csv = String::from("access,slots,seconds_per_sequence\n");
        let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for &form in &o.access {
            let name = if form == Form::Soft {
                "soft"
            } else {
                "discrete"
            };
            let mut pts = Vec::new();
            for &n in &o.time_slots {
                let s = time_per_sequence(&o, form, n, &gpu)?;
                eprintln!(
                    "copy_task: timing {name} N={n}: {:.2} ms per training sequence",
                    s * 1e3
                );
                csv.push_str(&format!("{name},{n},{s:.6}\n"));
                pts.push((n as f64, s));
            }
            series.push((name.to_string(), pts));
        }
        if series.len() == 2 {
            for (k, &n) in o.time_slots.iter().enumerate() {
                println!(
                    "copy_task: timing slots={n} soft_ms={:.2} discrete_ms={:.2} ratio={:.2}",
                    series[0].1[k].1 * 1e3,
                    series[1].1[k].1 * 1e3,
                    series[0].1[k].1 / series[1].1[k].1
                );
            }
        }
        std::fs::write(o.out.join("timing.csv"), csv)?;
        std::fs::write(
            o.out.join("timing.svg"),
            svg::plot(
                "training time per sequence against memory size",
                "memory slots N",
                "seconds per training sequence",
                true,
                &series,
            ),
        )?;
    }
    eprintln!("copy_task: wrote {}", o.out.display());
    Ok(())
}
