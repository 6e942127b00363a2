//! Analysis settings as written in a pipeline file: `[anomalies]` (thresholds of every check)
//! and `[population]` (the reference for rates per 1,000). Each struct has the defaults the
//! stop-and-search pipeline was tuned with (see `QUALITY.md`), so a pipeline names only what it
//! changes. `config` parses and checks them ([`AnomalySettings::check`] lists every problem for
//! `check-config`); `analyze` uses them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::observe::ObserveSettings;

/// A plausible range around an expected value: half-width `max(z × spread, relative × level,
/// min_change)`, where spread is the scaled median absolute deviation of the baseline and level
/// is the expected value (count or share). A value is
/// flagged only when even the edge of this range makes it improbable (Poisson for counts,
/// binomial for shares), so small counts never alarm on noise.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Band {
    /// Robust z: multiples of the scaled MAD.
    pub z: f64,
    /// Relative change that is never unusual by itself (0.5 = ±50%).
    pub relative: f64,
    /// Absolute change that is never unusual by itself (shares; 0 for counts).
    #[serde(default)]
    pub min_change: f64,
}

/// Lasting steps: the last `months` values all outside a (narrower) band around the median of
/// the months before.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LevelShiftSettings {
    /// Months a step must last before it is reported (and becomes the new baseline).
    pub months: usize,
    /// The band each of those months must leave.
    pub z: f64,
    /// Relative part of the band.
    pub relative: f64,
    /// Absolute part of the band (shares).
    pub min_change: f64,
    /// Tail probability each of those months must stay under.
    pub probability: f64,
}

impl Default for LevelShiftSettings {
    fn default() -> Self {
        LevelShiftSettings {
            months: 3,
            z: 3.0,
            relative: 0.3,
            min_change: 0.005,
            probability: 0.01,
        }
    }
}

/// Comparison with the other forces in the same month.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeerSettings {
    /// Fewest other forces with data needed for a comparison.
    pub min_peers: usize,
    /// A peer's latest return is used when it is at most this many months older.
    pub max_age_months: u32,
    /// Fewest records (in the series' denominator) for a force to count as a peer.
    pub min_records: u64,
    /// The band around the peers' median.
    pub band: Band,
    /// A difference in this many of the force's returns in a row (this one and those before
    /// it, each against the other forces' latest) is reported at warning, once, in the return
    /// that completes the run; a shorter one is information.
    pub lasting_periods: u32,
    /// A volume anomaly is explained as national when the other forces' records this period,
    /// each against its own usual level, moved by at least this much (median of the forces) and
    /// the force's value is ordinary once its expectation moves with them.
    pub national_min_change: f64,
    /// What is compared: a declared share (`[[observe.shares]]`, by name), a dimension (every
    /// category) or `dimension=category`.
    pub series: Vec<String>,
}

impl Default for PeerSettings {
    fn default() -> Self {
        PeerSettings {
            min_peers: 10,
            max_age_months: 2,
            min_records: 30,
            band: Band {
                z: 4.0,
                relative: 1.0,
                min_change: 0.05,
            },
            lasting_periods: 3,
            national_min_change: 0.2,
            series: Vec::new(),
        }
    }
}

/// Days without records inside a submission.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GapDaySettings {
    /// Fewest empty days reported.
    pub min_days: u64,
    /// Most probable a set of empty days may be (under the force's own day-to-day variation)
    /// and still be reported.
    pub probability: f64,
}

impl Default for GapDaySettings {
    fn default() -> Self {
        GapDaySettings {
            min_days: 2,
            probability: 1e-6,
        }
    }
}

/// Records sent again: this period's records against the force's previous period and the other
/// forces' latest (by their fingerprints).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResentSettings {
    /// Fewest records a submission must hold to be compared.
    pub min_records: u64,
    /// Share of distinct records two submissions hold in common (Jaccard similarity) from which
    /// one is reported as the other sent again.
    pub min_similarity: f64,
    /// How far above the force's own usual overlap between consecutive periods that share must
    /// be (a return whose records legitimately repeat, such as one without times, overlaps
    /// every period).
    pub above_usual: f64,
}

