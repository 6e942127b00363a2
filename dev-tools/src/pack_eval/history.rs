//! The generated history of data packs: five financial years of every territorial force's
//! pack, written as the CSV a force would send, with ten planted incident classes.
//!
//! Each force has, for every count the catalogue's financial-year metrics are made of (its
//! metrics with no numerator: searches, uses of force, arrests, and the population the rates
//! are per), a full cross table over that metric's dimensions. A cell's expected value is the
//! force's volume for the year times a share per dimension:
//!
//! - **volume**: the force's base (its size in [`FORCES`], with use of force and arrests in a
//!   force-specific proportion to its searches), a trend of its own (a few per cent a year, up
//!   or down), a year effect (gamma, coefficient of variation about 8%), and a **national
//!   shock** in one year from which one count moves at every force at once (by a third, up or
//!   down, chosen by the seed);
//! - **shares**: ethnicity from the force's mix of people searched (the population's from that
//!   mix with the minorities' over-representation taken out), "Not stated" a force-specific
//!   3 to 12%; every other dimension a national mix drawn by the seed (skewed: most uses of
//!   force are handcuffing, few are firearms), moved per force, drifting a little each year;
//! - **interaction**: a persistent factor per force and cell (one group arrested more often
//!   after a search, in one force);
//! - **noise**: each cell is a negative binomial draw (over-dispersed), so small forces'
//!   small cells are zeros and ones.
//!
//! The pack's rows are exactly the mandatory rows of the catalogue's financial-year metrics,
//! each figure computed from the cross tables as the catalogue defines it (a rate's numerator
//! over its denominator at the row's codes, its fixed codes put in). Nothing here is shared
//! with the detector: it reads only the catalogue's declarations, as a force's analyst would.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use force_returns::catalogue::{Metric, MetricCatalogue};
use force_returns::period::{Cadence, Period};

use crate::eval::forces::{FORCES, Force};
use crate::eval::rng::Rng;

/// Financial years generated: FY2021-22 to FY2025-26.
pub const YEARS: usize = 5;
/// The first year an incident may be planted in (two earlier packs to compare with).
pub const FIRST_INCIDENT_YEAR: usize = 2;

/// The incident classes planted, one of each per history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// A count sent for half the year (every figure made of it halves), at a force of any size.
    CountHalved,
    /// The same at one of the eight smallest forces.
    SmallForceHalved,
    /// Rates per 1,000 worked out on the wrong population (another area's, or a mistyped
    /// total): every rate of the pack off by half or double, the counts right.
    WrongPopulation,
    /// One return's disparity ratios computed the wrong way up (White over the group).
    DisparityInverted,
    /// Two ethnic groups exchanged in one count's mapping (Asian and Black).
    EthnicitySwapped,
    /// Last year's pack sent again under this year.
    LastYearResent,
    /// Another force's pack for the year (of a very different size) sent under this force.
    /// That force's own pack then gets the same finding (either may be the one sent twice):
    /// its year counts as part of the incident, not as a clean year.
    OtherForcePack,
    /// One category of a dimension mapped into another (a code dropped from the mapping).
    CodeDropped,
    /// "Not stated" ethnicity jumping to a third of one count (self-definition not recorded).
    NotStatedJump,
    /// A force's first pack with its rates per 100,000 instead of per 1,000.
    FirstPackRateScale,
}

/// Every class, in order.
pub const CLASSES: [Class; 10] = [
    Class::CountHalved,
    Class::SmallForceHalved,
    Class::WrongPopulation,
    Class::DisparityInverted,
    Class::EthnicitySwapped,
    Class::LastYearResent,
    Class::OtherForcePack,
    Class::CodeDropped,
    Class::NotStatedJump,
    Class::FirstPackRateScale,
];

impl Class {
    /// Its name in the tables.
    pub fn name(self) -> &'static str {
        match self {
            Class::CountHalved => "count_halved",
            Class::SmallForceHalved => "small_force_halved",
            Class::WrongPopulation => "wrong_population",
            Class::DisparityInverted => "disparity_inverted",
            Class::EthnicitySwapped => "ethnicity_swapped",
            Class::LastYearResent => "last_year_resent",
            Class::OtherForcePack => "other_force_pack",
            Class::CodeDropped => "code_dropped",
            Class::NotStatedJump => "not_stated_jump",
            Class::FirstPackRateScale => "first_pack_rate_scale",
        }
    }
}

