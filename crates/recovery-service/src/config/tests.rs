use super::*;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_sources(
        None,
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    )
}

fn error(pairs: &[(&str, &str)]) -> String {
    load(pairs).err().map(|e| e.to_string()).unwrap_or_default()
}

#[test]
fn no_configuration_at_all_gives_the_documented_defaults() {
    let config = load(&[]).unwrap();
    assert_eq!(config.listen_addr, "127.0.0.1:50051".parse().unwrap());
    assert_eq!(
        config.database_url.expose(),
        "sqlite://recovery.db?mode=rwc"
    );
    assert!(matches!(&config.mail, MailTransport::Files { dir } if dir == Path::new("./mail")));
    assert_eq!(
        config.mail_from.to_string(),
        "Account Recovery <no-reply@localhost>"
    );
    assert!(matches!(&config.keys, KeySource::DevFile(p) if p == Path::new("recovery.db.key")));
    assert_eq!(config.policy.reuse, ReusePolicy::Reusable);
    assert!(config.tls.is_none());
    assert_eq!(config.shutdown_grace, Duration::from_secs(30));
    assert_eq!(config.log_format, LogFormat::Text);
}

#[test]
fn a_bad_value_names_its_variable_and_what_is_wrong() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("RECOVERY_LISTEN_ADDR", "localhost")],
            "RECOVERY_LISTEN_ADDR: expected IP:PORT",
        ),
        (
            &[("RECOVERY_LISTEN_ADDR", "0.0.0.0:50051")],
            "RECOVERY_TRUST_ALL_CALLERS: without RECOVERY_TLS_CLIENT_CA every caller on 0.0.0.0:50051 would be trusted",
        ),
        (
            &[
                ("RECOVERY_LISTEN_ADDR", "0.0.0.0:50051"),
                ("RECOVERY_TRUST_ALL_CALLERS", "maybe"),
            ],
            "RECOVERY_TRUST_ALL_CALLERS: expected `true` or `false`",
        ),
        (
            &[("RECOVERY_SUPPORT_URL", "javascript:alert(1)")],
            "RECOVERY_SUPPORT_URL: expected an https:// or mailto: URL",
        ),
        (
            &[("RECOVERY_PRODUCT_NAME", "Acme\r\nBcc: x")],
            "RECOVERY_PRODUCT_NAME: expected one line",
        ),
        (
            &[("RECOVERY_HEALTH_LISTEN_ADDR", "127.0.0.1:50051")],
            "RECOVERY_HEALTH_LISTEN_ADDR: must differ from RECOVERY_LISTEN_ADDR",
        ),
        (
            &[("RECOVERY_DATABASE_URL", "mysql://x/y")],
            "RECOVERY_DATABASE_URL: unsupported scheme `mysql`",
        ),
        (
            &[("RECOVERY_SMTP_URL", "http://mail")],
            "RECOVERY_SMTP_URL: unsupported scheme `http`",
        ),
        (
            &[("RECOVERY_MAIL_FROM", "not an address")],
            "RECOVERY_MAIL_FROM: not a mailbox",
        ),
        (
            &[("RECOVERY_SECRET_KEY", "1234")],
            "RECOVERY_SECRET_KEY: key #1 must be 64 hex characters",
        ),
        (
            &[("RECOVERY_REUSE_POLICY", "never")],
            "RECOVERY_REUSE_POLICY: expected `reusable` or `rotate_on_use`",
        ),
        (
            &[("RECOVERY_SHUTDOWN_GRACE", "soon")],
            "RECOVERY_SHUTDOWN_GRACE: expected a duration",
        ),
        (
            &[("RECOVERY_LOG_FORMAT", "xml")],
            "RECOVERY_LOG_FORMAT: expected `text` or `json`",
        ),
        (
            &[("RECOVERY_DATABASE_MAX_CONNECTIONS", "0")],
            "RECOVERY_DATABASE_MAX_CONNECTIONS: expected a whole number",
        ),
        (
            &[("RECOVERY_TLS_CERT", "/nonexistent/cert.pem")],
            "RECOVERY_TLS_CERT: cannot read /nonexistent/cert.pem",
        ),
        (
            &[("RECOVERY_CALLERS", "dns:x=auth")],
            "RECOVERY_CALLERS: needs RECOVERY_TLS_CLIENT_CA",
        ),
        (
            &[("RECOVERY_DATABASE_URL", "postgres://db/recovery")],
            "RECOVERY_SECRET_KEY: required with PostgreSQL",
        ),
        (
            &[
                ("RECOVERY_SECRET_KEY", KEY),
                ("RECOVERY_SECRET_KEY_FILE", "/k"),
            ],
            "RECOVERY_SECRET_KEY_FILE: set RECOVERY_SECRET_KEY or RECOVERY_SECRET_KEY_FILE, not both",
        ),
    ];
    for (env, want) in cases {
        let got = error(env);
        assert!(got.starts_with(want), "{env:?}: got {got:?}, want {want:?}");
        assert_eq!(got.lines().count(), 1, "one line: {got:?}");
    }
}

