//! MQTT topic names and topic filters (MQTT 3.1.1 §4.7, MQTT 5 §4.7).
//!
//! A topic *name* (what a PUBLISH carries) has no wildcards and is not
//! empty. A topic *filter* (what a SUBSCRIBE carries, and what a policy
//! allows) may use `+` for exactly one level and `#` for the rest of the
//! topic, each only as a whole level, `#` only last. Topics starting with
//! `$` are not matched by a filter whose first level is a wildcard.
//!
//! Policy filters are [`Pattern`]s: filters whose whole levels may be `%c`
//! (the session's client id) or `%u` (the certificate identity). A value
//! substituted into a pattern must itself be a single plain level; a client
//! id such as `#` or `a/b` makes the pattern match nothing rather than widen
//! it.

use std::fmt;

/// Why a topic name or filter is not well-formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    /// The topic or filter is empty.
    Empty,
    /// The topic contains U+0000.
    Nul,
    /// A PUBLISH topic contains `+` or `#`.
    WildcardInName,
    /// A `+` or `#` is not a whole level, or `#` is not the last level.
    BadWildcard,
    /// More levels than the policy allows.
    TooManyLevels,
    /// Longer than an MQTT string can be.
    TooLong,
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty topic",
            Self::Nul => "topic contains NUL",
            Self::WildcardInName => "wildcard in a topic name",
            Self::BadWildcard => "wildcard that is not a whole level, or `#` not last",
            Self::TooManyLevels => "too many topic levels",
            Self::TooLong => "topic longer than 65,535 bytes",
        })
    }
}

fn common_checks(topic: &str, max_levels: usize) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > usize::from(u16::MAX) {
        return Err(TopicError::TooLong);
    }
    // One pass over the bytes (this runs on every PUBLISH): NUL anywhere
    // wins over too many levels, as before; levels = separators + 1.
    let mut separators = 0usize;
    for &b in topic.as_bytes() {
        match b {
            0 => return Err(TopicError::Nul),
            b'/' => separators += 1,
            _ => {}
        }
    }
    if separators >= max_levels {
        return Err(TopicError::TooManyLevels);
    }
    Ok(())
}

/// Checks a topic name as carried by PUBLISH (and a will topic).
pub fn check_name(topic: &str, max_levels: usize) -> Result<(), TopicError> {
    common_checks(topic, max_levels)?;
    // Bytes, not chars: both are ASCII, which never occurs inside a
    // multi-byte UTF-8 sequence.
    if topic.bytes().any(|b| matches!(b, b'+' | b'#')) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a topic filter as carried by SUBSCRIBE / UNSUBSCRIBE.
pub fn check_filter(filter: &str, max_levels: usize) -> Result<(), TopicError> {
    common_checks(filter, max_levels)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        match level {
            "#" if levels.peek().is_some() => return Err(TopicError::BadWildcard),
            "#" | "+" => {}
            l if l.contains(['+', '#']) => return Err(TopicError::BadWildcard),
            _ => {}
        }
    }
    Ok(())
}

/// Whether `filter` (well-formed) matches the topic name `topic`.
///
/// One pass over the bytes of both, with no level splitting: this runs
/// for every PUBLISH against each allowed filter, and `/`, `+` and `#` are
/// ASCII, so they never occur inside a multi-byte UTF-8 character.
pub fn matches(filter: &str, topic: &str) -> bool {
    let (f, t) = (filter.as_bytes(), topic.as_bytes());
    if t.first() == Some(&b'$') && matches!(f.first(), Some(b'+' | b'#')) {
        return false;
    }
    let (mut i, mut j) = (0, 0);
    loop {
        // Both at the start of a level.
        match f.get(i) {
            // Well-formed: `#` is a whole, last level; it matches the rest.
            Some(b'#') => return true,
            Some(b'+') => {
                while t.get(j).is_some_and(|&b| b != b'/') {
                    j += 1;
                }
                i += 1;
            }
            _ => {
                while let Some(&b) = f.get(i).filter(|&&b| b != b'/') {
                    if t.get(j) != Some(&b) {
                        return false;
                    }
                    i += 1;
                    j += 1;
                }
                if t.get(j).is_some_and(|&b| b != b'/') {
                    return false;
                }
            }
        }
        // Both at the end of a level: a `/` or the end.
        match (i < f.len(), j < t.len()) {
            (false, false) => return true,
            (true, true) => {
                i += 1;
                j += 1;
            }
            // `a/#` also matches the parent level `a`.
            (true, false) => return f.get(i + 1..) == Some(b"#".as_slice()),
            (false, true) => return false,
        }
    }
}

/// Whether every topic that `requested` matches is also matched by
/// `allowed` (both well-formed filters): the test for a SUBSCRIBE.
pub fn covers(allowed: &str, requested: &str) -> bool {
    if requested.starts_with('$') && allowed.starts_with(['+', '#']) {
        return false;
    }
    let mut r = requested.split('/');
    for a in allowed.split('/') {
        match (a, r.next()) {
            ("#", _) => return true,
            ("+", Some(x)) if x != "#" => {}
            (a, Some(x)) if a == x && a != "+" => {}
            _ => return false,
        }
    }
    r.next().is_none()
}

