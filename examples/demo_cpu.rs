//! Train the CPU reference on the demo corpus and print the accuracy and time.
//! `cargo run --release --example demo_cpu -- [ce|bce] [epochs] [width] [layers] [heads] [batch] [lr] [full]`
//! (`full`: keep the 100,277-id cl100k vocabulary instead of the dense remap).

use cudaenc::config::Loss;
use cudaenc::train::cpu_demo::{train_demo_cpu, DemoOptions};

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let mut o = DemoOptions::default();
    let arg = |i: usize| a.get(i).map(|s| s.as_str());
    if let Some(l) = arg(0) {
        o.loss = if l == "bce" { Loss::Bce } else { Loss::Ce };
    }
    if let Some(x) = arg(1) { o.epochs = x.parse()?; }
    if let Some(x) = arg(2) { o.d_model = x.parse()?; o.d_ff = 4 * o.d_model; }
    if let Some(x) = arg(3) { o.n_layer = x.parse()?; }
    if let Some(x) = arg(4) { o.n_head = x.parse()?; }
    if let Some(x) = arg(5) { o.batch_size = x.parse()?; }
    if let Some(x) = arg(6) { o.lr = x.parse()?; }
    if arg(7) == Some("full") { o.remap = false; }
    println!("options: {o:?}");
    let r = train_demo_cpu(&o, |line| println!("{line}"))?;
    println!(
        "{}: vocab {} width {} layers {} heads {} ffn {} dropout {}: val acc {:.2}% in {:.1}s training (+{:.1}s data prep)",
        o.loss.name(), r.config.vocab, r.config.d_model, r.config.n_layer, r.config.n_head, r.config.d_ff,
        r.config.dropout, 100.0 * r.val_acc, r.train_seconds, r.prep_seconds
    );
    Ok(())
}