#[test]
fn smtp_to_a_remote_host_requires_tls_and_auth_is_never_in_clear() {
    let url = |pairs: &[(&str, &str)]| match load(pairs).unwrap().mail {
        MailTransport::Smtp { url, .. } => url.expose().to_owned(),
        MailTransport::Files { .. } => panic!("SMTP expected"),
    };
    // A remote host: STARTTLS required unless the URL says otherwise.
    assert_eq!(
        url(&[("RECOVERY_SMTP_URL", "smtp://mail.example.com:587")]),
        "smtp://mail.example.com:587?tls=required"
    );
    assert_eq!(
        url(&[("RECOVERY_SMTP_URL", "smtp://mail.example.com:25?tls=none")]),
        "smtp://mail.example.com:25"
    );
    // A local relay stays clear; implicit TLS stays as it is.
    assert_eq!(
        url(&[("RECOVERY_SMTP_URL", "smtp://127.0.0.1:2525")]),
        "smtp://127.0.0.1:2525"
    );
    assert_eq!(
        url(&[("RECOVERY_SMTP_URL", "smtps://mail.example.com")]),
        "smtps://mail.example.com"
    );
    // AUTH only over TLS.
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("smtp-password");
    std::fs::write(&password, "hunter2").unwrap();
    let password = password.to_str().unwrap();
    assert!(
        error(&[(
            "RECOVERY_SMTP_URL",
            "smtp://user:pw@relay.example.com:25?tls=none"
        )])
        .contains("never sent in clear text"),
        "a password in the URL is AUTH too"
    );
    assert!(
        error(&[("RECOVERY_SMTP_URL", "smtp://user:pw@127.0.0.1:2525")])
            .contains("never sent in clear text")
    );
    for clear in [
        "smtp://user@127.0.0.1:2525",
        "smtp://user@mail.example.com?tls=none",
    ] {
        assert!(
            error(&[
                ("RECOVERY_SMTP_URL", clear),
                ("RECOVERY_SMTP_PASSWORD_FILE", password)
            ])
            .contains("never sent in clear text"),
            "{clear}"
        );
    }
    assert!(
        load(&[
            ("RECOVERY_SMTP_URL", "smtp://user@mail.example.com"),
            ("RECOVERY_SMTP_PASSWORD_FILE", password)
        ])
        .is_ok()
    );
    // The lease outlives the SMTP timeout.
    assert!(
        error(&[
            ("RECOVERY_SMTP_URL", "smtp://127.0.0.1:2525"),
            ("RECOVERY_MAIL_LEASE", "10s")
        ])
        .starts_with("RECOVERY_MAIL_LEASE: must be longer than the SMTP timeout")
    );
}

