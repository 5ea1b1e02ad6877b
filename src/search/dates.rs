//! Dates named in questions — "two weeks ago", "in the past month", "last
//! Saturday", "yesterday", "in March" — resolved against the moment the
//! question is asked into a window of time, so that items created inside it
//! rank higher (date-aware scoring). The words that named the date are
//! reported so the query can leave them out: "weeks" and "ago" say when,
//! not what.
//!
//! Only English expressions are recognised; text without one gives no
//! window and leaves the ranking as it was.

use std::ops::Range;

use time::{Duration, Month, OffsetDateTime, Weekday};

/// A span of time a question names.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Window {
    /// Start, Unix seconds (inclusive).
    pub start: i64,
    /// End, Unix seconds (exclusive).
    pub end: i64,
    /// Byte ranges of the words of the text that named it.
    pub spans: Vec<Range<usize>>,
}

const DAY: i64 = 86_400;

/// Length of a unit word, in days; `None` for other words.
fn unit_days(word: &str) -> Option<i64> {
    match word.trim_end_matches('s') {
        "day" => Some(1),
        "week" => Some(7),
        "month" => Some(30),
        "year" => Some(365),
        _ => None,
    }
}

/// A count word: digits, one to twelve, "a"/"an", "few" (3), "couple" (2), "several" (3).
fn count(word: &str) -> Option<i64> {
    if let Ok(n) = word.parse::<i64>() {
        return (1..=1000).contains(&n).then_some(n);
    }
    let n = match word {
        "a" | "an" | "one" => 1,
        "two" | "couple" => 2,
        "three" | "few" | "several" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        "ten" => 10,
        "eleven" => 11,
        "twelve" => 12,
        _ => return None,
    };
    Some(n)
}

fn weekday(word: &str) -> Option<Weekday> {
    Some(match word {
        "monday" => Weekday::Monday,
        "tuesday" => Weekday::Tuesday,
        "wednesday" => Weekday::Wednesday,
        "thursday" => Weekday::Thursday,
        "friday" => Weekday::Friday,
        "saturday" => Weekday::Saturday,
        "sunday" => Weekday::Sunday,
        _ => return None,
    })
}

fn month(word: &str) -> Option<Month> {
    Some(match word {
        "January" => Month::January,
        "February" => Month::February,
        "March" => Month::March,
        "April" => Month::April,
        "May" => Month::May,
        "June" => Month::June,
        "July" => Month::July,
        "August" => Month::August,
        "September" => Month::September,
        "October" => Month::October,
        "November" => Month::November,
        "December" => Month::December,
        _ => return None,
    })
}

/// The words of `text` (runs of letters and digits) with their byte ranges.
fn words(text: &str) -> Vec<(Range<usize>, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s..i, &text[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s..text.len(), &text[s..]));
    }
    out
}

/// The first date expression of `text`, resolved against `as_of`.
pub(super) fn window(text: &str, as_of: OffsetDateTime) -> Option<Window> {
    let words = words(text);
    let lower: Vec<String> = words.iter().map(|(_, w)| w.to_lowercase()).collect();
    let now = as_of.unix_timestamp();
    let at = |i: usize| lower.get(i).map(String::as_str).unwrap_or("");
    let span = |from: usize, to: usize| -> Vec<Range<usize>> {
        words[from..=to].iter().map(|(r, _)| r.clone()).collect()
    };
    for (i, (_, word)) in words.iter().enumerate() {
        // "N units ago", "a few weeks ago", "a couple of months ago".
        if at(i) == "ago" && i >= 1 {
            if let Some(days) = unit_days(at(i - 1)) {
                let mut first = i - 1;
                let mut n = 1;
                let mut j = i - 1;
                if j >= 1 && at(j - 1) == "of" {
                    j -= 1;
                }
                if j >= 1 {
                    if let Some(c) = count(at(j - 1)) {
                        n = c;
                        first = j - 1;
                        if first >= 1
                            && matches!(at(first), "few" | "couple")
                            && at(first - 1) == "a"
                        {
                            first -= 1;
                        }
                    }
                }
                let centre = now - n * days * DAY;
                let half = (days * DAY / 2).max(DAY);
                return Some(Window {
                    start: centre - half,
                    end: centre + half,
                    spans: span(first, i),
                });
            }
        }
        // "last/past N units", "the past few months", "last week", "this year".
        if matches!(at(i), "last" | "past" | "this") {
            let mut j = i + 1;
            let mut n = None;
            if matches!(at(j), "a" | "couple") && matches!(at(j + 1), "few" | "couple" | "of") {
                j += 1;
                if at(j) == "couple" && at(j + 1) == "of" {
                    j += 1;
                }
            }
            if let Some(c) = count(at(j)) {
                if unit_days(at(j + 1)).is_some() {
                    n = Some(c);
                    j += 1;
                }
            }
            if let Some(days) = unit_days(at(j)) {
                let back = match (at(i), n) {
                    ("this", _) => days,
                    (_, Some(n)) => n * days + 1,
                    // "last week" may be the calendar week before this one.
                    (_, None) => 2 * days,
                };
                return Some(Window {
                    start: now - back * DAY,
                    end: now + DAY,
                    spans: span(i, j),
                });
            }
            if at(i) == "last" {
                if let Some(day) = weekday(at(j)) {
                    let mut back = 1;
                    while (as_of - Duration::days(back)).weekday() != day {
                        back += 1;
                    }
                    let centre = now - back * DAY;
                    return Some(Window {
                        start: centre - DAY,
                        end: centre + DAY,
                        spans: span(i, j),
                    });
                }
            }
        }
        match at(i) {
            "yesterday" => {
                return Some(Window {
                    start: now - 2 * DAY,
                    end: now,
                    spans: span(i, i),
                })
            }
            "today" | "tonight" => {
                return Some(Window {
                    start: now - DAY,
                    end: now + DAY,
                    spans: span(i, i),
                })
            }
            _ => {}
        }
        // "in March", "during February": the latest such month up to now.
        // A month without a preposition ("the March release", "May I…")
        // is more likely a name than a date.
        if let Some(m) = month(word) {
            let preposition = i >= 1 && matches!(at(i - 1), "in" | "during" | "of" | "since");
            if !preposition {
                continue;
            }
            let year = if m as u8 <= as_of.month() as u8 {
                as_of.year()
            } else {
                as_of.year() - 1
            };
            let start = time::Date::from_calendar_date(year, m, 1).ok()?;
            let next = if m == Month::December {
                time::Date::from_calendar_date(year + 1, Month::January, 1).ok()?
            } else {
                time::Date::from_calendar_date(year, m.next(), 1).ok()?
            };
            return Some(Window {
                start: start.midnight().assume_utc().unix_timestamp(),
                end: next.midnight().assume_utc().unix_timestamp(),
                spans: span(i - 1, i),
            });
        }
    }
    None
}

