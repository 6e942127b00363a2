//! The evaluation's history: four years (April 2021 to March 2025) of stop-and-search uploads
//! for the 43 territorial forces, written as forces send them, with fifteen planted incidents.
//!
//! **Clean months.** Each force has a level (its typical month, [`super::forces::FORCES`] times
//! the scale), its own over-dispersion (a month's count is negative binomial: Poisson around a
//! gamma-distributed mean, with shape 8 to 40 for small forces and 15 to 120 for the others),
//! its own seasonality (amplitude 0 to 15%, peak in spring or summer), a slow trend (up to ±15%
//! a year), and its share of a national shock (three months in which every force moves about
//! 40% the same way, each by its own amount). Some forces authorise section 60 for a few days
//! now and then: a burst of searches under that power for offensive weapons, and none for
//! months in between. Each record's fields are drawn from the force's own mix: type, gender,
//! age, self-defined ethnicity (the force's groups, a few percent not stated, a little blank)
//! and the officer-defined group agreeing with it about 85% of the time, power and the object
//! that goes with it, outcome and whether it was linked to the object, removal of clothing,
//! time of day (evening peak; a fraction of a percent exactly at midnight), location near the
//! force's centre, and blanks in every column a real extract leaves blank, each below the
//! pipeline's blank-rate warning.
//!
//! **Incidents.** Fifteen forces, chosen by the seed, each get one [`Class`] at a month chosen by
//! the seed (never in the first 13 months); the other 28 are clean. [`History::incidents`]
//! says what was planted where.
//!
//! Every file is made from streams of its own (seed, force, month), so [`History::upload`]
//! makes any one of them again, identical, without the others.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use force_returns::period::Period;

use super::forces::{FORCES, Force};
use super::rng::Rng;

/// Months in the history.
pub const MONTHS: usize = 48;
/// First month of the history (April 2021).
pub const FIRST: (i32, u32) = (2021, 4);
/// Incidents are planted from this month of the history on (0-based), so every force has a
/// year of history before its incident.
pub const FIRST_INCIDENT_MONTH: usize = 13;
/// Months the national shock lasts.
pub const SHOCK_MONTHS: usize = 3;

/// The header of a data.police.uk stop-and-search extract.
pub const HEADER: &str = "Type,Date,Part of a policing operation,Policing operation,Latitude,Longitude,Gender,Age range,Self-defined ethnicity,Officer-defined ethnicity,Legislation,Object of search,Outcome,Outcome linked to object of search,Removal of more than just outer clothing";

/// The kinds of planted incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// This month's file holds last month's records, dates moved into this month.
    ResentPreviousPeriod,
    /// This month's file is another force's file of the same month.
    ResentOtherForce,
    /// As a re-sent previous month, with about a tenth of the rows replaced.
    NearDuplicateResend,
    /// Self-defined ethnicity "not stated" rises from a few percent to 25-35% for three months.
    NotStatedJump,
    /// The outcome is blank in about a fifth of the records from this month on (usually 1%).
    BlankFieldRise,
    /// Self-defined ethnicity is set from the officer-defined group from this month on.
    EthnicityCopied,
    /// Two outcome codes are exchanged in every record from this month on.
    OutcomeCodesSwapped,
    /// A force of 100 to 150 searches a month sends half its records for one month.
    SmallForceHalving,
    /// Records rise 3 to 4 times from this month on (a recording change).
    VolumeStep,
    /// The file holds only the first half of the month.
    PartialPeriod,
    /// Every record is in the file twice.
    DoubledPeriod,
    /// Three months in a row are never sent.
    MissingPeriods,
    /// Mixed ethnicity is recorded as "Any other ethnic group" for three months.
    CategoryVanished,
    /// Every time is 00:00 from this month on.
    TimesAtMidnight,
    /// The whole history records "not stated" as "Other ethnic group - Any other ethnic group".
    PeerMiscoding,
}

impl Class {
    /// All classes, numbered 1 to 15 in this order.
    pub const ALL: [Class; 15] = [
        Class::ResentPreviousPeriod,
        Class::ResentOtherForce,
        Class::NearDuplicateResend,
        Class::NotStatedJump,
        Class::BlankFieldRise,
        Class::EthnicityCopied,
        Class::OutcomeCodesSwapped,
        Class::SmallForceHalving,
        Class::VolumeStep,
        Class::PartialPeriod,
        Class::DoubledPeriod,
        Class::MissingPeriods,
        Class::CategoryVanished,
        Class::TimesAtMidnight,
        Class::PeerMiscoding,
    ];

