//! What the runner knows about each runtime type (`ai.backend.runtime-type`): how query-mode
//! code runs and what `*` means for the batch steps. One entry per language in [`LANGUAGES`];
//! adding a language is adding an entry (and, for an interpreted one, its driver under
//! `src/drivers/`).
//!
//! Interpreted languages keep one interpreter per kernel, driven by a small program in that
//! language (the driver) over the protocol described in `query.rs`. Compiled languages
//! compile each snippet in a private directory and run the result in the work directory.
//! The batch heuristics follow the original runner's per-language modules
//! (`ai.backend.kernel.<lang>`); a missing entry point is a clear error with exit code 127.

use std::path::Path;

/// How query-mode code runs.
pub enum Query {
    /// A long-lived interpreter running `driver`; `argv` builds its command line from the
    /// runtime path and the driver's file.
    Interpreted {
        driver: &'static str,
        ext: &'static str,
        argv: fn(runtime: &str, driver: &Path) -> Vec<String>,
    },
    /// A shell command per snippet: `script(runtime, dir, code)` writes what it needs into
    /// the private directory `dir` and returns the command (run with the work directory as
    /// its current directory).
    Compiled {
        script: fn(runtime: &str, dir: &Path, code: &str) -> std::io::Result<String>,
    },
}

/// A batch step's `*`: the shell command to run, or why there is nothing to run.
pub type Heuristic = fn(runtime: &str, work: &Path) -> Result<String, String>;

pub struct Language {
    /// The runtime type, as in the image label.
    pub name: &'static str,
    /// The runtime path used when the image does not declare one.
    pub default_runtime: &'static str,
    pub query: Query,
    pub clean: Heuristic,
    pub build: Heuristic,
    pub exec: Heuristic,
}

/// The language for a runtime type; unknown types fall back to Python, as the runner did
/// before it knew any other language.
pub fn find(runtime_type: &str) -> &'static Language {
    LANGUAGES
        .iter()
        .find(|l| l.name == runtime_type)
        .unwrap_or(&LANGUAGES[0])
}

/// Quotes a word for `sh`.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:+,".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn has(work: &Path, f: &str) -> bool {
    work.join(f).is_file()
}

