//! [`WatchedPool`]: a pool handle whose queries are timed, traced and classified, and whose
//! waits for a connection are counted.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use ::sqlx::pool::PoolConnection;
use ::sqlx::{Database, Describe, Either, Error, Execute, Executor, Pool, Transaction};
use futures_core::Stream;
use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use tracing::Instrument;

use super::pool::PoolSource;
use crate::db::sql::{sanitize, statement};
use crate::db::{DbMetrics, DbQuery, Failure};

/// A watched sqlx pool (from [`super::watch_pool`]): run queries with it as you would with the
/// `Pool` (`.fetch_all(&pool)`, `pool.begin()`, `pool.acquire()`), and each one runs in a
/// `db.query` span, is observed in `db_client_operation_duration_seconds` with its error
/// classified, and counts in `db_client_connection_pending_requests` while it waits for a
/// connection. It dereferences to the `Pool` for everything else, and is as cheap to clone.
pub struct WatchedPool<DB: Database> {
    pool: Pool<DB>,
    metrics: Arc<DbMetrics>,
    system: &'static str,
    source: Arc<PoolSource>,
}

impl<DB: Database> Clone for WatchedPool<DB> {
    fn clone(&self) -> Self {
        WatchedPool {
            pool: self.pool.clone(),
            metrics: self.metrics.clone(),
            system: self.system,
            source: self.source.clone(),
        }
    }
}

impl<DB: Database> fmt::Debug for WatchedPool<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchedPool")
            .field("pool", &self.pool)
            .field("system", &self.system)
            .finish_non_exhaustive()
    }
}

impl<DB: Database> Deref for WatchedPool<DB> {
    type Target = Pool<DB>;

    fn deref(&self) -> &Pool<DB> {
        &self.pool
    }
}

impl<DB: Database> WatchedPool<DB> {
    pub(super) fn new(
        pool: Pool<DB>,
        metrics: Arc<DbMetrics>,
        system: &'static str,
        source: Arc<PoolSource>,
    ) -> Self {
        WatchedPool {
            pool,
            metrics,
            system,
            source,
        }
    }

    /// The pool itself (queries run on it are still traced from sqlx's events, but their
    /// waits are not counted and their errors not classified).
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// `Pool::acquire`, counted in `db_client_connection_pending_requests` until a connection
    /// is handed over.
    pub async fn acquire(&self) -> Result<PoolConnection<DB>, Error> {
        let _waiting = self.source.wait();
        self.pool.acquire().await
    }

    /// `Pool::begin`, counted in `db_client_connection_pending_requests` until the
    /// transaction has begun (the wait for a connection and the `BEGIN` round trip).
    pub async fn begin(&self) -> Result<Transaction<'static, DB>, Error> {
        let _waiting = self.source.wait();
        self.pool.begin().await
    }

    /// Whether a query's span is made current while it runs. It must be wherever sqlx's
    /// event for the query reaches this instance, so that the event is left to the span.
    /// SQLite's connections run on threads of their own, which log to the global subscriber
    /// and hold the current span of each command until they are done with it: for an
    /// instance that is not the global one the span is not entered (the events do not reach
    /// it), because `tracing` releases a span's parent through the default subscriber of the
    /// thread dropping the span last, which on such a thread is not this instance's (the
    /// request's span would then never end).
    fn enter_span(&self) -> bool {
        self.system != "sqlite" || self.metrics.is_global()
    }

    /// The operation record of the statement `sql`.
    fn query(&self, sql: &str) -> DbQuery {
        let st = statement(sql);
        let mut query = DbQuery::on_static(
            self.metrics.clone(),
            Cow::Borrowed(self.system),
            Cow::Borrowed(st.operation),
        )
        .sanitized_text(sanitize(sql, self.system));
        if let Some(c) = st.collection {
            query = query.collection(&c);
        }
        query
    }
}

/// `error.type` and `db.response.status_code` of a failed sqlx call.
fn classify(e: &Error) -> (Cow<'_, str>, Option<Cow<'_, str>>) {
    let kind = match e {
        Error::Database(db) => {
            return match db.code() {
                Some(code) => (code.clone(), Some(code)),
                None => (Cow::Borrowed("database"), None),
            };
        }
        Error::RowNotFound => "row_not_found",
        Error::PoolTimedOut => "pool_timed_out",
        Error::PoolClosed => "pool_closed",
        Error::Io(_) => "io",
        Error::Tls(_) => "tls",
        Error::Protocol(_) => "protocol",
        Error::Configuration(_) => "configuration",
        Error::InvalidArgument(_) => "invalid_argument",
        Error::TypeNotFound { .. } => "type_not_found",
        Error::ColumnNotFound(_) => "column_not_found",
        Error::ColumnIndexOutOfBounds { .. } => "column_index_out_of_bounds",
        Error::ColumnDecode { .. } | Error::Decode(_) => "decode",
        Error::Encode(_) => "encode",
        Error::WorkerCrashed => "worker_crashed",
        _ => "_OTHER",
    };
    (Cow::Borrowed(kind), None)
}

