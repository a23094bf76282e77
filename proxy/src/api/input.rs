//! The values of the INSi JSON API, typed at the edge: each one parsed once, from its
//! JSON member, into a type that can only hold a valid value, or refused with
//! [`ProxyError::InvalidField`] naming the member and the rule it breaks.
//!
//! Names follow how INS traits are written (the traits INSi returns, the ones an
//! internal system stores): upper-case letters A to Z without diacritics, words
//! separated by one space, hyphen, double hyphen (two names joined) or apostrophe; the
//! rule tlsi-ins applies before calling INSi (`^[A-Z]+(?:(?:-{1,2}|[' ])[A-Z]+)*$`). A
//! first name is one item of the list: no space inside. Dates are `YYYY-MM-DD`, where a
//! "lunar" date (unknown day, or unknown month and day: `00`) is allowed, as INSi's
//! `DateLunaire` and the carte Vitale carry them.

use std::fmt;

use time::{Date, Month, OffsetDateTime};

use super::invalid;
use crate::fault::ProxyError;
use crate::state::InsiMode;

/// Longest name accepted (birth name, or one first name).
const MAX_NAME: usize = 100;
/// Most first names in one search (each one may cost one more request to INSi).
pub const MAX_FIRST_NAMES: usize = 10;

/// Whether `s` is written as an INS trait: letters A-Z, words separated by one of
/// `-`, `--`, `'`, or (when `spaces`) a space.
fn ins_name(s: &str, spaces: bool) -> bool {
    let bytes = s.as_bytes();
    if bytes.is_empty() || !bytes[0].is_ascii_uppercase() {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_uppercase() {
            i += 1;
            continue;
        }
        let separator = match b {
            b'-' if bytes.get(i + 1) == Some(&b'-') => 2,
            b'-' | b'\'' => 1,
            b' ' if spaces => 1,
            _ => return false,
        };
        i += separator;
        if !bytes.get(i).is_some_and(u8::is_ascii_uppercase) {
            return false;
        }
    }
    true
}

const NAME_RULE: &str = "upper-case letters A to Z without accents, words separated by one space, hyphen, double hyphen or apostrophe (as INS traits are written: DE LA FONTAINE, MARTIN--DUPONT, O'NEILL)";

/// A birth name (`NomNaissance`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirthName(String);