/// `text` with the window's words blanked out.
pub(super) fn without(text: &str, window: &Window) -> String {
    let mut out = text.to_string();
    for r in &window.spans {
        out.replace_range(r.clone(), &" ".repeat(r.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wednesday 2023-05-31 12:00 UTC.
    fn as_of() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_685_534_400).unwrap()
    }

    fn days_back(w: &Window) -> (f64, f64) {
        let now = as_of().unix_timestamp();
        (
            (now - w.start) as f64 / DAY as f64,
            (now - w.end) as f64 / DAY as f64,
        )
    }

    fn named(text: &str) -> String {
        let w = window(text, as_of()).unwrap();
        without(text, &w)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn counts_back_from_the_question_date() {
        let w = window("What did I buy two weeks ago?", as_of()).unwrap();
        assert_eq!(days_back(&w), (17.5, 10.5));
        assert_eq!(named("What did I buy two weeks ago?"), "What did I buy ?");
        let w = window("the concert 3 days ago", as_of()).unwrap();
        assert_eq!(days_back(&w), (4.0, 2.0));
        let w = window("a few months ago I moved", as_of()).unwrap();
        assert_eq!(days_back(&w), (105.0, 75.0));
        assert_eq!(named("a few months ago I moved"), "I moved");
    }

    #[test]
    fn periods_reach_back_to_the_question_date() {
        let w = window("How many plants did I acquire in the last month?", as_of()).unwrap();
        assert_eq!(days_back(&w), (60.0, -1.0));
        assert_eq!(
            named("How many plants did I acquire in the last month?"),
            "How many plants did I acquire in the ?"
        );
        let w = window("cakes baked in the past two weeks", as_of()).unwrap();
        assert_eq!(days_back(&w), (15.0, -1.0));
        let w = window("spent in the past few months", as_of()).unwrap();
        assert_eq!(days_back(&w), (91.0, -1.0));
        let w = window("weddings this year", as_of()).unwrap();
        assert_eq!(days_back(&w), (365.0, -1.0));
    }

    #[test]
    fn weekdays_and_days() {
        // The Saturday before Wednesday 31 May 2023 is the 27th.
        let w = window("what did I cook last Saturday", as_of()).unwrap();
        assert_eq!(days_back(&w), (5.0, 3.0));
        let w = window("the film I saw yesterday", as_of()).unwrap();
        assert_eq!(days_back(&w), (2.0, 0.0));
    }

    #[test]
    fn months_are_the_latest_up_to_the_question() {
        let w = window("Which museums did I visit in February?", as_of()).unwrap();
        let feb = time::Date::from_calendar_date(2023, Month::February, 1).unwrap();
        assert_eq!(w.start, feb.midnight().assume_utc().unix_timestamp());
        assert_eq!(w.end - w.start, 28 * DAY);
        assert_eq!(
            named("Which museums did I visit in February?"),
            "Which museums did I visit ?"
        );
        // A month after the question's month is last year's.
        let w = window("the trip in August", as_of()).unwrap();
        let aug = time::Date::from_calendar_date(2022, Month::August, 1).unwrap();
        assert_eq!(w.start, aug.midnight().assume_utc().unix_timestamp());
    }

    #[test]
    fn text_without_a_date_gives_no_window() {
        for text in [
            "May I ask what the best recipe was?",
            "notes for the March release",
            "the last item on my list",
            "how did the march go",
            "days of thunder",
            "",
        ] {
            assert_eq!(window(text, as_of()), None, "{text}");
        }
    }
}
