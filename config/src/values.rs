//! Pure checks and parsers for single values: names, prefixes, buckets, endpoints, sizes, age recipients and
//! PostgreSQL connection strings. Their errors never contain a value that could be a secret.

use crate::types::{AgeRecipient, SigningPublicKey, GIB, MIB};
use base64::Engine;

/// `[A-Za-z0-9][A-Za-z0-9_.-]{0,62}`.
pub(crate) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `""` or `a/b/`: no leading `/`, a trailing `/` added, no empty, `.` or `..` segments.
pub(crate) fn normalise_prefix(prefix: &str) -> Result<String, String> {
    let trimmed = prefix.trim_start_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let body = trimmed.strip_suffix('/').unwrap_or(trimmed);
    for segment in body.split('/') {
        match segment {
            "" => return Err("the prefix contains an empty segment (`//`)".into()),
            "." | ".." => return Err(format!("the prefix contains a `{segment}` segment")),
            s if s.chars().any(|c| c.is_control() || c == '\\') => {
                return Err("the prefix contains a control character or a backslash".into())
            }
            _ => {}
        }
    }
    Ok(format!("{body}/"))
}

/// S3 bucket naming rules (general purpose buckets).
pub(crate) fn check_bucket(name: &str) -> Result<(), &'static str> {
    if !(3..=63).contains(&name.len()) {
        return Err("must be 3 to 63 characters long");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    {
        return Err("only lowercase letters, digits, `-` and `.` are allowed");
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return Err("must start and end with a letter or digit");
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return Err("`.` must not be next to another `.` or a `-`");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err("must not look like an IP address");
    }
    Ok(())
}

/// `http://` or `https://`, with a host, and no user or password in it.
pub(crate) fn check_endpoint(url: &str) -> Result<(), String> {
    let url = url.trim();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| "the endpoint must start with https:// or http://".to_owned())?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("the endpoint must not contain credentials (the value is not shown)".into());
    }
    if authority.is_empty() {
        return Err("the endpoint has no host".into());
    }
    Ok(())
}

/// Parses `"16MiB"`, `"1 GiB"`, `"500MB"`, `"1048576"`.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let number: u64 = number.parse().map_err(|_| {
        format!(
            "\"{}\" does not start with a whole number",
            text.escape_debug()
        )
    })?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown unit \"{}\" (use B, KiB, MiB, GiB, TiB, or KB, MB, GB, TB)",
                other.escape_debug()
            ))
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("\"{}\" is too large", text.escape_debug()))
}

