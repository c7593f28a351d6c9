//! The policy files read as an audit document: every rule says why it
//! exists, and the README's table of syscall counts is the files' own.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

/// Each policy file and its target count; `render-worker-gpu-stack` is what a
/// render-worker with a 3D context type adds to its own (built together),
/// and `render-server` what venus's render server adds to both.
const PROFILES: [(&str, usize); 5] = [
    ("broker", 30),
    ("gpu-worker", 25),
    ("render-worker", 45),
    ("render-worker-gpu-stack", 17),
    ("render-server", 17),
];

fn policy(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("seccomp/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn rules(name: &str) -> Vec<Value> {
    policy(name)["main"]["filter"].as_array().unwrap().clone()
}

/// A thread kind's own filter: (kind, its rules, the target count).
const THREADS: [(&str, &str, usize); 1] = [("gpu-worker", "vring", 20)];

fn thread_rules(name: &str, kind: &str) -> Vec<Value> {
    policy(name)[kind]["filter"].as_array().unwrap().clone()
}

/// Every rule of every filter of `name`'s file.
fn all_rules(name: &str) -> Vec<Value> {
    let mut all = rules(name);
    for (_, kind, _) in THREADS.iter().filter(|(n, _, _)| *n == name) {
        all.extend(thread_rules(name, kind));
    }
    all
}

fn syscalls(name: &str) -> BTreeSet<String> {
    rules(name)
        .iter()
        .map(|r| r["syscall"].as_str().unwrap().to_string())
        .collect()
}

fn has_comment(v: &Value) -> bool {
    v.get("comment")
        .and_then(Value::as_str)
        .is_some_and(|c| c.trim().len() >= 10)
}

#[test]
fn every_rule_and_argument_filter_says_why() {
    for (name, _) in PROFILES {
        for rule in all_rules(name) {
            assert!(
                has_comment(&rule),
                "{name}.json: rule for {} has no comment saying which code needs it",
                rule["syscall"]
            );
            for arg in rule["args"].as_array().into_iter().flatten() {
                assert!(
                    has_comment(arg),
                    "{name}.json: an argument filter of {} has no comment",
                    rule["syscall"]
                );
            }
        }
    }
}

#[test]
fn the_gpu_stack_creates_and_appends_to_nothing() {
    // O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | __O_TMPFILE (O_TMPFILE
    // without O_DIRECTORY, which opendir needs). O_RDWR stays: EGL opens
    // render nodes so, and landlock refuses it beneath the GPU stack.
    let write_flags = 0o1 | 0o100 | 0o1000 | 0o2000 | 0o20000000;
    let opens: Vec<Value> = rules("render-worker-gpu-stack")
        .into_iter()
        .filter(|r| r["syscall"] == "openat")
        .collect();
    assert!(!opens.is_empty());
    for rule in opens {
        let args = rule["args"].as_array().expect("openat is pinned");
        assert!(
            args.iter()
                .any(|a| a["index"] == 2 && a["op"]["masked_eq"] == write_flags && a["val"] == 0),
            "openat must be pinned to flags without {write_flags:#o}: {rule}"
        );
    }
}

#[test]
fn dangerous_syscalls_are_pinned_to_their_arguments() {
    for (name, _) in PROFILES {
        for rule in all_rules(name) {
            let syscall = rule["syscall"].as_str().unwrap();
            if [
                "ioctl",
                "mmap",
                "mprotect",
                "socket",
                "fcntl",
                "prctl",
                "pidfd_send_signal",
                "madvise",
                "clone",
                "openat",
                "dup2",
            ]
            .contains(&syscall)
            {
                assert!(
                    rule["args"].as_array().is_some_and(|a| !a.is_empty()),
                    "{name}.json: {syscall} must be pinned to the argument values the code uses"
                );
            }
        }
    }
}

#[test]
fn policies_never_allow_what_the_jail_exists_to_stop() {
    for (name, _) in PROFILES {
        let allowed = syscalls(name);
        for forbidden in [
            "execve",
            "execveat",
            "ptrace",
            "open",
            "openat",
            "openat2",
            "mount",
            "bpf",
            "process_vm_readv",
            "process_vm_writev",
            "setuid",
            "unshare",
        ] {
            // The GPU stack's one exception: Mesa dlopens its drivers
            // when rutabaga starts, so a 3D render-worker opens files,
            // read-only, in the read-only binds landlock confines it to.
            if name == "render-worker-gpu-stack" && forbidden == "openat" {
                continue;
            }
            // The render server's: its filter is installed before the
            // exec that starts it (and holds across it), in a jail whose
            // landlock lets it execute only the server and the read-only
            // GPU stack.
            if name == "render-server" && forbidden == "execve" {
                continue;
            }
            assert!(
                !allowed.contains(forbidden),
                "{name}.json allows {forbidden}"
            );
        }
        // seccomp only to add a filter to the calling thread (which can
        // only narrow what it may do): no TSYNC, no listener.
        for rule in rules(name).iter().filter(|r| r["syscall"] == "seccomp") {
            let args = rule["args"].as_array().expect("seccomp is pinned");
            let pinned = |index: u64, val: u64| {
                args.iter()
                    .any(|a| a["index"] == index && a["op"] == "eq" && a["val"] == val)
            };
            assert!(
                pinned(0, 1) && pinned(1, 0),
                "{name}.json: seccomp must be pinned to SECCOMP_SET_MODE_FILTER without flags"
            );
        }
    }
}

/// The README's table, as the files say it should read.
fn table() -> String {
    let mut t =
        String::from("| process | syscalls allowed | target | policy |\n|---|---|---|---|\n");
    for (name, target) in PROFILES {
        t += &format!(
            "| {name} | {} | {target} | `policies/seccomp/{name}.json` |\n",
            syscalls(name).len()
        );
    }
    for (name, kind, target) in THREADS {
        let n: BTreeSet<String> = thread_rules(name, kind)
            .iter()
            .map(|r| r["syscall"].as_str().unwrap().to_string())
            .collect();
        t += &format!(
            "| {name}, {kind} thread | {} | {target} | `policies/seccomp/{name}.json` (`{kind}`) |\n",
            n.len()
        );
    }
    t
}

/// A thread's filter narrows its process's: every rule in it is one the
/// process allows too, with the same argument pins.
#[test]
fn thread_filters_allow_nothing_their_process_does_not() {
    for (name, kind, _) in THREADS {
        let process = rules(name);
        for rule in thread_rules(name, kind) {
            let same = process
                .iter()
                .any(|p| p["syscall"] == rule["syscall"] && p.get("args") == rule.get("args"));
            assert!(
                same,
                "{name}.json `{kind}`: {} is not the process's own rule",
                rule["syscall"]
            );
        }
    }
}

#[test]
fn readme_table_matches_the_policy_files() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let want = table();
    assert!(
        readme.contains(&want),
        "README.md's syscall table is stale; replace it with:\n\n{want}"
    );
}

