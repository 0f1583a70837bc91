//! What each party of a run uses: CPU, memory and PostgreSQL's write-ahead log.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context as _;
use sqlx::PgPool;

/// A process's CPU time so far, in milliseconds, from `/proc/<pid>/stat`.
struct ProcCpu {
    command: String,
    parent: u32,
    /// user and system time of the process, all its threads
    own: f64,
    /// of its children that exited and were waited for
    children: f64,
}

fn proc_cpu_ms(pid: u32) -> anyhow::Result<ProcCpu> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // the command is in parentheses and may hold spaces
    let (head, rest) = stat.rsplit_once(')').context("stat")?;
    let command = head.split_once('(').context("stat")?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |a: usize, b: usize| -> anyhow::Result<f64> {
        Ok((fields[a].parse::<f64>()? + fields[b].parse::<f64>()?) * 10.0)
    };
    Ok(ProcCpu {
        command,
        parent: fields[1].parse()?,
        own: ticks(11, 12)?,
        children: ticks(13, 14)?,
    })
}

/// CPU time so far, in ms, of each party: facepair, the load generator (this process), pgbench
/// (its exited children) and PostgreSQL (every postgres process, with the backends the
/// postmaster reaped). Only this suite's PostgreSQL may run on the machine.
#[derive(Clone, Copy)]
pub struct Cpu {
    pub facepair: f64,
    pub generator: f64,
    pub pgbench: f64,
    pub postgres: f64,
}

impl Cpu {
    pub fn now(facepair: u32) -> anyhow::Result<Cpu> {
        let me = proc_cpu_ms(std::process::id())?;
        let mut postgres = HashMap::new();
        for entry in std::fs::read_dir("/proc")? {
            let Some(pid) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            // a process may end between the listing and the read
            if let Ok(p) = proc_cpu_ms(pid)
                && p.command == "postgres"
            {
                postgres.insert(pid, p);
            }
        }
        // the postmaster (the one whose parent is not postgres) holds its exited backends'
        let postgres = postgres
            .values()
            .map(|p| {
                p.own
                    + if postgres.contains_key(&p.parent) {
                        0.0
                    } else {
                        p.children
                    }
            })
            .sum();
        Ok(Cpu {
            facepair: proc_cpu_ms(facepair)?.own,
            generator: me.own,
            pgbench: me.children,
            postgres,
        })
    }

    /// The CPU each of `count` operations took since `before`, in ms.
    pub fn each(self, before: Cpu, count: f64) -> Cpu {
        Cpu {
            facepair: (self.facepair - before.facepair) / count,
            generator: (self.generator - before.generator) / count,
            pgbench: (self.pgbench - before.pgbench) / count,
            postgres: (self.postgres - before.postgres) / count,
        }
    }
}

/// A figure from facepair's `/metrics`.
pub async fn metric(http: &reqwest::Client, url: &str, name: &str) -> anyhow::Result<f64> {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .with_context(|| format!("no {name} in /metrics"))?
        .trim()
        .parse()
        .with_context(|| format!("{name} in /metrics"))
}

pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    Ok(facepair::memory::resident_kib(&pid.to_string())?)
}

/// What the parties of a run used: their CPU, PostgreSQL's write-ahead log and statements.
#[derive(Clone, Copy)]
pub struct Usage {
    pub cpu: Cpu,
    pub wal: Wal,
    /// statements PostgreSQL ran in the suite's databases (pg_stat_statements, which
    /// scripts/pg loads; `None` without it)
    pub statements: Option<f64>,
}

impl Usage {
    pub async fn now(
        facepair: u32,
        admin: &PgPool,
        disk: Option<&WalDisk>,
    ) -> anyhow::Result<Usage> {
        Ok(Usage {
            cpu: Cpu::now(facepair)?,
            wal: Wal::now(admin, disk).await?,
            statements: statements(admin).await,
        })
    }

    /// What each of `count` operations used since `before`.
    pub fn each(self, before: Usage, count: f64) -> Usage {
        Usage {
            cpu: self.cpu.each(before.cpu, count),
            wal: self.wal.each(before.wal, count),
            statements: self
                .statements
                .zip(before.statements)
                .map(|(now, then)| (now - then) / count),
        }
    }

