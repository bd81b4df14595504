//! Database access: pool set-up, schema, seeding, the item queries.

use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::{Executor as _, Row as _};
use tempfile::TempDir;

/// Rows per multi-row `INSERT` while seeding (5 bind parameters each, so 1000
/// parameters per statement: below SQLite's and Postgres' limits).
const SEED_BATCH: u32 = 200;

/// How long a request may wait for a pool connection before it fails. Long on
/// purpose: the queue *is* the saturation we want to observe.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// SQLite busy timeout: how long a connection waits for another connection's
/// write lock (WAL allows one writer at a time) before `SQLITE_BUSY`.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 30_000;

/// One item row, as served in JSON (without `modified_ms`, which becomes
/// `Last-Modified` when validators are on).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Item {
    pub(crate) id: i64,
    pub(crate) version: i64,
    pub(crate) name: String,
    pub(crate) payload: String,
    /// When this version was written, ms since the Unix epoch (0: unknown).
    #[serde(skip)]
    pub(crate) modified_ms: i64,
}

/// The pool plus whatever must live as long as it.
pub(crate) struct Database {
    pub(crate) pool: AnyPool,
    /// The temporary directory holding the database file when
    /// `sqlite::memory:` was asked for; deleted (with its `-wal`/`-shm`
    /// companions) when the last clone of the app state goes away.
    _tempdir: Option<TempDir>,
}

/// Whether `url` asks for a per-connection private SQLite database:
/// `:memory:`, or an empty file name (SQLite then opens a private temporary
/// database per connection, the same pitfall).
fn is_sqlite_memory(url: &str) -> bool {
    let base = url.split('?').next().unwrap_or_default();
    matches!(base, "sqlite::memory:" | "sqlite://:memory:" | "sqlite:")
}

/// Masks the password in `scheme://user:password@host` for error messages.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.find('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

impl Database {
    /// Connects, creates the schema if absent and seeds `items` rows.
    pub(crate) async fn open(url: &str, max_connections: u32, items: u32) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();

        // `sqlite::memory:` is NOT usable as given: the `Any` driver re-parses
        // the URL for every new connection, and every connection to
        // `:memory:` opens its own, private, empty database. A pool of 16
        // would see 16 databases, 15 of them without the seeded table. (A
        // shared-cache in-memory URI would fix the visibility, but shared
        // cache uses table-level locks that answer SQLITE_LOCKED without
        // honouring the busy timeout, and the database vanishes whenever the
        // pool closes its last connection.) So we map it to a file in a
        // temporary directory that lives as long as the app, in WAL mode
        // (readers never block on the writer) with a long busy timeout.
        let (url, tempdir) = if is_sqlite_memory(url) {
            let dir = tempfile::Builder::new()
                .prefix("origin-sim-")
                .tempdir()
                .context("creating the temporary directory for sqlite::memory:")?;
            let path = dir.path().join("origin.db");
            let path = path
                .to_str()
                .context("temporary database path is not UTF-8")?
                .to_owned();
            (format!("sqlite://{path}?mode=rwc"), Some(dir))
        } else {
            (url.to_owned(), None)
        };
        let is_temp = tempdir.is_some();

        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if conn.backend_name().eq_ignore_ascii_case("sqlite") {
                        conn.execute(
                            format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}").as_str(),
                        )
                        .await?;
                        if is_temp {
                            // Throw-away database: durability does not matter.
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .with_context(|| format!("connecting to the database {}", redact(&url)))?;

        if is_temp {
            // Persistent in the file: set once, every later connection uses WAL.
            sqlx::query("PRAGMA journal_mode = WAL")
                .fetch_optional(&pool)
                .await
                .context("switching the temporary SQLite database to WAL")?;
        }

        let db = Self {
            pool,
            _tempdir: tempdir,
        };
        db.migrate_and_seed(items).await?;
        Ok(db)
    }