/// For each C library call the processes make after the jail, the system
/// calls a supported C library may make for it on x86_64 (glibc 2.36 to
/// 2.41, as Debian 12 and 13 and Ubuntu 24.04 ship, and musl): a policy
/// that allows one allows each, so that the jail holds whichever library a
/// distribution links the binaries against (ARCHITECTURE.md, "One policy,
/// many C libraries"). Seen: glibc 2.36's fstat is newfstatat, 2.39's and
/// 2.41's is fstat.
const LIBC_FORMS: [(&str, &[&str]); 4] = [
    // fstat(fd): fstat (glibc >= 2.39, musl), newfstatat with AT_EMPTY_PATH
    // (glibc 2.33 to 2.38), statx with AT_EMPTY_PATH (a libc built for
    // 64-bit time on a 32-bit-time kernel interface, and Rust's std).
    ("fstat", &["fstat", "newfstatat", "statx"]),
    // poll(): poll on x86_64 in glibc and musl, ppoll where a libc builds
    // poll from it (glibc on architectures without poll).
    ("poll", &["poll", "ppoll"]),
    // nanosleep() (std::thread::sleep): clock_nanosleep in glibc,
    // nanosleep in musl.
    ("nanosleep", &["nanosleep", "clock_nanosleep"]),
    // epoll_wait(): epoll_wait in glibc, epoll_pwait in musl (and in
    // crates that call epoll_pwait themselves).
    ("epoll_wait", &["epoll_wait", "epoll_pwait"]),
];

/// Rules for calls that do not go through the C library, so that its
/// choice does not change them: (filter, syscall, who makes it).
const NOT_THROUGH_LIBC: [(&str, &str, &str); 2] = [
    // rustix (rutabaga's cross-domain, through magma-gpu) makes its system
    // calls itself on x86_64 Linux (its linux_raw backend; no use-libc).
    ("render-worker", "fstat", "rustix"),
    ("render-worker", "epoll_pwait", "rustix"),
];

#[test]
fn each_libc_call_is_allowed_in_every_form_a_c_library_makes_it() {
    let mut filters: Vec<(String, Vec<Value>)> = PROFILES
        .iter()
        .map(|(name, _)| (name.to_string(), rules(name)))
        .collect();
    for (name, kind, _) in THREADS {
        filters.push((format!("{name} {kind}"), thread_rules(name, kind)));
    }
    // The syscalls of `rules` that go through the C library.
    let through_libc = |filter: &str, rules: &[Value]| -> BTreeSet<String> {
        rules
            .iter()
            .filter_map(|r| r["syscall"].as_str())
            .filter(|s| {
                !NOT_THROUGH_LIBC
                    .iter()
                    .any(|(f, n, _)| *f == filter && n == s)
            })
            .map(str::to_string)
            .collect()
    };
    for (filter, rules) in filters {
        let mut allowed = through_libc(&filter, &rules);
        // The GPU stack's rules are installed with render-worker's, as one
        // filter (build.rs): checked together.
        if filter == "render-worker-gpu-stack" || filter == "render-server" {
            allowed.extend(through_libc("render-worker", &self::rules("render-worker")));
        }
        if filter == "render-server" {
            allowed.extend(through_libc(
                "render-worker-gpu-stack",
                &self::rules("render-worker-gpu-stack"),
            ));
        }
        let allowed: BTreeSet<&str> = allowed.iter().map(String::as_str).collect();
        for (call, forms) in LIBC_FORMS {
            if forms.iter().any(|f| allowed.contains(f)) {
                for form in forms {
                    assert!(
                        allowed.contains(form),
                        "{filter}: {call}() is allowed as {:?} but not as {form}, which another C \
                         library makes for it",
                        forms
                            .iter()
                            .filter(|f| allowed.contains(*f))
                            .collect::<Vec<_>>()
                    );
                }
            }
        }
    }
}
