//! What every benchmark binary shares: the date of a run and the replacement of its section
//! in `tests/bench/RESULTS.md`.

/// `date -u` as "YYYY-MM-DD HH:MM".
pub fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// `doc` with the section `## title` (up to the next `## ` heading) replaced by `body`, or
/// `body` appended when there is no such section.
pub fn replace_section(doc: &str, title: &str, body: &str) -> String {
    let head = format!("## {title}");
    let mut out = String::new();
    let mut skipping = false;
    let mut done = false;
    for line in doc.lines() {
        if line == head {
            skipping = true;
            out.push_str(body);
            done = true;
            continue;
        }
        if skipping && line.starts_with("## ") {
            skipping = false;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !done {
        if !out.ends_with("\n\n") {
            out.push('\n');
        }
        out.push_str(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_is_replaced_or_appended() {
        let doc = "# R\n\n## A\nold a\n\n## B\nb\n";
        let out = replace_section(doc, "A", "## A\nnew a\n\n");
        assert_eq!(out, "# R\n\n## A\nnew a\n\n## B\nb\n");
        let out = replace_section(doc, "C", "## C\nc\n");
        assert!(out.ends_with("## B\nb\n\n## C\nc\n"), "{out:?}");
    }
}
