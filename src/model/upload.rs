//! Settings of reading and checking an upload: the limits that protect the service, how cell
//! values are read, and the blank-rate thresholds of a column. `config` parses them from a
//! pipeline file; `ingest`, `normalise` and `validate` use them.

use serde::Deserialize;

/// Limits that protect the service from hostile or broken files.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest upload read, in bytes.
    pub max_file_bytes: u64,
    /// Most records read from one upload.
    pub max_rows: u64,
    /// Longest cell, in bytes.
    pub max_cell_bytes: usize,
    /// Most cells in the header (and so in any row); a wider header stops the upload being
    /// read, so memory does not grow with the width of a file.
    #[serde(default = "default_max_columns")]
    pub max_columns: usize,
}

/// The default of `limits.max_columns`: far above any return's width (the widest known force
/// extract has about 270 columns), far below what would hold memory.
pub const DEFAULT_MAX_COLUMNS: usize = 1_000;

fn default_max_columns() -> usize {
    DEFAULT_MAX_COLUMNS
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 2 << 30,
            max_rows: 20_000_000,
            max_cell_bytes: 64 << 10,
            max_columns: DEFAULT_MAX_COLUMNS,
        }
    }
}

/// How cell values are read before they are checked.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReadingSettings {
    /// Cell values that mean "no value" (compared ignoring ASCII case): read as blank, with
    /// a `value_placeholder` note, unless the column lists the value as one of its codes.
    #[serde(default = "default_placeholders")]
    pub placeholders: Vec<String>,
}

/// The placeholders forces' systems and Excel write for "no value".
fn default_placeholders() -> Vec<String> {
    ["NULL", "N/A", "-", "#N/A"].map(String::from).to_vec()
}

impl Default for ReadingSettings {
    fn default() -> Self {
        ReadingSettings {
            placeholders: default_placeholders(),
        }
    }
}

/// Blank-rate thresholds for one column (shares between 0 and 1).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BlankThreshold {
    /// Above this share of blank cells: a warning.
    pub warn_above: Option<f64>,
    /// Above this share of blank cells: an error, which rejects the upload.
    pub error_above: Option<f64>,
}
