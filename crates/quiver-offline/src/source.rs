//! Registers a [`Source`] with DataFusion as a listing table over its file, folder or
//! glob, with the reader options its format needs.

use std::path::Path;
use std::sync::Arc;

use datafusion::datasource::file_format::options::ReadOptions as _;
use datafusion::datasource::listing::{ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionContext};
use quiver_core::model::{Source, SourceFormat};

use crate::{Error, Result};

pub(crate) async fn register(
    ctx: &SessionContext,
    repo_root: &Path,
    source: &Source,
) -> Result<()> {
    let unreadable = |e: datafusion::error::DataFusionError| Error::UnreadableSource {
        source_name: source.name.clone(),
        path: source.path.clone(),
        message: e.strip_backtrace().to_string(),
    };
    let (url, extension) = if crate::storage::is_object_url(&source.path) {
        let (location, extension) = object_location(&source.path, source.format);
        (
            object_listing_url(&location).map_err(unreadable)?,
            extension,
        )
    } else {
        let full = repo_root.join(&source.path);
        let extension = file_extension(&full, source.format);
        let location = full.to_string_lossy().to_string();
        (
            ListingTableUrl::parse(location).map_err(unreadable)?,
            extension,
        )
    };
    let (config, table_options) = (ctx.copied_config(), ctx.copied_table_options());
    let options = match source.format {
        SourceFormat::Parquet => ParquetReadOptions::default()
            .file_extension(&extension)
            .to_listing_options(&config, table_options),
        SourceFormat::Csv => {
            let mut options = CsvReadOptions::new().file_extension(&extension);
            if let Some(delimiter) = source.options.get("delimiter") {
                options = options.delimiter(delimiter.as_bytes()[0]);
            }
            if let Some(has_header) = source.options.get("has_header") {
                options = options.has_header(has_header == "true");
            }
            options.to_listing_options(&config, table_options)
        }
        SourceFormat::Json => JsonReadOptions::default()
            .file_extension(&extension)
            .to_listing_options(&config, table_options),
    };
    let schema = options
        .infer_schema(&ctx.state(), &url)
        .await
        .map_err(unreadable)?;
    let table = ListingTable::try_new(
        ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(schema),
    )
    .map_err(unreadable)?;
    ctx.register_table(source.name.as_str(), Arc::new(table))
        .map_err(unreadable)?;
    Ok(())
}

/// The listing URL of an object-store location: a glob in its last segments is split
/// off as the listing's pattern (DataFusion parses globs only in local paths).
fn object_listing_url(location: &str) -> datafusion::error::Result<ListingTableUrl> {
    let external = |e: Box<dyn std::error::Error + Send + Sync>| {
        datafusion::error::DataFusionError::External(e)
    };
    let Some(first_glob) = location.find(['*', '?', '[']) else {
        return ListingTableUrl::parse(location);
    };
    let split = location[..first_glob].rfind('/').map_or(0, |i| i + 1);
    let (prefix, pattern) = location.split_at(split);
    let url = url::Url::parse(prefix).map_err(|e| external(Box::new(e)))?;
    let pattern = glob::Pattern::new(pattern).map_err(|e| external(Box::new(e)))?;
    ListingTableUrl::try_new(url, Some(pattern))
}

/// The URL DataFusion lists for a source on object storage and its extension filter:
/// a URL whose last segment has no extension (nor glob) is a folder, read as
/// `<url>/` with the format's extension (`s3://bucket/trips` reads
/// `s3://bucket/trips/*.parquet` and `date=…/` partition folders below it, as a local
/// folder is read); a file or a glob selects itself.
fn object_location(url: &str, format: SourceFormat) -> (String, String) {
    let last = url
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    let selects_files = last.contains(['*', '?', '[']) || last.contains('.');
    if selects_files && !url.ends_with('/') {
        (url.to_string(), String::new())
    } else {
        (
            format!("{}/", url.trim_end_matches('/')),
            format!(".{}", format.as_str()),
        )
    }
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
