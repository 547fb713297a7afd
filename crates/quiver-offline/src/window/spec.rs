//! The analysis of an aggregation view's query at `apply`: it must be an ordinary
//! aggregate query over one source, grouped by exactly the entity's keys, whose
//! aggregates decompose into tiles. The analysis splits it into
//!
//! - the *event query*: the source's rows that pass `WHERE`, with the keys, the event
//!   time, the created time and every aggregate's argument evaluated (`__a0`, …);
//! - the *aggregates* (`__agg0`, …), each a [`AggKind`] over one argument;
//! - the *outputs*: each output column as an expression over the aggregates, evaluated
//!   after merging (`SUM(a) / COUNT(*)` becomes `__agg0 / __agg1`).
//!
//! Anything else is a definition error pointing at the offending part of the query.

use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::DFSchema;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    DuplicateTreatment, Expr, FunctionArg, FunctionArgExpr, FunctionArgumentClause,
    FunctionArguments, GroupByExpr, Ident, ObjectNamePart, Query, SelectItem, SetExpr, Spanned,
    Statement, TableFactor, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use quiver_core::model::{
    Column, Entity, FeatureView, Source, ViewSchema, WindowAggregate, WindowOutput, WindowSchema,
};

use super::state::AggKind;
use crate::{Error, Result};

/// An error in a view's query, at a position within the query text (1-based).
fn invalid(view: &str, at: Option<(u64, u64)>, message: impl Into<String>, help: &str) -> Error {
    Error::InvalidViewQuery {
        view: view.to_string(),
        message: message.into(),
        line: at.map(|a| a.0),
        column: at.map(|a| a.1),
        help: help.to_string(),
    }
}

const ALLOWED: &str = "an aggregation view is SELECT <entity keys>, <aggregates> FROM <one source> [WHERE …] GROUP BY <entity keys>, with COUNT, SUM, AVG, MIN, MAX, STDDEV, VARIANCE, STDDEV_POP, VAR_POP, FIRST_VALUE or LAST_VALUE (ORDER BY the event time), and expressions over them";

fn at(node: &impl Spanned) -> Option<(u64, u64)> {
    let span = node.span();
    (span.start.line > 0).then_some((span.start.line, span.start.column))
}

/// The kind of a supported aggregate function (SUM is refined by its argument's type).
fn aggregate_kind(name: &str, star: bool) -> Option<AggKind> {
    Some(match name {
        "count" if star => AggKind::CountStar,
        "count" => AggKind::Count,
        "sum" => AggKind::SumInt,
        "avg" | "mean" => AggKind::Avg,
        "min" => AggKind::Min,
        "max" => AggKind::Max,
        "stddev" | "stddev_samp" => AggKind::StddevSamp,
        "stddev_pop" => AggKind::StddevPop,
        "variance" | "var" | "var_samp" => AggKind::VarSamp,
        "var_pop" => AggKind::VarPop,
        "first_value" => AggKind::First,
        "last_value" => AggKind::Last,
        _ => return None,
    })
}

/// What the rewrite of the output expressions found.
struct Found {
    /// (kind, argument SQL or None for `*`, the aggregate as written)
    aggregates: Vec<(AggKind, Option<String>, String)>,
    error: Option<Error>,
}

struct Rewrite<'a> {
    view: &'a str,
    timestamp: &'a str,
    aggregate_names: &'a dyn Fn(&str) -> bool,
    found: Found,
}

impl Rewrite<'_> {
    fn fail(&mut self, error: Error) -> ControlFlow<()> {
        self.found.error = Some(error);
        ControlFlow::Break(())
    }
}

