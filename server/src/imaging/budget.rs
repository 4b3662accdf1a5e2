//! One process-wide budget of decode memory, counted in bytes, that every decode draws from, wherever it
//! runs (the decode pool or a model thread): a semaphore of KiB rather than of requests, so that eight small
//! JPEGs decode side by side while one 40 MP PNG waits for room. A reservation is the image's estimated
//! peak (`cost`), taken before the decode is queued and released when the decoded image has become a
//! tensor; waiting for room is bounded by the request's deadline.
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    error::{Error, Result},
    metrics,
};

/// The semaphore counts KiB: `acquire_many` takes a u32, which in bytes would cap a reservation at 4 GiB.
const UNIT: u64 = 1024;

#[derive(Clone)]
pub struct DecodeBudget {
    permits: Arc<Semaphore>,
    capacity_bytes: u64,
}

/// Decode memory held until dropped.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
    bytes: u64,
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        metrics::add_decode_memory(-(self.bytes as f64));
    }
}

impl DecodeBudget {
    pub fn new(capacity_bytes: u64) -> DecodeBudget {
        let units = (capacity_bytes / UNIT).clamp(1, u64::from(u32::MAX));
        metrics::set_decode_memory_limit(units * UNIT);
        DecodeBudget {
            permits: Arc::new(Semaphore::new(units as usize)),
            capacity_bytes: units * UNIT,
        }
    }

    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }

    /// Waits until `bytes` fit, in arrival order. A reservation larger than the whole budget could never be
    /// granted and is refused at once (the per-image limit is capped by the budget, so it does not happen
    /// for images that passed `ImageLimits::check`).
    pub async fn reserve(&self, bytes: u64) -> Result<Reservation> {
        let units = bytes.div_ceil(UNIT).max(1);
        if units * UNIT > self.capacity_bytes {
            return Err(Error::ImageMemory {
                bytes: Some(bytes),
                limit: self.capacity_bytes,
            });
        }
        let permit = self
            .permits
            .clone()
            .acquire_many_owned(units as u32)
            .await
            .map_err(Error::internal)?;
        metrics::add_decode_memory((units * UNIT) as f64);
        Ok(Reservation {
            _permit: permit,
            bytes: units * UNIT,
        })
    }

    /// Bytes not reserved now.
    pub fn available_bytes(&self) -> u64 {
        self.permits.available_permits() as u64 * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn reservations_wait_for_room_and_give_it_back() {
        let budget = DecodeBudget::new(10 * UNIT);
        let big = budget.reserve(8 * UNIT).await.unwrap();
        assert_eq!(budget.available_bytes(), 2 * UNIT);
        // 3 KiB does not fit next to 8: it waits until the big one is released.
        let waiting =
            tokio::time::timeout(Duration::from_millis(50), budget.reserve(3 * UNIT)).await;
        assert!(waiting.is_err(), "granted past the budget");
        drop(big);
        let small = budget.reserve(3 * UNIT).await.unwrap();
        assert_eq!(small.bytes(), 3 * UNIT);
        assert_eq!(budget.available_bytes(), 7 * UNIT);
    }

    #[tokio::test]
    async fn more_than_the_whole_budget_is_refused_at_once() {
        let budget = DecodeBudget::new(10 * UNIT);
        assert!(matches!(
            budget.reserve(10 * UNIT + 1).await,
            Err(Error::ImageMemory { .. })
        ));
        assert!(budget.reserve(10 * UNIT).await.is_ok());
    }
}
