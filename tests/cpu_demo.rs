//! A short CPU training run learns the demo corpus (both heads).

use cudaenc::config::Loss;
use cudaenc::train::cpu_demo::{train_demo_cpu, DemoOptions};

#[test]
fn cpu_engine_learns_the_demo_corpus() {
    for loss in [Loss::Ce, Loss::Bce] {
        let o = DemoOptions { loss, epochs: 5, n_train: 3000, n_val: 500, ..DemoOptions::default() };
        let r = train_demo_cpu(&o, |l| println!("{}: {l}", loss.name())).unwrap();
        println!("{}: val acc {:.2}% in {:.1}s (expect >= 90%)", loss.name(), 100.0 * r.val_acc, r.train_seconds);
        assert!(r.val_acc >= 0.90, "{}: val acc {}", loss.name(), r.val_acc);
    }
}
