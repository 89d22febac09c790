//! The `redlight` command: parse arguments, call the library.

use anyhow::Context;
use chrono::{DateTime, NaiveDate};
use clap::{Parser, Subcommand};
use redlight::calendar::Calendar;
use redlight::cli;
use redlight::config::Config;
use std::io::{self, BufReader, BufWriter};
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Electronic supervision (电子监察) of government work: legal clocks, red and yellow lights.
#[derive(Parser)]
#[command(name = "redlight", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The daemon: consume CloudEvents from Kafka, keep every case's clocks durable, raise
    /// alerts. Stops gracefully on SIGTERM or SIGINT.
    Run {
        #[arg(long, default_value = "config/redlight.toml")]
        config: PathBuf,
    },
    /// Print every case in the store as JSON lines, sorted (the daemon must be stopped).
    Dump {
        #[arg(long, default_value = "config/redlight.toml")]
        config: PathBuf,
    },
    /// Write a consistent copy of the store into a new directory under `store.backup_dir`
    /// (printed as JSON), while the daemon runs: asks the running daemon's HTTP port
    /// (`http.listen`); with no daemon running it copies the store itself.
    Backup {
        #[arg(long, default_value = "config/redlight.toml")]
        config: PathBuf,
    },
    /// Put a backup in place of the data directory's store (the daemon must be stopped). The
    /// files it replaces are moved aside into `replaced-<time>/` in the data directory.
    Restore {
        #[arg(long, default_value = "config/redlight.toml")]
        config: PathBuf,
        /// The backup's directory (`redlight-backup-…`, as `redlight backup` printed it).
        backup: PathBuf,
    },
    /// Validate the configuration, rule packs and calendars; exit 0, or print every problem
    /// and exit 2.
    Check {
        #[arg(long, default_value = "config/redlight.toml")]
        config: PathBuf,
        /// Judge the calendar's coverage as of this date (YYYY-MM-DD) instead of today in
        /// the configured time zone.
        #[arg(long)]
        today: Option<NaiveDate>,
    },
    /// Run the engine offline over a JSON Lines file of CloudEvents (`-` for stdin) and print
    /// every alert as one JSON line.
    Replay {
        #[arg(long, default_value = "config/redlight.toml")]
        config: PathBuf,
        /// After the last event, advance the clock to this instant (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// The events, one CloudEvent per line; `-` reads standard input.
        file: PathBuf,
    },
    /// Alert deliveries: what waits in the outbox, the dead letters, re-sending them once the
    /// receiver is fixed. Talks to the running daemon's HTTP port (`http.listen`); with no
    /// daemon running it uses the store directly.
    Deliveries {
        #[arg(long, default_value = "config/redlight.toml")]
        config: PathBuf,
        #[command(subcommand)]
        action: DeliveriesAction,
    },
    /// Input messages that could not be applied (not JSON, a bad attribute, …) and that the
    /// dead-letter topic has not taken yet, as JSON lines with the reason and what the
    /// brokers last said; or, with `--drop`, drops those named. Talks to the running
    /// daemon's HTTP port; with no daemon running it uses the store directly.
    DeadLetters {
        #[arg(long, default_value = "config/redlight.toml")]
        config: PathBuf,
        /// Only those numbered after this (`seq` in the output), to page on.
        #[arg(long, conflicts_with = "drop")]
        after: Option<u64>,
        #[arg(long, default_value_t = 100, conflicts_with = "drop",
              value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: u16,
        /// Drop this dead letter (its `seq`; repeatable): it is no longer offered to the
        /// dead-letter topic. For one the topic will never take. Each dropped one is
        /// written in full (key, payload and headers in base64) as a JSON line: keep it.
        #[arg(long, value_name = "SEQ")]
        drop: Vec<u64>,
    },
    /// Ask the working calendar.
    Calendar {
        #[arg(long, default_value = "config/redlight.toml")]
        config: PathBuf,
        #[command(subcommand)]
        query: CalendarQuery,
    },
}

