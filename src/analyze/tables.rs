//! The analysis tables as Parquet bytes, and reading them back: the metrics snapshot (one
//! file per accepted submission, long form), the anomalies table (one file per analysed
//! submission) and the status table (one file per dataset, rewritten after each run).
//!
//! Writing and reading are pure over byte buffers; the pipeline moves the bytes.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, DictionaryArray, Float64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt64Array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use super::detect::{Anomaly, Unit};
use super::metrics::MetricRow;
use super::status::StatusRow;
use crate::finding::{Code, Severity};
use crate::period::Period;

/// A table that could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// From arrow.
    #[error("failed to build a table batch: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// From parquet.
    #[error("failed to read or write Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// A file that does not have the expected columns.
    #[error("the table has no usable column `{0}`")]
    Column(String),
}

fn props(metadata: Vec<KeyValue>) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(crate::snapshot::COMPRESSION)
        .set_key_value_metadata(Some(metadata))
        .build()
}

fn dict() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

fn write(
    schema: &SchemaRef,
    columns: Vec<ArrayRef>,
    metadata: Vec<KeyValue>,
) -> Result<Vec<u8>, TableError> {
    let batch = RecordBatch::try_new(Arc::clone(schema), columns)?;
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, Arc::clone(schema), Some(props(metadata)))?;
    w.write(&batch)?;
    w.close()?;
    Ok(out)
}

fn texts<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn opt_texts<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(values.collect::<StringArray>())
}

fn dicts<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(values.collect::<DictionaryArray<Int32Type>>())
}

fn floats(values: impl Iterator<Item = f64>) -> ArrayRef {
    Arc::new(Float64Array::from_iter_values(values))
}

fn opt_floats(values: impl Iterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(values.collect::<Float64Array>())
}

fn timestamps(values: impl Iterator<Item = Option<DateTime<Utc>>>) -> ArrayRef {
    Arc::new(
        values
            .map(|t| t.map(|t| t.timestamp_micros()))
            .collect::<TimestampMicrosecondArray>()
            .with_timezone("UTC"),
    )
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Reads every batch of a Parquet file.
fn read(bytes: Vec<u8>) -> Result<Vec<RecordBatch>, TableError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))?.build()?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

/// A column as text, whatever its string encoding.
fn text_column(batch: &RecordBatch, name: &str) -> Result<StringArray, TableError> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| TableError::Column(name.to_owned()))?;
    let utf8 = cast(column, &DataType::Utf8)?;
    utf8.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| TableError::Column(name.to_owned()))
}

fn float_column(batch: &RecordBatch, name: &str) -> Result<Float64Array, TableError> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| TableError::Column(name.to_owned()))?;
    let f = cast(column, &DataType::Float64)?;
    f.as_any()
        .downcast_ref::<Float64Array>()
        .cloned()
        .ok_or_else(|| TableError::Column(name.to_owned()))
}

fn opt_text(a: &StringArray, i: usize) -> Option<String> {
    a.is_valid(i).then(|| a.value(i).to_owned())
}

fn opt_float(a: &Float64Array, i: usize) -> Option<f64> {
    a.is_valid(i).then(|| a.value(i))
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// Identifies a metrics file.
#[derive(Debug, Clone)]
pub struct MetricsHeader {
    /// Dataset id of the submission.
    pub dataset: String,
    /// Force id.
    pub force_id: String,
    /// The period.
    pub period: Period,
    /// Submission id.
    pub submission_id: String,
    /// Where the population figures come from, when rates were computed.
    pub population_source: Option<String>,
}

/// The Arrow schema of the metrics snapshot.
pub fn metrics_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("force_id", dict(), false),
        Field::new("period", DataType::Utf8, false),
        Field::new("submission_id", DataType::Utf8, false),
        Field::new("metric", dict(), false),
        Field::new("dimension", dict(), false),
        Field::new("category", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("numerator", DataType::Float64, true),
        Field::new("denominator", DataType::Float64, true),
    ]))
}