#[test]
fn audit_retention_defaults_to_400_days_and_is_at_least_a_day() {
    assert_eq!(
        load(&[]).unwrap().audit_retention,
        std::time::Duration::from_secs(400 * 86_400)
    );
    assert_eq!(
        load(&[("RECOVERY_AUDIT_RETENTION", "90d")])
            .unwrap()
            .audit_retention,
        std::time::Duration::from_secs(90 * 86_400)
    );
    assert!(
        error(&[("RECOVERY_AUDIT_RETENTION", "2h")])
            .starts_with("RECOVERY_AUDIT_RETENTION: must be at least 1d")
    );
    assert!(
        error(&[("RECOVERY_AUDIT_RETENTION", "soon")]).starts_with("RECOVERY_AUDIT_RETENTION:")
    );
}

#[test]
fn contact_waits_default_to_the_contract_and_take_short_settings() {
    let p = load(&[]).unwrap().policy;
    const DAY: i64 = 86_400_000;
    assert_eq!(
        (
            p.contact_invitation_ms,
            p.contact_activation_ms,
            p.contact_gathering_ms,
            p.contact_wait_ms,
            p.contact_cooldown_ms
        ),
        (7 * DAY, 7 * DAY, DAY, 2 * DAY, 7 * DAY)
    );
    let p = load(&[
        ("RECOVERY_CONTACT_ACTIVATION", "2s"),
        ("RECOVERY_CONTACT_WAIT", "0s"),
        ("RECOVERY_CONTACT_GATHERING", "1h"),
    ])
    .unwrap()
    .policy;
    assert_eq!(
        (
            p.contact_activation_ms,
            p.contact_wait_ms,
            p.contact_gathering_ms
        ),
        (2_000, 0, 3_600_000)
    );
    assert!(
        error(&[("RECOVERY_CONTACT_COOLDOWN", "31d")])
            .starts_with("RECOVERY_CONTACT_COOLDOWN: must be at most 30d")
    );
    assert!(
        error(&[("RECOVERY_CONTACT_ACTIVATION", "0s")]).starts_with("RECOVERY_CONTACT_ACTIVATION:")
    );
    assert!(error(&[("RECOVERY_CONTACT_WAIT", "soon")]).starts_with("RECOVERY_CONTACT_WAIT:"));
}

#[test]
fn listen_addresses_people_type_are_understood() {
    let config = load(&[("RECOVERY_LISTEN_ADDR", "localhost:50052")]).unwrap();
    assert_eq!(config.listen_addr, "127.0.0.1:50052".parse().unwrap());
    let config = load(&[("RECOVERY_LISTEN_ADDR", "[::1]:50052")]).unwrap();
    assert!(config.listen_addr.ip().is_loopback());
}

#[test]
fn trusting_every_caller_off_loopback_must_be_said_out_loud() {
    let config = load(&[
        ("RECOVERY_LISTEN_ADDR", "0.0.0.0:50051"),
        ("RECOVERY_TRUST_ALL_CALLERS", "true"),
    ])
    .unwrap();
    assert!(config.trust_all_callers);
    // TLS without a client CA authenticates the server, not the callers: the same rule.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, "cert").unwrap();
    std::fs::write(&key, "key").unwrap();
    let tls = [
        ("RECOVERY_LISTEN_ADDR", "10.1.2.3:50051"),
        ("RECOVERY_TLS_CERT", cert.to_str().unwrap()),
        ("RECOVERY_TLS_KEY", key.to_str().unwrap()),
    ];
    assert!(error(&tls).starts_with("RECOVERY_TRUST_ALL_CALLERS: without RECOVERY_TLS_CLIENT_CA"));
    let mut trusted = tls.to_vec();
    trusted.push(("RECOVERY_TRUST_ALL_CALLERS", "true"));
    assert!(load(&trusted).unwrap().tls.is_some());
    // Loopback needs no flag (a warning at start), and the default is off.
    let config = load(&[("RECOVERY_LISTEN_ADDR", "127.0.0.1:50051")]).unwrap();
    assert!(!config.trust_all_callers);
}

#[test]
fn a_misplaced_secret_is_not_echoed_in_the_error() {
    let got = error(&[("RECOVERY_LISTEN_ADDR", KEY)]);
    assert!(!got.contains(KEY), "{got}");
    let got = error(&[("RECOVERY_SECRET_KEY", &KEY[..62])]);
    assert!(!got.contains(&KEY[..20]), "{got}");
}

