//! Ledger storage: the leaves, the private index and the checkpoints.
//!
//! [`LedgerStore`] is the sum of five traits split by job ([`LeafLog`],
//! [`VersionIndex`], [`IntentJournal`], [`CheckpointStore`],
//! [`AnchorState`]), each stating what any backend must guarantee; [`SqliteStore`]
//! is the embedded default. SQLite was chosen over redb for the index
//! because (1) WAL mode with `synchronous=FULL` gives a crash-safe,
//! fsync'd group commit that survives `kill -9` at any instant, (2) the
//! index needs several lookups (by version, by content digest, by leaf)
//! that are plain SQL indexes, and (3) operators can inspect it with the
//! `sqlite3` shell during an incident. A PostgreSQL store for multi-instance
//! deployments implements the same trait.

use std::path::Path;
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread;

use rusqlite::{params, Connection, OptionalExtension};

use crate::leaf::{Leaf, Salt, LEAF_LEN};
use crate::merkle::Hash;
use crate::Error;

/// What a resource version is, in the private index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VersionKey {
    /// FHIR resource type, e.g. `Patient`.
    pub resource_type: String,
    /// Logical id of the resource.
    pub id: String,
    /// The version's `meta.versionId`.
    pub version_id: String,
}

/// The FHIR reference of the version: `Patient/123/_history/2`.
impl std::fmt::Display for VersionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/_history/{}",
            self.resource_type, self.id, self.version_id
        )
    }
}

/// One leaf to append, with the private facts the index keeps about it.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// The version the leaf seals.
    pub key: VersionKey,
    /// The leaf to append.
    pub leaf: Leaf,
    /// The leaf's salt; private, kept in the index only.
    pub salt: Salt,
    /// `SHA-256(canonical)`; `None` for tombstones.
    pub content_digest: Option<Hash>,
    /// `SHA-256` of the bytes the client originally sent, when known.
    pub original_digest: Option<Hash>,
    /// For an access record: the AuditEvent to deliver to the audit
    /// repository, stored in the same transaction as the leaf and kept
    /// until [`DeliveryQueue::mark_delivered`] says it arrived.
    pub deliver: Option<Vec<u8>>,
}

/// An access record waiting for the audit repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The leaf that seals it.
    pub leaf_index: u64,
    /// `AuditEvent/<id>/_history/1`.
    pub key: VersionKey,
    /// The AuditEvent as the gateway wrote it (JSON).
    pub body: Vec<u8>,
    /// Attempts so far. After one, the event may have arrived even though
    /// the attempt was not acknowledged: the deliverer looks before it
    /// sends again.
    pub attempts: u32,
}

/// An index row: where a version's leaf is and how to reopen it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRecord {
    /// The version the leaf seals.
    pub key: VersionKey,
    /// Index of the leaf in the log.
    pub leaf_index: u64,
    /// The leaf, decoded.
    pub leaf: Leaf,
    /// The leaf's salt.
    pub salt: Salt,
    /// `SHA-256(canonical)`; `None` for tombstones.
    pub content_digest: Option<Hash>,
    /// `SHA-256` of the bytes the client originally sent, when known.
    pub original_digest: Option<Hash>,
    /// Seconds since the Unix epoch when the leaf became durable.
    pub sealed_at: i64,
}

/// What one appended entry became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Index of the leaf (the existing one for a re-seal or a conflict).
    pub leaf_index: u64,
    /// The leaf data at that index (the existing leaf for a re-seal).
    pub data: [u8; LEAF_LEN],
    /// False when the version was already sealed (idempotent re-append).
    pub newly_sealed: bool,
    /// True when the key was already sealed with *different* content (or
    /// as the other kind: version vs deletion). The existing leaf stands;
    /// the caller reports a conflict.
    pub conflict: bool,
}

/// A stored signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Tree size the checkpoint is for.
    pub size: u64,
    /// The signed note: the checkpoint body, a blank line and the signature.
    pub note: String,
}

/// Storage for one ledger, split by job so that each part can be
/// implemented, wrapped (fault injection in tests) and reasoned about on
/// its own. Every method may be called from many threads at once.
pub trait LedgerStore:
    LeafLog
    + VersionIndex
    + IntentJournal
    + CheckpointStore
    + AnchorState
    + DeliveryQueue
    + std::fmt::Debug
{
}

impl<T> LedgerStore for T where
    T: LeafLog
        + VersionIndex
        + IntentJournal
        + CheckpointStore
        + AnchorState
        + DeliveryQueue
        + std::fmt::Debug
{
}

