//! Numbers and tables for people: binary byte units, throughput, aligned columns.

use std::time::Duration;

/// `bytes` in the largest binary unit that keeps the number at least 1, with one decimal
/// when it is not whole: `512 B`, `4 KiB`, `1.5 GiB`.
pub(crate) fn bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut unit = 0;
    while unit + 1 < UNITS.len() && bytes >= 1 << (10 * (unit + 1)) {
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes} B");
    }
    let value = bytes as f64 / (1u64 << (10 * unit)) as f64;
    let text = format!("{value:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text} {}", UNITS[unit])
}

/// Decimal megabytes per second (10⁶ bytes/s), one decimal.
pub(crate) fn mb_per_s(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    format!("{:.1} MB/s", bytes as f64 / secs / 1e6)
}

/// Seconds with two decimals: `0.42 s`.
pub(crate) fn secs(elapsed: Duration) -> String {
    format!("{:.2} s", elapsed.as_secs_f64())
}

/// A byte string for a terminal: printable ASCII as is, anything else as `\xNN`.
pub(crate) fn printable(raw: &[u8]) -> String {
    raw.escape_ascii().to_string()
}

/// Rows of cells printed with every column as wide as its widest cell, two spaces apart.
#[derive(Debug)]
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
    /// Columns aligned to the right (numbers).
    right: Vec<bool>,
}

impl Table {
    /// A table whose first row is `header`.
    pub(crate) fn new(header: &[&str]) -> Self {
        Table { rows: vec![header.iter().map(|s| s.to_string()).collect()], right: vec![false; header.len()] }
    }

    /// Aligns column `i` to the right.
    pub(crate) fn right(mut self, i: usize) -> Self {
        if let Some(r) = self.right.get_mut(i) {
            *r = true;
        }
        self
    }

    /// Adds a row.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as lines of text, trailing spaces trimmed.
    pub(crate) fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let width = |c: usize| self.rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max();
        let widths: Vec<usize> = (0..columns).map(|c| width(c).unwrap_or(0)).collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c > 0 {
                    line.push_str("  ");
                }
                let pad = widths[c].saturating_sub(cell.chars().count());
                if self.right.get(c).copied().unwrap_or(false) {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(4096), "4 KiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(256 << 20), "256 MiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(mb_per_s(64 << 20, Duration::from_millis(500)), "134.2 MB/s");
        assert_eq!(secs(Duration::from_millis(1234)), "1.23 s");
        assert_eq!(printable(b"host=a\x01\xff"), "host=a\\x01\\xff");
    }

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["NAME", "SIZE", "X"]).right(1);
        t.row(vec!["e1.0".into(), "4 KiB".into(), "".into()]);
        t.row(vec!["e10.200".into(), "256 MiB".into(), "y".into()]);
        assert_eq!(t.render(), "NAME        SIZE  X\ne1.0       4 KiB\ne10.200  256 MiB  y\n");
    }
}