/// One planted incident.
#[derive(Debug, Clone)]
pub struct Incident {
    /// Its class.
    pub class: Class,
    /// The force (index into [`FORCES`]).
    pub force: usize,
    /// The year (0 is FY2021-22).
    pub year: usize,
    /// What it touched, in words.
    pub detail: String,
    /// For a pack sent under another force: the force whose pack it is.
    pub source: Option<usize>,
}

/// What a history is made from.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// The seed.
    pub seed: u64,
}

/// The national shock: from `year` on, `metric`'s counts move by `factor` at every force.
#[derive(Debug, Clone)]
pub struct Shock {
    /// The first year moved.
    pub year: usize,
    /// The count moved.
    pub metric: String,
    /// By how much.
    pub factor: f64,
}

/// A generated history: every force's pack of every year it sent one.
pub struct History {
    config: Config,
    incidents: Vec<Incident>,
    shock: Shock,
    /// `[force][year]`: the CSV, when the force sent a pack that year.
    packs: Vec<Vec<Option<String>>>,
}

/// One count's cross table: the code of each of its dimensions → the value.
type Table = BTreeMap<Vec<usize>, f64>;

/// A force-year's counts, by metric id.
type Counts = BTreeMap<String, Table>;

/// How a force's pack is written this year.
#[derive(Debug, Clone, Copy, Default)]
struct Presentation {
    /// Every rate per 1,000 worked out on the population times this.
    population: f64,
    /// The disparity ratios of metrics made of this count are written upside down.
    inverted: Option<usize>,
    /// Rates multiplied by this (per 100,000: 100).
    rate_scale: f64,
}