/// The leaves, in append order.
///
/// - **Durable once it returns**: when `append` returns `Ok(appended)`, the
///   leaves and their index rows survive a crash or power loss (fsync'd).
///   When it returns `Err`, none of the batch is visible — or, for stores
///   that cannot promise that (a lost commit acknowledgement), all of it
///   is, and a retry of the same entries MUST return the same leaves.
/// - **Idempotent**: appending a version key that is already sealed returns
///   its existing leaf index and adds no leaf (a retried seal after a crash
///   cannot create a second leaf for the same version).
/// - **Dense and ordered**: leaf indexes are `0..size` without gaps, in
///   append order; a leaf's data never changes once written.
/// - **Serialized**: concurrent appends from many threads are put in one
///   order.
pub trait LeafLog: Send + Sync {
    /// Appends `entries` in order; returns what each entry became.
    fn append(&self, entries: Vec<NewEntry>) -> Result<Vec<Appended>, Error>;
    /// Like [`LeafLog::append`] without blocking the caller: `done` is
    /// called (on the store's own thread) once the entries are durable, or
    /// with the error.
    fn append_then(&self, entries: Vec<NewEntry>, done: Reply<Vec<Appended>>) {
        done(self.append(entries));
    }
    /// Number of leaves.
    fn size(&self) -> Result<u64, Error>;
    /// Leaf data for indexes `start..end`.
    fn leaves(&self, start: u64, end: u64) -> Result<Vec<[u8; LEAF_LEN]>, Error>;
}

/// The private index: which leaf holds which version, with its salt and
/// digests. Rows never change once written.
pub trait VersionIndex: Send + Sync {
    /// The record of a version, if sealed.
    fn find_version(&self, key: &VersionKey) -> Result<Option<IndexRecord>, Error>;
    /// The records whose `SHA-256(canonical)` is `digest`, in leaf order
    /// (identical content may be sealed under several keys).
    fn find_by_content_digest(&self, digest: &Hash) -> Result<Vec<IndexRecord>, Error>;
    /// The record of the leaf at `index`, if any.
    fn find_by_leaf_index(&self, index: u64) -> Result<Option<IndexRecord>, Error>;
    /// How many versions of one resource are sealed.
    fn count_resource_versions(&self, resource_type: &str, id: &str) -> Result<u64, Error>;
    /// The most recently sealed version (or deletion) of one resource:
    /// the highest leaf index among its keys.
    fn newest_sealed(&self, resource_type: &str, id: &str) -> Result<Option<IndexRecord>, Error>;
    /// Index records of the leaves `start..end`, in leaf order.
    fn records(&self, start: u64, end: u64) -> Result<Vec<IndexRecord>, Error>;
}

/// The intent journal: writes about to be forwarded, until their seals
/// are settled. `open_intent` MUST be durable once it returns.
/// `close_intent` and `fail_intent` are called on the request path of
/// every sealed write: they MUST NOT wait for IO (queue the change; a lost
/// close only makes recovery look at a write that is already sealed).
pub trait IntentJournal: Send + Sync {
    /// Records that a write is about to be forwarded; durable once it
    /// returns. Returns the intent's id.
    fn open_intent(&self, opened_at_ms: i64, description: &str) -> Result<u64, Error>;
    /// Like [`IntentJournal::open_intent`], answering through `done`.
    fn open_intent_then(&self, opened_at_ms: i64, description: &str, done: Reply<u64>) {
        done(self.open_intent(opened_at_ms, description));
    }
    /// The write's versions are sealed (or it wrote nothing). Need not be
    /// durable at once: a lost close only repeats an idempotent recovery.
    fn close_intent(&self, intent_id: u64) -> Result<(), Error>;
    /// Sealing failed after the upstream committed: keep the intent open
    /// for repair, with the reason.
    fn fail_intent(&self, intent_id: u64, reason: &str) -> Result<(), Error>;
    /// Intents not closed, oldest first.
    fn open_intents(&self) -> Result<Vec<Intent>, Error>;
}

/// Signed checkpoints. `store_checkpoint` MUST be durable once it returns
/// and idempotent per size; sizes only grow.
pub trait CheckpointStore: Send + Sync {
    /// Stores a signed checkpoint durably, with the time for
    /// [`CheckpointStore::checkpoint_time`]; storing a size again changes
    /// nothing.
    fn store_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), Error>;
    /// The largest checkpoint; `None` before the first.
    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, Error>;
    /// Every checkpoint, smallest first.
    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, Error>;
    /// The oldest checkpoint whose size is at least `size`.
    fn checkpoint_covering(&self, size: u64) -> Result<Option<StoredCheckpoint>, Error>;
    /// How many checkpoints are larger than `size`, and the smallest of them.
    fn checkpoints_after(&self, size: u64) -> Result<(u64, Option<u64>), Error>;
    /// Unix seconds when the checkpoint of `size` was signed, if recorded.
    fn checkpoint_time(&self, size: u64) -> Result<Option<i64>, Error>;
}

/// What the anchor backends achieved: receipts per checkpoint and each
/// backend's health. A receipt and the success it implies MUST be stored
/// in one transaction.
pub trait AnchorState: Send + Sync {
    /// Records an anchor receipt for the checkpoint of `size` (idempotent
    /// per backend and size) and, in the same transaction, the backend's
    /// success in its health: a reader never sees the receipt beside the
    /// failure count it replaces.
    fn store_receipt(&self, size: u64, backend: &str, receipt: &str) -> Result<(), Error>;
    /// Receipts for the checkpoint of exactly `size`: `(backend, receipt)`.
    fn receipts(&self, size: u64) -> Result<Vec<(String, String)>, Error>;
    /// The largest checkpoint size `backend` has a receipt for.
    fn last_anchored(&self, backend: &str) -> Result<Option<u64>, Error>;
    /// Records a failed anchoring attempt (a success is recorded by
    /// [`AnchorState::store_receipt`]).
    fn record_anchor_failure(&self, backend: &str, error: &str) -> Result<(), Error>;
    /// Every backend's recorded health.
    fn anchor_health(&self) -> Result<Vec<AnchorHealth>, Error>;
}

