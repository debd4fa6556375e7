//! Columns of the target table as the catalog describes them, and the conversion of event
//! fields to their types for a binary COPY.

use crate::event::{Event, Value};
use bytes::BytesMut;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use rust_decimal::Decimal;
use std::error::Error;
use std::str::FromStr;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use vrl::path::OwnedValuePath;

/// One column the sink writes: its name and type from the catalog, and the event field it
/// is read from.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub ty: Type,
    /// NOT NULL without a default: an event without the field cannot be written.
    pub required: bool,
    /// The event field; `None` is the whole event (`.`).
    pub field: Option<OwnedValuePath>,
}

/// The column types the sink converts to.
pub fn supported(ty: &Type) -> bool {
    [
        Type::TEXT,
        Type::VARCHAR,
        Type::BPCHAR,
        Type::NAME,
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::NUMERIC,
        Type::BOOL,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMP,
        Type::DATE,
        Type::JSON,
        Type::JSONB,
        Type::UUID,
        Type::BYTEA,
    ]
    .contains(ty)
}

/// A converted value, written in the column type's binary form.
#[derive(Debug)]
pub enum Cell {
    Null,
    Bool(bool),
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Numeric(Decimal),
    Text(String),
    /// A string of the event itself, shared (a reference count), not copied.
    SharedText(bytestring::ByteString),
    Bytes(Vec<u8>),
    Timestamp(DateTime<Utc>),
    NaiveTimestamp(NaiveDateTime),
    Date(NaiveDate),
    Json(serde_json::Value),
    Uuid(uuid::Uuid),
}

impl ToSql for Cell {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Bool(v) => v.to_sql(ty, out),
            Cell::I16(v) => v.to_sql(ty, out),
            Cell::I32(v) => v.to_sql(ty, out),
            Cell::I64(v) => v.to_sql(ty, out),
            Cell::F32(v) => v.to_sql(ty, out),
            Cell::F64(v) => v.to_sql(ty, out),
            Cell::Numeric(v) => v.to_sql(ty, out),
            Cell::Text(v) => v.to_sql(ty, out),
            Cell::SharedText(v) => (&**v).to_sql(ty, out),
            Cell::Bytes(v) => v.to_sql(ty, out),
            Cell::Timestamp(v) => v.to_sql(ty, out),
            Cell::NaiveTimestamp(v) => v.to_sql(ty, out),
            Cell::Date(v) => v.to_sql(ty, out),
            Cell::Json(v) => v.to_sql(ty, out),
            Cell::Uuid(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        supported(ty)
    }

    to_sql_checked!();
}

impl Column {
    /// The cell for this column of `event`, or why the field does not fit the column.
    pub fn cell(&self, event: &Event) -> Result<Cell, String> {
        let value = match &self.field {
            None => Some(std::borrow::Cow::Borrowed(event.value())),
            Some(path) => event.field_at(path),
        };
        match value.as_deref() {
            None | Some(Value::Null) if self.required => Err(format!(
                "column `{}` is NOT NULL and the event has no value for it",
                self.name
            )),
            None | Some(Value::Null) => Ok(Cell::Null),
            Some(value) => convert(value, &self.ty)
                .map_err(|why| format!("column `{}` ({}): {why}", self.name, self.ty.name())),
        }
    }
}