impl History {
    /// Generates the history of `config.seed` from the catalogue's financial-year metrics.
    pub fn new(catalogue: &Arc<MetricCatalogue>, config: Config) -> History {
        let seed = config.seed;
        let model = Model::new(catalogue, seed);
        let mut rng = Rng::new(&[seed, 1]);
        // The shock.
        let roots = model.roots_sent();
        let shock = Shock {
            year: 1 + rng.below(YEARS - 1),
            metric: roots[rng.below(roots.len())].clone(),
            factor: if rng.chance(0.5) {
                rng.range(0.6, 0.72)
            } else {
                rng.range(1.35, 1.6)
            },
        };
        // Incidents: each class at a different force, in a year from FIRST_INCIDENT_YEAR.
        let mut by_size: Vec<usize> = (0..FORCES.len()).collect();
        by_size.sort_by(|a, b| FORCES[*a].monthly.total_cmp(&FORCES[*b].monthly));
        let small: Vec<usize> = by_size[..8].to_vec();
        let mut free: Vec<usize> = (0..FORCES.len()).collect();
        rng.shuffle(&mut free);
        let mut incidents = Vec::new();
        for class in CLASSES {
            let force = match class {
                Class::SmallForceHalved => take(&mut free, &mut rng, |f| small.contains(&f)),
                // Exchanging two groups of about the same size changes nothing to find: the
                // swap is planted where one group is at least twice the other.
                Class::EthnicitySwapped => take(&mut free, &mut rng, |f| {
                    let [_, _, asian, black, _] = FORCES[f].groups;
                    asian.max(black) >= 2.0 * asian.min(black)
                }),
                _ => take(&mut free, &mut rng, |f| !small.contains(&f)),
            };
            let year = FIRST_INCIDENT_YEAR + rng.below(YEARS - FIRST_INCIDENT_YEAR);
            incidents.push(Incident {
                class,
                force,
                year,
                detail: String::new(),
                source: None,
            });
        }
        let mut counts: Vec<Vec<Counts>> = (0..FORCES.len())
            .map(|f| {
                (0..YEARS)
                    .map(|y| model.counts(f, y, &shock, seed))
                    .collect()
            })
            .collect();
        let mut presentation = vec![vec![Presentation::default(); YEARS]; FORCES.len()];
        for p in presentation.iter_mut().flatten() {
            p.population = 1.0;
            p.rate_scale = 1.0;
        }
        let mut copies: Vec<(usize, usize, Copy)> = Vec::new();
        for incident in &mut incidents {
            let (force, year) = (incident.force, incident.year);
            let mut draw = Rng::new(&[seed, 2, incident.class as u64]);
            let root = roots[draw.below(roots.len())].clone();
            incident.detail = match incident.class {
                Class::CountHalved | Class::SmallForceHalved => {
                    for v in counts[force][year]
                        .get_mut(&root)
                        .into_iter()
                        .flat_map(|t| t.values_mut())
                    {
                        *v = binomial(&mut draw, *v, 0.5);
                    }
                    format!("{root} halved")
                }
                Class::WrongPopulation => {
                    let factor = if draw.chance(0.5) {
                        draw.range(0.45, 0.6)
                    } else {
                        draw.range(1.7, 2.2)
                    };
                    presentation[force][year].population = factor;
                    format!("population × {factor:.2}")
                }
                Class::DisparityInverted => {
                    presentation[force][year].inverted = roots.iter().position(|x| *x == root);
                    format!("disparity ratios of {root} inverted")
                }
                Class::EthnicitySwapped => {
                    let asian = model.ethnicity_code("Asian");
                    let black = model.ethnicity_code("Black");
                    if let Some(table) = counts[force][year].get_mut(&root) {
                        model.swap(&root, table, asian, black);
                    }
                    format!("Asian and Black exchanged in {root}")
                }
                Class::LastYearResent => {
                    copies.push((force, year, Copy::Year(year - 1)));
                    "last year's pack".to_owned()
                }
                Class::OtherForcePack => {
                    let mine = FORCES[force].monthly;
                    let candidates: Vec<usize> = (0..FORCES.len())
                        .filter(|&o| o != force)
                        .filter(|&o| {
                            let ratio = FORCES[o].monthly / mine;
                            !(0.4..=2.5).contains(&ratio)
                        })
                        .collect();
                    let other = candidates[draw.below(candidates.len())];
                    copies.push((force, year, Copy::Force(other)));
                    incident.source = Some(other);
                    format!("{}'s pack", FORCES[other].id)
                }
                Class::CodeDropped => {
                    let (metric, dim, from, to) = model.droppable(&mut draw, &counts[force][year]);
                    if let Some(table) = counts[force][year].get_mut(&metric) {
                        Model::fold(table, dim, from, to);
                    }
                    format!("{metric}: code {from} of dimension {dim} folded into {to}")
                }
                Class::NotStatedJump => {
                    if let Some(table) = counts[force][year].get_mut(&root) {
                        model.not_stated(&mut draw, &root, table, 0.35);
                    }
                    format!("{root}: a third not stated")
                }
                Class::FirstPackRateScale => {
                    presentation[force][year].rate_scale = 100.0;
                    "rates per 100,000, first pack".to_owned()
                }
            };
        }
        let mut packs: Vec<Vec<Option<String>>> = (0..FORCES.len())
            .map(|f| {
                (0..YEARS)
                    .map(|y| Some(model.csv(f, y, &counts[f][y], presentation[f][y])))
                    .collect()
            })
            .collect();
        for (f, y, copy) in copies {
            packs[f][y] = match copy {
                Copy::Year(from) => Some(model.csv(f, y, &counts[f][from], presentation[f][from])),
                Copy::Force(other) => {
                    Some(model.csv(f, y, &counts[other][y], presentation[other][y]))
                }
            };
        }
        // The first-pack force sends nothing before its incident year.
        for i in incidents
            .iter()
            .filter(|i| i.class == Class::FirstPackRateScale)
        {
            for pack in &mut packs[i.force][..i.year] {
                *pack = None;
            }
        }
        History {
            config,
            incidents,
            shock,
            packs,
        }
    }

    /// What it was made from.
    pub fn config(&self) -> Config {
        self.config
    }

    /// The planted incidents.
    pub fn incidents(&self) -> &[Incident] {
        &self.incidents
    }

    /// The national shock.
    pub fn shock(&self) -> &Shock {
        &self.shock
    }

    /// The pack of a force's year, when it sent one.
    pub fn pack(&self, force: usize, year: usize) -> Option<&str> {
        self.packs[force][year].as_deref()
    }

    /// The year's period.
    pub fn period(year: usize) -> Period {
        Cadence::FinancialYear
            .parse(&format!("FY{}-{:02}", 2021 + year, (22 + year) % 100))
            .unwrap_or_else(|_| unreachable!("a financial year's name"))
    }

    /// The forces, as their ids.
    pub fn force_ids() -> Vec<&'static str> {
        FORCES.iter().map(|f| f.id).collect()
    }
}

/// The first force in `free` that `fits` (any, when none does), taken out of it.
fn take(free: &mut Vec<usize>, rng: &mut Rng, fits: impl Fn(usize) -> bool) -> usize {
    let i = free
        .iter()
        .position(|&f| fits(f))
        .unwrap_or_else(|| rng.below(free.len()));
    free.remove(i)
}

