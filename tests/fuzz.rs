//! Property-based fuzzing (proptest) of what reads untrusted input first: the
//! Authorization header parser, the signature date parser, the path resolver shared by
//! kernel files and folders, and the multipart parser of uploads. None may panic, and
//! what they accept must be safe.

use backend_ai_manager::fsconfine::parts;
use backend_ai_manager::gateway::auth::parse_authorization;
use backend_ai_manager::gateway::router::{ApiVersion, Ctx};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn authorization_headers_never_panic(value in ".{0,200}") {
        if let Ok((method, ak, sig)) = parse_authorization(&value) {
            prop_assert!(!ak.is_empty() && !sig.is_empty() && !method.is_empty());
            prop_assert!(value.starts_with("BackendAI ") || value.starts_with("Sorna "));
        }
    }

    #[test]
    fn well_formed_headers_round_trip(ak in "[A-Z0-9]{4,20}", sig in "[0-9a-f]{8,64}", alg in "HMAC-SHA(1|256|512)") {
        let header = format!("BackendAI signMethod={alg}, credential={ak}:{sig}");
        let (m, a, s) = parse_authorization(&header).unwrap();
        prop_assert_eq!((m, a, s), (alg, ak, sig));
    }

    #[test]
    fn dates_never_panic(raw in ".{0,64}") {
        let _ = backend_ai_manager::signing::parse_date(&raw);
    }

    #[test]
    fn resolved_paths_stay_inside(path in "(\\.\\.|\\.|/|a|b|\\x00|%2e|\\\\|~|é){0,16}") {
        if let Ok(components) = parts(&path) {
            for c in &components {
                prop_assert!(c != ".." && c != "." && !c.is_empty());
                prop_assert!(!c.contains('/') && !c.contains('\0'));
            }
            prop_assert!(!path.starts_with('/'));
        }
    }

    #[test]
    fn arbitrary_paths_never_panic(path in ".{0,300}") {
        let _ = parts(&path);
    }

    #[test]
    fn long_names_of_any_characters_never_panic(name in "[^/]{60,400}") {
        let _ = parts(&name);
    }

    #[test]
    fn multipart_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600), prefix in any::<bool>()) {
        let mut bytes = Vec::new();
        if prefix {
            bytes.extend_from_slice(b"--XyZ\r\nContent-Disposition: form-data; name=\"src\"; filename=\"");
        }
        bytes.extend_from_slice(&body);
        let mut headers = warp::http::HeaderMap::new();
        headers.insert("content-type", "multipart/form-data; boundary=XyZ".parse().unwrap());
        let ctx = Ctx {
            method: warp::http::Method::POST,
            path: "/kernel/x/upload".into(),
            query: String::new(),
            headers,
            body: bytes.into(),
            ws: None,
            body_stream: None,
            params: Vec::new(),
            version: ApiVersion { major: 4, revision: "20190315".into() },
            caller: None,
        };
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        if let Ok(files) = rt.block_on(backend_ai_manager::gateway::multipart::small_files(&ctx, 20, 1 << 20)) {
            prop_assert!(files.len() <= 20);
            for (name, data) in files {
                prop_assert!(!name.is_empty() && data.len() < 1 << 20);
            }
        }
    }
}