/// Files under `work` with extension `ext` (relative paths, sorted), skipping hidden
/// directories; the original globbed `**/*.ext` the same way.
fn files_with_ext(work: &Path, ext: &str) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, ext: &str, depth: usize, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() && depth < 16 => walk(root, &p, ext, depth + 1, out),
                Ok(t) if t.is_file() && p.extension().is_some_and(|x| x == ext) => {
                    if let Ok(rel) = p.strip_prefix(root) {
                        out.push(rel.to_string_lossy().into_owned());
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(work, work, ext, 0, &mut out);
    out.sort();
    out
}

fn quoted(files: &[String]) -> String {
    files
        .iter()
        .map(|f| sh_quote(f))
        .collect::<Vec<_>>()
        .join(" ")
}

fn nothing(_: &str, _: &Path) -> Result<String, String> {
    Ok(String::new())
}

/// `make` when there is a Makefile, else the language's own rule (the original's base
/// runner did this for every language).
fn make_or(
    work: &Path,
    otherwise: impl FnOnce() -> Result<String, String>,
) -> Result<String, String> {
    if has(work, "Makefile") {
        Ok("make".into())
    } else {
        otherwise()
    }
}

fn make_clean(_: &str, work: &Path) -> Result<String, String> {
    Ok(if has(work, "Makefile") {
        "make clean".into()
    } else {
        String::new()
    })
}

fn no_build(_: &str, work: &Path) -> Result<String, String> {
    make_or(work, || Ok(String::new()))
}

/// Runs `main.EXT` with `prefix` (the interpreter's command line).
fn run_main(work: &Path, main: &str, prefix: &str) -> Result<String, String> {
    if has(work, main) {
        Ok(format!("{prefix} {main}"))
    } else {
        Err(format!("cannot find the main file (\"{main}\")"))
    }
}

/// `./main` or `./a.out`, whichever the build made.
fn run_binary(_: &str, work: &Path) -> Result<String, String> {
    ["main", "a.out"]
        .iter()
        .find(|f| has(work, f))
        .map(|f| format!("./{f}"))
        .ok_or_else(|| "cannot find an executable (\"main\" or \"a.out\")".into())
}

const C_FLAGS: &str = "-Wall";
const C_LDFLAGS: &str = "-lrt -lm -pthread -ldl";

/// The original's C/C++ build: each source compiled to `STEM.o` here, then linked to `./main`.
fn c_like_build(work: &Path, compiler: &str, ext: &str) -> Result<String, String> {
    make_or(work, || {
        if !has(work, &format!("main.{ext}")) {
            return Err(format!(
                "cannot find a build script (\"Makefile\") or the main file (\"main.{ext}\")"
            ));
        }
        let sources = files_with_ext(work, ext);
        let objects: Vec<String> = sources
            .iter()
            .map(|s| {
                let stem = Path::new(s)
                    .file_stem()
                    .map(|x| x.to_string_lossy().into_owned())
                    .unwrap_or_default();
                format!("{stem}.o")
            })
            .collect();
        let mut steps: Vec<String> = sources
            .iter()
            .map(|s| format!("{compiler} -c {} {C_FLAGS}", sh_quote(s)))
            .collect();
        steps.push(format!(
            "{compiler} {} {C_LDFLAGS} -o ./main",
            quoted(&objects)
        ));
        Ok(steps.join(" && "))
    })
}

fn write(dir: &Path, name: &str, code: &str) -> std::io::Result<String> {
    let p = dir.join(name);
    std::fs::write(&p, code)?;
    Ok(sh_quote(&p.to_string_lossy()))
}

/// Compiles in the snippet's directory (so messages name `main.c`, not a temporary path),
/// then runs the program from the work directory.
fn compile_there(dir: &Path, compile: &str, run: &str) -> String {
    format!(
        "(cd {} && {compile}) && {run}",
        sh_quote(&dir.to_string_lossy())
    )
}

fn c_query(rt: &str, dir: &Path, code: &str, ext: &str) -> std::io::Result<String> {
    write(dir, &format!("main.{ext}"), code)?;
    let bin = sh_quote(&dir.join("main").to_string_lossy());
    Ok(compile_there(
        dir,
        &format!("{} main.{ext} {C_FLAGS} -o main {C_LDFLAGS}", sh_quote(rt)),
        &bin,
    ))
}

/// The class Java needs the file named after: the first `public class NAME`, else `Main`.
fn java_class(code: &str) -> String {
    let mut rest = code;
    while let Some(i) = rest.find("public") {
        let after = &rest[i + 6..];
        let mut words = after.split_whitespace();
        if words.next() == Some("class") {
            if let Some(w) = words.next() {
                let name: String = w
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
                    .collect();
                if !name.is_empty() {
                    return name;
                }
            }
        }
        rest = after;
    }
    "Main".into()
}

/// A tool next to the runtime (javac next to java, Rscript next to R), else from PATH.
fn sibling(rt: &str, tool: &str) -> String {
    match Path::new(rt).parent() {
        Some(p) if p.join(tool).exists() => p.join(tool).to_string_lossy().into_owned(),
        _ => tool.to_owned(),
    }
}

/// A command line run through coreutils' `stdbuf` when the image has it: R and Octave
/// write their console through C stdio, which a pipe makes block-buffered, so output of a
/// long snippet would otherwise arrive only at its end.
fn unbuffered(argv: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if Path::new("/usr/bin/stdbuf").exists() {
        out.extend(["/usr/bin/stdbuf", "-o0", "-e0"].map(String::from));
    }
    out.extend(argv.iter().map(|s| s.to_string()));
    out
}

fn python_argv(rt: &str, d: &Path) -> Vec<String> {
    vec![rt.into(), "-u".into(), d.to_string_lossy().into()]
}

fn plain_argv(rt: &str, d: &Path) -> Vec<String> {
    vec![rt.into(), d.to_string_lossy().into()]
}

pub static LANGUAGES: &[Language] = &[
    Language {
        name: "python",
        default_runtime: "python3",
        query: Query::Interpreted {
            driver: include_str!("drivers/driver.py"),
            ext: "py",
            argv: python_argv,
        },
        clean: nothing,
        build: |rt, w| {
            make_or(w, || {
                Ok(if has(w, "setup.py") {
                    format!("{} setup.py develop", sh_quote(rt))
                } else {
                    String::new()
                })
            })
        },
        exec: |rt, w| run_main(w, "main.py", &sh_quote(rt)),
    },
    Language {
        name: "nodejs",
        default_runtime: "node",
        query: Query::Interpreted {
            driver: include_str!("drivers/driver.js"),
            ext: "js",
            argv: plain_argv,
        },
        clean: nothing,
        build: |_, w| make_or(w, || Ok(package_script(w, "build").unwrap_or_default())),
        exec: |rt, w| {
            if let Some(start) = package_script(w, "start") {
                return Ok(start);
            }
            if let Some(main) = package_main(w) {
                return Ok(format!("{} {}", sh_quote(rt), sh_quote(&main)));
            }
            run_main(w, "main.js", &sh_quote(rt))
        },
    },
    Language {
        name: "lua",
        default_runtime: "lua",
        query: Query::Interpreted {
            driver: include_str!("drivers/driver.lua"),
            ext: "lua",
            argv: plain_argv,
        },
        clean: nothing,
        build: no_build,
        exec: |rt, w| run_main(w, "main.lua", &sh_quote(rt)),
    },
    Language {
        name: "php",
        default_runtime: "php",
        query: Query::Interpreted {
            driver: include_str!("drivers/driver.php"),
            ext: "php",
            argv: plain_argv,
        },
        clean: nothing,
        build: no_build,
        exec: |rt, w| run_main(w, "main.php", &sh_quote(rt)),
    },
    Language {
        name: "r",
        default_runtime: "R",
        query: Query::Interpreted {
            driver: include_str!("drivers/driver.R"),
            ext: "R",
            argv: |rt, d| {
                unbuffered(&[
                    rt,
                    "--no-echo",
                    "--no-save",
                    "--no-restore",
                    "-f",
                    &d.to_string_lossy(),
                ])
            },
        },
        clean: nothing,
        build: no_build,
        exec: |rt, w| {
            // The runtime path is R; scripts run with Rscript from the same directory.
            let rscript = sibling(rt, "Rscript");
            run_main(w, "main.R", &sh_quote(&rscript))
        },
    },
    Language {
        name: "octave",
        default_runtime: "octave-cli",
        query: Query::Interpreted {
            driver: include_str!("drivers/driver.m"),
            ext: "m",
            argv: |rt, d| {
                // --persist: after an interrupt Octave's prompt reads stdin, where the
                // runner types the command that resumes the driver (see driver.m).
                unbuffered(&[
                    rt,
                    "--quiet",
                    "--norc",
                    "--no-history",
                    "--no-window-system",
                    "--no-line-editing",
                    "--persist",
                    &d.to_string_lossy(),
                ])
            },
        },
        clean: nothing,
        build: no_build,
        exec: |rt, w| {
            run_main(
                w,
                "main.m",
                &format!(
                    "{} --quiet --norc --no-history --no-window-system",
                    sh_quote(rt)
                ),
            )
        },
    },
    Language {
        name: "scheme",
        default_runtime: "guile",
        query: Query::Interpreted {
            driver: include_str!("drivers/driver.scm"),
            ext: "scm",
            argv: |rt, d| {
                vec![
                    rt.into(),
                    "--no-auto-compile".into(),
                    "-q".into(),
                    "-s".into(),
                    d.to_string_lossy().into(),
                ]
            },
        },
        clean: nothing,
        build: no_build,
        exec: |rt, w| {
            run_main(
                w,
                "main.scm",
                &format!("{} --no-auto-compile -s", sh_quote(rt)),
            )
        },
    },
    Language {
        name: "julia",
        default_runtime: "julia",
        query: Query::Interpreted {
            driver: include_str!("drivers/driver.jl"),
            ext: "jl",
            argv: |rt, d| {
                vec![
                    rt.into(),
                    "--startup-file=no".into(),
                    "--history-file=no".into(),
                    d.to_string_lossy().into(),
                ]
            },
        },
        clean: nothing,
        build: no_build,
        exec: |rt, w| run_main(w, "main.jl", &sh_quote(rt)),
    },
    Language {
        name: "c",
        default_runtime: "gcc",
        query: Query::Compiled {
            script: |rt, dir, code| c_query(rt, dir, code, "c"),
        },
        clean: make_clean,
        build: |_, w| c_like_build(w, "gcc", "c"),
        exec: run_binary,
    },
    Language {
        name: "cpp",
        default_runtime: "g++",
        query: Query::Compiled {
            script: |rt, dir, code| c_query(rt, dir, code, "cpp"),
        },
        clean: make_clean,
        build: |_, w| c_like_build(w, "g++", "cpp"),
        exec: run_binary,
    },
    Language {
        name: "golang",
        default_runtime: "go",
        query: Query::Compiled {
            script: |rt, dir, code| {
                write(dir, "main.go", code)?;
                let bin = sh_quote(&dir.join("main").to_string_lossy());
                Ok(compile_there(
                    dir,
                    &format!("{} build -o main main.go", sh_quote(rt)),
                    &bin,
                ))
            },
        },
        clean: nothing,
        build: |rt, w| {
            make_or(w, || {
                if has(w, "main.go") {
                    Ok(format!(
                        "{} build -o main {}",
                        sh_quote(rt),
                        quoted(&files_with_ext(w, "go"))
                    ))
                } else {
                    Err("cannot find the main file (\"main.go\")".into())
                }
            })
        },
        exec: |_, w| {
            if has(w, "main") {
                Ok("./main".into())
            } else {
                Err("cannot find the executable (\"main\")".into())
            }
        },
    },
    Language {
        name: "rust",
        default_runtime: "rustc",
        query: Query::Compiled {
            script: |rt, dir, code| {
                write(dir, "main.rs", code)?;
                let bin = sh_quote(&dir.join("main").to_string_lossy());
                Ok(compile_there(
                    dir,
                    &format!("{} -o main main.rs", sh_quote(rt)),
                    &bin,
                ))
            },
        },
        clean: nothing,
        build: |rt, w| {
            make_or(w, || {
                if has(w, "Cargo.toml") {
                    Ok("cargo build".into())
                } else if has(w, "main.rs") {
                    Ok(format!("{} -o main main.rs", sh_quote(rt)))
                } else {
                    Err("cannot find the main or build file (\"Cargo.toml\" or \"main.rs\")".into())
                }
            })
        },
        exec: |rt, w| {
            for dir in ["target/debug", "target/release"] {
                if let Some(bin) = first_executable(&w.join(dir)) {
                    return Ok(format!("./{dir}/{}", sh_quote(&bin)));
                }
            }
            run_binary(rt, w).map_err(|_| {
                "cannot find an executable (\"main\" or in target/debug, target/release)".into()
            })
        },
    },
    Language {
        name: "java",
        default_runtime: "java",
        query: Query::Compiled {
            script: |rt, dir, code| {
                let class = java_class(code);
                write(dir, &format!("{class}.java"), code)?;
                let d = sh_quote(&dir.to_string_lossy());
                Ok(compile_there(
                    dir,
                    &format!(
                        "{} {}",
                        sh_quote(&sibling(rt, "javac")),
                        sh_quote(&format!("{class}.java"))
                    ),
                    &format!(
                        "{} -cp {d} {}",
                        sh_quote(&sibling(rt, "java")),
                        sh_quote(&class)
                    ),
                ))
            },
        },
        clean: nothing,
        build: |rt, w| {
            make_or(w, || {
                let files = files_with_ext(w, "java");
                if files.is_empty() {
                    return Err("cannot find Java sources (\"Main.java\")".into());
                }
                Ok(format!(
                    "{} -d . {}",
                    sh_quote(&sibling(rt, "javac")),
                    quoted(&files)
                ))
            })
        },
        exec: |rt, w| {
            let java = sh_quote(&sibling(rt, "java"));
            if has(w, "main/Main.class") {
                Ok(format!("{java} main.Main"))
            } else if has(w, "Main.class") {
                Ok(format!("{java} Main"))
            } else {
                Err("cannot find the entry class (main.Main or Main)".into())
            }
        },
    },
    Language {
        name: "haskell",
        default_runtime: "ghc",
        query: Query::Compiled {
            script: |rt, dir, code| {
                let src = write(dir, "Main.hs", code)?;
                Ok(format!("{} {src}", sh_quote(&sibling(rt, "runghc"))))
            },
        },
        clean: nothing,
        build: |rt, w| {
            make_or(w, || {
                let files = files_with_ext(w, "hs");
                if files.is_empty() {
                    return Err("cannot find Haskell sources (\"main.hs\")".into());
                }
                Ok(format!(
                    "{} --make -o main {}",
                    sh_quote(rt),
                    quoted(&files)
                ))
            })
        },
        exec: |_, w| {
            if has(w, "main") {
                Ok("./main".into())
            } else {
                Err("cannot find the executable (\"main\")".into())
            }
        },
    },
    Language {
        name: "git",
        default_runtime: "bash",
        query: Query::Compiled {
            script: |rt, dir, code| {
                let src = write(dir, "snippet.sh", code)?;
                Ok(format!("{} {src}", sh_quote(rt)))
            },
        },
        clean: nothing,
        build: no_build,
        exec: |rt, w| run_main(w, "main.sh", &sh_quote(rt)),
    },
];

/// A script from package.json's `scripts`, run as npm would (without npm).
fn package_script(work: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(work.join("package.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["scripts"][name]
        .as_str()
        .map(|s| format!("PATH=\"$PWD/node_modules/.bin:$PATH\" {s}"))
}

fn package_main(work: &Path) -> Option<String> {
    let text = std::fs::read_to_string(work.join("package.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["main"]
        .as_str()
        .filter(|m| work.join(m).is_file())
        .map(str::to_owned)
}

fn first_executable(dir: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| {
            e.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(files: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for f in files {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        d
    }

    #[test]
    fn every_runtime_type_has_one_entry() {
        for name in [
            "python", "c", "cpp", "golang", "rust", "java", "haskell", "julia", "lua", "nodejs",
            "octave", "php", "r", "scheme", "git",
        ] {
            assert_eq!(find(name).name, name);
            assert_eq!(LANGUAGES.iter().filter(|l| l.name == name).count(), 1);
        }
        assert_eq!(find("vendor.aws").name, "python");
    }

    #[test]
    fn c_heuristics_match_the_original() {
        let c = find("c");
        let w = work(&["main.c", "lib/util.c"]);
        assert_eq!(
            (c.build)("gcc", w.path()).unwrap(),
            "gcc -c lib/util.c -Wall && gcc -c main.c -Wall && gcc util.o main.o -lrt -lm -pthread -ldl -o ./main"
        );
        assert!((c.exec)("gcc", w.path()).is_err());
        std::fs::write(w.path().join("a.out"), "").unwrap();
        assert_eq!((c.exec)("gcc", w.path()).unwrap(), "./a.out");
        assert_eq!((c.clean)("gcc", w.path()).unwrap(), "");
        let m = work(&["Makefile", "main.c"]);
        assert_eq!((c.build)("gcc", m.path()).unwrap(), "make");
        assert_eq!((c.clean)("gcc", m.path()).unwrap(), "make clean");
        assert!((c.build)("gcc", work(&[]).path()).is_err());
    }

    #[test]
    fn other_heuristics_match_the_original() {
        let w = work(&["main.go", "x.go"]);
        assert_eq!(
            (find("golang").build)("/usr/bin/go", w.path()).unwrap(),
            "/usr/bin/go build -o main main.go x.go"
        );
        let w = work(&["Cargo.toml"]);
        assert_eq!(
            (find("rust").build)("rustc", w.path()).unwrap(),
            "cargo build"
        );
        let w = work(&["main.rs"]);
        assert_eq!(
            (find("rust").build)("rustc", w.path()).unwrap(),
            "rustc -o main main.rs"
        );
        let w = work(&["main/Main.class"]);
        assert_eq!(
            (find("java").exec)("java", w.path()).unwrap(),
            "java main.Main"
        );
        for (lang, main, cmd) in [
            ("lua", "main.lua", "lua main.lua"),
            ("nodejs", "main.js", "node main.js"),
            ("php", "main.php", "php main.php"),
            ("julia", "main.jl", "julia main.jl"),
            ("python", "main.py", "python3 main.py"),
        ] {
            let l = find(lang);
            let w = work(&[main]);
            assert_eq!((l.exec)(l.default_runtime, w.path()).unwrap(), cmd);
            assert!((l.exec)(l.default_runtime, work(&[]).path()).is_err());
        }
        let w = work(&[]);
        std::fs::write(
            w.path().join("package.json"),
            r#"{"scripts": {"start": "node app.js"}}"#,
        )
        .unwrap();
        assert!((find("nodejs").exec)("node", w.path())
            .unwrap()
            .ends_with("node app.js"));
    }

    #[test]
    fn java_snippets_are_named_after_their_public_class() {
        assert_eq!(java_class("public class Hello { }"), "Hello");
        assert_eq!(java_class("class X {}\npublic  class\nY{"), "Y");
        assert_eq!(java_class("class X {}"), "Main");
        assert_eq!(sh_quote("a b'c"), r"'a b'\''c'");
        assert_eq!(sh_quote("main.c"), "main.c");
    }
}