enum Copy {
    Year(usize),
    Force(usize),
}

/// Binomial thinning of a count.
fn binomial(rng: &mut Rng, n: f64, p: f64) -> f64 {
    let n = n.round() as u64;
    if n > 200 {
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        return (n as f64 * p + sd * rng.normal())
            .round()
            .clamp(0.0, n as f64);
    }
    (0..n).filter(|_| rng.chance(p)).count() as f64
}

/// What the counts are drawn from.
struct Model {
    catalogue: Arc<MetricCatalogue>,
    /// The counts the financial-year metrics are made of (metrics with no numerator), by id.
    roots: Vec<String>,
    /// Each dimension's national mix, by name.
    mixes: BTreeMap<String, Vec<f64>>,
    /// The ethnicity dimension's codes.
    ethnicity: Vec<String>,
}

const FY: &str = "financial_year";
const ETHNICITY: &str = "ethnicity";
/// The count rates per 1,000 are per (it is no return of its own).
const POPULATION: &str = "population";

impl Model {
    fn new(catalogue: &Arc<MetricCatalogue>, seed: u64) -> Model {
        let roots: Vec<String> = catalogue
            .metrics
            .iter()
            .filter(|m| m.cadence == FY && m.unit.additive() && m.numerator.is_none())
            .map(|m| m.id.clone())
            .collect();
        let mut mixes = BTreeMap::new();
        let mut ethnicity = Vec::new();
        for (i, d) in catalogue.dimensions().into_iter().enumerate() {
            if d.name == ETHNICITY {
                ethnicity.clone_from(&d.codes);
                continue;
            }
            let mut rng = Rng::new(&[seed, 3, i as u64]);
            let mix: Vec<f64> = d.codes.iter().map(|_| rng.gamma(0.8) + 0.02).collect();
            mixes.insert(d.name.clone(), mix);
        }
        Model {
            catalogue: Arc::clone(catalogue),
            roots,
            mixes,
            ethnicity,
        }
    }

    /// The counts a force sends (all but the population).
    fn roots_sent(&self) -> Vec<String> {
        self.roots
            .iter()
            .filter(|r| r.as_str() != POPULATION)
            .cloned()
            .collect()
    }

    fn metric(&self, id: &str) -> &Metric {
        self.catalogue
            .metric(id)
            .unwrap_or_else(|| unreachable!("metric {id} of the catalogue"))
    }

    fn ethnicity_code(&self, code: &str) -> usize {
        self.ethnicity.iter().position(|c| c == code).unwrap_or(0)
    }

    /// A force's mix of ethnic groups in the catalogue's code order, for a count or the
    /// population.
    fn ethnic_mix(&self, force: &Force, population: bool, not_stated: f64) -> Vec<f64> {
        // FORCES gives White, Mixed, Asian, Black, Other among people searched.
        let [white, mixed, asian, black, other] = force.groups;
        let over = |x: f64, by: f64| if population { x / by } else { x };
        self.ethnicity
            .iter()
            .map(|c| match c.as_str() {
                "White" => white,
                "Mixed" => over(mixed, 1.5),
                "Asian" => over(asian, 1.3),
                "Black" => over(black, 3.5),
                "Other" => over(other, 1.2),
                _ if population => 0.0,
                _ => not_stated / (1.0 - not_stated),
            })
            .collect()
    }