    /// Its number, 1 to 15.
    pub fn number(self) -> usize {
        Class::ALL.iter().position(|c| *c == self).unwrap_or(0) + 1
    }

    /// Its id.
    pub fn id(self) -> &'static str {
        match self {
            Class::ResentPreviousPeriod => "resent_previous_period",
            Class::ResentOtherForce => "resent_other_force",
            Class::NearDuplicateResend => "near_duplicate_resend",
            Class::NotStatedJump => "not_stated_jump",
            Class::BlankFieldRise => "blank_field_rise",
            Class::EthnicityCopied => "ethnicity_copied",
            Class::OutcomeCodesSwapped => "outcome_codes_swapped",
            Class::SmallForceHalving => "small_force_halving",
            Class::VolumeStep => "volume_step",
            Class::PartialPeriod => "partial_period",
            Class::DoubledPeriod => "doubled_period",
            Class::MissingPeriods => "missing_periods",
            Class::CategoryVanished => "category_vanished",
            Class::TimesAtMidnight => "times_at_midnight",
            Class::PeerMiscoding => "peer_miscoding",
        }
    }

    /// Whether it affects every month of the history: its month is then only where it is
    /// listed, not when it began.
    pub fn whole_history(self) -> bool {
        self == Class::PeerMiscoding
    }

    /// Months of the history it affects, from its month `m` (0-based).
    fn affects(self, m: usize, month: usize) -> bool {
        match self {
            Class::ResentPreviousPeriod
            | Class::ResentOtherForce
            | Class::NearDuplicateResend
            | Class::SmallForceHalving
            | Class::PartialPeriod
            | Class::DoubledPeriod => month == m,
            Class::NotStatedJump | Class::MissingPeriods | Class::CategoryVanished => {
                (m..m + 3).contains(&month)
            }
            Class::BlankFieldRise
            | Class::EthnicityCopied
            | Class::OutcomeCodesSwapped
            | Class::VolumeStep
            | Class::TimesAtMidnight => month >= m,
            Class::PeerMiscoding => true,
        }
    }
}

/// One planted incident.
#[derive(Debug, Clone)]
pub struct Incident {
    /// What was planted.
    pub class: Class,
    /// On which force (an index into [`FORCES`]).
    pub force: usize,
    /// At which month of the history (0-based).
    pub month: usize,
    /// The other force whose file was sent (class 2).
    pub other: Option<usize>,
    /// The incident's size, in words (the step, the share, the codes swapped...).
    pub detail: String,
    /// A number the incident uses: the step's factor, the not-stated share, the day the
    /// partial month stops, the index of the pair of outcomes swapped.
    value: f64,
}

impl Incident {
    /// The force's id.
    pub fn force_id(&self) -> &'static str {
        FORCES[self.force].id
    }
}

/// What generates the history.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// The seed.
    pub seed: u64,
    /// Volume: 1.0 is the real national volume (about 45,000 searches a month).
    pub scale: f64,
}

/// One upload, as a force sends it.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Force id.
    pub force: &'static str,
    /// The month.
    pub period: Period,
    /// Its key under `incoming/`.
    pub key: String,
    /// The file.
    pub bytes: Vec<u8>,
    /// When the force sent it.
    pub uploaded_at: DateTime<Utc>,
}

/// How one force's months are drawn.
#[derive(Debug, Clone)]
struct Model {
    force: Force,
    level: f64,
    shape: f64,
    season_amplitude: f64,
    season_peak: f64,
    trend: f64,
    shock: f64,
    /// Section 60 bursts: month, first day, days, searches.
    bursts: Vec<(usize, u32, u32, u64)>,
    mix: Mix,
}

/// A force's mix of field values, as weights over each column's values.
#[derive(Debug, Clone)]
struct Mix {
    types: [f64; 3],
    part_op: [f64; 3],
    location_blank: f64,
    gender: [f64; 4],
    age: [f64; 6],
    groups: [f64; 5],
    not_stated: f64,
    sde_blank: f64,
    agree: f64,
    ode_not_reported: f64,
    ode_blank: f64,
    legislation: [f64; 5],
    legislation_blank: f64,
    object_blank: f64,
    outcome: [f64; 8],
    outcome_blank: f64,
    removal: [f64; 3],
    midnight: f64,
}

