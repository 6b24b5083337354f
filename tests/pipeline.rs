//! The front half of the pipeline without libtorch: parse → check → passes.

use qatc::ir::{dump, Granularity, Graph, Op, QuantSpec, Scheme};
use qatc::passes::{self, Stage};
use qatc::syntax::{self, ast};

const SEED: &str = include_str!("../examples/fashion/cnn.qat");

fn graph(text: &str) -> Graph {
    let checked = qatc::check_source(&qatc::diagnostics::SourceFile::new("t.qat", text));
    assert!(!checked.has_errors(), "{:#?}", checked.diagnostics);
    checked.graphs.into_iter().next().expect("one model")
}

fn ops(g: &Graph) -> Vec<String> {
    g.nodes
        .iter()
        .map(|n| n.op.to_string().split('(').next().unwrap().to_string())
        .collect()
}

#[test]
fn parser_keeps_structure_and_spans() {
    let (file, errors) = syntax::parse(SEED);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(file.items.len(), 2);
    let ast::Item::Model(model) = &file.items[1] else {
        panic!("second item is the model")
    };
    assert_eq!(model.name.name, "FashionCnn");
    let lets: Vec<&ast::LetBinding> = model
        .statements
        .iter()
        .filter_map(|s| match s {
            ast::Statement::Let(l) => Some(l),
            _ => None,
        })
        .collect();
    assert_eq!(lets.len(), 6);
    let dense = lets[5];
    assert_eq!(dense.annotations[0].name.name, "quant");
    assert_eq!(
        &SEED[dense.call.span.start..dense.call.span.end],
        "dense(x, units = 10)"
    );
    assert_eq!(dense.call.args[1].name.as_ref().unwrap().name, "units");
}

#[test]
fn comments_and_trailing_commas_parse() {
    let g = graph("/* block\ncomment */ model M { // line\n input x: f32[4,]\n let y = dense(x, units = 2,) // end\n output y }");
    assert_eq!(g.node(g.output).shape, vec![2]);
}

#[test]
fn shapes_are_inferred_and_shadowed_names_made_unique() {
    let g = graph(SEED);
    let shapes: Vec<(String, Vec<usize>)> = g
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.shape.clone()))
        .collect();
    assert_eq!(
        shapes,
        vec![
            ("image".into(), vec![1, 28, 28]),
            ("x".into(), vec![32, 26, 26]),
            ("x_1".into(), vec![32, 26, 26]),
            ("x_2".into(), vec![32, 26, 26]),
            ("x_3".into(), vec![32, 13, 13]),
            ("x_4".into(), vec![5408]),
            ("logits".into(), vec![10]),
        ]
    );
}

#[test]
fn same_padding_and_stride_follow_ceil_division() {
    let g = graph("model M { input x: f32[3, 7, 7]\n let y = conv2d(x, filters = 4, kernel = 3, stride = 2, padding = same)\n output y }");
    assert_eq!(g.node(g.output).shape, vec![4, 4, 4]);
}

#[test]
fn quant_defaults_and_overrides_reach_the_nodes() {
    let g = graph(
        "quant default { weights = int4(symmetric, per_tensor) }
         model M { input x: f32[8]
           let a = dense(x, units = 4)
           @quant(weights = int2(asymmetric, per_channel), activations = int6(symmetric))
           let b = dense(a, units = 2)
           output b }",
    );
    let a = g.node(g.find("a").unwrap());
    assert_eq!(
        a.quant.weights,
        QuantSpec {
            bits: 4,
            scheme: Scheme::Symmetric,
            granularity: Granularity::PerTensor
        }
    );
    assert_eq!(a.quant.activations, QuantSpec::ACTIVATIONS);
    let b = g.node(g.find("b").unwrap());
    assert_eq!(
        b.quant.weights,
        QuantSpec {
            bits: 2,
            scheme: Scheme::Asymmetric,
            granularity: Granularity::PerChannel
        }
    );
    assert_eq!(
        b.quant.activations,
        QuantSpec {
            bits: 6,
            scheme: Scheme::Symmetric,
            granularity: Granularity::PerTensor
        }
    );
}

const RESIDUAL: &str = "model Res {
    input image: f32[1, 28, 28]
    let stem = conv2d(image, filters = 8, kernel = 3, padding = same)
    let stem = relu(stem)
    let y = conv2d(stem, filters = 8, kernel = 3, padding = same)
    let y = batch_norm(y)
    let y = add(y, stem)
    let y = relu(y)
    let y = flatten(y)
    let logits = dense(y, units = 10)
    output logits
}";

#[test]
fn residual_branches_form_a_dag() {
    let g = graph(RESIDUAL);
    let add = g
        .nodes
        .iter()
        .find(|n| matches!(n.op, Op::Add { .. }))
        .unwrap();
    let inputs: Vec<&str> = add
        .inputs
        .iter()
        .map(|&i| g.node(i).name.as_str())
        .collect();
    assert_eq!(inputs, vec!["y_1", "stem_1"]);
}

#[test]
fn fusion_follows_dataflow_not_statement_order() {
    let fused = passes::run(graph(RESIDUAL), Stage::Fused);
    assert_eq!(
        ops(&fused),
        vec![
            "input",
            "conv2d+relu",
            "conv2d+batch_norm",
            "add+relu",
            "flatten",
            "dense"
        ]
    );
    // The stem's relu output is read twice (conv and add), so it stays the fused node's output.
    let stem = fused.find("stem").unwrap();
    assert_eq!(fused.consumers()[stem.index()].len(), 2);
}

