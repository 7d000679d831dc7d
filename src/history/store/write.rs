//! Writing the history: each batch is appended to the journal in one
//! transaction (with the device records and new channels); when a batch
//! reaches a new minute, the closed minutes move from the journal into the
//! sensor-clustered `raw` table and the `agg` roll-ups in the same
//! transaction. Retention deletes by sensor.

use rusqlite::{params, Transaction};

use super::{tier_code, Store, StoreError};
use crate::history::{expired_before, Reading, Retention, Rollup, Tier};
use crate::registry::DeviceRecord;
use sensor_hub_protocol::DeviceId;

/// Journal rows appended by one statement.
const JOURNAL_ROWS: usize = 64;

/// `INSERT INTO journal` of `rows` rows (4 parameters each).
fn journal_insert(rows: usize) -> String {
    let mut sql = String::from("INSERT INTO journal (t_ms, device, channel, value) VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?)");
    }
    sql
}

impl Store {
    /// Writes a batch of readings (see [`Store::write_batch`]).
    pub fn write(&mut self, readings: &[Reading]) -> Result<usize, StoreError> {
        self.write_batch(readings, &[], &[])
    }

    /// Writes readings, the channels not seen before and the device records
    /// in one transaction, compacting the journal's closed minutes when
    /// the batch reaches a new minute. Returns the readings written (NaN
    /// and infinities are skipped).
    pub fn write_batch(
        &mut self,
        readings: &[Reading],
        devices: &[DeviceRecord],
        forgotten: &[DeviceId],
    ) -> Result<usize, StoreError> {
        let mut new_channels = Vec::new();
        let mut written = 0;
        let mut latest = 0;
        let tx = self.conn.transaction()?;
        {
            let mut delete = tx.prepare_cached("DELETE FROM devices WHERE id = ?1")?;
            for device in forgotten {
                delete.execute(params![device])?;
            }
            let mut save = tx.prepare_cached(
                "INSERT INTO devices (id, record) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET record = excluded.record",
            )?;
            for device in devices {
                let json = serde_json::to_string(device)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                save.execute(params![device.id, json])?;
            }
            let finite: Vec<&Reading> = readings.iter().filter(|r| r.value.is_finite()).collect();
            // Rows go in JOURNAL_ROWS at a time, through one statement: the
            // per-statement work is shared by many rows (measured: the
            // journal append was most of the writer thread's time).
            let mut append_many = tx.prepare_cached(&journal_insert(JOURNAL_ROWS))?;
            let mut append_one = tx.prepare_cached(&journal_insert(1))?;
            let mut chunks = finite.chunks_exact(JOURNAL_ROWS);
            for chunk in &mut chunks {
                for (i, r) in chunk.iter().enumerate() {
                    let at = i * 4;
                    append_many.raw_bind_parameter(at + 1, r.t_ms as i64)?;
                    append_many.raw_bind_parameter(at + 2, r.device)?;
                    append_many.raw_bind_parameter(at + 3, r.channel)?;
                    append_many.raw_bind_parameter(at + 4, r.value)?;
                }
                append_many.raw_execute()?;
            }
            for r in chunks.remainder() {
                append_one.execute(params![r.t_ms as i64, r.device, r.channel, r.value])?;
            }
            for r in &finite {
                written += 1;
                latest = latest.max(r.t_ms);
                if !self.channels.contains(&(r.device, r.channel)) {
                    new_channels.push((r.device, r.channel));
                }
            }
            new_channels.sort_unstable();
            new_channels.dedup();
            let mut channel = tx.prepare_cached(
                "INSERT OR IGNORE INTO channels (device, channel) VALUES (?1, ?2)",
            )?;
            for &(device, ch) in &new_channels {
                channel.execute(params![device, ch])?;
            }
        }
        // Compact whenever the batch's minute differs from the last one
        // compacted, in either direction: after the wall clock steps back
        // (NTP on a board without a real-time clock), waiting for it to
        // pass the old minute again would let the journal grow for as long
        // as the step was.
        let cut = Tier::Minute.bucket_start(latest);
        let compacting = !readings.is_empty() && cut != self.last_cut_ms;
        if compacting {
            compact(&tx, cut)?;
        }
        tx.commit()?;
        if compacting {
            self.last_cut_ms = cut;
        }
        self.channels.extend(new_channels);
        Ok(written)
    }

