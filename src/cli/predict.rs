//! `cudaenc predict`: label and probability for texts given as arguments, in a file
//! (one text per line) or on standard input (one per line).

use super::eval::load_run;
use super::setup::Device;
use crate::data::read::clean_text;
use crate::data::tokenize;
use crate::data::Truncate;
use crate::device::DeviceKind;
use crate::model::Batch;
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
        reader.split(b'\n').collect::<std::io::Result<_>>().context("reading texts")?
    };
    let policy = config.truncate.parse().map_err(anyhow::Error::msg)?;
    let truncate = Truncate::new(config.model.max_len, policy);
    let mut shown = 0;
    for line in &lines {
        // the same cleaning as training: invalid UTF-8 replaced, <br /> -> newline
        let (text, _, _) = clean_text(line);
        if text.trim().is_empty() {
            continue;
        }
        let mut ids = tokenize::encode(&text);
        if !config.id_map.is_empty() {
            // a demo model's vocabulary is the dense remap of the ids it saw
            ids = ids.iter().filter_map(|id| config.id_map.binary_search(id).ok().map(|i| i as u32)).collect();
        }
        if let Some(map) = &config.vocab_map {
            // a compacted run: ids unseen in its training share row 0
            ids = ids.iter().map(|&id| map.map(id)).collect();
        }
        if ids.is_empty() {
            println!("unknown\t-\t{}", text.trim());
            continue;
        }
        let ids = truncate.to_vec(&ids);
        let batch = Batch::from_reviews(&[&ids], &[0]);
        let p = engine.predict(&batch)?[0];
        if !p.is_finite() {
            bail!(
                "the model of {} gives probability {p} for \"{}\": its checkpoint is broken (NaN weights?); retrain it",
                args.run.display(),
                text.trim()
            );
        }
        let label = if crate::reference::engine::predicted_label(p) == 1 { "positive" } else { "negative" };
        println!("{label}\t{p:.4}\t{}", text.trim());
        shown += 1;
    }
    if shown == 0 && lines.iter().all(|l| clean_text(l).0.trim().is_empty()) {
        bail!("no text to classify: give texts as arguments, --file, or lines on standard input");
    }
    Ok(())
}
