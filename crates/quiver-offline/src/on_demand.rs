//! On-demand views: SQL expressions over request fields and other views' features,
//! evaluated per request online and per spine row in exports by the same compiled
//! expressions, so that training and serving cannot drift apart.
//!
//! - [`analyze`] checks an on-demand view's query at `apply` (a projection over its
//!   inputs: no filters, aggregates, joins, window functions, subqueries or
//!   non-deterministic functions), types its outputs and records which input columns the
//!   expressions read;
//! - [`OnDemandProgram::compile`] plans the query once per catalog into DataFusion
//!   physical expressions over one *input batch* (the columns the expressions read, one
//!   row per entity row or spine row), and [`OnDemandProgram::evaluate`] runs them — one
//!   row on plain values when it can ([`row`]), anything else on DataFusion.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::TableReference;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr as LogicalExpr, LogicalPlan, Volatility};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    Expr, GroupByExpr, SelectItem, SetExpr, Spanned, Statement, TableFactor, Visit, Visitor,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use quiver_core::model::{Column, OnDemandInput, OnDemandInputKind, OnDemandSchema};

use crate::{Error, Result};

pub mod row;

const ALLOWED: &str = "an on-demand view is SELECT <expression> AS <name>, … FROM <inputs>: request sources and feature views listed by name, every output a scalar expression (arithmetic, CASE, COALESCE, string and math functions) over their columns";

/// An input as `apply` knows it: every column it offers, typed.
#[derive(Debug, Clone)]
pub struct AvailableInput {
    pub name: String,
    pub kind: OnDemandInputKind,
    pub columns: Vec<(String, DataType)>,
}

fn invalid(view: &str, at: Option<(u64, u64)>, message: impl Into<String>) -> Error {
    Error::InvalidViewQuery {
        view: view.to_string(),
        message: message.into(),
        line: at.map(|a| a.0),
        column: at.map(|a| a.1),
        help: ALLOWED.to_string(),
    }
}

fn at(node: &impl Spanned) -> Option<(u64, u64)> {
    let span = node.span();
    (span.start.line > 0).then_some((span.start.line, span.start.column))
}

/// A session whose tables are the inputs (empty, typed: planning needs only schemas).
fn session(
    inputs: impl Iterator<Item = (String, Vec<(String, DataType)>)>,
) -> Result<SessionContext> {
    let ctx = SessionContext::new();
    for (name, columns) in inputs {
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|(c, t)| Field::new(c, t.clone(), true))
                .collect::<Vec<_>>(),
        ));
        let table = MemTable::try_new(schema, vec![vec![]])?;
        ctx.register_table(TableReference::bare(name), Arc::new(table))?;
    }
    Ok(ctx)
}

/// The query's projection: its output expressions over the inputs' columns.
async fn projection(
    ctx: &SessionContext,
    view: &str,
    query: &str,
) -> Result<datafusion::logical_expr::Projection> {
    let plan =
        ctx.state()
            .create_logical_plan(query)
            .await
            .map_err(|e| Error::UnplannableView {
                view: view.to_string(),
                message: e.strip_backtrace().to_string(),
            })?;
    match plan {
        LogicalPlan::Projection(projection) => Ok(projection),
        other => Err(invalid(
            view,
            None,
            format!(
                "the query plans to {} instead of a projection",
                other.display()
            ),
        )),
    }
}

