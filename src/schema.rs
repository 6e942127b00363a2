//! Record schemas and reference code lists, loaded from bytes.
//!
//! A dataset's contract is a JSON Schema (draft 2020-12) for one record plus `x-` annotations
//! (see `docs/schemas.md`). Code lists are data under `schemas/reference/`. This module parses
//! both, expands each `x-codelist` into the `enum` that JSON Schema checks, and exposes what the
//! rest of the service needs per property: header spellings, admitted types, snapshot typing,
//! personal-data handling. It does no IO: `config` reads the files and hands over their text.

pub mod population;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

pub use population::{AreaPopulation, Population};

/// A problem with a schema or code list, described so that an operator can fix the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SchemaProblem {
    /// What is wrong.
    pub message: String,
    /// The 1-based line in the file, when known.
    pub line: Option<usize>,
}

impl SchemaProblem {
    fn new(message: impl Into<String>) -> Self {
        SchemaProblem {
            message: message.into(),
            line: None,
        }
    }

    fn from_json(e: &serde_json::Error) -> Self {
        SchemaProblem {
            message: format!("not valid JSON: {e}"),
            line: Some(e.line()),
        }
    }
}

/// One entry of a code list, as written in `schemas/reference/<id>.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeEntry {
    /// The canonical code stored in snapshots.
    pub code: String,
    /// The human label (data.police.uk prints this for ethnicity).
    pub label: String,
    /// Other accepted spellings.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Legacy spellings: accepted, stored as `code`, reported as `value_legacy_spelling`.
    #[serde(default)]
    pub legacy: Vec<String>,
    /// Values of the list's attributes (for example the 5-group of an ethnicity code).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeListFile {
    id: String,
    title: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    attributes: Vec<String>,
    codes: Vec<CodeEntry>,
}

/// How a spelling relates to its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    /// The code, its label or an alias.
    Current,
    /// A legacy spelling.
    Legacy,
}

/// A reference code list with a lookup from every accepted spelling to its code.
#[derive(Debug, Clone)]
pub struct CodeList {
    /// The list's id (the file stem).
    pub id: String,
    /// Its title.
    pub title: String,
    /// Where it comes from.
    pub source: String,
    /// Attribute names every code carries.
    pub attributes: Vec<String>,
    /// The codes in file order.
    pub codes: Vec<CodeEntry>,
    lookup: HashMap<String, (u32, Spelling)>,
}

