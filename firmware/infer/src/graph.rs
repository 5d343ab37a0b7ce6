//! Lowering of an ONNX graph into the plan's steps: one step per GPU kernel launch.
//!
//! The plan reads the ONNX nodes themselves (through tract-onnx's protobuf types), not tract's
//! typed graph: the ONNX op set is documented and stable, while tract's decluttered graph
//! rewrites ops (1x1 Conv into EinSum, Clip into Max + Min, ...) in version-dependent ways.
//! tract still loads and checks the same model and is the numerical oracle.
//!
//! Activations always carry the batch as their first axis; a value stores its shape without it
//! (`inner`), so one plan serves every batch up to the maximum. Constants (weights, shape
//! tensors) are folded here on the CPU; BatchNorm, per-channel Mul/Add, residual Add and
//! Relu/Clip are fused into the convolution that precedes them when nothing else reads the
//! intermediate tensor.

use std::collections::HashMap;
use std::path::Path;

use tract_onnx::pb;
use tract_onnx::prelude::{DatumType, Tensor};

use crate::InferError;

pub(crate) type ValueId = usize;
pub(crate) type ConstId = usize;

/// Rank (without batch) the broadcasting kernel handles.
pub(crate) const MAX_RANK: usize = 6;

/// Stands for the batch size inside folded shape tensors (`Shape` of an activation).
const BATCH: i64 = -(1 << 40);

