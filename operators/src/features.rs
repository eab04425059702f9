//! Features operator state: per customer, daily buckets of payment count and amount over
//! the last 30 days of event time.
//!
//! Bytes per customer: 4 (newest day) + 30 × 4 (counts) + 30 × 8 (sums) = 364, plus the
//! key and hash-table overhead. The 1/7/30-day windows are calendar days ending with the
//! payment's day (inclusive); the fraud issue refines them to exact rolling windows.

use std::collections::HashMap;

use paystream_domain::time::MILLIS_PER_DAY;
use paystream_models::Features;
use serde::{Deserialize, Serialize};

pub const CUSTOMER_WINDOW_DAYS: usize = 30;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct CustomerDays {
    newest_day: i64,
    counts: [u32; CUSTOMER_WINDOW_DAYS],
    sums_minor: [i64; CUSTOMER_WINDOW_DAYS],
}

impl CustomerDays {
    fn new(day: i64) -> CustomerDays {
        CustomerDays { newest_day: day, counts: [0; CUSTOMER_WINDOW_DAYS], sums_minor: [0; CUSTOMER_WINDOW_DAYS] }
    }

    fn slot(day: i64) -> usize {
        day.rem_euclid(CUSTOMER_WINDOW_DAYS as i64) as usize
    }

    fn add(&mut self, day: i64, amount_minor: i64) {
        if day > self.newest_day {
            let cleared = (day - self.newest_day).min(CUSTOMER_WINDOW_DAYS as i64);
            for d in (day - cleared + 1)..=day {
                self.counts[Self::slot(d)] = 0;
                self.sums_minor[Self::slot(d)] = 0;
            }
            self.newest_day = day;
        }
        if day <= self.newest_day - CUSTOMER_WINDOW_DAYS as i64 {
            return; // older than every window: it can no longer count
        }
        let slot = Self::slot(day);
        self.counts[slot] += 1;
        self.sums_minor[slot] = self.sums_minor[slot].saturating_add(amount_minor);
    }
}

#[derive(Default, Serialize, Deserialize)]
pub struct CustomerFeatureState {
    customers: HashMap<String, CustomerDays>,
}

fn average(count: u32, sum: i64) -> i64 {
    if count == 0 { 0 } else { sum / i64::from(count) }
}

impl CustomerFeatureState {
    pub fn add(&mut self, customer: &str, event_time_ms: i64, amount_minor: i64) {
        let day = event_time_ms.div_euclid(MILLIS_PER_DAY);
        match self.customers.get_mut(customer) {
            Some(days) => days.add(day, amount_minor),
            None => {
                let mut days = CustomerDays::new(day);
                days.add(day, amount_minor);
                self.customers.insert(customer.to_string(), days);
            }
        }
    }

    /// Features of a payment as if it had been added (windows include it).
    pub fn features_including(&self, customer: &str, event_time_ms: i64, amount_minor: i64) -> Features {
        let day = event_time_ms.div_euclid(MILLIS_PER_DAY);
        // One pass over the kept days, newest first, accumulating the 1/7/30-day windows.
        // Windows include this payment; add the stored days in one pass.
        let (mut count_1d, mut count_7d, mut count_30d) = (1u32, 1u32, 1u32);
        let (mut sum_1d, mut sum_7d, mut sum_30d) = (amount_minor, amount_minor, amount_minor);
        if let Some(days) = self.customers.get(customer) {
            let oldest_kept = days.newest_day - CUSTOMER_WINDOW_DAYS as i64 + 1;
            for d in (day - 29).max(oldest_kept)..=day.min(days.newest_day) {
                let slot = CustomerDays::slot(d);
                let (count, sum) = (days.counts[slot], days.sums_minor[slot]);
                let age = day - d;
                count_30d += count;
                sum_30d = sum_30d.saturating_add(sum);
                if age < 7 {
                    count_7d += count;
                    sum_7d = sum_7d.saturating_add(sum);
                }
                if age < 1 {
                    count_1d += count;
                    sum_1d = sum_1d.saturating_add(sum);
                }
            }
        }
        let seconds_in_day = event_time_ms.rem_euclid(MILLIS_PER_DAY) / 1_000;
        // 1970-01-01 was a Thursday: day 0 → weekday 3 (Monday = 0).
        let weekday = (day + 3).rem_euclid(7);
        Features {
            amount_minor,
            during_weekend: weekday >= 5,
            during_night: seconds_in_day < 6 * 3_600,
            customer_count_1d: count_1d,
            customer_count_7d: count_7d,
            customer_count_30d: count_30d,
            customer_average_minor_1d: average(count_1d, sum_1d),
            customer_average_minor_7d: average(count_7d, sum_7d),
            customer_average_minor_30d: average(count_30d, sum_30d),
        }
    }

    pub fn len(&self) -> usize {
        self.customers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.customers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = MILLIS_PER_DAY;

    #[test]
    fn windows_by_hand() {
        let mut state = CustomerFeatureState::default();
        // Day 100: 10.00 and 20.00; day 95: 30.00; day 80: 40.00 (outside 7d, inside 30d).
        state.add("c", 100 * DAY + 1, 10_00);
        state.add("c", 100 * DAY + 2, 20_00);
        state.add("c", 95 * DAY, 30_00);
        state.add("c", 80 * DAY, 40_00);
        let f = state.features_including("c", 100 * DAY + 3_600_000, 60_00);
        assert_eq!((f.customer_count_1d, f.customer_average_minor_1d), (3, 30_00));
        assert_eq!((f.customer_count_7d, f.customer_average_minor_7d), (4, 30_00));
        assert_eq!((f.customer_count_30d, f.customer_average_minor_30d), (5, 32_00));
        // Day 129 still sees day 100 in its 30-day window; day 130 does not.
        assert_eq!(state.features_including("c", 129 * DAY, 1).customer_count_30d, 3);
        assert_eq!(state.features_including("c", 130 * DAY, 1).customer_count_30d, 1);
        let unknown = state.features_including("nobody", 0, 5_00);
        assert_eq!((unknown.customer_count_30d, unknown.customer_average_minor_30d), (1, 5_00));
    }

    #[test]
    fn old_buckets_are_cleared_when_days_advance() {
        let mut state = CustomerFeatureState::default();
        state.add("c", 0, 1_00);
        state.add("c", 30 * DAY, 2_00); // reuses day 0's slot
        let f = state.features_including("c", 30 * DAY, 0);
        assert_eq!(f.customer_count_30d, 2); // day 30's payment + this one
        // An event older than the kept window is ignored.
        state.add("c", 0, 9_00);
        assert_eq!(state.features_including("c", 30 * DAY, 0).customer_count_30d, 2);
    }

    #[test]
    fn calendar_flags() {
        let state = CustomerFeatureState::default();
        // 2018-04-01 was a Sunday.
        let sunday_night = paystream_domain::time::parse_rfc3339_ms("2018-04-01T02:00:00Z").unwrap();
        let f = state.features_including("c", sunday_night, 1);
        assert!(f.during_weekend && f.during_night);
        let monday_noon = paystream_domain::time::parse_rfc3339_ms("2018-04-02T12:00:00Z").unwrap();
        let f = state.features_including("c", monday_noon, 1);
        assert!(!f.during_weekend && !f.during_night);
    }
}
