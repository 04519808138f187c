//! The ledger: a store, the Merkle tree over its leaves, the log's signing
//! key, the tiles directory and the anchor backends.
//!
//! Files in a ledger directory:
//!
//! | file              | what                                                   |
//! |-------------------|--------------------------------------------------------|
//! | `ledger.sqlite`   | leaves, private index, checkpoints, receipts (source of truth) |
//! | `log.key`         | the log's Ed25519 signing key (mode 0600), Go note format |
//! | `log.pub`         | the verifier key, `<name>+<hash>+<key>`                 |
//! | `tiles/`          | C2SP tlog-tiles: `checkpoint`, `tile/<L>/<N>`, `tile/entries/<N>` |
//! | `anchors.log`     | the `local` anchor backend's append-only file          |

use std::path::{Path, PathBuf};

use sha2::Digest;
use std::sync::Mutex;

use crate::backends::{AnchorBackend, LocalFileAnchor};
use crate::bundle::{AnchorReceipt, ProofBundle};
use crate::durable::{io_error, write_replacing};
use crate::leaf::{self, Leaf, LeafKind};
use crate::merkle::{self, Hash, MemoryTree};
use crate::note::{Checkpoint, NoteSigner, NoteVerifier};
use crate::resource::{self, Format};
use crate::store::{IndexRecord, LedgerStore, NewEntry, SqliteStore, StoredCheckpoint, VersionKey};
use crate::tiles;
use crate::Error;

/// How to open a ledger.
#[derive(Debug, Clone)]
pub struct LedgerOptions {
    /// The log's origin line and key name, e.g. `hospital.example.jp/inkan`.
    pub origin: String,
    /// Signing key file; default `<dir>/log.key` (generated on first open).
    pub key_file: Option<PathBuf>,
}

/// What sealing one version produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealReceipt {
    /// Index of the version's leaf (the existing one for a re-seal or a
    /// conflict).
    pub leaf_index: u64,
    /// The commitment in that leaf.
    pub commitment: Hash,
    /// False when the version was already sealed (idempotent re-seal).
    pub newly_sealed: bool,
    /// The key was already sealed with different content: the first seal
    /// stands and this one is refused (see [`crate::store::Appended`]).
    pub conflict: bool,
}

/// One version to seal.
#[derive(Debug, Clone)]
pub enum SealRequest {
    /// A stored version: its bytes as the upstream holds them.
    Version {
        /// The version sealed.
        key: VersionKey,
        /// The resource, JSON or XML as `format` says.
        bytes: Vec<u8>,
        /// The wire format of `bytes`.
        format: Format,
        /// `SHA-256` of the bytes the client originally sent, when known
        /// (kept in the private index only).
        original_digest: Option<Hash>,
        /// Sealed when first seen in the upstream, not when written through
        /// the gateway (the leaf's flag).
        backfilled: bool,
    },
    /// A deletion.
    Tombstone {
        /// The version deleted.
        key: VersionKey,
        /// Sealed when first seen in the upstream, not when written through
        /// the gateway (the leaf's flag).
        backfilled: bool,
    },
    /// An access record: an AuditEvent the gateway wrote, sealed as
    /// [`access_record_key`] and queued for the audit repository in the
    /// same commit.
    Access {
        /// `AuditEvent/<id>/_history/1` (see [`access_record_key`]).
        key: VersionKey,
        /// The AuditEvent, JSON, without `meta`.
        event: Vec<u8>,
    },
}

impl SealRequest {
    /// The version this request seals.
    pub fn key(&self) -> &VersionKey {
        match self {
            SealRequest::Version { key, .. }
            | SealRequest::Tombstone { key, .. }
            | SealRequest::Access { key, .. } => key,
        }
    }
}

/// The key an access record is sealed under: `AuditEvent/<id>/_history/1`,
/// `<id>` the gateway's own. The audit repository stores it under an id
/// of its own, which the delivery binds to the leaf
/// ([`crate::store::DeliveryQueue::mark_delivered`]); any later version
/// of it is an edit of an access record, reported by `inkan audit` as
/// unsealed.
pub fn access_record_key(id: &str) -> VersionKey {
    VersionKey {
        resource_type: "AuditEvent".into(),
        id: id.into(),
        version_id: "1".into(),
    }
}

/// How a version the upstream returned compares with the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionCheck {
    /// Sealed, and the bytes give the sealed commitment. `backfilled`:
    /// sealed when first seen (recovery, `inkan backfill`), not when
    /// written through the gateway.
    Verified {
        /// Index of the version's leaf.
        leaf_index: u64,
        /// Sealed when first seen in the upstream, not when written through
        /// the gateway.
        backfilled: bool,
    },
    /// Sealed, but what the upstream returned is not what was sealed.
    Tampered {
        /// Index of the sealed version's leaf.
        leaf_index: u64,
        /// What differs, in words for reports.
        reason: String,
    },
    /// The ledger has no seal for this version.
    Unsealed,
}

