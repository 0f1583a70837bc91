//! The table the suite prints.

pub struct Row {
    pub scenario: String,
    pub facepair: String,
    pub reference: String,
    pub ratio: String,
    pub target: String,
}

pub fn redact(url: &str) -> String {
    url.split('@').next_back().unwrap_or(url).to_owned()
}

pub fn print_table(rows: &[Row]) {
    let header = ["scenario", "facepair", "reference", "ratio", "target"];
    let cells: Vec<[&str; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.scenario.as_str(),
                &r.facepair,
                &r.reference,
                &r.ratio,
                &r.target,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: [&str; 5]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("| {} |", parts.join(" | "));
    };
    println!();
    line(header);
    println!(
        "|{}|",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for row in cells {
        line(row);
    }
}
