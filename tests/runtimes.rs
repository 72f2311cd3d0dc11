//! Every kernel runtime (`ai.backend.runtime-type`) through the gateway, on a real agent
//! running its real image in Docker: query output; state kept between runs (interpreted
//! languages) or a compile error with a non-zero exit code (compiled ones); batch mode with
//! uploaded `main.*` files and the `*` heuristics; input read from the user; an endless
//! loop interrupted with the kernel still answering. Then the official client runs a
//! snippet by each language family's short name (`backend.ai run -c '…' r`), resolved
//! through the aliases the image builder stamps on its images.
//!
//! Needs Docker, the static runner (`BAI_KRUNNER`) and the runtimes' images, which
//! `packaging/images/build.sh all` builds (scripts/test.sh does). A test whose image is
//! missing fails saying how to build it. Julia is not packaged in Debian bookworm: its test
//! is ignored unless `BAI_JULIA_IMAGE` names an image built as README.md describes.

mod common;

use common::{creds, Containers, TestServer, USER};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// What one runtime is tested with.
struct Case {
    runtime: &'static str,
    /// A snippet printing 42.
    query: &'static str,
    /// Interpreted: a snippet setting state and one printing 42 from it. Compiled: a
    /// snippet that does not compile (and, unused, an empty string).
    state: (&'static str, &'static str),
    /// Uploaded files; batch `*` prints "batch 42".
    files: &'static [(&'static str, &'static str)],
    /// Prompts, reads a line and prints "hi " and the line.
    input: &'static str,
    /// Never ends.
    busy: &'static str,
    interpreted: bool,
}

const PYTHON: Case = Case {
    runtime: "python",
    query: "print(6*7)",
    state: ("x = 41", "print(x + 1)"),
    files: &[("main.py", "print('batch', 6*7)\n")],
    input: "name = input('Name? ')\nprint('hi', name)",
    busy: "while True: pass",
    interpreted: true,
};

const NODEJS: Case = Case {
    runtime: "nodejs",
    query: "console.log(6*7)",
    state: ("var x = 41", "console.log(x + 1)"),
    files: &[("main.js", "console.log('batch', 6*7)\n")],
    input: "const n = input('Name? ')\nconsole.log('hi ' + n)",
    busy: "while (true) {}",
    interpreted: true,
};

const LUA: Case = Case {
    runtime: "lua",
    query: "print(6*7)",
    state: ("x = 41", "print(x + 1)"),
    files: &[("main.lua", "print('batch', 6*7)\n")],
    input: "io.write('Name? ')\nprint('hi ' .. io.read())",
    busy: "while true do end",
    interpreted: true,
};

const PHP: Case = Case {
    runtime: "php",
    query: "echo 6*7, \"\\n\";",
    state: ("$x = 41;", "echo $x + 1, \"\\n\";"),
    files: &[("main.php", "<?php\necho 'batch ', 6*7, \"\\n\";\n")],
    input: "echo 'Name? ';\necho 'hi ' . trim(fgets(STDIN)) . \"\\n\";",
    busy: "while (true) {}",
    interpreted: true,
};

const R: Case = Case {
    runtime: "r",
    query: "cat(6*7, '\\n')",
    state: ("x <- 41", "cat(x + 1, '\\n')"),
    files: &[("main.R", "cat('batch', 6*7, '\\n')\n")],
    input: "n <- readline('Name? ')\ncat('hi', n, '\\n')",
    busy: "while (TRUE) {}",
    interpreted: true,
};

const OCTAVE: Case = Case {
    runtime: "octave",
    query: "printf('%d\\n', 6*7)",
    state: ("x = 41;", "printf('%d\\n', x + 1)"),
    files: &[("main.m", "printf('batch %d\\n', 6*7)\n")],
    input: "n = input('Name? ', 's');\nprintf('hi %s\\n', n)",
    busy: "while true; end",
    interpreted: true,
};

