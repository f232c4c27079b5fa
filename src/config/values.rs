//! The small value syntaxes settings share (host:port, UTC offsets, DNS names) and how an error finds its
//! line and column.

pub(crate) fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Checks `host:port` (IPv6 in brackets) with a port in 1–65535.
pub(crate) fn check_host_port(text: &str) -> Result<(), &'static str> {
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("has no port");
    };
    if host.is_empty() || host == "[]" {
        return Err("has no host");
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err("has an IPv6 address without brackets");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err("has a port outside 1–65535"),
    }
}

/// Parses `+08:00`, `-05:30`, `+0800`, `UTC` or `Z`.
pub fn parse_offset(text: &str) -> Option<time::UtcOffset> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("utc") || text == "Z" {
        return Some(time::UtcOffset::UTC);
    }
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1i8, &text[1..]),
        b'-' => (-1i8, &text[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let hours: i8 = digits[..2].parse().ok()?;
    let minutes: i8 = digits[2..].parse().ok()?;
    // Real zones lie within ±14:00; ±23:59 is the most an offset may say. The time crate would take ±25:59,
    // which later date arithmetic cannot.
    if hours > 23 || minutes > 59 {
        return None;
    }
    time::UtcOffset::from_hms(sign * hours, sign * minutes, 0).ok()
}

/// Checks a DNS name for a certificate: LDH labels, optional leading `*.` wildcard.
pub(crate) fn check_domain(name: &str) -> Result<(), &'static str> {
    let rest = name.strip_prefix("*.").unwrap_or(name);
    let bare = rest.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Err("is an IP address; DNS-01 certificates are for DNS names");
    }
    if rest
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err("ends in an all-numeric label, which no DNS name has");
    }
    if rest.is_empty() || rest.len() > 253 {
        return Err("is not a domain name");
    }
    if !rest.contains('.') {
        return Err("must be a fully qualified name like mqtt.example.com");
    }
    for label in rest.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("has an empty or over-long label");
        }
        if label == "*" {
            return Err("may only have a wildcard as its leftmost label (`*.example.com`)");
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err("has characters other than letters, digits and inner hyphens");
        }
    }
    Ok(())
}