impl Default for ResentSettings {
    fn default() -> Self {
        ResentSettings {
            min_records: 20,
            min_similarity: 0.5,
            above_usual: 0.3,
        }
    }
}

/// An aggregate return's figures against the force's previous return and the other forces'
/// (`anomaly_figure`, `anomaly_figures_resent`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FigureSettings {
    /// The force's latest earlier periods a figure's usual value is the median of.
    pub baseline_periods: usize,
    /// Other forces' returns of the period, with their previous period's figure, needed to
    /// take the national change and the ordinary spread from them.
    pub min_peers: usize,
    /// The spread of a figure's change (on the log scale) assumed with fewer peers.
    pub default_spread: f64,
    /// The least spread of a figure's change taken from peers.
    pub min_spread: f64,
    /// Half-width of the band in spreads.
    pub z: f64,
    /// The least relative change that is reported (the band's least half-width).
    pub relative: f64,
    /// How many spreads (on the log scale) from the other forces' median a force's first rate,
    /// ratio or share must be, and outside all of theirs, to be reported.
    pub level_z: f64,
    /// And at least how many times above or below their median (forces differ widely; a unit
    /// mistake is a factor of 10 or 100, an inverted ratio its square).
    pub level_factor: f64,
    /// Fewest counts compared for a return sent again.
    pub resent_min_figures: usize,
    /// Counts below this are not compared (small counts repeat by chance).
    pub resent_min_value: f64,
    /// Share of the compared counts that must be exactly equal.
    pub resent_share: f64,
}

impl Default for FigureSettings {
    fn default() -> Self {
        FigureSettings {
            baseline_periods: 1,
            min_peers: 8,
            default_spread: 0.15,
            min_spread: 0.1,
            z: 4.0,
            relative: 0.3,
            level_z: 5.0,
            level_factor: 4.0,
            resent_min_figures: 10,
            resent_min_value: 10.0,
            resent_share: 0.9,
        }
    }
}

/// A field's whole mix of categories against the force's history (`anomaly_distribution_shift`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistributionSettings {
    /// Share of records that must have moved category (total variation distance) for a change
    /// to be reported, however improbable.
    pub min_change: f64,
    /// Fewest records with a value in the field, this period and in each history period used.
    pub min_records: u64,
}

impl Default for DistributionSettings {
    fn default() -> Self {
        DistributionSettings {
            min_change: 0.05,
            min_records: 30,
        }
    }
}

/// The `[anomalies]` table of a pipeline.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalySettings {
    /// Whether gaps and anomalies are looked for at all.
    pub enabled: bool,
    /// Months of the force's own history needed before comparing with it.
    pub min_history_months: usize,
    /// Most recent months of history the baseline is taken from.
    pub baseline_months: usize,
    /// Months of history from which volumes are adjusted for the month of the year.
    pub seasonal_min_months: usize,
    /// Most probable an observation may be (at the edge of its band) and still be reported.
    pub probability: f64,
    /// Dimensions whose category shares are compared with the force's own history.
    pub dimensions: Vec<String>,
    /// Records a month.
    pub volume: Band,
    /// Blank rates (increases only).
    pub blank_rate: Band,
    /// The declared recording-quality shares (increases only).
    pub recording: Band,
    /// How often two declared dimensions agree (increases only).
    pub agreement: Band,
    /// A category with no records is reported when history expects at least this many.
    pub vanished_min_expected: f64,
    /// Lasting steps.
    pub level_shift: LevelShiftSettings,
    /// Comparison with other forces.
    pub peers: PeerSettings,
    /// Days without records.
    pub gap_days: GapDaySettings,
    /// Records sent again.
    pub resent: ResentSettings,
    /// A field's whole mix of categories.
    pub distribution: DistributionSettings,
    /// An aggregate return's figures.
    pub figures: FigureSettings,
}

