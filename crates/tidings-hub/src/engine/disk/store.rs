//! The data dir on disk: its lock, the SQLite database in it, the schema, and what every
//! SQLite failure means for the person running the hub.
//!
//! Layout of a data dir:
//! - `tidings.lock`: held (`flock`, exclusive) by the one hub using the dir;
//! - `tidings.sqlite3` (with `-wal` and `-shm` beside it while open): the events.
//!
//! Tables (`id` is [`EventId::to_be_bytes`], so byte order is id order and a resume point
//! is a B-tree seek):
//! - `events(id, topics, event_type, data, retry_ms)`: the global log;
//! - `topic_events(tid, id, size)`: per-topic index, primary key `(tid, id)`;
//! - `topics(tid, name, last_id, published, retained, retained_bytes, trimmed_through)`;
//! - `meta(key, value)`: `format`, `origin`, `last_id`, `trimmed_through`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension};

use tidings::EventId;

use crate::error::{Error, ErrorKind};

/// The database file in a data dir.
pub(super) const DB_FILE: &str = "tidings.sqlite3";
/// SQLite's write-ahead log beside it (the writer fsyncs it itself, see `writer.rs`).
pub(super) const WAL_FILE: &str = "tidings.sqlite3-wal";
/// SQLite's shared-memory index of the write-ahead log.
const SHM_FILE: &str = "tidings.sqlite3-shm";
/// The lock file in a data dir.
pub(super) const LOCK_FILE: &str = "tidings.lock";
/// The on-disk format this build writes and reads.
const FORMAT: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE events (
    id         BLOB PRIMARY KEY,
    topics     TEXT NOT NULL,
    event_type TEXT,
    data       TEXT NOT NULL,
    retry_ms   INTEGER
) WITHOUT ROWID;
CREATE TABLE topics (
    tid             INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    last_id         BLOB,
    published       INTEGER NOT NULL,
    retained        INTEGER NOT NULL,
    retained_bytes  INTEGER NOT NULL,
    trimmed_through BLOB NOT NULL
);
CREATE TABLE topic_events (
    tid  INTEGER NOT NULL,
    id   BLOB NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (tid, id)
) WITHOUT ROWID;
";

/// A locked data dir: the lock is held for as long as this value lives.
#[derive(Debug)]
pub(super) struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates the dir if it does not exist and takes its lock.
    pub(super) fn lock(path: &Path) -> Result<DataDir, Error> {
        if path.exists() && !path.is_dir() {
            return Err(Error::new(
                ErrorKind::Engine,
                format!(
                    "the data dir {} is a file, not a directory; point --data-dir at a directory (it is created if missing)",
                    path.display()
                ),
            ));
        }
        std::fs::create_dir_all(path).map_err(|e| {
            // The directory to fix is the nearest one that exists.
            let existing = path.ancestors().find(|a| a.is_dir()).unwrap_or(path);
            open_error(
                existing,
                format!("cannot create the data dir {}", path.display()),
                e,
            )
        })?;
        let lock_path = path.join(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                open_error(
                    path,
                    format!("cannot open the lock file {}", lock_path.display()),
                    e,
                )
            })?;
        take_lock(path, &lock_path, &lock)?;
        // SQLite opens a file it may not write read-only without a word, and the first
        // publish would fail: say so now.
        for name in [DB_FILE, WAL_FILE, SHM_FILE] {
            let file = path.join(name);
            if !file.exists() {
                continue;
            }
            if let Err(e) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&file)
            {
                return Err(Error::with_source(
                    ErrorKind::Engine,
                    format!(
                        "the database file {} cannot be written; make it writable by the hub's user, or point --data-dir at another directory",
                        file.display()
                    ),
                    e,
                ));
            }
        }
        Ok(DataDir {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    /// The dir.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The database file.
    pub(super) fn db_path(&self) -> PathBuf {
        self.path.join(DB_FILE)
    }
}

/// Takes an exclusive `flock` on the lock file, without waiting.
#[cfg(unix)]
fn take_lock(dir: &Path, lock_path: &Path, lock: &File) -> Result<(), Error> {
    match rustix::fs::flock(lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(Error::new(
                    ErrorKind::Engine,
                    format!(
                        "the data dir {} is in use by another tidings hub ({} is locked); stop that hub, or give this one another --data-dir",
                        dir.display(),
                        lock_path.display()
                    ),
                ))
            }
            Err(e) => {
                return Err(Error::with_source(
                    ErrorKind::Engine,
                    format!("cannot lock {}", lock_path.display()),
                    std::io::Error::from(e),
                ))
            }
        }
    Ok(())
}

