//! deploy/snowflake: the SQL parsed with the `sqlparser` crate's Snowflake dialect.
//!
//! sqlparser (0.64) parses the standard parts of these files (USE, CREATE ROLE / DATABASE /
//! SCHEMA, GRANT, SHOW) but not Snowflake's Snowpark Container Services objects: CREATE COMPUTE
//! POOL, CREATE NETWORK RULE, CREATE EXTERNAL ACCESS INTEGRATION, CREATE IMAGE REPOSITORY, CREATE
//! SECRET ... TYPE = GENERIC_STRING, CREATE SERVICE ... FROM SPECIFICATION $$...$$, ALTER SECRET and
//! ALTER SERVICE all fail with "Expected: an object type ...". Those statements are still split and
//! tokenized by sqlparser's own tokenizer (so strings, `$$` blocks and comments are handled as
//! Snowflake does), and their shape is asserted on the tokens: the `KEY = value` properties each
//! must have. Every statement the parser does not handle must be one of those kinds; anything else
//! that fails to parse fails the test.

use std::collections::BTreeMap;

use serde_yaml_ng::Value;
use sqlparser::dialect::SnowflakeDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::support::{at, dump, read, seq_of, str_of};

/// Statement kinds sqlparser cannot parse, by their leading words.
const SPCS_KINDS: [&str; 8] = [
    "CREATE COMPUTE POOL",
    "CREATE NETWORK RULE",
    "CREATE EXTERNAL ACCESS INTEGRATION",
    "CREATE IMAGE REPOSITORY",
    "CREATE SECRET",
    "CREATE SERVICE",
    "ALTER SECRET",
    "ALTER SERVICE",
];

/// One statement of a file, tokenized.
#[derive(Debug)]
struct Stmt {
    text: String,
    /// Tokens without whitespace and comments.
    tokens: Vec<Token>,
    /// What sqlparser made of it, printed back; None where it cannot parse it.
    parsed: Option<String>,
}