impl VersionCheck {
    /// The word used in headers, extensions and reports.
    pub fn as_str(&self) -> &'static str {
        match self {
            VersionCheck::Verified { .. } => "verified",
            VersionCheck::Tampered { .. } => "tampered",
            VersionCheck::Unsealed => "unsealed",
        }
    }
}

/// Compares a sealed record with a version's bytes (`None`: the upstream
/// says the version is a deletion). Pure.
pub fn compare_with_record(record: &IndexRecord, found: Option<(&[u8], Format)>) -> VersionCheck {
    let leaf_index = record.leaf_index;
    let backfilled = record.leaf.backfilled;
    let tampered = |reason: &str| VersionCheck::Tampered {
        leaf_index,
        reason: reason.to_owned(),
    };
    match (record.leaf.kind, found) {
        (LeafKind::Version, Some((bytes, format))) => {
            match resource::canonical_resource(bytes, format) {
                Ok(canonical)
                    if leaf::commitment(&record.salt, &canonical) == record.leaf.commitment =>
                {
                    VersionCheck::Verified {
                        leaf_index,
                        backfilled,
                    }
                }
                Ok(_) => tampered("the content differs from the sealed version"),
                Err(_) => tampered("the returned version is not valid FHIR"),
            }
        }
        (LeafKind::Access, Some((bytes, format))) => {
            match resource::canonical_access_record(bytes, format) {
                Ok(canonical)
                    if leaf::access_commitment(&record.salt, &canonical)
                        == record.leaf.commitment =>
                {
                    VersionCheck::Verified {
                        leaf_index,
                        backfilled,
                    }
                }
                Ok(_) => tampered("the access record differs from the sealed one"),
                Err(_) => tampered("the returned access record is not valid FHIR"),
            }
        }
        (LeafKind::Access, None) => tampered("an access record was deleted"),
        (LeafKind::Version, None) => tampered("sealed as a version, reported as a deletion"),
        (LeafKind::Tombstone, Some(_)) => tampered("sealed as a deletion, returned with content"),
        (LeafKind::Tombstone, None) => {
            let key = &record.key;
            let expected = leaf::tombstone_commitment(
                &record.salt,
                &key.resource_type,
                &key.id,
                &key.version_id,
            );
            if expected == record.leaf.commitment {
                VersionCheck::Verified {
                    leaf_index,
                    backfilled,
                }
            } else {
                tampered("the tombstone's commitment does not match its key")
            }
        }
    }
}

/// An open ledger.
#[derive(Debug)]
pub struct Ledger {
    dir: PathBuf,
    store: Box<dyn LedgerStore>,
    tree: Mutex<TreeState>,
    signer: NoteSigner,
    backends: Vec<Box<dyn AnchorBackend>>,
    /// One lock per backend: the checkpointer and a backend's own pacing
    /// thread may both want to anchor the latest checkpoint; one stamp
    /// (one chain transaction) is enough, and a late failure of a second
    /// attempt must not be recorded over the first one's success (a test
    /// caught `failures = 1` beside a fresh receipt under load).
    anchoring: Vec<Mutex<()>>,
    /// Serializes checkpoint production (never two signers racing).
    checkpointing: Mutex<()>,
    /// Index records sealed or looked up recently. Records never change
    /// once written, so a hit is always right; verify-on-read of a version
    /// just written (read-after-write) or read again skips SQLite. Only
    /// sealed versions are cached: "not sealed" can change.
    record_cache: Mutex<std::collections::HashMap<VersionKey, CachedRecord>>,
    /// Held for the ledger's lifetime when it was opened to write.
    writer_lock: Option<WriterLock>,
}

/// The one-writer-per-directory rule: an exclusive OS lock on
/// `<dir>/writer.lock`, held as long as this value lives and released by
/// the kernel if the process dies. Two `inkan serve` on one directory would
/// race for checkpoints, EVM nonces and intents; the second one stops at
/// start instead.
#[derive(Debug)]
pub struct WriterLock {
    _file: std::fs::File,
}

impl WriterLock {
    /// Takes the lock on `<dir>/writer.lock` (creating the file). Fails at
    /// once, without waiting, when another process holds it.
    pub fn take(dir: &Path) -> Result<WriterLock, Error> {
        let path = dir.join("writer.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(WriterLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Store(format!(
                "another process is writing the ledger in {} (it holds {}); \
                 one writer per ledger directory: stop it first",
                dir.display(),
                path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(io_error(&path, e)),
        }
    }
}

/// Creates `dir` (and parents) and leaves it owner-only (0700).
fn make_private_dir(dir: &Path) -> Result<(), Error> {
    // An empty path would put the ledger wherever the process was started.
    if dir.as_os_str().is_empty() {
        return Err(Error::Store("no ledger directory was given".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)
            .map_err(|e| io_error(dir, e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| io_error(dir, e))?;
        }
    }
    Ok(())
}

/// Leaves an existing file owner-only (0600).
fn make_private_file(path: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io_error(path, e))?;
    }
    Ok(())
}