impl CodeList {
    /// Parses a code list file. `stem` is the file name without `.json`.
    pub fn parse(stem: &str, text: &str) -> Result<CodeList, Vec<SchemaProblem>> {
        let file: CodeListFile =
            serde_json::from_str(text).map_err(|e| vec![SchemaProblem::from_json(&e)])?;
        let mut problems = Vec::new();
        if file.id != stem {
            problems.push(SchemaProblem::new(format!(
                "code list id `{}` does not match its file name `{stem}.json`",
                file.id
            )));
        }
        let mut lookup = HashMap::new();
        for (index, entry) in file.codes.iter().enumerate() {
            for attr in &file.attributes {
                if !entry.attributes.contains_key(attr) {
                    problems.push(SchemaProblem::new(format!(
                        "code `{}` has no value for attribute `{attr}`",
                        entry.code
                    )));
                }
            }
            for attr in entry.attributes.keys() {
                if !file.attributes.contains(attr) {
                    problems.push(SchemaProblem::new(format!(
                        "code `{}` has attribute `{attr}`, which the list does not declare",
                        entry.code
                    )));
                }
            }
            let current = [&entry.code, &entry.label]
                .into_iter()
                .chain(&entry.aliases)
                .map(|s| (s, Spelling::Current));
            let legacy = entry.legacy.iter().map(|s| (s, Spelling::Legacy));
            for (spelling, kind) in current.chain(legacy) {
                match lookup.get(spelling.as_str()) {
                    Some(&(other, _)) if other as usize != index => {
                        problems.push(SchemaProblem::new(format!(
                            "spelling `{spelling}` is listed under both `{}` and `{}`",
                            file.codes[other as usize].code, entry.code
                        )));
                    }
                    Some(_) => {}
                    None => {
                        lookup.insert(spelling.clone(), (index as u32, kind));
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(CodeList {
            id: file.id,
            title: file.title,
            source: file.source,
            attributes: file.attributes,
            codes: file.codes,
            lookup,
        })
    }

    /// The index of the code a spelling stands for, and whether the spelling is legacy.
    pub fn lookup(&self, spelling: &str) -> Option<(u32, Spelling)> {
        self.lookup.get(spelling).copied()
    }

    /// Finds a code by spelling, ignoring case and surrounding spaces (for command-line input
    /// such as `--force "South Yorkshire"`, never for uploaded values).
    pub fn lookup_loose(&self, spelling: &str) -> Option<&CodeEntry> {
        let wanted = spelling.trim();
        self.lookup
            .iter()
            .find(|(s, _)| s.eq_ignore_ascii_case(wanted))
            .map(|(_, &(i, _))| &self.codes[i as usize])
    }

    /// Every accepted spelling, sorted (the `enum` the schema checks).
    pub fn spellings(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self.lookup.keys().map(String::as_str).collect();
        all.sort_unstable();
        all
    }

    /// The value of `attribute` for the code at `index`.
    pub fn attribute(&self, index: u32, attribute: &str) -> &str {
        self.codes[index as usize]
            .attributes
            .get(attribute)
            .map_or("", String::as_str)
    }
}

/// All reference code lists, by id.
#[derive(Debug, Clone, Default)]
pub struct CodeLists {
    lists: BTreeMap<String, Arc<CodeList>>,
}

impl CodeLists {
    /// Adds a parsed list.
    pub fn insert(&mut self, list: CodeList) {
        self.lists.insert(list.id.clone(), Arc::new(list));
    }

    /// The list with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<CodeList>> {
        self.lists.get(id)
    }

    /// The forces list, which every dataset needs to read upload locations.
    pub fn forces(&self) -> Option<&Arc<CodeList>> {
        self.get("forces")
    }
}

/// The JSON types a property admits. `None` of the keyword means any type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[expect(clippy::struct_excessive_bools, reason = "one flag per JSON type")]
pub struct TypeSet {
    /// `null`
    pub null: bool,
    /// `string`
    pub string: bool,
    /// `number`
    pub number: bool,
    /// `integer`
    pub integer: bool,
    /// `boolean`
    pub boolean: bool,
    /// `object` or `array` (never produced from a CSV cell)
    pub compound: bool,
}

impl TypeSet {
    const ANY: TypeSet = TypeSet {
        null: true,
        string: true,
        number: true,
        integer: true,
        boolean: true,
        compound: true,
    };

    /// Reads the `type` keyword of a (sub)schema.
    pub fn from_schema(schema: &Value) -> Result<TypeSet, String> {
        let names: Vec<&str> = match schema.get("type") {
            None => return Ok(TypeSet::ANY),
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().ok_or("`type` entries must be strings"))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("`type` must be a string or an array of strings".into()),
        };
        let mut set = TypeSet::default();
        for name in names {
            match name {
                "null" => set.null = true,
                "string" => set.string = true,
                "number" => set.number = true,
                "integer" => set.integer = true,
                "boolean" => set.boolean = true,
                "object" | "array" => set.compound = true,
                other => return Err(format!("unknown type `{other}`")),
            }
        }
        Ok(set)
    }

    /// Whether a CSV cell that parses as a number is read as one.
    pub fn reads_numbers(self) -> bool {
        self.number || self.integer
    }
}

/// How a column is typed in snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotType {
    /// Timestamp in microseconds, UTC.
    Timestamp,
    /// Boolean.
    Boolean,
    /// 64-bit float.
    Float64,
    /// 64-bit integer.
    Int64,
    /// Text as sent.
    String,
    /// The canonical code (dictionary-encoded) plus one column per listed attribute.
    Code {
        /// Code-list attributes stored as `<property>_<attribute>` columns.
        attributes: Vec<String>,
    },
    /// Not stored.
    Omit,
}

/// The lineage columns a snapshot has before its record's columns: the force and the period.
pub const LEADING_LINEAGE: [&str; 2] = ["force_id", "period"];

/// The lineage columns a snapshot has after its record's columns: the submission and the row
/// of the upload each record came from.
pub const TRAILING_LINEAGE: [&str; 2] = ["submission_id", "source_row"];

/// Personal-data handling of a property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pii {
    /// Not about a person.
    None,
    /// About a person: masked in logs and central tables.
    Personal,
    /// Special-category data (ethnicity): masked like `Personal`.
    SpecialCategory,
}

impl Pii {
    /// Whether values are masked outside the submitting force's own report.
    pub fn masked(self) -> bool {
        self != Pii::None
    }
}

