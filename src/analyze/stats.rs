//! Small robust statistics: medians, the median absolute deviation, quantiles, and the tail
//! probabilities of the Poisson and binomial distributions that keep small counts from raising
//! alarms on noise.
//!
//! Everything here is a plain function over slices of `f64`; nothing allocates beyond a sorted
//! copy. Tail probabilities are computed in log space, so they stay accurate down to values far
//! smaller than any threshold the pipeline uses.

/// The scale factor that makes the median absolute deviation estimate the standard deviation
/// of normally distributed data.
pub const MAD_SCALE: f64 = 1.4826;

/// The median of `values` (the mean of the two middle values for an even count); `None` when
/// empty. Values that are not finite are ignored.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    })
}

/// The median absolute deviation from the median, scaled by [`MAD_SCALE`] so that it estimates
/// a standard deviation; `None` when empty.
pub fn scaled_mad(values: &[f64]) -> Option<f64> {
    let m = median(values)?;
    let deviations: Vec<f64> = values.iter().map(|x| (x - m).abs()).collect();
    median(&deviations).map(|d| d * MAD_SCALE)
}

/// The median and the scaled MAD of `values`, sorting the slice in place (no allocation, for
/// the inner loops of the anomaly checks); `None` when empty. Values must be finite.
pub fn median_mad_in_place(values: &mut [f64]) -> Option<(f64, f64)> {
    fn middle(v: &[f64]) -> f64 {
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            f64::midpoint(v[n / 2 - 1], v[n / 2])
        }
    }
    if values.is_empty() {
        return None;
    }
    values.sort_unstable_by(f64::total_cmp);
    let m = middle(values);
    for v in values.iter_mut() {
        *v = (*v - m).abs();
    }
    values.sort_unstable_by(f64::total_cmp);
    Some((m, middle(values) * MAD_SCALE))
}

/// The `q` quantile (0 to 1) by linear interpolation between order statistics; `None` when
/// empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}

/// `ln Γ(x)` for `x > 0` (Lanczos approximation, about 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection keeps the approximation in its accurate range.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The probability that a chi-square variable with `df` degrees of freedom is at least `x`:
/// the regularised upper incomplete gamma function `Q(df/2, x/2)`, by its series below
/// `a + 1` and by its continued fraction (modified Lentz) above. Never below the smallest
/// positive float, so that a very strange value still compares as a probability.
pub fn chi_square_sf(statistic: f64, df: f64) -> f64 {
    if statistic.is_nan() || statistic <= 0.0 || df <= 0.0 {
        return 1.0;
    }
    let (shape, half) = (df / 2.0, statistic / 2.0);
    let ln_front = shape * half.ln() - half - ln_gamma(shape);
    let upper = if half < shape + 1.0 {
        // P(a, x) = e^-x x^a / Γ(a) Σ x^n / (a (a+1) … (a+n)).
        let (mut term, mut sum, mut denominator) = (1.0 / shape, 1.0 / shape, shape);
        for _ in 0..1000 {
            denominator += 1.0;
            term *= half / denominator;
            sum += term;
            if term.abs() < sum.abs() * 1e-15 {
                break;
            }
        }
        1.0 - (ln_front.exp() * sum)
    } else {
        let tiny = 1e-300;
        let mut b = half + 1.0 - shape;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut fraction = d;
        for i in 1..1000 {
            let step = f64::from(i);
            let an = -step * (step - shape);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let delta = d * c;
            fraction *= delta;
            if (delta - 1.0).abs() < 1e-15 {
                break;
            }
        }
        ln_front.exp() * fraction
    };
    upper.clamp(f64::MIN_POSITIVE, 1.0)
}

/// `ln` of the Poisson probability of exactly `k` events with mean `lambda`.
fn ln_poisson_pmf(k: u64, lambda: f64) -> f64 {
    let k = k as f64;
    if lambda <= 0.0 {
        return if k == 0.0 { 0.0 } else { f64::NEG_INFINITY };
    }
    k * lambda.ln() - lambda - ln_gamma(k + 1.0)
}