/// How a [`Ledger`] is opened; see [`Ledger::builder`].
#[derive(Debug)]
pub struct LedgerBuilder {
    dir: PathBuf,
    options: LedgerOptions,
    store: Option<Box<dyn LedgerStore>>,
}

impl LedgerBuilder {
    /// Keeps leaves, index, intents and checkpoints in `store` instead of
    /// `<dir>/ledger.sqlite`. The directory still holds the key, the tiles
    /// and the writer lock.
    pub fn store(mut self, store: Box<dyn LedgerStore>) -> LedgerBuilder {
        self.store = Some(store);
        self
    }

    /// Opens to write, taking the directory's writer lock first (see
    /// [`WriterLock`]): a second writer on one directory fails here.
    pub fn open(self) -> Result<Ledger, Error> {
        make_private_dir(&self.dir)?;
        let lock = WriterLock::take(&self.dir)?;
        let mut ledger = Ledger::open_unlocked(&self.dir, &self.options, self.store)?;
        ledger.writer_lock = Some(lock);
        Ok(ledger)
    }

    /// Opens to read beside a writer.
    pub fn open_reader(self) -> Result<Ledger, Error> {
        Ledger::open_unlocked(&self.dir, &self.options, self.store)
    }
}

/// A cached index record and, once a copy of the version verified, the
/// SHA-256 of that copy's exact bytes: the same bytes again verify without
/// canonicalizing (identical bytes have an identical canonical form).
#[derive(Debug, Clone)]
struct CachedRecord {
    record: IndexRecord,
    verified_bytes: Option<Hash>,
}

/// Records kept in the cache before it is emptied and refilled (about
/// 200 bytes each).
const RECORD_CACHE_CAPACITY: usize = 65_536;

impl Ledger {
    /// Opens the ledger in `dir`, creating it (and its key) if needed, and
    /// rebuilds the in-memory tree from the stored leaves.
    ///
    /// Takes the directory's writer lock first (see [`WriterLock`]): a
    /// second writer on one directory fails here with a clear message.
    /// Read-only tools use [`Ledger::open_reader`].
    pub fn open(dir: &Path, options: &LedgerOptions) -> Result<Ledger, Error> {
        Ledger::builder(dir, options).open()
    }

    /// Opens the ledger to read (proofs, status, checks) while a gateway
    /// may be writing it. Seals and checkpoints are refused.
    pub fn open_reader(dir: &Path, options: &LedgerOptions) -> Result<Ledger, Error> {
        Ledger::builder(dir, options).open_reader()
    }

    /// Opens a ledger step by step: the directory (keys, tiles, writer
    /// lock) and, instead of the embedded SQLite store, any
    /// [`LedgerStore`] (a shared database, or a wrapper that injects faults
    /// in tests).
    pub fn builder(dir: &Path, options: &LedgerOptions) -> LedgerBuilder {
        LedgerBuilder {
            dir: dir.to_owned(),
            options: options.clone(),
            store: None,
        }
    }

    fn open_unlocked(
        dir: &Path,
        options: &LedgerOptions,
        store: Option<Box<dyn LedgerStore>>,
    ) -> Result<Ledger, Error> {
        make_private_dir(dir)?;
        let store = match store {
            Some(store) => store,
            None => {
                let database = dir.join("ledger.sqlite");
                let store = SqliteStore::open(&database)?;
                // Every salt and every unsalted content digest is in here:
                // owner only (SQLite gives its -wal and -shm files the
                // same mode).
                make_private_file(&database)?;
                Box::new(store)
            }
        };
        let key_file = options
            .key_file
            .clone()
            .unwrap_or_else(|| dir.join("log.key"));
        let signer = load_or_create_key(&key_file, &options.origin)?;
        if signer.name() != options.origin {
            return Err(Error::Note(format!(
                "the key in {} is for {:?}, not the configured origin {:?}",
                key_file.display(),
                signer.name(),
                options.origin
            )));
        }
        write_replacing(
            &dir.join("log.pub"),
            format!("{}\n", signer.verifier().to_key_string()).as_bytes(),
        )?;
        let ledger = Ledger {
            backends: vec![Box::new(LocalFileAnchor::new(dir.join("anchors.log")))],
            anchoring: vec![Mutex::new(())],
            dir: dir.to_owned(),
            store,
            tree: Mutex::new(TreeState::default()),
            signer,
            checkpointing: Mutex::new(()),
            record_cache: Mutex::new(std::collections::HashMap::new()),
            writer_lock: None,
        };
        ledger.sync_tree()?;
        Ok(ledger)
    }

    fn require_writer(&self) -> Result<(), Error> {
        match self.writer_lock {
            Some(_) => Ok(()),
            None => Err(Error::Store(
                "the ledger was opened read-only; only the writer seals and signs".into(),
            )),
        }
    }

    /// Adds an anchor backend (the `local` one is always present).
    pub fn add_backend(&mut self, backend: Box<dyn AnchorBackend>) {
        self.backends.push(backend);
        self.anchoring.push(Mutex::new(()));
    }