const SCHEME: Case = Case {
    runtime: "scheme",
    query: "(display (* 6 7)) (newline)",
    state: ("(define x 41)", "(display (+ x 1)) (newline)"),
    files: &[(
        "main.scm",
        "(display \"batch \") (display (* 6 7)) (newline)\n",
    )],
    input: "(display \"Name? \")\n(display (string-append \"hi \" (read-line))) (newline)",
    busy: "(let loop () (loop))",
    interpreted: true,
};

const JULIA: Case = Case {
    runtime: "julia",
    query: "println(6*7)",
    state: ("x = 41", "println(x + 1)"),
    files: &[("main.jl", "println(\"batch \", 6*7)\n")],
    input: "print(\"Name? \")\nprintln(\"hi \", readline())",
    busy: "while true end",
    interpreted: true,
};

const C: Case = Case {
    runtime: "c",
    query: "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 6*7); return 0; }\n",
    state: ("int main(void) { return undefined_name; }\n", ""),
    files: &[
        (
            "main.c",
            "#include <stdio.h>\nint answer(void);\nint main(void) { printf(\"batch %d\\n\", answer()); return 0; }\n",
        ),
        ("answer.c", "int answer(void) { return 6*7; }\n"),
    ],
    input: "#include <stdio.h>\nint main(void) { char b[64]; printf(\"Name? \"); fflush(stdout);\n  if (scanf(\"%63s\", b) != 1) return 1; printf(\"hi %s\\n\", b); return 0; }\n",
    busy: "int main(void) { for (;;) {} }\n",
    interpreted: false,
};

const CPP: Case = Case {
    runtime: "cpp",
    query: "#include <iostream>\nint main() { std::cout << 6*7 << std::endl; }\n",
    state: ("int main() { return undefined_name; }\n", ""),
    files: &[(
        "main.cpp",
        "#include <iostream>\nint main() { std::cout << \"batch \" << 6*7 << std::endl; }\n",
    )],
    input: "#include <iostream>\n#include <string>\nint main() { std::string s; std::cout << \"Name? \" << std::flush;\n  std::cin >> s; std::cout << \"hi \" << s << std::endl; }\n",
    busy: "int main() { for (;;) {} }\n",
    interpreted: false,
};

const GOLANG: Case = Case {
    runtime: "golang",
    query: "package main\nimport \"fmt\"\nfunc main() { fmt.Println(6*7) }\n",
    state: ("package main\nfunc main() { undefinedName() }\n", ""),
    files: &[
        (
            "main.go",
            "package main\nimport \"fmt\"\nfunc main() { fmt.Println(\"batch\", answer()) }\n",
        ),
        ("answer.go", "package main\nfunc answer() int { return 6*7 }\n"),
    ],
    input: "package main\nimport \"fmt\"\nfunc main() { var s string; fmt.Print(\"Name? \"); fmt.Scanln(&s); fmt.Println(\"hi\", s) }\n",
    busy: "package main\nfunc main() { for {} }\n",
    interpreted: false,
};

const RUST: Case = Case {
    runtime: "rust",
    query: "fn main() { println!(\"{}\", 6*7); }\n",
    state: ("fn main() { undefined_name(); }\n", ""),
    files: &[("main.rs", "fn main() { println!(\"batch {}\", 6*7); }\n")],
    input: "use std::io::{BufRead, Write};\nfn main() { print!(\"Name? \"); std::io::stdout().flush().unwrap();\n  let mut s = String::new(); std::io::stdin().lock().read_line(&mut s).unwrap(); println!(\"hi {}\", s.trim()); }\n",
    busy: "fn main() { loop {} }\n",
    interpreted: false,
};