/// Access records waiting for the audit repository. An entry appended
/// with [`NewEntry::deliver`] MUST be queued in the same transaction as its
/// leaf (an acknowledged access record is never sealed but undeliverable,
/// nor delivered but unsealed). Every method here MUST be durable once it
/// returns: the deliverer relies on it to neither lose nor duplicate an
/// event across a crash.
pub trait DeliveryQueue: Send + Sync {
    /// Up to `limit` records whose next attempt is due at `now_ms`: those
    /// never tried first (oldest leaf first), then deferred ones by due
    /// time, so that a failing batch cannot hold back fresh records.
    fn due_deliveries(&self, now_ms: i64, limit: usize) -> Result<Vec<Delivery>, Error>;
    /// Counts an attempt for each leaf before it is sent, so that after a
    /// crash the deliverer knows the event may already have arrived.
    fn record_attempts(&self, leaf_indexes: &[u64]) -> Result<(), Error>;
    /// The records arrived: forget them (the leaf and the index row
    /// stay). A record the repository stored under an id of its own
    /// (`Some(id)`: a server that assigns ids on create) gets an alias,
    /// so that [`VersionIndex::find_version`] finds its seal as
    /// `AuditEvent/<id>/_history/1` too.
    fn mark_delivered(&self, delivered: &[(u64, Option<String>)]) -> Result<(), Error>;
    /// The attempt failed: try again at `next_attempt_ms`, remembering why.
    fn defer_deliveries(
        &self,
        leaf_indexes: &[u64],
        next_attempt_ms: i64,
        error: &str,
    ) -> Result<(), Error>;
    /// How many records wait, and the oldest one's sealing time (Unix
    /// seconds).
    fn delivery_backlog(&self) -> Result<(u64, Option<i64>), Error>;
    /// The leaves of every record not delivered yet, due or not, in leaf
    /// order (no bodies: a backlog after an outage may be large).
    fn queued_deliveries(&self) -> Result<Vec<u64>, Error>;
}