/// Converts one non-null value to a column type: numbers and booleans from their text forms
/// too, timestamps from RFC 3339 text or Unix seconds, anything into text and JSON.
fn convert(value: &Value, ty: &Type) -> Result<Cell, String> {
    let cell = match *ty {
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => match value {
            Value::String(shared) => Cell::SharedText(shared.clone()),
            other => Cell::Text(text(other)),
        },
        Type::INT2 => Cell::I16(narrow(integer(value)?)?),
        Type::INT4 => Cell::I32(narrow(integer(value)?)?),
        Type::INT8 => Cell::I64(integer(value)?),
        Type::FLOAT4 => Cell::F32(float(value)? as f32),
        Type::FLOAT8 => Cell::F64(float(value)?),
        Type::NUMERIC => Cell::Numeric(numeric(value)?),
        Type::BOOL => Cell::Bool(boolean(value)?),
        Type::TIMESTAMPTZ => Cell::Timestamp(timestamp(value)?),
        Type::TIMESTAMP => Cell::NaiveTimestamp(timestamp(value)?.naive_utc()),
        Type::DATE => Cell::Date(date(value)?),
        Type::JSON | Type::JSONB => Cell::Json(
            serde_json::to_value(value).map_err(|e| format!("not representable as JSON: {e}"))?,
        ),
        Type::UUID => {
            Cell::Uuid(uuid::Uuid::parse_str(&text(value)).map_err(|e| format!("not a UUID: {e}"))?)
        }
        Type::BYTEA => Cell::Bytes(match value {
            Value::Bytes(bytes) => bytes.to_vec(),
            other => text(other).into_bytes(),
        }),
        _ => return Err("unsupported column type".into()),
    };
    Ok(cell)
}

/// The text form: strings as they are, objects and arrays as JSON.
fn text(value: &Value) -> String {
    if let Some(text) = value.to_str_lossy() {
        return text.into_owned();
    }
    match value {
        Value::Timestamp(ts) => ts.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        Value::Object(_) | Value::Array(_) => serde_json::to_string(value).unwrap_or_default(),
        other => other.to_string(),
    }
}

fn short(value: &Value) -> String {
    let mut text = text(value);
    if text.len() > 64 {
        let mut cut = 64;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn integer(value: &Value) -> Result<i64, String> {
    match value {
        Value::Integer(i) => Ok(*i),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(f.into_inner() as i64),
        Value::Bytes(_) | Value::String(_) => {
            let text = text(value);
            text.trim()
                .parse()
                .map_err(|_| format!("`{}` is not an integer", short(value)))
        }
        other => Err(format!("`{}` is not an integer", short(other))),
    }
}

fn narrow<T: TryFrom<i64>>(value: i64) -> Result<T, String> {
    T::try_from(value).map_err(|_| format!("{value} is out of the column's range"))
}

fn float(value: &Value) -> Result<f64, String> {
    match value {
        Value::Float(f) => Ok(f.into_inner()),
        Value::Integer(i) => Ok(*i as f64),
        Value::Bytes(_) | Value::String(_) => text(value)
            .trim()
            .parse()
            .map_err(|_| format!("`{}` is not a number", short(value))),
        other => Err(format!("`{}` is not a number", short(other))),
    }
}

fn numeric(value: &Value) -> Result<Decimal, String> {
    match value {
        Value::Integer(i) => Ok(Decimal::from(*i)),
        Value::Float(f) => Decimal::try_from(f.into_inner())
            .map_err(|e| format!("{f} does not fit a numeric: {e}")),
        Value::Bytes(_) | Value::String(_) => {
            let text = text(value);
            Decimal::from_str(text.trim())
                .or_else(|_| Decimal::from_scientific(text.trim()))
                .map_err(|_| format!("`{}` is not a decimal number", short(value)))
        }
        other => Err(format!("`{}` is not a decimal number", short(other))),
    }
}

fn boolean(value: &Value) -> Result<bool, String> {
    match value {
        Value::Boolean(b) => Ok(*b),
        Value::Integer(0) => Ok(false),
        Value::Integer(1) => Ok(true),
        Value::Bytes(_) | Value::String(_) => {
            match text(value).trim().to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "1" => Ok(true),
                "false" | "f" | "no" | "0" => Ok(false),
                _ => Err(format!("`{}` is not a boolean", short(value))),
            }
        }
        other => Err(format!("`{}` is not a boolean", short(other))),
    }
}

fn timestamp(value: &Value) -> Result<DateTime<Utc>, String> {
    match value {
        Value::Timestamp(ts) => Ok(*ts),
        Value::Integer(seconds) => DateTime::from_timestamp(*seconds, 0)
            .ok_or_else(|| format!("{seconds} is out of range as Unix seconds")),
        Value::Float(seconds) => {
            let nanos = (seconds.into_inner() * 1e9).round();
            if !nanos.is_finite() || nanos.abs() > 9.2e18 {
                return Err(format!("{seconds} is out of range as Unix seconds"));
            }
            Ok(DateTime::from_timestamp_nanos(nanos as i64))
        }
        Value::Bytes(_) | Value::String(_) => {
            let text = text(value);
            DateTime::parse_from_rfc3339(text.trim())
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| format!("`{}` is not an RFC 3339 timestamp", short(value)))
        }
        other => Err(format!("`{}` is not a timestamp", short(other))),
    }
}

