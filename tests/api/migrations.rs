//! Migrations must not lock tables in a way that holds up webhooks (docs/ARCHITECTURE.md,
//! "Migrations"): every migration after the grandfathered ones is read and checked. And the
//! values their check constraints admit are exactly the names of the domain's enums.

use std::collections::{BTreeSet, HashSet};

use facepair::domain::network::NetworkMatch;
use facepair::domain::{AttemptStatus, LoginStatus, Source, Verdict};
use sqlx::PgPool;

/// Written before the rule; 0002 to 0004 break it.
const GRANDFATHERED: [&str; 4] = [
    "0001_core.sql",
    "0002_ops.sql",
    "0003_limits.sql",
    "0004_outcomes_index.sql",
];

/// Functions a column default may call without rewriting the table: PostgreSQL evaluates a
/// stable default once and stores it. Any other call counts as volatile.
const STABLE_DEFAULTS: [&str; 11] = [
    "now",
    "current_timestamp",
    "current_date",
    "current_time",
    "localtimestamp",
    "localtime",
    "transaction_timestamp",
    "statement_timestamp",
    "current_user",
    "session_user",
    "cast",
];

#[test]
fn new_migrations_do_not_block_webhooks() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut seen: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".sql"))
        .collect();
    seen.sort();
    let mut problems = Vec::new();
    for name in seen.iter().filter(|n| !GRANDFATHERED.contains(&n.as_str())) {
        let sql = std::fs::read_to_string(dir.join(name)).unwrap();
        problems.extend(violations(&sql).into_iter().map(|v| format!("{name}: {v}")));
    }
    for name in GRANDFATHERED {
        assert!(seen.iter().any(|s| s == name), "{name} is gone");
    }
    assert!(
        problems.is_empty(),
        "migrations that would hold up webhooks (see docs/ARCHITECTURE.md, \"Migrations\"):\n{}",
        problems.join("\n")
    );
}

/// `facepair serve` refuses a database that lacks one of its migrations (a gap too) or holds
/// one applied from other SQL, and says which; one with newer migrations it serves.
#[sqlx::test(migrations = false)]
async fn serve_refuses_a_database_behind_its_migrations(pool: PgPool) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let serve = || {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_facepair"));
        command
            .arg("serve")
            .env_clear()
            .env("DATABASE_URL", crate::helpers::database_url(&pool))
            .env("FACEPAIR_LISTEN", format!("127.0.0.1:{port}"))
            .env("FACEPAIR_API_KEYS", crate::helpers::API_KEY)
            .env("FACEPAIR_IDENFY_BASE_URL", "http://127.0.0.1:9")
            .env("FACEPAIR_IDENFY_API_KEY", "idenfy-key")
            .env("FACEPAIR_IDENFY_API_SECRET", "idenfy-secret")
            .env("FACEPAIR_IDENFY_SIGNING_KEYS", crate::helpers::SIGNING_KEY)
            .kill_on_drop(true);
        command
    };
    let refusal = || async {
        let output = tokio::time::timeout(std::time::Duration::from_secs(20), serve().output())
            .await
            .expect("serve started on a database it should refuse")
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let run = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::raw_sql(sql).execute(&pool).await.unwrap() }
    };
    let empty = refusal().await;
    assert!(empty.contains("lacks migration 1 "), "{empty}");
    assert!(empty.contains("run `facepair migrate`"), "{empty}");

    facepair::MIGRATOR.run(&pool).await.unwrap();
    run(
        "create table kept as select * from _sqlx_migrations where version = 13;
         update _sqlx_migrations set checksum = '\\x00' where version = 13",
    )
    .await;
    let other = refusal().await;
    assert!(
        other.contains("migration 13 ") && other.contains("other SQL"),
        "{other}"
    );

    // a newer migration than this build knows: a deploy under way
    run(
        "update _sqlx_migrations m set checksum = k.checksum from kept k where m.version = 13;
         insert into _sqlx_migrations (version, description, success, checksum, execution_time)
         select 9999, 'from a newer build', true, checksum, 0 from kept",
    )
    .await;
    let serving = serve().spawn().unwrap();
    let http = reqwest::Client::new();
    let live = format!("http://127.0.0.1:{port}/health/live");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !http
        .get(&live)
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "serve did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(serving);

    run("delete from _sqlx_migrations where version = 14").await;
    let behind = refusal().await;
    assert!(behind.contains("lacks migration 14 "), "{behind}");
}

