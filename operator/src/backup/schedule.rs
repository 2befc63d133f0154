//! Five-field cron schedules (`minute hour day-of-month month day-of-week`, UTC) as in
//! Kubernetes CronJobs: `*`, numbers, lists `a,b`, ranges `a-b` and steps `*/n`, `a-b/n`.
//! Day-of-month and day-of-week combine like cron: when both are restricted, either matches.

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};

/// Why a schedule does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("a schedule has five fields (minute hour day-of-month month day-of-week), found {0}")]
    FieldCount(usize),
    #[error("{field}: {value:?} is not a number, `*`, a list, a range or a step")]
    Syntax { field: &'static str, value: String },
    #[error("{field}: {value} is outside {min}..={max}")]
    Range {
        field: &'static str,
        value: u32,
        min: u32,
        max: u32,
    },
}

/// A parsed schedule: the allowed values of each field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    days_star: bool,
    weekdays_star: bool,
}

const FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
];

fn parse_field(
    text: &str,
    (field, min, max): (&'static str, u32, u32),
) -> Result<Vec<bool>, ScheduleError> {
    let syntax = || ScheduleError::Syntax {
        field,
        value: text.to_owned(),
    };
    let num = |s: &str| -> Result<u32, ScheduleError> {
        let v: u32 = s.parse().map_err(|_| syntax())?;
        if v < min || v > max {
            return Err(ScheduleError::Range {
                field,
                value: v,
                min,
                max,
            });
        }
        Ok(v)
    };
    let mut allowed = vec![false; max as usize + 1];
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().map_err(|_| syntax())?),
            None => (part, 1),
        };
        if step == 0 {
            return Err(syntax());
        }
        let (lo, hi) = match range {
            "*" => (min, max),
            r => match r.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => {
                    let v = num(r)?;
                    (v, if part.contains('/') { max } else { v })
                }
            },
        };
        if lo > hi {
            return Err(syntax());
        }
        for v in (lo..=hi).step_by(step as usize) {
            allowed[v as usize] = true;
        }
    }
    Ok(allowed)
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(ScheduleError::FieldCount(fields.len()));
        }
        let mut weekdays = parse_field(fields[4], FIELDS[4])?;
        if weekdays[7] {
            weekdays[0] = true; // 7 is Sunday too
        }
        Ok(Self {
            minutes: parse_field(fields[0], FIELDS[0])?,
            hours: parse_field(fields[1], FIELDS[1])?,
            days: parse_field(fields[2], FIELDS[2])?,
            months: parse_field(fields[3], FIELDS[3])?,
            weekdays,
            days_star: fields[2] == "*",
            weekdays_star: fields[4] == "*",
        })
    }

    fn matches(&self, t: &DateTime<Utc>) -> bool {
        let day = self.days[t.day() as usize];
        let weekday = self.weekdays[t.weekday().num_days_from_sunday() as usize];
        let day_ok = match (self.days_star, self.weekdays_star) {
            (true, true) => true,
            (false, true) => day,
            (true, false) => weekday,
            (false, false) => day || weekday,
        };
        self.minutes[t.minute() as usize]
            && self.hours[t.hour() as usize]
            && self.months[t.month() as usize]
            && day_ok
    }

    /// The first scheduled minute strictly after `after`, looking at most ~5 years ahead.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut t = after.with_second(0).and_then(|t| t.with_nanosecond(0))? + Duration::minutes(1);
        for _ in 0..(5 * 366 * 24 * 60) {
            if !self.months[t.month() as usize] {
                // Skip to the first minute of the next month.
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                t = t
                    .with_day(1)?
                    .with_hour(0)?
                    .with_minute(0)?
                    .with_month(m)?
                    .with_year(y)?;
                continue;
            }
            if self.matches(&t) {
                return Some(t);
            }
            t += Duration::minutes(1);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .unwrap_or_else(|| panic!("bad date"))
    }

    #[test]
    fn daily_hourly_and_steps() {
        let daily = Schedule::parse("0 3 * * *").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            daily.next_after(at(2026, 1, 1, 2, 59)),
            Some(at(2026, 1, 1, 3, 0))
        );
        assert_eq!(
            daily.next_after(at(2026, 1, 1, 3, 0)),
            Some(at(2026, 1, 2, 3, 0))
        );
        let every15 = Schedule::parse("*/15 * * * *").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            every15.next_after(at(2026, 1, 1, 0, 1)),
            Some(at(2026, 1, 1, 0, 15))
        );
        let list = Schedule::parse("5,35 8-9 * * *").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            list.next_after(at(2026, 1, 1, 9, 35)),
            Some(at(2026, 1, 2, 8, 5))
        );
    }

    #[test]
    fn weekdays_months_and_either_day_rule() {
        // 2026-01-04 is a Sunday.
        let sunday = Schedule::parse("0 0 * * 7").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            sunday.next_after(at(2026, 1, 1, 0, 0)),
            Some(at(2026, 1, 4, 0, 0))
        );
        let yearly = Schedule::parse("0 0 1 1 *").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            yearly.next_after(at(2026, 1, 1, 0, 0)),
            Some(at(2027, 1, 1, 0, 0))
        );
        let either = Schedule::parse("0 0 10 * 0").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            either.next_after(at(2026, 1, 5, 0, 0)),
            Some(at(2026, 1, 10, 0, 0))
        );
        let feb30 = Schedule::parse("0 0 30 2 *").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(feb30.next_after(at(2026, 1, 1, 0, 0)), None);
    }

    #[test]
    fn bad_schedules_say_why() {
        assert_eq!(Schedule::parse("* * *"), Err(ScheduleError::FieldCount(3)));
        assert!(matches!(
            Schedule::parse("60 * * * *"),
            Err(ScheduleError::Range {
                field: "minute",
                ..
            })
        ));
        assert!(matches!(
            Schedule::parse("x * * * *"),
            Err(ScheduleError::Syntax { .. })
        ));
        assert!(matches!(
            Schedule::parse("*/0 * * * *"),
            Err(ScheduleError::Syntax { .. })
        ));
    }
}