fn date(value: &Value) -> Result<NaiveDate, String> {
    if let Value::Bytes(_) | Value::String(_) = value {
        if let Ok(date) = NaiveDate::parse_from_str(text(value).trim(), "%Y-%m-%d") {
            return Ok(date);
        }
    }
    timestamp(value).map(|t| t.date_naive())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(ty: Type, required: bool) -> Column {
        Column {
            name: "c".into(),
            ty,
            required,
            field: Some(crate::transforms::support::parse_path("v").unwrap()),
        }
    }

    fn event(value: Value) -> Event {
        let mut event = Event::from(Value::Object(Default::default()));
        event.insert("v", value);
        event
    }

    #[test]
    fn numbers_and_booleans_convert_from_their_text_forms() {
        let cell = column(Type::INT4, false)
            .cell(&event(Value::from("42")))
            .unwrap();
        assert!(matches!(cell, Cell::I32(42)));
        let cell = column(Type::FLOAT8, false)
            .cell(&event(Value::from(" 1.5")))
            .unwrap();
        assert!(matches!(cell, Cell::F64(f) if f == 1.5));
        let cell = column(Type::BOOL, false)
            .cell(&event(Value::from("true")))
            .unwrap();
        assert!(matches!(cell, Cell::Bool(true)));
        let cell = column(Type::NUMERIC, false)
            .cell(&event(Value::from("12.340")))
            .unwrap();
        assert!(matches!(cell, Cell::Numeric(d) if d.to_string() == "12.340"));
    }

    #[test]
    fn a_value_that_does_not_fit_names_the_column_and_the_value() {
        let error = column(Type::INT2, false)
            .cell(&event(Value::Integer(70_000)))
            .unwrap_err();
        assert_eq!(
            error,
            "column `c` (int2): 70000 is out of the column's range"
        );
        let error = column(Type::INT8, false)
            .cell(&event(Value::from("abc")))
            .unwrap_err();
        assert_eq!(error, "column `c` (int8): `abc` is not an integer");
        let error = column(Type::TIMESTAMPTZ, false)
            .cell(&event(Value::from("yesterday")))
            .unwrap_err();
        assert!(error.contains("not an RFC 3339 timestamp"), "{error}");
    }

    #[test]
    fn missing_fields_are_null_unless_the_column_requires_a_value() {
        let empty = Event::from(Value::Object(Default::default()));
        assert!(matches!(
            column(Type::TEXT, false).cell(&empty).unwrap(),
            Cell::Null
        ));
        let error = column(Type::TEXT, true).cell(&empty).unwrap_err();
        assert!(error.contains("NOT NULL"), "{error}");
    }

    #[test]
    fn timestamps_come_from_rfc3339_text_or_unix_seconds() {
        let expected = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z").unwrap();
        for value in [
            Value::from("2026-12-01T10:00:00Z"),
            Value::Integer(expected.timestamp()),
        ] {
            let cell = column(Type::TIMESTAMPTZ, false)
                .cell(&event(value))
                .unwrap();
            assert!(
                matches!(cell, Cell::Timestamp(t) if t == expected),
                "{cell:?}"
            );
        }
    }
}
