//! The binary layout of online keys and values, shared by every store so other tools
//! can read them.
//!
//! **Entity key** (`encode_entity_keys`): the key columns in the view's order, each as
//! - `BIGINT`: 8 bytes big-endian with the sign bit flipped; `INT`: 4 bytes likewise;
//! - `VARCHAR` / `BYTES`: a LEB128 length, then the bytes.
//!
//! **Redis key**: `q:{project}:{view}:{version}:` followed by the entity key bytes.
//!
//! **Value** (`encode_row`, and `RowDecoder` to read it back):
//! - 8 bytes event time, 8 bytes created time: µs since the epoch, big-endian with the sign
//!   bit flipped, so comparing the first 16 bytes as unsigned bytes orders values by
//!   (event time, created) — the Redis write script relies on it;
//! - then each feature in the view's order: one tag byte (`0` NULL, `1` value) and, for a
//!   value, integers (any width, dates, timestamps, durations) as zig-zag LEB128 varints,
//!   unsigned integers as LEB128, `Float64` as 8 bytes and `Float32` as 4 bytes
//!   little-endian, booleans as one byte, strings and binaries as a LEB128 length and bytes.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder,
    PrimitiveBuilder, StringBuilder, make_array,
};
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};

use crate::{Error, Result};

/// Whether a feature of this type can be stored online.
pub fn supported(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
            | DataType::Boolean
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(_, _)
    )
}

/// Order-preserving bytes of an `i64`.
pub fn ordered_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