#[derive(Subcommand)]
enum DeliveriesAction {
    /// Per receiver: deliveries waiting and dead letters.
    Status,
    /// The dead letters (refused, or out of retries) as JSON lines, with the reason.
    Dead {
        /// Only this receiver's.
        #[arg(long)]
        receiver: Option<String>,
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=10_000))]
        limit: u16,
    },
    /// Re-send dead letters with a fresh retry schedule: all of them, a receiver's
    /// (`--receiver`), or the given ones (`--seq N`, repeatable).
    Resend {
        #[arg(long)]
        receiver: Option<String>,
        #[arg(long = "seq")]
        seqs: Vec<u64>,
    },
    /// Drop dead letters for good: a receiver's (`--receiver`, for one removed or that will
    /// never take them) or the given ones (`--seq N`, repeatable); one of them is required.
    /// The alerts stay in the alert log; only their delivery there is given up.
    #[command(group = clap::ArgGroup::new("which").required(true).multiple(true))]
    Drop {
        #[arg(long, group = "which")]
        receiver: Option<String>,
        #[arg(long = "seq", group = "which")]
        seqs: Vec<u64>,
    },
}

#[derive(Subcommand)]
enum CalendarQuery {
    /// Is DATE a workday? Prints the kind of day (workday, weekend, holiday, makeup); exit 0
    /// for a workday, 1 otherwise.
    IsWorkday { date: NaiveDate },
    /// The N-th workday after DATE (the first day is not counted, 民法典 Art. 201).
    Add { date: NaiveDate, n: u32 },
    /// Every date in a range with its kind, one per line.
    List {
        #[arg(long)]
        from: NaiveDate,
        #[arg(long)]
        to: NaiveDate,
    },
    /// A year's calendar file from the text of its State Council notice
    /// (国务院办公厅关于YYYY年部分节假日安排的通知) in FILE (`-`: standard input), printed
    /// to standard output; every date the notice gives with its day of the week is checked
    /// against it. Exit 2 with the problems when it does not read.
    Import { file: PathBuf },
}

fn default_filter(level: LevelFilter) -> Targets {
    Targets::new().with_default(level)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if matches!(args.command, Command::Run { .. }) {
        redlight::tune_daemon_allocator();
    } else {
        redlight::tune_allocator();
    }
    let default_level = if matches!(args.command, Command::Run { .. }) {
        LevelFilter::INFO
    } else {
        LevelFilter::WARN
    };
    // RUST_LOG takes `level` and `target=level` directives, comma-separated (for example
    // `info,redlight::delivery=debug,rdkafka=warn`). This is tracing-subscriber's `Targets`
    // filter rather than `EnvFilter`: the same directives without span and field matching,
    // and without a regex engine in the build.
    let (filter, bad_filter) = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => match spec.parse::<Targets>() {
            Ok(filter) => (filter, None),
            Err(e) => (default_filter(default_level), Some((spec, e))),
        },
        _ => (default_filter(default_level), None),
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(io::stderr)
                .with_ansi(io::IsTerminal::is_terminal(&io::stderr())),
        )
        .with(filter)
        .init();
    if let Some((spec, e)) = bad_filter {
        tracing::warn!(rust_log = %spec, error = %e, default = %default_level, "RUST_LOG is not a valid filter; using the default level");
    }
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("redlight: {}", redlight::cli::error_text(&e));
            ExitCode::from(2)
        }
    }
}

/// Keeps the daemon running on SIGHUP, saying so. Its default action ends the process at
/// once, and systemd does not restart a service ended by SIGHUP (`Restart=on-failure`
/// counts it a clean exit): a `kill -HUP` sent from habit, as to daemons that reload their
/// configuration on it, would have stopped the watch for good. redlight reads its
/// configuration only at start.
fn ignore_hangups() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::warn!(
                        "SIGHUP received and ignored: redlight reads its configuration only \
                         at start; restart it to apply changes (SIGTERM stops it gracefully)"
                    );
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP; it would end the process"),
    }
}