/// One record, as indices into the value tables below (0 is blank where a column may be).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Record {
    ty: u8,
    day: u8,
    seconds: u32,
    part_op: u8,
    operation: u8,
    location: Option<(f64, f64)>,
    gender: u8,
    age: u8,
    sde: u8,
    ode: u8,
    legislation: u8,
    object: u8,
    outcome: u8,
    linked: u8,
    removal: u8,
}

const TYPES: [&str; 3] = [
    "Person search",
    "Person and Vehicle search",
    "Vehicle search",
];
const BOOLS: [&str; 3] = ["", "False", "True"];
const OPERATIONS: [&str; 4] = ["", "Operation Sceptre", "Op Venice", "Operation Ensign"];
const GENDERS: [&str; 4] = ["", "Male", "Female", "Other"];
const AGES: [&str; 6] = ["", "under 10", "10-17", "18-24", "25-34", "over 34"];
/// Self-defined ethnicity labels; index 0 is blank.
const SDE: [&str; 20] = [
    "",
    "White - English/Welsh/Scottish/Northern Irish/British",
    "White - Irish",
    "White - Gypsy or Irish Traveller",
    "White - Any other White background",
    "Mixed/Multiple ethnic groups - White and Black Caribbean",
    "Mixed/Multiple ethnic groups - White and Black African",
    "Mixed/Multiple ethnic groups - White and Asian",
    "Mixed/Multiple ethnic groups - Any other Mixed/Multiple ethnic background",
    "Asian/Asian British - Indian",
    "Asian/Asian British - Pakistani",
    "Asian/Asian British - Bangladeshi",
    "Asian/Asian British - Chinese",
    "Asian/Asian British - Any other Asian background",
    "Black/African/Caribbean/Black British - Caribbean",
    "Black/African/Caribbean/Black British - African",
    "Black/African/Caribbean/Black British - Any other Black/African/Caribbean background",
    "Other ethnic group - Arab",
    "Other ethnic group - Any other ethnic group",
    "Other ethnic group - Not stated",
];
/// The self-defined codes of each group (White, Mixed, Asian, Black, Other), as indices into
/// [`SDE`], and how often each is given within its group.
const SDE_CODES: [(&[u8], &[f64]); 5] = [
    (&[1, 2, 3, 4], &[0.75, 0.03, 0.02, 0.2]),
    (&[5, 6, 7, 8], &[0.4, 0.15, 0.15, 0.3]),
    (&[9, 10, 11, 12, 13], &[0.2, 0.35, 0.15, 0.05, 0.25]),
    (&[14, 15, 16], &[0.35, 0.4, 0.25]),
    (&[17, 18], &[0.3, 0.7]),
];
const SDE_NOT_STATED: u8 = 19;
const SDE_OTHER: u8 = 18;
/// Officer-defined ethnicity; index 0 is blank, 1 to 5 the groups in [`SDE_CODES`] order.
const ODE: [&str; 7] = [
    "",
    "White",
    "Mixed",
    "Asian",
    "Black",
    "Other",
    "Not reported",
];
const LEGISLATION: [&str; 6] = [
    "",
    "Police and Criminal Evidence Act 1984 (section 1)",
    "Misuse of Drugs Act 1971 (section 23)",
    "Firearms Act 1968 (section 47)",
    "Criminal Justice Act 1988 (section 139B)",
    "Criminal Justice and Public Order Act 1994 (section 60)",
];
const SECTION_60: u8 = 5;
const OBJECTS: [&str; 10] = [
    "",
    "Controlled drugs",
    "Offensive weapons",
    "Stolen goods",
    "Article for use in theft",
    "Articles for use in criminal damage",
    "Anything to threaten or harm anyone",
    "Fireworks",
    "Evidence of offences under the Act",
    "Firearms",
];
/// Objects of a PACE search, weighted (indices into [`OBJECTS`]).
const PACE_OBJECTS: [(u8, f64); 7] = [
    (2, 0.35),
    (3, 0.3),
    (4, 0.15),
    (5, 0.08),
    (6, 0.07),
    (7, 0.03),
    (8, 0.02),
];
const OUTCOMES: [&str; 9] = [
    "",
    "A no further action disposal",
    "Arrest",
    "Community resolution",
    "Khat or Cannabis warning",
    "Summons / charged by post",
    "Penalty Notice for Disorder",
    "Caution (simple or conditional)",
    "Article found - Detailed outcome unavailable",
];
const NO_FURTHER_ACTION: u8 = 1;
/// Pairs of outcomes a class 7 incident exchanges (indices into [`OUTCOMES`]).
const SWAPS: [(u8, u8); 3] = [(2, 3), (3, 4), (2, 4)];
/// Relative weights of the hours of the day (searches peak in the evening).
const HOURS: [f64; 24] = [
    3.0, 2.5, 2.0, 1.5, 1.0, 0.7, 0.6, 0.8, 1.2, 1.6, 2.0, 2.4, 2.8, 3.0, 3.3, 3.8, 4.3, 4.8, 5.2,
    5.4, 5.2, 4.8, 4.2, 3.6,
];

