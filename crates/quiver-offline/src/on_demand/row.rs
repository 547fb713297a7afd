//! One-row evaluation of an on-demand view's expressions on plain values.
//!
//! A lookup of one entity evaluates the view for one row. DataFusion evaluates each
//! expression node on Arrow arrays, allocating a one-row array (and, for functions, their
//! argument fields) per node per call; for a handful of expressions that is most of what
//! an on-demand view adds to a lookup. A [`RowProgram`] evaluates the same expressions
//! on [`Value`]s instead. It is compiled from the DataFusion physical expressions (after
//! coercion and simplification), so it sees exactly what the export evaluates, and covers
//! what request-time features are mostly made of: arithmetic, comparisons, `AND`/`OR`/
//! `NOT`, `CASE` (and `COALESCE`, which simplifies into one), `NULLIF`, `IS [NOT] NULL`,
//! negation and integer-to-float casts, over `BIGINT`, `DOUBLE` and `BOOLEAN`. A program
//! with anything else is not compiled this way (`None`) and always runs on DataFusion.
//!
//! The values are DataFusion's, operator by operator: IEEE floats, float comparisons in
//! total order as Arrow's kernels do (with `-0.0 = 0.0` where DataFusion normalizes
//! zeros), three-valued logic, `AND`/`OR` skipping their right side where DataFusion
//! does. Where DataFusion raises an error or its answer depends on a setting — integer
//! overflow (wrapping or an error), division or remainder by zero — the row program
//! gives up ([`Fallback`]) and the caller evaluates the row on DataFusion, so errors and
//! edge cases are exactly the export's. `tests/on_demand_rows.rs` holds the two
//! evaluations against each other on random expressions and edge values.

use std::cmp::Ordering;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array};
use arrow::datatypes::{DataType, Float64Type, Int64Type, Schema};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::{
    BinaryExpr, CaseExpr, CastExpr, Column, IsNotNullExpr, IsNullExpr, Literal, NegativeExpr,
    NotExpr,
};

/// One value of a row: the types a [`RowProgram`] evaluates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
}

/// The row is evaluated on DataFusion instead (an error or an edge case there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fallback;

type Evaluated = Result<Value, Fallback>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Int,
    Float,
}

