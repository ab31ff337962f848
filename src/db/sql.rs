//! Reading SQL text without a parser: the operation (`SELECT`, `INSERT`, …), the first table
//! it names, and the text with every literal value replaced by `?`.
//!
//! The scanner knows the lexical structure shared by PostgreSQL, SQLite and MySQL (strings,
//! quoted identifiers, comments, numbers, placeholders, dollar quoting), which is all the
//! sanitiser needs: a value can only be a literal token, and every literal token is replaced.
//!
//! - string literals, with their prefixes (`'x'`, `E'x'`, `N'x'`, `U&'x'`, `X'ff'`, `B'01'`)
//!   and PostgreSQL's dollar-quoted strings (`$$x$$`, `$tag$x$tag$`) become `?`; an
//!   unterminated one is replaced to the end of the text;
//! - numbers (`42`, `-1.5e3` keeps its `-`, `0x1F`, `.5`) become `?`;
//! - double-quoted text is an identifier for PostgreSQL and is kept; for every other system
//!   (MySQL reads it as a string, SQLite may) it is replaced;
//! - placeholders (`$1`, `?`, `?2`, `:name`, `@name`) and backquoted identifiers are kept;
//! - comments are removed (they can carry anything), runs of white space become one space;
//! - a list after `IN` holding only values and placeholders becomes `IN (?)`.

use std::borrow::Cow;

use crate::core::names::TRUNCATED;

/// The longest sanitised text kept (bytes, before the truncation marker).
pub(crate) const MAX_TEXT: usize = 2048;

/// The operations recognised as a statement's first keyword (`db.operation.name`); any other
/// first word is `_OTHER`, so the label's values stay a fixed set.
const OPERATIONS: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "MERGE",
    "UPSERT",
    "REPLACE",
    "VALUES",
    "CREATE",
    "DROP",
    "ALTER",
    "TRUNCATE",
    "BEGIN",
    "START",
    "COMMIT",
    "END",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
    "SET",
    "SHOW",
    "EXPLAIN",
    "ANALYZE",
    "VACUUM",
    "PRAGMA",
    "CALL",
    "EXEC",
    "EXECUTE",
    "COPY",
    "LISTEN",
    "NOTIFY",
    "UNLISTEN",
    "GRANT",
    "REVOKE",
    "LOCK",
    "DECLARE",
    "FETCH",
    "CLOSE",
    "PREPARE",
    "DEALLOCATE",
    "REINDEX",
    "REFRESH",
    "ATTACH",
    "DETACH",
];

/// What a statement's text says about it, for labels and span attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Statement<'a> {
    /// `db.operation.name`: the statement's keyword in upper case (`SELECT`, …), the main
    /// statement's after a `WITH` clause, `_OTHER` for another word, empty for no word.
    pub(crate) operation: &'static str,
    /// `db.collection.name`: the first table the statement names, without quotes.
    pub(crate) collection: Option<Cow<'a, str>>,
}

/// A lexical token: its kind and where it lies in the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A keyword or unquoted identifier.
    Word,
    /// `"…"`, `` `…` ``: an identifier (or, `"…"` outside PostgreSQL, maybe a string).
    Quoted,
    /// A string literal of any form.
    Str,
    Number,
    Placeholder,
    Comment,
    Space,
    /// Any other single character (operators, punctuation, parentheses).
    Punct,
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// Backslash escapes in plain strings (MySQL).
    backslash: bool,
}