/// One submission's metric rows as a Parquet file.
pub fn metrics_parquet(header: &MetricsHeader, rows: &[MetricRow]) -> Result<Vec<u8>, TableError> {
    let n = rows.len();
    let period = header.period.to_string();
    let mut metadata = vec![
        KeyValue::new("force_returns.dataset".into(), header.dataset.clone()),
        KeyValue::new(
            "force_returns.submission_id".into(),
            header.submission_id.clone(),
        ),
    ];
    if let Some(source) = &header.population_source {
        metadata.push(KeyValue::new(
            "force_returns.population_source".into(),
            source.clone(),
        ));
    }
    write(
        &metrics_schema(),
        vec![
            dicts(std::iter::repeat_n(header.force_id.as_str(), n)),
            texts(std::iter::repeat_n(period.as_str(), n)),
            texts(std::iter::repeat_n(header.submission_id.as_str(), n)),
            dicts(rows.iter().map(|r| r.metric.as_str())),
            dicts(rows.iter().map(|r| r.dimension.as_str())),
            texts(rows.iter().map(|r| r.category.as_str())),
            floats(rows.iter().map(|r| r.value)),
            opt_floats(rows.iter().map(|r| r.numerator)),
            opt_floats(rows.iter().map(|r| r.denominator)),
        ],
        metadata,
    )
}

