//! The evaluation's own table of the 43 territorial forces: data.police.uk id, a typical month's
//! searches (about the year ending March 2024, rounded), a point near the middle of the force
//! area, and the mix of self-defined ethnic groups among the people searched.
//!
//! The figures are approximate on purpose: what matters for the evaluation is their spread
//! (the Metropolitan Police near 12,000 a month; the City of London and Warwickshire near 150),
//! not their exactness. Kept apart from the demo's own table.

/// One force as the history models it.
#[derive(Debug, Clone, Copy)]
pub struct Force {
    /// data.police.uk id.
    pub id: &'static str,
    /// Searches in a typical month at scale 1.
    pub monthly: f64,
    /// Latitude near the middle of the area.
    pub lat: f64,
    /// Longitude near the middle of the area.
    pub lon: f64,
    /// Shares of the self-defined groups White, Mixed, Asian, Black, Other among people who
    /// stated one.
    pub groups: [f64; 5],
}

const fn f(id: &'static str, monthly: f64, lat: f64, lon: f64, groups: [f64; 5]) -> Force {
    Force {
        id,
        monthly,
        lat,
        lon,
        groups,
    }
}

/// A mostly White area.
const RURAL: [f64; 5] = [0.9, 0.03, 0.03, 0.03, 0.01];
/// A town-and-country area with larger minorities.
const MIXED: [f64; 5] = [0.78, 0.05, 0.08, 0.07, 0.02];
/// A city area.
const CITY: [f64; 5] = [0.6, 0.07, 0.15, 0.15, 0.03];

/// The 43 territorial forces.
pub const FORCES: [Force; 43] = [
    f(
        "metropolitan",
        12_000.0,
        51.51,
        -0.12,
        [0.36, 0.08, 0.16, 0.36, 0.04],
    ),
    f("cumbria", 220.0, 54.6, -2.9, RURAL),
    f(
        "lancashire",
        900.0,
        53.8,
        -2.6,
        [0.82, 0.03, 0.11, 0.02, 0.02],
    ),
    f(
        "merseyside",
        2_700.0,
        53.41,
        -2.95,
        [0.86, 0.04, 0.02, 0.06, 0.02],
    ),
    f("greater-manchester", 1_300.0, 53.48, -2.24, CITY),
    f("cheshire", 450.0, 53.2, -2.6, RURAL),
    f(
        "northumbria",
        900.0,
        54.97,
        -1.6,
        [0.9, 0.03, 0.04, 0.02, 0.01],
    ),
    f("durham", 230.0, 54.7, -1.6, RURAL),
    f("north-yorkshire", 300.0, 54.1, -1.3, RURAL),
    f(
        "west-yorkshire",
        1_600.0,
        53.8,
        -1.6,
        [0.7, 0.04, 0.19, 0.05, 0.02],
    ),
    f(
        "south-yorkshire",
        1_000.0,
        53.4,
        -1.4,
        [0.8, 0.04, 0.08, 0.06, 0.02],
    ),
    f("humberside", 450.0, 53.75, -0.4, RURAL),
    f(
        "cleveland",
        420.0,
        54.55,
        -1.2,
        [0.9, 0.02, 0.05, 0.02, 0.01],
    ),
    f(
        "west-midlands",
        2_000.0,
        52.48,
        -1.9,
        [0.45, 0.08, 0.27, 0.17, 0.03],
    ),
    f("staffordshire", 400.0, 52.8, -2.1, MIXED),
    f("west-mercia", 450.0, 52.3, -2.5, RURAL),
    f("warwickshire", 150.0, 52.3, -1.55, MIXED),
    f("derbyshire", 260.0, 53.0, -1.5, MIXED),
    f("nottinghamshire", 600.0, 53.0, -1.1, MIXED),
    f("lincolnshire", 300.0, 53.1, -0.4, RURAL),
    f(
        "leicestershire",
        500.0,
        52.6,
        -1.1,
        [0.6, 0.05, 0.25, 0.08, 0.02],
    ),
    f("northamptonshire", 350.0, 52.3, -0.9, MIXED),
    f("cambridgeshire", 400.0, 52.4, 0.0, MIXED),
    f("norfolk", 450.0, 52.6, 1.1, RURAL),
    f("suffolk", 350.0, 52.2, 1.0, MIXED),
    f("bedfordshire", 500.0, 52.0, -0.4, CITY),
    f("hertfordshire", 550.0, 51.8, -0.2, MIXED),
    f("essex", 1_500.0, 51.8, 0.5, MIXED),
    f("thames-valley", 800.0, 51.6, -1.0, MIXED),
    f("hampshire", 700.0, 51.0, -1.3, MIXED),
    f("surrey", 400.0, 51.25, -0.4, MIXED),
    f("kent", 1_000.0, 51.25, 0.7, MIXED),
    f("sussex", 600.0, 50.9, -0.2, MIXED),
    f(
        "city-of-london",
        160.0,
        51.515,
        -0.09,
        [0.5, 0.08, 0.14, 0.24, 0.04],
    ),
    f("devon-and-cornwall", 500.0, 50.5, -4.0, RURAL),
    f("avon-and-somerset", 550.0, 51.4, -2.6, MIXED),
    f("gloucestershire", 200.0, 51.85, -2.2, MIXED),
    f("wiltshire", 220.0, 51.35, -1.95, RURAL),
    f("dorset", 250.0, 50.75, -2.2, RURAL),
    f("north-wales", 350.0, 53.1, -3.5, RURAL),
    f("gwent", 300.0, 51.65, -3.0, RURAL),
    f("south-wales", 900.0, 51.55, -3.4, MIXED),
    f("dyfed-powys", 200.0, 52.0, -4.0, RURAL),
];