fn is_word_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str, backslash: bool) -> Self {
        Scanner {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            backslash,
        }
    }

    fn peek(&self, at: usize) -> Option<u8> {
        self.bytes.get(self.pos + at).copied()
    }

    /// Advances past a `'…'` string starting at `self.pos` (`''` and, when asked, `\'` are
    /// escapes); to the end when it is not closed.
    fn skip_string(&mut self, backslash: bool) {
        self.pos += 1;
        while let Some(&b) = self.bytes.get(self.pos) {
            self.pos += 1;
            if b == b'\\' && backslash {
                self.pos += 1;
            } else if b == b'\'' {
                if self.bytes.get(self.pos) == Some(&b'\'') {
                    self.pos += 1;
                } else {
                    return;
                }
            }
        }
        self.pos = self.pos.min(self.bytes.len());
    }

    /// Advances past a quoted identifier closed by `close` (doubled to escape it).
    fn skip_quoted(&mut self, close: u8) {
        self.pos += 1;
        while let Some(&b) = self.bytes.get(self.pos) {
            self.pos += 1;
            if b == close {
                if self.bytes.get(self.pos) == Some(&close) {
                    self.pos += 1;
                } else {
                    return;
                }
            }
        }
    }

    /// At `$`: a dollar-quoted string's opening tag (`$$`, `$tag$`), its length.
    fn dollar_tag(&self) -> Option<usize> {
        let rest = &self.bytes[self.pos + 1..];
        if rest.first() == Some(&b'$') {
            return Some(2);
        }
        if !rest
            .first()
            .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
        {
            return None;
        }
        let len = rest
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))?;
        (rest[len] == b'$').then_some(len + 2)
    }

    fn next_token(&mut self) -> Option<(Kind, usize, usize)> {
        let start = self.pos;
        let b = *self.bytes.get(start)?;
        let kind = match b {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0c => {
                while self.peek(0).is_some_and(|b| b.is_ascii_whitespace()) {
                    self.pos += 1;
                }
                Kind::Space
            }
            b'-' if self.peek(1) == Some(b'-') => {
                while self.peek(0).is_some_and(|b| b != b'\n') {
                    self.pos += 1;
                }
                Kind::Comment
            }
            b'#' if self.backslash => {
                // MySQL's other line comment.
                while self.peek(0).is_some_and(|b| b != b'\n') {
                    self.pos += 1;
                }
                Kind::Comment
            }
            b'/' if self.peek(1) == Some(b'*') => {
                self.pos += 2;
                match self.text[self.pos..].find("*/") {
                    Some(end) => self.pos += end + 2,
                    None => self.pos = self.bytes.len(),
                }
                Kind::Comment
            }
            b'\'' => {
                self.skip_string(self.backslash);
                Kind::Str
            }
            b'"' => {
                self.skip_quoted(b'"');
                Kind::Quoted
            }
            b'`' => {
                self.skip_quoted(b'`');
                Kind::Quoted
            }
            b'$' => {
                if self.peek(1).is_some_and(|b| b.is_ascii_digit()) {
                    self.pos += 1;
                    while self.peek(0).is_some_and(|b| b.is_ascii_digit()) {
                        self.pos += 1;
                    }
                    Kind::Placeholder
                } else if let Some(tag_len) = self.dollar_tag() {
                    let tag = &self.text[start..start + tag_len];
                    self.pos += tag_len;
                    match self.text[self.pos..].find(tag) {
                        Some(end) => self.pos += end + tag_len,
                        None => self.pos = self.bytes.len(),
                    }
                    Kind::Str
                } else {
                    self.pos += 1;
                    Kind::Punct
                }
            }
            b'?' => {
                self.pos += 1;
                while self.peek(0).is_some_and(|b| b.is_ascii_digit()) {
                    self.pos += 1;
                }
                Kind::Placeholder
            }
            b':' | b'@' if self.peek(1).is_some_and(is_word_start) => {
                self.pos += 1;
                while self.peek(0).is_some_and(is_word) {
                    self.pos += 1;
                }
                Kind::Placeholder
            }
            b'0'..=b'9' => {
                self.skip_number();
                Kind::Number
            }
            b'.' if self.peek(1).is_some_and(|b| b.is_ascii_digit()) => {
                self.skip_number();
                Kind::Number
            }
            b if is_word_start(b) => {
                while self.peek(0).is_some_and(is_word) {
                    self.pos += 1;
                }
                let word = &self.bytes[start..self.pos];
                let prefix = |w: &[u8]| {
                    w.len() == 1 && matches!(w[0].to_ascii_uppercase(), b'E' | b'X' | b'B' | b'N')
                };
                if self.peek(0) == Some(b'\'') && prefix(word) {
                    // E'…' (backslash escapes), X'…', B'…', N'…'.
                    self.skip_string(word[0].eq_ignore_ascii_case(&b'E') || self.backslash);
                    Kind::Str
                } else if word.eq_ignore_ascii_case(b"U")
                    && self.peek(0) == Some(b'&')
                    && self.peek(1) == Some(b'\'')
                {
                    self.pos += 1;
                    self.skip_string(false);
                    Kind::Str
                } else {
                    Kind::Word
                }
            }
            _ => {
                // One character (a whole UTF-8 sequence for non-ASCII, which `is_word_start`
                // takes anyway).
                self.pos += 1;
                Kind::Punct
            }
        };
        Some((kind, start, self.pos))
    }

    /// Digits, a fraction, an exponent, hex (`0x…`) and `_` separators: one number.
    fn skip_number(&mut self) {
        if self.peek(0) == Some(b'0') && matches!(self.peek(1), Some(b'x' | b'X')) {
            self.pos += 2;
        }
        while let Some(b) = self.peek(0) {
            let exponent_sign = matches!(b, b'+' | b'-')
                && self.pos > 0
                && matches!(self.bytes[self.pos - 1], b'e' | b'E')
                && self.bytes[..self.pos]
                    .iter()
                    .rev()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'.')
                    .all(|b| !b.is_ascii_alphabetic() || b.eq_ignore_ascii_case(&b'e'));
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || exponent_sign {
                self.pos += 1;
            } else {
                break;
            }
        }
    }
}