/// The history of one seed and scale: every force's model and the planted incidents.
#[derive(Debug, Clone)]
pub struct History {
    config: Config,
    models: Vec<Model>,
    incidents: Vec<Incident>,
    shock_start: usize,
    shock_direction: f64,
}

fn period_at(month: usize) -> Period {
    let first = Period::new(FIRST.0, FIRST.1).expect("April 2021 is a month");
    (0..month).fold(first, |p, _| p.next())
}

fn log_uniform(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    (rng.range(lo.ln(), hi.ln())).exp()
}

impl History {
    /// Draws the forces' models, the shock and the incidents for `config`.
    pub fn new(config: Config) -> History {
        let mut rng = Rng::new(&[config.seed, 1]);
        let shock_start = 15 + rng.below(22);
        let shock_direction = if rng.chance(0.5) { -1.0 } else { 1.0 };
        let mut models: Vec<Model> = FORCES
            .iter()
            .enumerate()
            .map(|(i, force)| {
                let mut r = Rng::new(&[config.seed, 2, i as u64]);
                let level = force.monthly * config.scale;
                let shape = if force.monthly < 300.0 {
                    log_uniform(&mut r, 8.0, 40.0)
                } else {
                    log_uniform(&mut r, 15.0, 120.0)
                };
                let shock =
                    (1.0 + shock_direction * 0.4 * (1.0 + 0.25 * r.normal())).clamp(0.3, 1.9);
                let mut bursts = Vec::new();
                if r.chance(0.3) {
                    for year in 0..4 {
                        for _ in 0..r.below(4) {
                            let month = year * 12 + r.below(12);
                            let days = 1 + r.below(3) as u32;
                            let first = 1 + r.below(26) as u32;
                            let fraction = r.range(0.03, 0.25);
                            let size = r.poisson((level * fraction).max(8.0));
                            bursts.push((month, first, days, size));
                        }
                    }
                }
                Model {
                    force: *force,
                    level,
                    shape,
                    season_amplitude: r.range(0.0, 0.15),
                    season_peak: r.range(3.0, 9.0),
                    trend: (0.08 * r.normal()).clamp(-0.15, 0.15),
                    shock,
                    bursts,
                    mix: Mix::draw(&mut r, force.groups),
                }
            })
            .collect();
        let incidents = plant(&mut rng, &mut models, config);
        History {
            config,
            models,
            incidents,
            shock_start,
            shock_direction,
        }
    }

    /// The configuration.
    pub fn config(&self) -> Config {
        self.config
    }

    /// The months of the history, oldest first.
    pub fn periods(&self) -> Vec<Period> {
        (0..MONTHS).map(period_at).collect()
    }

    /// The planted incidents, in class order.
    pub fn incidents(&self) -> &[Incident] {
        &self.incidents
    }

    /// The months of the national shock (0-based), and whether it raised (+1) or lowered (-1)
    /// every force.
    pub fn shock(&self) -> (std::ops::Range<usize>, f64) {
        (
            self.shock_start..self.shock_start + SHOCK_MONTHS,
            self.shock_direction,
        )
    }

