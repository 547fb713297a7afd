//! Registers a [`Source`] with DataFusion as a listing table over its file, folder or
//! glob, with the reader options its format needs.

use std::path::Path;

use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionContext};
use quiver_core::model::{Source, SourceFormat};

use crate::{Error, Result};

pub(crate) async fn register(
    ctx: &SessionContext,
    repo_root: &Path,
    source: &Source,
) -> Result<()> {
    let full = repo_root.join(&source.path);
    let location = full.to_string_lossy().to_string();
    let extension = file_extension(&full, source.format);
    let unreadable = |e: datafusion::error::DataFusionError| Error::UnreadableSource {
        source_name: source.name.clone(),
        path: source.path.clone(),
        message: e.to_string(),
    };
    match source.format {
        SourceFormat::Parquet => {
            let options = ParquetReadOptions::default().file_extension(&extension);
            ctx.register_parquet(&source.name, &location, options)
                .await
                .map_err(unreadable)?;
        }
        SourceFormat::Csv => {
            let mut options = CsvReadOptions::new().file_extension(&extension);
            if let Some(delimiter) = source.options.get("delimiter") {
                options = options.delimiter(delimiter.as_bytes()[0]);
            }
            if let Some(has_header) = source.options.get("has_header") {
                options = options.has_header(has_header == "true");
            }
            ctx.register_csv(&source.name, &location, options)
                .await
                .map_err(unreadable)?;
        }
        SourceFormat::Json => {
            let options = JsonReadOptions::default().file_extension(&extension);
            ctx.register_json(&source.name, &location, options)
                .await
                .map_err(unreadable)?;
        }
    }
    Ok(())
}

/// The extension filter DataFusion applies when listing: none for a single file or a
/// glob (the path already selects), the data files' own extension for a folder.
fn file_extension(full: &Path, format: SourceFormat) -> String {
    if !full.is_dir() {
        return String::new();
    }
    let mut names: Vec<String> = std::fs::read_dir(full)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .filter(|n| SourceFormat::from_extension(n) == Some(format))
        .find_map(|n| n.rsplit_once('.').map(|(_, ext)| format!(".{ext}")))
        .unwrap_or_else(|| format!(".{}", format.as_str()))
}
