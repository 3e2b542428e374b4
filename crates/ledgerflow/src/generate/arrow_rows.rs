//! Generated rows as Arrow batches in the canonical schemas, so generated
//! data goes through the same writers and readers as real data.

use std::sync::Arc;

use arrow::array::{ArrayRef, Decimal128Array, Int64Array, StringArray, TimestampMicrosecondArray};
use arrow::error::Result;
use arrow::record_batch::RecordBatch;

use super::chain::{Block, Tx};
use crate::catalog::schema::{blocks_schema, transactions_schema, UTC};

fn ints<T>(rows: &[T], f: impl Fn(&T) -> i64) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(rows.iter().map(f)))
}

fn opt_ints<T>(rows: &[T], f: impl Fn(&T) -> Option<i64>) -> ArrayRef {
    Arc::new(rows.iter().map(f).collect::<Int64Array>())
}

fn strs<T>(rows: &[T], f: impl Fn(&T) -> &str) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
}

fn times<T>(rows: &[T], f: impl Fn(&T) -> i64) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter_values(rows.iter().map(f)).with_timezone(UTC))
}

pub fn blocks_batch(blocks: &[Block]) -> Result<RecordBatch> {
    RecordBatch::try_new(
        blocks_schema(),
        vec![
            ints(blocks, |b| b.number),
            strs(blocks, |b| &b.hash),
            strs(blocks, |b| &b.parent_hash),
            times(blocks, |b| b.timestamp_micros),
            strs(blocks, |b| &b.miner),
            ints(blocks, |b| b.size),
            ints(blocks, |b| b.gas_limit),
            ints(blocks, |b| b.gas_used),
            opt_ints(blocks, |b| b.base_fee_per_gas),
            ints(blocks, |b| b.transaction_count),
        ],
    )
}

pub fn transactions_batch(txs: &[Tx]) -> Result<RecordBatch> {
    let value = Decimal128Array::from_iter_values(txs.iter().map(|t| t.value))
        .with_precision_and_scale(38, 0)?;
    RecordBatch::try_new(
        transactions_schema(),
        vec![
            strs(txs, |t| &t.hash),
            ints(txs, |t| t.block_number),
            strs(txs, |t| &t.block_hash),
            times(txs, |t| t.block_timestamp_micros),
            ints(txs, |t| t.transaction_index),
            strs(txs, |t| &t.from_address),
            Arc::new(
                txs.iter()
                    .map(|t| t.to_address.as_deref())
                    .collect::<StringArray>(),
            ),
            Arc::new(value),
            ints(txs, |t| t.gas),
            ints(txs, |t| t.gas_price),
            ints(txs, |t| t.receipt_gas_used),
            opt_ints(txs, |t| t.receipt_status),
            opt_ints(txs, |t| t.transaction_type),
        ],
    )
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Decimal128Type, Int64Type, TimestampMicrosecondType};
    use chrono::NaiveDate;

    use super::*;
    use crate::generate::chain::{day_blocks, GenParams};

    #[test]
    fn rows_round_trip() {
        let params = GenParams {
            seed: 7,
            scale: 0.001,
            reorg_rate: 0.0,
            ..Default::default()
        };
        let day = NaiveDate::from_ymd_opt(2024, 1, 2).expect("valid date");
        let generated: Vec<_> = day_blocks(&params, day, false).collect();
        let blocks: Vec<Block> = generated.iter().map(|g| g.block.clone()).collect();
        let mut txs: Vec<Tx> = generated.into_iter().flat_map(|g| g.txs).collect();
        txs.truncate(5);
        txs[1].to_address = None;
        txs[2].value = 10i128.pow(30) + 1;
        txs[3].receipt_status = None;

        let b = blocks_batch(&blocks).expect("blocks batch");
        assert_eq!(b.num_rows(), 7);
        assert_eq!(
            b.column(0).as_primitive::<Int64Type>().value(1),
            blocks[1].number
        );
        assert_eq!(
            b.column(2).as_string::<i32>().value(1),
            blocks[1].parent_hash
        );
        let ts = b.column(3).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(ts.value(0), blocks[0].timestamp_micros);
        assert_eq!(
            b.column(8).as_primitive::<Int64Type>().value(0),
            blocks[0].base_fee_per_gas.unwrap_or(-1)
        );

        let t = transactions_batch(&txs).expect("transactions batch");
        assert_eq!(t.num_rows(), 5);
        assert_eq!(t.column(0).as_string::<i32>().value(4), txs[4].hash);
        assert!(t.column(6).is_null(1));
        assert_eq!(
            t.column(6).as_string::<i32>().value(0),
            txs[0].to_address.as_deref().unwrap_or("")
        );
        assert_eq!(
            t.column(7).as_primitive::<Decimal128Type>().value(2),
            10i128.pow(30) + 1
        );
        assert!(t.column(11).is_null(3));
        assert_eq!(
            t.column(10).as_primitive::<Int64Type>().value(4),
            txs[4].receipt_gas_used
        );
    }
}
