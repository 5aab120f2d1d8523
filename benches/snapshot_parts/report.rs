//! The snapshot bench's table of runs and its summary.

use super::*;

pub(super) fn print_header() {
    println!(
        "{:>3}  {:<10} {:>8} {:>10} {:>7} {:>6} {:>9} {:>7} {:>9} {:>8} {:>9} {:>7} {:>5}",
        "run",
        "kind",
        "seconds",
        "rows/s",
        "user s",
        "sys s",
        "s/Mrow",
        "RSS Mi",
        "pg cpu s",
        "ch cpu s",
        "ch RSS Mi",
        "other s",
        "load"
    );
}

pub(super) fn print_row(r: &Run, rows: u64) {
    let secs = r.m.wall.as_secs_f64();
    let cpu = (r.m.user + r.m.sys).as_secs_f64();
    let opt =
        |d: Option<Duration>| d.map_or("n/a".to_string(), |d| format!("{:.2}", d.as_secs_f64()));
    println!(
        "{:>3}  {:<10} {:>8.3} {:>10.0} {:>7.2} {:>6.2} {:>9.3} {:>7.1} {:>9} {:>8} {:>9} {:>7} {:>5.2}{}",
        r.round,
        r.kind.name(),
        secs,
        rows as f64 / secs,
        r.m.user.as_secs_f64(),
        r.m.sys.as_secs_f64(),
        cpu / (rows as f64 / 1e6),
        r.m.max_rss_kib as f64 / 1024.0,
        opt(r.m.backend_cpu),
        opt(r.m.front_cpu),
        r.m.front_peak_rss_kib
            .map_or("n/a".to_string(), |k| format!("{:.0}", k as f64 / 1024.0)),
        r.m.other_cpu()
            .map_or("n/a".to_string(), |c| format!("{c:.2}")),
        r.m.load_at_start,
        r.pgch.map_or(String::new(), |l| format!(
            "   ({} partitions, pgch's timer {:.1} s)",
            l.partitions, l.seconds
        )) + if r.m.disturbed() { "  DISTURBED" } else { "" }
    );
}

pub(super) fn summarize(runs: &[Run], rows: u64, default_workers: usize) {
    let mrows = rows as f64 / 1e6;
    let mut kinds: Vec<Kind> = Vec::new();
    for r in runs {
        if !kinds.contains(&r.kind) {
            kinds.push(r.kind);
        }
    }
    let of = |kind: Kind| runs.iter().filter(move |r| r.kind == kind);
    let rate = |kind: Kind| {
        median(
            of(kind)
                .map(|r| rows as f64 / r.m.wall.as_secs_f64())
                .collect(),
        )
    };
    let cpu = |kind: Kind| {
        median(
            of(kind)
                .map(|r| (r.m.user + r.m.sys).as_secs_f64())
                .collect(),
        )
    };
    let peak = |kind: Kind| of(kind).map(|r| r.m.max_rss_kib).max().unwrap_or(0) as f64 / 1024.0;
    let med_opt = |kind: Kind, f: fn(&Measured) -> Option<Duration>| {
        let v: Vec<f64> = of(kind)
            .filter_map(|r| f(&r.m))
            .map(|d| d.as_secs_f64())
            .collect();
        if v.is_empty() {
            "n/a".to_string()
        } else {
            format!("{:.2} s", median(v))
        }
    };
    println!();
    println!("medians of {RUNS} ({rows} rows):");
    for &kind in &kinds {
        println!(
            "  {:<10} {:>9.0} rows/s  {:>7.3} s   client CPU {:.2} s ({:.3} s/Mrow), peak RSS \
             {:.1} MiB (max)   postgres backends {}   clickhouse front {}   other {}",
            kind.name(),
            rate(kind),
            median(of(kind).map(|r| r.m.wall.as_secs_f64()).collect()),
            cpu(kind),
            cpu(kind) / mrows,
            peak(kind),
            med_opt(kind, |m| m.backend_cpu),
            med_opt(kind, |m| m.front_cpu),
            {
                let v: Vec<f64> = of(kind).filter_map(|r| r.m.other_cpu()).collect();
                if v.is_empty() {
                    "n/a".to_string()
                } else {
                    format!("{:.2} s", median(v))
                }
            },
        );
    }
    let single = rate(Kind::CopyBinary);
    let parallel = rate(Kind::CopyParallel(default_workers));
    let main = Kind::Pgch(default_workers);
    let pgch = rate(main);
    let ratio = pgch / single;
    let cpu_per_mrow = cpu(main) / mrows;
    let rss = peak(main);
    println!();
    for &kind in &kinds {
        if let Kind::Pgch(w) = kind {
            println!(
                "ratio pgch_w{w} / copy_bin: {:.3}   / copy_text: {:.3}   / copy_par{w}: {}",
                rate(kind) / single,
                rate(kind) / rate(Kind::CopyText),
                if kinds.contains(&Kind::CopyParallel(w)) {
                    format!("{:.3}", rate(kind) / rate(Kind::CopyParallel(w)))
                } else {
                    "n/a".into()
                }
            );
        }
    }
    let disturbed = runs.iter().filter(|r| r.m.disturbed()).count();
    if disturbed > 0 {
        println!(
            "WARNING: {disturbed} counted runs were disturbed by other work even after \
             {MAX_REPEATS} repeats; the figures are low"
        );
    }
    println!(
        "targets:   pgch >= 0.75 x single-stream binary COPY: {} ({ratio:.3}); \
         peak RSS <= 256 MiB: {} ({rss:.1} MiB)",
        if ratio >= 0.75 { "met" } else { "MISSED" },
        if rss <= 256.0 { "met" } else { "MISSED" }
    );
    println!(
        "RESULT snapshot pgch={pgch:.0} copy_single={single:.0} copy_parallel={parallel:.0} \
         ratio={ratio:.3} pgch_cpu_s_per_mrow={cpu_per_mrow:.3} pgch_peak_rss_mb={rss:.1}"
    );
}
