//! The whole language from the outside: blocks and imports build the expected
//! graphs, the JSON message format, `qatc fmt` (idempotent, keeps comments), and
//! property tests that no input makes the parser, checker or formatter panic.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use qatc::diagnostics::SourceFile;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn qat_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("directory exists")
        .map(|e| e.expect("readable").path())
        .filter(|p| p.extension().is_some_and(|e| e == "qat"))
        .collect();
    out.sort();
    out
}

/// Every example, corpus input and corpus library file.
fn all_sources() -> Vec<PathBuf> {
    let mut files = qat_files(&root().join("examples/fashion"));
    files.extend(qat_files(&root().join("tests/ui")));
    files.extend(qat_files(&root().join("tests/ui/lib")));
    files
}

fn check(path: &Path) -> qatc::ir::CheckedFile {
    let text = std::fs::read_to_string(path).expect("readable");
    qatc::check_source(&SourceFile::new(path.display().to_string(), text))
}

#[test]
fn resnet_and_mobilenet_examples_check_clean_with_ten_outputs() {
    for (file, model) in [
        ("resnet.qat", "FashionResNet"),
        ("mobilenet.qat", "FashionMobileNet"),
    ] {
        let checked = check(&root().join("examples/fashion").join(file));
        assert!(
            checked.diagnostics.is_empty(),
            "{file}: {:?}",
            checked.diagnostics
        );
        let g = &checked.graphs[0];
        assert_eq!(g.name, model);
        assert_eq!(g.node(g.inputs[0]).shape, vec![1, 28, 28]);
        assert_eq!(g.node(g.output).shape, vec![10]);
    }
}

#[test]
fn block_calls_are_inlined_with_scoped_names() {
    let checked = check(&root().join("examples/fashion/resnet.qat"));
    let g = &checked.graphs[0];
    let names: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
    // `let stage1 = basic(...)` calls `conv_bn_relu` as `y`, whose conv is `y`.
    assert!(names.contains(&"stage1.y.y"), "{names:?}");
    assert!(names.contains(&"stage2.shortcut"), "{names:?}");
    let sum = g.find("stage1.sum").expect("the residual add");
    // The residual add reads the block's input (the stem) and the block's last batch norm.
    let stem = g.find("stem.y_2").expect("the stem's relu");
    assert!(g.node(sum).inputs.contains(&stem));
}

#[test]
fn depthwise_convolution_keeps_channels() {
    let checked = check(&root().join("examples/fashion/mobilenet.qat"));
    let g = &checked.graphs[0];
    let dw = g.find("b1.d.d").expect("first depthwise conv");
    match &g.node(dw).op {
        qatc::ir::Op::Conv2d {
            groups,
            in_channels,
            filters,
            ..
        } => {
            assert_eq!((*groups, *in_channels, *filters), (32, 32, 32));
        }
        other => panic!("expected conv2d, got {other:?}"),
    }
}

#[test]
fn imported_blocks_are_usable_and_resolve_relative_to_the_importer() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("lib")).unwrap();
    std::fs::write(
        dir.path().join("lib/layers.qat"),
        std::fs::read_to_string(root().join("tests/ui/lib/layers.qat")).unwrap(),
    )
    .unwrap();
    let main = dir.path().join("net.qat");
    std::fs::write(
        &main,
        "use \"lib/layers.qat\"\nmodel M {\n    input image: f32[1, 8, 8]\n    let a = conv_bn_relu(image, filters = 4)\n    let f = flatten(a)\n    let o = dense(f, units = 10)\n    output o\n}\n",
    )
    .unwrap();
    let checked = check(&main);
    assert!(checked.diagnostics.is_empty(), "{:?}", checked.diagnostics);
    assert!(checked.graphs[0].find("a.y").is_some());
}

#[test]
fn several_results_bind_in_order() {
    let text = "block split(x: tensor) {\n let a = relu(x)\n let b = sigmoid(x)\n output a, b\n}\nmodel M {\n input v: f32[4]\n let p, q = split(v)\n let s = add(q, p)\n output s\n}\n";
    let checked = qatc::check_source(&SourceFile::new("t.qat", text));
    assert!(checked.diagnostics.is_empty(), "{:?}", checked.diagnostics);
    let g = &checked.graphs[0];
    let s = g.node(g.output);
    let inputs: Vec<&str> = s.inputs.iter().map(|&i| g.node(i).name.as_str()).collect();
    assert_eq!(inputs, ["p.b", "p.a"]);
}