fn db_error(e: rusqlite::Error) -> Error {
    Error::Store(e.to_string())
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS leaves (
    leaf_index INTEGER PRIMARY KEY,
    data       BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    resource_type   TEXT NOT NULL,
    id              TEXT NOT NULL,
    version_id      TEXT NOT NULL,
    leaf_index      INTEGER NOT NULL UNIQUE REFERENCES leaves(leaf_index),
    salt            BLOB NOT NULL,
    content_digest  BLOB,
    original_digest BLOB,
    sealed_at       INTEGER NOT NULL,
    PRIMARY KEY (resource_type, id, version_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS versions_by_digest ON versions(content_digest);
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY,
    note TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoint_times (
    size       INTEGER PRIMARY KEY REFERENCES checkpoints(size),
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS anchor_status (
    backend         TEXT PRIMARY KEY,
    last_success_at INTEGER,
    last_error      TEXT,
    last_error_at   INTEGER,
    failures        INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS intents (
    intent_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    opened_at_ms INTEGER NOT NULL,
    description  TEXT NOT NULL,
    last_error   TEXT
);
CREATE TABLE IF NOT EXISTS receipts (
    size    INTEGER NOT NULL REFERENCES checkpoints(size),
    backend TEXT NOT NULL,
    receipt TEXT NOT NULL,
    PRIMARY KEY (size, backend)
);
CREATE TABLE IF NOT EXISTS access_aliases (
    repository_id TEXT PRIMARY KEY,
    leaf_index    INTEGER NOT NULL UNIQUE REFERENCES leaves(leaf_index)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deliveries (
    leaf_index      INTEGER PRIMARY KEY REFERENCES leaves(leaf_index),
    body            BLOB NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT
);
-- The deliverer asks for what is due every half second, with a backlog of
-- any size (an outage): by index, never a scan of the bodies.
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(next_attempt_ms, leaf_index);
";

/// Work for the appender thread; every job in a group shares one commit.
enum Job {
    Append(Vec<NewEntry>, Reply<Vec<Appended>>),
    OpenIntent {
        opened_at_ms: i64,
        description: String,
        reply: Reply<u64>,
    },
    /// Closing needs no reply: a close lost in a crash only makes recovery
    /// look at a write that is already sealed (sealing is idempotent).
    CloseIntent(u64),
    FailIntent(u64, String),
}

/// A backend's anchoring health, as recorded by the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnchorHealth {
    /// The backend's name.
    pub backend: String,
    /// Unix seconds of the last successful anchoring.
    pub last_success_at: Option<i64>,
    /// Message of the latest failed attempt. A later success does not clear
    /// it: `failures` says whether it is current.
    pub last_error: Option<String>,
    /// Unix seconds of that failure.
    pub last_error_at: Option<i64>,
    /// Failures since the last success.
    pub failures: u64,
}

/// Called on the store's thread once a job is committed (or failed).
pub type Reply<T> = Box<dyn FnOnce(Result<T, Error>) + Send>;

/// An intent recorded before a write was forwarded and not yet closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// The id [`IntentJournal::open_intent`] returned.
    pub intent_id: u64,
    /// Unix milliseconds when it was opened.
    pub opened_at_ms: i64,
    /// What the write was (the gateway's JSON).
    pub description: String,
    /// Why sealing failed, if it did.
    pub last_error: Option<String>,
}

/// The embedded SQLite store with a group-commit appender thread.
#[derive(Debug)]
pub struct SqliteStore {
    /// A few reader connections (WAL lets them run beside the writer and
    /// each other); a reader takes the first free one. Verify-on-read
    /// looks up every returned version, from many request threads.
    readers: Vec<Mutex<Connection>>,
    next_reader: std::sync::atomic::AtomicUsize,
    appender: Mutex<mpsc::Sender<Job>>,
}

/// Reader connections per store.
const READERS: usize = 4;

impl SqliteStore {
    /// Opens (creating if needed) the ledger database at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, Error> {
        let writer = open_connection(path, WRITER_CACHE_KIB)?;
        writer.execute_batch(SCHEMA).map_err(db_error)?;
        let readers = (0..READERS)
            .map(|_| open_connection(path, READER_CACHE_KIB).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let (sender, receiver) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("ledger-appender".into())
            .spawn(move || group_commit_loop(writer, receiver))
            .map_err(|e| Error::Store(format!("cannot start the appender: {e}")))?;
        Ok(SqliteStore {
            readers,
            next_reader: std::sync::atomic::AtomicUsize::new(0),
            appender: Mutex::new(sender),
        })
    }

    /// Submits a job whose reply reports failure itself.
    fn submit_or_fail(&self, job: Job) {
        let sender = match self.appender.lock() {
            Ok(sender) => sender.clone(),
            Err(_) => return fail_job(job, "appender lock poisoned"),
        };
        if let Err(mpsc::SendError(job)) = sender.send(job) {
            fail_job(job, "the appender thread is gone");
        }
    }

    fn submit(&self, job: Job) -> Result<(), Error> {
        self.appender
            .lock()
            .map_err(|_| Error::Store("appender lock poisoned".into()))?
            .send(job)
            .map_err(|_| Error::Store("the appender thread is gone".into()))
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, Error> {
        let start = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let free = (0..READERS).find_map(|i| self.readers[(start + i) % READERS].try_lock().ok());
        let conn = match free {
            Some(conn) => conn,
            None => self.readers[start % READERS]
                .lock()
                .map_err(|_| Error::Store("reader lock poisoned".into()))?,
        };
        f(&conn).map_err(db_error)
    }
}

/// Answers a job that could not be submitted.
fn fail_job(job: Job, why: &str) {
    let error = || Error::Store(why.to_owned());
    match job {
        Job::Append(_, reply) => reply(Err(error())),
        Job::OpenIntent { reply, .. } => reply(Err(error())),
        Job::CloseIntent(_) | Job::FailIntent(..) => {}
    }
}

/// Runs a callback-style call and waits for its answer.
fn wait_for<T: Send + 'static>(call: impl FnOnce(Reply<T>)) -> Result<T, Error> {
    let (sender, receiver) = mpsc::channel();
    call(Box::new(move |result| {
        let _ = sender.send(result);
    }));
    receiver
        .recv()
        .map_err(|_| Error::Store("the appender thread is gone".into()))?
}

/// Page cache sizes: the writer keeps the content-digest index (random
/// keys) in memory; readers share the OS page cache beyond their own.
const WRITER_CACHE_KIB: i64 = 128 * 1024;
const READER_CACHE_KIB: i64 = 16 * 1024;

fn open_connection(path: &Path, cache_kib: i64) -> Result<Connection, Error> {
    let conn = Connection::open(path).map_err(db_error)?;
    // WAL + FULL: a commit returns only after the WAL is fsync'd, and a
    // crash at any point leaves the last committed state.
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=10000;
         PRAGMA cache_size=-{cache_kib};"
    ))
    .map_err(db_error)?;
    Ok(conn)
}

/// Drains every waiting job into one transaction: one fsync for the
/// whole group. Replies go out only after the commit.
fn group_commit_loop(mut conn: Connection, receiver: mpsc::Receiver<Job>) {
    while let Ok(first) = receiver.recv() {
        let mut group = vec![first];
        while let Ok(more) = receiver.try_recv() {
            group.push(more);
            if group.len() >= 4096 {
                break;
            }
        }
        match commit_group(&mut conn, &group) {
            Ok(results) => {
                for (job, result) in group.into_iter().zip(results) {
                    match (job, result) {
                        (Job::Append(_, reply), JobResult::Appended(appended)) => {
                            reply(Ok(appended))
                        }
                        (Job::OpenIntent { reply, .. }, JobResult::Opened(id)) => reply(Ok(id)),
                        _ => {}
                    }
                }
            }
            Err(error) => {
                for job in group {
                    match job {
                        Job::Append(_, reply) => reply(Err(Error::Store(error.to_string()))),
                        Job::OpenIntent { reply, .. } => {
                            reply(Err(Error::Store(error.to_string())))
                        }
                        Job::CloseIntent(_) | Job::FailIntent(..) => {}
                    }
                }
            }
        }
    }
}

enum JobResult {
    Appended(Vec<Appended>),
    Opened(u64),
    Done,
}

fn commit_group(conn: &mut Connection, group: &[Job]) -> rusqlite::Result<Vec<JobResult>> {
    // IMMEDIATE: take the write lock up front. A deferred transaction that
    // upgrades from read to write fails at once with SQLITE_BUSY when a
    // checkpoint insert holds the lock, instead of waiting for it.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // Statements are cached: re-parsing SQL for every group showed up as a
    // fifth of the appender's time.
    let mut next: u64 = tx
        .prepare_cached("SELECT COALESCE(MAX(leaf_index) + 1, 0) FROM leaves")?
        .query_row([], |r| r.get(0))?;
    let now = crate::clock::unix_seconds();
    let mut results = Vec::with_capacity(group.len());
    {
        let mut existing = tx.prepare_cached(
            "SELECT v.leaf_index, l.data, v.content_digest FROM versions v JOIN leaves l ON l.leaf_index = v.leaf_index
             WHERE v.resource_type = ?1 AND v.id = ?2 AND v.version_id = ?3",
        )?;
        let mut insert_leaf =
            tx.prepare_cached("INSERT INTO leaves (leaf_index, data) VALUES (?1, ?2)")?;
        let mut insert_version = tx.prepare_cached(
            "INSERT INTO versions (resource_type, id, version_id, leaf_index, salt, content_digest, original_digest, sealed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for job in group {
            let entries = match job {
                Job::Append(entries, _) => entries,
                Job::OpenIntent {
                    opened_at_ms,
                    description,
                    ..
                } => {
                    tx.prepare_cached(
                        "INSERT INTO intents (opened_at_ms, description) VALUES (?1, ?2)",
                    )?
                    .execute(params![opened_at_ms, description])?;
                    let id = u64::try_from(tx.last_insert_rowid()).unwrap_or(0);
                    results.push(JobResult::Opened(id));
                    continue;
                }
                Job::CloseIntent(id) => {
                    tx.prepare_cached("DELETE FROM intents WHERE intent_id = ?1")?
                        .execute(params![id])?;
                    results.push(JobResult::Done);
                    continue;
                }
                Job::FailIntent(id, reason) => {
                    tx.prepare_cached("UPDATE intents SET last_error = ?2 WHERE intent_id = ?1")?
                        .execute(params![id, reason])?;
                    results.push(JobResult::Done);
                    continue;
                }
            };
            let mut indexes = Vec::with_capacity(entries.len());
            for entry in entries {
                let key = &entry.key;
                type Found = (u64, Vec<u8>, Option<Vec<u8>>);
                let found: Option<Found> = existing
                    .query_row(params![key.resource_type, key.id, key.version_id], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .optional()?;
                if let Some((leaf_index, data, content_digest)) = found {
                    let data = blob_leaf(data)?;
                    // Same key, same content: an idempotent re-seal. Same
                    // key, other content or kind: somebody rewrote a
                    // version in place; the first seal stands.
                    let same_kind = Leaf::decode(&data).is_ok_and(|l| l.kind == entry.leaf.kind);
                    let same_content = content_digest.as_deref()
                        == entry.content_digest.as_ref().map(|d| d.as_slice());
                    indexes.push(Appended {
                        leaf_index,
                        data,
                        newly_sealed: false,
                        conflict: !(same_kind && same_content),
                    });
                    continue;
                }
                let data = entry.leaf.encode();
                insert_leaf.execute(params![next, data.as_slice()])?;
                insert_version.execute(params![
                    key.resource_type,
                    key.id,
                    key.version_id,
                    next,
                    entry.salt.as_slice(),
                    entry.content_digest.as_ref().map(|d| d.as_slice()),
                    entry.original_digest.as_ref().map(|d| d.as_slice()),
                    now,
                ])?;
                if let Some(body) = &entry.deliver {
                    tx.prepare_cached("INSERT INTO deliveries (leaf_index, body) VALUES (?1, ?2)")?
                        .execute(params![next, body.as_slice()])?;
                }
                indexes.push(Appended {
                    leaf_index: next,
                    data,
                    newly_sealed: true,
                    conflict: false,
                });
                next += 1;
            }
            results.push(JobResult::Appended(indexes));
        }
    }
    tx.commit()?;
    Ok(results)
}

fn blob_leaf(bytes: Vec<u8>) -> rusqlite::Result<[u8; LEAF_LEN]> {
    bytes.try_into().map_err(|_| {
        rusqlite::Error::InvalidColumnType(1, "leaf blob".into(), rusqlite::types::Type::Blob)
    })
}

fn blob32(bytes: Vec<u8>) -> rusqlite::Result<[u8; 32]> {
    bytes.try_into().map_err(|_| {
        rusqlite::Error::InvalidColumnType(0, "32-byte blob".into(), rusqlite::types::Type::Blob)
    })
}

/// An index row as SQLite returns it, before the blobs are checked.
struct RawRecord {
    key: VersionKey,
    leaf_index: u64,
    data: Vec<u8>,
    salt: Vec<u8>,
    content: Option<Vec<u8>>,
    original: Option<Vec<u8>>,
    sealed_at: i64,
}

fn record_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRecord> {
    Ok(RawRecord {
        key: VersionKey {
            resource_type: row.get(0)?,
            id: row.get(1)?,
            version_id: row.get(2)?,
        },
        leaf_index: row.get(3)?,
        data: row.get(4)?,
        salt: row.get(5)?,
        content: row.get(6)?,
        original: row.get(7)?,
        sealed_at: row.get(8)?,
    })
}

const RECORD_SELECT: &str = "SELECT v.resource_type, v.id, v.version_id, v.leaf_index, l.data, v.salt, v.content_digest, v.original_digest, v.sealed_at
     FROM versions v JOIN leaves l ON l.leaf_index = v.leaf_index";

fn to_record(raw: RawRecord) -> Result<IndexRecord, Error> {
    Ok(IndexRecord {
        key: raw.key,
        leaf_index: raw.leaf_index,
        leaf: Leaf::decode(&raw.data)?,
        salt: blob32(raw.salt).map_err(db_error)?,
        content_digest: raw.content.map(blob32).transpose().map_err(db_error)?,
        original_digest: raw.original.map(blob32).transpose().map_err(db_error)?,
        sealed_at: raw.sealed_at,
    })
}

impl LeafLog for SqliteStore {
    fn append(&self, entries: Vec<NewEntry>) -> Result<Vec<Appended>, Error> {
        wait_for(|reply| self.append_then(entries, reply))
    }

    fn append_then(&self, entries: Vec<NewEntry>, done: Reply<Vec<Appended>>) {
        if entries.is_empty() {
            return done(Ok(Vec::new()));
        }
        self.submit_or_fail(Job::Append(entries, done));
    }

    fn size(&self) -> Result<u64, Error> {
        self.read(|c| {
            c.query_row(
                "SELECT COALESCE(MAX(leaf_index) + 1, 0) FROM leaves",
                [],
                |r| r.get(0),
            )
        })
    }

    fn leaves(&self, start: u64, end: u64) -> Result<Vec<[u8; LEAF_LEN]>, Error> {
        let rows = self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT leaf_index, data FROM leaves WHERE leaf_index >= ?1 AND leaf_index < ?2 ORDER BY leaf_index")?;
            let rows = stmt.query_map(params![start, end], |r| Ok((r.get::<_, u64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for (expected, (index, data)) in (start..).zip(rows) {
            if index != expected {
                return Err(Error::Store(format!("leaf {expected} is missing")));
            }
            out.push(
                data.try_into()
                    .map_err(|_| Error::Store(format!("leaf {index} has the wrong length")))?,
            );
        }
        Ok(out)
    }
}

impl VersionIndex for SqliteStore {
    fn find_version(&self, key: &VersionKey) -> Result<Option<IndexRecord>, Error> {
        let raw = self.read(|c| {
            let found = c
                .prepare_cached(&format!(
                    "{RECORD_SELECT} WHERE v.resource_type = ?1 AND v.id = ?2 AND v.version_id = ?3"
                ))?
                .query_row(
                    params![key.resource_type, key.id, key.version_id],
                    record_from_row,
                )
                .optional()?;
            if found.is_some() || key.resource_type != "AuditEvent" || key.version_id != "1" {
                return Ok(found);
            }
            // An access record the repository stored under its own id.
            c.prepare_cached(&format!(
                "{RECORD_SELECT} WHERE v.leaf_index = (SELECT leaf_index FROM access_aliases WHERE repository_id = ?1)"
            ))?
            .query_row(params![key.id], record_from_row)
            .optional()
            .map(|raw| {
                raw.map(|mut raw| {
                    raw.key = key.clone();
                    raw
                })
            })
        })?;
        raw.map(to_record).transpose()
    }

    fn find_by_content_digest(&self, digest: &Hash) -> Result<Vec<IndexRecord>, Error> {
        let raws = self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "{RECORD_SELECT} WHERE v.content_digest = ?1 ORDER BY v.leaf_index"
            ))?;
            let rows = stmt.query_map(params![digest.as_slice()], record_from_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        raws.into_iter().map(to_record).collect()
    }

    fn find_by_leaf_index(&self, index: u64) -> Result<Option<IndexRecord>, Error> {
        let raw = self.read(|c| {
            c.prepare_cached(&format!("{RECORD_SELECT} WHERE v.leaf_index = ?1"))?
                .query_row(params![index], record_from_row)
                .optional()
        })?;
        raw.map(to_record).transpose()
    }

    fn newest_sealed(&self, resource_type: &str, id: &str) -> Result<Option<IndexRecord>, Error> {
        let raw = self.read(|c| {
            c.prepare_cached(&format!(
                "{RECORD_SELECT} WHERE v.resource_type = ?1 AND v.id = ?2 ORDER BY v.leaf_index DESC LIMIT 1"
            ))?
            .query_row(params![resource_type, id], record_from_row)
            .optional()
        })?;
        raw.map(to_record).transpose()
    }

    fn count_resource_versions(&self, resource_type: &str, id: &str) -> Result<u64, Error> {
        self.read(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM versions WHERE resource_type = ?1 AND id = ?2",
                params![resource_type, id],
                |r| r.get(0),
            )
        })
    }

    fn records(&self, start: u64, end: u64) -> Result<Vec<IndexRecord>, Error> {
        let raws = self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "{RECORD_SELECT} WHERE v.leaf_index >= ?1 AND v.leaf_index < ?2 ORDER BY v.leaf_index"
            ))?;
            let rows = stmt.query_map(params![start, end], record_from_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        raws.into_iter().map(to_record).collect()
    }
}

impl IntentJournal for SqliteStore {
    fn open_intent(&self, opened_at_ms: i64, description: &str) -> Result<u64, Error> {
        wait_for(|reply| self.open_intent_then(opened_at_ms, description, reply))
    }

    fn open_intent_then(&self, opened_at_ms: i64, description: &str, done: Reply<u64>) {
        self.submit_or_fail(Job::OpenIntent {
            opened_at_ms,
            description: description.to_owned(),
            reply: done,
        });
    }

    fn close_intent(&self, intent_id: u64) -> Result<(), Error> {
        self.submit(Job::CloseIntent(intent_id))
    }

    fn fail_intent(&self, intent_id: u64, reason: &str) -> Result<(), Error> {
        self.submit(Job::FailIntent(intent_id, reason.to_owned()))
    }

    fn open_intents(&self) -> Result<Vec<Intent>, Error> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT intent_id, opened_at_ms, description, last_error FROM intents ORDER BY intent_id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(Intent {
                    intent_id: r.get(0)?,
                    opened_at_ms: r.get(1)?,
                    description: r.get(2)?,
                    last_error: r.get(3)?,
                })
            })?;
            rows.collect()
        })
    }
}

