//! Workbook templates a force fills in: `force-returns template <dataset>`.
//!
//! A template is built from the return's declaration alone, so every return gets one the same
//! way: a `data` sheet whose header is the record schema's properties in order (the header row
//! locked, the rest free to edit), a drop-down on every column with a code list and on the
//! metric column, a check that figures are numbers or suppression markers, and, for an
//! aggregate return, one row pre-filled with its metric and breakdown for every row the
//! catalogue makes mandatory at the return's cadence. A `README` sheet says what goes where,
//! and a hidden `lists` sheet holds the drop-downs' codes. The reader takes the sheet named
//! `data`, so a filled template is read as any other workbook.

use std::fmt::Write as _;

use rust_xlsxwriter::{
    Color, DataValidation, DataValidationErrorStyle, DocProperties, Format, Formula,
    ProtectionOptions, Workbook, Worksheet, XlsxError,
};

use crate::config::Pipeline;
use crate::finding::column_letters;
use crate::period::Period;
use crate::schema::{CodeEntry, UploadContext};

/// The sheet a template's rows are on, which the workbook reader looks for first.
pub const DATA_SHEET: &str = "data";

/// Excel's last row (zero-based): drop-downs reach no further.
const LAST_ROW: u32 = 1_048_575;

/// Excel's limit on a drop-down's input or error message, in characters.
const MESSAGE_LIMIT: usize = 255;

/// What a template is for.
#[derive(Debug, Clone, Copy)]
pub struct TemplateFor<'a> {
    /// The return.
    pub pipeline: &'a Pipeline,
    /// The force filling it in.
    pub force: &'a CodeEntry,
    /// The period it is for.
    pub period: &'a Period,
}

/// One column of the `data` sheet.
struct Column<'a> {
    header: &'a str,
    /// The drop-down's codes, with the name of their column on the `lists` sheet.
    list: Option<(String, Vec<&'a str>)>,
    /// Whether the column holds a figure (a number or a suppression marker).
    figure: bool,
    width: usize,
}

/// Writes the template as XLSX bytes.
pub fn write(on: TemplateFor<'_>) -> Result<Vec<u8>, XlsxError> {
    let pipeline = on.pipeline;
    let schema = &pipeline.schema;
    let table = pipeline.table.as_deref();
    let rows = prefilled_rows(on);
    let mut columns: Vec<Column<'_>> = schema
        .properties
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let list = if let Some(list) = &p.codelist {
                Some((
                    list.id.clone(),
                    list.codes
                        .iter()
                        .map(|c| c.code.as_str())
                        .collect::<Vec<_>>(),
                ))
            } else if let Some(t) = table.filter(|t| t.metric == i) {
                // The metric column: the ids of the catalogue's metrics of the return's cadence.
                let ids = t
                    .catalogue
                    .metrics
                    .iter()
                    .filter(|m| m.cadence == t.cadence);
                Some(("metric".to_owned(), ids.map(|m| m.id.as_str()).collect()))
            } else {
                None
            };
            let figure = table.is_some_and(|t| {
                t.value == i || t.numerator == Some(i) || t.denominator == Some(i)
            });
            let widest = list
                .as_ref()
                .and_then(|(_, codes)| codes.iter().map(|c| c.chars().count()).max())
                .unwrap_or(0);
            Column {
                header: &p.name,
                width: p.name.len().max(widest).clamp(10, 40),
                list,
                figure,
            }
        })
        .collect();
    for row in &rows {
        for (column, cell) in columns.iter_mut().zip(row) {
            if let Some(cell) = cell {
                column.width = column.width.max(cell.chars().count().min(40));
            }
        }
    }

    let mut workbook = Workbook::new();
    workbook.set_properties(
        &DocProperties::new()
            .set_title(format!(
                "{} for {}, {}",
                pipeline.title, on.force.label, on.period
            ))
            .set_subject(format!("force-returns template: {}", pipeline.dataset)),
    );
    workbook.push_worksheet(readme(on, &columns, rows.len())?);
    workbook.push_worksheet(data_sheet(on, &columns, &rows)?);
    workbook.push_worksheet(lists_sheet(&columns)?);
    workbook.save_to_buffer()
}