    async fn migrate_and_seed(&self, items: u32) -> anyhow::Result<()> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS items (\
                id INTEGER PRIMARY KEY, \
                version BIGINT NOT NULL, \
                name TEXT NOT NULL, \
                payload TEXT NOT NULL, \
                modified_ms BIGINT NOT NULL DEFAULT 0)",
        )
        .execute(&self.pool)
        .await
        .context("creating table items")?;
        // A persistent database from before `modified_ms`: add the column
        // (its rows read as "modification time unknown").
        if sqlx::query("SELECT modified_ms FROM items LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .is_err()
        {
            sqlx::query("ALTER TABLE items ADD COLUMN modified_ms BIGINT NOT NULL DEFAULT 0")
                .execute(&self.pool)
                .await
                .context("adding items.modified_ms")?;
        }
        let now = now_ms();

        let mut tx = self
            .pool
            .begin()
            .await
            .context("starting the seed transaction")?;
        let mut first = 1u32;
        while first <= items {
            let last = first.saturating_add(SEED_BATCH - 1).min(items);
            let mut sql =
                String::from("INSERT INTO items (id, version, name, payload, modified_ms) VALUES ");
            for (i, _) in (first..=last).enumerate() {
                let p = i * 5;
                if i > 0 {
                    sql.push(',');
                }
                let (a, b, c, d, e) = (p + 1, p + 2, p + 3, p + 4, p + 5);
                sql.push_str(&format!("(${a},${b},${c},${d},${e})"));
            }
            // Keep rows that already exist (a persistent database): their
            // versions may have been bumped by earlier runs.
            sql.push_str(" ON CONFLICT (id) DO NOTHING");
            let mut query = sqlx::query(&sql);
            for id in first..=last {
                let id = i64::from(id);
                query = query
                    .bind(id)
                    .bind(1i64)
                    .bind(format!("item {id}"))
                    .bind(payload(id))
                    .bind(now);
            }
            query
                .execute(&mut *tx)
                .await
                .with_context(|| format!("seeding items {first}..={last}"))?;
            if last == u32::MAX {
                break;
            }
            first = last + 1;
        }
        tx.commit().await.context("committing the seed")?;
        Ok(())
    }
}

/// A deterministic payload of a few hundred bytes.
fn payload(id: i64) -> String {
    const FILLER: &str = "The quick brown fox jumps over the lazy dog while the cache \
        stampedes past; every origin query costs a pool connection and ";
    let mut s = format!("item {id}: ");
    while s.len() < 300 {
        s.push_str(FILLER);
    }
    s.truncate(300);
    s
}

fn item_from_row(id: i64, row: &sqlx::any::AnyRow) -> Result<Item, sqlx::Error> {
    Ok(Item {
        id,
        version: row.try_get("version")?,
        name: row.try_get("name")?,
        payload: row.try_get("payload")?,
        modified_ms: row.try_get("modified_ms")?,
    })
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Reads item `id` (absent above `items` even if a persistent database holds it).
pub(crate) async fn select_item(
    conn: &mut sqlx::AnyConnection,
    id: i64,
    items: u32,
) -> Result<Option<Item>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT version, name, payload, modified_ms FROM items WHERE id = $1 AND id <= $2",
    )
    .bind(id)
    .bind(i64::from(items))
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| item_from_row(id, &r)).transpose()
}

/// Bumps item `id`'s version and returns the updated row.
pub(crate) async fn bump_item(
    conn: &mut sqlx::AnyConnection,
    id: i64,
    items: u32,
) -> Result<Option<Item>, sqlx::Error> {
    let row = sqlx::query(
        "UPDATE items SET version = version + 1, modified_ms = $3 WHERE id = $1 AND id <= $2 \
         RETURNING version, name, payload, modified_ms",
    )
    .bind(id)
    .bind(i64::from(items))
    .bind(now_ms())
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| item_from_row(id, &r)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_urls_detected() {
        assert!(is_sqlite_memory("sqlite::memory:"));
        assert!(is_sqlite_memory("sqlite://:memory:"));
        assert!(is_sqlite_memory("sqlite::memory:?cache=shared"));
        assert!(!is_sqlite_memory("sqlite:///tmp/x.db"));
        assert!(!is_sqlite_memory("postgres://u:p@h/db"));
    }

    #[test]
    fn redacts_password() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact("sqlite:foo.db"), "sqlite:foo.db");
    }

    #[test]
    fn payload_is_a_few_hundred_bytes() {
        assert_eq!(payload(42).len(), 300);
        assert!(payload(42).starts_with("item 42: "));
    }
}
