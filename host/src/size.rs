//! [`Size`]: a size in bytes as the command line takes and shows it.

use std::fmt;

/// A size in bytes, as flags take it: a number with an optional unit (`B`,
/// `KiB`, `MiB`, `GiB`; `K`, `KB`, `M`, `MB`, `G`, `GB` mean the same binary
/// multiples), and as help shows it (`256KiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub usize);

impl Size {
    /// A positive size.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let multiple: usize = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            other => return Err(format!("unknown size unit {other:?} (use KiB, MiB or GiB)")),
        };
        digits
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_mul(multiple))
            .filter(|&bytes| bytes > 0)
            .map(Self)
            .ok_or_else(|| format!("{text:?} is not a positive size (e.g. 512KiB, 4MiB)"))
    }

    /// A size as [`Size::parse`] takes it, or 0.
    pub fn parse_or_zero(text: &str) -> Result<Self, String> {
        if text.trim() == "0" {
            Ok(Self(0))
        } else {
            Self::parse(text)
        }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self(bytes) = *self;
        match [(30, "GiB"), (20, "MiB"), (10, "KiB")]
            .into_iter()
            .find(|&(shift, _)| bytes >= 1 << shift && bytes % (1 << shift) == 0)
        {
            Some((shift, unit)) => write!(f, "{}{unit}", bytes >> shift),
            None => write!(f, "{bytes}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(Size::parse("4096"), Ok(Size(4096)));
        assert_eq!(Size::parse("512KiB"), Ok(Size(512 << 10)));
        assert_eq!(Size::parse("4 MiB"), Ok(Size(4 << 20)));
        assert_eq!(Size::parse("1g"), Ok(Size(1 << 30)));
        assert!(Size::parse("0").is_err());
        assert!(Size::parse("1.5MiB").is_err());
        assert!(Size::parse("4PB").is_err());
        assert!(Size::parse("MiB").is_err());
        assert_eq!(Size::parse_or_zero("0"), Ok(Size(0)));
        assert_eq!(Size::parse_or_zero("2MiB"), Ok(Size(2 << 20)));
        assert!(Size::parse_or_zero("-1").is_err());
        // Help shows a size as it would be written.
        for shown in ["256KiB", "2MiB", "1GiB", "1000", "0"] {
            let size = Size::parse_or_zero(shown).expect("a size");
            assert_eq!(size.to_string(), shown);
        }
    }
}
