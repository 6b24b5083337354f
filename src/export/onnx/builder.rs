//! The ONNX graph under construction: initializers, nodes with fresh names, attributes.

use super::proto::*;
use crate::int8::QParams;

/// A graph being written, and the counter that names its nodes.
pub(super) struct Builder {
    pub(super) graph: GraphProto,
    pub(super) counter: usize,
}

/// An integer-list attribute.
pub(super) fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: v.to_vec(),
        r#type: ATTR_INTS,
        ..Default::default()
    }
}

/// An integer attribute.
pub(super) fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: v,
        r#type: ATTR_INT,
        ..Default::default()
    }
}

impl Builder {
    pub(super) fn init(
        &mut self,
        name: String,
        data_type: i32,
        dims: &[usize],
        raw_data: Vec<u8>,
    ) -> String {
        self.graph.initializer.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type,
            name: name.clone(),
            raw_data,
        });
        name
    }

    pub(super) fn f32s(&mut self, name: String, dims: &[usize], v: &[f32]) -> String {
        self.init(
            name,
            FLOAT,
            dims,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    }

    pub(super) fn i8s(&mut self, name: String, dims: &[usize], v: &[i8]) -> String {
        self.init(name, INT8, dims, v.iter().map(|&x| x as u8).collect())
    }

    /// Scalar scale and zero point initializers of a value, written once: a value read by
    /// several QLinear ops (a conv2d's output feeding an add) shares them (ONNX Runtime
    /// warns about duplicate initializers).
    pub(super) fn qparams(&mut self, tensor: &str, q: &QParams) -> (String, String) {
        let (scale, zero_point) = (format!("{tensor}_scale"), format!("{tensor}_zero_point"));
        let written = |name: &str| self.graph.initializer.iter().any(|t| t.name == name);
        if written(&scale) && written(&zero_point) {
            return (scale, zero_point);
        }
        (
            self.f32s(scale, &[], &[q.scale]),
            self.i8s(zero_point, &[], &[q.zero_point as i8]),
        )
    }

    /// A com.microsoft QLinear binary op (QLinearAdd, QLinearMul): each input is
    /// `(value, name of its scale and zero point, parameters)`, then the output's.
    pub(super) fn qlinear_binary(
        &mut self,
        op_type: &str,
        inputs: [(&String, &String, &QParams); 2],
        (out, out_q): (&String, &QParams),
        output: String,
    ) -> String {
        let mut args = Vec::with_capacity(8);
        for (value, params, q) in inputs {
            let (s, z) = self.qparams(params, q);
            args.extend([value.clone(), s, z]);
        }
        let (sy, zy) = self.qparams(out, out_q);
        args.extend([sy, zy]);
        self.node(op_type, "com.microsoft", args, output, vec![])
    }

    pub(super) fn node(
        &mut self,
        op_type: &str,
        domain: &str,
        inputs: Vec<String>,
        output: String,
        attribute: Vec<AttributeProto>,
    ) -> String {
        self.counter += 1;
        self.graph.node.push(NodeProto {
            input: inputs,
            output: vec![output.clone()],
            name: format!("{op_type}_{}", self.counter),
            op_type: op_type.into(),
            attribute,
            domain: domain.into(),
        });
        output
    }
}

/// The type of a graph input or output: `elem_type` with a symbolic batch dimension in front of `shape`.
pub(super) fn tensor_type(elem_type: i32, batch: &str, shape: &[usize]) -> Option<TypeProto> {
    let dim = std::iter::once(Dimension {
        dim_value: None,
        dim_param: Some(batch.into()),
    })
    .chain(shape.iter().map(|&d| Dimension {
        dim_value: Some(d as i64),
        dim_param: None,
    }))
    .collect();
    Some(TypeProto {
        tensor_type: Some(TypeProtoTensor {
            elem_type,
            shape: Some(TensorShapeProto { dim }),
        }),
    })
}