/// A column that must agree with the upload's location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadContext {
    /// The force.
    Force,
    /// The period.
    Period,
}

/// One property of a record schema, with what the service needs to know about it.
#[derive(Debug, Clone)]
pub struct Property {
    /// The property name (snake case in our schemas).
    pub name: String,
    /// Its title, for reports.
    pub title: String,
    /// Header spellings that map to it (besides its name).
    pub aliases: Vec<String>,
    /// The types it admits.
    pub types: TypeSet,
    /// Its code list, when it has one.
    pub codelist: Option<Arc<CodeList>>,
    /// Personal-data handling.
    pub pii: Pii,
    /// Snapshot typing.
    pub snapshot: SnapshotType,
    /// Must fall in the upload's month.
    pub in_period: bool,
    /// Must agree with the upload's location.
    pub upload_context: Option<UploadContext>,
    /// Must not repeat across rows.
    pub unique: bool,
    /// The property's subschema with code lists expanded.
    pub schema: Value,
}

impl Property {
    /// Whether a header cell names this property (ignoring case and surrounding spaces).
    pub fn matches_header(&self, header: &str) -> bool {
        let h = header.trim();
        h.eq_ignore_ascii_case(&self.name) || self.aliases.iter().any(|a| h.eq_ignore_ascii_case(a))
    }
}

/// A compiled record schema.
#[derive(Debug, Clone)]
pub struct RecordSchema {
    /// `<dataset>/v<version>`, or the file name for ad-hoc schemas.
    pub id: String,
    /// The dataset id from `x-dataset`, when given.
    pub dataset: Option<String>,
    /// The version from `x-version`, when given.
    pub version: Option<String>,
    /// The properties in schema order.
    pub properties: Vec<Property>,
    /// Names of properties that must be in the header.
    pub required: Vec<String>,
    /// The schema with every code list expanded: what `jsonschema` compiles and forces receive.
    pub resolved: Value,
}

impl RecordSchema {
    /// Parses a record schema. `id` names it in messages and lineage; code lists come from
    /// `code_lists` (an ad-hoc schema without `x-codelist` needs none).
    pub fn parse(
        id: &str,
        text: &str,
        code_lists: &CodeLists,
    ) -> Result<RecordSchema, Vec<SchemaProblem>> {
        let mut root: Value =
            serde_json::from_str(text).map_err(|e| vec![SchemaProblem::from_json(&e)])?;
        let mut problems = Vec::new();
        let Some(object) = root.as_object_mut() else {
            return Err(vec![SchemaProblem::new("the schema must be a JSON object")]);
        };
        let dataset = object
            .get("x-dataset")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let version = object
            .get("x-version")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let required: Vec<String> = match object.get("required") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(_) => {
                problems.push(SchemaProblem::new("`required` must be an array of names"));
                Vec::new()
            }
        };
        let mut properties = Vec::new();
        match object.get_mut("properties") {
            Some(Value::Object(props)) => {
                for (name, sub) in props.iter_mut() {
                    match parse_property(name, sub, code_lists) {
                        Ok(p) => properties.push(p),
                        Err(mut e) => problems.append(&mut e),
                    }
                }
            }
            _ => problems.push(SchemaProblem::new("the schema needs a `properties` object")),
        }
        for name in &required {
            if !properties.iter().any(|p| &p.name == name) {
                problems.push(SchemaProblem::new(format!(
                    "`required` names `{name}`, which is not a property"
                )));
            }
        }
        if let Err(e) = jsonschema::draft202012::meta::validate(&root) {
            problems.push(SchemaProblem::new(format!(
                "not a valid draft 2020-12 schema at {}: {e}",
                e.instance_path()
            )));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(RecordSchema {
            id: id.to_owned(),
            dataset,
            version,
            properties,
            required,
            resolved: root,
        })
    }

    /// The property with this name.
    pub fn property(&self, name: &str) -> Option<&Property> {
        self.properties.iter().find(|p| p.name == name)
    }

    /// The dimensions a schema's counts have: each code-list property, each property with one of
    /// its list's attributes (`<property>_<attribute>`), each boolean property; with the codes or
    /// attribute values each may take.
    pub fn dimensions(&self) -> BTreeMap<String, Vec<String>> {
        let mut out = BTreeMap::new();
        for p in &self.properties {
            if let Some(list) = &p.codelist {
                out.insert(
                    p.name.clone(),
                    list.codes.iter().map(|c| c.code.clone()).collect(),
                );
                for a in &list.attributes {
                    let mut values: Vec<String> = (0..list.codes.len())
                        .map(|k| list.attribute(k as u32, a).to_owned())
                        .collect();
                    values.sort();
                    values.dedup();
                    out.insert(format!("{}_{a}", p.name), values);
                }
            } else if p.snapshot == SnapshotType::Boolean {
                out.insert(p.name.clone(), vec!["true".to_owned(), "false".to_owned()]);
            }
        }
        out
    }

