//! Redis' glob (`stringmatchlen` in util.c, case-sensitive), as ACL key patterns use it:
//! `*`, `?`, `[...]` with `^` and ranges, `\` escapes. No crate matches it byte for byte (its
//! handling of an unclosed `[`, of ranges written backwards, and of bytes above 0x7f compared as
//! C's signed `char`), so it is transcribed here and checked against Redis through `ACL DRYRUN`
//! in `tests/command_policy.rs`. Like Redis (since 7.0.10) a failed `*` stops longer matches,
//! so a pattern cannot make matching exponential.

/// Does `pattern` match all of `string`?
pub(super) fn matches(pattern: &[u8], string: &[u8]) -> bool {
    let mut skip_longer = false;
    match_impl(pattern, string, &mut skip_longer)
}

/// The byte at `i`, or the NUL that ends a C string past the end.
fn at(s: &[u8], i: usize) -> u8 {
    s.get(i).copied().unwrap_or(0)
}

/// A byte compared as C's (signed) `char`.
fn signed(b: u8) -> i32 {
    i32::from(b as i8)
}

fn match_impl(mut p: &[u8], mut s: &[u8], skip_longer: &mut bool) -> bool {
    while !p.is_empty() && !s.is_empty() {
        match p[0] {
            b'*' => {
                while p.len() > 1 && p[1] == b'*' {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true;
                }
                while !s.is_empty() {
                    if match_impl(&p[1..], s, skip_longer) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    s = &s[1..];
                }
                *skip_longer = true;
                return false;
            }
            b'?' => s = &s[1..],
            b'[' => {
                p = &p[1..];
                let not = at(p, 0) == b'^';
                if not {
                    p = &p[1..];
                }
                let mut matched = false;
                // `p` may run out: Redis then backs up one byte so the outer step lands on
                // the end. `back_up` models that.
                let mut back_up = false;
                loop {
                    if at(p, 0) == b'\\' && p.len() >= 2 {
                        p = &p[1..];
                        if p[0] == s[0] {
                            matched = true;
                        }
                    } else if at(p, 0) == b']' {
                        break;
                    } else if p.is_empty() {
                        back_up = true;
                        break;
                    } else if p.len() >= 3 && p[1] == b'-' {
                        let (mut start, mut end) = (signed(p[0]), signed(p[2]));
                        if start > end {
                            std::mem::swap(&mut start, &mut end);
                        }
                        let c = signed(s[0]);
                        p = &p[2..];
                        if c >= start && c <= end {
                            matched = true;
                        }
                    } else if p[0] == s[0] {
                        matched = true;
                    }
                    p = &p[1..];
                }
                if not {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                s = &s[1..];
                if back_up {
                    // Redis: pattern-- then pattern++ below: the pattern is used up.
                    if s.is_empty() {
                        return true;
                    }
                    return false;
                }
            }
            b'\\' if p.len() >= 2 => {
                p = &p[1..];
                if p[0] != s[0] {
                    return false;
                }
                s = &s[1..];
            }
            c => {
                if c != s[0] {
                    return false;
                }
                s = &s[1..];
            }
        }
        p = &p[1..];
        if s.is_empty() {
            while at(p, 0) == b'*' {
                p = &p[1..];
            }
            break;
        }
    }
    p.is_empty() && s.is_empty()
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn redis_glob_cases() {
        for (p, s, want) in [
            // Redis matches nothing against an empty key, not even `*` (ACL's `~*` is
            // `allkeys` and never matched); tests/command_policy.rs asks Redis.
            ("*", "", false),
            ("", "", true),
            ("a*", "abc", true),
            ("a*", "b", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[abc]x", "bx", true),
            ("[^abc]x", "bx", false),
            ("[a-c]x", "bx", true),
            ("[c-a]x", "bx", true),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
            ("user:*:name", "user:1:name", true),
            ("user:*:name", "user:1:nam", false),
            ("*a*a*a*a*a*a*a*b", &"a".repeat(60), false),
        ] {
            assert_eq!(matches(p.as_bytes(), s.as_bytes()), want, "{p} ~ {s}");
        }
    }
}
