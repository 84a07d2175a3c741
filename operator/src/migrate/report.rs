//! The migration report: for every Ingress and every one of its ingress-nginx annotations and
//! paths, whether it was carried over exactly, carried over with a stated difference, or not at
//! all (and why). Owned here so the text table and the JSON (`--report-format json`) are two
//! renderings of one value, and `--strict` asks that value, not the text.

use serde::Serialize;

/// How much of one input survived the migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    /// Same behaviour.
    Translated,
    /// Carried over; `detail` says what differs.
    Partial,
    /// Not carried over; `detail` says why.
    NotTranslated,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Translated => "translated",
            Status::Partial => "partial",
            Status::NotTranslated => "not translated",
        }
    }
}

/// One annotation, path or field of an Ingress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// The annotation name, or the field (`spec.rules[0].http.paths[1]`).
    pub subject: String,
    pub status: Status,
    /// What it became, what differs, or why it was dropped.
    pub detail: String,
}

impl Item {
    pub(super) fn new(
        subject: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            subject: subject.into(),
            status,
            detail: detail.into(),
        }
    }
}

/// Everything reported about one Ingress.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressReport {
    pub namespace: String,
    pub name: String,
    /// `file:line` of the Ingress, or where it was read from.
    pub source: String,
    /// The ingress class it belongs to (the Gateway it moved to has the same name).
    pub ingress_class: String,
    /// The worst status of its items.
    pub status: Status,
    /// `Kind namespace/name` of every object generated for it.
    pub resources: Vec<String>,
    pub items: Vec<Item>,
}

/// Item counts by status.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub ingresses: usize,
    pub translated: usize,
    pub partial: usize,
    pub not_translated: usize,
}

/// The whole report, Ingresses ordered by namespace and name.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub summary: Summary,
    pub ingresses: Vec<IngressReport>,
}

impl Report {
    pub(super) fn new(mut ingresses: Vec<IngressReport>) -> Self {
        ingresses.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut summary = Summary {
            ingresses: ingresses.len(),
            ..Summary::default()
        };
        for ingress in &mut ingresses {
            ingress.resources.sort();
            ingress.resources.dedup();
            ingress.status = ingress
                .items
                .iter()
                .map(|i| i.status)
                .max()
                .unwrap_or(Status::Translated);
            for item in &ingress.items {
                match item.status {
                    Status::Translated => summary.translated += 1,
                    Status::Partial => summary.partial += 1,
                    Status::NotTranslated => summary.not_translated += 1,
                }
            }
        }
        Self { summary, ingresses }
    }

    /// Whether anything was not translated (what `--strict` fails on).
    pub fn has_untranslated(&self) -> bool {
        self.summary.not_translated > 0
    }

    /// The report as JSON.
    ///
    /// # Errors
    ///
    /// Never in practice: every field serializes.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// A table a person reads: one block per Ingress, one row per item.
    pub fn to_text(&self) -> String {
        let mut rows = vec![[
            "INGRESS".to_owned(),
            "SUBJECT".to_owned(),
            "STATUS".to_owned(),
            "DETAIL".to_owned(),
        ]];
        for ingress in &self.ingresses {
            let id = format!("{}/{}", ingress.namespace, ingress.name);
            let resources = if ingress.resources.is_empty() {
                "nothing generated".to_owned()
            } else {
                format!("-> {}", ingress.resources.join(", "))
            };
            rows.push([
                id.clone(),
                format!("(ingress, class {})", ingress.ingress_class),
                ingress.status.label().to_owned(),
                format!("{} {resources}", ingress.source),
            ]);
            for item in &ingress.items {
                rows.push([
                    id.clone(),
                    item.subject.clone(),
                    item.status.label().to_owned(),
                    item.detail.clone(),
                ]);
            }
        }
        let widths: Vec<usize> = (0..3)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in rows {
            for (c, width) in widths.iter().enumerate() {
                out.push_str(&format!("{:<width$}  ", row[c]));
            }
            out.push_str(&row[3]);
            out.push('\n');
        }
        let s = &self.summary;
        out.push_str(&format!(
            "\n{} ingresses; {} items translated, {} partially translated, {} not translated\n",
            s.ingresses, s.translated, s.partial, s.not_translated
        ));
        out
    }
}