    /// The log's public key, which verifies its checkpoints (the contents of
    /// `log.pub`).
    pub fn verifier(&self) -> NoteVerifier {
        self.signer.verifier()
    }

    /// The log's origin line, which is also its key name.
    pub fn origin(&self) -> &str {
        self.signer.name()
    }

    /// The storage behind the ledger.
    pub fn store(&self) -> &dyn LedgerStore {
        self.store.as_ref()
    }

    /// `<dir>/tiles`, where tiles and the latest checkpoint are published.
    pub fn tiles_dir(&self) -> PathBuf {
        self.dir.join("tiles")
    }

    fn lock_tree(&self) -> Result<std::sync::MutexGuard<'_, TreeState>, Error> {
        self.tree
            .lock()
            .map_err(|_| Error::Store("tree lock poisoned".into()))
    }

    /// Adds freshly appended leaves to the tree without reading them back
    /// from the store. Concurrent appends finish in any order, so leaves
    /// wait in `pending` until every index before them is in the tree.
    fn add_to_tree(&self, appended: &[crate::store::Appended]) -> Result<(), Error> {
        let mut state = self.lock_tree()?;
        for a in appended.iter().filter(|a| a.newly_sealed) {
            if a.leaf_index >= state.tree.size() {
                state
                    .pending
                    .insert(a.leaf_index, merkle::leaf_hash(&a.data));
            }
        }
        state.drain_pending();
        Ok(())
    }

    /// Brings the in-memory tree up to the store's size (at open, and before
    /// a checkpoint), reading from the store only leaves no caller has
    /// added yet.
    fn sync_tree(&self) -> Result<u64, Error> {
        let mut state = self.lock_tree()?;
        let size = self.store.size()?;
        state.drain_pending();
        while state.tree.size() < size {
            let next = state.tree.size();
            let end = (next + 65_536).min(size);
            for (offset, data) in self.store.leaves(next, end)?.iter().enumerate() {
                let index = next + offset as u64;
                let hash = state
                    .pending
                    .remove(&index)
                    .unwrap_or_else(|| merkle::leaf_hash(data));
                state.tree.push(hash);
            }
            state.drain_pending();
        }
        Ok(size)
    }

    /// Seals versions durably, in order. Returns once every leaf is on disk.
    pub fn seal(&self, requests: Vec<SealRequest>) -> Result<Vec<SealReceipt>, Error> {
        self.require_writer()?;
        let (entries, cacheable) = Self::prepare(requests)?;
        let appended = self.store.append(entries)?;
        self.finish_seal(&appended, cacheable)
    }

    /// Like [`Ledger::seal`] without blocking the caller: the canonical
    /// forms are computed here, then `done` is called on the store's thread
    /// once every leaf is durable (for async callers, which hand it a
    /// oneshot channel instead of parking a thread).
    pub fn seal_then(
        self: &std::sync::Arc<Self>,
        requests: Vec<SealRequest>,
        done: impl FnOnce(Result<Vec<SealReceipt>, Error>) + Send + 'static,
    ) {
        if let Err(error) = self.require_writer() {
            return done(Err(error));
        }
        let (entries, cacheable) = match Self::prepare(requests) {
            Ok(prepared) => prepared,
            Err(error) => return done(Err(error)),
        };
        let ledger = self.clone();
        self.store.append_then(
            entries,
            Box::new(move |appended| {
                done(appended.and_then(|appended| ledger.finish_seal(&appended, cacheable)))
            }),
        );
    }

    /// Like [`Ledger::open_intent`], answering through `done` on the
    /// store's thread.
    pub fn open_intent_then(
        &self,
        description: &str,
        done: impl FnOnce(Result<u64, Error>) + Send + 'static,
    ) {
        self.store
            .open_intent_then(crate::clock::unix_millis(), description, Box::new(done));
    }

    /// The entries to append for `requests` (canonical form, salt,
    /// commitment) and the index records to cache once they are in.
    fn prepare(requests: Vec<SealRequest>) -> Result<(Vec<NewEntry>, Vec<IndexRecord>), Error> {
        let mut entries = Vec::with_capacity(requests.len());
        for request in requests {
            let salt = leaf::fresh_salt();
            entries.push(match request {
                SealRequest::Version {
                    key,
                    bytes,
                    format,
                    original_digest,
                    backfilled,
                } => {
                    let canonical = resource::canonical_resource(&bytes, format)?;
                    NewEntry {
                        key,
                        leaf: Leaf {
                            kind: LeafKind::Version,
                            backfilled,
                            commitment: leaf::commitment(&salt, &canonical),
                        },
                        salt,
                        content_digest: Some(leaf::content_digest(&canonical)),
                        original_digest,
                        deliver: None,
                    }
                }
                SealRequest::Access { key, event } => {
                    let canonical = resource::canonical_access_record(&event, Format::Json)?;
                    NewEntry {
                        key,
                        leaf: Leaf {
                            kind: LeafKind::Access,
                            backfilled: false,
                            commitment: leaf::access_commitment(&salt, &canonical),
                        },
                        salt,
                        // Never looked up by content (each record is
                        // unique), and a random key in the digest index
                        // costs every append.
                        content_digest: None,
                        original_digest: None,
                        deliver: Some(event),
                    }
                }
                SealRequest::Tombstone { key, backfilled } => NewEntry {
                    leaf: Leaf {
                        kind: LeafKind::Tombstone,
                        backfilled,
                        commitment: leaf::tombstone_commitment(
                            &salt,
                            &key.resource_type,
                            &key.id,
                            &key.version_id,
                        ),
                    },
                    key,
                    salt,
                    content_digest: None,
                    original_digest: None,
                    deliver: None,
                },
            });
        }
        let cacheable: Vec<IndexRecord> = entries
            .iter()
            .map(|e| IndexRecord {
                key: e.key.clone(),
                leaf_index: 0,
                leaf: e.leaf,
                salt: e.salt,
                content_digest: e.content_digest,
                original_digest: e.original_digest,
                sealed_at: crate::clock::unix_seconds(),
            })
            .collect();
        Ok((entries, cacheable))
    }

    /// After an append: the tree, the record cache, the receipts.
    fn finish_seal(
        &self,
        appended: &[crate::store::Appended],
        cacheable: Vec<IndexRecord>,
    ) -> Result<Vec<SealReceipt>, Error> {
        self.add_to_tree(appended)?;
        for (mut record, a) in cacheable.into_iter().zip(appended) {
            if a.newly_sealed {
                record.leaf_index = a.leaf_index;
                self.cache_record(record);
            }
        }
        let receipts = appended
            .iter()
            .map(|a| {
                Ok(SealReceipt {
                    leaf_index: a.leaf_index,
                    commitment: Leaf::decode(&a.data)?.commitment,
                    newly_sealed: a.newly_sealed,
                    conflict: a.conflict,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(receipts)
    }

    /// Signs a checkpoint for the current tree when it grew since the last
    /// one, publishes tiles, and anchors it with every backend. `None` when
    /// the tree did not grow.
    pub fn checkpoint(&self) -> Result<Option<StoredCheckpoint>, Error> {
        let signed = self.checkpoint_only()?;
        self.anchor_pending()?;
        Ok(signed)
    }

    /// Signs and publishes a checkpoint when the tree grew; no anchoring.
    fn checkpoint_only(&self) -> Result<Option<StoredCheckpoint>, Error> {
        self.require_writer()?;
        let _guard = self
            .checkpointing
            .lock()
            .map_err(|_| Error::Store("checkpoint lock poisoned".into()))?;
        self.sync_tree()?;
        let previous = self.store.latest_checkpoint()?;
        let previous_size = previous.as_ref().map_or(0, |c| c.size);
        // Everything that needs the tree is computed under its lock, without
        // copying it: the root, the consistency check and the changed tiles.
        let (checkpoint, changed_tiles) = {
            let state = self.lock_tree()?;
            let tree = &state.tree;
            let size = tree.size();
            if size <= previous_size && previous.is_some() {
                return Ok(None);
            }
            // Never sign a checkpoint that is not consistent with the last
            // one: the previous root must be a prefix root of this tree.
            if let Some(previous) = &previous {
                let signed = Checkpoint::verify(&previous.note, &self.signer.verifier())?;
                let recomputed = tree.root(signed.size)?;
                if recomputed != signed.root {
                    return Err(Error::Proof(format!(
                        "refusing to sign: the tree no longer matches checkpoint {} (calculated root {}, signed root {})",
                        signed.size,
                        hex::encode(recomputed),
                        hex::encode(signed.root)
                    )));
                }
            }
            let checkpoint = Checkpoint {
                origin: self.origin().to_owned(),
                size,
                root: tree.root(size)?,
            };
            let changed = tiles::tiles_between(tree, previous_size, size, |start, end| {
                self.store.leaves(start, end)
            })?;
            (checkpoint, changed)
        };
        let size = checkpoint.size;
        let stored = StoredCheckpoint {
            size,
            note: self.signer.sign(&checkpoint.body())?,
        };
        // Tiles first, durably: once the checkpoint row exists, the next
        // round starts after it and never rewrites these tiles. A crash
        // before the row leaves tiles that the next round writes again.
        tiles::write_tile_files(&self.tiles_dir(), changed_tiles)?;
        self.store.store_checkpoint(&stored)?;
        write_replacing(&self.tiles_dir().join("checkpoint"), stored.note.as_bytes())?;
        Ok(Some(stored))
    }

    /// Hands the latest checkpoint to every backend that has no receipt for
    /// it yet. The latest checkpoint covers all earlier ones through
    /// consistency proofs, so a backend that was down catches up with one
    /// anchor. Errors leave the checkpoint stored and un-anchored: the
    /// checkpointer retries with backoff.
    pub fn anchor_pending(&self) -> Result<(), Error> {
        let mut first_error = None;
        for index in 0..self.backends.len() {
            if let Err(error) = self.anchor_with(index) {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Anchors the latest checkpoint with backend `index` unless it already
    /// holds a receipt for it. `Ok(true)` when a new receipt was stored.
    /// Every attempt's outcome is recorded for `inkan anchors status`.
    pub fn anchor_with(&self, index: usize) -> Result<bool, Error> {
        let Some(backend) = self.backends.get(index) else {
            return Ok(false);
        };
        // Busy: another thread is anchoring with this backend right now
        // (an EVM backend may wait minutes for confirmations); it will
        // record what happens, and the checkpointer must not wait for it.
        let Ok(_one_at_a_time) = self.anchoring[index].try_lock() else {
            return Ok(false);
        };
        let Some(latest) = self.store.latest_checkpoint()? else {
            return Ok(false);
        };
        if self.store.last_anchored(backend.name())? >= Some(latest.size) {
            return Ok(false);
        }
        match backend.anchor(&latest) {
            Ok(receipt) => {
                self.store
                    .store_receipt(latest.size, backend.name(), &receipt)?;
                Ok(true)
            }
            Err(error) => {
                let _ = self
                    .store
                    .record_anchor_failure(backend.name(), &error.to_string());
                Err(error)
            }
        }
    }

    /// Per backend: how far behind the latest checkpoint it is, and its
    /// recorded health.
    pub fn anchor_status(&self) -> Result<Vec<AnchorLag>, Error> {
        let latest = self.store.latest_checkpoint()?.map(|c| c.size);
        let health = self.store.anchor_health()?;
        let now = crate::clock::unix_seconds();
        let mut names: Vec<String> = self.backends.iter().map(|b| b.name().to_owned()).collect();
        for h in &health {
            if !names.contains(&h.backend) {
                names.push(h.backend.clone());
            }
        }
        let mut out = Vec::new();
        for name in names {
            let anchored = self.store.last_anchored(&name)?;
            let (lag_checkpoints, oldest_unanchored) =
                self.store.checkpoints_after(anchored.unwrap_or(0))?;
            let lag_seconds = match oldest_unanchored {
                Some(size) => self
                    .store
                    .checkpoint_time(size)?
                    .map_or(0, |t| (now - t).max(0)),
                None => 0,
            };
            out.push(AnchorLag {
                health: health
                    .iter()
                    .find(|h| h.backend == name)
                    .cloned()
                    .unwrap_or_default(),
                backend: name,
                latest_checkpoint: latest,
                last_anchored: anchored,
                lag_checkpoints,
                lag_seconds,
            });
        }
        Ok(out)
    }

    /// Starts the background threads. One signs a checkpoint every
    /// `interval` (when the tree grew) and anchors it with the `local`
    /// backend; every other backend anchors in a thread of its own, at its
    /// [`AnchorBackend::interval`], retrying failures with backoff. The
    /// threads hold the ledger weakly and stop when it is dropped or when
    /// the returned [`Checkpointer`] is.
    pub fn spawn_checkpointer(
        self: &std::sync::Arc<Self>,
        interval: std::time::Duration,
    ) -> Checkpointer {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::{Duration, Instant};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        // The checkpointer signs checkpoints and anchors them locally.
        let ledger = std::sync::Arc::downgrade(self);
        let flag = stop.clone();
        threads.extend(
            std::thread::Builder::new()
                .name("ledger-checkpointer".into())
                .spawn(move || {
                    while !flag.load(Ordering::Relaxed) {
                        std::thread::sleep(interval);
                        let Some(ledger) = ledger.upgrade() else {
                            break;
                        };
                        if let Err(error) = ledger.checkpoint_only() {
                            tracing::error!(%error, "checkpoint failed");
                        }
                        if let Err(error) = ledger.anchor_with(0) {
                            tracing::error!(%error, "local anchoring failed");
                        }
                    }
                })
                .ok(),
        );
        // Every other backend in its own thread, at its own pace: a slow or
        // unreachable backend delays nothing else. Failures back off
        // exponentially with jitter (to five minutes); the latest checkpoint
        // stays pending in the store until anchored, across restarts.
        for index in 1..self.backends.len() {
            let ledger = std::sync::Arc::downgrade(self);
            let flag = stop.clone();
            let pace = self.backends[index].interval();
            let name = format!("ledger-anchor-{}", self.backends[index].name());
            threads.extend(
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || {
                        let tick = interval.min(Duration::from_secs(1));
                        let mut next_try = Instant::now();
                        let mut backoff = Duration::from_secs(1);
                        while !flag.load(Ordering::Relaxed) {
                            std::thread::sleep(tick);
                            if Instant::now() < next_try {
                                continue;
                            }
                            let Some(ledger) = ledger.upgrade() else { break };
                            match ledger.anchor_with(index) {
                                Ok(true) => {
                                    backoff = Duration::from_secs(1);
                                    next_try = Instant::now() + pace;
                                }
                                Ok(false) => backoff = Duration::from_secs(1),
                                Err(error) => {
                                    let jitter = rand::random::<f64>() * 0.5 + 0.75;
                                    let wait = backoff.mul_f64(jitter);
                                    tracing::warn!(backend = index, retry_in = ?wait, %error, "anchoring failed; will retry");
                                    next_try = Instant::now() + wait;
                                    backoff = (backoff * 2).min(Duration::from_secs(300));
                                }
                            }
                        }
                    })
                    .ok(),
            );
        }
        Checkpointer { stop, threads }
    }

    /// Records, durably, that a write is about to be forwarded (see
    /// [`IntentJournal::open_intent`](crate::store::IntentJournal::open_intent)).
    pub fn open_intent(&self, description: &str) -> Result<u64, Error> {
        self.store
            .open_intent(crate::clock::unix_millis(), description)
    }

    /// Access records due for delivery (see [`crate::store::DeliveryQueue`]).
    pub fn due_deliveries(&self, limit: usize) -> Result<Vec<crate::store::Delivery>, Error> {
        self.store
            .due_deliveries(crate::clock::unix_millis(), limit)
    }

    /// The index record of a version, if sealed.
    pub fn find(&self, key: &VersionKey) -> Result<Option<IndexRecord>, Error> {
        if let Some(record) = self
            .record_cache
            .lock()
            .ok()
            .and_then(|cache| cache.get(key).map(|c| c.record.clone()))
        {
            return Ok(Some(record));
        }
        let found = self.store.find_version(key)?;
        if let Some(record) = &found {
            self.cache_record(record.clone());
        }
        Ok(found)
    }

    fn cache_record(&self, record: IndexRecord) {
        if let Ok(mut cache) = self.record_cache.lock() {
            if cache.len() >= RECORD_CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(
                record.key.clone(),
                CachedRecord {
                    record,
                    verified_bytes: None,
                },
            );
        }
    }

    /// Compares a version as the upstream returns it now with its seal.
    /// `Unsealed` when the ledger has no entry for the key (never written
    /// through the gateway, or not yet backfilled): that is not tampering.
    pub fn check_version(
        &self,
        key: &VersionKey,
        bytes: &[u8],
        format: Format,
    ) -> Result<VersionCheck, Error> {
        let bytes_digest: Hash = sha2::Sha256::digest(bytes).into();
        let remembered = self.record_cache.lock().ok().and_then(|cache| {
            cache
                .get(key)
                .filter(|c| c.verified_bytes == Some(bytes_digest))
                .map(|c| (c.record.leaf_index, c.record.leaf.backfilled))
        });
        if let Some((leaf_index, backfilled)) = remembered {
            return Ok(VersionCheck::Verified {
                leaf_index,
                backfilled,
            });
        }
        let Some(record) = self.find(key)? else {
            return Ok(VersionCheck::Unsealed);
        };
        let check = compare_with_record(&record, Some((bytes, format)));
        if let VersionCheck::Verified { .. } = check {
            if let Ok(mut cache) = self.record_cache.lock() {
                if let Some(cached) = cache.get_mut(key) {
                    cached.verified_bytes = Some(bytes_digest);
                }
            }
        }
        Ok(check)
    }

    /// Like [`Ledger::check_version`] for a version the upstream reports as
    /// a deletion (no resource body).
    pub fn check_deletion(&self, key: &VersionKey) -> Result<VersionCheck, Error> {
        let Some(record) = self.find(key)? else {
            return Ok(VersionCheck::Unsealed);
        };
        Ok(compare_with_record(&record, None))
    }

    /// A proof bundle for a sealed version, against the latest checkpoint.
    pub fn proof_bundle(&self, key: &VersionKey) -> Result<ProofBundle, Error> {
        let record = self
            .store
            .find_version(key)?
            .ok_or_else(|| Error::NotFound(format!("{key} is not sealed")))?;
        let checkpoint = self
            .store
            .checkpoint_covering(record.leaf_index + 1)?
            .ok_or_else(|| {
                Error::NotFound(
                    "no checkpoint covers this version yet; try again in a second".into(),
                )
            })?;
        let latest = self
            .store
            .latest_checkpoint()?
            .unwrap_or_else(|| checkpoint.clone());
        let proof = self
            .lock_tree()?
            .tree
            .inclusion_proof(record.leaf_index, latest.size)?;
        let mut anchors = Vec::new();
        for (backend, receipt) in self.store.receipts(latest.size)? {
            anchors.push(AnchorReceipt {
                backend,
                checkpoint_size: latest.size,
                receipt,
            });
        }
        Ok(ProofBundle::new(
            &record,
            latest.size,
            proof,
            latest.note,
            anchors,
        ))
    }

    /// Recomputes the tree from the stored leaves and checks every leaf's
    /// encoding, every index row, every checkpoint's signature and root,
    /// every receipt's presence and the published tiles. Returns the list
    /// of defects (empty when healthy).
    pub fn fsck(&self) -> Result<Vec<String>, Error> {
        let mut defects = Vec::new();
        let size = self.store.size()?;
        let mut tree = MemoryTree::new();
        let mut next = 0;
        while next < size {
            let end = (next + 65_536).min(size);
            for (offset, data) in self.store.leaves(next, end)?.iter().enumerate() {
                if let Err(e) = Leaf::decode(data) {
                    defects.push(format!("leaf {}: {e}", next + offset as u64));
                }
                tree.push(merkle::leaf_hash(data));
            }
            next = end;
        }
        let verifier = self.signer.verifier();
        for stored in self.store.checkpoints()? {
            match Checkpoint::verify(&stored.note, &verifier) {
                Err(e) => defects.push(format!("checkpoint {}: {e}", stored.size)),
                Ok(cp) if cp.size != stored.size => defects.push(format!(
                    "checkpoint row {} holds size {}",
                    stored.size, cp.size
                )),
                Ok(cp) if cp.size > size => defects.push(format!(
                    "checkpoint {} is beyond the log's {} leaves",
                    cp.size, size
                )),
                Ok(cp) => {
                    let calculated = tree.root(cp.size)?;
                    if calculated != cp.root {
                        defects.push(format!(
                            "checkpoint {}: calculated root {} but the signed root is {}",
                            cp.size,
                            hex::encode(calculated),
                            hex::encode(cp.root)
                        ));
                    }
                }
            }
        }
        for index in 0..size {
            if self.store.find_by_leaf_index(index)?.is_none() {
                defects.push(format!("leaf {index} has no index row"));
            }
        }
        if let Some(latest) = self.store.latest_checkpoint()? {
            defects.extend(tiles::check_tiles(
                &self.tiles_dir(),
                &tree,
                latest.size,
                |s, e| self.store.leaves(s, e),
            )?);
            match std::fs::read_to_string(self.tiles_dir().join("checkpoint")) {
                Ok(published) if published == latest.note => {}
                Ok(_) => {
                    defects.push("tiles/checkpoint is not the latest signed checkpoint".into())
                }
                Err(e) => defects.push(format!("tiles/checkpoint: {e}")),
            }
        }
        Ok(defects)
    }
}

/// Bytes used by the files under `dir` (for stats and benchmarks).
pub fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_usage(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn load_or_create_key(path: &Path, origin: &str) -> Result<NoteSigner, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            refuse_shared_key(path)?;
            NoteSigner::from_private_key_string(&text)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let signer = NoteSigner::generate(origin)?;
            let text = format!("{}\n", signer.to_private_key_string());
            create_private_file(path, text.as_bytes())?;
            Ok(signer)
        }
        Err(e) => Err(io_error(path, e)),
    }
}

/// A signing key that group or others can read has leaked already: refuse.
fn refuse_shared_key(path: &Path) -> Result<(), Error> {
    match shared_secret_file(path, "the log's signing key") {
        Ok(None) => Ok(()),
        Ok(Some(problem)) => Err(Error::Store(problem)),
        Err(e) => Err(io_error(path, e)),
    }
}

/// The one rule for secret files (signing keys here; tokens, passwords and
/// TLS keys in the gateway): group or others may neither read nor write
/// them. `Some(why)` names `what` and the fix when the file breaks it.
pub fn shared_secret_file(path: &Path, what: &str) -> std::io::Result<Option<String>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Ok(Some(format!(
                "{what} {} is readable or writable by group or others (mode {mode:o}); run `chmod 600 {}`",
                path.display(),
                path.display()
            )));
        }
    }
    #[cfg(not(unix))]
    let _ = (path, what);
    Ok(None)
}