/// No lock where `flock` is not available: one hub per data dir is up to the operator.
#[cfg(not(unix))]
fn take_lock(_dir: &Path, _lock_path: &Path, _lock: &File) -> Result<(), Error> {
    Ok(())
}

/// What the database says at open: where ids start and what has been trimmed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Meta {
    /// Below every id this data dir ever held (its creation time).
    pub(super) origin: EventId,
    /// The newest id ever stored.
    pub(super) last_id: EventId,
    /// The newest id trimmed from any topic (or the origin).
    pub(super) trimmed_through: EventId,
}

/// Opens (creating on first use) the database of `dir` for writing, checks that it is a
/// Tidings database of a known format, and reads its [`Meta`]. `now_ms` is the origin of
/// a new database.
pub(super) fn open_writer(dir: &DataDir, now_ms: u64) -> Result<(Connection, Meta), Error> {
    let db_path = dir.db_path();
    let conn = Connection::open_with_flags(
        &db_path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_open_error(dir.path(), &db_path, e))?;
    let opened = (|| -> rusqlite::Result<Option<Meta>> {
        // Reading the header first: a file that is not a database fails here, before
        // anything is written to it.
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        // Someone else's database (or a newer format) is refused before anything, even
        // the journal mode, is changed in it.
        if tables > 0 && read_meta(&conn)?.is_none() {
            return Ok(None);
        }
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(rusqlite::Error::InvalidQuery);
        }
        // NORMAL: a commit writes the WAL without fsyncing it. The writer fsyncs the WAL
        // itself after each commit, once the events are on their way to subscribers and
        // before any publisher is answered (see `writer.rs`): acknowledged is as durable
        // as with FULL, and delivery does not wait for the disk.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "cache_size", -16_384)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        if tables == 0 {
            let origin = EventId::new(now_ms, 0);
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(SCHEMA)?;
            let mut put = tx.prepare("INSERT INTO meta (key, value) VALUES (?1, ?2)")?;
            put.execute(rusqlite::params!["format", FORMAT])?;
            for key in ["origin", "last_id", "trimmed_through"] {
                put.execute(rusqlite::params![key, &origin.to_be_bytes()[..]])?;
            }
            drop(put);
            tx.commit()?;
        }
        read_meta(&conn)
    })();
    match opened {
        Ok(Some(meta)) => Ok((conn, meta)),
        Ok(None) => Err(not_ours(dir.path(), &db_path)),
        Err(rusqlite::Error::InvalidQuery) => Err(Error::new(
            ErrorKind::Engine,
            format!(
                "the database {} cannot use write-ahead logging (is the data dir on a network file system?); put --data-dir on a local disk",
                db_path.display()
            ),
        )),
        Err(e) => Err(sql_open_error(dir.path(), &db_path, e)),
    }
}

/// Opens a read connection to the database of `dir` (which [`open_writer`] has set up).
pub(super) fn open_reader(dir: &DataDir) -> Result<Connection, Error> {
    let db_path = dir.db_path();
    let conn = Connection::open_with_flags(
        &db_path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_open_error(dir.path(), &db_path, e))?;
    (|| -> rusqlite::Result<()> {
        conn.pragma_update(None, "query_only", true)?;
        conn.pragma_update(None, "cache_size", -8_192)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(())
    })()
    .map_err(|e| sql_open_error(dir.path(), &db_path, e))?;
    Ok(conn)
}

