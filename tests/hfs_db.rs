//! Tampering with Helios FHIR Server's SQLite database directly — what an
//! attacker (or a careless script) with database access does behind the
//! gateway's back. Used by the audit tests to prove the audit finds it.
//!
//! HFS 0.2.7 layout (discovered from its schema): every version is a row of
//! `resource_history (tenant_id, resource_type, id, version_id, data BLOB,
//! last_updated, is_deleted, …)`, and the current version is duplicated in
//! `resources` (same columns, one row per resource). `data` is the resource
//! JSON without `meta`, which HFS adds from the columns when serving.
//! Values must stay BLOBs: HFS refuses TEXT in `data`.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

fn open(database: &Path) -> Connection {
    let conn = Connection::open(database).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    conn
}

/// The stored JSON of one version.
pub fn version_data(database: &Path, resource_type: &str, id: &str, version: &str) -> String {
    let data: Vec<u8> = open(database)
        .query_row(
            "SELECT data FROM resource_history WHERE resource_type = ?1 AND id = ?2 AND version_id = ?3",
            params![resource_type, id, version],
            |r| r.get(0),
        )
        .unwrap();
    String::from_utf8(data).unwrap()
}

/// Replaces `from` by `to` in one stored version (and in the current copy
/// when it is the current version). Panics when `from` is not there.
pub fn alter_version(
    database: &Path,
    resource_type: &str,
    id: &str,
    version: &str,
    from: &str,
    to: &str,
) {
    let data = version_data(database, resource_type, id, version);
    assert!(data.contains(from), "{from:?} not in {data}");
    let altered = data.replace(from, to).into_bytes();
    let conn = open(database);
    conn.execute(
        "UPDATE resource_history SET data = ?4 WHERE resource_type = ?1 AND id = ?2 AND version_id = ?3",
        params![resource_type, id, version, altered],
    )
    .unwrap();
    conn.execute(
        "UPDATE resources SET data = ?4 WHERE resource_type = ?1 AND id = ?2 AND version_id = ?3",
        params![resource_type, id, version, altered],
    )
    .unwrap();
}

/// Deletes one version from the history.
pub fn delete_version(database: &Path, resource_type: &str, id: &str, version: &str) {
    let deleted = open(database)
        .execute(
            "DELETE FROM resource_history WHERE resource_type = ?1 AND id = ?2 AND version_id = ?3",
            params![resource_type, id, version],
        )
        .unwrap();
    assert_eq!(
        deleted, 1,
        "{resource_type}/{id}/_history/{version} not found"
    );
}

/// Inserts a new current version with `data` (resource JSON without
/// `meta`); returns its version id.
pub fn insert_version(database: &Path, resource_type: &str, id: &str, data: &str) -> String {
    let conn = open(database);
    let (tenant, latest): (String, Option<i64>) = conn
        .query_row(
            "SELECT tenant_id, MAX(CAST(version_id AS INTEGER)) FROM resource_history WHERE resource_type = ?1 AND id = ?2",
            params![resource_type, id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .unwrap()
        .expect("resource exists");
    let version = (latest.unwrap_or(0) + 1).to_string();
    let now = "2026-01-01T00:00:00.000000000+00:00";
    conn.execute(
        "INSERT INTO resource_history (tenant_id, resource_type, id, version_id, data, last_updated, is_deleted)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)",
        params![tenant, resource_type, id, version, data.as_bytes(), now],
    )
    .unwrap();
    conn.execute(
        "UPDATE resources SET version_id = ?4, data = ?5, last_updated = ?6 WHERE resource_type = ?2 AND id = ?3 AND tenant_id = ?1",
        params![tenant, resource_type, id, version, data.as_bytes(), now],
    )
    .unwrap();
    version
}

/// Rolls the current copy of a resource back to an older version's row
/// (data, version id, timestamp), as a restore from an old backup would.
pub fn roll_back(database: &Path, resource_type: &str, id: &str, to_version: &str) {
    let changed = open(database)
        .execute(
            "UPDATE resources SET
               data = (SELECT data FROM resource_history WHERE resource_type = ?1 AND id = ?2 AND version_id = ?3),
               last_updated = (SELECT last_updated FROM resource_history WHERE resource_type = ?1 AND id = ?2 AND version_id = ?3),
               version_id = ?3
             WHERE resource_type = ?1 AND id = ?2",
            params![resource_type, id, to_version],
        )
        .unwrap();
    assert_eq!(changed, 1, "{resource_type}/{id} not found");
}

/// Removes a resource and its history, behind the API: it answers 404.
pub fn erase_resource(database: &Path, resource_type: &str, id: &str) {
    let conn = open(database);
    for table in ["resources", "resource_history"] {
        conn.execute(
            &format!("DELETE FROM {table} WHERE resource_type = ?1 AND id = ?2"),
            params![resource_type, id],
        )
        .unwrap();
    }
}
