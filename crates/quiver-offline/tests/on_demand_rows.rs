//! An on-demand view evaluated for one row on plain values must give exactly what
//! DataFusion gives for the same row (the export's evaluation), or hand the row to
//! DataFusion: random expressions over every construct the row evaluation covers,
//! evaluated on random rows full of edge values (NULL, NaN, ±0, ±∞, the integer extremes).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use quiver_core::model::{Column, OnDemandInput, OnDemandInputKind, OnDemandSchema};
use quiver_offline::on_demand::OnDemandProgram;

/// A small deterministic generator (xorshift), so that a failing case is reproducible
/// from its printed seed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const INTEGERS: [&str; 6] = [
    "0",
    "1",
    "-1",
    "3",
    "9223372036854775807",
    "(-9223372036854775807 - 1)",
];
const FLOATS: [&str; 5] = ["0.0", "1.5", "-2.0", "1e308", "(-0.0)"];

fn number(r: &mut Random, depth: u32) -> String {
    if depth == 0 || r.below(10) < 3 {
        return match r.below(4) {
            0 => r.pick(&["req.a", "features.n"]).to_string(),
            1 => r.pick(&["req.b", "features.x"]).to_string(),
            2 => r.pick(&INTEGERS).to_string(),
            _ => r.pick(&FLOATS).to_string(),
        };
    }
    let d = depth - 1;
    match r.below(8) {
        0 | 1 => {
            let op = r.pick(&["+", "-", "*", "/", "%"]);
            format!("({} {op} {})", number(r, d), number(r, d))
        }
        2 => format!("(-{})", number(r, d)),
        3 => format!(
            "CASE WHEN {} THEN {} ELSE {} END",
            boolean(r, d),
            number(r, d),
            number(r, d)
        ),
        4 => format!(
            "CASE {} WHEN {} THEN {} WHEN {} THEN {} END",
            number(r, d),
            number(r, d),
            number(r, d),
            number(r, d),
            number(r, d)
        ),
        5 => format!(
            "COALESCE({}, {}, {})",
            number(r, d),
            number(r, d),
            number(r, d)
        ),
        6 => format!("NULLIF({}, {})", number(r, d), number(r, d)),
        _ => format!("CAST({} AS DOUBLE)", number(r, d)),
    }
}

fn boolean(r: &mut Random, depth: u32) -> String {
    if depth == 0 || r.below(10) < 2 {
        return r.pick(&["req.c", "TRUE", "FALSE"]).to_string();
    }
    let d = depth - 1;
    match r.below(7) {
        0 | 1 => {
            let op = r.pick(&["=", "<>", "<", "<=", ">", ">="]);
            format!("({} {op} {})", number(r, d), number(r, d))
        }
        2 => format!("({} AND {})", boolean(r, d), boolean(r, d)),
        3 => format!("({} OR {})", boolean(r, d), boolean(r, d)),
        4 => format!("(NOT {})", boolean(r, d)),
        5 => format!(
            "({} IS {}NULL)",
            number(r, d),
            if r.below(2) == 0 { "NOT " } else { "" }
        ),
        _ => format!(
            "CASE WHEN {} THEN {} ELSE {} END",
            boolean(r, d),
            boolean(r, d),
            boolean(r, d)
        ),
    }
}

fn schema() -> OnDemandSchema {
    let column = |name: &str, data_type: &str| Column {
        name: name.to_string(),
        data_type: data_type.to_string(),
        nullable: true,
    };
    OnDemandSchema {
        inputs: vec![
            OnDemandInput {
                name: "req".into(),
                kind: OnDemandInputKind::Request,
                columns: vec![
                    column("a", "Int64"),
                    column("b", "Float64"),
                    column("c", "Boolean"),
                ],
                identity: None,
            },
            OnDemandInput {
                name: "features".into(),
                kind: OnDemandInputKind::View,
                columns: vec![column("x", "Float64"), column("n", "Int64")],
                identity: None,
            },
        ],
    }
}

/// One row of random input values, one array per input column of the program's batch.
fn row(r: &mut Random, program: &OnDemandProgram) -> Vec<ArrayRef> {
    let integers = [
        None,
        Some(0),
        Some(1),
        Some(-1),
        Some(7),
        Some(i64::MAX),
        Some(i64::MIN),
    ];
    let floats = [
        None,
        Some(0.0),
        Some(-0.0),
        Some(1.5),
        Some(-2.0),
        Some(f64::NAN),
        Some(f64::INFINITY),
        Some(f64::NEG_INFINITY),
        Some(1e308),
    ];
    let booleans = [None, Some(true), Some(false)];
    program
        .layout
        .iter()
        .map(|(input, column)| -> ArrayRef {
            match &program.inputs[*input].1[*column].1 {
                DataType::Int64 => Arc::new(Int64Array::from(vec![*r.pick(&integers)])),
                DataType::Float64 => Arc::new(Float64Array::from(vec![*r.pick(&floats)])),
                DataType::Boolean => Arc::new(BooleanArray::from(vec![*r.pick(&booleans)])),
                other => panic!("no values for {other}"),
            }
        })
        .collect()
}