/// `ln` of the binomial probability of exactly `k` successes in `n` trials of probability `p`.
fn ln_binomial_pmf(k: u64, n: u64, p: f64) -> f64 {
    if k > n {
        return f64::NEG_INFINITY;
    }
    if p <= 0.0 {
        return if k == 0 { 0.0 } else { f64::NEG_INFINITY };
    }
    if p >= 1.0 {
        return if k == n { 0.0 } else { f64::NEG_INFINITY };
    }
    let (kf, nf) = (k as f64, n as f64);
    ln_gamma(nf + 1.0) - ln_gamma(kf + 1.0) - ln_gamma(nf - kf + 1.0)
        + kf * p.ln()
        + (nf - kf) * (1.0 - p).ln()
}

/// `ln` of the negative binomial probability of exactly `k` with mean `mean` and variance
/// `mean + dispersion × mean²` (a Poisson whose mean is gamma-distributed with shape
/// `1 / dispersion`); a dispersion of 0 is the Poisson.
fn ln_negative_binomial_pmf(k: u64, mean: f64, dispersion: f64) -> f64 {
    if dispersion <= 0.0 || mean <= 0.0 {
        return ln_poisson_pmf(k, mean);
    }
    let r = 1.0 / dispersion;
    let kf = k as f64;
    ln_gamma(kf + r) - ln_gamma(r) - ln_gamma(kf + 1.0)
        + r * (r / (r + mean)).ln()
        + kf * (mean / (r + mean)).ln()
}

/// Sums probabilities given as logarithms, from the largest term, stopping when terms no
/// longer matter.
fn sum_ln(terms: impl Iterator<Item = f64>) -> f64 {
    let mut total = 0.0f64;
    let mut biggest = f64::NEG_INFINITY;
    for t in terms {
        if t == f64::NEG_INFINITY {
            continue;
        }
        if biggest == f64::NEG_INFINITY {
            biggest = t;
        }
        let term = (t - biggest).exp();
        total += term;
        if term < total * 1e-17 && t < biggest {
            break;
        }
    }
    if biggest == f64::NEG_INFINITY {
        0.0
    } else {
        (total.ln() + biggest).exp().min(1.0)
    }
}

/// P(X ≤ k) for X ~ Poisson(`lambda`).
pub fn poisson_cdf(k: u64, lambda: f64) -> f64 {
    // Sum downwards from k: the terms shrink once below the mode.
    sum_ln((0..=k).rev().map(|i| ln_poisson_pmf(i, lambda)))
}

/// P(X ≥ k) for X ~ Poisson(`lambda`).
pub fn poisson_sf(k: u64, lambda: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    // Terms beyond k shrink once past the mode; a generous bound covers the rest.
    let end = k + 64 + (20.0 * lambda.max(1.0).sqrt() + lambda) as u64;
    sum_ln((k..=end).map(|i| ln_poisson_pmf(i, lambda)))
}

/// P(X ≤ k) for X negative binomial with `mean` and variance `mean + dispersion × mean²`.
pub fn negative_binomial_cdf(k: u64, mean: f64, dispersion: f64) -> f64 {
    sum_ln(
        (0..=k)
            .rev()
            .map(|i| ln_negative_binomial_pmf(i, mean, dispersion)),
    )
}

/// P(X ≥ k) for X negative binomial with `mean` and variance `mean + dispersion × mean²`.
pub fn negative_binomial_sf(k: u64, mean: f64, dispersion: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    let sd = (mean + dispersion * mean * mean).max(1.0).sqrt();
    let end = k + 64 + (40.0 * sd + mean) as u64;
    sum_ln((k..=end).map(|i| ln_negative_binomial_pmf(i, mean, dispersion)))
}

/// P(X ≤ k) for X ~ Binomial(`n`, `p`).
pub fn binomial_cdf(k: u64, n: u64, p: f64) -> f64 {
    if k >= n {
        return 1.0;
    }
    sum_ln((0..=k).rev().map(|i| ln_binomial_pmf(i, n, p)))
}