/// One level of a policy pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Text(String),
    ClientId,
    Identity,
}

/// A policy topic filter, possibly with `%c` / `%u` levels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    levels: Vec<Level>,
    source: String,
}

impl Pattern {
    /// Parses a policy filter; `%c` and `%u` must be whole levels.
    pub fn parse(source: &str, max_levels: usize) -> Result<Self, String> {
        check_filter(source, max_levels).map_err(|e| e.to_string())?;
        let levels = source
            .split('/')
            .map(|l| match l {
                "%c" => Ok(Level::ClientId),
                "%u" => Ok(Level::Identity),
                l if l.contains("%c") || l.contains("%u") => {
                    Err(format!("`{l}`: %c and %u must be a whole topic level"))
                }
                l => Ok(Level::Text(l.to_owned())),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            levels,
            source: source.to_owned(),
        })
    }

    /// The filter as written in the policy.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The concrete filter for one session, or `None` when a substituted
    /// value is not a single plain level (so it cannot widen the filter).
    pub fn resolve(&self, client_id: &str, identity: &str) -> Option<String> {
        let plain = |v: &str| !v.is_empty() && !v.contains(['/', '+', '#', '\0']);
        let mut out = String::with_capacity(self.source.len() + 16);
        for (i, level) in self.levels.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            match level {
                Level::Text(t) => out.push_str(t),
                Level::ClientId if plain(client_id) => out.push_str(client_id),
                Level::Identity if plain(identity) => out.push_str(identity),
                _ => return None,
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_wildcards_empty_and_nul() {
        assert_eq!(check_name("a/b", 8), Ok(()));
        assert_eq!(check_name("", 8), Err(TopicError::Empty));
        assert_eq!(check_name("a/+", 8), Err(TopicError::WildcardInName));
        assert_eq!(check_name("a/#", 8), Err(TopicError::WildcardInName));
        assert_eq!(check_name("a\0b", 8), Err(TopicError::Nul));
        assert_eq!(check_name("a/b/c", 2), Err(TopicError::TooManyLevels));
        // Exactly at the limit passes; NUL wins over too many levels.
        assert_eq!(check_name("a/b", 2), Ok(()));
        assert_eq!(check_name("/", 2), Ok(()));
        assert_eq!(check_name("a/b/\0", 2), Err(TopicError::Nul));
        // Multi-byte UTF-8 is never mistaken for a separator or wildcard.
        assert_eq!(check_name("ä/ü/€", 3), Ok(()));
    }

    #[test]
    fn filters_need_whole_level_wildcards() {
        for ok in ["#", "+", "a/+/c", "a/#", "+/+", "/", "$SYS/#"] {
            assert_eq!(check_filter(ok, 8), Ok(()), "{ok}");
        }
        for bad in ["a/#/c", "a+", "a/b#", "#/a", ""] {
            assert!(check_filter(bad, 8).is_err(), "{bad}");
        }
        assert_eq!(
            check_filter(&"/".repeat(65_000), 32),
            Err(TopicError::TooManyLevels)
        );
    }

    #[test]
    fn matching_follows_the_spec() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(!matches("a/+/c", "a/b/d"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(!matches("a/+", "a"));
        assert!(matches("+/+", "/x"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(!matches("a/b", "a/b/c"));
    }

    #[test]
    fn covering_is_subset_of_topics() {
        assert!(covers("a/#", "a/b/+"));
        assert!(covers("a/+", "a/b"));
        assert!(covers("a/+", "a/+"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("#", "$SYS/#"));
        assert!(!covers("a/+/c", "a/+"));
        assert!(covers("a/#", "a"));
    }

    #[test]
    fn substitution_never_widens() {
        let p = Pattern::parse("dev/%c/%u/#", 8).unwrap();
        assert_eq!(p.resolve("c1", "u1").as_deref(), Some("dev/c1/u1/#"));
        assert_eq!(p.resolve("#", "u1"), None);
        assert_eq!(p.resolve("a/b", "u1"), None);
        assert_eq!(p.resolve("c1", ""), None);
        assert!(Pattern::parse("dev/x%c/#", 8).is_err());
    }

    /// The level-splitting definition [`matches`] must agree with.
    fn matches_by_levels(filter: &str, topic: &str) -> bool {
        if topic.starts_with('$') && filter.starts_with(['+', '#']) {
            return false;
        }
        let mut t = topic.split('/');
        for f in filter.split('/') {
            match (f, t.next()) {
                ("#", _) => return true,
                ("+", Some(_)) => {}
                (f, Some(t)) if f == t => {}
                _ => return false,
            }
        }
        t.next().is_none()
    }

    proptest::proptest! {
        #[test]
        fn byte_matching_agrees_with_level_matching(
            filter in "(\\$?[ab]{0,2}|\\+)(/([ab]{0,2}|\\+)){0,4}(/#)?|#",
            topic in "\\$?[ab]{0,2}(/[ab]{0,2}){0,5}",
        ) {
            proptest::prop_assume!(check_filter(&filter, 16).is_ok());
            proptest::prop_assert_eq!(
                matches(&filter, &topic),
                matches_by_levels(&filter, &topic),
                "filter {:?} topic {:?}", filter, topic
            );
        }
    }
}
