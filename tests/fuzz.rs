//! Property-based fuzzing (proptest) of what reads untrusted input first: the
//! Authorization header parser, the signature date parser, the path resolver shared by
//! kernel files and folders, the multipart parser of uploads, and GraphQL documents
//! (random depth, fragments, spreads and aliases) sent to a real server. None may panic,
//! what they accept must be safe, and every GraphQL document is answered within a few
//! seconds with a bounded body while the process stays within a bounded memory.

mod common;

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

/// The user schema's object types, as the fuzzer knows them: (type, field, field's type
/// or "" for a scalar). Enough for most generated documents to be valid, so that they run.
const SCHEMA: &[(&str, &str, &str)] = &[
    (
        "QueryForUser",
        "compute_session_list(limit: 1000, offset: 0)",
        "ComputeSessionList",
    ),
    (
        "QueryForUser",
        "compute_session_list(limit: 3, offset: 1)",
        "ComputeSessionList",
    ),
    ("QueryForUser", "compute_sessions", "ComputeSession"),
    ("QueryForUser", "keypair", "KeyPair"),
    ("QueryForUser", "keypairs", "KeyPair"),
    ("QueryForUser", "user", "User"),
    ("QueryForUser", "groups", "Group"),
    ("QueryForUser", "images", "Image"),
    ("QueryForUser", "vfolders", "VirtualFolder"),
    ("QueryForUser", "resource_presets", "ResourcePreset"),
    (
        "QueryForUser",
        "keypair_resource_policies",
        "KeyPairResourcePolicy",
    ),
    ("ComputeSessionList", "items", "ComputeSession"),
    ("ComputeSessionList", "total_count", ""),
    ("ComputeSession", "sess_id", ""),
    ("ComputeSession", "status", ""),
    ("ComputeSession", "tag", ""),
    ("ComputeSession", "occupied_slots", ""),
    ("ComputeSession", "last_stat", ""),
    ("ComputeSession", "workers", "ComputeWorker"),
    ("ComputeWorker", "id", ""),
    ("ComputeWorker", "status", ""),
    ("KeyPair", "access_key", ""),
    ("KeyPair", "secret_key", ""),
    ("KeyPair", "vfolders", "VirtualFolder"),
    ("KeyPair", "compute_sessions", "ComputeSession"),
    ("User", "email", ""),
    ("User", "role", ""),
    ("User", "groups", "UserGroup"),
    ("UserGroup", "name", ""),
    ("Group", "id", ""),
    ("Group", "name", ""),
    ("Image", "name", ""),
    ("Image", "aliases", ""),
    ("Image", "labels", "KVPair"),
    ("KVPair", "key", ""),
    ("VirtualFolder", "name", ""),
    ("ResourcePreset", "name", ""),
    ("ResourcePreset", "resource_slots", ""),
    ("KeyPairResourcePolicy", "name", ""),
    ("KeyPairResourcePolicy", "total_resource_slots", ""),
];

/// Documents over the body limit are not interesting (413): generation stops growing there.
const MAX_DOCUMENT: usize = 1_000_000;

/// Writes a GraphQL document from a stream of random choices: a type-directed walk of
/// [`SCHEMA`] with aliases (up to hundreds), fragment spreads (repeated, cyclic, unknown),
/// inline fragments, and now and then a selection nested thousands deep.
struct Writer<'a> {
    choices: &'a [u32],
    at: usize,
    out: String,
    fragments: u32,
    /// The fragment being written; spreads mostly go to later ones (no cycle).
    current: u32,
    aliases: u32,
}

