//! Client file names: reduced to a safe display name on the way in (never used as a path:
//! storage keys are generated), and quoted safely on the way out (RFC 6266 / RFC 8187).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Longest name kept, in characters (the extension is preserved when cutting).
pub const MAX_NAME_CHARS: usize = 255;

/// What a user name may be (Django's rule): 1 to 150 letters, digits and `.` `@` `+` `-` `_`.
/// The catalog refuses any other name, whoever creates the user.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= 150
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '@' | '+' | '-' | '_'))
}

/// The rule of [`valid_user_name`], in words.
pub const USER_NAME_RULE: &str = "a user name is 1 to 150 letters, digits and . @ + - _";

/// Reduces a client-supplied name to a display name: the last path component (both `/` and
/// `\` separate), without control characters, trimmed, at most 255 characters (keeping the
/// extension); "unnamed" when nothing is left or the name is `.` or `..`.
pub fn sanitize_file_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last.chars().filter(|c| !c.is_control()).collect();
    let cleaned = trimmed(&cleaned);
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        return "unnamed".to_string();
    }
    // Cutting may leave spaces or dots at the end: trimmed again, so that a clean name is its
    // own clean name (found by the `names` fuzz target).
    let cut = truncate_keeping_extension(cleaned, MAX_NAME_CHARS);
    match trimmed(&cut) {
        "" | "." | ".." => "unnamed".to_string(),
        t => t.to_string(),
    }
}

/// Without white space at the start, nor white space and dots at the end.
fn trimmed(name: &str) -> &str {
    name.trim_start()
        .trim_end_matches(|c: char| c == '.' || c.is_whitespace())
}

fn truncate_keeping_extension(name: &str, max: usize) -> String {
    let count = name.chars().count();
    if count <= max {
        return name.to_string();
    }
    let ext: String = match name.rfind('.') {
        Some(i) if name[i..].chars().count() <= 16 && i > 0 => name[i..].to_string(),
        _ => String::new(),
    };
    let keep = max - ext.chars().count();
    let stem: String = name.chars().take(keep).collect();
    format!("{stem}{ext}")
}

/// RFC 8187 attr-char: ALPHA / DIGIT / "!" / "#" / "$" / "&" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~"
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// A Content-Disposition value: an ASCII fallback `filename` for old clients and the exact
/// name as `filename*` (UTF-8, percent-encoded), so no name can break out of the header.
pub fn content_disposition(disposition: &str, name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' && c != '%' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = utf8_percent_encode(name, ATTR_CHAR);
    format!("{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_follow_the_rule() {
        for ok in ["admin", "a.b@c+d-e_f", "Zoë", &"x".repeat(150)] {
            assert!(valid_user_name(ok), "{ok}");
        }
        for bad in ["", "a b", "a/b", "a\nb", "é;", &"x".repeat(151)] {
            assert!(!valid_user_name(bad), "{bad}");
        }
    }

    #[test]
    fn hostile_names_become_plain_names() {
        assert_eq!(sanitize_file_name("../../etc/passwd"), "passwd");
        // Cut to 255 characters, the end is trimmed again: a clean name stays as it is.
        let long = format!("x{}{}", " ".repeat(300), "tail");
        let once = sanitize_file_name(&long);
        assert_eq!(once, "x");
        assert_eq!(sanitize_file_name("a . ."), "a");
        assert_eq!(sanitize_file_name(&once), once);
        assert_eq!(sanitize_file_name("/abs/path/x.txt"), "x.txt");
        assert_eq!(sanitize_file_name("C:\\Users\\me\\doc.pdf"), "doc.pdf");
        assert_eq!(sanitize_file_name("a\0b\r\nc.txt"), "abc.txt");
        assert_eq!(sanitize_file_name(".."), "unnamed");
        assert_eq!(sanitize_file_name("dir/"), "unnamed");
        assert_eq!(sanitize_file_name("   "), "unnamed");
        assert_eq!(sanitize_file_name("résumé ü.pdf"), "résumé ü.pdf");
        let long = format!("{}.tar.gz", "n".repeat(10_000));
        let s = sanitize_file_name(&long);
        assert_eq!(s.chars().count(), 255);
        assert!(s.ends_with(".gz"));
        let long_utf8 = "é".repeat(10_000);
        assert_eq!(sanitize_file_name(&long_utf8).chars().count(), 255);
    }

    #[test]
    fn disposition_quotes_everything_safely() {
        assert_eq!(
            content_disposition("attachment", "a b.txt"),
            "attachment; filename=\"a b.txt\"; filename*=UTF-8''a%20b.txt"
        );
        let v = content_disposition("attachment", "naïve \"q\";\r\n.pdf");
        assert!(
            v.starts_with("attachment; filename=\"na_ve _q_;__.pdf\""),
            "{v}"
        );
        assert!(
            v.contains("filename*=UTF-8''na%C3%AFve%20%22q%22%3B%0D%0A.pdf"),
            "{v}"
        );
        assert!(axum::http::HeaderValue::from_str(&v).is_ok());
    }
}
