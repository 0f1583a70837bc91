//! Gives memory freed after a wave of connections back to the system: glibc never returns the
//! middle of a heap by itself, so the process would keep its high-water mark for good. Each pass
//! first drops the cached rows nobody read ([`crate::live::cache`]), which would pin freed pages.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::live::cache::Cache;

/// How often freed memory is handed back.
pub const EVERY: Duration = Duration::from_secs(30);

pub async fn return_freed(cache: std::sync::Arc<Cache>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let started = Instant::now();
        let dropped = cache.sweep();
        let swept = started.elapsed();
        let trimmed = trim();
        if trimmed || dropped > 0 {
            tracing::debug!(
                cached_rows_dropped = dropped,
                sweep_us = swept.as_micros() as u64,
                trim_us = (started.elapsed() - swept).as_micros() as u64,
                "freed memory returned to the system"
            );
        }
    }
}

/// A process's resident memory in KiB as the kernel reports it (`VmRSS`, no page size
/// assumed); `process` is a pid, or `self`.
pub fn resident_kib(process: &str) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no VmRSS"))
}

/// Returns every free page of the allocator's heaps to the system; whether any was.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() -> bool {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim takes the allocator's own locks and only releases pages no chunk
    // in use occupies; it may be called from any thread at any time
    unsafe { malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// The shape of a wave: many connection-sized buffers, all freed but the newest, which
    /// keeps the heap from shrinking by itself.
    #[test]
    fn a_freed_wave_goes_back_to_the_system() {
        let mut wave: Vec<Vec<u8>> = (0..8192).map(|_| vec![1u8; 8192]).collect();
        let newest = wave.pop().unwrap();
        drop(wave);
        let before = resident_kib("self").unwrap();
        assert!(trim(), "nothing was released");
        let after = resident_kib("self").unwrap();
        assert!(
            before.saturating_sub(after) >= 32 * 1024,
            "RSS went from {before} KiB to {after} KiB"
        );
        assert_eq!(newest.iter().map(|&b| u64::from(b)).sum::<u64>(), 8192);
    }
}
