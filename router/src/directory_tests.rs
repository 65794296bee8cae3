//! Tests of the directory: registration and sign-in (bound to the
//! network), single-use challenges, prekeys and order keys.

use super::*;
use ed25519_dalek::{Signer, SigningKey};
use grompi_proto::ids::{NetworkBinding, prekey_signing_message};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// The network the tests' router belongs to.
fn net() -> NetworkBinding {
    NetworkBinding::of(
        "ours",
        "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----",
    )
}

pub(crate) fn registration(
    sk: &SigningKey,
    challenge: Challenge,
    order_keys: Vec<Vec<u8>>,
) -> pb::RegisterRequest {
    let prekey = [5u8; 32];
    pb::RegisterRequest {
        identity: Some(pb::IdentityKeys {
            signing_key: sk.verifying_key().to_bytes().to_vec(),
            session_key: vec![9; 32],
        }),
        challenge: challenge.to_vec(),
        signature: sk
            .sign(&challenge.network_signing_message(&net()))
            .to_bytes()
            .to_vec(),
        fallback_prekey: Some(pb::SignedPrekey {
            key: prekey.to_vec(),
            signature: sk
                .sign(&prekey_signing_message(&prekey))
                .to_bytes()
                .to_vec(),
        }),
        one_time_prekeys: vec![vec![1; 32], vec![2; 32]],
        order_keys,
    }
}

fn order_key(seed: u8) -> Vec<u8> {
    grompi_proto::SlotSecret::from_bytes([seed; 32])
        .public_key()
        .to_vec()
}

#[test]
fn session_token_hash_matches_the_published_vector() {
    let v = grompi_proto::vectors::find("router_session_token_hash").unwrap();
    assert_eq!(
        v.context.as_deref(),
        Some(grompi_proto::context::ROUTER_SESSION_TOKEN)
    );
    let token: [u8; 32] = v.field_bytes("token").unwrap().try_into().unwrap();
    assert_eq!(v.input_bytes().unwrap(), token);
    let published = v.output_bytes().unwrap();
    assert_eq!(token_hash(&token).to_vec(), published);
    assert_eq!(SessionToken(token).hash().to_vec(), published);
}

#[test]
fn register_sign_in_and_challenges_are_single_use() {
    let mut rng = StdRng::seed_from_u64(1);
    let limits = Limits::default();
    let mut d = Directory::new(1_000_000);
    let mut out = Vec::new();
    let sk = SigningKey::from_bytes(&[3; 32]);
    let c = d.issue_challenge(0, &mut rng, &limits).unwrap();
    let req = registration(&sk, c, vec![order_key(1)]);
    let new = parse_register(&req, &net()).unwrap();
    let (id, token) = d.register(new.clone(), 1, &mut rng, &mut out).unwrap();
    assert_eq!(d.authenticate(&token.to_vec(), 2).unwrap(), id);
    // Replaying the same registration: the challenge is spent.
    let e = d.register(new, 2, &mut rng, &mut out).unwrap_err();
    assert!(matches!(e, RouterError::ChallengeUnknown));
    // Registering the same identity again with a fresh challenge.
    let c2 = d.issue_challenge(3, &mut rng, &limits).unwrap();
    let e = d
        .register(
            parse_register(&registration(&sk, c2, vec![]), &net()).unwrap(),
            3,
            &mut rng,
            &mut out,
        )
        .unwrap_err();
    assert!(matches!(e, RouterError::AccountExists));
    // Sign in, and an expired challenge.
    let c3 = d.issue_challenge(4, &mut rng, &limits).unwrap();
    let s = SignIn {
        account: id,
        challenge: c3,
        signature: sk.sign(&c3.network_signing_message(&net())).to_bytes(),
        network: net(),
        accept_unbound: false,
    };
    let t2 = d.sign_in(&s, 5, &mut rng, &mut out).unwrap();
    assert_eq!(d.authenticate(&t2.to_vec(), 6).unwrap(), id);
    let c4 = d.issue_challenge(10, &mut rng, &limits).unwrap();
    let s = SignIn {
        account: id,
        challenge: c4,
        signature: sk.sign(&c4.network_signing_message(&net())).to_bytes(),
        network: net(),
        accept_unbound: false,
    };
    let e = d
        .sign_in(&s, 10 + limits.challenge_ttl_ms, &mut rng, &mut out)
        .unwrap_err();
    assert!(matches!(e, RouterError::ChallengeExpired));
    assert!(d.authenticate(&[0; 32], 6).is_err());
    assert!(d.authenticate(&[0; 5], 6).is_err());
    // Sessions end after their lifetime; ended ones are deleted.
    let e = d.authenticate(&t2.to_vec(), 5 + 1_000_000).unwrap_err();
    assert!(matches!(e, RouterError::SessionExpired));
    assert_eq!(d.session_count(), 2);
    let mut pruned = Vec::new();
    d.prune_sessions(1 + 1_000_000, &mut pruned);
    assert_eq!(
        d.session_count(),
        1,
        "the first session ended, the second not yet"
    );
    assert!(matches!(pruned.as_slice(), [Record::SessionEnded { hash }] if *hash == token.hash()));
    assert_eq!(d.authenticate(&t2.to_vec(), 2 + 1_000_000).unwrap(), id);
    // Stored with their end; stored without one (older records): not restored.
    let mut r = Directory::new(1_000_000);
    r.restore_session(t2.hash(), id, Some(5 + 1_000_000));
    r.restore_session(token.hash(), id, None);
    assert_eq!(r.authenticate(&t2.to_vec(), 6).unwrap(), id);
    assert!(r.authenticate(&token.to_vec(), 6).is_err());
}