impl Stmt {
    fn words(&self, n: usize) -> String {
        self.tokens
            .iter()
            .take(n)
            .map(|t| match t {
                Token::Word(w) => w.value.to_uppercase(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn kind(&self) -> Option<&'static str> {
        SPCS_KINDS
            .iter()
            .find(|k| self.words(k.split(' ').count()) == **k)
            .copied()
    }

    /// The dotted object name right after the leading words and an optional IF NOT EXISTS.
    fn object_name(&self) -> String {
        let kind = self.kind().expect("an SPCS statement");
        let mut i = kind.split(' ').count();
        if self.words(i + 3).ends_with("IF NOT EXISTS") {
            i += 3;
        }
        dotted_name(&self.tokens[i..]).0
    }

    /// `KEY = value` properties after the object name; a value is one token or a parenthesized
    /// list, printed back as text.
    fn properties(&self) -> BTreeMap<String, String> {
        let mut props = BTreeMap::new();
        let t = &self.tokens;
        for i in 0..t.len().saturating_sub(2) {
            let (Token::Word(key), Token::Eq) = (&t[i], &t[i + 1]) else {
                continue;
            };
            let value = if t[i + 2] == Token::LParen {
                let end = t[i + 2..]
                    .iter()
                    .position(|x| *x == Token::RParen)
                    .expect("a closing parenthesis");
                t[i + 2..=i + 2 + end]
                    .iter()
                    .map(Token::to_string)
                    .collect::<String>()
            } else {
                t[i + 2].to_string()
            };
            props.insert(key.value.to_uppercase(), value);
        }
        props
    }

    fn prop(&self, key: &str) -> String {
        self.properties()
            .remove(key)
            .unwrap_or_else(|| panic!("no {key} = ... in:\n{}", self.text))
    }

    /// The token right after the tokens `after` (space-separated, e.g. "SECRET_STRING =").
    fn after(&self, after: &str) -> &Token {
        let words: Vec<&str> = after.split(' ').collect();
        let i = (0..self.tokens.len())
            .find(|&i| {
                (0..words.len()).all(|j| {
                    self.tokens
                        .get(i + j)
                        .is_some_and(|t| t.to_string().eq_ignore_ascii_case(words[j]))
                })
            })
            .unwrap_or_else(|| panic!("no {after} in:\n{}", self.text));
        &self.tokens[i + words.len()]
    }
}

/// `a.b.c` at the start of `tokens`, and how many tokens it took.
fn dotted_name(tokens: &[Token]) -> (String, usize) {
    let mut parts = Vec::new();
    let mut i = 0;
    while let Some(Token::Word(w)) = tokens.get(i) {
        parts.push(w.value.clone());
        if tokens.get(i + 1) != Some(&Token::Period) {
            break;
        }
        i += 2;
    }
    assert!(!parts.is_empty(), "expected a name at {:?}", tokens.first());
    (parts.join("."), i + 1)
}

/// A SQL file split into statements with sqlparser's tokenizer, each parsed on its own.
fn statements(rel: &str) -> Vec<Stmt> {
    let sql = read(rel);
    let dialect = SnowflakeDialect {};
    let tokens = Tokenizer::new(&dialect, &sql)
        .tokenize()
        .unwrap_or_else(|e| panic!("{rel} does not tokenize: {e}"));
    let mut out = Vec::new();
    let mut current: Vec<Token> = Vec::new();
    for token in tokens {
        if token == Token::SemiColon {
            let text: String = current.iter().map(Token::to_string).collect();
            let significant: Vec<Token> = current
                .drain(..)
                .filter(|t| !matches!(t, Token::Whitespace(_)))
                .collect();
            if !significant.is_empty() {
                let parsed = Parser::parse_sql(&dialect, &text).ok().map(|s| {
                    s.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                });
                out.push(Stmt {
                    text: text.trim().to_owned(),
                    tokens: significant,
                    parsed,
                });
            }
        } else {
            current.push(token);
        }
    }
    assert!(
        current.iter().all(|t| matches!(t, Token::Whitespace(_))),
        "{rel} ends with a statement without a semicolon"
    );
    out
}

/// Every statement either parses, or is one of the SPCS kinds (asserted on tokens by the tests).
fn check_parse_coverage(rel: &str, stmts: &[Stmt]) {
    for s in stmts {
        if s.parsed.is_none() && s.kind().is_none() {
            let err = Parser::parse_sql(&SnowflakeDialect {}, &s.text).err();
            panic!("{rel}: sqlparser cannot parse this and it is no known SPCS statement ({err:?}):\n{}", s.text);
        }
    }
}

fn one<'a>(stmts: &'a [Stmt], kind: &str) -> &'a Stmt {
    let found: Vec<&Stmt> = stmts.iter().filter(|s| s.kind() == Some(kind)).collect();
    assert_eq!(found.len(), 1, "expected one {kind}");
    found[0]
}

fn parsed(stmts: &[Stmt]) -> Vec<&str> {
    stmts.iter().filter_map(|s| s.parsed.as_deref()).collect()
}

fn spec_file() -> Value {
    serde_yaml_ng::from_str(&read("deploy/snowflake/spec.yaml")).expect("spec.yaml is YAML")
}

#[test]
fn setup_sql_parses_or_is_a_known_spcs_statement() {
    let stmts = statements("deploy/snowflake/setup.sql");
    check_parse_coverage("setup.sql", &stmts);
    let ok = parsed(&stmts);
    for expected in [
        "USE ROLE ACCOUNTADMIN",
        "CREATE ROLE IF NOT EXISTS tether_runner_role",
        "CREATE DATABASE IF NOT EXISTS tether_db",
        "CREATE SCHEMA IF NOT EXISTS tether_db.runner",
        "GRANT USAGE, MONITOR ON COMPUTE POOL tether_pool TO ROLE tether_runner_role",
        "GRANT USAGE ON INTEGRATION tether_control_plane_access TO ROLE tether_runner_role",
        "USE ROLE tether_runner_role",
    ] {
        assert!(
            ok.contains(&expected),
            "sqlparser did not parse `{expected}`; it parsed {ok:#?}"
        );
    }
    // Ownership of the database and schema goes to the runner's role.
    assert!(
        ok.iter()
            .any(|s| s
                .starts_with("GRANT OWNERSHIP ON DATABASE tether_db TO ROLE tether_runner_role"))
    );
    // The objects, in an order that works: pool and egress before the service, secret before it too.
    let order: Vec<&str> = stmts.iter().filter_map(Stmt::kind).collect();
    assert_eq!(
        order,
        [
            "CREATE COMPUTE POOL",
            "CREATE NETWORK RULE",
            "CREATE EXTERNAL ACCESS INTEGRATION",
            "CREATE IMAGE REPOSITORY",
            "CREATE SECRET",
            "CREATE SERVICE"
        ]
    );
}

#[test]
fn the_secret_is_a_generic_string_and_the_spec_maps_it_to_oauth_client_secret() {
    let stmts = statements("deploy/snowflake/setup.sql");
    let secret = one(&stmts, "CREATE SECRET");
    assert_eq!(secret.prop("TYPE"), "GENERIC_STRING");
    assert!(matches!(
        secret.after("SECRET_STRING ="),
        Token::SingleQuotedString(_)
    ));
    let secret_name = secret.object_name();
    assert_eq!(secret_name, "tether_db.runner.tether_client_secret");

    let service = one(&stmts, "CREATE SERVICE");
    let Token::DollarQuotedString(spec) = service.after("FROM SPECIFICATION") else {
        panic!(
            "CREATE SERVICE takes its specification inline:\n{}",
            service.text
        );
    };
    let inline: Value = serde_yaml_ng::from_str(&spec.value).expect("the inline spec is YAML");
    assert_eq!(
        inline,
        spec_file(),
        "setup.sql's inline spec and spec.yaml must be the same"
    );

    let containers = seq_of(at(&inline, "spec.containers"), "containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let secrets = seq_of(at(c, "secrets"), "secrets");
    assert_eq!(secrets.len(), 1, "{}", dump(c));
    assert_eq!(
        str_of(at(&secrets[0], "snowflakeSecret.objectName"), "objectName"),
        secret_name
    );
    assert_eq!(
        at(&secrets[0], "secretKeyRef"),
        &Value::from("secret_string")
    );
    assert_eq!(
        at(&secrets[0], "envVarName"),
        &Value::from("OAUTH_CLIENT_SECRET")
    );
    let env = at(c, "env").as_mapping().expect("env is a map");
    for key in [
        "OAUTH_CLIENT_SECRET",
        "OAUTH_CLIENT_SECRET_FILE",
        "OAUTH_CLIENT_SECRET_ARN",
    ] {
        assert!(
            env.get(key).is_none(),
            "exactly one secret source: {key} in env"
        );
    }
    for key in ["TETHER_URL", "OAUTH_CLIENT_ID"] {
        str_of(at(c, &format!("env.{key}")), key);
    }
    assert_eq!(at(c, "env.TETHER_PLATFORM"), &Value::from("snowflake"));
    assert_eq!(seq_of(at(c, "args"), "args"), &vec![Value::from("runner")]);
    assert!(
        at(&inline, "spec").get("endpoints").is_none(),
        "no endpoints: nothing connects in"
    );

    // The image comes from the repository setup.sql creates.
    let repo = one(&stmts, "CREATE IMAGE REPOSITORY").object_name();
    let image = str_of(at(c, "image"), "image");
    assert!(
        image.starts_with(&format!("/{}/", repo.replace('.', "/"))),
        "{image} is not in {repo}"
    );
}

#[test]
fn the_service_runs_in_the_pool_with_egress_only_to_the_control_plane() {
    let stmts = statements("deploy/snowflake/setup.sql");
    let pool = one(&stmts, "CREATE COMPUTE POOL");
    for key in ["MIN_NODES", "MAX_NODES", "INSTANCE_FAMILY"] {
        pool.prop(key);
    }
    let rule = one(&stmts, "CREATE NETWORK RULE");
    assert_eq!(rule.prop("MODE"), "EGRESS");
    assert_eq!(rule.prop("TYPE"), "HOST_PORT");
    let eai = one(&stmts, "CREATE EXTERNAL ACCESS INTEGRATION");
    assert_eq!(
        eai.prop("ALLOWED_NETWORK_RULES"),
        format!("({})", rule.object_name())
    );
    assert_eq!(eai.prop("ENABLED"), "TRUE");

    let service = one(&stmts, "CREATE SERVICE");
    assert_eq!(service.object_name(), "tether_db.runner.tether_runner");
    assert_eq!(
        service.after("IN COMPUTE POOL").to_string(),
        pool.object_name()
    );
    assert_eq!(
        service.prop("EXTERNAL_ACCESS_INTEGRATIONS"),
        format!("({})", eai.object_name())
    );
    assert_eq!(
        service.prop("MIN_INSTANCES"),
        service.prop("MAX_INSTANCES"),
        "fixed instances"
    );

    // The network rule allows exactly the control plane host the runner is told to use.
    let url = str_of(
        at(&spec_file(), "spec.containers.0.env.TETHER_URL"),
        "TETHER_URL",
    )
    .to_owned();
    let host = url.trim_start_matches("https://").trim_end_matches('/');
    assert!(url.starts_with("https://"), "{url}");
    assert_eq!(rule.prop("VALUE_LIST"), format!("('{host}:443')"));
}

#[test]
fn refresh_sql_alters_the_secret_then_suspends_and_resumes_the_service() {
    let setup = statements("deploy/snowflake/setup.sql");
    let stmts = statements("deploy/snowflake/refresh.sql");
    check_parse_coverage("refresh.sql", &stmts);
    assert!(parsed(&stmts).contains(&"USE ROLE tether_runner_role"));

    let secret = one(&stmts, "ALTER SECRET");
    assert_eq!(
        secret.object_name(),
        one(&setup, "CREATE SECRET").object_name()
    );
    assert_eq!(
        secret.words(2 + 5 + 1),
        "ALTER SECRET TETHER_DB . RUNNER . TETHER_CLIENT_SECRET SET"
    );
    assert!(matches!(
        secret.after("SET SECRET_STRING ="),
        Token::SingleQuotedString(_)
    ));

    let service = one(&setup, "CREATE SERVICE").object_name();
    let actions: Vec<(String, String)> = stmts
        .iter()
        .filter(|s| s.kind() == Some("ALTER SERVICE"))
        .map(|s| {
            let (name, used) = dotted_name(&s.tokens[2..]);
            (name, s.tokens[2 + used].to_string().to_uppercase())
        })
        .collect();
    assert_eq!(
        actions,
        [
            (service.clone(), "SUSPEND".to_owned()),
            (service, "RESUME".to_owned())
        ],
        "suspend, then resume, the service setup.sql created"
    );
    let position = |k: &str| stmts.iter().position(|s| s.kind() == Some(k)).expect(k);
    assert!(
        position("ALTER SECRET") < position("ALTER SERVICE"),
        "the secret first, then the restart"
    );
}