/// Resolves on SIGTERM or SIGINT. Both are listened for from the call on (it must be made
/// inside the runtime), not from the future's first poll: the daemon's loop first polls it
/// after the store is opened and its cases are read, and until 2026-12-07 a SIGTERM in that
/// time ended the process at once (exit 143) instead of shutting it down.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        let wait = |s: io::Result<tokio::signal::unix::Signal>, name: &'static str| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::error!(error = %e, signal = name, "cannot listen for the signal");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = wait(int, "SIGINT") => tracing::info!("SIGINT received"),
            _ = wait(term, "SIGTERM") => tracing::info!("SIGTERM received"),
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Run { config } => {
            let config = Config::load(&config)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(async {
                let shutdown = shutdown_signal();
                ignore_hangups();
                redlight::daemon::run(config, shutdown).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dump { config } => {
            let config = Config::load(&config)?;
            let store = config.open_store()?;
            let mut out = BufWriter::new(io::stdout().lock());
            let mut cases = store.all_cases()?;
            cases.sort_by(|a, b| a.2.id.cmp(&b.2.id));
            for (_, _, case) in cases {
                serde_json::to_writer(&mut out, &case)?;
                std::io::Write::write_all(&mut out, b"\n")?;
            }
            std::io::Write::flush(&mut out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { config } => {
            let config = Config::load(&config)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let mut out = io::stdout();
            runtime.block_on(redlight::backup_cmd::backup(&config, &mut out))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore { config, backup } => {
            let config = Config::load(&config)?;
            redlight::backup_cmd::restore(&config, &backup, &mut io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config, today } => {
            let report = cli::check(&config, today);
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            if report.problems.is_empty() {
                println!("{}", report.summary);
                Ok(ExitCode::SUCCESS)
            } else {
                for p in &report.problems {
                    println!("{p}");
                }
                println!("{} problem(s)", report.problems.len());
                Ok(ExitCode::from(2))
            }
        }
        Command::Replay {
            config,
            until,
            file,
        } => {
            let config = Config::load(&config)?;
            let mut engine = config.build_engine()?;
            let until = until
                .map(|u| {
                    DateTime::parse_from_rfc3339(&u)
                        .map(|t| t.timestamp_millis())
                        .with_context(|| format!("--until {u:?} is not an RFC 3339 time"))
                })
                .transpose()?;
            let out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
            let err = io::stderr().lock();
            let summary = if file.as_os_str() == "-" {
                // `Stdin` rather than its lock: the lines are read on a thread of their own.
                cli::replay(
                    &mut engine,
                    BufReader::with_capacity(1 << 16, io::stdin()),
                    until,
                    out,
                    err,
                )?
            } else {
                let f = std::fs::File::open(&file)
                    .with_context(|| format!("cannot open {}", file.display()))?;
                cli::replay(
                    &mut engine,
                    BufReader::with_capacity(1 << 16, f),
                    until,
                    out,
                    err,
                )?
            };
            tracing::info!(
                lines = summary.lines,
                events = summary.events,
                rejected = summary.rejected,
                alerts = summary.alerts,
                unknown_types = summary.unknown,
                "replay done"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Deliveries { config, action } => {
            let config = Config::load(&config)?;
            let cmd = match action {
                DeliveriesAction::Status => redlight::delivery::Command::Status,
                DeliveriesAction::Dead { receiver, limit } => redlight::delivery::Command::Dead {
                    receiver,
                    limit: usize::from(limit),
                },
                DeliveriesAction::Resend { receiver, seqs } => {
                    redlight::delivery::Command::Resend(redlight::delivery::Selection {
                        receiver,
                        seqs,
                    })
                }
                DeliveriesAction::Drop { receiver, seqs } => {
                    redlight::delivery::Command::Drop(redlight::delivery::Selection {
                        receiver,
                        seqs,
                    })
                }
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let mut out = io::stdout();
            runtime.block_on(redlight::delivery::command(&config, cmd, &mut out))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DeadLetters {
            config,
            after,
            limit,
            drop,
        } => {
            let config = Config::load(&config)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let (mut out, mut err) = (io::stdout(), io::stderr());
            if !drop.is_empty() {
                runtime.block_on(redlight::daemon::drop_dead_letters_command(
                    &config, &drop, &mut out, &mut err,
                ))?;
                return Ok(ExitCode::SUCCESS);
            }
            runtime.block_on(redlight::daemon::dead_letters_command(
                &config,
                after,
                usize::from(limit),
                &mut out,
                &mut err,
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Calendar { config, query } => {
            // The configured calendar; `import` needs none.
            let load =
                || -> anyhow::Result<Calendar> { Ok(Config::load(&config)?.load_calendar()?) };
            let stdout = io::stdout();
            match query {
                CalendarQuery::IsWorkday { date } => {
                    let kind = load()?.day_kind(date)?;
                    println!("{date}\t{kind}");
                    Ok(if kind.is_workday() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    })
                }
                CalendarQuery::Add { date, n } => {
                    println!("{}", load()?.add_workdays(date, n)?);
                    Ok(ExitCode::SUCCESS)
                }
                CalendarQuery::List { from, to } => {
                    cli::calendar_list(&load()?, from, to, BufWriter::new(stdout.lock()))?;
                    Ok(ExitCode::SUCCESS)
                }
                CalendarQuery::Import { file } => cli::calendar_import(&file),
            }
        }
    }
}