#[test]
fn a_sign_in_signed_for_another_network_is_refused() {
    let mut rng = StdRng::seed_from_u64(3);
    let limits = Limits::default();
    let ours = net();
    let theirs = NetworkBinding::of(
        "theirs",
        "-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----",
    );
    let mut d = Directory::new(1_000_000);
    let mut out = Vec::new();
    let sk = SigningKey::from_bytes(&[3; 32]);
    let bound = |c: Challenge, n: &NetworkBinding, keys: Vec<Vec<u8>>| {
        let mut r = registration(&sk, c, keys);
        r.signature = sk.sign(&c.network_signing_message(n)).to_bytes().to_vec();
        r
    };
    let unbound = |c: Challenge| {
        let mut r = registration(&sk, c, vec![]);
        r.signature = sk.sign(&c.signing_message()).to_bytes().to_vec();
        r
    };

    // Registration: a signature another network's router obtained for
    // this challenge, or the older unbound one, is refused.
    let c = d.issue_challenge(0, &mut rng, &limits).unwrap();
    for (r, accept_unbound) in [
        (bound(c, &theirs, vec![]), true),
        (bound(c, &theirs, vec![]), false),
        (unbound(c), false),
    ] {
        let e = parse_register_for(&r, &ours, accept_unbound).unwrap_err();
        assert!(matches!(&e, RouterError::BadChallengeSignature), "{e:?}");
    }
    let e = parse_register(&unbound(c), &ours).unwrap_err();
    assert!(matches!(&e, RouterError::BadChallengeSignature), "{e:?}");
    // Only with `accept_unbound_sign_in` on (a migration) is it accepted.
    parse_register_for(&unbound(c), &ours, true).unwrap();
    let new = parse_register_for(&bound(c, &ours, vec![order_key(1)]), &ours, false).unwrap();
    let (id, _) = d.register(new, 1, &mut rng, &mut out).unwrap();

    // Sign-in: the same.
    let sign_in = |c: Challenge, n: Option<&NetworkBinding>| {
        let message = match n {
            Some(n) => c.network_signing_message(n),
            None => c.signing_message(),
        };
        pb::SignInRequest {
            account: id.to_vec(),
            challenge: c.to_vec(),
            signature: sk.sign(&message).to_bytes().to_vec(),
        }
    };
    for (n, accept_unbound) in [(Some(&theirs), true), (Some(&theirs), false), (None, false)] {
        let c = d.issue_challenge(2, &mut rng, &limits).unwrap();
        let s = parse_sign_in_for(&sign_in(c, n), &ours, accept_unbound).unwrap();
        let e = d.sign_in(&s, 3, &mut rng, &mut out).unwrap_err();
        assert!(matches!(&e, RouterError::BadChallengeSignature), "{e:?}");
    }
    let c = d.issue_challenge(4, &mut rng, &limits).unwrap();
    let s = parse_sign_in_for(&sign_in(c, Some(&ours)), &ours, false).unwrap();
    let t = d.sign_in(&s, 5, &mut rng, &mut out).unwrap();
    assert_eq!(d.authenticate(&t.to_vec(), 6).unwrap(), id);
    // While unbound signatures are accepted (older clients), they still
    // sign in.
    let c = d.issue_challenge(6, &mut rng, &limits).unwrap();
    let s = parse_sign_in_for(&sign_in(c, None), &ours, true).unwrap();
    d.sign_in(&s, 7, &mut rng, &mut out).unwrap();
}