/// Checks an on-demand view's query and types it: the features (its outputs) and, per
/// input in `FROM` order, the columns its expressions read.
pub async fn analyze(
    view: &str,
    query: &str,
    inputs: &[AvailableInput],
) -> Result<(Vec<Column>, OnDemandSchema)> {
    check_shape(view, query)?;
    let ctx = session(inputs.iter().map(|i| (i.name.clone(), i.columns.clone())))?;
    let state = ctx.state();
    let refused = |name: &str| -> Option<String> {
        if state.aggregate_functions().contains_key(name)
            || state.window_functions().contains_key(name)
        {
            return Some(format!(
                "aggregate `{}` in an on-demand view: it computes one row from one request",
                name.to_ascii_uppercase()
            ));
        }
        let volatile = state
            .scalar_functions()
            .get(name)
            .is_some_and(|f| f.signature().volatility != Volatility::Immutable);
        volatile.then(|| non_deterministic(name))
    };
    check_functions(view, query, &refused)?;
    let projection = projection(&ctx, view, query).await?;
    let mut used: BTreeSet<(String, String)> = BTreeSet::new();
    for expr in &projection.expr {
        check_deterministic(view, expr)?;
        for column in expr.column_refs() {
            let input = match &column.relation {
                Some(relation) => relation.table().to_string(),
                None => inputs
                    .iter()
                    .find(|i| i.columns.iter().any(|(c, _)| *c == column.name))
                    .map(|i| i.name.clone())
                    .unwrap_or_default(),
            };
            used.insert((input, column.name.clone()));
        }
    }
    let features = projection
        .schema
        .fields()
        .iter()
        .map(|f| Column {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: true,
        })
        .collect();
    let inputs = inputs
        .iter()
        .map(|input| OnDemandInput {
            name: input.name.clone(),
            kind: input.kind,
            columns: input
                .columns
                .iter()
                .filter(|(c, _)| used.contains(&(input.name.clone(), c.clone())))
                .map(|(c, t)| Column {
                    name: c.clone(),
                    data_type: t.to_string(),
                    nullable: true,
                })
                .collect(),
            identity: None,
        })
        .collect();
    Ok((features, OnDemandSchema { inputs }))
}

/// A projection over inputs listed by name, and nothing else.
fn check_shape(view: &str, query: &str) -> Result<()> {
    let statements = Parser::parse_sql(&GenericDialect {}, query)
        .map_err(|e| invalid(view, None, format!("the query does not parse: {e}")))?;
    let [Statement::Query(query)] = statements.as_slice() else {
        return Err(invalid(view, None, "the query must be one SELECT"));
    };
    if query.with.is_some() || query.order_by.is_some() || query.limit_clause.is_some() {
        return Err(invalid(
            view,
            at(&**query),
            "WITH, ORDER BY and LIMIT are not allowed in an on-demand view: it answers one row per request",
        ));
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(invalid(
            view,
            at(&**query),
            "the query must be one SELECT (no UNION)",
        ));
    };
    let refused = [
        (
            select.distinct.as_ref().map(|_| at(&**select)),
            "SELECT DISTINCT",
        ),
        (
            select.selection.as_ref().map(at),
            "WHERE (use CASE WHEN … to choose a value)",
        ),
        (select.having.as_ref().map(at), "HAVING"),
        (select.qualify.as_ref().map(at), "QUALIFY"),
    ];
    if let Some((Some(place), what)) = refused.into_iter().find(|(p, _)| p.is_some()) {
        return Err(invalid(
            view,
            place,
            format!("{what} is not allowed in an on-demand view: it answers one row per request"),
        ));
    }
    let grouped = match &select.group_by {
        GroupByExpr::All(_) => Some(at(&**select)),
        GroupByExpr::Expressions(exprs, modifiers)
            if !exprs.is_empty() || !modifiers.is_empty() =>
        {
            Some(exprs.first().map_or_else(|| at(&**select), at))
        }
        GroupByExpr::Expressions(..) => None,
    };
    if let Some(place) = grouped {
        return Err(invalid(
            view,
            place,
            "GROUP BY is not allowed in an on-demand view (aggregate in an aggregation view and read its features)",
        ));
    }
    if select.from.is_empty() {
        return Err(invalid(
            view,
            at(&**select),
            "an on-demand view lists its inputs after FROM",
        ));
    }
    for table in &select.from {
        if let Some(join) = table.joins.first() {
            return Err(invalid(
                view,
                at(join),
                "no JOIN in an on-demand view: list its inputs after FROM (FROM txn, user_profile); they are matched by entity keys",
            ));
        }
        match &table.relation {
            TableFactor::Table {
                alias: None,
                args: None,
                ..
            } => {}
            TableFactor::Table {
                alias: Some(alias), ..
            } => {
                return Err(invalid(
                    view,
                    at(alias),
                    "inputs of an on-demand view are named as declared (no aliases)",
                ));
            }
            other => {
                return Err(invalid(
                    view,
                    at(other),
                    "an on-demand view reads request sources and feature views by name (no subqueries or table functions)",
                ));
            }
        }
    }
    for item in &select.projection {
        match item {
            SelectItem::ExprWithAlias { .. } => {}
            SelectItem::UnnamedExpr(Expr::Identifier(_) | Expr::CompoundIdentifier(_)) => {}
            SelectItem::UnnamedExpr(expr) => {
                return Err(invalid(
                    view,
                    at(expr),
                    "name every output: <expression> AS <feature name>",
                ));
            }
            other => {
                return Err(invalid(
                    view,
                    at(other),
                    "select named expressions (no wildcards): each output is a feature",
                ));
            }
        }
    }
    Ok(())
}

