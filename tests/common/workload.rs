//! A randomized change workload over tables keyed in every way pgch supports, and a
//! row-for-row comparison of Postgres with ClickHouse's `FINAL` view.
//!
//! Tables: a composite primary key (`w_comp`), a keyless `REPLICA IDENTITY FULL` table
//! that holds equal rows (`w_full`: copies inserted, one copy deleted, all copies
//! updated; compared through its `_current` view, copies counted), a table keyed by `REPLICA IDENTITY USING INDEX`
//! on a column that is not its primary key (`w_idx`), and a table whose `body` lives out
//! of line (`w_toast`, `SET STORAGE EXTERNAL`, 4 kB values) and is often left unchanged
//! by updates. Transactions mix inserts, updates, deletes and key updates; some are large.
//! Keys never collide: new ids come from a counter, key moves use offsets never used
//! before, so every transaction commits.

use pgch::testkit::clickhouse::ClickHouse;
use pgch::testkit::postgres::PgCluster;

/// The tables, their first rows, and their publication membership.
pub const SCHEMA: &str = "
CREATE TABLE public.w_comp (region text, id int, v int NOT NULL, note text, PRIMARY KEY (region, id));
CREATE TABLE public.w_full (a bigint NOT NULL, b text);
ALTER TABLE public.w_full REPLICA IDENTITY FULL;
CREATE TABLE public.w_idx (id int PRIMARY KEY, serial text NOT NULL, v int);
CREATE UNIQUE INDEX w_idx_serial ON public.w_idx (serial);
ALTER TABLE public.w_idx REPLICA IDENTITY USING INDEX w_idx_serial;
CREATE TABLE public.w_toast (id int PRIMARY KEY, v int, body text);
ALTER TABLE public.w_toast ALTER COLUMN body SET STORAGE EXTERNAL;
INSERT INTO public.w_comp SELECT 'eu', g, g % 100, 'n' || g FROM generate_series(1, 3000) g;
INSERT INTO public.w_full SELECT g, 'b' || g FROM generate_series(1, 500) g;
INSERT INTO public.w_full SELECT g, 'b' || g FROM generate_series(1, 500, 7) g;
INSERT INTO public.w_full SELECT 0, NULL FROM generate_series(1, 3);
INSERT INTO public.w_idx SELECT g, 'S' || g, g FROM generate_series(1, 1000) g;
INSERT INTO public.w_toast SELECT g, g, (SELECT string_agg(md5(g::text || '-' || x::text), '') FROM generate_series(1, 128) x) FROM generate_series(1, 60) g;
ALTER PUBLICATION clickpipes ADD TABLE public.w_comp, public.w_full, public.w_idx, public.w_toast;
";

/// A small deterministic generator (xorshift64*), seeded so a failure can be replayed.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is mapped to a fixed non-zero state).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// True with probability `percent` %.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Generates the transactions, each one SQL script.
pub struct Workload {
    rng: Rng,
    next_comp: u64,
    next_full: u64,
    next_idx: u64,
    next_toast: u64,
    /// Suffixes and region names used so far (any statement may take the next one).
    moves: u64,
    /// Key moves of `w_comp` and of `w_toast`, each by a fresh offset.
    comp_moves: u64,
    toast_moves: u64,
}

impl Workload {
    /// A workload continuing after [`SCHEMA`]'s rows.
    pub fn new(seed: u64) -> Workload {
        Workload {
            rng: Rng::new(seed),
            next_comp: 3001,
            next_full: 501,
            next_idx: 1001,
            next_toast: 61,
            moves: 0,
            comp_moves: 0,
            toast_moves: 0,
        }
    }

    /// One transaction of 1–6 statements; about one in twenty is large.
    pub fn transaction(&mut self) -> String {
        let mut sql = String::from("BEGIN;\n");
        if self.rng.chance(5) {
            sql.push_str(&self.large());
        } else {
            for _ in 0..self.rng.range(1, 6) {
                sql.push_str(&self.statement());
                sql.push('\n');
            }
        }
        sql.push_str("COMMIT;\n");
        sql
    }

    fn large(&mut self) -> String {
        if self.rng.chance(50) {
            let n = self.rng.range(5_000, 20_000);
            let from = self.next_comp;
            self.next_comp += n;
            format!(
                "INSERT INTO public.w_comp SELECT 'bulk', g, g % 1000, 'big' FROM generate_series({from}, {}) g;\n",
                from + n - 1
            )
        } else {
            "UPDATE public.w_comp SET v = v + 1;\nUPDATE public.w_toast SET v = v + 1;\n".into()
        }
    }