impl Iterator for Scanner<'_> {
    type Item = (Kind, usize, usize);

    fn next(&mut self) -> Option<Self::Item> {
        self.next_token()
    }
}

/// The operation and first table of `sql`.
pub(crate) fn statement(sql: &str) -> Statement<'_> {
    let mut words = Words::new(sql);
    let Some(first) = words.next_word() else {
        return Statement {
            operation: "",
            collection: None,
        };
    };
    let mut operation = operation_of(first);
    if first.eq_ignore_ascii_case("WITH") {
        // The main statement follows the common table expressions, at depth 0.
        operation = "_OTHER";
        while let Some(w) = words.next_word() {
            if words.depth == 0 {
                let op = operation_of(w);
                if matches!(op, "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "MERGE") {
                    operation = op;
                    break;
                }
            }
        }
    }
    let collection = match operation {
        "SELECT" => words.after(&["FROM"]),
        "DELETE" => words.after(&["FROM"]).map(|w| words.skip_modifiers(w)),
        "INSERT" | "REPLACE" | "UPSERT" | "MERGE" => words.after(&["INTO"]),
        "UPDATE" => {
            let mut w = words.next_word();
            // UPDATE OR REPLACE t (SQLite), UPDATE ONLY t, UPDATE LOW_PRIORITY IGNORE t.
            while let Some(word) = w {
                if ["OR", "ONLY", "LOW_PRIORITY", "IGNORE"]
                    .iter()
                    .any(|m| word.eq_ignore_ascii_case(m))
                {
                    if word.eq_ignore_ascii_case("OR") {
                        words.next_word();
                    }
                    w = words.next_word();
                } else {
                    break;
                }
            }
            w.map(|w| words.identifier_from(w))
        }
        "CREATE" | "DROP" | "ALTER" => words
            .after(&["TABLE", "VIEW"])
            .map(|w| words.skip_modifiers(w)),
        "TRUNCATE" | "COPY" => words.next_word().map(|w| words.skip_modifiers(w)),
        _ => None,
    };
    Statement {
        operation,
        collection: collection.and_then(unquote),
    }
}

fn operation_of(word: &str) -> &'static str {
    OPERATIONS
        .iter()
        .find(|op| op.eq_ignore_ascii_case(word))
        .copied()
        .unwrap_or(if word.is_empty() { "" } else { "_OTHER" })
}

/// The words of a statement, with the parenthesis depth, skipping literals and comments.
struct Words<'a> {
    scanner: Scanner<'a>,
    depth: i32,
    /// The token after the last word returned, when it was read to finish an identifier.
    pending: Option<(Kind, usize, usize)>,
}

impl<'a> Words<'a> {
    fn new(sql: &'a str) -> Self {
        Words {
            scanner: Scanner::new(sql, false),
            depth: 0,
            pending: None,
        }
    }

    fn token(&mut self) -> Option<(Kind, usize, usize)> {
        self.pending.take().or_else(|| self.scanner.next())
    }