#[test]
fn json_output_matches_checked_in_files() {
    let dir = root().join("tests/ui");
    let bless = std::env::var_os("QATC_BLESS").is_some();
    let mut failures = Vec::new();
    for name in [
        "block_argument_type_int",
        "add_shape_mismatch",
        "syntax_errors_in_two_items",
        "float_sandwich_warning",
    ] {
        let output = Command::new(common::qatc_bin())
            .current_dir(&dir)
            .args(["check", "--message-format", "json", &format!("{name}.qat")])
            .output()
            .expect("qatc runs");
        let stdout = String::from_utf8(output.stdout).expect("utf-8");
        for line in stdout.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).expect("one JSON object per line");
            for key in [
                "severity", "code", "message", "file", "range", "labels", "notes",
            ] {
                assert!(v.get(key).is_some(), "{name}: `{key}` missing in {line}");
            }
        }
        let expected_path = dir.join(format!("{name}.json"));
        if bless {
            std::fs::write(&expected_path, &stdout).unwrap();
        } else if std::fs::read_to_string(&expected_path).ok().as_deref() != Some(stdout.as_str()) {
            failures.push(format!("{name}: got\n{stdout}"));
        }
    }
    assert!(
        failures.is_empty(),
        "JSON output differs (QATC_BLESS=1 to regenerate):\n{}",
        failures.join("\n")
    );
}

#[test]
fn fmt_is_idempotent_and_keeps_comments_on_every_example_and_corpus_file() {
    let mut formatted_any = 0;
    for path in all_sources() {
        let text = std::fs::read_to_string(&path).unwrap();
        let Ok(once) = qatc::syntax::fmt::format(&text) else {
            continue;
        };
        formatted_any += 1;
        let twice = qatc::syntax::fmt::format(&once).expect("formatted output parses");
        assert_eq!(once, twice, "{}: fmt is not idempotent", path.display());
        // Every comment, `//` and `/* */`, in order.
        let comments = |s: &str| {
            let mut out = Vec::new();
            let mut rest = s;
            while let Some(at) = rest.find("//").into_iter().chain(rest.find("/*")).min() {
                let end = if rest[at..].starts_with("//") {
                    rest[at..].find('\n').map_or(rest.len(), |n| at + n)
                } else {
                    rest[at..].find("*/").map_or(rest.len(), |n| at + n + 2)
                };
                out.push(rest[at..end].trim().to_string());
                rest = &rest[end..];
            }
            out
        };
        assert_eq!(
            comments(&text),
            comments(&once),
            "{}: comments changed",
            path.display()
        );
        // Formatting never changes meaning: the same diagnostics codes come out.
        let codes = |s: &str| qatc::diagnose(s).iter().map(|d| d.code).collect::<Vec<_>>();
        assert_eq!(codes(&text), codes(&once), "{}", path.display());
    }
    assert!(formatted_any >= 40, "only {formatted_any} files parsed");
}

/// Every `.qat` in the repository is in `qatc fmt`'s layout (the diagnostics fixtures
/// under tests/ui keep their text: their goldens point at lines and columns).
#[test]
fn every_qat_file_in_the_repository_is_formatted() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !["target", "ui", "node_modules", ".git"].contains(&name.as_str()) {
                    walk(&path, out);
                }
            } else if name.ends_with(".qat") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    for dir in ["examples", "tests", "benches", "editors"] {
        if root().join(dir).is_dir() {
            walk(&root().join(dir), &mut files);
        }
    }
    assert!(files.len() >= 20, "{files:?}");
    let unformatted: Vec<String> = files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            qatc::syntax::fmt::format(&text).is_ok_and(|f| f != text)
        })
        .map(|p| p.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    assert!(
        unformatted.is_empty(),
        "not formatted (run `qatc fmt` on them): {unformatted:?}"
    );
}

/// Comments stay with what they annotate: trailing ones on their line, a `/* */`
/// inline before its argument, and `//` comments among a call's arguments keep the
/// call across lines, one argument per line.
#[test]
fn fmt_keeps_comments_attached() {
    let source = "model M {\n    input image: f32[1, 28, 28]\n    let x = conv2d(image,  // the input\n        filters = 8, // eight\n        // a leading comment\n        kernel = 3, padding = same) // after the call\n    let y = dense(flatten(x), /* ten */ units = 10)\n    output y // the end\n}\n";
    let expected = "model M {\n    input image: f32[1, 28, 28]\n    let x = conv2d(\n        image,  // the input\n        filters = 8,  // eight\n        // a leading comment\n        kernel = 3,\n        padding = same\n    )  // after the call\n    let y = dense(flatten(x), /* ten */ units = 10)\n    output y  // the end\n}\n";
    let formatted = qatc::syntax::fmt::format(source).unwrap();
    assert_eq!(formatted, expected);
    assert_eq!(qatc::syntax::fmt::format(&formatted).unwrap(), formatted);
}