    /// The names of a snapshot's columns, in order: [`LEADING_LINEAGE`], each stored property
    /// (a code followed by its attributes, `<property>_<attribute>`), [`TRAILING_LINEAGE`].
    /// `snapshot` writes its columns under these names.
    pub fn snapshot_columns(&self) -> Vec<String> {
        let mut names: Vec<String> = LEADING_LINEAGE.map(str::to_owned).to_vec();
        for prop in &self.properties {
            match &prop.snapshot {
                SnapshotType::Omit => {}
                SnapshotType::Code { attributes } => {
                    names.push(prop.name.clone());
                    names.extend(attributes.iter().map(|a| format!("{}_{a}", prop.name)));
                }
                _ => names.push(prop.name.clone()),
            }
        }
        names.extend(TRAILING_LINEAGE.map(str::to_owned));
        names
    }

    /// Names the snapshot would hold twice: a property named like a lineage column (`force_id`,
    /// `period`, `submission_id`, `source_row`) or like another property's code attribute. A
    /// pipeline's schema must have none (`check-config` says so); a file's header can keep such
    /// a name through the property's `x-aliases`.
    pub fn clashing_columns(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        let mut clashes = Vec::new();
        for name in self.snapshot_columns() {
            if !seen.insert(name.clone()) && !clashes.contains(&name) {
                clashes.push(name);
            }
        }
        clashes
    }

    /// Index of the property whose header spelling matches.
    pub fn match_header(&self, header: &str) -> Option<usize> {
        self.properties
            .iter()
            .position(|p| p.matches_header(header))
    }

    /// Compiles the resolved schema with `jsonschema`, formats asserted: the reference
    /// implementation every fast path is checked against.
    pub fn compile_reference(&self) -> Result<jsonschema::Validator, String> {
        reference_options()
            .build(&self.resolved)
            .map_err(|e| format!("schema {} does not compile: {e}", self.id))
    }
}

/// The `jsonschema` options used everywhere: draft 2020-12, formats asserted.
pub fn reference_options() -> jsonschema::ValidationOptions<'static> {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
}