impl Default for AnomalySettings {
    fn default() -> Self {
        AnomalySettings {
            enabled: true,
            min_history_months: 6,
            baseline_months: 12,
            seasonal_min_months: 24,
            probability: 1e-4,
            dimensions: Vec::new(),
            volume: Band {
                z: 4.0,
                relative: 0.4,
                min_change: 0.2,
            },
            blank_rate: Band {
                z: 4.0,
                relative: 1.0,
                min_change: 0.05,
            },
            recording: Band {
                z: 4.0,
                relative: 0.5,
                min_change: 0.05,
            },
            agreement: Band {
                z: 4.0,
                relative: 0.0,
                min_change: 0.05,
            },
            vanished_min_expected: 10.0,
            level_shift: LevelShiftSettings::default(),
            peers: PeerSettings::default(),
            gap_days: GapDaySettings::default(),
            resent: ResentSettings::default(),
            distribution: DistributionSettings::default(),
            figures: FigureSettings::default(),
        }
    }
}

/// A series compared with peers, parsed from [`PeerSettings::series`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerSeries {
    /// A recording-quality share the profile declares (`[[observe.shares]]`), by name.
    Recording(String),
    /// Every category of a dimension, or one.
    Dimension {
        /// The dimension.
        dimension: String,
        /// One category, or all when `None`.
        category: Option<String>,
    },
}

impl PeerSeries {
    /// Reads one entry of `series`: the name of a declared share, `dimension` or
    /// `dimension=category`.
    pub fn parse(spec: &str, observe: &ObserveSettings) -> PeerSeries {
        match observe.share(spec.trim()) {
            Some(share) => PeerSeries::Recording(share.name.clone()),
            None => match spec.split_once('=') {
                Some((d, c)) => PeerSeries::Dimension {
                    dimension: d.trim().to_owned(),
                    category: Some(c.trim().to_owned()),
                },
                None => PeerSeries::Dimension {
                    dimension: spec.trim().to_owned(),
                    category: None,
                },
            },
        }
    }
}