/// The rows the template comes with, one cell per schema property (`None`: left blank): for
/// an aggregate return, each mandatory metric of its cadence at each row of each of its
/// breakdowns, with the force and period filled in.
fn prefilled_rows(on: TemplateFor<'_>) -> Vec<Vec<Option<String>>> {
    let schema = &on.pipeline.schema;
    let Some(table) = on.pipeline.table.as_deref() else {
        return Vec::new();
    };
    let context: Vec<Option<String>> = schema
        .properties
        .iter()
        .map(|p| match p.upload_context {
            Some(UploadContext::Force) => Some(on.force.code.clone()),
            Some(UploadContext::Period) => Some(on.period.to_string()),
            None => None,
        })
        .collect();
    let mut rows = Vec::new();
    for metric in &table.catalogue.metrics {
        if !metric.mandatory || metric.cadence != table.cadence {
            continue;
        }
        for breakdown in &metric.breakdowns {
            for combination in metric.breakdown_rows(breakdown) {
                let mut row = context.clone();
                row[table.metric] = Some(metric.id.clone());
                for (dimension, code) in combination {
                    if let Some(column) = table.dimensions.iter().find(|c| c.name == dimension.name)
                    {
                        row[column.property] = Some(dimension.codes[code].clone());
                    }
                }
                rows.push(row);
            }
        }
    }
    rows
}

/// `text` cut to Excel's message limit.
fn message(text: &str) -> String {
    if text.chars().count() <= MESSAGE_LIMIT {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(MESSAGE_LIMIT - 1).collect();
        format!("{cut}…")
    }
}

fn data_sheet(
    on: TemplateFor<'_>,
    columns: &[Column<'_>],
    rows: &[Vec<Option<String>>],
) -> Result<Worksheet, XlsxError> {
    let mut sheet = Worksheet::new();
    sheet.set_name(DATA_SHEET)?;
    let free = Format::new().set_unlocked();
    let header = Format::new()
        .set_bold()
        .set_background_color(Color::RGB(0x00D9_E2EC))
        .set_border_bottom(rust_xlsxwriter::FormatBorder::Thin);
    let last = on
        .pipeline
        .limits
        .max_rows
        .min(u64::from(LAST_ROW))
        .max(rows.len() as u64) as u32;
    let markers: Vec<&str> = on
        .pipeline
        .table
        .as_deref()
        .map(|t| t.markers.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let mut list_column = 0usize;
    for (c, column) in columns.iter().enumerate() {
        let col = c as u16;
        sheet.set_column_width(col, column.width as f64 + 2.0)?;
        sheet.set_column_format(col, &free)?;
        sheet.write_string_with_format(0, col, column.header, &header)?;
        if let Some((name, codes)) = &column.list {
            let range = format!(
                "=lists!${0}$2:${0}${1}",
                column_letters(list_column as u32),
                codes.len() + 1
            );
            list_column += 1;
            let validation = DataValidation::new()
                .allow_list_formula(Formula::new(range))
                .set_input_title(column.header)?
                .set_input_message(message(&format!("A code of the list `{name}`.")))?
                .set_error_title("Not a code of the list")?
                .set_error_message(message(&format!(
                    "`{}` takes a code of the list `{name}`: pick one from the drop-down (the README sheet says where the codes come from).",
                    column.header
                )))?;
            sheet.add_data_validation(1, col, last, col, &validation)?;
        } else if column.figure {
            let top = format!("{}2", column_letters(c as u32));
            let mut accepted = format!("ISNUMBER({top})");
            for m in &markers {
                let _ = write!(accepted, ",{top}=\"{}\"", m.replace('"', "\"\""));
            }
            let validation = DataValidation::new()
                .allow_custom(Formula::new(format!("=OR({accepted})")))
                .set_error_style(DataValidationErrorStyle::Warning)
                .set_input_title(column.header)?
                .set_input_message(message(&format!(
                    "A number, or a suppression marker: {}",
                    markers.join(" ")
                )))?
                .set_error_title("Not a figure")?
                .set_error_message(message(&format!(
                    "`{}` takes a number or one of the suppression markers {}.",
                    column.header,
                    markers.join(" ")
                )))?;
            sheet.add_data_validation(1, col, last, col, &validation)?;
        }
    }
    for (r, row) in rows.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            if let Some(cell) = cell {
                sheet.write_string_with_format(r as u32 + 1, c as u16, cell, &free)?;
            }
        }
    }
    sheet.set_freeze_panes(1, 0)?;
    if !columns.is_empty() {
        sheet.autofilter(0, 0, rows.len().max(1) as u32, columns.len() as u16 - 1)?;
    }
    // Locked without a password: the header stays as the schema names it, and a user who
    // must change the layout can still unprotect the sheet.
    let options = ProtectionOptions {
        insert_rows: true,
        delete_rows: true,
        format_columns: true,
        format_cells: true,
        sort: true,
        use_autofilter: true,
        ..ProtectionOptions::default()
    };
    sheet.protect_with_options(&options);
    sheet.set_active(true);
    Ok(sheet)
}