impl Kind {
    fn of(data_type: &DataType) -> Option<Kind> {
        match data_type {
            DataType::Boolean => Some(Kind::Bool),
            DataType::Int64 => Some(Kind::Int),
            DataType::Float64 => Some(Kind::Float),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Arithmetic {
    Add,
    Subtract,
    Multiply,
    Divide,
    Remainder,
}

#[derive(Debug, Clone, Copy)]
enum Comparison {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    /// `IS DISTINCT FROM`: NULL is a value (equal to NULL), never a NULL result.
    Distinct,
    NotDistinct,
}

#[derive(Debug)]
enum Node {
    /// The input batch's column at this index.
    Input(usize),
    Literal(Value),
    Arithmetic(Arithmetic, Box<Node>, Box<Node>),
    Compare(Comparison, Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Negative(Box<Node>),
    IsNull(Box<Node>),
    IsNotNull(Box<Node>),
    IntToFloat(Box<Node>),
    NullIf(Box<Node>, Box<Node>),
    Case {
        base: Option<Box<Node>>,
        branches: Vec<(Node, Node)>,
        otherwise: Option<Box<Node>>,
    },
}

/// An on-demand view's outputs compiled for one-row evaluation.
#[derive(Debug)]
pub struct RowProgram {
    /// The input batch's column types.
    inputs: Vec<Kind>,
    outputs: Vec<(Kind, Node)>,
}

impl RowProgram {
    /// Compiles `outputs` over `schema` (the input batch); `None` when any expression,
    /// input or output is outside what a row program evaluates.
    pub fn compile(schema: &Schema, outputs: &[Arc<dyn PhysicalExpr>]) -> Option<RowProgram> {
        let inputs = schema
            .fields()
            .iter()
            .map(|f| Kind::of(f.data_type()))
            .collect::<Option<Vec<_>>>()?;
        let outputs = outputs
            .iter()
            .map(|expr| {
                let kind = Kind::of(&expr.data_type(schema).ok()?)?;
                Some((kind, compile(schema, expr)?))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(RowProgram { inputs, outputs })
    }

    /// Reads row `row` of the input columns (typed as compiled, else [`Fallback`]).
    pub fn read(&self, columns: &[ArrayRef], row: usize) -> Result<Vec<Value>, Fallback> {
        self.inputs
            .iter()
            .zip(columns)
            .map(|(kind, column)| read(*kind, column, row))
            .collect()
    }

    /// Every output for one row of input values, as one-row arrays of the outputs' types.
    pub fn evaluate(&self, row: &[Value]) -> Result<Vec<ArrayRef>, Fallback> {
        self.outputs
            .iter()
            .map(|(kind, node)| Ok(one_row_array(*kind, node.evaluate(row)?)))
            .collect()
    }
}

fn read(kind: Kind, column: &ArrayRef, row: usize) -> Evaluated {
    if column.is_null(row) {
        return Ok(Value::Null);
    }
    Ok(match (kind, column.data_type()) {
        (Kind::Bool, DataType::Boolean) => Value::Bool(column.as_boolean().value(row)),
        (Kind::Int, DataType::Int64) => Value::Int(column.as_primitive::<Int64Type>().value(row)),
        (Kind::Float, DataType::Float64) => {
            Value::Float(column.as_primitive::<Float64Type>().value(row))
        }
        _ => return Err(Fallback),
    })
}

fn one_row_array(kind: Kind, value: Value) -> ArrayRef {
    match (kind, value) {
        (Kind::Bool, Value::Bool(b)) => Arc::new(BooleanArray::from(vec![b])),
        (Kind::Bool, _) => Arc::new(BooleanArray::from(vec![None::<bool>])),
        (Kind::Int, Value::Int(i)) => Arc::new(Int64Array::from(vec![i])),
        (Kind::Int, _) => Arc::new(Int64Array::from(vec![None::<i64>])),
        (Kind::Float, Value::Float(f)) => Arc::new(Float64Array::from(vec![f])),
        (Kind::Float, _) => Arc::new(Float64Array::from(vec![None::<f64>])),
    }
}

/// The node of `expr`, whose own type and whose children's types must be ones a row
/// program evaluates (a typed NULL literal is `Value::Null`).
fn compile(schema: &Schema, expr: &Arc<dyn PhysicalExpr>) -> Option<Node> {
    let kind = |e: &Arc<dyn PhysicalExpr>| Kind::of(&e.data_type(schema).ok()?);
    let child = |e: &Arc<dyn PhysicalExpr>| compile(schema, e).map(Box::new);
    let any: &dyn PhysicalExpr = expr.as_ref();
    kind(expr)?;
    if let Some(column) = any.downcast_ref::<Column>() {
        return Some(Node::Input(column.index()));
    }
    if let Some(literal) = any.downcast_ref::<Literal>() {
        return Some(Node::Literal(match literal.value() {
            ScalarValue::Boolean(v) => v.map_or(Value::Null, Value::Bool),
            ScalarValue::Int64(v) => v.map_or(Value::Null, Value::Int),
            ScalarValue::Float64(v) => v.map_or(Value::Null, Value::Float),
            _ => return None,
        }));
    }
    if let Some(binary) = any.downcast_ref::<BinaryExpr>() {
        let (left, right) = (binary.left(), binary.right());
        let operands = kind(left)?;
        if kind(right)? != operands {
            return None;
        }
        let (l, r) = (child(left)?, child(right)?);
        let numeric = matches!(operands, Kind::Int | Kind::Float);
        let arithmetic = match binary.op() {
            Operator::Plus => Some(Arithmetic::Add),
            Operator::Minus => Some(Arithmetic::Subtract),
            Operator::Multiply => Some(Arithmetic::Multiply),
            Operator::Divide => Some(Arithmetic::Divide),
            Operator::Modulo => Some(Arithmetic::Remainder),
            _ => None,
        };
        if let Some(op) = arithmetic {
            return numeric.then_some(Node::Arithmetic(op, l, r));
        }
        return match binary.op() {
            Operator::And | Operator::Or if operands != Kind::Bool => None,
            Operator::And => Some(Node::And(l, r)),
            Operator::Or => Some(Node::Or(l, r)),
            Operator::Eq => Some(Node::Compare(Comparison::Eq, l, r)),
            Operator::NotEq => Some(Node::Compare(Comparison::NotEq, l, r)),
            Operator::Lt => Some(Node::Compare(Comparison::Lt, l, r)),
            Operator::LtEq => Some(Node::Compare(Comparison::LtEq, l, r)),
            Operator::Gt => Some(Node::Compare(Comparison::Gt, l, r)),
            Operator::GtEq => Some(Node::Compare(Comparison::GtEq, l, r)),
            Operator::IsDistinctFrom => Some(Node::Compare(Comparison::Distinct, l, r)),
            Operator::IsNotDistinctFrom => Some(Node::Compare(Comparison::NotDistinct, l, r)),
            _ => None,
        };
    }
    if let Some(not) = any.downcast_ref::<NotExpr>() {
        return (kind(not.arg())? == Kind::Bool).then_some(Node::Not(child(not.arg())?));
    }
    if let Some(negative) = any.downcast_ref::<NegativeExpr>() {
        return (kind(negative.arg())? != Kind::Bool)
            .then_some(Node::Negative(child(negative.arg())?));
    }
    if let Some(is_null) = any.downcast_ref::<IsNullExpr>() {
        return Some(Node::IsNull(child(is_null.arg())?));
    }
    if let Some(is_not_null) = any.downcast_ref::<IsNotNullExpr>() {
        return Some(Node::IsNotNull(child(is_not_null.arg())?));
    }
    if let Some(cast) = any.downcast_ref::<CastExpr>() {
        return match (kind(cast.expr())?, Kind::of(cast.cast_type())?) {
            (from, to) if from == to => compile(schema, cast.expr()),
            (Kind::Int, Kind::Float) => Some(Node::IntToFloat(child(cast.expr())?)),
            _ => None,
        };
    }
    if let Some(case) = any.downcast_ref::<CaseExpr>() {
        let result = kind(expr)?;
        let base = match case.expr() {
            Some(base) => Some((kind(base)?, child(base)?)),
            None => None,
        };
        let condition = base.as_ref().map_or(Kind::Bool, |(k, _)| *k);
        let mut branches = Vec::with_capacity(case.when_then_expr().len());
        for (when, then) in case.when_then_expr() {
            if kind(when)? != condition || kind(then)? != result {
                return None;
            }
            branches.push((compile(schema, when)?, compile(schema, then)?));
        }
        let otherwise = match case.else_expr() {
            Some(e) if kind(e)? != result => return None,
            Some(e) => Some(child(e)?),
            None => None,
        };
        return Some(Node::Case {
            base: base.map(|(_, node)| node),
            branches,
            otherwise,
        });
    }
    if let Some(function) = any.downcast_ref::<ScalarFunctionExpr>()
        && function.name() == "nullif"
        && let [value, compared] = function.args()
        && kind(value)? == kind(compared)?
    {
        return Some(Node::NullIf(child(value)?, child(compared)?));
    }
    None
}

impl Node {
    fn evaluate(&self, row: &[Value]) -> Evaluated {
        Ok(match self {
            Node::Input(index) => row[*index],
            Node::Literal(value) => *value,
            Node::Arithmetic(op, left, right) => {
                arithmetic(*op, left.evaluate(row)?, right.evaluate(row)?)?
            }
            Node::Compare(op, left, right) => {
                let (left, right) = (left.evaluate(row)?, right.evaluate(row)?);
                let both_null = left == Value::Null && right == Value::Null;
                op.apply(compare(left, right, Zeros::Equal)?, both_null)
            }
            Node::And(left, right) => logic(left, right, row, false)?,
            Node::Or(left, right) => logic(left, right, row, true)?,
            Node::Not(arg) => match arg.evaluate(row)? {
                Value::Bool(b) => Value::Bool(!b),
                _ => Value::Null,
            },
            Node::Negative(arg) => match arg.evaluate(row)? {
                Value::Int(i) => Value::Int(i.checked_neg().ok_or(Fallback)?),
                Value::Float(f) => Value::Float(-f),
                _ => Value::Null,
            },
            Node::IsNull(arg) => Value::Bool(arg.evaluate(row)? == Value::Null),
            Node::IsNotNull(arg) => Value::Bool(arg.evaluate(row)? != Value::Null),
            Node::IntToFloat(arg) => match arg.evaluate(row)? {
                Value::Int(i) => Value::Float(i as f64),
                _ => Value::Null,
            },
            Node::NullIf(value, compared) => {
                let value = value.evaluate(row)?;
                match compare(value, compared.evaluate(row)?, Zeros::Distinct)? {
                    Some(Ordering::Equal) => Value::Null,
                    _ => value,
                }
            }
            Node::Case {
                base,
                branches,
                otherwise,
            } => {
                let base = match base {
                    Some(base) => Some(base.evaluate(row)?),
                    None => None,
                };
                for (when, then) in branches {
                    let when = when.evaluate(row)?;
                    let chosen = match base {
                        None => when == Value::Bool(true),
                        Some(base) => {
                            compare(base, when, Zeros::Distinct)? == Some(Ordering::Equal)
                        }
                    };
                    if chosen {
                        return then.evaluate(row);
                    }
                }
                match otherwise {
                    Some(otherwise) => otherwise.evaluate(row)?,
                    None => Value::Null,
                }
            }
        })
    }
}

/// `AND` (`decisive` false) or `OR` (`decisive` true) in three-valued logic. The right
/// side is skipped only where DataFusion skips it: a non-NULL left side that decides.
fn logic(left: &Node, right: &Node, row: &[Value], decisive: bool) -> Evaluated {
    let left = left.evaluate(row)?;
    if left == Value::Bool(decisive) {
        return Ok(left);
    }
    Ok(match (left, right.evaluate(row)?) {
        (_, Value::Bool(b)) if b == decisive => Value::Bool(b),
        (Value::Bool(_), right) => right,
        _ => Value::Null,
    })
}

/// Arrow's kernels: integers wrap or fail on overflow (per session setting) — either way
/// DataFusion decides, so overflow falls back; a zero divisor is an error there.
fn arithmetic(op: Arithmetic, left: Value, right: Value) -> Evaluated {
    Ok(match (left, right) {
        (Value::Int(l), Value::Int(r)) => Value::Int(
            match op {
                Arithmetic::Add => l.checked_add(r),
                Arithmetic::Subtract => l.checked_sub(r),
                Arithmetic::Multiply => l.checked_mul(r),
                Arithmetic::Divide => l.checked_div(r),
                Arithmetic::Remainder => l.checked_rem(r),
            }
            .ok_or(Fallback)?,
        ),
        (Value::Float(l), Value::Float(r)) => Value::Float(match op {
            Arithmetic::Add => l + r,
            Arithmetic::Subtract => l - r,
            Arithmetic::Multiply => l * r,
            Arithmetic::Divide | Arithmetic::Remainder if r == 0.0 => return Err(Fallback),
            Arithmetic::Divide => l / r,
            Arithmetic::Remainder => l % r,
        }),
        (Value::Null, _) | (_, Value::Null) => Value::Null,
        _ => return Err(Fallback),
    })
}

/// How `-0.0` compares with `0.0`: DataFusion's comparison operators take them as equal,
/// its `NULLIF` and `CASE <base> WHEN` compare with Arrow's kernel, which does not.
#[derive(Debug, Clone, Copy)]
enum Zeros {
    Equal,
    Distinct,
}

/// Arrow's comparison kernels: floats in total order (NaN equal to itself and greater
/// than everything; `-0.0 < 0.0` unless `zeros` says equal), `false < true`; `None` when
/// either side is NULL.
fn compare(left: Value, right: Value, zeros: Zeros) -> Result<Option<Ordering>, Fallback> {
    let zero = |f: f64| match zeros {
        Zeros::Equal if f == 0.0 => 0.0,
        _ => f,
    };
    Ok(match (left, right) {
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::Int(l), Value::Int(r)) => Some(l.cmp(&r)),
        (Value::Float(l), Value::Float(r)) => Some(zero(l).total_cmp(&zero(r))),
        (Value::Bool(l), Value::Bool(r)) => Some(l.cmp(&r)),
        _ => return Err(Fallback),
    })
}

impl Comparison {
    /// The result for two values that compare as `ordering` (`None`: one is NULL).
    fn apply(self, ordering: Option<Ordering>, both_null: bool) -> Value {
        let Some(ordering) = ordering else {
            return match self {
                Comparison::Distinct => Value::Bool(!both_null),
                Comparison::NotDistinct => Value::Bool(both_null),
                _ => Value::Null,
            };
        };
        Value::Bool(match self {
            Comparison::Eq | Comparison::NotDistinct => ordering.is_eq(),
            Comparison::NotEq | Comparison::Distinct => ordering.is_ne(),
            Comparison::Lt => ordering.is_lt(),
            Comparison::LtEq => ordering.is_le(),
            Comparison::Gt => ordering.is_gt(),
            Comparison::GtEq => ordering.is_ge(),
        })
    }
}