    /// The forces' ids, in [`FORCES`] order.
    pub fn force_ids(&self) -> Vec<&'static str> {
        self.models.iter().map(|m| m.force.id).collect()
    }

    /// Months (0-based) in which `force` had a section 60 burst.
    pub fn burst_months(&self, force: usize) -> Vec<usize> {
        self.models[force].bursts.iter().map(|b| b.0).collect()
    }

    fn incident_on(&self, force: usize) -> Option<&Incident> {
        self.incidents.iter().find(|i| i.force == force)
    }

    /// The upload of `force` (an index into [`FORCES`]) for `month` (0-based), as the force
    /// sends it, or `None` for a month it never sends.
    pub fn upload(&self, force: usize, month: usize) -> Option<Upload> {
        let incident = self.incident_on(force);
        if let Some(i) = incident
            && i.class == Class::MissingPeriods
            && i.class.affects(i.month, month)
        {
            return None;
        }
        let period = period_at(month);
        let records = match incident {
            Some(i) if i.class.affects(i.month, month) => self.planted(i, month),
            _ => self.clean(force, month, 1.0),
        };
        let id = self.models[force].force.id;
        let mut rng = Rng::new(&[self.config.seed, 4, force as u64, month as u64]);
        let next = period.next().first_day();
        let sent = next
            .and_hms_opt(9, 0, 0)
            .expect("9 o'clock exists")
            .and_utc()
            + Duration::days(2 + i64::from(rng.below(17) as u32))
            + Duration::minutes(i64::from(rng.below(8 * 60) as u32));
        Some(Upload {
            force: id,
            period,
            key: format!("incoming/{id}/stop_search/{period}/{period}-{id}-stop-and-search.csv"),
            bytes: write_csv(&records, period),
            uploaded_at: sent,
        })
    }

    /// A month of records as the force would have sent it with nothing wrong (`step` times its
    /// usual level).
    fn clean(&self, force: usize, month: usize, step: f64) -> Vec<Record> {
        let model = &self.models[force];
        let mut rng = Rng::new(&[self.config.seed, 3, force as u64, month as u64]);
        let t = month as f64;
        let calendar = f64::from(period_at(month).month());
        let season = 1.0
            + model.season_amplitude
                * (std::f64::consts::TAU * (calendar - model.season_peak) / 12.0).cos();
        let trend = (model.trend * t / 12.0).exp();
        let shock = if (self.shock_start..self.shock_start + SHOCK_MONTHS).contains(&month) {
            model.shock
        } else {
            1.0
        };
        let mean = model.level * season * trend * shock * step;
        let n = rng.negative_binomial(mean, model.shape);
        let days = period_at(month).days();
        let mut records: Vec<Record> = (0..n)
            .map(|_| model.mix.record(&mut rng, model.force, days, None))
            .collect();
        for &(m, first, length, size) in &model.bursts {
            if m != month {
                continue;
            }
            for _ in 0..size {
                let day = (first + rng.below(length as usize) as u32).min(days);
                records.push(model.mix.record(&mut rng, model.force, days, Some(day)));
            }
        }
        records
    }

    /// A month of a force with an incident that affects it.
    fn planted(&self, incident: &Incident, month: usize) -> Vec<Record> {
        let force = incident.force;
        let mut rng = Rng::new(&[self.config.seed, 5, force as u64, month as u64]);
        let mut records = match incident.class {
            Class::VolumeStep => self.clean(force, month, incident.value),
            Class::ResentPreviousPeriod => self.clean(force, month - 1, 1.0),
            Class::ResentOtherForce => self.clean(incident.other.unwrap_or(force), month, 1.0),
            Class::NearDuplicateResend => {
                let mut previous = self.clean(force, month - 1, 1.0);
                let fresh = self.clean(force, month, 1.0);
                let mut fresh = fresh.into_iter();
                for r in &mut previous {
                    if rng.chance(0.1)
                        && let Some(f) = fresh.next()
                    {
                        *r = f;
                    }
                }
                previous
            }
            _ => self.clean(force, month, 1.0),
        };
        let days = period_at(month).days();
        for r in &mut records {
            r.day = r.day.min(days as u8);
        }
        match incident.class {
            Class::NotStatedJump => {
                let base = self.models[force].mix.not_stated;
                let p = ((incident.value - base) / (1.0 - base)).max(0.0);
                for r in records.iter_mut().filter(|r| r.sde != 0) {
                    if rng.chance(p) {
                        r.sde = SDE_NOT_STATED;
                    }
                }
            }
            Class::BlankFieldRise => {
                for r in &mut records {
                    if rng.chance(incident.value) {
                        r.outcome = 0;
                    }
                }
            }
            Class::EthnicityCopied => {
                for r in &mut records {
                    r.sde = match r.ode {
                        1 => 1,
                        2 => 8,
                        3 => 13,
                        4 => 16,
                        5 => 18,
                        6 => SDE_NOT_STATED,
                        _ => 0,
                    };
                }
            }
            Class::OutcomeCodesSwapped => {
                let (a, b) = SWAPS[incident.value as usize];
                for r in &mut records {
                    if r.outcome == a {
                        r.outcome = b;
                    } else if r.outcome == b {
                        r.outcome = a;
                    }
                }
            }
            Class::SmallForceHalving => {
                let mut keep = false;
                records.retain(|_| {
                    keep = !keep;
                    keep
                });
            }
            Class::PartialPeriod => records.retain(|r| f64::from(r.day) <= incident.value),
            Class::DoubledPeriod => records.extend_from_within(..),
            Class::CategoryVanished => {
                for r in records.iter_mut().filter(|r| (5..=8).contains(&r.sde)) {
                    r.sde = SDE_OTHER;
                }
            }
            Class::TimesAtMidnight => {
                for r in &mut records {
                    r.seconds = 0;
                }
            }
            Class::PeerMiscoding => {
                for r in records.iter_mut().filter(|r| r.sde == SDE_NOT_STATED) {
                    r.sde = SDE_OTHER;
                }
            }
            _ => {}
        }
        records
    }
}

