//! The demo's database: an embedded SQLite database in memory (nothing to install, nothing left
//! behind), reached through sqlx and instrumented by `mercenary_obs::db::sqlx` with no code at
//! the queries:
//!
//! - `watch_pool("main", &pool)` once: the pool's gauges (`db_client_connections_usage`,
//!   `db_client_connection_max`, `db_client_connection_pending_requests`) on `/metrics`, read
//!   from the pool at each scrape;
//! - every query run with the watched pool is a `db.query` span in its request's trace and an
//!   observation of `db_client_operation_duration_seconds{db_operation_name,
//!   db_collection_name}`, its text without literal values; a sign-up runs in a transaction,
//!   whose statements are read from sqlx's own query events;
//! - the schema is created at start on the bare pool, outside any request: counted, not traced.
//!
//! Values always travel as bind parameters (`?`): no email, password or amount is ever part of a
//! statement, and the password is stored as a (demo-grade) salted hash, never as sent.

use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use mercenary_obs::db::sqlx::WatchedPool;
use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use tokio::sync::SetOnce;

/// Connections of the pool.
const POOL_SIZE: u32 = 5;
/// Seeded users: ids `1..=super::MAX_USER_ID`.
const SEED_SQL: &str = "
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    plan TEXT NOT NULL
);
CREATE TABLE signups (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, plan TEXT NOT NULL);
CREATE TABLE projects (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE proposals (id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL);
CREATE TABLE payments (
    id INTEGER PRIMARY KEY,
    currency TEXT NOT NULL,
    amount REAL NOT NULL,
    outcome TEXT NOT NULL
);
CREATE TABLE prices (id INTEGER PRIMARY KEY, price REAL NOT NULL);
";

/// The pool, and whether the schema is in place (or why not).
pub struct Db {
    pool: WatchedPool<Sqlite>,
    ready: SetOnce<Result<(), String>>,
}

static DB: OnceLock<Db> = OnceLock::new();

/// Opens the pool (connections are made on first use) and watches it on the global instance,
/// so call it after `init()`; creates the schema in the background.
pub fn open() {
    let db = DB.get_or_init(|| {
        // One in-memory database shared by the pool's connections, alive while one is open
        // (the pool keeps one, and never closes idle ones).
        let options =
            SqliteConnectOptions::from_str("sqlite:file:mercenary-demo?mode=memory&cache=shared")
                .expect("a valid SQLite URL")
                .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(options);
        Db {
            pool: mercenary_obs::db::sqlx::watch_pool("main", &pool),
            ready: SetOnce::new(),
        }
    });
    // In a task of its own, so that no request's trace holds the setup.
    tokio::spawn(async {
        let result = db.create().await.map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, "cannot create the demo database");
        }
        let _ = db.ready.set(result);
    });
}

/// The pool, once the schema is in place.
async fn pool() -> Result<&'static WatchedPool<Sqlite>, sqlx::Error> {
    let db = DB.get().expect("db::open() is called in app()");
    match db.ready.wait().await {
        Ok(()) => Ok(&db.pool),
        Err(e) => Err(sqlx::Error::Protocol(format!(
            "the demo database is missing: {e}"
        ))),
    }
}

impl Db {
    /// Creates and seeds the tables, on the bare pool: outside any request, its statements
    /// are counted from sqlx's events but not traced.
    async fn create(&self) -> Result<(), sqlx::Error> {
        let pool = self.pool.pool();
        sqlx::raw_sql(SEED_SQL).execute(pool).await?;
        // Users 1..=MAX_USER_ID, in one statement.
        sqlx::query(
            "INSERT INTO users (id, name, email, plan)
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
             SELECT i, 'user-' || i, 'user-' || i || '@example.com',
                    CASE i % 3 WHEN 0 THEN 'free' WHEN 1 THEN 'pro' ELSE 'team' END
             FROM n",
        )
        .bind(super::MAX_USER_ID as i64)
        .execute(pool)
        .await?;
        // The demo's one account with a password (see `POST /login`).
        sqlx::query("UPDATE users SET email = ?, password_hash = ? WHERE id = 1")
            .bind(super::DEMO_EMAIL)
            .bind(password_hash(super::DEMO_EMAIL, super::DEMO_PASSWORD))
            .execute(pool)
            .await?;
        // The list price of item `i` is 5 + (i mod 200) / 4.
        sqlx::query(
            "INSERT INTO prices (id, price)
             WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 199)
             SELECT i, 5.0 + i * 0.25 FROM n",
        )
        .execute(pool)
        .await
        .map(|_| ())
    }
}

/// A demo-grade salted hash (FNV-1a): the stored form of a password. Real code uses argon2 or
/// bcrypt.
fn password_hash(email: &str, password: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in email
        .trim()
        .to_ascii_lowercase()
        .bytes()
        .chain(*b":")
        .chain(password.bytes())
    {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("fnv1a:{h:016x}")
}

/// A user: `(name, email, plan)`, or `None` when there is no such user.
pub async fn user(id: u64) -> Result<Option<(String, String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT name, email, plan FROM users WHERE id = ?")
        .bind(i64::try_from(id).unwrap_or(i64::MAX))
        .fetch_optional(pool().await?)
        .await
}

/// Signs a user up (a new one, or an existing email with a new password and plan) and records
/// the sign-up, in one transaction.
pub async fn sign_up(email: &str, password: &str, plan: &str) -> Result<i64, sqlx::Error> {
    let mut tx = pool().await?.begin().await?;
    let user_id: i64 = sqlx::query_scalar(
        "INSERT INTO users (name, email, password_hash, plan) VALUES (?, ?, ?, ?)
         ON CONFLICT (email) DO UPDATE SET password_hash = excluded.password_hash, plan = excluded.plan
         RETURNING id",
    )
    .bind(email.split('@').next().unwrap_or_default())
    .bind(email)
    .bind(password_hash(email, password))
    .bind(plan)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO signups (user_id, plan) VALUES (?, ?)")
        .bind(user_id)
        .bind(plan)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(user_id)
}

/// Whether `password` is the password of the user with this email.
pub async fn login(email: &str, password: &str) -> Result<bool, sqlx::Error> {
    let stored: Option<Option<String>> =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE email = ?")
            .bind(email)
            .fetch_optional(pool().await?)
            .await?;
    Ok(stored.flatten() == Some(password_hash(email, password)))
}

/// A new project's id.
pub async fn create_project(name: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("INSERT INTO projects (name) VALUES (?) RETURNING id")
        .bind(name)
        .fetch_one(pool().await?)
        .await
}

/// A new proposal's id.
pub async fn submit_proposal(project_id: u64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("INSERT INTO proposals (project_id) VALUES (?) RETURNING id")
        .bind(i64::try_from(project_id).unwrap_or(i64::MAX))
        .fetch_one(pool().await?)
        .await
}

/// Records a payment attempt.
pub async fn record_payment(currency: &str, amount: f64, outcome: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO payments (currency, amount, outcome) VALUES (?, ?, ?)")
        .bind(currency)
        .bind(amount)
        .bind(outcome)
        .execute(pool().await?)
        .await
        .map(|_| ())
}

/// The list price of item `id`.
pub async fn price(id: u64) -> Result<f64, sqlx::Error> {
    sqlx::query_scalar("SELECT price FROM prices WHERE id = ?")
        .bind((id % 200) as i64)
        .fetch_one(pool().await?)
        .await
}
