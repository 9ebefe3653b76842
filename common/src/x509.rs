//! The one piece of X.509 the workspace reads by hand: a certificate's
//! validity period (`notBefore`, `notAfter`), for the store clients'
//! pinned certificates (`store_tls`) and the agent's warning about its own
//! listener certificate. A bounded DER walk that returns `None` on anything
//! malformed and never panics. Certificates carry no secret; nothing here
//! logs.

/// `notBefore` and `notAfter` of an X.509 certificate, in seconds since the
/// epoch: Certificate -> tbsCertificate -> (`[0]` version) serialNumber,
/// signature, issuer, validity.
pub fn validity(cert: &[u8]) -> Option<(u64, u64)> {
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, cert, _) = der_element(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = der_element(cert)? else {
        return None;
    };
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = der_element(rest)?.2;
    }
    for expected in [0x02, SEQUENCE, SEQUENCE] {
        let (tag, _, next) = der_element(rest)?;
        if tag != expected {
            return None;
        }
        rest = next;
    }
    let (SEQUENCE, validity, _) = der_element(rest)? else {
        return None;
    };
    let (tag, before, rest) = der_element(validity)?;
    let not_before = der_time(tag, before)?;
    let (tag, after, _) = der_element(rest)?;
    Some((not_before, der_time(tag, after)?))
}

/// One DER element: (tag, content, what follows). `None` when malformed.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, 0x17) or GeneralizedTime (`YYYYMMDDHHMMSSZ`,
/// 0x18), as certificates write them, in seconds since the epoch.
fn der_time(tag: u8, text: &[u8]) -> Option<u64> {
    let digits = text.strip_suffix(b"Z")?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |s: &[u8]| {
        s.iter()
            .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'))
    };
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy = num(&digits[..2]);
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (0x18, 14) => (num(&digits[..4]), &digits[4..]),
        _ => return None,
    };
    let (month, day) = (num(&rest[0..2]), num(&rest[2..4]));
    let (hour, minute, second) = (num(&rest[4..6]), num(&rest[6..8]), num(&rest[8..10]));
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Days from 1970-01-01 to the date (proleptic Gregorian calendar).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_times_are_read_as_certificates_write_them() {
        assert_eq!(der_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(der_time(0x17, b"000301000000Z"), Some(951_868_800));
        assert_eq!(der_time(0x18, b"20000301000000Z"), Some(951_868_800));
        assert_eq!(der_time(0x17, b"200101000000Z"), Some(1_577_836_800));
        assert_eq!(der_time(0x18, b"20200102000000Z"), Some(1_577_923_200));
        assert_eq!(der_time(0x18, b"20240229235959Z"), Some(1_709_251_199));
        assert_eq!(der_time(0x17, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(der_time(0x18, b"99991231235959Z"), Some(253_402_300_799));
        for (tag, bad) in [
            (0x17, &b"2001010000Z"[..]),
            (0x17, b"200101000000"),
            (0x17, b"2001010000+0Z"),
            (0x18, b"200101000000Z"),
            (0x17, b"201301000000Z"),
            (0x17, b"200100000000Z"),
            (0x17, b"200101250000Z"),
            (0x18, b"19690101000000Z"),
            (0x04, b"200101000000Z"),
            (0x17, b""),
        ] {
            assert_eq!(der_time(tag, bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn malformed_der_is_no_validity_and_never_a_panic() {
        assert_eq!(validity(&[]), None);
        assert_eq!(validity(&[0x30]), None);
        assert_eq!(validity(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(validity(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(validity(&[0x30, 0x02, 0x30, 0x00]), None);
        // Every prefix of a real certificate, and every byte flipped.
        let dir = tempfile::tempdir().unwrap();
        let (pem, _) = test_support::self_signed_cert(
            dir.path(),
            "c",
            "n.example",
            test_support::Validity::Current,
        );
        let cert = crate::store_tls::pem_certs(&std::fs::read(pem).unwrap())
            .unwrap()
            .remove(0)
            .to_vec();
        assert!(validity(&cert).is_some());
        for end in 0..cert.len() {
            let _ = validity(&cert[..end]);
        }
        for i in 0..cert.len() {
            let mut c = cert.clone();
            c[i] ^= 0xff;
            let _ = validity(&c);
        }
    }
}
