//! pyiceberg, the Python reference client, reading the iceberg sink's tables back through
//! the same SQL catalog (`tests/iceberg/read_table.py`). `scripts/pyiceberg.sh` installs it into
//! a cached virtualenv and `scripts/test.sh` hands its python over as `SLUICE_PYICEBERG`.
//! Included with `#[path]`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The python that has pyiceberg, or `None` when the caller opted out with
/// `SLUICE_SKIP_PYICEBERG=1`. Panics (fails loudly) when missing without the opt-out.
pub fn pyiceberg_python() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SLUICE_PYICEBERG") {
        return Some(PathBuf::from(path));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let path = PathBuf::from(home).join(".cache/sluice/pyiceberg-0.12.0/bin/python");
        if path.exists() {
            return Some(path);
        }
    }
    if std::env::var("SLUICE_SKIP_PYICEBERG").as_deref() == Ok("1") {
        eprintln!("SLUICE_SKIP_PYICEBERG=1: skipping a test that reads a table with pyiceberg");
        return None;
    }
    panic!(
        "pyiceberg not found: run scripts/test.sh (which installs it with scripts/pyiceberg.sh), \
         set SLUICE_PYICEBERG=/path/to/python, or set SLUICE_SKIP_PYICEBERG=1 to skip these tests"
    );
}

/// A table as pyiceberg reads it.
pub struct Read {
    pub json: serde_json::Value,
}

impl Read {
    pub fn rows(&self) -> &Vec<serde_json::Value> {
        self.json["rows"].as_array().unwrap()
    }
}

/// Reads `table` (`namespace.name`) from the SQLite catalog at `catalog` with warehouse
/// `warehouse`; `columns` selects columns (empty: all); `filter` also counts what a filter
/// keeps and how many files it plans.
pub fn read(
    python: &Path,
    catalog: &Path,
    warehouse: &Path,
    table: &str,
    columns: &str,
    filter: &str,
) -> Read {
    read_from(
        python,
        &format!("sqlite:///{}", catalog.display()),
        &format!("file://{}", warehouse.display()),
        &serde_json::json!({}),
        table,
        columns,
        filter,
    )
}

/// [`read`] with the catalog as a SQLAlchemy URL (`sqlite:///path`,
/// `postgresql+psycopg2://...`), the warehouse as a URL (`s3://bucket/prefix`) and more
/// catalog properties (`s3.endpoint`, keys) as a JSON object.
pub fn read_from(
    python: &Path,
    catalog: &str,
    warehouse: &str,
    properties: &serde_json::Value,
    table: &str,
    columns: &str,
    filter: &str,
) -> Read {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/iceberg/read_table.py");
    let output = Command::new(python)
        .arg(script)
        .arg(catalog)
        .arg(warehouse)
        .arg(table)
        .arg(columns)
        .arg(filter)
        .env("SLUICE_ICEBERG_PROPERTIES", properties.to_string())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "pyiceberg could not read {table}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Read {
        json: serde_json::from_slice(&output.stdout).unwrap(),
    }
}