/// Reads a metrics file back.
pub fn read_metrics(bytes: Vec<u8>) -> Result<Vec<MetricRow>, TableError> {
    let mut out = Vec::new();
    for batch in read(bytes)? {
        let metric = text_column(&batch, "metric")?;
        let dimension = text_column(&batch, "dimension")?;
        let category = text_column(&batch, "category")?;
        let value = float_column(&batch, "value")?;
        let numerator = float_column(&batch, "numerator")?;
        let denominator = float_column(&batch, "denominator")?;
        for i in 0..batch.num_rows() {
            out.push(MetricRow {
                metric: metric.value(i).to_owned(),
                dimension: dimension.value(i).to_owned(),
                category: category.value(i).to_owned(),
                value: value.value(i),
                numerator: opt_float(&numerator, i),
                denominator: opt_float(&denominator, i),
            });
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Anomalies
// ---------------------------------------------------------------------------------------------

fn anomalies_schema() -> SchemaRef {
    let s = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    let f = |name: &str| Field::new(name, DataType::Float64, false);
    Arc::new(Schema::new(vec![
        s("dataset", false),
        s("submission_id", false),
        Field::new("force_id", dict(), false),
        s("period", false),
        Field::new("kind", dict(), false),
        Field::new("code", dict(), false),
        Field::new("severity", dict(), false),
        s("series", false),
        s("dimension", true),
        s("category", true),
        s("column", true),
        Field::new("unit", dict(), false),
        f("observed"),
        f("expected"),
        f("lower"),
        f("upper"),
        f("probability"),
        s("method", false),
        Field::new("history_months", DataType::UInt64, false),
        s("history_from", true),
        s("history_to", true),
        s("since", true),
        s("message", false),
    ]))
}

/// One submission's gaps and anomalies as a Parquet file (no rows when none were found).
pub fn anomalies_parquet(dataset: &str, anomalies: &[Anomaly]) -> Result<Vec<u8>, TableError> {
    let a = anomalies;
    let n = a.len();
    let period = |p: Option<Period>| p.map(|p| p.to_string());
    let periods: Vec<String> = a.iter().map(|x| x.period.to_string()).collect();
    let from: Vec<Option<String>> = a.iter().map(|x| period(x.history_from)).collect();
    let to: Vec<Option<String>> = a.iter().map(|x| period(x.history_to)).collect();
    let since: Vec<Option<String>> = a.iter().map(|x| period(x.since)).collect();
    write(
        &anomalies_schema(),
        vec![
            texts(std::iter::repeat_n(dataset, n)),
            texts(a.iter().map(|x| x.submission_id.as_str())),
            dicts(a.iter().map(|x| x.force_id.as_str())),
            texts(periods.iter().map(String::as_str)),
            dicts(a.iter().map(|x| if x.is_gap() { "gap" } else { "anomaly" })),
            dicts(a.iter().map(|x| x.code.as_str())),
            dicts(a.iter().map(|x| x.severity.as_str())),
            texts(a.iter().map(|x| x.series.as_str())),
            opt_texts(a.iter().map(|x| x.dimension.as_deref())),
            opt_texts(a.iter().map(|x| x.category.as_deref())),
            opt_texts(a.iter().map(|x| x.column.as_deref())),
            dicts(a.iter().map(|x| x.unit.as_str())),
            floats(a.iter().map(|x| x.observed)),
            floats(a.iter().map(|x| x.expected)),
            floats(a.iter().map(|x| x.lower)),
            floats(a.iter().map(|x| x.upper)),
            floats(a.iter().map(|x| x.probability)),
            texts(a.iter().map(|x| x.method.as_str())),
            Arc::new(UInt64Array::from_iter_values(
                a.iter().map(|x| u64::from(x.history_months)),
            )),
            opt_texts(from.iter().map(Option::as_deref)),
            opt_texts(to.iter().map(Option::as_deref)),
            opt_texts(since.iter().map(Option::as_deref)),
            texts(a.iter().map(|x| x.message.as_str())),
        ],
        Vec::new(),
    )
}

/// Reads an anomalies file back (rows with an unknown code or period are skipped).
pub fn read_anomalies(bytes: Vec<u8>) -> Result<Vec<Anomaly>, TableError> {
    let mut out = Vec::new();
    for batch in read(bytes)? {
        let t = |name: &str| text_column(&batch, name);
        let f = |name: &str| float_column(&batch, name);
        let (submission, force, period, code, severity) = (
            t("submission_id")?,
            t("force_id")?,
            t("period")?,
            t("code")?,
            t("severity")?,
        );
        let (series, dimension, category, column, unit) = (
            t("series")?,
            t("dimension")?,
            t("category")?,
            t("column")?,
            t("unit")?,
        );
        let (observed, expected, lower, upper, probability) = (
            f("observed")?,
            f("expected")?,
            f("lower")?,
            f("upper")?,
            f("probability")?,
        );
        let (method, months, from, to, since, message) = (
            t("method")?,
            f("history_months")?,
            t("history_from")?,
            t("history_to")?,
            t("since")?,
            t("message")?,
        );
        let month = |a: &StringArray, i: usize| opt_text(a, i).and_then(|s| s.parse().ok());
        for i in 0..batch.num_rows() {
            let (Some(code), Ok(p)) = (Code::parse(code.value(i)), period.value(i).parse()) else {
                continue;
            };
            out.push(Anomaly {
                code,
                severity: match severity.value(i) {
                    "error" => Severity::Error,
                    "info" => Severity::Info,
                    _ => Severity::Warning,
                },
                force_id: force.value(i).to_owned(),
                period: p,
                submission_id: submission.value(i).to_owned(),
                series: series.value(i).to_owned(),
                dimension: opt_text(&dimension, i),
                category: opt_text(&category, i),
                column: opt_text(&column, i),
                unit: match unit.value(i) {
                    "share" => Unit::Share,
                    "days" => Unit::Days,
                    "figure" => Unit::Figure,
                    _ => Unit::Count,
                },
                observed: observed.value(i),
                expected: expected.value(i),
                lower: lower.value(i),
                upper: upper.value(i),
                probability: probability.value(i),
                method: method.value(i).to_owned(),
                history_months: months.value(i) as u32,
                history_from: month(&from, i),
                history_to: month(&to, i),
                since: month(&since, i),
                message: message.value(i).to_owned(),
            });
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Status
// ---------------------------------------------------------------------------------------------

/// The status table of a dataset as a Parquet file.
pub fn status_parquet(rows: &[StatusRow], as_of: DateTime<Utc>) -> Result<Vec<u8>, TableError> {
    let s = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    let schema = Arc::new(Schema::new(vec![
        s("dataset", false),
        Field::new("force_id", dict(), false),
        s("period", false),
        Field::new("status", dict(), false),
        Field::new("deadline", timestamp_type(), false),
        Field::new("decision", dict(), true),
        s("submission_id", true),
        Field::new("received_at", timestamp_type(), true),
        Field::new("uploads", DataType::UInt64, false),
        Field::new("rows", DataType::UInt64, true),
        Field::new("zero_report", DataType::Boolean, false),
        Field::new("as_of", timestamp_type(), false),
    ]));
    let periods: Vec<String> = rows.iter().map(|r| r.period.to_string()).collect();
    let decisions: DictionaryArray<Int32Type> = rows
        .iter()
        .map(|r| r.decision.map(crate::model::Decision::as_str))
        .collect();
    write(
        &schema,
        vec![
            texts(rows.iter().map(|r| r.dataset.as_str())),
            dicts(rows.iter().map(|r| r.force_id.as_str())),
            texts(periods.iter().map(String::as_str)),
            dicts(rows.iter().map(|r| r.status.as_str())),
            timestamps(rows.iter().map(|r| Some(r.deadline))),
            Arc::new(decisions),
            opt_texts(rows.iter().map(|r| r.submission_id.as_deref())),
            timestamps(rows.iter().map(|r| r.received_at)),
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|r| r.uploads),
            )),
            Arc::new(rows.iter().map(|r| r.rows).collect::<UInt64Array>()),
            Arc::new(BooleanArray::from(
                rows.iter().map(|r| r.zero_report).collect::<Vec<_>>(),
            )),
            timestamps(std::iter::repeat_n(Some(as_of), rows.len())),
        ],
        Vec::new(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::metrics::metric_rows;
    use crate::model::observe::ObserveSettings;

    fn some_metrics() -> (MetricsHeader, Vec<MetricRow>) {
        let counts = crate::analyze::Observations {
            force_id: "kent".into(),
            period: Some("2020-01".parse().unwrap()),
            submission_id: "s".into(),
            rows: 3,
            by_day: vec![1; 31],
            dated: 3,
            ..Default::default()
        };
        let header = MetricsHeader {
            dataset: "stop_search".into(),
            force_id: "kent".into(),
            period: "2020-01".parse().unwrap(),
            submission_id: "s".into(),
            population_source: None,
        };
        (
            header,
            metric_rows(&counts, &ObserveSettings::default(), None),
        )
    }

    #[test]
    fn tables_written_with_zstd_by_earlier_versions_still_read() {
        use parquet::basic::{Compression, ZstdLevel};
        let (header, rows) = some_metrics();
        let batches = read(metrics_parquet(&header, &rows).unwrap()).unwrap();
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap()))
            .build();
        let mut zstd = Vec::new();
        let mut w = ArrowWriter::try_new(&mut zstd, batches[0].schema(), Some(props)).unwrap();
        for b in &batches {
            w.write(b).unwrap();
        }
        w.close().unwrap();
        let meta = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(zstd.clone()))
            .unwrap()
            .metadata()
            .clone();
        assert!(matches!(
            meta.row_group(0).column(0).compression(),
            Compression::ZSTD(_)
        ));
        assert_eq!(read_metrics(zstd).unwrap(), rows);
    }

    #[test]
    fn metrics_and_anomalies_read_back_as_written() {
        let (header, rows) = some_metrics();
        let bytes = metrics_parquet(&header, &rows).unwrap();
        assert_eq!(read_metrics(bytes).unwrap(), rows);

        let anomaly = Anomaly {
            code: Code::AnomalyVolume,
            severity: Severity::Warning,
            force_id: "kent".into(),
            period: "2020-01".parse().unwrap(),
            submission_id: "s".into(),
            series: "searches".into(),
            dimension: None,
            category: Some("x".into()),
            column: None,
            unit: Unit::Count,
            observed: 4.0,
            expected: 1.0,
            lower: 0.5,
            upper: 1.5,
            probability: 1e-9,
            method: "m".into(),
            history_months: 12,
            history_from: Some("2019-01".parse().unwrap()),
            history_to: None,
            since: None,
            message: "msg".into(),
        };
        let bytes = anomalies_parquet("stop_search", std::slice::from_ref(&anomaly)).unwrap();
        assert_eq!(read_anomalies(bytes).unwrap(), vec![anomaly]);
        let empty = anomalies_parquet("stop_search", &[]).unwrap();
        assert!(read_anomalies(empty).unwrap().is_empty());
    }
}
