//! The PostgreSQL the shared ledger (issue 14) will run on, started by the
//! project's own script. These tests pin what the design relies on — a
//! cluster that survives a crash with its committed rows, row locks on a
//! coordination row that make a second sequencer wait or fail fast,
//! advisory locks that exclude across sessions, unique constraints that
//! make a duplicate append fail instead of forking the log — so that a
//! change of server or settings shows up here, not as a forked log later.

use std::process::Command;
use std::time::{Duration, Instant};

use inkan_e2e::Postgres;

#[test]
fn a_cluster_of_its_own_keeps_committed_rows_across_a_crash_and_a_restart() {
    let pg = Postgres::start();
    assert!(
        pg.url.starts_with("postgres://inkan@127.0.0.1:"),
        "{}",
        pg.url
    );
    let version: u32 = pg.sql("SHOW server_version_num").parse().unwrap();
    assert!(version >= 150_000, "PostgreSQL 15 or later: {version}");
    assert_eq!(pg.sql("SHOW listen_addresses"), "127.0.0.1");
    assert_eq!(pg.sql("SHOW fsync"), "on");
    pg.sql("CREATE TABLE leaves (leaf_index BIGINT PRIMARY KEY, data BYTEA NOT NULL)");
    pg.sql("INSERT INTO leaves SELECT i, '\\x01'::bytea FROM generate_series(0, 999) i");
    // An uncommitted transaction is lost in the crash; the committed rows
    // are not.
    let mut open = Command::new("psql")
        .arg(&pg.url)
        .args([
            "-X",
            "-q",
            "-c",
            "BEGIN; INSERT INTO leaves VALUES (1000, '\\x02'); SELECT pg_sleep(30)",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    pg.stop("immediate");
    let _ = open.wait();
    pg.start_again();
    assert_eq!(
        pg.sql("SELECT count(*), max(leaf_index) FROM leaves"),
        "1000|999"
    );
    pg.stop("fast");
    pg.start_again();
    assert_eq!(pg.sql("SELECT count(*) FROM leaves"), "1000");
}

#[test]
fn coordination_rows_advisory_locks_and_unique_keys_exclude_a_second_writer() {
    let pg = Postgres::start();
    pg.sql(
        "CREATE TABLE sequencer (id INT PRIMARY KEY, next_index BIGINT NOT NULL);
         INSERT INTO sequencer VALUES (0, 0);
         CREATE TABLE versions (resource_type TEXT, id TEXT, version_id TEXT, leaf_index BIGINT NOT NULL UNIQUE,
                                PRIMARY KEY (resource_type, id, version_id))",
    );
    // Session A holds the coordination row (and an advisory lock) for 2 s.
    let holder = Command::new("psql")
        .arg(&pg.url)
        .args([
            "-X",
            "-q",
            "-c",
            "BEGIN; SELECT next_index FROM sequencer WHERE id = 0 FOR UPDATE; SELECT pg_advisory_xact_lock(6962); SELECT pg_sleep(2); UPDATE sequencer SET next_index = next_index + 1 WHERE id = 0; COMMIT",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // B cannot take the row without waiting, nor the advisory lock.
    let nowait = pg.psql("SELECT next_index FROM sequencer WHERE id = 0 FOR UPDATE NOWAIT");
    assert!(
        !nowait.status.success(),
        "FOR UPDATE NOWAIT must fail while A holds the row"
    );
    assert!(String::from_utf8_lossy(&nowait.stderr).contains("could not obtain lock"));
    assert_eq!(pg.sql("SELECT pg_try_advisory_lock(6962)"), "f");
    // B waits for A, then sees A's increment (no lost update).
    let started = Instant::now();
    let next = pg.sql("BEGIN; SELECT next_index FROM sequencer WHERE id = 0 FOR UPDATE; COMMIT");
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "B waited for A"
    );
    assert_eq!(next, "1");
    assert!(holder.wait_with_output().unwrap().status.success());
    // A version sealed twice, or a leaf index taken twice, fails.
    pg.sql("INSERT INTO versions VALUES ('Patient', 'p1', '1', 0)");
    let twice = pg.psql("INSERT INTO versions VALUES ('Patient', 'p1', '1', 1)");
    assert!(!twice.status.success());
    let same_leaf = pg.psql("INSERT INTO versions VALUES ('Patient', 'p2', '1', 0)");
    assert!(!same_leaf.status.success());
    assert_eq!(
        pg.sql("INSERT INTO versions VALUES ('Patient', 'p1', '1', 5) ON CONFLICT DO NOTHING RETURNING leaf_index"),
        "",
        "ON CONFLICT DO NOTHING: the first seal stands"
    );
}