#[test]
fn no_fusion_when_an_intermediate_value_has_other_readers() {
    let g = graph(
        "model M { input x: f32[1, 8, 8]
           let c = conv2d(x, filters = 2, kernel = 1)
           let r = relu(c)
           let s = add(c, r)
           let f = flatten(s)
           let o = dense(f, units = 2)
           output o }",
    );
    let fused = passes::run(g, Stage::Fused);
    assert_eq!(
        ops(&fused),
        vec!["input", "conv2d", "relu", "add", "flatten", "dense"]
    );
}

#[test]
fn fake_quant_goes_after_fused_chains_and_not_inside() {
    let q = passes::run(graph(SEED), Stage::Quantized);
    assert_eq!(
        ops(&q),
        vec![
            "input",
            "fake_quant",
            "conv2d+batch_norm+relu",
            "fake_quant",
            "max_pool2d",
            "flatten",
            "dense",
            "fake_quant"
        ]
    );
    assert_eq!(q.node(q.output).name, "logits.fq");
    // Idempotent: running the pass again changes nothing.
    let mut again = q.clone();
    assert!(!passes::insert_fake_quant(&mut again));
    assert_eq!(dump::text(&again), dump::text(&q));
}

#[test]
fn float_ops_get_no_fake_quant_and_their_quantized_readers_quantize_the_input() {
    let g = graph(
        "model M { input x: f32[16]
           @float
           let a = dense(x, units = 8)
           let b = dense(a, units = 4)
           output b }",
    );
    let q = passes::run(g, Stage::Quantized);
    let text = dump::text(&q);
    // x feeds only a float op: no input fake-quant; a's value is quantized for b.
    assert_eq!(
        ops(&q),
        vec!["input", "dense", "fake_quant", "dense", "fake_quant"],
        "{text}"
    );
    assert!(text.contains("@float"), "{text}");
    assert_eq!(q.node(q.nodes[2].inputs[0]).name, "a");
}

#[test]
fn an_add_read_by_more_than_a_relu_keeps_its_own_quantization() {
    let src = RESIDUAL.replace(
        "let y = relu(y)\n    let y = flatten(y)",
        "let r = relu(y)\n    let y = add(r, y)\n    let y = flatten(y)",
    );
    assert_ne!(src, RESIDUAL);
    let q = passes::run(graph(&src), Stage::Quantized);
    let ops = ops(&q);
    let first_add = ops.iter().position(|o| o == "add").unwrap();
    assert_eq!(ops[first_add + 1], "fake_quant", "{ops:?}");
}

#[test]
fn residual_add_relu_is_quantized_once_after_the_relu() {
    let q = passes::run(graph(RESIDUAL), Stage::Quantized);
    assert_eq!(
        ops(&q),
        vec![
            "input",
            "fake_quant",
            "conv2d+relu",
            "fake_quant",
            "conv2d+batch_norm",
            "fake_quant",
            "add+relu",
            "fake_quant",
            "flatten",
            "dense",
            "fake_quant"
        ]
    );
    // Every node reads only earlier nodes: the arena stays topologically ordered.
    for (i, n) in q.nodes.iter().enumerate() {
        assert!(n.inputs.iter().all(|x| x.index() < i), "{}", dump::text(&q));
    }
}

#[test]
fn checker_never_panics_on_mangled_input() {
    // Every prefix, and every single-byte corruption at a stride, of real files.
    let sources = [SEED, RESIDUAL];
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for src in sources {
        for cut in (0..src.len()).step_by(3) {
            let _ = qatc::diagnose(&src[..cut]);
        }
        let bytes = src.as_bytes();
        for i in 0..600 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let mut mutated = bytes.to_vec();
            let at = (rng as usize) % mutated.len();
            mutated[at] = b"(){}[],=:@ax0_\n-."[(rng >> 32) as usize % 17];
            if i % 2 == 0 {
                mutated.remove((rng >> 16) as usize % mutated.len());
            }
            let _ = qatc::diagnose(&String::from_utf8_lossy(&mutated));
        }
    }
}

#[test]
fn concat_inputs_use_the_range_of_the_concat() {
    let g = graph(
        "model M { input x: f32[1, 8, 8]
           let a = conv2d(x, filters = 2, kernel = 3, padding = same)
           let b = conv2d(x, filters = 3, kernel = 1)
           let c = concat(a, b)
           let d = conv2d(b, filters = 2, kernel = 1)
           let e = concat(c, d)
           let f = flatten(e)
           let y = dense(f, units = 4)
           output y }",
    );
    let q = passes::run(g, Stage::Quantized);
    let shared = passes::range_sources(&q);
    let name = |id: qatc::ir::NodeId| q.node(id).name.clone();
    let source = |n: &str| name(shared[q.find(n).unwrap().index()]);
    // The inputs of `c` (b is also read by a conv2d, which takes any parameters), and c
    // itself, feed `e`: one range, observed after e.
    assert_eq!(source("a.fq"), "e.fq");
    assert_eq!(source("b.fq"), "e.fq");
    assert_eq!(source("c.fq"), "e.fq");
    assert_eq!(source("d.fq"), "e.fq");
    // Everything else keeps its own range.
    assert_eq!(source("e.fq"), "e.fq");
    assert_eq!(source("x.fq"), "x.fq");
    assert_eq!(source("y.fq"), "y.fq");
}
