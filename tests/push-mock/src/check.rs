//! What each mocked vendor checks before it accepts a request, as the real services do:
//! APNs's ES256 provider token and required headers, Google's RS256 grant assertion, the
//! OAuth client credentials of Huawei and Honor, Xiaomi's app secret, OPPO's SHA-256 and
//! vivo's MD5 auth signatures, Meizu's MD5 request signature. Each returns `Err((status, vendor error body))` on refusal.

use std::collections::HashMap;

use base64ct::{Base64UrlUnpadded, Encoding};
use ring::signature::{self, UnparsedPublicKey};
use serde_json::{Value, json};

use crate::{
    APNS_KEY_ID, APNS_TEAM_ID, FCM_EMAIL, HONOR_APP, HONOR_SECRET, HUAWEI_APP, HUAWEI_SECRET,
    MEIZU_APP_ID, MEIZU_APP_SECRET, OPPO_APP_KEY, OPPO_MASTER_SECRET, State, VIVO_APP_ID,
    VIVO_APP_KEY, VIVO_APP_SECRET, XIAOMI_SECRET,
};

/// A refusal: HTTP status and body.
pub type Refusal = (u16, String);

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub fn hdr<'a>(headers: &'a HashMap<String, String>, name: &str) -> &'a str {
    headers.get(name).map_or("", String::as_str)
}

pub fn form(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// Checks a JWT's signature and returns (header, claims).
fn jwt(
    token: &str,
    alg: &'static dyn signature::VerificationAlgorithm,
    key: &[u8],
) -> Result<(Value, Value), String> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not three parts".into());
    };
    let sig = Base64UrlUnpadded::decode_vec(s).map_err(|_| "signature not base64url")?;
    UnparsedPublicKey::new(alg, key)
        .verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| "bad signature")?;
    let dec = |p: &str| -> Result<Value, String> {
        let b = Base64UrlUnpadded::decode_vec(p).map_err(|_| "part not base64url")?;
        serde_json::from_slice(&b).map_err(|_| "part not JSON".to_owned())
    };
    Ok((dec(h)?, dec(c)?))
}

pub fn apns(st: &State, headers: &HashMap<String, String>) -> Result<(), Refusal> {
    let h = |n: &str| hdr(headers, n);
    let reason = |s: u16, r: &str| Err((s, json!({ "reason": r }).to_string()));
    for (name, missing) in [
        ("apns-topic", "MissingTopic"),
        ("apns-push-type", "InvalidPushType"),
        ("apns-priority", "BadPriority"),
        ("apns-expiration", "BadExpirationDate"),
    ] {
        if h(name).is_empty() {
            return reason(400, missing);
        }
    }
    let Some(token) = h("authorization").strip_prefix("bearer ") else {
        return reason(403, "MissingProviderToken");
    };
    // Like Apple, verify a provider token once and then trust it while it is fresh.
    if let Some(iat) = st.apns_verified.lock().get(token)
        && now() - iat < 3600
    {
        return Ok(());
    }
    match jwt(token, &signature::ECDSA_P256_SHA256_FIXED, &st.apns_public) {
        Ok((hd, c))
            if hd["alg"] == "ES256"
                && hd["kid"] == APNS_KEY_ID
                && c["iss"] == APNS_TEAM_ID
                && (now() - c["iat"].as_i64().unwrap_or(0)).abs() < 3600 =>
        {
            let mut v = st.apns_verified.lock();
            if v.len() >= 1024 {
                v.clear();
            }
            v.insert(token.to_owned(), c["iat"].as_i64().unwrap_or(0));
            Ok(())
        }
        _ => reason(403, "InvalidProviderToken"),
    }
}

pub fn fcm_grant(st: &State, f: &HashMap<String, String>) -> Result<(), String> {
    if f.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return Err("bad grant_type".into());
    }
    let a = f.get("assertion").ok_or("no assertion")?;
    let (h, c) = jwt(a, &signature::RSA_PKCS1_2048_8192_SHA256, &st.rsa_public)?;
    let exp = c["exp"].as_i64().unwrap_or(0);
    if h["alg"] != "RS256"
        || c["iss"] != FCM_EMAIL
        || c["aud"] != st.token_url.as_str()
        || c["scope"] != "https://www.googleapis.com/auth/firebase.messaging"
        || exp < now()
    {
        return Err(format!("bad claims {c}"));
    }
    Ok(())
}

