//! A small, seedable, portable random number generator (xoshiro256++ seeded by
//! SplitMix64) and the few distributions the simulator needs. Hand-written so a seed means
//! the same data set forever, whatever version of a random crate is current.

pub struct Rng {
    state: [u64; 4],
}

fn split_mix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut s = seed;
        Rng { state: [split_mix64(&mut s), split_mix64(&mut s), split_mix64(&mut s), split_mix64(&mut s)] }
    }

    /// An independent stream for `(seed, stream)`, e.g. one per simulated day.
    pub fn for_stream(seed: u64, stream: u64) -> Rng {
        let mut s = seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
        Rng::new(split_mix64(&mut s))
    }

    pub fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = &mut self.state;
        let result = s0.wrapping_add(*s3).rotate_left(23).wrapping_add(*s0);
        let t = *s1 << 17;
        *s2 ^= *s0;
        *s3 ^= *s1;
        *s1 ^= *s2;
        *s0 ^= *s3;
        *s2 ^= t;
        *s3 = s3.rotate_left(45);
        result
    }

    /// Uniform on [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    pub fn uniform_range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.uniform()
    }

    /// Uniform integer in [0, n), unbiased (Lemire's method with rejection).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0) has no values");
        let mut product = u128::from(self.next_u64()) * u128::from(n);
        let mut low = product as u64;
        if low < n {
            let threshold = n.wrapping_neg() % n;
            while low < threshold {
                product = u128::from(self.next_u64()) * u128::from(n);
                low = product as u64;
            }
        }
        (product >> 64) as u64
    }

    /// Standard normal by the Box–Muller transform.
    pub fn standard_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    pub fn normal(&mut self, mean: f64, std_dev: f64) -> f64 {
        mean + std_dev * self.standard_normal()
    }

    /// Poisson by Knuth's multiplication method; fine for the small means used here.
    pub fn poisson(&mut self, mean: f64) -> u32 {
        assert!((0.0..=30.0).contains(&mean), "poisson mean {mean} outside the supported range");
        let limit = (-mean).exp();
        let mut count = 0;
        let mut product = self.uniform();
        while product > limit {
            count += 1;
            product *= self.uniform();
        }
        count
    }

    /// `k` distinct indices of `0..n`, in random order (partial Fisher–Yates).
    pub fn sample_indices(&mut self, n: usize, k: usize) -> Vec<usize> {
        let k = k.min(n);
        let mut pool: Vec<usize> = (0..n).collect();
        for i in 0..k {
            let j = i + self.below((n - i) as u64) as usize;
            pool.swap(i, j);
        }
        pool.truncate(k);
        pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let a: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(Rng::new(8).next_u64(), a[0]);
    }

    #[test]
    fn distributions_have_the_right_moments() {
        let mut rng = Rng::new(1);
        let n = 200_000;
        let normal: Vec<f64> = (0..n).map(|_| rng.normal(10.0, 2.0)).collect();
        let mean = normal.iter().sum::<f64>() / n as f64;
        let var = normal.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!((mean - 10.0).abs() < 0.05, "normal mean {mean}");
        assert!((var.sqrt() - 2.0).abs() < 0.05, "normal std {}", var.sqrt());
        let poisson_mean = (0..n).map(|_| rng.poisson(2.5) as f64).sum::<f64>() / n as f64;
        assert!((poisson_mean - 2.5).abs() < 0.03, "poisson mean {poisson_mean}");
        let below: Vec<u64> = (0..n).map(|_| rng.below(10)).collect();
        assert!(below.iter().all(|&v| v < 10));
        let sample = rng.sample_indices(100, 30);
        let mut sorted = sample.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 30);
    }
}
