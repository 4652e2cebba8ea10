//! The little of SQL's lexical structure the pool needs to tell what a statement can change: comments
//! and quoted text blanked out, statements split at their semicolons, calls found by name. A guard for
//! the common cases, not a parser: where it cannot tell, its callers assume the worst.

/// `sql` without comments and with the contents of quoted strings and identifiers blanked, so that
/// keywords inside them are not mistaken for code, in ASCII lower case (keywords and unquoted names are
/// case-insensitive): one pass that every check of the statement then shares.
pub(crate) fn strip(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '-' if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                out.push(' ');
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
                out.push(' ');
            }
            '\'' | '"' => {
                for inner in chars.by_ref() {
                    if inner == c {
                        break;
                    }
                }
                out.push_str(" x ");
            }
            '$' => {
                // A dollar-quoted string: $tag$ ... $tag$.
                let mut tag = String::from("$");
                while let Some(&next) = chars.peek() {
                    chars.next();
                    tag.push(next);
                    if next == '$' {
                        break;
                    }
                    if !(next.is_alphanumeric() || next == '_') {
                        break;
                    }
                }
                if tag.len() >= 2 && tag.ends_with('$') {
                    let mut body = String::new();
                    for c in chars.by_ref() {
                        body.push(c);
                        if body.ends_with(&tag) {
                            break;
                        }
                    }
                    out.push_str(" x ");
                } else {
                    out.push_str(&tag.to_ascii_lowercase());
                }
            }
            c => out.push(c.to_ascii_lowercase()),
        }
    }
    out
}

/// Whether `code` calls `function` (the name followed by `(`, not part of a longer name).
pub(crate) fn contains_call(code: &str, function: &str) -> bool {
    code.match_indices(function).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + function.len()..].trim_start().chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_') && after == Some('(')
    })
}

/// The statements of stripped `code`, split at semicolons, empty ones left out.
pub(crate) fn statements(code: &str) -> impl Iterator<Item = &str> {
    code.split(';').filter(|statement| !statement.trim().is_empty())
}