/// The values a check constraint of the form `column in ('a', 'b', ...)` admits.
async fn admitted(pool: &PgPool, constraint: &str) -> BTreeSet<String> {
    let definition: String = sqlx::query_scalar(
        "select pg_get_constraintdef(oid) from pg_constraint where conname = $1",
    )
    .bind(constraint)
    .fetch_one(pool)
    .await
    .unwrap();
    definition
        .split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The names sqlx stores `values` under.
async fn stored<T>(pool: &PgPool, values: impl IntoIterator<Item = T>) -> BTreeSet<String>
where
    T: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + 'static,
{
    let mut names = BTreeSet::new();
    for value in values {
        let name: String = sqlx::query_scalar("select $1::text")
            .bind(value)
            .fetch_one(pool)
            .await
            .unwrap();
        names.insert(name);
    }
    names
}

#[sqlx::test]
async fn check_constraints_admit_exactly_the_enums_names(pool: PgPool) {
    let logins = stored(&pool, LoginStatus::ALL).await;
    let attempts = stored(&pool, AttemptStatus::ALL).await;
    let sources = stored(&pool, Source::ALL).await;
    let verdicts = stored(&pool, Verdict::ALL).await;
    let matches = stored(&pool, NetworkMatch::ALL).await;
    let event_types = stored(&pool, facepair::domain::outbound::EventType::ALL).await;
    for (constraint, names) in [
        ("logins_status_check", &logins),
        ("attempts_status_check", &attempts),
        ("attempts_outcome_source_check", &sources),
        ("events_source_check", &sources),
        ("deliveries_verdict_check", &verdicts),
        ("attempts_network_match_check", &matches),
        ("outbound_events_type_check", &event_types),
    ] {
        assert_eq!(&admitted(&pool, constraint).await, names, "{constraint}");
    }
    // the claim finds a login's first pending delivery as its first not settled one, in
    // event_deliveries_unsettled_idx: both must name every state but pending
    let predicate: String = sqlx::query_scalar(
        "select pg_get_expr(indpred, indrelid) from pg_index
         where indexrelid = 'event_deliveries_unsettled_idx'::regclass",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let mut settled = admitted(&pool, "event_deliveries_state_check").await;
    assert!(settled.remove("pending"));
    let quoted = |text: &str| -> BTreeSet<String> {
        text.split('\'')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    };
    assert!(predicate.contains("<> ALL"), "{predicate}");
    assert_eq!(quoted(&predicate), settled, "{predicate}");
    let claim = facepair::store::outbound::CLAIM;
    let lookup = &claim[claim.find("p.state not in").expect("the claim's lookup")..];
    let lookup = &lookup[..lookup.find(')').unwrap()];
    assert_eq!(quoted(lookup), settled, "{lookup}");
}

#[test]
fn the_rule_refuses_what_blocks_webhooks() {
    let refused = [
        (
            "create index deliveries_token_idx on deliveries (token);",
            "CONCURRENTLY",
        ),
        (
            "CREATE UNIQUE INDEX x ON public.logins (user_ref);",
            "CONCURRENTLY",
        ),
        (
            "create index concurrently x on logins (user_ref);",
            "no-transaction",
        ),
        (
            "-- no-transaction\ncreate index concurrently x on logins (user_ref);\ncreate index concurrently y on logins (locale);",
            "one statement",
        ),
        (
            "alter table logins add column nonce uuid not null default gen_random_uuid();",
            "volatile",
        ),
        (
            "alter table events add column at timestamptz default clock_timestamp();",
            "volatile",
        ),
        ("alter table logins add column n bigserial;", "rewrites"),
        (
            "alter table logins add column n int generated always as identity;",
            "rewrites",
        ),
        (
            "alter table logins add column l int generated always as (lifetime_seconds * 2) stored;",
            "rewrites",
        ),
        (
            "alter table attempts alter column number type bigint;",
            "TYPE",
        ),
        (
            "alter table attempts alter number set data type bigint;",
            "TYPE",
        ),
        (
            "alter table deliveries add constraint deliveries_verdict_check check (verdict <> '');",
            "NOT VALID",
        ),
        (
            "alter table deliveries add check (verdict <> '');",
            "NOT VALID",
        ),
        ("alter table logins add unique (user_ref);", "USING INDEX"),
        (
            "alter table attempts add constraint a_fk foreign key (login_id) references logins (id);",
            "NOT VALID",
        ),
        (
            "alter table logins add column tier text check (tier in ('a', 'b'));",
            "inline",
        ),
        (
            "alter table attempts add column parent uuid references attempts (id);",
            "inline",
        ),
        (
            "alter table deliveries drop constraint deliveries_verdict_check,
                 add constraint deliveries_verdict_check check (verdict <> '') not valid;
             alter table deliveries validate constraint deliveries_verdict_check;",
            "later migration",
        ),
        ("drop index logins_created_idx;", "CONCURRENTLY"),
        ("cluster logins using logins_created_idx;", "rewrites"),
        ("reindex table logins;", "CONCURRENTLY"),
    ];
    for (sql, expected) in refused {
        let found = violations(sql);
        assert!(
            found.iter().any(|v| v.contains(expected)),
            "{sql}\nshould be refused for {expected:?}, got {found:?}"
        );
    }
}

#[test]
fn the_rule_accepts_migrations_written_the_right_way() {
    let accepted = [
        // a new table, its indexes and constraints, and columns added without a rewrite
        "-- create index in a comment; alter column x type y
         /* and /* nested */ create index here */
         create table webhook_endpoints (
             id uuid primary key,
             url text not null,
             secret bytea not null,
             created_at timestamptz not null default now(),
             constraint webhook_endpoints_url_check check (url like 'https://%')
         );
         create index webhook_endpoints_created_idx on webhook_endpoints (created_at);
         alter table webhook_endpoints add constraint e_key unique (url);
         alter table webhook_endpoints add column n bigserial, alter column url type varchar(2000);
         alter table logins add column state text;
         alter table logins add column approval_ttl_seconds integer not null default 120;
         alter table logins add column notified_at timestamptz default now();
         alter table logins add column tags text[] not null default '{}'::text[];
         alter table events add column outbox_claimed_at timestamp with time zone default '2000-01-01 00:00:00+00';
         alter table logins add constraint logins_state_length check (char_length(state) <= 500) not valid;
         alter table attempts add constraint attempts_endpoint_fk
             foreign key (login_id) references logins (id) not valid;
         comment on column logins.state is 'create index; alter table x add constraint y check (true)';
         create or replace function f() returns trigger language plpgsql as $$
         begin create index nope on logins (id); return new; end $$;",
        // changing deliveries' CHECK: the new rule without a scan, validated in a later migration
        "alter table deliveries drop constraint deliveries_verdict_check;
         alter table deliveries add constraint deliveries_verdict_check check (verdict in
             ('applied', 'duplicate', 'unknown_token', 'scan_ref_mismatch', 'attempt_terminal',
              'late', 'unknown_status', 'unparseable', 'replayed')) not valid;",
        "alter table deliveries validate constraint deliveries_verdict_check;",
        // an index on an existing table, alone in a migration that runs outside a transaction
        "-- no-transaction\ncreate index concurrently if not exists logins_state_idx on logins (state);\n",
        "-- no-transaction\n-- the index behind a unique constraint\ncreate unique index concurrently logins_state_key on logins (state)",
        "alter table logins add constraint logins_state_key unique using index logins_state_key;",
        "-- no-transaction\ndrop index concurrently logins_state_idx;",
    ];
    for sql in accepted {
        assert_eq!(violations(sql), Vec::<String>::new(), "{sql}");
    }
}

/// What in one migration file would hold a lock that webhooks wait for.
fn violations(sql: &str) -> Vec<String> {
    let statements = statements(sql);
    // sqlx's own test for a migration that runs outside a transaction
    let no_transaction = sql.starts_with("-- no-transaction");
    let mut found = Vec::new();
    let concurrently = statements
        .iter()
        .any(|s| s.iter().any(|t| t == "concurrently"));
    if concurrently && !no_transaction {
        found.push(
            "CONCURRENTLY cannot run in a transaction: put it in a migration whose first line is \
             `-- no-transaction`"
                .to_owned(),
        );
    }
    if no_transaction && statements.len() > 1 {
        found.push(
            "a `-- no-transaction` migration must hold one statement: PostgreSQL runs the \
             statements of one query string in one transaction"
                .to_owned(),
        );
    }
    let mut created: HashSet<String> = HashSet::new();
    let mut not_valid: HashSet<String> = HashSet::new();
    for (n, s) in statements.iter().enumerate() {
        let text = s.join(" ");
        let mut problem = |what: String| found.push(format!("statement {}: {what}: {text}", n + 1));
        let words: Vec<&str> = s.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["create", rest @ ..] if table_created(rest).is_some() => {
                created.insert(table_created(rest).unwrap());
            }
            ["create", "index" | "unique", ..] => {
                let on = words.iter().position(|w| *w == "on");
                let table = on.and_then(|i| name_after(&words[i + 1..]));
                let fresh = table.as_ref().is_some_and(|t| created.contains(t));
                if !fresh && !words.contains(&"concurrently") {
                    problem(
                        "an index built without CONCURRENTLY blocks writes to its table".into(),
                    );
                }
            }
            ["drop", "index", ..] if !words.contains(&"concurrently") => {
                problem("DROP INDEX without CONCURRENTLY blocks writes to its table".into());
            }
            ["reindex", ..] if !words.contains(&"concurrently") => {
                problem("REINDEX without CONCURRENTLY blocks writes".into());
            }
            ["cluster", ..] | ["vacuum", "full", ..] | ["vacuum", "(", "full", ..] => {
                problem("rewrites the table under an exclusive lock".into());
            }
            ["alter", "table", rest @ ..] => {
                let Some(table) = name_after(rest) else {
                    continue;
                };
                if created.contains(&table) {
                    continue;
                }
                let start = rest
                    .iter()
                    .position(|w| w.trim_start_matches("public.") == table)
                    .map_or(rest.len(), |i| i + 1);
                for action in top_level(&rest[start..]) {
                    for what in action_problems(action, &mut not_valid) {
                        problem(what);
                    }
                }
            }
            _ => {}
        }
    }
    found
}

/// What one action of an `ALTER TABLE` on an existing table would hold up.
fn action_problems(action: &[&str], not_valid: &mut HashSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    let has = |seq: &[&str]| action.windows(seq.len()).any(|w| w == seq);
    match action {
        ["add", rest @ ..]
            if matches!(
                rest.first(),
                Some(&("constraint" | "check" | "unique" | "primary" | "foreign" | "exclude"))
            ) =>
        {
            let (name, body) = match rest {
                ["constraint", name, body @ ..] => (Some(*name), body),
                body => (None, body),
            };
            if !has(&["not", "valid"]) {
                problems.extend(constraint_problem(body));
            } else if let Some(name) = name {
                not_valid.insert(name.to_owned());
            }
        }
        ["add", rest @ ..] => {
            let column = skip(rest, &["column", "if", "not", "exists"]);
            let definition = column.get(1..).unwrap_or_default();
            problems.extend(column_problems(definition));
        }
        ["alter", rest @ ..] => {
            let column = skip(rest, &["column"]);
            let change = column.get(1..).unwrap_or_default();
            if matches!(change, ["type", ..] | ["set", "data", "type", ..]) {
                problems.push(
                    "ALTER COLUMN ... TYPE rewrites the table under an exclusive lock: add a new \
                     column instead"
                        .into(),
                );
            }
        }
        ["validate", "constraint", name, ..] if not_valid.contains(*name) => problems.push(
            "VALIDATE in the migration that added the constraint scans under the ADD's \
             exclusive lock: validate it in a later migration"
                .into(),
        ),
        _ => {}
    }
    problems
}

/// Why a table constraint added to an existing table without NOT VALID holds up writes.
fn constraint_problem(constraint: &[&str]) -> Option<String> {
    let using_index = constraint.windows(2).any(|w| w == ["using", "index"]);
    match constraint.first() {
        Some(&("check" | "foreign")) => Some(
            "a constraint added without NOT VALID is checked by a scan under an exclusive lock: \
             add it NOT VALID, then VALIDATE CONSTRAINT in a later migration"
                .into(),
        ),
        Some(&("unique" | "primary")) if !using_index => Some(
            "a unique or primary key constraint builds its index under an exclusive lock: build \
             the index CONCURRENTLY, then ADD CONSTRAINT ... USING INDEX"
                .into(),
        ),
        Some(&("unique" | "primary")) => None,
        _ => Some("a constraint without NOT VALID on an existing table".into()),
    }
}

/// Why adding a column so defined rewrites or scans an existing table.
fn column_problems(definition: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    let type_name = definition.first().copied().unwrap_or_default();
    let generated = definition.contains(&"generated");
    if type_name.ends_with("serial") || ["serial2", "serial4", "serial8"].contains(&type_name) {
        problems.push("a serial column rewrites the table to fill it".into());
    }
    if generated {
        problems
            .push("an identity or stored generated column rewrites the table to fill it".into());
    }
    let top = depth_zero(definition);
    for keyword in ["check", "references", "unique", "primary"] {
        if top.contains(&keyword) {
            problems.push(format!(
                "an inline {} is checked or indexed under the exclusive lock: add the column \
                 bare, then the constraint (NOT VALID, or USING INDEX)",
                keyword.to_uppercase()
            ));
        }
    }
    if let Some(at) = definition.iter().position(|w| *w == "default") {
        let stop = [
            "not",
            "null",
            "check",
            "references",
            "unique",
            "primary",
            "constraint",
            "generated",
            "collate",
        ];
        let mut depth = 0;
        let mut expression = Vec::new();
        for word in &definition[at + 1..] {
            if depth == 0 && stop.contains(word) {
                break;
            }
            depth += i32::from(*word == "(") - i32::from(*word == ")");
            expression.push(*word);
        }
        for (i, word) in expression.iter().enumerate() {
            let call = expression.get(i + 1) == Some(&"(");
            let cast = i > 0 && expression[i - 1] == "::";
            let is_name = word
                .chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_');
            if call && !cast && is_name && !STABLE_DEFAULTS.contains(word) {
                problems.push(format!(
                    "a default calling {word}() counts as volatile and rewrites the table: add \
                     the column without it and backfill in batches"
                ));
            }
        }
    }
    problems
}

/// The table a `CREATE ... TABLE` statement (after `create`) makes.
fn table_created(rest: &[&str]) -> Option<String> {
    let rest = skip(rest, &["temp", "temporary", "unlogged", "global", "local"]);
    match rest {
        ["table", after @ ..] => name_after(after),
        _ => None,
    }
}

/// The first name after optional `if [not] exists` and `only`, without its schema.
fn name_after(words: &[&str]) -> Option<String> {
    skip(words, &["if", "not", "exists", "only"])
        .first()
        .map(|w| w.trim_start_matches("public.").to_owned())
}

fn skip<'a, 'b>(mut words: &'a [&'b str], skipped: &[&str]) -> &'a [&'b str] {
    while let Some((first, rest)) = words.split_first() {
        if !skipped.contains(first) {
            break;
        }
        words = rest;
    }
    words
}