    /// "7.0 statements", or why there is no count.
    pub fn describe_statements(&self) -> String {
        match self.statements {
            Some(n) => format!("{n:.1} statements"),
            None => "statements not counted (no pg_stat_statements)".into(),
        }
    }
}

/// Statements run so far in the suite's two databases (facepair's, with its background work,
/// and the reference's).
async fn statements(admin: &PgPool) -> Option<f64> {
    sqlx::query_scalar(
        "select coalesce(sum(calls), 0)::float8 from pg_stat_statements s
         join pg_database d on d.oid = s.dbid where d.datname like 'facepair_bench%'",
    )
    .fetch_one(admin)
    .await
    .ok()
}

/// Starts counting statements from zero, so entries of earlier runs (a test suite's hundreds
/// of databases) do not crowd the suite's out of pg_stat_statements; `false` without it.
pub async fn reset_statements(admin: &PgPool) -> bool {
    sqlx::query("create extension if not exists pg_stat_statements")
        .execute(admin)
        .await
        .is_ok()
        && sqlx::query("select pg_stat_statements_reset()")
            .execute(admin)
            .await
            .is_ok()
}

/// What PostgreSQL has written to its write-ahead log so far, from the log's position, and its
/// flushes, from the kernel: `pg_stat_wal` lags for busy backends, so it would miss the end of
/// a run on facepair's pooled connections but not on pgbench's, which report as they exit.
#[derive(Clone, Copy)]
pub struct Wal {
    kib: f64,
    flushes: Option<f64>,
}

impl Wal {
    async fn now(admin: &PgPool, disk: Option<&WalDisk>) -> anyhow::Result<Wal> {
        let bytes: f64 = sqlx::query_scalar(
            "select pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::float8",
        )
        .fetch_one(admin)
        .await?;
        Ok(Wal {
            kib: bytes / 1024.0,
            flushes: disk.and_then(WalDisk::flushes),
        })
    }

    /// The WAL each of `count` transactions wrote and flushed since `before`.
    fn each(self, before: Wal, count: f64) -> Wal {
        Wal {
            kib: (self.kib - before.kib) / count,
            flushes: self
                .flushes
                .zip(before.flushes)
                .map(|(now, then)| (now - then) / count),
        }
    }

    /// "4.2 KiB, 0.83 flushes": fewer flushes per commit than one means group commit had
    /// several commits share each.
    pub fn describe(&self) -> String {
        match self.flushes {
            Some(flushes) => format!("{:.1} KiB, {flushes:.2} flushes", self.kib),
            None => format!("{:.1} KiB", self.kib),
        }
    }
}

/// The statistics file of the block device that holds PostgreSQL's write-ahead log, whose
/// count of completed flushes rises by one for every WAL fsync (and any other process's on
/// that disk, which an otherwise idle machine barely has).
pub struct WalDisk(PathBuf);

impl WalDisk {
    /// None where the kernel does not tell: no block device under the log (tmpfs, overlays),
    /// a kernel without flush counts, or a role that may not read `data_directory`.
    pub async fn find(admin: &PgPool) -> Option<WalDisk> {
        use std::os::unix::fs::MetadataExt as _;
        let dir: String = sqlx::query_scalar("select current_setting('data_directory')")
            .fetch_one(admin)
            .await
            .ok()?;
        let dev = std::fs::metadata(std::path::Path::new(&dir).join("pg_wal"))
            .ok()?
            .dev();
        // glibc's encoding of a device number
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        let device = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
        // a partition's flushes are counted on its disk
        let disk = if device.join("partition").exists() {
            device.parent()?.to_path_buf()
        } else {
            device
        };
        let disk = WalDisk(disk.join("stat"));
        disk.flushes().map(|_| disk)
    }

    /// Flushes completed so far: the 16th field of the device's `stat`.
    fn flushes(&self) -> Option<f64> {
        std::fs::read_to_string(&self.0)
            .ok()?
            .split_whitespace()
            .nth(15)?
            .parse()
            .ok()
    }
}
