//! RFC 3339 UTC timestamps, `YYYY-MM-DDTHH:MM:SSZ` or with milliseconds
//! `YYYY-MM-DDTHH:MM:SS.mmmZ`: the one formatter of the workspace (the
//! agent's audit log, the controller's store metadata). Holds no secret.

use std::time::{SystemTime, UNIX_EPOCH};

/// `secs` since the epoch in UTC, with `.mmm` when `millis` is given.
pub fn rfc3339(secs: i64, millis: Option<u32>) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let fraction = millis.map(|m| format!(".{m:03}")).unwrap_or_default();
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{fraction}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Now, in UTC, with milliseconds when `millis`.
pub fn now_rfc3339(millis: bool) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(
        i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
        millis.then(|| now.subsec_millis()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0, None), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(0, Some(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, Some(5)), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(951_782_400, None), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339(1_700_000_000, Some(123)),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(rfc3339(1_700_000_000, None), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(-1, None), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn now_has_the_shape() {
        let s = now_rfc3339(true);
        assert_eq!(s.len(), "2023-11-14T22:13:20.123Z".len(), "{s}");
        assert!(s.ends_with('Z') && s.as_bytes()[10] == b'T', "{s}");
        assert_eq!(now_rfc3339(false).len(), "2023-11-14T22:13:20Z".len());
    }
}