impl VisitorMut for Rewrite<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let Expr::Function(function) = expr else {
            return ControlFlow::Continue(());
        };
        let name = function
            .name
            .0
            .last()
            .and_then(ObjectNamePart::as_ident)
            .map(|i| i.value.to_ascii_lowercase())
            .unwrap_or_default();
        let place = at(&*function);
        if function.over.is_some() {
            return self.fail(invalid(
                self.view,
                place,
                format!("window function `{name}(…) OVER (…)` in an aggregation view"),
                ALLOWED,
            ));
        }
        let is_aggregate = (self.aggregate_names)(&name);
        let FunctionArguments::List(list) = &function.args else {
            return ControlFlow::Continue(());
        };
        let star = matches!(
            list.args.as_slice(),
            [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)]
        );
        let Some(mut kind) = aggregate_kind(&name, star) else {
            if is_aggregate {
                let why = if name == "approx_distinct" {
                    "APPROX_DISTINCT is not supported in windows yet (its sketches are not kept in tiles)"
                        .to_string()
                } else {
                    format!(
                        "aggregate `{}` does not decompose into tiles",
                        name.to_ascii_uppercase()
                    )
                };
                return self.fail(invalid(self.view, place, why, ALLOWED));
            }
            return ControlFlow::Continue(()); // a scalar function over aggregates
        };
        if list.duplicate_treatment == Some(DuplicateTreatment::Distinct) {
            return self.fail(invalid(
                self.view,
                place,
                format!(
                    "`{}(DISTINCT …)` does not decompose into tiles",
                    name.to_ascii_uppercase()
                ),
                ALLOWED,
            ));
        }
        if function.filter.is_some() || !function.within_group.is_empty() {
            return self.fail(invalid(
                self.view,
                place,
                "FILTER and WITHIN GROUP are not supported in aggregation views; filter events with WHERE",
                ALLOWED,
            ));
        }
        let order_by: Vec<_> = list
            .clauses
            .iter()
            .filter_map(|c| match c {
                FunctionArgumentClause::OrderBy(o) => Some(o),
                _ => None,
            })
            .collect();
        match (kind, order_by.as_slice()) {
            (AggKind::First | AggKind::Last, [order]) => {
                let ok = matches!(order.as_slice(), [o]
                    if o.options.asc != Some(false)
                        && matches!(&o.expr, Expr::Identifier(i) if i.value.eq_ignore_ascii_case(self.timestamp)));
                if !ok {
                    return self.fail(invalid(
                        self.view,
                        place,
                        format!(
                            "{} must be ordered by the event time: ORDER BY {}",
                            name.to_ascii_uppercase(),
                            self.timestamp
                        ),
                        ALLOWED,
                    ));
                }
            }
            (AggKind::First | AggKind::Last, _) => {
                return self.fail(invalid(
                    self.view,
                    place,
                    format!(
                        "{}(x) needs ORDER BY {} (the event time) inside its parentheses",
                        name.to_ascii_uppercase(),
                        self.timestamp
                    ),
                    ALLOWED,
                ));
            }
            (_, []) => {}
            (_, _) => {
                return self.fail(invalid(
                    self.view,
                    place,
                    format!(
                        "ORDER BY inside {} means nothing",
                        name.to_ascii_uppercase()
                    ),
                    ALLOWED,
                ));
            }
        }
        let argument = match list.args.as_slice() {
            [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] if kind == AggKind::CountStar => None,
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))] => {
                // No aggregate inside an aggregate's argument.
                let mut nested = false;
                let _ = datafusion::sql::sqlparser::ast::visit_expressions(arg, |e| {
                    if let Expr::Function(f) = e {
                        let inner = f
                            .name
                            .0
                            .last()
                            .and_then(ObjectNamePart::as_ident)
                            .map(|i| i.value.to_ascii_lowercase())
                            .unwrap_or_default();
                        if (self.aggregate_names)(&inner) || f.over.is_some() {
                            nested = true;
                            return ControlFlow::Break(());
                        }
                    }
                    ControlFlow::Continue(())
                });
                if nested {
                    return self.fail(invalid(
                        self.view,
                        at(arg),
                        "an aggregate's argument is a row expression: no aggregates or window functions inside it",
                        ALLOWED,
                    ));
                }
                Some(arg.to_string())
            }
            _ => {
                return self.fail(invalid(
                    self.view,
                    place,
                    format!("{} takes one argument here", name.to_ascii_uppercase()),
                    ALLOWED,
                ));
            }
        };
        if kind == AggKind::Count && argument.is_none() {
            kind = AggKind::CountStar;
        }
        let written = expr.to_string();
        let index = match self
            .found
            .aggregates
            .iter()
            .position(|(k, a, _)| *k == kind && *a == argument)
        {
            Some(i) => i,
            None => {
                self.found.aggregates.push((kind, argument, written));
                self.found.aggregates.len() - 1
            }
        };
        *expr = Expr::Identifier(Ident::new(format!("__agg{index}")));
        ControlFlow::Continue(())
    }
}