    fn statement(&mut self) -> String {
        let m = self.rng.range(7, 60);
        let r = self.rng.range(0, m - 1);
        match self.rng.range(0, 15) {
            0 | 1 => {
                let n = self.rng.range(1, 50);
                let from = self.next_comp;
                self.next_comp += n;
                let region = ["eu", "us", "ap", "sa"][self.rng.range(0, 3) as usize];
                format!("INSERT INTO public.w_comp SELECT '{region}', g, g % 100, 'n' || g FROM generate_series({from}, {}) g;", from + n - 1)
            }
            2 => format!("UPDATE public.w_comp SET v = v + {}, note = left(note || 'u', 30) WHERE id % {m} = {r};", self.rng.range(1, 9)),
            3 => {
                self.moves += 1;
                format!("UPDATE public.w_comp SET region = 'moved{}' WHERE id % {m} = {r} AND region NOT LIKE 'moved%';", self.moves)
            }
            4 => {
                // New ids stay below 1,000,000; each move adds a fresh multiple of it,
                // so moved keys never collide (and stay within int).
                self.comp_moves += 1;
                format!("UPDATE public.w_comp SET id = id + {} WHERE id % {} = {r} AND id < 1000000;", self.comp_moves * 1_000_000, m + 40)
            }
            5 => format!("DELETE FROM public.w_comp WHERE id % {} = {r};", m + 60),
            6 => match self.rng.range(0, 2) {
                0 => {
                    let n = self.rng.range(1, 20);
                    let from = self.next_full;
                    self.next_full += n;
                    format!("INSERT INTO public.w_full SELECT g, 'b' || g FROM generate_series({from}, {}) g;", from + n - 1)
                }
                // Copies of rows already there, several in one statement.
                1 => format!("INSERT INTO public.w_full SELECT a, b FROM public.w_full WHERE a % {m} = {r} LIMIT 5; INSERT INTO public.w_full SELECT a, b FROM public.w_full WHERE a % {m} = {r} LIMIT 2;"),
                // One copy of a row goes, its equals stay.
                _ => format!("DELETE FROM public.w_full WHERE ctid = (SELECT ctid FROM public.w_full WHERE a % {m} = {r} LIMIT 1);"),
            },
            7 => format!("UPDATE public.w_full SET b = left(b || '.', 30) WHERE a % {m} = {r};"),
            8 => match self.rng.range(0, 1) {
                0 => format!("DELETE FROM public.w_full WHERE a % {} = {r};", m + 30),
                // One copy changes, its equals stay as they were.
                _ => format!("UPDATE public.w_full SET b = 'one' WHERE ctid = (SELECT ctid FROM public.w_full WHERE a % {m} = {r} LIMIT 1);"),
            },
            9 => {
                let n = self.rng.range(1, 20);
                let from = self.next_idx;
                self.next_idx += n;
                format!("INSERT INTO public.w_idx SELECT g, 'N' || g, g FROM generate_series({from}, {}) g;", from + n - 1)
            }
            10 => {
                self.moves += 1;
                format!("UPDATE public.w_idx SET serial = serial || '.{}' WHERE id % {m} = {r};", self.moves)
            }
            11 => format!("UPDATE public.w_idx SET v = v + 1, id = -id WHERE id % {m} = {r} AND id > 0;"),
            12 => format!("DELETE FROM public.w_idx WHERE id % {} = {r};", m + 30),
            13 => format!("UPDATE public.w_toast SET v = v + 1 WHERE id % {} = {};", m.min(9), r % m.min(9)),
            14 => {
                let id = self.rng.range(1, self.next_toast);
                format!("UPDATE public.w_toast SET body = (SELECT string_agg(md5(x::text || '{}'), '') FROM generate_series(1, 128) x) WHERE id = {id};", self.rng.next() % 100_000)
            }
            _ => {
                if self.rng.chance(50) {
                    let id = self.next_toast;
                    self.next_toast += 1;
                    format!("INSERT INTO public.w_toast SELECT {id}, 0, (SELECT string_agg(md5(x::text || '{id}'), '') FROM generate_series(1, 128) x);")
                } else {
                    self.toast_moves += 1;
                    format!(
                        "DELETE FROM public.w_toast WHERE id = {}; UPDATE public.w_toast SET id = id + {} WHERE id % 17 = {} AND id < 100000;",
                        self.rng.range(1, self.next_toast),
                        self.toast_moves * 100_000,
                        r % 17
                    )
                }
            }
        }
    }
}