fn lists_sheet(columns: &[Column<'_>]) -> Result<Worksheet, XlsxError> {
    let mut sheet = Worksheet::new();
    sheet.set_name("lists")?;
    let bold = Format::new().set_bold();
    for (c, (name, codes)) in columns.iter().filter_map(|c| c.list.as_ref()).enumerate() {
        let col = c as u16;
        sheet.write_string_with_format(0, col, name, &bold)?;
        for (r, code) in codes.iter().enumerate() {
            sheet.write_string(r as u32 + 1, col, *code)?;
        }
    }
    sheet.set_hidden(true);
    sheet.protect();
    Ok(sheet)
}

/// The README sheet, written a line at a time: a label in the first column, text in the second.
struct Readme {
    sheet: Worksheet,
    row: u32,
    wrap: Format,
}

impl Readme {
    fn line(&mut self, label: &str, text: &str, format: &Format) -> Result<(), XlsxError> {
        self.sheet
            .write_string_with_format(self.row, 0, label, format)?
            .write_string_with_format(self.row, 1, text, &self.wrap)?;
        self.row += 1;
        Ok(())
    }

    fn gap(&mut self) {
        self.row += 1;
    }
}

fn readme(
    on: TemplateFor<'_>,
    columns: &[Column<'_>],
    prefilled: usize,
) -> Result<Worksheet, XlsxError> {
    let pipeline = on.pipeline;
    let mut sheet = Worksheet::new();
    sheet.set_name("README")?;
    sheet.set_column_width(0, 28)?;
    sheet.set_column_width(1, 100)?;
    let title = Format::new().set_bold().set_font_size(14);
    let bold = Format::new().set_bold();
    let plain = Format::new().set_text_wrap();
    let mut out = Readme {
        sheet,
        row: 0,
        wrap: plain.clone(),
    };
    out.line(
        &format!("{} — {} — {}", pipeline.title, on.force.label, on.period),
        "",
        &title,
    )?;
    out.gap();
    let mut how = vec![
        format!(
            "Fill in the sheet `{DATA_SHEET}`, one row per record; leave its header row as it is (the sheet is protected without a password so that the header stays as the service reads it)."
        ),
        "Columns with a code list have a drop-down; its codes are the only ones accepted."
            .to_owned(),
    ];
    if let Some(table) = pipeline.table.as_deref() {
        how.push(format!(
            "{prefilled} rows come pre-filled: each mandatory metric of the catalogue (version {}) at each breakdown this return must report. Fill in `{}` on each; add rows for any other metric or breakdown you report.",
            table.catalogue.version,
            columns[table.value].header
        ));
        how.push(
            "A blank cell in a breakdown column means the total over it: a row with every breakdown blank is the metric's total.".to_owned(),
        );
        how.push(format!(
            "A figure you may not publish or do not have is a suppression marker, never a blank or a zero: {}",
            table.markers.join("  ")
        ));
        if let (Some(n), Some(d)) = (table.numerator, table.denominator) {
            how.push(format!(
                "For a rate, ratio or percentage you may give the `{}` and `{}` it was computed from; the service checks that they agree with it.",
                columns[n].header, columns[d].header
            ));
        }
    }
    how.push(format!(
        "Check the file before you send it: force-returns validate FILE.xlsx --dataset {} --force {} --period {}",
        pipeline.dataset, on.force.code, on.period
    ));
    out.line("How to fill it in", "", &bold)?;
    for text in &how {
        out.line("", text, &plain)?;
    }
    out.gap();
    out.line("Column", "What it holds", &bold)?;
    for (property, column) in pipeline.schema.properties.iter().zip(columns) {
        let mut what = property.title.clone();
        if let Some(description) = property.schema.get("description").and_then(|d| d.as_str()) {
            let _ = write!(what, ": {description}");
        }
        if let Some((name, _)) = &column.list {
            let _ = write!(what, " (codes: list `{name}`)");
        }
        out.line(column.header, &what, &plain)?;
    }
    if let Some(table) = pipeline.table.as_deref() {
        out.gap();
        out.line("Metric", "Unit, and what it counts", &bold)?;
        for metric in table
            .catalogue
            .metrics
            .iter()
            .filter(|m| m.cadence == table.cadence)
        {
            let mandatory = if metric.mandatory {
                "mandatory"
            } else {
                "optional"
            };
            out.line(
                &metric.id,
                &format!(
                    "{} ({}, {mandatory}): {}",
                    metric.title, metric.unit, metric.definition
                ),
                &plain,
            )?;
        }
    }
    out.gap();
    out.line(
        "Schema",
        &format!(
            "{} (`force-returns schema {}` prints the contract)",
            pipeline.schema.id, pipeline.dataset
        ),
        &plain,
    )?;
    Ok(out.sheet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_cut_to_excels_limit() {
        assert_eq!(message("short"), "short");
        let long = "x".repeat(300);
        let cut = message(&long);
        assert_eq!(cut.chars().count(), MESSAGE_LIMIT);
        assert!(cut.ends_with('…'));
    }
}