/// Analyses an aggregation view: checks its shape and types it, returning its schema
/// (features = outputs × windows) with the [`WindowSchema`]. The view's sources must be
/// registered in `ctx`.
pub async fn analyze(
    ctx: &SessionContext,
    view: &FeatureView,
    entities: &[&Entity],
    primary: &Source,
) -> Result<ViewSchema> {
    let name = view.name.as_str();
    let statements = Parser::parse_sql(&GenericDialect {}, &view.query).map_err(|e| {
        invalid(
            name,
            None,
            format!("the query does not parse: {e}"),
            ALLOWED,
        )
    })?;
    let [Statement::Query(query)] = statements.as_slice() else {
        return Err(invalid(name, None, "the query must be one SELECT", ALLOWED));
    };
    let query: &Query = query;
    if query.with.is_some() || query.order_by.is_some() || query.limit_clause.is_some() {
        return Err(invalid(
            name,
            at(query),
            "WITH, ORDER BY and LIMIT are not allowed in an aggregation view",
            ALLOWED,
        ));
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(invalid(
            name,
            at(query),
            "the query must be one SELECT (no UNION)",
            ALLOWED,
        ));
    };
    if select.distinct.is_some() {
        return Err(invalid(
            name,
            at(&**select),
            "SELECT DISTINCT is not allowed here",
            ALLOWED,
        ));
    }
    if let Some(having) = &select.having {
        return Err(invalid(
            name,
            at(having),
            "HAVING is not allowed in an aggregation view: every entity has every window's values",
            ALLOWED,
        ));
    }
    if let Some(qualify) = &select.qualify {
        return Err(invalid(
            name,
            at(qualify),
            "QUALIFY is not allowed here",
            ALLOWED,
        ));
    }
    let from = match select.from.as_slice() {
        [table] if table.joins.is_empty() => table,
        [table, ..] if !table.joins.is_empty() => {
            return Err(invalid(
                name,
                at(&table.joins[0]),
                "an aggregation view reads one source: no joins",
                ALLOWED,
            ));
        }
        _ => {
            return Err(invalid(
                name,
                at(&**select),
                "an aggregation view reads exactly one source",
                ALLOWED,
            ));
        }
    };
    if !matches!(from.relation, TableFactor::Table { .. }) {
        return Err(invalid(
            name,
            at(&from.relation),
            "an aggregation view reads a source by name (no subqueries)",
            ALLOWED,
        ));
    }

    // GROUP BY exactly the keys.
    let key_names: Vec<String> = entities
        .iter()
        .flat_map(|e| e.keys.iter().map(|k| k.name.clone()))
        .collect();
    let column_name = |e: &Expr| -> Option<String> {
        match e {
            Expr::Identifier(i) => Some(normalize(i)),
            Expr::CompoundIdentifier(parts) => parts.last().map(normalize),
            _ => None,
        }
    };
    let grouped: Vec<(Option<String>, &Expr)> = match &select.group_by {
        GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => {
            exprs.iter().map(|e| (column_name(e), e)).collect()
        }
        _ => Vec::new(),
    };
    let mut sorted_group: Vec<String> = grouped.iter().filter_map(|(n, _)| n.clone()).collect();
    sorted_group.sort();
    let mut sorted_keys = key_names.clone();
    sorted_keys.sort();
    if grouped.iter().any(|(n, _)| n.is_none()) || sorted_group != sorted_keys {
        let place = grouped
            .iter()
            .find(|(n, _)| n.as_ref().is_none_or(|n| !key_names.contains(n)))
            .map(|(_, e)| at(*e))
            .unwrap_or_else(|| at(&**select));
        return Err(invalid(
            name,
            place,
            format!(
                "an aggregation view is grouped by exactly its entity keys: GROUP BY {}",
                key_names.join(", ")
            ),
            ALLOWED,
        ));
    }

    // The projection: the keys, then outputs (each with a name) over aggregates.
    let state = ctx.state();
    let is_aggregate = |n: &str| state.aggregate_functions().contains_key(n);
    let mut rewrite = Rewrite {
        view: name,
        timestamp: &primary.timestamp,
        aggregate_names: &is_aggregate,
        found: Found {
            aggregates: Vec::new(),
            error: None,
        },
    };
    let mut outputs: Vec<(String, String)> = Vec::new();
    let mut keys_seen = Vec::new();
    for item in &select.projection {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(normalize(alias))),
            other => {
                return Err(invalid(
                    name,
                    at(other),
                    "select the keys and named aggregates (no wildcards)",
                    ALLOWED,
                ));
            }
        };
        if let Some(key) = column_name(expr).filter(|k| key_names.contains(k))
            && alias.as_ref().is_none_or(|a| *a == key)
        {
            keys_seen.push(key);
            continue;
        }
        let Some(alias) = alias else {
            return Err(invalid(
                name,
                at(expr),
                format!("give `{expr}` a name: {expr} AS <feature>"),
                ALLOWED,
            ));
        };
        let mut rewritten = expr.clone();
        let before = rewrite.found.aggregates.len();
        let _ = rewritten.visit(&mut rewrite);
        if let Some(error) = rewrite.found.error.take() {
            return Err(error);
        }
        // Only aggregates (and constants) may appear: a bare column is per row.
        let mut bare = None;
        let _ = datafusion::sql::sqlparser::ast::visit_expressions(&rewritten, |e| {
            match e {
                Expr::Identifier(i) if !i.value.starts_with("__agg") => {
                    bare = Some(i.value.clone());
                    return ControlFlow::Break(());
                }
                Expr::CompoundIdentifier(parts) => {
                    bare = parts.last().map(|p| p.value.clone());
                    return ControlFlow::Break(());
                }
                _ => {}
            }
            ControlFlow::Continue(())
        });
        if let Some(column) = bare {
            return Err(invalid(
                name,
                at(expr),
                format!("`{column}` is outside any aggregate in `{alias}`"),
                ALLOWED,
            ));
        }
        if rewrite.found.aggregates.len() == before && !rewritten.to_string().contains("__agg") {
            return Err(invalid(
                name,
                at(expr),
                format!("`{alias}` aggregates nothing"),
                ALLOWED,
            ));
        }
        if outputs.iter().any(|(n, _)| *n == alias) {
            return Err(invalid(
                name,
                at(expr),
                format!("the query outputs `{alias}` twice"),
                ALLOWED,
            ));
        }
        outputs.push((alias, rewritten.to_string()));
    }
    if let Some(missing) = key_names.iter().find(|k| !keys_seen.contains(k)) {
        return Err(invalid(
            name,
            at(&**select),
            format!("select the entity key `{missing}`"),
            ALLOWED,
        ));
    }
    if outputs.is_empty() {
        return Err(Error::NoFeatures {
            view: name.to_string(),
        });
    }

    // The event query: keys, times and every distinct argument, after WHERE.
    let mut args: Vec<String> = Vec::new();
    let mut aggregates: Vec<(AggKind, Option<usize>, String)> = Vec::new();
    for (kind, argument, written) in &rewrite.found.aggregates {
        let arg = argument
            .as_ref()
            .map(|a| match args.iter().position(|x| x == a) {
                Some(i) => i,
                None => {
                    args.push(a.clone());
                    args.len() - 1
                }
            });
        aggregates.push((*kind, arg, written.clone()));
    }
    let quote = |c: &str| format!("\"{}\"", c.replace('"', "\"\""));
    let mut projection: Vec<String> = key_names.iter().map(|k| quote(k)).collect();
    projection.push(quote(&primary.timestamp));
    if let Some(created) = &primary.created {
        projection.push(quote(created));
    }
    for (i, arg) in args.iter().enumerate() {
        projection.push(format!("{arg} AS __a{i}"));
    }
    let mut event_query = format!("SELECT {} FROM {}", projection.join(", "), from);
    if let Some(selection) = &select.selection {
        event_query.push_str(&format!(" WHERE {selection}"));
    }
    let plan = ctx
        .state()
        .create_logical_plan(&event_query)
        .await
        .map_err(|e| Error::UnplannableView {
            view: name.to_string(),
            message: e.strip_backtrace().to_string(),
        })?;
    let event_schema = plan.schema();
    let field = |column: &str| -> Result<Field> {
        event_schema
            .field_with_unqualified_name(column)
            .map(|f| f.as_ref().clone())
            .map_err(|_| Error::MissingTimeColumn {
                view: name.to_string(),
                column: column.to_string(),
                clause: "TIMESTAMP",
                source_name: primary.name.clone(),
            })
    };

    // Type every aggregate from its argument.
    let mut typed: Vec<WindowAggregate> = Vec::new();
    for (i, (kind, arg, written)) in aggregates.iter().enumerate() {
        let input = match arg {
            Some(a) => Some(field(&format!("__a{a}"))?.data_type().clone()),
            None => None,
        };
        let (kind, data_type) = aggregate_type(*kind, input.as_ref()).ok_or_else(|| {
            invalid(
                name,
                None,
                format!(
                    "`{written}`: {} of {} is not supported in windows",
                    kind_name(*kind),
                    input.as_ref().map_or("rows".to_string(), |t| t.to_string())
                ),
                "SUM, AVG, STDDEV and VARIANCE take numbers; MIN, MAX, FIRST_VALUE and LAST_VALUE numbers, booleans, strings, dates and times",
            )
        })?;
        let _ = i;
        typed.push(WindowAggregate {
            kind: kind_name(kind).to_string(),
            arg: *arg,
            sql: written.clone(),
            data_type: data_type.to_string(),
        });
    }

    // Type every output by compiling it over the aggregates.
    let agg_schema = aggregates_schema(&typed)?;
    let mut window_outputs = Vec::new();
    for (output, expr) in &outputs {
        let data_type = super::program::output_type(&agg_schema, expr).map_err(|e| {
            invalid(
                name,
                None,
                format!("`{output}` cannot be computed from its aggregates: {e}"),
                ALLOWED,
            )
        })?;
        window_outputs.push(WindowOutput {
            name: output.clone(),
            expr: expr.clone(),
            data_type: data_type.to_string(),
        });
    }

    let column = |f: &Field| Column {
        name: f.name().clone(),
        data_type: f.data_type().to_string(),
        nullable: f.is_nullable(),
    };
    let mut keys = Vec::new();
    for entity in entities {
        for key in &entity.keys {
            keys.push(column(&field(&key.name)?));
        }
    }
    let timestamp = column(&field(&primary.timestamp)?);
    let created = match &primary.created {
        Some(c) => Some(column(&field(c)?)),
        None => None,
    };
    let mut features = Vec::new();
    for window in &view.windows {
        let label = quiver_core::window::label(*window);
        for output in &window_outputs {
            features.push(Column {
                name: format!("{}_{label}", output.name),
                data_type: output.data_type.clone(),
                nullable: true,
            });
        }
    }
    let args = (0..args.len())
        .map(|i| field(&format!("__a{i}")).map(|f| column(&f)))
        .collect::<Result<Vec<_>>>()?;
    Ok(ViewSchema {
        keys,
        timestamp: Some(timestamp),
        created,
        features,
        window: Some(WindowSchema {
            event_query,
            args,
            aggregates: typed,
            outputs: window_outputs,
        }),
        on_demand: None,
    })
}

