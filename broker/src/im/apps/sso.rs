//! Auto-login of workbench apps (seed 004's 自动登录): an app's SSO template, in imo's style
//! `&account=&password=` (the parameter names are the app's own), is filled for the user who
//! lists the workbench and appended to the app's web URL or launch path.
//!
//! Filling: the placeholders `{account}`, `{uid}`, `{buin}` and `{ticket}` (alias `{token}`)
//! are replaced; in imo's style, the first parameter with an empty value gets the account and
//! the second the ticket. The user's password is never sent anywhere: the ticket stands in for
//! it. A ticket is `{expiry}.{hex HMAC-SHA256}`, keyed with the app's 32-byte AES key (its
//! base64-decoded EncodingAESKey) over `sso:{app_id}:{account}:{expiry}` (expiry in Unix
//! seconds, [`TICKET_SECS`] after the list was asked for), so the app's server checks it with
//! the key it already holds. Pure functions (no I/O, the time is a parameter).

use base64ct::{Base64Unpadded, Encoding};
use ring::hmac;

/// How long a ticket is valid (seconds).
pub(super) const TICKET_SECS: u64 = 600;

/// Who the template is filled for.
pub(super) struct SsoUser<'a> {
    pub account: &'a str,
    pub uid: u64,
    pub buin: u64,
}

/// The ticket of `account` for app `app_id`, valid until `expiry`; none if the
/// EncodingAESKey does not decode to 32 bytes.
pub(super) fn ticket(
    encoding_aes_key: &str,
    app_id: &str,
    account: &str,
    expiry: u64,
) -> Option<String> {
    let key = Base64Unpadded::decode_vec(encoding_aes_key.trim_end_matches('=')).ok()?;
    if key.len() != 32 {
        return None;
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let tag = hmac::sign(&key, format!("sso:{app_id}:{account}:{expiry}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("{expiry}.{hex}"))
}

/// Percent-encoding of a query value (RFC 3986 unreserved characters kept).
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The template filled for `user` with `ticket`: `name=value` pairs joined by `&`, without a
/// leading separator ("" for an empty template).
pub(super) fn fill(template: &str, user: &SsoUser<'_>, ticket: &str) -> String {
    let (account, uid, buin, ticket) = (
        encode(user.account),
        user.uid.to_string(),
        user.buin.to_string(),
        encode(ticket),
    );
    let mut blanks = 0;
    template
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((name, "")) => {
                blanks += 1;
                let v = match blanks {
                    1 => account.as_str(),
                    2 => ticket.as_str(),
                    _ => "",
                };
                format!("{name}={v}")
            }
            Some((name, value)) => {
                let v = value
                    .replace("{account}", &account)
                    .replace("{uid}", &uid)
                    .replace("{buin}", &buin)
                    .replace("{ticket}", &ticket)
                    .replace("{token}", &ticket);
                format!("{name}={v}")
            }
            None => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `url` with `query` appended (`?` or `&`, before any `#fragment`); an empty URL or query
/// leaves the URL as it is.
pub(super) fn append(url: &str, query: &str) -> String {
    if url.is_empty() || query.is_empty() {
        return url.to_owned();
    }
    let (base, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let sep = if !base.contains('?') {
        "?"
    } else if base.ends_with('?') || base.ends_with('&') {
        ""
    } else {
        "&"
    };
    match fragment {
        Some(f) => format!("{base}{sep}{query}#{f}"),
        None => format!("{base}{sep}{query}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: SsoUser<'static> = SsoUser {
        account: "zhang san",
        uid: 7,
        buin: 10000001,
    };

    #[test]
    fn imo_style_blanks_get_the_account_then_the_ticket() {
        assert_eq!(
            fill("&account=&password=", &USER, "99.ab"),
            "account=zhang%20san&password=99.ab"
        );
        // The names are the app's own; a third blank stays empty.
        assert_eq!(fill("&u=&p=&x=", &USER, "t"), "u=zhang%20san&p=t&x=");
        assert_eq!(fill("", &USER, "t"), "");
    }

    #[test]
    fn placeholders_are_replaced_and_encoded() {
        assert_eq!(
            fill(
                "&acc={account}&id={uid}&ent={buin}&t={token}&k={ticket}&lang=zh",
                &USER,
                "1.a"
            ),
            "acc=zhang%20san&id=7&ent=10000001&t=1.a&k=1.a&lang=zh"
        );
    }

    #[test]
    fn queries_append_with_the_right_separator() {
        assert_eq!(append("https://a/x", "q=1"), "https://a/x?q=1");
        assert_eq!(append("https://a/x?y=2", "q=1"), "https://a/x?y=2&q=1");
        assert_eq!(append("https://a/x?", "q=1"), "https://a/x?q=1");
        assert_eq!(append("https://a/#/home", "q=1"), "https://a/?q=1#/home");
        assert_eq!(append("", "q=1"), "");
        assert_eq!(append("https://a/x", ""), "https://a/x");
    }

    #[test]
    fn tickets_are_an_hmac_the_app_server_can_recompute() {
        // 32 bytes "0123456789abcdef" twice, as an EncodingAESKey.
        let k = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY";
        let t = ticket(k, "100", "zhang", 1_700_000_000).expect("ticket");
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"0123456789abcdef0123456789abcdef");
        let (exp, mac) = t.split_once('.').expect("expiry.mac");
        assert_eq!(exp, "1700000000");
        let raw: Vec<u8> = (0..mac.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&mac[i..i + 2], 16).expect("hex"))
            .collect();
        assert!(hmac::verify(&key, b"sso:100:zhang:1700000000", &raw).is_ok());
        assert_eq!(ticket("short", "100", "zhang", 1), None);
    }
}