impl CheckpointStore for SqliteStore {
    fn store_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), Error> {
        let now = crate::clock::unix_seconds();
        self.read(|c| {
            c.execute(
                "INSERT OR IGNORE INTO checkpoints (size, note) VALUES (?1, ?2)",
                params![checkpoint.size, checkpoint.note],
            )?;
            c.execute(
                "INSERT OR IGNORE INTO checkpoint_times (size, created_at) VALUES (?1, ?2)",
                params![checkpoint.size, now],
            )
        })?;
        Ok(())
    }

    fn checkpoints_after(&self, size: u64) -> Result<(u64, Option<u64>), Error> {
        self.read(|c| {
            c.query_row(
                "SELECT COUNT(*), MIN(size) FROM checkpoints WHERE size > ?1",
                params![size],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
    }

    fn checkpoint_time(&self, size: u64) -> Result<Option<i64>, Error> {
        self.read(|c| {
            c.query_row(
                "SELECT created_at FROM checkpoint_times WHERE size = ?1",
                params![size],
                |r| r.get(0),
            )
            .optional()
        })
    }

    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, Error> {
        self.read(|c| {
            c.query_row(
                "SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1",
                [],
                |r| {
                    Ok(StoredCheckpoint {
                        size: r.get(0)?,
                        note: r.get(1)?,
                    })
                },
            )
            .optional()
        })
    }

    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, Error> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT size, note FROM checkpoints ORDER BY size")?;
            let rows = stmt.query_map([], |r| {
                Ok(StoredCheckpoint {
                    size: r.get(0)?,
                    note: r.get(1)?,
                })
            })?;
            rows.collect()
        })
    }

    fn checkpoint_covering(&self, size: u64) -> Result<Option<StoredCheckpoint>, Error> {
        self.read(|c| {
            c.query_row(
                "SELECT size, note FROM checkpoints WHERE size >= ?1 ORDER BY size LIMIT 1",
                params![size],
                |r| {
                    Ok(StoredCheckpoint {
                        size: r.get(0)?,
                        note: r.get(1)?,
                    })
                },
            )
            .optional()
        })
    }
}

