//! Statements run as one unit: on SQLite joined into one request to the
//! connection's thread (one round trip instead of one per statement:
//! sqlx binds `$n` by number across the statements of one query), on
//! PostgreSQL (whose prepared statements are single) one by one.

use std::borrow::Cow;

use super::*;

/// A value bound to a statement of a [`Batch`].
#[derive(Debug, Clone)]
pub(super) enum Arg<'a> {
    Text(Cow<'a, str>),
    OptText(Option<Cow<'a, str>>),
    Int(i64),
    OptInt(Option<i64>),
}

impl<'a> Arg<'a> {
    /// Text borrowed for the batch's life (an exNode is not copied).
    pub(super) fn str(s: &'a str) -> Arg<'a> {
        Arg::Text(Cow::Borrowed(s))
    }

    pub(super) fn string(s: String) -> Arg<'a> {
        Arg::Text(Cow::Owned(s))
    }
}

/// Statements (each with `$1`.. numbered from 1) to run in order in one
/// transaction; the rows any of them returns come back together.
#[derive(Debug, Default)]
pub(super) struct Batch<'a> {
    parts: Vec<(String, Vec<Arg<'a>>)>,
}

impl<'a> Batch<'a> {
    pub(super) fn push(&mut self, sql: impl Into<String>, args: Vec<Arg<'a>>) {
        self.parts.push((sql.into(), args));
    }

    /// The statements, each with its values.
    pub(super) fn into_parts(self) -> Vec<(String, Vec<Arg<'a>>)> {
        self.parts
    }

    /// Runs the statements; the first that fails stops the rest (the
    /// caller drops or rolls back the transaction).
    pub(super) async fn run(
        self,
        tx: &mut Tx<'_>,
        backend: Backend,
    ) -> Result<Vec<AnyRow>, sqlx::Error> {
        if backend == Backend::Sqlite {
            let mut sql = String::new();
            let mut args: Vec<Arg<'a>> = Vec::new();
            for (s, a) in self.parts {
                sql.push_str(&renumber(&s, args.len()));
                sql.push_str(";\n");
                args.extend(a);
            }
            return bind(sqlx::query(&sql), args).fetch_all(&mut **tx).await;
        }
        let mut rows = Vec::new();
        for (s, a) in self.parts {
            rows.extend(bind(sqlx::query(&s), a).fetch_all(&mut **tx).await?);
        }
        Ok(rows)
    }
}

pub(super) fn bind<'q, 'a: 'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    args: Vec<Arg<'a>>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for a in args {
        q = match a {
            Arg::Text(Cow::Borrowed(v)) => q.bind(v),
            Arg::Text(Cow::Owned(v)) => q.bind(v),
            Arg::OptText(Some(Cow::Borrowed(v))) => q.bind(Some(v)),
            Arg::OptText(Some(Cow::Owned(v))) => q.bind(Some(v)),
            Arg::OptText(None) => q.bind(None::<String>),
            Arg::Int(v) => q.bind(v),
            Arg::OptInt(v) => q.bind(v),
        };
    }
    q
}

/// `sql` with each parameter `$n` made `$(n + offset)` (the statements
/// here hold no `$` in literals).
fn renumber(sql: &str, offset: usize) -> String {
    if offset == 0 {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        out.push(c);
        if c != '$' {
            continue;
        }
        let mut n = 0usize;
        let mut digits = false;
        while let Some(&(_, d)) = chars.peek() {
            let Some(v) = d.to_digit(10) else { break };
            n = n * 10 + v as usize;
            digits = true;
            chars.next();
        }
        if digits {
            out.push_str(&(n + offset).to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::renumber;

    #[test]
    fn renumbers_parameters() {
        assert_eq!(renumber("VALUES ($1, $2, $10)", 0), "VALUES ($1, $2, $10)");
        assert_eq!(
            renumber("VALUES ($1, $2, $10) WHERE x = $3", 7),
            "VALUES ($8, $9, $17) WHERE x = $10"
        );
        assert_eq!(renumber("a $ b", 3), "a $ b");
    }
}