impl BirthName {
    pub fn parse(field: &str, raw: &str) -> Result<Self, ProxyError> {
        if raw.len() > MAX_NAME {
            return Err(invalid(field, format!("longer than {MAX_NAME} characters")));
        }
        if !ins_name(raw, true) {
            return Err(invalid(field, format!("must be written in {NAME_RULE}")));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One first name of the list (`JEAN-PIERRE` is one; `JEAN PIERRE` is two items).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstName(String);

impl FirstName {
    pub fn parse(field: &str, raw: &str) -> Result<Self, ProxyError> {
        if raw.len() > MAX_NAME {
            return Err(invalid(field, format!("longer than {MAX_NAME} characters")));
        }
        if raw.contains(' ') {
            return Err(invalid(
                field,
                "holds a space: give each first name as its own item of the list",
            ));
        }
        if !ins_name(raw, false) {
            return Err(invalid(
                field,
                "must be written in upper-case letters A to Z without accents, parts joined by a hyphen or an apostrophe (JEAN-PIERRE)",
            ));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The list of first names, in the order of the identity document: 1 to
    /// [`MAX_FIRST_NAMES`], no name twice.
    pub fn parse_list(field: &str, raw: &[String]) -> Result<Vec<Self>, ProxyError> {
        if raw.is_empty() {
            return Err(invalid(
                field,
                "is empty: give at least the first first name",
            ));
        }
        if raw.len() > MAX_FIRST_NAMES {
            return Err(invalid(
                field,
                format!("more than {MAX_FIRST_NAMES} first names"),
            ));
        }
        let mut out: Vec<Self> = Vec::with_capacity(raw.len());
        for (i, name) in raw.iter().enumerate() {
            let item = Self::parse(&format!("{field}[{i}]"), name)?;
            if out.contains(&item) {
                return Err(invalid(
                    format!("{field}[{i}]"),
                    "appears twice in the list",
                ));
            }
            out.push(item);
        }
        Ok(out)
    }
}

/// `Sexe`: `M` or `F`, as INS traits carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sex {
    M,
    F,
}

impl Sex {
    pub fn parse(field: &str, raw: &str) -> Result<Self, ProxyError> {
        match raw {
            "M" => Ok(Self::M),
            "F" => Ok(Self::F),
            _ => Err(invalid(field, "must be \"M\" or \"F\"")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::M => "M",
            Self::F => "F",
        }
    }
}

/// A birth date `YYYY-MM-DD`, possibly lunar (`YYYY-MM-00`, `YYYY-00-00`), not in the
/// future.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirthDate(String);

impl BirthDate {
    pub fn parse(field: &str, raw: &str) -> Result<Self, ProxyError> {
        Self::parse_at(field, raw, OffsetDateTime::now_utc().date())
    }

    fn parse_at(field: &str, raw: &str, today: Date) -> Result<Self, ProxyError> {
        let shape = || {
            invalid(
                field,
                "must be a date YYYY-MM-DD (a lunar date YYYY-MM-00 or YYYY-00-00 when the day, or the month and day, are unknown)",
            )
        };
        let b = raw.as_bytes();
        if b.len() != 10
            || b[4] != b'-'
            || b[7] != b'-'
            || !b
                .iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
        {
            return Err(shape());
        }
        let number = |range: std::ops::Range<usize>| raw[range].parse::<u16>().map_err(|_| shape());
        let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
        if year < 1800 {
            return Err(invalid(field, "a year before 1800"));
        }
        if month > 12 || day > 31 || (month == 0 && day != 0) {
            return Err(invalid(
                field,
                "no such month or day (a lunar date writes 00 for an unknown day, or for an unknown month and day)",
            ));
        }
        let m = u8::try_from(month)
            .ok()
            .and_then(|m| Month::try_from(m).ok());
        let date = match m {
            Some(m) if day != 0 => Some(
                Date::from_calendar_date(i32::from(year), m, day as u8)
                    .map_err(|_| invalid(field, "no such day in that month"))?,
            ),
            _ => None,
        };
        let future = match date {
            Some(d) => d > today,
            None => {
                let (y, m) = (i32::from(year), month);
                y > today.year() || (y == today.year() && m > u16::from(u8::from(today.month())))
            }
        };
        if future {
            return Err(invalid(field, "is in the future"));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An INSEE code of a commune (or of a country, `99XXX`, for people born abroad): the
/// COG `LieuNaissance`, 5 characters, Corsica's `2A` / `2B` allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InseeCode(String);

impl InseeCode {
    pub fn parse(field: &str, raw: &str) -> Result<Self, ProxyError> {
        let b = raw.as_bytes();
        let ok = b.len() == 5
            && (b.iter().all(u8::is_ascii_digit)
                || (b[0] == b'2'
                    && matches!(b[1], b'A' | b'B')
                    && b[2..].iter().all(u8::is_ascii_digit)));
        if !ok {
            return Err(invalid(
                field,
                "must be an INSEE code (COG) of 5 characters: digits, or 2A / 2B then 3 digits for Corsica (99XXX for a country)",
            ));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A NIR, 13 characters: sex (1, 2; 3, 4, 7, 8 for temporary numbers), year, month,
/// département (`2A` / `2B` for Corsica), commune, order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nir(String);

impl Nir {
    pub fn parse(field: &str, raw: &str) -> Result<Self, ProxyError> {
        let b = raw.as_bytes();
        let ok = b.len() == 13
            && matches!(b[0], b'1' | b'2' | b'3' | b'4' | b'7' | b'8')
            && b.iter().enumerate().all(|(i, c)| {
                c.is_ascii_digit()
                    || (i == 5 && *c == b'2' && matches!(b[6], b'A' | b'B'))
                    || (i == 6 && b[5] == b'2' && matches!(*c, b'A' | b'B'))
            });
        if !ok {
            return Err(invalid(
                field,
                "must be a NIR of 13 characters: digits (2A / 2B for a Corsican département), starting with 1, 2, 3, 4, 7 or 8",
            ));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its key: 97 - (NIR mod 97), `2A` counted as 19 and `2B` as 18.
    pub fn key(&self) -> String {
        let numeric = self.0.replacen("2A", "19", 1).replacen("2B", "18", 1);
        let n: u64 = numeric.parse().unwrap_or(0);
        format!("{:02}", 97 - n % 97)
    }

    /// Checks the key given with it.
    pub fn check_key(&self, field: &str, key: &str) -> Result<(), ProxyError> {
        if key.len() != 2 || !key.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(field, "must be the NIR's key: 2 digits"));
        }
        if key != self.key() {
            return Err(invalid(
                field,
                "does not match the NIR (97 - NIR mod 97): check both against the carte Vitale",
            ));
        }
        Ok(())
    }
}

/// The birth rank of twins on one carte Vitale (`RangNaissance`): 1 to 9.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BirthRank(u8);

impl BirthRank {
    pub fn parse(field: &str, raw: i64) -> Result<Self, ProxyError> {
        u8::try_from(raw)
            .ok()
            .filter(|r| (1..=9).contains(r))
            .map(Self)
            .ok_or_else(|| invalid(field, "must be a birth rank from 1 to 9"))
    }
}

impl fmt::Display for BirthRank {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `auto` (INSI-AUTO certificate) or `manu` (INSI-MANU), when given.
pub fn mode(field: &str, raw: Option<&str>) -> Result<Option<InsiMode>, ProxyError> {
    match raw {
        None => Ok(None),
        Some("auto") => Ok(Some(InsiMode::Auto)),
        Some("manu") => Ok(Some(InsiMode::Manu)),
        Some(_) => Err(invalid(
            field,
            "must be \"auto\" (automated calls, INSI-AUTO certificate) or \"manu\" (a person's calls, INSI-MANU)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused<T: fmt::Debug>(r: Result<T, ProxyError>) -> String {
        match r {
            Err(ProxyError::InvalidField { field, .. }) => field,
            other => panic!("expected InvalidField, got {other:?}"),
        }
    }

    #[test]
    fn names_are_ins_traits() {
        for ok in [
            "MARTIN",
            "DE LA FONTAINE",
            "MARTIN--DUPONT",
            "O'NEILL",
            "SAINT-EXUPERY",
        ] {
            BirthName::parse("birth_name", ok).expect(ok);
        }
        for bad in [
            "",
            "Martin",
            "MARTÍN",
            "HÉLÈNE",
            " MARTIN",
            "MARTIN ",
            "DE  LA",
            "MARTIN---DUPONT",
            "MARTIN-",
            "'NEILL",
            "MARTIN2",
            "MARTIN\u{0}",
        ] {
            assert_eq!(refused(BirthName::parse("birth_name", bad)), "birth_name");
        }
        FirstName::parse("f", "JEAN-PIERRE").expect("compound");
        assert_eq!(refused(FirstName::parse("f", "JEAN PIERRE")), "f");
        let list = ["CLAIRE".to_string(), "claire".to_string()];
        assert_eq!(
            refused(FirstName::parse_list("first_names", &list)),
            "first_names[1]"
        );
        let list = ["CLAIRE".to_string(), "CLAIRE".to_string()];
        assert_eq!(
            refused(FirstName::parse_list("first_names", &list)),
            "first_names[1]"
        );
        assert_eq!(
            refused(FirstName::parse_list("first_names", &[])),
            "first_names"
        );
        assert_eq!(
            refused(BirthName::parse("birth_name", &"A".repeat(101))),
            "birth_name"
        );
    }

    #[test]
    fn dates_may_be_lunar_never_impossible_or_future() {
        let today = Date::from_calendar_date(2026, Month::June, 15).expect("date");
        for ok in [
            "2007-05-14",
            "1950-00-00",
            "1950-07-00",
            "2024-02-29",
            "2026-06-15",
            "2026-06-00",
        ] {
            BirthDate::parse_at("birth_date", ok, today).expect(ok);
        }
        for bad in [
            "2007-5-14",
            "14/05/2007",
            "2007-13-01",
            "2007-02-30",
            "2023-02-29",
            "1950-00-12",
            "2026-06-16",
            "2026-07-00",
            "1799-01-01",
            "2007-05-14T00:00",
            "２００７-05-14",
        ] {
            assert_eq!(
                refused(BirthDate::parse_at("birth_date", bad, today)),
                "birth_date",
                "{bad}"
            );
        }
    }

    #[test]
    fn insee_codes_and_nirs() {
        for ok in ["75056", "2A004", "2B033", "99352"] {
            InseeCode::parse("birth_place", ok).expect(ok);
        }
        for bad in ["7505", "750566", "2C004", "2a004", "A5056", ""] {
            assert_eq!(refused(InseeCode::parse("birth_place", bad)), "birth_place");
        }
        let nir = Nir::parse("nir", "2070585756270").expect("NIR");
        assert_eq!(nir.key(), "97");
        nir.check_key("nir_key", "97").expect("key");
        assert_eq!(refused(nir.check_key("nir_key", "12")), "nir_key");
        assert_eq!(refused(nir.check_key("nir_key", "9")), "nir_key");
        let corsica = Nir::parse("nir", "295082A004123").expect("Corsica");
        assert_eq!(corsica.key().len(), 2);
        for bad in [
            "207058575627",
            "20705857562701",
            "507058575627X",
            "9070585756270",
            "2070A85756270",
        ] {
            assert_eq!(refused(Nir::parse("nir", bad)), "nir", "{bad}");
        }
        assert!(BirthRank::parse("birth_rank", 1).is_ok());
        assert_eq!(refused(BirthRank::parse("birth_rank", 0)), "birth_rank");
        assert_eq!(refused(BirthRank::parse("birth_rank", 10)), "birth_rank");
        assert_eq!(
            mode("mode", Some("auto")).expect("auto"),
            Some(InsiMode::Auto)
        );
        assert_eq!(refused(mode("mode", Some("AUTO"))), "mode");
    }
}
