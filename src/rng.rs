//! Random numbers that are the same on every machine and every device.
//!
//! `SplitMix64` drives initialization, shuffling and tests on the host.
//! `dropout_uniform` is the counter-based generator the dropout kernels and the CPU
//! reference share: the value for element `idx` depends only on `(seed, idx)`, so a
//! kernel reproduces the reference's mask exactly, in any launch order.

/// Deterministic test RNG (SplitMix64): the same numbers on every machine.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Standard normal (Box-Muller) times `scale`.
    pub fn normal(&mut self, scale: f64) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        scale * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    pub fn normal_vec(&mut self, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| self.normal(scale)).collect()
    }
    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Uniform in [0, 1) with 24 bits, for dropout element `idx` under `seed`.
/// Mirrored bit for bit by `dropout_uniform` in `kernels/cudaenc.cuh`.
pub fn dropout_uniform(seed: u64, idx: u64) -> f32 {
    let mut z = seed.wrapping_add(idx.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) as f32 * (1.0 / 16_777_216.0)
}

/// A seed for one dropout site at one step, derived from the run's seed.
pub fn derive_seed(base: u64, step: u64, site: u64) -> u64 {
    let mut r = SplitMix64::new(base ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ site.wrapping_mul(0x8CB9_2BA7_2F3D_8DD7));
    r.next_u64()
}
