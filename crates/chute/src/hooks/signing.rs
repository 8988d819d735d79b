//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): the signed content is
//! `{webhook-id}.{webhook-timestamp}.{body}`, signed with HMAC-SHA256 under the secret's key,
//! sent as `v1,` and the base64 of the tag.

use base64::Engine as _;
use ring::hmac;

/// Signs deliveries with one secret's key.
pub struct Signer {
    key: hmac::Key,
}

impl Signer {
    /// None when `secret` is not a Standard Webhooks secret (`whsec_`, base64 of 24-64 bytes).
    pub fn new(secret: &str) -> Option<Self> {
        let key = crate::events::secret_key(secret)?;
        Some(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
        })
    }

    /// The `webhook-signature` header's value for a delivery.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body.as_bytes());
        let tag = ctx.sign();
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
        )
    }
}

/// The HTTP client every hook request goes out on: `timeout` bounds each request, redirects
/// are not followed (a receiver answers itself).
pub fn client(timeout: std::time::Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("chute/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// POSTs `body` as message `id` to `url`, signed with `signer` and stamped now.
pub async fn post_signed(
    client: &reqwest::Client,
    url: &str,
    signer: &Signer,
    id: &str,
    body: String,
) -> reqwest::Result<reqwest::Response> {
    let timestamp = crate::events::now_ms() / 1000;
    let signature = signer.sign(id, timestamp, &body);
    client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector published with the Standard Webhooks specification (its reference
    /// libraries' tests). The end-to-end tests verify real deliveries with the `standardwebhooks`
    /// package instead.
    #[test]
    fn the_specifications_example_signs_the_same() {
        let s = Signer::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let sig = s.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(Signer::new("whsec_short").is_none());
    }
}