    /// A force-year's cross tables.
    fn counts(&self, f: usize, year: usize, shock: &Shock, seed: u64) -> Counts {
        let force = &FORCES[f];
        let mut out = Counts::new();
        for (ri, root) in self.roots.iter().enumerate() {
            let metric = self.metric(root);
            let population = root == POPULATION;
            // Things that are the force's own, the same every year.
            let mut own = Rng::new(&[seed, 10, f as u64, ri as u64]);
            let base = force.monthly
                * 12.0
                * if population {
                    1000.0 / own.range(4.0, 15.0)
                } else if ri == 0 {
                    1.0
                } else {
                    own.range(0.8, 2.6)
                };
            let trend = own.normal() * 0.04;
            let not_stated = own.range(0.03, 0.12);
            let mut shares: Vec<Vec<f64>> = Vec::new();
            for d in &metric.dimensions {
                let mix = if d.name == ETHNICITY {
                    self.ethnic_mix(force, population, not_stated)
                } else {
                    self.mixes[&d.name]
                        .iter()
                        .map(|w| w * (own.normal() * 0.2).exp())
                        .collect()
                };
                shares.push(mix);
            }
            // Drift: a random walk of each share, year by year.
            let mut drift = Rng::new(&[seed, 11, f as u64, ri as u64]);
            for _ in 0..year {
                for mix in &mut shares {
                    for w in mix.iter_mut() {
                        *w *= (drift.normal() * if population { 0.005 } else { 0.04 }).exp();
                    }
                }
            }
            for mix in &mut shares {
                let total: f64 = mix.iter().sum();
                for w in mix.iter_mut() {
                    *w /= total.max(f64::MIN_POSITIVE);
                }
            }
            let mut year_rng = Rng::new(&[seed, 12, f as u64, ri as u64, year as u64]);
            let mut volume = base * (trend * year as f64).exp();
            if population {
                volume *= 1.005_f64.powf(year as f64);
            } else {
                volume *= year_rng.gamma_mean_one(150.0);
                if *root == shock.metric && year >= shock.year {
                    volume *= shock.factor;
                }
            }
            let mut cells = Table::new();
            let mut interaction = Rng::new(&[seed, 13, f as u64, ri as u64]);
            let dims: Vec<usize> = metric.dimensions.iter().map(|d| d.codes.len()).collect();
            for cell in product(&dims) {
                let persistent = (interaction.normal() * 0.15).exp();
                let mean = volume
                    * persistent
                    * cell
                        .iter()
                        .zip(&shares)
                        .map(|(&c, mix)| mix[c])
                        .product::<f64>();
                let v = if population {
                    mean.round()
                } else {
                    year_rng.negative_binomial(mean, 50.0) as f64
                };
                cells.insert(cell, v);
            }
            out.insert(root.clone(), cells);
        }
        out
    }

    /// The position of the ethnicity dimension among a count's dimensions.
    fn ethnicity_of(&self, root: &str) -> Option<usize> {
        self.metric(root)
            .dimensions
            .iter()
            .position(|d| d.name == ETHNICITY)
    }

    /// Exchanges two ethnicity codes in a count's table.
    fn swap(&self, root: &str, table: &mut Table, one: usize, other_code: usize) {
        let Some(dim) = self.ethnicity_of(root) else {
            return;
        };
        let keys: Vec<Vec<usize>> = table.keys().filter(|k| k[dim] == one).cloned().collect();
        for key in keys {
            let mut swapped = key.clone();
            swapped[dim] = other_code;
            let (here, there) = (table[&key], table[&swapped]);
            table.insert(key, there);
            table.insert(swapped, here);
        }
    }

    /// A count, a dimension other than ethnicity, a code holding at least 5% of it, and the
    /// code it is folded into.
    fn droppable(&self, rng: &mut Rng, counts: &Counts) -> (String, usize, usize, usize) {
        let mut options = Vec::new();
        for root in self.roots_sent() {
            let metric = self.metric(&root);
            let table = &counts[&root];
            let total: f64 = table.values().sum();
            for (d, dim) in metric.dimensions.iter().enumerate() {
                if dim.name == ETHNICITY {
                    continue;
                }
                for c in 0..dim.codes.len() - 1 {
                    let v: f64 = table
                        .iter()
                        .filter(|(k, _)| k[d] == c)
                        .map(|(_, v)| v)
                        .sum();
                    if v >= 0.05 * total {
                        options.push((root.clone(), d, c, dim.codes.len() - 1));
                    }
                }
            }
        }
        options[rng.below(options.len())].clone()
    }

    /// Moves every count of code `from` of dimension `d` to code `to`.
    fn fold(table: &mut Table, d: usize, from: usize, to: usize) {
        let keys: Vec<Vec<usize>> = table.keys().filter(|k| k[d] == from).cloned().collect();
        for k in keys {
            let v = table.insert(k.clone(), 0.0).unwrap_or(0.0);
            let mut into = k;
            into[d] = to;
            *table.entry(into).or_insert(0.0) += v;
        }
    }

    /// Moves a share of each stated group's counts to "Not stated".
    fn not_stated(&self, rng: &mut Rng, root: &str, table: &mut Table, share: f64) {
        let Some(d) = self.ethnicity_of(root) else {
            return;
        };
        let unknown = self.ethnicity_code("Not stated");
        let keys: Vec<Vec<usize>> = table.keys().filter(|k| k[d] != unknown).cloned().collect();
        for k in keys {
            let v = table[&k];
            let moved = binomial(rng, v, share);
            table.insert(k.clone(), v - moved);
            let mut into = k;
            into[d] = unknown;
            *table.entry(into).or_insert(0.0) += moved;
        }
    }