fn from_ordered_i64(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// The encoded entity key of each row; `None` where a key column is NULL.
pub fn encode_entity_keys(keys: &[ArrayRef]) -> Result<Vec<Option<Vec<u8>>>> {
    let n = keys.first().map_or(0, |a| a.len());
    let mut out: Vec<Option<Vec<u8>>> = vec![Some(Vec::new()); n];
    for column in keys {
        for (row, slot) in out.iter_mut().enumerate() {
            let Some(buffer) = slot else { continue };
            if column.is_null(row) {
                *slot = None;
                continue;
            }
            match column.data_type() {
                DataType::Int64 => buffer
                    .extend_from_slice(&ordered_i64(column.as_primitive::<Int64Type>().value(row))),
                DataType::Int32 => {
                    let v = column.as_primitive::<Int32Type>().value(row);
                    buffer.extend_from_slice(&((v as u32) ^ (1 << 31)).to_be_bytes());
                }
                DataType::Utf8 => {
                    let v = column.as_string::<i32>().value(row).as_bytes();
                    put_varint(buffer, v.len() as u64);
                    buffer.extend_from_slice(v);
                }
                DataType::Binary => {
                    let v = column.as_binary::<i32>().value(row);
                    put_varint(buffer, v.len() as u64);
                    buffer.extend_from_slice(v);
                }
                other => {
                    return Err(Error::UnsupportedKeyType {
                        data_type: other.to_string(),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Encodes one row: event time, created time and the features at `row`.
pub fn encode_row(
    out: &mut Vec<u8>,
    event_ts: i64,
    created: i64,
    features: &[ArrayRef],
    row: usize,
) -> Result<()> {
    out.extend_from_slice(&ordered_i64(event_ts));
    out.extend_from_slice(&ordered_i64(created));
    for column in features {
        if column.is_null(row) {
            out.push(0);
            continue;
        }
        out.push(1);
        let int = |v: i64, out: &mut Vec<u8>| put_varint(out, zigzag(v));
        match column.data_type() {
            DataType::Int8 => int(column.as_primitive::<Int8Type>().value(row).into(), out),
            DataType::Int16 => int(column.as_primitive::<Int16Type>().value(row).into(), out),
            DataType::Int32 => int(column.as_primitive::<Int32Type>().value(row).into(), out),
            DataType::Int64 => int(column.as_primitive::<Int64Type>().value(row), out),
            DataType::Date32 => int(column.as_primitive::<Date32Type>().value(row).into(), out),
            DataType::Date64 => int(column.as_primitive::<Date64Type>().value(row), out),
            DataType::Timestamp(TimeUnit::Second, _) => {
                int(column.as_primitive::<TimestampSecondType>().value(row), out)
            }
            DataType::Timestamp(TimeUnit::Millisecond, _) => int(
                column.as_primitive::<TimestampMillisecondType>().value(row),
                out,
            ),
            DataType::Timestamp(TimeUnit::Microsecond, _) => int(
                column.as_primitive::<TimestampMicrosecondType>().value(row),
                out,
            ),
            DataType::Timestamp(TimeUnit::Nanosecond, _) => int(
                column.as_primitive::<TimestampNanosecondType>().value(row),
                out,
            ),
            DataType::UInt8 => {
                put_varint(out, column.as_primitive::<UInt8Type>().value(row).into())
            }
            DataType::UInt16 => {
                put_varint(out, column.as_primitive::<UInt16Type>().value(row).into())
            }
            DataType::UInt32 => {
                put_varint(out, column.as_primitive::<UInt32Type>().value(row).into())
            }
            DataType::UInt64 => put_varint(out, column.as_primitive::<UInt64Type>().value(row)),
            DataType::Float32 => out.extend_from_slice(
                &column
                    .as_primitive::<Float32Type>()
                    .value(row)
                    .to_le_bytes(),
            ),
            DataType::Float64 => out.extend_from_slice(
                &column
                    .as_primitive::<Float64Type>()
                    .value(row)
                    .to_le_bytes(),
            ),
            DataType::Boolean => out.push(u8::from(column.as_boolean().value(row))),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                let v = match column.data_type() {
                    DataType::Utf8 => column.as_string::<i32>().value(row),
                    DataType::LargeUtf8 => column.as_string::<i64>().value(row),
                    _ => column.as_string_view().value(row),
                };
                put_varint(out, v.len() as u64);
                out.extend_from_slice(v.as_bytes());
            }
            DataType::Binary | DataType::LargeBinary => {
                let v: &[u8] = match column.data_type() {
                    DataType::Binary => column.as_binary::<i32>().value(row),
                    _ => column.as_binary::<i64>().value(row),
                };
                put_varint(out, v.len() as u64);
                out.extend_from_slice(v);
            }
            other => {
                return Err(Error::UnsupportedFeatureType {
                    data_type: other.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Event and created time of an encoded value.
pub fn decode_times(value: &[u8]) -> Result<(i64, i64)> {
    if value.len() < 16 {
        return Err(Error::CorruptValue {
            message: format!("{} bytes, shorter than the 16-byte header", value.len()),
        });
    }
    let ts = from_ordered_i64(value[..8].try_into().expect("8 bytes"));
    let created = from_ordered_i64(value[8..16].try_into().expect("8 bytes"));
    Ok((ts, created))
}

/// Reads values back into Arrow arrays, one per feature type; `None` values (keys not
/// found) become NULLs. `wanted[i]` says whether feature `i` is returned.
pub struct RowDecoder {
    types: Vec<DataType>,
}

impl RowDecoder {
    pub fn new(types: Vec<DataType>) -> Self {
        RowDecoder { types }
    }

    /// Decodes `values` into one array per feature type (all of them, in order).
    pub fn decode(&self, values: &[Option<&[u8]>]) -> Result<Vec<ArrayRef>> {
        // Sized for the rows at hand (Arrow's default is 1 024 values: a lookup of one
        // entity would allocate and zero kilobytes per feature).
        let rows = values.len();
        let mut builders: Vec<ColumnBuilder> = self
            .types
            .iter()
            .map(|t| ColumnBuilder::new(t, rows))
            .collect();
        for value in values {
            match value {
                None => builders.iter_mut().for_each(ColumnBuilder::append_null),
                Some(bytes) => {
                    let mut reader = Reader { bytes, at: 16 };
                    for builder in &mut builders {
                        builder.append(&mut reader)?;
                    }
                }
            }
        }
        Ok(builders.into_iter().map(ColumnBuilder::finish).collect())
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn corrupt(&self) -> Error {
        Error::CorruptValue {
            message: format!("truncated at byte {} of {}", self.at, self.bytes.len()),
        }
    }

    fn byte(&mut self) -> Result<u8> {
        let b = *self.bytes.get(self.at).ok_or_else(|| self.corrupt())?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.at.checked_add(n).ok_or_else(|| self.corrupt())?;
        let slice = self.bytes.get(self.at..end).ok_or_else(|| self.corrupt())?;
        self.at = end;
        Ok(slice)
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.corrupt())
    }
}

enum ColumnBuilder {
    Int(DataType, PrimitiveBuilder<Int64Type>),
    UInt(DataType, PrimitiveBuilder<UInt64Type>),
    F32(Float32Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Str(DataType, StringBuilder),
    Bin(DataType, BinaryBuilder),
}

impl ColumnBuilder {
    /// A builder for `rows` values of `data_type`.
    fn new(data_type: &DataType, rows: usize) -> Self {
        match data_type {
            DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
                ColumnBuilder::UInt(data_type.clone(), PrimitiveBuilder::with_capacity(rows))
            }
            DataType::Float32 => ColumnBuilder::F32(Float32Builder::with_capacity(rows)),
            DataType::Float64 => ColumnBuilder::F64(Float64Builder::with_capacity(rows)),
            DataType::Boolean => ColumnBuilder::Bool(BooleanBuilder::with_capacity(rows)),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnBuilder::Str(
                data_type.clone(),
                StringBuilder::with_capacity(rows, rows * 16),
            ),
            DataType::Binary | DataType::LargeBinary => ColumnBuilder::Bin(
                data_type.clone(),
                BinaryBuilder::with_capacity(rows, rows * 16),
            ),
            other => ColumnBuilder::Int(other.clone(), PrimitiveBuilder::with_capacity(rows)),
        }
    }

    fn append_null(&mut self) {
        match self {
            ColumnBuilder::Int(_, b) => b.append_null(),
            ColumnBuilder::UInt(_, b) => b.append_null(),
            ColumnBuilder::F32(b) => b.append_null(),
            ColumnBuilder::F64(b) => b.append_null(),
            ColumnBuilder::Bool(b) => b.append_null(),
            ColumnBuilder::Str(_, b) => b.append_null(),
            ColumnBuilder::Bin(_, b) => b.append_null(),
        }
    }

    fn append(&mut self, r: &mut Reader<'_>) -> Result<()> {
        if r.byte()? == 0 {
            self.append_null();
            return Ok(());
        }
        match self {
            ColumnBuilder::Int(_, b) => b.append_value(unzigzag(r.varint()?)),
            ColumnBuilder::UInt(_, b) => b.append_value(r.varint()?),
            ColumnBuilder::F32(b) => {
                b.append_value(f32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes")))
            }
            ColumnBuilder::F64(b) => {
                b.append_value(f64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes")))
            }
            ColumnBuilder::Bool(b) => b.append_value(r.byte()? != 0),
            ColumnBuilder::Str(_, b) => {
                let n = r.varint()? as usize;
                let bytes = r.take(n)?;
                b.append_value(std::str::from_utf8(bytes).map_err(|_| Error::CorruptValue {
                    message: "a string value is not UTF-8".into(),
                })?);
            }
            ColumnBuilder::Bin(_, b) => {
                let n = r.varint()? as usize;
                let bytes = r.take(n)?;
                b.append_value(bytes);
            }
        }
        Ok(())
    }

    /// The array, cast back to the feature's own type.
    fn finish(self) -> ArrayRef {
        let (array, target): (ArrayRef, DataType) = match self {
            ColumnBuilder::Int(t, mut b) => (Arc::new(b.finish()), t),
            ColumnBuilder::UInt(t, mut b) => (Arc::new(b.finish()), t),
            ColumnBuilder::F32(mut b) => (Arc::new(b.finish()), DataType::Float32),
            ColumnBuilder::F64(mut b) => (Arc::new(b.finish()), DataType::Float64),
            ColumnBuilder::Bool(mut b) => (Arc::new(b.finish()), DataType::Boolean),
            ColumnBuilder::Str(t, mut b) => (Arc::new(b.finish()), t),
            ColumnBuilder::Bin(t, mut b) => (Arc::new(b.finish()), t),
        };
        if array.data_type() == &target {
            return array;
        }
        // Same bits, narrower or tagged type: reinterpret integers, cast the rest.
        let data = array.to_data();
        match (&target, array.data_type()) {
            (DataType::Int64 | DataType::Date64 | DataType::Timestamp(_, _), DataType::Int64) => {
                make_array(
                    data.into_builder()
                        .data_type(target)
                        .build()
                        .expect("same physical layout"),
                )
            }
            _ => arrow::compute::cast(&array, &target).unwrap_or(array),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BooleanArray, Float64Array, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
    };

    #[test]
    fn ordered_bytes_sort_like_numbers() {
        let values = [i64::MIN, -5, -1, 0, 1, 1_700_000_000_000_000, i64::MAX];
        for pair in values.windows(2) {
            assert!(ordered_i64(pair[0]) < ordered_i64(pair[1]));
        }
    }

    #[test]
    fn rows_round_trip() {
        let features: Vec<ArrayRef> = vec![
            Arc::new(Float64Array::from(vec![Some(0.5), None])),
            Arc::new(Int64Array::from(vec![Some(-42), Some(7)])),
            Arc::new(Int32Array::from(vec![Some(3), Some(-3)])),
            Arc::new(StringArray::from(vec![Some("héllo"), Some("")])),
            Arc::new(BooleanArray::from(vec![Some(true), None])),
            Arc::new(TimestampMicrosecondArray::from(vec![Some(1), Some(2)]).with_timezone("UTC")),
        ];
        let mut values = Vec::new();
        for row in 0..2 {
            let mut out = Vec::new();
            encode_row(&mut out, 100 + row as i64, 7, &features, row).unwrap();
            values.push(out);
        }
        assert_eq!(decode_times(&values[1]).unwrap(), (101, 7));
        let types = features.iter().map(|a| a.data_type().clone()).collect();
        let refs: Vec<Option<&[u8]>> = vec![Some(&values[0]), None, Some(&values[1])];
        let decoded = RowDecoder::new(types).decode(&refs).unwrap();
        for (original, decoded) in features.iter().zip(&decoded) {
            assert_eq!(decoded.data_type(), original.data_type());
            assert_eq!(
                decoded.slice(0, 1).to_data(),
                original.slice(0, 1).to_data()
            );
            assert!(decoded.is_null(1));
            assert_eq!(
                decoded.slice(2, 1).to_data(),
                original.slice(1, 1).to_data()
            );
        }
    }

    #[test]
    fn null_keys_have_no_encoding() {
        let keys: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(vec![Some(1), None]))];
        let encoded = encode_entity_keys(&keys).unwrap();
        assert_eq!(encoded[0].as_deref(), Some(&ordered_i64(1)[..]));
        assert!(encoded[1].is_none());
    }
}

#[cfg(test)]
mod type_names {
    use arrow::datatypes::{DataType, TimeUnit};

    /// The registry stores view column types as Arrow displays them; they must parse back.
    #[test]
    fn displayed_types_parse_back() {
        for t in [
            DataType::Int64,
            DataType::Int32,
            DataType::Float64,
            DataType::Float32,
            DataType::Utf8,
            DataType::Utf8View,
            DataType::LargeUtf8,
            DataType::Binary,
            DataType::Boolean,
            DataType::Date32,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            DataType::UInt64,
        ] {
            let parsed: DataType = t.to_string().parse().unwrap();
            assert_eq!(parsed, t);
        }
    }
}