/// Records the outcome of a query run in `recording`'s span.
fn finish<T>(
    recording: crate::db::Recording<'_>,
    query: &DbQuery,
    result: &Result<T, Error>,
    rows: u64,
) {
    recording
        .span()
        .record("db.response.returned_rows", rows.min(i64::MAX as u64));
    match result {
        Ok(_) => recording.finish_with(None, query),
        Err(e) => {
            let (error_type, status_code) = classify(e);
            recording.finish_with(
                Some(Failure {
                    error_type: &error_type,
                    status_code: status_code.as_deref(),
                }),
                query,
            );
        }
    }
}

type Step<DB> = Either<<DB as Database>::QueryResult, <DB as Database>::Row>;

impl<'p, DB: Database> Executor<'p> for &'_ WatchedPool<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    type Database = DB;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Step<DB>, Error>>
    where
        E: 'q + Execute<'q, DB>,
    {
        let pool = self.clone();
        Box::pin(Generator::new(move |out: Slot<Step<DB>>| async move {
            let record = pool.query(query.sql());
            let recording = record.start();
            let span = recording.span().clone();
            let mut rows = 0u64;
            let run = async {
                let mut conn = pool.acquire().await?;
                let mut steps = conn.fetch_many(query);
                while let Some(step) = std::future::poll_fn(|cx| steps.as_mut().poll_next(cx))
                    .await
                    .transpose()?
                {
                    rows += u64::from(step.is_right());
                    out.yield_(step).await;
                }
                Ok(())
            };
            let result = if pool.enter_span() {
                run.instrument(span).await
            } else {
                run.await
            };
            finish(recording, &record, &result, rows);
            result
        }))
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<DB::Row>, Error>>
    where
        E: 'q + Execute<'q, DB>,
    {
        let pool = self.clone();
        Box::pin(async move {
            let record = pool.query(query.sql());
            let recording = record.start();
            let span = recording.span().clone();
            let run = async { pool.acquire().await?.fetch_optional(query).await };
            let result = if pool.enter_span() {
                run.instrument(span).await
            } else {
                run.await
            };
            let rows = result.as_ref().map_or(0, |r| u64::from(r.is_some()));
            finish(recording, &record, &result, rows);
            result
        })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [DB::TypeInfo],
    ) -> BoxFuture<'e, Result<DB::Statement<'q>, Error>> {
        let pool = self.clone();
        Box::pin(async move { pool.acquire().await?.prepare_with(sql, parameters).await })
    }

    #[doc(hidden)]
    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<DB>, Error>> {
        let pool = self.clone();
        Box::pin(async move { pool.acquire().await?.describe(sql).await })
    }
}

/// Where a generator's future puts the item it yields, for its stream to return.
struct Slot<T>(Arc<Mutex<Option<T>>>);

impl<T> Slot<T> {
    /// Hands `item` to the stream, and resumes once the stream has returned it.
    async fn yield_(&self, item: T) {
        let mut item = Some(item);
        std::future::poll_fn(|_| match item.take() {
            Some(item) => {
                *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(item);
                // Resumed by the stream's next `poll_next`, after it returned the item.
                Poll::Pending
            }
            None => Poll::Ready(()),
        })
        .await;
    }
}

/// A stream driven by a future that yields its items one at a time (a connection's rows,
/// streamed while the future owns the connection).
struct Generator<'a, T> {
    slot: Arc<Mutex<Option<T>>>,
    future: Option<BoxFuture<'a, Result<(), Error>>>,
}

impl<'a, T: Send + 'a> Generator<'a, T> {
    fn new<F, Fut>(f: F) -> Self
    where
        F: FnOnce(Slot<T>) -> Fut,
        Fut: Future<Output = Result<(), Error>> + Send + 'a,
    {
        let slot = Arc::new(Mutex::new(None));
        Generator {
            future: Some(Box::pin(f(Slot(slot.clone())))),
            slot,
        }
    }
}

impl<T> Stream for Generator<'_, T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(future) = this.future.as_mut() else {
            return Poll::Ready(None);
        };
        let done = future.as_mut().poll(cx);
        if let Some(item) = this.slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Poll::Ready(Some(Ok(item)));
        }
        match done {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                this.future = None;
                Poll::Ready(result.err().map(Err))
            }
        }
    }
}