    /// The next word or quoted identifier.
    fn next_word(&mut self) -> Option<&'a str> {
        while let Some((kind, start, end)) = self.token() {
            let text = &self.scanner.text[start..end];
            match kind {
                Kind::Word | Kind::Quoted => return Some(text),
                Kind::Punct if text == "(" => self.depth += 1,
                Kind::Punct if text == ")" => self.depth -= 1,
                Kind::Punct if text == ";" => return None,
                _ => {}
            }
        }
        None
    }

    /// The identifier after the first of `keywords` at depth 0 (`None` when a parenthesis,
    /// a subquery, follows it).
    fn after(&mut self, keywords: &[&str]) -> Option<&'a str> {
        loop {
            let w = self.next_word()?;
            if self.depth == 0 && keywords.iter().any(|k| w.eq_ignore_ascii_case(k)) {
                let depth = self.depth;
                let next = self.next_word()?;
                return (self.depth == depth).then(|| self.identifier_from(next));
            }
        }
    }

    /// Skips `IF [NOT] EXISTS` and `ONLY` before a table name.
    fn skip_modifiers(&mut self, mut w: &'a str) -> &'a str {
        loop {
            if ["IF", "NOT", "EXISTS", "ONLY", "TABLE"]
                .iter()
                .any(|m| w.eq_ignore_ascii_case(m))
            {
                match self.next_word() {
                    Some(next) => w = next,
                    None => return "",
                }
            } else {
                return self.identifier_from(w);
            }
        }
    }

    /// A (possibly qualified: `schema.table`) identifier starting with the word `first`.
    fn identifier_from(&mut self, first: &'a str) -> &'a str {
        let text = self.scanner.text;
        let start = first.as_ptr() as usize - text.as_ptr() as usize;
        let mut end = start + first.len();
        while let Some(dot) = self.scanner.next_token() {
            if dot.0 == Kind::Punct && &text[dot.1..dot.2] == "." {
                match self.scanner.next_token() {
                    Some((Kind::Word | Kind::Quoted, _, e)) => end = e,
                    other => {
                        self.pending = other;
                        break;
                    }
                }
            } else {
                self.pending = Some(dot);
                break;
            }
        }
        &text[start..end]
    }
}

/// An identifier without its quotes (`"public"."users"` → `public.users`); `None` for an
/// empty one.
fn unquote(ident: &str) -> Option<Cow<'_, str>> {
    if ident.is_empty() {
        return None;
    }
    if !ident.contains(['"', '`']) {
        return Some(Cow::Borrowed(ident));
    }
    let mut out = String::with_capacity(ident.len());
    for (kind, start, end) in Scanner::new(ident, false) {
        let t = &ident[start..end];
        match kind {
            Kind::Quoted if t.len() >= 2 => {
                let q = &t[..1];
                out.push_str(&t[1..t.len() - 1].replace(&format!("{q}{q}"), q));
            }
            _ => out.push_str(t),
        }
    }
    (!out.is_empty()).then_some(Cow::Owned(out))
}