fn normalize(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_ascii_lowercase()
    }
}

/// The schema of the merged aggregates (`__agg0`, …), which outputs are computed over.
pub fn aggregates_schema(aggregates: &[WindowAggregate]) -> Result<Arc<Schema>> {
    let fields = aggregates
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let data_type: DataType =
                a.data_type.parse().map_err(|_| Error::MaterializeFailed {
                    view: String::new(),
                    message: format!("aggregate type `{}` does not parse", a.data_type),
                })?;
            Ok(Field::new(format!("__agg{i}"), data_type, true))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// The name of a kind as the registry stores it.
pub fn kind_name(kind: AggKind) -> &'static str {
    match kind {
        AggKind::CountStar => "count_star",
        AggKind::Count => "count",
        AggKind::SumInt => "sum_int",
        AggKind::SumFloat => "sum_float",
        AggKind::Avg => "avg",
        AggKind::Min => "min",
        AggKind::Max => "max",
        AggKind::StddevSamp => "stddev_samp",
        AggKind::StddevPop => "stddev_pop",
        AggKind::VarSamp => "var_samp",
        AggKind::VarPop => "var_pop",
        AggKind::First => "first",
        AggKind::Last => "last",
    }
}

/// The kind a registry name stands for.
pub fn kind_of(name: &str) -> Option<AggKind> {
    AggKind::ALL.into_iter().find(|k| kind_name(*k) == name)
}

