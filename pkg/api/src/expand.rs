//! Kubernetes' `$(VAR)` expansion (command, args, env values, subPathExpr).

/// Kubernetes' `$(VAR)` expansion: defined variables are replaced, undefined references stay
/// as written, `$$` is a literal `$`.
pub fn expand<'a>(input: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) if end > 0 => {
                    let name = &inner[..end];
                    match lookup(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                _ => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn follows_upstream_rules() {
        let get = |n: &str| (n == "A").then_some("x");
        assert_eq!(expand("$(A)-$(B)", get), "x-$(B)");
        assert_eq!(expand("$$(A)", get), "$(A)");
        assert_eq!(expand("a$b $(A", get), "a$b $(A");
        assert_eq!(expand("$(A)$(A)", get), "xx");
        assert_eq!(expand("$()", get), "$()");
    }
}