/// P(X ≥ k) for X ~ Binomial(`n`, `p`).
pub fn binomial_sf(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    sum_ln((k..=n).map(|i| ln_binomial_pmf(i, n, p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-300)
    }

    #[test]
    fn medians_mads_and_quantiles_by_hand() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        // |x - 3| = 2, 1, 0, 1, 97 → median 1 → scaled 1.4826.
        let mad = scaled_mad(&[1.0, 2.0, 3.0, 4.0, 100.0]).unwrap();
        assert!(close(mad, 1.4826, 1e-12), "{mad}");
        let mut v = [100.0, 4.0, 1.0, 3.0, 2.0];
        assert_eq!(median_mad_in_place(&mut v), Some((3.0, mad)));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.1), Some(1.4));
        assert_eq!(quantile(&[7.0], 0.9), Some(7.0));
    }

    #[test]
    fn poisson_tails_match_known_values() {
        // P(X = 0 | 3) = e^-3.
        assert!(close(poisson_cdf(0, 3.0), (-3.0f64).exp(), 1e-10));
        // P(X ≤ 2 | 1) = e^-1 (1 + 1 + 1/2) = 0.919698602928606.
        assert!(close(poisson_cdf(2, 1.0), 0.919_698_602_928_606, 1e-10));
        // P(X ≥ 3 | 1) = 1 - 0.9196986 = 0.0803013970713942.
        assert!(close(poisson_sf(3, 1.0), 0.080_301_397_071_394_2, 1e-9));
        // Far tails stay positive and tiny rather than rounding to zero or going negative.
        let tiny = poisson_sf(60, 10.0);
        assert!(tiny > 0.0 && tiny < 1e-20, "{tiny}");
        assert!(close(poisson_cdf(0, 100.0), (-100.0f64).exp(), 1e-9));
    }

    #[test]
    fn negative_binomial_tails_match_known_values() {
        // Shape 1 (dispersion 1) is geometric: P(X = k) = (1 - p) p^k with p = mean / (1 + mean).
        // Mean 3: P(X ≤ 2) = 1 - 0.75^3 = 0.578125; P(X ≥ 4) = 0.75^4.
        assert!(close(negative_binomial_cdf(2, 3.0, 1.0), 0.578_125, 1e-10));
        assert!(close(
            negative_binomial_sf(4, 3.0, 1.0),
            0.75f64.powi(4),
            1e-10
        ));
        // Dispersion 0 is the Poisson.
        assert!(close(
            negative_binomial_cdf(2, 1.0, 0.0),
            0.919_698_602_928_606,
            1e-10
        ));
        // Mean 120, shape 8 (dispersion 0.125): P(X ≤ 60) = 0.061162166110895 (summed in
        // Python from the gamma-Poisson formula).
        let half = negative_binomial_cdf(60, 120.0, 0.125);
        assert!(close(half, 0.061_162_166_110_895, 1e-9), "{half}");
        // Over-dispersion makes a doubling far more probable than under a Poisson.
        assert!(negative_binomial_sf(240, 120.0, 0.05) > 1e3 * poisson_sf(240, 120.0));
    }

    #[test]
    fn binomial_tails_match_known_values() {
        // P(X ≥ 9 | 10, 0.5) = 11/1024.
        assert!(close(binomial_sf(9, 10, 0.5), 11.0 / 1024.0, 1e-10));
        // P(X ≤ 1 | 10, 0.5) = 11/1024.
        assert!(close(binomial_cdf(1, 10, 0.5), 11.0 / 1024.0, 1e-10));
        assert!(close(binomial_sf(0, 10, 0.5), 1.0, 0.0));
        assert!(close(binomial_cdf(10, 10, 0.5), 1.0, 0.0));
        // P(X = 0 | 450, 0.043) = 0.957^450.
        assert!(close(binomial_cdf(0, 450, 0.043), 0.957f64.powi(450), 1e-9));
    }

    #[test]
    fn chi_square_tails_match_known_values() {
        // Critical values at 5%: 3.841459 (1 df), 18.307038 (10 df); at 0.1%: 10.827566 (1 df).
        assert!(close(chi_square_sf(3.841_459, 1.0), 0.05, 1e-6));
        assert!(close(chi_square_sf(18.307_038, 10.0), 0.05, 1e-6));
        assert!(close(chi_square_sf(10.827_566, 1.0), 0.001, 1e-7));
        // 2 df: exactly e^(-x/2).
        assert!(close(chi_square_sf(7.0, 2.0), (-3.5f64).exp(), 1e-12));
        assert!(close(chi_square_sf(0.5, 2.0), (-0.25f64).exp(), 1e-12));
        assert!(close(chi_square_sf(0.0, 3.0), 1.0, 0.0));
        let far = chi_square_sf(2000.0, 4.0);
        assert!(far > 0.0 && far < 1e-300, "{far}");
    }
}
