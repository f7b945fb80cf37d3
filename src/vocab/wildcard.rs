//! Wildcard patterns as ECS and ALB write them: the cluster query
//! language's `=~` (`*` only, letters as they are) and ALB's host-header and
//! path-pattern conditions (`*` and `?`, hosts case folded). One matcher
//! serves both; pure, no allocation.

/// What a pattern's characters mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wildcards {
    /// `?` matches exactly one character (ALB); otherwise it is literal.
    pub any_one: bool,
    /// ASCII letters compare case folded.
    pub ignore_case: bool,
}

/// Whether `text` matches `pattern`: `*` matches any run of characters
/// (also none), `?` one character when `wildcards.any_one`, everything
/// else literally. Linear backtracking on the last `*`.
pub fn matches(pattern: &str, text: &str, wildcards: Wildcards) -> bool {
    let pattern = pattern.as_bytes();
    let text = text.as_bytes();
    let same = |a: u8, b: u8| {
        if wildcards.ignore_case {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut p, mut t) = (0usize, 0usize);
    // Where the last `*` was, and the text position it is matched up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let any_one = wildcards.any_one && p < pattern.len() && pattern[p] == b'?';
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && (any_one || same(pattern[p], text[t])) {
            // `?` is one character: skip a whole UTF-8 sequence.
            t += if any_one { utf8_width(text[t]) } else { 1 };
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, t));
        } else {
            return false;
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len() && t == text.len()
}

/// The length of the UTF-8 sequence `first` starts.
fn utf8_width(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_and_case_follow_the_flavour() {
        let ecs = Wildcards {
            any_one: false,
            ignore_case: false,
        };
        let alb_host = Wildcards {
            any_one: true,
            ignore_case: true,
        };
        assert!(matches("t2.*", "t2.micro", ecs));
        assert!(!matches("t2.?icro", "t2.micro", ecs));
        assert!(matches("t2.?icro", "t2.?icro", ecs));
        assert!(!matches("T2.*", "t2.micro", ecs));
        assert!(matches("*.EXAMPLE.com", "api.example.COM", alb_host));
        assert!(matches("caf?", "café", alb_host));
        assert!(!matches("a*b", "acbx", alb_host));
    }
}
