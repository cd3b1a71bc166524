//! `cudaenc predict`: label and probability for texts given as arguments, in a file
//! (one text per line) or on standard input (one per line).

use super::eval::load_run;
use super::setup::Device;
use crate::data::read::clean_text;
use crate::device::DeviceKind;
use crate::infer::{self, TextPolicy};
use anyhow::{bail, Context, Result};
use std::io::BufRead;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run folder written by `cudaenc train`
    #[arg(long)]
    pub run: PathBuf,
    /// Read texts from this file, one per line
    #[arg(long)]
    pub file: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceKind,
    /// Texts to classify (none and no --file: read standard input)
    pub texts: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    if args.file.is_some() && !args.texts.is_empty() {
        bail!("give texts either as arguments or with --file, not both");
    }
    // the run first: a wrong --run must fail at once, not after standard input is read
    let device = Device::open(args.device)?;
    let (config, mut engine) =
        load_run(&args.run, &device).with_context(|| format!("loading run {}", args.run.display()))?;
    let lines: Vec<Vec<u8>> = if !args.texts.is_empty() {
        args.texts.iter().map(|t| t.as_bytes().to_vec()).collect()
    } else {
        let reader: Box<dyn BufRead> = match &args.file {
            Some(p) => Box::new(std::io::BufReader::new(
                std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?,
            )),
            None => Box::new(std::io::stdin().lock()),
        };
        let from = || match &args.file {
            Some(p) => format!("reading texts from {}", p.display()),
            None => "reading texts from standard input".to_string(),
        };
        reader.split(b'\n').collect::<std::io::Result<_>>().with_context(from)?
    };
    // the cleaning, tokenizer and truncation of training, then length-sorted batches
    let policy = TextPolicy::of_run(&config)?;
    let prepared = policy.prepare_all(&lines);
    let known: Vec<&[u32]> = prepared.iter().filter(|p| !p.ids.is_empty()).map(|p| p.ids.as_slice()).collect();
    let set = infer::review_set(&known);
    let cfg = infer::batch_config(config.train.batch_size, None, policy.truncate);
    let mut probs = infer::predict_set(engine.as_mut(), &set, &cfg)?.into_iter();
    let mut shown = 0;
    for (line, prep) in lines.iter().zip(&prepared) {
        let (text, _, _) = clean_text(line);
        if text.trim().is_empty() {
            continue;
        }
        // one output line per text: the newlines of `<br />` tags shown as spaces
        let text = text.trim().replace('\n', " ");
        if prep.ids.is_empty() {
            println!("unknown\t-\t{text}");
            continue;
        }
        let p = probs.next().context("internal: fewer probabilities than texts")?;
        if !p.is_finite() {
            bail!(
                "the model of {} gives probability {p} for \"{text}\": its checkpoint is broken (NaN weights?); retrain it",
                args.run.display()
            );
        }
        let label = if crate::reference::engine::predicted_label(p) == 1 { "positive" } else { "negative" };
        println!("{label}\t{p:.4}\t{text}");
        shown += 1;
    }
    if shown == 0 && lines.iter().all(|l| clean_text(l).0.trim().is_empty()) {
        bail!("no text to classify: give texts as arguments, --file, or lines on standard input");
    }
    Ok(())
}