#[derive(Debug, Clone)]
pub(crate) struct ConstTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operand {
    Value(ValueId),
    Const(ConstId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinaryOp {
    Add = 0,
    Sub = 1,
    Mul = 2,
    Div = 3,
    Pow = 4,
    Max = 5,
    Min = 6,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum UnaryOp {
    Clamp { lo: f32, hi: f32 },
    Sqrt,
    Square,
    Sigmoid,
    Reciprocal,
    Neg,
}

/// Ops over the last `len` elements of each row; `LpNormalize` and `LayerNorm` write a whole
/// row, the others one value per row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RowOp {
    Mean,
    Sum,
    L2,
    SumSquare,
    LpNormalize,
    LayerNorm { eps: f32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolKind {
    Max,
    AvgIncludePad,
    AvgExcludePad,
}

/// Spatial geometry of a conv or a pool, per sample, NCHW.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub pt: usize,
    pub pl: usize,
    pub pb: usize,
    pub pr: usize,
    pub dh: usize,
    pub dw: usize,
}

/// Index arithmetic of a broadcasting binary op, computed once at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Broadcast {
    pub dims: [usize; MAX_RANK],
    pub a_strides: [usize; MAX_RANK],
    pub b_strides: [usize; MAX_RANK],
    pub a_batch: usize,
    pub b_batch: usize,
}

#[derive(Debug, Clone)]
pub(crate) enum StepKind {
    Conv {
        x: ValueId,
        weight: ConstId,
        bias: Option<ConstId>,
        residual: Option<ValueId>,
        lo: f32,
        hi: f32,
        cout: usize,
        group: usize,
        win: Window,
    },
    Binary {
        op: BinaryOp,
        a: Operand,
        b: Operand,
        bc: Broadcast,
    },
    Unary {
        op: UnaryOp,
        x: ValueId,
    },
    Pool {
        kind: PoolKind,
        x: ValueId,
        win: Window,
    },
    Rows {
        op: RowOp,
        x: ValueId,
        rows: usize,
        len: usize,
        scale: Option<ConstId>,
        bias: Option<ConstId>,
    },
    /// `x` (rows x k, per sample) times a constant k x n matrix, plus an optional bias.
    MatMul {
        x: ValueId,
        weight: ConstId,
        bias: Option<ConstId>,
        rows: usize,
        k: usize,
        n: usize,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Step {
    /// The ONNX node the step came from (the first, when several were fused).
    pub node: String,
    /// ONNX op types the step runs, e.g. `Conv+BatchNormalization+Relu`.
    pub ops: String,
    pub kind: StepKind,
    pub out: ValueId,
}

impl Step {
    /// Values the step reads.
    pub fn inputs(&self) -> Vec<ValueId> {
        let mut v = Vec::new();
        match &self.kind {
            StepKind::Conv { x, residual, .. } => {
                v.push(*x);
                v.extend(residual);
            }
            StepKind::Binary { a, b, .. } => {
                for o in [a, b] {
                    if let Operand::Value(id) = o {
                        v.push(*id);
                    }
                }
            }
            StepKind::Unary { x, .. }
            | StepKind::Pool { x, .. }
            | StepKind::Rows { x, .. }
            | StepKind::MatMul { x, .. } => v.push(*x),
        }
        v
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Value {
    /// Shape without the batch axis.
    pub inner: Vec<usize>,
    /// The value that owns the storage (differs for Reshape/Flatten views).
    pub root: ValueId,
}

impl Value {
    pub fn len(&self) -> usize {
        self.inner.iter().product()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Graph {
    pub values: Vec<Value>,
    pub consts: Vec<ConstTensor>,
    pub steps: Vec<Step>,
    pub input: ValueId,
    pub output: ValueId,
}

/// A tensor known at load time.
#[derive(Debug, Clone)]
enum Known {
    F32(Vec<usize>, Vec<f32>),
    I64(Vec<usize>, Vec<i64>),
}

impl Known {
    fn shape(&self) -> &[usize] {
        match self {
            Known::F32(s, _) | Known::I64(s, _) => s,
        }
    }
    fn as_i64(&self) -> Vec<i64> {
        match self {
            Known::I64(_, d) => d.clone(),
            Known::F32(_, d) => d.iter().map(|&x| x as i64).collect(),
        }
    }
    fn as_f32(&self) -> Vec<f32> {
        match self {
            Known::F32(_, d) => d.clone(),
            Known::I64(_, d) => d.iter().map(|&x| x as f32).collect(),
        }
    }
    fn scalar_f32(&self) -> Option<f32> {
        let d = self.as_f32();
        (d.len() == 1).then(|| d[0])
    }
}

#[derive(Debug, Clone)]
enum Sym {
    Act(ValueId),
    Known(Known),
}

fn tensor_to_known(t: &Tensor) -> Result<Known, String> {
    let shape = t.shape().to_vec();
    let dt = t.datum_type();
    if dt.is_float() {
        let c = t.cast_to::<f32>().map_err(|e| e.to_string())?;
        Ok(Known::F32(
            shape,
            c.try_as_plain_ram()
                .and_then(|v| v.as_slice::<f32>().map(<[f32]>::to_vec))
                .map_err(|e| e.to_string())?,
        ))
    } else if dt.is_integer() || dt == DatumType::Bool {
        let c = t.cast_to::<i64>().map_err(|e| e.to_string())?;
        Ok(Known::I64(
            shape,
            c.try_as_plain_ram()
                .and_then(|v| v.as_slice::<i64>().map(<[i64]>::to_vec))
                .map_err(|e| e.to_string())?,
        ))
    } else {
        Err(format!("constant of type {dt:?}"))
    }
}

fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}
fn attr_i(node: &pb::NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}
fn attr_f(node: &pb::NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f)
}
fn attr_ints(node: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}
fn attr_s(node: &pb::NodeProto, name: &str) -> Option<String> {
    attr(node, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

/// The largest axis index (or count of axes) an attribute may name: far beyond any tensor's
/// rank here.
const MAX_AXIS: i64 = 64;
/// The largest kernel size, stride, dilation or padding an attribute may give.
const MAX_WINDOW: i64 = 1 << 16;

/// Refuses attribute values no valid model has, before tract sees them: tract 0.23 loops
/// (practically) forever on a LayerNormalization `axis` of -917505, and panics on a stride
/// of 0.
pub(crate) fn check_attributes(graph: &pb::GraphProto) -> Result<(), InferError> {
    for node in &graph.node {
        for a in &node.attribute {
            let values = || std::iter::once(a.i).chain(a.ints.iter().copied());
            let bad = match a.name.as_str() {
                "axis" | "axes" => values().find(|v| v.abs() > MAX_AXIS),
                "kernel_shape" | "strides" | "dilations" => a
                    .ints
                    .iter()
                    .copied()
                    .find(|v| !(1..=MAX_WINDOW).contains(v)),
                "group" => (a.i < 1).then_some(a.i),
                "pads" => values().find(|v| !(0..=MAX_WINDOW).contains(v)),
                _ => None,
            };
            if let Some(v) = bad {
                return Err(InferError::unsupported(
                    &node.name,
                    &node.op_type,
                    format!("attribute {} = {v} is out of range", a.name),
                ));
            }
        }
    }
    Ok(())
}

/// Numpy broadcasting of two shapes, right-aligned.
fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Strides (in elements) to read `shape`, right-aligned to `out` (without batch), 0 where the
/// operand is broadcast.
fn bcast_strides(shape: &[usize], out: &[usize]) -> [usize; MAX_RANK] {
    let mut strides = [0; MAX_RANK];
    let mut s = 1;
    // Walk from the last axis; `out` is right-aligned into the MAX_RANK slots.
    for i in 0..out.len() {
        let slot = MAX_RANK - 1 - i;
        if i < shape.len() {
            let d = shape[shape.len() - 1 - i];
            strides[slot] = if d == 1 { 0 } else { s };
            s *= d;
        }
    }
    strides
}

/// Output size of a conv/pool axis; `None` if the window does not fit.
fn out_size(
    input: usize,
    k: usize,
    stride: usize,
    dil: usize,
    (pad_begin, pad_end): (usize, usize),
    ceil: bool,
) -> Option<usize> {
    let eff = dil * (k - 1) + 1;
    let span = (input + pad_begin + pad_end).checked_sub(eff)?;
    let mut o = span / stride + 1;
    if ceil && span % stride != 0 {
        o += 1;
        // The last window must start inside the input or the leading padding (ONNX/PyTorch).
        if (o - 1) * stride >= input + pad_begin {
            o -= 1;
        }
    }
    Some(o)
}

/// Per-sample spatial geometry from ONNX attributes for a conv or pool on `[C, H, W]`.
fn window(
    node: &pb::NodeProto,
    inner: &[usize],
    kernel: [usize; 2],
    ceil: bool,
) -> Result<Window, InferError> {
    let name = &node.name;
    let op = &node.op_type;
    let strides = attr_ints(node, "strides").unwrap_or_else(|| vec![1, 1]);
    let dil = attr_ints(node, "dilations").unwrap_or_else(|| vec![1, 1]);
    if strides.len() != 2 || dil.len() != 2 || strides.iter().chain(&dil).any(|&s| s < 1) {
        return Err(InferError::unsupported(
            name,
            op,
            "strides and dilations must be two positive values",
        ));
    }
    let (sh, sw) = (strides[0] as usize, strides[1] as usize);
    let (dh, dw) = (dil[0] as usize, dil[1] as usize);
    let (h, w) = (inner[1], inner[2]);
    let [kh, kw] = kernel;
    let auto_pad = attr_s(node, "auto_pad").unwrap_or_else(|| "NOTSET".into());
    let (pt, pl, pb, pr) = match auto_pad.as_str() {
        "NOTSET" => {
            let p = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
            if p.len() != 4 || p.iter().any(|&x| x < 0) {
                return Err(InferError::unsupported(name, op, format!("pads {p:?}")));
            }
            (p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize)
        }
        "VALID" => (0, 0, 0, 0),
        "SAME_UPPER" | "SAME_LOWER" => {
            let total = |i: usize, s: usize, k: usize, d: usize| {
                let o = i.div_ceil(s);
                ((o - 1) * s + d * (k - 1) + 1).saturating_sub(i)
            };
            let (th, tw) = (total(h, sh, kh, dh), total(w, sw, kw, dw));
            if auto_pad == "SAME_UPPER" {
                (th / 2, tw / 2, th - th / 2, tw - tw / 2)
            } else {
                (th - th / 2, tw - tw / 2, th / 2, tw / 2)
            }
        }
        other => {
            return Err(InferError::unsupported(
                name,
                op,
                format!("auto_pad {other}"),
            ));
        }
    };
    let oh = out_size(h, kh, sh, dh, (pt, pb), ceil);
    let ow = out_size(w, kw, sw, dw, (pl, pr), ceil);
    let (Some(oh), Some(ow)) = (oh, ow) else {
        return Err(InferError::unsupported(
            name,
            op,
            format!("kernel {kh}x{kw} does not fit the {h}x{w} input"),
        ));
    };
    Ok(Window {
        c: inner[0],
        h,
        w,
        oh,
        ow,
        kh,
        kw,
        sh,
        sw,
        pt,
        pl,
        pb,
        pr,
        dh,
        dw,
    })
}

struct Lowering<'a> {
    model_dir: Option<&'a str>,
    onnx: &'a tract_onnx::model::Onnx,
    syms: HashMap<String, Sym>,
    /// How many nodes (and graph outputs) read each tensor name.
    uses: HashMap<String, usize>,
    /// Which step produced a value; values without one are graph inputs.
    producer: HashMap<ValueId, usize>,
    graph_outputs: Vec<String>,
    g: Graph,
}

impl Lowering<'_> {
    fn new_value(&mut self, inner: Vec<usize>) -> ValueId {
        let id = self.g.values.len();
        self.g.values.push(Value { inner, root: id });
        id
    }

    fn add_const(&mut self, shape: Vec<usize>, data: Vec<f32>) -> ConstId {
        self.g.consts.push(ConstTensor { shape, data });
        self.g.consts.len() - 1
    }

    fn push(&mut self, node: &pb::NodeProto, kind: StepKind, inner: Vec<usize>) -> ValueId {
        let out = self.new_value(inner);
        self.producer.insert(out, self.g.steps.len());
        self.g.steps.push(Step {
            node: node.name.clone(),
            ops: node.op_type.clone(),
            kind,
            out,
        });
        out
    }

    fn sym(&self, node: &pb::NodeProto, ix: usize) -> Result<Option<&Sym>, InferError> {
        match node.input.get(ix) {
            None => Ok(None),
            Some(n) if n.is_empty() => Ok(None),
            Some(n) => self.syms.get(n).map(Some).ok_or_else(|| {
                InferError::unsupported(&node.name, &node.op_type, format!("unknown input `{n}`"))
            }),
        }
    }

    fn act(&self, node: &pb::NodeProto, ix: usize) -> Result<ValueId, InferError> {
        match self.sym(node, ix)? {
            Some(Sym::Act(v)) => Ok(*v),
            Some(Sym::Known(_)) => Err(InferError::unsupported(
                &node.name,
                &node.op_type,
                format!("input {ix} is a constant where an activation is expected"),
            )),
            None => Err(InferError::unsupported(
                &node.name,
                &node.op_type,
                format!("input {ix} is missing"),
            )),
        }
    }

    fn known(&self, node: &pb::NodeProto, ix: usize) -> Result<Option<Known>, InferError> {
        match self.sym(node, ix)? {
            Some(Sym::Known(k)) => Ok(Some(k.clone())),
            Some(Sym::Act(_)) => Err(InferError::unsupported(
                &node.name,
                &node.op_type,
                format!("input {ix} must be a constant (initializer) for the GPU plan"),
            )),
            None => Ok(None),
        }
    }

    fn inner(&self, v: ValueId) -> &[usize] {
        &self.g.values[v].inner
    }

    /// The step producing `v`, when a node reading `v` through `name` may fuse into it:
    /// nothing else reads the tensor and it is not a graph output.
    fn fusable_producer(&self, name: &str, v: ValueId) -> Option<usize> {
        if self.uses.get(name).copied().unwrap_or(0) != 1
            || self.graph_outputs.iter().any(|o| o == name)
        {
            return None;
        }
        let s = *self.producer.get(&v)?;
        // A view (Reshape) of the producer's output is not the producer's output.
        (self.g.steps[s].out == v).then_some(s)
    }

    fn set_out(&mut self, node: &pb::NodeProto, sym: Sym) {
        if let Some(name) = node.output.first() {
            self.syms.insert(name.clone(), sym);
        }
    }

    fn unsupported(node: &pb::NodeProto, reason: impl Into<String>) -> InferError {
        InferError::unsupported(&node.name, &node.op_type, reason)
    }

    fn lower_node(&mut self, node: &pb::NodeProto) -> Result<(), InferError> {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(Self::unsupported(
                node,
                format!("operator domain `{}`", node.domain),
            ));
        }
        // Nodes whose inputs are all known are folded on the CPU (shape arithmetic, constants).
        let inputs: Vec<Option<&Sym>> = (0..node.input.len())
            .map(|i| self.sym(node, i))
            .collect::<Result<_, _>>()?;
        let all_known = inputs.iter().all(|s| !matches!(s, Some(Sym::Act(_))));
        if node.op_type == "Shape" {
            return self.fold_shape(node);
        }
        if all_known {
            let k = self.fold(node)?;
            self.set_out(node, Sym::Known(k));
            return Ok(());
        }
        match node.op_type.as_str() {
            "Conv" => self.conv(node),
            "BatchNormalization" => self.batch_norm(node),
            "Relu" => self.activation(node, 0.0, f32::MAX),
            "Clip" => {
                let (lo, hi) = if node.input.len() > 1 {
                    let lo = self
                        .known(node, 1)?
                        .map_or(Some(-f32::MAX), |k| k.scalar_f32());
                    let hi = self
                        .known(node, 2)?
                        .map_or(Some(f32::MAX), |k| k.scalar_f32());
                    match (lo, hi) {
                        (Some(lo), Some(hi)) => (lo, hi),
                        _ => return Err(Self::unsupported(node, "min/max must be scalars")),
                    }
                } else {
                    (
                        attr_f(node, "min", -f32::MAX),
                        attr_f(node, "max", f32::MAX),
                    )
                };
                self.activation(node, lo, hi)
            }
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" => self.binary(node),
            "Sqrt" => self.unary(node, UnaryOp::Sqrt),
            "Sigmoid" => self.unary(node, UnaryOp::Sigmoid),
            "Reciprocal" => self.unary(node, UnaryOp::Reciprocal),
            "Neg" => self.unary(node, UnaryOp::Neg),
            "MaxPool" | "AveragePool" => self.pool(node),
            "GlobalAveragePool" => {
                let x = self.act(node, 0)?;
                let inner = self.inner(x).to_vec();
                if inner.len() < 2 {
                    return Err(Self::unsupported(node, "input must be N x C x spatial"));
                }
                let len = inner[1..].iter().product();
                let mut out = vec![1; inner.len()];
                out[0] = inner[0];
                self.push_rows(node, RowOp::Mean, x, (inner[0], len), out)
            }
            "ReduceMean" | "ReduceSum" | "ReduceL2" | "ReduceSumSquare" => self.reduce(node),
            "LpNormalization" => self.lp_norm(node),
            "LayerNormalization" => self.layer_norm(node),
            "Gemm" => self.gemm(node),
            "MatMul" => self.matmul(node),
            "Expand" => self.expand(node),
            "Flatten" | "Reshape" | "Squeeze" | "Unsqueeze" | "Identity" | "Dropout" => {
                self.view(node)
            }
            other => Err(Self::unsupported(
                node,
                format!("op {other} is not supported by the GPU plan"),
            )),
        }
    }

    fn fold_shape(&mut self, node: &pb::NodeProto) -> Result<(), InferError> {
        let shape: Vec<i64> = match self.sym(node, 0)? {
            Some(Sym::Act(v)) => std::iter::once(BATCH)
                .chain(self.g.values[*v].inner.iter().map(|&d| d as i64))
                .collect(),
            Some(Sym::Known(k)) => k.shape().iter().map(|&d| d as i64).collect(),
            None => return Err(Self::unsupported(node, "missing input")),
        };
        let r = shape.len() as i64;
        let norm = |i: i64| if i < 0 { (i + r).clamp(0, r) } else { i.min(r) };
        let start = norm(attr_i(node, "start", 0)) as usize;
        let end = norm(attr_i(node, "end", r)) as usize;
        let s = shape[start..end.max(start)].to_vec();
        self.set_out(node, Sym::Known(Known::I64(vec![s.len()], s)));
        Ok(())
    }

    /// Constant folding of the small ops that build shapes and constants.
    fn fold(&mut self, node: &pb::NodeProto) -> Result<Known, InferError> {
        let k = |this: &Self, i: usize| -> Result<Known, InferError> {
            this.known(node, i)?
                .ok_or_else(|| Self::unsupported(node, format!("input {i} missing")))
        };
        match node.op_type.as_str() {
            "Constant" => {
                if let Some(a) = attr(node, "value") {
                    let t =
                        a.t.as_ref()
                            .ok_or_else(|| Self::unsupported(node, "value without a tensor"))?;
                    let t =
                        tract_onnx::tensor::load_tensor(&*self.onnx.provider, t, self.model_dir)
                            .map_err(|e| Self::unsupported(node, e.to_string()))?;
                    tensor_to_known(&t).map_err(|e| Self::unsupported(node, e))
                } else if let Some(a) = attr(node, "value_float") {
                    Ok(Known::F32(vec![], vec![a.f]))
                } else if let Some(a) = attr(node, "value_floats") {
                    Ok(Known::F32(vec![a.floats.len()], a.floats.clone()))
                } else if let Some(a) = attr(node, "value_int") {
                    Ok(Known::I64(vec![], vec![a.i]))
                } else if let Some(a) = attr(node, "value_ints") {
                    Ok(Known::I64(vec![a.ints.len()], a.ints.clone()))
                } else {
                    Err(Self::unsupported(
                        node,
                        "Constant without a supported value",
                    ))
                }
            }
            "Cast" => {
                let x = k(self, 0)?;
                let to = attr_i(node, "to", 1);
                // ONNX DataType: 1 float, 10 float16, 11 double, 16 bfloat16; others integers.
                Ok(if matches!(to, 1 | 10 | 11 | 16) {
                    Known::F32(x.shape().to_vec(), x.as_f32())
                } else {
                    Known::I64(x.shape().to_vec(), x.as_i64())
                })
            }
            "Identity" => k(self, 0),
            "Unsqueeze" | "Squeeze" => {
                let x = k(self, 0)?;
                let axes = match self.known(node, 1)? {
                    Some(a) => Some(a.as_i64()),
                    None => attr_ints(node, "axes"),
                };
                let mut shape = x.shape().to_vec();
                if node.op_type == "Unsqueeze" {
                    let axes = axes.ok_or_else(|| Self::unsupported(node, "no axes"))?;
                    let r = (shape.len() + axes.len()) as i64;
                    let mut ax: Vec<usize> = axes
                        .iter()
                        .map(|&a| (if a < 0 { a + r } else { a }) as usize)
                        .collect();
                    ax.sort_unstable();
                    for a in ax {
                        shape.insert(a.min(shape.len()), 1);
                    }
                } else {
                    let r = shape.len() as i64;
                    match axes {
                        Some(axes) => {
                            let mut ax: Vec<usize> = axes
                                .iter()
                                .map(|&a| (if a < 0 { a + r } else { a }) as usize)
                                .collect();
                            ax.sort_unstable();
                            for a in ax.into_iter().rev() {
                                shape.remove(a);
                            }
                        }
                        None => shape.retain(|&d| d != 1),
                    }
                }
                Ok(match x {
                    Known::F32(_, d) => Known::F32(shape, d),
                    Known::I64(_, d) => Known::I64(shape, d),
                })
            }
            "Concat" => {
                let parts: Vec<Known> = (0..node.input.len())
                    .map(|i| k(self, i))
                    .collect::<Result<_, _>>()?;
                if parts.iter().any(|p| p.shape().len() > 1) {
                    return Err(Self::unsupported(
                        node,
                        "only 1-D constants are concatenated",
                    ));
                }
                if parts.iter().all(|p| matches!(p, Known::I64(..))) {
                    let d: Vec<i64> = parts.iter().flat_map(|p| p.as_i64()).collect();
                    Ok(Known::I64(vec![d.len()], d))
                } else {
                    let d: Vec<f32> = parts.iter().flat_map(|p| p.as_f32()).collect();
                    Ok(Known::F32(vec![d.len()], d))
                }
            }
            "Gather" => {
                let x = k(self, 0)?;
                let idx = k(self, 1)?;
                if x.shape().len() != 1 || attr_i(node, "axis", 0) != 0 {
                    return Err(Self::unsupported(node, "only Gather on 1-D constants"));
                }
                let data = x.as_i64();
                let n = data.len() as i64;
                let picked = idx
                    .as_i64()
                    .iter()
                    .map(|&i| {
                        let i = if i < 0 { i + n } else { i };
                        data.get(i as usize).copied()
                    })
                    .collect::<Option<Vec<i64>>>()
                    .ok_or_else(|| Self::unsupported(node, "index out of range"))?;
                let shape = idx.shape().to_vec();
                Ok(match x {
                    Known::F32(..) => Known::F32(shape, picked.iter().map(|&v| v as f32).collect()),
                    Known::I64(..) => Known::I64(shape, picked),
                })
            }
            other => Err(Self::unsupported(
                node,
                format!("op {other} on constants only is not folded by the plan"),
            )),
        }
    }

    fn conv(&mut self, node: &pb::NodeProto) -> Result<(), InferError> {
        let x = self.act(node, 0)?;
        let w = self
            .known(node, 1)?
            .ok_or_else(|| Self::unsupported(node, "no weight"))?;
        let inner = self.inner(x).to_vec();
        let ws = w.shape().to_vec();
        if inner.len() != 3 || ws.len() != 4 {
            return Err(Self::unsupported(
                node,
                format!("only 2-D convolutions (input {inner:?}, weight {ws:?})"),
            ));
        }
        let group = attr_i(node, "group", 1) as usize;
        let cout = ws[0];
        if group == 0
            || !inner[0].is_multiple_of(group)
            || !cout.is_multiple_of(group)
            || ws[1] * group != inner[0]
        {
            return Err(Self::unsupported(
                node,
                format!("group {group} does not match input {inner:?} and weight {ws:?}"),
            ));
        }
        if let Some(ks) = attr_ints(node, "kernel_shape")
            && ks.iter().map(|&d| d as usize).ne(ws[2..].iter().copied())
        {
            return Err(Self::unsupported(
                node,
                "kernel_shape differs from the weight",
            ));
        }
        let win = window(node, &inner, [ws[2], ws[3]], false)?;
        let weight = self.add_const(ws, w.as_f32());
        let bias = match self.known(node, 2)? {
            Some(b) => {
                let d = b.as_f32();
                if d.len() != cout {
                    return Err(Self::unsupported(node, "bias length differs from outputs"));
                }
                Some(self.add_const(vec![cout], d))
            }
            None => None,
        };
        let kind = StepKind::Conv {
            x,
            weight,
            bias,
            residual: None,
            lo: -f32::MAX,
            hi: f32::MAX,
            cout,
            group,
            win,
        };
        let v = self.push(node, kind, vec![cout, win.oh, win.ow]);
        self.set_out(node, Sym::Act(v));
        Ok(())
    }

    /// Per-channel scale and shift (folded BatchNorm, Mul, Add) into a conv that has no
    /// residual or activation yet. Returns false when it cannot.
    fn fold_affine(&mut self, s: usize, scale: Option<&[f32]>, shift: Option<&[f32]>) -> bool {
        let StepKind::Conv {
            weight,
            bias,
            residual: None,
            lo,
            hi,
            cout,
            ..
        } = self.g.steps[s].kind.clone()
        else {
            return false;
        };
        if lo != -f32::MAX || hi != f32::MAX {
            return false;
        }
        let mut b = bias.map_or_else(|| vec![0.0; cout], |b| self.g.consts[b].data.clone());
        if let Some(scale) = scale {
            let w = &mut self.g.consts[weight].data;
            let per = w.len() / cout;
            for (oc, &sc) in scale.iter().enumerate() {
                w[oc * per..(oc + 1) * per]
                    .iter_mut()
                    .for_each(|v| *v *= sc);
                b[oc] *= sc;
            }
        }
        if let Some(shift) = shift {
            b.iter_mut().zip(shift).for_each(|(v, &t)| *v += t);
        }
        let bias = match bias {
            Some(id) => {
                self.g.consts[id].data = b;
                id
            }
            None => self.add_const(vec![cout], b),
        };
        if let StepKind::Conv { bias: slot, .. } = &mut self.g.steps[s].kind {
            *slot = Some(bias);
        }
        true
    }

    fn note_fused(&mut self, s: usize, node: &pb::NodeProto) {
        let st = &mut self.g.steps[s];
        st.ops.push('+');
        st.ops.push_str(&node.op_type);
        let out = st.out;
        self.set_out(node, Sym::Act(out));
    }

    fn batch_norm(&mut self, node: &pb::NodeProto) -> Result<(), InferError> {
        let x = self.act(node, 0)?;
        let get = |this: &Self, i: usize| -> Result<Vec<f32>, InferError> {
            Ok(this
                .known(node, i)?
                .ok_or_else(|| Self::unsupported(node, format!("input {i} missing")))?
                .as_f32())
        };
        let (gamma, beta, mean, var) = (get(self, 1)?, get(self, 2)?, get(self, 3)?, get(self, 4)?);
        let eps = attr_f(node, "epsilon", 1e-5);
        if attr_i(node, "training_mode", 0) != 0 {
            return Err(Self::unsupported(node, "training_mode"));
        }
        let inner = self.inner(x).to_vec();
        let c = *inner
            .first()
            .ok_or_else(|| Self::unsupported(node, "input without channels"))?;
        if [&gamma, &beta, &mean, &var].iter().any(|v| v.len() != c) {
            return Err(Self::unsupported(
                node,
                "parameters do not match the channels",
            ));
        }
        let scale: Vec<f32> = gamma
            .iter()
            .zip(&var)
            .map(|(g, v)| g / (v + eps).sqrt())
            .collect();
        let shift: Vec<f32> = beta
            .iter()
            .zip(&mean)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        if let Some(s) = self.fusable_producer(&node.input[0], x)
            && self.fold_affine(s, Some(&scale), Some(&shift))
        {
            self.note_fused(s, node);
            return Ok(());
        }
        // Standalone: x * scale + shift with per-channel constants.
        let mut cshape = vec![1; inner.len()];
        cshape[0] = c;
        let sc = self.add_const(cshape.clone(), scale);
        let sh = self.add_const(cshape, shift);
        let y = self.binary_step(node, BinaryOp::Mul, Operand::Value(x), Operand::Const(sc))?;
        let z = self.binary_step(node, BinaryOp::Add, Operand::Value(y), Operand::Const(sh))?;
        self.set_out(node, Sym::Act(z));
        Ok(())
    }

    fn activation(&mut self, node: &pb::NodeProto, lo: f32, hi: f32) -> Result<(), InferError> {
        let x = self.act(node, 0)?;
        if let Some(s) = self.fusable_producer(&node.input[0], x)
            && let StepKind::Conv {
                lo: clo, hi: chi, ..
            } = &mut self.g.steps[s].kind
            && *clo == -f32::MAX
            && *chi == f32::MAX
        {
            *clo = lo;
            *chi = hi;
            self.note_fused(s, node);
            return Ok(());
        }
        self.unary(node, UnaryOp::Clamp { lo, hi })
    }

    fn unary(&mut self, node: &pb::NodeProto, op: UnaryOp) -> Result<(), InferError> {
        let x = self.act(node, 0)?;
        let inner = self.inner(x).to_vec();
        let v = self.push(node, StepKind::Unary { op, x }, inner);
        self.set_out(node, Sym::Act(v));
        Ok(())
    }

    fn operand_shape(&self, o: Operand) -> Vec<usize> {
        match o {
            Operand::Value(v) => std::iter::once(1)
                .chain(self.inner(v).iter().copied())
                .collect(),
            Operand::Const(c) => self.g.consts[c].shape.clone(),
        }
    }

    fn binary_step(
        &mut self,
        node: &pb::NodeProto,
        op: BinaryOp,
        a: Operand,
        b: Operand,
    ) -> Result<ValueId, InferError> {
        // Shapes with a batch axis of 1 stand for "batch" on activations.
        let (sa, sb) = (self.operand_shape(a), self.operand_shape(b));
        let full = broadcast_shapes(&sa, &sb).ok_or_else(|| {
            Self::unsupported(node, format!("shapes {sa:?} and {sb:?} do not broadcast"))
        })?;
        if let (Operand::Value(va), Operand::Value(vb)) = (a, b)
            && self.inner(va).len() != self.inner(vb).len()
        {
            // Right-aligning activations of different ranks would pair a batch with a
            // non-batch axis.
            return Err(Self::unsupported(
                node,
                format!("activations of different ranks {sa:?} and {sb:?}"),
            ));
        }
        let rank_of_act = match (a, b) {
            (Operand::Value(v), _) | (_, Operand::Value(v)) => self.inner(v).len() + 1,
            _ => unreachable!("constant-only ops are folded"),
        };
        if full.len() != rank_of_act || full[0] != 1 {
            return Err(Self::unsupported(
                node,
                format!("a constant {sa:?} or {sb:?} would broadcast over the batch axis"),
            ));
        }
        let out_inner = full[1..].to_vec();
        if out_inner.len() > MAX_RANK {
            return Err(Self::unsupported(node, "rank above 7"));
        }
        let strides = |o: Operand, s: &[usize]| -> ([usize; MAX_RANK], usize) {
            match o {
                Operand::Value(v) => (bcast_strides(&s[1..], &out_inner), self.g.values[v].len()),
                Operand::Const(_) => {
                    // A constant of full rank has a leading 1 for the batch axis.
                    let s = if s.len() == full.len() { &s[1..] } else { s };
                    (bcast_strides(s, &out_inner), 0)
                }
            }
        };
        let (a_strides, a_batch) = strides(a, &sa);
        let (b_strides, b_batch) = strides(b, &sb);
        let mut dims = [1; MAX_RANK];
        dims[MAX_RANK - out_inner.len()..].copy_from_slice(&out_inner);
        let bc = Broadcast {
            dims,
            a_strides,
            b_strides,
            a_batch,
            b_batch,
        };
        Ok(self.push(node, StepKind::Binary { op, a, b, bc }, out_inner))
    }

    fn binary(&mut self, node: &pb::NodeProto) -> Result<(), InferError> {
        let op = match node.op_type.as_str() {
            "Add" => BinaryOp::Add,
            "Sub" => BinaryOp::Sub,
            "Mul" => BinaryOp::Mul,
            "Div" => BinaryOp::Div,
            "Pow" => BinaryOp::Pow,
            "Max" => BinaryOp::Max,
            _ => BinaryOp::Min,
        };
        if node.input.len() != 2 {
            return Err(Self::unsupported(node, "exactly two inputs are supported"));
        }
        let operand = |this: &mut Self, i: usize| -> Result<Operand, InferError> {
            Ok(match this.sym(node, i)?.cloned() {
                Some(Sym::Act(v)) => Operand::Value(v),
                Some(Sym::Known(k)) => {
                    let shape = k.shape().to_vec();
                    Operand::Const(this.add_const(shape, k.as_f32()))
                }
                None => return Err(Self::unsupported(node, "missing input")),
            })
        };
        let a = operand(self, 0)?;
        let b = operand(self, 1)?;
        // Fusions into a preceding conv: per-channel constants, residual Add.
        for (ix, (x, other)) in [(a, b), (b, a)].into_iter().enumerate() {
            let Operand::Value(xv) = x else { continue };
            let Some(s) = self.fusable_producer(&node.input[ix], xv) else {
                continue;
            };
            let StepKind::Conv { cout, .. } = self.g.steps[s].kind else {
                continue;
            };
            match (op, other) {
                (BinaryOp::Add | BinaryOp::Mul, Operand::Const(c)) => {
                    let cs = &self.g.consts[c];
                    let per_channel = cs.data.len() == 1
                        || (cs.data.len() == cout
                            && cs.shape.len() >= 3
                            && cs.shape[cs.shape.len() - 3] == cout
                            && cs.shape[cs.shape.len() - 2..] == [1, 1]
                            && cs.shape.len() <= 4);
                    if !per_channel {
                        continue;
                    }
                    let d: Vec<f32> = if cs.data.len() == 1 {
                        vec![cs.data[0]; cout]
                    } else {
                        cs.data.clone()
                    };
                    let ok = if op == BinaryOp::Add {
                        self.fold_affine(s, None, Some(&d))
                    } else {
                        self.fold_affine(s, Some(&d), None)
                    };
                    if ok {
                        self.note_fused(s, node);
                        return Ok(());
                    }
                }
                (BinaryOp::Add, Operand::Value(r)) => {
                    // The residual must be computed before the conv runs, and have its shape.
                    let ready = self.producer.get(&r).is_none_or(|&p| p < s);
                    let same = self.inner(r) == self.inner(xv);
                    if let StepKind::Conv {
                        residual: residual @ None,
                        lo,
                        hi,
                        ..
                    } = &mut self.g.steps[s].kind
                        && ready
                        && same
                        && *lo == -f32::MAX
                        && *hi == f32::MAX
                    {
                        *residual = Some(r);
                        self.note_fused(s, node);
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
        // Pow by a constant 2 is a square: WGSL's pow is undefined for negative bases.
        if op == BinaryOp::Pow
            && let (Operand::Value(_), Operand::Const(c)) = (a, b)
            && self.g.consts[c].data == [2.0]
        {
            return self.unary(node, UnaryOp::Square);
        }
        let v = self.binary_step(node, op, a, b)?;
        self.set_out(node, Sym::Act(v));
        Ok(())
    }

    fn pool(&mut self, node: &pb::NodeProto) -> Result<(), InferError> {
        let x = self.act(node, 0)?;
        let inner = self.inner(x).to_vec();
        let ks = attr_ints(node, "kernel_shape").unwrap_or_default();
        if inner.len() != 3 || ks.len() != 2 {
            return Err(Self::unsupported(node, "only 2-D pooling on N x C x H x W"));
        }
        if node.output.len() > 1 && node.output[1..].iter().any(|o| !o.is_empty()) {
            return Err(Self::unsupported(node, "the Indices output"));
        }
        if attr_i(node, "storage_order", 0) != 0 {
            return Err(Self::unsupported(node, "storage_order"));
        }
        let ceil = attr_i(node, "ceil_mode", 0) != 0;
        let win = window(node, &inner, [ks[0] as usize, ks[1] as usize], ceil)?;
        let kind = if node.op_type == "MaxPool" {
            PoolKind::Max
        } else if attr_i(node, "count_include_pad", 0) != 0 {
            PoolKind::AvgIncludePad
        } else {
            PoolKind::AvgExcludePad
        };
        let v = self.push(
            node,
            StepKind::Pool { kind, x, win },
            vec![inner[0], win.oh, win.ow],
        );
        self.set_out(node, Sym::Act(v));
        Ok(())
    }

    /// The axes a node reduces over, as positions in the full (batch-first) shape.
    fn axes(&self, node: &pb::NodeProto, rank: usize) -> Result<Option<Vec<usize>>, InferError> {
        let axes = match self.known(node, 1)? {
            Some(a) => Some(a.as_i64()),
            None => attr_ints(node, "axes"),
        };
        Ok(axes.map(|a| {
            let mut v: Vec<usize> = a
                .iter()
                .map(|&x| (if x < 0 { x + rank as i64 } else { x }) as usize)
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        }))
    }

    /// Rows x len split of an activation for ops over a suffix of its axes.
    fn rows_split(
        &self,
        node: &pb::NodeProto,
        x: ValueId,
        axes: &[usize],
    ) -> Result<(usize, usize), InferError> {
        let inner = self.inner(x);
        let rank = inner.len() + 1;
        let first = *axes
            .first()
            .ok_or_else(|| Self::unsupported(node, "no axes"))?;
        let suffix = first >= 1 && axes.iter().copied().eq(first..rank);
        if !suffix {
            return Err(Self::unsupported(
                node,
                format!(
                    "axes {axes:?} of a rank-{rank} tensor: only trailing axes after the batch"
                ),
            ));
        }
        let rows = inner[..first - 1].iter().product();
        let len = inner[first - 1..].iter().product();
        Ok((rows, len))
    }

    fn reduce(&mut self, node: &pb::NodeProto) -> Result<(), InferError> {
        let x = self.act(node, 0)?;
        let inner = self.inner(x).to_vec();
        let rank = inner.len() + 1;
        let axes = match self.axes(node, rank)? {
            Some(a) if !a.is_empty() => a,
            _ if attr_i(node, "noop_with_empty_axes", 0) != 0 => {
                return Err(Self::unsupported(node, "noop_with_empty_axes"));
            }
            _ => (0..rank).collect(),
        };
        let (rows, len) = self.rows_split(node, x, &axes)?;
        let op = match node.op_type.as_str() {
            "ReduceMean" => RowOp::Mean,
            "ReduceSum" => RowOp::Sum,
            "ReduceL2" => RowOp::L2,
            _ => RowOp::SumSquare,
        };
        let keep = attr_i(node, "keepdims", 1) != 0;
        let out: Vec<usize> = (1..rank)
            .filter_map(|i| {
                if axes.contains(&i) {
                    keep.then_some(1)
                } else {
                    Some(inner[i - 1])
                }
            })
            .collect();
        self.push_rows(node, op, x, (rows, len), out)
    }

    fn lp_norm(&mut self, node: &pb::NodeProto) -> Result<(), InferError> {
        let x = self.act(node, 0)?;
        let rank = self.inner(x).len() + 1;
        if attr_i(node, "p", 2) != 2 {
            return Err(Self::unsupported(node, "only p = 2"));
        }
        let axis = attr_i(node, "axis", -1);
        let axis = if axis < 0 { axis + rank as i64 } else { axis } as usize;
        if axis != rank - 1 {
            return Err(Self::unsupported(node, "only the last axis"));
        }
        let (rows, len) = self.rows_split(node, x, &[axis])?;
        let inner = self.inner(x).to_vec();
        self.push_rows(node, RowOp::LpNormalize, x, (rows, len), inner)
    }

    /// A row op without scale or bias over `rows` rows of `len` values of `x`, its output of
    /// shape `out` (after the batch).
    fn push_rows(
        &mut self,
        node: &pb::NodeProto,
        op: RowOp,
        x: ValueId,
        (rows, len): (usize, usize),
        out: Vec<usize>,
    ) -> Result<(), InferError> {
        let kind = StepKind::Rows {
            op,
            x,
            rows,
            len,
            scale: None,
            bias: None,
        };
        let v = self.push(node, kind, out);
        self.set_out(node, Sym::Act(v));
        Ok(())
    }

    fn layer_norm(&mut self, node: &pb::NodeProto) -> Result<(), InferError> {
        let x = self.act(node, 0)?;
        let inner = self.inner(x).to_vec();
        let rank = inner.len() + 1;
        if node.output.len() > 1 && node.output[1..].iter().any(|o| !o.is_empty()) {
            return Err(Self::unsupported(node, "Mean / InvStdDev outputs"));
        }
        let axis = attr_i(node, "axis", -1);
        let axis = if axis < 0 { axis + rank as i64 } else { axis } as usize;
        let axes: Vec<usize> = (axis..rank).collect();
        let (rows, len) = self.rows_split(node, x, &axes)?;
        let mut param = |i: usize| -> Result<Option<ConstId>, InferError> {
            match self.known(node, i)? {
                None => Ok(None),
                Some(k) => {
                    let d = k.as_f32();
                    let d = match d.len() {
                        1 => vec![d[0]; len],
                        n if n == len => d,
                        _ => {
                            return Err(Self::unsupported(
                                node,
                                "scale/bias must cover the normalised axes",
                            ));
                        }
                    };
                    Ok(Some(self.add_const(vec![len], d)))
                }
            }
        };
        let scale = param(1)?;
        let bias = param(2)?;
        let eps = attr_f(node, "epsilon", 1e-5);
        let kind = StepKind::Rows {
            op: RowOp::LayerNorm { eps },
            x,
            rows,
            len,
            scale,
            bias,
        };
        let v = self.push(node, kind, inner);
        self.set_out(node, Sym::Act(v));
        Ok(())
    }

    fn matmul_step(
        &mut self,
        node: &pb::NodeProto,
        x: ValueId,
        weight_kn: Vec<f32>,
        k: usize,
        n: usize,
        bias: Option<Vec<f32>>,
    ) -> Result<(), InferError> {
        let inner = self.inner(x).to_vec();
        if inner.last() != Some(&k) {
            return Err(Self::unsupported(
                node,
                format!("input {inner:?} does not end with the {k} inputs of the weight"),
            ));
        }
        let rows = inner[..inner.len() - 1].iter().product();
        let weight = self.add_const(vec![k, n], weight_kn);
        let bias = bias.map(|b| self.add_const(vec![n], b));
        let mut out = inner;
        *out.last_mut().expect("non-empty") = n;
        let kind = StepKind::MatMul {
            x,
            weight,
            bias,
            rows,
            k,
            n,
        };
        let v = self.push(node, kind, out);
        self.set_out(node, Sym::Act(v));
        Ok(())
    }

    fn gemm(&mut self, node: &pb::NodeProto) -> Result<(), InferError> {
        let x = self.act(node, 0)?;
        if attr_i(node, "transA", 0) != 0 {
            return Err(Self::unsupported(
                node,
                "transA (the batch axis comes first)",
            ));
        }
        if self.inner(x).len() != 1 {
            return Err(Self::unsupported(node, "input must be 2-D"));
        }
        let w = self
            .known(node, 1)?
            .ok_or_else(|| Self::unsupported(node, "no B"))?;
        let ws = w.shape().to_vec();
        if ws.len() != 2 {
            return Err(Self::unsupported(node, "B must be 2-D"));
        }
        let (alpha, beta) = (attr_f(node, "alpha", 1.0), attr_f(node, "beta", 1.0));
        let tb = attr_i(node, "transB", 0) != 0;
        let (k, n) = if tb { (ws[1], ws[0]) } else { (ws[0], ws[1]) };
        let d = w.as_f32();
        let mut kn = vec![0.0; k * n];
        for kk in 0..k {
            for j in 0..n {
                let v = if tb { d[j * k + kk] } else { d[kk * n + j] };
                kn[kk * n + j] = alpha * v;
            }
        }
        let bias = match self.known(node, 2)? {
            None => None,
            Some(c) => {
                let cs = c.shape().to_vec();
                let cd = c.as_f32();
                let b = match cd.len() {
                    1 => vec![cd[0] * beta; n],
                    l if l == n && (cs.len() == 1 || cs[0] == 1) => {
                        cd.iter().map(|v| v * beta).collect()
                    }
                    _ => return Err(Self::unsupported(node, format!("C of shape {cs:?}"))),
                };
                Some(b)
            }
        };
        self.matmul_step(node, x, kn, k, n, bias)
    }

    fn matmul(&mut self, node: &pb::NodeProto) -> Result<(), InferError> {
        let x = self.act(node, 0)?;
        let w = match self.sym(node, 1)? {
            Some(Sym::Known(k)) => k.clone(),
            _ => {
                return Err(Self::unsupported(
                    node,
                    "MatMul needs a constant right-hand side (activation x activation is not supported)",
                ));
            }
        };
        let ws = w.shape().to_vec();
        if ws.len() != 2 {
            return Err(Self::unsupported(node, "the constant must be 2-D"));
        }
        self.matmul_step(node, x, w.as_f32(), ws[0], ws[1], None)
    }

    /// Expand (as in F.normalize's `clamp_min(eps).expand_as(x)`): adding zeros of the target
    /// shape broadcasts like Expand does.
    fn expand(&mut self, node: &pb::NodeProto) -> Result<(), InferError> {
        let x = self.act(node, 0)?;
        let t = self
            .known(node, 1)?
            .ok_or_else(|| Self::unsupported(node, "no shape"))?
            .as_i64();
        let rank = self.inner(x).len() + 1;
        if t.len() > rank && t.len() > 1 || t.is_empty() {
            return Err(Self::unsupported(node, format!("target shape {t:?}")));
        }
        // Right-aligned like numpy; a leading batch entry (or 1) is left to the activation.
        let mut dims: Vec<i64> = t.clone();
        if dims.len() == rank {
            if !(dims[0] == BATCH || dims[0] == 1) {
                return Err(Self::unsupported(
                    node,
                    format!("target shape {t:?} changes the batch axis"),
                ));
            }
            dims.remove(0);
        }
        if dims.iter().any(|&d| d < 1) {
            return Err(Self::unsupported(node, format!("target shape {t:?}")));
        }
        let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
        let zeros = self.add_const(shape.clone(), vec![0.0; shape.iter().product()]);
        let v = self.binary_step(
            node,
            BinaryOp::Add,
            Operand::Value(x),
            Operand::Const(zeros),
        )?;
        self.set_out(node, Sym::Act(v));
        Ok(())
    }

    /// Reshape-like ops: the output is a view of the input's storage.
    fn view(&mut self, node: &pb::NodeProto) -> Result<(), InferError> {
        let x = self.act(node, 0)?;
        let inner = self.inner(x).to_vec();
        let len: usize = inner.iter().product();
        let rank = inner.len() + 1;
        let out: Vec<usize> = match node.op_type.as_str() {
            "Identity" | "Dropout" => inner.clone(),
            "Flatten" => {
                let axis = attr_i(node, "axis", 1);
                let axis = if axis < 0 { axis + rank as i64 } else { axis };
                if axis != 1 {
                    return Err(Self::unsupported(node, "only axis 1 (it keeps the batch)"));
                }
                vec![len]
            }
            "Reshape" => {
                let t = self
                    .known(node, 1)?
                    .ok_or_else(|| Self::unsupported(node, "no shape"))?
                    .as_i64();
                if attr_i(node, "allowzero", 0) != 0 && t.contains(&0) {
                    return Err(Self::unsupported(node, "allowzero with a zero dimension"));
                }
                let Some((&first, rest)) = t.split_first() else {
                    return Err(Self::unsupported(node, "empty shape"));
                };
                let mut dims: Vec<i64> = rest
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| {
                        if d == 0 {
                            inner.get(i).map_or(-2, |&v| v as i64)
                        } else {
                            d
                        }
                    })
                    .collect();
                let holes = dims.iter().filter(|&&d| d == -1).count();
                let batch_first = first == 0 || first == BATCH || (first == -1 && holes == 0);
                if !batch_first || holes > 1 || dims.iter().any(|&d| d < -1 || d == BATCH) {
                    return Err(Self::unsupported(
                        node,
                        format!("target shape {t:?}: the batch axis must stay first"),
                    ));
                }
                let known: i64 = dims.iter().filter(|&&d| d > 0).product();
                if holes == 1 {
                    let fill = if known > 0 { len as i64 / known } else { 0 };
                    dims.iter_mut()
                        .filter(|d| **d == -1)
                        .for_each(|d| *d = fill);
                }
                dims.iter().map(|&d| d as usize).collect()
            }
            "Squeeze" | "Unsqueeze" => {
                let axes = self
                    .axes(
                        node,
                        if node.op_type == "Squeeze" {
                            rank
                        } else {
                            rank + self.known(node, 1)?.map_or_else(
                                || attr_ints(node, "axes").map_or(0, |a| a.len()),
                                |k| k.as_i64().len(),
                            )
                        },
                    )?
                    .ok_or_else(|| Self::unsupported(node, "no axes"))?;
                if axes.contains(&0) {
                    return Err(Self::unsupported(node, "the batch axis"));
                }
                let mut full: Vec<usize> = std::iter::once(0).chain(inner.clone()).collect();
                if node.op_type == "Squeeze" {
                    for &a in axes.iter().rev() {
                        if full.get(a) != Some(&1) {
                            return Err(Self::unsupported(node, "squeezing an axis that is not 1"));
                        }
                        full.remove(a);
                    }
                } else {
                    for &a in &axes {
                        full.insert(a.min(full.len()), 1);
                    }
                }
                full[1..].to_vec()
            }
            _ => unreachable!("view ops are listed by the caller"),
        };
        if out.iter().product::<usize>() != len {
            return Err(Self::unsupported(
                node,
                format!("cannot view {inner:?} as {out:?}"),
            ));
        }
        let root = self.g.values[x].root;
        let v = self.new_value(out);
        self.g.values[v].root = root;
        // A view shares its root's producer, but fusing through it is refused (see fusable_producer).
        if let Some(&p) = self.producer.get(&x) {
            self.producer.insert(v, p);
        }
        self.set_out(node, Sym::Act(v));
        Ok(())
    }
}

/// The model's one input: its name, its batch when fixed, and its shape without the batch.
#[derive(Debug, Clone)]
pub(crate) struct InputSpec {
    pub name: String,
    pub fixed_batch: Option<usize>,
    pub inner: Vec<usize>,
}

pub(crate) fn input_spec(
    graph: &pb::GraphProto,
    hw: Option<(usize, usize)>,
) -> Result<InputSpec, InferError> {
    let inits: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|i| i.name.as_str()).collect();
    let real_inputs: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !inits.contains(i.name.as_str()))
        .collect();
    let [input] = real_inputs[..] else {
        return Err(InferError::unsupported(
            "graph",
            "inputs",
            format!(
                "the plan takes exactly one input, the model has {}",
                real_inputs.len()
            ),
        ));
    };
    let dims: Vec<Option<usize>> = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => {
            if t.elem_type != 1 {
                return Err(InferError::unsupported(
                    &input.name,
                    "input",
                    "the input must be float32",
                ));
            }
            t.shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match d.value {
                            Some(pb::tensor_shape_proto::dimension::Value::DimValue(v))
                                if v > 0 =>
                            {
                                Some(v as usize)
                            }
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default()
        }
        _ => {
            return Err(InferError::unsupported(
                &input.name,
                "input",
                "not a tensor",
            ));
        }
    };
    if dims.len() < 2 {
        return Err(InferError::unsupported(
            &input.name,
            "input",
            "the input needs a batch axis and at least one more",
        ));
    }
    // The inner axes as the errors name them: `3x224x224`, a symbolic one as `?`.
    let shown = dims[1..]
        .iter()
        .map(|d| d.map_or("?".to_owned(), |d| d.to_string()))
        .collect::<Vec<_>>()
        .join("x");
    if hw.is_some() && dims.len() != 4 {
        return Err(InferError::Input(format!(
            "an input size (height x width) was given, but the model's input is (batch, {shown}), \
             not an image batch (batch, channels, height, width)"
        )));
    }
    let mut inner = Vec::new();
    for (i, d) in dims[1..].iter().enumerate() {
        let from_hw = hw.and_then(|(h, w)| match (dims.len(), i) {
            (4, 1) => Some(h),
            (4, 2) => Some(w),
            _ => None,
        });
        match (d, from_hw) {
            (Some(d), Some(x)) if *d != x => {
                return Err(InferError::Input(format!(
                    "the model's input is fixed at (batch, {shown}), not {x} on axis {}",
                    i + 1
                )));
            }
            (Some(d), _) => inner.push(*d),
            (None, Some(x)) => inner.push(x),
            (None, None) => {
                return Err(InferError::Input(format!(
                    "the model's input is (batch, {shown}): axis {} is symbolic, give the input size",
                    i + 1
                )));
            }
        }
    }
    Ok(InputSpec {
        name: input.name.clone(),
        fixed_batch: dims[0],
        inner,
    })
}

/// Lower an ONNX model into plan steps. `hw` gives the spatial size when the model leaves it
/// symbolic.
pub(crate) fn lower(
    onnx: &tract_onnx::model::Onnx,
    proto: &pb::ModelProto,
    model_path: &Path,
    hw: Option<(usize, usize)>,
) -> Result<Graph, InferError> {
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| InferError::Tract("model without a graph".into()))?;
    let dir = model_path.parent().and_then(|p| p.to_str());
    let mut syms = HashMap::new();
    for init in &graph.initializer {
        let t = tract_onnx::tensor::load_tensor(&*onnx.provider, init, dir)
            .map_err(|e| InferError::unsupported(&init.name, "initializer", e.to_string()))?;
        let k = tensor_to_known(&t)
            .map_err(|e| InferError::unsupported(&init.name, "initializer", e))?;
        syms.insert(init.name.clone(), Sym::Known(k));
    }
    let spec = input_spec(graph, hw)?;
    let inner = spec.inner.clone();
    let mut uses = HashMap::<String, usize>::new();
    for n in &graph.node {
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            *uses.entry(i.clone()).or_default() += 1;
        }
    }
    let graph_outputs: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    for o in &graph_outputs {
        *uses.entry(o.clone()).or_default() += 1;
    }
    let output_name = graph_outputs
        .first()
        .cloned()
        .ok_or_else(|| InferError::Tract("model without outputs".into()))?;
    let mut l = Lowering {
        model_dir: dir,
        onnx,
        syms,
        uses,
        producer: HashMap::new(),
        graph_outputs,
        g: Graph {
            values: Vec::new(),
            consts: Vec::new(),
            steps: Vec::new(),
            input: 0,
            output: 0,
        },
    };
    let input_id = l.new_value(inner);
    l.g.input = input_id;
    l.syms.insert(spec.name.clone(), Sym::Act(input_id));
    for node in &graph.node {
        // Nodes only feeding outputs other than the first still have to be valid: lower all.
        let mut node = node.clone();
        if node.name.is_empty() {
            node.name = node.output.first().cloned().unwrap_or_default();
        }
        l.lower_node(&node)?;
    }
    match l.syms.get(&output_name) {
        Some(Sym::Act(v)) => l.g.output = *v,
        _ => {
            return Err(InferError::unsupported(
                &output_name,
                "output",
                "the first output is not computed from the input",
            ));
        }
    }
    Ok(l.g)
}