fn parse_property(
    name: &str,
    sub: &mut Value,
    code_lists: &CodeLists,
) -> Result<Property, Vec<SchemaProblem>> {
    let mut problems = Vec::new();
    let here = |m: String| SchemaProblem::new(format!("property `{name}`: {m}"));
    let Some(obj) = sub.as_object_mut() else {
        return Err(vec![here("must be an object".into())]);
    };
    let types = TypeSet::from_schema(&Value::Object(obj.clone())).unwrap_or_else(|m| {
        problems.push(here(m));
        TypeSet::ANY
    });
    let str_list = |obj: &Map<String, Value>, key: &str| -> Vec<String> {
        obj.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let aliases = str_list(obj, "x-aliases");
    let codelist = match obj.get("x-codelist") {
        None => None,
        Some(Value::String(id)) => {
            if let Some(list) = code_lists.get(id) {
                if obj.contains_key("enum") {
                    problems.push(here("has both `x-codelist` and its own `enum`".into()));
                }
                let mut spellings: Vec<Value> =
                    list.spellings().into_iter().map(Value::from).collect();
                if types.null {
                    spellings.push(Value::Null);
                }
                obj.insert("enum".into(), Value::Array(spellings));
                Some(Arc::clone(list))
            } else {
                problems.push(here(format!(
                    "`x-codelist` names `{id}`, which is not in schemas/reference/"
                )));
                None
            }
        }
        Some(_) => {
            problems.push(here("`x-codelist` must be a string".into()));
            None
        }
    };
    let pii = match obj.get("x-pii").and_then(Value::as_str) {
        None | Some("none") => Pii::None,
        Some("personal") => Pii::Personal,
        Some("special-category") => Pii::SpecialCategory,
        Some(other) => {
            problems.push(here(format!("unknown `x-pii` value `{other}`")));
            Pii::None
        }
    };
    let snapshot = match obj.get("x-snapshot") {
        None => SnapshotType::String,
        Some(spec) => {
            let attributes = spec
                .get("attributes")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            match spec.get("type").and_then(Value::as_str) {
                Some("timestamp") => SnapshotType::Timestamp,
                Some("boolean") => SnapshotType::Boolean,
                Some("float64") => SnapshotType::Float64,
                Some("int64") => SnapshotType::Int64,
                Some("string") => SnapshotType::String,
                Some("omit") => SnapshotType::Omit,
                Some("code") => {
                    match &codelist {
                        Some(list) => {
                            for a in &attributes {
                                if !list.attributes.contains(a) {
                                    problems.push(here(format!(
                                        "snapshot attribute `{a}` is not an attribute of code list `{}`",
                                        list.id
                                    )));
                                }
                            }
                        }
                        None => {
                            problems
                                .push(here("snapshot type `code` needs an `x-codelist`".into()));
                        }
                    }
                    SnapshotType::Code { attributes }
                }
                other => {
                    problems.push(here(format!("unknown `x-snapshot` type {other:?}")));
                    SnapshotType::String
                }
            }
        }
    };
    let upload_context = match obj.get("x-upload-context").and_then(Value::as_str) {
        None => None,
        Some("force") => Some(UploadContext::Force),
        Some("period") => Some(UploadContext::Period),
        Some(other) => {
            problems.push(here(format!("unknown `x-upload-context` value `{other}`")));
            None
        }
    };
    let flag = |key: &str| obj.get(key).and_then(Value::as_bool).unwrap_or(false);
    let property = Property {
        name: name.to_owned(),
        title: obj
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or(name)
            .to_owned(),
        aliases,
        types,
        codelist,
        pii,
        snapshot,
        in_period: flag("x-in-period"),
        upload_context,
        unique: flag("x-unique"),
        schema: Value::Object(obj.clone()),
    };
    if problems.is_empty() {
        Ok(property)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_lists() -> CodeLists {
        let list = CodeList::parse(
            "colour",
            r#"{"id":"colour","title":"Colours","attributes":["warm"],"codes":[
                {"code":"R","label":"Red","aliases":["Scarlet"],"legacy":["Rd"],"attributes":{"warm":"yes"}},
                {"code":"B","label":"Blue","attributes":{"warm":"no"}}]}"#,
        )
        .unwrap();
        let mut c = CodeLists::default();
        c.insert(list);
        c
    }

    #[test]
    fn codelist_expands_into_enum_with_null_when_nullable() {
        let schema = RecordSchema::parse(
            "t",
            r#"{"type":"object","properties":{"c":{"type":["string","null"],"x-codelist":"colour",
                "x-snapshot":{"type":"code","attributes":["warm"]}}}}"#,
            &code_lists(),
        )
        .unwrap();
        let e = schema.resolved["properties"]["c"]["enum"]
            .as_array()
            .unwrap();
        assert_eq!(e.len(), 7, "B Blue R Rd Red Scarlet + null: {e:?}");
        assert!(e.contains(&Value::Null));
        let list = schema.properties[0].codelist.as_ref().unwrap();
        assert_eq!(list.lookup("Rd"), Some((0, Spelling::Legacy)));
        assert_eq!(list.lookup("Blue"), Some((1, Spelling::Current)));
        assert_eq!(list.lookup("blue"), None, "values are exact");
        assert_eq!(list.lookup_loose(" blue ").unwrap().code, "B");
    }

    #[test]
    fn problems_are_all_reported_together() {
        let errs = RecordSchema::parse(
            "t",
            r#"{"properties":{"a":{"x-codelist":"nope"},"b":{"type":"strin"},"c":{"x-pii":"secret"}},
               "required":["d"]}"#,
            &code_lists(),
        )
        .unwrap_err();
        // Four from our reading, one from the draft 2020-12 meta-schema (the bad type).
        assert_eq!(errs.len(), 5, "{errs:?}");
    }

    #[test]
    fn spelling_under_two_codes_is_a_problem() {
        let errs = CodeList::parse(
            "x",
            r#"{"id":"x","title":"X","codes":[{"code":"A","label":"Same"},{"code":"B","label":"Same"}]}"#,
        )
        .unwrap_err();
        assert!(errs[0].message.contains("`Same`"), "{errs:?}");
    }

    #[test]
    fn bad_json_reports_its_line() {
        let errs = CodeList::parse("x", "{\n\"id\": \"x\",\n oops}").unwrap_err();
        assert_eq!(errs[0].line, Some(3));
    }
}
