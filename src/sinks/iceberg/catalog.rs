//! Opening the configured catalog: iceberg-rust's SQL catalog (SQLite or PostgreSQL through
//! sqlx) or its Glue catalog, each with the warehouse's storage ([`super::storage`]).

use super::storage::Warehouse;
use super::{CatalogKind, IcebergSinkConfig};
use iceberg::io::StorageFactory;
use iceberg::{Catalog, CatalogBuilder};
use iceberg_catalog_glue::{
    GlueCatalogBuilder, GLUE_CATALOG_PROP_CATALOG_ID, GLUE_CATALOG_PROP_URI,
    GLUE_CATALOG_PROP_WAREHOUSE,
};
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalogBuilder};
use iceberg_storage_opendal::OpenDalResolvingStorageFactory;
use std::collections::HashMap;
use std::sync::Arc;

/// What can be checked without the network.
pub fn check(config: &IcebergSinkConfig) -> Result<(), String> {
    let catalog = &config.catalog;
    match catalog.kind {
        CatalogKind::Sql => {
            let uri = catalog.uri.as_deref().unwrap_or_default();
            if !(uri.starts_with("sqlite:") || uri.starts_with("postgres")) {
                return Err(format!(
                    "uri `{uri}`: a sql catalog needs sqlite:///path/to/catalog.db or postgresql://user@host/db"
                ));
            }
        }
        CatalogKind::Glue => {
            if catalog.uri.is_some() {
                return Err(
                    "uri: a glue catalog takes no uri (set the sink's region, endpoint and auth)"
                        .into(),
                );
            }
            if config
                .auth
                .as_ref()
                .is_some_and(|a| a.assume_role.is_some())
            {
                return Err("a glue catalog cannot assume a role yet: give it credentials (auth, profile or the environment) for that role".into());
            }
        }
    }
    Ok(())
}

/// Opens the configured catalog.
pub async fn open_catalog(config: &IcebergSinkConfig) -> Result<Box<dyn Catalog>, String> {
    let warehouse = config.warehouse()?;
    let (storage, mut props) = match &warehouse {
        Warehouse::Local(_) => (
            Arc::new(OpenDalResolvingStorageFactory::new()) as Arc<dyn StorageFactory>,
            HashMap::new(),
        ),
        Warehouse::S3(_) => config.s3().storage().await,
    };
    let catalog = &config.catalog;
    match catalog.kind {
        CatalogKind::Sql => {
            let uri = catalog.uri.clone().unwrap_or_default();
            let opened = open_sql(&uri, &catalog.name, warehouse.url(), storage, props).await;
            opened.map_err(|e| format!("cannot open the catalog at {uri}: {e}"))
        }
        CatalogKind::Glue => {
            props.insert(GLUE_CATALOG_PROP_WAREHOUSE.into(), warehouse.url().into());
            if let Some(endpoint) = &config.endpoint {
                props.insert(GLUE_CATALOG_PROP_URI.into(), endpoint.clone());
            }
            if let Some(id) = &catalog.catalog_id {
                props.insert(GLUE_CATALOG_PROP_CATALOG_ID.into(), id.clone());
            }
            if let Some(region) = &config.region {
                props.insert(iceberg_catalog_glue::AWS_REGION_NAME.into(), region.clone());
            }
            if let Some(auth) = &config.auth {
                let keys = [
                    (iceberg_catalog_glue::AWS_ACCESS_KEY_ID, &auth.access_key_id),
                    (
                        iceberg_catalog_glue::AWS_SECRET_ACCESS_KEY,
                        &auth.secret_access_key,
                    ),
                    (iceberg_catalog_glue::AWS_SESSION_TOKEN, &auth.session_token),
                    (iceberg_catalog_glue::AWS_PROFILE_NAME, &auth.profile),
                ];
                for (key, value) in keys {
                    if let Some(value) = value {
                        props.insert(key.into(), value.clone());
                    }
                }
            }
            GlueCatalogBuilder::default()
                .with_storage_factory(storage)
                .load(&catalog.name, props)
                .await
                .map(|c| Box::new(c) as Box<dyn Catalog>)
                .map_err(|e| format!("cannot open the Glue catalog: {e}"))
        }
    }
}

async fn open_sql(
    uri: &str,
    name: &str,
    warehouse: &str,
    storage: Arc<dyn StorageFactory>,
    props: HashMap<String, String>,
) -> Result<Box<dyn Catalog>, String> {
    let mut uri = uri.to_string();
    let sqlite = uri.starts_with("sqlite:");
    if let Some(path) = sqlite_path(&uri) {
        // SQLite creates the file, not its directory.
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
    }
    if sqlite && !uri.contains("mode=") {
        // Create the SQLite file when missing.
        uri.push_str(if uri.contains('?') {
            "&mode=rwc"
        } else {
            "?mode=rwc"
        });
    }
    SqlCatalogBuilder::default()
        .uri(uri)
        .warehouse_location(warehouse)
        .sql_bind_style(if sqlite {
            SqlBindStyle::QMark
        } else {
            SqlBindStyle::DollarNumeric
        })
        .with_storage_factory(storage)
        .load(name, props)
        .await
        .map(|c| Box::new(c) as Box<dyn Catalog>)
        .map_err(|e| e.to_string())
}

/// The file of a `sqlite://` catalog URI.
/// The SQLite file of a `sql` catalog, if it is one.
pub fn sqlite_file(config: &IcebergSinkConfig) -> Option<std::path::PathBuf> {
    match config.catalog.kind {
        CatalogKind::Sql => sqlite_path(config.catalog.uri.as_deref()?),
        CatalogKind::Glue => None,
    }
}

fn sqlite_path(uri: &str) -> Option<std::path::PathBuf> {
    let rest = uri
        .strip_prefix("sqlite://")
        .or_else(|| uri.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| std::path::PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::check;
    use crate::sinks::iceberg::IcebergSinkConfig;

    fn config(catalog: &str, extra: &str) -> IcebergSinkConfig {
        serde_yaml::from_str(&format!(
            "inputs: [x]\ncatalog: {catalog}\nwarehouse: s3://lake/w\nnamespace: n\ntable: t\nschema: [{{name: a, type: string}}]\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn catalog_settings_that_cannot_work_are_named() {
        assert!(check(&config("{type: sql, uri: \"sqlite:///tmp/c.db\"}", "")).is_ok());
        assert!(check(&config("{type: sql, uri: \"postgresql://u@h/db\"}", "")).is_ok());
        assert!(check(&config("{type: sql, uri: \"mysql://h/db\"}", ""))
            .unwrap_err()
            .contains("a sql catalog needs sqlite:///"));
        assert!(
            check(&config("{type: sql}", "")).is_err(),
            "sql needs a uri"
        );
        assert!(check(&config("{type: glue}", "")).is_ok());
        assert!(check(&config("{type: glue, uri: \"x\"}", ""))
            .unwrap_err()
            .contains("a glue catalog takes no uri"));
        assert!(check(&config(
            "{type: glue}",
            "auth: {assume_role: arn:aws:iam::1:role/r}"
        ))
        .unwrap_err()
        .contains("cannot assume a role"));
    }
}
