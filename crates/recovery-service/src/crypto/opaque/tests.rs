//! The server side against RFC 9807's test vectors and against opaque-ke's own client.

use opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, ClientRegistration,
    ClientRegistrationFinishParameters, CredentialResponse, RegistrationResponse,
};

use super::*;

fn unhex(text: &str) -> Vec<u8> {
    hex::decode(text.split_whitespace().collect::<String>()).unwrap()
}

/// An RNG that replays fixed bytes: opaque-ke draws the fake record's masking key (64 bytes,
/// drawn even for a real record so both take the same work), the masking nonce, the server's
/// key-share seed and the server nonce, in that order.
struct Replay(Vec<u8>);

impl rand_core_06::RngCore for Replay {
    fn next_u32(&mut self) -> u32 {
        unimplemented!("only fill_bytes is used")
    }
    fn next_u64(&mut self) -> u64 {
        unimplemented!("only fill_bytes is used")
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        assert!(self.0.len() >= dest.len(), "the replay ran out of bytes");
        let rest = self.0.split_off(dest.len());
        dest.copy_from_slice(&self.0);
        self.0 = rest;
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core_06::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl rand_core_06::CryptoRng for Replay {}

/// RFC 9807, appendix C.1.1 (OPAQUE-3DH Real Test Vector 1: ristretto255-SHA512, no
/// identities, context "OPAQUE-POC"): the server's registration response, KE2 and its check of
/// the client's KE3 are the RFC's bytes.
#[test]
fn rfc_9807_real_test_vector_1() {
    let oprf_seed = unhex(
        "f433d0227b0b9dd54f7c4422b600e764e47fb503f1f9a0f0a47c6606b054a7fdc65347f1a08f277e22358bbabe26f823fca82c7848e9a75661f4ec5d5c1989ef",
    );
    let server_private_key =
        unhex("47451a85372f8b3537e249d7b54188091fb18edde78094b43e2ba42b5eb89f0d");
    let server_public_key =
        unhex("b2fe7af9f48cc502d016729d2fe25cdd433f2c4bc904660b2a382c9b79df1a78");
    let credential_identifier = unhex("31323334");
    let context = unhex("4f50415155452d504f43");
    let registration_request =
        unhex("5059ff249eb1551b7ce4991f3336205bde44a105a032e747d21bf382e75f7a71");
    let registration_response = unhex(
        "7408a268083e03abc7097fc05b587834539065e86fb0c7b6342fcf5e01e5b019b2fe7af9f48cc502d016729d2fe25cdd433f2c4bc904660b2a382c9b79df1a78",
    );
    let registration_upload = unhex(
        "76a845464c68a5d2f7e442436bb1424953b17d3e2e289ccbaccafb57ac5c36751ac5844383c7708077dea41cbefe2fa15724f449e535dd7dd562e66f5ecfb95864eadddec9db5874959905117dad40a4524111849799281fefe3c51fa82785c5ac13171b2f17bc2c74997f0fce1e1f35bec6b91fe2e12dbd323d23ba7a38dfec634b0f5b96109c198a8027da51854c35bee90d1e1c781806d07d49b76de6a28b8d9e9b6c93b9f8b64d16dddd9c5bfb5fea48ee8fd2f75012a8b308605cdd8ba5",
    );
    let ke1 = unhex(
        "c4dedb0ba6ed5d965d6f250fbe554cd45cba5dfcce3ce836e4aee778aa3cd44dda7e07376d6d6f034cfa9bb537d11b8c6b4238c334333d1f0aebb380cae6a6cc6e29bee50701498605b2c085d7b241ca15ba5c32027dd21ba420b94ce60da326",
    );
    let ke2 = unhex(
        "7e308140890bcde30cbcea28b01ea1ecfbd077cff62c4def8efa075aabcbb47138fe59af0df2c79f57b8780278f5ae47355fe1f817119041951c80f612fdfc6dd6ec60bcdb26dc455ddf3e718f1020490c192d70dfc7e403981179d8073d1146a4f9aa1ced4e4cd984c657eb3b54ced3848326f70331953d91b02535af44d9fedc80188ca46743c52786e0382f95ad85c08f6afcd1ccfbff95e2bdeb015b166c6b20b92f832cc6df01e0b86a7efd92c1c804ff865781fa93f2f20b446c8371b671cd9960ecef2fe0d0f7494986fa3d8b2bb01963537e60efb13981e138e3d4a1c4f62198a9d6fa9170c42c3c71f1971b29eb1d5d0bd733e40816c91f7912cc4a660c48dae03e57aaa38f3d0cffcfc21852ebc8b405d15bd6744945ba1a93438a162b6111699d98a16bb55b7bdddfe0fc5608b23da246e7bd73b47369169c5c90",
    );
    let ke3 = unhex(
        "4455df4f810ac31a6748835888564b536e6da5d9944dfea9e34defb9575fe5e2661ef61d2ae3929bcf57e53d464113d364365eb7d1a57b629707ca48da18e442",
    );
    let masking_nonce = unhex("38fe59af0df2c79f57b8780278f5ae47355fe1f817119041951c80f612fdfc6d");
    let server_keyshare_seed =
        unhex("05a4f54206eef1ba2f615bc0aa285cb22f26d1153b5b40a1e85ff80da12f982f");
    let server_nonce = unhex("71cd9960ecef2fe0d0f7494986fa3d8b2bb01963537e60efb13981e138e3d4a1");

    // The setup from the vector's seed and key (the fake-record key plays no part here).
    let mut bytes = oprf_seed.clone();
    bytes.extend_from_slice(&server_private_key);
    bytes.extend_from_slice(&server_public_key);
    let setup = ServerSetup::<Suite>::deserialize(&bytes).unwrap();
    assert_eq!(
        setup.keypair().public().serialize().to_vec(),
        server_public_key
    );

    let keys = OpaqueKeys {
        setups: vec![Setup {
            key_id: "rfc".into(),
            setup: setup.clone(),
        }],
    };
    assert_eq!(
        keys.registration_response(&registration_request, &credential_identifier)
            .unwrap(),
        registration_response
    );

    let record = parse_record(&registration_upload).unwrap();
    let request = CredentialRequest::<Suite>::deserialize(&ke1).unwrap();
    let mut replay = Replay(
        [
            vec![0u8; 64],
            masking_nonce,
            server_keyshare_seed,
            server_nonce,
        ]
        .concat(),
    );
    let (answer, state) = start_login(
        &setup,
        Some(record),
        request,
        &credential_identifier,
        &context,
        &mut replay,
    )
    .unwrap();
    assert_eq!(answer, ke2, "KE2 is the RFC's");
    assert_eq!(finish_login(&state, &ke3, &context), Ok(()));
    let mut wrong = ke3.clone();
    wrong[0] ^= 1;
    assert_eq!(
        finish_login(&state, &wrong, &context),
        Err(Error::NotVerified)
    );
    // The context is part of the transcript: the same exchange under this service's context
    // gives another KE2, and the RFC's KE3 does not verify against it.
    let mut replay = Replay(
        [
            vec![0u8; 64],
            unhex("38fe59af0df2c79f57b8780278f5ae47355fe1f817119041951c80f612fdfc6d"),
            unhex("05a4f54206eef1ba2f615bc0aa285cb22f26d1153b5b40a1e85ff80da12f982f"),
            unhex("71cd9960ecef2fe0d0f7494986fa3d8b2bb01963537e60efb13981e138e3d4a1"),
        ]
        .concat(),
    );
    let (other, state) = start_login(
        &setup,
        Some(parse_record(&registration_upload).unwrap()),
        CredentialRequest::<Suite>::deserialize(&ke1).unwrap(),
        &credential_identifier,
        CONTEXT,
        &mut replay,
    )
    .unwrap();
    assert_ne!(other, ke2);
    assert_eq!(finish_login(&state, &ke3, CONTEXT), Err(Error::NotVerified));
}

fn ring(text: &str) -> KeyRing {
    KeyRing::parse(text).unwrap()
}

const A: &str = "a:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const B: &str = "b:ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

/// A device: registers `code` through `keys`, answers the record and the export key.
pub(crate) fn register(keys: &OpaqueKeys, code: &[u8], credential_id: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut rng = rand_core_06::OsRng;
    let start = ClientRegistration::<Suite>::start(&mut rng, code).unwrap();
    let response = keys
        .registration_response(&start.message.serialize(), credential_id)
        .unwrap();
    assert_eq!(response.len(), REGISTRATION_RESPONSE_LEN);
    let finish = start
        .state
        .finish(
            &mut rng,
            code,
            RegistrationResponse::deserialize(&response).unwrap(),
            ClientRegistrationFinishParameters::default(),
        )
        .unwrap();
    let record = finish.message.serialize().to_vec();
    assert_eq!(record.len(), REGISTRATION_RECORD_LEN);
    (record, finish.export_key.to_vec())
}

/// A device logging in with `code`: `Some(export key)` when the server's KE2 opened and its
/// KE3 verified on the server.
fn login(
    keys: &OpaqueKeys,
    key_id: &str,
    record: &[u8],
    code: &[u8],
    credential_id: &[u8],
) -> Option<Vec<u8>> {
    let mut rng = rand_core_06::OsRng;
    let start = ClientLogin::<Suite>::start(&mut rng, code).unwrap();
    let ke1 = start.message.serialize();
    assert_eq!(ke1.len(), KE1_LEN);
    let (ke2, state) = keys
        .login_start(
            key_id,
            record,
            parse_credential_request(&ke1).unwrap(),
            credential_id,
        )
        .unwrap();
    assert_eq!(ke2.len(), KE2_LEN);
    let finish = start
        .state
        .finish(
            &mut rng,
            code,
            CredentialResponse::deserialize(&ke2).unwrap(),
            ClientLoginFinishParameters::new(Some(CONTEXT), Default::default(), None),
        )
        .ok()?;
    let ke3 = finish.message.serialize();
    assert_eq!(ke3.len(), KE3_LEN);
    login_finish(&state, &ke3).unwrap();
    Some(finish.export_key.to_vec())
}

#[test]
fn a_device_enrols_and_recovers_the_same_export_key() {
    let keys = OpaqueKeys::derive(&ring(A)).unwrap();
    let (record, export_key) = register(&keys, b"RC1-CODE", b"zk_1");
    assert_eq!(
        login(&keys, "a", &record, b"RC1-CODE", b"zk_1"),
        Some(export_key)
    );
    assert_eq!(login(&keys, "a", &record, b"RC1-CODF", b"zk_1"), None);
    assert_eq!(
        login(&keys, "a", &record, b"RC1-CODE", b"zk_2"),
        None,
        "the credential identifier keys the OPRF"
    );
}

#[test]
fn every_replica_derives_the_same_keys_and_rotation_keeps_old_enrolments() {
    let one = OpaqueKeys::derive(&ring(A)).unwrap();
    let other = OpaqueKeys::derive(&ring(A)).unwrap();
    let (record, export_key) = register(&one, b"code", b"zk_1");
    assert_eq!(
        login(&other, "a", &record, b"code", b"zk_1"),
        Some(export_key.clone())
    );
    // Rotated: B current, A still in the ring.
    let rotated = OpaqueKeys::derive(&ring(&format!("{B},{A}"))).unwrap();
    assert_eq!(rotated.current_id(), "b");
    assert_eq!(
        login(&rotated, "a", &record, b"code", b"zk_1"),
        Some(export_key)
    );
    // A dropped: the enrolment answers as a wrong code would.
    let dropped = OpaqueKeys::derive(&ring(B)).unwrap();
    assert_eq!(login(&dropped, "a", &record, b"code", b"zk_1"), None);
    // Different keys give different setups.
    assert_ne!(
        one.current().keypair().public(),
        dropped.current().keypair().public()
    );
}

#[test]
fn malformed_messages_are_refused_before_any_work() {
    let keys = OpaqueKeys::derive(&ring(A)).unwrap();
    let (record, _) = register(&keys, b"code", b"zk_1");
    let random = |n: usize| -> Vec<u8> {
        let mut v = vec![0u8; n];
        crate::crypto::getrandom_fill(&mut v).unwrap();
        v
    };
    for bad in [
        vec![],
        vec![0u8; 31],
        vec![0u8; 33],
        vec![0u8; 32],
        vec![0xff; 32],
    ] {
        assert_eq!(
            keys.registration_response(&bad, b"zk_1"),
            Err(Error::Malformed),
            "{bad:?}"
        );
    }
    for bad in [
        vec![],
        vec![0u8; 191],
        vec![0u8; 193],
        vec![0u8; 192],
        vec![0xff; 192],
    ] {
        assert!(parse_record(&bad).is_err(), "{bad:?}");
    }
    let mut record_longer = record.clone();
    record_longer.push(0);
    assert_eq!(parse_record(&record_longer).err(), Some(Error::Malformed));
    for bad in [
        vec![],
        vec![0u8; 95],
        vec![0u8; 97],
        vec![0u8; 96],
        vec![0xff; 96],
    ] {
        assert_eq!(
            parse_credential_request(&bad).err().map(|_| ()),
            Some(()),
            "{bad:?}"
        );
    }
    // Random KE1s: a random 32-byte string is a valid ristretto255 encoding with probability
    // about 1/8 per point; whatever parses is answered, whatever does not is malformed.
    for _ in 0..64 {
        match parse_credential_request(&random(96)) {
            Ok(ke1) => {
                let (ke2, _) = keys.login_start("a", &record, ke1, b"zk_1").unwrap();
                assert_eq!(ke2.len(), KE2_LEN);
            }
            Err(err) => assert_eq!(err, Error::Malformed),
        }
    }
    let (_, state) = {
        let start = ClientLogin::<Suite>::start(&mut rand_core_06::OsRng, b"code").unwrap();
        let ke1 = parse_credential_request(&start.message.serialize()).unwrap();
        keys.login_start("a", &record, ke1, b"zk_1").unwrap()
    };
    for bad in [vec![], vec![0u8; 63], vec![0u8; 65]] {
        assert_eq!(login_finish(&state, &bad), Err(Error::Malformed));
    }
    assert_eq!(login_finish(&state, &[0u8; 64]), Err(Error::NotVerified));
    assert_eq!(login_finish(&state, &random(64)), Err(Error::NotVerified));
}