const JAVA: Case = Case {
    runtime: "java",
    query: "public class Hello { public static void main(String[] a) { System.out.println(6*7); } }\n",
    state: ("public class Bad { public static void main(String[] a) { undefinedName(); } }\n", ""),
    files: &[(
        "Main.java",
        "public class Main { public static void main(String[] a) { System.out.println(\"batch \" + 6*7); } }\n",
    )],
    input: "import java.util.Scanner;\npublic class Ask { public static void main(String[] a) { System.out.print(\"Name? \"); System.out.flush();\n  System.out.println(\"hi \" + new Scanner(System.in).nextLine()); } }\n",
    busy: "public class Busy { public static void main(String[] a) { while (true) {} } }\n",
    interpreted: false,
};

const HASKELL: Case = Case {
    runtime: "haskell",
    query: "main = print (6*7)\n",
    state: ("main = putStrLn undefinedName\n", ""),
    files: &[("main.hs", "main = putStrLn (\"batch \" ++ show (6*7))\n")],
    input: "import System.IO\nmain = do { putStr \"Name? \"; hFlush stdout; s <- getLine; putStrLn (\"hi \" ++ s) }\n",
    busy: "main = print (length [1..])\n",
    interpreted: false,
};

const GIT: Case = Case {
    runtime: "git",
    query: "git --version >/dev/null && echo $((6*7))",
    state: ("no-such-command-here", ""),
    files: &[("main.sh", "echo batch $((6*7))\n")],
    input: "printf 'Name? '; read n; echo hi $n",
    busy: "while true; do :; done",
    interpreted: false,
};

/// The image `packaging/images/build.sh` builds for a runtime, or a panic saying how to
/// build it.
fn image_of(runtime: &str) -> String {
    if runtime == "julia" {
        return std::env::var("BAI_JULIA_IMAGE").expect(
            "BAI_JULIA_IMAGE is not set: Julia is not packaged in Debian bookworm; build an image as README.md (Kernel runtimes) describes and name it here",
        );
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/images/build.sh");
    let out = std::process::Command::new(&script)
        .args(["--image", runtime])
        .output()
        .expect("packaging/images/build.sh runs");
    let image = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let present = std::process::Command::new("docker")
        .args(["image", "inspect", &image])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        present,
        "the {runtime} image {image} is not built: run `packaging/images/build.sh {runtime}` (or `all`; scripts/test.sh does)"
    );
    image
}

async fn server() -> (TestServer, Containers) {
    let s = TestServer::start_with_agent(|_| {}).await;
    let id = s.app().config.agent.id.clone();
    (s, Containers(id))
}

async fn post(s: &TestServer, path: &str, body: Value) -> common::Resp {
    s.request("POST", path)
        .json(&body)
        .signed(&creds(USER))
        .send()
        .await
}

/// The outcome of one run: stdout, stderr, media types, exit code.
#[derive(Debug, Default)]
struct Outcome {
    out: String,
    err: String,
    media: Vec<String>,
    code: i64,
}

/// Runs to the end, answering input requests with `input`.
async fn run(
    s: &TestServer,
    token: &str,
    mode: &str,
    code: &str,
    opts: Value,
    input: Option<&str>,
) -> Outcome {
    let mut body = json!({"mode": mode, "code": code, "runId": null, "options": opts});
    let mut o = Outcome::default();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let r = post(s, &format!("/kernel/{token}"), body.clone()).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let result = r.json()["result"].clone();
        for item in result["console"].as_array().cloned().unwrap_or_default() {
            match item[0].as_str() {
                Some("stdout") => o.out.push_str(item[1].as_str().unwrap_or_default()),
                Some("stderr") => o.err.push_str(item[1].as_str().unwrap_or_default()),
                Some("media") => o.media.push(item[1][0].as_str().unwrap_or_default().into()),
                _ => {}
            }
        }
        let run_id = result["runId"].clone();
        match result["status"].as_str() {
            Some("finished") => {
                o.code = result["exitCode"].as_i64().unwrap_or(-1);
                return o;
            }
            Some("waiting-input") => {
                let text = input.unwrap_or_else(|| panic!("unexpected input request: {o:?}"));
                body = json!({"mode": "input", "code": text, "runId": run_id});
            }
            Some("continued") | Some("build-finished") | Some("clean-finished") => {
                body = json!({"mode": "continue", "code": "", "runId": run_id});
            }
            other => panic!("unexpected status {other:?}: {result}; so far {o:?}"),
        }
        assert!(Instant::now() < deadline, "the run did not end: {o:?}");
    }
}

