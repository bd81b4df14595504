//! The `/stats/queries` log: a bounded ring buffer of served item queries.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One served `GET /items/{id}`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct QueryRecord {
    /// Milliseconds since the Unix epoch when the request arrived (before the
    /// pool wait).
    pub t_ms: u64,
    /// The requested id; `null` when the path segment was not an integer.
    pub id: Option<i64>,
    /// HTTP status answered (200, 404 or 500).
    pub status: u16,
    /// Request arrival to response, in whole milliseconds (pool wait included).
    pub duration_ms: u64,
    /// Time spent waiting for a pool connection, in whole milliseconds
    /// (extension of the contract).
    pub pool_wait_ms: u64,
    /// Bytes of response body sent: 0 for a `304 Not Modified` (extension of
    /// the contract).
    pub bytes: u64,
}

/// Filter for [`QueryLog::snapshot`].
#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub(crate) struct QueryFilter {
    /// Only records with `t_ms >= since_ms`.
    pub(crate) since_ms: Option<u64>,
    /// Only records for this id.
    pub(crate) id: Option<i64>,
}

/// Bounded log; the oldest record is dropped when full.
pub(crate) struct QueryLog {
    capacity: usize,
    records: Mutex<VecDeque<QueryRecord>>,
}

impl QueryLog {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            // Grows on demand: a million records is ~48 MB we need not reserve.
            records: Mutex::new(VecDeque::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<QueryRecord>> {
        // A panic while holding the lock cannot leave the deque inconsistent.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn push(&self, record: QueryRecord) {
        let mut records = self.lock();
        if records.len() >= self.capacity {
            records.pop_front();
        }
        records.push_back(record);
    }

    pub(crate) fn snapshot(&self, filter: QueryFilter) -> Vec<QueryRecord> {
        let records = self.lock();
        // Records are pushed at completion, so `t_ms` (arrival) is only
        // roughly ordered: filter everything rather than binary-search.
        records
            .iter()
            .filter(|r| filter.since_ms.is_none_or(|s| r.t_ms >= s))
            .filter(|r| filter.id.is_none_or(|id| r.id == Some(id)))
            .copied()
            .collect()
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t_ms: u64, id: i64) -> QueryRecord {
        QueryRecord {
            t_ms,
            id: Some(id),
            status: 200,
            duration_ms: 1,
            pool_wait_ms: 0,
            bytes: 0,
        }
    }

    #[test]
    fn bounded_and_filtered() {
        let log = QueryLog::new(3);
        for i in 1..=5 {
            log.push(rec(i * 10, i as i64 % 2));
        }
        let all = log.snapshot(QueryFilter::default());
        assert_eq!(all.iter().map(|r| r.t_ms).collect::<Vec<_>>(), [30, 40, 50]);
        let f = QueryFilter {
            since_ms: Some(40),
            id: Some(1),
        };
        assert_eq!(log.snapshot(f), [rec(50, 1)]);
        log.clear();
        assert!(log.snapshot(QueryFilter::default()).is_empty());
    }
}
