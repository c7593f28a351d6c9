//! Compiles `seccomp/*.json` (Firecracker's format) into BPF at build time:
//! one program per process and per `--seccomp` action, written to OUT_DIR
//! as raw `sock_filter` arrays that `src/seccomp.rs` includes. A policy that
//! does not compile fails the build, not the device at start-up.
//!
//! Also turns the kernel's syscall table header into a number → name table,
//! so `--seccomp trap` can name the syscall it caught.

use std::fs;
use std::io::Cursor;
use std::path::PathBuf;

use seccompiler::TargetArch;

const PROFILES: [&str; 3] = ["broker", "gpu-worker", "render-worker"];
/// `--seccomp` value → the JSON action a syscall outside the policy gets.
const ACTIONS: [(&str, &str); 3] = [("kill", "kill_process"), ("trap", "trap"), ("log", "log")];

/// Writes a compiled filter as the raw `sock_filter` array that
/// `src/seccomp.rs` includes.
fn write_program(program: &[seccompiler::sock_filter], path: &std::path::Path) {
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for insn in program {
        bytes.extend_from_slice(&insn.code.to_ne_bytes());
        bytes.push(insn.jt);
        bytes.push(insn.jf);
        bytes.extend_from_slice(&insn.k.to_ne_bytes());
    }
    fs::write(path, bytes).unwrap();
}

/// Refuses a merged policy that names a syscall both with and without
/// arguments: seccompiler takes the entries of one syscall as alternative
/// rules, and an entry without arguments adds none, so the syscall would
/// be allowed only as the other entry pins it, not unconditionally as its
/// own entry says.
fn check_merge(name: &str, filter: &serde_json::Value) {
    let mut pinned = std::collections::BTreeMap::<&str, (bool, bool)>::new();
    for rule in filter.as_array().unwrap() {
        let syscall = rule["syscall"].as_str().unwrap();
        let seen = pinned.entry(syscall).or_default();
        match rule.get("args") {
            Some(_) => seen.0 = true,
            None => seen.1 = true,
        }
    }
    for (syscall, (with, without)) in pinned {
        assert!(
            !(with && without),
            "{name}: {syscall} has a rule with arguments and one without; the one without \
             would add nothing (give it arguments)"
        );
    }
}

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH").unwrap().as_str() {
        "x86_64" => TargetArch::x86_64,
        "aarch64" => TargetArch::aarch64,
        "riscv64" => TargetArch::riscv64,
        other => panic!("no seccomp support for target architecture {other}"),
    };
    for profile in PROFILES {
        let path = format!("seccomp/{profile}.json");
        println!("cargo:rerun-if-changed={path}");
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        for (flag, action) in ACTIONS {
            let mut doc: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
            doc["main"]["default_action"] = serde_json::Value::String(action.into());
            // A policy may also have a filter per thread kind (gpu-worker's
            // "vring"), installed by that thread on itself.
            let threads: Vec<String> = doc
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "main")
                .cloned()
                .collect();
            for t in &threads {
                doc[t.as_str()]["default_action"] = serde_json::Value::String(action.into());
            }
            let json = serde_json::to_vec(&doc).unwrap();
            let mut map = seccompiler::compile_from_json(Cursor::new(json), arch)
                .unwrap_or_else(|e| panic!("{path} does not compile: {e}"));
            for t in &threads {
                let program = map.remove(t.as_str()).unwrap();
                write_program(&program, &out.join(format!("{profile}-{t}-{flag}.bpf")));
            }
            let program = map
                .remove("main")
                .expect("each policy has a \"main\" filter");
            write_program(&program, &out.join(format!("{profile}-{flag}.bpf")));
        }
    }

    // Policies made of others: render-worker with a 3D context type (its
    // policy and what loading and running the GPU stack adds), and venus's
    // render server (that, and what the server adds: exec, a process per
    // context), each one filter.
    let read = |path: &str| -> serde_json::Value {
        let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let merged: [(&str, &[&str]); 2] = [
        (
            "render-worker-3d",
            &["render-worker", "render-worker-gpu-stack"],
        ),
        (
            "render-server",
            &["render-worker", "render-worker-gpu-stack", "render-server"],
        ),
    ];
    for (name, parts) in merged {
        let paths: Vec<String> = parts.iter().map(|p| format!("seccomp/{p}.json")).collect();
        for path in &paths {
            println!("cargo:rerun-if-changed={path}");
        }
        for (flag, action) in ACTIONS {
            let mut doc = read(&paths[0]);
            doc.as_object_mut().unwrap().retain(|k, _| k == "main");
            doc["main"]["default_action"] = serde_json::Value::String(action.into());
            for path in &paths[1..] {
                let added = read(path)["main"]["filter"].as_array().unwrap().clone();
                doc["main"]["filter"].as_array_mut().unwrap().extend(added);
            }
            check_merge(name, &doc["main"]["filter"]);
            let json = serde_json::to_vec(&doc).unwrap();
            let mut map = seccompiler::compile_from_json(Cursor::new(json), arch)
                .unwrap_or_else(|e| panic!("{} do not compile together: {e}", paths.join(", ")));
            let program = map.remove("main").unwrap();
            write_program(&program, &out.join(format!("{name}-{flag}.bpf")));
        }
    }

    // The threads filter, the same for every mode: installed before a
    // worker's policy, it answers clone3 ENOSYS.
    let path = "seccomp/threads.json";
    println!("cargo:rerun-if-changed={path}");
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut map = seccompiler::compile_from_json(Cursor::new(text.into_bytes()), arch)
        .unwrap_or_else(|e| panic!("{path} does not compile: {e}"));
    let program = map
        .remove("threads")
        .expect("threads.json has a \"threads\" filter");
    write_program(&program, &out.join("threads.bpf"));

    // Syscall names, from the kernel headers when they are installed.
    let header = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h";
    println!("cargo:rerun-if-changed={header}");
    let mut names: Vec<String> = Vec::new();
    if arch == TargetArch::x86_64 {
        if let Ok(text) = fs::read_to_string(header) {
            for line in text.lines() {
                let mut words = line.split_whitespace();
                if let (Some("#define"), Some(name), Some(nr)) =
                    (words.next(), words.next(), words.next())
                {
                    if let (Some(name), Ok(nr)) = (name.strip_prefix("__NR_"), nr.parse::<usize>())
                    {
                        if names.len() <= nr {
                            names.resize(nr + 1, String::new());
                        }
                        names[nr] = name.to_string();
                    }
                }
            }
        }
    }
    let table = format!(
        "/// Syscall names by number (empty where unknown).\npub static SYSCALL_NAMES: [&str; {}] = {:?};\n",
        names.len(),
        names
    );
    fs::write(out.join("syscall_names.rs"), table).unwrap();
}