/// Reads `meta`; `None` when the database is not a Tidings database of this format.
fn read_meta(conn: &Connection) -> rusqlite::Result<Option<Meta>> {
    let has_meta: bool = conn.query_row(
        "SELECT count(*) = 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
        [],
        |r| r.get(0),
    )?;
    if !has_meta {
        return Ok(None);
    }
    let format: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| {
            r.get(0)
        })
        .optional()?;
    if format != Some(FORMAT) {
        return Ok(None);
    }
    let id = |key: &str| -> rusqlite::Result<Option<EventId>> {
        let blob: Option<Vec<u8>> = conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?;
        Ok(blob.and_then(|b| id_from_blob(&b)))
    };
    let (Some(origin), Some(last_id), Some(trimmed_through)) =
        (id("origin")?, id("last_id")?, id("trimmed_through")?)
    else {
        return Ok(None);
    };
    // The newest event on disk wins over `last_id` should they ever disagree.
    let newest: Option<Vec<u8>> = conn
        .query_row("SELECT max(id) FROM events", [], |r| r.get(0))
        .optional()?
        .flatten();
    let newest = newest.and_then(|b| id_from_blob(&b));
    Ok(Some(Meta {
        origin,
        last_id: last_id.max(newest.unwrap_or(EventId::ZERO)),
        trimmed_through,
    }))
}

/// An id from a 16-byte blob; `None` for any other length.
pub(super) fn id_from_blob(blob: &[u8]) -> Option<EventId> {
    <[u8; 16]>::try_from(blob).ok().map(EventId::from_be_bytes)
}

/// A database that opened but is not a Tidings database this build can use.
fn not_ours(dir: &Path, db_path: &Path) -> Error {
    Error::new(
        ErrorKind::Engine,
        format!(
            "{} is not a Tidings database of format {FORMAT} (it has other tables, or a newer format); nothing was changed. Point --data-dir at another directory, or move {} aside if it is yours to replace",
            db_path.display(),
            dir.display()
        ),
    )
}

/// What a failure to open means, in words that say what to do.
pub(super) fn sql_open_error(dir: &Path, db_path: &Path, err: rusqlite::Error) -> Error {
    let code = err.sqlite_error_code();
    let message = match code {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => format!(
            "the data dir {} holds a database that is corrupt or not a database ({}); nothing was changed. Restore it from a backup, or move it aside to start with empty history, or point --data-dir at another directory",
            dir.display(),
            db_path.display()
        ),
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied | ErrorCode::CannotOpen) => format!(
            "cannot open {} for writing; make the data dir {} writable (and on a mounted, read-write file system), or point --data-dir at another directory",
            db_path.display(),
            dir.display()
        ),
        Some(ErrorCode::DiskFull) => format!(
            "the disk holding the data dir {} is full; free some space and start again",
            dir.display()
        ),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => format!(
            "{} is locked by another program; stop it, or point --data-dir at another directory",
            db_path.display()
        ),
        _ => format!("cannot open the database {}", db_path.display()),
    };
    Error::with_source(ErrorKind::Engine, message, err)
}

/// An I/O failure while opening the data dir.
fn open_error(dir: &Path, message: String, err: std::io::Error) -> Error {
    let hint = match err.kind() {
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => format!(
            "; make {} writable, or point --data-dir at another directory",
            dir.display()
        ),
        _ => String::new(),
    };
    Error::with_source(ErrorKind::Engine, format!("{message}{hint}"), err)
}

/// What a failed write means for a publisher: nothing was stored, and why.
pub(super) fn write_error(dir: &Path, err: rusqlite::Error) -> Error {
    let why = match err.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => format!(
            "the disk holding the data dir {} is full; free some space and publish again",
            dir.display()
        ),
        Some(ErrorCode::ReadOnly) => format!(
            "the data dir {} or a file in it has become read-only; make them writable and publish again",
            dir.display()
        ),
        Some(ErrorCode::SystemIoFailure) => format!(
            "the disk holding the data dir {} reported an I/O error; check the disk, then publish again",
            dir.display()
        ),
        Some(ErrorCode::DatabaseCorrupt) => format!(
            "the database in {} is corrupt; stop the hub and restore the data dir from a backup",
            dir.display()
        ),
        _ => format!("writing to the data dir {} failed", dir.display()),
    };
    Error::with_source(
        ErrorKind::Engine,
        format!("the event was not stored, so it was not published: {why}"),
        err,
    )
}

/// What a failed read means.
pub(super) fn read_error(dir: &Path, err: rusqlite::Error) -> Error {
    Error::with_source(
        ErrorKind::Engine,
        format!("reading history from the data dir {} failed", dir.display()),
        err,
    )
}
