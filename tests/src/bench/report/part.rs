//! A part of the benchmark a run may measure alone (the connection-table
//! walks, the active-active lab): its figures sit between their own markers
//! in results.md and the README, and under their own key in results.json,
//! so a run that measured only it leaves the rest as it was, and one that
//! did not measure it keeps its previous figures.

use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::Machine;

pub struct Part {
    /// Its key in results.json.
    pub key: &'static str,
    pub start: &'static str,
    pub end: &'static str,
}

impl Part {
    fn block(&self, body: &str) -> String {
        format!("{}\n{body}{}\n", self.start, self.end)
    }

    /// What stands between the markers in `text`, markers included.
    fn existing_block<'a>(&self, text: &'a str) -> Option<&'a str> {
        let start = text.find(self.start)?;
        let end = start + text[start..].find(self.end)? + self.end.len();
        Some(&text[start..end])
    }

    /// `text` with its block replaced by `new`, or `new` appended.
    fn with_block(&self, text: &str, new: &str) -> String {
        match self.existing_block(text) {
            Some(old) => text.replacen(old, new.trim_end(), 1),
            None => format!("{}\n\n{}\n", text.trim_end(), new.trim_end()),
        }
    }

    /// Puts this run's figures (`this_run`: the JSON and the section of
    /// results.md) or, not measured this run, the previous ones into
    /// results.json and results.md as they are about to be written.
    pub fn merge(
        &self,
        this_run: Option<(Value, String)>,
        machine: &Machine,
        (old_json, old_md): (Option<&Value>, &str),
        json: &mut Value,
        md: &mut String,
    ) {
        match (&this_run, old_json.and_then(|o| o.get(self.key))) {
            (Some((figures, _)), _) => {
                json[self.key] = figures.clone();
                json[self.key]["measured"] = json!(measured_on(machine));
            }
            (None, Some(old)) => json[self.key] = old.clone(),
            (None, None) => {}
        }
        let new = this_run.map(|(_, section)| self.block(&section));
        if let Some(b) = new.as_deref().or_else(|| self.existing_block(old_md)) {
            *md = self.with_block(md, b);
        }
    }

    /// Rewrites the README's block with `summary`; true if it did (the
    /// README has the block).
    pub fn write_readme(&self, summary: &str, readme: &Path) -> Result<bool> {
        let Ok(text) = std::fs::read_to_string(readme) else {
            return Ok(false);
        };
        if self.existing_block(&text).is_none() {
            return Ok(false);
        }
        std::fs::write(readme, self.with_block(&text, &self.block(summary)))
            .with_context(|| format!("writing {}", readme.display()))?;
        Ok(true)
    }
}

/// When and where, for a run that may have measured only one part.
pub fn measured_on(machine: &Machine) -> String {
    format!(
        "Measured {} UTC on {}, load average {} (commit {})",
        machine.date,
        machine.summary(),
        machine.load_before,
        machine.commit
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PART: Part = Part { key: "x", start: "<!-- x:start -->", end: "<!-- x:end -->" };

    #[test]
    fn the_block_is_replaced_or_appended() {
        let (start, end) = (PART.start, PART.end);
        let new = PART.block("new\n");
        let text = format!("a\n{start}\nold\n{end}\nb\n");
        assert_eq!(PART.with_block(&text, &new), format!("a\n{start}\nnew\n{end}\nb\n"));
        assert_eq!(PART.with_block("a\n", &new), format!("a\n\n{new}"));
        // Carried over: the same block again.
        let carried = PART.existing_block(&text).unwrap().to_owned();
        assert_eq!(PART.with_block("c\n", &carried), format!("c\n\n{carried}\n"));
        assert_eq!(PART.existing_block(&text), Some(format!("{start}\nold\n{end}").as_str()));
    }
}