impl AnomalySettings {
    /// Every problem with these settings for a schema whose counts have `dimensions` (each
    /// dimension with the values it may take: `RecordSchema::dimensions`), as messages naming
    /// the key.
    pub fn check(
        &self,
        dimensions: &BTreeMap<String, Vec<String>>,
        observe: &ObserveSettings,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let share = |name: &str, v: f64, problems: &mut Vec<String>| {
            if !(0.0..=1.0).contains(&v) {
                problems.push(format!("anomalies.{name} must be between 0 and 1, not {v}"));
            }
        };
        let positive = |name: &str, v: f64, problems: &mut Vec<String>| {
            if v.is_nan() || v < 0.0 {
                problems.push(format!("anomalies.{name} must not be negative, not {v}"));
            }
        };
        for (name, band) in [
            ("volume", &self.volume),
            ("blank_rate", &self.blank_rate),
            ("recording", &self.recording),
            ("agreement", &self.agreement),
            ("peers.band", &self.peers.band),
        ] {
            positive(&format!("{name}.z"), band.z, &mut problems);
            positive(&format!("{name}.relative"), band.relative, &mut problems);
            share(
                &format!("{name}.min_change"),
                band.min_change,
                &mut problems,
            );
        }
        for (name, p) in [
            ("probability", self.probability),
            ("level_shift.probability", self.level_shift.probability),
            ("gap_days.probability", self.gap_days.probability),
            ("level_shift.min_change", self.level_shift.min_change),
            ("resent.min_similarity", self.resent.min_similarity),
            ("resent.above_usual", self.resent.above_usual),
            ("distribution.min_change", self.distribution.min_change),
            ("figures.resent_share", self.figures.resent_share),
            ("peers.national_min_change", self.peers.national_min_change),
        ] {
            share(name, p, &mut problems);
        }
        positive("level_shift.z", self.level_shift.z, &mut problems);
        positive(
            "level_shift.relative",
            self.level_shift.relative,
            &mut problems,
        );
        positive(
            "vanished_min_expected",
            self.vanished_min_expected,
            &mut problems,
        );
        let f = &self.figures;
        for (name, v) in [
            ("figures.default_spread", f.default_spread),
            ("figures.min_spread", f.min_spread),
            ("figures.z", f.z),
            ("figures.relative", f.relative),
            ("figures.level_z", f.level_z),
            ("figures.resent_min_value", f.resent_min_value),
        ] {
            positive(name, v, &mut problems);
        }
        if f.level_factor < 1.0 {
            problems.push(format!(
                "anomalies.figures.level_factor must be at least 1, not {}",
                f.level_factor
            ));
        }
        if f.baseline_periods < 1 {
            problems.push("anomalies.figures.baseline_periods must be at least 1".into());
        }
        if f.min_peers < 3 {
            problems.push("anomalies.figures.min_peers must be at least 3".into());
        }
        if self.peers.lasting_periods < 2 {
            problems.push("anomalies.peers.lasting_periods must be at least 2".into());
        }
        if self.level_shift.months < 2 {
            problems.push("anomalies.level_shift.months must be at least 2".into());
        }
        if self.min_history_months < 3 {
            problems.push("anomalies.min_history_months must be at least 3".into());
        }
        if self.baseline_months < self.min_history_months {
            problems.push(format!(
                "anomalies.baseline_months ({}) must be at least min_history_months ({})",
                self.baseline_months, self.min_history_months
            ));
        }
        let known = dimensions;
        for d in &self.dimensions {
            if !known.contains_key(d) {
                problems.push(format!(
                    "anomalies.dimensions names `{d}`, which is not a dimension of the schema (one of {:?})",
                    known.keys().collect::<Vec<_>>()
                ));
            }
        }
        for spec in &self.peers.series {
            if let PeerSeries::Dimension {
                dimension,
                category,
            } = PeerSeries::parse(spec, observe)
            {
                match known.get(&dimension) {
                    None => problems.push(format!(
                        "anomalies.peers.series names `{dimension}`, which is not a dimension of the schema"
                    )),
                    Some(values) => {
                        if let Some(c) = category
                            && !values.contains(&c)
                        {
                            problems.push(format!(
                                "anomalies.peers.series: `{c}` is not a value of `{dimension}` (one of {values:?})"
                            ));
                        }
                    }
                }
            }
        }
        problems
    }
}

/// The `[population]` table: a CSV of resident population by area and ethnic group, the
/// denominator of rates per 1,000.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopulationSettings {
    /// The CSV file, relative to the project folder.
    pub file: PathBuf,
    /// Where the figures come from (written into the metrics snapshot).
    pub source: String,
    /// Whether a missing file is a configuration problem (otherwise rates are left out).
    #[serde(default = "yes")]
    pub required: bool,
    /// The column naming the police force area (matched loosely against the forces list).
    pub area_column: String,
    /// The column with the whole population.
    pub all_column: String,
    /// Each category of the observed subset's breakdown (`[observe.subset] by`) → its column.
    pub groups: BTreeMap<String, String>,
    /// The group whose rate divides every other group's into a disparity ratio; without it,
    /// no disparity ratios.
    #[serde(default)]
    pub reference_group: Option<String>,
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_pass_and_values_out_of_range_are_named() {
        let dimensions = BTreeMap::new();
        let observe = ObserveSettings::default();
        assert!(
            AnomalySettings::default()
                .check(&dimensions, &observe)
                .is_empty()
        );
        let bad = AnomalySettings {
            probability: 2.0,
            peers: PeerSettings {
                national_min_change: -0.1,
                lasting_periods: 1,
                ..PeerSettings::default()
            },
            ..AnomalySettings::default()
        };
        let problems = bad.check(&dimensions, &observe);
        assert_eq!(
            problems,
            [
                "anomalies.probability must be between 0 and 1, not 2",
                "anomalies.peers.national_min_change must be between 0 and 1, not -0.1",
                "anomalies.peers.lasting_periods must be at least 2",
            ],
            "{problems:?}"
        );
    }
}
