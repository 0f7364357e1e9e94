//! The SQLite backend of [`Store`]: WAL journal, `synchronous=FULL` (an
//! acknowledged transaction survives power loss), schema versions in
//! `PRAGMA user_version`, one connection behind a mutex (one writer).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::StoreError;
use crate::kv::{Compare, KeyValue, Op, Store, Txn, TxnOutcome};

/// Each entry upgrades the schema by one version; never edit a released one.
const MIGRATIONS: &[&str] = &[
    // 1: the key space and the change feed.
    "CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value BLOB NOT NULL,
        create_rev INTEGER NOT NULL,
        mod_rev INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE changes (
        rev INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        key TEXT NOT NULL,
        value BLOB,
        PRIMARY KEY (rev, seq)
    ) WITHOUT ROWID;
    CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO meta (name, value) VALUES ('revision', 0);",
    // 2: the append-only log (events), keyed by its own sequence: appends
    // land at the end of the b-tree and retention is one range delete.
    "CREATE TABLE log (seq INTEGER PRIMARY KEY, value BLOB NOT NULL);",
    // 3: no change feed: it held a second copy of every value written, and
    // the event log tells what changed.
    "DROP TABLE changes;",
];

pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        // Checkpoint the WAL every ~64 MiB rather than every 4 MiB: each
        // checkpoint stalls the writer, and bursts of plans pay for it.
        conn.pragma_update(None, "wal_autocheckpoint", 16384)
            .map_err(open_err)?;
        conn.pragma_update(None, "cache_size", -65536)
            .map_err(open_err)?;
        migrate(&mut conn, path)?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let current: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(StoreError::sqlite("read schema version"))?;
    let supported = MIGRATIONS.len() as u32;
    if current > supported {
        return Err(StoreError::TooNew {
            found: current,
            supported,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as u32 + 1;
        let err = |source| StoreError::Migrate {
            path: path.to_path_buf(),
            version,
            source,
        };
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}

impl Store for SqliteStore {
    fn revision(&self) -> Result<u64, StoreError> {
        let conn = self.conn()?;
        conn.query_row("SELECT value FROM meta WHERE name = 'revision'", [], |r| {
            r.get::<_, i64>(0)
        })
        .map(|v| v as u64)
        .map_err(StoreError::sqlite("read revision"))
    }

    fn range(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT key, value, create_rev, mod_rev FROM kv
                 WHERE key >= ?1 AND key < ?2 ORDER BY key",
            )
            .map_err(StoreError::sqlite("range"))?;
        let end = prefix_end(prefix);
        let rows = stmt
            .query_map(params![prefix, end], |r| {
                Ok(KeyValue {
                    key: r.get(0)?,
                    value: r.get(1)?,
                    create_revision: r.get::<_, i64>(2)? as u64,
                    mod_revision: r.get::<_, i64>(3)? as u64,
                })
            })
            .map_err(StoreError::sqlite("range"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::sqlite("range"))
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let conn = self.conn()?;
        conn.query_row(
            "SELECT key, value, create_rev, mod_rev FROM kv WHERE key = ?1",
            params![key],
            |r| {
                Ok(KeyValue {
                    key: r.get(0)?,
                    value: r.get(1)?,
                    create_revision: r.get::<_, i64>(2)? as u64,
                    mod_revision: r.get::<_, i64>(3)? as u64,
                })
            },
        )
        .optional()
        .map_err(StoreError::sqlite("get"))
    }

    fn txn(&self, txn: &Txn) -> Result<TxnOutcome, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(StoreError::sqlite("begin"))?;
        for cmp in &txn.compares {
            let Compare::ModRevision { key, revision } = cmp;
            let found: Option<i64> = tx
                .query_row("SELECT mod_rev FROM kv WHERE key = ?1", params![key], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(StoreError::sqlite("compare"))?;
            if found.unwrap_or(0) as u64 != *revision {
                return Ok(TxnOutcome::CompareFailed { key: key.clone() });
            }
        }
        let rev: i64 = tx
            .query_row("SELECT value FROM meta WHERE name = 'revision'", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(StoreError::sqlite("read revision"))?
            + 1;
        {
            let mut put = tx
                .prepare_cached(
                    "INSERT INTO kv (key, value, create_rev, mod_rev) VALUES (?1, ?2, ?3, ?3)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value, mod_rev = excluded.mod_rev",
                )
                .map_err(StoreError::sqlite("put"))?;
            let mut del = tx
                .prepare_cached("DELETE FROM kv WHERE key = ?1")
                .map_err(StoreError::sqlite("delete"))?;
            let mut append = tx
                .prepare_cached("INSERT INTO log (seq, value) VALUES (?1, ?2)")
                .map_err(StoreError::sqlite("append to the log"))?;
            for op in &txn.ops {
                match op {
                    Op::Put { key, value } => {
                        put.execute(params![key, value, rev])
                            .map_err(StoreError::sqlite("put"))?;
                    }
                    Op::Delete { key } => {
                        del.execute(params![key])
                            .map_err(StoreError::sqlite("delete"))?;
                    }
                    Op::LogAppend { index, value } => {
                        append
                            .execute(params![*index as i64, value])
                            .map_err(StoreError::sqlite("append to the log"))?;
                    }
                    Op::LogPrune { through } => {
                        tx.execute("DELETE FROM log WHERE seq <= ?1", params![*through as i64])
                            .map_err(StoreError::sqlite("prune the log"))?;
                    }
                }
            }
        }
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE name = 'revision'",
            params![rev],
        )
        .map_err(StoreError::sqlite("write revision"))?;
        tx.commit().map_err(StoreError::sqlite("commit"))?;
        Ok(TxnOutcome::Committed {
            revision: rev as u64,
        })
    }

    fn log_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare_cached("SELECT seq, value FROM log WHERE seq > ?1 ORDER BY seq LIMIT ?2")
            .map_err(StoreError::sqlite("read log"))?;
        let rows = stmt
            .query_map(params![after as i64, limit as i64], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })
            .map_err(StoreError::sqlite("read log"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::sqlite("read log"))
    }

    fn log_bounds(&self) -> Result<Option<(u64, u64)>, StoreError> {
        let conn = self.conn()?;
        let (first, last): (Option<i64>, Option<i64>) = conn
            .query_row("SELECT MIN(seq), MAX(seq) FROM log", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(StoreError::sqlite("read log bounds"))?;
        Ok(first.zip(last).map(|(f, l)| (f as u64, l as u64)))
    }
}

/// The smallest string greater than every string with this prefix.
fn prefix_end(prefix: &str) -> String {
    // Keys are ASCII paths; U+10FFFF sorts after any of their characters.
    format!("{prefix}\u{10FFFF}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::tests::conformance;

    #[test]
    fn sqlite_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        conformance(&store);
    }

    #[test]
    fn reopen_keeps_data_and_revision() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.txn(&Txn {
                compares: vec![],
                ops: vec![Op::Put {
                    key: "a".into(),
                    value: b"1".to_vec(),
                }],
            })
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.revision().unwrap(), 1);
        assert_eq!(s.get("a").unwrap().unwrap().value, b"1");
        let conn = s.conn().unwrap();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous must be FULL");
    }

    /// A store from before the change feed was dropped keeps its data and
    /// loses the table.
    #[test]
    fn migrates_a_version_2_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.execute_batch(MIGRATIONS[1]).unwrap();
            c.execute_batch(
                "INSERT INTO kv VALUES ('jobs/a', x'31', 1, 1);
                 INSERT INTO changes VALUES (1, 0, 'jobs/a', x'31');
                 UPDATE meta SET value = 1 WHERE name = 'revision';",
            )
            .unwrap();
            c.pragma_update(None, "user_version", 2).unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.revision().unwrap(), 1);
        assert_eq!(s.get("jobs/a").unwrap().unwrap().value, b"1");
        let conn = s.conn().unwrap();
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'changes'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0);
        let version: u32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 3);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", 99).unwrap();
        }
        match SqliteStore::open(&path) {
            Err(StoreError::TooNew { found: 99, .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("opened a newer schema"),
        }
    }
}