fn non_deterministic(name: &str) -> String {
    format!(
        "`{name}()` is not deterministic: an on-demand view must give the same value online and in exports (pass the value as a request field instead)"
    )
}

/// No aggregates, window functions, subqueries or non-deterministic functions anywhere
/// in the query; `refused` says why a function is refused (`None`: it is allowed).
fn check_functions(
    view: &str,
    query: &str,
    refused: &dyn Fn(&str) -> Option<String>,
) -> Result<()> {
    struct Check<'a> {
        refused: &'a dyn Fn(&str) -> Option<String>,
        error: Option<(Option<(u64, u64)>, String)>,
    }
    impl Visitor for Check<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            let problem = match expr {
                Expr::Function(function) => {
                    let name = function.name.to_string().to_ascii_lowercase();
                    if function.over.is_some() {
                        Some(format!(
                            "window function `{name}(…) OVER (…)` in an on-demand view: it computes one row from one request"
                        ))
                    } else {
                        (self.refused)(&name)
                    }
                }
                Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => Some(
                    "a subquery in an on-demand view: it computes one row from one request"
                        .to_string(),
                ),
                _ => None,
            };
            match problem {
                Some(problem) => {
                    self.error = Some((at(expr), problem));
                    ControlFlow::Break(())
                }
                None => ControlFlow::Continue(()),
            }
        }
    }
    let statements = Parser::parse_sql(&GenericDialect {}, query)
        .map_err(|e| invalid(view, None, format!("the query does not parse: {e}")))?;
    let mut check = Check {
        refused,
        error: None,
    };
    let _ = statements.visit(&mut check);
    match check.error {
        Some((place, message)) => Err(invalid(view, place, message)),
        None => Ok(()),
    }
}