impl Mix {
    fn draw(r: &mut Rng, groups: [f64; 5]) -> Mix {
        let vehicle = r.range(0.01, 0.04);
        let both = r.range(0.06, 0.18);
        let op_blank = r.range(0.05, 0.4);
        let op_true = r.range(0.02, 0.08);
        let gender_blank = r.range(0.003, 0.02);
        let female = r.range(0.08, 0.14);
        let age_blank = r.range(0.005, 0.03);
        let youth = r.range(0.12, 0.2);
        let drugs = r.range(0.5, 0.7);
        let firearms = r.range(0.003, 0.015);
        let knives = r.range(0.0, 0.003);
        let nfa = r.range(0.65, 0.75);
        let removal_true = r.range(0.01, 0.05);
        let removal_blank = r.range(0.1, 0.35);
        Mix {
            types: [1.0 - vehicle - both, both, vehicle],
            part_op: [
                op_blank,
                (1.0 - op_blank) * (1.0 - op_true),
                (1.0 - op_blank) * op_true,
            ],
            location_blank: r.range(0.005, 0.05),
            gender: [
                gender_blank,
                1.0 - gender_blank - female - 0.002,
                female,
                0.002,
            ],
            age: [
                age_blank,
                0.001,
                youth,
                0.32,
                0.27,
                1.0 - age_blank - 0.001 - youth - 0.59,
            ],
            groups,
            not_stated: r.range(0.02, 0.12),
            sde_blank: r.range(0.005, 0.025),
            agree: r.range(0.85, 0.95),
            ode_not_reported: r.range(0.01, 0.03),
            ode_blank: r.range(0.005, 0.02),
            legislation: [
                1.0 - drugs - firearms - knives,
                drugs,
                firearms,
                knives,
                0.0,
            ],
            legislation_blank: r.range(0.002, 0.012),
            object_blank: r.range(0.002, 0.012),
            outcome: [
                nfa,
                r.range(0.12, 0.18),
                r.range(0.05, 0.1),
                r.range(0.02, 0.06),
                r.range(0.01, 0.04),
                r.range(0.005, 0.015),
                r.range(0.005, 0.01),
                r.range(0.0, 0.01),
            ],
            outcome_blank: r.range(0.003, 0.012),
            removal: [
                removal_blank,
                (1.0 - removal_blank) * (1.0 - removal_true),
                (1.0 - removal_blank) * removal_true,
            ],
            midnight: r.range(0.001, 0.015),
        }
    }