#[test]
fn the_network_binding_matches_the_published_vectors() {
    let v = grompi_proto::vectors::find("network_binding").unwrap();
    assert_eq!(
        v.context.as_deref(),
        Some(grompi_proto::context::NETWORK_BINDING)
    );
    let binding = NetworkBinding::of(
        v.fields["name"].as_str().unwrap(),
        v.fields["router_tls_ca_pem"].as_str().unwrap(),
    );
    assert_eq!(binding.to_vec(), v.output_bytes().unwrap());
    let m = grompi_proto::vectors::find("network_sign_in_message").unwrap();
    assert_eq!(m.field_bytes("network_binding").unwrap(), binding.to_vec());
    let c = Challenge::parse("challenge", &m.field_bytes("challenge").unwrap()).unwrap();
    assert_eq!(
        c.network_signing_message(&binding),
        m.input_bytes().unwrap()
    );
    assert_eq!(
        m.context.as_deref(),
        Some(grompi_proto::context::SIGN_IN_NETWORK)
    );
}

#[test]
fn bad_signatures_are_refused_with_reasons() {
    let sk = SigningKey::from_bytes(&[3; 32]);
    let c = Challenge::from_bytes([7; 32]);
    let mut req = registration(&sk, c, vec![]);
    req.signature[0] ^= 1;
    assert!(matches!(
        parse_register(&req, &net()),
        Err(RouterError::BadChallengeSignature)
    ));
    let mut req = registration(&sk, c, vec![]);
    if let Some(p) = req.fallback_prekey.as_mut() {
        p.key[0] ^= 1;
    }
    assert!(matches!(
        parse_register(&req, &net()),
        Err(RouterError::BadPrekeySignature {
            field: "fallback_prekey"
        })
    ));
    let mut req = registration(&sk, c, vec![vec![0; 32]]);
    req.order_keys = vec![vec![0; 32]];
    assert!(matches!(
        parse_register(&req, &net()),
        Err(RouterError::LowOrderKey)
    ));
    let req = registration(&sk, c, vec![vec![1; 31]]);
    assert!(matches!(
        parse_register(&req, &net()),
        Err(RouterError::WrongLength {
            expected: 32,
            got: 31,
            ..
        })
    ));
}

#[test]
fn one_time_prekeys_are_handed_out_once_and_order_keys_run_out() {
    let mut rng = StdRng::seed_from_u64(2);
    let limits = Limits::default();
    let mut d = Directory::default();
    let mut out = Vec::new();
    let sk = SigningKey::from_bytes(&[3; 32]);
    let c = d.issue_challenge(0, &mut rng, &limits).unwrap();
    let (id, _) = d
        .register(
            parse_register(&registration(&sk, c, vec![order_key(1)]), &net()).unwrap(),
            0,
            &mut rng,
            &mut out,
        )
        .unwrap();
    let a = d.prekey_bundle(&id, &mut out).unwrap();
    let b = d.prekey_bundle(&id, &mut out).unwrap();
    let c = d.prekey_bundle(&id, &mut out).unwrap();
    assert_ne!(a.one_time_prekey, b.one_time_prekey);
    assert!(!a.one_time_prekey.is_empty() && !b.one_time_prekey.is_empty());
    assert!(c.one_time_prekey.is_empty());
    assert_eq!(d.key_counts(&id), (0, 1));
    d.check_order_keys(&[id]).unwrap();
    d.take_order_key(&id, &mut out).unwrap();
    let e = d.check_order_keys(&[id]).unwrap_err();
    assert!(matches!(e, RouterError::NoOrderKeys(a) if a == id));
}