    /// A metric's value at a breakdown (dimension name → code index), from the counts.
    fn value(
        &self,
        id: &str,
        at: &BTreeMap<String, usize>,
        counts: &Counts,
        p: Presentation,
    ) -> f64 {
        let metric = self.metric(id);
        if metric.numerator.is_none() {
            let Some(table) = counts.get(id) else {
                return 0.0;
            };
            let mut total: f64 = table
                .iter()
                .filter(|(cell, _)| {
                    metric
                        .dimensions
                        .iter()
                        .zip(cell.iter())
                        .all(|(d, c)| at.get(&d.name).is_none_or(|want| want == c))
                })
                .map(|(_, v)| v)
                .sum();
            if id == POPULATION {
                total *= p.population;
            }
            return total;
        }
        let part = |part: &force_returns::catalogue::Part| -> f64 {
            let inner = self.metric(&part.metric);
            let mut keys = vec![at.clone()];
            for (d, codes) in &part.at {
                let Some(dim) = inner.dimension(d) else {
                    continue;
                };
                keys = keys
                    .into_iter()
                    .flat_map(|k| {
                        codes.iter().map(move |c| {
                            let mut k = k.clone();
                            k.insert(
                                d.clone(),
                                dim.codes.iter().position(|x| x == c).unwrap_or(0),
                            );
                            k
                        })
                    })
                    .collect();
            }
            keys.iter()
                .map(|k| self.value(&part.metric, k, counts, p))
                .sum()
        };
        let (Some(n), Some(d)) = (&metric.numerator, &metric.denominator) else {
            return 0.0;
        };
        let (num, den) = (part(n), part(d));
        let scale = metric.unit.scale().unwrap_or(1.0);
        let inverted = p
            .inverted
            .is_some_and(|r| self.root_of(id) == self.roots_sent()[r]);
        let mut v = if metric.unit.as_str() == "ratio" && inverted {
            if num > 0.0 { den / num * scale } else { 0.0 }
        } else if den > 0.0 {
            num / den * scale
        } else {
            0.0
        };
        if metric.unit.as_str() == "rate_per_1000" {
            v *= p.rate_scale;
        }
        v
    }

    /// The count a metric is made of.
    fn root_of(&self, id: &str) -> String {
        let mut m = self.metric(id);
        while let Some(n) = &m.numerator {
            m = self.metric(&n.metric);
        }
        m.id.clone()
    }

    /// The pack as CSV: the schema's columns, one row per mandatory financial-year row.
    fn csv(&self, f: usize, year: usize, counts: &Counts, p: Presentation) -> String {
        let dims: Vec<String> = self
            .catalogue
            .dimensions()
            .into_iter()
            .map(|d| d.name.clone())
            .collect();
        let mut out = format!(
            "force,period,metric,{},value,numerator,denominator,note\n",
            dims.join(",")
        );
        let period = History::period(year).to_string();
        for metric in self
            .catalogue
            .metrics
            .iter()
            .filter(|m| m.mandatory && m.cadence == FY)
        {
            for breakdown in &metric.breakdowns {
                for row in metric.breakdown_rows(breakdown) {
                    let at: BTreeMap<String, usize> =
                        row.iter().map(|(d, c)| (d.name.clone(), *c)).collect();
                    let v = self.value(&metric.id, &at, counts, p);
                    let cells: Vec<String> = dims
                        .iter()
                        .map(|name| {
                            row.iter()
                                .find(|(d, _)| d.name == *name)
                                .map(|(d, c)| quote(&d.codes[*c]))
                                .unwrap_or_default()
                        })
                        .collect();
                    let value = if metric.unit.additive() {
                        format!("{v:.0}")
                    } else {
                        format!("{v:.6}")
                    };
                    let _ = writeln!(
                        out,
                        "{},{period},{},{},{value},,,",
                        FORCES[f].id,
                        metric.id,
                        cells.join(",")
                    );
                }
            }
        }
        out
    }
}

/// A CSV cell, quoted when it holds a comma or a quote.
fn quote(s: &str) -> String {
    if s.contains([',', '"']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Every combination of indices below each of `sizes`.
fn product(sizes: &[usize]) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new()];
    for &n in sizes {
        out = out
            .into_iter()
            .flat_map(|k: Vec<usize>| {
                (0..n).map(move |c| {
                    let mut k = k.clone();
                    k.push(c);
                    k
                })
            })
            .collect();
    }
    out
}