impl AnchorState for SqliteStore {
    fn last_anchored(&self, backend: &str) -> Result<Option<u64>, Error> {
        self.read(|c| {
            c.query_row(
                "SELECT MAX(size) FROM receipts WHERE backend = ?1",
                params![backend],
                |r| r.get(0),
            )
        })
    }

    fn record_anchor_failure(&self, backend: &str, error: &str) -> Result<(), Error> {
        let now = crate::clock::unix_seconds();
        self.read(|c| {
            c.execute(
                "INSERT INTO anchor_status (backend, last_error, last_error_at, failures) VALUES (?1, ?2, ?3, 1)
                 ON CONFLICT(backend) DO UPDATE SET last_error = ?2, last_error_at = ?3, failures = failures + 1",
                params![backend, error, now],
            )
        })?;
        Ok(())
    }

    fn anchor_health(&self) -> Result<Vec<AnchorHealth>, Error> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT backend, last_success_at, last_error, last_error_at, failures FROM anchor_status ORDER BY backend",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(AnchorHealth {
                    backend: r.get(0)?,
                    last_success_at: r.get(1)?,
                    last_error: r.get(2)?,
                    last_error_at: r.get(3)?,
                    failures: r.get(4)?,
                })
            })?;
            rows.collect()
        })
    }

    fn store_receipt(&self, size: u64, backend: &str, receipt: &str) -> Result<(), Error> {
        let now = crate::clock::unix_seconds();
        self.read(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "INSERT OR IGNORE INTO receipts (size, backend, receipt) VALUES (?1, ?2, ?3)",
                params![size, backend, receipt],
            )?;
            tx.execute(
                "INSERT INTO anchor_status (backend, last_success_at, failures) VALUES (?1, ?2, 0)
                 ON CONFLICT(backend) DO UPDATE SET last_success_at = ?2, failures = 0",
                params![backend, now],
            )?;
            tx.commit()
        })?;
        Ok(())
    }

    fn receipts(&self, size: u64) -> Result<Vec<(String, String)>, Error> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT backend, receipt FROM receipts WHERE size = ?1 ORDER BY backend",
            )?;
            let rows = stmt.query_map(params![size], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }
}