pub(crate) fn human_size(bytes: u64) -> String {
    if bytes >= GIB && bytes.is_multiple_of(GIB) {
        format!("{} GiB", bytes / GIB)
    } else if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// Parses one `recipients` entry. Errors never contain the entry: it may be a secret key pasted by mistake.
pub(crate) fn parse_recipient(text: &str) -> Result<AgeRecipient, (String, String)> {
    let text = text.trim();
    let upper = text.to_ascii_uppercase();
    if upper.starts_with("AGE-SECRET-KEY-") {
        return Err((
            "this is an age secret key (identity), not a public key (the value is not shown); the daemon must \
             never hold it"
                .into(),
            "replace it with the matching public key, which `age-keygen -y KEYFILE` prints (it starts with \
             \"age1\"), keep the secret key offline, and rotate it if this file was shared"
                .into(),
        ));
    }
    if upper.starts_with("AGE-PLUGIN-") {
        return Err((
            "this is an age plugin identity, not a recipient (the value is not shown)".into(),
            "use an age X25519 public key (\"age1…\", from `age-keygen -y KEYFILE`)".into(),
        ));
    }
    if text.starts_with("ssh-") {
        return Err((
            "SSH keys are not supported as recipients".into(),
            "use an age X25519 public key (\"age1…\", from `age-keygen -y KEYFILE`)".into(),
        ));
    }
    let problem = if upper.starts_with("AGE1") {
        "not a valid age public key (bad length or checksum; the value is not shown)"
    } else {
        "not an age public key (the value is not shown)"
    };
    text.parse::<age::x25519::Recipient>()
        .map(|key| AgeRecipient {
            text: text.to_owned(),
            key,
        })
        .map_err(|_| {
            (
                problem.into(),
                "recipients are age X25519 public keys starting with \"age1\" (`age-keygen -y KEYFILE` prints one)"
                    .into(),
            )
        })
}

/// What a postgres connection string tells us.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PgUrlInfo {
    pub dbname: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PgUrlProblem {
    Password,
    NotPostgres,
    Empty,
}

impl PgUrlProblem {
    /// Message and hint. Never includes the URL: it may hold a password.
    pub(crate) fn describe(&self) -> (String, String) {
        match self {
            PgUrlProblem::Password => (
                "the connection string contains a password (the value is not shown)".into(),
                "remove the password from `url` and give it with `password_file` or `password_env`, or a \
                 PGPASSFILE (~/.pgpass); then change the password, since it was stored in this file"
                    .into(),
            ),
            PgUrlProblem::NotPostgres => (
                "not a PostgreSQL connection string (the value is not shown)".into(),
                "use a URL like \"postgres://backup@db.internal:5432/app\" or key=value pairs like \"host=db \
                 user=backup dbname=app\""
                    .into(),
            ),
            PgUrlProblem::Empty => (
                "the connection string is empty".into(),
                "use a URL like \"postgres://backup@db.internal:5432/app\"".into(),
            ),
        }
    }
}

/// Looks for a password and the database name in a libpq URL or `key=value` connection string.
pub(crate) fn inspect_pg_url(url: &str) -> Result<PgUrlInfo, PgUrlProblem> {
    let url = url.trim();
    if url.is_empty() {
        return Err(PgUrlProblem::Empty);
    }
    let lower = url.to_ascii_lowercase();
    let rest = ["postgresql://", "postgres://"]
        .iter()
        .find(|scheme| lower.starts_with(*scheme))
        .map(|scheme| &url[scheme.len()..]);
    let Some(rest) = rest else {
        if url.contains('=') {
            return inspect_conninfo(url);
        }
        return Err(PgUrlProblem::NotPostgres);
    };
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let before_query = before_query.split('#').next().unwrap_or_default();
    let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        if userinfo.contains(':') {
            return Err(PgUrlProblem::Password);
        }
    }
    let mut dbname = (!path.is_empty()).then(|| percent_decode(path));
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match percent_decode(key).as_str() {
            "password" => return Err(PgUrlProblem::Password),
            "dbname" if !value.is_empty() => dbname = Some(percent_decode(value)),
            _ => {}
        }
    }
    Ok(PgUrlInfo { dbname })
}

/// `host=db user=backup dbname='my app'`.
pub(crate) fn inspect_conninfo(text: &str) -> Result<PgUrlInfo, PgUrlProblem> {
    let mut dbname = None;
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(PgUrlProblem::NotPostgres);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(PgUrlProblem::NotPostgres);
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        match key.as_str() {
            "password" => return Err(PgUrlProblem::Password),
            "dbname" if !value.is_empty() => dbname = Some(value),
            _ => {}
        }
    }
    Ok(PgUrlInfo { dbname })
}

pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The prefix of a signing public key in the configuration.
pub(crate) const SIGNING_KEY_PREFIX: &str = "ed25519:";