/// The refined kind and the value type of an aggregate over `input`; `None` when the
/// type is not supported.
fn aggregate_type(kind: AggKind, input: Option<&DataType>) -> Option<(AggKind, DataType)> {
    let numeric = |t: &DataType| t.is_integer() || t.is_floating();
    let pickable = |t: &DataType| {
        numeric(t)
            || matches!(
                t,
                DataType::Boolean
                    | DataType::Utf8
                    | DataType::LargeUtf8
                    | DataType::Utf8View
                    | DataType::Date32
                    | DataType::Date64
                    | DataType::Timestamp(_, _)
            )
    };
    match (kind, input) {
        (AggKind::CountStar, _) | (AggKind::Count, _) => Some((kind, DataType::Int64)),
        (AggKind::SumInt, Some(t)) if t.is_integer() => Some((AggKind::SumInt, DataType::Int64)),
        (AggKind::SumInt, Some(t)) if t.is_floating() => {
            Some((AggKind::SumFloat, DataType::Float64))
        }
        (
            AggKind::Avg
            | AggKind::StddevSamp
            | AggKind::StddevPop
            | AggKind::VarSamp
            | AggKind::VarPop,
            Some(t),
        ) if numeric(t) => Some((kind, DataType::Float64)),
        (AggKind::Min | AggKind::Max | AggKind::First | AggKind::Last, Some(t)) if pickable(t) => {
            let t = match t {
                DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
                other => other.clone(),
            };
            Some((kind, t))
        }
        _ => None,
    }
}

/// The DataFusion schema of the aggregates, for compiling outputs.
pub fn df_schema(schema: &Arc<Schema>) -> Result<DFSchema> {
    Ok(DFSchema::try_from(schema.as_ref().clone())?)
}