    /// One record; `burst_day` makes it a section 60 search on that day.
    fn record(&self, r: &mut Rng, force: Force, days: u32, burst_day: Option<u32>) -> Record {
        let ty = r.weighted(&self.types) as u8;
        let person = ty != 2;
        let day = burst_day.unwrap_or_else(|| 1 + r.below(days as usize) as u32);
        let seconds = if burst_day.is_none() && r.chance(self.midnight) {
            0
        } else {
            let hour = r.weighted(&HOURS) as u32;
            hour * 3600 + r.below(3600) as u32
        };
        let part_op = if burst_day.is_some() {
            2
        } else {
            r.weighted(&self.part_op) as u8
        };
        let operation = if part_op == 2 && r.chance(0.5) {
            1 + r.below(OPERATIONS.len() - 1) as u8
        } else {
            0
        };
        let location = (!r.chance(self.location_blank)).then(|| {
            (
                (force.lat + 0.12 * r.normal()).clamp(49.9, 55.9),
                (force.lon + 0.12 * r.normal()).clamp(-6.4, 1.9),
            )
        });
        let (gender, age, sde, ode) = if person {
            let gender = r.weighted(&self.gender) as u8;
            let age = r.weighted(&self.age) as u8;
            let (sde, group) = if r.chance(self.sde_blank) {
                (0, None)
            } else if r.chance(self.not_stated) {
                (SDE_NOT_STATED, None)
            } else {
                let g = r.weighted(&self.groups);
                let (codes, weights) = SDE_CODES[g];
                (codes[r.weighted(weights)], Some(g))
            };
            let ode = if r.chance(self.ode_blank) {
                0
            } else if r.chance(self.ode_not_reported) {
                6
            } else {
                1 + self.officer_group(r, group) as u8
            };
            (gender, age, sde, ode)
        } else {
            (0, 0, 0, 0)
        };
        let legislation = if burst_day.is_some() {
            SECTION_60
        } else if r.chance(self.legislation_blank) {
            0
        } else {
            1 + r.weighted(&self.legislation) as u8
        };
        let object = if r.chance(self.object_blank) && burst_day.is_none() {
            0
        } else {
            match legislation {
                2 => 1,
                3 => 9,
                4 | 5 => 2,
                _ => {
                    let weights: Vec<f64> = PACE_OBJECTS.iter().map(|p| p.1).collect();
                    PACE_OBJECTS[r.weighted(&weights)].0
                }
            }
        };
        let outcome = if age == 1 {
            NO_FURTHER_ACTION
        } else if r.chance(self.outcome_blank) {
            0
        } else if burst_day.is_some() && r.chance(0.85) {
            NO_FURTHER_ACTION
        } else {
            1 + r.weighted(&self.outcome) as u8
        };
        let linked = match outcome {
            NO_FURTHER_ACTION => u8::from(!r.chance(0.2)),
            _ => r.weighted(&[0.05, 0.2, 0.75]) as u8,
        };
        let removal = r.weighted(&self.removal) as u8;
        Record {
            ty,
            day: day as u8,
            seconds,
            part_op,
            operation,
            location,
            gender,
            age,
            sde,
            ode,
            legislation,
            object,
            outcome,
            linked,
            removal,
        }
    }

    /// The officer's group (0 to 4) for a person who gave `group` (or none).
    fn officer_group(&self, r: &mut Rng, group: Option<usize>) -> usize {
        match group {
            Some(1) => r.weighted(&[0.3, 0.2, 0.05, 0.45, 0.0]),
            Some(4) => r.weighted(&[0.2, 0.0, 0.35, 0.1, 0.35]),
            Some(g) if r.chance(self.agree) => g,
            _ => {
                let mut weights = self.groups;
                if let Some(g) = group {
                    weights[g] = 0.0;
                }
                r.weighted(&weights)
            }
        }
    }
}

