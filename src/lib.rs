//! redlight — electronic supervision (电子监察) of government work.
//!
//! # Layout
//! - [`calendar`]: the PRC working calendar (holidays and make-up workdays, 调休) loaded from
//!   `config/calendars/`, with O(1) workday arithmetic.
//! - [`event`]: CloudEvents 1.0 structured JSON parsed into a typed [`event::Event`].
//! - [`rules`]: rule packs (TOML under `config/rules/`) compiled into [`rules::RuleSet`].
//! - [`clock`]: how time is counted (SPEC §3): hours, calendar days, workdays, pauses, deadlines.
//! - [`engine`]: open cases, timers and lights; `apply(event)` and `advance(now)` return alerts.
//! - [`alert`]: the alert of SPEC §4 and its deterministic id.
//! - [`config`]: the daemon configuration file.
//! - [`cli`]: the `check`, `replay` and `calendar` subcommands.
//! - [`store`]: the embedded store (redb): cases, offsets and alerts per partition.
//! - [`daemon`]: `redlight run` — the Kafka consumer loop around the engine.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz` and the read-only API.
//! - [`api`]: the JSON API (`/api/v1/…`), the board's counts, the bearer-token check.
//! - [`board`]: the red-light board at `/` (server-rendered HTML, in Chinese).
//! - [`case_page`]: a case's own page at `/case/{id}` (案件详情), linked from the board.
//! - [`scorecard`]: department scorecards (杭州 Arts. 20–26) from the store's ledger.
//! - [`metrics`]: the Prometheus metrics.
//! - [`open_counts`]: the open-case gauges, counted as cases change.
//! - [`delivery`]: alert delivery — receivers, routing, escalation, the durable outbox, retries,
//!   dead letters.
//! - [`formats`]: what receivers are sent (SPEC §4 JSON signed per Standard Webhooks,
//!   Alertmanager, DingTalk, WeCom, Feishu) and the Chinese message text.
pub mod alert;
pub mod api;
pub mod backup_cmd;
pub mod board;
pub mod calendar;
pub mod calendar_notice;
pub mod case_page;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod engine;
pub mod event;
pub mod formats;
pub mod http;
pub mod log_throttle;
pub mod metrics;
pub mod open_counts;
pub mod rules;
pub mod scorecard;
pub mod scorecard_page;
pub mod store;
pub mod writer;

/// mimalloc instead of the system allocator: the engine allocates and frees small objects
/// for every event, scattered over a working set of a gigabyte (a million open cases), and
/// glibc's malloc spent about 40% of the engine benchmark's time in its own bookkeeping.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sets the allocator's options for a batch job with a large, churning heap (`replay`, the
/// other commands, the engine benchmark), unless the environment sets them (mimalloc reads
/// `MIMALLOC_*` variables).
///
/// Freed memory is kept for reuse rather than given back to the system after a second
/// (mimalloc's `purge_delay`, default 1000 ms, here -1: never). Given back, it was zeroed
/// again by the kernel on the next use, 2 MiB at a time with transparent huge pages: the
/// engine benchmark took 11,381 page faults and 20.5 s of user time with the default,
/// 1,343 and 16.0–17.0 s without purging, and mixed events ran about 12% faster.
///
/// The daemon keeps purging ([`tune_daemon_allocator`] has its own setting): without it the
/// 1M-event benchmark ran about 6% faster (40,085–40,672 against 35,884–39,641 events/s,
/// alternating runs; 32.1 against 35.2 µs of CPU per event) but stayed at its high-water
/// mark, 1.79–1.88 GB of RSS instead of 1.45–1.47. `MIMALLOC_PURGE_DELAY=-1` in its
/// environment chooses that.
pub fn tune_allocator() {
    #[cfg(feature = "mimalloc")]
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        /// `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (the crate names no
        /// constant for it), and its default there.
        const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
        const DEFAULT_MS: std::ffi::c_long = 1000;
        // SAFETY: reads and sets one of mimalloc's global options, which it keeps atomically.
        // Set only where the option has the default it should have: a mimalloc with
        // another numbering is left as it is rather than given a wrong option.
        unsafe {
            if libmimalloc_sys::mi_option_get(PURGE_DELAY) == DEFAULT_MS {
                libmimalloc_sys::mi_option_set(PURGE_DELAY, -1);
            }
        }
    }
}

/// Sets the allocator's options for the daemon (`redlight run`), unless the environment
/// sets them: freed memory is given back to the system only in whole 2 MiB huge pages
/// (mimalloc's `allow_thp` = 2, which makes its minimal purge size the huge page size;
/// the default purges 64 KiB pieces). A 64 KiB purge inside a transparent huge page splits
/// it, and the next use of that memory faulted in and zeroed fresh pages again: in the
/// 1M-event daemon benchmark the kernel's time fell from 9.6–12.6 s to 7.7 s and the rate
/// rose from 56,061–61,365 to 64,496–65,924 events/s (alternating runs), for about 100 MiB
/// more RSS (1,487–1,579 against 1,410–1,549 MiB). `MIMALLOC_ALLOW_THP=1` restores the
/// default; `MIMALLOC_PURGE_DELAY=-1` keeps all freed memory instead.
pub fn tune_daemon_allocator() {
    #[cfg(feature = "mimalloc")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none()
        && std::env::var_os("MIMALLOC_MINIMAL_PURGE_SIZE").is_none()
    {
        /// `mi_option_allow_thp` and `mi_option_minimal_purge_size` in mimalloc 3's
        /// `mi_option_e` (the crate names no constants for them), and their defaults.
        const ALLOW_THP: libmimalloc_sys::mi_option_t = 43;
        const MINIMAL_PURGE_SIZE: libmimalloc_sys::mi_option_t = 44;
        // SAFETY: reads and sets global options, which mimalloc keeps atomically. Set only
        // where both have the defaults they should have: a mimalloc with another numbering
        // is left as it is rather than given a wrong option.
        unsafe {
            if libmimalloc_sys::mi_option_get(ALLOW_THP) == 1
                && libmimalloc_sys::mi_option_get(MINIMAL_PURGE_SIZE) == 0
            {
                libmimalloc_sys::mi_option_set(ALLOW_THP, 2);
            }
        }
    }
}