/// `sql` with every literal value replaced by `?`, comments removed, white space collapsed,
/// value-only `IN` lists shortened to `IN (?)`, and cut at [`MAX_TEXT`] bytes. `system` is the
/// `db.system.name`: double quotes delimit identifiers only for `postgresql`, and backslashes
/// escape in strings for `mysql`/`mariadb`.
pub(crate) fn sanitize(sql: &str, system: &str) -> String {
    let mysql = matches!(system, "mysql" | "mariadb");
    let double_quoted_is_identifier = system == "postgresql";
    let mut out = String::with_capacity(sql.len().min(MAX_TEXT) + 8);
    // Where the current `IN (` list began in `out`, and whether it holds only values so far.
    let mut in_list: Option<(usize, bool)> = None;
    let mut last_word_in = false;
    for (kind, start, end) in Scanner::new(sql, mysql) {
        let text = &sql[start..end];
        let piece = match kind {
            Kind::Space | Kind::Comment => {
                if !out.is_empty() && !out.ends_with(' ') {
                    out.push(' ');
                }
                continue;
            }
            Kind::Str | Kind::Number => "?",
            Kind::Quoted if text.starts_with('"') && !double_quoted_is_identifier => "?",
            _ => text,
        };
        match (kind, piece) {
            (Kind::Punct, "(") if last_word_in => {
                out.push('(');
                in_list = Some((out.len(), true));
                last_word_in = false;
                continue;
            }
            (Kind::Punct, ")") => {
                if let Some((from, true)) = in_list.take() {
                    out.truncate(from);
                    out.push('?');
                }
            }
            (Kind::Str | Kind::Number | Kind::Placeholder, _) | (Kind::Punct, ",") => {}
            (Kind::Quoted, "?") => {}
            _ => {
                if let Some((_, values)) = &mut in_list {
                    *values = false;
                }
            }
        }
        last_word_in = kind == Kind::Word && text.eq_ignore_ascii_case("IN");
        out.push_str(piece);
        if out.len() > MAX_TEXT {
            let mut cut = MAX_TEXT;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push_str(TRUNCATED);
            return out;
        }
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmt(sql: &str) -> (&'static str, Option<String>) {
        let s = statement(sql);
        (s.operation, s.collection.map(|c| c.into_owned()))
    }

    #[test]
    fn operations_and_collections() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("SELECT * FROM users WHERE id = $1", "SELECT", Some("users")),
            (
                "select id from public.users u join t on true",
                "SELECT",
                Some("public.users"),
            ),
            ("SELECT 1", "SELECT", None),
            ("SELECT pg_sleep(0.2)", "SELECT", None),
            (
                "SELECT EXTRACT(YEAR FROM ts) FROM events",
                "SELECT",
                Some("events"),
            ),
            ("SELECT * FROM (SELECT * FROM t) s", "SELECT", None),
            (
                "SELECT * FROM \"Order Items\" WHERE x = 1",
                "SELECT",
                Some("Order Items"),
            ),
            (
                "SELECT * FROM \"public\".\"users\"",
                "SELECT",
                Some("public.users"),
            ),
            ("SELECT * FROM `users`", "SELECT", Some("users")),
            (
                "  /* hi */ -- c\n INSERT INTO users (email) VALUES (?)",
                "INSERT",
                Some("users"),
            ),
            (
                "INSERT OR REPLACE INTO kv VALUES (1, 2)",
                "INSERT",
                Some("kv"),
            ),
            ("REPLACE INTO kv VALUES (1, 2)", "REPLACE", Some("kv")),
            (
                "UPDATE users SET name = 'x' WHERE id = 1",
                "UPDATE",
                Some("users"),
            ),
            ("UPDATE OR IGNORE users SET a = 1", "UPDATE", Some("users")),
            (
                "UPDATE ONLY app.users SET a = 1",
                "UPDATE",
                Some("app.users"),
            ),
            (
                "DELETE FROM sessions WHERE expires < now()",
                "DELETE",
                Some("sessions"),
            ),
            ("delete from only sessions", "DELETE", Some("sessions")),
            (
                "CREATE TABLE IF NOT EXISTS projects (id INTEGER)",
                "CREATE",
                Some("projects"),
            ),
            (
                "CREATE TEMP TABLE scratch (id INT)",
                "CREATE",
                Some("scratch"),
            ),
            ("CREATE INDEX users_email ON users (email)", "CREATE", None),
            ("DROP TABLE IF EXISTS projects", "DROP", Some("projects")),
            (
                "ALTER TABLE ONLY users ADD COLUMN x INT",
                "ALTER",
                Some("users"),
            ),
            ("TRUNCATE TABLE logs", "TRUNCATE", Some("logs")),
            ("TRUNCATE logs", "TRUNCATE", Some("logs")),
            (
                "WITH recent AS (SELECT * FROM payments WHERE ts > $1) SELECT count(*) FROM recent",
                "SELECT",
                Some("recent"),
            ),
            (
                "WITH x AS (SELECT 1) INSERT INTO audit SELECT * FROM x",
                "INSERT",
                Some("audit"),
            ),
            ("BEGIN", "BEGIN", None),
            ("commit", "COMMIT", None),
            ("PRAGMA foreign_keys = ON", "PRAGMA", None),
            ("FROBNICATE the table", "_OTHER", None),
            ("", "", None),
            ("  -- only a comment", "", None),
            ("(SELECT 1)", "SELECT", None),
        ];
        for (sql, op, table) in cases {
            assert_eq!(
                stmt(sql),
                (*op, table.map(str::to_string)),
                "statement of {sql:?}"
            );
        }
    }

    #[test]
    fn literals_are_replaced_and_placeholders_kept() {
        let cases: &[(&str, &str)] = &[
            (
                "SELECT * FROM users WHERE email = 'ada@example.com' AND password = 'hunter2'",
                "SELECT * FROM users WHERE email = ? AND password = ?",
            ),
            (
                "SELECT * FROM t WHERE id = $1 AND n = $2",
                "SELECT * FROM t WHERE id = $1 AND n = $2",
            ),
            (
                "SELECT * FROM t WHERE a = ? AND b = ?3",
                "SELECT * FROM t WHERE a = ? AND b = ?3",
            ),
            (
                "SELECT * FROM t WHERE a = :email OR b = @p1",
                "SELECT * FROM t WHERE a = :email OR b = @p1",
            ),
            (
                "SELECT 42, -1.5e3, .5, 1e-7, 0x1F, 1_000",
                "SELECT ?, -?, ?, ?, ?, ?",
            ),
            ("SELECT t1.c2 FROM t1", "SELECT t1.c2 FROM t1"),
            (
                "SELECT 'it''s', E'a\\'b', N'x', U&'d\\0061t', X'DEADBEEF', x'00', B'0101'",
                "SELECT ?, ?, ?, ?, ?, ?, ?",
            ),
            (
                "SELECT $$secret$$, $tag$ a $ b $tag$, $1",
                "SELECT ?, ?, $1",
            ),
            ("SELECT 'unterminated secret", "SELECT ?"),
            (
                "SELECT amount::numeric FROM p",
                "SELECT amount::numeric FROM p",
            ),
            (
                "SELECT * FROM t WHERE id IN (1, 2, 3)",
                "SELECT * FROM t WHERE id IN (?)",
            ),
            (
                "SELECT * FROM t WHERE id in ($1, $2, $3)",
                "SELECT * FROM t WHERE id in (?)",
            ),
            (
                "SELECT * FROM t WHERE s IN ('a','b')",
                "SELECT * FROM t WHERE s IN (?)",
            ),
            (
                "SELECT * FROM t WHERE id IN (SELECT id FROM u WHERE n = 5)",
                "SELECT * FROM t WHERE id IN (SELECT id FROM u WHERE n = ?)",
            ),
            (
                "SELECT *\n  FROM t\t-- the email: a@b.c\n  WHERE x = 1 /* 4111 1111 */",
                "SELECT * FROM t WHERE x = ?",
            ),
            (
                "INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y')",
                "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)",
            ),
            (
                "SELECT `col` FROM `t` WHERE c = 0",
                "SELECT `col` FROM `t` WHERE c = ?",
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(sanitize(sql, "postgresql"), *want, "sanitize({sql:?})");
        }
    }

    #[test]
    fn double_quotes_are_identifiers_only_for_postgresql() {
        let sql = "SELECT \"name\" FROM \"users\" WHERE \"email\" = \"ada@example.com\"";
        // PostgreSQL never reads a value in double quotes: they are kept, as identifiers.
        assert_eq!(sanitize(sql, "postgresql"), sql);
        for system in ["sqlite", "mysql", "other_sql"] {
            let out = sanitize(sql, system);
            assert!(!out.contains("ada@example.com"), "{system}: {out}");
            assert_eq!(out, "SELECT ? FROM ? WHERE ? = ?");
        }
        // MySQL strings take backslash escapes: the quote does not end the literal.
        assert_eq!(
            sanitize("SELECT 'a\\' OR 1=1 -- secret'", "mysql"),
            "SELECT ?"
        );
        // Its `#` comments go too.
        assert_eq!(sanitize("SELECT 1 # 4111-1111", "mysql"), "SELECT ?");
    }

    #[test]
    fn long_text_is_cut_after_sanitising() {
        let sql = format!(
            "INSERT INTO t VALUES {}",
            (0..2000)
                .map(|i| format!("({i}, 'secret{i}')"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let out = sanitize(&sql, "sqlite");
        assert!(out.ends_with(TRUNCATED), "{}", &out[out.len() - 40..]);
        assert!(out.len() <= MAX_TEXT + TRUNCATED.len());
        assert!(!out.contains("secret") && !out.contains("17"), "{out}");
        // A literal cut by the bound is still replaced.
        let sql = format!("SELECT '{}'", "x".repeat(10_000));
        assert_eq!(sanitize(&sql, "sqlite"), "SELECT ?");
    }

    #[test]
    fn no_digit_or_quoted_text_survives_arbitrary_literals() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2000 {
            let alphabet = b"0123456789abc'\\$ -.,()\"@x";
            let value: String = (0..rng.usize(1..12))
                .map(|_| char::from(alphabet[rng.usize(..alphabet.len())]))
                .collect();
            let escaped = value.replace('\'', "''");
            let sql =
                format!("SELECT a FROM t WHERE s = '{escaped}' AND n = 12345 AND m IN (9, 8)");
            let out = sanitize(&sql, "sqlite");
            assert!(
                !out.chars().any(|c| c.is_ascii_digit()),
                "{sql:?} → {out:?}"
            );
            assert!(
                out.starts_with("SELECT a FROM t WHERE s = ?"),
                "{sql:?} → {out:?}"
            );
        }
    }
}