    /// Copies the write-ahead log into the database file and empties it,
    /// so that after a clean stop the `.db` file alone holds everything
    /// (one file to back up).
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Deletes what each tier no longer keeps at `now_ms`; returns rows deleted.
    pub fn expire(&mut self, now_ms: u64, retention: &Retention) -> Result<usize, StoreError> {
        let raw_cut = expired_before(Tier::Raw, now_ms, retention) as i64;
        let tx = self.conn.transaction()?;
        let mut deleted = tx.execute("DELETE FROM journal WHERE t_ms < ?1", params![raw_cut])?;
        {
            // Per sensor, so each delete is a range of the primary key.
            let mut sensors = tx.prepare_cached("SELECT device, channel FROM channels")?;
            let sensors = sensors
                .query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, u8>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut raw = tx.prepare_cached(
                "DELETE FROM raw WHERE device = ?1 AND channel = ?2 AND t_ms < ?3",
            )?;
            let mut agg = tx.prepare_cached(
                "DELETE FROM agg WHERE tier = ?1 AND device = ?2 AND channel = ?3 AND bucket_ms < ?4",
            )?;
            for (device, channel) in sensors {
                deleted += raw.execute(params![device, channel, raw_cut])?;
                for tier in [Tier::Minute, Tier::Hour] {
                    let cut = expired_before(tier, now_ms, retention) as i64;
                    deleted += agg.execute(params![tier_code(tier), device, channel, cut])?;
                }
            }
        }
        tx.commit()?;
        Ok(deleted)
    }
}

/// Moves the journal's readings before `cut_ms` into `raw` and folds them
/// into the minute and hour aggregates (merged with stored rows: a reading
/// may arrive for a bucket already written, e.g. after a clock step).
fn compact(tx: &Transaction<'_>, cut_ms: u64) -> Result<(), StoreError> {
    let cut = cut_ms as i64;
    let mut rollup = Rollup::new();
    {
        let mut read = tx.prepare_cached(
            "SELECT id, t_ms, device, channel, value FROM journal WHERE t_ms < ?1",
        )?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO raw (device, channel, t_ms, id, value) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut rows = read.query(params![cut])?;
        while let Some(row) = rows.next()? {
            let (id, t_ms, device, channel, value): (i64, i64, u32, u8, f64) = (
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            );
            insert.execute(params![device, channel, t_ms, id, value])?;
            rollup.add(&Reading {
                device,
                channel,
                t_ms: t_ms as u64,
                value,
            });
        }
    }
    let mut upsert = tx.prepare_cached(
        "INSERT INTO agg (tier, device, channel, bucket_ms, count, min, max, sum, last, last_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (tier, device, channel, bucket_ms) DO UPDATE SET
           count = count + excluded.count,
           min = min(min, excluded.min),
           max = max(max, excluded.max),
           sum = sum + excluded.sum,
           last = CASE WHEN excluded.last_ms >= last_ms THEN excluded.last ELSE last END,
           last_ms = max(last_ms, excluded.last_ms)",
    )?;
    for (key, a) in rollup.drain() {
        upsert.execute(params![
            tier_code(key.tier),
            key.device,
            key.channel,
            key.bucket_start_ms as i64,
            a.count as i64,
            a.min,
            a.max,
            a.sum,
            a.last,
            a.last_ms as i64
        ])?;
    }
    tx.execute("DELETE FROM journal WHERE t_ms < ?1", params![cut])?;
    Ok(())
}