/// Picks the incidents' forces and months and adjusts the two forces whose class needs a size.
fn plant(rng: &mut Rng, models: &mut [Model], config: Config) -> Vec<Incident> {
    let mut free: Vec<usize> = (0..models.len()).collect();
    rng.shuffle(&mut free);
    let take = |free: &mut Vec<usize>, ok: &dyn Fn(usize) -> bool| -> usize {
        let at = free.iter().position(|f| ok(*f)).unwrap_or(0);
        free.remove(at)
    };
    let mut incidents = Vec::new();
    for class in Class::ALL {
        let force = match class {
            Class::SmallForceHalving => take(&mut free, &|f| FORCES[f].monthly <= 600.0),
            Class::CategoryVanished => take(&mut free, &|f| {
                FORCES[f].groups[1] * FORCES[f].monthly * config.scale >= 20.0
            }),
            _ => take(&mut free, &|_| true),
        };
        let last = match class {
            Class::NotStatedJump | Class::MissingPeriods | Class::CategoryVanished => MONTHS - 3,
            _ => MONTHS - 1,
        };
        let month = FIRST_INCIDENT_MONTH + rng.below(last - FIRST_INCIDENT_MONTH + 1);
        let (value, detail, other) = match class {
            Class::SmallForceHalving => {
                let level = rng.range(100.0, 150.0);
                models[force].level = level;
                (0.5, "half the records".to_owned(), None)
            }
            Class::CategoryVanished => {
                let mixed = models[force].force.groups[1];
                let level = models[force].level.max(25.0 / mixed);
                models[force].level = level;
                (
                    0.0,
                    format!("about {:.0} Mixed a month before", level * mixed * 0.9),
                    None,
                )
            }
            Class::VolumeStep => {
                let k = rng.range(3.0, 4.0);
                (k, format!("×{k:.1}"), None)
            }
            Class::NotStatedJump => {
                let p = rng.range(0.25, 0.35);
                (
                    p,
                    format!(
                        "not stated {:.0}% (usually {:.0}%)",
                        p * 100.0,
                        models[force].mix.not_stated * 100.0
                    ),
                    None,
                )
            }
            Class::BlankFieldRise => {
                let p = rng.range(0.17, 0.23);
                (
                    p,
                    format!(
                        "outcome blank {:.0}% (usually {:.1}%)",
                        p * 100.0,
                        models[force].mix.outcome_blank * 100.0
                    ),
                    None,
                )
            }
            Class::OutcomeCodesSwapped => {
                let k = rng.below(SWAPS.len());
                let (a, b) = SWAPS[k];
                (
                    k as f64,
                    format!("{} ↔ {}", OUTCOMES[a as usize], OUTCOMES[b as usize]),
                    None,
                )
            }
            Class::PartialPeriod => {
                let day = 13.0 + rng.below(5) as f64;
                (day, format!("days 1 to {day:.0} only"), None)
            }
            Class::ResentOtherForce => {
                // The force of the most similar size among those left clean: its file could
                // pass for this force's on volume alone.
                let own = models[force].level;
                let other = free
                    .iter()
                    .copied()
                    .min_by(|a, b| {
                        let d = |f: usize| (models[f].level / own).ln().abs();
                        d(*a).total_cmp(&d(*b))
                    })
                    .unwrap_or(force);
                // Kept clean: no incident is planted on it.
                free.retain(|f| *f != other);
                (0.0, format!("{}'s file", FORCES[other].id), Some(other))
            }
            Class::ResentPreviousPeriod => (0.0, "last month's records".to_owned(), None),
            Class::NearDuplicateResend => (
                0.0,
                "last month's records, a tenth replaced".to_owned(),
                None,
            ),
            Class::EthnicityCopied => {
                (0.0, "self-defined = officer-defined group".to_owned(), None)
            }
            Class::DoubledPeriod => (0.0, "every record twice".to_owned(), None),
            Class::MissingPeriods => (0.0, "three months not sent".to_owned(), None),
            Class::TimesAtMidnight => (0.0, "every time 00:00".to_owned(), None),
            Class::PeerMiscoding => (
                0.0,
                "not stated sent as Other, whole history".to_owned(),
                None,
            ),
        };
        incidents.push(Incident {
            class,
            force,
            month,
            other,
            detail: format!("{detail}; about {:.0} a month", models[force].level),
            value,
        });
    }
    incidents
}

/// Quotes a cell when it holds a comma, a quote or a line break.
fn cell(out: &mut Vec<u8>, value: &str) {
    if value.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(value.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(value.as_bytes());
    }
}

/// The records as a data.police.uk extract of `period`.
fn write_csv(records: &[Record], period: Period) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = Vec::with_capacity(64 + records.len() * 260);
    out.extend_from_slice(HEADER.as_bytes());
    out.push(b'\n');
    let first: NaiveDate = period.first_day();
    for r in records {
        let date = first + Duration::days(i64::from(r.day) - 1);
        let at = Utc.from_utc_datetime(
            &(date.and_hms_opt(0, 0, 0).expect("midnight exists")
                + Duration::seconds(i64::from(r.seconds))),
        );
        cell(&mut out, TYPES[r.ty as usize]);
        let _ = write!(out, ",{}+00:00,", at.format("%Y-%m-%dT%H:%M:%S"));
        cell(&mut out, BOOLS[r.part_op as usize]);
        out.push(b',');
        cell(&mut out, OPERATIONS[r.operation as usize]);
        match r.location {
            Some((lat, lon)) => {
                let _ = write!(out, ",{lat:.6},{lon:.6},");
            }
            None => out.extend_from_slice(b",,,"),
        }
        for (i, value) in [
            GENDERS[r.gender as usize],
            AGES[r.age as usize],
            SDE[r.sde as usize],
            ODE[r.ode as usize],
            LEGISLATION[r.legislation as usize],
            OBJECTS[r.object as usize],
            OUTCOMES[r.outcome as usize],
            BOOLS[r.linked as usize],
            BOOLS[r.removal as usize],
        ]
        .iter()
        .enumerate()
        {
            if i > 0 {
                out.push(b',');
            }
            cell(&mut out, value);
        }
        out.push(b'\n');
    }
    out
}
