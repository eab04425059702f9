//! The auth service's HTTP API, on SQLite and PostgreSQL: sign-up, login, tokens,
//! sessions, API keys and the access matrix.

mod common;

use axum::http::{Method, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Harness, START_MS, on_every_store};
use paystream_auth::model::AccessClaims;
use paystream_http::Role;
use serde_json::json;

#[tokio::test]
async fn signup_validates_and_refuses_a_taken_address() {
    on_every_store("signup", |h: Harness| async move {
        let user_id = h.signup("Ada@Example.com").await;
        assert!(user_id.starts_with("usr_"));
        let again = json!({"email": "ada@example.COM", "password": "correct horse battery", "display_name": "X"});
        let (status, headers, body) = h.call(Method::POST, "/v1/auth/signup", None, Some(again)).await;
        assert_eq!(status, StatusCode::CONFLICT, "{}", h.store_name);
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(body["code"], "email_taken");
        for (body, code) in [
            (json!({"email": "nope", "password": "correct horse battery", "display_name": "X"}), "invalid_email"),
            (json!({"email": "b@example.com", "password": "short", "display_name": "X"}), "invalid_password"),
            (json!({"email": "b@example.com", "password": "correct horse battery", "display_name": ""}), "invalid_display_name"),
            (json!({"email": "b@example.com", "password": "correct horse battery"}), "invalid_body"),
            (json!({"email": "b@example.com", "password": "correct horse battery", "display_name": "X", "roles": ["admin"]}), "invalid_body"),
        ] {
            let (status, _, problem) = h.call(Method::POST, "/v1/auth/signup", None, Some(body.clone())).await;
            assert_eq!((status, problem["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{body}: {problem}");
        }
        // The stored password is an argon2id hash at OWASP parameters.
        let account = h.service.store().account_by_email("ada@example.com").await.unwrap().unwrap();
        assert!(account.password_hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{}", account.password_hash);
        assert_eq!(account.roles, vec![Role::Customer]);
    })
    .await;
}

#[tokio::test]
async fn unknown_user_and_wrong_password_look_the_same_and_are_throttled() {
    on_every_store("login", |h: Harness| async move {
        h.signup("ada@example.com").await;
        let wrong = h
            .call(
                Method::POST,
                "/v1/auth/login",
                None,
                Some(json!({"email": "ada@example.com", "password": "wrong password!"})),
            )
            .await;
        let unknown = h
            .call(
                Method::POST,
                "/v1/auth/login",
                None,
                Some(json!({"email": "bob@example.com", "password": "wrong password!"})),
            )
            .await;
        assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
        assert_eq!((wrong.0, &wrong.2), (unknown.0, &unknown.2), "{}", h.store_name);
        // Five failures in all for the account lock it, even for the right password.
        for _ in 0..4 {
            let body = json!({"email": "ada@example.com", "password": "wrong password!"});
            assert_eq!(h.call(Method::POST, "/v1/auth/login", None, Some(body)).await.0, StatusCode::UNAUTHORIZED);
        }
        let right = json!({"email": "ada@example.com", "password": "correct horse battery"});
        let (status, headers, body) = h.call(Method::POST, "/v1/auth/login", None, Some(right.clone())).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        let retry_after: u64 = headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
        assert!((1..=900).contains(&retry_after), "{retry_after}");
        h.advance_ms(retry_after as i64 * 1000);
        assert_eq!(h.call(Method::POST, "/v1/auth/login", None, Some(right)).await.0, StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn tokens_carry_the_contract_claims_and_me_answers() {
    on_every_store("claims", |h: Harness| async move {
        let user_id = h.signup("ada@example.com").await;
        let body = json!({"email": "ada@example.com", "password": "correct horse battery"});
        let (_, headers, tokens) = h.call(Method::POST, "/v1/auth/login", None, Some(body)).await;
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(tokens["token_type"], "Bearer");
        assert_eq!(tokens["expires_in"], 900);
        let access = tokens["access_token"].as_str().unwrap();
        let mut parts = access.split('.');
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["kid"], h.keys.signing_kid().unwrap());
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
        for claim in ["iss", "aud", "sub", "exp", "iat", "jti", "roles", "sid"] {
            assert!(claims.get(claim).is_some(), "{claim} missing: {claims}");
        }
        assert_eq!(claims["sub"], user_id.as_str());
        assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 900);
        let (status, _, me) = h.call(Method::GET, "/v1/me", Some(access), None).await;
        assert_eq!(status, StatusCode::OK, "{me}");
        assert_eq!(me["email"], "ada@example.com");
        assert!(me.get("password_hash").is_none());
        let (status, headers, _) = h.call(Method::GET, "/v1/me", None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        // The key set publishes the signing key.
        let (status, _, jwks) = h.call(Method::GET, "/.well-known/jwks.json", None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(jwks["keys"][0]["kid"], h.keys.signing_kid().unwrap());
        assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
        assert!(jwks["keys"][0].get("d").is_none(), "no private part");
    })
    .await;
}

fn encode_segment(value: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test]
async fn tampered_tokens_are_refused() {
    on_every_store("tampered", |h: Harness| async move {
        let user_id = h.signup("ada@example.com").await;
        let (access, _) = h.login("ada@example.com").await;
        assert_eq!(h.call(Method::GET, "/v1/me", Some(&access), None).await.0, StatusCode::OK);
        let payload = access.split('.').nth(1).unwrap().to_string();
        let claims: AccessClaims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&payload).unwrap()).unwrap();
        let now = (START_MS / 1000) as u64;
        let signed = |claims: &AccessClaims| h.keys.sign(claims).unwrap();

        let mut tampered: Vec<(&str, String)> = Vec::new();
        tampered.push(("alg none", format!("{}.{payload}.", encode_segment(&json!({"alg": "none", "typ": "JWT"})))));
        // HS256 "signed" with the public key, the classic algorithm confusion.
        let jwks = h.keys.jwks(START_MS);
        let public_key = URL_SAFE_NO_PAD.decode(jwks["keys"][0]["x"].as_str().unwrap()).unwrap();
        let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        hs_header.kid = Some(h.keys.signing_kid().unwrap().to_string());
        tampered.push((
            "HS256 with the public key",
            jsonwebtoken::encode(&hs_header, &claims, &jsonwebtoken::EncodingKey::from_secret(&public_key).unwrap())
                .unwrap(),
        ));
        tampered.push(("expired", signed(&AccessClaims { iat: now - 2000, exp: now - 1000, ..claims.clone() })));
        tampered.push(("wrong aud", signed(&AccessClaims { aud: "other-api".into(), ..claims.clone() })));
        tampered.push(("wrong iss", signed(&AccessClaims { iss: "evil".into(), ..claims.clone() })));
        tampered.push(("too long a life", signed(&AccessClaims { exp: now + 86_400, ..claims.clone() })));
        let stranger = Keyring::generate(START_MS).unwrap();
        tampered.push(("unknown kid", stranger.sign(&claims).unwrap()));
        let mut other_sub = access.split('.').map(str::to_string).collect::<Vec<_>>();
        other_sub[1] = encode_segment(&json!({"sub": format!("{user_id}x")}));
        tampered.push(("bad signature", other_sub.join(".")));
        let mut flipped = access.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        tampered.push(("flipped signature", String::from_utf8(flipped).unwrap()));
        tampered.push(("garbage", "not.a.token".to_string()));
        for (what, token) in tampered {
            let (status, _, body) = h.call(Method::GET, "/v1/me", Some(&token), None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{}: {what}: {body}", h.store_name);
            assert_eq!(body["code"], "unauthorized", "{what}");
        }
    })
    .await;
}

use paystream_auth::Keyring;

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    on_every_store("refresh", |h: Harness| async move {
        h.signup("ada@example.com").await;
        let (access, first) = h.login("ada@example.com").await;
        let (status, _, rotated) =
            h.call(Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": first}))).await;
        assert_eq!(status, StatusCode::OK, "{rotated}");
        let second = rotated["refresh_token"].as_str().unwrap().to_string();
        let new_access = rotated["access_token"].as_str().unwrap().to_string();
        assert_ne!(second, first);
        assert_eq!(h.call(Method::GET, "/v1/me", Some(&new_access), None).await.0, StatusCode::OK);
        // The spent token again: the whole session goes.
        let (status, _, body) =
            h.call(Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": first}))).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_refresh_token")));
        let (status, _, _) =
            h.call(Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": second}))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{}: the family is revoked", h.store_name);
        assert_eq!(h.call(Method::GET, "/v1/me", Some(&access), None).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(h.call(Method::GET, "/v1/me", Some(&new_access), None).await.0, StatusCode::UNAUTHORIZED);
        // Unknown tokens and ended sessions.
        let (status, _, _) =
            h.call(Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": "rt_nothing"}))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (_, third) = h.login("ada@example.com").await;
        h.advance_ms(31 * 24 * 3600 * 1000);
        let (status, _, _) =
            h.call(Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": third}))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "the session expired");
    })
    .await;
}

#[tokio::test]
async fn logout_and_role_changes_stop_access_tokens_at_once() {
    on_every_store("logout", |h: Harness| async move {
        let user_id = h.signup("ada@example.com").await;
        let (access, refresh) = h.login("ada@example.com").await;
        let (other_session, _) = h.login("ada@example.com").await;
        assert_eq!(h.call(Method::POST, "/v1/auth/logout", Some(&access), None).await.0, StatusCode::NO_CONTENT);
        assert_eq!(h.call(Method::GET, "/v1/me", Some(&access), None).await.0, StatusCode::UNAUTHORIZED);
        let (status, _, _) =
            h.call(Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": refresh}))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            h.call(Method::GET, "/v1/me", Some(&other_session), None).await.0,
            StatusCode::OK,
            "other sessions live"
        );

        // A role change refuses tokens issued before it.
        h.signup("root@example.com").await;
        let root = h.service.store().account_by_email("root@example.com").await.unwrap().unwrap();
        assert!(h.service.store().set_roles(&root.user_id, &[Role::Admin], None).await.unwrap());
        let (admin, _) = h.login("root@example.com").await;
        let body = json!({"roles": ["customer", "merchant"], "merchant_id": "M42"});
        let path = format!("/v1/auth/users/{user_id}/roles");
        let (status, _, account) = h.call(Method::PUT, &path, Some(&admin), Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{account}");
        assert_eq!(account["merchant_id"], "M42");
        assert_eq!(h.call(Method::GET, "/v1/me", Some(&other_session), None).await.0, StatusCode::UNAUTHORIZED);
        let (fresh, _) = h.login("ada@example.com").await;
        let (_, _, me) = h.call(Method::GET, "/v1/me", Some(&fresh), None).await;
        assert_eq!(me["roles"], json!(["customer", "merchant"]));
        // Role rules: a merchant needs a merchant id, and unknown users are 404.
        let (status, _, _) = h.call(Method::PUT, &path, Some(&admin), Some(json!({"roles": ["merchant"]}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _, _) = h
            .call(Method::PUT, "/v1/auth/users/usr_none/roles", Some(&admin), Some(json!({"roles": ["customer"]})))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    })
    .await;
}

#[tokio::test]
async fn api_keys_are_stored_hashed_belong_to_their_owner_and_revoke() {
    on_every_store("api_keys", |h: Harness| async move {
        for email in ["m1@example.com", "m2@example.com"] {
            let user_id = h.signup(email).await;
            assert!(h.service.store().set_roles(&user_id, &[Role::Merchant], Some(email)).await.unwrap());
        }
        let (m1, _) = h.login("m1@example.com").await;
        let (m2, _) = h.login("m2@example.com").await;
        let (status, _, created) =
            h.call(Method::POST, "/v1/auth/api-keys", Some(&m1), Some(json!({"name": "till 1"}))).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let key = created["api_key"].as_str().unwrap().to_string();
        let key_id = created["key_id"].as_str().unwrap().to_string();
        assert!(key.starts_with(&format!("psk_{}_", created["prefix"].as_str().unwrap())));
        let stored = h
            .service
            .store()
            .api_keys_of(&h.service.store().account_by_email("m1@example.com").await.unwrap().unwrap().user_id)
            .await
            .unwrap();
        assert_eq!(stored.len(), 1);
        assert!(!stored[0].key_hash.contains(&key) && stored[0].key_hash.len() == 64, "only a hash is stored");
        let (status, _, me) = h.call(Method::GET, "/v1/me", Some(&key), None).await;
        assert_eq!((status, me["email"].as_str()), (StatusCode::OK, Some("m1@example.com")));
        let (_, _, listed) = h.call(Method::GET, "/v1/auth/api-keys", Some(&m1), None).await;
        assert_eq!(listed["data"].as_array().unwrap().len(), 1);
        assert!(!listed.to_string().contains(&key), "keys are shown once");
        let (_, _, others) = h.call(Method::GET, "/v1/auth/api-keys", Some(&m2), None).await;
        assert_eq!(others["data"], json!([]));
        // Another merchant cannot revoke it: it does not exist for them.
        let path = format!("/v1/auth/api-keys/{key_id}");
        assert_eq!(h.call(Method::DELETE, &path, Some(&m2), None).await.0, StatusCode::NOT_FOUND);
        assert_eq!(h.call(Method::GET, "/v1/me", Some(&key), None).await.0, StatusCode::OK);
        assert_eq!(h.call(Method::DELETE, &path, Some(&m1), None).await.0, StatusCode::NO_CONTENT);
        assert_eq!(h.call(Method::GET, "/v1/me", Some(&key), None).await.0, StatusCode::UNAUTHORIZED);
        let forged = format!("{}x", &key[..key.len() - 1]);
        assert_eq!(h.call(Method::GET, "/v1/me", Some(&forged), None).await.0, StatusCode::UNAUTHORIZED);
    })
    .await;
}

#[tokio::test]
async fn old_keys_verify_until_their_tokens_expire_after_rotation() {
    on_every_store("rotation", |h: Harness| async move {
        h.signup("ada@example.com").await;
        let (old_token, _) = h.login("ada@example.com").await;
        let mut rotated = h.keys.clone();
        let new_kid = rotated.rotate(START_MS + 1).unwrap();
        h.service.set_keys(rotated);
        let (_, _, jwks) = h.call(Method::GET, "/.well-known/jwks.json", None, None).await;
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "{jwks}");
        assert_eq!(h.call(Method::GET, "/v1/me", Some(&old_token), None).await.0, StatusCode::OK, "old key verifies");
        let (new_token, _) = h.login("ada@example.com").await;
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(new_token.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header["kid"], new_kid.as_str());
        h.advance_ms(16 * 60 * 1000);
        let (_, _, jwks) = h.call(Method::GET, "/.well-known/jwks.json", None, None).await;
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 1, "the retired key left the set");
    })
    .await;
}

#[tokio::test]
async fn a_weaker_hash_is_replaced_at_login() {
    on_every_store("rehash", |h: Harness| async move {
        let user_id = h.signup("ada@example.com").await;
        let weak = paystream_auth::password::hash(
            "correct horse battery",
            paystream_auth::password::HashParams { memory_kib: 64, iterations: 1, parallelism: 1 },
        )
        .unwrap();
        h.service.store().set_password_hash(&user_id, &weak).await.unwrap();
        h.login("ada@example.com").await;
        let account = h.service.store().account_by_id(&user_id).await.unwrap().unwrap();
        assert!(account.password_hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{}", account.password_hash);
    })
    .await;
}

/// Every route × every role (and no credential): 401 without a credential on guarded
/// routes, 403 for roles a route does not admit, and neither for the roles it admits.
#[tokio::test]
async fn access_matrix_denies_by_default() {
    on_every_store("matrix", |h: Harness| async move {
        let mut tokens = Vec::new();
        for role in Role::ALL {
            let email = format!("{}@example.com", role.as_str());
            let user_id = h.signup(&email).await;
            let merchant_id = (role == Role::Merchant).then_some("M1");
            assert!(h.service.store().set_roles(&user_id, &[role], merchant_id).await.unwrap());
            tokens.push((Some(role), Some(h.login(&email).await.0)));
        }
        tokens.push((None, None));
        // Logout ends the session its token belongs to: walk it last.
        let mut table = paystream_auth::routes::routes().table().to_vec();
        table.sort_by_key(|route| route.path.ends_with("/logout"));
        for route in &table {
            let path = route.path.replace("{key_id}", "key_none").replace("{user_id}", "usr_none");
            for (role, token) in &tokens {
                let body = matches!(route.method, Method::POST | Method::PUT).then(|| json!({}));
                let (status, _, _) = h.call(route.method.clone(), &path, token.as_deref(), body).await;
                let expected = match (route.access, role) {
                    (paystream_http::Access::Public, _) => None,
                    (paystream_http::Access::Roles(_), None) => Some(StatusCode::UNAUTHORIZED),
                    (paystream_http::Access::Roles(roles), Some(role)) if !roles.contains(role) => {
                        Some(StatusCode::FORBIDDEN)
                    }
                    _ => None,
                };
                match expected {
                    Some(expected) => assert_eq!(status, expected, "{} {path} as {role:?}", route.method),
                    None => assert!(
                        status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN
                            || path.ends_with("/login")
                            || path.ends_with("/refresh"),
                        "{} {path} as {role:?}: {status}",
                        route.method
                    ),
                }
            }
        }
    })
    .await;
}