/// Every function is immutable: `now()`, `random()`, `uuid()` would give a different value
/// online than in the export of the same request.
fn check_deterministic(view: &str, expr: &LogicalExpr) -> Result<()> {
    let mut found = None;
    expr.apply(|e| {
        if let LogicalExpr::ScalarFunction(f) = e
            && f.func.signature().volatility != Volatility::Immutable
        {
            found = Some(f.func.name().to_string());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    match found {
        Some(name) => Err(invalid(view, None, non_deterministic(&name))),
        None => Ok(()),
    }
}

/// An on-demand view compiled into physical expressions over its input batch.
#[derive(Debug)]
pub struct OnDemandProgram {
    pub view: String,
    /// The input batch: for each field, `(input index, column index)` into the schema's
    /// inputs and columns.
    pub layout: Vec<(usize, usize)>,
    pub input_schema: SchemaRef,
    /// Every column of every input as the schema records it, typed (parsed once here,
    /// not per request): `(input name, [(column, type)])` in `FROM` order.
    pub inputs: Vec<(String, Vec<(String, DataType)>)>,
    /// The outputs (features), in the view's order.
    pub outputs: Vec<(String, Arc<dyn PhysicalExpr>)>,
    /// The outputs compiled for one row on plain values, when every expression allows.
    row: Option<row::RowProgram>,
}

impl OnDemandProgram {
    /// Plans `query` over the columns `schema` records.
    pub async fn compile(view: &str, query: &str, schema: &OnDemandSchema) -> Result<Self> {
        let typed = |c: &Column| -> Result<(String, DataType)> {
            let data_type = c.data_type.parse::<DataType>().map_err(|_| {
                invalid(
                    view,
                    None,
                    format!(
                        "input column `{}` has a type Quiver cannot read back: {}",
                        c.name, c.data_type
                    ),
                )
            })?;
            Ok((c.name.clone(), data_type))
        };
        let inputs: Vec<(String, Vec<(String, DataType)>)> = schema
            .inputs
            .iter()
            .map(|i| {
                Ok((
                    i.name.clone(),
                    i.columns.iter().map(typed).collect::<Result<_>>()?,
                ))
            })
            .collect::<Result<_>>()?;
        let ctx = session(inputs.iter().cloned())?;
        let projection = projection(&ctx, view, query).await?;
        let input_schema = projection.input.schema();
        let mut layout = Vec::with_capacity(input_schema.fields().len());
        for (qualifier, field) in input_schema.iter() {
            let input = qualifier
                .and_then(|q| inputs.iter().position(|(name, _)| name == q.table()))
                .ok_or_else(|| {
                    invalid(view, None, format!("column `{}` of no input", field.name()))
                })?;
            let column = inputs[input]
                .1
                .iter()
                .position(|(name, _)| name == field.name())
                .ok_or_else(|| {
                    invalid(
                        view,
                        None,
                        format!(
                            "input `{}` has no column `{}`",
                            inputs[input].0,
                            field.name()
                        ),
                    )
                })?;
            layout.push((input, column));
        }
        let state = ctx.state();
        // Coerced and simplified as a query's projection would be: some functions
        // (`COALESCE`, `NVL`) exist only until simplification rewrites them.
        let simplifier = ExprSimplifier::new(
            SimplifyContext::builder()
                .with_schema(Arc::clone(input_schema))
                .build(),
        );
        let outputs = projection
            .expr
            .iter()
            .zip(projection.schema.fields())
            .map(|(expr, field)| {
                let expr = simplifier.coerce(expr.clone(), input_schema)?;
                let expr = simplifier.simplify(expr)?;
                Ok((
                    field.name().clone(),
                    state.create_physical_expr(expr, input_schema)?,
                ))
            })
            .collect::<Result<Vec<(String, Arc<dyn PhysicalExpr>)>>>()?;
        let exprs: Vec<_> = outputs.iter().map(|(_, e)| Arc::clone(e)).collect();
        let row = row::RowProgram::compile(input_schema.as_arrow(), &exprs);
        Ok(OnDemandProgram {
            view: view.to_string(),
            layout,
            input_schema: Arc::clone(input_schema.inner()),
            inputs,
            outputs,
            row,
        })
    }

    /// Whether one row is evaluated on plain values ([`row`]) rather than on DataFusion.
    pub fn evaluates_rows_directly(&self) -> bool {
        self.row.is_some()
    }

    /// Evaluates every output for `rows` rows; `column(input, column)` gives an input
    /// column (cast to the type the program was compiled for when it differs).
    pub fn evaluate(
        &self,
        rows: usize,
        column: impl Fn(usize, usize) -> Result<ArrayRef>,
    ) -> Result<Vec<ArrayRef>> {
        let columns = self
            .layout
            .iter()
            .map(|(input, index)| column(*input, *index))
            .collect::<Result<Vec<_>>>()?;
        if rows == 1
            && let Some(outputs) = self.evaluate_directly(&columns)
        {
            return Ok(outputs);
        }
        self.evaluate_on_datafusion(rows, columns)
    }

    /// Every output for the first row of `columns` (the input batch's columns) on plain
    /// values; `None` when the program or this row needs DataFusion ([`row`]).
    pub fn evaluate_directly(&self, columns: &[ArrayRef]) -> Option<Vec<ArrayRef>> {
        let row = self.row.as_ref()?;
        row.evaluate(&row.read(columns, 0).ok()?).ok()
    }

    /// Evaluates every output on DataFusion over `columns` (the input batch's columns).
    pub fn evaluate_on_datafusion(
        &self,
        rows: usize,
        columns: Vec<ArrayRef>,
    ) -> Result<Vec<ArrayRef>> {
        let mut arrays = Vec::with_capacity(self.layout.len());
        for (array, field) in columns.into_iter().zip(self.input_schema.fields()) {
            let array = if array.data_type() == field.data_type() {
                array
            } else {
                arrow::compute::cast(&array, field.data_type()).map_err(|e| {
                    invalid(
                        &self.view,
                        None,
                        format!(
                            "input `{}` is {}, the view was applied with {}: {e}",
                            field.name(),
                            array.data_type(),
                            field.data_type()
                        ),
                    )
                })?
            };
            arrays.push(array);
        }
        let batch = RecordBatch::try_new_with_options(
            Arc::clone(&self.input_schema),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| Error::DataFusion(e.into()))?;
        self.outputs
            .iter()
            .map(|(_, expr)| {
                expr.evaluate(&batch)
                    .and_then(|value| value.into_array(rows))
                    .map_err(|e| {
                        let message = e.strip_backtrace().to_string();
                        let hint = if message.contains("Divide by zero") {
                            "; guard divisions with NULLIF(divisor, 0)"
                        } else {
                            ""
                        };
                        Error::OnDemandEvaluation {
                            view: self.view.clone(),
                            message,
                            hint,
                        }
                    })
            })
            .collect()
    }
}
