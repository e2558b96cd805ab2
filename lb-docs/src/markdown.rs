//! The README's Markdown as a man page: headings become sections, fenced
//! code stays as it is, lists become indented paragraphs, inline code is
//! set in bold. Enough for our own reference sections, not for Markdown
//! at large.

/// A man page named `name(section)` with the one-line `summary`, whose
/// body is `markdown` (its `#` headings as sections, `##`/`###`... as
/// subsections).
pub fn man_from_markdown(name: &str, section: &str, summary: &str, date: &str, markdown: &str) -> String {
    let mut out = format!(
        ".TH {} {section} \"{date}\" \"lb\" \"lb manual\"\n.SH NAME\n{name} \\- {}\n",
        name.to_uppercase(),
        escape(summary)
    );
    let mut in_code = false;
    let mut paragraph = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            out.push_str(if in_code { ".fi\n.RE\n" } else { ".PP\n.RS 2\n.nf\n" });
            in_code = !in_code;
            paragraph = false;
            continue;
        }
        if in_code {
            out.push_str(&escape_line(&escape(line)));
            out.push('\n');
            continue;
        }
        let trimmed = line.trim();
        if trimmed.is_empty() {
            paragraph = false;
            continue;
        }
        if let Some(heading) = trimmed.strip_prefix('#') {
            let level = 1 + heading.chars().take_while(|&c| c == '#').count();
            let title = inline(heading.trim_start_matches('#').trim());
            let macro_ = if level <= 2 { ".SH" } else { ".SS" };
            out.push_str(&format!("{macro_} \"{}\"\n", if level <= 2 { title.to_uppercase() } else { title }));
            paragraph = false;
            continue;
        }
        if let Some(item) = trimmed.strip_prefix("* ").or_else(|| trimmed.strip_prefix("- ")) {
            out.push_str(".IP \\(bu 2\n");
            out.push_str(&escape_line(&inline(item)));
            out.push('\n');
            paragraph = true;
            continue;
        }
        if !paragraph {
            out.push_str(".PP\n");
            paragraph = true;
        }
        out.push_str(&escape_line(&inline(trimmed)));
        out.push('\n');
    }
    out
}

/// `code` in bold, links as their text.
fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(['`', '[']) {
        out.push_str(&escape(&rest[..start]));
        let tail = &rest[start..];
        if let Some(code) = tail.strip_prefix('`')
            && let Some(end) = code.find('`')
        {
            out.push_str(&format!("\\fB{}\\fR", escape(&code[..end])));
            rest = &code[end + 1..];
        } else if let Some(link) = tail.strip_prefix('[')
            && let Some(close) = link.find("](")
            && let Some(end) = link[close..].find(')')
        {
            out.push_str(&inline(&link[..close]));
            rest = &link[close + end + 1..];
        } else {
            out.push_str(&escape(&tail[..1]));
            rest = &tail[1..];
        }
    }
    out.push_str(&escape(rest));
    out
}

/// Backslashes and dashes as roff wants them.
fn escape(text: &str) -> String {
    text.replace('\\', "\\e").replace('-', "\\-")
}

/// An escaped line, guarded where roff would take it for a request (a
/// leading `.` or `'`).
fn escape_line(line: &str) -> String {
    if line.starts_with('.') || line.starts_with('\'') { format!("\\&{line}") } else { line.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_code_lists_and_inline_code() {
        let page = man_from_markdown(
            "lb.toml",
            "5",
            "lbd's config",
            "2026-01-01",
            "### Config\n\nEvery `key`, see [there](#x).\n\n```toml\n[director]\n.dot = \"a-b\"\n```\n\n* one\n* two\n",
        );
        assert!(page.starts_with(".TH LB.TOML 5 \"2026-01-01\""), "{page}");
        assert!(page.contains(".SS \"Config\"\n.PP\nEvery \\fBkey\\fR, see there.\n"), "{page}");
        assert!(page.contains(".nf\n[director]\n\\&.dot = \"a\\-b\"\n.fi\n"), "{page}");
        assert!(page.contains(".IP \\(bu 2\none\n.IP \\(bu 2\ntwo\n"), "{page}");
    }
}