#[test]
fn secrets_can_come_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let url_file = dir.path().join("url");
    std::fs::write(&url_file, "postgres://app:pw@db/recovery\n").unwrap();
    let config = load(&[
        ("RECOVERY_SECRET_KEY_FILE", key_file.to_str().unwrap()),
        ("RECOVERY_DATABASE_URL_FILE", url_file.to_str().unwrap()),
    ])
    .unwrap();
    assert_eq!(
        config.database_url.expose(),
        "postgres://app:pw@db/recovery"
    );
    let KeySource::Configured(ring) = &config.keys else {
        panic!("expected configured keys, got {:?}", config.keys);
    };
    assert_eq!(ring.current().expose()[0], 0x00);
    assert_eq!(ring.current().expose()[31], 0xff);
}

#[test]
fn the_config_file_is_a_layer_under_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("recovery.toml");
    std::fs::write(
        &path,
        "listen_addr = \"0.0.0.0:7000\"\nreuse_policy = \"rotate_on_use\"\nshutdown_grace = 3\n",
    )
    .unwrap();
    let config = Config::from_sources(
        Some(&path),
        [(
            "RECOVERY_LISTEN_ADDR".to_owned(),
            "127.0.0.1:7001".to_owned(),
        )],
    )
    .unwrap();
    assert_eq!(config.listen_addr, "127.0.0.1:7001".parse().unwrap());
    assert_eq!(config.policy.reuse, ReusePolicy::RotateOnUse);
    assert_eq!(config.shutdown_grace, Duration::from_secs(3));

    std::fs::write(&path, "reuse_policy = \"sometimes\"\n").unwrap();
    let err = Config::from_sources(Some(&path), [])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("reuse_policy (in "), "{err}");
}

#[test]
fn debug_output_of_the_whole_config_holds_no_secret() {
    let config = load(&[
        ("RECOVERY_SECRET_KEY", KEY),
        (
            "RECOVERY_DATABASE_URL",
            "postgres://app:s3cr3t-pw@db:5432/recovery",
        ),
        (
            "RECOVERY_SMTP_URL",
            "smtps://mailer:smtp-pw@mail.example.com:465",
        ),
    ])
    .unwrap();
    let shown = format!("{config:?}");
    for secret in [&KEY[..16], "s3cr3t-pw", "smtp-pw"] {
        assert!(!shown.contains(secret), "{secret} leaked in {shown}");
    }
    assert!(shown.contains("db:5432"), "{shown}");
}

#[test]
fn callers_split_at_the_last_equals_sign() {
    let callers = parse_callers(
        "spiffe://platform/ns/auth/sa/auth-service=auth, dns:oncall.ops.internal=operator,dns:x=auth,dns:x=operator",
    )
    .unwrap();
    assert_eq!(callers.len(), 4);
    assert_eq!(
        callers[0].identity,
        "spiffe://platform/ns/auth/sa/auth-service"
    );
    assert_eq!(callers[0].role, Role::Auth);
    assert_eq!(callers[1].role, Role::Operator);
    assert!(
        parse_callers("dns:x=admin")
            .unwrap_err()
            .contains("unknown role")
    );
    assert!(parse_callers("noequals").is_err());
}

#[test]
fn the_dev_key_sits_beside_the_sqlite_file() {
    let config = load(&[(
        "RECOVERY_DATABASE_URL",
        "sqlite:///var/lib/r/recovery.db?mode=rwc",
    )])
    .unwrap();
    assert!(
        matches!(&config.keys, KeySource::DevFile(p) if p == Path::new("/var/lib/r/recovery.db.key"))
    );
    let config = load(&[("RECOVERY_DATABASE_URL", "sqlite::memory:")]).unwrap();
    assert!(matches!(config.keys, KeySource::Ephemeral));
}