/// Creates a file readable by its owner only (0600), failing if it exists.
fn create_private_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| io_error(path, e))?;
    file.write_all(bytes).map_err(|e| io_error(path, e))?;
    file.sync_all().map_err(|e| io_error(path, e))
}

/// The running checkpointer; dropping it stops its threads after their current
/// round.
#[derive(Debug)]
pub struct Checkpointer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// How far one anchor backend is behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorLag {
    /// The backend's name.
    pub backend: String,
    /// Size of the latest signed checkpoint; `None` before the first.
    pub latest_checkpoint: Option<u64>,
    /// The largest checkpoint this backend anchored.
    pub last_anchored: Option<u64>,
    /// Checkpoints signed since (each covered once a later one is anchored).
    pub lag_checkpoints: u64,
    /// Age of the oldest unanchored checkpoint, in seconds.
    pub lag_seconds: i64,
    /// The backend's recorded health (all empty when nothing was recorded).
    pub health: crate::store::AnchorHealth,
}

/// The in-memory tree and the appended leaves waiting for their turn.
#[derive(Debug, Default)]
struct TreeState {
    tree: MemoryTree,
    pending: std::collections::BTreeMap<u64, Hash>,
}

impl TreeState {
    fn drain_pending(&mut self) {
        while let Some(hash) = self.pending.remove(&self.tree.size()) {
            self.tree.push(hash);
        }
    }
}