async fn query(s: &TestServer, token: &str, code: &str) -> Outcome {
    run(s, token, "query", code, json!({}), None).await
}

fn multipart(files: &[(&str, &str)]) -> (Vec<u8>, String) {
    let boundary = "----bai-runtime-boundary";
    let mut body = Vec::new();
    for (name, data) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"src\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n{data}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (body, format!("multipart/form-data; boundary={boundary}"))
}

async fn check(case: &Case) {
    let image = image_of(case.runtime);
    let (s, _containers) = server().await;
    let token = format!("rt-{}", case.runtime);
    let r = post(
        &s,
        "/kernel",
        json!({"clientSessionToken": token, "image": image, "group_name": "default", "domain_name": "default"}),
    )
    .await;
    assert!(
        r.status == 201 || r.status == 200,
        "create {}: {}",
        case.runtime,
        String::from_utf8_lossy(&r.body)
    );
    let rt = case.runtime;

    let o = query(&s, &token, case.query).await;
    assert!(o.code == 0 && o.out.contains("42"), "{rt} query: {o:?}");

    if case.interpreted {
        let set = query(&s, &token, case.state.0).await;
        assert_eq!(set.code, 0, "{rt} setting state: {set:?}");
        let get = query(&s, &token, case.state.1).await;
        assert!(
            get.code == 0 && get.out.contains("42"),
            "{rt} keeps state between runs: {get:?}"
        );
    } else {
        let bad = query(&s, &token, case.state.0).await;
        assert!(
            bad.code != 0 && !bad.err.is_empty(),
            "{rt} reports a compile error on stderr with a non-zero exit code: {bad:?}"
        );
    }

    let (body, ct) = multipart(case.files);
    let up = s
        .request("POST", &format!("/kernel/{token}/upload"))
        .raw_body(body, "multipart/form-data")
        .header("Content-Type", &ct)
        .signed(&creds(USER))
        .send()
        .await;
    assert!(
        up.status < 300,
        "{rt} upload: {}",
        String::from_utf8_lossy(&up.body)
    );
    let b = run(
        &s,
        &token,
        "batch",
        "",
        json!({"clean": "*", "build": "*", "exec": "*"}),
        None,
    )
    .await;
    assert!(
        b.code == 0 && b.out.contains("batch") && b.out.contains("42"),
        "{rt} batch with '*': {b:?}"
    );

    let i = run(&s, &token, "query", case.input, json!({}), Some("Bob")).await;
    assert!(
        i.code == 0 && i.out.contains("hi") && i.out.contains("Bob"),
        "{rt} reads the user's input: {i:?}"
    );

    // An endless loop: the first answer is `continued`; the interrupt ends the run.
    let r = post(
        &s,
        &format!("/kernel/{token}"),
        json!({"mode": "query", "code": case.busy, "runId": null}),
    )
    .await;
    let first = r.json()["result"].clone();
    assert_eq!(first["status"], "continued", "{rt} busy loop: {first}");
    let intr = post(&s, &format!("/kernel/{token}/interrupt"), json!({})).await;
    assert!(intr.status < 300, "{rt} interrupt: {}", intr.status);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = post(
            &s,
            &format!("/kernel/{token}"),
            json!({"mode": "continue", "code": "", "runId": first["runId"]}),
        )
        .await;
        let result = r.json()["result"].clone();
        if result["status"] == "finished" {
            assert_ne!(result["exitCode"], 0, "{rt} interrupted run: {result}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{rt}: the interrupt did not end the run"
        );
    }
    let after = if case.interpreted {
        query(&s, &token, case.state.1).await
    } else {
        query(&s, &token, case.query).await
    };
    assert!(
        after.code == 0 && after.out.contains("42"),
        "{rt} answers after the interrupt (interpreted: with its state): {after:?}"
    );
    if rt == "python" {
        let plot = query(
            &s,
            &token,
            "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()",
        )
        .await;
        assert!(
            plot.code == 0 && plot.media == ["image/png"],
            "plt.show() returns the figure as PNG media: {plot:?}"
        );
    }
    s.request("DELETE", &format!("/kernel/{token}"))
        .signed(&creds(USER))
        .send()
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python() {
    check(&PYTHON).await
}

#[tokio::test(flavor = "multi_thread")]
async fn nodejs() {
    check(&NODEJS).await
}

#[tokio::test(flavor = "multi_thread")]
async fn lua() {
    check(&LUA).await
}

#[tokio::test(flavor = "multi_thread")]
async fn php() {
    check(&PHP).await
}

#[tokio::test(flavor = "multi_thread")]
async fn r() {
    check(&R).await
}

#[tokio::test(flavor = "multi_thread")]
async fn octave() {
    check(&OCTAVE).await
}

#[tokio::test(flavor = "multi_thread")]
async fn scheme() {
    check(&SCHEME).await
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "Julia is not packaged in Debian bookworm: set BAI_JULIA_IMAGE (README.md, Kernel runtimes) and run with --ignored"]
async fn julia() {
    check(&JULIA).await
}

#[tokio::test(flavor = "multi_thread")]
async fn c() {
    check(&C).await
}

#[tokio::test(flavor = "multi_thread")]
async fn cpp() {
    check(&CPP).await
}

#[tokio::test(flavor = "multi_thread")]
async fn golang() {
    check(&GOLANG).await
}

#[tokio::test(flavor = "multi_thread")]
async fn rust() {
    check(&RUST).await
}

#[tokio::test(flavor = "multi_thread")]
async fn java() {
    check(&JAVA).await
}

#[tokio::test(flavor = "multi_thread")]
async fn haskell() {
    check(&HASKELL).await
}

#[tokio::test(flavor = "multi_thread")]
async fn git() {
    check(&GIT).await
}

/// `backend.ai run -c CODE NAME` with the official client, NAME being the short name users
/// typed with the original (`r`, `c`, ...): one per language family.
#[tokio::test(flavor = "multi_thread")]
async fn the_official_client_runs_each_family_by_its_short_name() {
    let client = common::setting("BAI_CLIENT");
    let runs: &[(&str, &str, &str)] = &[
        ("python", "python", "print(6*7)"),
        ("r", "r", "cat(6*7)"),
        ("lua", "lua", "print(6*7)"),
        ("nodejs", "nodejs", "console.log(6*7)"),
        ("php", "php", "echo 6*7;"),
        ("octave", "octave", "disp(6*7)"),
        ("scheme", "scheme", "(display (* 6 7))"),
        ("c", "c", C.query),
        ("cpp", "cpp", CPP.query),
        ("java", "java", JAVA.query),
        ("golang", "go", GOLANG.query),
        ("rust", "rust", RUST.query),
        ("haskell", "haskell", HASKELL.query),
        ("git", "git", "echo $((6*7))"),
    ];
    for (runtime, _, _) in runs {
        image_of(runtime);
    }
    let (s, _containers) = server().await;
    for (runtime, name, code) in runs {
        let s_addr = s.addr;
        let (client, alias, code) = (client.clone(), name.to_string(), code.to_string());
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(client)
                .args(["run", "-g", "default", "--rm", "-c", &code, &alias])
                .env("BACKEND_ENDPOINT", format!("http://{s_addr}"))
                .env("BACKEND_ACCESS_KEY", USER.0)
                .env("BACKEND_SECRET_KEY", USER.1)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("the official client runs")
        })
        .await
        .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains("42") && !text.contains("Traceback"),
            "backend.ai run -c … {name} ({runtime}):\n{text}"
        );
    }
}