#[test]
fn fmt_gives_the_canonical_layout() {
    let messy = "// header\nquant default{weights=int8(symmetric,per_channel)}\nmodel   M{input x:f32[4]  // the input\n\n\n\n  @float   let y=dense(x,units=2,)\noutput y}\n";
    let expected = "// header\nquant default {\n    weights = int8(symmetric, per_channel)\n}\n\nmodel M {\n    input x: f32[4]  // the input\n\n    @float\n    let y = dense(x, units = 2)\n    output y\n}\n";
    assert_eq!(qatc::syntax::fmt::format(messy).unwrap(), expected);
}

#[test]
fn fmt_check_fails_on_unformatted_files_and_leaves_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.qat");
    std::fs::write(&path, "model M{input x:f32[4]\nlet y=relu(x)\noutput y}").unwrap();
    let run = |args: &[&str]| {
        Command::new(common::qatc_bin())
            .args(args)
            .arg(&path)
            .output()
            .unwrap()
    };
    assert!(!run(&["fmt", "--check"]).status.success());
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .starts_with("model M{"));
    assert!(run(&["fmt"]).status.success());
    assert!(run(&["fmt", "--check"]).status.success());
}

fn seeds() -> Vec<String> {
    all_sources()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = qatc::diagnose(&text);
        let _ = qatc::syntax::fmt::format(&text);
    }

    #[test]
    fn mutated_valid_files_never_panic(seed in any::<prop::sample::Index>(), edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..4, "[a-z0-9(){}\\[\\],=:@\" \n/*.-]{0,3}"), 1..6)) {
        let sources = seeds();
        let mut text = sources[seed.index(sources.len())].clone();
        for (at, kind, piece) in edits {
            // Cut on a character boundary.
            let mut i = at.index(text.len() + 1);
            while !text.is_char_boundary(i) { i -= 1; }
            match kind {
                0 => text.insert_str(i, &piece),
                1 => { let end = (i + piece.len() + 1).min(text.len()); let mut e = end; while !text.is_char_boundary(e) { e -= 1; } text.replace_range(i..e, ""); }
                2 => { let mut e = (i + 1).min(text.len()); while !text.is_char_boundary(e) { e -= 1; } text.replace_range(i..e, &piece); }
                _ => { let dup = text[i..].chars().take(20).collect::<String>(); text.insert_str(i, &dup); }
            }
        }
        let diagnostics = qatc::diagnose(&text);
        // Every diagnostic renders: its spans lie inside the file.
        let _ = qatc::diagnostics::render_terminal(&SourceFile::new("m.qat", text.clone()), &diagnostics, false);
        if let Ok(once) = qatc::syntax::fmt::format(&text) {
            prop_assert_eq!(qatc::syntax::fmt::format(&once).ok(), Some(once.clone()));
        }
    }
}

/// `qatc explain ops` is generated from the op definitions: every op with its
/// signature and its quantization role, which is what the passes and lints read.
#[test]
fn explain_ops_lists_every_op_with_its_quantization_role() {
    let out = Command::new(common::qatc_bin())
        .args(["explain", "ops"])
        .output()
        .expect("qatc runs");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    for def in qatc::ir::ops::OPS {
        assert!(
            text.contains(&def.signature()),
            "{} missing:\n{text}",
            def.name
        );
    }
    let roles = text.matches("    quantization: ").count();
    assert_eq!(roles, qatc::ir::ops::OPS.len(), "{text}");
    assert!(
        text.contains("max_pool2d(x, size, stride = size)\n"),
        "{text}"
    );
    let pool = &text[text.find("max_pool2d(").unwrap()..];
    let pool_role = pool.lines().find(|l| l.contains("quantization:")).unwrap();
    assert!(pool_role.contains("keeps its input's scale"), "{pool_role}");
}

/// `qatc explain codes` lists every code once, in order; each explains itself.
#[test]
fn explain_codes_lists_every_code() {
    let out = Command::new(common::qatc_bin())
        .args(["explain", "codes"])
        .output()
        .expect("qatc runs");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let listed: Vec<&str> = text
        .lines()
        .map(|l| l.split("  ").next().unwrap())
        .collect();
    assert_eq!(listed.len(), qatc::codes::EXPLANATIONS.len(), "{text}");
    let mut sorted = listed.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(listed, sorted, "codes listed once, in order");
    for code in ["E0001", "E0015", "E0022", "W0004"] {
        assert!(listed.contains(&code), "{code} missing:\n{text}");
    }
}