/// (table, Postgres query, ClickHouse query) giving the same canonical rows.
pub fn row_queries(db: &str) -> Vec<(&'static str, String, String)> {
    let t = |name: &str| format!("`{db}`.`public_{name}` FINAL WHERE _is_deleted = 0");
    vec![
        (
            "w_comp",
            "SELECT region, id, v, coalesce(note, '') FROM public.w_comp".into(),
            format!("SELECT region, id, v, ifNull(note, '') FROM {}", t("w_comp")),
        ),
        (
            "w_full",
            "SELECT a, coalesce(b, '') FROM public.w_full".into(),
            format!("SELECT a, ifNull(b, '') FROM `{db}`.`public_w_full_current`"),
        ),
        (
            "w_idx",
            "SELECT id, serial, coalesce(v::text, '') FROM public.w_idx".into(),
            format!(
                "SELECT id, serial, ifNull(toString(v), '') FROM {}",
                t("w_idx")
            ),
        ),
        (
            "w_toast",
            "SELECT id, coalesce(v::text, ''), coalesce(md5(body), ''), length(body) FROM public.w_toast".into(),
            format!(
                "SELECT id, ifNull(toString(v), ''), lower(hex(MD5(ifNull(body, '')))), lengthUTF8(ifNull(body, '')) FROM {}",
                t("w_toast")
            ),
        ),
    ]
}

fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.replace('|', "\t"))
        .collect();
    lines.sort();
    lines
}

/// The tables that differ, each with a few differing rows; empty when all are equal.
pub async fn differences(pg: &PgCluster, pg_db: &str, ch: &ClickHouse, ch_db: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (table, pq, cq) in row_queries(ch_db) {
        let p = sorted_lines(&pg.sql(pg_db, &pq).unwrap_or_default());
        let c = sorted_lines(&ch.query(&cq).await.unwrap_or_default());
        if p != c {
            let only_pg: Vec<&String> = p.iter().filter(|l| !c.contains(l)).take(3).collect();
            let only_ch: Vec<&String> = c.iter().filter(|l| !p.contains(l)).take(3).collect();
            out.push(format!(
                "{table}: postgres {} rows, clickhouse {} rows; only in postgres {only_pg:?}; only in clickhouse {only_ch:?}",
                p.len(),
                c.len()
            ));
        }
    }
    out
}

/// Keys that appear more than once under `FINAL` (deleted rows included): must be 0.
/// For the keyless table, the names of its changes (a replay adding a copy twice).
pub async fn duplicate_keys(ch: &ClickHouse, ch_db: &str) -> u64 {
    let checks = [
        ("w_comp", "region, id"),
        ("w_full", "_version, _seq"),
        ("w_idx", "serial"),
        ("w_toast", "id"),
    ];
    let mut total = 0;
    for (table, key) in checks {
        let n = ch
            .query(&format!(
                "SELECT count() - uniqExact({key}) FROM `{ch_db}`.`public_{table}` FINAL"
            ))
            .await
            .unwrap_or_default();
        total += n.trim().parse::<u64>().unwrap_or(u64::MAX / 8);
    }
    total
}

/// Runs `n` workload transactions on `pg`.
pub fn run_transactions(pg: &PgCluster, db: &str, w: &mut Workload, n: usize) {
    for _ in 0..n {
        pg.sql(db, &w.transaction()).expect("workload transaction");
    }
}

/// Waits (up to 3 minutes) until ClickHouse equals `pg`; the pgch log is in the failure.
pub async fn wait_equal(pg: &PgCluster, db: &str, ch_db: &str, log: &std::path::Path) {
    wait_equal_within(pg, db, ch_db, std::time::Duration::from_secs(180), log).await;
}

/// [`wait_equal`] with its own limit, for runs that take longer or must be quick.
pub async fn wait_equal_within(
    pg: &PgCluster,
    db: &str,
    ch_db: &str,
    limit: std::time::Duration,
    log: &std::path::Path,
) {
    let ch = ClickHouse::shared();
    let deadline = std::time::Instant::now() + limit;
    loop {
        let diffs = differences(pg, db, ch, ch_db).await;
        if diffs.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not equal after {limit:?}:\n{}\n--- pgch log ---\n{}",
            diffs.join("\n"),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// `_pgch_state` rows that record copies, with when they were last written, sorted: a
/// copy made again would rewrite them.
pub async fn copy_records(ch_db: &str) -> String {
    ClickHouse::shared()
        .query(&format!(
            "SELECT key, argMax(value, updated_at), max(updated_at) FROM {ch_db}._pgch_state \
             WHERE key LIKE 'complete/%' OR key LIKE 'copy/%' OR key LIKE 'copied/%' \
             GROUP BY key ORDER BY key FORMAT TSV"
        ))
        .await
        .unwrap_or_default()
}