/// Equal values: same type, same NULLs, floats bit for bit (any NaN equal to any NaN).
fn same(direct: &ArrayRef, datafusion: &ArrayRef) -> bool {
    if direct.data_type() != datafusion.data_type() || direct.len() != 1 || datafusion.len() != 1 {
        return false;
    }
    if direct.is_null(0) || datafusion.is_null(0) {
        return direct.is_null(0) && datafusion.is_null(0);
    }
    match direct.data_type() {
        DataType::Int64 => {
            direct.as_primitive::<Int64Type>().value(0)
                == datafusion.as_primitive::<Int64Type>().value(0)
        }
        DataType::Float64 => {
            let (a, b) = (
                direct.as_primitive::<Float64Type>().value(0),
                datafusion.as_primitive::<Float64Type>().value(0),
            );
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
        }
        DataType::Boolean => direct.as_boolean().value(0) == datafusion.as_boolean().value(0),
        _ => false,
    }
}

#[tokio::test]
async fn one_row_on_plain_values_equals_datafusion_or_falls_back() {
    let schema = schema();
    let (mut programs, mut direct, mut fell_back, mut errors) = (0, 0, 0, 0);
    for seed in 1..=400u64 {
        let mut r = Random(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let query = format!(
            "SELECT {} AS n1, {} AS b1, {} AS n2 FROM req, features",
            number(&mut r, 3),
            boolean(&mut r, 3),
            number(&mut r, 2)
        );
        // Constant folding may refuse a query (an overflowing literal expression).
        let Ok(program) = OnDemandProgram::compile("v", &query, &schema).await else {
            continue;
        };
        programs += 1;
        assert!(
            program.evaluates_rows_directly(),
            "seed {seed}: not compiled for one row: {query}\nphysical: {}",
            program
                .outputs
                .iter()
                .map(|(_, e)| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        );
        for _ in 0..8 {
            let columns = row(&mut r, &program);
            let by_datafusion = program.evaluate_on_datafusion(1, columns.clone());
            let Some(outputs) = program.evaluate_directly(&columns) else {
                fell_back += 1;
                errors += usize::from(by_datafusion.is_err());
                continue;
            };
            direct += 1;
            let expected = by_datafusion.unwrap_or_else(|e| {
                panic!("seed {seed}: DataFusion fails where the row gave values: {e}\n{query}\n{columns:?}")
            });
            for ((output, value), expected) in program.outputs.iter().zip(&outputs).zip(&expected) {
                assert!(
                    same(value, expected),
                    "seed {seed}: `{}` is {value:?} on plain values, {expected:?} on DataFusion\n{query}\n{columns:?}",
                    output.0
                );
            }
        }
    }
    // The cases must exercise both sides: most rows evaluated directly, some handed over
    // (DataFusion's errors among them).
    assert!(programs >= 300, "only {programs} programs compiled");
    assert!(
        direct >= programs * 4,
        "{direct} rows of {programs} programs evaluated directly"
    );
    assert!(
        fell_back > 0 && errors > 0,
        "{fell_back} fallbacks, {errors} errors"
    );
}

#[tokio::test]
async fn a_program_outside_the_row_evaluation_still_evaluates_one_row() {
    // String functions are DataFusion's alone.
    let schema = OnDemandSchema {
        inputs: vec![OnDemandInput {
            name: "req".into(),
            kind: OnDemandInputKind::Request,
            columns: vec![Column {
                name: "s".into(),
                data_type: "Utf8".into(),
                nullable: true,
            }],
            identity: None,
        }],
    };
    let program = OnDemandProgram::compile("v", "SELECT upper(req.s) AS u FROM req", &schema)
        .await
        .unwrap();
    assert!(!program.evaluates_rows_directly());
    let column: ArrayRef = Arc::new(arrow::array::StringArray::from(vec!["quiver"]));
    let out = program.evaluate(1, |_, _| Ok(Arc::clone(&column))).unwrap();
    assert_eq!(out[0].as_string::<i32>().value(0), "QUIVER");
}
