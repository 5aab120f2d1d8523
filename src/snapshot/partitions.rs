//! How a table is cut into block (CTID) ranges for the copy: pure arithmetic, so the
//! copy, `pgch status` and the benches agree on the partitions of a table.

use super::copy::BlockRange;

/// Partitions per worker when pgch sizes them: enough that every worker stays busy and
/// the last one finishes soon after the others, few enough that each COPY is long.
pub const PARTITIONS_PER_WORKER: u64 = 4;
/// The smallest partition pgch makes by itself (8 MB of heap): smaller tables are one
/// partition, and many small tables share the workers instead.
pub const MIN_AUTO_PARTITION_BLOCKS: u64 = 1024;

/// Blocks per partition for a table of `blocks` copied by `workers`: a table of a few
/// hundred MB is copied by every worker, several partitions each.
pub fn auto_partition_blocks(blocks: u64, workers: usize) -> u64 {
    let parts = (workers.max(1) as u64) * PARTITIONS_PER_WORKER;
    blocks.div_ceil(parts).max(MIN_AUTO_PARTITION_BLOCKS)
}

/// Block ranges for a table of `blocks` pages; one open range (or none: the whole table)
/// before Postgres 14, where a CTID range reads the whole table anyway.
pub fn partition(blocks: u64, per_partition: u64, server_version: u32) -> Vec<Option<BlockRange>> {
    if server_version < 140000 || blocks <= per_partition {
        return vec![None];
    }
    let per = per_partition.max(1);
    let mut out = Vec::new();
    let mut start = 0;
    while start + per < blocks {
        out.push(Some(BlockRange {
            start,
            end: Some(start + per),
        }));
        start += per;
    }
    // The last range is open: rows in pages added since planning are copied too.
    out.push(Some(BlockRange { start, end: None }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_cover_the_table_and_leave_the_end_open() {
        assert_eq!(partition(1000, 300, 150000).len(), 4);
        let p = partition(1000, 300, 150000);
        assert_eq!(
            p[0],
            Some(BlockRange {
                start: 0,
                end: Some(300)
            })
        );
        assert_eq!(
            p[3],
            Some(BlockRange {
                start: 900,
                end: None
            })
        );
        assert_eq!(
            partition(1000, 300, 130000),
            vec![None],
            "no TID range scans before 14"
        );
        assert_eq!(partition(10, 300, 150000), vec![None]);
    }
}