/// OAuth2 client credentials of Huawei (`huawei_token`) or Honor (`honor_token`).
pub fn client_credentials(kind: &str, f: &HashMap<String, String>) -> Result<(), String> {
    let (id, secret) = if kind == "honor_token" {
        (HONOR_APP, HONOR_SECRET)
    } else {
        (HUAWEI_APP, HUAWEI_SECRET)
    };
    let ok = f.get("grant_type").map(String::as_str) == Some("client_credentials")
        && f.get("client_id").map(String::as_str) == Some(id)
        && f.get("client_secret").map(String::as_str) == Some(secret);
    if ok {
        Ok(())
    } else {
        Err("bad client credentials".to_owned())
    }
}

/// OPPO `/server/v1/auth`: `sign` = hex SHA-256 of app_key + timestamp + master_secret.
pub fn oppo_auth(f: &HashMap<String, String>) -> Result<(), String> {
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or_default();
    let ts = get("timestamp");
    let want = hex(ring::digest::digest(
        &ring::digest::SHA256,
        format!("{OPPO_APP_KEY}{ts}{OPPO_MASTER_SECRET}").as_bytes(),
    )
    .as_ref());
    let fresh = ts
        .parse::<i64>()
        .is_ok_and(|ms| (now() * 1000 - ms).abs() < 600_000);
    if get("app_key") == OPPO_APP_KEY && get("sign") == want && fresh {
        Ok(())
    } else {
        Err("sign error".into())
    }
}

/// vivo `/message/auth`: `sign` = lower-case hex MD5 of appId + appKey + timestamp +
/// appSecret; the timestamp within ten minutes.
pub fn vivo_auth(v: &Value) -> Result<(), String> {
    use md5::Digest as _;
    let ts = v["timestamp"].as_i64().unwrap_or(0);
    let app_id = match &v["appId"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let want = hex(&md5::Md5::digest(
        format!("{app_id}{VIVO_APP_KEY}{ts}{VIVO_APP_SECRET}").as_bytes(),
    ));
    if app_id == VIVO_APP_ID
        && v["appKey"] == VIVO_APP_KEY
        && v["sign"] == want.as_str()
        && (now() * 1000 - ts).abs() < 600_000
    {
        Ok(())
    } else {
        Err("sign 不合法".into())
    }
}

pub fn xiaomi(headers: &HashMap<String, String>) -> Result<(), Refusal> {
    if hdr(headers, "authorization") == format!("key={XIAOMI_SECRET}") {
        Ok(())
    } else {
        Err((
            401,
            json!({"result": "error", "code": 22006, "reason": "Invalid app secret"}).to_string(),
        ))
    }
}

/// Meizu's signed form: `sign` = lower-case hex MD5 of every other parameter as `k=v`,
/// sorted by key, concatenated, then the app secret; `appId` the test app's.
pub fn meizu(f: &HashMap<String, String>) -> Result<(), Refusal> {
    use md5::Digest as _;
    let mut keys: Vec<&String> = f.keys().filter(|k| *k != "sign").collect();
    keys.sort();
    let mut plain: String = keys.iter().map(|k| format!("{k}={}", f[*k])).collect();
    plain.push_str(MEIZU_APP_SECRET);
    let want = hex(&md5::Md5::digest(plain.as_bytes()));
    let refuse = |code: &str, message: &str| {
        Err((
            200,
            json!({"code": code, "message": message, "value": "", "redirect": ""}).to_string(),
        ))
    };
    if f.get("appId").map(String::as_str) != Some(MEIZU_APP_ID) {
        return refuse("110000", "appId不合法");
    }
    if f.get("sign") != Some(&want) || !f.contains_key("pushIds") || !f.contains_key("messageJson")
    {
        return refuse("1006", "签名认证失败");
    }
    Ok(())
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