/// Parses one `signing_public_keys` entry: `ed25519:` + standard base64 of 32 bytes. Errors never contain the
/// entry: it may be a private key pasted by mistake.
pub(crate) fn parse_signing_public_key(text: &str) -> Result<SigningPublicKey, (String, String)> {
    const DERIVE: &str = "derive it from the daemon's key with `openssl pkey -in signing.pem -pubout -outform DER | \
                          tail -c 32 | base64` and write \"ed25519:\" before it (`lifeboat keygen --signing` \
                          prints it too)";
    let text = text.trim();
    if text.contains("PRIVATE KEY") {
        return Err((
            "this is a private key, not a public key (the value is not shown); readers must never hold it".into(),
            format!("replace it with the public key: {DERIVE}; rotate the key if this file was shared"),
        ));
    }
    let Some(encoded) = text.strip_prefix(SIGNING_KEY_PREFIX) else {
        return Err((
            "not an Ed25519 signing public key: it must start with \"ed25519:\" (the value is not shown)".into(),
            DERIVE.into(),
        ));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| {
            (
                "the text after \"ed25519:\" is not standard base64 (the value is not shown)"
                    .into(),
                DERIVE.to_owned(),
            )
        })?;
    let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        (
            format!(
                "an Ed25519 public key is 32 bytes, this one decodes to {} (the value is not shown)",
                bytes.len()
            ),
            format!("{DERIVE}; `tail -c 32` keeps only the raw key of the DER document"),
        )
    })?;
    Ok(SigningPublicKey {
        text: text.to_owned(),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_object_key_rules() {
        for ok in ["a", "main-db", "db.v2", "A_1", &"x".repeat(63)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", ".a", "_a", "a b", "a/b", "é", &"x".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size(" 1 gib "), Ok(1 << 30));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("16M").is_err());
        assert!(parse_size("1.5GiB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999TiB").is_err());
        assert_eq!(human_size(5 << 30), "5 GiB");
        assert_eq!(human_size(3 << 20), "3 MiB");
        assert_eq!(human_size(1000), "1000 bytes");
    }

    #[test]
    fn postgres_urls_are_inspected() {
        let db = |url: &str| inspect_pg_url(url).map(|i| i.dbname);
        assert_eq!(db("postgres://backup@db:5432/app"), Ok(Some("app".into())));
        assert_eq!(
            db("POSTGRESQL://db/app?sslmode=require"),
            Ok(Some("app".into()))
        );
        assert_eq!(db("postgres:///postgres"), Ok(Some("postgres".into())));
        assert_eq!(db("postgres://db"), Ok(None));
        assert_eq!(db("postgres://db/"), Ok(None));
        assert_eq!(db("postgres://h1:5432,h2:5433/app"), Ok(Some("app".into())));
        assert_eq!(
            db("postgres://%2Fvar%2Frun%2Fpostgresql/app"),
            Ok(Some("app".into()))
        );
        assert_eq!(
            db("host=db dbname = 'my \\'app' user=x"),
            Ok(Some("my 'app".into()))
        );
        assert_eq!(db("host=db"), Ok(None));
        assert_eq!(db("postgres://u:p@h/db"), Err(PgUrlProblem::Password));
        assert_eq!(db("postgres://u:@h/db"), Err(PgUrlProblem::Password));
        assert_eq!(
            db("postgres://u@h/db?connect_timeout=5&password=x"),
            Err(PgUrlProblem::Password)
        );
        assert_eq!(db("user=u password='a b'"), Err(PgUrlProblem::Password));
        assert_eq!(db("mysql://u@h/db"), Err(PgUrlProblem::NotPostgres));
        assert_eq!(db("db.internal"), Err(PgUrlProblem::NotPostgres));
        assert_eq!(
            db("host=db dbname='unterminated"),
            Err(PgUrlProblem::NotPostgres)
        );
        assert_eq!(db("  "), Err(PgUrlProblem::Empty));
        // A user name may contain `@` when encoded; only a `:` before the last `@` is a password.
        assert_eq!(db("postgres://me%40corp@h/db"), Ok(Some("db".into())));
    }

    #[test]
    fn prefixes_are_normalised() {
        assert_eq!(normalise_prefix(""), Ok(String::new()));
        assert_eq!(normalise_prefix("//"), Ok(String::new()));
        assert_eq!(normalise_prefix("a"), Ok("a/".into()));
        assert_eq!(normalise_prefix("/a/b"), Ok("a/b/".into()));
        assert!(normalise_prefix("a//b/").is_err());
        assert!(normalise_prefix("a/./b").is_err());
        assert!(normalise_prefix("..").is_err());
        assert!(normalise_prefix("a\\b").is_err());
    }

    #[test]
    fn buckets_and_endpoints_are_checked() {
        assert!(check_bucket("acme-backups").is_ok());
        assert!(check_bucket("a.b.c").is_ok());
        assert!(check_bucket("a-.b").is_err());
        assert!(check_bucket("acme-").is_err());
        assert!(check_endpoint("https://s3.example.com").is_ok());
        assert!(check_endpoint("http://127.0.0.1:9000/").is_ok());
        assert!(check_endpoint("https://u:p@s3.example.com").is_err());
        assert!(check_endpoint("s3.example.com").is_err());
    }
}
