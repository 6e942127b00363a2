//! The evaluation's own random numbers: a seeded xoshiro256** stream and the draws the history
//! needs (uniform, normal, gamma, Poisson, negative binomial, a pick by weight).
//!
//! Nothing here is shared with the demo: the evaluation must not inherit the demo's choices.
//! Every file of the history draws from a stream of its own, keyed by seed, force and month, so
//! one file can be made again without making the others.

/// A seeded stream of random numbers (xoshiro256**, seeded through splitmix64).
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A stream keyed by the given numbers (a seed, then whatever names the stream).
    pub fn new(keys: &[u64]) -> Rng {
        let mut x = 0x5EED_u64;
        for k in keys {
            x ^= splitmix(&mut x.wrapping_add(*k));
            x = x.rotate_left(17) ^ k.wrapping_mul(0xA24B_AED4_963E_E407);
        }
        Rng {
            s: [
                splitmix(&mut x),
                splitmix(&mut x),
                splitmix(&mut x),
                splitmix(&mut x),
            ],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// A whole number in [0, n) (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        ((self.next_u64() >> 11) % n as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.uniform().max(f64::MIN_POSITIVE);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Gamma with this shape and mean 1 (Marsaglia and Tsang).
    pub fn gamma_mean_one(&mut self, shape: f64) -> f64 {
        self.gamma(shape) / shape
    }

    /// Gamma with this shape and scale 1.
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = self.uniform().max(f64::MIN_POSITIVE);
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let shift = shape - 1.0 / 3.0;
        let spread = 1.0 / (9.0 * shift).sqrt();
        loop {
            let x = self.normal();
            let cube = (1.0 + spread * x).powi(3);
            if cube <= 0.0 {
                continue;
            }
            let u = self.uniform().max(f64::MIN_POSITIVE);
            if u.ln() < 0.5 * x * x + shift - shift * cube + shift * cube.ln() {
                return shift * cube;
            }
        }
    }

    /// Poisson with mean `mean`: by multiplication of uniforms below 30, by the PTRS
    /// transformed rejection (Hörmann 1993) above.
    pub fn poisson(&mut self, mean: f64) -> u64 {
        if mean <= 0.0 {
            return 0;
        }
        if mean < 30.0 {
            let limit = (-mean).exp();
            let (mut k, mut p) = (0u64, self.uniform());
            while p > limit {
                k += 1;
                p *= self.uniform();
            }
            return k;
        }
        let slam = mean.sqrt();
        let loglam = mean.ln();
        let coef_b = 0.931 + 2.53 * slam;
        let coef_a = -0.059 + 0.02483 * coef_b;
        let inv_alpha = 1.1239 + 1.1328 / (coef_b - 3.4);
        let vr = 0.9277 - 3.6224 / (coef_b - 2.0);
        loop {
            let u = self.uniform() - 0.5;
            let v = self.uniform();
            let us = 0.5 - u.abs();
            let k = ((2.0 * coef_a / us + coef_b) * u + mean + 0.43).floor();
            if us >= 0.07 && v <= vr {
                return k as u64;
            }
            if k < 0.0 || (us < 0.013 && v > us) {
                continue;
            }
            let lhs = (v * inv_alpha / (coef_a / (us * us) + coef_b)).ln();
            let rhs = -mean + k * loglam - ln_factorial(k);
            if lhs <= rhs {
                return k as u64;
            }
        }
    }

    /// Negative binomial (gamma-Poisson) with this mean and shape: variance mean + mean²/shape.
    pub fn negative_binomial(&mut self, mean: f64, shape: f64) -> u64 {
        let rate = mean * self.gamma_mean_one(shape);
        self.poisson(rate)
    }

    /// An index drawn with probability proportional to its weight.
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut x = self.uniform() * total;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len().saturating_sub(1)
    }

    /// Shuffles in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// ln(k!) by Stirling's series (exact enough for k ≥ 10, summed below).
fn ln_factorial(k: f64) -> f64 {
    if k < 10.0 {
        return (2..=k as u64).map(|i| (i as f64).ln()).sum();
    }
    let k1 = k + 1.0;
    (k1 - 0.5) * k1.ln() - k1 + 0.5 * std::f64::consts::TAU.ln() + 1.0 / (12.0 * k1)
        - 1.0 / (360.0 * k1.powi(3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_var(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let m = xs.iter().sum::<f64>() / n;
        (
            m,
            xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0),
        )
    }

    #[test]
    fn poisson_and_negative_binomial_have_their_mean_and_variance() {
        let mut rng = Rng::new(&[7]);
        for mean in [3.0, 80.0, 5000.0] {
            let xs: Vec<f64> = (0..20_000).map(|_| rng.poisson(mean) as f64).collect();
            let (m, v) = mean_var(&xs);
            assert!((m / mean - 1.0).abs() < 0.02, "{mean}: {m}");
            assert!((v / mean - 1.0).abs() < 0.06, "{mean}: {v}");
        }
        let xs: Vec<f64> = (0..20_000)
            .map(|_| rng.negative_binomial(400.0, 20.0) as f64)
            .collect();
        let (m, v) = mean_var(&xs);
        let want = 400.0 + 400.0 * 400.0 / 20.0;
        assert!((m / 400.0 - 1.0).abs() < 0.02, "{m}");
        assert!((v / want - 1.0).abs() < 0.1, "{v} against {want}");
    }

    #[test]
    fn streams_with_other_keys_differ_and_the_same_keys_repeat() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(&[1, 2]);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(&[1, 2]);
                move |_| r.next_u64()
            })
            .collect();
        let c: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(&[2, 1]);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