impl Writer<'_> {
    fn next(&mut self, n: u32) -> u32 {
        let c = self.choices.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        c % n.max(1)
    }

    fn selections(&mut self, ty: &str, depth: usize) {
        self.out.push('{');
        let fields: Vec<&(&str, &str, &str)> = SCHEMA.iter().filter(|f| f.0 == ty).collect();
        for _ in 0..=self.next(4) {
            if self.out.len() > MAX_DOCUMENT {
                break;
            }
            // Choice 0 (also what an exhausted stream gives) is always the plainest one.
            match self.next(20) {
                15..=17 if ty == "QueryForUser" && self.fragments > 0 => {
                    let n = if self.next(20) == 19 {
                        self.next(self.fragments + 1) // a cycle, or an unknown fragment
                    } else {
                        let later = self.fragments.saturating_sub(self.current + 1);
                        self.current + 1 + self.next(later)
                    };
                    let times = 1 + self.next(3);
                    for _ in 0..times {
                        self.out.push_str(&format!(" ...F{n}"));
                    }
                }
                18 => {
                    self.out.push_str(" ... ");
                    self.selections(ty, depth + 1);
                }
                19 if self.next(60) == 59 => {
                    let n = 1 + self.next(2_000) as usize;
                    self.out.push_str(&" items {".repeat(n));
                    self.out.push_str(" sess_id");
                    self.out.push_str(&" }".repeat(n));
                }
                _ if fields.is_empty() => self.out.push_str(" __typename"),
                _ => {
                    let (_, name, child) = *fields[self.next(fields.len() as u32) as usize];
                    let copies = match self.next(30) {
                        29 => 1 + self.next(600),
                        25..=28 => 1 + self.next(20),
                        _ => 1,
                    };
                    for _ in 0..copies {
                        if self.out.len() > MAX_DOCUMENT {
                            break;
                        }
                        self.aliases += 1;
                        self.out.push_str(&format!(" a{}: {name} ", self.aliases));
                        if !child.is_empty() {
                            if depth > 2 {
                                self.out.push_str("{ __typename }");
                            } else {
                                self.selections(child, depth + 1);
                            }
                        }
                    }
                }
            }
        }
        self.out.push_str(" }");
    }
}

/// An operation and up to ten fragments on the user schema's root.
fn document() -> impl Strategy<Value = String> {
    (0u32..10, proptest::collection::vec(any::<u32>(), 0..300)).prop_map(|(fragments, choices)| {
        let mut w = Writer {
            choices: &choices,
            at: 0,
            out: "query ".to_owned(),
            fragments,
            current: 0,
            aliases: 0,
        };
        w.selections("QueryForUser", 0);
        for i in 0..fragments {
            w.current = i;
            w.out.push_str(&format!(" fragment F{i} on QueryForUser "));
            w.selections("QueryForUser", 0);
        }
        w.out
    })
}

/// Resident memory of this process (server included), in bytes.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[test]
fn graphql_documents_are_answered_in_bounded_time_size_and_memory() {
    use common::{creds, TestServer, USER};
    use proptest::test_runner::{Config, TestRunner};
    use std::time::{Duration, Instant};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(TestServer::start());
    let mut runner = TestRunner::new(Config::with_cases(300));
    runner
        .run(&document(), |doc| {
            prop_assume!(doc.len() <= MAX_DOCUMENT);
            let req = server
                .request("POST", "/admin/graphql")
                .json(&serde_json::json!({ "query": doc }))
                .signed(&creds(USER));
            let started = Instant::now();
            let r = rt.block_on(req.send());
            let took = started.elapsed();
            prop_assert!(took < Duration::from_secs(5), "took {took:?}");
            if std::env::var_os("BAI_FUZZ_VERBOSE").is_some() {
                println!(
                    "{} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                        .chars()
                        .take(160)
                        .collect::<String>()
                );
            }
            prop_assert!(
                r.status == 200 || r.status == 400,
                "status {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
            prop_assert!(r.body.len() <= 8 << 20, "{} bytes", r.body.len());
            prop_assert!(
                resident_bytes() < 1 << 30,
                "{} bytes resident",
                resident_bytes()
            );
            Ok(())
        })
        .unwrap();
    // The server still answers an ordinary query.
    let r = rt.block_on(
        server
            .request("POST", "/admin/graphql")
            .json(&serde_json::json!({ "query": "{ keypair { access_key } }" }))
            .signed(&creds(USER))
            .send(),
    );
    assert_eq!(r.status, 200);
}
