//! Plain-text tables for `status` and `connections`: each column as wide as its widest cell, so
//! long listen addresses or names never push the columns after them out of line.

/// Which side of its column a cell keeps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// A table being filled row by row.
#[derive(Debug)]
pub(crate) struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

/// Space between two columns.
const GAP: &str = "  ";

impl Table {
    /// A table with these column headers.
    pub(crate) fn new(columns: &[(&'static str, Align)]) -> Self {
        Self { columns: columns.to_vec(), rows: Vec::new() }
    }

    /// Adds a row, one cell per column. A cell with several lines (one listen address per line)
    /// makes the row that many lines tall, the other cells blank below their first line.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.columns.len(), "one cell per column");
        self.rows.push(cells);
    }

    /// The header and the rows, one string per line, without trailing spaces.
    pub(crate) fn lines(&self) -> Vec<String> {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.columns.iter().map(|(h, _)| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = cell.lines().map(width).fold(*w, usize::max);
            }
        }
        let render = |cells: &[&str]| {
            let mut line = String::new();
            for (i, ((cell, w), (_, align))) in cells.iter().zip(&widths).zip(&self.columns).enumerate() {
                if i > 0 {
                    line.push_str(GAP);
                }
                let pad = " ".repeat(w - width(cell));
                match align {
                    Align::Left => {
                        line.push_str(cell);
                        line.push_str(&pad);
                    }
                    Align::Right => {
                        line.push_str(&pad);
                        line.push_str(cell);
                    }
                }
            }
            line.trim_end().to_string()
        };
        let headers: Vec<&str> = self.columns.iter().map(|(h, _)| *h).collect();
        let mut out = vec![render(&headers)];
        for row in &self.rows {
            let split: Vec<Vec<&str>> = row.iter().map(|c| c.lines().collect()).collect();
            let height = split.iter().map(Vec::len).max().unwrap_or(0).max(1);
            for n in 0..height {
                let cells: Vec<&str> = split.iter().map(|lines| lines.get(n).copied().unwrap_or("")).collect();
                out.push(render(&cells));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_widest_cell_and_tall_cells_continue_below() {
        let mut t = Table::new(&[("pid", Align::Left), ("listen", Align::Left), ("conns", Align::Right)]);
        t.row(vec!["7".into(), "websocket://127.0.0.1:17272\n127.0.0.1:2900".into(), "12345".into()]);
        t.row(vec!["123456".into(), "-".into(), "0".into()]);
        assert_eq!(
            t.lines(),
            [
                "pid     listen                       conns",
                "7       websocket://127.0.0.1:17272  12345",
                "        127.0.0.1:2900",
                "123456  -                                0",
            ]
        );
    }
}
