//! One run: the mail source, the service (spawned or given), raw argon2id before, the selected
//! phases, raw argon2id after, and the report.

use std::{sync::Arc, time::Duration};

use anyhow::{Context as _, bail};

use crate::{
    argon::{self, Cost},
    cli::{Args, Rpc, SpawnMail},
    client::Target,
    ids::Ids,
    mail::{CodeBook, maildir::MailDir, smtp::SmtpSink},
    pgbench,
    phases::Bench,
    prepare::{Pools, Preparer},
    report::{Ratios, Report},
    spawn::{self, Spawned},
    ui::Ui,
};

/// Runs everything `args` asks for.
pub async fn run(args: &Args) -> anyhow::Result<Report> {
    let ui = Ui::new(args.json);
    let tls = Target::new(args.addr, &args.tls)?;
    let codes = CodeBook::new();
    let wants_sink = (args.spawn.spawn && args.spawn.spawn_mail == SpawnMail::Smtp)
        || args.smtp_listen.is_some();
    let sink = if wants_sink {
        let addr = args
            .smtp_listen
            .unwrap_or_else(|| ([127, 0, 0, 1], 0).into());
        Some(Arc::new(SmtpSink::start(addr, Arc::clone(&codes)).await?))
    } else {
        None
    };
    let mut spawned = match args.spawn.spawn {
        true => {
            ui.note("starting recovery-service ...");
            Some(spawn::start(args, &tls, sink.as_ref().map(|s| s.url())).await?)
        }
        false => None,
    };
    let mail_dir = match spawned.as_ref().and_then(|s| s.mail_dir.clone()) {
        Some(dir) => Some((dir, true)),
        None => args.mail_dir.clone().map(|dir| (dir, false)),
    };
    let _reader = match mail_dir {
        Some((dir, owned)) => Some(MailDir::start(dir, Arc::clone(&codes), owned).await?),
        None => None,
    };
    let have_mail = sink.is_some() || _reader.is_some();
    if let Some(sink) = &sink {
        ui.note(&format!("SMTP sink on {}", sink.addr()));
    }
    let target = spawned
        .as_ref()
        .map_or_else(|| tls.clone(), |s| tls.with_addr(s.addr));
    if spawned.is_none() {
        target
            .wait_serving(Duration::from_secs(5))
            .await
            .context("is the service running? (or use --spawn)")?;
    }
    let connections = args.connections();
    let clients = target.connect_many(connections).await?;
    let concurrency = args.concurrency as usize;
    let threads = args.hash_threads();
    let ids = Arc::new(Ids::new()?);
    let pools = Arc::new(Pools::default());
    let prep = Preparer {
        ui,
        clients: clients.clone(),
        ids: Arc::clone(&ids),
        pools: Arc::clone(&pools),
        codes: have_mail.then_some(codes),
        hash_concurrency: threads * 2,
        flow_concurrency: (concurrency * 4).max(32),
        timeout: args.prepare_timeout,
        zero_knowledge: false,
    };
    let zk_prep = Preparer {
        pools: Arc::new(Pools::default()),
        // Nothing to hash: as many at once as flows.
        hash_concurrency: (concurrency * 4).max(32),
        zero_knowledge: true,
        ..prep.clone()
    };
    let bench = Bench {
        ui,
        clients,
        ids,
        pools,
        prep,
        zk_prep,
        concurrency,
        duration: args.duration,
        sink,
        service_pid: spawned.as_ref().map(|s| s.pid),
    };

    let cost = Cost {
        memory_kib: args.hash.hash_memory_kib,
        iterations: args.hash.hash_iterations,
        parallelism: args.hash.hash_parallelism,
    };
    let mut report = Report {
        tool: format!("recovery-bench {}", env!("CARGO_PKG_VERSION")),
        date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        machine: machine(),
        target: target.addr.to_string(),
        concurrency,
        connections,
        duration_s: args.duration.as_secs_f64(),
        spawned: spawned.as_ref().map(|s| s.info.clone()),
        argon2: cost,
        raw_argon2_before: None,
        raw_argon2_after: None,
        phases: Vec::new(),
        overload: None,
        pgbench: None,
        ratios: Ratios::default(),
        notes: Vec::new(),
    };
    let raw = |label: &'static str| {
        ui.note(&format!(
            "raw argon2id on {threads} threads for {:?} ({label}) ...",
            args.hash.hash_window
        ));
        argon::measure(cost, threads, args.hash.hash_window)
    };
    let rpcs = args.rpcs();
    let hashing = rpcs.iter().any(|r| {
        matches!(
            r,
            Rpc::CreateRecoveryCode | Rpc::RecoverAccount | Rpc::Overload
        )
    });
    if cfg!(debug_assertions) {
        report.notes.push(
            "recovery-bench is a debug build: it is itself the bottleneck of the cheap RPCs; \
             build it with --release"
                .to_owned(),
        );
    }
    let load_before = loadavg();
    if hashing {
        report.raw_argon2_before = Some(raw("before").await?);
    }
    let raw_rate = |r: &Report| r.raw_hashes_per_s().unwrap_or(1.0);
    for rpc in rpcs {
        if matches!(rpc, Rpc::VerifyEmail | Rpc::RecoverAccount | Rpc::ZkRecover) && !have_mail {
            report.notes.push(format!(
                "{} skipped: it needs the email codes (use --spawn, --mail-dir DIR or --smtp-listen ADDR)",
                rpc.method()
            ));
            continue;
        }
        ui.note(&format!("{} ...", rpc.method()));
        let phase = match rpc {
            Rpc::CreateRecoveryCode => bench.create_recovery_code().await?,
            Rpc::BeginRecovery => bench.begin_recovery().await?,
            Rpc::VerifyEmail => bench.verify_email().await?,
            Rpc::RecoverAccount => bench.recover_account(raw_rate(&report)).await?,
            Rpc::ZkEnroll => bench.zk_enroll().await?,
            Rpc::ZkRecover => bench.zk_recover().await?,
            Rpc::GetRecoveryStatus => bench.get_recovery_status().await?,
            Rpc::ListAuditEvents => bench.list_audit_events().await?,
            Rpc::Health => bench.health().await?,
            Rpc::Overload => {
                let peak = || spawned.as_ref().and_then(Spawned::peak_rss_kib);
                report.overload = Some(
                    bench
                        .overload(args.overload_factor, raw_rate(&report), peak)
                        .await?,
                );
                check_alive(&mut spawned, rpc)?;
                continue;
            }
        };
        check_alive(&mut spawned, rpc)?;
        let mut phase = phase;
        phase.server_rss_kib_after = spawned.as_ref().and_then(Spawned::rss_kib);
        eprint!("{}", crate::report::phase_table(&[&phase]));
        report.phases.push(phase);
        if rpc == Rpc::BeginRecovery && args.pgbench {
            report.pgbench = Some(run_pgbench(args, &ui).await?);
        }
    }
    if hashing {
        report.raw_argon2_after = Some(raw("after").await?);
    }
    report.notes.push(format!(
        "load average (1 min) {load_before} at the start, {} at the end",
        loadavg()
    ));
    if let (Some(before), Some(after)) = (report.raw_argon2_before, report.raw_argon2_after) {
        let change = after.hashes_per_s / before.hashes_per_s.max(1e-9);
        if !(0.85..=1.15).contains(&change) {
            report.notes.push(format!(
                "raw argon2id went from {:.1} to {:.1} hashes/s during the run: the machine's speed \
                 changed (other processes?), so the ratios (taken against the mean) are unreliable",
                before.hashes_per_s, after.hashes_per_s
            ));
        }
    }
    report.notes.push(format!(
        "accounts and emails of this run contain `{}`; {} email codes received",
        bench.ids.run(),
        bench.prep.codes.as_ref().map_or(0, |c| c.received())
    ));
    if let Some(s) = spawned.take() {
        if let Some(info) = report.spawned.as_mut() {
            info.peak_rss_kib = s.peak_rss_kib();
        }
        s.stop().await;
    }
    report.compute_ratios();
    Ok(report)
}

async fn run_pgbench(args: &Args, ui: &Ui) -> anyhow::Result<crate::report::PgbenchReport> {
    let Some(url) = args
        .pgbench_url
        .as_ref()
        .or(args.spawn.database_url.as_ref())
    else {
        bail!("--pgbench needs a PostgreSQL database: --database-url or --pgbench-url");
    };
    ui.note(&format!(
        "pgbench with the BeginRecovery statements, {} clients ...",
        args.concurrency
    ));
    pgbench::run(url, args.concurrency as usize, args.duration).await
}

fn check_alive(spawned: &mut Option<Spawned>, rpc: Rpc) -> anyhow::Result<()> {
    if let Some(s) = spawned
        && !s.running()
    {
        bail!(
            "the service exited during {}:\n{}",
            rpc.method(),
            s.log_tail()
        );
    }
    Ok(())
}

/// The 1-minute load average.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// Cores, CPU model, memory and host name, from /proc.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next()?.parse::<f64>().ok())
        .map_or_else(String::new, |kib| {
            format!(", {:.0} GiB", kib / 1024.0 / 1024.0)
        });
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{cores} cores ({model}){mem_gib}, host {}", host.trim())
}