impl DeliveryQueue for SqliteStore {
    fn due_deliveries(&self, now_ms: i64, limit: usize) -> Result<Vec<Delivery>, Error> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT d.leaf_index, v.resource_type, v.id, v.version_id, d.body, d.attempts
                 FROM deliveries d JOIN versions v ON v.leaf_index = d.leaf_index
                 WHERE d.next_attempt_ms <= ?1 ORDER BY d.next_attempt_ms, d.leaf_index LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now_ms, limit], |r| {
                Ok(Delivery {
                    leaf_index: r.get(0)?,
                    key: VersionKey {
                        resource_type: r.get(1)?,
                        id: r.get(2)?,
                        version_id: r.get(3)?,
                    },
                    body: r.get(4)?,
                    attempts: r.get(5)?,
                })
            })?;
            rows.collect()
        })
    }

    fn record_attempts(&self, leaf_indexes: &[u64]) -> Result<(), Error> {
        self.update_deliveries(
            leaf_indexes,
            "UPDATE deliveries SET attempts = attempts + 1 WHERE leaf_index = ?1",
            &[],
        )
    }

    fn mark_delivered(&self, delivered: &[(u64, Option<String>)]) -> Result<(), Error> {
        if delivered.is_empty() {
            return Ok(());
        }
        self.read(|c| {
            let tx = c.unchecked_transaction()?;
            for (index, repository_id) in delivered {
                tx.prepare_cached("DELETE FROM deliveries WHERE leaf_index = ?1")?
                    .execute(params![index])?;
                if let Some(id) = repository_id {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO access_aliases (repository_id, leaf_index) VALUES (?1, ?2)",
                    )?
                    .execute(params![id, index])?;
                }
            }
            tx.commit()
        })
    }

    fn defer_deliveries(
        &self,
        leaf_indexes: &[u64],
        next_attempt_ms: i64,
        error: &str,
    ) -> Result<(), Error> {
        self.update_deliveries(
            leaf_indexes,
            "UPDATE deliveries SET next_attempt_ms = ?2, last_error = ?3 WHERE leaf_index = ?1",
            &[next_attempt_ms.into(), error.to_owned().into()],
        )
    }

    fn queued_deliveries(&self) -> Result<Vec<u64>, Error> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT leaf_index FROM deliveries ORDER BY leaf_index")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect()
        })
    }

    fn delivery_backlog(&self) -> Result<(u64, Option<i64>), Error> {
        self.read(|c| {
            c.query_row(
                "SELECT COUNT(*), MIN(v.sealed_at) FROM deliveries d JOIN versions v ON v.leaf_index = d.leaf_index",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
    }
}

impl SqliteStore {
    /// Runs `sql` once per leaf index (`?1`, then the `extra` values as
    /// `?2`…) in one durable transaction.
    fn update_deliveries(
        &self,
        leaf_indexes: &[u64],
        sql: &str,
        extra: &[rusqlite::types::Value],
    ) -> Result<(), Error> {
        if leaf_indexes.is_empty() {
            return Ok(());
        }
        self.read(|c| {
            let tx = c.unchecked_transaction()?;
            {
                let mut stmt = tx.prepare_cached(sql)?;
                for &index in leaf_indexes {
                    let mut values: Vec<rusqlite::types::Value> = vec![(index as i64).into()];
                    values.extend_from_slice(extra);
                    stmt.execute(rusqlite::params_from_iter(values))?;
                }
            }
            tx.commit()
        })
    }
}