#[test]
fn nats_credentials_leave_this_machine_only_over_tls() {
    for (url, creds, ca) in [
        ("nats://svc:hunter22@nats-1:4222", false, false),
        ("nats://s3cr3tTOKEN@nats:4222", false, false),
        ("nats://nats.internal:4222", true, false),
        (
            "nats://127.0.0.1:4222,nats://svc:pw@nats-2:4222",
            false,
            false,
        ),
    ] {
        let mut env = vec![("RECOVERY_EVENTS_URL", url)];
        if creds {
            env.push((
                "RECOVERY_EVENTS_CREDENTIALS_FILE",
                "/run/secrets/nats.creds",
            ));
        }
        if ca {
            env.push(("RECOVERY_EVENTS_TLS_CA", "/run/ca.pem"));
        }
        let err = load(&env).unwrap_err().to_string();
        assert!(
            err.contains("RECOVERY_EVENTS_URL") && err.contains("only over TLS"),
            "{url}: {err}"
        );
        assert!(
            !err.contains("hunter22") && !err.contains("s3cr3t"),
            "{err}"
        );
    }
    // TLS by scheme or by a CA, or credentials to this machine only: accepted.
    for (url, ca) in [
        ("tls://svc:hunter22@nats-1:4222", false),
        ("nats://svc:hunter22@nats-1:4222", true),
        (
            "nats://svc:hunter22@127.0.0.1:4222,nats://svc:hunter22@localhost:4223",
            false,
        ),
        ("nats://nats-1:4222", false),
    ] {
        let mut env = vec![("RECOVERY_EVENTS_URL", url)];
        if ca {
            env.push(("RECOVERY_EVENTS_TLS_CA", "/run/ca.pem"));
        }
        assert!(load(&env).is_ok(), "{url}");
    }
}

#[test]
fn events_are_off_unless_a_nats_url_is_given_and_its_password_stays_secret() {
    assert!(load(&[]).unwrap().events.is_none());
    let config = load(&[(
        "RECOVERY_EVENTS_URL",
        "tls://svc:hunter22@nats-1:4222,tls://svc:hunter22@nats-2:4222",
    )])
    .unwrap();
    let events = config.events.unwrap();
    assert_eq!(events.stream, "IDENTITY_RECOVERY");
    assert!(events.credentials_file.is_none());
    assert!(!events.url.to_string().contains("hunter22"));
    assert!(!format!("{events:?}").contains("hunter22"));
    let token = load(&[("RECOVERY_EVENTS_URL", "tls://s3cr3tTOKEN@nats:4222")]).unwrap();
    assert_eq!(
        token.events.unwrap().url.to_string(),
        "tls://***@nats:4222",
        "a NATS token is hidden like a password"
    );
    let config = load(&[
        ("RECOVERY_EVENTS_URL", "tls://nats.internal:4222"),
        ("RECOVERY_EVENTS_STREAM", "RECOVERY_EU"),
        (
            "RECOVERY_EVENTS_CREDENTIALS_FILE",
            "/run/secrets/nats.creds",
        ),
    ])
    .unwrap();
    let events = config.events.unwrap();
    assert_eq!(events.stream, "RECOVERY_EU");
    assert_eq!(
        events.credentials_file.as_deref(),
        Some(Path::new("/run/secrets/nats.creds"))
    );
}

#[test]
fn event_settings_that_cannot_work_are_refused_at_start() {
    let e = error(&[("RECOVERY_EVENTS_URL", "http://nats:4222")]);
    assert!(
        e.contains("RECOVERY_EVENTS_URL") && e.contains("nats://"),
        "{e}"
    );
    let e = error(&[
        ("RECOVERY_EVENTS_URL", "nats://nats:4222"),
        ("RECOVERY_EVENTS_STREAM", "identity.recovery"),
    ]);
    assert!(e.contains("RECOVERY_EVENTS_STREAM"), "{e}");
    let e = error(&[("RECOVERY_EVENTS_STREAM", "X")]);
    assert!(
        e.contains("RECOVERY_EVENTS_STREAM") && e.contains("RECOVERY_EVENTS_URL is not"),
        "{e}"
    );
}
