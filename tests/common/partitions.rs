//! A published partitioned table for the partition-tree tests (DESIGN.md rule 8):
//! `public.m`, list-partitioned by region into `m_eu` and `m_us`, 1,000 rows, published
//! through its root.

use pgch::testkit::postgres::PgCluster;

use super::{guide_source, GuideSource, PublicationShape};

/// Its rows, summed in Postgres.
pub const PG_SUMS: &str = "SELECT count(*), sum(id), sum(v), count(DISTINCT region) FROM public.m";

/// The same sums of its ClickHouse table in database `db`.
pub fn ch_sums(db: &str) -> String {
    format!(
        "SELECT count(), sum(id), sum(v), uniqExact(region) FROM `{db}`.`public_m` FINAL WHERE _is_deleted = 0"
    )
}

/// The guide's source with `public.m` added to its publication; `None` on Postgres 12,
/// which cannot publish partitioned tables (no `publish_via_partition_root`).
pub fn partitioned_source(pg: &PgCluster) -> Option<GuideSource> {
    if pg.version_num < 130_000 {
        eprintln!("skipped: Postgres 12 cannot publish partitioned tables (no publish_via_partition_root)");
        return None;
    }
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "CREATE TABLE public.m (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
         CREATE TABLE public.m_eu PARTITION OF public.m FOR VALUES IN ('eu');
         CREATE TABLE public.m_us PARTITION OF public.m FOR VALUES IN ('us');
         INSERT INTO public.m SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g FROM generate_series(1, 1000) g;
         ALTER PUBLICATION clickpipes SET (publish_via_partition_root = true);
         ALTER PUBLICATION clickpipes ADD TABLE public.m;",
    )
    .expect("partitioned table");
    Some(src)
}