/// The words outside parentheses.
fn depth_zero<'a>(words: &[&'a str]) -> Vec<&'a str> {
    let mut depth = 0;
    let mut out = Vec::new();
    for word in words {
        match *word {
            "(" => depth += 1,
            ")" => depth -= 1,
            w if depth == 0 => out.push(w),
            _ => {}
        }
    }
    out
}

/// The comma-separated parts of a list, commas inside parentheses kept.
fn top_level<'a, 'b>(words: &'a [&'b str]) -> Vec<&'a [&'b str]> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, word) in words.iter().enumerate() {
        match *word {
            "(" => depth += 1,
            ")" => depth -= 1,
            "," if depth == 0 => {
                parts.push(&words[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&words[start..]);
    parts
}

/// A migration's statements as lower-case words and symbols: comments dropped, each string
/// literal (quoted or dollar-quoted) a `''`, quoted identifiers unquoted.
fn statements(sql: &str) -> Vec<Vec<String>> {
    let chars: Vec<char> = sql.chars().collect();
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let mut statements = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '-' && at(i + 1) == '-' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            loop {
                if i >= chars.len() {
                    break;
                }
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '\'' || c == '"' {
            let mut text = String::new();
            i += 1;
            while i < chars.len() {
                if chars[i] == c && at(i + 1) == c {
                    text.push(c);
                    i += 2;
                } else if chars[i] == c {
                    i += 1;
                    break;
                } else {
                    text.push(chars[i]);
                    i += 1;
                }
            }
            words.push(if c == '"' {
                text.to_lowercase()
            } else {
                "''".into()
            });
        } else if c == '$' && !at(i + 1).is_ascii_digit() {
            // a dollar-quoted string: $tag$ ... $tag$
            let tag_end = (i + 1..chars.len()).find(|&j| chars[j] == '$');
            let Some(tag_end) = tag_end else {
                break;
            };
            let tag: String = chars[i..=tag_end].iter().collect();
            let body: String = chars[tag_end + 1..].iter().collect();
            let close = body.find(&tag).map_or(body.len(), |b| b + tag.len());
            i = tag_end + 1 + body[..close].chars().count();
            words.push("''".into());
        } else if c == ';' {
            if !words.is_empty() {
                statements.push(std::mem::take(&mut words));
            }
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '$' | '.'))
            {
                i += 1;
            }
            words.push(chars[start..i].iter().collect::<String>().to_lowercase());
        } else if c == ':' && at(i + 1) == ':' {
            words.push("::".into());
            i += 2;
        } else {
            words.push(c.to_string());
            i += 1;
        }
    }
    if !words.is_empty() {
        statements.push(words);
    }
    statements
}
